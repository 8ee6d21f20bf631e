using System.Collections.Immutable;
using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Core.Validation;
using Sequencer.Signing;

namespace Sequencer.Raft;

/// <summary>Raised after a log entry is applied (or a snapshot installed) for every tx whose position is now known.</summary>
/// <param name="Batch">The new batch, or null when the entry formed none (every tx was a duplicate).</param>
/// <param name="Outcomes">The position of every tx the entry carried, in proposal order.</param>
public sealed record AppliedEvent(StoredBatch? Batch, IReadOnlyList<TxOutcome> Outcomes);

/// <summary>How much of the applied log the WAL keeps behind the store before it may be compacted.</summary>
/// <param name="Entries">At most this many entries are kept, so that a briefly lagging follower catches up from the log.</param>
/// <param name="Bytes">At most this many payload bytes (plus one entry) are kept, whatever the entry count: DotNext holds
/// the uncompacted log in process memory, so this bounds the WAL's memory.</param>
public readonly record struct WalRetention(long Entries, long Bytes)
{
    /// <summary>Keeps nothing: the log may be compacted up to the stored state.</summary>
    public static WalRetention None => new(0, 0);

    /// <summary>Keeps <paramref name="entries"/> entries, whatever their size.</summary>
    public static WalRetention OfEntries(long entries) => new(entries, long.MaxValue);
}

/// <summary>The Raft position a snapshot covers.</summary>
/// <param name="Index">The last Raft index included.</param>
/// <param name="Term">Its term.</param>
/// <param name="Height">The last batch height included.</param>
public readonly record struct SnapshotPoint(long Index, long Term, ulong Height);

/// <summary>
/// The node's applied state: the last header, the tx index and the batches, in memory and in the store.
/// </summary>
/// <remarks>
/// <para>
/// Apply runs on the WAL's single applier and touches memory, and the store only to read: the header chain, the recent
/// tx index and a ring of recent batches bounded in bytes; a tx older than the recent tx index is looked up in the store's tx index
/// (exact, and behind an in-memory filter, so a new tx costs no disk read). A background persister writes applied batches to the <see cref="IBatchStore"/> in grouped,
/// durable transactions, because the store's commit costs about a millisecond of fsync and would otherwise bound
/// the batch rate. The Raft log keeps every entry that is not yet in the store: the snapshot point that allows
/// compaction only moves after the store has made the entries durable, and it trails by at most
/// <see cref="WalRetention.Entries"/> entries and <see cref="WalRetention.Bytes"/> bytes, so that a briefly lagging follower
/// catches up from the log while the WAL's memory stays bounded.
/// </para>
/// <para>
/// Bounded: at most <see cref="SequencerLimits.MaxUnpersistedBatches"/> applied entries, holding at most
/// <see cref="SequencerLimits.MaxRecentTxs"/> txs and <see cref="SequencerLimits.MaxRecentBatchBytes"/> bytes of batches,
/// wait for the store; apply waits for the persister beyond that, which in
/// turn slows commits. Memory does not grow with history: the recent tx index is a fixed window, and the batches below
/// it are read from the store. A failing store therefore stops the node
/// from making progress rather than losing data, and is reported through <see cref="StoreFault"/>.
/// </para>
/// </remarks>
public sealed partial class AppliedState : IOrderedTxLookup, IAsyncDisposable
{
    private readonly IBatchStore store;
    private readonly ChainParameters chain;
    private readonly SequencerLimits limits;
    private readonly DkgPolicy? dkgPolicy;
    private readonly WalRetention retention;
    private readonly TimeProvider time;
    private readonly ILogger logger;
    private readonly RecentTxIndex txIndex;
    private readonly Lock gate = new();
    private readonly SemaphoreSlim storeWriter = new(1, 1);
    private readonly Queue<PendingEffect> unpersisted = new();
    private readonly Queue<SnapshotCandidate> snapshotCandidates = new();
    private long snapshotCandidateBytes;

    /// <summary>
    /// How far, as a multiple of the retained entries, a snapshot transfer or a silent follower may hold compaction back.
    /// The entry count only sets how often the point moves; the bytes bound the WAL's memory, so they get the smaller
    /// multiple. With a small window (the chaos runs keep 512 entries) a follower catching up from a snapshot under load
    /// used to reach four windows in seconds, and the compaction then waited for its read (up to the request timeout).
    /// </summary>
    private const int HoldEntriesFactor = 16;

    /// <summary>How far, as a multiple of the retained bytes, a transfer or a silent follower may hold compaction back.</summary>
    private const int HoldBytesFactor = 4;
    private readonly RecentBatches recent;
    private readonly AppliedHistory history;
    private readonly CancellationTokenSource stopping = new();
    private readonly BackgroundLoop persister;
    private TaskCompletionSource persistedSignal = NewSignal();
    private TaskCompletionSource workSignal = NewSignal();

    // Guarded by gate.
    private BatchHeader? lastHeader;
    private long appliedIndex;
    private long appliedTerm;
    private StoreCheckpoint durable;
    private BatchSnapshot? snapshot;

    // The entries of the key generation in progress after the newest applied entry (the ledger's DKG, as the store
    // keeps it): each pending entry and snapshot candidate shares the list as of its own index.
    private ImmutableList<byte[]> dkgApplied = [];
    private string? storeFault;
    private long lastApplyAt;
    private long unpersistedTxs;
    private long unpersistedBatchBytes;
    private long unpersistedEntryBytes;
    private int unpersistedBatches;
    private long storedTxs;

