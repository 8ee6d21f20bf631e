using System.CommandLine;
using System.Globalization;
using Sequencer.Bench;
using Sequencer.Client;
using Sequencer.Client.Local;

var clientsOption = new Option<int[]>("--clients") { Description = "Client counts to run.", DefaultValueFactory = _ => [1, 16, 64, 256], AllowMultipleArgumentsPerToken = true };
var bulkOption = new Option<int>("--bulk") { Description = "Txs per request in the bulk scenarios.", DefaultValueFactory = _ => 100 };
var sizeOption = new Option<int>("--tx-bytes") { Description = "Bytes per tx.", DefaultValueFactory = _ => 256 };
var secondsOption = new Option<double>("--seconds") { Description = "Measured seconds per scenario.", DefaultValueFactory = _ => 10 };
var warmupOption = new Option<double>("--warmup") { Description = "Warm-up seconds per scenario.", DefaultValueFactory = _ => 3 };
var clusterWarmupOption = new Option<double>("--cluster-warmup") { Description = "Seconds of load on each cluster before its first scenario, not measured (the JIT's tiering of a fresh process); 0 for none.", DefaultValueFactory = _ => 30 };
var clusterWarmupMaxOption = new Option<double>("--cluster-warmup-max") { Description = "After --cluster-warmup, the load goes on until the JIT takes under 2 % of a core on every node over 10 s (a fresh node spends minutes of its first load in the JIT's tiers), at most this many seconds of warm-up in all.", DefaultValueFactory = _ => 300 };
var targetOption = new Option<string?>("--target") { Description = "Measure an already running cluster through this node (default: start a fresh local 3-node cluster)." };
var dataOption = new Option<string>("--data") { Description = "Data root of the cluster the bench starts.", DefaultValueFactory = _ => ".data/bench" };
var nodeArgOption = new Option<string[]>("--node-arg") { Description = "An extra argument for every node the bench starts, e.g. --node-arg=--limit --node-arg=maxBatchBytes=262144; repeatable." };
var modeOption = new Option<string>("--mode") { Description = "single, bulk or both.", DefaultValueFactory = _ => "both" };
var halfClientsOption = new Option<int>("--half-clients") { Description = "Open-loop clients of the half-saturation scenario (half of the best single-submit throughput, after the closed-loop scenarios); 0 skips it.", DefaultValueFactory = _ => 256 };
var pacedOption = new Option<int[]>("--paced") { Description = "Paced (open-loop) scenarios: total tx/s to offer, in bulk requests of 10 from 16 clients; the signing latency target is measured here. --paced alone runs none.", DefaultValueFactory = _ => [1000, 4000], AllowMultipleArgumentsPerToken = true, Arity = ArgumentArity.ZeroOrMore };
var noSigningOption = new Option<bool>("--no-signing") { Description = "Run only the cluster without threshold signing (ordering only)." };
var l1Option = new Option<string>("--l1") { Description = "The L1 phase (submit→posted and →finalized latency, gas per post and per covered batch, on a local anvil): on (after the other runs), only, or off.", DefaultValueFactory = _ => "on" };
var l1RateOption = new Option<double>("--l1-rate") { Description = "Tx/s offered in the L1 phase.", DefaultValueFactory = _ => 2000 };
var l1SecondsOption = new Option<double>("--l1-seconds") { Description = "Seconds of load in the L1 phase.", DefaultValueFactory = _ => 30 };
var etcdOption = new Option<string>("--etcd") { Description = "Run a local 3-member etcd beside the cluster with the same single-submit load (1/16/64/256 clients) and print the ratios: on, only, or off.", DefaultValueFactory = _ => "on" };
var resultsOption = new Option<string>("--results") { Description = "Where the run's JSON and SVG chart go.", DefaultValueFactory = _ => "bench/results" };
var validationOption = new Option<string>("--validation") { Description = "opaque (random bytes, the default), ethereum (the clusters run in ethereum mode and every client sends pre-signed EIP-1559 txs from its own sender), or both (opaque, then ethereum: the throughput side by side).", DefaultValueFactory = _ => "opaque" };
var signingOnlyOption = new Option<bool>("--signing-only") { Description = "Run only the cluster with 2-of-3 signing (by default the bench runs a cluster without signing, then one with it, and prints the ratio)." };

