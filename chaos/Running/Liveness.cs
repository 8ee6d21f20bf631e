using Sequencer.Chaos.Faults;
using Sequencer.Checker;

namespace Sequencer.Chaos.Running;

/// <summary>The liveness properties of DESIGN section 7, judged from the history and the fault records.</summary>
public static class Liveness
{
    private static readonly HashSet<FaultKind> LeaderLoss = [FaultKind.KillLeader, FaultKind.PauseLeader];

    private static readonly HashSet<FaultKind> Disk = [FaultKind.DiskTruncateWalTail, FaultKind.DiskFlipBits, FaultKind.DiskDeleteChunk, FaultKind.DiskExhaustFileHandles, FaultKind.DiskFull];

    /// <summary>
    /// A paused leader's kernel still accepts connections but nothing answers, and DotNext 6.12's pre-vote waits for
    /// every member's answer (<c>Task.WhenEach</c> over all members in <c>RaftCluster.PreVoteAsync</c>), so the first
    /// election after a pause takes one Raft request timeout (2 s) longer than after a kill, where the connection is refused.
    /// </summary>
    public static readonly TimeSpan PausedLeaderAllowance = TimeSpan.FromSeconds(2);

    /// <summary>
    /// LIVE-FAILOVER: after the leader is killed (or paused), a tx submitted after it is ordered within the bound (plus
    /// <see cref="PausedLeaderAllowance"/> for a paused leader). Judged when the nodes that remain were up and caught up
    /// at the loss (from the monitor's <paramref name="samples"/>, when given): a new leader commits only once a
    /// majority holds its entries, so with a follower still installing a snapshot after an earlier restart the time to
    /// the first new tx is that catch-up, which LIVE-HEAL judges. Such losses are reported, not judged.
    /// </summary>
    public static InvariantResult CheckFailover(IReadOnlyList<HistoryOp> history, IReadOnlyList<FaultRecord> records, TimeSpan bound,
        IReadOnlyList<NodeSample>? samples = null)
    {
        ArgumentNullException.ThrowIfNull(history);
        ArgumentNullException.ThrowIfNull(records);
        var problems = new List<string>();
        var measured = new List<string>();
        var ok = history.Where(o => o.Outcome == OpOutcome.Ok).OrderBy(o => o.CompletedNs).ToList();
        foreach (var record in records.Where(r => LeaderLoss.Contains(r.Kind) && r.Outcome is null))
        {
            var after = ok.Where(o => o.InvokedNs >= record.StartMs * 1_000_000L).Select(o => o.CompletedNs).DefaultIfEmpty(long.MaxValue).Min();
            if (after == long.MaxValue)
            {
                problems.Add($"#{record.Sequence} {record.Kind} {record.Target}: no tx was ordered afterwards");
                continue;
            }

            record.FailoverMs = after / 1_000_000 - record.StartMs;
            if (samples is not null && !OthersCaughtUp(samples, record))
            {
                measured.Add($"#{record.Sequence} {record.FailoverMs} ms (not judged: another node was down or catching up)");
                continue;
            }

            measured.Add($"#{record.Sequence} {record.FailoverMs} ms");
            var limit = record.Kind == FaultKind.PauseLeader ? bound + PausedLeaderAllowance : bound;
            if (record.FailoverMs > limit.TotalMilliseconds)
                problems.Add($"#{record.Sequence} {record.Kind} {record.Target}: the first new tx was ordered {record.FailoverMs} ms after it (bound {limit.TotalMilliseconds} ms)");
        }

        return problems.Count == 0
            ? new InvariantResult("LIVE-FAILOVER", true, measured.Count == 0 ? "no leader was killed in this run" : $"new txs ordered after each leader loss: {string.Join(", ", measured)}")
            : new InvariantResult("LIVE-FAILOVER", false, string.Join("; ", problems));
    }

    /// <summary>Faults that stop ordering while they last: the leader or a majority killed, paused or cut off.</summary>
    private static bool StopsOrdering(FaultKind kind)
        => kind is FaultKind.KillLeader or FaultKind.KillMajority or FaultKind.KillAll or FaultKind.PauseLeader or FaultKind.IsolateLeader;

