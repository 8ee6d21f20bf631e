using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Network;
using Sequencer.Chaos.Reporting;
using Sequencer.Checker;
using Sequencer.Client.Local;

namespace Sequencer.Chaos.Running;

/// <summary>How a chaos run is set up.</summary>
public sealed record ChaosOptions
{
    /// <summary>Nodes (3 or 5).</summary>
    public int Nodes { get; init; } = 3;

    /// <summary>Seconds of workload and faults.</summary>
    public double DurationSeconds { get; init; } = 60;

    /// <summary>The seed of the fault schedule, the targets and the tx contents.</summary>
    public int Seed { get; init; } = RandomNumberGenerator.GetInt32(int.MaxValue);

    /// <summary>The scenario name (see <see cref="FaultSchedule.Scenarios"/>).</summary>
    public string Scenario { get; init; } = "mixed";

    /// <summary>"proxy" (default, no root) or "host" (root: network namespaces).</summary>
    public string Mode { get; init; } = "proxy";

    /// <summary>Where the run's directory is created.</summary>
    public string OutputRoot { get; init; } = ".data/chaos";

    /// <summary>Concurrent workload clients.</summary>
    public int Clients { get; init; } = 8;

    /// <summary>Txs per submit.</summary>
    public int TxsPerRequest { get; init; } = 1;

    /// <summary>The node binary; null for the built Release node.</summary>
    public NodeBinary? Binary { get; init; }

    /// <summary>Extra arguments for every node (limits, test faults).</summary>
    public IReadOnlyList<string> NodeArguments { get; init; } = [];

    /// <summary>Extra arguments for one node only, by id.</summary>
    public IReadOnlyDictionary<int, IReadOnlyList<string>> NodeArgumentsById { get; init; } = new Dictionary<int, IReadOnlyList<string>>();

    /// <summary>Receives progress lines; null for none.</summary>
    public Action<string>? Progress { get; init; }

    /// <summary>Refreshes a one-line live status (elapsed, ops, throughput, leader, fault); null for none.</summary>
    public Action<string>? Status { get; init; }

    /// <summary>Keep node data even when the run passes.</summary>
    public bool KeepData { get; init; }

    /// <summary>Sign every batch with a t-of-n dealer key (t a majority); the signing invariants are then checked.</summary>
    public bool Signing { get; init; } = true;

    /// <summary>
    /// With <see cref="Signing"/>: no dealer key; the nodes boot without one and run the t-of-n Pedersen DKG, and the
    /// checker takes the group key every node reports once it is in force.
    /// </summary>
    public bool Dkg { get; init; }

    /// <summary>
    /// With <see cref="Signing"/>: a local L1 (anvil, a block a second) with the inbox contract; the leader posts signed
    /// heads, the L1 faults can be injected, and INV-L1PREFIX and LIVE-POST are checked.
    /// </summary>
    public bool L1 { get; init; } = true;

    /// <summary>
    /// Ethereum validation mode (issue 13): the nodes run with <c>--validation ethereum</c>, the workload sends signed
    /// transactions with conflicting pairs to two nodes at once, and INV-NOCONFLICT is checked.
    /// </summary>
    public bool Ethereum { get; init; }
}

/// <summary>The verdict and the files of a run.</summary>
/// <param name="Passed">Every invariant held.</param>
/// <param name="Seed">The seed, to replay it.</param>
/// <param name="Directory">The run's directory (report, picture, history, node data and logs when it failed).</param>
/// <param name="Report">The summary.</param>
public sealed record ChaosResult(bool Passed, int Seed, string Directory, RunReport Report);

/// <summary>
/// One chaos run: start the nodes behind the network, run the workload, inject the seeded faults one at a time,
/// heal, wait for convergence, read every node's log, check the invariants, and write the report.
/// </summary>
public static class ChaosRun
{
    /// <summary>LIVE-FAILOVER: a new tx is ordered within this long after the leader is killed.</summary>
    public static readonly TimeSpan FailoverBound = TimeSpan.FromSeconds(2);

    /// <summary>LIVE-HEAL: after the last heal every node converges within this long.</summary>
    public static readonly TimeSpan HealBound = TimeSpan.FromSeconds(10);

    /// <summary>LIVE-MINORITY: with the leader and the other nodes healthy, a fault on followers never stops ordering for longer than this.</summary>
    public static readonly TimeSpan MinorityStallBound = TimeSpan.FromSeconds(2);

