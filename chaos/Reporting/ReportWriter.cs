using System.Globalization;
using System.Security;
using System.Text;
using System.Text.Json;

namespace Sequencer.Chaos.Reporting;

/// <summary>Writes a run's report: <c>report.json</c>, <c>timeline.svg</c> and <c>summary.txt</c>.</summary>
public static class ReportWriter
{
    private static readonly string[] NodeColors = ["#4e79a7", "#59a14f", "#9c755f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"];

    /// <summary>Writes the three files into <paramref name="directory"/>.</summary>
    public static void Write(RunReport report, string directory)
    {
        ArgumentNullException.ThrowIfNull(report);
        File.WriteAllText(Path.Combine(directory, "report.json"), JsonSerializer.Serialize(report, ReportJsonContext.Default.RunReport));
        File.WriteAllText(Path.Combine(directory, "timeline.svg"), Svg(report));
        File.WriteAllText(Path.Combine(directory, "summary.txt"), Summary(report));
    }

    /// <summary>The one-screen text summary.</summary>
    public static string Summary(RunReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var text = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        text.AppendLine(c, $"chaos run  scenario={report.Scenario}  mode={report.Mode}  nodes={report.Nodes}  seed={report.Seed}  {report.ElapsedMs / 1000.0:0}s  => {(report.Passed ? "PASS" : "FAIL")}");
        text.AppendLine(c, $"ops: ok {report.Ops.Ok}  fail {report.Ops.Fail}  info {report.Ops.Info}    leader changes: {report.LeaderChanges}");
        text.AppendLine("faults:");
        foreach (var fault in report.Faults)
        {
            var window = fault.EndMs is { } end ? $"{fault.StartMs / 1000.0,6:0.0}s-{end / 1000.0:0.0}s" : $"{fault.StartMs / 1000.0,6:0.0}s";
            var extras = new List<string>();
            if (fault.FailoverMs is { } failover)
                extras.Add($"failover {failover} ms");
            if (fault.RecoveryMs is { } recovery)
                extras.Add($"ordering resumed {recovery} ms after heal");
            if (fault.RateDuring is { } during && fault.RateBefore is { } before)
                extras.Add($"{during:0} tx/s vs {before:0} before, longest stall {fault.LongestStallMs} ms{(fault.MinorityFault == true ? string.Empty : " (not judged)")}");
            if (fault.Outcome is { } outcome)
                extras.Add(outcome);
            text.AppendLine(c, $"  #{fault.Sequence,-3} {window,-15} {fault.Kind,-22} {fault.Target,-22} {string.Join("; ", extras)}");
        }

        foreach (var reason in report.NotInjected)
            text.AppendLine(c, $"  (not injected) {reason}");
        text.AppendLine("invariants:");
        foreach (var result in report.Invariants)
            text.AppendLine(c, $"  {(result.Passed ? "PASS" : "FAIL")} {result.Name,-14} {result.Detail}");
        text.AppendLine(c, $"report: {Path.Combine(report.Directory, "report.json")}");
        text.AppendLine(c, $"picture: {Path.Combine(report.Directory, "timeline.svg")}");
        if (!report.Passed)
            text.AppendLine(c, $"SEED={report.Seed}");
        return text.ToString();
    }

