using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Sequencer.Checker;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Threshold;

namespace Sequencer.IntegrationTests;

/// <summary>Cluster signing with real node processes: a 2-of-3 FROST key from the trusted dealer.</summary>
[Collection("clusters")]
public sealed class SigningTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    [Fact]
    public async Task TwoOfThree_SignsEveryBatch_SignaturesVerifyIndependently_AndKillingAnyOneNodeDoesNotStopSigning()
    {
        await using var test = await TestCluster.StartAsync("signing", signingThreshold: 2);
        var groupFile = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName));
        var groupKey = GroupKeyFile.HexBytes(groupFile.GroupKey);

        var hashes = new List<string>();
        hashes.AddRange(await SubmitAsync(test.Cluster.Node(1).Client, 120, seed: 1));
        var height = await WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        // The log's key epoch is the file's, on every node.
        foreach (var (_, client) in test.Clients)
        {
            var epoch = Assert.Single(await client.GetKeysAsync());
            Assert.Equal("1", epoch.Epoch);
            Assert.Equal(groupFile.GroupKey, epoch.GroupKey);
            Assert.Equal(2, epoch.Threshold);
            Assert.Equal([1, 2, 3], epoch.Members);
        }

        // Every ordered tx reaches `signed`, on every node.
        foreach (var (nodeId, client) in test.Clients)
        {
            foreach (var hash in hashes.Where((_, i) => i % 10 == nodeId))
            {
                var status = await client.GetTxAsync(hash);
                Assert.NotNull(status);
                Assert.Equal("signed", status.Level);
                Assert.True(status.Times["signed"] >= status.Times["ordered"], $"signed before ordered: {string.Join(", ", status.Times)}");
            }
        }

        // Every batch is covered by a signed head: its commitment is in the head's history (the proof checked with the
        // checker's own Merkle code) and the head carries a valid 2-of-3 signature (checked with arithmetic written there).
        var heads = new HashSet<string>();
        for (ulong h = 1; h <= height; h++)
        {
            var client = test.Cluster.Node((int)(h % 3) + 1).Client;
            var commitment = await client.GetCommitmentAsync(h);
            Assert.NotNull(commitment);
            var head = AssertCovered(commitment, groupKey);
            heads.Add(head.Header.Height);
            Assert.Equal("1", head.KeyEpoch);
            Assert.Equal(2, head.Signers.Count);

            // An altered header is not covered.
            var header = commitment.Header.ToHeader();
            var altered = new BatchHeader(header.ChainId, header.KeyEpoch, header.Height, header.Term, header.ParentHash, header.HistoryRoot, header.TxRoot, header.TxCount, header.TimestampMs + 1);
            Assert.False(h != ulong.Parse(head.Header.Height, CultureInfo.InvariantCulture)
                && CheckerMerkle.VerifyInclusion(h - 1, ulong.Parse(head.Header.Height, CultureInfo.InvariantCulture) - 1, altered.Commitment.ToArray(),
                    [.. commitment.HistoryProof.Select(p => Convert.FromHexString(p[2..]))], Convert.FromHexString(head.Header.HistoryRoot[2..])));
        }

        // Heads, not batches, are signed; GET /v1/heads lists them, each covering the heights below it.
        var served = (await test.Cluster.Node(2).Client.GetAllHeadsAsync()).Select(h => h.Header.Height).ToHashSet();
        Assert.Superset(heads, served.Where(h => ulong.Parse(h, CultureInfo.InvariantCulture) <= height).ToHashSet());

        // Bad requests.
        await AssertErrorAsync(test.Cluster.Node(1).Client.BaseUrl, "/v1/commitments/0", 400, "bad_height");
        await AssertErrorAsync(test.Cluster.Node(1).Client.BaseUrl, "/v1/commitments/abc", 400, "bad_height");
        await AssertErrorAsync(test.Cluster.Node(1).Client.BaseUrl, $"/v1/commitments/{height + 1000}", 404, "not_found");
        // The internal routes are not on the public API; on the internal listener a member's junk is a 400.
        await AssertPostErrorAsync(test.Cluster.Node(1).Client.BaseUrl, "/internal/v1/shares", [1, 2, 3], 404);
        using (var member = test.MemberClient(2))
        {
            await AssertPostErrorAsync(test.Internal(1), "/internal/v1/shares", [1, 2, 3], 400, member);
            await AssertPostErrorAsync(test.Internal(1), "/internal/v1/nonce-commitments", [1, 2, 3], 400, member);
        }

        // Killing any one node of three does not stop signing; the node catches up when it returns (LIVE-HEAL).
        for (var victim = 1; victim <= 3; victim++)
        {
            await test.Cluster.Node(victim).KillAsync();
            var survivor = test.Cluster.Node(victim % 3 + 1).Client;
            await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10), [.. Enumerable.Range(1, 3).Where(i => i != victim)]);
            var more = await SubmitAsync(survivor, 40, seed: 100 + victim);
            var signedHeight = await WaitAllSignedAsync(test, TimeSpan.FromSeconds(20));
            var last = await survivor.GetTxAsync(more[^1]);
            Assert.Equal("signed", last!.Level);
            Assert.True(signedHeight > height);
            height = signedHeight;

            test.Cluster.Node(victim).Start();
            await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));
            await WaitAllSignedAsync(test, TimeSpan.FromSeconds(20));
        }

        // After all that, every height on every node is covered by a valid signed head.
        foreach (var (_, client) in test.Clients)
        {
            var latest = await client.GetLatestBatchAsync();
            for (ulong h = 1; h <= ulong.Parse(latest!.Header.Height, CultureInfo.InvariantCulture); h += 7)
                AssertCovered((await client.GetCommitmentAsync(h))!, groupKey);
        }
    }

    [Fact]
    public async Task ByzantineSigner_SendingWrongShares_NeverBlocksSigning_AndIsReportedById()
    {
        const string token = "integration-test-admin-token";
        await using var test = await TestCluster.StartAsync("byzantine", signingThreshold: 2, extraArguments: ["--admin-token", token]);
        var groupFile = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName));
        var groupKey = GroupKeyFile.HexBytes(groupFile.GroupKey);
        await SubmitAsync(test.Cluster.Node(1).Client, 20, seed: 7);
        var before = await WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        // Node 2 turns Byzantine: every share it sends is wrong (and properly signed by its key, so it is caught and named).
        using (var request = new HttpRequestMessage(HttpMethod.Post, new Uri(test.Cluster.Node(2).Client.BaseUrl, "/admin/signer-fault")))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            request.Content = new StringContent("{\"fault\":\"wrong-shares\"}", Encoding.UTF8, "application/json");
            using var response = await Http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        // Make sure node 2 is asked: with it as leader it signs first; otherwise the leader picks it once the other
        // follower is gone for a moment. Either way its shares are bad and the session is retried without it.
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var other = Enumerable.Range(1, 3).First(i => i != leader && i != 2);
        if (leader != 2)
            await test.Cluster.Node(other).KillAsync();
        await SubmitAsync(test.Cluster.Node(leader).Client, 60, seed: 8);
        if (leader != 2)
        {
            // With only the leader and the Byzantine node up, nothing new can be signed: the bad shares are refused.
            await WaitUntilReportedAsync(test.Cluster.Node(leader).Client.BaseUrl, 2, TimeSpan.FromSeconds(20));
            test.Cluster.Node(other).Start();
            await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));
        }

        await SubmitAsync(test.Cluster.Node(1).Client, 60, seed: 9);
        var height = await WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        Assert.True(height > before);

        // Reported by id on the leader; no other signer blamed.
        var currentLeader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var report = await GetSigningAsync(test.Cluster.Node(currentLeader).Client.BaseUrl);
        var signers = report.GetProperty("signers").EnumerateArray().ToDictionary(s => s.GetProperty("id").GetInt32());
        if (currentLeader == leader)
            Assert.True(signers[2].GetProperty("badShares").GetInt64() > 0, report.ToString());
        Assert.All(signers.Where(s => s.Key != 2), s => Assert.Equal(0, s.Value.GetProperty("badShares").GetInt64()));
        Assert.Contains(test.Cluster.Nodes.Select(n => n.Tail(400)), log => log.Contains("Signer 2 sent an invalid signature share", StringComparison.Ordinal));

        // Every batch is covered by a valid signed head, and no head signed after the fault counts node 2's share.
        for (var h = before + 1; h <= height; h++)
        {
            var commitment = await test.Cluster.Node(1).Client.GetCommitmentAsync(h);
            Assert.NotNull(commitment);
            var head = AssertCovered(commitment, groupKey);
            Assert.DoesNotContain(2, head.Signers);
        }
    }

    /// <summary>
    /// Checks a coverage proof with code written outside the node (the checker's Merkle and Schnorr arithmetic): both
    /// commitments recompute, the proof puts the header in the head's history, the head's signature verifies.
    /// </summary>
    internal static HeadDto AssertCovered(CommitmentResponse commitment, byte[] groupKey)
    {
        var height = ulong.Parse(commitment.Header.Height, CultureInfo.InvariantCulture);
        var head = commitment.Head;
        var headHeight = ulong.Parse(head.Header.Height, CultureInfo.InvariantCulture);
        Assert.Equal(commitment.Header.ToHeader().Commitment.ToString(), commitment.Commitment);
        Assert.Equal(head.Header.ToHeader().Commitment.ToString(), head.Commitment);
        Assert.True(headHeight >= height, $"head {headHeight} does not cover {height}");
        if (headHeight == height)
        {
            Assert.Empty(commitment.HistoryProof);
        }
        else
        {
            Assert.True(CheckerMerkle.VerifyInclusion(height - 1, headHeight - 1, Convert.FromHexString(commitment.Commitment[2..]),
                [.. commitment.HistoryProof.Select(p => Convert.FromHexString(p[2..]))], Convert.FromHexString(head.Header.HistoryRoot[2..])),
                $"the history proof of {height} does not verify against head {headHeight}");
        }

        Assert.True(SchnorrVerifier.Verify(Convert.FromHexString(head.Commitment[2..]), head.SignatureBytes(), groupKey), $"head {headHeight}'s signature does not verify");
        return head;
    }

    internal static async Task<List<string>> SubmitAsync(SequencerClient client, int count, int seed)
    {
        var random = new Random(seed * 7919);
        var hashes = new List<string>();
        for (var i = 0; i < count; i += 10)
        {
            var txs = Enumerable.Range(0, Math.Min(10, count - i)).Select(_ =>
            {
                var tx = new byte[64];
                random.NextBytes(tx);
                return (ReadOnlyMemory<byte>)tx;
            }).ToList();
            hashes.AddRange((await SubmitRetryingAsync(client, txs)).Select(r => r.Hash));
        }

        return hashes;
    }

    // A node answers 503 no_leader (nothing was submitted) while an election runs, which a killed leader starts and a
    // starved machine can make outlast the node's 600 ms wait: a client tries again, as a real one would, for at most 30 s.
    private static async Task<IReadOnlyList<SubmitResult>> SubmitRetryingAsync(SequencerClient client, IReadOnlyList<ReadOnlyMemory<byte>> txs)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                return await client.SubmitAsync(txs);
            }
            catch (SequencerApiException e) when (e.Code == "no_leader" && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>Waits until every running node has applied the same height and signed everything up to it.</summary>
    internal static async Task<ulong> WaitAllSignedAsync(TestCluster test, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = string.Empty;
        while (DateTime.UtcNow < deadline)
        {
            var running = test.Cluster.Nodes.Where(n => n.IsRunning).ToList();
            var reports = new List<(ulong Height, ulong Signed)>();
            foreach (var node in running)
            {
                try
                {
                    var report = await GetSigningAsync(node.Client.BaseUrl);
                    reports.Add((ulong.Parse(report.GetProperty("height").GetString()!, CultureInfo.InvariantCulture),
                        ulong.Parse(report.GetProperty("signedThrough").GetString()!, CultureInfo.InvariantCulture)));
                }
                catch (HttpRequestException)
                {
                    reports.Add((0, 0));
                }
            }

            last = string.Join(", ", running.Zip(reports, (n, r) => $"node{n.Spec.Id}: height {r.Height} signed through {r.Signed}"));
            if (reports.Count > 0 && reports[0].Height > 0 && reports.All(r => r.Height == reports[0].Height && r.Signed == r.Height))
                return reports[0].Height;
            await Task.Delay(50);
        }

        throw new TimeoutException($"not every batch was signed within {timeout.TotalSeconds} s: {last}\n{test.Logs()}");
    }

    private static async Task WaitUntilReportedAsync(Uri node, int signer, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var report = await GetSigningAsync(node);
            if (report.GetProperty("signers").EnumerateArray().Any(s => s.GetProperty("id").GetInt32() == signer && s.GetProperty("badShares").GetInt64() > 0))
                return;
            await Task.Delay(50);
        }

        throw new TimeoutException($"signer {signer} was not reported within {timeout.TotalSeconds} s: {await GetSigningAsync(node)}");
    }

    private static async Task<JsonElement> GetSigningAsync(Uri node)
    {
        using var response = await Http.GetAsync(new Uri(node, "/v1/signing"));
        response.EnsureSuccessStatusCode();
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return document.RootElement.Clone();
    }

    private static async Task AssertErrorAsync(Uri node, string path, int status, string code)
    {
        using var response = await Http.GetAsync(new Uri(node, path));
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(status, (int)response.StatusCode);
        using var document = JsonDocument.Parse(body);
        Assert.Equal(code, document.RootElement.GetProperty("error").GetString());
    }

    private static async Task AssertPostErrorAsync(Uri node, string path, byte[] body, int status, HttpClient? client = null)
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
        using var response = await (client ?? Http).PostAsync(new Uri(node, path), content);
        Assert.Equal(status, (int)response.StatusCode);
    }
}
