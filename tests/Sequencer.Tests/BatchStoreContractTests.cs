using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Core.Validation;
using Sequencer.Node.Storage;

namespace Sequencer.Tests;

/// <summary>One contract, run against the in-memory fake and the LiteDB store.</summary>
public abstract class BatchStoreContractTests : IDisposable
{
    protected string Directory { get; } = Path.Combine(Path.GetTempPath(), "sequencer-store-tests", Guid.NewGuid().ToString("N"));

    protected abstract IBatchStore Open();

    internal static List<StoredBatch> Chain(int count, ulong firstHeight = 1, Hash32? parent = null, MerkleFrontier? history = null)
    {
        var batches = new List<StoredBatch>();
        var previous = parent ?? Hash32.Zero;
        history ??= new MerkleFrontier();
        for (var i = 0; i < count; i++)
        {
            var height = firstHeight + (ulong)i;
            var hashes = Enumerable.Range(0, 3).Select(j => Keccak256.Hash(BitConverter.GetBytes(height * 10 + (ulong)j))).ToArray();
            var header = new BatchHeader(9, 0, height, 1, previous, history.Root, MerkleTree.ComputeRoot(hashes), 3, 1000 + height);
            history.Append(header.Commitment);
            batches.Add(new StoredBatch { Header = header, TxHashes = hashes, ReceivedMs = [1, 2, 3], RaftIndex = (long)height + 1, OrderedAtMs = 77 });
            previous = header.Commitment;
        }

        return batches;
    }

    // An ethereum-mode chain: tx j of batch h is nonce h of sender j.
    internal static List<StoredBatch> AccountChain(int count)
    {
        var chain = Chain(count);
        return [.. chain.Select(b =>
        {
            var accounts = new byte[b.TxHashes.Length * TxAccount.EncodedLength];
            for (var j = 0; j < b.TxHashes.Length; j++)
                new TxAccount(Sender(j), b.Header.Height - 1).WriteTo(accounts.AsSpan(j * TxAccount.EncodedLength));
            return new StoredBatch { Header = b.Header, TxHashes = b.TxHashes, ReceivedMs = b.ReceivedMs, RaftIndex = b.RaftIndex, OrderedAtMs = b.OrderedAtMs, TxAccounts = accounts };
        })];
    }

    internal static SenderId Sender(int j) => SenderId.FromBytes([.. Enumerable.Repeat((byte)(j + 1), SenderId.Length)]);

    private static StoreCheckpoint CheckpointAt(IReadOnlyList<StoredBatch> batches)
        => new(batches[^1].RaftIndex, 1, batches[^1].Header.Height, 0, 0, 0);

    [Fact]
    public void Empty_HasTheEmptyCheckpointAndNoBatches()
    {
        using var store = Open();
        Assert.Equal(StoreCheckpoint.Empty, store.ReadCheckpoint());
        Assert.Null(store.Get(1));
        Assert.Empty(store.Scan(1, 10));
    }

    [Fact]
    public void Append_ThenReadBack_EqualsWhatWasWritten()
    {
        using var store = Open();
        var chain = Chain(300);
        store.Append(chain[..200], CheckpointAt(chain[..200]));
        store.Append(chain[200..], CheckpointAt(chain));
        Assert.Equal(CheckpointAt(chain), store.ReadCheckpoint());
        var read = store.Get(150)!;
        Assert.Equal(chain[149].Header, read.Header);
        Assert.Equal(chain[149].TxHashes, read.TxHashes);
        Assert.Equal(chain[149].ReceivedMs, read.ReceivedMs);
        Assert.Equal(chain[149].RaftIndex, read.RaftIndex);
        Assert.Equal([.. chain.Select(b => b.Header.Height)], store.Scan(1, 300).Select(b => b.Header.Height));
        Assert.Equal([5UL, 6UL, 7UL], store.Scan(5, 7).Select(b => b.Header.Height));
        Assert.Null(store.Get(301));
    }

    [Fact]
    public void Append_NonContiguousHeight_FailsTheInvariantAndChangesNothing()
    {
        using var store = Open();
        var chain = Chain(5);
        store.Append(chain[..2], CheckpointAt(chain[..2]));
        Assert.Throws<InvariantViolationException>(() => store.Append(chain[3..], CheckpointAt(chain)));
        Assert.Equal(2UL, store.ReadCheckpoint().LastHeight);
        Assert.Null(store.Get(4));
    }

