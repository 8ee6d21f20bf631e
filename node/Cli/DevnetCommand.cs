using System.CommandLine;
using System.Globalization;
using Sequencer.Client.Local;
using Sequencer.Threshold;

namespace Sequencer.Node.Cli;

/// <summary>
/// <c>devnet</c>: starts a local cluster of node processes on loopback (what <c>make run</c> does), prints the
/// leader and every node's API address, and stops every process on Ctrl-C.
/// </summary>
public static class DevnetCommand
{
    private static readonly Option<int> NodesOption = new("--nodes") { Description = "How many nodes.", DefaultValueFactory = _ => 3 };
    private static readonly Option<string> DataOption = new("--data") { Description = "The data root; each node gets nodeN under it.", DefaultValueFactory = _ => ".data/devnet" };
    private static readonly Option<int> ApiPortOption = new("--api-port") { Description = "Node 1's API port; node N uses it + N - 1.", DefaultValueFactory = _ => 7101 };
    private static readonly Option<int> RaftPortOption = new("--raft-port") { Description = "Node 1's Raft port; node N uses it + N - 1.", DefaultValueFactory = _ => 7201 };
    private static readonly Option<ulong> ChainIdOption = new("--chain-id") { Description = "The rollup chain id.", DefaultValueFactory = _ => 1UL };
    private static readonly Option<bool> FreshOption = new("--fresh") { Description = "Delete the data root first." };
    private static readonly Option<bool> QuietOption = new("--quiet") { Description = "Do not echo the nodes' logs." };
    private static readonly Option<bool> NoSigningOption = new("--no-signing") { Description = "Order without threshold signatures (no key files)." };
    private static readonly Option<int?> ThresholdOption = new("--threshold") { Description = "t of the key made on the first start (default: a majority of the nodes)." };
    private static readonly Option<string> KeyGenerationOption = new("--keygen")
    {
        Description = "How the first start makes the key: dkg (the nodes run a Pedersen DKG among themselves; nobody holds the group secret) or dealer (a trusted dealer writes every share, development only).",
        DefaultValueFactory = _ => "dkg",
    };

    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var command = new Command("devnet", "Run a local cluster of node processes (make run).")
        {
            NodesOption, DataOption, ApiPortOption, RaftPortOption, ChainIdOption, FreshOption, QuietOption, NoSigningOption, ThresholdOption, KeyGenerationOption,
        };
        command.SetAction(async (result, token) =>
        {
            var data = Path.GetFullPath(result.GetValue(DataOption)!);
            if (result.GetValue(FreshOption) && Directory.Exists(data))
                Directory.Delete(data, recursive: true);
            var quiet = result.GetValue(QuietOption);
            var output = new Lock();
            void Echo(string line)
            {
                lock (output)
                    Console.WriteLine(line);
            }

            // Signing keys, made on the first start: by default a Pedersen DKG among the nodes (each keeps only its own
            // share under nodeN/keys); with --keygen dealer a trusted-dealer key (development only: the dealer briefly
            // held every share). A data root that already has a dealer key keeps it.
            var nodes = result.GetValue(NodesOption);
            string? keys = null;
            List<string> extra = [];
            if (!result.GetValue(NoSigningOption))
            {
                var threshold = result.GetValue(ThresholdOption) ?? (nodes / 2) + 1;
                if (threshold < 1 || threshold > nodes)
                {
                    Echo($"devnet: --threshold must be in [1, {nodes}]");
                    return 2;
                }

                var mode = result.GetValue(KeyGenerationOption);
                var dealerKeys = Path.Combine(data, "keys");
                if (mode is not ("dkg" or "dealer"))
                {
                    Echo("devnet: --keygen is dkg or dealer");
                    return 2;
                }

                if (File.Exists(Path.Combine(dealerKeys, KeyFiles.GroupFileName)) || mode == "dealer")
                {
                    keys = dealerKeys;
                    if (!File.Exists(Path.Combine(keys, KeyFiles.GroupFileName)))
                    {
                        if (Directory.Exists(keys))
                            Directory.Delete(keys, recursive: true);
                        var group = KeyFiles.WriteDealerKeys(keys, threshold, nodes);
                        Echo($"devnet: made a {threshold}-of-{nodes} dealer key under {keys}: group key {group.GroupKey}");
                    }
                }
                else
                {
                    extra = ["--dkg-threshold", threshold.ToString(CultureInfo.InvariantCulture)];
                }
            }

            var binary = NodeBinary.At(Path.Combine(AppContext.BaseDirectory, "sequencer-node.dll"));
            await using var cluster = LocalCluster.Create(new LocalClusterOptions
            {
                Nodes = nodes,
                DataRoot = data,
                ApiBasePort = result.GetValue(ApiPortOption),
                RaftBasePort = result.GetValue(RaftPortOption),
                ChainId = result.GetValue(ChainIdOption),
                Echo = quiet ? null : Echo,
                Binary = binary,
                KeysDirectory = keys,
                ExtraArguments = extra,
            });
            cluster.StartAll();
            int leader;
            try
            {
                leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30), token: token).ConfigureAwait(false);
            }
            catch (TimeoutException e)
            {
                Echo("devnet: " + e.Message);
                foreach (var node in cluster.Nodes)
                    Echo($"--- node{node.Spec.Id} log ({node.LogPath}) ---\n{node.Tail(20)}");
                return 1;
            }
            catch (OperationCanceledException)
            {
                return 0;
            }

