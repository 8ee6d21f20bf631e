using Sequencer.Core;
using Sequencer.Core.Encoding;

namespace Sequencer.Signing;

/// <summary>Where a head session stands on the leader.</summary>
public enum FlightStage
{
    /// <summary>Planned and proposed (inline in a batch entry or in its own entry), not applied yet.</summary>
    Proposed,

    /// <summary>Applied: its signers are answering, and the leader collects their shares.</summary>
    Collecting,

    /// <summary>Its shares are aggregated into a verified signature that is on its way to the log.</summary>
    Aggregated,
}

/// <summary>A head session the leader has in flight.</summary>
/// <param name="Session">The session as proposed (an inline session's height is 0 until it is applied).</param>
/// <param name="Inline">True when it rides the batch entry whose header it signs.</param>
/// <param name="Stage">Where it stands.</param>
/// <param name="StageAtMs">When it reached that stage.</param>
/// <param name="StartedAtMs">When it was applied (0 before): a bad share from a session started before an exclusion is the same offence.</param>
public sealed record Flight(SigningSession Session, bool Inline, FlightStage Stage, long StageAtMs, long StartedAtMs);

/// <summary>What the planner decided about flights at a tick.</summary>
/// <param name="Expired">Sessions dropped (timed out, never applied, or a signature that never reached the log): the caller forgets their shares.</param>
/// <param name="TimedOutSigners">Signers that did not answer a session in time.</param>
public sealed record PlannerTick(IReadOnlyList<(ulong Height, int Attempt)> Expired, IReadOnlyList<int> TimedOutSigners);

/// <summary>
/// The leader's head-signing planner (DESIGN section 5, "Signed heads"), pure: time and the ledger's state are inputs,
/// sessions are outputs. It keeps at most <see cref="SigningTimings.MaxSessionsInFlight"/> sessions in flight and starts
/// one whenever there is room and a head newer than every head signed or in flight: in a batch entry being cut (an
/// inline session, which signs the header that entry produces) or, when no batch comes, in an entry of its own for the
/// newest applied header. A session that fails in any way (a bad share, a timeout, a lost proposal, a lost signature)
/// simply leaves the flight, and the next plan signs the newest head again, so no lost path can stop signing.
/// A session with a late signer (<see cref="SignerHealth.IsLate"/>) stops counting against the flight limit and no
/// longer holds its head: the next session may sign that head (or a newer one) with other signers while the late one
/// waits on for its share until the session timeout. An aggregated session leaves room as well (its head is signed as far as the leader knows; only its signature is on the way to the log). The flight holds at most four times the limit of sessions in all.
/// </summary>
/// <remarks>Not thread-safe: one owner (the signing coordinator) drives it.</remarks>
public sealed class HeadPlanner
{
    private readonly SigningTimings timings;
    private readonly int self;
    private readonly List<FlightState> flights = [];
    private readonly List<SigningSession> unrecorded = [];
    private readonly SortedDictionary<ulong, int> directAttempts = [];
    private long lastStartMs = long.MinValue / 2;
    private long holdUntilMs = long.MinValue / 2;

    /// <summary>Direct sessions whose record is not in the log yet, kept at most (no direct session starts beyond it).</summary>
    public const int MaxUnrecordedSessions = 64;

    /// <summary>A planner for the node <paramref name="self"/> (preferred as a signer when it holds a share).</summary>
    public HeadPlanner(SigningTimings timings, int self)
    {
        ArgumentNullException.ThrowIfNull(timings);
        ArgumentOutOfRangeException.ThrowIfLessThan(timings.MaxSessionsInFlight, 1);
        this.timings = timings;
        this.self = self;
        Health = new SignerHealth(timings);
    }

    /// <summary>Each signer's record and the signer choice.</summary>
    public SignerHealth Health { get; }

    /// <summary>The term this planner's flights belong to (a new term clears them).</summary>
    public long Term { get; private set; }

    /// <summary>Sessions in flight.</summary>
    public IReadOnlyList<Flight> Flights => [.. flights.Select(f => f.ToFlight())];