    [Fact]
    public void Append_CheckpointOnly_MovesTheAppliedIndex()
    {
        using var store = Open();
        var chain = Chain(2);
        store.Append(chain, CheckpointAt(chain));
        var next = CheckpointAt(chain) with { AppliedIndex = 50, SnapshotIndex = 3, SnapshotTerm = 1, SnapshotHeight = 2 };
        store.Append([], next);
        Assert.Equal(next, store.ReadCheckpoint());
    }

    [Fact]
    public void Append_DkgEntriesIntoAnEmptyStore_AreStoredInLogOrderAndCleared()
    {
        // The first DKG write of a fresh node found an empty collection: LiteDB's Max() threw, the persister died,
        // and the store was never written (issue 7). Every signing record kind goes through here at least once.
        using var store = Open();
        var chain = Chain(3);
        store.Append(chain[..1], CheckpointAt(chain[..1]), new SigningWrites([], [], DkgEntries: [[1], [2]]));
        store.Append(chain[1..2], CheckpointAt(chain[..2]), new SigningWrites([], [], DkgEntries: [[3]]));
        Assert.Equal([[1], [2], [3]], store.ReadDkgEntries());
        Assert.Equal(2UL, store.ReadCheckpoint().LastHeight);

        store.Append(chain[2..], CheckpointAt(chain), new SigningWrites([], [], ClearDkg: true, DkgEntries: [[4]]));
        Assert.Equal([[4]], store.ReadDkgEntries());
        store.Append([], CheckpointAt(chain), new SigningWrites([], [], ClearDkg: true));
        Assert.Empty(store.ReadDkgEntries());
    }

    [Fact]
    public void Append_TheSnapshotPointsDkgEntries_ReplaceTheStoredOnes_OnlyWhenGiven()
    {
        // The key generation in progress at the snapshot point, written when the point moves, apart from the current
        // one (which moves on with every entry).
        using var store = Open();
        var chain = Chain(3);
        Assert.Empty(store.ReadSnapshotDkgEntries());
        store.Append(chain[..1], CheckpointAt(chain[..1]), new SigningWrites([], [], DkgEntries: [[1], [2]], SnapshotDkg: [[1]]));
        Assert.Equal([[1]], store.ReadSnapshotDkgEntries());
        store.Append(chain[1..2], CheckpointAt(chain[..2]), new SigningWrites([], [], DkgEntries: [[3]]));
        Assert.Equal([[1]], store.ReadSnapshotDkgEntries());
        Assert.Equal([[1], [2], [3]], store.ReadDkgEntries());
        store.Append(chain[2..], CheckpointAt(chain), new SigningWrites([], [], SnapshotDkg: [[1], [2], [3]]));
        Assert.Equal([[1], [2], [3]], store.ReadSnapshotDkgEntries());
        store.Append([], CheckpointAt(chain), new SigningWrites([], [], ClearDkg: true, SnapshotDkg: []));
        Assert.Empty(store.ReadSnapshotDkgEntries());
        Assert.Empty(store.ReadDkgEntries());
    }

    [Fact]
    public void Append_EverySigningRecordKind_ReadsBack()
    {
        using var store = Open();
        var chain = Chain(6);
        var epoch = new StoredKeyEpoch(1, 2, new byte[33], [1, 2, 3], [new byte[33], new byte[33], new byte[33]], 1);
        var head2 = new SignedHead(2, 1, [1, 2], new byte[33], new byte[32], 99);
        var head5 = new SignedHead(5, 1, [1, 3], new byte[33], new byte[32], 100);
        store.Append(chain, CheckpointAt(chain), new SigningWrites([head2, head5], [epoch],
            AddedCommitments: [new StoredCommitment(1, 5, new byte[66]), new StoredCommitment(2, 7, new byte[66])],
            NextSequences: new Dictionary<int, ulong> { [1] = 6, [2] = 8 }));
        Assert.Equal(2UL, store.GetHead(2)!.Height);
        Assert.Null(store.GetHead(3));
        Assert.Equal(2UL, store.CoveringHead(1)!.Height);
        Assert.Equal(2UL, store.CoveringHead(2)!.Height);
        Assert.Equal(5UL, store.CoveringHead(3)!.Height);
        Assert.Equal([1, 3], store.CoveringHead(5)!.Signers);
        Assert.Null(store.CoveringHead(6));
        Assert.Equal([2UL, 5UL], store.Heads(1, 10).Select(h => h.Height));
        Assert.Equal([5UL], store.Heads(3, 10).Select(h => h.Height));
        Assert.Equal([2UL], store.Heads(1, 1).Select(h => h.Height));
        Assert.Equal(1UL, Assert.Single(store.ReadKeyEpochs()).Epoch);
        var pool = store.ReadCommitments();
        Assert.Equal([(1, 5UL), (2, 7UL)], pool.Commitments.Select(c => (c.Signer, c.Sequence)).Order());
        Assert.Equal(8UL, pool.NextSequences[2]);

        store.Append([], CheckpointAt(chain), new SigningWrites([], [], RemovedCommitments: [(1, 5UL)]));
        Assert.Equal([(2, 7UL)], store.ReadCommitments().Commitments.Select(c => (c.Signer, c.Sequence)));
    }

