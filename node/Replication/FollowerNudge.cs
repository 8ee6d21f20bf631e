namespace Sequencer.Node.Replication;

/// <summary>
/// When the followers must learn a commit index soon (they serve a signature an entry carries, or sign a head), the
/// leader's next replication round tells them: a round goes out for every entry the leader proposes. This waits after a
/// request and calls <c>nudge</c> (a round with no entries) only if the leader proposed nothing since the latest request.
/// The wait follows the entries' rhythm (<see cref="EntryCadence"/>: twice the usual gap between them, within
/// [<c>delay</c>, <c>maxDelay</c>]), so that under load the next batch's round always comes first, however slow the
/// rounds, and no extra round is sent: each one costs a synchronous write on every node and holds up the next batch's
/// round, since DotNext runs one round at a time.
/// </summary>
/// <remarks>Coalesced: at most one check is pending, and it answers for every request made before it fires.</remarks>
public sealed class FollowerNudge : IDisposable
{
    private readonly TimeProvider time;
    private readonly long origin;
    private readonly EntryCadence cadence;
    private readonly Lock gate = new();
    private readonly Action nudge;
    private readonly ITimer timer;
    private long proposals;
    private long stamp;
    private int pending;

    /// <summary>Creates the deferral; <paramref name="nudge"/> runs on a timer thread and must not block.</summary>
    public FollowerNudge(TimeProvider time, TimeSpan delay, TimeSpan maxDelay, Action nudge)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(nudge);
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDelay, delay);
        this.time = time;
        origin = time.GetTimestamp();
        cadence = new EntryCadence((long)delay.TotalMilliseconds, (long)maxDelay.TotalMilliseconds);
        this.nudge = nudge;
        timer = time.CreateTimer(_ => Fire(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>How many nudges were sent, and how many checks found that a proposal had told the followers already.</summary>
    public (long Nudged, long Covered) Counters => (Interlocked.Read(ref nudged), Interlocked.Read(ref covered));

    private long nudged, covered;

    /// <summary>How long a request waits now for an entry to tell the followers.</summary>
    public TimeSpan Wait
    {
        get
        {
            lock (gate)
                return TimeSpan.FromMilliseconds(cadence.WaitMs);
        }
    }

    private long NowMs => (long)time.GetElapsedTime(origin).TotalMilliseconds;

    /// <summary>The leader proposed an entry: its replication round tells the followers the commit index.</summary>
    /// <remarks>Every entry counts, a rider's own too: any round tells the followers the commit index.</remarks>
    public void Proposed()
    {
        lock (gate)
            cadence.Entry(NowMs);
        Interlocked.Increment(ref proposals);
    }

    /// <summary>The followers must learn the current commit index within the wait.</summary>
    public void Request()
    {
        Volatile.Write(ref stamp, Interlocked.Read(ref proposals));
        if (Interlocked.Exchange(ref pending, 1) == 0)
            timer.Change(Wait, Timeout.InfiniteTimeSpan);
    }

    private void Fire()
    {
        Volatile.Write(ref pending, 0);
        if (Interlocked.Read(ref proposals) != Volatile.Read(ref stamp))
        {
            Interlocked.Increment(ref covered);
            return;
        }

        Interlocked.Increment(ref nudged);
        nudge();
    }

    /// <inheritdoc/>
    public void Dispose() => timer.Dispose();
}
