using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Core.Storage;

/// <summary>The in-memory <see cref="IBatchStore"/> for tests; it follows the same contract as the LiteDB store.</summary>
public sealed class InMemoryBatchStore : IBatchStore
{
    private readonly List<StoredBatch> batches = [];
    private readonly Lock gate = new();
    private readonly SortedDictionary<ulong, SignedHead> signatures = [];
    private readonly List<StoredKeyEpoch> keyEpochs = [];
    private readonly SortedDictionary<(int, ulong), byte[]> commitments = [];
    private readonly Dictionary<int, ulong> nextSequences = [];
    private readonly List<byte[]> dkgEntries = [];
    private IReadOnlyList<byte[]> snapshotDkgEntries = [];
    private readonly InMemoryHistoryNodes history = new();
    private readonly Dictionary<UInt128, ulong> positions = [];
    private StoreCheckpoint checkpoint;
    private readonly Dictionary<Validation.SenderId, Validation.AccountState> accounts = [];
    private (ulong ChainId, Validation.ValidationMode Mode)? genesis;

    /// <summary>Makes the next <see cref="Append"/> throw, as a full disk would.</summary>
    public bool FailNextAppend { get; set; }

    /// <summary>When positive, the append that many calls from now throws, as a crash at that point would leave the store.</summary>
    public int FailAppendIn { get; set; }

    /// <summary>The next this many appends throw, whoever makes them (the persister or a flush), as a disk that stays full would.</summary>
    public int FailAppends
    {
        get
        {
            lock (gate)
                return failAppends;
        }
        set
        {
            lock (gate)
                failAppends = value;
        }
    }

    private int failAppends;

    /// <inheritdoc/>
    public StoreCheckpoint ReadCheckpoint()
    {
        lock (gate)
            return checkpoint;
    }

    /// <inheritdoc/>
    public void Append(IReadOnlyList<StoredBatch> batches, StoreCheckpoint checkpoint, SigningWrites? signing = null)
    {
        ArgumentNullException.ThrowIfNull(batches);
        lock (gate)
        {
            if (failAppends > 0)
            {
                failAppends--;
                throw new IOException("simulated: no space left on device");
            }

            if (FailNextAppend || (FailAppendIn > 0 && --FailAppendIn == 0))
            {
                FailNextAppend = false;
                throw new IOException("simulated: no space left on device");
            }

            var next = (ulong)this.batches.Count + 1;
            var pruned = prunedHeight;
            foreach (var batch in batches)
            {
                Invariant.Check(batch.Header.Height == next, "stored heights are contiguous");
                Invariant.Check(!batch.Pruned || batch.Header.Height == pruned + 1, "pruned batches form a prefix of the stored chain");
                if (batch.Pruned)
                    pruned = batch.Header.Height;
                next++;
            }

            Invariant.Check(checkpoint.LastHeight == next - 1, "the checkpoint names the last stored height");
            foreach (var batch in batches)
            {
                for (var i = 0; i < batch.TxAccounts.Length / Validation.TxAccount.EncodedLength; i++)
                {
                    var account = batch.AccountAt(i)!.Value;
                    accounts[account.Sender] = new Validation.AccountState(account.Nonce + 1, batch.HashAt(i), batch.Header.Height);
                }
            }

            var root = MerkleFrontier.Load(history, history.LeafCount);
            foreach (var batch in batches)
            {
                Invariant.Check(batch.Header.HistoryRoot == root.Root, $"batch {batch.Header.Height}: the history root is the root over the stored commitments below it");
                root.Append(batch.Header.Commitment);
            }

            Invariant.Check(checkpoint.AppliedIndex >= this.checkpoint.AppliedIndex, "the applied index never moves back");
            foreach (var epoch in signing?.KeyEpochs ?? [])
                epoch.CheckShape();
            this.batches.AddRange(batches);
            prunedHeight = pruned;
            foreach (var batch in batches)
            {
                history.Append(batch.Header.Commitment);
                for (var i = 0; i < batch.TxHashes.Length; i++)
                    Invariant.Check(positions.TryAdd(batch.TxHashes[i].Prefix128, new TxPosition(batch.Header.Height, i).Pack()), "a tx is stored once (INV-NODUP)");
            }
            foreach (var signature in signing?.Signatures ?? [])
                signatures.TryAdd(signature.Height, signature);
            foreach (var epoch in signing?.KeyEpochs ?? [])
            {
                // A pending epoch is replaced by the same epoch in force (with its rotation proof).
                keyEpochs.RemoveAll(k => k.Epoch == epoch.Epoch);
                keyEpochs.Add(epoch);
            }

            if (signing is not null)
            {
                if (signing.ClearCommitments)
                {
                    commitments.Clear();
                    nextSequences.Clear();
                }

                foreach (var key in signing.RemovedCommitments ?? [])
                    commitments.Remove(key);
                foreach (var added in signing.AddedCommitments ?? [])
                    commitments[(added.Signer, added.Sequence)] = added.Value;
                foreach (var (signer, sequence) in signing.NextSequences ?? new Dictionary<int, ulong>())
                    nextSequences[signer] = sequence;
                if (signing.ClearDkg)
                    dkgEntries.Clear();
                dkgEntries.AddRange(signing.DkgEntries ?? []);
                if (signing.SnapshotDkg is { } atPoint)
                    snapshotDkgEntries = [.. atPoint];
            }

            this.checkpoint = checkpoint;
        }
    }

