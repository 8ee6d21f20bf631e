using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Node.Replication;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>
/// The leader's side of head signing (DESIGN section 5), a thin shell around the pure <see cref="HeadPlanner"/>: it
/// feeds the planner the ledger's state and the clock, asks the chosen signers directly for the sessions it plans
/// (<see cref="ISessionChannel"/>, their records riding batch entries) or, without a session channel, puts the sessions
/// into batch entries (inline) or entries of their own; it collects and aggregates the signers' shares
/// (<see cref="ShareCollector"/>) and sends the verified signatures to the log (<see cref="SignatureOutbox"/>).
/// Ordering never waits for any of it.
/// </summary>
/// <remarks>
/// Every follower runs one too, idle: it acts only while its node leads, and a change of term (detected by term, not by
/// a sampled flag) starts it afresh, so nothing of an old leadership can pin a session or a signature.
/// </remarks>
public sealed partial class HeadSigningCoordinator : IBatchRiders, IShareInbox, IAsyncDisposable
{
    private static readonly TimeSpan IdlePoll = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan BootstrapRetry = TimeSpan.FromSeconds(1);
    private const long RotationRetryMs = 3_000;

    private readonly int selfId;
    private readonly AppliedState state;
    private readonly ILeaderLog log;
    private readonly SequencerLimits limits;
    private readonly TimeProvider time;
    private readonly NodeMetrics metrics;
    private readonly ILogger logger;
    private readonly KeyEpochCommand? bootstrap;
    private readonly ISessionChannel? sessionChannel;
    private readonly List<(SigningSession Session, long QueuedMs)> records = [];
    private readonly long origin;
    private readonly Lock gate = new();
    private readonly HeadPlanner planner;
    private readonly ShareCollector collector = new();
    private readonly SignatureOutbox outbox = new();
    private readonly ShareCollector rotationCollector = new();
    private (int Attempt, long AtMs)? rotationFlight;
    private int rotationAttempt = NewRotationAttempts();
    private long rotationCheckedMs = long.MinValue / 2;
    // Shares on their way to the collector; Proof checks the proof of an answer that has not been checked (null: checked).
    private readonly List<(int Signer, ulong KeyEpoch, SignatureShareMessage Share, Func<bool>? Proof)> inbox = [];
    private readonly Dictionary<int, long> silentLoggedAt = [];
    private readonly Dictionary<(int Signer, bool Blamed), long> refusalLoggedAt = [];
    private readonly CancellationTokenSource stopping = new();
    private BackgroundLoop? loop;
    private TaskCompletionSource wake = NewSignal();
    private long bootstrapAt = -1;
    // The commit index when this node found itself leading in the planner's term (set, to no effect, on losing the lead
    // too): it plans nothing until it has applied that far, since earlier leaders' session records and signatures may
    // still be on their way to its state. Guarded by the gate.
    private long termStartIndex;
    // When this node found itself leading (the clock), and whether it has said that signing waits on its apply.
    private long termStartMs;
    private bool applyWaitLogged;
    private long lastCutMs = long.MinValue / 2;
    private readonly EntryCadence cuts;
    private bool mismatchReported;
    private long sessionsStarted;
    private long headsSigned;

    /// <summary>Builds the coordinator; <see cref="Start"/> runs it.</summary>
    /// <param name="selfId">This node's member id (preferred as a signer when it has commitments, i.e. holds a share).</param>
    /// <param name="state">The applied state.</param>
    /// <param name="log">The replicated log.</param>
    /// <param name="limits">Limits (the signing timings among them).</param>
    /// <param name="time">Clock.</param>
    /// <param name="metrics">Metrics.</param>
    /// <param name="logger">Logger.</param>
    /// <param name="bootstrap">The first key epoch, from a dealer's group key file, proposed when the log has none.</param>
    /// <param name="sessionChannel">How the leader asks signers for shares directly (direct sessions), or null: sessions go through the log.</param>
    public HeadSigningCoordinator(int selfId, AppliedState state, ILeaderLog log, SequencerLimits limits, TimeProvider time,
        NodeMetrics metrics, ILogger<HeadSigningCoordinator> logger, KeyEpochCommand? bootstrap, ISessionChannel? sessionChannel = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(log);
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentNullException.ThrowIfNull(time);
        this.selfId = selfId;
        this.state = state;
        this.log = log;
        this.limits = limits;
        this.time = time;
        this.metrics = metrics;
        this.logger = logger;
        this.bootstrap = bootstrap;
        this.sessionChannel = limits.DirectSigningSessions ? sessionChannel : null;
        origin = time.GetTimestamp();
        planner = new HeadPlanner(SigningTimings.From(limits), selfId);
        cuts = new EntryCadence(0, limits.MaxRiderWaitMs);
    }

