using Sequencer.Checker;

namespace Sequencer.IntegrationTests;

[Collection("clusters")]
public sealed class RecoveryTests
{
    [Fact]
    public async Task WholeClusterKilledAndRestarted_RecoversEveryBatchFromWalAndStore()
    {
        // A short WAL retention makes snapshots compact the log during the run, so recovery needs both.
        await using var test = await TestCluster.StartAsync("restart", extraArguments: ["--wal-retained-entries", "8"]);
        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 8, TxsPerRequest = 10, TargetAcknowledged = 4_000, Seed = 13 });
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await workload.RunAsync(limit.Token);
        var height = await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));
        var before = await test.ReadChainsAsync();

        foreach (var node in test.Cluster.Nodes)
            await node.KillAsync();
        test.Cluster.StartAll();
        await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        var after = await test.ReadChainsAsync();

        Assert.All(after, chain =>
        {
            Assert.True((ulong)chain.Batches.Count >= height, $"node{chain.NodeId} recovered {chain.Batches.Count} of {height} batches");
            // Requests the workload gave up on may still be ordered after it stopped: compare the converged prefix.
            Assert.Equal(before[0].Batches.Take((int)height).Select(b => b.Hash), chain.Batches.Take((int)height).Select(b => b.Hash));
        });
        InvariantAssert.AllPass(InvariantChecker.Check(workload.History.Snapshot(), after), test.Logs);

        // And the restarted cluster orders new txs.
        var more = new Workload(test.Clients, new WorkloadOptions { Clients = 4, TargetAcknowledged = 200, Seed = 14 });
        using var limit2 = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await more.RunAsync(limit2.Token);
        Assert.True(more.Acknowledged >= 200);
    }

    [Fact]
    public async Task FollowerDownWhileTheLogIsCompacted_CatchesUpFromASnapshot()
    {
        await using var test = await TestCluster.StartAsync("snapshot", extraArguments: ["--wal-retained-entries", "4"]);
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var follower = test.Cluster.Nodes.First(n => n.Spec.Id != leader).Spec.Id;
        await test.Cluster.Node(follower).KillAsync();

        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 8, TargetAcknowledged = 3_000, Seed = 17 }) { IsAvailable = id => id != follower };
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await workload.RunAsync(limit.Token);
        var height = await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));
        Assert.True(height > 50, $"only {height} batches; the test needs the log to be compacted past the follower");

        test.Cluster.Node(follower).Start();
        await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(60));
        var chains = await test.ReadChainsAsync();
        Assert.Equal(3, chains.Count);
        InvariantAssert.AllPass(InvariantChecker.Check(workload.History.Snapshot(), chains), test.Logs);
        Assert.Contains("Installed a snapshot", await test.WaitForLogAsync(follower, "Installed a snapshot", TimeSpan.FromSeconds(10), 200), StringComparison.Ordinal);

        // The transfer took DotNext's locked read (a snapshot), every other replication read was sent from copies.
        var current = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        Assert.True(await PipelineAsync(test, current, "lockedReplicationReads") >= 1 || current != leader,
            "the leader sent the follower a snapshot, but counted no locked replication read");
        Assert.True(await PipelineAsync(test, current, "detachedReplicationReads") > 0, "the leader sent no replication read from copies");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(0)]
    public async Task SnapshotInstallOutlastingTheRequestTimeout_StillCatchesUp_AndIsNotSentForEver(int signingThreshold)
    {
        // Every install takes 3 s longer than it does, past the 2 s Raft request timeout: the leader's request times
        // out while the follower finishes, and DotNext then sends the same snapshot again, which the follower refuses.
        // The leader must move its snapshot point on (a mark entry if nothing new comes) instead of resending it for
        // ever, and the follower must catch up. With signing on, signatures and nonce commitments travel too; with it
        // off, nothing at all comes to an idle leader but the mark (an entry without a payload never reached the state
        // machine, and the leader resent the snapshot for as long as the cluster stayed idle).
        await using var test = await TestCluster.StartAsync($"slow-install-{signingThreshold}", extraArguments: ["--wal-retained-entries", "4", "--test-fault", "slow-install=3000"],
            signingThreshold: signingThreshold, binary: TestCluster.TestFaultsBinary());
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var follower = test.Cluster.Nodes.First(n => n.Spec.Id != leader).Spec.Id;
        var followerLog = await PipelineAsync(test, follower, "lastLogIndex");
        await test.Cluster.Node(follower).KillAsync();

        // Load until at least 2,000 txs are acknowledged and the leader's snapshot point (its compaction point) has
        // passed the follower's log, so that the follower can only catch up through a snapshot. How many entries that
        // takes depends on how the txs were batched; a fixed count of txs once left the point short of it.
        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 8, Seed = 19 }) { IsAvailable = id => id != follower };
        long leaderSnapshot = 0;
        using (var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2)))
        {
            var running = workload.RunAsync(limit.Token);
            while (!running.IsCompleted && !limit.IsCancellationRequested)
            {
                await Task.WhenAny(running, Task.Delay(TimeSpan.FromMilliseconds(200)));
                leaderSnapshot = await PipelineAsync(test, leader, "snapshotIndex");
                if (workload.Acknowledged >= 2_000 && leaderSnapshot > followerLog)
                    await limit.CancelAsync();
            }

            await running;
        }

        Assert.True(leaderSnapshot > followerLog, $"the leader's snapshot point ({leaderSnapshot}) never passed the follower's log ({followerLog}) within 2 minutes of load");

        // The follower comes back to an idle cluster: nothing new arrives to move the snapshot point by itself.
        test.Cluster.Node(follower).Start();
        await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(60));
        var tail = await test.WaitForLogAsync(follower, "Installed a snapshot", TimeSpan.FromSeconds(10));
        var installs = tail.Split('\n').Count(l => l.Contains("Installed a snapshot", StringComparison.Ordinal));
        Assert.True(installs is >= 1 and <= 4, $"the follower installed {installs} snapshots (1 to 4 expected; the leader's point {leaderSnapshot}, the follower's log {followerLog}); its log:\n{tail}");

        // And it stays converged without the leader streaming snapshots: the count of transfers stops moving (a
        // transfer that was already on its way when the follower converged may still end; one sent for ever would
        // go on every request timeout).
        var sent = await SnapshotsSentAsync(test, leader);
        var settled = false;
        for (var attempt = 0; attempt < 5 && !settled; attempt++)
        {
            await Task.Delay(TimeSpan.FromSeconds(3));
            var now = await SnapshotsSentAsync(test, leader);
            settled = now == sent;
            sent = now;
        }

        Assert.True(settled, $"the leader was still sending snapshots 15 s after the follower converged ({sent} transfers)");
        Assert.InRange(sent, 1, 6);

        // No snapshot read waited out the compaction fence: a point moved once the load stopped (the mark's) is
        // compacted at once, and a move refused by a read in progress is dropped when that read ends with nothing left
        // to store. Before, each case held the follower's next snapshot for the fence's whole 3 s.
        if (await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10)) == leader)
            Assert.Equal(0, await SnapshotCounterAsync(test, leader, "fenceTimeouts"));

        // The first install outlasted the request timeout, so the follower was sent a newer snapshot: that one started at
        // the follower's own tip (a delta snapshot), which the leader asked it for.
        var installedLines = tail.Split('\n').Where(l => l.Contains("Installed a snapshot", StringComparison.Ordinal)).ToList();
        if (await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10)) == leader && installedLines.Count >= 2)
        {
            Assert.True(await SnapshotCounterAsync(test, leader, "tipsTold") >= 1, $"the leader never got the follower's tip; the follower's installs:\n{string.Join('\n', installedLines)}");
            Assert.True(await SnapshotCounterAsync(test, leader, "delta") >= 1, $"the leader sent no delta snapshot; the follower's installs:\n{string.Join('\n', installedLines)}");
            Assert.DoesNotContain("streamed from height 0)", installedLines[^1], StringComparison.Ordinal);
        }
        InvariantAssert.AllPass(InvariantChecker.Check(workload.History.Snapshot(), await test.ReadChainsAsync()), test.Logs);
    }

    private static async Task<long> PipelineAsync(TestCluster test, int node, string name)
        => (await test.Cluster.Node(node).Client.GetClusterAsync()).Pipeline?[name] ?? throw new InvalidOperationException($"node {node} reports no pipeline");

    private static async Task<long> SnapshotCounterAsync(TestCluster test, int node, string name)
        => (await SnapshotCountersAsync(test, node))[name];

    // Sent and sending from one answer: a transfer that ends between two reads would be counted in neither.
    private static async Task<long> SnapshotsSentAsync(TestCluster test, int node)
    {
        var counters = await SnapshotCountersAsync(test, node);
        return counters["sent"] + counters["sending"];
    }

    // The numeric fields of GET /v1/cluster's "snapshots" object, from one answer.
    private static async Task<Dictionary<string, long>> SnapshotCountersAsync(TestCluster test, int node)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        using var document = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync(new Uri(test.Cluster.Node(node).Client.BaseUrl, "/v1/cluster")));
        return document.RootElement.GetProperty("snapshots").EnumerateObject()
            .Where(p => p.Value.ValueKind == System.Text.Json.JsonValueKind.Number)
            .ToDictionary(p => p.Name, p => p.Value.GetInt64());
    }
}