    /// <summary>True when another session may start (room in the flight; the interval is checked against the clock at planning).</summary>
    /// <remarks>
    /// A session whose signature is aggregated and verified no longer signs anything (its head is signed, as far as the
    /// leader is concerned; the signature is only on its way to the log), so it leaves room too. Late sessions are bounded
    /// only by the whole flight's cap: they cost nothing but their reserved nonces while they wait, and a tighter cap on
    /// them (there was one, at twice the limit) stalled signing after a fault: with one signer down and another excluded,
    /// every other probe went to the down one, its sessions filled that cap, and no session could start until one of them
    /// reached its 1 s timeout, though the probe that would have readmitted the other signer was ready to go.
    /// </remarks>
    public bool HasRoom
        => flights.Count(f => !f.Late && f.Stage != FlightStage.Aggregated) < timings.MaxSessionsInFlight
            && flights.Count < 4 * timings.MaxSessionsInFlight;

    private bool MayStart(long nowMs) => HasRoom && nowMs - lastStartMs >= timings.MinHeadIntervalMs && nowMs >= holdUntilMs;

    /// <summary>
    /// Leadership in <paramref name="term"/> (or none, with a term of 0): a different term than the last drops every flight,
    /// because the shares and signatures of the old leadership went to the old leader (or were thrown away).
    /// </summary>
    public void Lead(long term)
    {
        if (term == Term)
            return;
        Term = term;
        flights.Clear();
        unrecorded.Clear();
        directAttempts.Clear();
        holdUntilMs = long.MinValue / 2;
        lastStartMs = long.MinValue / 2;
    }

    /// <summary>
    /// A new key epoch is in force (a rotation): sessions of older epochs can no longer finish (the log dropped them and
    /// their signers switched to the new key), so they leave the flight now instead of holding its room until they
    /// time out. Returns the sessions dropped after they were applied (the caller forgets their shares).
    /// </summary>
    public IReadOnlyList<(ulong Height, int Attempt)> DropEpochsBelow(ulong epoch)
    {
        var old = flights.Where(f => f.Session.KeyEpoch < epoch).ToList();
        foreach (var flight in old)
            flights.Remove(flight);
        return [.. old.Where(f => f.Stage != FlightStage.Proposed).Select(f => f.Id)];
    }

    /// <summary>
    /// A session for the header the batch entry being cut will produce, or null (no room, no key, or fewer than t
    /// signers with a free commitment). It reserves the commitments it names until it leaves the flight.
    /// </summary>
    /// <param name="nowMs">The monotonic clock.</param>
    /// <param name="epoch">The current key epoch.</param>
    /// <param name="available">A signer's free published commitment sequences, ascending (the ledger's pool).</param>
    public SigningSession? PlanInline(long nowMs, KeyEpochView? epoch, Func<int, IReadOnlyList<ulong>> available)
    {
        ArgumentNullException.ThrowIfNull(available);
        if (epoch is null || !MayStart(nowMs))
            return null;
        return Start(nowMs, epoch, height: 0, attempt: 1, inline: true, available);
    }

    /// <summary>
    /// A session in an entry of its own for <paramref name="newest"/>, the newest applied header of the current key
    /// epoch, when there is room and it is newer than every head signed or in flight; otherwise null.
    /// </summary>
    /// <param name="nowMs">The monotonic clock.</param>
    /// <param name="epoch">The current key epoch.</param>
    /// <param name="newest">The newest applied height whose header carries <paramref name="epoch"/> (0: none).</param>
    /// <param name="signedThrough">The highest signed head.</param>
    /// <param name="lastAttempt">The attempt of the ledger's last session for <paramref name="newest"/> (0: none).</param>
    /// <param name="available">A signer's free published commitment sequences, ascending.</param>
    public SigningSession? PlanStandalone(long nowMs, KeyEpochView? epoch, ulong newest, ulong signedThrough, int lastAttempt, Func<int, IReadOnlyList<ulong>> available)
    {
        ArgumentNullException.ThrowIfNull(available);
        if (epoch is null || !MayStart(nowMs) || newest == 0 || newest <= signedThrough)
            return null;

        // An inline session on its way signs a header newer than any applied one; an applied or planned session at or
        // above the newest head already covers it.
        // A late session no longer holds its head.
        if (flights.Any(f => !f.Late && ((f.Inline && f.Stage == FlightStage.Proposed) || f.Height >= newest)))
            return null;
        return Start(nowMs, epoch, newest, Math.Max(lastAttempt, flights.Where(f => f.Height == newest).Select(f => f.Session.Attempt).DefaultIfEmpty(0).Max()) + 1,
            inline: false, available);
    }