    /// <summary>
    /// LIVE-HEAL: after the last heal every node converges within the bound and txs are ordered again; and after each
    /// fault's heal, a tx submitted after it is ordered within the bound (its recovery time), unless a later fault that
    /// stops ordering began before it resumed (that fault's recovery is judged instead).
    /// </summary>
    public static InvariantResult CheckHeal(Convergence convergence, IReadOnlyList<HistoryOp> history, IReadOnlyList<FaultRecord> records, long healedAtMs, TimeSpan bound,
        Convergence? signing = null)
    {
        ArgumentNullException.ThrowIfNull(convergence);
        ArgumentNullException.ThrowIfNull(history);
        ArgumentNullException.ThrowIfNull(records);
        var problems = new List<string>();
        if (!convergence.Converged || convergence.AfterHealMs > bound.TotalMilliseconds)
            problems.Add(convergence.Message);
        if (signing is not null && (!signing.Converged || signing.AfterHealMs > bound.TotalMilliseconds))
            problems.Add(signing.Message);
        var ok = history.Where(o => o.Outcome == OpOutcome.Ok).ToList();
        var interrupted = new List<string>();
        if (!ok.Any(o => o.InvokedNs >= healedAtMs * 1_000_000L))
            problems.Add("no tx submitted after the final heal was ordered");
        foreach (var record in records.Where(r => r.EndMs is not null))
        {
            var after = ok.Where(o => o.InvokedNs >= record.EndMs!.Value * 1_000_000L).Select(o => o.CompletedNs).DefaultIfEmpty(long.MaxValue).Min();
            if (after == long.MaxValue)
                continue;
            record.RecoveryMs = Math.Max(0, after / 1_000_000 - record.EndMs!.Value);
            if (record.RecoveryMs <= bound.TotalMilliseconds)
                continue;
            // A later fault that stops ordering by itself (the leader or a majority killed, paused or cut off) began
            // before ordering resumed: this recovery was interrupted, and the later fault's recovery, judged from its
            // own heal, covers it (a seed put KillAll 1.9 s after a KillMajority's heal, before the restarted nodes
            // could order, and this fault's "recovery" then held all of KillAll and its restart).
            if (records.FirstOrDefault(r => StopsOrdering(r.Kind) && r.StartMs >= record.EndMs!.Value && r.StartMs < after / 1_000_000) is { } next)
            {
                interrupted.Add($"#{record.Sequence}'s recovery ({record.RecoveryMs} ms) was interrupted by #{next.Sequence} {next.Kind}, whose recovery is judged");
                continue;
            }

            problems.Add($"#{record.Sequence} {record.Kind}: ordering resumed {record.RecoveryMs} ms after the heal (bound {bound.TotalMilliseconds} ms)");
        }

        return problems.Count == 0
            ? new InvariantResult("LIVE-HEAL", true, $"every node converged {convergence.AfterHealMs} ms after the final heal{(signing is null ? string.Empty : $" and had signed every batch {signing.AfterHealMs} ms after it")}; ordering resumed after every fault within {bound.TotalSeconds} s{(interrupted.Count == 0 ? string.Empty : $" ({string.Join("; ", interrupted)})")}")
            : new InvariantResult("LIVE-HEAL", false, string.Join("; ", problems));
    }

    /// <summary>Faults that leave the leader and a majority working when they hit only followers.</summary>
    private static readonly HashSet<FaultKind> MinorityKinds =
    [
        FaultKind.KillFollower, FaultKind.PauseFollower, FaultKind.KillMinority, FaultKind.IsolateNode,
        FaultKind.Delay, FaultKind.Loss, FaultKind.Reset, FaultKind.ClogThenFlush,
        FaultKind.DiskTruncateWalTail, FaultKind.DiskFlipBits, FaultKind.DiskDeleteChunk, FaultKind.DiskExhaustFileHandles, FaultKind.DiskFull,
        FaultKind.ClockSkew, FaultKind.ClockStrobe, FaultKind.ByzantineSigner, FaultKind.RotateKey,
    ];

    /// <summary>How long before a fault its reference rate is measured.</summary>
    public static readonly TimeSpan RateWindow = TimeSpan.FromSeconds(4);

