using System.Buffers;
using System.Collections.Immutable;
using DotNext.IO;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Raft;

public sealed partial class AppliedState
{
    /// <summary>Batches per store transaction while installing a snapshot.</summary>
    private const int InstallGroupBatches = 512;

#if SEQUENCER_TEST_FAULTS
    private static int slowInstallOnce = 1;
#endif

    /// <summary>
    /// Replaces the state with the snapshot in <paramref name="input"/>, which covers Raft entries up to
    /// <paramref name="index"/>. The local state must be a prefix of it (Raft guarantees that committed entries are
    /// the same everywhere); every overlapping batch is compared and a mismatch stops the node.
    /// </summary>
    /// <exception cref="LogFormatException">The stream is corrupt, truncated or of another chain.</exception>
    public async Task InstallSnapshotAsync(Stream input, long index, long term, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(input);
        await storeWriter.WaitAsync(token).ConfigureAwait(false);
        try
        {
            while (PersistOnce(int.MaxValue))
            {
            }

            InstallLocked(input, index, term);
            lock (gate)
                storeFault = null;
#if SEQUENCER_TEST_FAULTS
            // The first install of a process is the long one (a follower that was down catching up on everything);
            // a repeat that adds a few batches is quick, as it is for real.
            if (TestFaults.SlowInstallMs > 0)
                await Task.Delay(Interlocked.Exchange(ref slowInstallOnce, 0) * TestFaults.SlowInstallMs, CancellationToken.None).ConfigureAwait(false);
#endif
        }
        finally
        {
            storeWriter.Release();
        }
    }