    /// <summary>Loads the stored state and starts the persister.</summary>
    /// <param name="store">The durable batch store.</param>
    /// <param name="chain">The chain id and key epoch of new headers.</param>
    /// <param name="limits">Validated limits.</param>
    /// <param name="retention">How much of the applied log the WAL keeps behind the store before compaction.</param>
    /// <param name="time">The clock for local bookkeeping (the <c>ordered</c> time); never used for header fields.</param>
    /// <param name="logger">The logger.</param>
    /// <param name="loops">Where the persister loop is supervised (the node stops when it dies); a private set when null.</param>
    /// <param name="dkgPolicy">This node's configured members and threshold, which a key generation in the log must fit (null: none checked).</param>
    /// <param name="rulesFor">The rules of a validation mode for a chain id, once the log's genesis names the mode (null: opaque only).</param>
    public AppliedState(IBatchStore store, ChainParameters chain, SequencerLimits limits, WalRetention retention, TimeProvider time, ILogger logger,
        BackgroundLoops? loops = null, DkgPolicy? dkgPolicy = null, Func<ValidationMode, ulong, ITxRules?>? rulesFor = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentOutOfRangeException.ThrowIfNegative(retention.Entries);
        ArgumentOutOfRangeException.ThrowIfNegative(retention.Bytes);
        limits.ThrowIfInvalid();

        this.store = store;
        this.chain = chain;
        this.rulesFor = rulesFor ?? ((_, _) => null);
        this.dkgPolicy = dkgPolicy;
        this.limits = limits;
        this.retention = retention;
        this.time = time;
        keyEpochSeenAt = time.GetTimestamp();
        Transfers = new SnapshotTransfers(time);
        Replication = new ReplicationWatch(time);
        Transfers.Repeated += OnRepeatedTransfer;
        Transfers.AllEnded += OnTransfersEnded;
        Transfers.FenceClear += OnFenceClear;
        Transfers.AdmissionWaited += wait => LogFenceWait(logger, (long)wait.Waited.TotalMilliseconds, wait.TimedOut, wait.MoveWanted, wait.FencedIndex, wait.ReclaimedIndex);
        this.logger = logger;
        recent = new RecentBatches(limits.MaxRecentBatchBytes, limits.MaxUnpersistedBatches + 1);

        durable = store.ReadCheckpoint();
        lastApplyAt = time.GetTimestamp();
        appliedIndex = durable.AppliedIndex;
        appliedTerm = durable.AppliedTerm;
        // Only the newest batches are loaded (the recent tx index and the ring); older ones stay in the store.
        var loaded = LoadRecentBatches();
        txIndex = new RecentTxIndex(limits.MaxRecentTxs, loaded.Count > 0 ? loaded[0].Header.Height - 1 : durable.LastHeight);
        foreach (var batch in loaded)
        {
            txIndex.AddBatch(batch.Header.Height, batch.TxHashes, batch.Pruned);
            recent.Add(batch, durable.LastHeight);
        }

        lastHeader = loaded.Count > 0 ? loaded[^1].Header : null;
        storedTxs = store.TxCount;
        history = new AppliedHistory(store.History, durable.LastHeight);
        LoadSigningState();
        LoadGenesis();
        if (durable.SnapshotIndex > 0)
            snapshot = new BatchSnapshot(this, new SnapshotPoint(durable.SnapshotIndex, durable.SnapshotTerm, durable.SnapshotHeight), [.. store.ReadSnapshotDkgEntries()]);
        LogLoaded(logger, durable.LastHeight, durable.AppliedIndex, durable.SnapshotIndex, storedTxs, loaded.Count, txIndex.Count);

        persister = (loops ?? new BackgroundLoops(time)).Start("the store persister", PersisterStuckAfter, PersistLoopAsync, stopping.Token);
    }

    /// <summary>A persister that has not gone round for this long (a store write that hangs) makes the node not ready.</summary>
    public static readonly TimeSpan PersisterStuckAfter = TimeSpan.FromSeconds(10);

    /// <summary>Raised after each applied entry and for each installed batch; handlers must be fast and must not throw.</summary>
    public event Action<AppliedEvent>? Applied;

    /// <summary>The chain parameters of new headers: the chain id and the current key epoch.</summary>
    public ChainParameters Chain
    {
        get
        {
            lock (gate)
                return chain with { KeyEpoch = ledger.CurrentKeyEpoch?.Epoch ?? chain.KeyEpoch };
        }
    }

    /// <summary>The history tree of the applied chain: proofs that a head's history holds a lower header.</summary>
    public IHistoryNodes History => history;

    /// <summary>The last applied Raft index.</summary>
    public long AppliedIndex
    {
        get
        {
            lock (gate)
                return appliedIndex;
        }
    }

    /// <summary>The last header, or null before the first batch.</summary>
    public BatchHeader? LastHeader
    {
        get
        {
            lock (gate)
                return lastHeader;
        }
    }

    /// <summary>What the store has made durable.</summary>
    public StoreCheckpoint Durable
    {
        get
        {
            lock (gate)
                return durable;
        }
    }

    /// <summary>The time since the last entry was applied (or since the state was opened).</summary>
    public TimeSpan SinceLastApply
    {
        get
        {
            lock (gate)
                return time.GetElapsedTime(lastApplyAt);
        }
    }

    /// <summary>Applied entries not yet in the store.</summary>
    public int UnpersistedEntries
    {
        get
        {
            lock (gate)
                return unpersisted.Count;
        }
    }

    /// <summary>
    /// Why the store persister is not keeping up (it stopped, the store fails, or applied entries pile up towards the
    /// bound where apply stops), or null while it keeps up. Readiness serves it.
    /// </summary>
    public string? PersisterProblem
    {
        get
        {
            if (persister.Failure is { } failure)
                return $"the store persister stopped: {failure.Message}";
            lock (gate)
            {
                if (storeFault is { } fault)
                    return $"the store is failing: {fault}";
                if (unpersisted.Count >= limits.MaxUnpersistedBatches / 4 * 3)
                    return $"the store persister is behind: {unpersisted.Count} applied entries are not yet in the store (apply stops at {limits.MaxUnpersistedBatches})";
                if (unpersistedBatchBytes >= limits.MaxRecentBatchBytes / 4 * 3 || unpersistedTxs >= limits.MaxRecentTxs / 4 * 3
                    || unpersistedEntryBytes >= limits.MaxUnpersistedEntryBytes / 4 * 3)
                {
                    return $"the store persister is behind: {unpersistedTxs} applied txs ({unpersistedBatchBytes} bytes of batches, {unpersistedEntryBytes} bytes of log) are not yet in the store " +
                        $"(apply stops at {limits.MaxRecentTxs} txs, {limits.MaxRecentBatchBytes} bytes of batches or {limits.MaxUnpersistedEntryBytes} bytes of log)";
                }
            }

            return null;
        }
    }

