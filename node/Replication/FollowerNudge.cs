namespace Sequencer.Node.Replication;

/// <summary>
/// When the followers must learn a commit index soon (they serve a signature an entry carries, or sign a head), the
/// leader's next replication round tells them: a round goes out for every entry the leader proposes. This waits
/// <c>delay</c> after a request and calls <c>nudge</c> (a round with no entries) only if the leader proposed nothing
/// since the latest request. Under load the next batch's round always comes first, so no extra round is sent: each one
/// costs a synchronous write on every node and holds up the next batch's round, since DotNext runs one round at a time.
/// </summary>
/// <remarks>Coalesced: at most one check is pending, and it answers for every request made before it fires.</remarks>
public sealed class FollowerNudge : IDisposable
{
    private readonly TimeSpan delay;
    private readonly Action nudge;
    private readonly ITimer timer;
    private long proposals;
    private long stamp;
    private int pending;

    /// <summary>Creates the deferral; <paramref name="nudge"/> runs on a timer thread and must not block.</summary>
    public FollowerNudge(TimeProvider time, TimeSpan delay, Action nudge)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(nudge);
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        this.delay = delay;
        this.nudge = nudge;
        timer = time.CreateTimer(_ => Fire(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>How many nudges were sent, and how many checks found that a proposal had told the followers already.</summary>
    public (long Nudged, long Covered) Counters => (Interlocked.Read(ref nudged), Interlocked.Read(ref covered));

    private long nudged, covered;

    /// <summary>The leader proposed an entry: its replication round tells the followers the commit index.</summary>
    public void Proposed() => Interlocked.Increment(ref proposals);

    /// <summary>The followers must learn the current commit index within the delay.</summary>
    public void Request()
    {
        Volatile.Write(ref stamp, Interlocked.Read(ref proposals));
        if (Interlocked.Exchange(ref pending, 1) == 0)
            timer.Change(delay, Timeout.InfiniteTimeSpan);
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