    private void InstallLocked(Stream input, long index, long term)
    {
        Span<byte> magic = stackalloc byte[SnapshotFormat.Magic.Length];
        if (input.ReadAtLeast(magic, magic.Length, throwOnEndOfStream: false) != magic.Length || !magic.SequenceEqual(SnapshotFormat.Magic))
            throw new LogFormatException("not a snapshot stream of this format (bad magic)");
        if (SnapshotFormat.ReadRecord(input) is not SnapshotHeader header)
            throw new LogFormatException("snapshot stream does not start with a header");
        if (header.Index != index || header.Term != term)
            throw new LogFormatException($"snapshot header names index {header.Index} term {header.Term}, the log entry {index} term {term}");
        if (header.ChainId != chain.ChainId)
        {
            // A node with no chain of its own yet cannot tell who is misconfigured, and stops; one whose store is of its
            // configured chain refuses the snapshot and stays (the leader that sent it is the odd one).
            if (StoredChainId is null)
                ForeignChain?.Invoke(header.ChainId);
            throw new LogFormatException($"snapshot is of chain {header.ChainId}, this node sequences chain {chain.ChainId}: the members are misconfigured");
        }

        InstallGenesis(header.ValidationMode);

        BatchHeader? previous;
        StoreCheckpoint checkpoint;
        lock (gate)
        {
            previous = null;
            checkpoint = durable;
            // At or ahead of the applied state. Equal happens when a node was stopped part-way through installing this
            // very snapshot (its store then claims the entries of the last group it stored) and is sent it again: the
            // install is idempotent, comparing what it has and storing the rest.
            Invariant.Check(index >= appliedIndex, "a snapshot installs only at or ahead of the applied state");
        }

        var localHeight = checkpoint.LastHeight;
        var historyCheck = new MerkleFrontier();
        var fromHeight = header.FromHeight;
        if (fromHeight > 0)
        {
            // A delta snapshot: it starts above a batch this node must store, and continues this node's own chain.
            if (header.FromCommitment is not { Length: 32 } fromCommitment)
                throw new LogFormatException("delta snapshot names no base commitment");
            if (fromHeight > localHeight)
                throw new LogFormatException($"delta snapshot starts above height {fromHeight}, but this node stores only up to {localHeight}");
            if (GetBatch(fromHeight) is not { } own || own.Header.Commitment != new Hash32(fromCommitment))
                throw new LogFormatException($"delta snapshot's base at height {fromHeight} is not this node's batch there");
            previous = own.Header;
            historyCheck = MerkleFrontier.Load(history, fromHeight);
        }

        var group = new List<StoredBatch>(InstallGroupBatches);
        var signing = new InstalledSigning();
        var began = System.Diagnostics.Stopwatch.GetTimestamp();
        long poolReflects = 0;
        var count = fromHeight;
        SnapshotTrailer? trailer = null;
        var wholeSeen = false;
        while (true)
        {
            var reading = System.Diagnostics.Stopwatch.GetTimestamp();
            var record = SnapshotFormat.ReadRecord(input);
            signing.ReadTicks += System.Diagnostics.Stopwatch.GetTimestamp() - reading;
            if (record is null)
                break;
            if (record is SnapshotTrailer end)
            {
                trailer = end;
                break;
            }

            if (record is SnapshotCommitments commitmentRecord)
            {
                if (count > fromHeight || commitmentRecord.Sequences.Length != commitmentRecord.Values.Length || commitmentRecord.Values.Length > SigningLedger.MaxCommitmentsPerSigner
                    || commitmentRecord.Values.Any(v => v is not { Length: 2 * Threshold.Secp256k1.ElementLength }))
                    throw new LogFormatException("snapshot commitments record is malformed or misplaced");
                signing.Pool ??= new PoolChanges();
                for (var i = 0; i < commitmentRecord.Sequences.Length; i++)
                    signing.Pool.Added[(commitmentRecord.Signer, commitmentRecord.Sequences[i])] = commitmentRecord.Values[i];
                signing.Pool.Next[commitmentRecord.Signer] = commitmentRecord.Next;
                poolReflects = Math.Max(poolReflects, commitmentRecord.ReflectsIndex);
                continue;
            }

            if (record is SnapshotDkgEntry dkgRecord)
            {
                if (count > fromHeight || dkgRecord.Entry.Length == 0 || signing.Dkg.Count >= SnapshotDkgEntry.MaxEntries)
                    throw new LogFormatException("snapshot DKG entry is malformed or misplaced");
                signing.Dkg.Add(dkgRecord.Entry);
                continue;
            }

            if (record is SnapshotKeyEpoch epochRecord)
            {
                if (count > fromHeight)
                    throw new LogFormatException("snapshot key epoch record after a batch");
                InstallKeyEpoch(SnapshotFormat.FromRecord(epochRecord), index, signing);
                continue;
            }

            if (record is not SnapshotBatch batchRecord)
                throw new LogFormatException($"unexpected snapshot record {record.GetType().Name}");
            var decoding = System.Diagnostics.Stopwatch.GetTimestamp();
            var batch = SnapshotFormat.FromRecord(batchRecord);
            signing.ReadTicks += System.Diagnostics.Stopwatch.GetTimestamp() - decoding;
            // Only an ethereum chain may prune (its nonce rule refuses an old tx again without the tx index), and
            // what a node pruned is always a prefix of its chain.
            if (batch.Pruned && (header.ValidationMode != (byte)Sequencer.Core.Validation.ValidationMode.Ethereum || wholeSeen))
                throw new LogFormatException($"snapshot batch {batch.Header.Height} is pruned, which only a prefix of an ethereum chain's batches may be");
            wholeSeen |= !batch.Pruned;
            count++;
            if (batch.Header.Height != (previous?.Height ?? 0) + 1 || batch.Header.ParentHash != (previous?.Commitment ?? Hash32.Zero))
                throw new LogFormatException($"snapshot batch {batch.Header.Height} does not continue the chain");
            if (batch.Header.HistoryRoot != historyCheck.Root)
                throw new LogFormatException($"snapshot batch {batch.Header.Height}: the history root is not the root over the commitments before it");
            historyCheck.Append(batch.Header.Commitment);
            if (SnapshotFormat.SignatureOf(batchRecord) is { } signature)
                signing.Pending.Add((batch.Header, signature));
            if (batch.Header.Height <= localHeight)
            {
                var local = GetBatch(batch.Header.Height);
                Invariant.Check(local is not null && local.Header.Equals(batch.Header),
                    $"the local batch {batch.Header.Height} equals the leader's snapshot (committed entries never differ)");
            }
            else
            {
                // Pruned batches form a prefix of every stored chain, and the leader pruned past this node's own tip (a
                // delta snapshot, or the whole history over a shorter chain of this node's): the batches this node
                // stores below that one are pruned first, as its own retention would. They are before any batch of the
                // group (the stream's pruned batches come first), so the group is empty here.
                if (batch.Pruned && store.PrunedHeight < localHeight)
                    PruneStoredBeforeInstall(localHeight, group.Count);
                group.Add(batch);
            }

            if (group.Count + signing.Pending.Count + signing.Signatures.Count >= InstallGroupBatches)
            {
                InstallPendingHeads(signing);
                checkpoint = AppendInstalled(group, signing, checkpoint);
            }
            previous = batch.Header;
        }

        if (trailer is null)
            throw new LogFormatException("snapshot stream ended without its trailer");
        if (trailer.BatchCount != count - fromHeight || count != header.LastHeight)
            throw new LogFormatException($"snapshot trailer counts {trailer.BatchCount} batches, the stream held {count - fromHeight} above height {fromHeight}, the header named {header.LastHeight}");
        if (new Hash32(trailer.LastCommitment) != (previous?.Commitment ?? Hash32.Zero))
            throw new LogFormatException("snapshot trailer names another last commitment");
        if (header.LastHeight < localHeight)
            throw new LogFormatException($"snapshot ends at height {header.LastHeight}, below the local height {localHeight}");

        InstallPendingHeads(signing);
        checkpoint = AppendInstalled(group, signing, checkpoint);
        var point = new SnapshotPoint(index, term, header.LastHeight);
        ulong watermark;
        lock (gate)
            watermark = ledger.SignedThrough;

        var final = new StoreCheckpoint(index, term, header.LastHeight, index, term, header.LastHeight, Math.Max(checkpoint.SignedWatermark, watermark));
        // The commitment pool is replaced by the snapshot's (which may run a little ahead of its index: replaying the
        // entries after it changes nothing, publications and uses of commitments are idempotent, and the ledger takes
        // those up to the index the pool reflects as redundant rather than ignored).
        var pool = signing.Pool ?? new PoolChanges();
        var added = pool.Added.Select(a => new StoredCommitment(a.Key.Signer, a.Key.Sequence, a.Value)).ToList();
        // The key generation in progress is replaced by the one at the snapshot's point (none when it carries no DKG
        // entry): the entries after the point go on with it. Each entry must decode before anything is stored.
        ImmutableList<byte[]> dkg = [.. signing.Dkg];
        foreach (var entry in dkg)
        {
            if (LogCommandCodec.Decode(new ReadOnlySequence<byte>(entry)) is not (DkgStartCommand or IDkgMessage))
                throw new LogFormatException("snapshot DKG entry is not a DKG entry");
        }

        InstallWrite(index, () => store.Append([], final, new SigningWrites([], [], ClearCommitments: true, added, [], pool.Next, dkg, ClearDkg: true, SnapshotDkg: dkg)));
        lock (gate)
        {
            ledger.LoadPool(new CommitmentPool(added, pool.Next) { ReflectsIndex = poolReflects });
            ledger.ReplaceDkg(dkg);
            dkgApplied = dkg;
            durable = final;
            appliedIndex = index;
            appliedTerm = term;
            lastApplyAt = time.GetTimestamp();
            history.Reload(header.LastHeight);
            ResetAccountsLocked();
            ClearSnapshotCandidatesLocked();
            snapshot = new BatchSnapshot(this, point, dkg);
        }

        LogInstalled(logger, index, term, header.LastHeight, localHeight, fromHeight, count - fromHeight, Ms(System.Diagnostics.Stopwatch.GetTimestamp() - began),
            Ms(signing.ReadTicks), signing.Verified, Ms(signing.VerifyTicks), Ms(signing.StoreTicks), Ms(signing.IndexTicks), Ms(signing.EventTicks));
    }

