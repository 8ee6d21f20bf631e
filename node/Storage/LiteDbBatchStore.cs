using System.Buffers.Binary;
using LiteDB;
using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Core.Validation;

namespace Sequencer.Node.Storage;

/// <summary>
/// The LiteDB <see cref="IBatchStore"/>: one document per batch (header fields, commitment, tx hashes) and one
/// checkpoint document, written together in one transaction per group; beside it, the history file and the tx index.
/// </summary>
/// <remarks>
/// A commit is made durable with one fsync of LiteDB's log when it is done (<see cref="LiteDbLog"/>; about 0.85 ms
/// per commit of a small document measured here), which is why the applied state groups many batches into one
/// <see cref="Append"/>. Every write returns only once it is on disk. Tx hashes are stored as one binary block per
/// batch rather than one document per tx: indexed inserts measured about 3k per second. So the hash-to-position
/// lookup is not a LiteDB index but <see cref="StoredTxIndex"/>: sorted run files in <c>txindex/</c>, written before
/// the transaction like the history file.
/// </remarks>
public sealed class LiteDbBatchStore : IBatchStore
{
    private const string BatchCollection = "batches";
    private const string MetaCollection = "meta";
    private const string CheckpointId = "checkpoint";
    private const string FormatId = "format";
    private const int ScanPageBatches = 128;

    private readonly LiteDbLog liteDb;
    private readonly LiteDatabase database;
    private readonly ILiteCollection<BsonDocument> batchCollection;
    private readonly ILiteCollection<BsonDocument> meta;
    private readonly ILiteCollection<BsonDocument> signatureCollection;
    private readonly ILiteCollection<BsonDocument> keyEpochCollection;
    private readonly ILiteCollection<BsonDocument> commitmentCollection;
    private readonly ILiteCollection<BsonDocument> dkgCollection;
    private readonly ILiteCollection<BsonDocument> snapshotDkgCollection;
    private readonly ILiteCollection<BsonDocument> accountCollection;
    private const string GenesisId = "genesis";
    private const string PrunedId = "pruned";
    // One LiteDB operation at a time, reads included. LiteDB 5.0.20's page cache lets a concurrent reader use a page
    // buffer it is recycling (litedb-org/LiteDB#2817: "page type must be index page" and garbage reads, on databases
    // larger than the cache), which stopped a node under load once lookups of older batches went to the store, and it
    // grows in 8 MB steps that it never returns under concurrent use (#2813, #2020). Reads wait for a store
    // transaction at most (tens of milliseconds); the tx index and the history file are outside LiteDB.
    private readonly Lock writer = new();
    private readonly HistoryFile history;
    private readonly StoredTxIndex txIndex;
    private StoreCheckpoint current;
    private ulong prunedHeight;

    /// <summary>Opens (or creates) the store file at <paramref name="path"/>.</summary>
    /// <param name="path">The LiteDB file; the history file and the tx index live beside it.</param>
    /// <param name="backgroundMerges">False: the tx index merges its runs only when asked (<see cref="MergeTxIndex"/>, tests).</param>
    /// <exception cref="IOException">The file cannot be opened.</exception>
    public LiteDbBatchStore(string path, bool backgroundMerges = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        liteDb = LiteDbLog.Open(path);
        database = liteDb.Database;
        batchCollection = database.GetCollection(BatchCollection);
        meta = database.GetCollection(MetaCollection);
        signatureCollection = database.GetCollection("signatures");
        keyEpochCollection = database.GetCollection("keyEpochs");
        commitmentCollection = database.GetCollection("commitments");
        dkgCollection = database.GetCollection("dkg");
        snapshotDkgCollection = database.GetCollection("snapshotDkg");
        accountCollection = database.GetCollection("accounts");
        current = ReadCheckpointDocument();
        prunedHeight = meta.FindById(PrunedId) is { } pruned ? (ulong)pruned["height"].AsInt64 : 0;
        CheckFormat(path);
        var last = current.LastHeight == 0 ? Hash32.Zero : (Get(current.LastHeight)?.Header.Commitment
            ?? throw new DataFormatException($"the store {path} names height {current.LastHeight} in its checkpoint but does not hold that batch"));
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        history = new HistoryFile(Path.Combine(directory, "history.bin"), current.LastHeight, last,
            () => Scan(1, current.LastHeight).Select(b => b.Header.Commitment));
        try
        {
            txIndex = new StoredTxIndex(Path.Combine(directory, "txindex"), current.LastHeight, Scan, backgroundMerges, prunedHeight);
        }
        catch
        {
            history.Dispose();
            liteDb.Dispose();
            throw;
        }
    }