    [Fact]
    public void Append_AfterAFailedAppend_StillWrites()
    {
        // A failed write must leave no transaction open: the next write (or the flush at shutdown) must work.
        // A record that fails part-way through the transaction (a null list: a programmer error) stands in for any
        // failure that is not the disk's.
        using var store = Open();
        var chain = Chain(4);
        store.Append(chain[..1], CheckpointAt(chain[..1]));
        var broken = new StoredKeyEpoch(1, 2, new byte[33], null!, [], 1);
        Assert.ThrowsAny<Exception>(() => store.Append(chain[1..2], CheckpointAt(chain[..2]), new SigningWrites([], [broken])));
        Assert.Equal(1UL, store.ReadCheckpoint().LastHeight);
        Assert.Null(store.Get(2));
        store.Append(chain[1..], CheckpointAt(chain));
        Assert.Equal(4UL, store.ReadCheckpoint().LastHeight);
    }

    [Fact]
    public void Append_AHeaderWhoseHistoryRootLies_FailsTheInvariantAndChangesNothing()
    {
        using var store = Open();
        var chain = Chain(3);
        store.Append(chain[..1], CheckpointAt(chain[..1]));
        var wrong = Chain(2, 2, chain[0].Header.Commitment);
        Assert.Throws<InvariantViolationException>(() => store.Append(wrong, CheckpointAt(wrong)));
        Assert.Equal(1UL, store.History.LeafCount);
        store.Append(chain[1..], CheckpointAt(chain));
        Assert.Equal(3UL, store.History.LeafCount);
    }

    [Fact]
    public void TryGetTxPosition_EveryStoredTx_IsFoundAtItsPosition_AndNothingElseIs()
    {
        using var store = Open();
        var chain = Chain(300);
        Assert.False(store.TryGetTxPosition(chain[0].TxHashes[0], ulong.MaxValue, out _));
        store.Append(chain[..200], CheckpointAt(chain[..200]));
        store.Append(chain[200..], CheckpointAt(chain));
        Assert.Equal(900, store.TxCount);
        foreach (var batch in chain)
        {
            for (var i = 0; i < batch.TxHashes.Length; i++)
            {
                Assert.True(store.TryGetTxPosition(batch.TxHashes[i], 300, out var position));
                Assert.Equal(new TxPosition(batch.Header.Height, i), position);
            }
        }

        // A bound at or above a tx's height finds it; txs that were never stored are never found.
        Assert.True(store.TryGetTxPosition(chain[149].TxHashes[2], 150, out var bounded));
        Assert.Equal(new TxPosition(150, 2), bounded);
        for (var i = 0; i < 2000; i++)
            Assert.False(store.TryGetTxPosition(Keccak256.Hash(BitConverter.GetBytes(-1 - i)), ulong.MaxValue, out _));
    }

    [Fact]
    public void TryGetTxPosition_TheTxsOfAFailedAppend_AreNotFound()
    {
        using var store = Open();
        var chain = Chain(3);
        store.Append(chain[..1], CheckpointAt(chain[..1]));
        var wrong = Chain(2, 2, chain[0].Header.Commitment);
        Assert.Throws<InvariantViolationException>(() => store.Append(wrong, CheckpointAt(wrong)));
        Assert.False(store.TryGetTxPosition(wrong[0].TxHashes[0], ulong.MaxValue, out _));
        Assert.Equal(3, store.TxCount);
        store.Append(chain[1..], CheckpointAt(chain));
        Assert.True(store.TryGetTxPosition(chain[2].TxHashes[1], 3, out var position));
        Assert.Equal(new TxPosition(3, 1), position);
        Assert.Equal(9, store.TxCount);
    }

