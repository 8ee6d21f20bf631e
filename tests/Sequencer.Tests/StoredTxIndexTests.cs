using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Node.Storage;

namespace Sequencer.Tests;

public sealed class StoredTxIndexTests : IDisposable
{
    private readonly string directory = Path.Combine(Path.GetTempPath(), "sequencer-txindex-tests", Guid.NewGuid().ToString("N"));

    // The tx index reads only heights and tx hashes: the headers need not chain here.
    private static StoredBatch Batch(ulong height, int txs)
    {
        var hashes = Enumerable.Range(0, txs).Select(i => Keccak256.Hash(BitConverter.GetBytes((height << 32) | (uint)i))).ToArray();
        return new StoredBatch
        {
            Header = new BatchHeader(1, 0, height, 1, Hash32.Zero, Hash32.Zero, Hash32.Zero, (uint)txs, 0),
            TxHashes = hashes,
            ReceivedMs = new ulong[txs],
            RaftIndex = (long)height,
            OrderedAtMs = 0,
        };
    }

    [Fact]
    public void Prepare_ALargeGroup_IsSplitIntoRunsBetweenBatches_AndCommittedRunsFindEveryTx()
    {
        using var index = new StoredTxIndex(directory, 0, (_, _) => [], backgroundMerges: false);
        // 30,000 + 30,000 fit in one run of 65,536 records; the third batch starts another; a batch larger than a run
        // gets a run of its own.
        List<StoredBatch> batches = [Batch(1, 30_000), Batch(2, 30_000), Batch(3, 30_000), Batch(4, 70_000)];
        var prepared = index.Prepare(batches);
        Assert.Equal([(1UL, 2UL), (3UL, 3UL), (4UL, 4UL)], prepared.Select(r => (r.From, r.To)));
        Assert.False(index.TryFind(batches[0].TxHashes[0], ulong.MaxValue, out _));
        index.Commit(prepared);
        Assert.Equal(160_000, index.TxCount);
        foreach (var batch in batches)
        {
            for (var i = 0; i < batch.TxHashes.Length; i += 997)
            {
                Assert.True(index.TryFind(batch.TxHashes[i], batch.Header.Height, out var position));
                Assert.Equal(new TxPosition(batch.Header.Height, i), position);
            }
        }
    }

    [Fact]
    public void Prepare_NotContinuingTheIndexedHeights_FailsTheInvariant_AndAbandonDeletesTheFiles()
    {
        using var index = new StoredTxIndex(directory, 0, (_, _) => [], backgroundMerges: false);
        Assert.Throws<InvariantViolationException>(() => index.Prepare([Batch(2, 3)]));
        var prepared = index.Prepare([Batch(1, 3)]);
        Assert.Single(Directory.GetFiles(directory));
        StoredTxIndex.Abandon(prepared);
        Assert.Empty(Directory.GetFiles(directory));
        Assert.Equal(0, index.TxCount);
    }

    public void Dispose()
    {
        if (Directory.Exists(directory))
            Directory.Delete(directory, recursive: true);
    }
}