    /// <summary>Starts the coordinator's loop (supervised) and its subscriptions.</summary>
    public void Start(BackgroundLoops loops)
    {
        ArgumentNullException.ThrowIfNull(loops);
        Invariant.Check(loop is null, "the coordinator starts once");
        Subscribe();
        loop = loops.Start("the head-signing coordinator", StuckAfter, LoopAsync, stopping.Token);
    }

    /// <summary>Listens to the applied state and the log (what <see cref="Start"/> does before its loop; tests step <see cref="Round"/> themselves).</summary>
    internal void Subscribe()
    {
        state.SessionsStarted += OnSessionsStarted;
        state.HeadSigned += OnHeadSigned;
        state.Applied += OnApplied;
        log.LeaderChanged += Wake;
    }

    // A direct session starts as soon as the leader applies a newer head, not at the next poll.
    private void OnApplied(AppliedEvent applied)
    {
        if (sessionChannel is not null && applied.Batch is not null && log.IsLeader)
            Wake();
    }

    /// <summary>What the leader knows about each signer of the current key epoch.</summary>
    public IReadOnlyList<SignerReport> Signers()
    {
        var epoch = state.CurrentKeyEpoch;
        if (epoch is null)
            return [];
        var now = NowMs;
        lock (gate)
            return [.. epoch.Record.Members.Select(id => planner.Health.Report(id, now))];
    }

    /// <summary>The sessions in flight on this leader (empty on a follower).</summary>
    public IReadOnlyList<Flight> Flights
    {
        get
        {
            lock (gate)
                return planner.Flights;
        }
    }

    /// <summary>Head sessions this node planned as leader, and heads this node applied, since it started.</summary>
    public (long SessionsStarted, long HeadsSigned) Counters => (Interlocked.Read(ref sessionsStarted), Interlocked.Read(ref headsSigned));

    private long NowMs => (long)time.GetElapsedTime(origin).TotalMilliseconds;

    /// <inheritdoc/>
    public bool Receive(SignatureSharesMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        lock (gate)
        {
            if (inbox.Count + message.Shares.Count > limits.MaxQueuedShares)
                return false;
            foreach (var share in message.Shares)
                inbox.Add((message.SignerId, message.KeyEpoch, share, null));
        }

        Wake();
        return true;
    }

    /// <inheritdoc/>
    public BatchRiders Take()
    {
        var epoch = state.CurrentKeyEpoch;
        var now = NowMs;
        lock (gate)
        {
            if (!LeadingLocked())
                return BatchRiders.None;
            lastCutMs = now;
            cuts.Entry(now);
            if (sessionChannel is not null)
            {
                // Direct sessions: the batch carries their records and the signatures, never a session.
                IReadOnlyList<SigningSession> recorded = [.. records.Select(r => r.Session)];
                records.Clear();
                return new BatchRiders(null, outbox.TakeAll()) { Records = recorded };
            }

            var session = CaughtUpLocked() ? planner.PlanInline(now, epoch, Available) : null;
            if (session is not null)
            {
                Interlocked.Increment(ref sessionsStarted);
                metrics.SessionsStarted.Add(1, new KeyValuePair<string, object?>("reason", "inline"));
            }

            return new BatchRiders(session, outbox.TakeAll());
        }
    }

    /// <inheritdoc/>
    public void Completed(BatchRiders riders, bool committed)
    {
        ArgumentNullException.ThrowIfNull(riders);
        lock (gate)
        {
            if (riders.Session is { } session)
                planner.ProposalEnded(session);
            RecordsCompletedLocked(riders.Records, committed);
            if (!committed && LeadingLocked())
                outbox.Return(riders.Signatures.Where(s => s.Height > state.SignedThrough), NowMs);
        }

        Wake();
    }

    // Records of direct sessions that did not reach the log go back to the front of the queue while this node leads (the
    // commitments stay reserved until the pool drops them).
    private void RecordsCompletedLocked(IReadOnlyList<SigningSession> recorded, bool committed)
    {
        if (recorded.Count == 0)
            return;
        if (!committed && LeadingLocked())
            records.InsertRange(0, recorded.Select(r => (r, NowMs)));
        else if (!committed)
            planner.RecordsEnded(recorded);
    }

    // True while this node leads in the planner's term.
    private bool LeadingLocked() => log.IsLeader && planner.Term == log.Term && planner.Term != 0;

    // True while this node leads and has applied everything committed before its term: it may plan from its state.
    private bool CaughtUpLocked() => LeadingLocked() && log.AppliedIndex >= termStartIndex;

