namespace Sequencer.Signing;

/// <summary>What the leader knows about one signer, as <c>GET /v1/signing</c> serves it.</summary>
/// <param name="Id">The member id.</param>
/// <param name="BadShares">Invalid shares it sent (each one named it).</param>
/// <param name="Offences">Distinct offences: bad shares from sessions started after its previous exclusion began.</param>
/// <param name="Timeouts">Sessions it did not answer in time.</param>
/// <param name="SharesAccepted">Valid shares it sent.</param>
/// <param name="ExcludedForMs">How much longer it is left out of new sessions unless probed (0: it is not).</param>
/// <param name="LastBadShareHeight">The head of its last invalid share (0: none).</param>
/// <param name="ShareLatencyMs">Its recent time from session start to a valid share, smoothed.</param>
public sealed record SignerReport(int Id, long BadShares, long Offences, long Timeouts, long SharesAccepted, long ExcludedForMs, ulong LastBadShareHeight, double ShareLatencyMs);

/// <summary>
/// The leader's record of each signer and the rules that choose signers (DESIGN section 5, liveness). Pure: time is an
/// input (milliseconds of a monotonic clock), and nothing here does I/O.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>A bad share excludes its signer for <c>BadShareExclusionMs</c>, doubling with every further offence up to
/// <c>MaxBadShareExclusionMs</c>. An offence is a bad share from a session that started after the current exclusion
/// began: one Byzantine episode touches every session in flight at once, and counts once.</item>
/// <item>A session a signer does not answer in time excludes it for <c>TimeoutExclusionMs</c>, doubling per consecutive
/// timeout up to <c>MaxTimeoutExclusionMs</c>. "In time" is first the late mark (<see cref="IsLate"/>): a share that has
/// not come <c>LateShareMs</c> (or four times the signer's usual latency, if longer, up to half the session timeout) after the session started counts as a
/// timeout then, and the planner may start another session without that signer; a share that still comes readmits it.</item>
/// <item>Healthy signers are chosen in this order: this node; signers whose last valid share is recent (they are up and
/// caught up: a node that restarts, or catches up from a snapshot, cannot answer a session until it has applied it);
/// signers that have answered at all, by latency; the rest, by id.</item>
/// <item>Excluding signers never leaves fewer than t eligible: when the healthy signers with a free commitment are
/// fewer than t, timed-out or excluded signers are probed, taking turns (the one probed longest ago first, then the
/// earliest expiry), and a valid share readmits a signer at once.</item>
/// </list>
/// </remarks>
public sealed class SignerHealth(SigningTimings timings)
{
    /// <summary>How recent a signer's last valid share must be for it to rank among the signers known to be answering.</summary>
    public const long RecentShareMs = 5_000;

    private readonly Dictionary<int, Record> records = [];

    /// <summary>A valid share at <paramref name="nowMs"/>: the signer is readmitted (a probe succeeded) and its latency smoothed in.</summary>
    public void RecordShare(int signer, double latencyMs, long nowMs)
    {
        var record = Of(signer);
        record.LastShareMs = nowMs;
        record.LatencyMs = record.Accepted == 0 ? latencyMs : (0.8 * record.LatencyMs) + (0.2 * latencyMs);
        record.Accepted++;
        record.TimeoutStreak = 0;
        record.RefusalStreak = 0;
        record.TimedOutUntil = 0;
        record.ExcludedUntil = 0;
    }

    /// <summary>
    /// A bad share from a session planned at <paramref name="sessionStartedMs"/>. Returns the exclusion it caused in
    /// milliseconds, or 0 when it belongs to an offence already counted.
    /// </summary>
    public long RecordBadShare(int signer, ulong head, long sessionStartedMs, long nowMs)
    {
        var record = Of(signer);
        record.BadShares++;
        record.LastBadHead = head;
        if (record.ExcludedSince != 0 && sessionStartedMs <= record.ExcludedSince)
            return 0;
        record.Offences++;
        var exclusion = Math.Min(timings.MaxBadShareExclusionMs, timings.BadShareExclusionMs << (int)Math.Min(20, record.Offences - 1));
        record.ExcludedSince = nowMs;
        record.ExcludedUntil = nowMs + exclusion;
        return exclusion;
    }

