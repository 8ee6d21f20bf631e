using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Sequencer.Checker;
using Sequencer.Client;
using Sequencer.Ethereum;
using Sequencer.L1;
using Sequencer.LightClient;
using Sequencer.Threshold;

namespace Sequencer.IntegrationTests;

/// <summary>
/// Key rotation end to end (issue 11): three nodes started from a dealer's key epoch 1, posting to a real L1. An
/// operator rotates twice; each time the nodes run a DKG for the next epoch, the old key signs the hand-over, every
/// node switches, the L1 contract's key is rotated before the first head of the new epoch, and a light client that
/// pinned only key epoch 1 follows the heads and proves txs of every epoch.
/// </summary>
[Collection("clusters")]
public sealed class KeyRotationTests
{
    private const string AdminToken = "key-rotation-tests-admin-token";
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    private static async Task<(HttpStatusCode Status, string Body)> RotateAsync(Uri node, string? body, string? token = AdminToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(node, "/admin/keys/rotate"));
        if (token is not null)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        request.Content = new StringContent(body ?? string.Empty, Encoding.UTF8, "application/json");
        using var response = await Http.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    // Waits until member `voter`'s vote for the next key epoch is applied on the node that took it.
    private static async Task WaitForVotesAsync(TestCluster test, int voter, int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            var (_, body) = await RotateAsync(test.Cluster.Node(voter).Client.BaseUrl, "{}");
            using var document = JsonDocument.Parse(body);
            if (document.RootElement.TryGetProperty("votes", out var votes) && votes.EnumerateObject().Sum(v => v.Value.GetArrayLength()) >= count)
                return;
            Assert.True(DateTime.UtcNow < deadline, $"the vote is not applied on node {voter}: {body}");
            await Task.Delay(100);
        }
    }

    private static async Task<JsonElement> SigningAsync(Uri node)
    {
        using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node, "/v1/signing")));
        return document.RootElement.Clone();
    }

    // Waits until every running node has key epoch `epoch` in force and signs with its share of it.
    private static async Task WaitForEpochAsync(TestCluster test, ulong epoch, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = string.Empty;
        while (true)
        {
            var states = new List<string>();
            foreach (var node in test.Cluster.Nodes.Where(n => n.IsRunning))
            {
                try
                {
                    var signing = await SigningAsync(node.Client.BaseUrl);
                    states.Add($"node{node.Spec.Id}: key epoch {signing.GetProperty("keyEpoch")}, signer {signing.GetProperty("signerEpoch")}, pending {signing.GetProperty("pendingKeyEpoch")}, dkg {signing.GetProperty("dkg")}");
                }
                catch (HttpRequestException e)
                {
                    // A node still starting.
                    states.Add($"node{node.Spec.Id}: {e.Message}");
                }
            }

            if (states.All(s => s.Contains($"key epoch {epoch}, signer {epoch},", StringComparison.Ordinal)))
                return;
            last = string.Join("; ", states);
            Assert.True(DateTime.UtcNow < deadline, $"key epoch {epoch} is not in force and signing everywhere after {timeout.TotalSeconds} s: {last}\n{test.Logs()}");
            await Task.Delay(100);
        }
    }

    private static async Task WaitForContractAsync(InboxReader reader, ulong epoch, ulong height, TestCluster test)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (await reader.KeyEpochAsync() < epoch || await reader.LastHeightAsync() < height)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the contract is at key epoch {await reader.KeyEpochAsync()} and height {await reader.LastHeightAsync()}, not {epoch} and {height}\n{test.Logs()}");
            await Task.Delay(200);
        }
    }

    // This project's source directory: the first parent of the test binaries that holds its project file.
    private static string SourceDirectory()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Sequencer.IntegrationTests.csproj")))
            directory = directory.Parent;
        return directory?.FullName ?? throw new DirectoryNotFoundException("the integration tests' source directory is not above " + AppContext.BaseDirectory);
    }

    private static async Task<(int Code, string Output)> PythonAsync(params string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = System.Diagnostics.Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var output = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var errors = process.StandardError.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output + await errors);
    }

    [Fact]
    public async Task TwoRotations_EveryNodeSwitches_TheContractFollows_AndALightClientPinnedToEpochOneProvesEveryEpoch()
    {
        var (anvil, inbox, test) = await L1PosterTests.StartAsync("rotation", ["--admin-token", AdminToken, "--limit", "minKeyRotationIntervalMs=0"]);
        await using var anvilScope = anvil;
        await using var testScope = test;
        var pinned = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName)).ToGroupKey();
        using var rpc = new EthRpcClient(anvil.Rpc);
        var reader = new InboxReader(rpc, inbox);

        // A light client pinned to key epoch 1 follows every head from the start, in the background.
        var follower = new HeadFollower([.. test.Cluster.Nodes.Select(n => new Uri(n.Spec.Api))], pinned.PublicKey, 1);
        var problems = new System.Collections.Concurrent.ConcurrentQueue<FollowProblem>();
        follower.Problem += problems.Enqueue;
        var followed = new System.Collections.Concurrent.ConcurrentQueue<VerifiedHead>();
        using var stopFollowing = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var following = Task.Run(async () =>
        {
            try
            {
                await foreach (var head in follower.FollowAsync(1, token: stopFollowing.Token))
                    followed.Enqueue(head);
            }
            catch (OperationCanceledException)
            {
            }
        });

        // Bad requests are refused with a reason; a rotation needs the admin token.
        Assert.Equal(HttpStatusCode.Unauthorized, (await RotateAsync(test.Cluster.Node(1).Client.BaseUrl, null, token: null)).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await RotateAsync(test.Cluster.Node(1).Client.BaseUrl, "{\"threshold\": 9}")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await RotateAsync(test.Cluster.Node(1).Client.BaseUrl, "[1]")).Status);

        var txs = new Dictionary<ulong, List<string>> { [1] = await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 20, seed: 71) };
        var height = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await WaitForContractAsync(reader, 1, height, test);

        for (var epoch = 2UL; epoch <= 3; epoch++)
        {
            // The operator asks any node (here a different one each time), under load.
            using var load = new CancellationTokenSource();
            var seed = 1000 * (int)epoch;
            var loader = Task.Run(async () =>
            {
                while (!load.IsCancellationRequested)
                {
                    try
                    {
                        await SigningTests.SubmitAsync(test.Cluster.Node(3).Client, 5, seed: seed++);
                    }
                    catch (Exception e) when (e is HttpRequestException or SequencerApiException or TaskCanceledException)
                    {
                    }

                    await Task.Delay(50);
                }
            });
            // A rotation needs t = 2 members' votes: one member's vote alone starts no key generation.
            var ask = epoch == 2 ? null : "{\"threshold\": 2}";
            var (status, body) = await RotateAsync(test.Cluster.Node((int)epoch).Client.BaseUrl, ask);
            Assert.True(status == HttpStatusCode.Accepted, body);
            Assert.Contains($"\"nextEpoch\":\"{epoch}\"", body, StringComparison.Ordinal);
            Assert.Contains("\"votesNeeded\":2", body, StringComparison.Ordinal);
            await WaitForVotesAsync(test, (int)epoch, 1);
            await Task.Delay(500);
            Assert.Equal(JsonValueKind.Null, (await SigningAsync(test.Cluster.Node(1).Client.BaseUrl)).GetProperty("dkg").ValueKind);
            Assert.Equal(HttpStatusCode.Accepted, (await RotateAsync(test.Cluster.Node((int)epoch).Client.BaseUrl, ask)).Status);
            (status, body) = await RotateAsync(test.Cluster.Node(1).Client.BaseUrl, ask);
            Assert.True(status == HttpStatusCode.Accepted, body);
            await WaitForEpochAsync(test, epoch, TimeSpan.FromSeconds(60));
            await load.CancelAsync();
            await loader;

            txs[epoch] = await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 20, seed: 71 + (int)epoch);
            height = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
            var newest = await test.Cluster.Node(1).Client.GetCommitmentAsync(height);
            Assert.Equal(epoch.ToString(CultureInfo.InvariantCulture), newest!.Head.KeyEpoch);

            // The contract rotated its key (the hand-over signed by the old key) and took the new epoch's heads.
            await WaitForContractAsync(reader, epoch, height, test);
            Assert.Equal(newest.Head.Header.ToHeader().KeyEpoch, await reader.KeyEpochAsync());
        }

        // Every node serves the same key history, each rotation proof verifying under the key before it (the light
        // client's own check, from the pinned key alone), and the heads verify under their epochs' keys (INV-SIGVALID,
        // INV-ONESIG, INV-HEADS and INV-NONCE with the checker's own Schnorr code).
        var chainId = (await test.Cluster.Node(1).Client.GetCommitmentAsync(1))!.Header.ToHeader().ChainId;
        var histories = new List<string>();
        foreach (var (_, client) in test.Clients)
        {
            var keys = await client.GetKeysAsync();
            Assert.Equal(["1", "2", "3"], keys.Select(k => k.Epoch));
            Assert.Null(keys[0].Rotation);
            var chain = new KeyChain(pinned.PublicKey, 1);
            Assert.Null(chain.Extend(chainId, keys));
            Assert.Equal(3UL, chain.NewestEpoch);
            histories.Add(string.Join(",", keys.Select(k => k.GroupKey + k.Rotation?.Signature.R)));
        }

        Assert.Single(histories.Distinct());
        var finalKeys = await test.Cluster.Node(1).Client.GetKeysAsync();
        var groupKeys = finalKeys.ToDictionary(k => ulong.Parse(k.Epoch, CultureInfo.InvariantCulture), k => GroupKeyFile.HexBytes(k.GroupKey));
        var chains = await test.ReadChainsAsync();
        var signing = await SigningChecker.ReadAsync(test.Clients, [], CancellationToken.None);
        var results = SigningChecker.Check(signing, chains, groupKeys);
        Assert.True(results.All(r => r.Passed), string.Join("\n", results.Where(r => !r.Passed).Select(r => $"{r.Name}: {r.Detail}")));
        Assert.Equal(["INV-SIGVALID", "INV-ONESIG", "INV-HEADS", "INV-NONCE"], results.Select(r => r.Name));

        // The light client verifies a tx of each epoch to finalized from every node, pinned to key epoch 1 only.
        var l1 = new Sequencer.LightClient.L1View(rpc, inbox, FinalityDepth: 2);
        foreach (var (epoch, hashes) in txs)
        {
            foreach (var (nodeId, client) in test.Clients)
            {
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
                while (true)
                {
                    var bundle = await client.GetProofAsync(hashes[^1]);
                    var verdict = await TxVerifier.VerifyAsync(hashes[^1], bundle!, new KeyChain(pinned.PublicKey, 1), l1, await client.GetKeysAsync());
                    Assert.Null(verdict.Failed);
                    if (verdict.Proven == FinalityLevel.Finalized)
                    {
                        Assert.Equal(epoch.ToString(CultureInfo.InvariantCulture), bundle!.Head!.KeyEpoch);
                        if (epoch > 1)
                            Assert.Contains(verdict.Checks, c => c.Name == "key-rotation" && c.Passed);
                        break;
                    }

                    Assert.True(DateTime.UtcNow < deadline, $"node {nodeId}: tx of epoch {epoch} proven only {verdict.Proven}");
                    await Task.Delay(200);
                }
            }
        }

        // The Python light client (standard library only, its own keccak and FROST) follows the same hand-overs offline.
        var script = Path.GetFullPath(Path.Combine(SourceDirectory(), "..", "python", "verify_bundle.py"));
        var scratch = Directory.CreateTempSubdirectory("rotation-python-");
        try
        {
            var bundleFile = Path.Combine(scratch.FullName, "bundle.json");
            var keysFile = Path.Combine(scratch.FullName, "keys.json");
            var forgedFile = Path.Combine(scratch.FullName, "forged.json");
            using (var response = await Http.GetAsync(new Uri(test.Cluster.Node(2).Client.BaseUrl, $"/v1/proofs/{txs[3][^1]}")))
                await File.WriteAllTextAsync(bundleFile, await response.Content.ReadAsStringAsync());
            var keysJson = await Http.GetStringAsync(new Uri(test.Cluster.Node(2).Client.BaseUrl, "/v1/keys"));
            await File.WriteAllTextAsync(keysFile, keysJson);
            var zOfEpoch2 = finalKeys[1].Rotation!.Signature.Z;
            await File.WriteAllTextAsync(forgedFile, keysJson.Replace(zOfEpoch2, "0x" + new string('1', 64), StringComparison.Ordinal));
            var pinnedHex = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(pinned.PublicKey));
            var (code, output) = await PythonAsync(script, "--bundle", bundleFile, "--keys", keysFile, "--tx", txs[3][^1], "--group-key", pinnedHex);
            Assert.True(code == 0 && output.Contains("ok   key-rotation", StringComparison.Ordinal) && output.Contains("ok   head-signature", StringComparison.Ordinal), output);
            (code, output) = await PythonAsync(script, "--bundle", bundleFile, "--keys", forgedFile, "--tx", txs[3][^1], "--group-key", pinnedHex);
            Assert.True(code == 1 && output.Contains("FAIL key-rotation", StringComparison.Ordinal), output);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }

        // A node that shows the light client a key epoch nobody handed over to is caught by name.
        var forgedKeys = finalKeys.Select(k => k.Epoch == "2" ? k with { GroupKey = finalKeys[2].GroupKey } : k).ToList();
        var lie = await TxVerifier.VerifyAsync(txs[3][^1], (await test.Cluster.Node(1).Client.GetProofAsync(txs[3][^1]))!, new KeyChain(pinned.PublicKey, 1), l1, forgedKeys);
        Assert.Equal("key-rotation", lie.Failed?.Name);

        // The follower went through both rotations without a complaint, and key epochs only went up.
        var through = height;
        var waitFollow = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while ((followed.LastOrDefault()?.Height ?? 0) < through)
        {
            Assert.True(DateTime.UtcNow < waitFollow, $"the follower is at head {followed.LastOrDefault()?.Height} of {through}; problems: {string.Join("; ", problems)}");
            await Task.Delay(100);
        }

        await stopFollowing.CancelAsync();
        await following;
        var heads = followed.ToList();
        Assert.True(problems.IsEmpty, string.Join("\n", problems));
        Assert.Equal([1UL, 2UL, 3UL], heads.Select(h => h.KeyEpoch).Distinct());
        Assert.Equal(heads.Select(h => h.KeyEpoch).Order(), heads.Select(h => h.KeyEpoch));
        Assert.Equal(3UL, follower.Keys.NewestEpoch);

        // A restarted node signs with its epoch 3 share from its data directory; the DKG shares of epoch 2 are erased.
        await test.Cluster.Node(3).KillAsync();
        test.Cluster.Node(3).Start();
        await WaitForEpochAsync(test, 3, TimeSpan.FromSeconds(60));
        foreach (var node in test.Cluster.Nodes)
        {
            Assert.True(File.Exists(Path.Combine(node.Spec.DataDir, "keys", "epoch-3", KeyFiles.ShareFileName(node.Spec.Id))));
            Assert.False(File.Exists(Path.Combine(node.Spec.DataDir, "keys", "epoch-2", KeyFiles.ShareFileName(node.Spec.Id))));
        }

        await SigningTests.SubmitAsync(test.Cluster.Node(3).Client, 10, seed: 99);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
    }
    [Fact]
    public async Task ARotation_WaitsForTheMinimumInterval_HoweverAMemberAsksForIt()
    {
        // The default interval (10 minutes): a key epoch that came into force a moment ago is not rotated yet.
        await using var test = await TestCluster.StartAsync("rotation-early", signingThreshold: 2, extraArguments: ["--admin-token", AdminToken]);
        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 3, seed: 71);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        // Through the operator's route on a member: refused with the reason.
        var (status, body) = await RotateAsync(test.Cluster.Node(2).Client.BaseUrl, null);
        Assert.True(status == HttpStatusCode.Conflict, $"{(int)status}: {body}");
        Assert.Contains("rotation_refused", body, StringComparison.Ordinal);
        Assert.Contains("a rotation starts at most every 600 s", body, StringComparison.Ordinal);

        // A member that posts a DkgStart to the leader's intake itself (around its own checks) is refused by the leader.
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var member = leader == 1 ? 2 : 1;
        using var client = test.MemberClient(member);
        var start = new Sequencer.Core.Encoding.DkgStartCommand { Epoch = 2, Attempt = 1, Threshold = 2, Members = [1, 2, 3] };
        using var content = new ByteArrayContent(Sequencer.Core.Encoding.LogCommandCodec.Encode(start));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
        using var answer = await client.PostAsync(new Uri(test.Internal(leader), "/internal/v1/dkg"), content);
        var text = await answer.Content.ReadAsStringAsync();
        Assert.True(answer.StatusCode == HttpStatusCode.Conflict, $"{(int)answer.StatusCode}: {text}");
        Assert.Contains("dkg_rejected", text, StringComparison.Ordinal);
        Assert.Contains("needs the votes of 2 members", text, StringComparison.Ordinal);
        var signing = await SigningAsync(test.Cluster.Node(1).Client.BaseUrl);
        Assert.Equal(JsonValueKind.Null, signing.GetProperty("dkg").ValueKind);
    }

    [Fact]
    public async Task APendingKeyEpoch_SurvivesARestartOfEveryNode_AndItsHandoverCompletesAfterIt()
    {
        // Dealer keys for epoch 1, a DKG among the nodes for epoch 2; no L1.
        await using var test = await TestCluster.StartAsync("rotation-pending", signingThreshold: 2, extraArguments: ["--admin-token", AdminToken, "--limit", "minKeyRotationIntervalMs=0"]);
        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 10, seed: 81);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        // Two of the three signers stay silent: with t = 2 the hand-over (like every head) cannot be signed.
        foreach (var id in new[] { 2, 3 })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(test.Cluster.Node(id).Client.BaseUrl, "/admin/signer-fault"));
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);
            request.Content = new StringContent("{\"fault\":\"silent\"}", Encoding.UTF8, "application/json");
            using var response = await Http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        foreach (var voter in new[] { 1, 2 })
        {
            var (status, body) = await RotateAsync(test.Cluster.Node(voter).Client.BaseUrl, null);
            Assert.True(status == HttpStatusCode.Accepted, body);
        }

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var pending = true;
            foreach (var node in test.Cluster.Nodes)
                pending &= (await SigningAsync(node.Client.BaseUrl)).GetProperty("pendingKeyEpoch").GetString() == "2";
            if (pending)
                break;
            Assert.True(DateTime.UtcNow < deadline, $"key epoch 2 is not pending everywhere\n{test.Logs()}");
            await Task.Delay(100);
        }

        // A second rotation waits for this one; the key in force is still epoch 1, and a hand-over session is tried.
        Assert.Equal(HttpStatusCode.Accepted, (await RotateAsync(test.Cluster.Node(2).Client.BaseUrl, null)).Status);
        Assert.Equal("1", (await SigningAsync(test.Cluster.Node(3).Client.BaseUrl)).GetProperty("keyEpoch").GetString());
        Assert.Single(await test.Cluster.Node(1).Client.GetKeysAsync());

        // Every node restarts (the faults are gone with the processes): the pending epoch is read back from each store,
        // and the new leader gets the hand-over signed.
        foreach (var node in test.Cluster.Nodes)
            await node.KillAsync();
        test.Cluster.StartAll();
        await WaitForEpochAsync(test, 2, TimeSpan.FromSeconds(60));
        foreach (var (_, client) in test.Clients)
        {
            var keys = await client.GetKeysAsync();
            Assert.Equal(["1", "2"], keys.Select(k => k.Epoch));
            Assert.NotNull(keys[1].Rotation);
        }

        await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 10, seed: 82);
        var height = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        Assert.Equal("2", (await test.Cluster.Node(3).Client.GetCommitmentAsync(height))!.Head.KeyEpoch);
    }
}