    // Enough of the lowest free sequences to find one past every reserved commitment (planned sessions, unrecorded ones).
    private IReadOnlyList<ulong> Available(int signer) => state.AvailableSequences(signer, (4 * limits.MaxSigningSessionsInFlight) + 1
        + (sessionChannel is null ? 0 : HeadPlanner.MaxUnrecordedSessions));

    private void OnSessionsStarted(IReadOnlyList<AppliedSession> started)
    {
        var now = NowMs;
        lock (gate)
        {
            foreach (var applied in started)
            {
                // Height 0 names the hand-over to a new key epoch, which no head has.
                if (applied.Session.Height == 0)
                {
                    if (LeadingLocked() && rotationFlight is { } flight && flight.Attempt == applied.Session.Attempt)
                        rotationCollector.Track(applied);
                    continue;
                }

                if (planner.Applied(applied.Session, now))
                    collector.Track(applied);
            }
        }

        Wake();
    }

    private void OnHeadSigned(HeadSignedEvent signed)
    {
        Interlocked.Increment(ref headsSigned);
        lock (gate)
        {
            planner.Signed(signed.Head.Height);
            collector.ForgetThrough(signed.Head.Height);
            outbox.DropThrough(signed.Head.Height);
        }

        Wake();
    }

    private void Wake() => Volatile.Read(ref wake).TrySetResult();

    // One line per signer per 5 s at most: a signer that is down misses every session.
    private void NoteSilentSigner(int signer, long now)
    {
        SignerReport report;
        lock (gate)
        {
            if (silentLoggedAt.TryGetValue(signer, out var last) && now - last < 5_000)
                return;
            silentLoggedAt[signer] = now;
            report = planner.Health.Report(signer, now);
        }

        LogSilentSigner(logger, signer, report.ExcludedForMs, report.Timeouts, report.ShareLatencyMs);
    }

    private async Task LoopAsync(BackgroundLoop self, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            var signal = Volatile.Read(ref wake);
            Round();
            await signal.Task.WaitAsync(IdlePoll, time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (signal.Task.IsCompleted)
                Interlocked.CompareExchange(ref wake, NewSignal(), signal);
        }
    }

    /// <summary>How long a new leader's apply may hold signing back before it says so (once a term).</summary>
    internal static readonly TimeSpan ApplyWaitLogAfter = TimeSpan.FromSeconds(1);

    // An operator who sees no signed heads after a change of leader should be told why: the leader has a backlog of
    // committed entries to apply (a long catch-up, a slow disk) before it may plan a session.
    private void NoteApplyWait(long term)
    {
        long waitedMs, target, applied;
        lock (gate)
        {
            if (!LeadingLocked() || planner.Term != term)
                return;
            waitedMs = NowMs - termStartMs;
            target = termStartIndex;
            applied = log.AppliedIndex;
            var waiting = applied < target;
            if (waiting && !applyWaitLogged && waitedMs >= (long)ApplyWaitLogAfter.TotalMilliseconds)
                applyWaitLogged = true;
            else if (!waiting && applyWaitLogged)
                applyWaitLogged = false;
            else
                return;
        }

        if (applied < target)
            LogApplyWait(logger, term, waitedMs, applied, target);
        else
            LogApplyCaughtUp(logger, term, waitedMs);
    }

    internal void Round()
    {
        var term = log.IsLeader ? log.Term : 0;
        bool caughtUp;
        lock (gate)
        {
            if (planner.Term != term)
            {
                // A new leadership (or none): the old one's shares went to the old leader, its aggregated signatures
                // were thrown away. Every unsigned head is signed afresh.
                planner.Lead(term);
                cuts.Reset();
                collector.Clear();
                rotationCollector.Clear();
                rotationFlight = null;
                rotationAttempt = NewRotationAttempts();
                outbox.Clear();
                inbox.Clear();
                records.Clear();
                termStartIndex = log.CommitIndex;
                termStartMs = NowMs;
                applyWaitLogged = false;
            }

            caughtUp = CaughtUpLocked();
        }

        if (term != 0)
            NoteApplyWait(term);

        // A new leader plans from what it has applied: a session planned before it applied an earlier leader's record
        // would name nonces that record already used (the signers refuse them, and the attempt is lost).
        if (term == 0 || !caughtUp)
            return;
        var epoch = state.CurrentKeyEpoch;
        if (epoch is null)
        {
            ProposeBootstrap();
            return;
        }

        CheckBootstrapMatches(epoch);
        lock (gate)
        {
            foreach (var id in planner.DropEpochsBelow(epoch.Epoch))
                collector.Forget(id);
        }

        CollectShares(epoch);
        var now = NowMs;
        PlannerTick tick;
        lock (gate)
        {
            tick = planner.Tick(now);
            foreach (var id in tick.Expired)
                collector.Forget(id);
        }

        foreach (var signer in tick.TimedOutSigners)
        {
            metrics.SessionTimeouts.Add(1, new KeyValuePair<string, object?>("signer", signer));
            NoteSilentSigner(signer, now);
        }

        if (sessionChannel is not null)
        {
            StartDirectSession(epoch, now);
            ProposeDueRecords(now);
        }
        else
        {
            StartStandaloneSession(epoch, now);
        }

        ProposeDueSignatures(now);
        StartRotationSession(epoch, now);
    }