    /// <summary>
    /// A direct session for <paramref name="newest"/> (the leader asks the signers itself, outside the log), under the
    /// same rules as <see cref="PlanStandalone"/>; null when none is due. It is collecting from the start, and its
    /// commitments stay reserved until <see cref="RecordsEnded"/> says its record reached the log (or never will).
    /// </summary>
    public SigningSession? PlanDirect(long nowMs, KeyEpochView? epoch, ulong newest, ulong signedThrough, int lastAttempt, Func<int, IReadOnlyList<ulong>> available)
    {
        ArgumentNullException.ThrowIfNull(available);
        if (epoch is null || !MayStart(nowMs) || newest == 0 || newest <= signedThrough || unrecorded.Count >= MaxUnrecordedSessions)
            return null;
        if (flights.Any(f => !f.Late && ((f.Inline && f.Stage == FlightStage.Proposed) || f.Height >= newest)))
            return null;
        // Attempts of a head are never reused in a term, even after its flight left: a late share of an earlier attempt
        // must not land in a later one (its aggregate would fail and blame an honest signer).
        var attempt = Math.Max(Math.Max(lastAttempt, directAttempts.GetValueOrDefault(newest)),
            flights.Where(f => f.Height == newest).Select(f => f.Session.Attempt).DefaultIfEmpty(0).Max()) + 1;
        if (Start(nowMs, epoch, newest, attempt, inline: false, available) is not { } planned)
            return null;
        directAttempts[newest] = attempt;
        while (directAttempts.Count > MaxUnrecordedSessions)
            directAttempts.Remove(directAttempts.Keys.First());
        var session = new SigningSession { Height = planned.Height, Attempt = planned.Attempt, KeyEpoch = planned.KeyEpoch, Signers = planned.Signers, Sequences = planned.Sequences, Direct = true };
        var flight = flights[^1];
        flight.Session = session;
        flight.Stage = FlightStage.Collecting;
        flight.StartedAtMs = nowMs;
        unrecorded.Add(session);
        return session;
    }

    /// <summary>
    /// These direct sessions' records will never reach the log from this leader: their commitments are no longer
    /// reserved here (the next leader that offers them finds them used, and its record of that session drops them).
    /// </summary>
    public void RecordsEnded(IEnumerable<SigningSession> records)
    {
        ArgumentNullException.ThrowIfNull(records);
        foreach (var record in records)
            unrecorded.RemoveAll(u => SameCommitments(u, record));
    }

    /// <summary>
    /// Ends the reservation of every direct session whose record has been applied: none of its commitments is in the
    /// pool any more (<paramref name="inPool"/>: signer and sequence).
    /// </summary>
    public void DropRecorded(Func<int, ulong, bool> inPool)
    {
        ArgumentNullException.ThrowIfNull(inPool);
        unrecorded.RemoveAll(u => !u.Signers.Zip(u.Sequences).Any(p => inPool(p.First, p.Second)));
    }

    /// <summary>
    /// A signer refused a direct session or could not be reached: it counts as timed out (at once, not after the late
    /// threshold) and the session leaves the flight, so that the next plan signs without it. A refusal that blames
    /// nobody (<paramref name="blame"/> false) counts only after <see cref="SignerHealth.FreeRefusals"/> in a row. Returns
    /// true when the session was in flight (the caller forgets its shares).
    /// </summary>
    public bool Refused((ulong Height, int Attempt) session, int signer, long nowMs, bool blame = true)
    {
        if (Find(session) is not { Stage: FlightStage.Collecting } flight)
            return false;
        if (blame && !flight.LateSigners.Contains(signer))
            Health.RecordTimeout(signer, nowMs);
        else if (!blame)
            Health.RecordRefusal(signer, nowMs);
        flights.Remove(flight);

        // A refusal comes at once, unlike a timeout: without a pause, a signer that refuses every session (and is
        // probed because fewer than t others are eligible) would cost a session, and the others' nonces, every
        // MinHeadIntervalMs.
        holdUntilMs = Math.Max(holdUntilMs, nowMs + RefusalPauseMs);
        return true;
    }