    /// <summary>
    /// LIVE-MINORITY (issue 7, item 3): a fault that hits only followers, while the leader and every other node are up and
    /// caught up, must not stop ordering. For each such fault the report gives the rate of acknowledgements before it
    /// (the <see cref="RateWindow"/> before the injection, after any earlier heal) and during it, and the longest time
    /// with no acknowledgement at all; the bound enforced is no such stall longer than <paramref name="stallBound"/> and
    /// a rate during the fault of at least <paramref name="rateFloor"/> of the rate before. Faults on the leader,
    /// injected while another node was still down or catching up, or before the cluster had settled after the previous
    /// fault (<see cref="MinoritySettle"/>), are reported but not judged (LIVE-FAILOVER and LIVE-HEAL judge those).
    /// </summary>
    /// <param name="clientTimeout">
    /// How long a workload client waits for a node before it tries another: every client that sent to the faulty node
    /// waits that long whatever the cluster does, so the rate during the fault is taken from that long after its start
    /// (and not judged when less than a second of the fault remains); the stall is judged over the whole fault.
    /// </param>
    public static InvariantResult CheckMinority(IReadOnlyList<HistoryOp> history, IReadOnlyList<FaultRecord> records, IReadOnlyList<NodeSample> samples,
        TimeSpan stallBound, double rateFloor, TimeSpan clientTimeout = default)
    {
        ArgumentNullException.ThrowIfNull(history);
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(samples);
        var acks = history.Where(o => o.Outcome == OpOutcome.Ok).Select(o => o.CompletedNs / 1_000_000).Order().ToArray();
        int CountIn(long fromMs, long toMs)
        {
            var lo = Array.BinarySearch(acks, fromMs);
            var hi = Array.BinarySearch(acks, toMs);
            lo = lo < 0 ? ~lo : FirstAtOrAfter(acks, lo);
            hi = hi < 0 ? ~hi : FirstAtOrAfter(acks, hi);
            return hi - lo;
        }

        var problems = new List<string>();
        var judged = new List<string>();
        long previousEnd = 0;
        long? previousRecovered = null;
        foreach (var record in records.OrderBy(r => r.StartMs))
        {
            var injected = record.EndMs is not null && (record.Outcome is null || !record.Outcome.StartsWith("not injected", StringComparison.Ordinal));
            if (!injected)
                continue;
            var end = record.EndMs!.Value;
            var from = Math.Max(previousEnd, record.StartMs - (long)RateWindow.TotalMilliseconds);
            var settled = (previousRecovered is not { } recovered || record.StartMs - recovered >= (long)MinoritySettle.TotalMilliseconds) && SameTerm(samples, record.StartMs - (long)MinoritySettle.TotalMilliseconds, record.StartMs);
            previousEnd = end;
            previousRecovered = end + (record.RecoveryMs ?? 0);
            if (record.StartMs - from < 1000 || end - record.StartMs < 500)
                continue;
            record.RateBefore = CountIn(from, record.StartMs) * 1000.0 / (record.StartMs - from);
            var rateFrom = record.StartMs + (long)clientTimeout.TotalMilliseconds;
            var rateJudged = end - rateFrom >= 1000;
            record.RateDuring = rateJudged ? CountIn(rateFrom, end) * 1000.0 / (end - rateFrom) : CountIn(record.StartMs, end) * 1000.0 / (end - record.StartMs);
            record.LongestStallMs = LongestGap(acks, record.StartMs, end);
            record.MinorityFault = MinorityKinds.Contains(record.Kind) && record.LeaderAtStart is { } leader && !record.TargetNodes.Contains(leader)
                && settled && OthersCaughtUp(samples, record);
            if (record.MinorityFault != true)
                continue;
            var line = $"#{record.Sequence} {record.Kind} {record.Target}: {record.RateDuring:0} tx/s{(rateJudged ? "" : " (not judged: a short fault)")} vs {record.RateBefore:0} before, longest stall {record.LongestStallMs} ms";
            judged.Add(line);
            if (record.LongestStallMs > stallBound.TotalMilliseconds || (rateJudged && record.RateDuring < rateFloor * record.RateBefore))
                problems.Add(line);
        }

        return problems.Count == 0
            ? new InvariantResult("LIVE-MINORITY", true, judged.Count == 0
                ? "no fault hit only followers while the rest of the cluster was caught up"
                : $"ordering went on through every follower fault (bound: no stall over {stallBound.TotalSeconds:0.#} s, at least {rateFloor:P0} of the rate before): {string.Join("; ", judged)}")
            : new InvariantResult("LIVE-MINORITY", false, $"bound: no stall over {stallBound.TotalSeconds:0.#} s and at least {rateFloor:P0} of the rate before; broken by {string.Join("; ", problems)}");
    }

    private static int FirstAtOrAfter(long[] sorted, int found)
    {
        var value = sorted[found];
        while (found > 0 && sorted[found - 1] == value)
            found--;
        return found;
    }

    /// <summary>The longest time within [from, to] with no acknowledgement, counting the edges of the window.</summary>
    private static long LongestGap(long[] acks, long fromMs, long toMs)
    {
        var last = fromMs;
        long longest = 0;
        var start = Array.BinarySearch(acks, fromMs);
        for (var i = start < 0 ? ~start : start; i < acks.Length && acks[i] <= toMs; i++)
        {
            longest = Math.Max(longest, acks[i] - last);
            last = acks[i];
        }

        return Math.Max(longest, toMs - last);
    }

