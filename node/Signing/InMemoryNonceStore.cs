using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>
/// The in-memory <see cref="INonceStore"/> for tests: the same contract as <see cref="NonceStore"/> (a taken nonce is
/// never handed out again), without durability. It has nothing to compact (<see cref="Uncompacted"/> is always 0), so
/// the bound of <see cref="INonceStore.MaxUncompacted"/> never refuses one of its takes.
/// </summary>
public sealed class InMemoryNonceStore : INonceStore
{
    private readonly Lock gate = new();
    private readonly SortedDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> nonces = [];
    private readonly HashSet<ulong> taken = [];
    private readonly List<RecordedNonceUse> uses = [];
    private ulong currentEpoch;
    private ulong next = 1;

    /// <inheritdoc/>
    public int Count
    {
        get
        {
            lock (gate)
                return nonces.Count;
        }
    }

    /// <summary>Always 0: a take here is final at once.</summary>
    public int Uncompacted => 0;

    /// <inheritdoc/>
    public IReadOnlySet<ulong> LostAtOpen { get; } = new HashSet<ulong>();

    /// <inheritdoc/>
    public ulong Epoch
    {
        get
        {
            lock (gate)
                return currentEpoch;
        }
    }

    /// <inheritdoc/>
    public ulong NextSequence(ulong epoch)
    {
        lock (gate)
            return epoch == currentEpoch ? next : 1;
    }

    /// <inheritdoc/>
    public IReadOnlyList<StoredNonceCommitment> Generate(ulong epoch, KeyShare share, ulong firstSequence, int count)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        lock (gate)
        {
            if (epoch != currentEpoch)
            {
                nonces.Clear();
                taken.Clear();
                currentEpoch = epoch;
                next = 1;
            }

            if (firstSequence < next)
                throw new InvalidOperationException($"sequence {firstSequence} was already generated (next is {next})");
            var result = new List<StoredNonceCommitment>(count);
            for (var i = 0; i < count; i++)
            {
                var (pair, commitment) = Frost.Commit(share.Identifier, share.Secret);
                var encoded = commitment.Encode();
                var sequence = firstSequence + (ulong)i;
                nonces[sequence] = (pair, encoded);
                result.Add(new StoredNonceCommitment(sequence, encoded));
            }

            next = firstSequence + (ulong)count;
            return result;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<StoredNonceCommitment> CommitmentsFrom(ulong fromSequence, int limit)
    {
        lock (gate)
            return [.. nonces.Where(n => n.Key >= fromSequence).Take(limit).Select(n => new StoredNonceCommitment(n.Key, n.Value.Commitment))];
    }

    /// <inheritdoc/>
    public IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyDictionary<ulong, NonceUse?> sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        var result = new Dictionary<ulong, (SigningNonces, byte[])>();
        lock (gate)
        {
            if (epoch != currentEpoch)
                return result;
            foreach (var (sequence, use) in sequences)
            {
                if (taken.Contains(sequence) || !nonces.Remove(sequence, out var pair))
                    continue;
                taken.Add(sequence);
                result[sequence] = pair;
                if (use is not null)
                    uses.Add(new RecordedNonceUse(epoch, sequence, pair.Commitment, use));
            }
        }

        return result;
    }

    /// <inheritdoc/>
    public IReadOnlyList<RecordedNonceUse> Uses(int skip, int limit)
    {
        lock (gate)
            return [.. uses.Skip(skip).Take(limit)];
    }

    /// <inheritdoc/>
    public int Prune(ulong belowSequence, Func<ulong, bool> keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        lock (gate)
        {
            var stale = nonces.Keys.Where(s => s < belowSequence && !keep(s)).ToList();
            foreach (var sequence in stale)
                nonces.Remove(sequence);
            return stale.Count;
        }
    }

    /// <inheritdoc/>
    public void Compact()
    {
    }

    /// <inheritdoc/>
    public void Dispose()
    {
    }
}