    /// <summary>How long no session starts after a refusal.</summary>
    public const long RefusalPauseMs = 25;

    /// <summary>A planned direct session that is not run after all (nothing was asked): it leaves, and so does its reservation.</summary>
    public void Abandon(SigningSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        flights.RemoveAll(f => SameCommitments(f.Session, session));
        unrecorded.RemoveAll(u => SameCommitments(u, session));
    }

    private SigningSession? Start(long nowMs, KeyEpochView epoch, ulong height, int attempt, bool inline, Func<int, IReadOnlyList<ulong>> available)
    {
        var reserved = flights.Where(f => f.Stage == FlightStage.Proposed).Select(f => f.Session).Concat(unrecorded)
            .SelectMany(s => s.Signers.Zip(s.Sequences))
            .ToHashSet();
        var free = new Dictionary<int, ulong>();
        foreach (var member in epoch.Record.Members)
        {
            foreach (var sequence in available(member))
            {
                if (!reserved.Contains((member, sequence)))
                {
                    free[member] = sequence;
                    break;
                }
            }
        }

        var signers = Health.Choose(epoch.Record.Members, epoch.Group.Threshold, self, nowMs, free.ContainsKey);
        if (signers is null)
            return null;
        var session = new SigningSession
        {
            Height = height,
            Attempt = attempt,
            KeyEpoch = epoch.Epoch,
            Signers = signers,
            Sequences = [.. signers.Select(s => free[s])],
        };
        flights.Add(new FlightState(session, inline, FlightStage.Proposed, nowMs));
        lastStartMs = nowMs;
        return session;
    }

    /// <summary>
    /// The entry that carried <paramref name="session"/> is committed (and applied here) or its proposal failed. A
    /// session still not applied then never will be (its batch formed no header, or the log refused it): it leaves.
    /// </summary>
    public void ProposalEnded(SigningSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        flights.RemoveAll(f => f.Stage == FlightStage.Proposed && SameCommitments(f.Session, session));
    }

    /// <summary>
    /// A session was applied. Returns true when it is one of this planner's (matched by the commitments it names, which
    /// serve one session only); the caller then collects its shares.
    /// </summary>
    public bool Applied(SigningSession applied, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(applied);
        var flight = flights.FirstOrDefault(f => f.Stage == FlightStage.Proposed && SameCommitments(f.Session, applied));
        if (flight is null)
            return false;
        flight.Session = applied;
        flight.Stage = FlightStage.Collecting;
        flight.StageAtMs = nowMs;
        flight.StartedAtMs = nowMs;
        return true;
    }

    /// <summary>
    /// A signer answered a collecting session at <paramref name="nowMs"/> (valid or not: a timeout means silence, not a
    /// bad share). The time is the signer's own latency: the session completes only with its slowest share.
    /// </summary>
    public void ShareReceived((ulong Height, int Attempt) session, int signer, long nowMs)
    {
        if (Find(session) is { Stage: FlightStage.Collecting } flight)
            flight.Answered.TryAdd(signer, nowMs);
    }

    /// <summary>
    /// A share proved valid (its session's aggregate verified, or the share itself did): the signer is healthy again, and
    /// its latency (from the session's start to its share's arrival) is smoothed into its record.
    /// </summary>
    public void ShareAccepted((ulong Height, int Attempt) session, int signer, long nowMs)
    {
        var flight = Find(session);
        var started = flight?.StartedAtMs ?? nowMs;
        var arrived = flight is not null && flight.Answered.TryGetValue(signer, out var at) ? at : nowMs;
        Health.RecordShare(signer, Math.Max(0, arrived - started), nowMs);
    }

    /// <summary>Every share is in and the aggregate verified: the signature is on its way to the log.</summary>
    public void Aggregated((ulong Height, int Attempt) session, long nowMs)
    {
        if (Find(session) is not { Stage: FlightStage.Collecting } flight)
            return;
        flight.Stage = FlightStage.Aggregated;
        flight.StageAtMs = nowMs;
    }