    // A store write of an install. When the disk fails under it (full, read-only, gone), DotNext logs the failed request
    // and the leader sends the snapshot again: without a mark the node would retry for ever while it reported itself
    // ready. Readiness names the fault until a store write succeeds (a later install, or the persister's next group).
    private void InstallWrite(long index, Action write) => InstallWrite(index, () =>
    {
        write();
        return 0;
    });

    private T InstallWrite<T>(long index, Func<T> write)
    {
        try
        {
            return write();
        }
        catch (IOException e)
        {
            lock (gate)
                storeFault = e.Message;
            LogInstallStoreFailed(logger, e, index);
            throw;
        }
    }

    // Prunes this node's stored batches through `height`, a step at a time (each step is one store transaction).
    private void PruneStoredBeforeInstall(ulong height, int grouped)
    {
        Invariant.Check(grouped == 0, "a snapshot's pruned batches come before any batch it adds");
        while (store.PrunedHeight < height)
        {
            var before = store.PrunedHeight;
            if (InstallWrite(index: 0, () => store.Prune(height, InstallGroupBatches)) <= before)
                break;
        }

        Invariant.Check(store.PrunedHeight >= height, $"the stored batches through height {height} are pruned before a pruned batch above them is installed");
    }

    private StoreCheckpoint AppendInstalled(List<StoredBatch> group, InstalledSigning signing, StoreCheckpoint checkpoint)
    {
        if (group.Count == 0 && signing.Signatures.Count == 0 && signing.KeyEpochs.Count == 0)
            return checkpoint;

        // Until the final checkpoint, the store claims exactly the entries up to the last installed batch, so a
        // crash in the middle leaves a consistent prefix and the leader sends the snapshot again.
        var next = checkpoint;
        if (group.Count > 0)
        {
            var last = group[^1];
            next = checkpoint with { AppliedIndex = last.RaftIndex, AppliedTerm = (long)last.Header.Term, LastHeight = last.Header.Height };
        }

        var writing = System.Diagnostics.Stopwatch.GetTimestamp();
        InstallWrite(next.AppliedIndex, () => store.Append(group, next, new SigningWrites([.. signing.Signatures], [.. signing.KeyEpochs])));
        signing.StoreTicks += System.Diagnostics.Stopwatch.GetTimestamp() - writing;

        var indexing = System.Diagnostics.Stopwatch.GetTimestamp();
        lock (gate)
        {
            // The store holds the group now: the recent tx index may let go of anything up to it.
            durable = next;
            // A large group (a follower catching up) is not put in the recent tx index: each of its txs would be
            // inserted and, the window being full in steady state, another evicted (a probe and a removal each), and a
            // long install would push most of them out again itself. The store holds the group, so the window
            // restarts above it and lookups of these txs go to the store, as they do for every evicted one.
            var skipIndex = group.Count > 0 && group.Sum(b => (long)b.TxHashes.Length) > txIndex.Capacity / 4;
            if (skipIndex)
                txIndex.Restart(group[^1].Header.Height);
            foreach (var batch in group)
            {
                recent.Add(batch, durable.LastHeight);
                if (!skipIndex)
                    AddToTxIndexLocked(batch);
                storedTxs += batch.TxHashes.Length;
            }

            if (group.Count > 0)
            {
                lastHeader = group[^1].Header;
                // Readers see these batches (and the heads below) from now on, so the history tree that proves them
                // must cover them too: the API serves coverage proofs while a long install is still going on.
                history.Reload(lastHeader.Height);
            }

            foreach (var head in signing.Signatures)
                recentHeads[head.Height] = head;

            // The store holds every head up to the highest of this group now (this group's and the snapshot's earlier
            // ones), so memory keeps only the newest: an install of a long chain would otherwise hold all its heads.
            TrimRecentHeadsLocked(signing.Signatures.Count > 0 ? signing.Signatures.Max(h => h.Height) : 0);
        }

        var raising = System.Diagnostics.Stopwatch.GetTimestamp();
        signing.IndexTicks += raising - indexing;
        foreach (var head in signing.Signatures)
            HeadSigned?.Invoke(new HeadSignedEvent(head, 1));
        signing.Signatures.Clear();
        signing.KeyEpochs.Clear();

        foreach (var batch in group)
        {
            var outcomes = new TxOutcome[batch.TxHashes.Length];
            for (var i = 0; i < outcomes.Length; i++)
                outcomes[i] = new TxOutcome(batch.TxHashes[i], new TxPosition(batch.Header.Height, i), Duplicate: false);
            Applied?.Invoke(new AppliedEvent(batch, outcomes));
        }

        signing.EventTicks += System.Diagnostics.Stopwatch.GetTimestamp() - raising;
        group.Clear();
        return next;
    }