    /// <summary>How many txs the tx index rebuilt from the stored batches at open (0: its files were intact).</summary>
    public long RebuiltIndexTxs => txIndex.RebuiltTxs;

    /// <summary>The tx index's run files.</summary>
    public int TxIndexRuns => txIndex.RunCount;

    /// <summary>The tx index's memory (its filters and fences).</summary>
    public long TxIndexMemoryBytes => txIndex.MemoryBytes;

    /// <summary>Merges the tx index's runs now until no merge is due (tests; a node merges in the background).</summary>
    public void MergeTxIndex() => txIndex.MergeAll();

    /// <inheritdoc/>
    public bool TryGetTxPosition(Hash32 hash, ulong maxHeight, out TxPosition position)
    {
        try
        {
            return txIndex.TryFind(hash, maxHeight, out position);
        }
        catch (InvalidDataException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    /// <inheritdoc/>
    public long TxCount => txIndex.TxCount;

    /// <inheritdoc/>
    public ulong PrunedHeight => Volatile.Read(ref prunedHeight);

    /// <inheritdoc/>
    public ulong Prune(ulong throughHeight, int maxBatches)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatches, 1);
        ulong last;
        lock (writer)
        {
            last = Math.Min(Math.Min(throughHeight, current.LastHeight), prunedHeight + (ulong)maxBatches);
            if (last <= prunedHeight)
                return prunedHeight;
            try
            {
                if (!database.BeginTrans())
                    throw new InvalidOperationException("a store transaction is already open on this thread");
                foreach (var document in batchCollection.Find(Query.Between("_id", (long)prunedHeight + 1, (long)last)).ToList())
                {
                    document["txHashes"] = Array.Empty<byte>();
                    document["receivedMs"] = Array.Empty<byte>();
                    document["pruned"] = true;
                    // Delete and insert, not update: an update leaves the shrunk document in the first page of the
                    // old one (8 KiB per batch on disk); a new small document shares a page with others.
                    batchCollection.Delete(document["_id"]);
                    batchCollection.Insert(document);
                }

                meta.Upsert(new BsonDocument { ["_id"] = PrunedId, ["height"] = (long)last });
                if (!database.Commit())
                    throw new IOException("the store did not commit");
                SyncCommitted();
            }
            catch (Exception e) when (e is LiteException or IOException or InvalidOperationException)
            {
                try
                {
                    database.Rollback();
                }
                catch (LiteException)
                {
                }

                throw e is LiteException ? new IOException($"store write failed: {e.Message}", e) : e;
            }

            Volatile.Write(ref prunedHeight, last);
        }

        txIndex.Prune(last);
        return last;
    }

    /// <summary>
    /// A store written by a v1 node (headers without a history root, DESIGN section 5) cannot be read by this one:
    /// refuse it with a message that says what to do. A new store is marked with the current format.
    /// </summary>
    private void CheckFormat(string path)
    {
        var format = meta.FindById(FormatId);
        if (format is null && current == StoreCheckpoint.Empty && batchCollection.Count() == 0)
        {
            meta.Upsert(new BsonDocument { ["_id"] = FormatId, ["headerVersion"] = BatchHeader.FormatVersion });
            SyncCommitted();
            return;
        }

        var version = format is null ? 1 : format["headerVersion"].AsInt32;
        if (version != BatchHeader.FormatVersion)
        {
            throw new DataFormatException(
                $"the data directory of {path} holds v{version} batch headers, and this node writes v{BatchHeader.FormatVersion} headers " +
                "(with a history root; the commitment changed). A node cannot convert them. Move the data directory away and start the node " +
                "again: it catches up from its peers. A cluster whose nodes are all v1 must start again from empty data directories.");
        }
    }

    /// <inheritdoc/>
    public IHistoryNodes History => history;

    /// <inheritdoc/>
    public StoreCheckpoint ReadCheckpoint()
    {
        lock (writer)
            return current;
    }

