using System.Diagnostics;
using Sequencer.Checker;
using Sequencer.Client;

namespace Sequencer.IntegrationTests;

// One collection: the tests start real clusters and would starve each other on a 2-core machine if run in parallel.
[Collection("clusters")]
public sealed class OrderingTests
{
    [Fact]
    public async Task TenThousandTxsFrom16Clients_AllAcknowledgedOnceInTheSameOrderOnEveryNode()
    {
        await using var test = await TestCluster.StartAsync("order");
        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 16, TargetAcknowledged = 10_000, Seed = 7 });
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await workload.RunAsync(limit.Token);

        var history = workload.History.Snapshot();
        var acknowledged = history.Where(o => o.Outcome == OpOutcome.Ok).Select(o => o.TxHash).Distinct().Count();
        Assert.True(acknowledged >= 10_000, $"only {acknowledged} txs were acknowledged\n{test.Logs()}");

        await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));
        var chains = await test.ReadChainsAsync();
        Assert.Equal(3, chains.Count);
        Assert.All(chains, c => Assert.Equal(chains[0].Batches.Count, c.Batches.Count));
        Assert.True(chains[0].Batches.Sum(b => b.Txs.Count) >= acknowledged);
        InvariantAssert.AllPass(InvariantChecker.Check(history, chains), test.Logs);

        // Followers fsync appended entries before they acknowledge them only because DurableWriteAheadLog
        // re-implements an interface method of DotNext 6.12's WAL. If a package update stops calling that override,
        // this counter stays 0 and the durability fix is silently gone (DESIGN section 9).
        // Likewise the leader's replication reads hold no log lock while a follower answers only because
        // DurableWriteAheadLog re-implements IAuditTrail.ReadAsync (DotNext calls it through IPersistentState).
        foreach (var (nodeId, client) in test.Clients)
        {
            var view = await client.GetClusterAsync();
            if (view.Role == "leader")
            {
                var detached = view.Pipeline?.GetValueOrDefault("detachedReplicationReads") ?? 0;
                Assert.True(detached > 0, $"leader node{nodeId} sent no replication read from copies (detachedReplicationReads = {detached})");
                continue;
            }

            var durable = view.Pipeline?.GetValueOrDefault("durableFollowerAppends") ?? 0;
            Assert.True(durable > 0, $"follower node{nodeId} made no appended entries durable before acknowledging them (durableFollowerAppends = {durable})");
        }

        // Every node exports its own meters, DotNext's WAL meters and the runtime's (the bench's warm-up reads the
        // JIT's compilation time from there) at /metrics.
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        foreach (var (nodeId, client) in test.Clients)
        {
            var text = await http.GetStringAsync(new Uri(client.BaseUrl, "/metrics"));
            foreach (var name in new[] { "sequencer_txs_ordered_total", "sequencer_raft_commit_index", "entries_flush_duration_milliseconds_count", "dotnet_jit_compilation_time_seconds_total", "dotnet_process_memory_working_set_bytes" })
                Assert.True(text.Contains($"\n{name}", StringComparison.Ordinal), $"node{nodeId}'s /metrics has no {name}");
        }
    }

    [Fact]
    public async Task ANodeCutOffFromTheOthers_Answers503NoLeaderAtOnce_InsteadOfHoldingTheSubmit()
    {
        await using var test = await TestCluster.StartAsync("noleader");
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var survivor = test.Cluster.Nodes.First(n => n.Spec.Id != leader);
        foreach (var other in test.Cluster.Nodes.Where(n => n.Spec.Id != survivor.Spec.Id))
            await other.KillAsync();

        // Alone, the survivor learns within an election timeout that it has no leader; from then on a submit is
        // refused at once with no_leader (retryable: nothing was submitted), not held for the submit timeout.
        var tx = new byte[] { 1, 2, 3, 4 };
        SequencerApiException? refusal = null;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (refusal?.Code != "no_leader" && DateTime.UtcNow < deadline)
            refusal = await Assert.ThrowsAsync<SequencerApiException>(() => survivor.Client.SubmitAsync(tx));
        Assert.Equal("no_leader", refusal?.Code);
        Assert.Equal(503, refusal!.Status);
        Assert.True(refusal.IsRetryable && !refusal.IsIndeterminate);
        var timer = Stopwatch.StartNew();
        var again = await Assert.ThrowsAsync<SequencerApiException>(() => survivor.Client.SubmitAsync(tx));
        Assert.Equal("no_leader", again.Code);
        Assert.True(timer.Elapsed < TimeSpan.FromMilliseconds(500), $"the refusal took {timer.ElapsedMilliseconds} ms");
    }

    [Fact]
    public async Task LeaderKilledMidStream_NewLeaderOrdersNewTxsWithin2sAndNothingAcknowledgedIsLost()
    {
        await using var test = await TestCluster.StartAsync("failover");
        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 16, Seed = 11, RequestTimeout = TimeSpan.FromSeconds(12) });
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var running = workload.RunAsync(stop.Token);

        await WaitUntilAsync(() => workload.Acknowledged >= 2_000, TimeSpan.FromSeconds(60), "2000 txs acknowledged before the kill");
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        workload.IsAvailable = id => id != leader;
        var killedAtNs = workload.NowNs();
        await test.Cluster.Node(leader).KillAsync();

        // LIVE-FAILOVER: a tx invoked after the kill is acknowledged within 2 s of the kill.
        var survivors = test.Cluster.Nodes.Where(n => n.Spec.Id != leader).Select(n => n.Spec.Id).ToList();
        await WaitUntilAsync(() => workload.History.Snapshot().Any(o => o.Outcome == OpOutcome.Ok && o.InvokedNs > killedAtNs), TimeSpan.FromSeconds(20), "a tx ordered after the kill");
        var firstAfter = workload.History.Snapshot().Where(o => o.Outcome == OpOutcome.Ok && o.InvokedNs > killedAtNs).Min(o => o.CompletedNs);
        var failover = TimeSpan.FromMilliseconds((firstAfter - killedAtNs) / 1e6);
        var newLeader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10), survivors);
        Assert.NotEqual(leader, newLeader);
        Assert.True(failover <= TimeSpan.FromSeconds(2), $"the first tx after the kill was ordered {failover.TotalMilliseconds:0} ms after it\n{test.Logs()}");

        var before = workload.Acknowledged;
        await WaitUntilAsync(() => workload.Acknowledged >= before + 1_000, TimeSpan.FromSeconds(60), "1000 more txs under the new leader");
        await stop.CancelAsync();
        await running;

        // A dead member is logged as a state change, and a repeated network error at most every few seconds, one
        // line each, without a stack trace (it used to be a full stack trace every ~90 ms on every survivor).
        foreach (var id in survivors)
        {
            var lines = (await File.ReadAllLinesAsync(test.Cluster.Node(id).LogPath)).SkipWhile(l => !l.Contains("Leader changed", StringComparison.Ordinal)).ToList();
            Assert.DoesNotContain(lines, l => l.Contains(" at DotNext.", StringComparison.Ordinal) || l.Contains("   at System.", StringComparison.Ordinal));
            var unavailable = lines.Count(l => l.Contains("is unavailable", StringComparison.Ordinal));
            var seconds = Math.Max(1, (workload.NowNs() - killedAtNs) / 1e9);
            Assert.True(unavailable <= 8 + (seconds / 2), $"node{id} logged {unavailable} 'unavailable' lines in {seconds:0} s");
        }

        // Bring the old leader back; it must catch up and agree.
        test.Cluster.Node(leader).Start();
        workload.IsAvailable = _ => true;
        await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(60));
        var chains = await test.ReadChainsAsync();
        Assert.Equal(3, chains.Count);
        InvariantAssert.AllPass(InvariantChecker.Check(workload.History.Snapshot(), chains), test.Logs);
    }

    internal static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout)
                throw new TimeoutException($"timed out after {timeout.TotalSeconds} s waiting for: {what}");
            await Task.Delay(20);
        }
    }
}