    /// <summary>
    /// Every node the fault does not target was up and had applied about as far as the leader in the monitor's last
    /// round before the injection (within what the leader applies in two polling intervals).
    /// </summary>
    /// <summary>
    /// LIVE-MINORITY judges a follower fault only on a settled cluster: ordering had resumed after the previous fault at
    /// least this long before, and the leader's term did not change in this time. Right after a restart of every node a
    /// new leader has just been elected and its followers are cold: a chaos soak saw a clog into a follower 0.6 s after
    /// such an election judged as a 2.2 s stall.
    /// </summary>
    public static readonly TimeSpan MinoritySettle = TimeSpan.FromSeconds(3);

    // Every node that answered in [fromMs, toMs] reported the same term throughout.
    private static bool SameTerm(IReadOnlyList<NodeSample> samples, long fromMs, long toMs)
        => samples.Where(s => s.Up && s.AtMs >= fromMs && s.AtMs <= toMs).Select(s => s.Term).Distinct().Count() <= 1;

    private static bool OthersCaughtUp(IReadOnlyList<NodeSample> samples, FaultRecord record)
    {
        var rounds = samples.Where(s => s.AtMs <= record.StartMs && s.AtMs >= record.StartMs - 2000).GroupBy(s => s.AtMs).OrderByDescending(g => g.Key).Take(3).ToList();
        if (rounds.Count < 2)
            return false;
        var last = rounds[0].ToList();
        var top = last.Where(s => s.Up).Select(s => s.Height).DefaultIfEmpty(0UL).Max();
        var earlier = rounds[^1].Where(s => s.Up).Select(s => s.Height).DefaultIfEmpty(0UL).Max();
        var slack = Math.Max(8UL, top - Math.Min(top, earlier));
        return last.Where(s => !record.TargetNodes.Contains(s.NodeId)).All(s => s.Up && s.Height + slack >= top);
    }

    /// <summary>How long after a heal the cluster may settle before LIVE-SIGN is judged again.</summary>
    public static readonly TimeSpan SignSettle = TimeSpan.FromSeconds(3);

    /// <summary>
    /// LIVE-SIGN: while at least t signers are up and connected, a new signed head covers every ordered batch within
    /// <paramref name="bound"/>. Judged from the monitor's samples (every node's height and highest signed head a few
    /// times a second) at every moment with no fault active (none began, and the last heal is at least
    /// <see cref="SignSettle"/> ago) and the same leader throughout and for <see cref="SignSettle"/> before (a new leader
    /// starts its sessions afresh; an election is judged by LIVE-FAILOVER and the bench, not here): the newest height any
    /// node had applied then must be covered on some node within the bound (plus one sampling interval, the
    /// measurement's resolution).
    /// </summary>
    /// <remarks>
    /// It fails on evidence only: a later round that began asking more than the bound after the moment and still saw the
    /// height uncovered (or none covering it before the end). A round's answers come at some moment between when it began
    /// asking and when it ended (<see cref="NodeSample.FromMs"/>, <see cref="NodeSample.AtMs"/>), and a slow round (a
    /// node that has just restarted answers slowly) leaves a gap in which the height may have been covered at any time: a
    /// check that took the end of the first covering round as the time of coverage failed a run over such a gap whose heads
    /// were signed within 100 ms throughout.
    /// </remarks>
    /// <param name="samples">The monitor's samples.</param>
    /// <param name="records">The run's faults.</param>
    /// <param name="bound">How soon a height must be covered.</param>
    /// <param name="sampling">The monitor's poll interval.</param>
    /// <param name="endMs">When the run's samples end.</param>
    /// <param name="trace">The leader's signing views (<see cref="ClusterMonitor.SigningTrace"/>): a failure quotes those
    /// of its first stall, so that a failed run says why signing stalled.</param>
    public static InvariantResult CheckSigning(IReadOnlyList<NodeSample> samples, IReadOnlyList<FaultRecord> records, TimeSpan bound, TimeSpan sampling, long endMs,
        IReadOnlyList<SigningSample>? trace = null)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(records);
        var rounds = samples.GroupBy(s => s.AtMs).OrderBy(g => g.Key)
            .Select(g => (AtMs: g.Key, FromMs: g.Min(s => s.FromMs), Height: g.Where(s => s.Up).Select(s => s.Height).DefaultIfEmpty(0UL).Max(),
                Signed: g.Where(s => s.Up).Select(s => s.SignedThrough).DefaultIfEmpty(0UL).Max(),
                Leader: g.Where(s => s.Up && s.Role == "leader").OrderByDescending(s => s.Term).Select(s => (int?)s.NodeId).FirstOrDefault()))
            .ToList();
        var firstSigned = rounds.Where(r => r.Signed > 0).Select(r => (long?)r.AtMs).FirstOrDefault();
        var limitMs = (long)(bound + sampling).TotalMilliseconds;
        bool Quiet(long atMs) => records.All(r => atMs < r.StartMs - limitMs || (r.EndMs is { } end && atMs > end + SignSettle.TotalMilliseconds));
        var problems = new List<string>();
        long checkedMoments = 0, worstMs = 0;
        for (var i = 0; i < rounds.Count; i++)
        {
            var (at, _, height, _, _) = rounds[i];
            if (firstSigned is null || at < firstSigned || height == 0 || at + limitMs > endMs || !Quiet(at))
                continue;
            var leader = rounds[i].Leader;
            var window = rounds.Where(r => r.AtMs >= at - SignSettle.TotalMilliseconds && r.AtMs <= at + limitMs).ToList();
            if (leader is null || window.Any(r => r.Leader != leader))
                continue;
            checkedMoments++;
            var covering = rounds.FindIndex(i, r => r.Signed >= height);
            long? coveredAt = covering >= 0 ? rounds[covering].AtMs : null;
            worstMs = Math.Max(worstMs, coveredAt is { } when ? when - at : 0);

            // The last round that still saw it uncovered: the height was covered no earlier than that round began asking.
            var uncovered = (covering >= 0 ? covering : rounds.Count) - 1;
            var stillUncoveredAt = uncovered > i ? rounds[uncovered].FromMs : at;
            if (stillUncoveredAt - at > limitMs && problems.Count < 5)
            {
                problems.Add($"at {at / 1000.0:0.0} s height {height} was not covered by a signed head until "
                    + $"{(coveredAt is { } covered ? $"{covered / 1000.0:0.0} s" : "the end")} (still uncovered at {stillUncoveredAt / 1000.0:0.0} s)"
                    + (problems.Count == 0 ? StallTrace(trace, at, coveredAt ?? stillUncoveredAt) : string.Empty));
            }
        }