    /// <inheritdoc/>
    public void Append(IReadOnlyList<StoredBatch> batches, StoreCheckpoint checkpoint, SigningWrites? signing = null)
    {
        ArgumentNullException.ThrowIfNull(batches);
        lock (writer)
        {
            var expected = current.LastHeight + 1;
            var pruned = prunedHeight;
            foreach (var batch in batches)
            {
                Invariant.Check(batch.Header.Height == expected, $"stored heights are contiguous: expected {expected}, got {batch.Header.Height}");
                Invariant.Check(!batch.Pruned || batch.Header.Height == pruned + 1, $"pruned batches form a prefix of the stored chain: batch {batch.Header.Height} after pruned height {pruned}");
                if (batch.Pruned)
                    pruned = batch.Header.Height;
                expected++;
            }

            Invariant.Check(checkpoint.LastHeight == expected - 1, "the checkpoint names the last stored height");
            Invariant.Check(checkpoint.AppliedIndex >= current.AppliedIndex, "the applied index never moves back");
            Invariant.Check(checkpoint.SnapshotIndex <= checkpoint.AppliedIndex && checkpoint.SnapshotHeight <= checkpoint.LastHeight, "the snapshot lies within the stored state");
            // Check data before it is written: every header's history root is the root over the commitments below it.
            var storedLeaves = history.LeafCount;
            Invariant.Check(storedLeaves == current.LastHeight, "the history file holds exactly the stored commitments");
            if (batches.Count > 0)
            {
                var check = MerkleFrontier.Load(history, storedLeaves);
                foreach (var batch in batches)
                {
                    Invariant.Check(batch.Header.HistoryRoot == check.Root, $"batch {batch.Header.Height}: the history root is the root over the stored commitments below it");
                    check.Append(batch.Header.Commitment);
                }
            }

            // The history file and the tx index runs are written (and fsynced) first; should the transaction fail, the
            // history is cut back and the runs deleted.
            IReadOnlyList<TxIndexRun>? runs = null;
            try
            {
                history.Append(batches.Select(b => b.Header.Commitment));
                if (batches.Count > 0)
                    runs = txIndex.Prepare(batches);
            }
            catch
            {
                history.Truncate(storedLeaves);
                throw;
            }

            try
            {
                if (!database.BeginTrans())
                    throw new InvalidOperationException("a store transaction is already open on this thread");
                foreach (var batch in batches)
                    batchCollection.Insert(ToDocument(batch));
                WriteAccounts(batches);
                if (pruned != prunedHeight)
                    meta.Upsert(new BsonDocument { ["_id"] = PrunedId, ["height"] = (long)pruned });
                foreach (var signature in signing?.Signatures ?? [])
                {
                    if (signatureCollection.FindById((long)signature.Height) is null)
                        signatureCollection.Insert(ToDocument(signature));
                }

                foreach (var epoch in signing?.KeyEpochs ?? [])
                {
                    epoch.CheckShape();
                    keyEpochCollection.Upsert(ToDocument(epoch));
                }
                if (signing is not null)
                {
                    WriteCommitments(signing);
                    WriteDkg(signing);
                }
                meta.Upsert(ToDocument(checkpoint));
                if (!database.Commit())
                    throw new IOException("the store did not commit");
            }
            catch (LiteException e)
            {
                Undo(storedLeaves, runs);
                throw new IOException($"store write failed: {e.Message}", e);
            }
            catch
            {
                // Whatever failed (the disk, or a bug caught by an invariant), the transaction must not stay open on
                // this thread: the next write, or the flush at shutdown, would fail with "a transaction is already open".
                Undo(storedLeaves, runs);
                throw;
            }

            current = checkpoint;
            Volatile.Write(ref prunedHeight, pruned);
            if (runs is not null)
                txIndex.Commit(runs);
            SyncCommitted();
        }
    }

    /// <summary>
    /// Makes the transaction just committed durable. A failed fsync leaves the store in a state nobody can vouch for
    /// (the kernel may have dropped the pages it failed to write), so it is not an <see cref="IOException"/> that the
    /// persister would retry: it stops the node, whose Raft log still holds every entry above the durable checkpoint.
    /// </summary>
    private void SyncCommitted()
    {
        try
        {
            liteDb.Sync();
        }
        catch (IOException e)
        {
            throw new StoreDurabilityException($"the store's log could not be synced to disk after a commit: {e.Message}", e);
        }
    }