    /// <summary>
    /// Where a delta snapshot sent to this node may start (what it answers the leader, see <see cref="SnapshotBase"/>):
    /// its applied height, or, while a key epoch is in force, its signed height if that is lower. A delta carries the
    /// signed heads of the batches it streams only, and a head above this node's signed height may have been signed in
    /// an entry this node never got.
    /// </summary>
    public SnapshotBase DeltaBase
    {
        get
        {
            var height = LastHeader?.Height ?? 0;
            if (CurrentKeyEpoch is not null)
                height = Math.Min(height, SignedThrough);
            return height == 0 ? new SnapshotBase(0, Hash32.Zero) : new SnapshotBase(height, GetBatch(height)?.Header.Commitment ?? Hash32.Zero);
        }
    }

    /// <summary>Delta snapshots streamed (from a follower's tip rather than height 1).</summary>
    public long DeltaSnapshotsSent => Interlocked.Read(ref deltaSnapshotsSent);

    private long deltaSnapshotsSent;

    /// <summary>
    /// Streams the snapshot at <paramref name="point"/>: every stored batch up to its height, or only those above
    /// <paramref name="from"/> when that is one of this node's batches at or below the point (a delta snapshot).
    /// </summary>
    internal async ValueTask WriteSnapshotAsync<TWriter>(SnapshotPoint point, IReadOnlyList<byte[]> dkg, TWriter writer, SnapshotBase? from, CancellationToken token)
        where TWriter : IAsyncBinaryWriter
    {
        var began = System.Diagnostics.Stopwatch.GetTimestamp();
        var buffer = new ArrayBufferWriter<byte>(256 * 1024);
        buffer.Write(SnapshotFormat.Magic);
        byte? mode;
        lock (gate)
            mode = genesis is { } known ? (byte)known.Mode : null;
        ulong fromHeight = 0;
        var last = Hash32.Zero;
        if (from is { Height: > 0 } tip && tip.Height <= point.Height && GetBatch(tip.Height)?.Header.Commitment == tip.Commitment)
        {
            fromHeight = tip.Height;
            last = tip.Commitment;
            Interlocked.Increment(ref deltaSnapshotsSent);
        }

        SnapshotFormat.WriteRecord(new SnapshotHeader
        {
            Index = point.Index,
            Term = point.Term,
            LastHeight = point.Height,
            ChainId = chain.ChainId,
            ValidationMode = mode,
            FromHeight = fromHeight,
            FromCommitment = fromHeight > 0 ? last.ToArray() : null,
        }, buffer);
        foreach (var epoch in store.ReadKeyEpochs())
        {
            // An epoch handed over to after the snapshot's point was still pending at it.
            if (epoch.RaftIndex <= point.Index)
                SnapshotFormat.WriteRecord(SnapshotFormat.ToRecord(epoch.InForceFrom <= point.Index ? epoch : epoch with { Pending = true, Rotation = null }), buffer);
        }

        foreach (var entry in dkg)
            SnapshotFormat.WriteRecord(new SnapshotDkgEntry { Entry = entry }, buffer);

        var pool = CommitmentPoolSnapshot();
        foreach (var group in pool.Commitments.GroupBy(c => c.Signer).Select(g => g.Key).Union(pool.NextSequences.Keys).Distinct().Order())
        {
            var mine = pool.Commitments.Where(c => c.Signer == group).OrderBy(c => c.Sequence).ToList();
            SnapshotFormat.WriteRecord(new SnapshotCommitments
            {
                Signer = group,
                Next = pool.NextSequences.GetValueOrDefault(group, 1UL),
                Sequences = [.. mine.Select(c => c.Sequence)],
                Values = [.. mine.Select(c => c.Value)],
                ReflectsIndex = pool.ReflectsIndex,
            }, buffer);
        }

        ulong count = 0;
        foreach (var batch in store.Scan(fromHeight + 1, point.Height))
        {
            SnapshotFormat.WriteRecord(SnapshotFormat.ToRecord(batch, store.GetHead(batch.Header.Height)), buffer);
            count++;
            last = batch.Header.Commitment;
            if (buffer.WrittenCount >= 192 * 1024)
            {
                await writer.WriteAsync(buffer.WrittenMemory, null, token).ConfigureAwait(false);
                buffer.ResetWrittenCount();
            }
        }

        Invariant.Check(fromHeight + count == point.Height, $"the store holds every batch of the snapshot at height {point.Height}");
        SnapshotFormat.WriteRecord(new SnapshotTrailer { BatchCount = count, LastCommitment = last.ToArray() }, buffer);
        await writer.WriteAsync(buffer.WrittenMemory, null, token).ConfigureAwait(false);
        LogStreamed(logger, point.Index, point.Height, fromHeight, count, Ms(System.Diagnostics.Stopwatch.GetTimestamp() - began));
    }

