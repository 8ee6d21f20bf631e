using System.Buffers;
using DotNext.Net.Cluster.Consensus.Raft;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Node.Replication;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;

namespace Sequencer.Tests;

/// <summary>An in-process stand-in for the Raft log: committing an entry applies it to the state at once.</summary>
/// <param name="appliedThrough">The log index the state has applied already (a genesis applied by the test).</param>
internal sealed class FakeLeaderLog(AppliedState state, long appliedThrough = 0) : ILeaderLog, IDisposable
{
    public void FollowersMustApply()
    {
    }

    private readonly CancellationTokenSource leadership = new();
    private long index = appliedThrough;

    public bool IsLeader { get; private set; } = true;

    public CancellationToken LeadershipToken => leadership.Token;

    public long Term { get; private set; } = 1;

    public long CommitIndex => Interlocked.Read(ref index);

    /// <summary>When set, the applied index reported, which stays there (a new leader still applying); the state itself is applied in full.</summary>
    public long? AppliedThrough { get; set; }

    public long AppliedIndex => AppliedThrough ?? CommitIndex;

    public event Action? LeaderChanged;

    /// <summary>When set, replication waits for it (to keep entries in flight).</summary>
    public TaskCompletionSource? Gate { get; set; }

    /// <summary>When set, replication throws it instead of committing.</summary>
    public Exception? Failure { get; set; }

    public int Replicated { get; private set; }

    public async ValueTask ReplicateAsync(ReadOnlyMemory<byte> payload, object? context, CancellationToken token)
    {
        if (Gate is { } gate)
            await gate.Task.WaitAsync(token);
        if (Failure is { } failure)
            throw failure;
        Replicated++;
        var command = LogCommandCodec.Decode(new ReadOnlySequence<byte>(payload));
        await state.ApplyAsync(command, Interlocked.Increment(ref index), Term, token, context as BatchProposal);
    }

    public void Dispose() => leadership.Dispose();

    /// <summary>Steps down and wins again at once: the same node leads, in the next term.</summary>
    public void WinNextTerm()
    {
        Term++;
        LeaderChanged?.Invoke();
    }

    public void LoseLeadership()
    {
        IsLeader = false;
        leadership.Cancel();
        LeaderChanged?.Invoke();
    }
}