    /// <summary>
    /// Undoes a failed append: the history file back to the stored commitments, the prepared tx index runs, the
    /// transaction. Each step runs even when an earlier one fails (a full disk can fail the rollback too), and the
    /// first failure of the undo is thrown after all of them, as an <see cref="IOException"/>.
    /// </summary>
    private void Undo(ulong storedLeaves, IReadOnlyList<TxIndexRun>? runs)
    {
        List<Exception>? failures = null;
        void Step(Action action)
        {
            try
            {
                action();
            }
            catch (Exception e) when (e is IOException or LiteException or UnauthorizedAccessException)
            {
                (failures ??= []).Add(e);
            }
        }

        Step(() => history.Truncate(storedLeaves));
        Step(() => StoredTxIndex.Abandon(runs));
        Step(() => database.Rollback());
        if (failures is not null)
            throw new IOException($"undoing a failed store write failed: {failures[0].Message}", failures[0]);
    }

    /// <inheritdoc/>
    public StoredBatch? Get(ulong height)
    {
        BsonDocument? document;
        lock (writer)
            document = batchCollection.FindById((long)height);
        return document is null ? null : FromDocument(document);
    }

    /// <inheritdoc/>
    public IEnumerable<StoredBatch> Scan(ulong fromHeight, ulong toHeight)
    {
        // Page through the range so that no query stays open across a long stream.
        var next = Math.Max(1, fromHeight);
        while (next <= toHeight)
        {
            var last = Math.Min(toHeight, next + ScanPageBatches - 1);
            List<BsonDocument> documents;
            lock (writer)
                documents = [.. batchCollection.Find(Query.Between("_id", (long)next, (long)last))];
            var page = documents.Select(FromDocument).ToList();
            foreach (var batch in page.OrderBy(b => b.Header.Height))
            {
                if (batch.Header.Height != next)
                    yield break;
                yield return batch;
                next++;
            }

            if (next <= last)
                yield break;
        }
    }

    /// <inheritdoc/>
    public SignedHead? GetHead(ulong height)
    {
        BsonDocument? document;
        lock (writer)
            document = signatureCollection.FindById((long)height);
        return document is null ? null : ToHead(document);
    }

    /// <inheritdoc/>
    public SignedHead? CoveringHead(ulong height)
    {
        BsonDocument? document;
        lock (writer)
            document = signatureCollection.Query().Where(Query.GTE("_id", (long)height)).OrderBy("_id").Limit(1).FirstOrDefault();
        return document is null ? null : ToHead(document);
    }

    /// <inheritdoc/>
    public IReadOnlyList<SignedHead> Heads(ulong fromHeight, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        lock (writer)
            return [.. signatureCollection.Query().Where(Query.GTE("_id", (long)fromHeight)).OrderBy("_id").Limit(limit).ToEnumerable().Select(ToHead)];
    }

    private static SignedHead ToHead(BsonDocument document) => new(
        (ulong)document["_id"].AsInt64,
        unchecked((ulong)document["keyEpoch"].AsInt64),
        [.. document["signers"].AsArray.Select(v => v.AsInt32)],
        document["r"].AsBinary,
        document["z"].AsBinary,
        unchecked((ulong)document["signedAtMs"].AsInt64));

    /// <inheritdoc/>
    public IReadOnlyList<StoredKeyEpoch> ReadKeyEpochs()
    {
        lock (writer)
        {
            return [.. keyEpochCollection.FindAll().Select(d => new StoredKeyEpoch(
                unchecked((ulong)d["_id"].AsInt64),
                d["threshold"].AsInt32,
                d["groupKey"].AsBinary,
                [.. d["members"].AsArray.Select(v => v.AsInt32)],
                [.. d["shares"].AsArray.Select(v => v.AsBinary)],
                d["raftIndex"].AsInt64,
                d.TryGetValue("pending", out var pending) && pending.AsBoolean,
                d.TryGetValue("rotation", out var rotation) && rotation.IsDocument ? RotationOf(rotation.AsDocument) : null)).OrderBy(k => k.Epoch)];
        }
    }

    /// <inheritdoc/>
    public CommitmentPool ReadCommitments()
    {
        lock (writer)
            return ReadCommitmentsLocked();
    }

