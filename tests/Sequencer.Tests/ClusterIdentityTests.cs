using System.Security.Cryptography.X509Certificates;
using Sequencer.Core.Security;
using Sequencer.Node.Security;

namespace Sequencer.Tests;

/// <summary>Which certificates a node accepts as a member's (issue 9: identities and mutual TLS).</summary>
public sealed class ClusterIdentityTests : IDisposable
{
    private readonly string directory = Path.Combine(Path.GetTempPath(), "sequencer-identity-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public void OnlyCurrentlyValidPinnedCertificatesOfTheConsortiumsCa_AreMembers()
    {
        var now = DateTimeOffset.UtcNow;
        // Members 1 and 2 valid for a year (the CA made 20 days ago); member 3's certificate expired 10 days ago.
        ConsortiumCertificates.Create(directory, [1, 2], ["127.0.0.1"], TimeSpan.FromDays(385), now: now.AddDays(-20));
        ConsortiumCertificates.Create(directory, [3], ["127.0.0.1"], TimeSpan.FromDays(5), now: now.AddDays(-15));
        var foreign = Path.Combine(directory, "foreign");
        ConsortiumCertificates.Create(foreign, [1, 2, 3], ["127.0.0.1"], TimeSpan.FromDays(30));

        // The identity key is owner-only; the CA key stays where it was made.
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(directory, ConsortiumCertificates.KeyFile(1))));

        using var identity = ClusterIdentity.Load(directory, 1, [1, 2, 3]);
        var warning = Assert.Single(identity.Warnings);
        Assert.Contains("member 3", warning, StringComparison.Ordinal);
        var refusals = new List<string>();
        identity.Refused = refusals.Add;

        Assert.Equal(2, identity.Identify(Certificate(directory, 2), "test"));
        Assert.Equal(1, identity.Identify(Certificate(directory, 1), "test"));
        Assert.Null(identity.Identify(Certificate(directory, 3), "test"));
        Assert.Contains(refusals, r => r.Contains("expired", StringComparison.Ordinal));
        Assert.Null(identity.Identify(Certificate(foreign, 2), "test"));
        Assert.Contains(refusals, r => r.Contains("not issued by the consortium's CA", StringComparison.Ordinal));
        Assert.Null(identity.Identify(null, "test"));
        Assert.Contains(refusals, r => r.Contains("no client certificate", StringComparison.Ordinal));

        // A certificate from the right CA that no member is pinned to (a fourth one made later) is refused too.
        ConsortiumCertificates.Create(directory, [4], ["127.0.0.1"], TimeSpan.FromDays(30));
        Assert.Null(identity.Identify(Certificate(directory, 4), "test"));
        Assert.Contains(refusals, r => r.Contains("not pinned", StringComparison.Ordinal));

