using Sequencer.Core;
using Sequencer.Core.Storage;

namespace Sequencer.Tests;

public sealed class RecentBatchesTests
{
    private static readonly List<StoredBatch> Chain = BatchStoreContractTests.Chain(20);

    [Fact]
    public void Add_BeyondTheBytes_EvictsTheOldestStoredBatches_AndKeepsAContiguousRun()
    {
        // Chain batches have 3 txs: 504 bytes each, so 2000 bytes hold three.
        var ring = new RecentBatches(2000, minSlots: 4);
        for (var i = 0; i < 10; i++)
            ring.Add(Chain[i], storedHeight: 100);
        Assert.Equal(3, ring.Count);
        Assert.Equal(1512, ring.Bytes);
        Assert.Equal(8UL, ring.Oldest);
        Assert.Equal(10UL, ring.Newest);
        Assert.Null(ring.Get(7));
        Assert.Same(Chain[8], ring.Get(9));
        Assert.Same(Chain[8], ring[9 % (ulong)ring.Length]);
        Assert.Null(ring.Get(11));
    }

    [Fact]
    public void Add_WhenOnlyUnstoredBatchesCouldMakeRoom_FailsTheInvariant_AndHasRoomForSaysSoFirst()
    {
        var ring = new RecentBatches(2000, minSlots: 4);
        ring.Add(Chain[0], storedHeight: 0);
        ring.Add(Chain[1], storedHeight: 0);
        ring.Add(Chain[2], storedHeight: 0);
        Assert.False(ring.HasRoomFor(3, unstoredBytes: 1512, unstoredBatches: 3));
        Assert.True(ring.HasRoomFor(3, unstoredBytes: 1008, unstoredBatches: 2));
        Assert.Throws<InvariantViolationException>(() => ring.Add(Chain[3], storedHeight: 0));
        ring.Add(Chain[3], storedHeight: 1);
        Assert.Equal(2UL, ring.Oldest);
        Assert.Throws<InvariantViolationException>(() => ring.Add(Chain[5], storedHeight: 10));
    }

    [Fact]
    public void Slots_BoundTheBatchCountToo_AndAreNeverFewerThanAsked()
    {
        var ring = new RecentBatches(1_000_000, minSlots: 2);
        Assert.Equal(1_000_000 / RecentBatches.BatchOverheadBytes, ring.Length);
        // 1000 bytes would give 2 slots; every unstored batch needs one, so 5 are asked for.
        var few = new RecentBatches(1000, minSlots: 5);
        Assert.Equal(5, few.Length);
        for (var i = 0; i < 7; i++)
            few.Add(Chain[i], storedHeight: 100);
        Assert.Equal(1, few.Count);
        Assert.Equal(504, few.Bytes);
    }
}