    [Fact]
    public void Prune_RemovesTxDataUpToTheHeight_AndKeepsHeadersAccountsAndHistory()
    {
        using var store = Open();
        var chain = AccountChain(20);
        store.Append(chain, CheckpointAt(chain), new SigningWrites([new SignedHead(12, 1, [1, 2], new byte[33], new byte[32], 5)], []));
        Assert.Equal(0UL, store.PrunedHeight);
        // In steps: at most maxBatches per call, never above the asked height.
        Assert.Equal(4UL, store.Prune(10, 4));
        Assert.Equal(8UL, store.Prune(10, 4));
        Assert.Equal(10UL, store.Prune(10, 4));
        Assert.Equal(10UL, store.Prune(7, 4));
        Assert.Equal(10UL, store.PrunedHeight);

        for (var height = 1UL; height <= 20; height++)
        {
            var batch = store.Get(height)!;
            Assert.Equal(chain[(int)height - 1].Header, batch.Header);
            Assert.Equal(chain[(int)height - 1].TxAccounts, batch.TxAccounts);
            Assert.Equal(height <= 10, batch.Pruned);
            Assert.Equal(height <= 10 ? [] : chain[(int)height - 1].TxHashes, batch.TxHashes);
            Assert.Equal(height <= 10 ? [] : chain[(int)height - 1].ReceivedMs, batch.ReceivedMs);
            batch.Verify();
        }

        Assert.Equal([.. chain.Select(b => b.Header.Commitment)], store.Scan(1, 20).Select(b => b.Header.Commitment));
        Assert.Equal(20UL, store.History.LeafCount);
        Assert.Equal(12UL, store.CoveringHead(3)!.Height);
        Assert.Equal(20UL, store.ReadAccount(Sender(2))!.Value.NextNonce);
        Assert.True(store.TryGetTxPosition(chain[15].TxHashes[1], 20, out var position));
        Assert.Equal(new TxPosition(16, 1), position);
        // Never above the stored height.
        Assert.Equal(20UL, store.Prune(100, 1000));
    }

    [Fact]
    public void Append_PrunedBatchesFromASnapshot_AreAPrefix_AndTheirAccountsCount()
    {
        using var store = Open();
        var chain = AccountChain(6);
        var installed = chain.Select((b, i) => i < 3 ? b.WithoutTxData() : b).ToList();
        Assert.Throws<InvariantViolationException>(() => store.Append([chain[0], installed[1]], CheckpointAt(chain[..2])));
        Assert.Null(store.Get(1));
        store.Append(installed[..2], CheckpointAt(chain[..2]));
        store.Append(installed[2..], CheckpointAt(chain));
        Assert.Equal(3UL, store.PrunedHeight);
        Assert.True(store.Get(3)!.Pruned);
        Assert.False(store.Get(4)!.Pruned);
        Assert.Equal(6UL, store.ReadAccount(Sender(0))!.Value.NextNonce);
        Assert.False(store.TryGetTxPosition(chain[1].TxHashes[0], 6, out _));
        Assert.True(store.TryGetTxPosition(chain[4].TxHashes[0], 6, out _));
    }

    public void Dispose()
    {
        if (System.IO.Directory.Exists(Directory))
            System.IO.Directory.Delete(Directory, recursive: true);
        GC.SuppressFinalize(this);
    }
}

public sealed class InMemoryBatchStoreTests : BatchStoreContractTests
{
    protected override IBatchStore Open() => new InMemoryBatchStore();
}

public sealed class LiteDbBatchStoreTests : BatchStoreContractTests
{
    protected override IBatchStore Open() => new LiteDbBatchStore(Path.Combine(Directory, "store.db"));

    private string TxIndexDirectory => Path.Combine(Directory, "txindex");

    private static void AssertEveryTxFound(LiteDbBatchStore store, IEnumerable<StoredBatch> chain)
    {
        foreach (var batch in chain)
        {
            for (var i = 0; i < batch.TxHashes.Length; i++)
            {
                Assert.True(store.TryGetTxPosition(batch.TxHashes[i], batch.Header.Height, out var position), $"tx {i} of batch {batch.Header.Height}");
                Assert.Equal(new TxPosition(batch.Header.Height, i), position);
            }
        }
    }

    [Fact]
    public void TxIndex_ManySmallAppends_AreMergedIntoFewRuns_AndEveryTxIsStillFound()
    {
        var chain = Chain(100);
        using (var store = new LiteDbBatchStore(Path.Combine(Directory, "store.db"), backgroundMerges: false))
        {
            for (var i = 0; i < chain.Count; i++)
                store.Append(chain[i..(i + 1)], CheckpointOf(chain[..(i + 1)]));
            Assert.Equal(100, store.TxIndexRuns);
            store.MergeTxIndex();
            // 100 one-batch runs with a fan-in of 8: one run of 64, four of 8 and four of 1.
            Assert.Equal(9, store.TxIndexRuns);
            Assert.Equal(9, System.IO.Directory.GetFiles(TxIndexDirectory).Length);
            AssertEveryTxFound(store, chain);
            Assert.Equal(300, store.TxCount);
        }

        using var reopened = new LiteDbBatchStore(Path.Combine(Directory, "store.db"), backgroundMerges: false);
        Assert.Equal(0, reopened.RebuiltIndexTxs);
        Assert.Equal(9, reopened.TxIndexRuns);
        AssertEveryTxFound(reopened, chain);
    }