    /// <summary>The timeline picture: throughput and latency over time, fault windows shaded, and who led when.</summary>
    public static string Svg(RunReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        const int width = 1200, left = 70, right = 20, top = 40, panel = 150, gap = 30, band = 22;
        var plotWidth = width - left - right;
        var totalMs = Math.Max(1000, report.ElapsedMs);
        double X(double ms) => left + ms / totalMs * plotWidth;
        var throughputTop = top;
        var latencyTop = throughputTop + panel + gap;
        var leaderTop = latencyTop + panel + gap;
        var height = leaderTop + band + 70;
        var c = CultureInfo.InvariantCulture;
        var svg = new StringBuilder();
        svg.AppendLine(c, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">");
        svg.AppendLine(c, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>");
        svg.AppendLine(c, $"<text x=\"{left}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">chaos run: {Escape(report.Scenario)}, {report.Mode} mode, {report.Nodes} nodes, seed {report.Seed}: {(report.Passed ? "PASS" : "FAIL")}</text>");

        // Fault windows, shaded across both panels.
        foreach (var fault in report.Faults)
        {
            var x0 = X(fault.StartMs);
            var x1 = Math.Max(x0 + 2, X(fault.EndMs ?? fault.StartMs + 300));
            svg.AppendLine(c, $"<rect x=\"{x0:0.0}\" y=\"{throughputTop}\" width=\"{x1 - x0:0.0}\" height=\"{latencyTop + panel - throughputTop}\" fill=\"#f28e2b\" fill-opacity=\"0.18\"/>");
            svg.AppendLine(c, $"<text x=\"{x0 + 2:0.0}\" y=\"{throughputTop + 10 + 11 * (fault.Sequence % 3)}\" fill=\"#b85c00\" font-size=\"9\">#{fault.Sequence} {Escape(fault.Kind.ToString())} {Escape(fault.Target)}</text>");
        }

        // Throughput.
        var maxOrdered = Math.Max(1, report.Timeline.Select(t => t.Ordered).DefaultIfEmpty(0).Max());
        var barWidth = plotWidth / Math.Max(1.0, totalMs / 1000.0);
        foreach (var second in report.Timeline)
        {
            var h = second.Ordered / (double)maxOrdered * panel;
            svg.AppendLine(c, $"<rect x=\"{X(second.Second * 1000.0):0.0}\" y=\"{throughputTop + panel - h:0.0}\" width=\"{Math.Max(1, barWidth - 1):0.0}\" height=\"{h:0.0}\" fill=\"#4e79a7\"/>");
        }

        Axis(svg, throughputTop, panel, left, plotWidth, $"ordered tx/s (max {maxOrdered})");

        // Latency on a log scale, 1 ms to the largest p99.
        var maxLatency = Math.Max(10, report.Timeline.Select(t => t.P99Ms).DefaultIfEmpty(10).Max());
        double Y(double ms) => latencyTop + panel - Math.Log10(Math.Max(1, ms)) / Math.Log10(maxLatency) * panel;
        foreach (var (pick, color, label) in new (Func<SecondStats, double>, string, string)[] { (t => t.P50Ms, "#4e79a7", "p50"), (t => t.P99Ms, "#e15759", "p99") })
        {
            var points = report.Timeline.Where(t => t.Ordered > 0).Select(t => $"{X(t.Second * 1000.0 + 500):0.0},{Y(pick(t)):0.0}");
            svg.AppendLine(c, $"<polyline points=\"{string.Join(' ', points)}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>");
            svg.AppendLine(c, $"<text x=\"{width - right - (label == "p50" ? 70 : 35)}\" y=\"{latencyTop - 4}\" fill=\"{color}\">{label}</text>");
        }

        foreach (var tick in new[] { 1.0, 10, 100, 1000, 10000 }.Where(t => t <= maxLatency))
        {
            svg.AppendLine(c, $"<line x1=\"{left}\" x2=\"{left + plotWidth}\" y1=\"{Y(tick):0.0}\" y2=\"{Y(tick):0.0}\" stroke=\"#ddd\"/>");
            svg.AppendLine(c, $"<text x=\"{left - 4}\" y=\"{Y(tick) + 4:0.0}\" text-anchor=\"end\">{tick:0} ms</text>");
        }

        Axis(svg, latencyTop, panel, left, plotWidth, "submit latency (log)");

        // Who led when.
        svg.AppendLine(c, $"<text x=\"{left - 4}\" y=\"{leaderTop + 15}\" text-anchor=\"end\">leader</text>");
        foreach (var span in report.Leaders)
        {
            var x0 = X(span.FromMs);
            var x1 = Math.Max(x0 + 1, X(span.ToMs));
            var color = span.Leader is { } id ? NodeColors[(id - 1) % NodeColors.Length] : "#cccccc";
            svg.AppendLine(c, $"<rect x=\"{x0:0.0}\" y=\"{leaderTop}\" width=\"{x1 - x0:0.0}\" height=\"{band}\" fill=\"{color}\"/>");
            if (x1 - x0 > 18)
                svg.AppendLine(c, $"<text x=\"{x0 + 3:0.0}\" y=\"{leaderTop + 15}\" fill=\"white\">{(span.Leader is { } l ? $"n{l}" : "none")}</text>");
        }

        // Time axis.
        var step = totalMs > 120_000 ? 20_000 : totalMs > 40_000 ? 10_000 : 5_000;
        for (long ms = 0; ms <= totalMs; ms += step)
        {
            svg.AppendLine(c, $"<line x1=\"{X(ms):0.0}\" x2=\"{X(ms):0.0}\" y1=\"{leaderTop + band}\" y2=\"{leaderTop + band + 5}\" stroke=\"black\"/>");
            svg.AppendLine(c, $"<text x=\"{X(ms):0.0}\" y=\"{leaderTop + band + 18}\" text-anchor=\"middle\">{ms / 1000}s</text>");
        }

        svg.AppendLine(c, $"<text x=\"{left}\" y=\"{height - 12}\" fill=\"#555\">shaded: fault windows. Invariants: {Escape(string.Join(", ", report.Invariants.Select(i => $"{i.Name} {(i.Passed ? "pass" : "FAIL")}")))}</text>");
        svg.AppendLine("</svg>");
        return svg.ToString();
    }

    private static void Axis(StringBuilder svg, int top, int height, int left, int width, string label)
    {
        var c = CultureInfo.InvariantCulture;
        svg.AppendLine(c, $"<rect x=\"{left}\" y=\"{top}\" width=\"{width}\" height=\"{height}\" fill=\"none\" stroke=\"#888\"/>");
        svg.AppendLine(c, $"<text x=\"{left + 4}\" y=\"{top - 4}\" fill=\"#333\">{Escape(label)}</text>");
    }

    private static string Escape(string text) => SecurityElement.Escape(text) ?? string.Empty;
}