    /// <summary>The number of ordered txs: the stored ones and the applied ones not yet stored.</summary>
    public long OrderedTxCount
    {
        get
        {
            lock (gate)
                return storedTxs + unpersistedTxs;
        }
    }

    /// <summary>The log bytes of the applied entries not yet in the store (the WAL holds them in memory).</summary>
    public long UnpersistedEntryBytes
    {
        get
        {
            lock (gate)
                return unpersistedEntryBytes;
        }
    }

    /// <summary>The number of txs in the recent tx index (the newest batches, in memory).</summary>
    public int RecentTxCount => txIndex.Count;

    /// <summary>The batches kept in memory, and the bytes they are counted as.</summary>
    public (int Batches, long Bytes) RecentBatchesHeld
    {
        get
        {
            lock (gate)
                return (recent.Count, recent.Bytes);
        }
    }

    /// <summary>The last store failure, or null while the store works.</summary>
    public string? StoreFault
    {
        get
        {
            lock (gate)
                return storeFault;
        }
    }

    /// <summary>The snapshot DotNext may send to lagging followers and compact the log up to.</summary>
    /// <summary>Snapshots being sent to followers: compaction waits for them (see <see cref="SnapshotTransfers"/>).</summary>
    public SnapshotTransfers Transfers { get; }

    /// <summary>When each follower last answered the leader: compaction waits for a silent one, within a bound (see <see cref="ReplicationWatch"/>).</summary>
    public ReplicationWatch Replication { get; }

    /// <summary>True while a snapshot transfer or a silent follower holds the snapshot point (within its bound).</summary>
    public bool CompactionHeld => Transfers.Holding || Replication.AnySilent;

    /// <summary>
    /// Raised when a snapshot is being sent again and the point must move to the newest stored entry: on an idle
    /// leader nothing new may come to store, so the host appends an empty entry to give the point somewhere to go.
    /// </summary>
    public event Action? FreshSnapshotNeeded;

    /// <summary>
    /// Raised (outside the lock) when the snapshot point moved. DotNext compacts the log up to it, and calls
    /// <see cref="SnapshotTransfers.Reclaimed"/> through the state machine, only in its flusher's loop, which runs when
    /// an entry is appended or the commit index moves: on an idle leader (a mark entry moved the point, or the load
    /// stopped) the host wakes the flusher, or snapshot reads would wait at the compaction fence for its whole bound.
    /// </summary>
    public event Action? SnapshotPointMoved;

    private bool freshSnapshotRequested;

    private void OnRepeatedTransfer(long index)
    {
        lock (gate)
        {
            freshSnapshotRequested = true;
            workSignal.TrySetResult();
        }

        LogSnapshotResent(logger, index);
        FreshSnapshotNeeded?.Invoke();
    }

    private void OnTransfersEnded()
    {
        lock (gate)
        {
            if (freshSnapshotRequested)
                workSignal.TrySetResult();
        }
    }

    // The snapshot reads that held a move of the point back have ended: the persister tries the move again.
    private void OnFenceClear()
    {
        lock (gate)
            workSignal.TrySetResult();
    }

    internal BatchSnapshot? CurrentSnapshot
    {
        get
        {
            lock (gate)
                return snapshot;
        }
    }

    /// <summary>
    /// Returns true and the position when <paramref name="hash"/> is in an applied batch: from the recent tx index, else
    /// from the store's tx index for the heights below it. Exact, so apply stays deterministic: every batch the store
    /// does not hold yet is in the recent tx index, which only lets go of stored batches.
    /// </summary>
    public bool TryGetPosition(Hash32 hash, out TxPosition position)
    {
        if (txIndex.TryGetPosition(hash, out position, out var floor))
            return true;
        // The floor was read with the lookup: every height above it was in the window then, every height at or below
        // it is in the store (evicted batches were stored first).
        return floor > 0 && store.TryGetTxPosition(hash, floor, out position);
    }

    /// <summary>
    /// The batch at <paramref name="height"/>, from memory or the store; null when not applied. A height whose tx data
    /// retention pruned is served pruned even while memory still holds its hashes: what a node serves does not depend
    /// on what it happens to cache.
    /// </summary>
    public StoredBatch? GetBatch(ulong height)
    {
        if (height == 0)
            return null;
        lock (gate)
        {
            if (lastHeader is null || height > lastHeader.Height)
                return null;
            if (recent.Get(height) is { } cached)
                return height <= store.PrunedHeight ? cached.WithoutTxData() : cached;
        }

        var stored = store.Get(height);
        Invariant.Check(stored is null || stored.Header.Height == height, "the store returned the batch asked for");
        return stored;
    }

    /// <summary>The leader's trace contexts of recent batches and heads (empty when nothing traces).</summary>
    public TraceContexts Traces { get; } = new();

