using Sequencer.Core;

namespace Sequencer.Raft;

/// <summary>
/// Tracks snapshots being sent to lagging followers, so that log compaction waits for them.
/// </summary>
/// <remarks>
/// <para>
/// DotNext sends a follower the snapshot when the entry it needs next is at or below the snapshot index, followed by the
/// log after it. The snapshot index is also the compaction point. While a snapshot of the whole history streams to a
/// follower and is installed there, the leader keeps ordering and storing, and its compaction point moved on with the
/// store: the follower then needed an entry that was already compacted, and was sent the next snapshot, a few entries
/// later, over and over (measured: a wiped or restarted follower installing one snapshot every 0.4 to 1.4 s, each a few
/// entries further, for as long as the load lasted, with the leader's CPU spent on streaming them).
/// </para>
/// <para>
/// So while a transfer is in flight, and for a grace period after it ends (the follower installs what it received
/// before it asks for the entries after it: at least <see cref="MinimumGrace"/> or three times the transfer's duration,
/// at most <see cref="MaximumGrace"/>), the snapshot point stays where it was. The hold is bounded by the caller: it
/// lets the retained log grow only to a fixed multiple of its normal size, so a follower that never finishes cannot
/// make the leader's memory grow without limit.
/// </para>
/// <para>
/// A transfer of a point that was already sent in full to the same follower is a resend: DotNext 6.12 resends a
/// snapshot whose answer timed out (the Raft request timeout covers the transfer and the install), and a follower that
/// did install it refuses the same index again (<c>snapshotIndex &gt; LastCommittedEntryIndex</c> in
/// <c>RaftCluster.InstallSnapshotAsync</c>), so the leader would send it over and over until its point moves. <see cref="Repeated"/> tells the owner to move the point
/// to the newest stored entry as soon as no transfer is in flight (<see cref="AllEnded"/>: moving the point compacts
/// the log, which would wait for the transfer's read of it while every other read queues behind, long enough for the
/// leader to lose its majority): the follower accepts the newer snapshot, and its install is cheap because it already
/// holds nearly all of it.
/// </para>
/// <para>
/// <b>The compaction fence.</b> Every move of the point makes DotNext compact the log under a barrier that waits for
/// every read in progress, and every later read (the flusher's, the applier's, replication to the other followers)
/// queues behind the barrier. A snapshot transfer reads under the lock for as long as it streams, up to the Raft request
/// timeout. So a move while a transfer streamed stalled the whole cluster for up to 2 s: measured on <c>make run</c> with
/// a follower restarted on an empty disk under 47,000 bulk tx/s, the hold's bound was reached about 10 s into the
/// catch-up, and from then the healthy follower lost the leader every 20 s or so (terms 1 to 7, 1,531 client errors).
/// The owner now moves the point only through <see cref="TryFence"/>: it succeeds when no snapshot read or transfer is
/// in progress, and from then until DotNext has compacted up to the new point (<see cref="Reclaimed"/>) new snapshot reads wait in
/// <see cref="AdmitAsync"/> before they take the lock. When a read is in progress it fails, and new reads wait from
/// then on, so the read in progress is the last before the move (it ends within the request timeout). Every wait is
/// bounded by <see cref="AdmissionWait"/>, after which the read goes ahead and the fence is dropped: a point that was
/// fenced but never published (a failed store write) or a compaction that never comes costs one wait, not a stall.
/// Should the log still grow to twice the hold's bound, the owner moves the point without the fence.
/// </para>
/// </remarks>
public sealed class SnapshotTransfers(TimeProvider time)
{
    /// <summary>The shortest hold after a transfer ends.</summary>
    public static readonly TimeSpan MinimumGrace = TimeSpan.FromSeconds(10);

    /// <summary>The longest hold after a transfer ends.</summary>
    public static readonly TimeSpan MaximumGrace = TimeSpan.FromMinutes(5);

    private readonly Lock gate = new();
    private int inFlight;
    private long holdUntil;
    private long started;
    private long completed;
    // The point last sent in full to each recipient (a follower's Raft endpoint; "" when the transfer does not know it).
    private readonly Dictionary<string, long> lastSent = [];
    private const int MaxRecipients = 64;
    private long repeats;

    // The compaction fence: snapshot reads admitted and not yet ended; whether the owner wants to move the point and
    // waits for them; the newest point released for compaction and the newest DotNext compacted up to; the waiters.
    private int reading;
    private bool compactionWanted;
    private long fencedIndex, reclaimedIndex;
    private TaskCompletionSource? admissions;
    private long admissionWaits, admissionTimeouts, fenceRefusals;

    /// <summary>Raised (outside any lock) when a point that was already sent in full is sent again.</summary>
    public event Action<long>? Repeated;

    /// <summary>Raised (outside any lock) when the last snapshot read ends while the owner waits to move the point (<see cref="TryFence"/>).</summary>
    public event Action? FenceClear;

