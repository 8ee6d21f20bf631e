using Sequencer.Core;
using Sequencer.Core.Batching;

namespace Sequencer.Tests;

public sealed class BatcherPolicyTests
{
    private static readonly SequencerLimits Limits = new() { MaxBatchTxs = 100, MaxBatchBytes = 1000, MaxTxBytes = 500, MaxBatchDelayMs = 4, MaxInFlightEntries = 2, MaxPendingBytes = 10_000 };
    private static readonly BatcherPolicy Policy = new(Limits);

    [Fact]
    public void Decide_NothingPending_WaitsForAnEvent()
        => Assert.Equal(BatcherDecision.WaitForEvent, Policy.Decide(new BatcherInput(0, 0, 0, 0)));

    [Fact]
    public void Decide_EmptyPipeline_EmitsAtOnce()
        => Assert.True(Policy.Decide(new BatcherInput(1, 10, 0, 0)).Emit);

    [Fact]
    public void Decide_PipelineFull_WaitsEvenForAFullOldBatch()
        => Assert.Equal(BatcherDecision.WaitForEvent, Policy.Decide(new BatcherInput(500, 5000, 1000, 2)));

    [Theory]
    [InlineData(100, 10)]
    [InlineData(3, 1000)]
    public void Decide_FullByCountOrBytesWithEntriesInFlight_Emits(int txs, long bytes)
        => Assert.True(Policy.Decide(new BatcherInput(txs, bytes, 0, 1)).Emit);

    [Fact]
    public void Decide_YoungPartialBatchWithEntriesInFlight_WaitsForTheRestOfTheDelay()
    {
        var decision = Policy.Decide(new BatcherInput(3, 30, 1, 1));
        Assert.False(decision.Emit);
        Assert.Equal(3, decision.WakeAfterMs);
    }

    [Fact]
    public void Decide_OldestWaitedTheDelay_Emits()
        => Assert.True(Policy.Decide(new BatcherInput(3, 30, 4, 1)).Emit);

    [Fact]
    public void Decide_NegativeInput_FailsTheInvariant()
        => Assert.Throws<InvariantViolationException>(() => Policy.Decide(new BatcherInput(-1, 0, 0, 0)));

    [Fact]
    public void TakeCount_StopsAtTheByteLimit()
    {
        Assert.Equal(2, Policy.TakeCount([400, 400, 400]));
        Assert.Equal(2, Policy.TakeCount([500, 500, 1]));
        Assert.Equal(1, Policy.TakeCount([500]));
        Assert.Equal(0, Policy.TakeCount([]));
    }

    [Fact]
    public void TakeCount_StopsAtTheCountLimit()
        => Assert.Equal(100, Policy.TakeCount(Enumerable.Repeat(1, 250)));

    [Fact]
    public void TakeCount_TxOverTheTxLimit_FailsTheInvariant()
        => Assert.Throws<InvariantViolationException>(() => Policy.TakeCount([501]));
}