    /// <summary>A session the signer did not answer in time.</summary>
    public void RecordTimeout(int signer, long nowMs)
    {
        var record = Of(signer);
        record.Timeouts++;
        record.TimeoutStreak = Math.Min(record.TimeoutStreak + 1, 16);
        var exclusion = Math.Min(timings.MaxTimeoutExclusionMs, timings.TimeoutExclusionMs << (record.TimeoutStreak - 1));
        record.TimedOutUntil = Math.Max(record.TimedOutUntil, nowMs + exclusion);
    }

    /// <summary>Refusals in a row, without a valid share between them, that blame nobody before the next one counts as a timeout.</summary>
    public const int FreeRefusals = 2;

    /// <summary>
    /// A refusal that names a reason blaming nobody (a nonce the signer says is used, a head it says is signed, a
    /// leader it does not know yet): an honest signer gives one when the leader's view is a moment stale, and answers
    /// the next session. A signer that only ever refuses so would otherwise be chosen again and again while t others
    /// could sign: after <see cref="FreeRefusals"/> in a row each further one counts as a timeout (and probes keep t
    /// signers eligible). Returns true when this one counted.
    /// </summary>
    public bool RecordRefusal(int signer, long nowMs)
    {
        var record = Of(signer);
        record.RefusalStreak = Math.Min(record.RefusalStreak + 1, FreeRefusals + 1);
        if (record.RefusalStreak <= FreeRefusals)
            return false;
        RecordTimeout(signer, nowMs);
        return true;
    }

    /// <summary>
    /// True when <paramref name="signer"/> has not answered a session that started <paramref name="ageMs"/> ago: at least
    /// <c>LateShareMs</c>, and at least four times its smoothed latency when it has answered before, but never later than
    /// half the session timeout. The cap keeps a slow record from holding sessions: a signer that answered slowly while
    /// it caught up after a restart keeps a high latency for a while, and without the cap a late mark of four times that
    /// exceeds the session timeout, so every session it is in holds its place in the flight until it expires.
    /// </summary>
    public bool IsLate(int signer, long ageMs)
    {
        var record = Of(signer);
        var usual = record.Accepted == 0 ? 0 : (long)Math.Ceiling(4 * record.LatencyMs);
        return ageMs >= Math.Max(timings.LateShareMs, Math.Min(usual, timings.SessionTimeoutMs / 2));
    }

