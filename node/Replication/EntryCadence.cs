namespace Sequencer.Node.Replication;

/// <summary>
/// The rhythm of the leader's entries, for what would rather ride the next one than cost a replication round of its own
/// (a head signature, a session record, a commit index the followers must learn). Each such round costs a synchronous
/// write on every node and holds up the next batch's round (DotNext runs one round at a time), so while entries flow a
/// rider waits for the next one: twice the usual gap between entries, at least <c>minWaitMs</c>. When that would be more
/// than <c>maxWaitMs</c>, entries are too rare to wait for, and a rider waits only <c>minWaitMs</c>. A fixed short wait
/// was too short whenever a round took longer than it (a slow disk: batches 14 ms apart, and nearly one extra round a
/// session, measured on 2026-12-07), and a fixed long one would delay a quiet cluster's riders for nothing.
/// </summary>
/// <remarks>Pure (time is an argument) and not thread-safe: its owner serializes the calls.</remarks>
public sealed class EntryCadence
{
    // The weight of the newest gap in the running mean (1/8, as TCP's smoothed round trip).
    private const double Weight = 1.0 / 8;
    private readonly long minWaitMs;
    private readonly long maxWaitMs;
    private long lastMs;
    private bool seen;
    private double meanGapMs;

    /// <summary>A cadence whose wait stays within [<paramref name="minWaitMs"/>, <paramref name="maxWaitMs"/>].</summary>
    public EntryCadence(long minWaitMs, long maxWaitMs)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minWaitMs);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxWaitMs, minWaitMs);
        this.minWaitMs = minWaitMs;
        this.maxWaitMs = maxWaitMs;
        Reset();
    }

    /// <summary>An entry went out at <paramref name="nowMs"/>.</summary>
    public void Entry(long nowMs)
    {
        if (seen && nowMs - lastMs > maxWaitMs)
        {
            // Entries stopped for longer than any rider waits: what comes next is a new flow, whose rhythm is learned
            // afresh (an old flow's mean would hold the next lone entry's riders for nothing).
            meanGapMs = minWaitMs / 2.0;
        }
        else if (seen)
        {
            meanGapMs += (Math.Max(0, nowMs - lastMs) - meanGapMs) * Weight;
        }

        seen = true;
        lastMs = nowMs;
    }

    /// <summary>Forgets the rhythm, not when the last entry went out (a new leadership's entries start a new flow).</summary>
    public void Reset() => meanGapMs = minWaitMs / 2.0;

    /// <summary>How long a rider waits for the next entry now.</summary>
    public long WaitMs
    {
        get
        {
            var wait = (long)Math.Ceiling(2 * meanGapMs);
            return wait > maxWaitMs ? minWaitMs : Math.Max(wait, minWaitMs);
        }
    }

    /// <summary>True when no entry went out for <see cref="WaitMs"/> (and at least <paramref name="atLeastMs"/>): none is coming soon.</summary>
    public bool Quiet(long nowMs, long atLeastMs = 0) => !seen || nowMs - lastMs >= Math.Max(WaitMs, atLeastMs);
}