    /// <summary>
    /// Applies a log entry. Entries at or below the applied index (replayed after a restart) are skipped.
    /// </summary>
    /// <param name="command">The decoded command, or null for an entry without payload (a leader's no-op).</param>
    /// <param name="index">The Raft index of the entry.</param>
    /// <param name="term">The Raft term of the entry.</param>
    /// <param name="token">Cancels waiting for the persister.</param>
    /// <param name="proposal">On the leader, the proposal that produced the entry (DotNext's entry context).</param>
    /// <param name="entryBytes">The entry's payload size in the log, counted against <see cref="WalRetention.Bytes"/>.</param>
    /// <returns>The applied batch, or null for a skipped or empty entry.</returns>
    public async ValueTask<AppliedBatch?> ApplyAsync(ILogCommand? command, long index, long term, CancellationToken token, BatchProposal? proposal = null,
        long entryBytes = 0)
    {
        lock (gate)
        {
            // Entries without payload (a new leader's no-op) never reach the state machine, so indexes may skip.
            if (index <= appliedIndex)
                return null;
        }

        await WaitForPersisterRoomAsync(command is BatchCommand incoming ? incoming.Txs.Count : null, Math.Max(0, entryBytes), token).ConfigureAwait(false);

        AppliedBatch? result = null;
        StoredBatch? stored = null;
#if SEQUENCER_TEST_FAULTS
        if (TestFaults.DropBatchAtHeight > 0 && command is BatchCommand && (LastHeader?.Height ?? 0) + 1 == TestFaults.DropBatchAtHeight)
        {
            TestFaults.DropBatchAtHeight = 0;
            command = null;
        }
#endif
        if (command is BatchCommand batch)
        {
            BatchHeader? previous;
            lock (gate)
                previous = lastHeader;
            result = BatchApplier.Apply(previous, history.Frontier, Chain, batch, checked((ulong)term), this, proposal?.HashesFor(batch), ValidationFor(batch, proposal));
            if (result.Header is not null)
            {
                stored = new StoredBatch
                {
                    Header = result.Header,
                    TxHashes = result.TxHashes,
                    ReceivedMs = result.ReceivedMs,
                    RaftIndex = index,
                    OrderedAtMs = (ulong)time.GetUtcNow().ToUnixTimeMilliseconds(),
                    TxAccounts = result.TxAccounts,
                };
            }
        }

        ValidationMode? genesisApplied = null;
        ulong? foreignChain = null;
        LedgerEffects? signing = null;
        ulong coveredFrom = 0;
        lock (gate)
        {
            if (stored is not null)
            {
                Invariant.Check(stored.Header.Height == (lastHeader?.Height ?? 0) + 1, "heights are contiguous (INV-CHAIN)");
                Invariant.Check(stored.Header.ParentHash == (lastHeader?.Commitment ?? Hash32.Zero), "parentHash links to the previous commitment (INV-CHAIN)");
                lastHeader = stored.Header;
                history.Append(stored.Header.Commitment);
                recent.Add(stored, durable.LastHeight);
                AddToTxIndexLocked(stored);
                RecordAccountsLocked(stored);
                unpersistedTxs += stored.TxHashes.Length;
                unpersistedBatchBytes += RecentBatches.BytesFor(stored.TxHashes.Length);
                unpersistedBatches++;
            }

            // The signing ledger sees every entry that carries signing data, after the batch's header is in the chain
            // (an inline session signs that header).
            if (command is L1ProgressCommand progress)
                ApplyL1ProgressLocked(progress, index);
            else if (command is GenesisCommand genesisCommand)
            {
                genesisApplied = ApplyGenesisLocked(genesisCommand);
                (foreignChain, foreignGenesis) = (foreignGenesis, null);
            }
            else if (command is not (null or SnapshotMarkCommand or BatchCommand { Session: null, Signatures: null or { Count: 0 }, Sessions: null or { Count: 0 } }))
                (signing, coveredFrom) = ApplySigningLocked(command, index, stored?.Header);

            appliedIndex = index;
            appliedTerm = term;
            lastApplyAt = time.GetTimestamp();
            if (signing is { } changed)
            {
                if (changed.ClearDkg)
                    dkgApplied = [];
                if (changed.DkgPrefix is { } prefix)
                    dkgApplied = dkgApplied.AddRange(prefix);
                if (changed.DkgEntry is { } dkgEntry)
                    dkgApplied = dkgApplied.Add(dkgEntry);
            }

            unpersisted.Enqueue(new PendingEffect(index, term, stored, signing is { IsEmpty: false } ? signing : null, ledger.SignedThrough, Math.Max(0, entryBytes), dkgApplied));
            unpersistedEntryBytes += Math.Max(0, entryBytes);
            if (unpersisted.Count >= limits.PersistGroupBatches)
                workSignal.TrySetResult();
        }

        if (genesisApplied is { } mode)
            GenesisApplied?.Invoke(mode);
        if (foreignChain is { } foreign)
            ForeignChain?.Invoke(foreign);
        if (result is not null)
            Applied?.Invoke(new AppliedEvent(stored, result.Outcomes));
        if (signing is not null)
            RaiseSigningEvents(signing, coveredFrom);
        return result;
    }

    /// <summary>
    /// Adds an applied or installed batch to the recent tx index, evicting its oldest stored batches to make room. The
    /// caller has made sure that the unstored batches leave room (<see cref="WaitForPersisterRoomAsync"/>).
    /// </summary>
    private void AddToTxIndexLocked(StoredBatch batch)
    {
        while (txIndex.Count + batch.TxHashes.Length > txIndex.Capacity)
            Invariant.Check(txIndex.TryEvictOldest(durable.LastHeight), "the recent tx index only lets go of stored batches, and has room for the unstored ones");
        txIndex.AddBatch(batch.Header.Height, batch.TxHashes, batch.Pruned);
    }

