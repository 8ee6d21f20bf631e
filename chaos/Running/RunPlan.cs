using System.Text.Json;
using System.Text.Json.Serialization;
using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Network;
using Sequencer.Checker;
using Sequencer.Core.Hashing;

namespace Sequencer.Chaos.Running;

/// <summary>One scheduled fault and the target it gets under the plan's role assignment.</summary>
/// <param name="Sequence">Its position in the schedule.</param>
/// <param name="Kind">The fault.</param>
/// <param name="AtSeconds">When it is injected.</param>
/// <param name="ForSeconds">How long before it is healed.</param>
/// <param name="Pick">The schedule's number that picks the target.</param>
/// <param name="Magnitude">The schedule's number that sizes the fault.</param>
/// <param name="Target">The target as the report names it.</param>
/// <param name="Nodes">The target's nodes (<see cref="FaultTarget.Nodes"/>).</param>
/// <param name="Groups">The target's groups (<see cref="FaultTarget.Groups"/>).</param>
public sealed record PlannedFault(int Sequence, FaultKind Kind, double AtSeconds, double ForSeconds, int Pick, double Magnitude,
    string Target, IReadOnlyList<int> Nodes, IReadOnlyList<IReadOnlyList<int>> Groups);

/// <summary>The first fresh txs of one workload client.</summary>
/// <param name="Client">The client's index.</param>
/// <param name="Txs">The keccak-256 hashes of its first txs, in order.</param>
public sealed record PlannedClient(int Client, IReadOnlyList<string> Txs);

/// <summary>The seed of one member's fault proxy.</summary>
/// <param name="Node">The member id.</param>
/// <param name="Seed">Its proxy's seed.</param>
public sealed record PlannedProxy(int Node, int Seed);

/// <summary>
/// What a seed decides about a run, computed without starting a node: the fault schedule, each fault's target for a
/// given leader, the fault proxies' seeds and the workload's first txs. Two processes given the same options must print
/// the same plan (the seed-replay test compares them); what the plan cannot fix is who leads during a real run.
/// </summary>
public sealed class RunPlan
{
    /// <summary>The seed.</summary>
    public required int Seed { get; init; }

    /// <summary>The scenario.</summary>
    public required string Scenario { get; init; }

    /// <summary>proxy or host.</summary>
    public required string Mode { get; init; }

    /// <summary>Nodes.</summary>
    public required int Nodes { get; init; }

    /// <summary>Planned seconds.</summary>
    public required double DurationSeconds { get; init; }

    /// <summary>The leader assumed for every fault's target.</summary>
    public required int Leader { get; init; }

    /// <summary>Fault kinds of the scenario that this run cannot inject, with the reason.</summary>
    public required IReadOnlyList<string> NotInjected { get; init; }

    /// <summary>Every scheduled fault with its target.</summary>
    public required IReadOnlyList<PlannedFault> Faults { get; init; }

    /// <summary>Every member's proxy seed.</summary>
    public required IReadOnlyList<PlannedProxy> Proxies { get; init; }

    /// <summary>Every workload client's first txs.</summary>
    public required IReadOnlyList<PlannedClient> Clients { get; init; }

    /// <summary>The plan of <paramref name="options"/> with <paramref name="leader"/> leading at every fault.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The leader is not a member, or a negative tx count.</exception>
    public static RunPlan Create(ChaosOptions options, int leader, int txsPerClient)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(leader, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(leader, options.Nodes);
        ArgumentOutOfRangeException.ThrowIfNegative(txsPerClient);
        var (scenario, skipped, schedule) = ChaosRun.ScheduleFor(options);
        var members = Enumerable.Range(1, options.Nodes).ToList();
        var workload = ChaosRun.WorkloadFor(options);
        return new RunPlan
        {
            Seed = options.Seed,
            Scenario = scenario.Name,
            Mode = options.Mode,
            Nodes = options.Nodes,
            DurationSeconds = options.DurationSeconds,
            Leader = leader,
            NotInjected = skipped,
            Faults =
            [
                .. schedule.Select(fault =>
                {
                    var target = FaultTargets.Choose(fault, members, leader);
                    return new PlannedFault(fault.Sequence, fault.Kind, fault.AtSeconds, fault.ForSeconds, fault.Pick, fault.Magnitude,
                        target.Description, target.Nodes, target.Groups);
                }),
            ],
            Proxies = [.. members.Select(id => new PlannedProxy(id, FaultProxy.SeedFor(options.Seed, id)))],
            Clients =
            [
                .. Enumerable.Range(0, workload.Clients).Select(client =>
                {
                    var source = new ClientTxs(workload.Seed, client, workload.TxBytes);
                    return new PlannedClient(client, [.. Enumerable.Range(0, txsPerClient).Select(_ => Keccak256.Hash(source.Next()).ToString())]);
                }),
            ],
        };
    }

    /// <summary>The plan as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, PlanJsonContext.Default.RunPlan);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(RunPlan))]
internal sealed partial class PlanJsonContext : JsonSerializerContext;
