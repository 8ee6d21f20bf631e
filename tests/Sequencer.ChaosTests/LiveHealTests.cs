using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Running;
using Sequencer.Checker;

namespace Sequencer.ChaosTests;

/// <summary>LIVE-HEAL's per-fault recovery judged from a synthetic history.</summary>
public sealed class LiveHealTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);
    private static readonly Convergence Converged = new(true, 3_000, "converged");

    /// <summary>An acknowledgement every 10 ms for 30 s, except in [gapFrom, gapTo).</summary>
    private static List<HistoryOp> Acks(long gapFrom, long gapTo)
    {
        var ops = new List<HistoryOp>();
        var i = 0;
        for (long at = 0; at < 30_000; at += 10)
        {
            if (at < gapFrom || at >= gapTo)
                ops.Add(new HistoryOp(0, $"0x{i++:x64}", 1, at * 1_000_000, at * 1_000_000, OpOutcome.Ok, 1, 0, null));
        }

        return ops;
    }

    private static FaultRecord Fault(int sequence, FaultKind kind, long start, long end) => new()
    {
        Sequence = sequence, Kind = kind, StartMs = start, EndMs = end, Target = "n1,n2",
    };

    // Seed 140306338's schedule: KillMajority healed at 6.87 s, then a second fault from 8.73 s to 11.82 s.
    private static (FaultRecord First, FaultRecord Second) TwoFaults(FaultKind second)
        => (Fault(1, FaultKind.KillMajority, 3_190, 6_870), Fault(2, second, 8_730, 11_820));

    [Fact]
    public void ARecoveryInterruptedByAFaultThatStopsOrdering_IsJudgedByThatFaultsRecovery()
    {
        // Seed 140306338 of the process scenario: KillAll began 1.9 s after KillMajority's heal, before the restarted
        // nodes ordered; ordering resumed 5.6 s after KillAll's heal, 10.6 s after KillMajority's.
        var (first, second) = TwoFaults(FaultKind.KillAll);
        var result = Liveness.CheckHeal(Converged, Acks(3_190, 17_460), [first, second], 11_820, Bound);
        Assert.True(result.Passed, result.Detail);
        Assert.Contains("#1's recovery (10590 ms) was interrupted by #2 KillAll", result.Detail, StringComparison.Ordinal);
        Assert.Equal(5_640, second.RecoveryMs);
    }

    [Fact]
    public void TheInterruptingFaultsOwnSlowRecovery_StillFails()
    {
        var (first, second) = TwoFaults(FaultKind.KillAll);
        var result = Liveness.CheckHeal(Converged, Acks(3_190, 22_000), [first, second], 11_820, Bound);
        Assert.False(result.Passed);
        Assert.Contains("#2 KillAll: ordering resumed 10180 ms after the heal", result.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain("#1 KillMajority: ordering resumed", result.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void ALaterFaultThatDoesNotStopOrdering_InterruptsNothing()
    {
        // A paused follower leaves a majority that can order: a recovery of more than the bound is the first fault's.
        var (first, second) = TwoFaults(FaultKind.PauseFollower);
        var result = Liveness.CheckHeal(Converged, Acks(3_190, 17_460), [first, second], 11_820, Bound);
        Assert.False(result.Passed);
        Assert.Contains("#1 KillMajority: ordering resumed 10590 ms after the heal (bound 10000 ms)", result.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void ASlowRecoveryWithNothingAfterIt_Fails()
    {
        var only = Fault(1, FaultKind.KillMajority, 3_190, 6_870);
        var result = Liveness.CheckHeal(Converged, Acks(3_190, 17_460), [only], 6_870, Bound);
        Assert.False(result.Passed);
        Assert.Contains("#1 KillMajority: ordering resumed 10590 ms", result.Detail, StringComparison.Ordinal);
    }
}