    private CommitmentPool ReadCommitmentsLocked()
    {
        var commitments = commitmentCollection.Find(Query.GTE("_id", 0L))
            .Select(d => new StoredCommitment(CommitmentSigner(d["_id"].AsInt64), CommitmentSequence(d["_id"].AsInt64), d["v"].AsBinary))
            .ToList();
        var next = commitmentCollection.Find(Query.LT("_id", 0L)).ToDictionary(d => (int)(-d["_id"].AsInt64), d => unchecked((ulong)d["next"].AsInt64));
        return new CommitmentPool(commitments, next);
    }

    // One collection: a commitment's id packs (signer, sequence) into a positive long; a signer's next sequence is
    // the document with id -signer.
    private const int SequenceBits = 48;

    private static long CommitmentId(int signer, ulong sequence)
    {
        Invariant.Check(sequence < (1UL << SequenceBits), "a nonce sequence fits in 48 bits");
        return ((long)signer << SequenceBits) | (long)sequence;
    }

    private static int CommitmentSigner(long id) => (int)(id >> SequenceBits);

    private static ulong CommitmentSequence(long id) => (ulong)id & ((1UL << SequenceBits) - 1);

    /// <inheritdoc/>
    public IReadOnlyList<byte[]> ReadDkgEntries()
    {
        lock (writer)
            return [.. dkgCollection.FindAll().OrderBy(d => d["_id"].AsInt64).Select(d => d["v"].AsBinary)];
    }

    /// <inheritdoc/>
    public IReadOnlyList<byte[]> ReadSnapshotDkgEntries()
    {
        lock (writer)
            return [.. snapshotDkgCollection.FindAll().OrderBy(d => d["_id"].AsInt64).Select(d => d["v"].AsBinary)];
    }

    private void WriteDkg(SigningWrites signing)
    {
        if (signing.SnapshotDkg is { } atPoint)
        {
            snapshotDkgCollection.DeleteAll();
            long id = 1;
            foreach (var entry in atPoint)
                snapshotDkgCollection.Insert(new BsonDocument { ["_id"] = id++, ["v"] = entry });
        }

        if (signing.ClearDkg)
            dkgCollection.DeleteAll();
        if (signing.DkgEntries is not { Count: > 0 } entries)
            return;
        // Max() throws on an empty collection (LiteDB 5): read the last document instead, if there is one.
        var last = dkgCollection.Query().OrderByDescending("_id").Limit(1).FirstOrDefault();
        var next = last is null ? 1 : last["_id"].AsInt64 + 1;
        foreach (var entry in entries)
            dkgCollection.Insert(new BsonDocument { ["_id"] = next++, ["v"] = entry });
    }

    private void WriteCommitments(SigningWrites signing)
    {
        if (signing.ClearCommitments)
            commitmentCollection.DeleteAll();
        foreach (var (signer, sequence) in signing.RemovedCommitments ?? [])
            commitmentCollection.Delete(CommitmentId(signer, sequence));
        foreach (var added in signing.AddedCommitments ?? [])
            commitmentCollection.Upsert(new BsonDocument { ["_id"] = CommitmentId(added.Signer, added.Sequence), ["v"] = added.Value });
        foreach (var (signer, next) in signing.NextSequences ?? new Dictionary<int, ulong>())
            commitmentCollection.Upsert(new BsonDocument { ["_id"] = -(long)signer, ["next"] = unchecked((long)next) });
    }

    private static BsonDocument ToDocument(SignedHead signature) => new()
    {
        ["_id"] = (long)signature.Height,
        ["keyEpoch"] = unchecked((long)signature.KeyEpoch),
        ["signers"] = new BsonArray(signature.Signers.Select(s => new BsonValue(s))),
        ["r"] = signature.R,
        ["z"] = signature.Z,
        ["signedAtMs"] = unchecked((long)signature.SignedAtMs),
    };