    // Attempts of hand-over sessions are numbered from a random start per leadership, so that a late share of an
    // earlier leader's session never lands in this leader's session of the same number.
    private static int NewRotationAttempts() => System.Security.Cryptography.RandomNumberGenerator.GetInt32(1, 1 << 30);

    /// <summary>
    /// A key generation made the next key epoch: the current one signs the hand-over in a session like a head's (t
    /// signers, published commitments), retried with fresh commitments until the hand-over is in the log. It starts
    /// once every applied head is signed or while batches flow, so that no head of the old epoch waits unsigned for
    /// a batch of the new one.
    /// </summary>
    private void StartRotationSession(KeyEpochView epoch, long now)
    {
        // Rotations are rare and not urgent: the pending epoch is looked at a few times a second, not every round.
        if (now - rotationCheckedMs < 100)
            return;
        rotationCheckedMs = now;
        if (state.PendingKeyEpoch is not { } next || next.Epoch != epoch.Epoch + 1)
            return;
        var idleAndUnsigned = (state.LastHeader?.Height ?? 0) > state.SignedThrough;
        SigningSession session;
        lock (gate)
        {
            if (!LeadingLocked() || (rotationFlight is { } flight && now - flight.AtMs < RotationRetryMs))
                return;

            // The previous attempt got no signature in time: its silent signers count as timed out (so that the next
            // attempt chooses others, with probes keeping t eligible), and its collection is dropped.
            if (rotationFlight is { } previous)
            {
                foreach (var silent in rotationCollector.ForgetAndNameSilent((0, previous.Attempt)))
                    planner.Health.RecordTimeout(silent, now);
            }

            if (idleAndUnsigned && now - lastCutMs > 1_000)
                return;
            var chosen = planner.Health.Choose(epoch.Record.Members, epoch.Group.Threshold, selfId, now, id => Available(id).Count > 0);
            if (chosen is null)
                return;
            // The highest of the few lowest free commitments: head sessions take the lowest.
            var attempt = rotationAttempt++;
            session = new SigningSession { Height = 0, Attempt = attempt, KeyEpoch = epoch.Epoch, Signers = chosen, Sequences = [.. chosen.Select(id => Available(id)[^1])] };
            rotationFlight = (attempt, now);
        }

        LogRotationSession(logger, epoch.Epoch, next.Epoch, string.Join(", ", session.Signers));
        _ = ProposeAsync(new KeyRotationSessionCommand { NewEpoch = next.Epoch, Session = session }, _ => { });
    }

    private void CollectRotationShare(int signer, ulong keyEpoch, SignatureShareMessage share, KeyEpochView epoch, long now)
    {
        (AppliedSession Session, IReadOnlyDictionary<int, Org.BouncyCastle.Math.BigInteger> Shares, Func<int, bool> Proves)? complete;
        lock (gate)
        {
            if (rotationCollector.Add(signer, keyEpoch, share) != ShareOutcome.Complete)
                return;
            complete = rotationCollector.TakeComplete((0, share.Attempt));
        }

        if (complete is not { } ready)
            return;
        var aggregation = ShareCollector.Aggregate(ready.Session, ready.Shares, epoch.Group);
        if (aggregation.Signature is not { } signature)
        {
            lock (gate)
            {
                foreach (var culprit in aggregation.Culprits)
                {
                    var exclusion = planner.Health.RecordBadShare(culprit, 0, rotationFlight?.AtMs ?? now, now);
                    LogBadShare(logger, culprit, 0, share.Attempt, exclusion / 1000.0);
                }

                rotationFlight = null;
            }

            return;
        }

        var encoded = signature.Encode();
        var rotation = new KeyRotationCommand
        {
            NewEpoch = ready.Session.Session.KeyEpoch + 1,
            Signers = ready.Session.Session.Signers,
            R = encoded[..Secp256k1.ElementLength],
            Z = encoded[Secp256k1.ElementLength..],
            SignedAtMs = (ulong)time.GetUtcNow().ToUnixTimeMilliseconds(),
        };
        lock (gate)
            rotationFlight = (share.Attempt, now);
        LogRotationSigned(logger, epoch.Epoch, rotation.NewEpoch);
        _ = ProposeAsync(rotation, committed =>
        {
            if (committed)
                return;
            lock (gate)
                rotationFlight = null;
        });
    }

