using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Sequencer.Bench;

/// <summary>
/// etcd beside the cluster: the table with the ratios and targets, the JSON of the whole run and an SVG chart
/// (throughput, and p50/p99 latency, against clients, both systems).
/// </summary>
internal static class SideBySide
{
    public static void Print(IReadOnlyList<ScenarioResult> etcd, RunOutcome? ours)
    {
        Console.WriteLine();
        Console.WriteLine("side by side (etcd puts to the leader; ours: single submits to the leader, the full product with signing when run):");
        Console.WriteLine($"{"clients",7} {"etcd/s",9} {"etcd p99",9} {"ours/s",9} {"ours p99",9} {"tput ×",7} {"p99 ×",7} {"bulk tx/s",10}   target");
        foreach (var e in etcd)
        {
            var single = ours?.Rows.FirstOrDefault(r => r.Scenario.Mode == "single" && r.Scenario.Clients == e.Clients && r.Scenario.RequestsPerSecond is null)?.Load;
            var bulk = ours?.Rows.FirstOrDefault(r => r.Scenario.Mode == "bulk" && r.Scenario.Clients == e.Clients)?.Load;
            if (single is null)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.Clients,7} {e.TxPerSecond,9:0} {e.P99Ms,9:0.0}"));
                continue;
            }

