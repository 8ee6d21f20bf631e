using System.CommandLine;
using System.Globalization;
using Sequencer.Client.Local;

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

    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var command = new Command("devnet", "Run a local cluster of node processes (make run).")
        {
            NodesOption, DataOption, ApiPortOption, RaftPortOption, ChainIdOption, FreshOption, QuietOption,
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

            var binary = NodeBinary.At(Path.Combine(AppContext.BaseDirectory, "sequencer-node.dll"));
            await using var cluster = LocalCluster.Create(new LocalClusterOptions
            {
                Nodes = result.GetValue(NodesOption),
                DataRoot = data,
                ApiBasePort = result.GetValue(ApiPortOption),
                RaftBasePort = result.GetValue(RaftPortOption),
                ChainId = result.GetValue(ChainIdOption),
                Echo = quiet ? null : Echo,
                Binary = binary,
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