    private void CollectShares(KeyEpochView epoch)
    {
        List<(int Signer, ulong KeyEpoch, SignatureShareMessage Share, Func<bool>? Proof)> shares;
        lock (gate)
        {
            if (inbox.Count == 0)
                return;
            shares = [.. inbox];
            inbox.Clear();
        }

        foreach (var (signer, keyEpoch, share, proof) in shares)
        {
            if (share.Height == 0)
            {
                CollectRotationShare(signer, keyEpoch, share, epoch, NowMs);
                continue;
            }

            (AppliedSession Session, IReadOnlyDictionary<int, Org.BouncyCastle.Math.BigInteger> Shares, Func<int, bool> Proves)? complete;
            var now = NowMs;
            lock (gate)
            {
                var outcome = collector.Add(signer, keyEpoch, share, proof);
                if (outcome == ShareOutcome.Ignored)
                    continue;
                planner.ShareReceived((share.Height, share.Attempt), signer, now);
                complete = outcome == ShareOutcome.Complete ? collector.TakeComplete((share.Height, share.Attempt)) : null;
            }

            if (complete is { } ready)
                Finish(ready.Session, ready.Shares, ready.Proves, epoch, now);
        }
    }

    /// <summary>Every share of a session is in: aggregate and verify once (outside the lock), then hand the result on.</summary>
    private void Finish(AppliedSession session, IReadOnlyDictionary<int, Org.BouncyCastle.Math.BigInteger> shares, Func<int, bool> proves, KeyEpochView epoch, long now)
    {
        var started = Stopwatch.GetTimestamp();
        var aggregation = ShareCollector.Aggregate(session, shares, epoch.Group, proves);
        metrics.AggregateDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        if (aggregation.Signature is not { } signature)
        {
            IReadOnlyList<(int Signer, long ExclusionMs)> blamed;
            lock (gate)
            {
                foreach (var honest in session.Session.Signers.Except(aggregation.Culprits).Except(aggregation.Unproven))
                    planner.ShareAccepted(session.Id, honest, now);
                blamed = planner.BadShares(session.Id, aggregation.Culprits, now);

                // A share that does not verify, without a valid proof of its signer, is not provably that signer's: it
                // counts as no answer (a timeout), as an answer without a valid proof always has.
                foreach (var unproven in aggregation.Unproven)
                    planner.Health.RecordTimeout(unproven, now);
            }

            foreach (var unproven in aggregation.Unproven)
            {
                metrics.SessionTimeouts.Add(1, new KeyValuePair<string, object?>("signer", unproven));
                NoteRefusal(unproven, DirectAnswer.Refuse(502, "bad_proof", $"its share of head {session.Session.Height} does not verify, and its proof does not either"), blamed: true, now);
            }

            foreach (var (signer, exclusion) in blamed)
            {
                metrics.BadShares.Add(1, new KeyValuePair<string, object?>("signer", signer));
                metrics.Errors.Add(1, new KeyValuePair<string, object?>("kind", "bad_share"));
                if (exclusion > 0)
                    LogBadShare(logger, signer, session.Session.Height, session.Session.Attempt, exclusion / 1000.0);
            }

            if (blamed.Count == 0 && aggregation.Unproven.Count == 0)
                LogNoCulprit(logger, session.Session.Height, session.Session.Attempt);
            return;
        }

        var encoded = signature.Encode();
        var head = new HeadSignature
        {
            Height = session.Session.Height,
            KeyEpoch = session.Session.KeyEpoch,
            Signers = session.Session.Signers,
            R = encoded[..Secp256k1.ElementLength],
            Z = encoded[Secp256k1.ElementLength..],
            SignedAtMs = (ulong)time.GetUtcNow().ToUnixTimeMilliseconds(),
        };
        state.RememberVerified(head.Height, encoded);
        lock (gate)
        {
            foreach (var signer in session.Session.Signers)
                planner.ShareAccepted(session.Id, signer, now);
            planner.Aggregated(session.Id, now);
            // A head at or below the signed one is covered already (sessions can finish out of order).
            if (LeadingLocked() && head.Height > state.SignedThrough)
                outbox.Add(head, now);
        }
    }

    private void StartStandaloneSession(KeyEpochView epoch, long now)
    {
        var newest = state.LastHeader is { } last && last.KeyEpoch == epoch.Epoch ? last.Height : 0;
        var lastAttempt = newest == 0 ? 0 : state.ActiveSession(newest)?.Attempt ?? 0;
        SigningSession? session;
        lock (gate)
        {
            // While batches flow, the next one carries a session that covers the newest header too.
            if (!LeadingLocked() || !cuts.Quiet(now, limits.StandaloneSessionDelayMs))
                return;
            session = planner.PlanStandalone(now, epoch, newest, state.SignedThrough, lastAttempt, Available);
        }

        if (session is null)
            return;
        Interlocked.Increment(ref sessionsStarted);
        metrics.SessionsStarted.Add(1, new KeyValuePair<string, object?>("reason", "standalone"));
        _ = ProposeAsync(new SigningSessionsCommand { Sessions = [session] }, _ =>
        {
            lock (gate)
                planner.ProposalEnded(session);
        });
    }

