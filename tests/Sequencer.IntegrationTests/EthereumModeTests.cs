using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using Sequencer.Client.Local;
using Sequencer.Ethereum;

namespace Sequencer.IntegrationTests;

/// <summary>
/// Issue 13 with real nodes in ethereum validation mode: signed transactions are validated at intake, at most one tx
/// per (sender, nonce) is ordered — two conflicting txs sent to two nodes at once, and across a leader kill, order
/// exactly one, and the other answers 409 nonce_used naming the winner on every node — a sender's nonces are ordered
/// in nonce order (a tx ahead waits for the ones before it, one too far ahead is refused), the account state survives
/// a restart of every node, and a node configured for other rules refuses to start on the chain.
/// </summary>
[Collection("clusters")]
public sealed class EthereumModeTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(20) };

    internal static byte[] Tx(EthKey key, ulong nonce, byte payload, ulong chainId = 1)
        => new EthTransaction { ChainId = chainId, Nonce = nonce, MaxFeePerGas = 1, GasLimit = 21_000, To = Address.Parse("0x000000000000000000000000000000000000beef"), Data = [payload] }.Sign(key).Raw;

    internal static async Task<(int Status, JsonElement Body)> PostAsync(Uri node, params byte[][] txs)
    {
        using var response = await Http.PostAsJsonAsync(new Uri(node, "/v1/txs"), txs.Length == 1
            ? (object)new { tx = "0x" + Convert.ToHexStringLower(txs[0]) }
            : new { txs = txs.Select(t => "0x" + Convert.ToHexStringLower(t)).ToArray() });
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return ((int)response.StatusCode, document.RootElement.Clone());
    }

    internal static async Task<JsonElement> AccountAsync(Uri node, EthKey key)
    {
        using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node, $"/v1/accounts/{key.Address.ToString().ToLowerInvariant()}")));
        return document.RootElement.Clone();
    }

    private static string Hash(byte[] tx) => "0x" + Convert.ToHexStringLower(Keccak.Hash(tx));

    private static Uri Api(TestCluster test, int id) => new(test.Cluster.Node(id).Spec.Api);

    private static async Task<JsonElement> ClusterViewAsync(Uri node)
    {
        using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node, "/v1/cluster")));
        return document.RootElement.Clone();
    }

    private static ulong PrunedHeight(JsonElement view) => view.GetProperty("pipeline").GetProperty("prunedHeight").GetUInt64();

    [Fact]
    public async Task Retention_PrunesOldTxData_Serves410ForIt_NeverOrdersAnOldTxAgain_AndAFollowerRebuiltFromASnapshotAgrees()
    {
        // Issue 12: --retain-heights. A follower is down while the others order and prune, and the log is compacted
        // (4 entries kept), so it comes back through a snapshot whose oldest batches are headers only.
        await using var test = await TestCluster.StartAsync("retention", signingThreshold: 2,
            extraArguments: ["--validation", "ethereum", "--retain-heights", "20", "--wal-retained-entries", "4"]);
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        var follower = test.Cluster.Nodes.First(n => n.Spec.Id != leader).Spec.Id;
        var up = test.Cluster.Nodes.First(n => n.Spec.Id != leader && n.Spec.Id != follower).Spec.Id;
        await test.Cluster.Node(follower).KillAsync();

        var alice = EthKey.FromHex("0x" + new string('b', 63) + "2");
        var first = Tx(alice, 0, 1);
        var (status, body) = await PostAsync(Api(test, leader), first);
        Assert.True(status == 200, body.ToString());
        var height = ulong.Parse(body.GetProperty("results")[0].GetProperty("height").GetString()!, CultureInfo.InvariantCulture);
        // One tx per request, one after another: most are batches of their own.
        for (var nonce = 1UL; nonce <= 60; nonce++)
            Assert.Equal(200, (await PostAsync(Api(test, up), Tx(alice, nonce, (byte)nonce))).Status);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (PrunedHeight(await ClusterViewAsync(Api(test, leader))) < height || PrunedHeight(await ClusterViewAsync(Api(test, up))) < height)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the nodes did not prune height {height} within 30 s\n{test.Logs()}");
            await Task.Delay(100);
        }

        foreach (var node in new[] { leader, up })
        {
            // The tx's data is gone: 410 with where it was ordered; the header, its commitment and the signed head stay.
            using var tx = await Http.GetAsync(new Uri(Api(test, node), $"/v1/txs/{Hash(first)}"));
            Assert.True(tx.StatusCode is System.Net.HttpStatusCode.Gone or System.Net.HttpStatusCode.NotFound, $"node {node}: {(int)tx.StatusCode}");
            if (tx.StatusCode == System.Net.HttpStatusCode.Gone)
            {
                using var gone = JsonDocument.Parse(await tx.Content.ReadAsStringAsync());
                Assert.Equal("pruned", gone.RootElement.GetProperty("error").GetString());
                Assert.Equal(height.ToString(CultureInfo.InvariantCulture), gone.RootElement.GetProperty("height").GetString());
            }

            using (var batch = JsonDocument.Parse(await Http.GetStringAsync(new Uri(Api(test, node), $"/v1/batches/{height}"))))
            {
                Assert.True(batch.RootElement.GetProperty("pruned").GetBoolean());
                Assert.Equal(0, batch.RootElement.GetProperty("txs").GetArrayLength());
                Assert.True(batch.RootElement.GetProperty("header").GetProperty("txCount").GetInt32() >= 1);
            }

            using var commitment = await Http.GetAsync(new Uri(Api(test, node), $"/v1/commitments/{height}"));
            Assert.Equal(System.Net.HttpStatusCode.OK, commitment.StatusCode);
        }

        // The old tx again is never ordered twice: an idempotent answer at its first height, or nonce_used.
        var again = await PostAsync(Api(test, up), first);
        Assert.True(again.Status == 409 || (again.Status == 200 && again.Body.GetProperty("results")[0].GetProperty("height").GetString() == height.ToString(CultureInfo.InvariantCulture)),
            again.Body.ToString());
        Assert.Equal("61", (await AccountAsync(Api(test, leader), alice)).GetProperty("nextNonce").GetString());

        // The follower catches up from a snapshot with a pruned prefix: it has the same chain, the same nonces, and
        // decides alike.
        test.Cluster.Node(follower).Start();
        await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(60));
        Assert.Contains("Installed a snapshot", await test.WaitForLogAsync(follower, "Installed a snapshot", TimeSpan.FromSeconds(10)), StringComparison.Ordinal);
        var view = await ClusterViewAsync(Api(test, follower));
        Assert.True(PrunedHeight(view) >= height, view.ToString());
        Assert.Equal("61", (await AccountAsync(Api(test, follower), alice)).GetProperty("nextNonce").GetString());
        var headHeight = view.GetProperty("height").GetString()!;
        foreach (var node in test.Cluster.Nodes.Select(n => n.Spec.Id))
        {
            using var head = JsonDocument.Parse(await Http.GetStringAsync(new Uri(Api(test, node), $"/v1/batches/{headHeight}")));
            using var old = JsonDocument.Parse(await Http.GetStringAsync(new Uri(Api(test, node), $"/v1/batches/{height}")));
            using var reference = JsonDocument.Parse(await Http.GetStringAsync(new Uri(Api(test, leader), $"/v1/batches/{headHeight}")));
            Assert.Equal(reference.RootElement.GetProperty("hash").GetString(), head.RootElement.GetProperty("hash").GetString());
            Assert.True(old.RootElement.GetProperty("pruned").GetBoolean());
        }

        Assert.Equal((409, "nonce_used"), Code(await PostAsync(Api(test, follower), Tx(alice, 5, 99))));
        Assert.Equal(200, (await PostAsync(Api(test, follower), Tx(alice, 61, 61))).Status);
        Assert.Equal("62", (await AccountAsync(Api(test, up), alice)).GetProperty("nextNonce").GetString());
    }

    [Fact]
    public async Task ConflictingTxs_SentToTwoNodesAtOnce_OrderExactlyOne_AndTheOtherNamesTheWinner_OnEveryNode_ThroughALeaderKillAndARestart()
    {
        await using var test = await TestCluster.StartAsync("ethereum", extraArguments: ["--validation", "ethereum", "--limit", "maxNonceGap=3"]);
        var alice = EthKey.FromHex("0x" + new string('a', 63) + "1");

        // Valid: ordered, and the tx's status names its sender and nonce; the account moves on.
        var first = Tx(alice, 0, 1);
        var (status, body) = await PostAsync(Api(test, 2), first);
        Assert.True(status == 200, body.ToString());
        using (var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(Api(test, 3), $"/v1/txs/{Hash(first)}"))))
        {
            Assert.Equal(alice.Address.ToString().ToLowerInvariant(), document.RootElement.GetProperty("sender").GetString());
            Assert.Equal("0", document.RootElement.GetProperty("nonce").GetString());
        }

        // Invalid ones get a 4xx with their code, and nothing is ordered.
        Assert.Equal((400, "wrong_chain"), Code(await PostAsync(Api(test, 1), Tx(alice, 1, 9, chainId: 5))));
        Assert.Equal((400, "malformed_tx"), Code(await PostAsync(Api(test, 1), [0x02, 0x01])));
        Assert.Equal((422, "nonce_gap"), Code(await PostAsync(Api(test, 1), Tx(alice, 9, 9))));

        // Two conflicting txs (nonce 1, different payloads) to two nodes at the same moment: exactly one is ordered.
        for (var round = 0; round < 5; round++)
        {
            var nonce = (ulong)(1 + round);
            var a = Tx(alice, nonce, (byte)(10 + round));
            var b = Tx(alice, nonce, (byte)(20 + round));
            var answers = await Task.WhenAll(PostAsync(Api(test, 1), a), PostAsync(Api(test, 3), b));
            Assert.Equal(1, answers.Count(x => x.Status == 200));
            var loser = answers.Single(x => x.Status != 200);
            Assert.Equal((409, "nonce_used"), Code(loser));
            var winner = answers[0].Status == 200 ? a : b;
            Assert.Equal(Hash(winner), loser.Body.GetProperty("conflictsWith").GetString());
            // Sending the loser again, anywhere, is refused the same way; the winner again is an idempotent 200.
            var again = await PostAsync(Api(test, 2), ReferenceEquals(winner, a) ? b : a);
            Assert.Equal((409, "nonce_used"), Code(again));
            Assert.Equal(200, (await PostAsync(Api(test, 2), winner)).Status);
        }

        await WaitAccountsAsync(test, alice, 6);

        // A sender's nonces in nonce order: nonce 7 waits (parked) until nonce 6 arrives, then both are ordered, 6 first.
        var seventh = PostAsync(Api(test, 1), Tx(alice, 7, 77));
        await Task.Delay(200);
        Assert.False(seventh.IsCompleted, "a tx ahead of its sender's next nonce waits for the ones before it");
        var sixth = await PostAsync(Api(test, 2), Tx(alice, 6, 66));
        Assert.Equal(200, sixth.Status);
        var seventhAnswer = await seventh;
        Assert.Equal(200, seventhAnswer.Status);
        var height6 = ulong.Parse(sixth.Body.GetProperty("results")[0].GetProperty("height").GetString()!, CultureInfo.InvariantCulture);
        var height7 = ulong.Parse(seventhAnswer.Body.GetProperty("results")[0].GetProperty("height").GetString()!, CultureInfo.InvariantCulture);
        var index6 = sixth.Body.GetProperty("results")[0].GetProperty("index").GetInt32();
        var index7 = seventhAnswer.Body.GetProperty("results")[0].GetProperty("index").GetInt32();
        Assert.True(height6 < height7 || (height6 == height7 && index6 < index7), "nonce 6 is ordered before nonce 7");
        await WaitAccountsAsync(test, alice, 8);

        // Across a leader kill: a tx to the leader, the leader killed, a conflicting one to a survivor. Exactly one of
        // them holds nonce 8 on every surviving node, and the other is refused naming it.
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var x8 = Tx(alice, 8, 81);
        var y8 = Tx(alice, 8, 82);
        var toLeader = PostAsync(Api(test, leader), x8);
        await test.Cluster.Node(leader).KillAsync();
        var survivor = test.Cluster.Nodes.First(n => n.Spec.Id != leader).Spec.Id;
        // While the killed leader's tx is unsettled the survivor may answer "try again" (409 nonce_used naming no
        // holder: the nonce is contested; or no leader yet): a client tries again, as this does, until an answer names
        // the winner.
        var viaSurvivor = await PostAsync(Api(test, survivor), y8);
        var settleBy = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (viaSurvivor.Status != 200 && !viaSurvivor.Body.TryGetProperty("conflictsWith", out _) && DateTime.UtcNow < settleBy)
        {
            await Task.Delay(100);
            viaSurvivor = await PostAsync(Api(test, survivor), y8);
        }

        try
        {
            await toLeader;
        }
        catch (HttpRequestException)
        {
            // The killed leader never answered.
        }

        var holder = viaSurvivor.Status == 200 ? Hash(y8) : viaSurvivor.Body.GetProperty("conflictsWith").GetString();
        Assert.True(viaSurvivor.Status == 200 || Code(viaSurvivor) == (409, "nonce_used"), viaSurvivor.Body.ToString());
        Assert.True(holder == Hash(x8) || holder == Hash(y8), holder);
        foreach (var node in test.Cluster.Nodes.Where(n => n.IsRunning))
        {
            var account = await WaitAccountAsync(new Uri(node.Spec.Api), alice, 9);
            Assert.Equal(holder, account.GetProperty("lastTx").GetString());
        }

        // Every node restarted: the accounts come back from the store, and the taken nonce stays taken.
        await test.Cluster.StopAllAsync(TimeSpan.FromSeconds(10));
        foreach (var node in test.Cluster.Nodes)
            node.Start();
        await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        foreach (var node in test.Cluster.Nodes)
            Assert.Equal(holder, (await WaitAccountAsync(new Uri(node.Spec.Api), alice, 9)).GetProperty("lastTx").GetString());
        var late = await PostAsync(Api(test, 1), holder == Hash(x8) ? y8 : x8);
        Assert.Equal((409, "nonce_used"), Code(late));
        Assert.Equal(holder, late.Body.GetProperty("conflictsWith").GetString());

        // A node told to apply other rules refuses to start on this chain, and says why. So does a node told another
        // chain id (a mistyped --chain-id on a restart once followed the leader, computing and storing commitments for
        // the wrong chain).
        await test.Cluster.Node(3).StopAsync(TimeSpan.FromSeconds(10));
        await RefusesToStartAsync(test, "--validation", "opaque", "refuses to apply under other rules");
        await RefusesToStartAsync(test, "--chain-id", "3", "is configured with --chain-id 3");
    }

    // Starts node 3 with one option changed, and requires it to exit with code 2 and the reason.
    private static async Task RefusesToStartAsync(TestCluster test, string option, string value, string reason)
    {
        var arguments = test.Cluster.Node(3).Arguments.ToList();
        arguments[arguments.IndexOf(option) + 1] = value;
        await using var wrong = new NodeProcess(NodeBinary.Locate(), test.Cluster.Node(3).Spec, arguments);
        wrong.Start();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (wrong.IsRunning && DateTime.UtcNow < deadline)
            await Task.Delay(100);
        Assert.Equal(2, wrong.ExitCode);
        Assert.Contains(reason, wrong.Tail(40), StringComparison.Ordinal);
    }

    private static (int, string?) Code((int Status, JsonElement Body) answer)
        => (answer.Status, answer.Body.TryGetProperty("error", out var error) ? error.GetString() : null);

    private static async Task WaitAccountsAsync(TestCluster test, EthKey key, ulong nextNonce)
    {
        foreach (var node in test.Cluster.Nodes.Where(n => n.IsRunning))
            await WaitAccountAsync(new Uri(node.Spec.Api), key, nextNonce);
    }

    private static async Task<JsonElement> WaitAccountAsync(Uri node, EthKey key, ulong nextNonce)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        var last = "none";
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                var account = await AccountAsync(node, key);
                last = account.ToString();
                if (account.GetProperty("nextNonce").GetString() == nextNonce.ToString(CultureInfo.InvariantCulture))
                    return account;
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"{node}: the account's next nonce did not reach {nextNonce}: {last}");
    }
}
