using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;

namespace Sequencer.Node.Storage;

/// <summary>
/// The store's tx index (docs/design.md, departure 3): the first 128 bits of every stored tx's hash to its position, in
/// immutable sorted runs beside store.db (<see cref="TxIndexRun"/>), each covering a contiguous range of heights. The
/// runs cover heights 1 to the stored height, without gaps or overlaps.
/// </summary>
/// <remarks>
/// <para>
/// Derived data, like the history file: the run for an append is written and fsynced before the store transaction that
/// stores the same batches commits, and deleted if the transaction fails. At open, runs above the stored height (a
/// transaction that never committed), damaged runs and runs that a merge replaced are deleted, and whatever the
/// remaining runs do not cover is rebuilt from the stored batches.
/// </para>
/// <para>
/// A lookup probes the in-memory filter of each run (one cache line) and reads one block only from a run whose filter
/// says "maybe" (about 1% of misses), so a new tx costs a few filter probes, no disk read. Runs are merged in the
/// background, <see cref="MergeFanIn"/> runs of one level into one of the next, so their number grows with the
/// logarithm of the history: each tx is rewritten once per level. Memory: the filters and fences, about 1.35 bytes per
/// stored tx; that is the part of the tx index that still grows with history.
/// </para>
/// <para>
/// One writer (the store's appends, under the store's lock) and any number of readers; one background merger. A merge
/// that fails on the disk is retried later (lookups stay exact without it); any other failure is reported by the next
/// <see cref="Prepare"/>, which stops the store's writer, so the node stops with the message.
/// </para>
/// </remarks>
internal sealed class StoredTxIndex : IDisposable
{
    /// <summary>Runs of one level merged into one run of the next.</summary>
    public const int MergeFanIn = 8;

    /// <summary>
    /// The most records in one run written by an append or a rebuild (more go into further runs, split between batches):
    /// they are sorted in one reused array of this size (2 MiB), so no append allocates a large array.
    /// </summary>
    public const int WriteRunRecords = 1 << 16;

    private readonly string directory;
    private readonly Lock gate = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly SemaphoreSlim mergeWanted = new(0, 1);
    private readonly Task? merger;
    private TxIndexRun[] runs;
    private TxRecord[] scratch = [];
    private Exception? mergerFailure;
    private int mergeFailures;

    /// <summary>Opens (or creates) the index in <paramref name="directory"/> for a store that holds heights 1 to <paramref name="storedHeight"/>.</summary>
    /// <param name="directory">The directory of the run files.</param>
    /// <param name="storedHeight">The store's checkpoint height.</param>
    /// <param name="scan">The stored batches in [from, to], ascending: read only for what the runs do not cover.</param>
    /// <param name="backgroundMerges">False: merges run only when <see cref="MergeAll"/> is called (tests).</param>
    /// <param name="prunedHeight">The store's pruned height: runs wholly at or below it are emptied by the merger.</param>
    /// <exception cref="IOException">The directory cannot be read or a rebuilt run cannot be written.</exception>
    public StoredTxIndex(string directory, ulong storedHeight, Func<ulong, ulong, IEnumerable<StoredBatch>> scan, bool backgroundMerges = true, ulong prunedHeight = 0)
    {
        floor = prunedHeight;
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(scan);
        this.directory = Directory.CreateDirectory(directory).FullName;
        runs = OpenRuns(storedHeight, scan, out var rebuilt);
        RebuiltTxs = rebuilt;
        Invariant.Check(CoveredHeight(runs) == storedHeight, $"the tx index covers the stored heights 1 to {storedHeight}");
        if (backgroundMerges)
            merger = Task.Run(MergeLoopAsync);
        WantMerge();
    }

    /// <summary>
    /// Retention moved the store's pruned height to <paramref name="prunedHeight"/>: every run whose heights all lie at
    /// or below it is replaced, in the background, by an empty run of the same heights (its txs are no longer
    /// looked up; a run that also covers later heights waits until the pruned height passes them).
    /// </summary>
    public void Prune(ulong prunedHeight)
    {
        lock (gate)
        {
            if (prunedHeight <= floor)
                return;
            floor = prunedHeight;
        }

        WantMerge();
    }

    private ulong floor;

    /// <summary>How many txs were indexed from the stored batches at open (0: the runs were intact).</summary>
    public long RebuiltTxs { get; }

