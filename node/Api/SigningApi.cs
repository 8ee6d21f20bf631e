using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Sequencer.Core.Encoding;
using Sequencer.Core.Storage;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;
using Sequencer.Node.Signing;
using Sequencer.Raft;
using Sequencer.Threshold;

namespace Sequencer.Node.Api;

/// <summary>
/// The signing routes: signed commitments and keys (DESIGN section 10), the coordinator's view of the signers, the
/// internal routes signers use to reach the leader, and the Byzantine-signer fault for the chaos harness.
/// </summary>
public sealed class SigningApi(NodeOptions options, RaftHost raft, SigningCoordinator coordinator, Func<SignerService?> currentSigner, DkgService dkg, ReadBarrier barrier,
    RequestBudget budget) : IDisposable
{
    /// <summary>The largest internal request body.</summary>
    public const int MaxInternalBodyBytes = 1024 * 1024;

    private readonly SemaphoreSlim publications = new(8);

    /// <summary>Maps the routes.</summary>
    public void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapGet("/v1/commitments", GetCommitmentRangeAsync);
        routes.MapGet("/v1/commitments/{height}", GetCommitmentAsync);
        routes.MapGet("/v1/signing/nonce-uses", GetNonceUsesAsync);
        routes.MapGet("/v1/keys", GetKeysAsync);
        routes.MapGet("/v1/signing", GetSigningAsync);
        routes.MapPost(SignerService.SharesRoute, PostSharesAsync);
        routes.MapPost(SignerService.NonceCommitmentsRoute, PostNonceCommitmentsAsync);
        routes.MapPost("/admin/signer-fault", SetSignerFaultAsync);
        routes.MapPost(DkgService.Route, PostDkgAsync);
        routes.MapPost("/admin/dkg", StartDkgAsync);
    }

    private async Task GetCommitmentAsync(HttpContext context, string height)
    {
        if (!ulong.TryParse(height, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value == 0)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_height", "a height is a positive decimal integer").ConfigureAwait(false);
            return;
        }

        var state = raft.State;
        var batch = state.GetBatch(value);
        if (batch is null)
        {
            if (!await barrier.WaitAsync(context.RequestAborted).ConfigureAwait(false))
            {
                await ReadBarrier.WriteUnknownAsync(context, $"batch {value}").ConfigureAwait(false);
                return;
            }

            batch = state.GetBatch(value);
        }

        if (batch is null)
        {
            await ApiResponses.WriteErrorAsync(context, 404, "not_found", $"batch {value} is not applied on this node").ConfigureAwait(false);
            return;
        }

        var signature = batch.Header.KeyEpoch == 0 ? null : state.GetSignature(value);
        if (signature is null)
        {
            var reason = batch.Header.KeyEpoch == 0
                ? $"batch {value} was ordered before the first key epoch and is never signed"
                : $"batch {value} is ordered but not yet signed";
            await ApiResponses.WriteErrorAsync(context, 404, "not_signed", reason).ConfigureAwait(false);
            return;
        }

        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteHeader(batch);
            writer.WriteHash("commitment", batch.Header.Commitment);
            WriteSignature(writer, signature);
            writer.WriteNumber("orderedAtMs", batch.OrderedAtMs);
        }).ConfigureAwait(false);
    }

    /// <summary>The most commitments in one range answer.</summary>
    public const int MaxRange = 1000;

    /// <summary>
    /// <c>GET /v1/commitments?from=H&amp;limit=N</c>: the signed commitments at heights H to H+N-1 that are signed, in
    /// height order, and <c>next</c>, the height to ask from next (unsigned heights are skipped, not waited for).
    /// </summary>
    private async Task GetCommitmentRangeAsync(HttpContext context)
    {
        if (!TryQuery(context, "from", 1, out var from) || from == 0 || !TryQuery(context, "limit", 100, out var limit) || limit is 0 or > MaxRange)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_query", $"use ?from=HEIGHT (>= 1) and optionally &limit=N (1 to {MaxRange})").ConfigureAwait(false);
            return;
        }

        var state = raft.State;
        var last = Math.Min(state.LastHeader?.Height ?? 0, from + limit - 1);
        var items = new List<(Sequencer.Core.Storage.StoredBatch Batch, StoredSignature Signature)>();
        for (var height = from; height <= last; height++)
        {
            if (state.GetBatch(height) is { Header.KeyEpoch: > 0 } batch && state.GetSignature(height) is { } signature)
                items.Add((batch, signature));
        }

        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteStartArray("commitments");
            foreach (var (batch, signature) in items)
            {
                writer.WriteStartObject();
                writer.WriteHeader(batch);
                writer.WriteHash("commitment", batch.Header.Commitment);
                WriteSignature(writer, signature);
                writer.WriteNumber("orderedAtMs", batch.OrderedAtMs);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteDecimal("next", Math.Max(from, last + 1));
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// <c>GET /v1/signing/nonce-uses?skip=N&amp;limit=M</c>: this signer's record of what each nonce pair it used served
    /// (sequence, commitment, height, attempt, message, signers, commitment-list hash): public values, for the INV-NONCE
    /// audit. 404 on a node that does not sign.
    /// </summary>
    private async Task GetNonceUsesAsync(HttpContext context)
    {
        var signer = currentSigner();
        if (signer is null)
        {
            await ApiResponses.WriteErrorAsync(context, 404, "not_a_signer", "this node holds no key share").ConfigureAwait(false);
            return;
        }

        if (!TryQuery(context, "skip", 0, out var skip) || skip > int.MaxValue || !TryQuery(context, "limit", 1000, out var limit) || limit is 0 or > 10_000)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_query", "use ?skip=N&limit=M (M from 1 to 10000)").ConfigureAwait(false);
            return;
        }

        var uses = signer.NonceUses((int)skip, (int)limit);
        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteNumber("signer", signer.Id);
            writer.WriteStartArray("uses");
            foreach (var use in uses)
            {
                writer.WriteStartObject();
                writer.WriteDecimal("epoch", use.Epoch);
                writer.WriteDecimal("sequence", use.Sequence);
                writer.WriteString("commitment", "0x" + Convert.ToHexStringLower(use.Commitment));
                writer.WriteDecimal("height", use.Use.Height);
                writer.WriteNumber("attempt", use.Use.Attempt);
                writer.WriteString("message", "0x" + Convert.ToHexStringLower(use.Use.Message));
                writer.WriteStartArray("signers");
                foreach (var id in use.Use.Signers)
                    writer.WriteNumberValue(id);
                writer.WriteEndArray();
                writer.WriteString("commitmentList", "0x" + Convert.ToHexStringLower(use.Use.CommitmentListHash));
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }).ConfigureAwait(false);
    }

    private static bool TryQuery(HttpContext context, string name, ulong fallback, out ulong value)
    {
        var text = context.Request.Query[name].ToString();
        if (string.IsNullOrEmpty(text))
        {
            value = fallback;
            return true;
        }

        return ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>Writes <c>"signature": {"R", "z"}, "signers": [...], "keyEpoch", "signedAtMs"</c>.</summary>
    internal static void WriteSignature(Utf8JsonWriter writer, StoredSignature signature)
    {
        writer.WriteStartObject("signature");
        writer.WriteString("R", "0x" + Convert.ToHexStringLower(signature.R));
        writer.WriteString("z", "0x" + Convert.ToHexStringLower(signature.Z));
        writer.WriteEndObject();
        writer.WriteStartArray("signers");
        foreach (var id in signature.Signers)
            writer.WriteNumberValue(id);
        writer.WriteEndArray();
        writer.WriteDecimal("keyEpoch", signature.KeyEpoch);
        writer.WriteNumber("signedAtMs", signature.SignedAtMs);
    }

    private async Task GetKeysAsync(HttpContext context)
    {
        var epochs = raft.State.KeyEpochs;
        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/json";
        var writer = new Utf8JsonWriter(context.Response.BodyWriter);
        await using (writer.ConfigureAwait(false))
        {
            writer.WriteStartArray();
            foreach (var epoch in epochs)
            {
                var record = epoch.Record;
                writer.WriteStartObject();
                writer.WriteDecimal("epoch", record.Epoch);
                writer.WriteString("groupKey", "0x" + Convert.ToHexStringLower(record.GroupKey));
                writer.WriteNumber("threshold", record.Threshold);
                writer.WriteStartArray("members");
                foreach (var member in record.Members)
                    writer.WriteNumberValue(member);
                writer.WriteEndArray();
                writer.WriteStartObject("verificationShares");
                for (var i = 0; i < record.Members.Count; i++)
                    writer.WriteString(record.Members[i].ToString(CultureInfo.InvariantCulture), "0x" + Convert.ToHexStringLower(record.VerificationShares[i]));
                writer.WriteEndObject();
                writer.WriteDecimal("raftIndex", (ulong)record.RaftIndex);
                // The first epoch comes from key generation; a rotation (signed by the previous key) is not built yet.
                writer.WriteNull("rotation");
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            await writer.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        }
    }

    private Task GetSigningAsync(HttpContext context)
    {
        var state = raft.State;
        var epoch = state.CurrentKeyEpoch;
        var unsigned = state.UnsignedHeights(options.Limits.SigningWindowBatches);
        var signer = currentSigner();
        var keyGeneration = state.Dkg;
        return ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            WriteDkg(writer, keyGeneration);
            if (epoch is null)
                writer.WriteNull("keyEpoch");
            else
                writer.WriteDecimal("keyEpoch", epoch.Epoch);
            writer.WriteNumber("threshold", epoch?.Group.Threshold ?? 0);
            writer.WriteDecimal("height", state.LastHeader?.Height ?? 0);
            writer.WriteDecimal("signedThrough", state.SignedWatermark);
            writer.WriteNumber("unsignedInWindow", unsigned.Count);
            writer.WriteNumber("activeSessions", coordinator.ActiveSessions);
            if (signer is null)
            {
                writer.WriteNull("signer");
            }
            else
            {
                writer.WriteStartObject("signer");
                writer.WriteNumber("id", signer.Id);
                writer.WriteNumber("storedNonces", signer.StoredNonces);
                writer.WriteNumber("publishedNonces", state.CommitmentsOf(signer.Id).Available);
                writer.WriteString("fault", FaultName(signer.Fault));
                writer.WriteEndObject();
            }

            // The leader's view: who signs, who sent bad shares (reported by id), who timed out.
            writer.WriteBoolean("leaderView", raft.IsLeader);
            writer.WriteStartArray("signers");
            foreach (var report in coordinator.Signers())
            {
                writer.WriteStartObject();
                writer.WriteNumber("id", report.Id);
                writer.WriteNumber("sharesAccepted", report.SharesAccepted);
                writer.WriteNumber("badShares", report.BadShares);
                writer.WriteDecimal("lastBadShareHeight", report.LastBadShareHeight);
                writer.WriteNumber("timeouts", report.Timeouts);
                writer.WriteNumber("excludedForMs", report.ExcludedForMs);
                writer.WriteNumber("shareLatencyMs", report.ShareLatencyMs);
                writer.WriteNumber("publishedNonces", state.CommitmentsOf(report.Id).Available);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        });
    }

    private async Task PostSharesAsync(HttpContext context)
    {
        using var budgeted = await ReadInternalBodyAsync(context).ConfigureAwait(false);
        if (budgeted?.Bytes is not { } body)
            return;
        SignatureSharesMessage message;
        try
        {
            message = SignatureSharesMessage.Decode(body);
        }
        catch (LogFormatException e)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_shares", e.Message).ConfigureAwait(false);
            return;
        }

        if (!raft.IsLeader)
        {
            await ApiResponses.WriteErrorAsync(context, 503, "not_leader", "this node is not the leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            return;
        }

        var epoch = raft.State.KeyEpochs.FirstOrDefault(e => e.Epoch == message.KeyEpoch);
        if (epoch is null || !epoch.Group.VerificationShares.TryGetValue(message.SignerId, out var publicShare))
        {
            await ApiResponses.WriteErrorAsync(context, 404, "unknown_signer", $"signer {message.SignerId} is not a member of key epoch {message.KeyEpoch}").ConfigureAwait(false);
            return;
        }

        if (!SignerProof.Verify(SignatureSharesMessage.ProofDomain, message.ProofPayload(), message.Proof, publicShare))
        {
            await ApiResponses.WriteErrorAsync(context, 403, "bad_proof", $"the message is not signed by signer {message.SignerId}'s key share").ConfigureAwait(false);
            return;
        }

        if (!coordinator.Receive(message))
        {
            await ApiResponses.WriteErrorAsync(context, 503, "overloaded", "the leader's share queue is full", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            return;
        }

        context.Response.StatusCode = 202;
    }

    private async Task PostNonceCommitmentsAsync(HttpContext context)
    {
        if (await ReadInternalCommandAsync(context).ConfigureAwait(false) is not { } entry)
            return;
        using var budgeted = entry.Body;
        var (body, command) = (entry.Body.Bytes!, entry.Command);

        if (command is not NonceCommitmentsCommand commitments)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_entry", "only a NonceCommitments entry is accepted here").ConfigureAwait(false);
            return;
        }

        if (!raft.IsLeader)
        {
            await ApiResponses.WriteErrorAsync(context, 503, "not_leader", "this node is not the leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            return;
        }

        // Checked here too (apply checks it again) so that nobody can fill the log with entries that apply ignores.
        var epoch = raft.State.CurrentKeyEpoch;
        if (epoch is null || epoch.Epoch != commitments.KeyEpoch || !epoch.Group.VerificationShares.TryGetValue(commitments.SignerId, out var publicShare)
            || commitments.Commitments.Count is 0 or > AppliedState.MaxCommitmentsPerEntry
            || !SignerProof.Verify(AppliedState.NonceCommitmentsProofDomain, commitments.ProofPayload(), commitments.Proof, publicShare))
        {
            await ApiResponses.WriteErrorAsync(context, 403, "bad_proof", "not a NonceCommitments entry of a signer of the current key epoch, signed by its share").ConfigureAwait(false);
            return;
        }

        await ReplicateInternalAsync(context, body).ConfigureAwait(false);
    }

    private async Task SetSignerFaultAsync(HttpContext context)
    {
        if (!await AdminApi.AuthorizeAsync(options, context).ConfigureAwait(false))
            return;
        var signer = currentSigner();
        if (signer is null)
        {
            await ApiResponses.WriteErrorAsync(context, 409, "not_a_signer", "this node holds no key share").ConfigureAwait(false);
            return;
        }

        using var budgeted = await budget.ReadBodyAsync(context, AdminApi.MaxBodyBytes).ConfigureAwait(false);
        if (budgeted.Bytes is not { } body)
        {
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
            return;
        }

        SignerFault? fault;
        try
        {
            using var document = JsonDocument.Parse(body);
            fault = document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("fault", out var value) && value.ValueKind == JsonValueKind.String
                ? NodeOptions.ParseSignerFault(value.GetString())
                : null;
        }
        catch (JsonException e)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "malformed_json", e.Message).ConfigureAwait(false);
            return;
        }

        if (fault is null)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_request", "the body is {\"fault\": \"none\" | \"wrong-shares\" | \"silent\"}").ConfigureAwait(false);
            return;
        }

        signer.Fault = fault.Value;
        await ApiResponses.WriteJsonAsync(context, 200, writer => writer.WriteString("fault", FaultName(fault.Value))).ConfigureAwait(false);
    }

    // "dkg": the key generation in progress (null when none): epoch, attempt, stage and who has sent what.
    private static void WriteDkg(Utf8JsonWriter writer, DkgView? view)
    {
        if (view is null)
        {
            writer.WriteNull("dkg");
            return;
        }

        writer.WriteStartObject("dkg");
        writer.WriteDecimal("epoch", view.Epoch);
        writer.WriteNumber("attempt", view.Attempt);
        writer.WriteNumber("threshold", view.Threshold);
        writer.WriteString("stage", view.Stage);
        WriteIds(writer, "members", view.Members);
        WriteIds(writer, "round1", view.Round1.Keys.Order());
        WriteIds(writer, "round2", view.Round2.Keys.Order());
        WriteIds(writer, "confirmed", view.Confirmed.Order());
        if (view.Failure is null)
            writer.WriteNull("failure");
        else
            writer.WriteString("failure", view.Failure);
        writer.WriteEndObject();
    }

    private static void WriteIds(Utf8JsonWriter writer, string name, IEnumerable<int> ids)
    {
        writer.WriteStartArray(name);
        foreach (var id in ids)
            writer.WriteNumberValue(id);
        writer.WriteEndArray();
    }

    /// <summary>The leader's intake of DKG entries (internal, MessagePack): checked against the log's DKG state, then replicated.</summary>
    private async Task PostDkgAsync(HttpContext context)
    {
        if (await ReadInternalCommandAsync(context).ConfigureAwait(false) is not { } entry)
            return;
        using var budgeted = entry.Body;
        var (body, command) = (entry.Body.Bytes!, entry.Command);

        if (command is not (DkgStartCommand or DkgRound1Command or DkgRound2Command or DkgConfirmCommand or DkgComplaintCommand))
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_entry", "only DKG entries are accepted here").ConfigureAwait(false);
            return;
        }

        if (!raft.IsLeader)
        {
            await ApiResponses.WriteErrorAsync(context, 503, "not_leader", "this node is not the leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            return;
        }

        // Checked here too (apply checks it again) so that nobody can fill the log with entries that apply ignores.
        if (raft.State.DkgRejection(command) is { } reason)
        {
            await ApiResponses.WriteErrorAsync(context, 409, "dkg_rejected", reason).ConfigureAwait(false);
            return;
        }

        await ReplicateInternalAsync(context, body).ConfigureAwait(false);
    }

    /// <summary><c>POST /admin/dkg {"threshold": t}</c>: starts a key generation among the members of a cluster that has no key.</summary>
    private async Task StartDkgAsync(HttpContext context)
    {
        if (!await AdminApi.AuthorizeAsync(options, context).ConfigureAwait(false))
            return;
        using var budgeted = await budget.ReadBodyAsync(context, AdminApi.MaxBodyBytes).ConfigureAwait(false);
        if (budgeted.Bytes is not { } body)
        {
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
            return;
        }

        int threshold;
        try
        {
            using var document = JsonDocument.Parse(body);
            if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("threshold", out var value)
                || value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out threshold) || threshold < 1 || threshold > options.Members.Count)
            {
                await ApiResponses.WriteErrorAsync(context, 400, "bad_request", $"the body is {{\"threshold\": t}} with t in [1, {options.Members.Count}]").ConfigureAwait(false);
                return;
            }
        }
        catch (JsonException e)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "malformed_json", e.Message).ConfigureAwait(false);
            return;
        }

        if (await dkg.RequestAsync(threshold, context.RequestAborted).ConfigureAwait(false) is { } reason)
        {
            await ApiResponses.WriteErrorAsync(context, 409, "dkg_refused", reason).ConfigureAwait(false);
            return;
        }

        await ApiResponses.WriteJsonAsync(context, 202, writer =>
        {
            writer.WriteNumber("threshold", threshold);
            writer.WriteNumber("members", options.Members.Count);
        }).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public void Dispose() => publications.Dispose();

    private static string FaultName(SignerFault fault) => fault switch
    {
        SignerFault.WrongShares => "wrong-shares",
        SignerFault.Silent => "silent",
        _ => "none",
    };

    private async Task ReplicateInternalAsync(HttpContext context, byte[] body)
    {
        if (!await publications.WaitAsync(0, context.RequestAborted).ConfigureAwait(false))
        {
            await ApiResponses.WriteErrorAsync(context, 503, "overloaded", "too many publications in flight", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            return;
        }

        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, raft.LeadershipToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            await raft.ReplicateAsync(body, null, timeout.Token).ConfigureAwait(false);
            context.Response.StatusCode = 204;
        }
        catch (Exception e) when (e is OperationCanceledException or DotNext.Net.Cluster.Consensus.Raft.NotLeaderException or InvalidOperationException)
        {
            await ApiResponses.WriteErrorAsync(context, 503, "not_committed", "the entry did not commit in time; publish again", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        }
        finally
        {
            publications.Release();
        }
    }

    // An internal route's body as a log entry: the raw bytes (replicated as they are, with their reservation) and the
    // decoded command, or null once a 4xx has been written.
    private async Task<(BudgetedBody Body, ILogCommand Command)?> ReadInternalCommandAsync(HttpContext context)
    {
        var budgeted = await ReadInternalBodyAsync(context).ConfigureAwait(false);
        if (budgeted?.Bytes is not { } body)
        {
            budgeted?.Dispose();
            return null;
        }

        try
        {
            return (budgeted, LogCommandCodec.Decode(new System.Buffers.ReadOnlySequence<byte>(body)));
        }
        catch (LogFormatException e)
        {
            budgeted.Dispose();
            await ApiResponses.WriteErrorAsync(context, 400, "bad_entry", e.Message).ConfigureAwait(false);
            return null;
        }
    }

    // An internal route's body within the node's request budget, or null (or a refusal) once an error has been written.
    private async Task<BudgetedBody?> ReadInternalBodyAsync(HttpContext context)
    {
        if (!string.Equals(context.Request.ContentType, "application/x-msgpack", StringComparison.OrdinalIgnoreCase))
        {
            await ApiResponses.WriteErrorAsync(context, 415, "unsupported_media_type", "internal routes take application/x-msgpack").ConfigureAwait(false);
            return null;
        }

        var budgeted = await budget.ReadBodyAsync(context, MaxInternalBodyBytes).ConfigureAwait(false);
        if (budgeted.Bytes is null)
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
        return budgeted;
    }
}