        return problems.Count == 0
            ? new InvariantResult("LIVE-SIGN", true, checkedMoments == 0 ? "no quiet moment with a leader and a key to judge" : $"{checkedMoments} quiet moments: every ordered height covered within {worstMs} ms (bound {bound.TotalMilliseconds:0} ms + {sampling.TotalMilliseconds:0} ms sampling)")
            : new InvariantResult("LIVE-SIGN", false, string.Join("; ", problems));
    }

    // The leader's signing views from a little before a stall to its end, at most eight, evenly spread.
    private static string StallTrace(IReadOnlyList<SigningSample>? trace, long fromMs, long toMs)
    {
        var during = trace?.Where(t => t.AtMs >= fromMs - 500 && t.AtMs <= toMs).ToList() ?? [];
        if (during.Count == 0)
            return string.Empty;
        var step = Math.Max(1, (during.Count + 7) / 8);
        var lines = during.Where((_, i) => i % step == 0 || i == during.Count - 1).Distinct()
            .Select(t => $"\n      {t.AtMs / 1000.0:0.00} s n{t.NodeId}: {t.View}");
        return "\n    the leader's signing view then:" + string.Concat(lines);
    }

    /// <summary>
    /// DISK-FAILFAST: after a disk fault the node recovered, failed fast with a clear message, or kept running while it
    /// reported itself not ready with the reason; it never hung silently. (That it never served corrupt data is
    /// INV-ORDER and INV-CHAIN over its log.)
    /// </summary>
    public static InvariantResult CheckDiskFaults(IReadOnlyList<FaultRecord> records)
    {
        ArgumentNullException.ThrowIfNull(records);
        var disk = records.Where(r => Disk.Contains(r.Kind) && r.EndMs is not null).ToList();
        var bad = disk.Where(r => r.Outcome is null || !(r.Outcome.StartsWith("recovered", StringComparison.Ordinal) || r.Outcome.StartsWith("failed safe", StringComparison.Ordinal)
            || (r.Outcome.StartsWith("failed fast", StringComparison.Ordinal) && !r.Outcome.Contains("without a clear message", StringComparison.Ordinal)))).ToList();
        return bad.Count == 0
            ? new InvariantResult("DISK-FAILFAST", true, disk.Count == 0 ? "no disk fault in this run" : string.Join("; ", disk.Select(r => $"#{r.Sequence} {r.Kind}: {r.Outcome}")))
            : new InvariantResult("DISK-FAILFAST", false, string.Join("; ", bad.Select(r => $"#{r.Sequence} {r.Kind} on {r.Target}: {r.Outcome ?? "no outcome"}")));
    }
}
