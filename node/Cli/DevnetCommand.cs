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
    private static readonly Option<int?> ThresholdOption = new("--threshold") { Description = "t of the dealer key made on the first start (default: a majority of the nodes)." };

    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var command = new Command("devnet", "Run a local cluster of node processes (make run).")
        {
            NodesOption, DataOption, ApiPortOption, RaftPortOption, ChainIdOption, FreshOption, QuietOption, NoSigningOption, ThresholdOption,
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

            // Signing keys: a trusted-dealer t-of-n key made on the first start (development only: the dealer briefly
            // held every share). A real consortium runs the DKG or brings its own key directory.
            var nodes = result.GetValue(NodesOption);
            string? keys = null;
            if (!result.GetValue(NoSigningOption))
            {
                keys = Path.Combine(data, "keys");
                if (!File.Exists(Path.Combine(keys, KeyFiles.GroupFileName)))
                {
                    var threshold = result.GetValue(ThresholdOption) ?? (nodes / 2) + 1;
                    if (threshold < 1 || threshold > nodes)
                    {
                        Echo($"devnet: --threshold must be in [1, {nodes}]");
                        return 2;
                    }

                    if (Directory.Exists(keys))
                        Directory.Delete(keys, recursive: true);
                    var group = KeyFiles.WriteDealerKeys(keys, threshold, nodes);
                    Echo($"devnet: made a {threshold}-of-{nodes} dealer key under {keys}: group key {group.GroupKey}");
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
                Echo($"  node{node.Spec.Id}{(node.Spec.Id == leader ? " (leader)" : string.Empty),-9}  api {node.Spec.Api}  raft {node.Spec.Raft}  pid {node.ProcessId}  log {node.LogPath}");
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
}
