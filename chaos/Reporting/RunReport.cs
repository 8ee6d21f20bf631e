using System.Text.Json.Serialization;
using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Running;
using Sequencer.Checker;

namespace Sequencer.Chaos.Reporting;

/// <summary>Ops by outcome.</summary>
/// <param name="Ok">Acknowledged.</param>
/// <param name="Fail">Certainly not ordered.</param>
/// <param name="Info">Outcome unknown.</param>
public sealed record OpCounts(int Ok, int Fail, int Info);

/// <summary>One second of the run.</summary>
/// <param name="Second">Seconds from the start.</param>
/// <param name="Ordered">Txs acknowledged in that second.</param>
/// <param name="P50Ms">Median submit latency of those txs.</param>
/// <param name="P99Ms">99th percentile.</param>
public sealed record SecondStats(int Second, int Ordered, double P50Ms, double P99Ms);

/// <summary>Who led from when to when.</summary>
/// <param name="FromMs">Start, ms from the start of the run.</param>
/// <param name="ToMs">End.</param>
/// <param name="Leader">The leader, or null for none.</param>
public sealed record LeaderSpan(long FromMs, long ToMs, int? Leader);

/// <summary>The JSON summary of a run.</summary>
public sealed class RunReport
{
    /// <summary>The seed: <c>make chaos SEED=...</c> replays the schedule.</summary>
    public required int Seed { get; init; }

    /// <summary>The scenario.</summary>
    public required string Scenario { get; init; }

    /// <summary>proxy or host.</summary>
    public required string Mode { get; init; }

    /// <summary>Nodes.</summary>
    public required int Nodes { get; init; }

    /// <summary>Planned seconds.</summary>
    public required double DurationSeconds { get; init; }

    /// <summary>Measured milliseconds.</summary>
    public required long ElapsedMs { get; init; }

    /// <summary>Every invariant held.</summary>
    public required bool Passed { get; init; }

    /// <summary>The run's directory.</summary>
    public required string Directory { get; init; }

    /// <summary>Fault kinds of the scenario that this mode cannot inject, with the reason.</summary>
    public required IReadOnlyList<string> NotInjected { get; init; }

    /// <summary>Every injected fault with its target, window, outcome and recovery time.</summary>
    public required IReadOnlyList<FaultRecord> Faults { get; init; }

    /// <summary>Ops by outcome.</summary>
    public required OpCounts Ops { get; init; }

    /// <summary>Each invariant with pass or fail.</summary>
    public required IReadOnlyList<InvariantResult> Invariants { get; init; }

    /// <summary>Leader changes observed.</summary>
    public required int LeaderChanges { get; init; }

    /// <summary>Who led when.</summary>
    public required IReadOnlyList<LeaderSpan> Leaders { get; init; }

    /// <summary>Throughput and latency per second.</summary>
    public required IReadOnlyList<SecondStats> Timeline { get; init; }

    /// <summary>Builds the report.</summary>
    public static RunReport Create(ChaosOptions options, Scenario scenario, string directory, IReadOnlyList<string> notInjected, IReadOnlyList<FaultRecord> faults,
        IReadOnlyList<HistoryOp> history, IReadOnlyList<InvariantResult> invariants, ClusterMonitor? monitor, long elapsedMs)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(scenario);
        ArgumentNullException.ThrowIfNull(history);
        var ok = history.Where(o => o.Outcome == OpOutcome.Ok).ToList();
        var seconds = (int)Math.Ceiling(elapsedMs / 1000.0);
        var timeline = new List<SecondStats>();
        var bySecond = ok.GroupBy(o => (int)(o.CompletedNs / 1_000_000_000)).ToDictionary(g => g.Key, g => g.Select(o => (o.CompletedNs - o.InvokedNs) / 1e6).Order().ToArray());
        for (var s = 0; s < seconds; s++)
        {
            var latencies = bySecond.GetValueOrDefault(s) ?? [];
            timeline.Add(new SecondStats(s, latencies.Length, Percentile(latencies, 0.5), Percentile(latencies, 0.99)));
        }

        return new RunReport
        {
            Seed = options.Seed,
            Scenario = scenario.Name,
            Mode = options.Mode,
            Nodes = options.Nodes,
            DurationSeconds = options.DurationSeconds,
            ElapsedMs = elapsedMs,
            Passed = invariants.All(i => i.Passed),
            Directory = directory,
            NotInjected = notInjected,
            Faults = [.. faults],
            Ops = new OpCounts(ok.Count, history.Count(o => o.Outcome == OpOutcome.Fail), history.Count(o => o.Outcome == OpOutcome.Info)),
            Invariants = invariants,
            LeaderChanges = monitor?.LeaderChanges() ?? 0,
            Leaders = monitor is null ? [] : [.. monitor.LeaderTimeline().Select(s => new LeaderSpan(s.FromMs, s.ToMs, s.Leader))],
            Timeline = timeline,
        };
    }

    private static double Percentile(double[] sorted, double q)
        => sorted.Length == 0 ? 0 : Math.Round(sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))], 1);
}

/// <summary>JSON metadata of the report.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RunReport))]
internal sealed partial class ReportJsonContext : JsonSerializerContext;