    [Fact]
    public void TxIndex_LostDamagedLeftOverOrUncommittedRuns_AreRebuiltOrDroppedAtOpen()
    {
        var chain = Chain(40);
        using (var store = Open())
        {
            store.Append(chain[..10], CheckpointOf(chain[..10]));
            store.Append(chain[10..30], CheckpointOf(chain[..30]));
        }

        // The index is lost altogether (a store written before it existed): rebuilt from the stored batches.
        System.IO.Directory.Delete(TxIndexDirectory, recursive: true);
        using (var reopened = new LiteDbBatchStore(Path.Combine(Directory, "store.db")))
        {
            Assert.Equal(90, reopened.RebuiltIndexTxs);
            AssertEveryTxFound(reopened, chain[..30]);
        }

        // A damaged run (its filter), a run above the stored height (a transaction that never committed) and a temporary
        // file: the damaged range is rebuilt, the others are deleted.
        var runs = System.IO.Directory.GetFiles(TxIndexDirectory, "*.run");
        var damaged = runs[0];
        var bytes = File.ReadAllBytes(damaged);
        bytes[^30] ^= 0x40;
        File.WriteAllBytes(damaged, bytes);
        var uncommitted = Path.Combine(TxIndexDirectory, TxIndexRun.FileName(31, 35));
        File.Copy(damaged, uncommitted);
        File.WriteAllText(Path.Combine(TxIndexDirectory, "x.run.tmp"), "partial");
        using (var reopened = new LiteDbBatchStore(Path.Combine(Directory, "store.db")))
        {
            Assert.True(reopened.RebuiltIndexTxs > 0);
            Assert.False(File.Exists(uncommitted));
            Assert.False(File.Exists(Path.Combine(TxIndexDirectory, "x.run.tmp")));
            AssertEveryTxFound(reopened, chain[..30]);
            reopened.Append(chain[30..], CheckpointOf(chain));
            AssertEveryTxFound(reopened, chain);
        }
    }

    [Fact]
    public void TxIndex_ARunLeftBehindByAMerge_IsDroppedAtOpen()
    {
        // A crash after a merge wrote its run but before it deleted the runs it replaced.
        var chain = Chain(8);
        var kept = Path.Combine(Directory, "kept");
        using (var store = new LiteDbBatchStore(Path.Combine(Directory, "store.db"), backgroundMerges: false))
        {
            for (var i = 0; i < chain.Count; i++)
                store.Append(chain[i..(i + 1)], CheckpointOf(chain[..(i + 1)]));
            System.IO.Directory.CreateDirectory(kept);
            foreach (var file in System.IO.Directory.GetFiles(TxIndexDirectory))
                File.Copy(file, Path.Combine(kept, Path.GetFileName(file)));
            store.MergeTxIndex();
            Assert.Equal(1, store.TxIndexRuns);
        }

        foreach (var file in System.IO.Directory.GetFiles(kept))
            File.Copy(file, Path.Combine(TxIndexDirectory, Path.GetFileName(file)));
        using var reopened = new LiteDbBatchStore(Path.Combine(Directory, "store.db"), backgroundMerges: false);
        Assert.Equal(0, reopened.RebuiltIndexTxs);
        Assert.Equal(1, reopened.TxIndexRuns);
        Assert.Single(System.IO.Directory.GetFiles(TxIndexDirectory));
        AssertEveryTxFound(reopened, chain);
    }

    [Fact]
    public void TxIndex_ABlockDamagedOnDisk_FailsTheLookupWithAClearMessage()
    {
        var chain = Chain(4);
        using (var store = Open())
            store.Append(chain, CheckpointOf(chain));
        var run = Assert.Single(System.IO.Directory.GetFiles(TxIndexDirectory));
        var bytes = File.ReadAllBytes(run);
        bytes[64 + 5] ^= 0x01; // inside the first record
        File.WriteAllBytes(run, bytes);
        using var reopened = Open();
        var failed = 0;
        foreach (var batch in chain)
        {
            foreach (var hash in batch.TxHashes)
            {
                try
                {
                    reopened.TryGetTxPosition(hash, ulong.MaxValue, out _);
                }
                catch (IOException e)
                {
                    Assert.Contains("delete the txindex directory", e.Message, StringComparison.Ordinal);
                    failed++;
                }
            }
        }

        // Every lookup that reads the damaged block fails (all twelve txs fit in one block); none answers wrongly.
        Assert.Equal(12, failed);
    }

