using System.Net.Http.Headers;

namespace Sequencer.Node.Api;

/// <summary>What a forwarded request came back with.</summary>
/// <param name="Status">The leader's HTTP status, or 0 when it could not be reached.</param>
/// <param name="ContentType">The leader's content type.</param>
/// <param name="Body">The leader's body.</param>
/// <param name="RetryAfter">The leader's Retry-After.</param>
public sealed record ForwardedResponse(int Status, string? ContentType, byte[] Body, TimeSpan? RetryAfter);

/// <summary>
/// Sends requests on to the leader's internal routes (with certificates: its internal listener, mutual TLS, only its
/// pinned certificate accepted, so the leader knows which member forwards). Bounded: at most <c>maxConcurrent</c>
/// forwarded requests at once, each with a timeout. A request that arrives on an internal route is never forwarded a
/// second time (no loops while leadership moves).
/// </summary>
public sealed class LeaderForwarder : IDisposable
{
    private readonly Security.MemberHttpClients http;
    private readonly SemaphoreSlim slots;

    /// <summary>Creates the forwarder.</summary>
    /// <param name="maxConcurrent">The most requests forwarded at once.</param>
    /// <param name="identity">With identities, requests to a member's internal listener (https) carry this node's certificate.</param>
    public LeaderForwarder(int maxConcurrent, Security.ClusterIdentity? identity = null)
    {
        slots = new SemaphoreSlim(maxConcurrent, maxConcurrent);
        http = new Security.MemberHttpClients(identity, () => new SocketsHttpHandler
        {
            MaxConnectionsPerServer = maxConcurrent,
            ConnectTimeout = TimeSpan.FromSeconds(1),
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
            UseProxy = false,
        }, client => client.Timeout = Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// Forwards a request. Returns null when all forwarding slots are busy (the caller answers 503), and a
    /// response with status 0 when the leader could not be reached or did not answer within <paramref name="timeout"/>.
    /// </summary>
    /// <param name="member">The member called (over https, only its pinned certificate is accepted).</param>
    public async Task<ForwardedResponse?> ForwardAsync(int member, HttpMethod method, Uri target, ReadOnlyMemory<byte> body, string? contentType, string? accept, TimeSpan timeout, CancellationToken token)
    {
        if (!await slots.WaitAsync(0, token).ConfigureAwait(false))
            return null;
        try
        {
            using var request = new HttpRequestMessage(method, target);
            if (accept is not null)
                request.Headers.TryAddWithoutValidation("Accept", accept);
            if (method != HttpMethod.Get)
            {
                request.Content = new ReadOnlyMemoryContent(body);
                if (contentType is not null)
                    request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
            }

            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(token);
            deadline.CancelAfter(timeout);
            try
            {
                using var response = await http.For(member).SendAsync(request, deadline.Token).ConfigureAwait(false);
                var bytes = await response.Content.ReadAsByteArrayAsync(deadline.Token).ConfigureAwait(false);
                return new ForwardedResponse((int)response.StatusCode, response.Content.Headers.ContentType?.ToString(), bytes, response.Headers.RetryAfter?.Delta);
            }
            catch (HttpRequestException)
            {
                return new ForwardedResponse(0, null, [], null);
            }
            catch (OperationCanceledException) when (!token.IsCancellationRequested)
            {
                return new ForwardedResponse(0, null, [], null);
            }
        }
        finally
        {
            slots.Release();
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        http.Dispose();
        slots.Dispose();
    }
}
