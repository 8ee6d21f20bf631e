using System.Globalization;
using Sequencer.Client;

namespace Sequencer.Bench;

/// <summary>
/// Every member's JIT compilation time so far (the runtime's own <c>dotnet.jit.compilation.time</c> counter, which each
/// node exports at <c>/metrics</c>). A fresh node spends minutes of its first load in the JIT's tiers: on this 2-core
/// VM a leader 30 s into bulk load with signing spent 0.4 of a core compiling (`perf`, 2026-12-08), which a scenario
/// measured there counts against signing. The bench's cluster warm-up therefore runs until the JIT has settled on every
/// node, not for a fixed time.
/// </summary>
internal sealed class JitProbe
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };
    private readonly List<(int Id, Uri Api)> members;

    private JitProbe(List<(int Id, Uri Api)> members) => this.members = members;

    /// <summary>The metric's name in Prometheus text (seconds, a counter).</summary>
    public const string MetricName = "dotnet_jit_compilation_time_seconds_total";

    /// <summary>Finds the members through <paramref name="target"/>'s <c>GET /v1/cluster</c>.</summary>
    public static async Task<JitProbe> CreateAsync(SequencerClient target, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(target);
        var view = await target.GetClusterAsync(token);
        return new JitProbe([.. view.Members.OrderBy(m => m.Id).Select(m => (m.Id, new Uri(m.Api)))]);
    }

    /// <summary>Each member's JIT seconds so far, by member id; null for a member that did not answer or exports none.</summary>
    public async Task<IReadOnlyDictionary<int, double?>> ReadAsync(CancellationToken token)
    {
        var reads = await Task.WhenAll(members.Select(async m => (m.Id, Seconds: await ReadOneAsync(m.Api, token))));
        return reads.ToDictionary(r => r.Id, r => r.Seconds);
    }

    private static async Task<double?> ReadOneAsync(Uri api, CancellationToken token)
    {
        try
        {
            return Parse(await Http.GetStringAsync(new Uri(api, "/metrics"), token));
        }
        catch (Exception e) when (e is HttpRequestException || (e is OperationCanceledException && !token.IsCancellationRequested))
        {
            // Unreachable, or slower than the client's timeout (HttpClient's own token is the cancelled one then).
            return null;
        }
    }

    /// <summary>The counter's value in a Prometheus text page (summed over its series), or null when the page has none.</summary>
    public static double? Parse(string text)
    {
        double? total = null;
        foreach (var raw in text.AsSpan().EnumerateLines())
        {
            var line = raw.Trim();
            if (line.IsEmpty || line[0] == '#' || !line.StartsWith(MetricName, StringComparison.Ordinal))
                continue;
            var rest = line[MetricName.Length..];
            if (rest.IsEmpty || (rest[0] != ' ' && rest[0] != '{'))
                continue;
            var value = rest[(rest.LastIndexOf('}') + 1)..].Trim();
            var space = value.IndexOf(' ');
            if (space > 0)
                value = value[..space];
            if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds))
                total = (total ?? 0) + seconds;
        }

        return total;
    }

    /// <summary>
    /// The JIT's share of a core on each member between two reads (null for a member missing from either), and whether
    /// every member reported and stayed under <paramref name="settledShare"/>.
    /// </summary>
    public static (IReadOnlyDictionary<int, double?> Shares, bool Settled) Compare(
        IReadOnlyDictionary<int, double?> before, IReadOnlyDictionary<int, double?> after, double seconds, double settledShare)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(after);
        var shares = after.ToDictionary(
            p => p.Key,
            p => p.Value is { } now && before.GetValueOrDefault(p.Key) is { } then ? (now - then) / Math.Max(seconds, 1e-9) : (double?)null);
        return (shares, shares.Count > 0 && shares.Values.All(s => s is { } share && share < settledShare));
    }
}
