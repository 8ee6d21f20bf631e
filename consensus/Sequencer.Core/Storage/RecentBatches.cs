namespace Sequencer.Core.Storage;

/// <summary>
/// The applied batches kept in memory, so that recent lookups skip the store: a contiguous run of the newest heights,
/// bounded in bytes (<see cref="SequencerLimits.MaxRecentBatchBytes"/>), not in batches, so that its memory does not
/// depend on the batch size.
/// </summary>
/// <remarks>
/// <para>
/// Batches are indexed by <c>height % <see cref="Length"/></c>. Adding a batch evicts the oldest ones until it fits,
/// but only batches the store holds: the unstored ones must stay (the store cannot serve them yet), so the caller waits
/// for the store before it adds a batch the unstored ones leave no room for.
/// </para>
/// <para>A batch is counted as <see cref="BytesFor(int)"/>: its tx hashes, receive times and the objects around them.</para>
/// <para>Thread safety: none; the caller holds its lock.</para>
/// </remarks>
public sealed class RecentBatches
{
    /// <summary>The bytes a batch takes besides its per-tx arrays (its header and the objects and arrays around them).</summary>
    public const int BatchOverheadBytes = 384;

    /// <summary>The bytes a batch takes per tx: a 32-byte hash and an 8-byte receive time.</summary>
    public const int TxBytes = 40;

    private readonly StoredBatch?[] slots;
    private readonly long maxBytes;
    private ulong oldest = 1;
    private ulong newest;
    private long bytes;

    /// <summary>Creates an empty ring of at most <paramref name="maxBytes"/> bytes.</summary>
    /// <param name="maxBytes">The most bytes of batches kept.</param>
    /// <param name="minSlots">At least this many slots (every unstored batch must have one, whatever its size).</param>
    public RecentBatches(long maxBytes, int minSlots)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, BatchOverheadBytes + TxBytes);
        ArgumentOutOfRangeException.ThrowIfLessThan(minSlots, 1);
        this.maxBytes = maxBytes;
        slots = new StoredBatch?[checked((int)Math.Max(minSlots, Math.Min(maxBytes / BatchOverheadBytes, 1 << 24)))];
    }

    /// <summary>The bytes a batch of <paramref name="txs"/> txs is counted as.</summary>
    public static long BytesFor(int txs) => BatchOverheadBytes + ((long)txs * TxBytes);

    /// <summary>The number of slots: batches are at <c>height % Length</c>.</summary>
    public int Length => slots.Length;

    /// <summary>The batch in <paramref name="slot"/> (<c>height % Length</c>), or null; check its height.</summary>
    public StoredBatch? this[ulong slot] => slots[slot];

    /// <summary>The bytes the kept batches are counted as.</summary>
    public long Bytes => bytes;

    /// <summary>The number of kept batches.</summary>
    public int Count => (int)(newest + 1 - oldest);

    /// <summary>The lowest kept height (<see cref="Newest"/> + 1 while empty).</summary>
    public ulong Oldest => oldest;

    /// <summary>The highest kept height (0 before the first batch).</summary>
    public ulong Newest => newest;

    /// <summary>The batch at <paramref name="height"/>, or null when it is not kept.</summary>
    public StoredBatch? Get(ulong height)
    {
        if (height < oldest || height > newest)
            return null;
        var batch = slots[height % (ulong)slots.Length];
        Invariant.Check(batch is not null && batch.Header.Height == height, $"the recent batch ring holds {height} in its slot");
        return batch;
    }

    /// <summary>
    /// Adds the batch after the newest kept one (any height while empty), evicting the oldest batches at or below
    /// <paramref name="storedHeight"/> until it fits.
    /// </summary>
    /// <exception cref="InvariantViolationException">It would have to evict a batch the store does not hold: the caller
    /// did not wait for room.</exception>
    public void Add(StoredBatch batch, ulong storedHeight)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var height = batch.Header.Height;
        if (Count == 0)
        {
            oldest = height;
            newest = height - 1;
        }

        Invariant.Check(height == newest + 1, $"the recent batch ring grows by contiguous heights: {height} after {newest}");
        var size = BytesFor(batch.TxHashes.Length);
        while (Count > 0 && (bytes + size > maxBytes || Count == slots.Length))
        {
            Invariant.Check(oldest <= storedHeight, $"the recent batch ring only lets go of stored batches (it would evict {oldest}, stored up to {storedHeight})");
            EvictOldest();
        }

        slots[height % (ulong)slots.Length] = batch;
        newest = height;
        bytes += size;
    }

    /// <summary>True when a batch of <paramref name="txs"/> txs fits beside the <paramref name="unstoredBatches"/> unstored batches of <paramref name="unstoredBytes"/> bytes.</summary>
    public bool HasRoomFor(int txs, long unstoredBytes, int unstoredBatches)
        => unstoredBytes + BytesFor(txs) <= maxBytes && unstoredBatches + 1 <= slots.Length;

    private void EvictOldest()
    {
        var slot = oldest % (ulong)slots.Length;
        bytes -= BytesFor(slots[slot]!.TxHashes.Length);
        slots[slot] = null;
        oldest++;
    }
}
