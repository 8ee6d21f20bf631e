using System.Numerics;
using Sequencer.Core.Hashing;

namespace Sequencer.Core.Ordering;

/// <summary>
/// The ordered txs of the most recent batches, in memory: the first 128 bits of each hash to its position, for at most
/// <see cref="Capacity"/> txs. Older txs are looked up in the store (<see cref="Storage.IBatchStore.TryGetTxPosition"/>).
/// </summary>
/// <remarks>
/// <para>
/// The window is a contiguous run of heights, <c>(<see cref="Floor"/>, <see cref="Top"/>]</c>: every batch in it is
/// indexed whole, and every height at or below the floor is not indexed here. The caller keeps every batch the store
/// does not hold yet inside the window (it only evicts stored batches), so "in the window, or stored at or below the
/// floor" is exact, and apply stays deterministic.
/// </para>
/// <para>
/// Memory is fixed at construction, about 32 bytes per tx of capacity: the keys and positions in insertion order
/// (a ring, evicted oldest batch first) and an open-addressing table of ring slots at a load of at most one half,
/// with linear probing and backward-shift deletion. Keys are 128-bit hash prefixes: two different txs share one only
/// after a 2^64 birthday search, which can only hurt the author of both, and the same rule on every node keeps apply
/// deterministic. Readers that serve a proof re-check the full hash against the stored batch.
/// </para>
/// <para>
/// The table's probe sequence starts from <see cref="HashCode"/>, which .NET seeds randomly per process, so that
/// nobody can grind tx hashes into one long probe chain. It only decides where a key sits in this process's table,
/// never what a lookup answers.
/// </para>
/// <para>Thread safety: one writer (the apply loop) and any number of readers.</para>
/// </remarks>
public sealed class RecentTxIndex
{
    private readonly UInt128[] keys;
    private readonly ulong[] positions;
    private readonly int[] table;
    private readonly int tableMask;
    private readonly Queue<(ulong Height, int Count)> batches = new();
    private readonly Lock gate = new();
    private long head;
    private long tail;
    private ulong floor;
    private ulong top;