    private static BsonDocument ToDocument(StoredKeyEpoch epoch) => new()
    {
        ["_id"] = unchecked((long)epoch.Epoch),
        ["threshold"] = epoch.Threshold,
        ["groupKey"] = epoch.GroupKey,
        ["members"] = new BsonArray(epoch.Members.Select(m => new BsonValue(m))),
        ["shares"] = new BsonArray(epoch.VerificationShares.Select(v => new BsonValue(v))),
        ["raftIndex"] = epoch.RaftIndex,
        ["pending"] = epoch.Pending,
        ["rotation"] = epoch.Rotation is { } rotation
            ? new BsonDocument
            {
                ["from"] = unchecked((long)rotation.FromEpoch),
                ["signers"] = new BsonArray(rotation.Signers.Select(m => new BsonValue(m))),
                ["r"] = rotation.R,
                ["z"] = rotation.Z,
                ["signedAtMs"] = unchecked((long)rotation.SignedAtMs),
                ["raftIndex"] = rotation.RaftIndex,
            }
            : BsonValue.Null,
    };

    private static KeyRotationProof RotationOf(BsonDocument d) => new(
        unchecked((ulong)d["from"].AsInt64), [.. d["signers"].AsArray.Select(v => v.AsInt32)], d["r"].AsBinary, d["z"].AsBinary, unchecked((ulong)d["signedAtMs"].AsInt64),
        d["raftIndex"].AsInt64);

    /// <inheritdoc/>
    public void Dispose()
    {
        txIndex.Dispose();
        lock (writer)
            liteDb.Dispose();
        history.Dispose();
    }

    private StoreCheckpoint ReadCheckpointDocument()
    {
        var document = meta.FindById(CheckpointId);
        if (document is null)
            return StoreCheckpoint.Empty;
        return new StoreCheckpoint(
            document["appliedIndex"].AsInt64,
            document["appliedTerm"].AsInt64,
            (ulong)document["lastHeight"].AsInt64,
            document["snapshotIndex"].AsInt64,
            document["snapshotTerm"].AsInt64,
            (ulong)document["snapshotHeight"].AsInt64,
            document.TryGetValue("signedWatermark", out var watermark) ? (ulong)watermark.AsInt64 : 0);
    }

    private static BsonDocument ToDocument(StoreCheckpoint value) => new()
    {
        ["_id"] = CheckpointId,
        ["appliedIndex"] = value.AppliedIndex,
        ["appliedTerm"] = value.AppliedTerm,
        ["lastHeight"] = (long)value.LastHeight,
        ["snapshotIndex"] = value.SnapshotIndex,
        ["snapshotTerm"] = value.SnapshotTerm,
        ["snapshotHeight"] = (long)value.SnapshotHeight,
        ["signedWatermark"] = (long)value.SignedWatermark,
    };