    /// <summary>
    /// A direct session (DESIGN section 5's signed heads, run outside the log): when there is room and the newest applied
    /// head is newer than every head signed or in flight, the leader asks each chosen signer for its share of it over
    /// the members' channel. Its record (the commitments used) rides the next batch entry, or an entry of its own.
    /// </summary>
    private void StartDirectSession(KeyEpochView epoch, long now)
    {
        var newest = state.LastHeader is { } last && last.KeyEpoch == epoch.Epoch ? last.Height : 0;
        var lastAttempt = newest == 0 ? 0 : state.ActiveSession(newest)?.Attempt ?? 0;
        SigningSession? session;
        lock (gate)
        {
            if (!LeadingLocked())
                return;
            // A record applied here has taken its commitments out of the pool: they need no reservation any more.
            planner.DropRecorded((signer, sequence) => state.UnusedCommitment(signer, sequence) is not null);
            session = planner.PlanDirect(now, epoch, newest, state.SignedThrough, lastAttempt, Available);
        }

        if (session is null)
            return;
        if (state.GetBatch(session.Height)?.Header is not { } header)
        {
            lock (gate)
                planner.Abandon(session);
            return;
        }

        var encoded = new List<byte[]>(session.Signers.Count);
        var commitments = new List<NonceCommitment>(session.Signers.Count);
        for (var i = 0; i < session.Signers.Count; i++)
        {
            var value = state.UnusedCommitment(session.Signers[i], session.Sequences[i]);
            NonceCommitment? commitment = null;
            try
            {
                if (value is not null)
                    commitment = NonceCommitment.Decode(session.Signers[i], value);
            }
            catch (FormatException)
            {
                commitment = null;
            }

            if (value is null || commitment is null)
            {
                // Gone from the pool since planning, or not two points: the session is not run; its record still goes
                // to the log, so that a malformed commitment leaves the pool. Only a malformed one is its signer's fault.
                lock (gate)
                {
                    planner.Refused((session.Height, session.Attempt), session.Signers[i], now, blame: value is not null);
                    records.Add((session, now));
                }

                return;
            }

            commitments.Add(commitment);
            encoded.Add(value);
        }

        var applied = new AppliedSession(session, header.Commitment.ToArray(), commitments, epoch.Group.PublicKey);
        long term;
        lock (gate)
        {
            if (!LeadingLocked())
            {
                planner.Abandon(session);
                return;
            }

            term = planner.Term;
            collector.Track(applied);
            records.Add((session, now));
        }

        // A signer answers once it has applied the head: the request carries the commit index, and a signer whose log
        // does not hold the head's entry yet learns it with the next round (the next batch's, or a nudge: FollowerNudge).
        log.FollowersMustApply();
        Interlocked.Increment(ref sessionsStarted);
        metrics.SessionsStarted.Add(1, new KeyValuePair<string, object?>("reason", "direct"));
        var request = new SessionRequestMessage { LeaderId = selfId, Term = term, CommitIndex = log.CommitIndex, Sessions = [session], Commitments = [encoded] };
        foreach (var signer in session.Signers)
            _ = AskAsync(signer, session, term, request, epoch);
    }

    // Refusals that say nothing against the signer: the leader's own view was stale (a nonce a lost record left in the
    // pool, a head signed meanwhile, a leader the signer does not know yet) or its request was wrong.
    private static bool Blames(DirectAnswer answer) => answer.Code is not ("nonce_used" or "signed" or "not_leader" or "other_epoch" or "bad_session" or "bad_commitment" or "bad_request");

    private async Task AskAsync(int signer, SigningSession session, long term, SessionRequestMessage request, KeyEpochView epoch)
    {
        DirectAnswer answer;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token);
            timeout.CancelAfter(limits.SigningSessionTimeoutMs);
            answer = await sessionChannel!.AskAsync(signer, request, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            return;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or LiteDB.LiteException or InvalidOperationException or HttpRequestException
            or ArgumentException or FormatException)
        {
            // The own signer's store failed (a full or failing disk), or the ask was cut short: no share from it.
            answer = DirectAnswer.Refuse(500, "failed", e.Message);
        }

