using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;

namespace Sequencer.Node.Api;

/// <summary>
/// Reads that never report an acknowledged tx as unknown (Raft's ReadIndex). A node that misses a tx or a batch
/// first learns the leader's read index: the leader's commit index once the leader has committed an entry of its own
/// term (so it covers everything any earlier leader acknowledged), and then waits until it has applied that much.
/// Only then is a miss a real "not found". When it cannot learn or reach the read index in time (no leader, a
/// partition, a leader that has not committed in its term yet) the answer is 503 with <c>Retry-After</c>.
/// </summary>
/// <remarks>
/// A follower's reads share their questions to the leader (<see cref="JoinedRequest{T}"/>): at most one is in flight,
/// and a read joins the next one to leave, never one already on its way. They go through a forwarder of their own, so
/// that forwarded submits filling every forwarding slot cannot turn reads into 503s.
/// </remarks>
public sealed class ReadBarrier
{
    private readonly NodeOptions options;
    private readonly RaftHost raft;
    private readonly LeaderForwarder forwarder;
    private readonly JoinedRequest<long?> leaderIndex;

    /// <summary>Creates the barrier.</summary>
    /// <param name="options">The node's options.</param>
    /// <param name="raft">The node's Raft host.</param>
    /// <param name="forwarder">A forwarder for the barrier alone (one request at a time goes through it).</param>
    public ReadBarrier(NodeOptions options, RaftHost raft, LeaderForwarder forwarder)
    {
        this.options = options;
        this.raft = raft;
        this.forwarder = forwarder;
        leaderIndex = new JoinedRequest<long?>(FetchLeaderIndexAsync);
    }

    /// <summary>The leader's route that returns its read index.</summary>
    public const string Route = "/internal/v1/read-index";

    /// <summary>How long a read waits for the barrier before it answers 503.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(2);

    /// <summary>Maps the leader's read-index route.</summary>
    public void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapGet(Route, GetReadIndexAsync);
    }

    /// <summary>
    /// Waits until this node has applied everything acknowledged before the call. False when that cannot be
    /// established within <see cref="Timeout"/>: the caller must then answer 503, never 404.
    /// </summary>
    public async Task<bool> WaitAsync(CancellationToken token)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(token);
        deadline.CancelAfter(Timeout);
        var leader = raft.Leader;
        if (leader is null)
            return false;
        long? index;
        try
        {
            index = leader.Id == options.NodeId
                ? await raft.ReadIndexAsync(deadline.Token).ConfigureAwait(false)
                : await leaderIndex.NextAsync().WaitAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            return false;
        }

        return index is { } readIndex && await raft.WaitForAppliedAsync(readIndex, deadline.Token).ConfigureAwait(false);
    }

    // One question to whoever leads now, within the barrier's timeout; null when there is no answer.
    private async Task<long?> FetchLeaderIndexAsync()
    {
        var leader = raft.Leader;
        if (leader is null)
            return null;
        using var timeout = new CancellationTokenSource(Timeout);
        try
        {
            if (leader.Id == options.NodeId)
                return await raft.ReadIndexAsync(timeout.Token).ConfigureAwait(false);
            var response = await forwarder.ForwardAsync(leader.Id, HttpMethod.Get, new Uri(new Uri(leader.InternalBase), Route), ReadOnlyMemory<byte>.Empty, null, null, Timeout, timeout.Token).ConfigureAwait(false);
            return response is { Status: 200 } ? ParseIndex(response.Body) : null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        catch (ObjectDisposedException)
        {
            // The node is stopping.
            return null;
        }
    }

    /// <summary>The answer when <see cref="WaitAsync"/> failed.</summary>
    public static Task WriteUnknownAsync(HttpContext context, string what)
        => ApiResponses.WriteErrorAsync(context, 503, "not_yet_known",
            $"{what} is not applied on this node, and the node cannot confirm with the leader right now whether it exists (no leader, or the leader is not reachable or not yet settled); retry",
            TimeSpan.FromSeconds(1));

    private async Task GetReadIndexAsync(HttpContext context)
    {
        if (await raft.ReadIndexAsync(context.RequestAborted).ConfigureAwait(false) is not { } index)
        {
            await ApiResponses.WriteErrorAsync(context, 503, "not_leader", "this node is not a settled leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            return;
        }

        await ApiResponses.WriteJsonAsync(context, 200, writer => writer.WriteDecimal("readIndex", (ulong)index)).ConfigureAwait(false);
    }

    private static long? ParseIndex(byte[] body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.TryGetProperty("readIndex", out var value) && long.TryParse(value.GetString(), NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                ? index
                : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
