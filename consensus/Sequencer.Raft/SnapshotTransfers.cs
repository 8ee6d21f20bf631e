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

    /// <summary>Whether compaction should wait: a transfer is in flight or ended within its grace period.</summary>
    public bool Holding
    {
        get
        {
            lock (gate)
                return inFlight > 0 || time.GetTimestamp() < holdUntil;
        }
    }

    /// <summary>Transfers begun and finished (successfully or not) since the start.</summary>
    public (long Started, long Completed) Counters
    {
        get
        {
            lock (gate)
                return (started, completed);
        }
    }

    /// <summary>Marks the start of a transfer; dispose the result when it ends, however it ends.</summary>
    public Transfer Begin()
    {
        lock (gate)
        {
            inFlight++;
            started++;
        }

        return new Transfer(this, time.GetTimestamp());
    }

    private void End(long beganAt)
    {
        var now = time.GetTimestamp();
        var took = time.GetElapsedTime(beganAt, now);
        var grace = TimeSpan.FromTicks(Math.Clamp(took.Ticks * 3, MinimumGrace.Ticks, MaximumGrace.Ticks));
        lock (gate)
        {
            Debug.Assert(inFlight > 0);
            inFlight--;
            completed++;
            holdUntil = Math.Max(holdUntil, now + (long)(grace.TotalSeconds * time.TimestampFrequency));
        }
    }

    /// <summary>One transfer in flight.</summary>
    public sealed class Transfer(SnapshotTransfers owner, long beganAt) : IDisposable
    {
        private int ended;

        /// <inheritdoc/>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref ended, 1) == 0)
                owner.End(beganAt);
        }
    }
}
