using System.CommandLine;
using System.Globalization;
using Sequencer.Client.Local;
using Sequencer.Ethereum;
using Sequencer.L1;
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
    private static readonly Option<string> L1Option = new("--l1")
    {
        Description = "The L1 that signed heads are posted to: anvil (a local anvil on --l1-port, the contract deployed once the key is in force) or none.",
        DefaultValueFactory = _ => "anvil",
    };

    private static readonly Option<string> ValidationOption = new("--validation") { Description = "How the chain validates txs: opaque (any bytes) or ethereum (signed Ethereum transactions for --chain-id, one ordered tx per sender and nonce).", DefaultValueFactory = _ => "opaque" };
    private static readonly Option<ulong> RetainHeightsOption = new("--retain-heights") { Description = "Each node prunes the tx data of heights more than this many below its stored height, once signed and final on the L1 (0 keeps everything; needs --validation ethereum)." };
    private static readonly Option<int> L1PortOption = new("--l1-port") { Description = "The local anvil's port.", DefaultValueFactory = _ => 8545 };
    private static readonly Option<int> L1BlockTimeOption = new("--l1-block-time") { Description = "Seconds between the local anvil's blocks.", DefaultValueFactory = _ => 1 };

    private const int FinalityDepth = 2;

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
            L1Option, L1PortOption, L1BlockTimeOption, ValidationOption, RetainHeightsOption,
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

            // The local L1: anvil, with the contract's address fixed in advance (the deployer's first creation), so the
            // nodes watch it from the start and post as soon as it is deployed (once the key epoch is in force).
            LocalAnvil? anvil = null;
            Address? inbox = null;
            var useL1 = result.GetValue(L1Option) == "anvil" && !result.GetValue(NoSigningOption);
            if (result.GetValue(L1Option) is not ("anvil" or "none"))
            {
                Echo("devnet: --l1 is anvil or none");
                return 2;
            }

            if (useL1)
            {
                try
                {
                    anvil = await LocalAnvil.StartAsync(Path.Combine(data, "anvil.log"), result.GetValue(L1PortOption), blockTimeSeconds: result.GetValue(L1BlockTimeOption), token: token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is FileNotFoundException or InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
                {
                    Echo($"devnet: the local L1 (anvil on port {result.GetValue(L1PortOption)}) did not start: {e.Message}; use --l1 none to run without it");
                    return 1;
                }

                inbox = Address.ForContract(EthKey.FromHex(LocalAnvil.DeployerKey).Address, 0);
                var posterKey = Path.Combine(data, "l1", "poster.key");
                Directory.CreateDirectory(Path.GetDirectoryName(posterKey)!);
                Sequencer.Core.Storage.DurableFiles.WriteAllText(posterKey, LocalAnvil.DefaultKey, secret: true);
                extra = [.. extra, "--l1-rpc", anvil.Rpc.ToString(), "--l1-contract", inbox.ToString(), "--l1-key-file", posterKey,
                    "--l1-finality-depth", FinalityDepth.ToString(CultureInfo.InvariantCulture)];
            }

            await using var anvilScope = anvil;
            var validation = result.GetValue(ValidationOption)!.ToLowerInvariant();
            if (validation is not ("opaque" or "ethereum"))
            {
                Echo($"devnet: --validation {validation} is neither opaque nor ethereum");
                return 2;
            }

            // A devnet is one operator's: a key rotation (keygen --rotate) can be tried at once, not 10 minutes after a start.
            extra = [.. extra, "--validation", validation, "--limit", "minKeyRotationIntervalMs=0"];
            if (result.GetValue(RetainHeightsOption) is > 0 and var retain)
            {
                if (validation != "ethereum")
                {
                    Echo("devnet: --retain-heights needs --validation ethereum (an opaque chain refuses a tx twice only by its hash, so every node keeps every hash)");
                    return 2;
                }

                extra = [.. extra, "--retain-heights", retain.ToString(CultureInfo.InvariantCulture)];
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
            {
                var key = await ReportKeyAsync(cluster, Echo, token).ConfigureAwait(false);
                if (anvil is not null && key is not null)
                    await DeployAsync(anvil, inbox!, result.GetValue(ChainIdOption), key, Echo, token).ConfigureAwait(false);
            }

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

    // Deploys the inbox with the cluster's group key, at the address the nodes were given.
    private static async Task DeployAsync(LocalAnvil anvil, Address inbox, ulong chainId, Sequencer.Client.KeyEpochDto key, Action<string> echo, CancellationToken token)
    {
        using var rpc = new EthRpcClient(anvil.Rpc);
        try
        {
            var sender = new EthSender(rpc, EthKey.FromHex(LocalAnvil.DeployerKey), anvil.ChainId);
            var epoch = ulong.Parse(key.Epoch, CultureInfo.InvariantCulture);
            var receipt = await sender.SendAsync(null, InboxContract.Deployment(chainId, epoch, EthHex.ToBytes(key.GroupKey)), TimeSpan.FromSeconds(30), token: token).ConfigureAwait(false);
            if (!receipt.Success || receipt.ContractAddress is null || !receipt.ContractAddress.Equals(inbox))
            {
                echo($"devnet: deploying the inbox failed (status {receipt.Success}, address {receipt.ContractAddress}); the nodes will not post");
                return;
            }

            echo($"devnet: L1 (anvil) at {anvil.Rpc}, chain id {anvil.ChainId}: inbox {inbox} deployed in block {receipt.BlockNumber} ({receipt.GasUsed} gas); the leader posts signed heads to it; a post is final {FinalityDepth} blocks deep (GET /v1/l1)");
        }
        catch (Exception e) when (e is HttpRequestException or EthRpcException or TimeoutException or FormatException)
        {
            echo($"devnet: deploying the inbox failed: {e.Message}; the nodes will not post");
        }
    }

    // Waits for key epoch 1 (a DKG takes a moment after the election), prints it and returns it (null: none in time).
    private static async Task<Sequencer.Client.KeyEpochDto?> ReportKeyAsync(LocalCluster cluster, Action<string> echo, CancellationToken token)
    {
        using var client = new Sequencer.Client.SequencerClient(new Uri(cluster.Node(1).Spec.Api), TimeSpan.FromSeconds(2));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline && !token.IsCancellationRequested)
        {
            try
            {
                if ((await client.GetKeysAsync(token).ConfigureAwait(false)) is [var key, ..] keys)
                {
                    // After a rotation the newest epoch signs; the inbox starts from the first and gets every hand-over.
                    var current = keys[^1];
                    echo($"devnet: key epoch {current.Epoch} is in force: {current.Threshold} of {current.Members.Count} sign under group key {current.GroupKey}"
                        + (keys.Count > 1 ? $" (rotated from key epoch {key.Epoch}; a fresh inbox starts at key epoch {key.Epoch} and the leader sends it each hand-over)" : string.Empty));
                    return key;
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
                return null;
            }
        }

        echo("devnet: no key epoch after 60 s; see GET /v1/signing (dkg) and the node logs");
        return null;
    }
}
