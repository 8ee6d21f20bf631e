using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Sockets;
using Sequencer.Client.Local;
using Sequencer.Core.Encoding;
using Sequencer.Core.Security;

namespace Sequencer.IntegrationTests;

/// <summary>
/// Node identities and mutual TLS (issue 9, DESIGN section 5): the Raft port and the internal listener accept members
/// only, each member speaks only in its own name, and plaintext or foreign connections do not disturb the cluster.
/// </summary>
[Collection("clusters")]
public sealed class MutualTlsTests
{
    [Fact]
    public async Task InternalListener_TakesMembersOnly_EachInItsOwnName_AndStrangersDoNotDisturbTheCluster()
    {
        await using var test = await TestCluster.StartAsync("mtls", signingThreshold: 2);
        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 20, seed: 31);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        var leaderId = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var terms = await TermsAsync(test);
        var leader = test.Internal(leaderId);
        var follower = leaderId % 3 + 1;

        // The internal routes are not on the public API.
        using (var plain = new HttpClient { Timeout = TimeSpan.FromSeconds(10) })
        {
            using var response = await plain.PostAsync(new Uri(test.Cluster.Node(leaderId).Client.BaseUrl, "/internal/v1/dkg"), MsgPack([1, 2, 3]));
            Assert.Equal(404, (int)response.StatusCode);

            // The internal listener refuses a client without a certificate, and plaintext.
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.PostAsync(new Uri(leader, "/internal/v1/dkg"), MsgPack([1, 2, 3])));
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetAsync(new UriBuilder(leader) { Scheme = "http" }.Uri));
        }

        // A certificate from another CA, even for a member's id, is refused.
        var foreign = Path.Combine(test.CertificatesDirectory, "..", "foreign-certs");
        ConsortiumCertificates.Create(foreign, [1, 2, 3], ["127.0.0.1"], TimeSpan.FromDays(1), "another consortium");
        using (var stranger = test.MemberClient(follower, foreign))
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => stranger.PostAsync(new Uri(leader, "/internal/v1/dkg"), MsgPack([1, 2, 3])));

        // A member speaks only in its own name: a nonce-commitments entry and a DKG message that name another member
        // are refused before anything else is looked at.
        using (var member = test.MemberClient(follower))
        {
            var other = follower % 3 + 1;
            var commitments = LogCommandCodec.Encode(new NonceCommitmentsCommand
            {
                SignerId = other, KeyEpoch = 1, FirstSequence = 1_000_000, Commitments = [new byte[66]], Proof = new byte[65],
            });
            using (var response = await member.PostAsync(new Uri(leader, "/internal/v1/nonce-commitments"), MsgPack(commitments)))
            {
                Assert.Equal(403, (int)response.StatusCode);
                Assert.Contains("wrong_sender", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            var complaint = LogCommandCodec.Encode(new DkgComplaintCommand { Epoch = 2, Attempt = 1, From = other, Accused = follower });
            using (var response = await member.PostAsync(new Uri(leader, "/internal/v1/dkg"), MsgPack(complaint)))
                Assert.Equal(403, (int)response.StatusCode);

            // Its own name passes the check (and the entry is then judged as usual: no DKG runs, so it is refused).
            var own = LogCommandCodec.Encode(new DkgComplaintCommand { Epoch = 2, Attempt = 1, From = follower, Accused = other });
            using (var response = await member.PostAsync(new Uri(leader, "/internal/v1/dkg"), MsgPack(own)))
                Assert.NotEqual(403, (int)response.StatusCode);

            // Only the leader asks a signer for shares (direct sessions): a member claiming to be the leader is refused,
            // one asking in its own name is not the signer's leader, and junk is a 400. No nonce is spent on any of them.
            var usesBefore = await NonceUseCountAsync(test, other);
            SessionRequestMessage Request(int asker) => new()
            {
                LeaderId = asker,
                Sessions = [new SigningSession { Height = 1, Attempt = 1_000_000, KeyEpoch = 1, Signers = [.. new[] { follower, other }.Order()], Sequences = [1, 1], Direct = true }],
                Commitments = [[new byte[66], new byte[66]]],
            };
            using (var response = await member.PostAsync(new Uri(test.Internal(other), "/internal/v1/sessions"), MsgPack(Request(leaderId).Encode())))
            {
                Assert.Equal(403, (int)response.StatusCode);
                Assert.Contains("wrong_sender", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            using (var response = await member.PostAsync(new Uri(test.Internal(other), "/internal/v1/sessions"), MsgPack(Request(follower).Encode())))
            {
                Assert.Equal(409, (int)response.StatusCode);
                Assert.Contains("not_leader", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            using (var response = await member.PostAsync(new Uri(test.Internal(other), "/internal/v1/sessions"), MsgPack([1, 2, 3])))
                Assert.Equal(400, (int)response.StatusCode);
            Assert.Equal(usesBefore, await NonceUseCountAsync(test, other));
        }

        // Plaintext bytes into every Raft port: refused, and nothing moves.
        foreach (var node in test.Cluster.Nodes)
        {
            var endPoint = System.Net.IPEndPoint.Parse(node.Spec.Raft);
            using var socket = new TcpClient();
            await socket.ConnectAsync(endPoint.Address, endPoint.Port);
            var stream = socket.GetStream();
            var junk = new byte[4096];
            new Random(5).NextBytes(junk);
            try
            {
                await stream.WriteAsync(junk);
                var buffer = new byte[1024];
                using var closed = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                while (await stream.ReadAsync(buffer, closed.Token) > 0)
                {
                }
            }
            catch (IOException)
            {
                // Reset by the node: refused.
            }
        }

        // The cluster orders and signs on, in the same term, and the refusals are logged with the reason.
        await SigningTests.SubmitAsync(test.Cluster.Node(follower).Client, 20, seed: 32);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        Assert.Equal(terms, await TermsAsync(test));
        var leaderLog = await File.ReadAllTextAsync(test.Cluster.Node(leaderId).LogPath);
        Assert.Contains("refused a peer on the internal listener", leaderLog, StringComparison.Ordinal);
        Assert.Contains("not issued by the consortium's CA", leaderLog, StringComparison.Ordinal);
        Assert.Contains("cannot send a message in member", leaderLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ANodeWithACertificateFromAnotherCa_CannotJoinTheRaftGroup()
    {
        await using var test = await TestCluster.StartAsync("mtls-join");
        var submitted = await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 10, seed: 41);
        var height = await test.WaitForConvergenceAsync(TimeSpan.FromSeconds(30));

        // Node 3 comes back with a wiped data directory and the identity of another consortium (every file of it, its
        // CA and its pins included): the members refuse it, and it refuses them.
        await test.Cluster.Node(3).KillAsync();
        Directory.Delete(test.Cluster.Node(3).Spec.DataDir, recursive: true);
        var foreign = Path.Combine(test.CertificatesDirectory, "..", "foreign-certs");
        ConsortiumCertificates.Create(foreign, [1, 2, 3], ["127.0.0.1"], TimeSpan.FromDays(1), "another consortium");
        test.Cluster.Node(3).Wrapper = start =>
        {
            var arguments = start.ArgumentList.ToList();
            var at = arguments.IndexOf("--certs");
            start.ArgumentList[at + 1] = Path.GetFullPath(foreign);
            return start;
        };
        test.Cluster.Node(3).Start();

        var others = test.Cluster.Nodes.Where(n => n.Spec.Id != 3).ToList();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!others.Any(n => File.ReadAllText(n.LogPath).Contains("refused a peer on the Raft port", StringComparison.Ordinal)))
        {
            Assert.True(DateTime.UtcNow < deadline, "no member logged the refused Raft connection\n" + test.Logs());
            await Task.Delay(100);
        }

        // The two members go on ordering; node 3 holds nothing of the log. Node 3 may have led before it was killed:
        // wait until the two agree on a leader (a submit during their election is answered 503 no_leader).
        await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30), among: [1, 2]);
        var more = await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 10, seed: 42);
        Assert.NotNull(await test.Cluster.Node(2).Client.GetTxAsync(more[^1]));
        Assert.True(test.Cluster.Node(3).IsRunning, "node 3 should run (and be refused), not exit");
        var view = await LocalCluster.TryGetClusterAsync(test.Cluster.Node(3));
        Assert.NotNull(view);
        Assert.Equal("0", view.Height);
        Assert.True(height > 0 && submitted.Count > 0);
    }

    /// <summary>
    /// A member's certificate revoked (<c>certs revoke</c> writes the list every node rereads) is refused on every new
    /// connection, and within seconds the others close the Raft connections they hold with it (they were checked when
    /// they were made): without a restart, the revoked member is cut off and the two others order and sign on.
    /// </summary>
    [Fact]
    public async Task ARevokedMember_IsCutOffWithoutARestart_AndTheOthersOrderAndSignOn()
    {
        await using var test = await TestCluster.StartAsync("revoke", signingThreshold: 2);
        await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 10, seed: 51);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        using (var certificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(
            File.ReadAllText(Path.Combine(test.CertificatesDirectory, ConsortiumCertificates.CertificateFile(3)))))
        {
            File.WriteAllText(Path.Combine(test.CertificatesDirectory, ConsortiumCertificates.RevokedFile),
                certificate.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256) + "  # member 3\n");
        }

        // No restart: nodes 1 and 2 close their connections with node 3 within about two seconds of the change (the
        // leader holds one to replicate; a follower may hold none), and elect a leader between them if node 3 led.
        // (A connection that dropped by itself before the loop's pass is refused when it comes back: that line counts too.)
        string[] cut = ["closed the open Raft connections with member(s) [3]", "the certificate is revoked"];
        var cutBy = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!new[] { 1, 2 }.Any(id => cut.Any(line => File.ReadAllText(test.Cluster.Node(id).LogPath).Contains(line, StringComparison.Ordinal))))
        {
            Assert.True(DateTime.UtcNow < cutBy, "no node closed its Raft connections with the revoked member\n" + test.Logs());
            await Task.Delay(100);
        }

        // The leader is the one that must have cut node 3's Raft connections before the next load: the first line may
        // come from the other node (or from the leader's internal listener, refusing a share node 3 posted), and until
        // the leader's loop passes (within a second) its open connection still replicates to node 3.
        string[] raftCut = [cut[0], "refused a peer on the Raft port: the certificate is revoked", "refused a peer on a Raft connection to member 3: the certificate is revoked"];
        while (true)
        {
            var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30), among: [1, 2]);
            var log = File.ReadAllText(test.Cluster.Node(leader).LogPath);
            if (raftCut.Any(line => log.Contains(line, StringComparison.Ordinal)))
                break;
            Assert.True(DateTime.UtcNow < cutBy, $"the leader, node {leader}, did not close its Raft connections with the revoked member\n" + test.Logs());
            await Task.Delay(100);
        }

        var more = await SigningTests.SubmitAsync(test.Cluster.Node(1).Client, 20, seed: 52);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var views = await Task.WhenAll(new[] { 1, 2 }.Select(id => LocalCluster.TryGetClusterAsync(test.Cluster.Node(id))));
            if (views.All(v => v is not null && v.Height == views[0]!.Height && v.SignedThrough == v.Height)
                && await test.Cluster.Node(2).Client.GetTxAsync(more[^1]) is { Level: "signed" or "posted" or "finalized" })
            {
                var cutOff = await LocalCluster.TryGetClusterAsync(test.Cluster.Node(3));
                Assert.True(cutOff is null || ulong.Parse(cutOff.Height, CultureInfo.InvariantCulture) < ulong.Parse(views[0]!.Height, CultureInfo.InvariantCulture),
                    $"the revoked member kept up: height {cutOff?.Height} against {views[0]!.Height}");
                break;
            }

            Assert.True(DateTime.UtcNow < deadline, "nodes 1 and 2 did not order and sign on without node 3\n" + test.Logs());
            await Task.Delay(100);
        }

        Assert.Contains(new[] { 1, 2 }, id => File.ReadAllText(test.Cluster.Node(id).LogPath).Contains("the certificate is revoked", StringComparison.Ordinal));
    }

    private static ByteArrayContent MsgPack(byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
        return content;
    }

    // How many nonce uses a signer has recorded (the chaos checker's INV-NONCE source).
    private static async Task<int> NonceUseCountAsync(TestCluster test, int node)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var total = 0;
        while (true)
        {
            using var document = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync(new Uri(test.Cluster.Node(node).Client.BaseUrl, $"/v1/signing/nonce-uses?skip={total}&limit=10000")));
            var count = document.RootElement.GetProperty("uses").GetArrayLength();
            total += count;
            if (count < 10_000)
                return total;
        }
    }

    private static async Task<string> TermsAsync(TestCluster test)
    {
        var views = await Task.WhenAll(test.Cluster.Nodes.Select(LocalCluster.TryGetClusterAsync));
        return string.Join(",", views.Select(v => v?.Term ?? "down"));
    }
}
