using System.Globalization;
using System.Text.RegularExpressions;
using Sequencer.Checker;
using Sequencer.Client;

namespace Sequencer.IntegrationTests;

/// <summary>The store is written while the cluster runs, and a restart loads from it.</summary>
[Collection("clusters")]
public sealed partial class StoreTests
{
    private const int UnpersistedBound = 128;

    [Fact]
    public async Task ClusterWithDkgKey_OrdersMoreBatchesThanTheUnpersistedBound_StoresThemAndLoadsThemAfterARestart()
    {
        // A DKG writes DKG records through the store on every node; the first such write once killed the persister
        // (issue 7), and with it the node after maxUnpersistedBatches batches. A low bound makes that quick to reach.
        await using var test = await TestCluster.StartAsync("store", extraArguments:
            ["--dkg-threshold", "2", "--limit", $"maxUnpersistedBatches={UnpersistedBound}", "--limit", "persistGroupBatches=16"]);
        await WaitForKeyEpochAsync(test);

        // Two sequential single-tx clients: (almost) every tx is a batch of its own.
        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 2, TxsPerRequest = 1, TargetAcknowledged = 3 * UnpersistedBound, Seed = 31 });
        using (var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2)))
            await workload.RunAsync(limit.Token);
        var height = await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));
        Assert.True(height > UnpersistedBound * 2, $"only {height} batches; the test needs more than twice the unpersisted bound of {UnpersistedBound}");

        // Every node's store catches up with its applied state (the persister writes on its own; nothing flushes it).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        foreach (var node in test.Cluster.Nodes)
        {
            while (true)
            {
                var view = await node.Client.GetClusterAsync();
                var stored = view.Pipeline?.GetValueOrDefault("storedHeight") ?? 0;
                if (stored >= (long)height)
                    break;
                Assert.True(DateTime.UtcNow < deadline, $"node{node.Spec.Id} stored {stored} of {height} batches\n{test.Logs()}");
                await Task.Delay(50);
            }

            // What LiteDB holds is in its data file and, until LiteDB checkpoints it there (8 MB of log, or a close), in
            // its log, which the store fsyncs after every commit: both are the store.
            var storeBytes = new FileInfo(Path.Combine(node.Spec.DataDir, "store.db")).Length + new FileInfo(Path.Combine(node.Spec.DataDir, "store-log.db")).Length;
            Assert.True(storeBytes > 64 * 1024, $"node{node.Spec.Id}'s store (store.db and store-log.db) is nearly empty: {storeBytes} bytes");
            var ready = await GetReadyAsync(node.Client);
            Assert.True(ready.Ok, $"node{node.Spec.Id} is not ready: {ready.Body}");
        }

        var before = await test.ReadChainsAsync();

        // A clean stop of every node, then a start: each loads its batches from its store, not only from the log.
        foreach (var node in test.Cluster.Nodes)
        {
            await node.StopAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(0, node.ExitCode);
        }

        test.Cluster.StartAll();
        await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        foreach (var node in test.Cluster.Nodes)
        {
            var loaded = LoadedHeights(await File.ReadAllTextAsync(node.LogPath));
            Assert.True(loaded.Count >= 2, $"node{node.Spec.Id} logged {loaded.Count} store loads");
            Assert.True(loaded[^1] >= height, $"node{node.Spec.Id} loaded height {loaded[^1]} from its store after the restart, expected {height}");
        }

        var after = await test.ReadChainsAsync();
        Assert.All(after, chain => Assert.Equal(before[0].Batches.Select(b => b.Hash), chain.Batches.Take(before[0].Batches.Count).Select(b => b.Hash)));
        InvariantAssert.AllPass(InvariantChecker.Check(workload.History.Snapshot(), after), test.Logs);
    }

    internal static async Task WaitForKeyEpochAsync(TestCluster test)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        foreach (var (nodeId, client) in test.Clients)
        {
            while ((await client.GetKeysAsync()).Count == 0)
            {
                Assert.True(DateTime.UtcNow < deadline, $"node {nodeId} has no key epoch after 30 s\n{test.Logs()}");
                await Task.Delay(50);
            }
        }
    }

    internal static async Task<(bool Ok, string Body)> GetReadyAsync(SequencerClient client)
    {
        using var http = new HttpClient { BaseAddress = client.BaseUrl, Timeout = TimeSpan.FromSeconds(10) };
        using var response = await http.GetAsync(new Uri("/health/ready", UriKind.Relative));
        return (response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
    }

    private static List<ulong> LoadedHeights(string log)
        => [.. LoadedLine().Matches(log).Select(m => ulong.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))];

    [GeneratedRegex(@"Loaded the store: height (\d+)")]
    private static partial Regex LoadedLine();
}
