using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Node.Signing;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>The signer's side of the nonce pool (DESIGN section 5), against a real applied state and nonce store.</summary>
public sealed class SignerServiceTests
{
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 4, MaxUnpersistedBatches = 64, PersistIntervalMs = 10_000, NoncePoolTarget = 64 };

    /// <summary>Puts every proposed command into the log at once (as a leader that commits it would).</summary>
    private sealed class CommittingChannel(AppliedState state, long index) : ILeaderChannel, IDisposable
    {
        private readonly SemaphoreSlim applier = new(1);

        public void Dispose() => applier.Dispose();

        public List<NonceCommitmentsCommand> Published { get; } = [];

        public Task<LeaderDelivery> SendSharesAsync(SignatureSharesMessage message, CancellationToken token) => Task.FromResult(LeaderDelivery.Ok);

        public async Task<LeaderDelivery> ProposeAsync(ILogCommand command, CancellationToken token)
        {
            lock (Published)
            {
                if (command is NonceCommitmentsCommand published)
                    Published.Add(published);
            }

            await applier.WaitAsync(token);
            try
            {
                await state.ApplyAsync(LogCommandCodec.Decode(new ReadOnlySequence<byte>(LogCommandCodec.Encode(command))), ++index, 1, token);
            }
            finally
            {
                applier.Release();
            }

            return LeaderDelivery.Ok;
        }
    }

    /// <summary>Applies the signer's publication of <paramref name="stored"/> (from sequence 1), with its proof.</summary>
    private static async Task PublishAsync(AppliedState state, KeyShare share, IReadOnlyList<StoredNonceCommitment> stored, long index)
    {
        await state.ApplyAsync(SigningFixtures.Publication(share, 1, [.. stored.Select(c => c.Commitment)]), index, 1, CancellationToken.None);
    }

    /// <summary>An applied state whose log has put <paramref name="group"/> in force as key epoch 1 (entry 1).</summary>
    private static async Task<AppliedState> StateInEpochOneAsync(GroupKey group, TimeProvider time)
    {
        var state = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), Limits, new WalRetention(0, long.MaxValue), time, NullLogger.Instance);
        try
        {
            await state.ApplyAsync(SigningFixtures.EpochOne(group), 1, 1, CancellationToken.None);
            return state;
        }
        catch
        {
            await state.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task ASignerThatLostItsNonces_ReplacesItsPublishedPool_AndKeepsAPoolItHolds()
    {
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var time = TimeProvider.System;
        await using var state = await StateInEpochOneAsync(group, time);

        // Signer 2 published 40 commitments before its data directory was wiped: the nonces behind them are gone.
        var lost = new InMemoryNonceStore();
        var old = lost.Generate(1, shares[1], 1, 40);
        await PublishAsync(state, shares[1], old, index: 2);
        Assert.Equal((40, 41UL), state.CommitmentsOf(2));

        using var channel = new CommittingChannel(state, 100);
        await RunUntilThePoolIsReplacedAsync(state, channel, shares[1], group, new InMemoryNonceStore(), time);
        Assert.True(state.CommitmentsOf(2).Available > 0);

        // A signer that holds its pool never replaces it.
        var holding = new InMemoryNonceStore();
        var kept = holding.Generate(1, shares[2], 1, 40);
        await PublishAsync(state, shares[2], kept, index: 10_000);
        using var channel3 = new CommittingChannel(state, 10_000);
        await using (var signer3 = new SignerService(shares[2], group, 1, state, channel3, holding, Limits, new NodeMetrics(), NullLogger<SignerService>.Instance, SignerFault.None))
        {
            signer3.Start(new BackgroundLoops(time));
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while (state.CommitmentsOf(3).Available < Limits.NoncePoolTarget / 2 && DateTime.UtcNow < deadline)
                await Task.Delay(20);

            // Two pool checks (one a second) pass with the pool held.
            var checkedUntil = DateTime.UtcNow + TimeSpan.FromSeconds(2.2);
            while (DateTime.UtcNow < checkedUntil)
                await Task.Delay(50);
        }

        Assert.DoesNotContain(channel3.Published, p => p.ReplacesUnused);
        Assert.Equal(1UL, state.AvailableSequences(3, 1)[0]);
    }

    [Fact]
    public async Task ASignerWhoseStoreDroppedNoncesAtOpen_ReplacesThePoolThatOffersThem()
    {
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var time = TimeProvider.System;
        await using var state = await StateInEpochOneAsync(group, time);
        var directory = Path.Combine(Path.GetTempPath(), "signer-lost-" + Guid.NewGuid().ToString("N"));
        try
        {
            // Signer 2 published 40 commitments and took the first (a reservation 4 past it, through 6); then its machine
            // failed. It still holds most of its pool (the lowest it holds, 6, is among the 16 the pool check reads).
            using (var before = new NonceStore(directory, null, reserveAhead: 4, bootId: "boot-a"))
            {
                await PublishAsync(state, shares[1], before.Generate(1, shares[1], 1, 40), index: 2);
                Assert.Single(before.Take(1, new Dictionary<ulong, NonceUse?> { [1] = null }));
            }

            using var store = new NonceStore(directory, null, reserveAhead: 4, bootId: "boot-b");
            Assert.Equal([2UL, 3UL, 4UL, 5UL], store.LostAtOpen.Order());

            // The pool offered sequences 1 to 40 (2 to 5 dropped).
            using var channel = new CommittingChannel(state, 100);
            await RunUntilThePoolIsReplacedAsync(state, channel, shares[1], group, store, time);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>
    /// Runs signer 2 on <paramref name="nonces"/> until its published pool (sequences 1 to 40) is replaced, and checks
    /// the replacement: one publication that replaces every unused commitment, from sequence 41.
    /// </summary>
    private static async Task RunUntilThePoolIsReplacedAsync(AppliedState state, CommittingChannel channel, KeyShare share, GroupKey group, INonceStore nonces, TimeProvider time)
    {
        await using (var signer = new SignerService(share, group, 1, state, channel, nonces, Limits, new NodeMetrics(), NullLogger<SignerService>.Instance, SignerFault.None))
        {
            signer.Start(new BackgroundLoops(time));
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while (state.AvailableSequences(2, 1) is [var lowest] && lowest <= 40 && DateTime.UtcNow < deadline)
                await Task.Delay(20);
        }

        var replacement = Assert.Single(channel.Published, p => p.ReplacesUnused);
        Assert.Equal(41UL, replacement.FirstSequence);
        Assert.All(state.AvailableSequences(2, 1024), s => Assert.True(s > 40));
    }

    /// <summary>A store whose compaction always fails (a full disk under its audit database), counting the tries.</summary>
    private sealed class FailingCompactionStore(int tries) : INonceStore
    {
        private readonly TaskCompletionSource reached = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int attempts;

        public Task Reached => reached.Task;

        public int Attempts => Volatile.Read(ref attempts);

        public int Count => 0;

        public int Uncompacted => INonceStore.MaxUncompacted;

        public ulong Epoch => 1;

        public IReadOnlySet<ulong> LostAtOpen { get; } = new HashSet<ulong>();

        public ulong NextSequence(ulong epoch) => 1;

        public IReadOnlyList<StoredNonceCommitment> Generate(ulong epoch, KeyShare share, ulong firstSequence, int count) => throw new NotSupportedException();

        public IReadOnlyList<StoredNonceCommitment> CommitmentsFrom(ulong fromSequence, int limit) => [];

        public IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyDictionary<ulong, NonceUse?> sequences)
            => new Dictionary<ulong, (SigningNonces, byte[])>();

        public IReadOnlyList<RecordedNonceUse> Uses(int skip, int limit) => [];

        public int Prune(ulong belowSequence, Func<ulong, bool> keep) => 0;

        public void Compact()
        {
            if (Interlocked.Increment(ref attempts) >= tries)
                reached.TrySetResult();
            throw new IOException("No space left on device (a test's fault)");
        }

        public void Dispose()
        {
        }
    }

    [Fact]
    public async Task AFailingCompaction_IsRetriedAtMostOnceASecond_AndLoggedAtMostOnceEveryFiveSeconds()
    {
        // The replenish loop polls every 20 ms: before, each poll retried the compaction and logged an error with its
        // stack trace, 50 a second for a whole disk outage.
        var (shares, group) = TrustedDealer.Generate(2, 3);
        await using var state = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), Limits, new WalRetention(0, long.MaxValue), TimeProvider.System, NullLogger.Instance);
        var store = new FailingCompactionStore(tries: 3);
        var logger = new RecordingLogger<SignerService>();
        using var channel = new CommittingChannel(state, 100);
        var started = Stopwatch.GetTimestamp();
        await using (var signer = new SignerService(shares[0], group, 1, state, channel, store, Limits, new NodeMetrics(), logger, SignerFault.None))
        {
            signer.Start(new BackgroundLoops(TimeProvider.System));
            Assert.Same(store.Reached, await Task.WhenAny(store.Reached, Task.Delay(TimeSpan.FromSeconds(30))));
        }

        // Bounds that hold however long the run took: tries at least a second apart, lines at least five.
        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        Assert.InRange(store.Attempts, 3, 1 + (int)seconds);
        var failures = logger.Lines.Where(l => l.EventId == 316).ToList();
        Assert.InRange(failures.Count, 1, 1 + (int)(seconds / 5));
        Assert.IsType<IOException>(failures[0].Exception);
        Assert.Contains("nonce compaction failed", failures[0].Text, StringComparison.Ordinal);
        Assert.Contains("at most every 5 s", failures[0].Text, StringComparison.Ordinal);
    }
}