    /// <summary>Raised (outside any lock) when the last transfer in flight ends.</summary>
    public event Action? AllEnded;

    /// <summary>
    /// Raised (outside any lock) when a snapshot read waited at the fence: how long, and whether the wait ran out
    /// (<see cref="AdmissionWait"/>) before the moved point was compacted.
    /// </summary>
    public event Action<AdmissionWaitReport>? AdmissionWaited;

    /// <summary>Whether compaction should wait: a transfer is in flight or ended within its grace period.</summary>
    public bool Holding
    {
        get
        {
            lock (gate)
                return inFlight > 0 || time.GetTimestamp() < holdUntil;
        }
    }

    /// <summary>Transfers begun, finished (successfully or not) and resent since the start.</summary>
    public (long Started, long Completed, long Repeats) Counters
    {
        get
        {
            lock (gate)
                return (started, completed, repeats);
        }
    }

    /// <summary>
    /// The longest a snapshot read waits at the fence before it reads anyway (see the remarks): longer than the Raft
    /// request timeout (2 s by default), which bounds the read in progress, so that reads for two followers cannot take
    /// turns holding the move back.
    /// </summary>
    public static readonly TimeSpan AdmissionWait = TimeSpan.FromSeconds(3);

    /// <summary>Snapshot reads that waited at the fence, those whose wait ran out, and moves of the point deferred because a read was in progress.</summary>
    public (long Waits, long Timeouts, long Refusals) FenceCounters
    {
        get
        {
            lock (gate)
                return (admissionWaits, admissionTimeouts, fenceRefusals);
        }
    }

    // New snapshot reads wait: a move of the point waits for the reads in progress, or a moved point is not compacted yet.
    private bool BlockedLocked => compactionWanted || fencedIndex > reclaimedIndex;