            var throughput = single.TxPerSecond / e.TxPerSecond;
            var p99 = single.P99Ms / e.P99Ms;
            var wanted = e.Clients >= 64 ? 3.0 : 1.0;
            var met = throughput >= wanted && (e.Clients < 64 || p99 <= 1.0);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{e.Clients,7} {e.TxPerSecond,9:0} {e.P99Ms,9:0.0} {single.TxPerSecond,9:0} {single.P99Ms,9:0.0} {throughput,7:0.00} {p99,7:0.00} {bulk?.TxPerSecond,10:0}   ≥{wanted:0}× tput{(e.Clients >= 64 ? ", p99 ≤ etcd's" : "")}: {(met ? "met" : "NOT met")}"));
        }

        if (ours?.Rows.Where(r => r.Scenario.Mode == "bulk").MaxBy(r => r.Load.TxPerSecond) is { } best)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bulk submits: best {best.Load.TxPerSecond:0} tx/s ({best.Scenario.Clients} clients); target ≥ 100,000: {(best.Load.TxPerSecond >= 100_000 ? "met" : "NOT met")}"));
    }

    /// <summary>Writes <c>latest.json</c> and <c>latest.svg</c> under <paramref name="directory"/>.</summary>
    public static void Write(string directory, double fsyncP50Us, IReadOnlyList<ScenarioResult>? etcd, IReadOnlyDictionary<bool, RunOutcome> ours)
    {
        Directory.CreateDirectory(directory);
        var json = Path.Combine(directory, "latest.json");
        using (var stream = File.Create(json))
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("date", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            writer.WriteNumber("cores", Environment.ProcessorCount);
            writer.WriteNumber("fdatasyncP50Us", Math.Round(fsyncP50Us, 1));
            if (etcd is not null)
                WriteRows(writer, "etcd", etcd);
            foreach (var (signing, outcome) in ours)
                WriteRows(writer, signing ? "oursSigning" : "oursOrderingOnly", outcome.Rows.Select(r => r.Load).ToList());
            writer.WriteEndObject();
        }

        var svg = Path.Combine(directory, "latest.svg");
        File.WriteAllText(svg, Chart(etcd, ours.GetValueOrDefault(true) ?? ours.GetValueOrDefault(false)));
        Console.WriteLine();
        Console.WriteLine($"wrote {json} and {svg}");
    }

    private static void WriteRows(Utf8JsonWriter writer, string name, IReadOnlyList<ScenarioResult> rows)
    {
        writer.WriteStartArray(name);
        foreach (var row in rows)
        {
            writer.WriteStartObject();
            writer.WriteString("mode", row.Mode);
            writer.WriteNumber("clients", row.Clients);
            writer.WriteNumber("txsPerRequest", row.TxsPerRequest);
            writer.WriteNumber("perSecond", Math.Round(row.TxPerSecond, 1));
            writer.WriteNumber("p50Ms", Math.Round(row.P50Ms, 2));
            writer.WriteNumber("p99Ms", Math.Round(row.P99Ms, 2));
            writer.WriteNumber("maxMs", Math.Round(row.MaxMs, 2));
            writer.WriteNumber("errors", row.Errors);
            writer.WriteEndObject();
        }

        writer.WriteEndArray();
    }

    // Two panels: throughput against clients (log scale), and p50 (dashed) / p99 (solid) latency against clients.
    private static string Chart(IReadOnlyList<ScenarioResult>? etcd, RunOutcome? ours)
    {
        var clients = new[] { 1, 16, 64, 256 };
        var series = new List<(string Name, string Color, Func<int, ScenarioResult?> Row)>();
        if (etcd is not null)
            series.Add(("etcd puts", "#d62728", c => etcd.FirstOrDefault(r => r.Clients == c)));
        if (ours is not null)
        {
            var label = ours.Signing ? "ours, signing" : "ours";
            series.Add(($"{label}, single", "#1f77b4", c => ours.Rows.FirstOrDefault(r => r.Scenario.Mode == "single" && r.Scenario.Clients == c)?.Load));
            series.Add(($"{label}, bulk ×100 (tx/s)", "#2ca02c", c => ours.Rows.FirstOrDefault(r => r.Scenario.Mode == "bulk" && r.Scenario.Clients == c)?.Load));
        }

        const int width = 1000, height = 400, panel = 420, top = 40, plot = 280, left = 70;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        Panel(0, "requests (txs for bulk) per second", r => r.TxPerSecond, dashed: false, p50: false);
        Panel(1, "latency ms (p99 solid, p50 dashed)", r => r.P99Ms, dashed: false, p50: true);
        var y = height - 30;
        var x = left;
        foreach (var (name, color, _) in series)
        {
            svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x}\" y=\"{y - 10}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{x + 16}\" y=\"{y}\">{name}</text>\n");
            x += 230;
        }

        svg.Append("</svg>\n");
        return svg.ToString();

        void Panel(int index, string title, Func<ScenarioResult, double> value, bool dashed, bool p50)
        {
            var x0 = left + index * (panel + 60);
            var values = series.SelectMany(s => clients.Select(c => s.Row(c)).Where(r => r is not null).SelectMany(r => p50 ? new[] { r!.P50Ms, r.P99Ms } : [value(r!)]))
                .Where(v => v > 0 && double.IsFinite(v)).ToList();
            if (values.Count == 0)
                return;
            var low = Math.Floor(Math.Log10(values.Min()));
            var high = Math.Ceiling(Math.Log10(values.Max()));
            if (high <= low)
                high = low + 1;
            double Y(double v) => top + plot - (Math.Log10(v) - low) / (high - low) * plot;
            double X(int i) => x0 + 30 + i * ((panel - 60) / (double)(clients.Length - 1));
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0}\" y=\"{top - 15}\" font-weight=\"bold\">{title}</text>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x0}\" y=\"{top}\" width=\"{panel}\" height=\"{plot}\" fill=\"none\" stroke=\"#999\"/>\n");
            for (var decade = low; decade <= high; decade++)
            {
                var gy = Y(Math.Pow(10, decade));
                svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{x0}\" y1=\"{gy:0.0}\" x2=\"{x0 + panel}\" y2=\"{gy:0.0}\" stroke=\"#eee\"/><text x=\"{x0 - 6}\" y=\"{gy + 4:0.0}\" text-anchor=\"end\">{Math.Pow(10, decade):#,0.###}</text>\n");
            }

            for (var i = 0; i < clients.Length; i++)
                svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(i):0.0}\" y=\"{top + plot + 16}\" text-anchor=\"middle\">{clients[i]}</text>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + panel / 2}\" y=\"{top + plot + 32}\" text-anchor=\"middle\">clients</text>\n");
            foreach (var (_, color, row) in series)
            {
                foreach (var (pick, dash) in p50 ? new (Func<ScenarioResult, double>, bool)[] { (r => r.P99Ms, false), (r => r.P50Ms, true) } : [(value, dashed)])
                {
                    var points = clients.Select((c, i) => (i, r: row(c))).Where(p => p.r is not null && pick(p.r) > 0 && double.IsFinite(pick(p.r)))
                        .Select(p => string.Create(CultureInfo.InvariantCulture, $"{X(p.i):0.0},{Y(pick(p.r!)):0.0}")).ToList();
                    if (points.Count == 0)
                        continue;
                    svg.Append(CultureInfo.InvariantCulture, $"<polyline points=\"{string.Join(' ', points)}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{(dash ? " stroke-dasharray=\"5,4\"" : "")}/>\n");
                    foreach (var point in points)
                    {
                        var xy = point.Split(',');
                        svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{xy[0]}\" cy=\"{xy[1]}\" r=\"3\" fill=\"{color}\"/>\n");
                    }
                }
            }
        }
    }
}
