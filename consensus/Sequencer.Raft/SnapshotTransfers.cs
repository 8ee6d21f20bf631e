using System.Diagnostics;

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
/// A transfer of a point that was already sent in full is a resend: DotNext 6.12 resends a snapshot whose answer timed
/// out (the Raft request timeout covers the transfer and the install), and a follower that did install it refuses the
/// same index again (<c>snapshotIndex &gt; LastCommittedEntryIndex</c> in <c>RaftCluster.InstallSnapshotAsync</c>), so the
/// leader would send it over and over until its point moves. <see cref="Repeated"/> tells the owner to move the point
/// to the newest stored entry as soon as no transfer is in flight (<see cref="AllEnded"/>: moving the point compacts
/// the log, which would wait for the transfer's read of it while every other read queues behind, long enough for the
/// leader to lose its majority): the follower accepts the newer snapshot, and its install is cheap because it already
/// holds nearly all of it.
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
    private long lastSentIndex = -1;
    private long repeats;

    /// <summary>Raised (outside any lock) when a point that was already sent in full is sent again.</summary>
    public event Action<long>? Repeated;

    /// <summary>Raised (outside any lock) when the last transfer in flight ends.</summary>
    public event Action? AllEnded;

    /// <summary>Transfers in flight now: each holds a read of the WAL, and compaction would wait for it.</summary>
    public int InFlight
    {
        get
        {
            lock (gate)
                return inFlight;
        }
    }

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

    /// <summary>Ends the hold at once (the point is about to move to a newer snapshot anyway).</summary>
    public void ReleaseHold()
    {
        lock (gate)
            holdUntil = 0;
    }

    /// <summary>Marks the start of a transfer of the snapshot at <paramref name="index"/>; dispose the result when it ends, however it ends.</summary>
    public Transfer Begin(long index)
    {
        bool repeat;
        lock (gate)
        {
            inFlight++;
            started++;
            repeat = index == lastSentIndex;
            if (repeat)
                repeats++;
        }

        if (repeat)
            Repeated?.Invoke(index);
        return new Transfer(this, time.GetTimestamp(), index);
    }

    private void End(long beganAt, long index, bool complete)
    {
        var now = time.GetTimestamp();
        var took = time.GetElapsedTime(beganAt, now);
        var grace = TimeSpan.FromTicks(Math.Clamp(took.Ticks * 3, MinimumGrace.Ticks, MaximumGrace.Ticks));
        bool idle;
        lock (gate)
        {
            Debug.Assert(inFlight > 0);
            inFlight--;
            completed++;
            if (complete)
                lastSentIndex = index;
            holdUntil = Math.Max(holdUntil, now + (long)(grace.TotalSeconds * time.TimestampFrequency));
            idle = inFlight == 0;
        }

        if (idle)
            AllEnded?.Invoke();
    }

    /// <summary>One transfer in flight.</summary>
    public sealed class Transfer(SnapshotTransfers owner, long beganAt, long index) : IDisposable
    {
        private int ended;
        private bool complete;

        /// <summary>Every byte of the snapshot was handed to the transport.</summary>
        public void Completed() => complete = true;

        /// <inheritdoc/>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref ended, 1) == 0)
                owner.End(beganAt, index, complete);
        }
    }
}