    /// <summary>Creates an empty window that starts above <paramref name="floor"/>.</summary>
    /// <param name="capacity">The most txs indexed at once.</param>
    /// <param name="floor">Every height at or below it is not indexed here (the next batch added is <c>floor + 1</c>).</param>
    public RecentTxIndex(int capacity, ulong floor = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, MaxCapacity);
        keys = new UInt128[capacity];
        positions = new ulong[capacity];
        table = new int[(int)BitOperations.RoundUpToPowerOf2((uint)capacity * 2)];
        tableMask = table.Length - 1;
        this.floor = floor;
        top = floor;
    }

    /// <summary>The largest capacity: the table of 2^28 slots takes 1 GiB.</summary>
    public const int MaxCapacity = 1 << 27;

    /// <summary>The bytes of memory a window of <paramref name="capacity"/> txs takes.</summary>
    public static long MemoryBytes(int capacity) => (long)capacity * 24 + (long)BitOperations.RoundUpToPowerOf2((uint)capacity * 2) * 4;

    /// <summary>The most txs indexed at once.</summary>
    public int Capacity => keys.Length;

    /// <summary>The number of indexed txs.</summary>
    public int Count
    {
        get
        {
            lock (gate)
                return (int)(tail - head);
        }
    }

    /// <summary>Every height at or below it is not indexed here; every height above it up to <see cref="Top"/> is.</summary>
    public ulong Floor
    {
        get
        {
            lock (gate)
                return floor;
        }
    }

    /// <summary>The highest indexed height (<see cref="Floor"/> while the window is empty).</summary>
    public ulong Top
    {
        get
        {
            lock (gate)
                return top;
        }
    }

    /// <summary>The height and tx count of the oldest indexed batch, or null while the window is empty.</summary>
    public (ulong Height, int Count)? Oldest
    {
        get
        {
            lock (gate)
                return batches.Count > 0 ? batches.Peek() : null;
        }
    }

    /// <summary>Returns true and the position when <paramref name="hash"/> is in the window.</summary>
    public bool TryGetPosition(Hash32 hash, out TxPosition position) => TryGetPosition(hash, out position, out _);

    /// <summary>
    /// Returns true and the position when <paramref name="hash"/> is in the window; either way <paramref name="floorAtLookup"/>
    /// is the floor at the moment of the lookup, so that a miss is exact for every height above it.
    /// </summary>
    public bool TryGetPosition(Hash32 hash, out TxPosition position, out ulong floorAtLookup)
    {
        var key = hash.Prefix128;
        lock (gate)
        {
            floorAtLookup = floor;
            var slot = FindSlotLocked(key, out _);
            position = slot >= 0 ? TxPosition.Unpack(positions[slot]) : default;
            return slot >= 0;
        }
    }

    /// <summary>
    /// Adds the txs of the batch at <paramref name="height"/>, which must be <see cref="Top"/> + 1. Each hash must be new to
    /// the window (INV-NODUP), and there must be room: the caller evicts first. A batch whose tx data retention pruned
    /// (<paramref name="pruned"/>) adds its height and no tx.
    /// </summary>
    public void AddBatch(ulong height, ReadOnlySpan<Hash32> txHashes, bool pruned = false)
    {
        lock (gate)
        {
            Invariant.Check(height == top + 1, $"the recent tx index grows by contiguous heights: {height} after {top}");
            Invariant.Check(txHashes.Length >= 1 || pruned, "a batch has at least one tx");
            Invariant.Check(tail - head + txHashes.Length <= keys.Length, "the recent tx index has room for the batch (the caller evicts first)");
            for (var i = 0; i < txHashes.Length; i++)
            {
                var key = txHashes[i].Prefix128;
                Invariant.Check(FindSlotLocked(key, out var empty) < 0, "a tx is ordered twice (INV-NODUP)");
                var slot = (int)(tail % keys.Length);
                keys[slot] = key;
                positions[slot] = new TxPosition(height, i).Pack();
                table[empty] = slot + 1;
                tail++;
            }

            batches.Enqueue((height, txHashes.Length));
            top = height;
        }
    }

    /// <summary>
    /// Evicts the oldest batch when its height is at or below <paramref name="maxHeight"/> (the store holds it); the floor
    /// moves up to it. False when the window is empty or the oldest batch is above <paramref name="maxHeight"/>.
    /// </summary>
    public bool TryEvictOldest(ulong maxHeight)
    {
        lock (gate)
        {
            if (batches.Count == 0 || batches.Peek().Height > maxHeight)
                return false;
            var (height, count) = batches.Dequeue();
            Invariant.Check(height == floor + 1, "the recent tx index evicts its lowest height");
            for (var i = 0; i < count; i++)
            {
                var slot = (int)(head % keys.Length);
                var found = FindSlotLocked(keys[slot], out _, out var at);
                Invariant.Check(found == slot, "an indexed tx is in the table at its ring slot");
                RemoveAtLocked(at);
                head++;
            }

            floor = height;
            return true;
        }
    }

    /// <summary>
    /// Empties the window and starts it again above <paramref name="newFloor"/>, which must be at or above <see cref="Top"/>:
    /// the caller's store holds every height up to it (so lookups of those go to the store, exactly as after evictions).
    /// Costs one clear of the table, against a probe and a removal per tx for evicting the window batch by batch: a
    /// snapshot install that stores more txs than a quarter of the window restarts it instead of indexing them.
    /// </summary>
    public void Restart(ulong newFloor)
    {
        lock (gate)
        {
            Invariant.Check(newFloor >= top, $"the recent tx index restarts at or above its top: {newFloor} below {top}");
            Array.Clear(table);
            batches.Clear();
            head = tail;
            floor = newFloor;
            top = newFloor;
        }
    }

    private int FindSlotLocked(UInt128 key, out int empty) => FindSlotLocked(key, out empty, out _);

    // The ring slot holding key, or -1; empty is the first free table index on key's probe sequence (when not found).
    private int FindSlotLocked(UInt128 key, out int empty, out int at)
    {
        var i = Home(key);
        while (true)
        {
            var entry = table[i];
            if (entry == 0)
            {
                empty = i;
                at = -1;
                return -1;
            }

            if (keys[entry - 1] == key)
            {
                empty = -1;
                at = i;
                return entry - 1;
            }

            i = (i + 1) & tableMask;
        }
    }

    // Backward-shift deletion: no tombstones, so probe chains never outgrow the keys they hold.
    private void RemoveAtLocked(int hole)
    {
        var j = hole;
        while (true)
        {
            table[hole] = 0;
            while (true)
            {
                j = (j + 1) & tableMask;
                if (table[j] == 0)
                    return;
                var home = Home(keys[table[j] - 1]);
                // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
                var stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
                if (!stays)
                    break;
            }

            table[hole] = table[j];
            hole = j;
        }
    }

    private int Home(UInt128 key) => HashCode.Combine((ulong)key, (ulong)(key >> 64)) & tableMask;
}
