using System.Diagnostics;

namespace Sequencer.Node.Telemetry;

/// <summary>
/// Lets one line of a repeating event through per <see cref="Interval"/> and counts what it holds back, for a loop that
/// retries every few milliseconds (a failing disk would otherwise log an error with its stack trace on every retry).
/// The line it next lets through is told how much it held back. Time is an input (<see cref="Stopwatch"/> timestamps,
/// as in the loops that use it), so tests step it.
/// </summary>
/// <remarks>
/// Thread-safe. It throttles one call site, whatever the exception or the numbers in its line, and nothing else:
/// <see cref="ThrottledLoggerFactory"/> throttles every line of a logger, keyed by its text, which would also hold back
/// a signer's rare lines that must each be seen.
/// </remarks>
public sealed class LogThrottle(TimeSpan interval)
{
    private readonly Lock gate = new();
    private long writtenAt;
    private bool written;
    private long heldBack;

    /// <summary>A line is let through at most this often.</summary>
    public TimeSpan Interval => interval;

    /// <summary>
    /// True when a line for an event of <paramref name="weight"/> (1 for a failure; a count of sessions, say) may be
    /// written at <paramref name="now"/>: <paramref name="held"/> is then the total weight held back since the last one.
    /// False (and the weight is counted) when one was written less than <see cref="Interval"/> before.
    /// </summary>
    public bool Admit(long now, long weight, out long held)
    {
        lock (gate)
        {
            if (written && Stopwatch.GetElapsedTime(writtenAt, now) < interval)
            {
                heldBack += weight;
                held = 0;
                return false;
            }

            held = heldBack;
            heldBack = 0;
            written = true;
            writtenAt = now;
            return true;
        }
    }
}
