using System.Collections.Concurrent;
using Sequencer.Checker;
using Sequencer.Client;

namespace Sequencer.IntegrationTests;

/// <summary>An acknowledged tx is never reported as unknown, not even right after the leader that acknowledged it died.</summary>
[Collection("clusters")]
public sealed class ReadAfterAckTests
{
    [Fact]
    public async Task LeaderKilledMidStream_EveryAcknowledgedTxIsFoundOnEverySurvivor_NeverA404()
    {
        await using var test = await TestCluster.StartAsync("read-after-ack");
        var workload = new Workload(test.Clients, new WorkloadOptions { Clients = 16, TxsPerRequest = 5, Seed = 23, RequestTimeout = TimeSpan.FromSeconds(12) });
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var running = workload.RunAsync(stop.Token);
        await OrderingTests.WaitUntilAsync(() => workload.Acknowledged >= 3_000, TimeSpan.FromSeconds(60), "3000 txs acknowledged before the kill");

        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        workload.IsAvailable = id => id != leader;
        await test.Cluster.Node(leader).KillAsync();
        var acknowledged = workload.History.Snapshot().Where(o => o.Outcome == OpOutcome.Ok).OrderByDescending(o => o.CompletedNs).Select(o => o.TxHash).Distinct().ToList();
        await stop.CancelAsync();

        // Right away, during the election and the new leader's first moments, every survivor is asked for every
        // acknowledged tx, newest first. 503 (the node cannot tell yet) is allowed and retried; 404 never is.
        var survivors = test.Cluster.Nodes.Where(n => n.Spec.Id != leader).Select(n => n.Client).ToList();
        var notFound = new ConcurrentBag<string>();
        var unavailable = 0;
        var reads = survivors.SelectMany(client => acknowledged.Select(hash => (client, hash))).ToList();
        await Parallel.ForEachAsync(reads, new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (read, token) =>
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                try
                {
                    var status = await read.client.GetTxAsync(read.hash, token);
                    if (status is null)
                        notFound.Add($"{read.client.BaseUrl} {read.hash}");
                    return;
                }
                catch (SequencerApiException e) when (e.Status is 503 or 502 && DateTime.UtcNow < deadline)
                {
                    Interlocked.Increment(ref unavailable);
                    await Task.Delay(100, token);
                }
            }
        });
        await running;

        Assert.True(notFound.IsEmpty, $"{notFound.Count} of {reads.Count} reads of acknowledged txs answered 404, e.g. {string.Join(", ", notFound.Take(5))}\n{test.Logs()}");
        Assert.True(acknowledged.Count >= 3_000);
    }
}