    /// <summary>The number of indexed txs.</summary>
    public long TxCount => Volatile.Read(ref runs).Sum(r => r.Count);

    /// <summary>The number of run files.</summary>
    public int RunCount => Volatile.Read(ref runs).Length;

    /// <summary>The memory the index keeps: every run's filter and fence.</summary>
    public long MemoryBytes => Volatile.Read(ref runs).Sum(r => r.MemoryBytes);

    /// <summary>The position of the tx whose hash prefix is <paramref name="hash"/>'s, in a run starting at or below <paramref name="maxHeight"/>.</summary>
    /// <exception cref="InvalidDataException">A block read back does not match its checksum.</exception>
    public bool TryFind(Hash32 hash, ulong maxHeight, out TxPosition position)
    {
        var key = hash.Prefix128;
        var current = Volatile.Read(ref runs);
        // Newest first: the likeliest duplicates are recent ones.
        for (var i = current.Length - 1; i >= 0; i--)
        {
            var run = current[i];
            if (run.From > maxHeight || !run.MayContain(key))
                continue;
            if (!run.TryAcquire())
                return TryFind(hash, maxHeight, out position); // Merged away meanwhile: its merge replaced it in the list.
            try
            {
                if (run.TryFind(key, out var packed))
                {
                    position = TxPosition.Unpack(packed);
                    Invariant.Check(position.Height >= run.From && position.Height <= run.To, $"a tx found in the run {run.Path} lies within its heights");
                    return true;
                }
            }
            finally
            {
                run.Release();
            }
        }

        position = default;
        return false;
    }

    /// <summary>
    /// Writes (and fsyncs) the runs of <paramref name="batches"/>, the next heights after the indexed ones (one run per
    /// <see cref="WriteRunRecords"/> records or so); they are not used until <see cref="Commit"/>. Called before the
    /// store transaction that stores the same batches. One writer at a time (the store's writer).
    /// </summary>
    /// <exception cref="IOException">The disk failed; nothing is left behind.</exception>
    /// <exception cref="InvalidOperationException">The background merger failed on something other than the disk.</exception>
    public IReadOnlyList<TxIndexRun> Prepare(IReadOnlyList<StoredBatch> batches)
    {
        ArgumentNullException.ThrowIfNull(batches);
        if (Volatile.Read(ref mergerFailure) is { } failure)
            throw new InvalidOperationException($"the tx index merger failed: {failure.Message}", failure);
        Invariant.Check(batches.Count > 0, "a tx index run holds at least one batch");
        var covered = CoveredHeight(Volatile.Read(ref runs));
        Invariant.Check(batches[0].Header.Height == covered + 1, $"the tx index grows by contiguous heights: {batches[0].Header.Height} after {covered}");
        var written = new List<TxIndexRun>();
        try
        {
            WriteRuns(batches, written);
        }
        catch
        {
            Abandon(written);
            throw;
        }

        return written;
    }

    /// <summary>Starts using the runs made by <see cref="Prepare"/>, once the store transaction has committed.</summary>
    public void Commit(IReadOnlyList<TxIndexRun> prepared)
    {
        ArgumentNullException.ThrowIfNull(prepared);
        lock (gate)
        {
            foreach (var run in prepared)
            {
                Invariant.Check(run.From == CoveredHeight(runs) + 1, "a committed tx index run continues the indexed heights");
                Volatile.Write(ref runs, [.. runs, run]);
            }
        }

        WantMerge();
    }

    /// <summary>Deletes the runs made by <see cref="Prepare"/> whose store transaction failed.</summary>
    public static void Abandon(IReadOnlyList<TxIndexRun>? prepared)
    {
        foreach (var run in prepared ?? [])
            run.Retire(delete: true);
    }

