using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MessagePack;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Net.Http.Headers;
using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Protocol;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;

namespace Sequencer.Node.Api;

/// <summary>
/// The HTTP API of DESIGN section 10 under <c>/v1</c>, plus health. Any node accepts a submit: the leader orders it,
/// a follower forwards it to the leader, and during a leader change the node retries (submits are idempotent)
/// until the submit timeout, after which it answers <c>outcome_unknown</c>.
/// </summary>
public sealed class SequencerApi(NodeOptions options, RaftHost raft, SubmitService submits, LeaderForwarder forwarder, NodeMetrics metrics, TimeProvider time,
    BackgroundLoops loops, ReadBarrier barrier, RequestBudget budget, L1.L1Service? l1 = null)
{
    // Committed entries that have waited this long without any apply mean a stuck applier.
    private static readonly TimeSpan ApplyStalledAfter = TimeSpan.FromSeconds(5);

    private static readonly TimeSpan NoLeaderPoll = TimeSpan.FromMilliseconds(50);


    /// <summary>Where a member forwards a client's submit (and its tx lookups) to the leader: an internal route.</summary>
    public const string ForwardedSubmitRoute = "/internal/v1/txs";

    // A request a member forwarded (an internal route: with certificates, only a member reaches it, over mutual TLS).
    private static bool Forwarded(HttpContext context) => context.Request.Path.StartsWithSegments("/internal", StringComparison.Ordinal);

    /// <summary>Maps every route.</summary>
    public void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapPost("/v1/txs", SubmitAsync);
        routes.MapGet("/v1/txs/{hash}", GetTxAsync);
        // The same, for a member forwarding a client's request to its leader (never forwarded again).
        routes.MapPost(ForwardedSubmitRoute, SubmitAsync);
        routes.MapGet(ForwardedSubmitRoute + "/{hash}", GetTxAsync);
        routes.MapGet("/v1/batches/latest", GetLatestBatchAsync);
        routes.MapGet("/v1/batches/{height}", GetBatchAsync);
        routes.MapGet("/v1/cluster", GetClusterAsync);
        routes.MapGet("/v1/l1", GetL1Async);
        routes.MapGet("/v1/proofs/{hash}", GetProofAsync);
        routes.MapGet("/v1/accounts/{address}", GetAccountAsync);
        routes.MapGet("/health/live", LiveAsync);
        routes.MapGet("/health/ready", ReadyAsync);
    }

    private async Task SubmitAsync(HttpContext context)
    {
        var started = Stopwatch.GetTimestamp();
        var limits = options.Limits;
        var mediaType = MediaTypeHeaderValue.TryParse(context.Request.ContentType, out var parsedType) ? parsedType.MediaType.Value : null;
        var isJson = string.Equals(mediaType, SubmitRequest.JsonMediaType, StringComparison.OrdinalIgnoreCase);
        var isMessagePack = string.Equals(mediaType, SubmitRequest.MessagePackMediaType, StringComparison.OrdinalIgnoreCase);
        if (!isJson && !isMessagePack)
        {
            await RejectAsync(context, 415, "unsupported_media_type",
                $"submit a body of type {SubmitRequest.JsonMediaType} or {SubmitRequest.MessagePackMediaType}, not \"{context.Request.ContentType}\"").ConfigureAwait(false);
            return;
        }

        // The body's bytes stay reserved until the submit answers: its txs, or the body itself on a follower that
        // forwards it, live that long.
        using var budgeted = await budget.ReadBodyAsync(context, limits.MaxRequestBytes).ConfigureAwait(false);
        if (budgeted.Bytes is not { } body)
        {
            metrics.SubmitsRejected.Add(1, new KeyValuePair<string, object?>("error", budgeted.Code));
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
            return;
        }

        var sequence = new ReadOnlySequence<byte>(body);
        var txs = isJson ? SubmitRequest.ParseJson(sequence, limits, out var error) : SubmitRequest.ParseMessagePack(sequence, limits, out error);
        if (txs is null)
        {
            await RejectAsync(context, error!.Status, error.Code, error.Message).ConfigureAwait(false);
            return;
        }

        var forwarded = Forwarded(context);
        var deadline = time.GetTimestamp() + (long)(limits.SubmitTimeoutMs / 1000.0 * time.TimestampFrequency);
        var token = context.RequestAborted;
        string lastProblem = "no leader is known";
        while (!token.IsCancellationRequested)
        {
            var remaining = time.GetElapsedTime(time.GetTimestamp(), deadline);
            if (remaining <= TimeSpan.Zero)
                break;

            if (raft.IsLeader)
            {
                var outcome = await submits.SubmitAsync(txs, token).ConfigureAwait(false);
                switch (outcome.Status)
                {
                    case SubmitStatus.Ordered:
                        await WriteSubmitResultsAsync(context, outcome.Outcomes).ConfigureAwait(false);
                        metrics.SubmitDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                        return;
                    case SubmitStatus.Overloaded:
                        await RejectAsync(context, 429, "overloaded", outcome.Message ?? "the pending queue is full", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                        return;
                    case SubmitStatus.Rejected:
                        await RefuseAsync(context, outcome).ConfigureAwait(false);
                        return;
                    default:
                        lastProblem = outcome.Message ?? outcome.Status.ToString();
                        continue;
                }
            }

            if (forwarded)
            {
                // Never forward twice: the node that forwarded to us retries with the leader it sees next.
                await RejectAsync(context, 503, "not_leader", "this node is no longer the leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                return;
            }

            var leader = raft.Leader;
            if (leader is null)
            {
                // An election takes about one election timeout. A node that has known no leader for longer is likely
                // cut off from the others: it says so at once, so that the client tries another node instead of
                // waiting out its timeout here. Nothing was ordered through this node.
                var leaderless = raft.LeaderlessFor;
                var grace = TimeSpan.FromMilliseconds(options.RaftTiming.ElectionTimeoutUpperMs) - leaderless;
                if (grace <= TimeSpan.Zero)
                {
                    await RejectAsync(context, 503, "no_leader",
                        $"this node has known no leader for {leaderless.TotalMilliseconds:F0} ms (an election is taking long, or this node is cut off from the others); nothing was submitted: try another node",
                        TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                    return;
                }

                await WaitForLeaderAsync(grace < remaining ? grace : remaining, token).ConfigureAwait(false);
                continue;
            }

            if (leader.Id == options.NodeId)
            {
                await WaitForLeaderAsync(remaining, token).ConfigureAwait(false);
                continue;
            }

            metrics.SubmitsForwarded.Add(1);
            // A leader change abandons the forward (a paused or partitioned leader may never answer); the submit is
            // idempotent, so it is simply sent again to whoever leads next.
            ForwardedResponse? response;
            using (var epoch = CancellationTokenSource.CreateLinkedTokenSource(token, raft.LeaderEpoch))
            {
                try
                {
                    response = await forwarder.ForwardAsync(leader.Id, HttpMethod.Post, new Uri(new Uri(leader.InternalBase), ForwardedSubmitRoute), body,
                        context.Request.ContentType, context.Request.Headers.Accept.ToString(), remaining, epoch.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!token.IsCancellationRequested)
                {
                    lastProblem = $"leadership moved away from node {leader.Id}";
                    continue;
                }
            }
            if (response is null)
            {
                await RejectAsync(context, 503, "overloaded", "too many submits are being forwarded to the leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                return;
            }

            if (response.Status is >= 200 and < 300 or (>= 400 and < 500))
            {
                await RelayAsync(context, response).ConfigureAwait(false);
                metrics.SubmitDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                return;
            }

            // The leader was unreachable, lost leadership, or could not tell the outcome: try again while time is left.
            lastProblem = response.Status == 0 ? $"leader {leader.Id} is unreachable" : $"leader {leader.Id} answered {response.Status}";
            await WaitForLeaderAsync(TimeSpan.FromMilliseconds(Math.Min(100, remaining.TotalMilliseconds)), token).ConfigureAwait(false);
        }

        await RejectAsync(context, 503, "outcome_unknown",
            $"the txs were not confirmed as ordered within {limits.SubmitTimeoutMs} ms ({lastProblem}); they may or may not be ordered: resubmit them, submits are idempotent",
            TimeSpan.FromSeconds(1)).ConfigureAwait(false);
    }

    private async Task WaitForLeaderAsync(TimeSpan limit, CancellationToken token)
    {
        var changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnChanged() => changed.TrySetResult();
        raft.LeaderChanged += OnChanged;
        try
        {
            var wait = limit < NoLeaderPoll ? limit : NoLeaderPoll;
            await changed.Task.WaitAsync(wait, time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
        finally
        {
            raft.LeaderChanged -= OnChanged;
        }
    }

    private static async Task RelayAsync(HttpContext context, ForwardedResponse response)
    {
        context.Response.StatusCode = response.Status;
        if (response.ContentType is not null)
            context.Response.ContentType = response.ContentType;
        if (response.RetryAfter is { } retry)
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(retry.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        await context.Response.Body.WriteAsync(response.Body, context.RequestAborted).ConfigureAwait(false);
    }

    private static async Task WriteSubmitResultsAsync(HttpContext context, TxOutcome[] outcomes)
    {
        var accept = context.Request.Headers.Accept.ToString();
        if (accept.Contains(SubmitRequest.MessagePackMediaType, StringComparison.OrdinalIgnoreCase))
        {
            var buffer = new ArrayBufferWriter<byte>(64 + 112 * outcomes.Length);
            var writer = new MessagePackWriter(buffer);
            var utf8 = new byte[Hash32.HexLength];
            writer.WriteMapHeader(1);
            writer.Write("results");
            writer.WriteArrayHeader(outcomes.Length);
            foreach (var outcome in outcomes)
            {
                writer.WriteMapHeader(3);
                writer.Write("hash");
                outcome.Hash.FormatHex(utf8);
                writer.WriteString(utf8.AsSpan());
                writer.Write("height");
                var formatted = outcome.Position.Height.TryFormat(utf8, out var digits, default, CultureInfo.InvariantCulture);
                Invariant.Check(formatted, "a height fits the hash's buffer");
                writer.WriteString(utf8.AsSpan(0, digits));
                writer.Write("index");
                writer.Write(outcome.Position.Index);
            }

            writer.Flush();
            context.Response.StatusCode = 200;
            context.Response.ContentType = SubmitRequest.MessagePackMediaType;
            await context.Response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted).ConfigureAwait(false);
            return;
        }

        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteStartArray("results");
            foreach (var outcome in outcomes)
            {
                writer.WriteStartObject();
                writer.WriteHash("hash", outcome.Hash);
                writer.WriteDecimal("height", outcome.Position.Height);
                writer.WriteNumber("index", outcome.Position.Index);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }).ConfigureAwait(false);
    }

    // GET /v1/proofs/{hash}: the one-call bundle for light clients (DESIGN section 10): the tx's audit path to its
    // header's txRoot, the header and its commitment, the lowest signed head that covers it with the history proof,
    // and the L1 post that covers it with the history proof into the posted head. "level" is this node's claim; a
    // light client proves what it can of it (Sequencer.LightClient).
    private async Task GetProofAsync(HttpContext context, string hash)
    {
        if (!Hash32.TryParse(hash, out var txHash))
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_hash", "a tx hash is 0x followed by 64 hex digits").ConfigureAwait(false);
            return;
        }

        if (!TryFindOrdered(txHash, out var position, out var batch)
            && !(await barrier.WaitAsync(context.RequestAborted).ConfigureAwait(false) && TryFindOrdered(txHash, out position, out batch)))
        {
            if (!await WritePrunedAsync(context, txHash).ConfigureAwait(false))
                await ApiResponses.WriteErrorAsync(context, 404, "not_found", $"tx {txHash} is not ordered on this node").ConfigureAwait(false);
            return;
        }

        var state = raft.State;
        var txProof = MerkleTree.ComputeAuditPath(batch.TxHashes, position.Index);
        var head = state.CoveringHead(position.Height);
        var headBatch = head is null ? null : head.Height == position.Height ? batch : state.GetBatch(head.Height);
        var historyProof = head is null || head.Height == position.Height ? [] : HistoryTree.AuditPath(state.History, position.Height - 1, head.Height - 1);
        var (post, finalized) = head is null || l1 is null ? (null, false) : l1.Covering(position.Height);
        var postedBatch = post is null ? null : state.GetBatch(post.Height);
        var postedProof = post is null || post.Height == position.Height ? [] : HistoryTree.AuditPath(state.History, position.Height - 1, post.Height - 1);
        var l1Status = l1?.Status;
        var level = head is null ? "ordered" : finalized ? "finalized" : post is not null ? "posted" : "signed";
        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteString("level", level);
            writer.WriteStartObject("tx");
            writer.WriteHash("hash", txHash);
            writer.WriteDecimal("height", position.Height);
            writer.WriteNumber("index", position.Index);
            writer.WriteHashes("proof", txProof);
            writer.WriteEndObject();
            writer.WriteHeader(batch);
            writer.WriteHash("commitment", batch.Header.Commitment);
            if (head is null || headBatch is null)
            {
                writer.WriteNull("head");
            }
            else
            {
                writer.WriteStartObject("head");
                SigningApi.WriteHead(writer, headBatch, head);
                writer.WriteEndObject();
            }

            writer.WriteHashes("historyProof", historyProof);
            if (post is null || postedBatch is null || l1Status is null)
            {
                writer.WriteNull("l1");
                return;
            }

            writer.WriteStartObject("l1");
            writer.WriteString("contract", l1Status.Contract);
            writer.WriteStartObject("head");
            writer.WriteHeader(postedBatch);
            writer.WriteHash("commitment", postedBatch.Header.Commitment);
            writer.WriteEndObject();
            writer.WriteHashes("historyProof", postedProof);
            writer.WriteString("txHash", Sequencer.Ethereum.EthHex.Bytes(post.TxHash));
            writer.WriteDecimal("blockNumber", post.Block);
            writer.WriteDecimal("confirmations", l1Status.LatestBlock >= post.Block ? l1Status.LatestBlock - post.Block + 1 : 0);
            writer.WriteBoolean("finalized", finalized);
            writer.WriteEndObject();
        }).ConfigureAwait(false);
    }

    // GET /v1/l1: the L1 as this node sees it (DESIGN section 10), and what the log last recorded of posting.
    private Task GetL1Async(HttpContext context)
    {
        if (l1 is null)
            return ApiResponses.WriteErrorAsync(context, 404, "no_l1", "this node is not configured to post to an L1 (--l1-rpc, --l1-contract)");
        var status = l1.Status;
        var progress = raft.State.L1Progress;
        return ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteString("rpc", status.Rpc);
            if (status.ChainId is { } chainId)
                writer.WriteDecimal("chainId", chainId);
            else
                writer.WriteNull("chainId");
            writer.WriteString("contract", status.Contract);
            writer.WriteDecimal("postedHeight", status.PostedHeight);
            writer.WriteDecimal("finalizedHeight", status.FinalizedHeight);
            writer.WriteDecimal("latestBlock", status.LatestBlock);
            writer.WriteDecimal("finalizedBlock", status.FinalizedBlock);
            writer.WriteNumber("reorgs", status.Reorgs);
            writer.WriteBoolean("posting", status.Posting);
            writer.WriteNumber("postsByThisNode", status.Posts);
            if (l1.PosterAddress is { } poster)
                writer.WriteString("poster", poster.ToString());
            if (status.LastError is null)
                writer.WriteNull("lastError");
            else
                writer.WriteString("lastError", status.LastError);
            if (progress is null)
            {
                writer.WriteNull("logProgress");
            }
            else
            {
                writer.WriteStartObject("logProgress");
                writer.WriteDecimal("height", progress.Height);
                writer.WriteHash("commitment", progress.Commitment);
                writer.WriteString("txHash", Sequencer.Ethereum.EthHex.Bytes(progress.L1TxHash));
                writer.WriteDecimal("blockNumber", progress.L1Block);
                writer.WriteEndObject();
            }
        });
    }

    private async Task GetTxAsync(HttpContext context, string hash)
    {
        if (!Hash32.TryParse(hash, out var txHash))
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_hash", "a tx hash is 0x followed by 64 hex digits").ConfigureAwait(false);
            return;
        }

        // A miss is confirmed through the read barrier: a tx acknowledged by any leader is never reported unknown.
        var confirmed = false;
        if (TryFindOrdered(txHash, out var position, out var batch)
            || ((confirmed = await barrier.WaitAsync(context.RequestAborted).ConfigureAwait(false)) && TryFindOrdered(txHash, out position, out batch)))
        {
            var proof = MerkleTree.ComputeAuditPath(batch.TxHashes, position.Index);
            // Signed once a signed head covers the height (DESIGN section 5); its time is when the leader verified that head.
            var signature = raft.State.CoveringHead(position.Height);
            // Posted once a head that covers it is in the contract (as this node saw on the L1), finalized once that
            // block is final.
            var (post, finalized) = signature is null || l1 is null ? (null, false) : l1.Covering(position.Height);
            var level = signature is null ? "ordered" : finalized ? "finalized" : post is not null ? "posted" : "signed";
            await ApiResponses.WriteJsonAsync(context, 200, writer =>
            {
                writer.WriteHash("hash", txHash);
                writer.WriteString("level", level);
                writer.WriteDecimal("height", position.Height);
                writer.WriteNumber("index", position.Index);
                if (batch.AccountAt(position.Index) is { } account)
                {
                    writer.WriteString("sender", account.Sender.ToString());
                    writer.WriteDecimal("nonce", account.Nonce);
                }

                writer.WriteStartArray("proof");
                foreach (var node in proof)
                    writer.WriteStringValue(node.ToString());
                writer.WriteEndArray();
                writer.WriteStartObject("times");
                if (batch.ReceivedMs[position.Index] > 0)
                    writer.WriteNumber("received", batch.ReceivedMs[position.Index]);
                // The time the level was reached: this node's apply time is an upper bound, and so is the signing of a
                // head that covers it (only committed batches are signed). A follower that applies after the leader
                // verified the head (2 of 3 sign without it) reports the earlier bound, so the ladder's times never
                // go backwards on any node.
                writer.WriteNumber("ordered", signature is null ? batch.OrderedAtMs : Math.Min(batch.OrderedAtMs, signature.SignedAtMs));
                if (signature is not null)
                    writer.WriteNumber("signed", signature.SignedAtMs);
                if (post is not null)
                    writer.WriteNumber("posted", Math.Max(post.SeenAtMs, signature!.SignedAtMs));
                if (post is { FinalizedAtMs: > 0 } && finalized)
                    writer.WriteNumber("finalized", Math.Max(post.FinalizedAtMs, post.SeenAtMs));
                writer.WriteEndObject();
                if (post is not null)
                {
                    writer.WriteStartObject("l1");
                    writer.WriteDecimal("head", post.Height);
                    writer.WriteString("txHash", Sequencer.Ethereum.EthHex.Bytes(post.TxHash));
                    writer.WriteDecimal("blockNumber", post.Block);
                    writer.WriteBoolean("finalized", finalized);
                    writer.WriteEndObject();
                }
            }).ConfigureAwait(false);
            return;
        }

        if (await WritePrunedAsync(context, txHash).ConfigureAwait(false))
            return;

        if (submits.TryGetReceived(txHash, out var receivedAt))
        {
            await WriteReceivedAsync(context, txHash, receivedAt).ConfigureAwait(false);
            return;
        }

        // A tx the leader has received but not yet ordered is known to the leader alone.
        var leader = raft.Leader;
        if (!Forwarded(context) && leader is not null && leader.Id != options.NodeId)
        {
            var response = await forwarder.ForwardAsync(leader.Id, HttpMethod.Get, new Uri(new Uri(leader.InternalBase), $"{ForwardedSubmitRoute}/{txHash}"), ReadOnlyMemory<byte>.Empty,
                null, null, TimeSpan.FromMilliseconds(500), context.RequestAborted).ConfigureAwait(false);
            if (response is { Status: 200 } && IsReceived(response.Body))
            {
                await RelayAsync(context, response).ConfigureAwait(false);
                return;
            }
        }

        if (!confirmed)
        {
            await ReadBarrier.WriteUnknownAsync(context, $"tx {txHash}").ConfigureAwait(false);
            return;
        }

        await ApiResponses.WriteErrorAsync(context, 404, "not_found", $"tx {txHash} is not known to this node").ConfigureAwait(false);
    }

    private bool TryFindOrdered(Hash32 txHash, out TxPosition position, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Sequencer.Core.Storage.StoredBatch? batch)
    {
        batch = null;
        if (!raft.State.TryGetPosition(txHash, out position))
            return false;
        batch = raft.State.GetBatch(position.Height);
        // The index keys on a 128-bit prefix: confirm the full hash before serving a proof.
        return batch is not null && position.Index < batch.TxHashes.Length && batch.TxHashes[position.Index] == txHash;
    }

    // A tx whose batch retention pruned (--retain-heights): the index may still know where it was ordered, but the
    // batch no longer holds the hashes that prove it. 410, with the position, so that a client asks a node that keeps
    // it (the header, its commitment and the signed head that covers it are still served here).
    private async Task<bool> WritePrunedAsync(HttpContext context, Hash32 txHash)
    {
        if (!raft.State.TryGetPosition(txHash, out var position) || raft.State.GetBatch(position.Height) is not { Pruned: true })
            return false;
        await ApiResponses.WriteJsonAsync(context, 410, writer =>
        {
            writer.WriteString("error", "pruned");
            writer.WriteString("message", string.Create(CultureInfo.InvariantCulture,
                $"a tx with this hash was ordered at height {position.Height} (index {position.Index}), whose tx data this node pruned (it keeps the newest {options.RetainHeights} heights); its header and signed head are still served, its proof by a node that keeps the data"));
            writer.WriteDecimal("height", position.Height);
            writer.WriteNumber("index", position.Index);
        }).ConfigureAwait(false);
        return true;
    }

    private static bool IsReceived(byte[] body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.TryGetProperty("level", out var level) && level.GetString() == "received";
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static Task WriteReceivedAsync(HttpContext context, Hash32 hash, long receivedAt)
        => ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteHash("hash", hash);
            writer.WriteString("level", "received");
            writer.WriteNull("height");
            writer.WriteNull("index");
            writer.WriteStartArray("proof");
            writer.WriteEndArray();
            writer.WriteStartObject("times");
            writer.WriteNumber("received", receivedAt);
            writer.WriteEndObject();
        });

    private Task GetLatestBatchAsync(HttpContext context)
    {
        var last = raft.State.LastHeader;
        return last is null
            ? ApiResponses.WriteErrorAsync(context, 404, "not_found", "no batch has been ordered yet")
            : WriteBatchAsync(context, last.Height);
    }

    private Task GetBatchAsync(HttpContext context, string height)
    {
        if (!ulong.TryParse(height, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value == 0)
            return ApiResponses.WriteErrorAsync(context, 400, "bad_height", "a height is a positive decimal integer, or \"latest\"");
        return WriteBatchAsync(context, value);
    }

    private async Task WriteBatchAsync(HttpContext context, ulong height)
    {
        var batch = raft.State.GetBatch(height);
        if (batch is null)
        {
            if (!await barrier.WaitAsync(context.RequestAborted).ConfigureAwait(false))
            {
                await ReadBarrier.WriteUnknownAsync(context, $"batch {height}").ConfigureAwait(false);
                return;
            }

            batch = raft.State.GetBatch(height);
        }

        if (batch is null)
        {
            await ApiResponses.WriteErrorAsync(context, 404, "not_found", $"batch {height} is not applied on this node").ConfigureAwait(false);
            return;
        }

        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteHeader(batch);
            writer.WriteHash("hash", batch.Header.Commitment);
            writer.WriteStartArray("txs");
            foreach (var tx in batch.TxHashes)
                writer.WriteStringValue(tx.ToString());
            writer.WriteEndArray();
            // Retention removed the tx hashes (txCount says how many there were); only a node that keeps them lists them.
            if (batch.Pruned)
                writer.WriteBoolean("pruned", true);
        }).ConfigureAwait(false);
    }

    private Task GetClusterAsync(HttpContext context)
    {
        var leader = raft.Leader;
        var state = raft.State;
        var limits = options.Limits;
        return ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteNumber("nodeId", options.NodeId);
            writer.WriteString("role", raft.IsLeader ? "leader" : leader is null ? "candidate" : "follower");
            if (leader is null)
                writer.WriteNull("leader");
            else
                writer.WriteNumber("leader", leader.Id);
            writer.WriteDecimal("term", (ulong)raft.Term);
            writer.WriteDecimal("commitIndex", (ulong)raft.CommitIndex);
            writer.WriteDecimal("appliedIndex", (ulong)state.AppliedIndex);
            writer.WriteDecimal("height", state.LastHeader?.Height ?? 0);
            writer.WriteDecimal("signedThrough", state.SignedThrough);
            writer.WriteDecimal("chainId", options.ChainId);
            writer.WriteStartArray("members");
            foreach (var member in options.Members)
            {
                writer.WriteStartObject();
                writer.WriteNumber("id", member.Id);
                writer.WriteString("raft", member.Raft);
                writer.WriteString("api", member.Api);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteStartObject("limits");
            writer.WriteNumber("maxTxBytes", limits.MaxTxBytes);
            writer.WriteNumber("maxBatchBytes", limits.MaxBatchBytes);
            writer.WriteNumber("maxBatchTxs", limits.MaxBatchTxs);
            writer.WriteNumber("maxBatchDelayMs", limits.MaxBatchDelayMs);
            writer.WriteNumber("maxPendingTxs", limits.MaxPendingTxs);
            writer.WriteNumber("maxPendingBytes", limits.MaxPendingBytes);
            writer.WriteNumber("maxInFlightEntries", limits.MaxInFlightEntries);
            writer.WriteNumber("maxRequestBytes", limits.MaxRequestBytes);
            writer.WriteNumber("maxInFlightRequestBytes", limits.MaxInFlightRequestBytes);
            writer.WriteNumber("clientInFlightRequestBytes", limits.ClientInFlightRequestBytes);
            writer.WriteNumber("maxTxsPerRequest", limits.MaxTxsPerRequest);
            writer.WriteNumber("submitTimeoutMs", limits.SubmitTimeoutMs);
            writer.WriteNumber("maxForwardedRequests", limits.MaxForwardedRequests);
            writer.WriteNumber("maxUnpersistedBatches", limits.MaxUnpersistedBatches);
            writer.WriteNumber("maxRecentTxs", limits.MaxRecentTxs);
            writer.WriteNumber("maxRecentBatchBytes", limits.MaxRecentBatchBytes);
            writer.WriteNumber("maxUnpersistedEntryBytes", limits.MaxUnpersistedEntryBytes);
            writer.WriteEndObject();
            writer.WriteStartObject("pipeline");
            writer.WriteNumber("queuedTxs", submits.QueuedTxs);
            writer.WriteNumber("inFlightEntries", submits.InFlightEntries);
            writer.WriteNumber("unpersistedEntries", state.UnpersistedEntries);
            writer.WriteNumber("unpersistedEntryBytes", state.UnpersistedEntryBytes);
            var durable = state.Durable;
            writer.WriteNumber("storedHeight", durable.LastHeight);
            writer.WriteNumber("storedIndex", durable.AppliedIndex);
            writer.WriteNumber("snapshotIndex", durable.SnapshotIndex);
            writer.WriteNumber("orderedTxs", state.OrderedTxCount);
            writer.WriteNumber("recentTxs", state.RecentTxCount);
            var (recentBatches, recentBatchBytes) = state.RecentBatchesHeld;
            writer.WriteNumber("recentBatches", recentBatches);
            writer.WriteNumber("recentBatchBytes", recentBatchBytes);
            writer.WriteNumber("storedTxIndexBytes", raft.StoredTxIndexBytes);
            writer.WriteNumber("storedTxIndexRuns", raft.StoredTxIndexRuns);
            writer.WriteNumber("retainHeights", options.RetainHeights);
            writer.WriteNumber("prunedHeight", raft.PrunedHeight);
            writer.WriteNumber("durableFollowerAppends", raft.DurableAppends);
            writer.WriteNumber("earlyFollowerCommits", raft.EarlyFollowerCommits);
            writer.WriteNumber("sessionCommitHintsApplied", raft.SessionCommitHintsApplied);
            writer.WriteNumber("detachedReplicationReads", raft.DetachedReplicationReads);
            writer.WriteNumber("lockedReplicationReads", raft.LockedReplicationReads);
            writer.WriteNumber("lastLogIndex", raft.LastLogIndex);
            writer.WriteNumber("inFlightRequestBytes", budget.InUseBytes);
            writer.WriteNumber("requestBudgetRefusals", budget.Refusals);
            writer.WriteEndObject();
            var (sent, finished, resent) = state.Transfers.Counters;
            writer.WriteStartObject("snapshots");
            writer.WriteNumber("sent", finished);
            writer.WriteNumber("sending", sent - finished);
            writer.WriteNumber("resent", resent);
            writer.WriteNumber("delta", state.DeltaSnapshotsSent);
            writer.WriteNumber("tipsTold", raft.SnapshotTipsTold);
            writer.WriteNumber("postponedUnreachable", raft.SnapshotTransfersPostponed);
            writer.WriteBoolean("compactionHeld", state.CompactionHeld);
            var (fenceWaits, fenceTimeouts, fenceRefusals) = state.Transfers.FenceCounters;
            writer.WriteNumber("fenceWaits", fenceWaits);
            writer.WriteNumber("fenceTimeouts", fenceTimeouts);
            writer.WriteNumber("compactionsDeferred", fenceRefusals);
            writer.WriteEndObject();
        });
    }

    private static Task LiveAsync(HttpContext context)
        => ApiResponses.WriteJsonAsync(context, 200, writer => writer.WriteString("status", "live"));

    private Task ReadyAsync(HttpContext context)
    {
        var reasons = new List<string>();
        if (!raft.HasLeader)
            reasons.Add("no leader is known");
        if (raft.State.PersisterProblem is { } persister)
            reasons.Add(persister);
        reasons.AddRange(loops.Problems());
        var lag = raft.CommitIndex - raft.State.AppliedIndex;
        if (lag > options.Limits.MaxUnpersistedBatches)
            reasons.Add($"apply lags the commit index by {lag} entries");
        else if (lag > 0 && raft.State.SinceLastApply > ApplyStalledAfter)
            reasons.Add($"apply is stalled: {lag} committed entries wait, nothing applied for {raft.State.SinceLastApply.TotalSeconds:0} s");
        return ApiResponses.WriteJsonAsync(context, reasons.Count == 0 ? 200 : 503, writer =>
        {
            writer.WriteString("status", reasons.Count == 0 ? "ready" : "not_ready");
            writer.WriteStartArray("reasons");
            foreach (var reason in reasons)
                writer.WriteStringValue(reason);
            writer.WriteEndArray();
        });
    }

    // A tx the chain's rules refused: 409 nonce_used (with the tx that holds the nonce), 422 nonce_gap, 400 otherwise.
    private Task RefuseAsync(HttpContext context, SubmitOutcome outcome)
    {
        var rejection = outcome.Rejection ?? new Sequencer.Core.Validation.TxRejection("invalid_tx", outcome.Message ?? "refused");
        var status = rejection.Code switch { "nonce_used" => 409, "nonce_gap" => 422, _ => 400 };
        metrics.SubmitsRejected.Add(1, new KeyValuePair<string, object?>("error", rejection.Code));
        return ApiResponses.WriteJsonAsync(context, status, writer =>
        {
            writer.WriteString("error", rejection.Code);
            writer.WriteString("message", rejection.Message);
            if (outcome.ConflictsWith is { } holder)
                writer.WriteHash("conflictsWith", holder);
        });
    }

    /// <summary>
    /// <c>GET /v1/accounts/{address}</c> (ethereum mode): the sender's next nonce and its last ordered tx, as this node
    /// has applied them (after the read barrier, so an acknowledged tx is counted).
    /// </summary>
    private async Task GetAccountAsync(HttpContext context)
    {
        var text = (string?)context.Request.RouteValues["address"];
        if (!Sequencer.Core.Validation.SenderId.TryParse(text, out var sender))
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_address", "an address is 0x and 40 hex digits").ConfigureAwait(false);
            return;
        }

        if (raft.State.Validation != Sequencer.Core.Validation.ValidationMode.Ethereum)
        {
            await ApiResponses.WriteErrorAsync(context, 404, "not_ethereum", "this chain orders opaque txs: it has no accounts (--validation ethereum)").ConfigureAwait(false);
            return;
        }

        await barrier.WaitAsync(context.RequestAborted).ConfigureAwait(false);
        var account = raft.State.Get(sender);
        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteString("address", sender.ToString());
            writer.WriteDecimal("nextNonce", account.NextNonce);
            if (account.NextNonce == 0)
            {
                writer.WriteNull("lastTx");
            }
            else
            {
                writer.WriteHash("lastTx", account.LastTx);
                writer.WriteDecimal("lastHeight", account.LastHeight);
            }
        }).ConfigureAwait(false);
    }

    private Task RejectAsync(HttpContext context, int status, string code, string message, TimeSpan? retryAfter = null)
    {
        metrics.SubmitsRejected.Add(1, new KeyValuePair<string, object?>("error", code));
        return ApiResponses.WriteErrorAsync(context, status, code, message, retryAfter);
    }
}
