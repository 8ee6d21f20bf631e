using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using Sequencer.Chaos.Network;
using Sequencer.Chaos.Running;
using Sequencer.Checker;
using Sequencer.Client.Local;

namespace Sequencer.Chaos.Faults;

/// <summary>What happened to one injected fault.</summary>
public sealed class FaultRecord
{
    /// <summary>Its position in the schedule.</summary>
    public required int Sequence { get; init; }

    /// <summary>The fault.</summary>
    public required FaultKind Kind { get; init; }

    /// <summary>The nodes or links it hit, e.g. "n2" or "n1,n3 | n2".</summary>
    public string Target { get; set; } = string.Empty;

    /// <summary>Milliseconds from the start of the run to the injection.</summary>
    public long StartMs { get; set; }

    /// <summary>Milliseconds from the start of the run to the heal.</summary>
    public long? EndMs { get; set; }

    /// <summary>Sizes and details (delay, loss share, skew, which file).</summary>
    public string Detail { get; set; } = string.Empty;

    /// <summary>For disk faults: "recovered[ (time)]", "failed safe: ...", "failed fast: ..." or "hung: ..."; for others null.</summary>
    public string? Outcome { get; set; }

    /// <summary>Milliseconds from the heal to the first tx ordered that was submitted after it, when one was.</summary>
    public long? RecoveryMs { get; set; }

    /// <summary>For a leader kill or pause: milliseconds from the injection to the first tx ordered that was submitted after it.</summary>
    public long? FailoverMs { get; set; }

    /// <summary>The leader when the fault was injected, when one was known.</summary>
    public int? LeaderAtStart { get; set; }

    /// <summary>The nodes the fault acts on (<see cref="FaultTarget.Nodes"/>).</summary>
    public IReadOnlyList<int> TargetNodes { get; set; } = [];

    /// <summary>Acknowledged txs per second in the seconds before the fault (LIVE-MINORITY).</summary>
    public double? RateBefore { get; set; }

    /// <summary>Acknowledged txs per second while the fault was active.</summary>
    public double? RateDuring { get; set; }

    /// <summary>The longest time during the fault with no acknowledgement at all, in milliseconds.</summary>
    public long? LongestStallMs { get; set; }

    /// <summary>Whether LIVE-MINORITY judged this fault (a healthy majority with the leader kept working).</summary>
    public bool? MinorityFault { get; set; }
}

