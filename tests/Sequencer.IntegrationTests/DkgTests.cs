using System.Globalization;
using System.Net.Http.Headers;
using Sequencer.Checker;
using Sequencer.Core.Encoding;
using Sequencer.Threshold;

namespace Sequencer.IntegrationTests;

/// <summary>A cluster that boots without a key runs a Pedersen DKG among its nodes, then signs every batch.</summary>
[Collection("clusters")]
public sealed class DkgTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    [Fact]
    public async Task ClusterBootsWithADkg_EachNodeKeepsOnlyItsShare_SignaturesVerify_AndARestartedNodeSignsAgain()
    {
        await using var test = await TestCluster.StartAsync("dkg", extraArguments: ["--dkg-threshold", "2"]);

        // Key epoch 1 comes from the DKG, the same on every node.
        var keys = new List<Sequencer.Client.KeyEpochDto>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        foreach (var (nodeId, client) in test.Clients)
        {
            while (true)
            {
                if ((await client.GetKeysAsync()) is [var key])
                {
                    keys.Add(key);
                    break;
                }

                Assert.True(DateTime.UtcNow < deadline, $"node {nodeId} has no key epoch after 30 s\n{test.Logs()}");
                await Task.Delay(50);
            }
        }

        Assert.Single(keys.Select(k => k.GroupKey).Distinct());
        Assert.All(keys, k => Assert.Equal(2, k.Threshold));
        var groupKey = GroupKeyFile.HexBytes(keys[0].GroupKey);

        // Each node holds its own share, owner-only, of that key, and the shares differ; no log line shows one.
        var secrets = new List<string>();
        foreach (var node in test.Cluster.Nodes)
        {
            var directory = Path.Combine(node.Spec.DataDir, "keys");
            var group = KeyFiles.ReadGroup(Path.Combine(directory, KeyFiles.GroupFileName));
            Assert.Equal(keys[0].GroupKey, group.GroupKey);
            Assert.Equal("dkg", group.Origin);
            var sharePath = Path.Combine(directory, KeyFiles.ShareFileName(node.Spec.Id));
            if (!OperatingSystem.IsWindows())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(sharePath));
            var share = KeyFiles.ReadShare(sharePath, group.ToGroupKey());
            Assert.Equal(node.Spec.Id, share.Identifier);
            Assert.Equal(group.ToGroupKey().VerificationShares[node.Spec.Id], Secp256k1.BaseMultiply(share.Secret));
            secrets.Add(Convert.ToHexStringLower(Secp256k1.SerializeScalar(share.Secret)));
            // The DKG's own secrets are erased once the node activates the key epoch (its DKG loop does, a moment after the
            // epoch is applied and served).
            var erasedBy = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (Directory.EnumerateFiles(Path.Combine(node.Spec.DataDir, "signer"), "dkg-*").Any())
            {
                Assert.True(DateTime.UtcNow < erasedBy, $"node {node.Spec.Id} still holds its DKG secrets 10 s after the key epoch is in force");
                await Task.Delay(20);
            }
        }

        Assert.Equal(3, secrets.Distinct().Count());

        // Every batch is signed under the DKG key (checked with arithmetic written in the checker, not Frost.Verify).
        await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 60, seed: 11);
        var height = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await AssertSignedAsync(test, 1, height, groupKey);

        // A node killed and restarted finds its share in its data directory and signs again.
        await test.Cluster.Node(3).KillAsync();
        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 30, seed: 12);
        var during = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        test.Cluster.Node(3).Start();
        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 30, seed: 13);
        var after = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        Assert.True(after > during);
        await AssertSignedAsync(test, height + 1, after, groupKey);
        deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while ((await test.Cluster.Node(3).Client.GetKeysAsync()).Count == 0 || !await SignsAsync(test.Cluster.Node(3).Client.BaseUrl, 3))
        {
            Assert.True(DateTime.UtcNow < deadline, "node 3 does not sign after its restart");
            await Task.Delay(50);
        }

        // A second DKG for key epoch 1 is refused (a new key comes through a rotation), and junk is a clear 4xx.
        // (On the leader's internal listener, as a member: mutual TLS.)
        var leader = test.Internal(await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10)));
        using var member = test.MemberClient(1);
        Assert.Equal(409, await PostAsync(member, leader, LogCommandCodec.Encode(new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] })));
        Assert.Equal(400, await PostAsync(member, leader, [1, 2, 3]));
        Assert.Equal(400, await PostAsync(member, leader, LogCommandCodec.Encode(new HeadSignaturesCommand())));

        foreach (var node in test.Cluster.Nodes)
        {
            var log = await File.ReadAllTextAsync(node.LogPath);
            Assert.DoesNotContain(secrets, s => log.Contains(s, StringComparison.OrdinalIgnoreCase));
        }
    }

    [Theory]
    [InlineData("dkg-bad-share=3:1", "does not match its commitment")]
    [InlineData("dkg-false-complaint=3:1", "of a share that opens and matches")]
    [InlineData("dkg-silent=3:round2", "silent at round2: members 1, 2 voted")]
    public async Task AMemberThatDealsABadShareLiesInAComplaintOrStaysSilent_IsDisqualified_AndTheDkgCompletesWithTheOthers_WhoSign(string fault, string verdict)
    {
        // Issue 9: one member could fail every attempt (a complaint without evidence) and so veto keys it disliked, or
        // stall the key generation by saying nothing. Node 3 misbehaves (the TestFaults build): the complaint's
        // evidence, or the others' silence votes (after 2 s here), disqualify it, and members 1 and 2 make the key.
        await using var test = await TestCluster.StartAsync("dkg-liar", extraArguments: ["--dkg-threshold", "2", "--test-fault", fault, "--limit", "dkgSilenceMs=2000"],
            binary: TestCluster.TestFaultsBinary());

        var keys = new List<Sequencer.Client.KeyEpochDto>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(40);
        foreach (var (nodeId, client) in test.Clients)
        {
            while (true)
            {
                if ((await client.GetKeysAsync()) is [var key])
                {
                    keys.Add(key);
                    break;
                }

                Assert.True(DateTime.UtcNow < deadline, $"node {nodeId} has no key epoch after 40 s\n{test.Logs()}");
                await Task.Delay(50);
            }
        }

        Assert.Single(keys.Select(k => k.GroupKey).Distinct());
        Assert.All(keys, k => Assert.Equal([1, 2], k.Members));
        Assert.All(keys, k => Assert.Equal(2, k.Threshold));

        // Every node logged the verdict, naming the culprit and why; the first attempt is the one that completed.
        foreach (var node in test.Cluster.Nodes)
        {
            var log = await File.ReadAllTextAsync(node.LogPath);
            Assert.Contains("member 3 is disqualified", log, StringComparison.Ordinal);
            Assert.Contains(verdict, log, StringComparison.Ordinal);
            Assert.DoesNotContain("started (attempt 2)", log, StringComparison.Ordinal);
        }

        // Members 1 and 2 hold their shares, and every batch is signed under the key they made.
        await SigningTests.SubmitAsync(test.Cluster.Node(3).Client, 40, seed: 21);
        var height = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await AssertSignedAsync(test, 1, height, GroupKeyFile.HexBytes(keys[0].GroupKey));

        // Node 3 keeps no share: one it wrote before the verdict (a bad dealer may confirm before the complaint lands)
        // is erased once the key epoch without it is in force there.
        var share3 = Path.Combine(test.Cluster.Node(3).Spec.DataDir, "keys", KeyFiles.ShareFileName(3));
        var erased = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (File.Exists(share3))
        {
            Assert.True(DateTime.UtcNow < erased, $"node 3 still holds {share3}\n{test.Logs()}");
            await Task.Delay(50);
        }
    }

    private static async Task AssertSignedAsync(TestCluster test, ulong from, ulong to, byte[] groupKey)
    {
        for (var h = from; h <= to; h++)
        {
            var commitment = await test.Cluster.Node((int)(h % 3) + 1).Client.GetCommitmentAsync(h);
            Assert.NotNull(commitment);
            SigningTests.AssertCovered(commitment, groupKey);
        }
    }

    private static async Task<bool> SignsAsync(Uri node, int id)
    {
        using var response = await Http.GetAsync(new Uri(node, "/v1/signing"));
        var body = await response.Content.ReadAsStringAsync();
        return body.Contains($"\"signer\":{{\"id\":{id.ToString(CultureInfo.InvariantCulture)}", StringComparison.Ordinal);
    }

    private static async Task<int> PostAsync(HttpClient client, Uri node, byte[] body)
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
        using var response = await client.PostAsync(new Uri(node, "/internal/v1/dkg"), content);
        return (int)response.StatusCode;
    }
}