    /// <summary>Accepts a key epoch of the snapshot: a known one must match, the next one must be valid.</summary>
    private void InstallKeyEpoch(StoredKeyEpoch epoch, long snapshotIndex, InstalledSigning signing)
    {
        if (epoch.RaftIndex > snapshotIndex)
            throw new LogFormatException($"snapshot key epoch {epoch.Epoch} was established after the snapshot's index");
        bool known;
        string? problem;
        lock (gate)
        {
            known = ledger.KeyEpochs.Any(k => k.Epoch == epoch.Epoch);
            problem = ledger.InstallKeyEpoch(epoch);
        }

        if (problem is not null)
            throw new LogFormatException($"snapshot key epoch {epoch.Epoch}: {problem}");
        if (!known)
        {
            signing.KeyEpochs.Add(epoch);
            // A key epoch this node learns from a snapshot counts as new (it holds a rotation back, never hurries one).
            Interlocked.Exchange(ref keyEpochSeenAt, time.GetTimestamp());
        }
    }

    /// <summary>
    /// Accepts the signed heads read since the last store write, in stream order, after verifying them (INV-SIGVALID
    /// holds for installed heads too): their Schnorr equations are checked as one batch, and only when the batch fails
    /// is each checked alone, which names the head at fault. A batch check costs about a third of the single checks
    /// (one shared chain of doublings), and a long install verifies thousands of heads.
    /// </summary>
    private void InstallPendingHeads(InstalledSigning signing)
    {
        if (signing.Pending.Count == 0)
            return;
        var verifying = System.Diagnostics.Stopwatch.GetTimestamp();
        var equations = new List<(byte[] Message, FrostSignature Signature, Org.BouncyCastle.Math.EC.ECPoint PublicKey)>(signing.Pending.Count);
        lock (gate)
        {
            foreach (var (header, head) in signing.Pending)
            {
                if (ledger.EquationFor(header, head) is { } equation)
                    equations.Add(equation);
            }
        }

        var verified = Frost.VerifyBatch(equations);
        foreach (var (header, head) in signing.Pending)
            InstallSignature(header, head, signing, verified);
        signing.Pending.Clear();
        signing.VerifyTicks += System.Diagnostics.Stopwatch.GetTimestamp() - verifying;
    }