/// <summary>
/// Injects and heals faults on the nodes, the network, the disks and the clocks. One fault at a time: the schedule
/// never overlaps them, so each can be judged (failover, recovery) on its own.
/// </summary>
public sealed class Nemesis(LocalCluster cluster, IChaosNetwork network, ClusterMonitor monitor, Workload workload, string adminToken, Action<string> log, Func<long> nowMs,
    LocalAnvil? l1 = null)
{
    private static readonly HttpClient Admin = new() { Timeout = TimeSpan.FromSeconds(3) };

    private int NodeCount => cluster.Nodes.Count;

    /// <summary>
    /// Injects <paramref name="fault"/> on the target <see cref="FaultTargets.Choose"/> picks for the current members and
    /// leader; returns the action that heals it.
    /// </summary>
    public async Task<Func<Task>> InjectAsync(ScheduledFault fault, FaultRecord record)
    {
        ArgumentNullException.ThrowIfNull(fault);
        ArgumentNullException.ThrowIfNull(record);
        record.StartMs = nowMs();
        var leader = await monitor.AskLeaderAsync().ConfigureAwait(false) ?? monitor.CurrentLeader;
        var all = cluster.Nodes.Select(n => n.Spec.Id).ToList();
        var target = FaultTargets.Choose(fault, all, leader);
        record.Target = target.Description;
        record.LeaderAtStart = leader;
        record.TargetNodes = target.Nodes;

        switch (fault.Kind)
        {
            case FaultKind.KillLeader:
            case FaultKind.KillFollower:
            case FaultKind.KillMinority:
            case FaultKind.KillMajority:
            case FaultKind.KillAll:
                return await KillAsync(record, target.Nodes).ConfigureAwait(false);
            case FaultKind.PauseLeader:
            case FaultKind.PauseFollower:
                return Pause(record, target.Node);
            case FaultKind.IsolateNode:
                return await PartitionAsync(record, target.Groups, $"n{target.Node} isolated").ConfigureAwait(false);
            case FaultKind.IsolateLeader:
                return await PartitionAsync(record, target.Groups, $"leader n{target.Node} isolated").ConfigureAwait(false);
            case FaultKind.SplitMajorityMinority:
                return await PartitionAsync(record, target.Groups, "majority | minority").ConfigureAwait(false);
            case FaultKind.MajoritiesRing:
            {
                var ring = target.Nodes;
                var blocked = new List<Link>();
                for (var i = 0; i < ring.Count; i++)
                {
                    for (var j = 0; j < ring.Count; j++)
                    {
                        var distance = Math.Abs(i - j);
                        if (i != j && distance != 1 && distance != ring.Count - 1)
                            blocked.Add(new Link(ring[i], ring[j]));
                    }
                }

                await network.PartitionAsync(blocked).ConfigureAwait(false);
                record.Detail = "each node reaches only its two neighbours";
                return network.HealAsync;
            }

            case FaultKind.Bridge:
            {
                var (left, bridge, right) = (target.Groups[0], target.Groups[1][0], target.Groups[2]);
                var blocked = left.SelectMany(a => right.SelectMany(b => new[] { new Link(a, b), new Link(b, a) })).ToList();
                await network.PartitionAsync(blocked).ConfigureAwait(false);
                record.Detail = $"n{bridge} bridges the halves";
                return network.HealAsync;
            }

            case FaultKind.OneWayLink:
            {
                await network.PartitionAsync([new Link(target.Nodes[0], target.Nodes[1])]).ConfigureAwait(false);
                record.Detail = "packets from the first into the second are dropped";
                return network.HealAsync;
            }

            case FaultKind.Delay:
            {
                var delay = 20 + (int)(fault.Magnitude * 180);
                network.SetLinkFault(null, target.Node, new LinkFault { DelayMs = delay, JitterMs = delay / 2 });
                record.Detail = $"delay {delay} ms ± {delay / 2} ms";
                return network.HealAsync;
            }

            case FaultKind.Loss:
            {
                var loss = 5 + Math.Round(fault.Magnitude * 25, 1);
                network.SetLinkFault(null, target.Node, new LinkFault { LossPercent = loss });
                record.Detail = $"{loss}% of chunks lost and retransmitted 200 ms late";
                return network.HealAsync;
            }

            case FaultKind.Reset:
            {
                network.Reset(target.Node);
                record.Detail = "every connection reset";
                return () => Task.CompletedTask;
            }

            case FaultKind.ClogThenFlush:
            {
                network.SetLinkFault(null, target.Node, new LinkFault { Clogged = true });
                record.Detail = "held, then flushed on heal";
                return network.HealAsync;
            }

            case FaultKind.ClockSkew:
            {
                var node = target.Node;
                var skew = (long)((fault.Magnitude - 0.5) * 2 * 300_000);
                await SetSkewAsync(node, skew).ConfigureAwait(false);
                record.Detail = $"clock skewed by {skew / 1000.0:0.#} s";
                return () => SetSkewAsync(node, 0);
            }

            case FaultKind.ClockStrobe:
            {
                var node = target.Node;
                var amplitude = 1_000 + (long)(fault.Magnitude * 59_000);
                var stop = new CancellationTokenSource();
                var strobe = Task.Run(async () =>
                {
                    var sign = 1;
                    while (!stop.IsCancellationRequested)
                    {
                        await SetSkewAsync(node, sign * amplitude).ConfigureAwait(false);
                        sign = -sign;
                        await Task.Delay(100, stop.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                    }
                });
                record.Detail = $"clock jumps between +{amplitude / 1000.0:0.#} s and -{amplitude / 1000.0:0.#} s every 100 ms";
                return async () =>
                {
                    await stop.CancelAsync().ConfigureAwait(false);
                    await strobe.ConfigureAwait(false);
                    stop.Dispose();
                    await SetSkewAsync(node, 0).ConfigureAwait(false);
                };
            }

            case FaultKind.DiskTruncateWalTail:
            case FaultKind.DiskFlipBits:
            case FaultKind.DiskDeleteChunk:
                return await DiskAsync(record, fault, target.Node).ConfigureAwait(false);
            case FaultKind.DiskExhaustFileHandles:
                return await FileHandlesAsync(record, target.Node).ConfigureAwait(false);
            case FaultKind.DiskFull:
                return await DiskFullAsync(record, target.Node).ConfigureAwait(false);
            case FaultKind.KillLeaderAndAcker:
                return await KillLeaderAndAckerAsync(record, target.Nodes[0], target.Nodes[1], target.Nodes[2]).ConfigureAwait(false);
            case FaultKind.ByzantineSigner:
            {
                var node = target.Node;
                if (!await SetSignerFaultAsync(node, "wrong-shares").ConfigureAwait(false))
                    throw new NotSupportedException($"n{node} did not accept the signer fault (no key share, or unreachable)");
                record.Detail = "sends wrong signature shares";
                return async () =>
                {
                    await SetSignerFaultAsync(node, "none").ConfigureAwait(false);
                    record.Detail += await NamedAsync(node).ConfigureAwait(false);
                };
            }
            case FaultKind.RotateKey:
                return await RotateKeyAsync(record, target.Node).ConfigureAwait(false);
            case FaultKind.L1Reorg:
            case FaultKind.L1Outage:
            case FaultKind.L1GasSpike:
                return await L1FaultAsync(record, fault).ConfigureAwait(false);
            default:
                throw new NotSupportedException($"no injector for {fault.Kind}");
        }
    }

    // L1 faults on the run's anvil: a reorg of its newest blocks (healed at once: the chain is simply another one now),
    // a pause of its process (an outage), or a base fee jump (posts at the old fees stay unmined until bumped).
    private async Task<Func<Task>> L1FaultAsync(FaultRecord record, ScheduledFault fault)
    {
        if (l1 is null)
            throw new NotSupportedException("this run has no L1");
        using var rpc = new Sequencer.Ethereum.EthRpcClient(l1.Rpc);
        switch (fault.Kind)
        {
            case FaultKind.L1Reorg:
            {
                var height = await rpc.BlockNumberAsync().ConfigureAwait(false);
                var depth = Math.Min(height, 1 + (ulong)(fault.Magnitude * 3));
                if (depth == 0)
                    throw new NotSupportedException("the L1 has no block to reorganize yet");
                await rpc.RequestAsync("anvil_reorg", [System.Text.Json.Nodes.JsonValue.Create(depth), new System.Text.Json.Nodes.JsonArray()]).ConfigureAwait(false);
                record.Detail = $"the newest {depth} of {height} blocks replaced (anvil_reorg)";
                return () => Task.CompletedTask;
            }

            case FaultKind.L1Outage:
            {
                var pid = l1.ProcessId;
                Signal("-STOP", pid);
                record.Detail = $"anvil (pid {pid}) paused: the L1 answers nothing";
                return () =>
                {
                    Signal("-CONT", pid);
                    return Task.CompletedTask;
                };
            }

            default:
            {
                var gwei = 50 + (int)(fault.Magnitude * 100);
                var wei = System.Numerics.BigInteger.Multiply(gwei, 1_000_000_000);
                await rpc.RequestAsync("anvil_setNextBlockBaseFeePerGas", [System.Text.Json.Nodes.JsonValue.Create(Sequencer.Ethereum.EthHex.Quantity(wei))]).ConfigureAwait(false);
                record.Detail = $"the next block's base fee set to {gwei} gwei";
                return async () =>
                {
                    using var heal = new Sequencer.Ethereum.EthRpcClient(l1.Rpc);
                    await heal.RequestAsync("anvil_setNextBlockBaseFeePerGas", [System.Text.Json.Nodes.JsonValue.Create(Sequencer.Ethereum.EthHex.Quantity(1_000_000_000))]).ConfigureAwait(false);
                };
            }
        }
    }

    private static void Signal(string signal, int pid)
    {
        using var kill = System.Diagnostics.Process.Start("kill", [signal, pid.ToString(CultureInfo.InvariantCulture)]);
        kill?.WaitForExit(5_000);
    }

    private async Task<Func<Task>> KillAsync(FaultRecord record, IReadOnlyList<int> targets)
    {
        await Task.WhenAll(targets.Select(id => cluster.Node(id).KillAsync())).ConfigureAwait(false);
        record.StartMs = nowMs();
        record.Detail = "SIGKILL, restart on heal";
        return () =>
        {
            foreach (var id in targets)
                StartIfStopped(id);
            return Task.CompletedTask;
        };
    }

    private Func<Task> Pause(FaultRecord record, int target)
    {
        cluster.Node(target).Pause();
        record.StartMs = nowMs();
        record.Detail = "SIGSTOP, SIGCONT on heal";
        return () =>
        {
            cluster.Node(target).Resume();
            return Task.CompletedTask;
        };
    }

    private async Task<Func<Task>> PartitionAsync(FaultRecord record, IReadOnlyList<IReadOnlyList<int>> groups, string detail)
    {
        var blocked = new List<Link>();
        foreach (var a in groups)
        {
            foreach (var b in groups.Where(g => !ReferenceEquals(g, a)))
                blocked.AddRange(a.SelectMany(x => b.Select(y => new Link(x, y))));
        }

        if (!network.HasDirectedPartitions)
        {
            // A per-member proxy can only cut everything into a member: cut the inbound traffic of the smallest group.
            var smallest = groups.OrderBy(g => g.Count).First();
            blocked = [.. smallest.SelectMany(to => cluster.Nodes.Select(n => n.Spec.Id).Where(from => from != to).Select(from => new Link(from, to)))];
            detail += " (proxy mode: inbound traffic only)";
        }

        await network.PartitionAsync(blocked).ConfigureAwait(false);
        record.Detail = detail;
        return network.HealAsync;
    }

    private async Task<Func<Task>> KillLeaderAndAckerAsync(FaultRecord record, int leader, int acker, int bystander)
    {
        // The durability probe of DESIGN section 9. Cut one follower off (inbound), so that the other follower is the
        // only one whose acknowledgements make entries committed. Right after the next acknowledged submit, kill the
        // leader and that acknowledging follower, let the cut-off follower back in, and restart the acker at once
        // without the old leader. If the acker's acknowledgement was not durable, the two followers elect a leader whose
        // log lacks the acknowledged entry, and INV-ACKED names the lost tx.
        // The fault starts with the cut: LIVE-SIGN and the rates are not judged from here on.
        record.StartMs = nowMs();
        network.SetLinkFault(null, bystander, new LinkFault { Blackhole = true });
        await Task.Delay(300).ConfigureAwait(false);

        var before = workload.Acknowledged;
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (workload.Acknowledged == before && DateTime.UtcNow < deadline)
            await Task.Yield();
        cluster.Node(leader).Pause();
        await Task.WhenAll(cluster.Node(leader).KillAsync(), cluster.Node(acker).KillAsync()).ConfigureAwait(false);
        await network.HealAsync().ConfigureAwait(false);
        StartIfStopped(acker);
        record.Detail = "SIGKILL both right after an acknowledgement; the acker restarts at once, the old leader on heal";
        return () =>
        {
            StartIfStopped(leader);
            return Task.CompletedTask;
        };
    }

    private async Task<Func<Task>> DiskAsync(FaultRecord record, ScheduledFault fault, int target)
    {
        await WaitForOthersCaughtUpAsync(target).ConfigureAwait(false);
        var node = cluster.Node(target);
        await node.KillAsync().ConfigureAwait(false);
        record.Detail = DiskFaults.Apply(fault.Kind, node.Spec.DataDir, fault.Pick);
        log($"disk fault on n{target}: {record.Detail}");
        node.Start();
        return () => SettleDiskFaultAsync(record, target);
    }

    private async Task<Func<Task>> FileHandlesAsync(FaultRecord record, int target)
    {
        await WaitForOthersCaughtUpAsync(target).ConfigureAwait(false);
        var node = cluster.Node(target);
        await node.KillAsync().ConfigureAwait(false);
        var original = node.Wrapper;
        node.Wrapper = start => Limit(original is null ? start : original(start), 64);
        node.Start();
        record.Detail = "restarted with RLIMIT_NOFILE 64";
        return async () =>
        {
            await SettleDiskFaultAsync(record, target, restore: () => node.Wrapper = original).ConfigureAwait(false);
        };
    }

    private async Task<Func<Task>> DiskFullAsync(FaultRecord record, int target)
    {
        await WaitForOthersCaughtUpAsync(target).ConfigureAwait(false);
        var node = cluster.Node(target);
        await node.KillAsync().ConfigureAwait(false);
        var mount = await DiskFaults.MountSmallFileSystemAsync(node.Spec.DataDir).ConfigureAwait(false);
        record.Detail = $"data directory on a tmpfs with {DiskFaults.HeadroomMiB} MiB free ({mount.SizeMiB} MiB)";
        node.Start();
        return async () =>
        {
            // Judge while the disk is still full, then give the node its real disk back.
            record.Outcome = await JudgeAsync(target).ConfigureAwait(false);
            log($"disk fault on n{target}: {record.Outcome}");
            await node.KillAsync().ConfigureAwait(false);
            await DiskFaults.UnmountAsync(mount).ConfigureAwait(false);
            await RepairAsync(record, target, restore: null).ConfigureAwait(false);
        };
    }

    /// <summary>
    /// After a disk fault: the node must have recovered (running and caught up) or failed fast (exited, with a clear
    /// message in its log). A failed node is repaired by wiping its data, so that it catches up from its peers.
    /// </summary>
    private async Task SettleDiskFaultAsync(FaultRecord record, int target, Action? restore = null)
    {
        record.Outcome = await JudgeAsync(target).ConfigureAwait(false);
        log($"disk fault on n{target}: {record.Outcome}");
        await RepairAsync(record, target, restore).ConfigureAwait(false);
    }

    /// <summary>How long a restarted node may take to start, catch up or report itself not ready before it counts as hung.</summary>
    /// <remarks>
    /// Measured: a wiped node restarted under the chaos workload on 2 cores takes about 5 s to start (the other nodes and
    /// the workload hold the CPU while it JIT-compiles) and 5 to 8 s more to replay a few thousand entries with signing;
    /// judging it after 2 s called a node that was making progress "hung". The same 30 s bound as LIVE-HEAL's.
    /// </remarks>
    private static readonly TimeSpan SettleLimit = TimeSpan.FromSeconds(30);

    /// <summary>
    /// "recovered" (running and caught up), "failed safe" (running, reporting itself not ready with the reason),
    /// "failed fast" (exited with a clear message), or a failure of the property: running for <see cref="SettleLimit"/>
    /// without catching up or answering (hung), or exited without a clear message.
    /// </summary>
    private async Task<string> JudgeAsync(int target)
    {
        var node = cluster.Node(target);
        var started = DateTime.UtcNow;
        while (node.IsRunning)
        {
            if (await IsCaughtUpAsync(target).ConfigureAwait(false))
            {
                var waited = DateTime.UtcNow - started;
                return waited < TimeSpan.FromSeconds(2.5) ? "recovered" : $"recovered ({waited.TotalSeconds:F1} s to start and catch up)";
            }

            if (await ReadinessAsync(node).ConfigureAwait(false) is { Answered: true, NotReady: { } reasons })
                return $"failed safe: running, not ready: {Shorten(reasons)}";

            // Starting, catching up (ready but behind), or stopping after a fault it reported: a node must have done
            // one of the above, or be gone, within the bound.
            if (DateTime.UtcNow - started >= SettleLimit)
                return $"hung: running {SettleLimit.TotalSeconds:F0} s without catching up, reporting a fault or exiting";
        }

        // A clear message is the node's own: a critical log line or a "fatal:" line, not an unhandled exception's trace.
        // Look through the node's latest run (after its last "Loaded the store"): a node that stops may log for a
        // while after its critical line (peers' requests failing while it shuts down).
        var lines = node.Tail(400).Split('\n');
        var run = Array.FindLastIndex(lines, l => l.Contains("Loaded the store", StringComparison.Ordinal));
        var clear = lines.Skip(Math.Max(0, run)).LastOrDefault(l => l.Contains(" crit: ", StringComparison.Ordinal) || l.StartsWith("fatal: ", StringComparison.Ordinal));
        return clear is null
            ? $"failed fast (exit {node.ExitCode?.ToString(CultureInfo.InvariantCulture)}) without a clear message"
            : $"failed fast (exit {node.ExitCode?.ToString(CultureInfo.InvariantCulture)}): {Shorten(clear)}";
    }

    /// <summary>Whether the node answered <c>/health/ready</c>, and its reasons when it answered "not ready".</summary>
    private static async Task<(bool Answered, string? NotReady)> ReadinessAsync(NodeProcess node)
    {
        try
        {
            using var response = await Admin.GetAsync(new Uri(new Uri(node.Spec.Api), "/health/ready")).ConfigureAwait(false);
            var body = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
            return (true, response.IsSuccessStatusCode ? null : body);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return (false, null);
        }
    }

    private async Task RepairAsync(FaultRecord record, int target, Action? restore)
    {
        var node = cluster.Node(target);
        restore?.Invoke();
        if (record.Outcome?.StartsWith("recovered", StringComparison.Ordinal) != true)
        {
            await node.KillAsync().ConfigureAwait(false);
            DiskFaults.Wipe(node.Spec.DataDir);
            log($"n{target}: data wiped; it rejoins and catches up from its peers");
        }
        else if (restore is not null)
        {
            // Restart without the fault's limits.
            await node.KillAsync().ConfigureAwait(false);
        }

        StartIfStopped(target);
    }

    private static string Shorten(string line) => line.Length > 240 ? line[..240] + "..." : line;

    /// <summary>
    /// A disk fault may end with the node's data wiped (the repair of a node that failed fast), and a wiped node has
    /// lost its log, term and vote until it catches up from its peers. A second node losing its data before the first
    /// has caught up is a lost majority, which no Raft survives (committed entries and votes forgotten by two of three:
    /// a fresh-clone run, seed 303, had the two wiped nodes elect a leader on a shorter log). So a disk fault waits until
    /// every other node is running and caught up; it is not injected when they do not within the settle bound.
    /// </summary>
    private async Task WaitForOthersCaughtUpAsync(int target)
    {
        var deadline = DateTime.UtcNow + SettleLimit;
        foreach (var other in cluster.Nodes.Where(n => n.Spec.Id != target))
        {
            StartIfStopped(other.Spec.Id);
            while (!(other.IsRunning && await IsCaughtUpAsync(other.Spec.Id).ConfigureAwait(false)))
            {
                if (DateTime.UtcNow > deadline)
                    throw new NotSupportedException($"n{other.Spec.Id} has not caught up within {SettleLimit.TotalSeconds:F0} s: a second node without its data would be a lost majority");
                await Task.Delay(200).ConfigureAwait(false);
            }
        }
    }

    private async Task<bool> IsCaughtUpAsync(int target)
    {
        for (var i = 0; i < 20; i++)
        {
            var views = await Task.WhenAll(cluster.Nodes.Where(n => n.IsRunning).Select(LocalCluster.TryGetClusterAsync)).ConfigureAwait(false);
            var mine = views.FirstOrDefault(v => v?.NodeId == target);
            var best = views.Where(v => v is not null).Select(v => ulong.Parse(v!.Height, CultureInfo.InvariantCulture)).DefaultIfEmpty(0UL).Max();
            if (mine is not null && ulong.Parse(mine.Height, CultureInfo.InvariantCulture) + 2 >= best)
                return true;
            await Task.Delay(100).ConfigureAwait(false);
        }

        return false;
    }

    /// <summary>Heals everything: network, paused and stopped nodes, clocks.</summary>
    public async Task HealAllAsync()
    {
        await network.HealAsync().ConfigureAwait(false);
        foreach (var node in cluster.Nodes)
        {
            node.Resume();
            StartIfStopped(node.Spec.Id);
        }

        foreach (var node in cluster.Nodes)
        {
            await SetSkewAsync(node.Spec.Id, 0).ConfigureAwait(false);
            await SetSignerFaultAsync(node.Spec.Id, "none").ConfigureAwait(false);
        }
    }

    /// <summary>Rotations an operator asked for (and the node took) in this run.</summary>
    public int RotationsRequested { get; private set; }

    // The operators' key rotation: each member's operator votes on its own node (a rotation starts once t members
    // voted), the target's first, then every other running member's. Nothing to heal: the key generation and the
    // hand-over go on through the faults that follow, and the run checks where they got.
    private async Task<Func<Task>> RotateKeyAsync(FaultRecord record, int target)
    {
        if (!cluster.Node(target).IsRunning)
            throw new NotSupportedException($"n{target} is down");
        var votes = new List<string>();
        foreach (var node in new[] { cluster.Node(target) }.Concat(cluster.Nodes.Where(n => n.Spec.Id != target && n.IsRunning)))
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(new Uri(node.Spec.Api), "/admin/keys/rotate"))
            {
                Content = new StringContent("{}", Encoding.UTF8, "application/json"),
            };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
            try
            {
                using var response = await Admin.SendAsync(request).ConfigureAwait(false);
                var answer = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
                if (!response.IsSuccessStatusCode && node.Spec.Id == target)
                    throw new NotSupportedException($"n{target} refused the rotation: {(int)response.StatusCode} {answer}");
                votes.Add($"n{node.Spec.Id}: {(response.IsSuccessStatusCode ? answer : $"{(int)response.StatusCode}")}");
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                if (node.Spec.Id == target)
                    throw new NotSupportedException($"n{target} did not answer the rotation request: {e.Message}");
                votes.Add($"n{node.Spec.Id}: no answer");
            }
        }

        RotationsRequested++;
        record.Detail = $"rotation voted: {string.Join("; ", votes)}";
        return () => Task.CompletedTask;
    }

    private async Task<bool> SetSignerFaultAsync(int target, string fault)
    {
        // A node restarted by an earlier fault may still be starting: try for a few seconds before giving up.
        var node = cluster.Node(target);
        var deadline = nowMs() + 10_000;
        while (true)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(new Uri(node.Spec.Api), "/admin/signer-fault"))
            {
                Content = new StringContent($"{{\"fault\":\"{fault}\"}}", Encoding.UTF8, "application/json"),
            };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
            string problem;
            try
            {
                using var response = await Admin.SendAsync(request).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                    return true;
                problem = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync().ConfigureAwait(false)}";
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                problem = e.Message;
            }

            if (nowMs() > deadline || !node.IsRunning)
            {
                log($"signer fault on n{target} not set: {problem}");
                return false;
            }

            await Task.Delay(200).ConfigureAwait(false);
        }
    }

    /// <summary>Whether the current leader names <paramref name="target"/> for bad shares (it may never have been asked).</summary>
    private async Task<string> NamedAsync(int target)
    {
        var leader = await monitor.AskLeaderAsync().ConfigureAwait(false);
        if (leader is null)
            return "; no leader to ask whether it was named";
        try
        {
            using var timeout = new CancellationTokenSource(Admin.Timeout);
            using var document = await cluster.Node(leader.Value).Client.GetSigningViewAsync(timeout.Token).ConfigureAwait(false);
            var entry = document.RootElement.GetProperty("signers").EnumerateArray().FirstOrDefault(e => e.GetProperty("id").GetInt32() == target);
            var bad = entry.ValueKind == System.Text.Json.JsonValueKind.Object ? entry.GetProperty("badShares").GetInt64() : 0;
            return bad > 0 ? $"; named by the leader n{leader} for {bad} bad shares" : $"; the leader n{leader} did not ask it to sign while it was Byzantine";
        }
        catch (Exception e) when (e is Sequencer.Client.SequencerApiException or OperationCanceledException or System.Text.Json.JsonException or KeyNotFoundException)
        {
            return $"; could not ask the leader: {e.Message}";
        }
    }

    private void StartIfStopped(int id)
    {
        var node = cluster.Node(id);
        if (!node.IsRunning)
        {
            node.Start();
            log($"n{id} restarted");
        }
    }

    private async Task SetSkewAsync(int target, long skewMs)
    {
        var node = cluster.Node(target);
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(new Uri(node.Spec.Api), "/admin/clock-skew"))
        {
            Content = new StringContent($"{{\"ms\":{skewMs.ToString(CultureInfo.InvariantCulture)}}}", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
        try
        {
            using var response = await Admin.SendAsync(request).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
                log($"clock skew on n{target} answered {(int)response.StatusCode}");
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            // The node is down or unreachable: its clock will be right when it restarts (skew is not persisted).
            log($"clock skew on n{target} not set: {e.Message}");
        }
    }

    private static System.Diagnostics.ProcessStartInfo Limit(System.Diagnostics.ProcessStartInfo start, int files)
    {
        var limited = new System.Diagnostics.ProcessStartInfo("prlimit") { UseShellExecute = false };
        limited.ArgumentList.Add($"--nofile={files}:{files}");
        limited.ArgumentList.Add("--");
        limited.ArgumentList.Add(start.FileName);
        foreach (var argument in start.ArgumentList)
            limited.ArgumentList.Add(argument);
        foreach (var (key, value) in start.Environment)
            limited.Environment[key] = value;
        return limited;
    }
}