    /// <summary>LIVE-MINORITY: ... nor slows it below this share of the rate before the fault.</summary>
    public const double MinorityRateFloor = 0.25;

    /// <summary>
    /// How long a workload client waits for a node before it tries the tx elsewhere. Every client that happens to send
    /// to a paused or cut-off node loses this much, so it is part of every stall LIVE-MINORITY sees: 1 s leaves the
    /// cluster's own share of the 2 s bound at least a second (1.5 s left half a second, and soak runs broke the bound
    /// by 17 ms with a cut-off follower).
    /// </summary>
    public static readonly TimeSpan ClientTimeout = TimeSpan.FromSeconds(1);

    /// <summary>LIVE-SIGN: with t signers up and connected, every ordered batch is covered by a signed head within this.</summary>
    public static readonly TimeSpan SignBound = TimeSpan.FromSeconds(1);

    /// <summary>LIVE-POST: after the last heal, the contract holds the highest signed head within this.</summary>
    public static readonly TimeSpan PostBound = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="options"/> to the end and returns the verdict.</summary>
    public static async Task<ChaosResult> RunAsync(ChaosOptions options, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(options);
        var (scenario, skipped, schedule) = ScheduleFor(options);
        var host = options.Mode == "host";

        var directory = Path.GetFullPath(Path.Combine(options.OutputRoot, $"{DateTime.UtcNow:yyyyMMdd-HHmmss}-{options.Scenario}-seed{options.Seed}"));
        Directory.CreateDirectory(directory);
        var runLog = new StreamWriter(Path.Combine(directory, "run.log")) { AutoFlush = true };
        var origin = Stopwatch.GetTimestamp();
        long NowMs() => (long)Stopwatch.GetElapsedTime(origin).TotalMilliseconds;
        void Log(string line)
        {
            var stamped = $"[{NowMs() / 1000.0,7:0.00}s] {line}";
            lock (runLog)
                runLog.WriteLine(stamped);
            options.Progress?.Invoke(stamped);
        }

        Log($"SEED={options.Seed} scenario={scenario.Name} mode={options.Mode} nodes={options.Nodes} duration={options.DurationSeconds}s");
        foreach (var reason in skipped)
            Log($"not injected: {reason}");
        foreach (var fault in schedule)
            Log($"scheduled #{fault.Sequence} {fault.Kind} at {fault.AtSeconds:0.0}s for {fault.ForSeconds:0.0}s");

        IChaosNetwork network = host
            ? await HostNetwork.CreateAsync(options.Nodes, options.Seed).ConfigureAwait(false)
            : ProxyNetwork.Create(options.Nodes, options.Seed);
        var adminToken = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        string? keys = null;
        Dictionary<ulong, byte[]> groupKeys = [];
        var threshold = (options.Nodes / 2) + 1;
        if (options.Signing && !options.Dkg)
        {
            keys = Path.Combine(directory, "keys");
            var group = Sequencer.Threshold.KeyFiles.WriteDealerKeys(keys, threshold, options.Nodes);
            groupKeys[group.Epoch] = Sequencer.Threshold.GroupKeyFile.HexBytes(group.GroupKey);
            Log($"signing: {threshold}-of-{options.Nodes} dealer key {group.GroupKey}");
        }

        LocalAnvil? anvil = null;
        Sequencer.Ethereum.Address? inbox = null;
        List<string> l1Arguments = [];
        if (options.Signing && options.L1)
        {
            anvil = await LocalAnvil.StartAsync(Path.Combine(directory, "anvil.log"), blockTimeSeconds: 1, token: token, host: network.L1Host).ConfigureAwait(false);
            inbox = Sequencer.Ethereum.Address.ForContract(Sequencer.Ethereum.EthKey.FromHex(LocalAnvil.DeployerKey).Address, 0);
            var posterKey = Path.Combine(directory, "l1", "poster.key");
            Directory.CreateDirectory(Path.GetDirectoryName(posterKey)!);
            Sequencer.Core.Storage.DurableFiles.WriteAllText(posterKey, LocalAnvil.DefaultKey, secret: true);
            l1Arguments = ["--l1-rpc", anvil.Rpc.ToString(), "--l1-contract", inbox.ToString(), "--l1-key-file", posterKey, "--l1-finality-depth", "2"];
            Log($"L1: anvil at {anvil.Rpc} (pid {anvil.ProcessId}), inbox {inbox}");
        }

        var specs = network.Nodes.Select(n => new NodeSpec(n.NodeId, n.RaftAdvertised, n.Api, Path.Combine(directory, $"node{n.NodeId}"), n.RaftListen, n.Internal)).ToList();
        var cluster = LocalCluster.Create(new LocalClusterOptions
        {
            Nodes = options.Nodes,
            DataRoot = directory,
            Specs = specs,
            Binary = options.Binary,
            // A short WAL retention makes snapshots and log compaction part of every run, unless --node-arg sets one.
            ExtraArguments = ["--admin-token", adminToken,
                .. options.NodeArguments.Any(a => a == "--wal-retained-entries" || a.StartsWith("--wal-retained-entries=", StringComparison.Ordinal)) ? Array.Empty<string>() : ["--wal-retained-entries", "512"],
                // The rotation fault rotates minutes after the start, at any time; a run sets no rotation interval unless
                // --node-arg sets one.
                .. options.NodeArguments.Any(a => a.Contains("minKeyRotationIntervalMs", StringComparison.OrdinalIgnoreCase)) ? Array.Empty<string>() : ["--limit", "minKeyRotationIntervalMs=0"],
                .. options.Signing && options.Dkg ? ["--dkg-threshold", threshold.ToString(CultureInfo.InvariantCulture)] : Array.Empty<string>(),
                .. l1Arguments,
                .. options.Ethereum ? ["--validation", "ethereum"] : Array.Empty<string>(),
                .. options.NodeArguments],
            KeysDirectory = keys,
        });
        foreach (var node in cluster.Nodes)
        {
            var id = node.Spec.Id;
            node.Wrapper = start => network.Wrap(id, start);
            if (options.NodeArgumentsById.TryGetValue(id, out var extra))
                node.Wrapper = start => Append(network.Wrap(id, start), extra);
        }

        var records = new List<FaultRecord>();
        var passed = false;
        RunReport? report = null;
        ClusterMonitor? monitor = null;
        Workload? workload = null;
        try
        {
            cluster.StartAll();
            var firstLeader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(60), token: token).ConfigureAwait(false);
            Log($"cluster up: leader n{firstLeader}");
            if (options.Signing && options.Dkg)
            {
                var (epoch, groupKey) = await WaitForDkgKeyAsync(cluster, token).ConfigureAwait(false);
                groupKeys[epoch] = groupKey;
                Log($"signing: {threshold}-of-{options.Nodes} DKG key {Convert.ToHexStringLower(groupKey)} (epoch {epoch}), the same on every node");
            }

            if (anvil is not null)
                await DeployInboxAsync(anvil, inbox!, groupKeys, Log, token).ConfigureAwait(false);

            origin = Stopwatch.GetTimestamp();
            monitor = new ClusterMonitor(cluster, NowMs);
            workload = new Workload([.. cluster.Nodes.Select(n => (n.Spec.Id, n.Client))], WorkloadFor(options), origin);
            using var stopWorkload = CancellationTokenSource.CreateLinkedTokenSource(token);
            var running = workload.RunAsync(stopWorkload.Token);
            var nemesis = new Nemesis(cluster, network, monitor, workload, adminToken, Log, NowMs, anvil);
            using var status = StartStatus(options, workload, monitor, records, NowMs);

            foreach (var fault in schedule)
            {
                await DelayUntilAsync(fault.AtSeconds * 1000, NowMs, token).ConfigureAwait(false);
                var record = new FaultRecord { Sequence = fault.Sequence, Kind = fault.Kind };
                lock (records)
                    records.Add(record);
                Func<Task> heal;
                try
                {
                    heal = await nemesis.InjectAsync(fault, record).ConfigureAwait(false);
                }
                catch (NotSupportedException e)
                {
                    record.Outcome = "not injected: " + e.Message;
                    Log($"#{fault.Sequence} {fault.Kind}: {record.Outcome}");
                    continue;
                }

                Log($"#{fault.Sequence} {fault.Kind} on {record.Target}: {record.Detail}");
                await DelayUntilAsync(record.StartMs + fault.ForSeconds * 1000, NowMs, token).ConfigureAwait(false);
                await heal().ConfigureAwait(false);
                record.EndMs = NowMs();
                Log($"#{fault.Sequence} {fault.Kind} healed{(record.Outcome is null ? string.Empty : ": " + record.Outcome)}");
            }

            await DelayUntilAsync(options.DurationSeconds * 1000 - 3000, NowMs, token).ConfigureAwait(false);
            await nemesis.HealAllAsync().ConfigureAwait(false);
            var healedAt = NowMs();
            Log("every fault healed; the workload runs on for 3 s");
            await DelayUntilAsync(Math.Max(options.DurationSeconds * 1000, healedAt + 3000), NowMs, token).ConfigureAwait(false);
            await stopWorkload.CancelAsync().ConfigureAwait(false);
            await running.ConfigureAwait(false);

            var converged = await WaitForConvergenceAsync(cluster, healedAt, NowMs, token).ConfigureAwait(false);
            Log(converged.Message);
            Convergence? signed = null;
            InvariantResult? rotated = null;
            if (options.Signing)
            {
                signed = await WaitForSigningAsync(cluster, healedAt, NowMs, token).ConfigureAwait(false);
                Log(signed.Message);
                if (nemesis.RotationsRequested > 0)
                {
                    rotated = await WaitForRotationAsync(cluster, healedAt, NowMs, token).ConfigureAwait(false);
                    Log(rotated.Detail);
                }
            }

            InvariantResult? posting = null;
            if (anvil is not null)
            {
                posting = await WaitForPostingAsync(cluster, anvil, inbox!, healedAt, NowMs, token).ConfigureAwait(false);
                Log(posting.Detail);
            }

            var history = workload.History.Snapshot();
            var unreachable = new List<int>();
            var chains = await ChainReader.ReadAsync([.. cluster.Nodes.Select(n => (n.Spec.Id, n.Client))], unreachable, token).ConfigureAwait(false);
            var results = new List<InvariantResult>(InvariantChecker.Check(history, chains));
            if (options.Ethereum)
                results.Add(NonceConflictChecker.Check(chains, workload.SentAccounts, workload.Refusals, history));
            if (unreachable.Count > 0)
                results.Add(new InvariantResult("READ-LOGS", false, $"could not read the log of {string.Join(", ", unreachable.Select(id => $"n{id}"))}"));
            results.Add(Liveness.CheckFailover(history, records, FailoverBound, monitor.Samples));
            if (options.Signing)
            {
                // INV-ROTATION: the key history every node serves, each hand-over checked from the pinned first key; the
                // signing invariants then check every head under its own epoch's verified key.
                if (rotated is not null)
                    results.Add(rotated);
                var served = new List<(int NodeId, IReadOnlyList<Sequencer.Client.KeyEpochDto> Keys)>();
                foreach (var node in cluster.Nodes)
                {
                    try
                    {
                        served.Add((node.Spec.Id, await node.Client.GetKeysAsync(token).ConfigureAwait(false)));
                    }
                    catch (Exception e) when (e is HttpRequestException or TaskCanceledException or Sequencer.Client.SequencerApiException or System.Text.Json.JsonException)
                    {
                        Log($"n{node.Spec.Id}: GET /v1/keys failed: {e.Message}");
                    }
                }

                var chainId = chains.SelectMany(c => c.Batches).Select(b => b.Header.ToHeader().ChainId).FirstOrDefault();
                var (rotation, verifiedKeys) = KeyHistoryChecker.Check(served, chainId, groupKeys);
                results.Add(rotation);
                var unsignedNodes = new List<int>();
                var signing = await SigningChecker.ReadAsync([.. cluster.Nodes.Select(n => (n.Spec.Id, n.Client))], unsignedNodes, token).ConfigureAwait(false);
                results.AddRange(SigningChecker.Check(signing, chains, verifiedKeys, monitor.ObservedProofs));
                if (unsignedNodes.Count > 0)
                    results.Add(new InvariantResult("READ-SIGNATURES", false, $"could not read the signatures of {string.Join(", ", unsignedNodes.Select(id => $"n{id}"))}"));
            }

            results.Add(Liveness.CheckHeal(converged, history, records, healedAt, HealBound, signed));
            if (options.Signing)
            {
                var trace = monitor.SigningTrace;
                results.Add(Liveness.CheckSigning(monitor.Samples, records, SignBound, TimeSpan.FromMilliseconds(ClusterMonitor.PollIntervalMs), NowMs(), trace));
                await File.WriteAllLinesAsync(Path.Combine(directory, "signing.log"), trace.Select(t => $"{t.AtMs / 1000.0:0.000} s n{t.NodeId}: {t.View}"), token).ConfigureAwait(false);
            }

            results.Add(Liveness.CheckMinority(history, records, monitor.Samples, MinorityStallBound, MinorityRateFloor, ClientTimeout));
            results.Add(Liveness.CheckDiskFaults(records));
            if (anvil is not null)
            {
                results.Add(posting!);
                results.Add(await CheckL1PrefixAsync(anvil, inbox!, chains, token).ConfigureAwait(false));
            }

            passed = results.All(r => r.Passed);

            report = RunReport.Create(options, scenario, directory, skipped, records, history, results, monitor, NowMs());
            await workload.History.WriteJsonLinesAsync(Path.Combine(directory, "history.jsonl"), token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException or IOException)
        {
            // A node that exited on its own says why in its last log line: CI keeps the test output, not the run directory.
            var exits = string.Concat(cluster.Nodes.Where(n => n.ExitCode is not null)
                .Select(n => $"; node {n.Spec.Id} exited with code {n.ExitCode}: {n.Tail(1).Trim()}"));
            Log($"the run could not complete: {e.Message}{exits}");
            report = RunReport.Create(options, scenario, directory, skipped, records, workload?.History.Snapshot() ?? [],
                [new InvariantResult("RUN", false, e.Message + exits)], monitor, NowMs());
            if (workload is not null)
                await workload.History.WriteJsonLinesAsync(Path.Combine(directory, "history.jsonl"), CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            if (monitor is not null)
                await monitor.DisposeAsync().ConfigureAwait(false);
            await cluster.DisposeAsync().ConfigureAwait(false);
            await network.DisposeAsync().ConfigureAwait(false);
            if (anvil is not null)
                await anvil.DisposeAsync().ConfigureAwait(false);
        }

        ReportWriter.Write(report, directory);
        Log(passed ? "PASS" : $"FAIL SEED={options.Seed}: data dirs, node logs and the history are kept in {directory}");
        await runLog.DisposeAsync().ConfigureAwait(false);
        if (passed && !options.KeepData)
        {
            foreach (var node in specs)
                DiskFaults.Wipe(node.DataDir);
        }

        return new ChaosResult(passed, options.Seed, directory, report);
    }

    /// <summary>
    /// The scenario of <paramref name="options"/>, the kinds this run cannot inject (with the reason) and the seeded
    /// schedule: what <see cref="RunAsync"/> runs and <see cref="RunPlan"/> prints.
    /// </summary>
    /// <exception cref="ArgumentException">No such scenario or fault kind.</exception>
    public static (Scenario Scenario, IReadOnlyList<string> Skipped, IReadOnlyList<ScheduledFault> Schedule) ScheduleFor(ChaosOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var scenario = FaultSchedule.Find(options.Scenario);
        var root = OperatingSystem.IsLinux() && Environment.UserName == "root";
        var (usable, skipped) = FaultSchedule.Usable(scenario, options.Mode == "host", options.Nodes, root, options.Signing && options.L1);
        return (scenario, skipped, FaultSchedule.Build(options.Seed, scenario, usable, options.DurationSeconds));
    }

    /// <summary>The workload of a run: its clients, request size and the seed of its txs.</summary>
    public static WorkloadOptions WorkloadFor(ChaosOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        // A client gives a node ClientTimeout to answer before it tries the same tx (idempotent) elsewhere and avoids
        // that node for a while: a paused or unreachable node must not hold the workload (LIVE-MINORITY). An attempt that
        // gave up is recorded as "info" (its outcome is unknown), as a real client would have to treat it.
        return new WorkloadOptions
        {
            Clients = options.Clients, TxsPerRequest = options.TxsPerRequest, Seed = options.Seed,
            RequestTimeout = ClientTimeout, AvoidAfterFailure = TimeSpan.FromSeconds(5),
            EthereumChainId = options.Ethereum ? 1 : null,
        };
    }

    private static System.Diagnostics.ProcessStartInfo Append(System.Diagnostics.ProcessStartInfo start, IReadOnlyList<string> extra)
    {
        foreach (var argument in extra)
            start.ArgumentList.Add(argument);
        return start;
    }

    // Deploys the inbox with the key epoch in force (the dealer's, or the DKG's once every node reports it).
    private static async Task DeployInboxAsync(LocalAnvil anvil, Sequencer.Ethereum.Address inbox, Dictionary<ulong, byte[]> groupKeys, Action<string> log, CancellationToken token)
    {
        var (epoch, key) = groupKeys.OrderBy(k => k.Key).First();
        using var rpc = new Sequencer.Ethereum.EthRpcClient(anvil.Rpc);
        var receipt = await new Sequencer.Ethereum.EthSender(rpc, Sequencer.Ethereum.EthKey.FromHex(LocalAnvil.DeployerKey), anvil.ChainId)
            .SendAsync(null, Sequencer.L1.InboxContract.Deployment(1, epoch, key), TimeSpan.FromSeconds(30), token: token).ConfigureAwait(false);
        if (!receipt.Success || !inbox.Equals(receipt.ContractAddress))
            throw new InvalidOperationException($"the inbox was not deployed at {inbox} (status {receipt.Success}, address {receipt.ContractAddress})");
        log($"L1: inbox deployed in block {receipt.BlockNumber} with key epoch {epoch}");
    }

    // LIVE-POST: after the heal, the contract's head reaches the highest head every node has signed.
    private static async Task<InvariantResult> WaitForPostingAsync(LocalCluster cluster, LocalAnvil anvil, Sequencer.Ethereum.Address inbox, long healedAt, Func<long> nowMs, CancellationToken token)
    {
        using var rpc = new Sequencer.Ethereum.EthRpcClient(anvil.Rpc);
        var reader = new Sequencer.L1.InboxReader(rpc, inbox);
        var deadline = healedAt + (long)PostBound.TotalMilliseconds;
        var last = string.Empty;
        while (true)
        {
            var views = await Task.WhenAll(cluster.Nodes.Select(n => SigningStatusAsync(n.Client, token))).ConfigureAwait(false);
            var signed = views.Where(v => v is not null).Select(v => v!.Value.Signed).DefaultIfEmpty(0UL).Min();
            try
            {
                var posted = await reader.LastHeightAsync("latest", token).ConfigureAwait(false);
                last = $"the contract holds head {posted}, every node has signed through {signed}";
                if (signed > 0 && posted >= signed)
                    return new InvariantResult("LIVE-POST", true, $"{last}, {nowMs() - healedAt} ms after the heal");
            }
            catch (Exception e) when (e is HttpRequestException or Sequencer.Ethereum.EthRpcException or FormatException or TaskCanceledException)
            {
                last = "the L1 did not answer: " + e.Message;
            }

            if (nowMs() > deadline)
                return new InvariantResult("LIVE-POST", false, $"{PostBound.TotalSeconds} s after the heal {last}");
            await Task.Delay(200, token).ConfigureAwait(false);
        }
    }

    private static async Task<InvariantResult> CheckL1PrefixAsync(LocalAnvil anvil, Sequencer.Ethereum.Address inbox, IReadOnlyList<NodeChain> chains, CancellationToken token)
    {
        using var rpc = new Sequencer.Ethereum.EthRpcClient(anvil.Rpc);
        var reader = new Sequencer.L1.InboxReader(rpc, inbox);
        var events = await reader.HeadsPostedAsync(0, await rpc.BlockNumberAsync(token).ConfigureAwait(false), token).ConfigureAwait(false);
        var posted = events.Where(e => !e.Log.Removed).Select(e => new PostedHead(e.Height, e.Commitment.ToString(), e.Log.BlockNumber)).ToList();
        return L1Checker.Check(posted, await reader.LastHeightAsync("latest", token).ConfigureAwait(false), (await reader.LastHashAsync("latest", token).ConfigureAwait(false)).ToString(), chains);
    }

    private static async Task DelayUntilAsync(double atMs, Func<long> nowMs, CancellationToken token)
    {
        var wait = atMs - nowMs();
        if (wait > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(wait), token).ConfigureAwait(false);
    }

    private static async Task<Convergence> WaitForConvergenceAsync(LocalCluster cluster, long healedAt, Func<long> nowMs, CancellationToken token)
    {
        var deadline = healedAt + 30_000;
        var last = string.Empty;
        while (nowMs() < deadline)
        {
            var views = await Task.WhenAll(cluster.Nodes.Select(LocalCluster.TryGetClusterAsync)).ConfigureAwait(false);
            last = string.Join(", ", cluster.Nodes.Zip(views, (n, v) => $"n{n.Spec.Id}: {(v is null ? "down" : $"{v.Role} height {v.Height}")}"));
            if (views.All(v => v is not null) && views.Select(v => v!.Height).Distinct().Count() == 1 && views.Count(v => v!.Role == "leader") == 1)
                return new Convergence(true, nowMs() - healedAt, $"converged {nowMs() - healedAt} ms after the heal: {last}");
            await Task.Delay(100, token).ConfigureAwait(false);
        }

        return new Convergence(false, nowMs() - healedAt, $"did not converge within 30 s of the heal: {last}");
    }

    /// <summary>
    /// Waits (at most 60 s) until every node reports the same key epoch from the DKG (GET /v1/keys), and returns it.
    /// The checker verifies every signature under this key: a node that reported another would fail the run here.
    /// </summary>
    private static async Task<(ulong Epoch, byte[] GroupKey)> WaitForDkgKeyAsync(LocalCluster cluster, CancellationToken token)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        var last = "no answer";
        while (DateTime.UtcNow < deadline)
        {
            var keys = new List<(ulong Epoch, string GroupKey)?>();
            var states = new List<string>();
            foreach (var node in cluster.Nodes)
            {
                try
                {
                    using var document = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync(new Uri(node.Client.BaseUrl, "/v1/keys"), token).ConfigureAwait(false));
                    var epochs = document.RootElement.ValueKind == System.Text.Json.JsonValueKind.Array ? document.RootElement : document.RootElement.GetProperty("epochs");
                    keys.Add(epochs.GetArrayLength() == 0 ? null
                        : (ulong.Parse(epochs[0].GetProperty("epoch").GetString()!, CultureInfo.InvariantCulture), epochs[0].GetProperty("groupKey").GetString()!));
                    states.Add($"n{node.Spec.Id}: {(keys[^1] is { } key ? $"epoch {key.Epoch}" : "no key yet")}");
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
                {
                    keys.Add(null);
                    states.Add($"n{node.Spec.Id}: {(node.ExitCode is { } code ? $"exited with code {code} (see node{node.Spec.Id}.log)" : e.Message)}");
                }
            }

            last = string.Join(", ", states);

            if (keys.All(k => k is not null) && keys.Select(k => k!.Value).Distinct().Count() == 1)
                return (keys[0]!.Value.Epoch, Convert.FromHexString(keys[0]!.Value.GroupKey[2..]));
            if (keys.All(k => k is not null))
                throw new InvalidOperationException("the nodes report different DKG keys: " + string.Join(", ", keys.Select(k => $"{k!.Value.Epoch}:{k.Value.GroupKey}")));
            await Task.Delay(200, token).ConfigureAwait(false);
        }

        throw new TimeoutException($"the DKG key was not in force on every node within 60 s ({last})");
    }

