using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Running;
using Sequencer.Checker;

namespace Sequencer.ChaosTests;

/// <summary>LIVE-MINORITY judged from a synthetic history: a stall or a collapse during a follower fault fails it.</summary>
public sealed class LiveMinorityTests
{
    private static readonly TimeSpan Stall = TimeSpan.FromSeconds(2);

    /// <summary>An acknowledgement every <c>everyMs</c> for 20 s, except in [gapFrom, gapTo).</summary>
    private static List<HistoryOp> Acks(int everyMs, long gapFrom = -1, long gapTo = -1, int slowEveryMs = 0)
    {
        var ops = new List<HistoryOp>();
        var i = 0;
        for (long at = 0; at < 20_000;)
        {
            var inGap = at >= gapFrom && at < gapTo;
            if (!inGap || slowEveryMs > 0)
                ops.Add(new HistoryOp(0, $"0x{i++:x64}", 1, at * 1_000_000, at * 1_000_000, OpOutcome.Ok, 1, 0, null));
            at += inGap && slowEveryMs > 0 ? slowEveryMs : inGap ? 1 : everyMs;
        }

        return ops;
    }

    /// <summary>Samples every 200 ms: node 1 leads, every node is up at the same height unless <paramref name="lagging"/>.</summary>
    private static List<NodeSample> Samples(int? lagging = null)
    {
        var samples = new List<NodeSample>();
        for (long at = 0; at <= 20_000; at += 200)
        {
            var height = (ulong)(at / 10) + 1;
            foreach (var node in new[] { 1, 2, 3 })
                samples.Add(new NodeSample(at, node, true, node == 1 ? "leader" : "follower", 1, 1, node == lagging ? height / 2 : height, (long)height));
        }

        return samples;
    }

    private static FaultRecord Fault(FaultKind kind, int target, int leader = 1) => new()
    {
        Sequence = 1, Kind = kind, StartMs = 8_000, EndMs = 12_000, Target = $"n{target}", TargetNodes = [target], LeaderAtStart = leader,
    };

    [Fact]
    public void SteadyOrderingThroughAFollowerFault_Passes()
    {
        var fault = Fault(FaultKind.Delay, 3);
        var result = Liveness.CheckMinority(Acks(10), [fault], Samples(), Stall, 0.25);
        Assert.True(result.Passed, result.Detail);
        Assert.True(fault.MinorityFault);
        Assert.InRange(fault.RateBefore!.Value, 95, 105);
        Assert.InRange(fault.RateDuring!.Value, 95, 105);
        Assert.InRange(fault.LongestStallMs!.Value, 0, 20);
    }

