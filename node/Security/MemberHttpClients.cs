using System.Collections.Concurrent;

namespace Sequencer.Node.Security;

/// <summary>
/// One <see cref="HttpClient"/> per member called: with identities, each accepts only the certificate pinned for the
/// member it calls (<see cref="ClusterIdentity.Handler"/>). A TLS callback cannot tell which member a connection was
/// meant for (members may share a host), so the pin lives in the handler, and so one handler per member. A request to a
/// member whose certificate is on the revocation list fails before it is sent (a pooled connection was checked only
/// when it was made).
/// </summary>
/// <param name="identity">This node's identity, or null (plain http, development only).</param>
/// <param name="handler">Makes a fresh handler (its pool and limits) for each member.</param>
/// <param name="configure">Sets each client's timeouts and limits.</param>
public sealed class MemberHttpClients(ClusterIdentity? identity, Func<SocketsHttpHandler> handler, Action<HttpClient>? configure = null) : IDisposable
{
    private readonly ConcurrentDictionary<int, Lazy<HttpClient>> clients = new();

    /// <summary>The client for requests to <paramref name="member"/>.</summary>
    public HttpClient For(int member) => clients.GetOrAdd(member, id => new Lazy<HttpClient>(() =>
    {
        var pinned = ClusterIdentity.Handler(identity, handler(), id);
        var client = new HttpClient(identity is null ? pinned : new NotRevoked(identity, id) { InnerHandler = pinned });
        configure?.Invoke(client);
        return client;
    })).Value;

    private sealed class NotRevoked(ClusterIdentity identity, int member) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
            => identity.IsRevoked(member)
                ? Task.FromException<HttpResponseMessage>(new HttpRequestException($"member {member}'s certificate is revoked ({Sequencer.Core.Security.ConsortiumCertificates.RevokedFile}): no request is sent to it"))
                : base.SendAsync(request, cancellationToken);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var client in clients.Values)
        {
            if (client.IsValueCreated)
                client.Value.Dispose();
        }
    }
}
