using System.Globalization;

namespace Sequencer.Bench;

/// <summary>
/// DotNext's own Raft and WAL meters on the leader, read from its <c>/metrics</c> (Prometheus text): the replication
/// round (<c>broadcast-time</c>: AppendEntries to every follower until a majority answered), and the WAL flush
/// (<c>entries-flush-duration</c>: the synchronous page and checkpoint writes). Sums and counts, so two reads give the
/// rounds per second and the mean of each over the period between them.
/// </summary>
internal readonly record struct RaftMeters(double RoundMsSum, long Rounds, double FlushMsSum, long Flushes)
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    /// <summary>Reads the leader's meters; zeros when it exports none (a node without DotNext's meters).</summary>
    public static async Task<RaftMeters> ReadAsync(Uri leader, CancellationToken token)
    {
        try
        {
            return Parse(await Http.GetStringAsync(new Uri(leader, "/metrics"), token));
        }
        catch (HttpRequestException)
        {
            return default;
        }
    }

    /// <summary>Sums every series of the two histograms (the round is labelled by the leader's address).</summary>
    public static RaftMeters Parse(string text)
    {
        double roundSum = 0, flushSum = 0;
        long rounds = 0, flushes = 0;
        foreach (var raw in text.AsSpan().EnumerateLines())
        {
            var line = raw.Trim();
            if (line.IsEmpty || line[0] == '#')
                continue;
            var name = line[..Math.Max(0, line.IndexOfAny('{', ' '))];
            var space = line.LastIndexOf(' ');
            if (space < 0 || !double.TryParse(line[(space + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
                continue;
            switch (name)
            {
                case "broadcast_time_milliseconds_sum": roundSum += value; break;
                case "broadcast_time_milliseconds_count": rounds += (long)value; break;
                case "entries_flush_duration_milliseconds_sum": flushSum += value; break;
                case "entries_flush_duration_milliseconds_count": flushes += (long)value; break;
            }
        }

        return new RaftMeters(roundSum, rounds, flushSum, flushes);
    }

    /// <summary>Rounds per second, the mean round and the mean flush between <paramref name="before"/> and this read.</summary>
    public (double RoundsPerSecond, double? RoundMs, double? FlushMs) Since(RaftMeters before, double seconds)
    {
        var rounds = Rounds - before.Rounds;
        var flushes = Flushes - before.Flushes;
        return (rounds / Math.Max(seconds, 1e-9),
            rounds > 0 ? (RoundMsSum - before.RoundMsSum) / rounds : null,
            flushes > 0 ? (FlushMsSum - before.FlushMsSum) / flushes : null);
    }
}