    private static BsonDocument ToDocument(StoredBatch batch)
    {
        var header = batch.Header;
        var hashes = new byte[batch.TxHashes.Length * Hash32.Length];
        for (var i = 0; i < batch.TxHashes.Length; i++)
            batch.TxHashes[i].CopyTo(hashes.AsSpan(i * Hash32.Length));
        var received = new byte[batch.ReceivedMs.Length * 8];
        for (var i = 0; i < batch.ReceivedMs.Length; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(received.AsSpan(i * 8), batch.ReceivedMs[i]);
        return new BsonDocument
        {
            ["_id"] = (long)header.Height,
            ["chainId"] = unchecked((long)header.ChainId),
            ["keyEpoch"] = unchecked((long)header.KeyEpoch),
            ["term"] = unchecked((long)header.Term),
            ["parentHash"] = header.ParentHash.ToArray(),
            ["historyRoot"] = header.HistoryRoot.ToArray(),
            ["txRoot"] = header.TxRoot.ToArray(),
            ["txCount"] = (long)header.TxCount,
            ["timestampMs"] = unchecked((long)header.TimestampMs),
            ["commitment"] = header.Commitment.ToArray(),
            ["txHashes"] = hashes,
            ["receivedMs"] = received,
            ["raftIndex"] = batch.RaftIndex,
            ["orderedAtMs"] = unchecked((long)batch.OrderedAtMs),
            ["accounts"] = batch.TxAccounts,
            ["pruned"] = batch.Pruned,
        };
    }

    // Each sender's state after these batches (the last of its txs wins), in the batch transaction.
    private void WriteAccounts(IReadOnlyList<StoredBatch> batches)
    {
        var last = new Dictionary<SenderId, AccountState>();
        foreach (var batch in batches)
        {
            for (var i = 0; i < batch.TxAccounts.Length / TxAccount.EncodedLength; i++)
            {
                var account = batch.AccountAt(i)!.Value;
                last[account.Sender] = new AccountState(account.Nonce + 1, batch.HashAt(i), batch.Header.Height);
            }
        }

        foreach (var (sender, state) in last)
        {
            accountCollection.Upsert(new BsonDocument
            {
                ["_id"] = sender.ToBytes(),
                ["next"] = unchecked((long)state.NextNonce),
                ["lastTx"] = state.LastTx.ToArray(),
                ["height"] = unchecked((long)state.LastHeight),
            });
        }
    }

    /// <inheritdoc/>
    public AccountState? ReadAccount(SenderId sender)
    {
        BsonDocument? document;
        lock (writer)
            document = accountCollection.FindById(sender.ToBytes());
        return document is null ? null
            : new AccountState(unchecked((ulong)document["next"].AsInt64), new Hash32(document["lastTx"].AsBinary), unchecked((ulong)document["height"].AsInt64));
    }

    /// <inheritdoc/>
    public (ulong ChainId, ValidationMode Mode)? ReadGenesis()
    {
        BsonDocument? document;
        lock (writer)
            document = meta.FindById(GenesisId);
        return document is null ? null : (unchecked((ulong)document["chainId"].AsInt64), (ValidationMode)document["mode"].AsInt32);
    }

    /// <inheritdoc/>
    public void WriteGenesis(ulong chainId, ValidationMode mode)
    {
        lock (writer)
        {
            try
            {
                meta.Upsert(new BsonDocument { ["_id"] = GenesisId, ["chainId"] = unchecked((long)chainId), ["mode"] = (int)mode });
                SyncCommitted();
            }
            catch (LiteException e)
            {
                throw new IOException($"store write failed: {e.Message}", e);
            }
        }
    }

    private static StoredBatch FromDocument(BsonDocument document)
    {
        var hashesBlock = document["txHashes"].AsBinary;
        var count = (uint)document["txCount"].AsInt64;
        var pruned = document.TryGetValue("pruned", out var prunedValue) && prunedValue.IsBoolean && prunedValue.AsBoolean;
        var stored = pruned ? 0 : count;
        Invariant.Check(hashesBlock.Length == stored * Hash32.Length, "a stored batch has one hash per tx, or none when pruned");
        var hashes = new Hash32[stored];
        for (var i = 0; i < hashes.Length; i++)
            hashes[i] = new Hash32(hashesBlock.AsSpan(i * Hash32.Length, Hash32.Length));
        var receivedBlock = document["receivedMs"].AsBinary;
        Invariant.Check(receivedBlock.Length == stored * 8, "a stored batch has one receive time per tx, or none when pruned");
        var received = new ulong[stored];
        for (var i = 0; i < received.Length; i++)
            received[i] = BinaryPrimitives.ReadUInt64LittleEndian(receivedBlock.AsSpan(i * 8));

        var header = new BatchHeader(
            unchecked((ulong)document["chainId"].AsInt64),
            unchecked((ulong)document["keyEpoch"].AsInt64),
            (ulong)document["_id"].AsInt64,
            unchecked((ulong)document["term"].AsInt64),
            new Hash32(document["parentHash"].AsBinary),
            document.TryGetValue("historyRoot", out var historyRoot) ? new Hash32(historyRoot.AsBinary)
                : throw new DataFormatException($"stored batch {document["_id"].AsInt64} is a v1 header without a history root"),
            new Hash32(document["txRoot"].AsBinary),
            count,
            unchecked((ulong)document["timestampMs"].AsInt64));
        // Check data read back: the stored commitment must match the recomputed one, or the file is corrupt.
        Invariant.Check(header.Commitment == new Hash32(document["commitment"].AsBinary), $"stored batch {header.Height}: commitment matches its header");
        return new StoredBatch
        {
            Header = header,
            TxHashes = hashes,
            ReceivedMs = received,
            RaftIndex = document["raftIndex"].AsInt64,
            OrderedAtMs = unchecked((ulong)document["orderedAtMs"].AsInt64),
            TxAccounts = document.TryGetValue("accounts", out var accounts) && accounts.IsBinary ? accounts.AsBinary : [],
            Pruned = pruned,
        };
    }
}

/// <summary>The store could not make a commit durable (a failed fsync): the node must stop, not retry.</summary>
public sealed class StoreDurabilityException : Exception
{
    /// <summary>Creates the exception.</summary>
    public StoreDurabilityException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
