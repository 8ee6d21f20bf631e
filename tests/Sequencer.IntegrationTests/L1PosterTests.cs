using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Sequencer.Client.Local;
using Sequencer.Core.Hashing;
using Sequencer.Ethereum;
using Sequencer.L1;
using Sequencer.Threshold;

namespace Sequencer.IntegrationTests;

/// <summary>
/// Three nodes and a real L1 (anvil, one block a second): the leader posts signed heads to the inbox contract; every
/// node serves posted and finalized from what it sees on the L1; posting survives a leader kill, an L1 reorg and an
/// L1 outage, and the contract only ever holds this chain's heads, in order (INV-L1PREFIX).
/// </summary>
[Collection("clusters")]
public sealed class L1PosterTests(ITestOutputHelper output)
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    private sealed record L1View(ulong Posted, ulong Finalized, long Reorgs, string? Error);

    private static async Task<L1View?> L1Async(Uri node)
    {
        try
        {
            using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node, "/v1/l1")));
            var root = document.RootElement;
            return new L1View(ulong.Parse(root.GetProperty("postedHeight").GetString()!, CultureInfo.InvariantCulture),
                ulong.Parse(root.GetProperty("finalizedHeight").GetString()!, CultureInfo.InvariantCulture), root.GetProperty("reorgs").GetInt64(),
                root.GetProperty("lastError").GetString());
        }
        catch (HttpRequestException)
        {
            return null;
        }
    }

    // Waits until every running node has seen heads up to `height` posted (and finalized, when asked) on the L1.
    internal static async Task WaitPostedAsync(TestCluster test, ulong height, bool finalized, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var views = await Task.WhenAll(test.Cluster.Nodes.Where(n => n.IsRunning).Select(n => L1Async(new Uri(n.Spec.Api))));
            if (views.All(v => v is not null && v.Posted >= height && (!finalized || v.Finalized >= height)))
                return;
            Assert.True(DateTime.UtcNow < deadline, $"heads up to {height} not {(finalized ? "finalized" : "posted")} within {timeout.TotalSeconds} s: {string.Join("; ", views.Select(v => v?.ToString() ?? "down"))}\n{test.Logs()}");
            await Task.Delay(100);
        }
    }

    internal static async Task<(LocalAnvil Anvil, Address Inbox, TestCluster Test)> StartAsync(string name, IReadOnlyList<string>? extraArguments = null)
    {
        var anvilLog = Path.Combine(Path.GetTempPath(), "sequencer-it", $"anvil-{name}-{Environment.ProcessId}.log");
        var anvil = await LocalAnvil.StartAsync(anvilLog, blockTimeSeconds: 1);
        try
        {
            var inbox = Address.ForContract(EthKey.FromHex(LocalAnvil.DeployerKey).Address, 0);
            var keyFile = Path.Combine(Path.GetTempPath(), "sequencer-it", $"poster-{name}-{Environment.ProcessId}.key");
            Sequencer.Core.Storage.DurableFiles.WriteAllText(keyFile, LocalAnvil.DefaultKey, secret: true);
            var test = await TestCluster.StartAsync(name, signingThreshold: 2, extraArguments:
                ["--l1-rpc", anvil.Rpc.ToString(), "--l1-contract", inbox.ToString(), "--l1-key-file", keyFile, "--l1-finality-depth", "2", .. extraArguments ?? []]);
            test.DeleteOnDispose(keyFile, anvilLog);

            // The dealer's group key is known at once: deploy the inbox with it, where the nodes expect it.
            var group = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName));
            using var rpc = new EthRpcClient(anvil.Rpc);
            var receipt = await new EthSender(rpc, EthKey.FromHex(LocalAnvil.DeployerKey), anvil.ChainId)
                .SendAsync(null, InboxContract.Deployment(1, 1, EthHex.ToBytes(group.GroupKey)), TimeSpan.FromSeconds(30));
            Assert.Equal(inbox, receipt.ContractAddress);
            return (anvil, inbox, test);
        }
        catch
        {
            await anvil.DisposeAsync();
            throw;
        }
    }

    // INV-L1PREFIX: every HeadPosted event is this chain's signed head at its height, in increasing height order.
    private static async Task AssertContractHoldsOurHeadsAsync(LocalAnvil anvil, Address inbox, TestCluster test)
    {
        using var rpc = new EthRpcClient(anvil.Rpc);
        var reader = new InboxReader(rpc, inbox);
        var events = await reader.HeadsPostedAsync(0, await rpc.BlockNumberAsync());
        Assert.NotEmpty(events);
        Assert.Equal(events.Select(e => e.Height).Order(), events.Select(e => e.Height));
        Assert.Equal(events.Count, events.Select(e => e.Height).Distinct().Count());
        // Read from a running node (the leader may have been killed).
        var reader2 = test.Cluster.Nodes.First(n => n.IsRunning).Client;
        foreach (var posted in events)
        {
            var batch = await reader2.GetBatchAsync(posted.Height);
            Assert.NotNull(batch);
            Assert.Equal(batch.Hash, posted.Commitment.ToString());
        }

        Assert.Equal(events[^1].Height, await reader.LastHeightAsync());
        Assert.Equal(events[^1].Commitment, await reader.LastHashAsync());
    }

    [Fact]
    public async Task EverySignedHeadReachesTheContractInOrder_TxsClimbToFinalized_ThroughALeaderKill()
    {
        var (anvil, inbox, test) = await StartAsync("l1-post");
        await using var _ = anvil;
        await using var __ = test;

        var hashes = await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 40, seed: 31);
        var signed = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await WaitPostedAsync(test, signed, finalized: true, TimeSpan.FromSeconds(40));

        // Every node reports the ladder's top level, with the L1 post that covers the tx.
        foreach (var (_, client) in test.Clients)
        {
            using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(client.BaseUrl, $"/v1/txs/{hashes[0]}")));
            var root = document.RootElement;
            Assert.Equal("finalized", root.GetProperty("level").GetString());
            var times = root.GetProperty("times");
            Assert.True(times.GetProperty("signed").GetInt64() <= times.GetProperty("posted").GetInt64());
            Assert.True(times.GetProperty("posted").GetInt64() <= times.GetProperty("finalized").GetInt64());
            Assert.True(root.GetProperty("l1").GetProperty("finalized").GetBoolean());
        }

        // The leader is killed; the next one resumes from the contract's head: no double post, no gap.
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        await test.Cluster.Node(leader).KillAsync();
        var survivor = test.Cluster.Nodes.First(n => n.Spec.Id != leader);
        await SigningTests.SubmitAsync(survivor.Client, 30, seed: 32);
        var after = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        Assert.True(after > signed);
        await WaitPostedAsync(test, after, finalized: true, TimeSpan.FromSeconds(40));
        await AssertContractHoldsOurHeadsAsync(anvil, inbox, test);

        // The log recorded the posting progress, checked by every node against its own chain.
        using var progress = JsonDocument.Parse(await Http.GetStringAsync(new Uri(survivor.Client.BaseUrl, "/v1/l1")));
        Assert.NotEqual(JsonValueKind.Null, progress.RootElement.GetProperty("logProgress").ValueKind);
        output.WriteLine(progress.RootElement.ToString());
    }

    [Fact]
    public async Task AnL1ReorgThatDropsPosts_IsSeen_AndTheHeadsArePostedAgain_AndAnL1OutageIsRiddenOut()
    {
        var (anvil, inbox, test) = await StartAsync("l1-reorg");
        await using var _ = anvil;
        await using var __ = test;
        using var rpc = new EthRpcClient(anvil.Rpc);
        var reader = new InboxReader(rpc, inbox);

        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 20, seed: 41);
        var signed = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await WaitPostedAsync(test, signed, finalized: false, TimeSpan.FromSeconds(30));

        // A reorg deeper than the post: the contract's head goes back, every node notices, and the leader posts again.
        var before = await reader.LastHeightAsync();
        var lastPost = (await reader.HeadsPostedAsync(0, await rpc.BlockNumberAsync()))[^1];
        var depth = await rpc.BlockNumberAsync() - lastPost.Log.BlockNumber + 1;
        await rpc.RequestAsync("anvil_reorg", [JsonValue.Create(depth), new JsonArray()]);
        var dropped = await reader.LastHeightAsync();
        Assert.True(dropped < before, $"the reorg did not drop the post (contract head {dropped}, before {before})");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while ((await Task.WhenAll(test.Cluster.Nodes.Select(n => L1Async(new Uri(n.Spec.Api))))).Any(v => v is null || v.Reorgs == 0))
        {
            Assert.True(DateTime.UtcNow < deadline, "the nodes did not see the reorg");
            await Task.Delay(100);
        }

        await WaitPostedAsync(test, signed, finalized: true, TimeSpan.FromSeconds(40));
        Assert.True(await reader.LastHeightAsync() >= signed);

        // The L1 stops answering for 10 s (its process paused): ordering and signing go on, posting catches up.
        Assert.Equal(0, Process.Start("kill", ["-STOP", anvil.ProcessId.ToString(CultureInfo.InvariantCulture)])!.WaitForExit(5_000) ? 0 : 1);
        var outageStart = DateTime.UtcNow;
        try
        {
            await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 20, seed: 42);
            var during = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
            Assert.True(during > signed);
            signed = during;
            var remaining = TimeSpan.FromSeconds(10) - (DateTime.UtcNow - outageStart);
            if (remaining > TimeSpan.Zero)
                await Task.Delay(remaining);
            var view = await L1Async(new Uri(test.Cluster.Node(1).Spec.Api));
            Assert.NotNull(view);
            Assert.True(view.Posted < signed, "a head was posted while the L1 was paused");
        }
        finally
        {
            Process.Start("kill", ["-CONT", anvil.ProcessId.ToString(CultureInfo.InvariantCulture)])!.WaitForExit(5_000);
        }

        await WaitPostedAsync(test, signed, finalized: true, TimeSpan.FromSeconds(60));
        await AssertContractHoldsOurHeadsAsync(anvil, inbox, test);
    }
}