        // The leader's own signer answers in process; another's answer carries its proof (as a shares message posted to
        // the leader would), and must be for this session. The proof (a Schnorr verification, about 0.1 ms) is checked
        // only if the aggregate fails, to decide whether a share that does not verify is provably its signer's: a valid
        // aggregate needs no proof (ShareCollector).
        Func<bool>? proof = null;
        var valid = answer.Shares is { } message && message.SignerId == signer && message.KeyEpoch == session.KeyEpoch
            && message.Shares.Count == 1 && message.Shares[0].Height == session.Height && message.Shares[0].Attempt == session.Attempt
            && (signer == selfId || epoch.Group.VerificationShares.ContainsKey(signer));
        if (valid && signer != selfId)
        {
            var proved = answer.Shares!;
            var publicShare = epoch.Group.VerificationShares[signer];
            proof = () => SignerProof.Verify(SignatureSharesMessage.ProofDomain, proved.ProofPayload(), proved.Proof, publicShare);
        }

        var now = NowMs;
        bool dropped;
        var blamed = false;
        lock (gate)
        {
            // Only into the session asked, in the term asked: after a change of term the same height and attempt can
            // name another session (attempts are numbered per term), whose aggregate a late share would spoil.
            if (!LeadingLocked() || planner.Term != term || !collector.Tracks(session))
                return;
            if (valid && inbox.Count < limits.MaxQueuedShares)
            {
                inbox.Add((signer, session.KeyEpoch, answer.Shares!.Shares[0], proof));
                dropped = false;
            }
            else
            {
                blamed = !valid && Blames(answer);
                dropped = planner.Refused((session.Height, session.Attempt), signer, now, blame: blamed);
                if (dropped)
                    collector.Forget((session.Height, session.Attempt));
            }
        }

        if (dropped)
        {
            metrics.SessionTimeouts.Add(1, new KeyValuePair<string, object?>("signer", signer));
            NoteRefusal(signer, answer, blamed, now);
        }

