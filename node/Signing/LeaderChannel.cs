using System.Net.Http.Headers;
using Sequencer.Core.Encoding;
using Sequencer.Node.Replication;

namespace Sequencer.Node.Signing;

/// <summary>How a message to the leader ended.</summary>
/// <param name="Delivered">The leader took it (shares queued, or the entry committed).</param>
/// <param name="Refused">The leader refused it for good (a 4xx): sending it again will not help.</param>
/// <param name="Reason">Why not, or null.</param>
public sealed record LeaderDelivery(bool Delivered, bool Refused = false, string? Reason = null)
{
    /// <summary>Taken.</summary>
    public static LeaderDelivery Ok { get; } = new(true);
}

/// <summary>Where a leader takes signature shares.</summary>
public interface IShareInbox
{
    /// <summary>Queues a signer's shares (their proof is checked by the caller); false when the queue is full.</summary>
    bool Receive(SignatureSharesMessage message);
}

/// <summary>
/// Everything a node sends to the leader, in one place: signature shares, and entries it asks the leader to put into
/// the log (nonce commitments, DKG messages). On the leader the message goes to its own coordinator or intake; on a
/// follower it goes to the leader's internal route. Callers retry as they see fit; every message is idempotent.
/// </summary>
public interface ILeaderChannel
{
    /// <summary>Sends a signer's shares.</summary>
    Task<LeaderDelivery> SendSharesAsync(SignatureSharesMessage message, CancellationToken token);

    /// <summary>Asks the leader to put <paramref name="command"/> into the log; delivered once it is committed.</summary>
    Task<LeaderDelivery> ProposeAsync(ILogCommand command, CancellationToken token);
}

/// <summary>The <see cref="ILeaderChannel"/> of a node: local when it leads, HTTP to the leader's internal routes when it follows.</summary>
public sealed class LeaderChannel(RaftHost raft, IShareInbox inbox, LeaderIntake intake, Security.ClusterIdentity? identity = null) : ILeaderChannel, IDisposable
{
    /// <summary>Route on the leader for signature shares.</summary>
    public const string SharesRoute = "/internal/v1/shares";

    /// <summary>Route on the leader for a follower's NonceCommitments entry.</summary>
    public const string NonceCommitmentsRoute = "/internal/v1/nonce-commitments";

    /// <summary>Route on the leader for DKG entries.</summary>
    public const string DkgRoute = "/internal/v1/dkg";

    // With identities, requests go to the leader's internal listener with this node's certificate (mutual TLS).
    private readonly Security.MemberHttpClients http = new(identity, () => new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30), MaxConnectionsPerServer = 8, UseProxy = false },
        client => client.Timeout = TimeSpan.FromSeconds(6));

    /// <inheritdoc/>
    public async Task<LeaderDelivery> SendSharesAsync(SignatureSharesMessage message, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (raft.IsLeader)
            return inbox.Receive(message) ? LeaderDelivery.Ok : new LeaderDelivery(false, Reason: "the share queue is full");
        return await PostAsync(SharesRoute, message.Encode(), token).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async Task<LeaderDelivery> ProposeAsync(ILogCommand command, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(command);
        var encoded = LogCommandCodec.Encode(command);
        if (raft.IsLeader)
        {
            var result = await intake.SubmitAsync(command, encoded, token).ConfigureAwait(false);
            return new LeaderDelivery(result.Status == IntakeStatus.Committed, result.Status == IntakeStatus.Refused, result.Reason);
        }

        var route = command is NonceCommitmentsCommand ? NonceCommitmentsRoute : DkgRoute;
        return await PostAsync(route, encoded, token).ConfigureAwait(false);
    }

    private async Task<LeaderDelivery> PostAsync(string route, byte[] body, CancellationToken token)
    {
        if (raft.Leader is not { } leader || leader.Id == raft.Self.Id)
            return new LeaderDelivery(false, Reason: "no leader is known");
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
        try
        {
            using var response = await http.For(leader.Id).PostAsync(new Uri(new Uri(leader.InternalBase), route), content, token).ConfigureAwait(false);
            if (response.IsSuccessStatusCode)
                return LeaderDelivery.Ok;
            // 429: the leader's request budget is spent for now; the caller sends again after its back-off.
            var refused = (int)response.StatusCode is >= 400 and < 500 and not 429;
            return new LeaderDelivery(false, refused, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync(token).ConfigureAwait(false)}");
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !token.IsCancellationRequested)
        {
            return new LeaderDelivery(false, Reason: $"leader {leader.Id} is unreachable: {e.Message}");
        }
    }

    /// <inheritdoc/>
    public void Dispose() => http.Dispose();
}