    /// <summary>Accepts a signed head from the snapshot after verifying it, unless its equation was verified in a batch.</summary>
    private void InstallSignature(BatchHeader header, SignedHead head, InstalledSigning signing, bool equationVerified)
    {
        string? problem;
        bool newer;
        lock (gate)
        {
            newer = head.Height > ledger.SignedThrough;
            problem = ledger.InstallHead(header, head, equationVerified);
        }

        if (problem is not null)
            throw new LogFormatException($"snapshot head {header.Height}: {problem}");
        if (newer)
        {
            signing.Signatures.Add(head);
            signing.Verified++;
        }
    }

    private static long Ms(long stopwatchTicks) => stopwatchTicks * 1000 / System.Diagnostics.Stopwatch.Frequency;

    /// <summary>Signing records read from a snapshot and not yet stored.</summary>
    private sealed class InstalledSigning
    {
        public List<SignedHead> Signatures { get; } = [];

        public List<StoredKeyEpoch> KeyEpochs { get; } = [];

        public PoolChanges? Pool { get; set; }

        /// <summary>The entries of the key generation in progress at the snapshot's point, in log order.</summary>
        public List<byte[]> Dkg { get; } = [];

        /// <summary>Heads read and not yet verified (<see cref="InstallPendingHeads"/>), in stream order.</summary>
        public List<(BatchHeader Header, SignedHead Head)> Pending { get; } = [];