    [Fact]
    public void AStallDuringAFollowerFault_Fails()
    {
        var result = Liveness.CheckMinority(Acks(10, 9_000, 11_500), [Fault(FaultKind.KillFollower, 2)], Samples(), Stall, 0.25);
        Assert.False(result.Passed);
        Assert.Contains("longest stall 2510 ms", result.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void ACollapsedRateDuringAFollowerFault_Fails()
    {
        // One ack a second throughout the fault: never a 2 s stall, but 1 tx/s against 100.
        var result = Liveness.CheckMinority(Acks(10, 8_000, 12_000, slowEveryMs: 1_000), [Fault(FaultKind.Loss, 3)], Samples(), Stall, 0.25);
        Assert.False(result.Passed);
        Assert.Contains("vs 100 before", result.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void TheClientTimeoutAtTheStartOfAFault_IsNotCountedInTheRate_ButTheStallIs()
    {
        // Every client that sent to the faulty node waits out its timeout (1 s): no ack for 900 ms, then the full rate.
        var fault = Fault(FaultKind.PauseFollower, 3);
        var result = Liveness.CheckMinority(Acks(10, 8_000, 8_900), [fault], Samples(), Stall, 0.9, TimeSpan.FromSeconds(1));
        Assert.True(result.Passed, result.Detail);
        Assert.InRange(fault.RateDuring!.Value, 95, 105);
        Assert.InRange(fault.LongestStallMs!.Value, 900, 920);

        // Slow for good after the timeout: judged, and it fails.
        var slow = Fault(FaultKind.PauseFollower, 3);
        Assert.False(Liveness.CheckMinority(Acks(10, 8_000, 12_000, slowEveryMs: 500), [slow], Samples(), Stall, 0.25, TimeSpan.FromSeconds(1)).Passed);

        // A fault shorter than the timeout and a second: only the stall is judged.
        var brief = new FaultRecord { Sequence = 1, Kind = FaultKind.PauseFollower, StartMs = 8_000, EndMs = 9_500, Target = "n3", TargetNodes = [3], LeaderAtStart = 1 };
        var briefResult = Liveness.CheckMinority(Acks(10, 8_000, 9_400), [brief], Samples(), Stall, 0.25, TimeSpan.FromSeconds(1));
        Assert.True(briefResult.Passed, briefResult.Detail);
        Assert.Contains("not judged: a short fault", briefResult.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void FailoverWhileTheOtherFollowerCatchesUp_IsReportedNotJudged()
    {
        // The leader (n1) is killed while n3 is still catching up: the new leader commits only once n3 has its entries.
        var kill = new FaultRecord { Sequence = 1, Kind = FaultKind.KillLeader, StartMs = 8_000, EndMs = 12_000, Target = "n1", TargetNodes = [1], LeaderAtStart = 1 };
        var history = Acks(10, 8_000, 10_500);
        var lagging = Liveness.CheckFailover(history, [kill], TimeSpan.FromSeconds(2), Samples(lagging: 3));
        Assert.True(lagging.Passed, lagging.Detail);
        Assert.Contains("not judged", lagging.Detail, StringComparison.Ordinal);

        var healthy = new FaultRecord { Sequence = 1, Kind = FaultKind.KillLeader, StartMs = 8_000, EndMs = 12_000, Target = "n1", TargetNodes = [1], LeaderAtStart = 1 };
        Assert.False(Liveness.CheckFailover(history, [healthy], TimeSpan.FromSeconds(2), Samples()).Passed);
    }

    [Fact]
    public void FaultsOnTheLeaderOrWhileAnotherNodeLags_AreReportedNotJudged()
    {
        var history = Acks(10, 9_000, 11_500);
        var onLeader = Fault(FaultKind.Delay, 1);
        Assert.True(Liveness.CheckMinority(history, [onLeader], Samples(), Stall, 0.25).Passed);
        Assert.False(onLeader.MinorityFault);
        Assert.Equal(2510, onLeader.LongestStallMs);

        // Node 2 is far behind when node 3 is hit: the only caught-up follower is the target.
        var whileLagging = Fault(FaultKind.KillFollower, 3);
        Assert.True(Liveness.CheckMinority(history, [whileLagging], Samples(lagging: 2), Stall, 0.25).Passed);
        Assert.False(whileLagging.MinorityFault);
    }

    [Fact]
    public void AFollowerFaultRightAfterTheClusterRecovered_IsReportedNotJudged()
    {
        // Soak seed 1852663964: every node was killed and restarted, a leader was elected, ordering resumed, and 0.6 s
        // later a clog into a follower met the cold cluster: a 2.2 s stall that was the restart's, not the clog's.
        var killAll = new FaultRecord { Sequence = 1, Kind = FaultKind.KillAll, StartMs = 2_000, EndMs = 5_000, Target = "n1,n2,n3", TargetNodes = [1, 2, 3], LeaderAtStart = 1, RecoveryMs = 2_400 };
        var clog = new FaultRecord { Sequence = 2, Kind = FaultKind.ClogThenFlush, StartMs = 8_000, EndMs = 11_000, Target = "into n3", TargetNodes = [3], LeaderAtStart = 1 };
        var history = Acks(10, 8_000, 10_200);
        var result = Liveness.CheckMinority(history, [killAll, clog], Samples(), Stall, 0.25);
        Assert.True(result.Passed, result.Detail);
        Assert.False(clog.MinorityFault);

        // Settled for long enough (recovered 3 s before, same term): the same stall is judged and fails.
        killAll.RecoveryMs = 0;
        Assert.False(Liveness.CheckMinority(history, [killAll, clog], Samples(), Stall, 0.25).Passed);
        Assert.True(clog.MinorityFault);

        // A term change in the 3 s before the fault (an election) also means not settled.
        var samples = Samples().Select(s => s.AtMs >= 6_000 ? s with { Term = 2 } : s).ToList();
        Assert.True(Liveness.CheckMinority(history, [Fault(FaultKind.ClogThenFlush, 3)], samples, Stall, 0.25).Passed);
    }
}