    private static StoreCheckpoint CheckpointOf(IReadOnlyList<StoredBatch> batches)
        => new(batches[^1].RaftIndex, 1, batches[^1].Header.Height, 0, 0, 0);

    [Fact]
    public void Open_AStoreWrittenByAV1Node_IsRefusedWithAClearMessage()
    {
        // A v1 store: batches and a checkpoint, and no format marker (v1 nodes wrote none).
        var path = Path.Combine(Directory, "store.db");
        System.IO.Directory.CreateDirectory(Directory);
        using (var v1 = new LiteDB.LiteDatabase(new LiteDB.ConnectionString { Filename = path, Connection = LiteDB.ConnectionType.Direct }))
        {
            v1.GetCollection("batches").Insert(new LiteDB.BsonDocument { ["_id"] = 1L, ["txCount"] = 1L });
            v1.GetCollection("meta").Insert(new LiteDB.BsonDocument { ["_id"] = "checkpoint", ["appliedIndex"] = 2L, ["appliedTerm"] = 1L, ["lastHeight"] = 1L,
                ["snapshotIndex"] = 0L, ["snapshotTerm"] = 0L, ["snapshotHeight"] = 0L });
        }

        var refused = Assert.Throws<DataFormatException>(() => new LiteDbBatchStore(path));
        Assert.Contains("v1 batch headers", refused.Message, StringComparison.Ordinal);
        Assert.Contains("Move the data directory away", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Reopen_AfterTheHistoryFileWasLost_RebuildsItFromTheStoredCommitments()
    {
        var chain = Chain(37);
        using (var store = Open())
            store.Append(chain, new StoreCheckpoint(38, 1, 37, 0, 0, 0));
        File.Delete(Path.Combine(Directory, "history.bin"));
        using var reopened = Open();
        var expected = new InMemoryHistoryNodes();
        foreach (var batch in chain)
            expected.Append(batch.Header.Commitment);
        Assert.Equal(37UL, reopened.History.LeafCount);
        Assert.Equal(HistoryTree.Root(expected, 37), HistoryTree.Root(reopened.History, 37));
        Assert.Equal(HistoryTree.AuditPath(expected, 5, 30), HistoryTree.AuditPath(reopened.History, 5, 30));
        // And it goes on appending where the store is.
        reopened.Append(Chain(3, 38, chain[^1].Header.Commitment, MerkleFrontier.Load(expected, 37)), new StoreCheckpoint(41, 1, 40, 0, 0, 0));
        Assert.Equal(40UL, reopened.History.LeafCount);
    }

    [Fact]
    public void Prune_ThenMerge_DropsThePrunedTxsFromTheIndex_KeepsTheRest_AndSurvivesAReopen()
    {
        var chain = AccountChain(40);
        var path = Path.Combine(Directory, "store.db");
        using (var store = new LiteDbBatchStore(path, backgroundMerges: false))
        {
            for (var i = 0; i < chain.Count; i++)
                store.Append(chain[i..(i + 1)], CheckpointOf(chain[..(i + 1)]));
            store.MergeTxIndex();
            var before = store.TxIndexMemoryBytes;
            Assert.Equal(20UL, store.Prune(20, 256));
            store.MergeTxIndex();
            // Runs wholly at or below the pruned height are emptied (1-8, 9-16); 17-24 straddles it and stays.
            foreach (var batch in chain.Take(16))
                Assert.False(store.TryGetTxPosition(batch.TxHashes[0], 40, out _), $"batch {batch.Header.Height}");
            AssertEveryTxFound(store, chain.Skip(20));
            Assert.Equal(72, store.TxCount);
            Assert.True(store.TxIndexMemoryBytes <= before);
        }

        using var reopened = new LiteDbBatchStore(path, backgroundMerges: false);
        Assert.Equal(20UL, reopened.PrunedHeight);
        Assert.True(reopened.Get(20)!.Pruned);
        Assert.False(reopened.Get(21)!.Pruned);
        Assert.Equal(0, reopened.RebuiltIndexTxs);
        AssertEveryTxFound(reopened, chain.Skip(20));
        Assert.Equal(40UL, reopened.ReadAccount(Sender(1))!.Value.NextNonce);
    }

    [Fact]
    public void Prune_TheFreedPagesAreReused_SoTheFileGrowsOnlyWithWhatIsKept()
    {
        // Batches of 1,000 txs: 40 KB of hashes and receive times each. Without reuse the file would double.
        static List<StoredBatch> Big(int count, ulong first, Hash32 parent, MerkleFrontier history)
        {
            var batches = new List<StoredBatch>();
            for (var i = 0; i < count; i++)
            {
                var height = first + (ulong)i;
                var hashes = Enumerable.Range(0, 1000).Select(j => Keccak256.Hash(BitConverter.GetBytes((height * 100_000) + (ulong)j))).ToArray();
                var header = new BatchHeader(9, 0, height, 1, parent, history.Root, MerkleTree.ComputeRoot(hashes), 1000, 1000 + height);
                history.Append(header.Commitment);
                batches.Add(new StoredBatch { Header = header, TxHashes = hashes, ReceivedMs = new ulong[1000], RaftIndex = (long)height + 1, OrderedAtMs = 77 });
                parent = header.Commitment;
            }

            return batches;
        }

        var path = Path.Combine(Directory, "store.db");
        long Size() => System.IO.Directory.GetFiles(Directory, "store*.db").Sum(f => new FileInfo(f).Length);
        var history = new MerkleFrontier();
        var parent = Hash32.Zero;
        var sizes = new List<long>();
        using var store = new LiteDbBatchStore(path, backgroundMerges: false);
        // Ten rounds of 50 batches (2 MB of tx data), each followed by pruning all but the newest 10 heights.
        for (var round = 0; round < 10; round++)
        {
            var batches = Big(50, (ulong)(round * 50) + 1, parent, history);
            parent = batches[^1].Header.Commitment;
            store.Append(batches, CheckpointOf(batches));
            store.Prune(batches[^1].Header.Height - 10, 1000);
            sizes.Add(Size());
        }

        // The files swing with LiteDB's log checkpoints: compare the peaks of two rounds early and late. Kept: 10 batches
        // with their data, and about 600 bytes per pruned header. Without reuse they would grow by 2 MB a round.
        var early = Math.Max(sizes[2], sizes[3]);
        var late = Math.Max(sizes[8], sizes[9]);
        Assert.True(late < early * 1.2, $"the store files grew with pruning on: {string.Join(", ", sizes)} bytes after each round");
    }

    [Fact]
    public void Append_IsOnDiskWhenItReturns_ACopyOfTheFilesTakenRightThenHoldsIt()
    {
        // LiteDB writes a commit's pages on a thread of its own after the commit returns; the store waits for them
        // and fsyncs before Append returns. A copy of the directory taken at that moment (what a power loss would
        // leave, at best) must open with the new checkpoint.
        var chain = Chain(40);
        using var store = new LiteDbBatchStore(Path.Combine(Directory, "store.db"), backgroundMerges: false);
        for (var i = 0; i < chain.Count; i += 4)
        {
            var group = chain.GetRange(i, 4);
            var checkpoint = new StoreCheckpoint(group[^1].RaftIndex, 1, group[^1].Header.Height, 0, 0, 0);
            store.Append(group, checkpoint);
            var copy = Path.Combine(Directory, "copy-" + i);
            CopyDirectory(Directory, copy, skip: "copy-");
            using var reopened = new LiteDbBatchStore(Path.Combine(copy, "store.db"));
            Assert.Equal(checkpoint, reopened.ReadCheckpoint());
            Assert.Equal(group[^1].Header, reopened.Get(group[^1].Header.Height)!.Header);
        }
    }

    [Fact]
    public void LiteDbLog_SyncsOncePerCall_AndACopyAfterSyncHoldsEveryCommit()
    {
        var path = Path.Combine(Directory, "plain.db");
        System.IO.Directory.CreateDirectory(Directory);
        using var log = LiteDbLog.Open(path);
        var documents = log.Database.GetCollection("d");
        for (var i = 1; i <= 20; i++)
        {
            Assert.True(log.Database.BeginTrans());
            documents.Insert(new LiteDB.BsonDocument { ["_id"] = i, ["v"] = new byte[3000] });
            Assert.True(log.Database.Commit());
            log.Sync();
            Assert.Equal(i, log.Syncs);
            var copy = Path.Combine(Directory, "plain-copy-" + i);
            System.IO.Directory.CreateDirectory(copy);
            foreach (var name in new[] { "plain.db", "plain-log.db" })
                File.Copy(Path.Combine(Directory, name), Path.Combine(copy, name));
            using var reopened = LiteDbLog.Open(Path.Combine(copy, "plain.db"));
            Assert.Equal(i, reopened.Database.GetCollection("d").Count());
        }

        // Closing checkpoints the log into the data file, through this stream as through LiteDB's own.
        log.Dispose();
        Assert.Equal(0, new FileInfo(Path.Combine(Directory, "plain-log.db")).Length);
        Assert.True(new FileInfo(path).Length > 20 * 3000, "the data file holds the documents after the close");
        using var again = LiteDbLog.Open(path);
        Assert.Equal(20, again.Database.GetCollection("d").Count());
    }

    [Fact]
    public async Task LiteDbLog_AFailedLogWrite_FailsTheSync_InsteadOfWaitingForGood()
    {
        // A full disk fails LiteDB's writer thread, which then never marks its queue empty: Sync must say so.
        System.IO.Directory.CreateDirectory(Directory);
        var fail = false;
        using var log = LiteDbLog.Open(Path.Combine(Directory, "full.db"), () => Volatile.Read(ref fail));
        var documents = log.Database.GetCollection("d");
        documents.Insert(new LiteDB.BsonDocument { ["_id"] = 1 });
        log.Sync();
        Volatile.Write(ref fail, true);
        try
        {
            documents.Insert(new LiteDB.BsonDocument { ["_id"] = 2, ["v"] = new byte[20_000] });
        }
        catch (Exception e) when (e is LiteDB.LiteException or IOException)
        {
            // LiteDB may already refuse the write: the writer's failure is reported either way.
        }

        var sync = Task.Run(() => Record.Exception(log.Sync));
        Assert.Same(sync, await Task.WhenAny(sync, Task.Delay(TimeSpan.FromSeconds(20))));
        var failure = await sync;
        Assert.IsType<IOException>(failure);
        Assert.Contains("LiteDB's log writer failed", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LiteDbLog_AFailedFirstWriteAfterAnOpen_FailsTheSync_AndAReopenWritesAgain()
    {
        // LiteDB starts its writer at the first write; should that write fail, the writer closed the engine by waiting
        // for its own task, for good, and Sync with it. A database reopened on a full disk meets exactly that. A write
        // on a thread of LiteDB's own (the writer's first, unless it was started at open) fails only once the insert
        // has returned, as it would on a busy machine: without the start at open this waits for good every time.
        System.IO.Directory.CreateDirectory(Directory);
        var path = Path.Combine(Directory, "first.db");
        var fail = false;
        var caller = Environment.CurrentManagedThreadId;
        using var inserted = new ManualResetEventSlim();
        bool Fail()
        {
            if (!Volatile.Read(ref fail))
                return false;
            if (Environment.CurrentManagedThreadId != caller)
                inserted.Wait();
            return true;
        }

        using (var log = LiteDbLog.Open(path, Fail))
        {
            log.Database.GetCollection("d").Insert(new LiteDB.BsonDocument { ["_id"] = 1 });
            log.Sync();
        }

        Volatile.Write(ref fail, true);
        using (var log = LiteDbLog.Open(path, Fail))
        {
            // LiteDB may already refuse the write: the writer's failure is reported by Sync either way.
            Record.Exception(() => log.Database.GetCollection("d").Insert(new LiteDB.BsonDocument { ["_id"] = 2, ["v"] = new byte[20_000] }));
            inserted.Set();
            var sync = Task.Run(() => Record.Exception(log.Sync));
            Assert.Same(sync, await Task.WhenAny(sync, Task.Delay(TimeSpan.FromSeconds(20))));
            Assert.IsType<IOException>(await sync);
        }

        Volatile.Write(ref fail, false);
        using (var log = LiteDbLog.Open(path, Fail))
        {
            log.Database.GetCollection("d").Insert(new LiteDB.BsonDocument { ["_id"] = 3 });
            log.Sync();
            Assert.Equal([1, 3], log.Database.GetCollection("d").FindAll().Select(d => d["_id"].AsInt32));
        }
    }

    private static void CopyDirectory(string from, string to, string skip)
    {
        System.IO.Directory.CreateDirectory(to);
        // A .tmp file is not committed state (a tx index run or merge being written): the store drops it at open.
        foreach (var file in System.IO.Directory.EnumerateFiles(from).Where(f => !f.EndsWith(".tmp", StringComparison.Ordinal)))
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (var directory in System.IO.Directory.EnumerateDirectories(from))
        {
            if (!Path.GetFileName(directory).StartsWith(skip, StringComparison.Ordinal))
                CopyDirectory(directory, Path.Combine(to, Path.GetFileName(directory)), skip);
        }
    }

    [Fact]
    public void Reopen_KeepsEverythingCommitted()
    {
        var chain = Chain(10);
        using (var store = Open())
            store.Append(chain, new StoreCheckpoint(11, 1, 10, 4, 1, 3));
        using var reopened = Open();
        Assert.Equal(new StoreCheckpoint(11, 1, 10, 4, 1, 3), reopened.ReadCheckpoint());
        Assert.Equal(chain[9].Header, reopened.Get(10)!.Header);
    }
}
