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
var targetOption = new Option<string?>("--target") { Description = "Measure an already running cluster through this node (default: start a fresh local 3-node cluster)." };
var dataOption = new Option<string>("--data") { Description = "Data root of the cluster the bench starts.", DefaultValueFactory = _ => ".data/bench" };
var nodeArgOption = new Option<string[]>("--node-arg") { Description = "An extra argument for every node the bench starts, e.g. --node-arg=--limit --node-arg=maxBatchBytes=262144; repeatable." };
var modeOption = new Option<string>("--mode") { Description = "single, bulk or both.", DefaultValueFactory = _ => "both" };
var pacedOption = new Option<int[]>("--paced") { Description = "Paced (open-loop) scenarios: total tx/s to offer, in bulk requests of 10 from 16 clients; the signing latency target is measured here. --paced alone runs none.", DefaultValueFactory = _ => [1000, 4000], AllowMultipleArgumentsPerToken = true, Arity = ArgumentArity.ZeroOrMore };
var noSigningOption = new Option<bool>("--no-signing") { Description = "Start the cluster without threshold signing (ordering only)." };

var root = new RootCommand("sequencer-bench: throughput and submit-to-ordered latency of a local cluster, and fdatasync latency.")
{
    clientsOption, bulkOption, sizeOption, secondsOption, warmupOption, targetOption, dataOption, modeOption, nodeArgOption, noSigningOption, pacedOption,
};
root.SetAction(async (result, token) =>
{
    var data = Path.GetFullPath(result.GetValue(dataOption)!);
    var (p50, p99, max) = FsyncProbe.Measure(Path.Combine(data, "fsync"), 2000);
    Console.WriteLine($"fdatasync of a 4 KiB append in {data}: p50 {p50:0} us, p99 {p99:0} us, max {max:0} us (2000 samples)");
    Console.WriteLine($"machine: {Environment.ProcessorCount} cores, {Environment.OSVersion}, .NET {Environment.Version}");
    SigningProbe.PrintCryptoCosts(2, 3);
    var signing = !result.GetValue(noSigningOption);

    LocalCluster? cluster = null;
    Uri target;
    if (result.GetValue(targetOption) is { } given)
    {
        target = new Uri(given);
    }
    else
    {
        if (Directory.Exists(Path.Combine(data, "cluster")))
            Directory.Delete(Path.Combine(data, "cluster"), recursive: true);
        string? keys = null;
        if (signing)
        {
            keys = Path.Combine(data, "cluster", "keys");
            Sequencer.Threshold.KeyFiles.WriteDealerKeys(keys, 2, 3);
        }

        cluster = LocalCluster.Create(new LocalClusterOptions
        {
            Nodes = 3,
            DataRoot = Path.Combine(data, "cluster"),
            ExtraArguments = result.GetValue(nodeArgOption) ?? [],
            KeysDirectory = keys,
        });
        cluster.StartAll();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30), token: token);
        target = new Uri(cluster.Node(leader).Spec.Api);
        Console.WriteLine($"started a local 3-node cluster (fsync on{(signing ? ", 2-of-3 FROST signing" : ", no signing")}) under {Path.Combine(data, "cluster")}; submitting to the leader, node {leader}");
    }

    try
    {
        var generator = new LoadGenerator(target, result.GetValue(sizeOption));
        var scenarios = new List<(string Mode, int Clients, int PerRequest, double? Rate)>();
        // "--paced" with no rates means no paced scenarios (the defaults apply only when the option is left out).
        var pacedRates = result.GetResult(pacedOption) is { Implicit: false, Tokens.Count: 0 } ? [] : result.GetValue(pacedOption) ?? [];
        foreach (var rate in pacedRates)
            scenarios.Add(("paced", 16, 10, rate / 10.0));
        foreach (var (mode, perRequest) in result.GetValue(modeOption) switch
        {
            "single" => new[] { ("single", 1) },
            "bulk" => [("bulk", result.GetValue(bulkOption))],
            _ => [("single", 1), ("bulk", result.GetValue(bulkOption))],
        })
        {
            foreach (var clients in result.GetValue(clientsOption)!)
                scenarios.Add((mode, clients, perRequest, null));
        }

        using var leaderClient = new SequencerClient(target);
        using var terms = await TermProbe.CreateAsync(leaderClient, token);
        if (signing)
            await SigningProbe.WaitForNoncePoolsAsync(leaderClient, TimeSpan.FromSeconds(60), token);
        Console.WriteLine();
        Console.WriteLine($"{"mode",-7} {"clients",7} {"txs/req",7} {"tx/s",10} {"req/s",9} {"p50 ms",8} {"p99 ms",8} {"max ms",8} {"errors",7} {"term",9} {"leader",7}   ordered->signed on the leader: {"batches",7} {"p50 ms",7} {"p99 ms",7} {"max ms",7}");
        var results = new List<ScenarioResult>();
        var failed = new List<string>();
        foreach (var (mode, clients, perRequest, rate) in scenarios)
        {
            // Load must show as 429s and latency, never as an election: every node's term is read before the warm-up
            // and after the last request, and a scenario during which one moved has failed.
            var termsBefore = await terms.ReadAsync(token);
            ulong heightBefore = 0;
            var scenario = await generator.RunAsync(mode, clients, perRequest,
                TimeSpan.FromSeconds(result.GetValue(warmupOption)), TimeSpan.FromSeconds(result.GetValue(secondsOption)), token,
                rate, async () => heightBefore = await SigningProbe.HeightAsync(leaderClient, token));
            var termsAfter = await terms.ReadAsync(token);
            results.Add(scenario);
            var termChange = TermProbe.Failure(termsBefore, termsAfter);
            var name = string.Create(CultureInfo.InvariantCulture, $"{scenario.Mode} {scenario.Clients} clients x {scenario.TxsPerRequest} txs/req{(rate is { } r ? $" at {r * 10:0} tx/s" : "")}");
            if (termChange is not null)
                failed.Add($"{name}: {termChange}");
            var line = string.Create(CultureInfo.InvariantCulture,
                $"{scenario.Mode,-7} {scenario.Clients,7} {scenario.TxsPerRequest,7} {scenario.TxPerSecond,10:0} {scenario.Requests / scenario.Seconds,9:0} {scenario.P50Ms,8:0.0} {scenario.P99Ms,8:0.0} {scenario.MaxMs,8:0.0} {scenario.Errors,7} {termsBefore.TermText + "→" + termsAfter.TermText,9} {termsBefore.LeaderText + "→" + termsAfter.LeaderText,7}");
            if (signing)
            {
                // The measured period only, read back from the leader's own apply times.
                var latency = await SigningProbe.MeasureAsync(leaderClient, heightBefore, await SigningProbe.HeightAsync(leaderClient, token), 2000, token);
                line += latency is null ? "   (nothing signed)" : string.Create(CultureInfo.InvariantCulture,
                    $"   {"",30} {latency.Batches,7} {latency.P50Ms,7:0.0} {latency.P99Ms,7:0.0} {latency.MaxMs,7:0.0}");
            }

            if (termChange is not null)
                line += "   FAILED: the term changed (an election under load)";
            Console.WriteLine(line);
        }

        if (cluster is not null)
        {
            using var client = new SequencerClient(target);
            var status = await client.GetClusterAsync(token);
            Console.WriteLine();
            Console.WriteLine($"cluster after the run: height {status.Height}, commit index {status.CommitIndex}, term {status.Term}");
        }

        if (failed.Count > 0)
        {
            Console.WriteLine();
            Console.WriteLine($"FAILED: {failed.Count} of {results.Count} scenarios saw the Raft term change (overload must show as 429s and latency, never as an election):");
            foreach (var failure in failed)
                Console.WriteLine($"  {failure}");
            return 2;
        }

        return results.Any(r => r.Errors > 0) ? 1 : 0;
    }
    finally
    {
        if (cluster is not null)
            await cluster.DisposeAsync();
    }
});
return await root.Parse(args).InvokeAsync();