    /// <summary>LIVE-HEAL for signing: after the heal every node signs everything it has applied.</summary>
    private static async Task<Convergence> WaitForSigningAsync(LocalCluster cluster, long healedAt, Func<long> nowMs, CancellationToken token)
    {
        var deadline = healedAt + 30_000;
        var last = string.Empty;
        while (nowMs() < deadline)
        {
            var views = await Task.WhenAll(cluster.Nodes.Select(n => SigningStatusAsync(n.Client, token))).ConfigureAwait(false);
            last = string.Join(", ", cluster.Nodes.Zip(views, (n, v) => $"n{n.Spec.Id}: {(v is null ? "down" : $"signed through {v.Value.Signed} of {v.Value.Height}")}"));
            if (views.All(v => v is not null && v.Value.Height > 0 && v.Value.Signed == v.Value.Height) && views.Select(v => v!.Value.Height).Distinct().Count() == 1)
                return new Convergence(true, nowMs() - healedAt, $"every batch signed on every node {nowMs() - healedAt} ms after the heal: {last}");
            await Task.Delay(100, token).ConfigureAwait(false);
        }

        return new Convergence(false, nowMs() - healedAt, $"signing did not catch up within 30 s of the heal: {last}");
    }

    /// <summary>
    /// LIVE-ROTATE: once every fault is healed, every key rotation asked for during the run finishes (the DKG done, the
    /// hand-over in the log) and every node has the same key epoch in force, within 60 s.
    /// </summary>
    private static async Task<InvariantResult> WaitForRotationAsync(LocalCluster cluster, long healedAt, Func<long> nowMs, CancellationToken token)
    {
        var deadline = healedAt + 60_000;
        var last = string.Empty;
        while (nowMs() < deadline)
        {
            var views = await Task.WhenAll(cluster.Nodes.Select(async n =>
            {
                try
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                    timeout.CancelAfter(TimeSpan.FromSeconds(2));
                    using var document = await n.Client.GetSigningViewAsync(timeout.Token).ConfigureAwait(false);
                    var root = document.RootElement;
                    return ((string Epoch, bool Settled)?)(root.GetProperty("keyEpoch").ToString(),
                        root.GetProperty("dkg").ValueKind == System.Text.Json.JsonValueKind.Null && root.GetProperty("pendingKeyEpoch").ValueKind == System.Text.Json.JsonValueKind.Null
                        && root.GetProperty("signerEpoch").ToString() == root.GetProperty("keyEpoch").ToString());
                }
                catch (Exception e) when (e is Sequencer.Client.SequencerApiException or OperationCanceledException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException)
                {
                    return null;
                }
            })).ConfigureAwait(false);
            last = string.Join(", ", cluster.Nodes.Zip(views, (n, v) => $"n{n.Spec.Id}: {(v is null ? "down" : $"key epoch {v.Value.Epoch}{(v.Value.Settled ? string.Empty : " (a rotation under way, or its signer not switched)")}")}"));
            if (views.All(v => v is { Settled: true }) && views.Select(v => v!.Value.Epoch).Distinct().Count() == 1)
                return new InvariantResult("LIVE-ROTATE", true, $"every rotation finished {nowMs() - healedAt} ms after the heal: {last}");
            await Task.Delay(200, token).ConfigureAwait(false);
        }

