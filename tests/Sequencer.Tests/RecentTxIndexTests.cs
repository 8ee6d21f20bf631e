using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Tests;

public sealed class RecentTxIndexTests
{
    private static Hash32 Hash(ulong i) => Keccak256.Hash(BitConverter.GetBytes(i));

    private static Hash32[] Batch(ulong height, int count) => [.. Enumerable.Range(0, count).Select(j => Hash((height * 1000) + (ulong)j))];

    [Fact]
    public void AddBatch_ThenLookup_FindsEveryPosition_AndTheFloorAndTopDescribeTheWindow()
    {
        var index = new RecentTxIndex(100, floor: 41);
        Assert.Equal(41UL, index.Floor);
        Assert.Equal(41UL, index.Top);
        index.AddBatch(42, Batch(42, 3));
        index.AddBatch(43, Batch(43, 2));
        Assert.Equal(5, index.Count);
        Assert.Equal(43UL, index.Top);
        Assert.True(index.TryGetPosition(Batch(43, 2)[1], out var position, out var floor));
        Assert.Equal(new TxPosition(43, 1), position);
        Assert.Equal(41UL, floor);
        Assert.False(index.TryGetPosition(Hash(7), out _));
        Assert.Equal((42UL, 3), index.Oldest);
    }

    [Fact]
    public void TryEvictOldest_OnlyBatchesAtOrBelowTheBound_MovesTheFloor()
    {
        var index = new RecentTxIndex(100);
        index.AddBatch(1, Batch(1, 4));
        index.AddBatch(2, Batch(2, 4));
        Assert.False(index.TryEvictOldest(0));
        Assert.True(index.TryEvictOldest(1));
        Assert.Equal(1UL, index.Floor);
        Assert.Equal(4, index.Count);
        Assert.False(index.TryGetPosition(Batch(1, 4)[0], out _));
        Assert.True(index.TryGetPosition(Batch(2, 4)[3], out var position));
        Assert.Equal(new TxPosition(2, 3), position);
        Assert.False(index.TryEvictOldest(1));
        Assert.True(index.TryEvictOldest(5));
        Assert.Equal(0, index.Count);
        Assert.Equal(2UL, index.Floor);
        Assert.False(index.TryEvictOldest(5));
        index.AddBatch(3, Batch(3, 1));
        Assert.Equal(3UL, index.Top);
    }

    [Fact]
    public void Restart_EmptiesTheWindowAboveTheNewFloor_AndTheNextBatchFollowsIt()
    {
        var index = new RecentTxIndex(8);
        index.AddBatch(1, Batch(1, 4));
        index.AddBatch(2, Batch(2, 4));
        Assert.Throws<InvariantViolationException>(() => index.Restart(1));
        index.Restart(5);
        Assert.Equal(0, index.Count);
        Assert.Equal(5UL, index.Floor);
        Assert.Equal(5UL, index.Top);
        Assert.Null(index.Oldest);
        Assert.False(index.TryGetPosition(Batch(2, 4)[0], out _, out var floor));
        Assert.Equal(5UL, floor);
        Assert.Throws<InvariantViolationException>(() => index.AddBatch(5, Batch(5, 1)));

        // The whole capacity is free again, and a tx of a batch before the restart may be indexed anew (the ring and
        // the table hold nothing of the old window).
        index.AddBatch(6, [.. Batch(6, 7), Batch(1, 4)[0]]);
        Assert.Equal(8, index.Count);
        Assert.True(index.TryGetPosition(Batch(1, 4)[0], out var position));
        Assert.Equal(new TxPosition(6, 7), position);
        Assert.True(index.TryEvictOldest(6));
        Assert.Equal(0, index.Count);
        Assert.Equal(6UL, index.Floor);
    }

    [Fact]
    public void AddBatch_ADuplicateAGapOrNoRoom_FailsTheInvariant()
    {
        var index = new RecentTxIndex(8);
        index.AddBatch(1, Batch(1, 3));
        Assert.Throws<InvariantViolationException>(() => index.AddBatch(2, [Hash(99), Batch(1, 3)[2]]));
        Assert.Throws<InvariantViolationException>(() => index.AddBatch(2, [Hash(98), Hash(98)]));
        var fresh = new RecentTxIndex(8);
        fresh.AddBatch(1, Batch(1, 3));
        Assert.Throws<InvariantViolationException>(() => fresh.AddBatch(3, Batch(3, 1)));
        Assert.Throws<InvariantViolationException>(() => fresh.AddBatch(2, Batch(2, 6)));
        Assert.Throws<InvariantViolationException>(() => fresh.AddBatch(2, []));
    }

    [Fact]
    public void ManyBatchesThroughASmallWindow_AnswerExactlyAsADictionaryOfTheWindow()
    {
        // A small table wraps around many times, so that eviction (backward-shift deletion) meets every probe layout.
        var index = new RecentTxIndex(257);
        var expected = new Dictionary<Hash32, TxPosition>();
        var batches = new Queue<(ulong Height, Hash32[] Hashes)>();
        var random = new Random(5);
        var evicted = new List<Hash32>();
        var live = 0;
        for (ulong height = 1; height <= 3000; height++)
        {
            var hashes = Batch(height, random.Next(1, 40));
            while (live + hashes.Length > index.Capacity)
            {
                var (oldHeight, oldHashes) = batches.Dequeue();
                Assert.True(index.TryEvictOldest(oldHeight));
                foreach (var hash in oldHashes)
                    expected.Remove(hash);
                evicted.Add(oldHashes[^1]);
                live -= oldHashes.Length;
            }

            index.AddBatch(height, hashes);
            batches.Enqueue((height, hashes));
            for (var i = 0; i < hashes.Length; i++)
                expected[hashes[i]] = new TxPosition(height, i);
            live += hashes.Length;
            Assert.Equal(live, index.Count);

            // Every tx of the window is found where it is; a sample of evicted and never-seen ones is not.
            if (height % 97 == 0)
            {
                foreach (var (hash, position) in expected)
                {
                    Assert.True(index.TryGetPosition(hash, out var found));
                    Assert.Equal(position, found);
                }

                Assert.All(evicted.TakeLast(100), hash => Assert.False(index.TryGetPosition(hash, out _)));
            }

            Assert.False(index.TryGetPosition(Hash(ulong.MaxValue - height), out _));
        }
    }

    [Fact]
    public void MemoryBytes_IsAbout32BytesATx()
    {
        Assert.InRange(RecentTxIndex.MemoryBytes(2_000_000) / 2_000_000.0, 24, 40);
    }
}