var root = new RootCommand("sequencer-bench: throughput and submit-to-ordered latency of a local cluster, and fdatasync latency.")
{
    clientsOption, bulkOption, sizeOption, secondsOption, warmupOption, clusterWarmupOption, clusterWarmupMaxOption, targetOption, dataOption, modeOption, nodeArgOption, noSigningOption, signingOnlyOption, pacedOption,
    l1Option, l1RateOption, l1SecondsOption, etcdOption, resultsOption, validationOption, halfClientsOption,
};
root.SetAction(async (result, token) =>
{
    var data = Path.GetFullPath(result.GetValue(dataOption)!);

    // A run that starts clusters clears them under the data root first: two such runs on one root would delete each
    // other's nodes' directories while they run. The second is refused (an exclusive lock, released when the process
    // ends). Runs against a running cluster (--target) start none, and any number of them may run at once.
    Directory.CreateDirectory(data);
    FileStream? runLock = null;
    try
    {
        if (result.GetValue(targetOption) is null)
            runLock = new FileStream(Path.Combine(data, ".bench.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
    }
    catch (IOException)
    {
        await Console.Error.WriteLineAsync($"another sequencer-bench is running clusters on {data}: wait for it, or give this one another --data");
        return 2;
    }

    await using var heldLock = runLock;
    var (p50, p99, max) = FsyncProbe.Measure(Path.Combine(data, "fsync"), 2000);
    Console.WriteLine($"fdatasync of a 4 KiB append in {data}: p50 {p50:0} us, p99 {p99:0} us, max {max:0} us (2000 samples)");
    Console.WriteLine($"machine: {Environment.ProcessorCount} cores, {Environment.OSVersion}, .NET {Environment.Version}");
    SigningProbe.PrintCryptoCosts(2, 3);
    ValidationProbe.Print();
    if (result.GetValue(validationOption) == "probe")
        return 0;

    var scenarios = new List<Scenario>();
    // "--paced" with no rates means no paced scenarios (the defaults apply only when the option is left out).
    var pacedRates = result.GetResult(pacedOption) is { Implicit: false, Tokens.Count: 0 } ? [] : result.GetValue(pacedOption) ?? [];
    foreach (var rate in pacedRates)
        scenarios.Add(new Scenario("paced", 16, 10, rate / 10.0));
    foreach (var (mode, perRequest) in result.GetValue(modeOption) switch
    {
        "single" => new[] { ("single", 1) },
        "bulk" => [("bulk", result.GetValue(bulkOption))],
        _ => [("single", 1), ("bulk", result.GetValue(bulkOption))],
    })
    {
        foreach (var clients in result.GetValue(clientsOption)!)
            scenarios.Add(new Scenario(mode, clients, perRequest, null));
    }

    var runner = new ScenarioRunner(result.GetValue(sizeOption), TimeSpan.FromSeconds(result.GetValue(warmupOption)), TimeSpan.FromSeconds(result.GetValue(secondsOption)),
        TimeSpan.FromSeconds(result.GetValue(clusterWarmupOption)), TimeSpan.FromSeconds(result.GetValue(clusterWarmupMaxOption)),
        result.GetValue(bulkOption), result.GetValue(halfClientsOption));
    var validation = result.GetValue(validationOption);
    if (validation is "ethereum" or "both")
    {
        return await EthereumBench.RunAsync(data, result.GetValue(nodeArgOption) ?? [], validation == "both",
            TimeSpan.FromSeconds(result.GetValue(warmupOption)), TimeSpan.FromSeconds(result.GetValue(secondsOption)), result.GetValue(targetOption) is { } ethTarget ? new Uri(ethTarget) : null, token);
    }

    if (result.GetValue(targetOption) is { } given)
    {
        var outcome = await runner.RunAsync(new Uri(given), signing: null, scenarios, token);
        return outcome.ExitCode;
    }

    var etcdMode = result.GetValue(etcdOption);
    var clientCounts = result.GetValue(clientsOption)!;
    async Task<IReadOnlyList<ScenarioResult>?> EtcdAsync() => etcdMode == "off" ? null
        : await EtcdBench.RunAsync(data, result.GetValue(sizeOption), clientCounts, TimeSpan.FromSeconds(result.GetValue(warmupOption)), TimeSpan.FromSeconds(result.GetValue(secondsOption)),
            TimeSpan.FromSeconds(result.GetValue(clusterWarmupOption)), token);
    if (etcdMode == "only")
    {
        var etcdOnly = await EtcdAsync();
        if (etcdOnly is not null)
        {
            SideBySide.Print(etcdOnly, null);
            SideBySide.Write(result.GetValue(resultsOption)!, p50, etcdOnly, new Dictionary<bool, RunOutcome>());
        }

        return etcdOnly is null ? 1 : 0;
    }


    var l1 = result.GetValue(l1Option);
    if (l1 == "only")
        return await L1Probe.RunAsync(data, result.GetValue(sizeOption), result.GetValue(l1RateOption), TimeSpan.FromSeconds(result.GetValue(l1SecondsOption)), result.GetValue(nodeArgOption) ?? [], token);

    // Ordering alone, then ordering with signing, each on a fresh cluster, unless one of them is asked for.
    bool[] configurations = result.GetValue(noSigningOption) ? [false] : result.GetValue(signingOnlyOption) ? [true] : [false, true];
    var outcomes = new Dictionary<bool, RunOutcome>();
    foreach (var signing in configurations)
    {
        await using var cluster = await BenchCluster.StartAsync(data, signing, result.GetValue(nodeArgOption) ?? [], token);
        outcomes[signing] = await runner.RunAsync(cluster.Target, signing, scenarios, token);
        using var client = new SequencerClient(cluster.Target);
        var status = await client.GetClusterAsync(token);
        Console.WriteLine();
        Console.WriteLine($"cluster after the run: height {status.Height}, commit index {status.CommitIndex}, term {status.Term}");
    }

    if (outcomes.TryGetValue(false, out var alone) && outcomes.TryGetValue(true, out var signed))
        ScenarioRunner.PrintComparison(alone, signed);
    var etcd = await EtcdAsync();
    if (etcd is not null)
        SideBySide.Print(etcd, outcomes.GetValueOrDefault(true) ?? outcomes.GetValueOrDefault(false));
    SideBySide.Write(result.GetValue(resultsOption)!, p50, etcd, outcomes);
    var exit = outcomes.Values.Max(o => o.ExitCode);
    if (l1 == "on")
        exit = Math.Max(exit, await L1Probe.RunAsync(data, result.GetValue(sizeOption), result.GetValue(l1RateOption), TimeSpan.FromSeconds(result.GetValue(l1SecondsOption)), result.GetValue(nodeArgOption) ?? [], token));
    return exit;
});
return await root.Parse(args).InvokeAsync();
