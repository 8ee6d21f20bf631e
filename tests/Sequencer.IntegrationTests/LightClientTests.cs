using Sequencer.Client;
using Sequencer.Client.Local;
using Sequencer.Ethereum;
using Sequencer.LightClient;
using Sequencer.Threshold;

namespace Sequencer.IntegrationTests;

/// <summary>
/// A light client proves a tx's finality from any node's proof bundle with only the pinned group key and its own L1
/// reads, and a node that lies in any part of the bundle is caught with the name of the check that failed.
/// </summary>
[Collection("clusters")]
public sealed class LightClientTests
{
    [Fact]
    public async Task VerifyTx_ProvesFinalizedFromAnyNode_AndEveryKindOfLieIsCaughtByName()
    {
        var (anvil, inbox, test) = await L1PosterTests.StartAsync("light");
        await using var _ = anvil;
        await using var __ = test;
        using var rpc = new EthRpcClient(anvil.Rpc);
        var group = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName)).ToGroupKey();
        var l1 = new L1View(rpc, inbox, FinalityDepth: 2);

        var hashes = await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 30, seed: 51);
        var signed = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await L1PosterTests.WaitPostedAsync(test, signed, finalized: true, TimeSpan.FromSeconds(40));

        // From every node, the tx is proven finalized: the node's claim and the proof agree.
        var tx = hashes[3];
        ProofBundleResponse? bundle = null;
        foreach (var (_, client) in test.Clients)
        {
            bundle = await client.GetProofAsync(tx);
            Assert.NotNull(bundle);
            var verdict = await TxVerifier.VerifyAsync(tx, bundle, group.PublicKey, 1, l1);
            Assert.True(verdict.Failed is null, string.Join("\n", verdict.Checks));
            Assert.Equal(FinalityLevel.Finalized, verdict.Proven);
            Assert.Equal("finalized", verdict.Claimed);
        }

        // Without an L1 of its own the client proves only signed, however much the node claims.
        var unpinned = await TxVerifier.VerifyAsync(tx, bundle!, group.PublicKey, 1, null);
        Assert.Equal(FinalityLevel.Signed, unpinned.Proven);
        Assert.True(unpinned.Overclaimed);

        // Each lie, and the check that names it.
        static string Flip(string hex) => hex[..^1] + (hex[^1] == '0' ? '1' : '0');
        var head = bundle!.Head!;
        var post = bundle.L1!;
        var otherKey = TrustedDealer.Generate(2, 3).Group;
        var lies = new (string Lie, ProofBundleResponse Bundle, string Check)[]
        {
            ("a wrong tx proof", bundle with { Tx = bundle.Tx with { Proof = bundle.Tx.Proof.Count == 0 ? [Flip(bundle.Header.TxRoot)] : [Flip(bundle.Tx.Proof[0]), .. bundle.Tx.Proof.Skip(1)] } }, "tx-proof"),
            ("a forged header (its commitment kept)", bundle with { Header = bundle.Header with { TimestampMs = bundle.Header.TimestampMs + 1 } }, "header-commitment"),
            ("a forged header with its own commitment", Forged(bundle), "history-proof"),
            ("a wrong history proof", bundle with { HistoryProof = bundle.HistoryProof.Count == 0 ? [Flip(head.Commitment)] : [Flip(bundle.HistoryProof[0]), .. bundle.HistoryProof.Skip(1)] }, "history-proof"),
            ("a wrong signature", bundle with { Head = head with { Signature = head.Signature with { Z = Flip(head.Signature.Z) } } }, "head-signature"),
            ("a forged head (its commitment kept)", bundle with { Head = head with { Header = head.Header with { Term = "99" } } }, "head-commitment"),
            ("a posted head that is not the one in the contract", bundle with { L1 = post with { BlockNumber = "1" } }, "l1-event"),
            ("a wrong L1 history proof", bundle with { L1 = post with { HistoryProof = post.HistoryProof.Count == 0 ? [Flip(post.Head.Commitment)] : [Flip(post.HistoryProof[0]), .. post.HistoryProof.Skip(1)] } }, "l1-history-proof"),
        };
        foreach (var (lie, lying, check) in lies)
        {
            var verdict = await TxVerifier.VerifyAsync(tx, lying, group.PublicKey, 1, l1);
            Assert.True(verdict.Failed?.Name == check, $"{lie}: expected {check} to fail, got {verdict.Failed?.Name ?? "no failure"}\n{string.Join("\n", verdict.Checks)}");
        }

        // A head chain signed by another key (a fork or a stale cluster) does not verify under the pinned key.
        var foreign = await TxVerifier.VerifyAsync(tx, bundle, otherKey.PublicKey, 1, l1);
        Assert.Equal("head-signature", foreign.Failed?.Name);
        Assert.Equal(FinalityLevel.Ordered, foreign.Proven);
    }

    [Fact]
    public async Task Follow_VerifiesEveryHead_ThroughAKillOfTheNodeItReads_AndSkipsALyingNode()
    {
        await using var test = await TestCluster.StartAsync("follow", signingThreshold: 2);
        var group = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName)).ToGroupKey();
        await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 5, seed: 61);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        // A lying node: a stream whose first head carries a wrong signature (the real head 1 otherwise).
        var real = (await test.Cluster.Node(2).Client.GetHeadsAsync(1, 1)).Heads[0];
        var lie = new StreamedHeadDto(real.Header, real.Commitment, real.Signature with { Z = real.Signature.Z[..^1] + (real.Signature.Z[^1] == '0' ? '1' : '0') },
            real.Signers, real.KeyEpoch, "0", []);
        using var liar = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        liar.Start();
        var liarTask = Task.Run(async () =>
        {
            using var socket = await liar.AcceptSocketAsync();
            await using var stream = new System.Net.Sockets.NetworkStream(socket);
            var buffer = new byte[4096];
            await stream.ReadAtLeastAsync(buffer, 1, throwOnEndOfStream: false);
            var json = System.Text.Json.JsonSerializer.Serialize(lie, ApiJsonContext.Default.StreamedHeadDto);
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nevent: head\ndata: {json}\n\n"));
            await stream.FlushAsync();
            await Task.Delay(2000);
        });
        var liarUri = new Uri($"http://127.0.0.1:{((System.Net.IPEndPoint)liar.LocalEndpoint).Port}");

        var follower = new HeadFollower([liarUri, new Uri(test.Cluster.Node(1).Spec.Api), new Uri(test.Cluster.Node(2).Spec.Api), new Uri(test.Cluster.Node(3).Spec.Api)], group.PublicKey, 1);
        var problems = new System.Collections.Concurrent.ConcurrentQueue<FollowProblem>();
        follower.Problem += problems.Enqueue;

        // Steady load while following; the node being read is killed once it has served a few heads.
        using var load = new CancellationTokenSource();
        var loader = Task.Run(async () =>
        {
            var seed = 100;
            while (!load.IsCancellationRequested)
            {
                try
                {
                    await SigningTests.SubmitAsync(test.Cluster.Node(3).Client, 3, seed: seed++);
                }
                catch (Exception e) when (e is HttpRequestException or SequencerApiException or TaskCanceledException)
                {
                    // A leader change.
                }

                await Task.Delay(20);
            }
        });

        var heads = new List<VerifiedHead>();
        int? killed = null;
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await foreach (var head in follower.FollowAsync(1, token: deadline.Token))
        {
            heads.Add(head);
            if (killed is null && heads.Count >= 5)
            {
                killed = test.Cluster.Nodes.First(n => new Uri(n.Spec.Api).Port == head.Node.Port).Spec.Id;
                await test.Cluster.Node(killed.Value).KillAsync();
            }

            if (killed is not null && heads.Count(h => new Uri(test.Cluster.Node(killed.Value).Spec.Api).Port != h.Node.Port) >= 10)
                break;
        }

        await load.CancelAsync();
        await loader;
        await liarTask;
        Assert.NotNull(killed);
        Assert.Contains(problems, p => p.Node == liarUri && p.Check == "head-signature");
        Assert.DoesNotContain(heads, h => h.Node == liarUri);
        Assert.Equal(heads.Select(h => h.Height).Order(), heads.Select(h => h.Height));
        Assert.Equal(heads.Count, heads.Select(h => h.Height).Distinct().Count());
        Assert.Equal(1UL, heads[0].Height);
    }

    // A liar that rewrites the header (a different tx root) and recomputes the commitment to match: the tx proof and
    // the commitment then hold, but the header is in no signed head's history.
    private static ProofBundleResponse Forged(ProofBundleResponse bundle)
    {
        var header = bundle.Header with { TimestampMs = bundle.Header.TimestampMs + 1 };
        return bundle with { Header = header, Commitment = header.ToHeader().Commitment.ToString() };
    }
}