        return new InvariantResult("LIVE-ROTATE", false, $"a key rotation did not finish within 60 s of the heal: {last}");
    }

    private static async Task<(ulong Height, ulong Signed)?> SigningStatusAsync(Sequencer.Client.SequencerClient client, CancellationToken token)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            using var document = await client.GetSigningViewAsync(timeout.Token).ConfigureAwait(false);
            return (ulong.Parse(document.RootElement.GetProperty("height").GetString()!, CultureInfo.InvariantCulture),
                ulong.Parse(document.RootElement.GetProperty("signedThrough").GetString()!, CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is Sequencer.Client.SequencerApiException or OperationCanceledException or System.Text.Json.JsonException or KeyNotFoundException)
        {
            return null;
        }
    }

    private static Timer? StartStatus(ChaosOptions options, Workload workload, ClusterMonitor monitor, List<FaultRecord> records, Func<long> nowMs)
    {
        if (options.Status is not { } status)
            return null;
        long lastOk = 0;
        long lastAt = 0;
        return new Timer(_ =>
        {
            var (ok, fail, info) = workload.History.Counts();
            var at = nowMs();
            var rate = at > lastAt ? (ok - lastOk) * 1000.0 / (at - lastAt) : 0;
            lastOk = ok;
            lastAt = at;
            FaultRecord? active;
            lock (records)
                active = records.LastOrDefault(r => r.EndMs is null && r.Outcome is null);
            var leader = monitor.CurrentLeader is { } l ? $"n{l}" : "none";
            var fault = active is null ? "no fault" : $"#{active.Sequence} {active.Kind} {active.Target}";
            status(string.Create(CultureInfo.InvariantCulture,
                $"{at / 1000.0,6:0.0}s/{options.DurationSeconds:0}s  ok {ok}  fail {fail}  info {info}  {rate,6:0} tx/s  leader {leader}  {fault}"));
        }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }
}

/// <summary>Whether every node converged after the final heal.</summary>
/// <param name="Converged">All nodes answered with the same height and one leader.</param>
/// <param name="AfterHealMs">How long it took.</param>
/// <param name="Message">What each node reported.</param>
public sealed record Convergence(bool Converged, long AfterHealMs, string Message);
