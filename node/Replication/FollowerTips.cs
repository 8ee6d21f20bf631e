using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Sequencer.Core.Hashing;
using Sequencer.Node.Configuration;
using Sequencer.Raft;

namespace Sequencer.Node.Replication;

/// <summary>
/// Delta snapshots (see <see cref="SnapshotBase"/>): every member serves its tip (<see cref="AppliedState.DeltaBase"/>) on its internal listener
/// (<c>GET /internal/v1/stored-tip</c>, mutual TLS), and the leader asks a follower for it just before it streams the
/// follower a snapshot, so that the stream starts there instead of at height 1. A follower's answer can only hurt
/// itself: a base it does not store makes its own install refuse the snapshot, and the leader sends the whole history
/// when the follower does not answer in time (or postpones the transfer when it cannot connect at all).
/// </summary>
public sealed class FollowerTips : IDisposable
{
    /// <summary>The internal route of a member's tip.</summary>
    public const string Route = "/internal/v1/stored-tip";

    private const int MaxAnswerBytes = 4096;

    private readonly Func<EndPoint, MemberOptions?> memberAt;
    private readonly Security.MemberHttpClients http;

    /// <summary>Creates the client side for the members at their Raft endpoints.</summary>
    /// <param name="memberAt">The configured member at a Raft endpoint, or null.</param>
    /// <param name="identity">This node's identity (mutual TLS to each member's internal listener), or null.</param>
    public FollowerTips(Func<EndPoint, MemberOptions?> memberAt, Security.ClusterIdentity? identity)
    {
        ArgumentNullException.ThrowIfNull(memberAt);
        this.memberAt = memberAt;
        http = new Security.MemberHttpClients(identity, () => new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30), MaxConnectionsPerServer = 2, UseProxy = false },
            client =>
            {
                client.Timeout = DurableWriteAheadLog.TipTimeout;
                client.MaxResponseContentBufferSize = MaxAnswerBytes;
            });
    }

    /// <summary>Maps the route that serves this node's tip from <paramref name="state"/>.</summary>
    public static void Map(IEndpointRouteBuilder routes, Func<AppliedState> state)
    {
        ArgumentNullException.ThrowIfNull(routes);
        ArgumentNullException.ThrowIfNull(state);
        routes.MapGet(Route, context =>
        {
            var tip = state().DeltaBase;
            return Api.ApiResponses.WriteJsonAsync(context, 200, writer =>
            {
                writer.WriteString("height", tip.Height.ToString(System.Globalization.CultureInfo.InvariantCulture));
                writer.WriteString("commitment", tip.Commitment.ToString());
            });
        });
    }

    /// <summary>
    /// Asks the member at <paramref name="raftEndPoint"/> for its tip: no tip when it is unknown, does not answer in time
    /// or answers nonsense, and <see cref="FollowerTipAnswer.Unreachable"/> when no connection to it could be made
    /// before <paramref name="token"/> ended the ask.
    /// </summary>
    public async ValueTask<FollowerTipAnswer> AskAsync(EndPoint raftEndPoint, CancellationToken token)
    {
        if (memberAt(raftEndPoint) is not { } member)
            return FollowerTipAnswer.None;
        // A follower that has just restarted joins Raft a moment before its listeners open: a refused connection is
        // tried again every 50 ms until the caller's budget (DurableWriteAheadLog.TipTimeout) runs out.
        for (var refused = false; ; refused = true)
        {
            try
            {
                var tip = await AskOnceAsync(member, token).ConfigureAwait(false);
                // Cancelled while connecting after refusals: still not reached.
                return tip is null && refused && token.IsCancellationRequested ? FollowerTipAnswer.NotReached : new FollowerTipAnswer(tip, Unreachable: false);
            }
            catch (HttpRequestException)
            {
                if (token.IsCancellationRequested)
                    return FollowerTipAnswer.NotReached;
                await Task.Delay(50, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                if (token.IsCancellationRequested)
                    return FollowerTipAnswer.NotReached;
            }
        }
    }

    private async Task<SnapshotBase?> AskOnceAsync(MemberOptions member, CancellationToken token)
    {
        try
        {
            using var response = await http.For(member.Id).GetAsync(new Uri(new Uri(member.InternalBase), Route), token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
                return null;
            using var document = JsonDocument.Parse(await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false));
            var root = document.RootElement;
            return root.TryGetProperty("height", out var height) && ulong.TryParse(height.GetString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var h)
                && root.TryGetProperty("commitment", out var commitment) && Hash32.TryParse(commitment.GetString(), out var c)
                ? new SnapshotBase(h, c)
                : null;
        }
        catch (Exception e) when (e is TaskCanceledException or JsonException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => http.Dispose();
}
