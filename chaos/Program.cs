using System.CommandLine;
using System.Runtime.InteropServices;
using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Reporting;
using Sequencer.Chaos.Running;
using Sequencer.Client.Local;

var nodesOption = new Option<int>("--nodes") { Description = "Nodes: 3 or 5.", DefaultValueFactory = _ => 3 };
var durationOption = new Option<double>("--duration") { Description = "Seconds of workload and faults.", DefaultValueFactory = _ => 60 };
var seedOption = new Option<int?>("--seed") { Description = "The seed of the fault schedule (random when omitted; printed either way)." };
var scenarioOption = new Option<string>("--scenario") { Description = "mixed, cover, process, partition, link, disk, clock, kill-leader-and-acker (see --list).", DefaultValueFactory = _ => "mixed" };
var modeOption = new Option<string>("--mode") { Description = "proxy (default, no root) or host (root: network namespaces and iptables).", DefaultValueFactory = _ => "proxy" };
var outOption = new Option<string>("--out") { Description = "Where each run gets a directory.", DefaultValueFactory = _ => ".data/chaos" };
var clientsOption = new Option<int>("--clients") { Description = "Concurrent workload clients.", DefaultValueFactory = _ => 8 };
var bulkOption = new Option<int>("--bulk") { Description = "Txs per submit.", DefaultValueFactory = _ => 1 };
var binaryOption = new Option<string?>("--node-binary") { Description = "The sequencer-node.dll to run (default: the Release build)." };
var nodeArgOption = new Option<string[]>("--node-arg") { Description = "An extra argument for every node; repeatable." };
var keepOption = new Option<bool>("--keep-data") { Description = "Keep node data even when the run passes." };
var noSigningOption = new Option<bool>("--no-signing") { Description = "Run the nodes without threshold signing (ordering only)." };
var noL1Option = new Option<bool>("--no-l1") { Description = "Run without the local L1 (anvil and the inbox contract), its faults and INV-L1PREFIX / LIVE-POST." };
var ethereumOption = new Option<bool>("--ethereum") { Description = "Run the chain in ethereum validation mode: signed transactions, conflicting pairs sent to two nodes at once, INV-NOCONFLICT." };
var dkgOption = new Option<bool>("--dkg") { Description = "Sign with a key from the nodes' own Pedersen DKG at boot instead of a dealer key." };
var listOption = new Option<bool>("--list") { Description = "List the scenarios and the fault kinds, and exit." };
var printPlanOption = new Option<bool>("--print-plan")
{
    Description = "Print what the seed decides as JSON (the fault schedule, each fault's target while --plan-leader leads, the proxy seeds, every client's first txs) and exit without starting a node.",
};
var planLeaderOption = new Option<int>("--plan-leader") { Description = "With --print-plan: the node assumed to lead at every fault.", DefaultValueFactory = _ => 1 };
var planTxsOption = new Option<int>("--plan-txs") { Description = "With --print-plan: how many txs of each client to list (as keccak hashes).", DefaultValueFactory = _ => 3 };

var root = new RootCommand("sequencer-chaos: runs real sequencer nodes under seeded faults and checks DESIGN section 7's invariants.")
{
    nodesOption, durationOption, seedOption, scenarioOption, modeOption, outOption, clientsOption, bulkOption, binaryOption, nodeArgOption, keepOption, noSigningOption, dkgOption, noL1Option, ethereumOption, listOption,
    printPlanOption, planLeaderOption, planTxsOption,
};
root.SetAction(async (result, token) =>
{
    if (result.GetValue(listOption))
    {
        foreach (var scenario in FaultSchedule.Scenarios)
            Console.WriteLine($"{scenario.Name,-24} {scenario.Description}\n{"",-24} {string.Join(", ", scenario.Kinds)}");
        Console.WriteLine($"\nneed host mode: {string.Join(", ", FaultSchedule.NeedHostMode)}\nneed 5 nodes: {string.Join(", ", FaultSchedule.NeedFiveNodes)}\nneed root: {string.Join(", ", FaultSchedule.NeedRoot)}");
        return 0;
    }

    var mode = result.GetValue(modeOption)!;
    if (mode is not ("proxy" or "host"))
    {
        Console.Error.WriteLine($"--mode is proxy or host, not {mode}");
        return 2;
    }

    var interactive = !Console.IsOutputRedirected;
    var statusTicks = 0;
    var options = new ChaosOptions
    {
        Nodes = result.GetValue(nodesOption),
        DurationSeconds = result.GetValue(durationOption),
        Seed = result.GetValue(seedOption) ?? System.Security.Cryptography.RandomNumberGenerator.GetInt32(int.MaxValue),
        Scenario = result.GetValue(scenarioOption)!,
        Mode = mode,
        OutputRoot = result.GetValue(outOption)!,
        Clients = result.GetValue(clientsOption),
        TxsPerRequest = result.GetValue(bulkOption),
        Binary = result.GetValue(binaryOption) is { } binary ? NodeBinary.At(binary) : null,
        NodeArguments = result.GetValue(nodeArgOption) ?? [],
        KeepData = result.GetValue(keepOption),
        Signing = !result.GetValue(noSigningOption),
        Dkg = result.GetValue(dkgOption),
        L1 = !result.GetValue(noL1Option),
        Ethereum = result.GetValue(ethereumOption),
        Progress = line =>
        {
            lock (Console.Out)
                Console.WriteLine(interactive ? "\r" + line.PadRight(Console.WindowWidth > 0 ? Console.WindowWidth - 1 : 100) : line);
        },
        Status = line =>
        {
            lock (Console.Out)
            {
                var width = Console.WindowWidth > 1 ? Console.WindowWidth - 1 : 119;
                if (interactive)
                    Console.Write("\r" + (line.Length > width ? line[..width] : line.PadRight(width)));
                else if (++statusTicks % 5 == 0)
                    Console.WriteLine(line);
            }
        },
    };

    if (options.Nodes is not (3 or 5))
    {
        Console.Error.WriteLine("--nodes is 3 or 5");
        return 2;
    }

    try
    {
        FaultSchedule.Find(options.Scenario);
    }
    catch (ArgumentException e)
    {
        Console.Error.WriteLine(e.Message);
        return 2;
    }

    if (result.GetValue(printPlanOption))
    {
        var leader = result.GetValue(planLeaderOption);
        var txs = result.GetValue(planTxsOption);
        if (leader < 1 || leader > options.Nodes || txs < 0)
        {
            Console.Error.WriteLine($"--plan-leader is a node id from 1 to {options.Nodes}, and --plan-txs is not negative");
            return 2;
        }

        Console.WriteLine(RunPlan.Create(options, leader, txs).ToJson());
        return 0;
    }

    Console.WriteLine($"SEED={options.Seed}");
    ChaosResult outcome;
    try
    {
        outcome = await ChaosRun.RunAsync(options, token);
    }
    catch (OperationCanceledException e) when (!token.IsCancellationRequested)
    {
        // System.CommandLine ends a canceled action with exit code 1 and no message; a cancellation nobody asked for is
        // a harness bug, and it must say so (a soak run once ended this way, with no report).
        Console.Error.WriteLine($"chaos: the run stopped on an unexpected cancellation (a harness bug): {e}");
        return 2;
    }
    Console.WriteLine();
    Console.WriteLine(ReportWriter.Summary(outcome.Report));
    return outcome.Passed ? 0 : 1;
});

using var stop = new CancellationTokenSource();
void OnSignal(PosixSignalContext context)
{
    context.Cancel = true;
    stop.Cancel();
}

using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, stop.Token);