    /// <summary>
    /// Waits until the applied entries not yet stored leave room for one more entry of <paramref name="incomingBytes"/>
    /// bytes, a batch entry of <paramref name="incomingTxs"/> txs or (null) another one: fewer than
    /// <see cref="SequencerLimits.MaxUnpersistedBatches"/> entries and <see cref="SequencerLimits.MaxUnpersistedEntryBytes"/>
    /// bytes (the WAL holds them in memory until they are stored), and their txs and batches with the incoming ones within
    /// the recent tx index and the recent batches (which must hold every unstored batch). This is where a slow store slows
    /// apply, and so commits. With nothing unstored an entry always goes ahead, however large.
    /// </summary>
    private async ValueTask WaitForPersisterRoomAsync(int? incomingTxs, long incomingBytes, CancellationToken token)
    {
        while (true)
        {
            Task wait;
            lock (gate)
            {
                if (unpersisted.Count == 0 || (unpersisted.Count < limits.MaxUnpersistedBatches
                    && unpersistedEntryBytes + incomingBytes <= limits.MaxUnpersistedEntryBytes
                    && (incomingTxs is not { } txs || (unpersistedTxs + txs <= txIndex.Capacity && recent.HasRoomFor(txs, unpersistedBatchBytes, unpersistedBatches)))))
                    return;
                workSignal.TrySetResult();
                wait = persistedSignal.Task;
            }

            // Apply must never wait for a persister that is gone: that would leave the node answering but frozen.
            if (persister.Completion.IsCompleted)
                throw new InvalidOperationException("apply cannot go on: the store persister has stopped", persister.Failure);
            await Task.WhenAny(wait, persister.Completion).WaitAsync(token).ConfigureAwait(false);
        }
    }

    private bool FullGroupWaiting()
    {
        lock (gate)
            return unpersisted.Count >= limits.PersistGroupBatches;
    }

    /// <summary>Writes every applied entry to the store now; used before a snapshot install and at shutdown.</summary>
    public async Task FlushAsync(CancellationToken token)
    {
        await storeWriter.WaitAsync(token).ConfigureAwait(false);
        try
        {
            while (PersistOnce(int.MaxValue))
            {
            }
        }
        finally
        {
            storeWriter.Release();
        }
    }