    /// <inheritdoc/>
    public IHistoryNodes History => history;

    /// <inheritdoc/>
    public IReadOnlyList<byte[]> ReadDkgEntries()
    {
        lock (gate)
            return [.. dkgEntries];
    }

    /// <inheritdoc/>
    public IReadOnlyList<byte[]> ReadSnapshotDkgEntries()
    {
        lock (gate)
            return snapshotDkgEntries;
    }

    /// <inheritdoc/>
    public CommitmentPool ReadCommitments()
    {
        lock (gate)
            return new CommitmentPool([.. commitments.Select(c => new StoredCommitment(c.Key.Item1, c.Key.Item2, c.Value))], new Dictionary<int, ulong>(nextSequences));
    }

    /// <inheritdoc/>
    public StoredBatch? Get(ulong height)
    {
        lock (gate)
            return height >= 1 && height <= (ulong)batches.Count ? batches[(int)(height - 1)] : null;
    }

    /// <inheritdoc/>
    public IEnumerable<StoredBatch> Scan(ulong fromHeight, ulong toHeight)
    {
        for (var height = Math.Max(1, fromHeight); height <= toHeight; height++)
        {
            var batch = Get(height);
            if (batch is null)
                yield break;
            yield return batch;
        }
    }

    /// <inheritdoc/>
    public bool TryGetTxPosition(Hash32 hash, ulong maxHeight, out TxPosition position)
    {
        bool found;
        ulong packed;
        lock (gate)
            found = positions.TryGetValue(hash.Prefix128, out packed);
        position = found ? TxPosition.Unpack(packed) : default;
        return found;
    }

    /// <inheritdoc/>
    public ulong PrunedHeight
    {
        get
        {
            lock (gate)
                return prunedHeight;
        }
    }

    private ulong prunedHeight;

    /// <inheritdoc/>
    public ulong Prune(ulong throughHeight, int maxBatches)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatches, 1);
        lock (gate)
        {
            var last = Math.Min(Math.Min(throughHeight, (ulong)batches.Count), prunedHeight + (ulong)maxBatches);
            for (var height = prunedHeight + 1; height <= last; height++)
            {
                var batch = batches[(int)(height - 1)];
                foreach (var hash in batch.TxHashes)
                    positions.Remove(hash.Prefix128);
                batches[(int)(height - 1)] = batch.WithoutTxData();
            }

            prunedHeight = Math.Max(prunedHeight, last);
            return prunedHeight;
        }
    }

    /// <inheritdoc/>
    public long TxCount
    {
        get
        {
            lock (gate)
                return positions.Count;
        }
    }

    /// <inheritdoc/>
    public SignedHead? GetHead(ulong height)
    {
        lock (gate)
            return signatures.GetValueOrDefault(height);
    }

    /// <inheritdoc/>
    public SignedHead? CoveringHead(ulong height)
    {
        lock (gate)
            return signatures.Where(s => s.Key >= height).Select(s => s.Value).FirstOrDefault();
    }

    /// <inheritdoc/>
    public IReadOnlyList<SignedHead> Heads(ulong fromHeight, int limit)
    {
        lock (gate)
            return [.. signatures.Where(s => s.Key >= fromHeight).Take(limit).Select(s => s.Value)];
    }

    /// <inheritdoc/>
    public IReadOnlyList<StoredKeyEpoch> ReadKeyEpochs()
    {
        lock (gate)
            return [.. keyEpochs.OrderBy(k => k.Epoch)];
    }

    /// <inheritdoc/>
    public void Dispose()
    {
    }

    /// <inheritdoc/>
    public Validation.AccountState? ReadAccount(Validation.SenderId sender)
    {
        lock (gate)
            return accounts.TryGetValue(sender, out var state) ? state : null;
    }

    /// <inheritdoc/>
    public (ulong ChainId, Validation.ValidationMode Mode)? ReadGenesis()
    {
        lock (gate)
            return genesis;
    }

    /// <inheritdoc/>
    public void WriteGenesis(ulong chainId, Validation.ValidationMode mode)
    {
        lock (gate)
            genesis = (chainId, mode);
    }
}