    /// <summary>
    /// The aggregate did not verify and these signers' shares are the bad ones: each is held to account (once per
    /// offence), and the session leaves the flight so that the next one signs without them. Returns each culprit's new
    /// exclusion in milliseconds (0: the same offence as before).
    /// </summary>
    public IReadOnlyList<(int Signer, long ExclusionMs)> BadShares((ulong Height, int Attempt) session, IReadOnlyList<int> culprits, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(culprits);
        // The session's planning time decides whether this is a new offence: a session planned before the exclusion
        // began (with the culprit among its signers) but applied after it is the same episode.
        var flight = Find(session);
        var planned = flight?.PlannedAtMs ?? nowMs;
        var result = culprits.Select(c => (c, Health.RecordBadShare(c, session.Height, planned, nowMs))).ToList();
        if (flight is not null)
            flights.Remove(flight);
        return result;
    }

    /// <summary>A head was signed (applied): every session for it or below is done.</summary>
    public void Signed(ulong height) => flights.RemoveAll(f => f.Stage != FlightStage.Proposed && f.Height <= height);

    /// <summary>
    /// Expires what waited too long: a proposal never applied, a session whose shares did not all arrive (its silent
    /// signers are recorded as timed out), and an aggregated signature that never reached the log (the watchdog). A
    /// collecting session's late signers are recorded as timed out once, when they become late, and the session then
    /// no longer holds its head or its place in the flight.
    /// </summary>
    public PlannerTick Tick(long nowMs)
    {
        var expired = new List<(ulong, int)>();
        var silent = new List<int>();
        foreach (var flight in flights.ToList())
        {
            var age = nowMs - flight.StageAtMs;
            if (flight.Stage == FlightStage.Collecting && age < timings.SessionTimeoutMs)
            {
                foreach (var signer in flight.Session.Signers)
                {
                    if (!flight.Answered.ContainsKey(signer) && !flight.LateSigners.Contains(signer) && Health.IsLate(signer, age))
                    {
                        flight.LateSigners.Add(signer);
                        Health.RecordTimeout(signer, nowMs);
                        silent.Add(signer);
                    }
                }
            }

            var due = flight.Stage switch
            {
                FlightStage.Collecting => age >= timings.SessionTimeoutMs,
                _ => age >= timings.ProposalTimeoutMs,
            };
            if (!due)
                continue;
            flights.Remove(flight);
            if (flight.Stage == FlightStage.Collecting)
            {
                foreach (var signer in flight.Session.Signers.Where(s => !flight.Answered.ContainsKey(s) && !flight.LateSigners.Contains(s)))
                {
                    Health.RecordTimeout(signer, nowMs);
                    silent.Add(signer);
                }
            }

            if (flight.Stage != FlightStage.Proposed)
                expired.Add(flight.Id);
        }

        return new PlannerTick(expired, silent);
    }

    private FlightState? Find((ulong Height, int Attempt) session)
        => flights.FirstOrDefault(f => f.Stage != FlightStage.Proposed && f.Id == session);

    private static bool SameCommitments(SigningSession a, SigningSession b)
        => a.KeyEpoch == b.KeyEpoch && a.Signers.SequenceEqual(b.Signers) && a.Sequences.SequenceEqual(b.Sequences);

    private sealed class FlightState(SigningSession session, bool inline, FlightStage stage, long stageAtMs)
    {
        public SigningSession Session { get; set; } = session;

        public bool Inline { get; } = inline;

        public FlightStage Stage { get; set; } = stage;

        public long StageAtMs { get; set; } = stageAtMs;

        public long StartedAtMs { get; set; }

        public long PlannedAtMs { get; } = stageAtMs;

        // Who answered, and when (a signer's latency is its own, not the session's).
        public Dictionary<int, long> Answered { get; } = [];

        // Signers recorded as late in this session (each once).
        public HashSet<int> LateSigners { get; } = [];

        // A late signer has not answered yet: the session waits on, but holds neither its head nor a place in the flight.
        public bool Late => LateSigners.Any(s => !Answered.ContainsKey(s));

        public ulong Height => Session.Height;

        public (ulong Height, int Attempt) Id => (Session.Height, Session.Attempt);

        public Flight ToFlight()
        {
            Invariant.Check(Stage != FlightStage.Proposed || StartedAtMs == 0, "a proposed session has not started");
            return new Flight(Session, Inline, Stage, StageAtMs, StartedAtMs);
        }
    }
}
