using Sequencer.Core.Hashing;

namespace Sequencer.Core.Ordering;

/// <summary>
/// The in-memory index of every ordered tx: the first 128 bits of its hash to its packed position.
/// </summary>
/// <remarks>
/// <para>
/// The store writes headers and tx hashes in grouped transactions, and a store lookup per tx measured far too slow
/// for the apply path (LiteDB: about 3k indexed inserts and 46k missed lookups per second here). So deduplication
/// and status lookups use this index, rebuilt from the stored batches at startup.
/// </para>
/// <para>
/// Keys are 128-bit hash prefixes (about 36 bytes of memory per tx). Two different txs share a prefix only if
/// someone spends about 2^64 keccak evaluations on a birthday search; finding one that matches somebody else's
/// tx takes a 2^128 second-preimage search. So a prefix match is treated as the same tx, which can only hurt the
/// author of both colliding txs, and the same rule on every node keeps apply deterministic. Readers that serve
/// a proof re-check the full hash against the stored batch.
/// </para>
/// <para>Thread safety: one writer (the apply loop) and any number of readers.</para>
/// </remarks>
public sealed class OrderedTxIndex : IOrderedTxLookup
{
    private readonly Dictionary<UInt128, ulong> positions;
    private readonly Lock gate = new();

    /// <summary>Creates an empty index with room for <paramref name="capacity"/> txs.</summary>
    public OrderedTxIndex(int capacity = 1024) => positions = new Dictionary<UInt128, ulong>(capacity);

    /// <summary>The number of ordered txs.</summary>
    public int Count
    {
        get
        {
            lock (gate)
                return positions.Count;
        }
    }

    /// <inheritdoc/>
    public bool TryGetPosition(Hash32 hash, out TxPosition position)
    {
        ulong packed;
        bool found;
        lock (gate)
            found = positions.TryGetValue(hash.Prefix128, out packed);
        position = found ? TxPosition.Unpack(packed) : default;
        return found;
    }

    /// <summary>Adds the txs of one applied batch. Each hash must be new.</summary>
    public void AddBatch(ulong height, ReadOnlySpan<Hash32> txHashes)
    {
        lock (gate)
        {
            for (var i = 0; i < txHashes.Length; i++)
            {
                var added = positions.TryAdd(txHashes[i].Prefix128, new TxPosition(height, i).Pack());
                Invariant.Check(added, "a tx is ordered twice (INV-NODUP)");
            }
        }
    }

    /// <summary>Removes every entry, before a snapshot replaces the state.</summary>
    public void Clear()
    {
        lock (gate)
            positions.Clear();
    }
}