public sealed class SubmitServiceTests : IAsyncDisposable
{
    private readonly FakeTimeProvider time = new(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000));
    private readonly AppliedState state;
    private readonly FakeLeaderLog log;
    private readonly NodeMetrics metrics = new();
    private readonly List<Exception> fatal = [];
    private readonly SubmitService service;

    public SubmitServiceTests()
    {
        var limits = new SequencerLimits { MaxPendingTxs = 20, MaxTxsPerRequest = 10, MaxInFlightEntries = 1, SubmitTimeoutMs = 5000 };
        state = new AppliedState(new InMemoryBatchStore(), new ChainParameters(1, 0), limits, WalRetention.None, time, NullLogger.Instance);
        log = new FakeLeaderLog(state);
        service = new SubmitService(log, state, limits, time, metrics, NullLogger<SubmitService>.Instance, fatal.Add);
    }

    private static byte[][] Txs(params int[] ids) => [.. ids.Select(BatchApplierTests.Tx)];

    [Fact]
    public async Task Submit_NewTxs_AreOrderedWithTheirPositions()
    {
        var outcome = await service.SubmitAsync(Txs(1, 2, 3), CancellationToken.None);
        Assert.Equal(SubmitStatus.Ordered, outcome.Status);
        Assert.Equal([0, 1, 2], outcome.Outcomes.Select(o => o.Position.Index));
        Assert.All(outcome.Outcomes, o => Assert.Equal(1UL, o.Position.Height));
        Assert.Equal(state.LastHeader!.Height, outcome.Outcomes[0].Position.Height);
    }

    [Fact]
    public async Task Submit_SameTxAgain_ReturnsTheOriginalPositionWithoutANewEntry()
    {
        var first = await service.SubmitAsync(Txs(7), CancellationToken.None);
        var replicated = log.Replicated;
        var again = await service.SubmitAsync(Txs(7, 7), CancellationToken.None);
        Assert.Equal(SubmitStatus.Ordered, again.Status);
        Assert.All(again.Outcomes, o => Assert.Equal(first.Outcomes[0].Position, o.Position));
        Assert.Equal(replicated, log.Replicated);
    }

    [Fact]
    public async Task Submit_ARequestMixingOrderedNewAndRepeatedTxs_OrdersEachNewTxOnce_AndAnswersEveryCopy()
    {
        var first = await service.SubmitAsync(Txs(7), CancellationToken.None);
        var mixed = await service.SubmitAsync(Txs(7, 8, 8, 9, 7), CancellationToken.None);
        Assert.Equal(SubmitStatus.Ordered, mixed.Status);
        var positions = mixed.Outcomes.Select(o => o.Position).ToArray();
        Assert.Equal(first.Outcomes[0].Position, positions[0]);
        Assert.Equal(first.Outcomes[0].Position, positions[4]);
        Assert.Equal(positions[1], positions[2]);
        Assert.Equal(new TxPosition(2, 0), positions[1]);
        Assert.Equal(new TxPosition(2, 1), positions[3]);
        Assert.Equal(2UL, state.LastHeader!.Height);
        Assert.Equal(2, state.GetBatch(2)!.TxHashes.Length);
    }

    [Fact]
    public async Task Submit_NotLeader_ProposesNothing()
    {
        log.LoseLeadership();
        var outcome = await service.SubmitAsync(Txs(1), CancellationToken.None);
        Assert.Equal(SubmitStatus.NotLeader, outcome.Status);
        Assert.Equal(0, log.Replicated);
        Assert.Equal(0, service.QueuedTxs);
    }

    [Fact]
    public async Task Submit_OverThePendingLimit_IsOverloadedAndQueuesNothing()
    {
        log.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inFlight = service.SubmitAsync(Txs(1), CancellationToken.None);
        await WaitUntilAsync(() => service.InFlightEntries == 1);
        var queued = service.SubmitAsync(Txs(2, 3, 4, 5, 6, 7, 8, 9, 10, 11), CancellationToken.None);
        var queued2 = service.SubmitAsync(Txs(12, 13, 14, 15, 16, 17, 18, 19, 20, 21), CancellationToken.None);
        await WaitUntilAsync(() => service.QueuedTxs == 20);

        var rejected = await service.SubmitAsync(Txs(99), CancellationToken.None);
        Assert.Equal(SubmitStatus.Overloaded, rejected.Status);
        Assert.Equal(20, service.QueuedTxs);

        log.Gate.SetResult();
        Assert.Equal(SubmitStatus.Ordered, (await inFlight).Status);
        Assert.Equal(SubmitStatus.Ordered, (await queued).Status);
        Assert.Equal(SubmitStatus.Ordered, (await queued2).Status);
    }

    [Fact]
    public async Task LeadershipLost_QueuedTxsAreHandedBackAsNotLeader_AndInFlightOnesAsUnknown()
    {
        log.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inFlight = service.SubmitAsync(Txs(1), CancellationToken.None);
        await WaitUntilAsync(() => service.InFlightEntries == 1);
        var queued = service.SubmitAsync(Txs(2), CancellationToken.None);
        await WaitUntilAsync(() => service.QueuedTxs == 1);

        log.LoseLeadership();
        Assert.Equal(SubmitStatus.NotLeader, (await queued).Status);
        log.Failure = new NotLeaderException();
        log.Gate.SetResult();
        Assert.Equal(SubmitStatus.OutcomeUnknown, (await inFlight).Status);
        Assert.Empty(fatal);
    }

    [Fact]
    public async Task Submit_NotOrderedWithinTheTimeout_IsOutcomeUnknown()
    {
        log.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var pending = service.SubmitAsync(Txs(5), CancellationToken.None);
        await WaitUntilAsync(() => service.InFlightEntries == 1);
        time.Advance(TimeSpan.FromMilliseconds(5001));
        Assert.Equal(SubmitStatus.OutcomeUnknown, (await pending).Status);
        log.Gate.SetResult();
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not reached in 10 s");
            await Task.Yield();
            await Task.Delay(1);
        }
    }

    public async ValueTask DisposeAsync()
    {
        log.Gate?.TrySetResult();
        await service.DisposeAsync();
        await state.DisposeAsync();
        metrics.Dispose();
        log.Dispose();
    }
}