        // What the install spent, for its log line: heads verified, and stopwatch ticks reading and decoding the
        // stream, verifying the heads, writing the store, updating the in-memory indexes (recent batches, tx index,
        // history tree, heads) and raising the applied events.
        public long Verified { get; set; }

        public long ReadTicks { get; set; }

        public long IndexTicks { get; set; }

        public long VerifyTicks { get; set; }

        public long StoreTicks { get; set; }

        public long EventTicks { get; set; }
    }

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "Installed a snapshot at index {Index} term {Term}: height {Height} (was {PreviousHeight}; streamed from height {FromHeight}, {Batches} batches) in {ElapsedMs} ms: reading and decoding {ReadMs} ms, {Heads} heads verified in {VerifyMs} ms, store writes {StoreMs} ms, in-memory indexes {IndexMs} ms, applied events {EventMs} ms")]
    private static partial void LogInstalled(ILogger logger, long index, long term, ulong height, ulong previousHeight, ulong fromHeight, ulong batches, long elapsedMs, long readMs, long heads, long verifyMs, long storeMs, long indexMs, long eventMs);

    [LoggerMessage(EventId = 107, Level = LogLevel.Error, Message = "Writing a snapshot install to the store failed (through Raft index {Index}; 0: a pruning step): the node reports itself not ready until a store write succeeds, and takes the snapshot again when the leader resends it")]
    private static partial void LogInstallStoreFailed(ILogger logger, Exception exception, long index);

    [LoggerMessage(EventId = 105, Level = LogLevel.Information, Message = "Streamed the snapshot at index {Index} (height {Height}) from height {FromHeight}, {Batches} batches, in {ElapsedMs} ms")]
    private static partial void LogStreamed(ILogger logger, long index, ulong height, ulong fromHeight, ulong batches, long elapsedMs);
}

/// <summary>
/// The snapshot DotNext sees: a point (index, term, height) and a stream of the stored batches up to it. Stored
/// batches never change, so a snapshot stays readable while newer batches are appended.
/// </summary>
internal sealed class BatchSnapshot(AppliedState owner, SnapshotPoint point, ImmutableList<byte[]> dkg) : ISnapshot
{
    public SnapshotPoint Point => point;

    /// <summary>The entries of the key generation in progress at the point (empty when none was).</summary>
    public ImmutableList<byte[]> Dkg => dkg;

    public long Index => point.Index;

    public long Term => point.Term;

    public bool IsReusable => true;

    public long? Length => null;

    public async ValueTask WriteToAsync<TWriter>(TWriter writer, CancellationToken token)
        where TWriter : IAsyncBinaryWriter
    {
        using var transfer = owner.Transfers.Begin(point.Index);
        await owner.WriteSnapshotAsync(point, dkg, writer, SnapshotBase.Current, token).ConfigureAwait(false);
        transfer.Completed();
    }
}