    /// <summary>
    /// Before a snapshot read takes the log's read lock: waits while the owner wants to move the point or a moved point
    /// is not compacted yet, at most <see cref="AdmissionWait"/>. Dispose the result when the read ends, however it ends.
    /// </summary>
    public async ValueTask<Admission> AdmitAsync(CancellationToken token)
    {
        var began = time.GetTimestamp();
        var waited = false;
        while (true)
        {
            Task wait;
            Admission? admitted = null;
            AdmissionWaitReport? report = null;
            lock (gate)
            {
                var remaining = AdmissionWait - time.GetElapsedTime(began);
                if (!BlockedLocked || remaining <= TimeSpan.Zero)
                {
                    if (waited)
                        report = new AdmissionWaitReport(time.GetElapsedTime(began), BlockedLocked, compactionWanted, fencedIndex, reclaimedIndex);
                    if (BlockedLocked)
                    {
                        // The fence was not lifted in time: drop it, so that it costs one wait, not one per read.
                        admissionTimeouts++;
                        compactionWanted = false;
                        reclaimedIndex = Math.Max(reclaimedIndex, fencedIndex);
                        ReleaseAdmissionsLocked()?.TrySetResult();
                    }

                    reading++;
                    admitted = new Admission(this);
                    wait = Task.CompletedTask;
                }
                else
                {
                    if (!waited)
                    {
                        waited = true;
                        admissionWaits++;
                    }

                    admissions ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = admissions.Task.WaitAsync(remaining, time, token);
                }
            }

            if (admitted is not null)
            {
                if (report is not null)
                    AdmissionWaited?.Invoke(report);
                return admitted;
            }

            try
            {
                await wait.ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    /// <summary>
    /// The owner is about to move the snapshot point to <paramref name="index"/>, which makes DotNext compact the log
    /// up to it: true when no snapshot read or transfer is in progress, and new reads then wait until
    /// <see cref="Reclaimed"/> reports that index. False when one is in progress: new reads wait from now, and the
    /// owner tries again later (<see cref="FenceClear"/> tells it when).
    /// </summary>
    public bool TryFence(long index)
    {
        lock (gate)
        {
            if (reading > 0 || inFlight > 0)
            {
                if (!compactionWanted)
                    fenceRefusals++;
                compactionWanted = true;
                return false;
            }

            compactionWanted = false;
            fencedIndex = Math.Max(fencedIndex, index);
            return true;
        }
    }

    /// <summary>
    /// The owner decided, with no read in its way, not to move the point now (the log is within its window, or a
    /// transfer or a silent follower holds it): a move deferred by <see cref="TryFence"/> is no longer wanted, and reads
    /// that waited for it go on. Without this, the wish of a refused fence held every new snapshot read for the whole
    /// <see cref="AdmissionWait"/> (measured in the chaos disk scenario: a wiped follower whose install outlasted the
    /// request timeout, and so counted silent, which is what holds the point, was kept waiting 3 s).
    /// </summary>
    /// <param name="onlyWhenClear">Withdraw only when no snapshot read or transfer is in progress (the owner has
    /// nothing to store, and will not try the move before it has: see <see cref="FenceClear"/>).</param>
    public void Withdraw(bool onlyWhenClear = false)
    {
        TaskCompletionSource? release;
        lock (gate)
        {
            if (!compactionWanted || (onlyWhenClear && (reading > 0 || inFlight > 0)))
                return;
            compactionWanted = false;
            release = ReleaseAdmissionsLocked();
        }

        release?.TrySetResult();
    }

    /// <summary>DotNext compacted the log up to <paramref name="index"/> (the state machine's garbage reclamation): reads may go on.</summary>
    public void Reclaimed(long index)
    {
        TaskCompletionSource? release;
        lock (gate)
        {
            reclaimedIndex = Math.Max(reclaimedIndex, index);
            release = ReleaseAdmissionsLocked();
        }

        release?.TrySetResult();
    }

    private TaskCompletionSource? ReleaseAdmissionsLocked()
    {
        if (BlockedLocked)
            return null;
        var release = admissions;
        admissions = null;
        return release;
    }

    private void EndRead()
    {
        bool wanted;
        lock (gate)
        {
            Invariant.Check(reading > 0, "a snapshot read ends only once");
            reading--;
            wanted = reading == 0 && inFlight == 0 && compactionWanted;
        }

        if (wanted)
            FenceClear?.Invoke();
    }

    /// <summary>One snapshot read admitted past the fence.</summary>
    public sealed class Admission(SnapshotTransfers owner) : IDisposable
    {
        private int ended;

        /// <inheritdoc/>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref ended, 1) == 0)
                owner.EndRead();
        }
    }

    /// <summary>Ends the hold at once (the point is about to move to a newer snapshot anyway).</summary>
    public void ReleaseHold()
    {
        lock (gate)
            holdUntil = 0;
    }

    /// <summary>
    /// The follower the snapshot transfer this asynchronous flow makes goes to (its Raft endpoint), set by the leader's
    /// replication read; null when unknown.
    /// </summary>
    public static string? Recipient
    {
        get => recipient.Value;
        set => recipient.Value = value;
    }

    private static readonly AsyncLocal<string?> recipient = new();

    /// <summary>
    /// Marks the start of a transfer of the snapshot at <paramref name="index"/> to <paramref name="to"/> (default: the
    /// flow's <see cref="Recipient"/>); dispose the result when it ends, however it ends. It is a resend (see
    /// <see cref="Repeated"/>) only when that same recipient was sent that point in full: a second follower that
    /// needs the snapshot another one just installed is not one.
    /// </summary>
    public Transfer Begin(long index, string? to = null)
    {
        var key = to ?? Recipient ?? "";
        bool repeat;
        lock (gate)
        {
            inFlight++;
            started++;
            repeat = lastSent.TryGetValue(key, out var sent) && sent == index;
            if (repeat)
                repeats++;
        }

        if (repeat)
            Repeated?.Invoke(index);
        return new Transfer(this, time.GetTimestamp(), index, key);
    }

    private void End(long beganAt, long index, string key, bool complete)
    {
        var now = time.GetTimestamp();
        var took = time.GetElapsedTime(beganAt, now);
        var grace = TimeSpan.FromTicks(Math.Clamp(took.Ticks * 3, MinimumGrace.Ticks, MaximumGrace.Ticks));
        bool idle, wanted;
        lock (gate)
        {
            Invariant.Check(inFlight > 0, "a snapshot transfer ends only once");
            inFlight--;
            completed++;
            if (complete)
            {
                // Bounded: the recipients are the members, and a membership that changed many times starts over.
                if (lastSent.Count >= MaxRecipients && !lastSent.ContainsKey(key))
                    lastSent.Clear();
                lastSent[key] = index;
            }
            holdUntil = Math.Max(holdUntil, now + (long)(grace.TotalSeconds * time.TimestampFrequency));
            idle = inFlight == 0;
            wanted = idle && reading == 0 && compactionWanted;
        }

        if (idle)
            AllEnded?.Invoke();
        if (wanted)
            FenceClear?.Invoke();
    }

    /// <summary>One transfer in flight.</summary>
    public sealed class Transfer(SnapshotTransfers owner, long beganAt, long index, string key) : IDisposable
    {
        private int ended;
        private bool complete;

        /// <summary>Every byte of the snapshot was handed to the transport.</summary>
        public void Completed() => complete = true;

        /// <inheritdoc/>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref ended, 1) == 0)
                owner.End(beganAt, index, key, complete);
        }
    }
}

/// <summary>
/// A snapshot read that waited at the compaction fence: how long, whether the wait ran out, and what held it (a move
/// of the point waiting for reads to end, or a moved point not yet compacted: the fenced and the compacted index).
/// </summary>
public sealed record AdmissionWaitReport(TimeSpan Waited, bool TimedOut, bool MoveWanted, long FencedIndex, long ReclaimedIndex);