    /// <summary>
    /// Writes applied entries to the store in groups. A disk failure (<see cref="IOException"/>) is retried with
    /// backoff: nothing is lost, apply stops at the bound, and readiness reports the fault. Anything else (a failed
    /// invariant, a bug) ends the loop, and <see cref="BackgroundLoops"/> reports it so that the node stops.
    /// </summary>
    private async Task PersistLoopAsync(BackgroundLoop loop, CancellationToken token)
    {
        var failures = 0;
        while (!token.IsCancellationRequested)
        {
            loop.Beat();
            Task signal;
            lock (gate)
                signal = workSignal.Task;
            // A timed-out wait is the normal way to wake up here: suppress instead of throwing.
            await signal.WaitAsync(TimeSpan.FromMilliseconds(limits.PersistIntervalMs), time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (token.IsCancellationRequested)
                break;

            lock (gate)
            {
                if (workSignal.Task.IsCompleted)
                    workSignal = NewSignal();
            }

            try
            {
                await storeWriter.WaitAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            var backoff = TimeSpan.Zero;
            try
            {
                // One group per wake unless a full group is waiting: entries applied while a group was being written
                // wait for the next wake instead of making a second small transaction (each costs the store's, the
                // history file's and a tx index run's fsyncs, on the disk the Raft log's flushes wait for). A full
                // group, or apply waiting for room (it sets the work signal), goes on at once.
                while (PersistOnce(limits.PersistGroupBatches) && FullGroupWaiting())
                    loop.Beat();

                failures = 0;
            }
            catch (IOException e)
            {
                // The disk failed (full, read-only, gone). Nothing was lost: the entries stay in memory and in the
                // Raft log, apply stops at the bound, and the node reports itself not ready until the store recovers.
                failures++;
                lock (gate)
                    storeFault = e.Message;
                LogStoreFailed(logger, e, failures);
                backoff = TimeSpan.FromMilliseconds(Math.Min(5_000, 100 * (1 << Math.Min(failures, 6))));
            }
            finally
            {
                storeWriter.Release();
            }

            // Back off without holding the writer: a flush (at shutdown, or a snapshot install) may still try at once.
            if (backoff > TimeSpan.Zero)
            {
                try
                {
                    await Task.Delay(backoff, time, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    /// <summary>Persists up to <paramref name="maxEntries"/> applied entries; the caller holds <see cref="storeWriter"/>.</summary>
    /// <returns>True when something was written.</returns>
    private bool PersistOnce(int maxEntries)
    {
        List<StoredBatch> batches = [];
        long batchTxs = 0;
        long batchBytes = 0;
        long entryBytes = 0;
        List<SignedHead> heads = [];
        List<StoredKeyEpoch> keyEpochs = [];
        var pool = new PoolChanges();
        PendingEffect last;
        StoreCheckpoint previous;
        int taken;
        bool movedFresh;
        lock (gate)
        {
            taken = Math.Min(maxEntries, unpersisted.Count);
            movedFresh = taken == 0 && MoveToFreshSnapshotLocked();
            // Nothing to store (the load stopped): a move that a read in progress refused is not tried again before the
            // next stored entry, so once the reads have ended (their end wakes this pass) waiting reads go on instead of
            // for the fence's whole bound (measured: 3,001 ms for a restarted follower's snapshot in the slow-install
            // integration test). A fresh point still wanted keeps the wish: its move is tried above.
            if (taken == 0 && !freshSnapshotRequested)
                Transfers.Withdraw(onlyWhenClear: true);
            last = default;
            foreach (var effect in unpersisted.Take(taken))
            {
                if (effect.Batch is not null)
                {
                    batches.Add(effect.Batch);
                    batchTxs += effect.Batch.TxHashes.Length;
                    batchBytes += RecentBatches.BytesFor(effect.Batch.TxHashes.Length);
                }
                if (effect.Signing is { } signingEffect)
                {
                    heads.AddRange(signingEffect.HeadsSigned);
                    if (signingEffect.PendingKeyEpoch is { } made)
                        keyEpochs.Add(made);
                    if (signingEffect.KeyEpoch is { } epoch)
                        keyEpochs.Add(epoch);
                    pool.Add(signingEffect);
                }

                entryBytes += effect.Bytes;
                last = effect;
            }

            previous = durable;
        }

        if (taken == 0)
        {
            if (movedFresh)
                SnapshotPointMoved?.Invoke();
            return false;
        }

        var lastHeight = batches.Count > 0 ? batches[^1].Header.Height : previous.LastHeight;
        var (chosen, consumed, fresh) = ChooseSnapshot(taken, previous.LastHeight, last.Index);
        var next = chosen.Point;
        var checkpoint = new StoreCheckpoint(last.Index, last.Term, lastHeight, next.Index, next.Term, next.Height, Math.Max(previous.SignedWatermark, last.SignedWatermark));
        // A moved point stores the key generation in progress there (a snapshot carries it, see WriteSnapshotAsync).
        var signing = new SigningWrites(heads, keyEpochs, pool.Clear, [.. pool.Added.Select(a => new StoredCommitment(a.Key.Signer, a.Key.Sequence, a.Value))],
            [.. pool.Removed], pool.Next, pool.DkgEntries, pool.ClearDkg, next.Index != previous.SnapshotIndex ? chosen.Dkg : null);
        store.Append(batches, checkpoint, signing.IsEmpty ? null : signing);

        bool moved;
        lock (gate)
        {
            KeepSnapshotCandidatesLocked(consumed, fresh);
            for (var i = 0; i < taken; i++)
                unpersisted.Dequeue();
            unpersistedTxs -= batchTxs;
            unpersistedBatchBytes -= batchBytes;
            unpersistedBatches -= batches.Count;
            unpersistedEntryBytes -= entryBytes;
            storedTxs += batchTxs;
            Invariant.Check(unpersistedTxs >= 0 && unpersistedBatchBytes >= 0 && unpersistedBatches >= 0 && unpersistedEntryBytes >= 0, "stored entries were counted as unstored");
            durable = checkpoint;
            storeFault = null;
            TrimAccountsLocked();
            history.Trim(checkpoint.LastHeight);
            TrimRecentHeadsLocked();
            moved = next.Index > 0 && (snapshot is null || snapshot.Point.Index != next.Index);
            if (moved)
                snapshot = new BatchSnapshot(this, next, chosen.Dkg);
            persistedSignal.TrySetResult();
            persistedSignal = NewSignal();
        }

        if (moved)
            SnapshotPointMoved?.Invoke();
        return true;
    }

    /// <summary>
    /// With nothing new to store, moves a requested fresh snapshot point (see <see cref="OnRepeatedTransfer"/>) to the
    /// newest stored entry with a checkpoint of its own. The caller holds <see cref="storeWriter"/> and the gate.
    /// </summary>
    /// <returns>True when the point moved.</returns>
    private bool MoveToFreshSnapshotLocked()
    {
        if (!freshSnapshotRequested || snapshotCandidates.Count == 0 || !Transfers.TryFence(snapshotCandidates.Last().Point.Index))
            return false;
        var candidate = snapshotCandidates.Last();
        var newest = candidate.Point;
        var checkpoint = durable with { SnapshotIndex = newest.Index, SnapshotTerm = newest.Term, SnapshotHeight = newest.Height };
        store.Append([], checkpoint, new SigningWrites([], [], SnapshotDkg: candidate.Dkg));
        freshSnapshotRequested = false;
        Transfers.ReleaseHold();
        ClearSnapshotCandidatesLocked();
        durable = checkpoint;
        snapshot = new BatchSnapshot(this, newest, candidate.Dkg);
        return true;
    }

    /// <summary>
    /// The next snapshot point and the candidates that remain. The point moves rarely: only once the log kept behind
    /// <paramref name="persistedIndex"/> exceeds twice <see cref="WalRetention.Entries"/> entries or twice
    /// <see cref="WalRetention.Bytes"/> payload bytes, and then to the newest applied point that leaves at most
    /// <see cref="WalRetention.Entries"/> entries and less than <see cref="WalRetention.Bytes"/> bytes (and one entry)
    /// after it (every entry about to be stored is a candidate); otherwise the current point stays. A move also waits
    /// at the compaction fence (<see cref="SnapshotTransfers.TryFence"/>) until no snapshot transfer reads the log.
    /// Otherwise pure: the caller commits the remaining candidates only once the store has the entries, so a failed
    /// store write retried later does not count its entries twice (the fence of a move that was never published
    /// costs the next transfer one bounded wait).
    /// </summary>
    /// <remarks>
    /// Each move makes DotNext compact the log, and compaction takes a lock that waits for every read of the log in
    /// progress, while every later read (the applier's, and replication to the other followers) queues behind it. A
    /// follower's replication holds its read for the whole AppendEntries round trip, up to the Raft request timeout when
    /// the follower is slow or cut off. Measured: with the point moving after every stored group, one follower with 40 to
    /// 150 ms of added delay slowed the leader's commit and apply from 15 ms to 170 to 280 ms and ordering to a quarter of
    /// its rate; with the point moving once per retained window, not at all. See docs/design.md.
    /// </remarks>
    private (SnapshotCandidate Chosen, int Consumed, SnapshotCandidate[] Fresh) ChooseSnapshot(int taken, ulong storedHeight, long persistedIndex)
    {
        lock (gate)
        {
            fenceRefused = false;
            var choice = ChooseSnapshotLocked(taken, storedHeight, persistedIndex);
            // Only a move refused by a read in progress is still wanted; any other outcome lets waiting reads go on.
            if (!fenceRefused)
                Transfers.Withdraw();
            return choice;
        }
    }

    // Whether the current ChooseSnapshot asked the fence for a move and was refused (under the gate).
    private bool fenceRefused;

    private bool FenceLocked(long index)
    {
        var fenced = Transfers.TryFence(index);
        fenceRefused |= !fenced;
        return fenced;
    }

    private (SnapshotCandidate Chosen, int Consumed, SnapshotCandidate[] Fresh) ChooseSnapshotLocked(int taken, ulong storedHeight, long persistedIndex)
    {
        // The candidates are the queue (entries stored earlier) followed by the entries being stored now. The queue
        // is walked, never copied: it holds up to a retained window of entries (thousands of one-tx entries at
        // single-submit load), and copying it at every store write was a sixteenth of the leader's allocations.
        var fresh = new SnapshotCandidate[taken];
        var freshBytes = 0L;
        var height = storedHeight;
        var k = 0;
        foreach (var effect in unpersisted.Take(taken))
        {
            height = effect.Batch?.Header.Height ?? height;
            fresh[k++] = new SnapshotCandidate(new SnapshotPoint(effect.Index, effect.Term, height), effect.Bytes, effect.Dkg);
            freshBytes += effect.Bytes;
        }

        var total = snapshotCandidates.Count + taken;
        var current = snapshot?.Point ?? new SnapshotPoint(durable.SnapshotIndex, durable.SnapshotTerm, durable.SnapshotHeight);
        var stay = new SnapshotCandidate(current, 0, snapshot?.Dkg ?? []);
        if (freshSnapshotRequested && total > 0 && FenceLocked(taken > 0 ? fresh[^1].Point.Index : snapshotCandidates.Last().Point.Index))
        {
            // A snapshot was sent again (see SnapshotTransfers): move to the newest entry being stored now, once no
            // transfer holds a read of the log that the compaction would wait for.
            freshSnapshotRequested = false;
            Transfers.ReleaseHold();
            return (taken > 0 ? fresh[^1] : snapshotCandidates.Last(), total, fresh);
        }

        var keptBytes = snapshotCandidateBytes + freshBytes;
        if (persistedIndex - current.Index <= Saturating(2, retention.Entries) && keptBytes <= Saturating(2, retention.Bytes))
            return (stay, 0, fresh);

        // The bytes after a candidate are the bytes of every later candidate: each persisted entry is one.
        var chosen = stay;
        var consumed = 0;
        var bytesAfter = keptBytes;
        foreach (var candidate in snapshotCandidates.Concat(fresh))
        {
            bytesAfter -= candidate.Bytes;
            if (candidate.Point.Index > persistedIndex - retention.Entries && bytesAfter < retention.Bytes)
                break;
            chosen = candidate;
            consumed++;
        }

        // A follower is being sent the current snapshot: keep the log after it until it can ask for those entries.
        // A follower has not answered for a while: keep the entries it missed so that it catches up from the log
        // (see ReplicationWatch). Either way, only within a bounded multiple of the normal window.
        if (consumed > 0 && ((snapshot is not null && Transfers.Holding) || Replication.AnySilent)
            && persistedIndex - current.Index <= Saturating(HoldEntriesFactor, retention.Entries) && keptBytes <= Saturating(HoldBytesFactor, retention.Bytes))
            return (stay, 0, fresh);
        // The move compacts the log under a barrier that would wait for a snapshot transfer's read and stall every
        // other read behind it: it waits for the transfers in progress, and new ones wait for it (SnapshotTransfers).
        // Twice past the hold's bound (the fence was never lifted), the move goes ahead regardless: a stall is
        // better than a log that grows without limit.
        var overdue = persistedIndex - current.Index > Saturating(2 * HoldEntriesFactor, retention.Entries) || keptBytes > Saturating(2 * HoldBytesFactor, retention.Bytes);
        if (consumed > 0 && chosen.Point.Index > current.Index && !overdue && !FenceLocked(chosen.Point.Index))
            return (stay, 0, fresh);
        // The walk stops at the first candidate with fewer than retention.Bytes after it, so what remains holds
        // less than that plus its first entry.
        Invariant.Check(total - consumed <= retention.Entries + taken, "snapshot candidates stay within the retained window");
        return (chosen, consumed, fresh);
    }

    // Keeps the candidates after the first `consumed` of (queue, fresh): the caller holds storeWriter (nothing else
    // changed the queue since ChooseSnapshot) and the gate.
    private void KeepSnapshotCandidatesLocked(int consumed, SnapshotCandidate[] fresh)
    {
        Invariant.Check(consumed >= 0 && consumed <= snapshotCandidates.Count + fresh.Length, "the snapshot point consumes only known candidates");
        var fromQueue = Math.Min(consumed, snapshotCandidates.Count);
        for (var i = 0; i < fromQueue; i++)
            snapshotCandidateBytes -= snapshotCandidates.Dequeue().Bytes;
        for (var i = consumed - fromQueue; i < fresh.Length; i++)
        {
            snapshotCandidates.Enqueue(fresh[i]);
            snapshotCandidateBytes += fresh[i].Bytes;
        }

        Invariant.Check(snapshotCandidateBytes >= 0 && (snapshotCandidates.Count > 0 || snapshotCandidateBytes == 0), "the snapshot candidates' byte count matches the queue");
    }

    private void ClearSnapshotCandidatesLocked()
    {
        snapshotCandidates.Clear();
        snapshotCandidateBytes = 0;
    }

    /// <summary>
    /// The newest stored batches, ascending, as many as the recent tx index and the ring hold: the only batches read at
    /// startup. Each is checked as it is read back (counts, Merkle root, chain links, and the oldest one's parent against
    /// the history file).
    /// </summary>
    private List<StoredBatch> LoadRecentBatches()
    {
        const ulong PageBatches = 128;
        var loaded = new List<StoredBatch>();
        long txs = 0;
        long bytes = 0;
        var height = durable.LastHeight;
        var full = false;
        while (height >= 1 && !full)
        {
            var from = height > PageBatches ? height - PageBatches + 1 : 1;
            var page = store.Scan(from, height).ToList();
            Invariant.Check(page.Count == (int)(height - from + 1), $"the store holds every batch its checkpoint names ({from} to {height})");
            for (var i = page.Count - 1; i >= 0; i--)
            {
                var batch = page[i];
                if (loaded.Count == recent.Length || txs + batch.TxHashes.Length > limits.MaxRecentTxs
                    || bytes + RecentBatches.BytesFor(batch.TxHashes.Length) > limits.MaxRecentBatchBytes)
                {
                    full = true;
                    break;
                }

                // Check data read back before trusting it: a corrupt store must stop the node, not serve wrong data.
                batch.Verify();
                Invariant.Check(batch.Header.Height == from + (ulong)i, $"stored batch {from + (ulong)i} has its height");
                if (loaded.Count > 0)
                    Invariant.Check(loaded[^1].Header.ParentHash == batch.Header.Commitment, $"stored batch {loaded[^1].Header.Height} links to its parent");
                loaded.Add(batch);
                txs += batch.TxHashes.Length;
                bytes += RecentBatches.BytesFor(batch.TxHashes.Length);
            }

            height = from - 1;
        }

        loaded.Reverse();
        Invariant.Check(durable.LastHeight == 0 || (loaded.Count > 0 && loaded[^1].Header.Height == durable.LastHeight), "the newest stored batch is loaded");
        if (loaded.Count > 0 && loaded[0].Header.Height > 1)
        {
            // The batch below the loaded ones is not read: the history file holds its commitment.
            var below = loaded[0].Header.Height - 1;
            Invariant.Check(store.History.Node(0, below - 1) == MerkleTree.HashLeaf(loaded[0].Header.ParentHash),
                $"stored batch {below + 1} links to the commitment the history holds for {below}");
        }

        return loaded;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
#if SEQUENCER_TEST_FAULTS
        if (TestFaults.HangAtShutdown)
            await Task.Delay(Timeout.Infinite).ConfigureAwait(false);
#endif
        await stopping.CancelAsync().ConfigureAwait(false);
        await persister.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        try
        {
            await FlushAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // Shutdown must end cleanly: what is not in the store is still in the Raft log, which replays it.
            LogFinalFlushFailed(logger, e);
        }

        stopping.Dispose();
        storeWriter.Dispose();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The net change to the commitment pool over a group of applied entries, in log order.</summary>
    private sealed class PoolChanges
    {
        public bool Clear { get; private set; }

        public Dictionary<(int Signer, ulong Sequence), byte[]> Added { get; } = [];

        public HashSet<(int Signer, ulong Sequence)> Removed { get; } = [];

        public Dictionary<int, ulong> Next { get; } = [];

        public void Add(LedgerEffects effect)
        {
            if (effect.ClearCommitments)
            {
                Clear = true;
                Added.Clear();
                Removed.Clear();
                Next.Clear();
            }

            foreach (var added in effect.AddedCommitments)
            {
                Added[(added.Signer, added.Sequence)] = added.Value;
                Removed.Remove((added.Signer, added.Sequence));
            }

            foreach (var removed in effect.RemovedCommitments)
            {
                if (!Added.Remove(removed))
                    Removed.Add(removed);
            }

            foreach (var (signer, next) in effect.NextSequences)
                Next[signer] = next;
            if (effect.ClearDkg)
            {
                ClearDkg = true;
                DkgEntries.Clear();
            }

            if (effect.DkgPrefix is { } prefix)
                DkgEntries.AddRange(prefix);
            if (effect.DkgEntry is { } entry)
                DkgEntries.Add(entry);
        }

        public bool ClearDkg { get; private set; }

        public List<byte[]> DkgEntries { get; } = [];
    }

    // Dkg: the entries of the key generation in progress once this entry is applied (shared, immutable).
    private readonly record struct PendingEffect(long Index, long Term, StoredBatch? Batch, LedgerEffects? Signing, ulong SignedWatermark, long Bytes, ImmutableList<byte[]> Dkg);

    /// <summary><paramref name="factor"/> times <paramref name="value"/>, or <see cref="long.MaxValue"/> beyond it.</summary>
    private static long Saturating(int factor, long value) => value > long.MaxValue / factor ? long.MaxValue : factor * value;

    /// <summary>A persisted entry the snapshot point may move to, the entry's payload bytes, and the key generation in progress there.</summary>
    private readonly record struct SnapshotCandidate(SnapshotPoint Point, long Bytes, ImmutableList<byte[]> Dkg);

    [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "The snapshot at index {Index} is being sent again (a follower's install outlasted the Raft request timeout): the snapshot point moves to the newest stored entry once no transfer is in flight")]
    private static partial void LogSnapshotResent(ILogger logger, long index);

    [LoggerMessage(EventId = 106, Level = LogLevel.Information, Message = "A snapshot transfer waited {WaitedMs} ms at the compaction fence (timed out: {TimedOut}; a move waiting for reads: {MoveWanted}; point fenced at {FencedIndex}, log compacted through {ReclaimedIndex})")]
    private static partial void LogFenceWait(ILogger logger, long waitedMs, bool timedOut, bool moveWanted, long fencedIndex, long reclaimedIndex);

    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Loaded the store: height {Height}, applied index {AppliedIndex}, snapshot index {SnapshotIndex}, {TxCount} ordered txs; the newest {Batches} batches ({RecentTxs} txs) in memory")]
    private static partial void LogLoaded(ILogger logger, ulong height, long appliedIndex, long snapshotIndex, long txCount, int batches, int recentTxs);

    [LoggerMessage(EventId = 103, Level = LogLevel.Error, Message = "The final store write at shutdown failed; the Raft log replays the entries at the next start")]
    private static partial void LogFinalFlushFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 101, Level = LogLevel.Error, Message = "Writing applied batches to the store failed ({Failures} in a row); retrying")]
    private static partial void LogStoreFailed(ILogger logger, Exception exception, int failures);
}