            Echo(string.Empty);
            Echo($"devnet: {cluster.Nodes.Count} nodes are up; data under {data}");
            foreach (var node in cluster.Nodes)
                Echo($"  node{node.Spec.Id}{(node.Spec.Id == leader ? " (leader)" : string.Empty),-9}  api {node.Spec.Api}  raft {node.Spec.Raft}  internal {node.Spec.Internal ?? "-"}  pid {node.ProcessId}  log {node.LogPath}");
            if (cluster.Options.MutualTls)
                Echo($"devnet: Raft and the internal listeners are mutual TLS with the consortium certificates in {Path.Combine(data, "certs")} (sequencer-node certs)");
            if (!result.GetValue(NoSigningOption))
                await ReportKeyAsync(cluster, Echo, token).ConfigureAwait(false);
            Echo($"devnet: try   curl -s -X POST {cluster.Node(1).Spec.Api}/v1/txs -H 'content-type: application/json' -d '{{\"tx\":\"0x01020304\"}}'");
            Echo("devnet: Ctrl-C stops every node");
            Echo(string.Empty);

            // Report leader changes and nodes that die, until Ctrl-C.
            var lastLeader = leader;
            var reportedDown = new HashSet<int>();
            while (!token.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(1000, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                foreach (var node in cluster.Nodes.Where(n => !n.IsRunning && n.ExitCode is not null && reportedDown.Add(n.Spec.Id)))
                    Echo($"devnet: node{node.Spec.Id} exited with code {node.ExitCode?.ToString(CultureInfo.InvariantCulture)}; see {node.LogPath}");
                var views = await Task.WhenAll(cluster.Nodes.Where(n => n.IsRunning).Select(LocalCluster.TryGetClusterAsync)).ConfigureAwait(false);
                var seen = views.FirstOrDefault(v => v?.Role == "leader")?.NodeId;
                if (seen is { } now && now != lastLeader)
                {
                    Echo($"devnet: node{now} is the leader now");
                    lastLeader = now;
                }
            }

            Echo("devnet: stopping every node");
            await cluster.StopAllAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            return 0;
        });
        return command;
    }

    // Waits for key epoch 1 (a DKG takes a moment after the election) and prints it.
    private static async Task ReportKeyAsync(LocalCluster cluster, Action<string> echo, CancellationToken token)
    {
        using var client = new Sequencer.Client.SequencerClient(new Uri(cluster.Node(1).Spec.Api), TimeSpan.FromSeconds(2));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline && !token.IsCancellationRequested)
        {
            try
            {
                if ((await client.GetKeysAsync(token).ConfigureAwait(false)) is [var key, ..])
                {
                    echo($"devnet: key epoch {key.Epoch} is in force: {key.Threshold} of {key.Members.Count} sign under group key {key.GroupKey}");
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or Sequencer.Client.SequencerApiException)
            {
                // Not up yet.
            }

            try
            {
                await Task.Delay(200, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }

        echo("devnet: no key epoch after 60 s; see GET /v1/signing (dkg) and the node logs");
    }
}