    /// <summary>
    /// Chooses t signers that each have a free commitment: healthy signers first (this node, then signers with a valid
    /// share in the last <see cref="RecentShareMs"/>, then signers that ever answered, each by latency, then by id);
    /// when they are fewer than t, timed-out or excluded signers, the one probed longest ago first, then the earliest
    /// expiry (probes). Null when fewer than t members have a free commitment at all. The result is ascending.
    /// </summary>
    public List<int>? Choose(IReadOnlyList<int> members, int threshold, int self, long nowMs, Func<int, bool> hasCommitment)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentNullException.ThrowIfNull(hasCommitment);
        var ready = members.Where(hasCommitment).ToList();
        var healthy = ready.Where(id => Of(id).ExcludedUntil <= nowMs && Of(id).TimedOutUntil <= nowMs)
            .OrderBy(id => id == self ? 0 : 1)
            .ThenBy(id => nowMs - Of(id).LastShareMs <= RecentShareMs ? 0 : 1)
            .ThenBy(id => Of(id).Accepted > 0 ? 0 : 1)
            .ThenBy(id => Of(id).LatencyMs)
            .ThenBy(id => id);
        // Probes take turns: the candidate probed longest ago first (a timed-out signer that is down or still catching
        // up must not be probed again and again while an excluded one that would answer waits), then the earliest expiry.
        var probes = ready.Where(id => !IsHealthy(id, nowMs))
            .OrderBy(id => Of(id).LastProbedMs)
            .ThenBy(id => Math.Max(Of(id).ExcludedUntil, Of(id).TimedOutUntil))
            .ThenBy(id => id);
        var chosen = healthy.Concat(probes).Take(threshold).ToList();
        if (chosen.Count < threshold)
            return null;
        foreach (var id in chosen.Where(id => !IsHealthy(id, nowMs)))
            Of(id).LastProbedMs = nowMs;
        chosen.Sort();
        return chosen;
    }

    /// <summary>True while <paramref name="signer"/> is neither excluded nor timed out.</summary>
    public bool IsHealthy(int signer, long nowMs) => Of(signer).ExcludedUntil <= nowMs && Of(signer).TimedOutUntil <= nowMs;

    /// <summary>The report of <paramref name="signer"/>.</summary>
    public SignerReport Report(int signer, long nowMs)
    {
        var record = Of(signer);
        var until = Math.Max(record.ExcludedUntil, record.TimedOutUntil);
        return new SignerReport(signer, record.BadShares, record.Offences, record.Timeouts, record.Accepted, Math.Max(0, until - nowMs), record.LastBadHead,
            Math.Round(record.LatencyMs, 2));
    }

    private Record Of(int signer)
    {
        if (!records.TryGetValue(signer, out var record))
            records[signer] = record = new Record();
        return record;
    }

    private sealed class Record
    {
        public long BadShares { get; set; }

        public long Offences { get; set; }

        public long ExcludedSince { get; set; }

        public long ExcludedUntil { get; set; }

        public long Timeouts { get; set; }

        public int TimeoutStreak { get; set; }

        public int RefusalStreak { get; set; }

        public long TimedOutUntil { get; set; }

        public long Accepted { get; set; }

        public ulong LastBadHead { get; set; }

        public double LatencyMs { get; set; }

        public long LastShareMs { get; set; } = long.MinValue / 2;

        public long LastProbedMs { get; set; } = long.MinValue / 2;
    }
}

/// <summary>The signing timings (from <c>SequencerLimits</c>), in milliseconds.</summary>
/// <param name="SessionTimeoutMs">How long an applied session waits for its shares.</param>
/// <param name="ProposalTimeoutMs">How long a planned session may take to reach the log, and an aggregated signature to be applied.</param>
/// <param name="BadShareExclusionMs">The first exclusion for a bad share.</param>
/// <param name="MaxBadShareExclusionMs">The longest exclusion for bad shares.</param>
/// <param name="TimeoutExclusionMs">The first exclusion for a timeout.</param>
/// <param name="MaxTimeoutExclusionMs">The longest exclusion for timeouts.</param>
/// <param name="MaxSessionsInFlight">The most head sessions planned, applied or aggregated but not yet signed.</param>
/// <param name="MinHeadIntervalMs">The shortest time between two session starts (caps the signing CPU).</param>
/// <param name="LateShareMs">How long a session waits for a signer's share before it counts that signer as timed out and another session may start without it (the session itself waits on until <paramref name="SessionTimeoutMs"/>).</param>
public sealed record SigningTimings(
    long SessionTimeoutMs = 1_000,
    long ProposalTimeoutMs = 5_000,
    long BadShareExclusionMs = 60_000,
    long MaxBadShareExclusionMs = 3_600_000,
    long TimeoutExclusionMs = 500,
    long MaxTimeoutExclusionMs = 4_000,
    int MaxSessionsInFlight = 2,
    long MinHeadIntervalMs = 0,
    long LateShareMs = 250)
{
    /// <summary>The timings a node's limits set.</summary>
    public static SigningTimings From(Sequencer.Core.SequencerLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        return new(limits.SigningSessionTimeoutMs, limits.SigningProposalTimeoutMs, limits.BadShareExclusionMs, limits.MaxBadShareExclusionMs,
            limits.TimeoutExclusionMs, limits.MaxTimeoutExclusionMs, limits.MaxSigningSessionsInFlight, limits.MinHeadIntervalMs,
            limits.SigningLateShareMs);
    }
}