        Wake();
    }

    // One line per signer per 5 s at most, of each kind (a harmless refusal does not hide one that counts).
    private void NoteRefusal(int signer, DirectAnswer answer, bool blamed, long now)
    {
        lock (gate)
        {
            if (refusalLoggedAt.TryGetValue((signer, blamed), out var last) && now - last < 5_000)
                return;
            refusalLoggedAt[(signer, blamed)] = now;
        }

        if (blamed)
            LogSignerRefused(logger, signer, answer.Status, answer.Code ?? "no shares", answer.Reason ?? string.Empty);
        else
            LogSignerDeclined(logger, signer, answer.Status, answer.Code ?? "no shares", answer.Reason ?? string.Empty);
    }

    private void ProposeDueRecords(long now)
    {
        List<SigningSession> due;
        lock (gate)
        {
            // While batches flow, the next one carries the records (EntryCadence: it is expected within twice the usual gap).
            if (!LeadingLocked() || records.Count == 0 || !cuts.Quiet(now, limits.StandaloneSessionDelayMs) || now - records[0].QueuedMs < limits.StandaloneSessionDelayMs)
                return;
            due = [.. records.Select(r => r.Session)];
            records.Clear();
        }

        _ = ProposeAsync(new SigningSessionsCommand { Sessions = due }, committed =>
        {
            lock (gate)
                RecordsCompletedLocked(due, committed);
        });
    }

    private void ProposeDueSignatures(long now)
    {
        IReadOnlyList<HeadSignature> due;
        lock (gate)
            due = LeadingLocked() && cuts.Quiet(now, limits.SignatureFlushDelayMs) ? outbox.TakeDue(now, limits.SignatureFlushDelayMs) : [];
        if (due.Count == 0)
            return;
        _ = ProposeAsync(new HeadSignaturesCommand { Signatures = due }, committed =>
        {
            if (committed)
                return;
            lock (gate)
            {
                if (LeadingLocked())
                    outbox.Return(due.Where(s => s.Height > state.SignedThrough), NowMs);
            }
        });
    }

    private void ProposeBootstrap()
    {
        if (bootstrap is null)
            return;
        var now = NowMs;
        lock (gate)
        {
            if (bootstrapAt >= 0 && now - bootstrapAt < BootstrapRetry.TotalMilliseconds)
                return;
            bootstrapAt = now;
        }

        LogProposingKeyEpoch(logger, bootstrap.Epoch, bootstrap.Threshold, bootstrap.Members.Count);
        _ = ProposeAsync(bootstrap, _ => { });
    }

    private void CheckBootstrapMatches(KeyEpochView epoch)
    {
        if (bootstrap is null || mismatchReported || epoch.Epoch != bootstrap.Epoch || epoch.Record.GroupKey.AsSpan().SequenceEqual(bootstrap.GroupKey))
            return;
        mismatchReported = true;
        LogKeyMismatch(logger, epoch.Epoch);
    }

    private async Task ProposeAsync(ILogCommand command, Action<bool> completed)
    {
        var committed = false;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(log.LeadershipToken, stopping.Token);
            timeout.CancelAfter(limits.SigningProposalTimeoutMs);
            await log.ReplicateAsync(LogCommandCodec.Encode(command), null, timeout.Token).ConfigureAwait(false);
            committed = true;
        }
        catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException
            or DotNext.Net.Cluster.Consensus.Raft.NotLeaderException or DotNext.Net.Cluster.Consensus.Raft.QuorumUnreachableException or TimeoutException)
        {
            if (!stopping.IsCancellationRequested)
                LogProposalFailed(logger, command.GetType().Name, e.Message);
        }
        finally
        {
            completed(committed);
            Wake();
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        state.SessionsStarted -= OnSessionsStarted;
        state.HeadSigned -= OnHeadSigned;
        state.Applied -= OnApplied;
        log.LeaderChanged -= Wake;
        await stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
            await loop.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Warning, Message = "Signer {SignerId} sent an invalid signature share for head {Height} (attempt {Attempt}); it is left out of signing for {Seconds} s unless fewer than t signers would remain")]
    private static partial void LogBadShare(ILogger logger, int signerId, ulong height, int attempt, double seconds);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Proposing key epoch {Epoch} from the group key file: {Threshold} of {Members} members sign")]
    private static partial void LogProposingKeyEpoch(ILogger logger, ulong epoch, int threshold, int members);

    [LoggerMessage(EventId = 302, Level = LogLevel.Error, Message = "Key epoch {Epoch} in the log has another group key than this node's group key file: this node does not sign; check --group-key")]
    private static partial void LogKeyMismatch(ILogger logger, ulong epoch);

    [LoggerMessage(EventId = 303, Level = LogLevel.Debug, Message = "A {Command} proposal did not commit: {Reason}")]
    private static partial void LogProposalFailed(ILogger logger, string command, string reason);

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "Signer {SignerId} did not answer a session in time (late, or timed out): new sessions sign without it for {ExcludedMs} ms unless fewer than t signers would remain ({Timeouts} so far; its usual share latency {LatencyMs} ms)")]
    private static partial void LogSilentSigner(ILogger logger, int signerId, long excludedMs, long timeouts, double latencyMs);

    [LoggerMessage(EventId = 307, Level = LogLevel.Information, Message = "Key epoch {Epoch} signs the hand-over to key epoch {Next}: members {Signers}")]
    private static partial void LogRotationSession(ILogger logger, ulong epoch, ulong next, string signers);

    [LoggerMessage(EventId = 308, Level = LogLevel.Information, Message = "Key epoch {Epoch}'s signature over the hand-over to key epoch {Next} verified; proposing the rotation")]
    private static partial void LogRotationSigned(ILogger logger, ulong epoch, ulong next);

    [LoggerMessage(EventId = 309, Level = LogLevel.Information, Message = "Signer {SignerId} gave no share for a direct session ({Status} {Code}: {Reason}); new sessions sign without it for a while unless fewer than t signers would remain")]
    private static partial void LogSignerRefused(ILogger logger, int signerId, int status, string code, string reason);

    // A refusal that blames nobody: typically, after a change of leader, a nonce the signer used in a direct session
    // whose record the old leader did not get into the log.
    [LoggerMessage(EventId = 321, Level = LogLevel.Information, Message = "Signer {SignerId} declined a direct session ({Status} {Code}: {Reason}), for a reason that blames nobody (a nonce it used or a head signed before this leader saw it, a leader or key epoch it does not know yet, or a request it found malformed, which would be this leader's fault): the head is planned again after a short pause, and the signer is held out only if it declines several sessions in a row")]
    private static partial void LogSignerDeclined(ILogger logger, int signerId, int status, string code, string reason);

    [LoggerMessage(EventId = 304, Level = LogLevel.Warning, Message = "Leading term {Term} for {WaitedMs} ms, and signing still waits until this node has applied everything committed before its term (applied index {Applied} of {Target}): no head is signed until then")]
    private static partial void LogApplyWait(ILogger logger, long term, long waitedMs, long applied, long target);

    [LoggerMessage(EventId = 322, Level = LogLevel.Information, Message = "Term {Term}: this node has applied everything committed before its term, {WaitedMs} ms after it found itself leading; signing resumes")]
    private static partial void LogApplyCaughtUp(ILogger logger, long term, long waitedMs);

    [LoggerMessage(EventId = 305, Level = LogLevel.Error, Message = "The signature for head {Height} (attempt {Attempt}) did not verify although every share did; the head is signed again")]
    private static partial void LogNoCulprit(ILogger logger, ulong height, int attempt);
}