    /// <summary>Runs merges until none is due (tests, and the background merger).</summary>
    public void MergeAll()
    {
        while (MergeOnce())
        {
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        stopping.Cancel();
        try
        {
            merger?.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
        }

        foreach (var run in Volatile.Read(ref runs))
            run.Retire(delete: false);
        stopping.Dispose();
        mergeWanted.Dispose();
    }

    private static ulong CoveredHeight(TxIndexRun[] list) => list.Length == 0 ? 0 : list[^1].To;

    private void WantMerge()
    {
        try
        {
            if (mergeWanted.CurrentCount == 0)
                mergeWanted.Release();
        }
        catch (SemaphoreFullException)
        {
            // Another append asked at the same moment: one merge pass serves both.
        }
    }

    private async Task MergeLoopAsync()
    {
        var token = stopping.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await mergeWanted.WaitAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            try
            {
                while (!token.IsCancellationRequested && MergeOnce())
                {
                }

                mergeFailures = 0;
            }
            catch (IOException)
            {
                // The disk failed (full, gone): lookups stay exact without the merge; try again later, less and less often.
                mergeFailures++;
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(60_000, 500 << Math.Min(mergeFailures, 7))), token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                WantMerge();
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A bug or a failed invariant: the next append reports it, and the store's writer stops the node.
                Volatile.Write(ref mergerFailure, e);
                return;
            }
        }
    }

    /// <summary>Merges the first <see cref="MergeFanIn"/> adjacent runs of the lowest level that has that many; false when none is due.</summary>
    private bool MergeOnce()
    {
        var current = Volatile.Read(ref runs);
        if (EmptyOnce(current))
            return true;
        var start = -1;
        for (var level = 0; level <= ushort.MaxValue && start < 0; level++)
        {
            var streak = 0;
            var any = false;
            for (var i = 0; i < current.Length && start < 0; i++)
            {
                any |= current[i].Level >= level;
                streak = current[i].Level == level ? streak + 1 : 0;
                if (streak == MergeFanIn)
                    start = i - MergeFanIn + 1;
            }

            if (!any)
                break;
        }

        if (start < 0)
            return false;
        var inputs = current[start..(start + MergeFanIn)];
        var count = inputs.Sum(r => r.Count);
        var merged = TxIndexRun.Write(Path.Combine(directory, TxIndexRun.FileName(inputs[0].From, inputs[^1].To)), inputs[0].Level + 1,
            inputs[0].From, inputs[^1].To, count, Merge(inputs, stopping.Token));
        lock (gate)
        {
            var at = Array.IndexOf(runs, inputs[0]);
            Invariant.Check(at >= 0 && runs.Length >= at + MergeFanIn && runs.AsSpan(at, MergeFanIn).SequenceEqual(inputs), "the merged tx index runs are still listed, in order");
            Volatile.Write(ref runs, [.. runs[..at], merged, .. runs[(at + MergeFanIn)..]]);
        }

        foreach (var input in inputs)
            input.Retire(delete: true);
        return true;
    }

    // Replaces the first run that holds records and lies wholly at or below the pruned height with an empty run of the
    // same level and heights (the same file name: the new file is renamed over the old one, whose open handle readers
    // may still use). False when no run is due.
    private bool EmptyOnce(TxIndexRun[] current)
    {
        ulong pruned;
        lock (gate)
            pruned = floor;
        var run = current.FirstOrDefault(r => r.To <= pruned && r.Count > 0);
        if (run is null)
            return false;
        var emptied = TxIndexRun.Write(run.Path, run.Level, run.From, run.To, 0, []);
        lock (gate)
        {
            var at = Array.IndexOf(runs, run);
            Invariant.Check(at >= 0, "the emptied tx index run is still listed");
            Volatile.Write(ref runs, [.. runs[..at], emptied, .. runs[(at + 1)..]]);
        }

        run.Retire(delete: false);
        return true;
    }

    // A k-way merge of the runs' records, ascending by key. Only the merger retires runs, so the inputs stay open.
    private static IEnumerable<TxRecord> Merge(TxIndexRun[] inputs, CancellationToken token)
    {
        var merged = 0L;
        var readers = new IEnumerator<TxRecord>[inputs.Length];
        var queue = new PriorityQueue<int, UInt128>(inputs.Length);
        try
        {
            for (var i = 0; i < inputs.Length; i++)
            {
                readers[i] = inputs[i].ReadAll().GetEnumerator();
                if (readers[i].MoveNext())
                    queue.Enqueue(i, readers[i].Current.Key);
            }

            while (queue.TryDequeue(out var i, out _))
            {
                if (++merged % 65536 == 0)
                    token.ThrowIfCancellationRequested();
                yield return readers[i].Current;
                if (readers[i].MoveNext())
                    queue.Enqueue(i, readers[i].Current.Key);
            }
        }
        finally
        {
            foreach (var reader in readers)
                reader?.Dispose();
        }
    }

    // Writes level-0 runs of the batches (contiguous heights), each of at most WriteRunRecords records unless one batch
    // is larger, sorted in the reused scratch array: a fresh array per append was megabytes a second of large-object
    // garbage under load, which the GC does not compact.
    private void WriteRuns(IEnumerable<StoredBatch> batches, List<TxIndexRun> written)
    {
        var group = new List<StoredBatch>();
        var records = 0;
        foreach (var batch in batches)
        {
            if (group.Count > 0 && records + batch.TxHashes.Length > WriteRunRecords)
            {
                written.Add(WriteRun(group, records));
                group.Clear();
                records = 0;
            }

            group.Add(batch);
            records += batch.TxHashes.Length;
        }

        if (group.Count > 0)
            written.Add(WriteRun(group, records));
    }

    private TxIndexRun WriteRun(List<StoredBatch> batches, int count)
    {
        if (scratch.Length < count)
            scratch = new TxRecord[Math.Max(count, WriteRunRecords)];
        var filled = 0;
        foreach (var batch in batches)
        {
            for (var i = 0; i < batch.TxHashes.Length; i++)
                scratch[filled++] = new TxRecord(batch.TxHashes[i].Prefix128, new TxPosition(batch.Header.Height, i).Pack());
        }

        Invariant.Check(filled == count, "a tx index run holds every tx of its batches");
        scratch.AsSpan(0, count).Sort(static (a, b) => a.Key.CompareTo(b.Key));
        var from = batches[0].Header.Height;
        var to = batches[^1].Header.Height;
        return TxIndexRun.Write(Path.Combine(directory, TxIndexRun.FileName(from, to)), 0, from, to, count, new ArraySegment<TxRecord>(scratch, 0, count));
    }

    /// <summary>Opens the runs that cover heights 1 to <paramref name="storedHeight"/>, deletes the rest and rebuilds the gaps.</summary>
    private TxIndexRun[] OpenRuns(ulong storedHeight, Func<ulong, ulong, IEnumerable<StoredBatch>> scan, out long rebuilt)
    {
        rebuilt = 0;
        var found = new List<TxIndexRun>();
        foreach (var file in new DirectoryInfo(directory).EnumerateFiles())
        {
            if (!TxIndexRun.TryParseName(file.Name, out var from, out var to) || to > storedHeight)
            {
                // A temporary file, or the run of a store transaction that never committed.
                file.Delete();
                continue;
            }

            try
            {
                var run = TxIndexRun.Open(file.FullName);
                if (run.From == from && run.To == to)
                    found.Add(run);
                else
                    run.Retire(delete: true);
            }
            catch (InvalidDataException)
            {
                // Damaged (a crash while it was written, a bad disk): it is derived data, rebuilt below.
                file.Delete();
            }
        }

        // Keep a chain from height 1: at each step the longest run that starts where the chain ends; a run that starts
        // inside the chain was replaced by a merge (or overlaps a longer one) and is deleted.
        var chain = new List<TxIndexRun>();
        var next = 1UL;
        foreach (var run in found.OrderBy(r => r.From).ThenByDescending(r => r.To))
        {
            if (run.From < next)
            {
                run.Retire(delete: true);
                continue;
            }

            if (run.From > next)
                rebuilt += Rebuild(next, run.From - 1, scan, chain);
            chain.Add(run);
            next = run.To + 1;
        }

        if (next <= storedHeight)
            rebuilt += Rebuild(next, storedHeight, scan, chain);
        return [.. chain];
    }

    // Indexes the stored batches in [from, to] into level-0 runs appended to chain (merged in the background later).
    private long Rebuild(ulong from, ulong to, Func<ulong, ulong, IEnumerable<StoredBatch>> scan, List<TxIndexRun> chain)
    {
        long total = 0;
        var expected = from;
        IEnumerable<StoredBatch> Checked()
        {
            foreach (var batch in scan(from, to))
            {
                Invariant.Check(batch.Header.Height == expected, $"the store holds batch {expected} to rebuild the tx index");
                total += batch.TxHashes.Length;
                expected++;
                yield return batch;
            }
        }

        WriteRuns(Checked(), chain);
        Invariant.Check(expected == to + 1, $"the store holds the batches {from} to {to} to rebuild the tx index");
        return total;
    }
}