        // A node whose own certificate expired does not start; nor does one pinned to another CA's certificate.
        var expired = Assert.Throws<InvalidDataException>(() => ClusterIdentity.Load(directory, 3, [1, 2, 3]));
        Assert.Contains("expired", expired.Message, StringComparison.Ordinal);
        File.Copy(Path.Combine(foreign, ConsortiumCertificates.CertificateFile(2)), Path.Combine(directory, ConsortiumCertificates.CertificateFile(2)), overwrite: true);
        var mixed = Assert.Throws<InvalidDataException>(() => ClusterIdentity.Load(directory, 1, [1, 2, 3]));
        Assert.Contains("member 2", mixed.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ARequestToAMember_AcceptsOnlyThatMembersCertificate()
    {
        // Member 3 answers on its address; a client calling member 2 there refuses it (one member cannot stand in
        // for another), and the client calling member 3 gets its answer.
        var (identity, refusals, listener) = ThreeMembersAndAListener();
        using var owned = identity;
        using var listening = listener;
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var serving = ServeAsMemberAsync(3, listener, async tls =>
        {
            await tls.ReadAtLeastAsync(new byte[4096], 4, throwOnEndOfStream: false, stop.Token);
            await tls.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"u8.ToArray(), stop.Token);
        }, stop.Token);

        using var clients = new MemberHttpClients(identity, () => new SocketsHttpHandler { UseProxy = false });
        var target = new Uri($"https://127.0.0.1:{port}/internal/v1/x");
        await Assert.ThrowsAsync<HttpRequestException>(() => clients.For(2).GetStringAsync(target, stop.Token));
        Assert.Contains(refusals, r => r.Contains("member 2's internal listener", StringComparison.Ordinal) && r.Contains("member 3's certificate answered", StringComparison.Ordinal));
        Assert.Equal("ok", await clients.For(3).GetStringAsync(target, stop.Token));
        Assert.Same(clients.For(3), clients.For(3));
        await stop.CancelAsync();
        listener.Stop();
        await EndedAsync(serving);
    }

    [Fact]
    public async Task ARaftConnectionToAMembersAddress_AcceptsOnlyThatMembersCertificate()
    {
        var (identity, refusals, listener) = ThreeMembersAndAListener();
        using var owned = identity;
        using var listening = listener;
        var address = (System.Net.IPEndPoint)listener.LocalEndpoint;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var serving = ServeAsMemberAsync(3, listener, tls => tls.WriteAsync(new byte[] { 1 }, stop.Token).AsTask(), stop.Token);

        // As DotNext connects: a dual-mode socket (the address reads as IPv4-mapped), a NetworkStream, TLS over it.
        async Task<bool> ConnectAsync(Func<System.Net.IPEndPoint, int?> memberAt)
        {
            using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await socket.ConnectAsync(address, stop.Token);
            await using var tls = new System.Net.Security.SslStream(new System.Net.Sockets.NetworkStream(socket, ownsSocket: false));
            try
            {
                await tls.AuthenticateAsClientAsync(identity.RaftSslOptions(memberAt).ClientOptions, stop.Token);
                return await tls.ReadAsync(new byte[1], stop.Token) == 1;
            }
            catch (System.Security.Authentication.AuthenticationException)
            {
                return false;
            }
        }

        Assert.False(await ConnectAsync(at => at.Equals(address) ? 2 : null));
        Assert.Contains(refusals, r => r.Contains("Raft connection to member 2", StringComparison.Ordinal) && r.Contains("member 3's certificate answered", StringComparison.Ordinal));
        Assert.False(await ConnectAsync(_ => null));
        Assert.Contains(refusals, r => r.Contains($"it goes to {address}, no member's Raft address", StringComparison.Ordinal));
        Assert.True(await ConnectAsync(at => at.Equals(address) ? 3 : null));
        await stop.CancelAsync();
        listener.Stop();
        await EndedAsync(serving);
    }

    /// <summary>
    /// A Raft node never calls itself: its own certificate presented to its Raft port is its key in someone else's hands
    /// (and a connection made with it would outlive the certificate's revocation), and it never calls its own address.
    /// Another member's certificate is accepted on the same port.
    /// </summary>
    [Fact]
    public async Task TheRaftPort_RefusesThisNodesOwnCertificate_AndTheNodeNeverCallsItsOwnAddress()
    {
        var (identity, refusals, listener) = ThreeMembersAndAListener();
        using var owned = identity;
        using var listening = listener;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var port = (System.Net.IPEndPoint)listener.LocalEndpoint;
        var serving = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var accepted = await listener.AcceptTcpClientAsync(stop.Token);
                await using var tls = new System.Net.Security.SslStream(accepted.GetStream());
                try
                {
                    await tls.AuthenticateAsServerAsync(identity.RaftSslOptions(_ => null).ServerOptions, stop.Token);
                    await tls.WriteAsync(new byte[] { 1 }, stop.Token);
                }
                catch (Exception e) when (e is System.Security.Authentication.AuthenticationException or IOException)
                {
                }
            }
        });

        async Task<bool> ConnectAsAsync(int member)
        {
            using var certificate = X509Certificate2.CreateFromPemFile(Path.Combine(directory, ConsortiumCertificates.CertificateFile(member)), Path.Combine(directory, ConsortiumCertificates.KeyFile(member)));
            using var client = new System.Net.Sockets.TcpClient();
            await client.ConnectAsync(port, stop.Token);
            await using var tls = new System.Net.Security.SslStream(client.GetStream());
            try
            {
                await tls.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
                {
                    TargetHost = ConsortiumCertificates.CommonName(1),
                    ClientCertificates = [certificate],
                    RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null,
                }, stop.Token);
                return await tls.ReadAsync(new byte[1], stop.Token) == 1;
            }
            catch (Exception e) when (e is System.Security.Authentication.AuthenticationException or IOException)
            {
                return false;
            }
        }

        Assert.False(await ConnectAsAsync(1));
        Assert.Contains(refusals, r => r.Contains("the Raft port", StringComparison.Ordinal) && r.Contains("this node's own certificate", StringComparison.Ordinal));
        Assert.True(await ConnectAsAsync(2));

        // The client side: a connection to the address configured for this node itself is refused at the handshake.
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(port, stop.Token);
        await using (var self = new System.Net.Security.SslStream(new System.Net.Sockets.NetworkStream(socket, ownsSocket: false)))
        {
            await Assert.ThrowsAnyAsync<Exception>(async () =>
                await self.AuthenticateAsClientAsync(identity.RaftSslOptions(at => at.Port == port.Port ? 1 : null).ClientOptions, stop.Token));
        }

        Assert.Contains(refusals, r => r.Contains("this node's own Raft address", StringComparison.Ordinal));
        await stop.CancelAsync();
        listener.Stop();
        await EndedAsync(serving);
    }

    /// <summary>
    /// A Raft connection's certificate is checked when it is made, and the transport keeps the connection for as long as
    /// it works: once a member is revoked, its open connections are closed (its new ones are refused at the handshake),
    /// and another member's stay open.
    /// </summary>
    [Fact]
    public async Task OpenRaftConnections_WithARevokedMember_AreClosed_AndOnlyThose()
    {
        var (first, _, listener3) = ThreeMembersAndAListener();
        first.Dispose();
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        using var identity = ClusterIdentity.Load(directory, 1, [1, 2, 3], time);
        using var listening3 = listener3;
        var listener2 = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener2.Start();
        using var listening2 = listener2;
        var at3 = (System.Net.IPEndPoint)listener3.LocalEndpoint;
        var at2 = (System.Net.IPEndPoint)listener2.LocalEndpoint;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        // Each member writes one byte, then holds the connection until the other side closes it.
        async Task HoldAsync(System.Net.Security.SslStream tls)
        {
            await tls.WriteAsync(new byte[] { 1 }, stop.Token);
            _ = await tls.ReadAtLeastAsync(new byte[1], 1, throwOnEndOfStream: false, stop.Token);
        }

        var serving3 = ServeAsMemberAsync(3, listener3, HoldAsync, stop.Token);
        var serving2 = ServeAsMemberAsync(2, listener2, HoldAsync, stop.Token);
        int? MemberAt(System.Net.IPEndPoint at) => at.Equals(at3) ? 3 : at.Equals(at2) ? 2 : null;
        async Task<(System.Net.Sockets.Socket Socket, System.Net.Security.SslStream Tls)> ConnectAsync(System.Net.IPEndPoint to)
        {
            var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await socket.ConnectAsync(to, stop.Token);
            var tls = new System.Net.Security.SslStream(new System.Net.Sockets.NetworkStream(socket, ownsSocket: true));
            await tls.AuthenticateAsClientAsync(identity.RaftSslOptions(MemberAt).ClientOptions, stop.Token);
            Assert.Equal(1, await tls.ReadAsync(new byte[1], stop.Token));
            return (socket, tls);
        }

        var (_, tls3) = await ConnectAsync(at3);
        var (socket2, tls2) = await ConnectAsync(at2);
        await using var closing3 = tls3;
        await using var closing2 = tls2;

        // And member 3 connects to this node's Raft port: the server side is tracked too.
        var own = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        own.Start();
        using var listeningOwn = own;
        var accepting = Task.Run(async () =>
        {
            var accepted = await own.AcceptTcpClientAsync(stop.Token);
            var tls = new System.Net.Security.SslStream(accepted.GetStream());
            await tls.AuthenticateAsServerAsync(identity.RaftSslOptions(MemberAt).ServerOptions, stop.Token);
            await tls.WriteAsync(new byte[] { 1 }, stop.Token);
            return (accepted, tls);
        });
        using var three = X509Certificate2.CreateFromPemFile(Path.Combine(directory, ConsortiumCertificates.CertificateFile(3)), Path.Combine(directory, ConsortiumCertificates.KeyFile(3)));
        using var inbound = new System.Net.Sockets.TcpClient();
        await inbound.ConnectAsync((System.Net.IPEndPoint)own.LocalEndpoint, stop.Token);
        await using var fromThree = new System.Net.Security.SslStream(inbound.GetStream());
        await fromThree.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = ConsortiumCertificates.CommonName(1),
            ClientCertificates = [three],
            RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate is not null,
        }, stop.Token);
        Assert.Equal(1, await fromThree.ReadAsync(new byte[1], stop.Token));
        var (serverSide, serverTls) = await accepting;
        using var ownedServerSide = serverSide;
        await using var ownedServerTls = serverTls;

        Assert.Equal(2, identity.RaftConnectionsWith(3));
        Assert.Equal(1, identity.RaftConnectionsWith(2));
        Assert.Empty(identity.CloseRevokedConnections());

        File.WriteAllText(Path.Combine(directory, ConsortiumCertificates.RevokedFile),
            Certificate(directory, 3).GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256) + "  # member 3\n");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal([3], identity.CloseRevokedConnections());
        Assert.Equal(0, identity.RaftConnectionsWith(3));
        await Assert.ThrowsAnyAsync<Exception>(async () => await tls3.ReadExactlyAsync(new byte[1], stop.Token));
        await Assert.ThrowsAnyAsync<Exception>(async () => await fromThree.ReadExactlyAsync(new byte[1], stop.Token));

        // Member 2's connection is still open and works; nothing more is closed on the next pass.
        Assert.True(socket2.Connected);
        Assert.Equal(1, identity.RaftConnectionsWith(2));
        Assert.Empty(identity.CloseRevokedConnections());
        await tls2.WriteAsync(new byte[] { 2 }, stop.Token);

        await stop.CancelAsync();
        listener3.Stop();
        listener2.Stop();
        await EndedAsync(serving3);
        await EndedAsync(serving2);
    }

    // Waits for a server to end: cancelled while it waits for a connection, or at its loop's next check (both happen).
    private static async Task EndedAsync(Task serving)
    {
        try
        {
            await serving;
        }
        catch (Exception e) when (e is OperationCanceledException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
        }
    }

    // Node 1's identity among members 1..3 (its refusals collected), and a started loopback listener.
    private (ClusterIdentity Identity, System.Collections.Concurrent.ConcurrentQueue<string> Refusals, System.Net.Sockets.TcpListener Listener) ThreeMembersAndAListener()
    {
        ConsortiumCertificates.Create(directory, [1, 2, 3], ["127.0.0.1"], TimeSpan.FromDays(30));
        var identity = ClusterIdentity.Load(directory, 1, [1, 2, 3]);
        var refusals = new System.Collections.Concurrent.ConcurrentQueue<string>();
        identity.Refused = refusals.Enqueue;
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return (identity, refusals, listener);
    }

    // Accepts TLS connections on the listener with member `member`'s certificate (any client certificate) and answers
    // each with `answer`, until the token is cancelled.
    private Task ServeAsMemberAsync(int member, System.Net.Sockets.TcpListener listener, Func<System.Net.Security.SslStream, Task> answer, CancellationToken token)
    {
        var server = X509Certificate2.CreateFromPemFile(Path.Combine(directory, ConsortiumCertificates.CertificateFile(member)), Path.Combine(directory, ConsortiumCertificates.KeyFile(member)));
        return Task.Run(async () =>
        {
            using var owned = server;
            while (!token.IsCancellationRequested)
            {
                using var client = await listener.AcceptTcpClientAsync(token);
                await using var tls = new System.Net.Security.SslStream(client.GetStream());
                try
                {
                    await tls.AuthenticateAsServerAsync(new System.Net.Security.SslServerAuthenticationOptions
                    {
                        ServerCertificate = server,
                        ClientCertificateRequired = true,
                        RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate is not null,
                    }, token);
                    await answer(tls);
                }
                catch (System.Security.Authentication.AuthenticationException)
                {
                }
                catch (IOException)
                {
                }
            }
        }, token);
    }

    /// <summary>
    /// A member's certificate can be revoked without re-pinning (which needs a new certificate for it): the revocation
    /// list in the certificates directory (<c>certs revoke</c> writes it) is read at start and reread within a second of
    /// a change; a listed certificate is refused at once, even one accepted a moment before, and a list that cannot be
    /// parsed stops a starting node but leaves a running one with the list it had.
    /// </summary>
    [Fact]
    public async Task ARevokedCertificate_IsRefused_AtStartAndWithinASecondOfAChange_AndABadEditKeepsTheListInForce()
    {
        ConsortiumCertificates.Create(directory, [1, 2, 3], ["127.0.0.1"], TimeSpan.FromDays(30));
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        using var identity = ClusterIdentity.Load(directory, 1, [1, 2, 3], time);
        Assert.Empty(identity.Warnings);
        var refusals = new List<string>();
        var notices = new List<string>();
        identity.Refused = refusals.Add;
        identity.Noticed = notices.Add;
        Assert.Equal(2, identity.Identify(Certificate(directory, 2), "test"));
        Assert.Equal(3, identity.Identify(Certificate(directory, 3), "test"));

        // `certs revoke --member 2` lists member 2's certificate; the next request within the second still passes (the
        // file is looked at once a second), and the first after it is refused, though the certificate was accepted.
        var list = Path.Combine(directory, ConsortiumCertificates.RevokedFile);
        Assert.Equal(0, Sequencer.Node.Cli.CertsCommand.Create().Parse(["revoke", "--out", directory, "--member", "2"]).Invoke());
        var thumbprint = Certificate(directory, 2).GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256);
        Assert.StartsWith(thumbprint, File.ReadAllText(list), StringComparison.Ordinal);
        Assert.Equal(0, Sequencer.Node.Cli.CertsCommand.Create().Parse(["revoke", "--out", directory, "--member", "2"]).Invoke());
        Assert.Single(File.ReadAllLines(list));
        Assert.Equal(2, identity.Identify(Certificate(directory, 2), "test"));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Null(identity.Identify(Certificate(directory, 2), "test"));
        Assert.Contains(refusals, r => r.Contains("revoked", StringComparison.Ordinal) && r.Contains(thumbprint, StringComparison.Ordinal));
        Assert.False(identity.IsMember(Certificate(directory, 2), 2, "test"));
        Assert.Equal(3, identity.Identify(Certificate(directory, 3), "test"));
        Assert.Equal([2], identity.RevokedMembers);
        Assert.True(identity.IsRevoked(2));
        Assert.False(identity.IsRevoked(3));
        Assert.Contains(notices, n => n.Contains("revoked members: [2]", StringComparison.Ordinal));

        // Nothing is sent to a revoked member (a pooled connection to it was checked only when it was made).
        using (var clients = new MemberHttpClients(identity, () => new System.Net.Http.SocketsHttpHandler()))
        {
            var refused = await Assert.ThrowsAsync<HttpRequestException>(() => clients.For(2).GetAsync(new Uri("https://127.0.0.1:9/internal")));
            Assert.Contains("member 2's certificate is revoked", refused.Message, StringComparison.Ordinal);
        }

        // A bad edit (a line that is no thumbprint) keeps the list in force, says so, and a starting node refuses it.
        File.AppendAllText(list, "not a thumbprint\n");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Null(identity.Identify(Certificate(directory, 2), "test"));
        Assert.Contains(notices, n => n.Contains("cannot be read", StringComparison.Ordinal) && n.Contains("previous list", StringComparison.Ordinal));
        var bad = Assert.Throws<InvalidDataException>(() => ClusterIdentity.Load(directory, 1, [1, 2, 3], time));
        Assert.Contains("line 2", bad.Message, StringComparison.Ordinal);

        // Lifting the revocation (the line removed; comments, colons and case do not matter) lets the member back in.
        File.WriteAllText(list, "# lifted\n" + string.Join(':', thumbprint.ToLowerInvariant().Chunk(2).Select(c => new string(c))) + "  # member 2, with colons, in lower case\n");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Null(identity.Identify(Certificate(directory, 2), "test"));
        File.WriteAllText(list, "# nothing revoked\n");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(2, identity.Identify(Certificate(directory, 2), "test"));
        Assert.Empty(identity.RevokedMembers);

        // A node started with a member revoked warns about it; the revoked member itself does not start.
        File.WriteAllText(list, thumbprint + "\n");
        using var restarted = ClusterIdentity.Load(directory, 1, [1, 2, 3], time);
        Assert.Contains("member 2", Assert.Single(restarted.Warnings), StringComparison.Ordinal);
        Assert.Contains("revoked", Assert.Throws<InvalidDataException>(() => ClusterIdentity.Load(directory, 2, [1, 2, 3], time)).Message, StringComparison.Ordinal);
    }

    private static X509Certificate2 Certificate(string directory, int id)
        => X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(directory, ConsortiumCertificates.CertificateFile(id))));

    public void Dispose()
    {
        if (Directory.Exists(directory))
            Directory.Delete(directory, recursive: true);
    }
}
