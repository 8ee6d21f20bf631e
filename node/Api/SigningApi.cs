using Microsoft.Extensions.Logging;
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
using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Node.Api;

/// <summary>
/// The signing routes: signed heads, coverage proofs and keys (DESIGN section 10), the leader's view of the signers,
/// the internal routes signers use to reach the leader, and the Byzantine-signer fault for the chaos harness.
/// </summary>
public sealed partial class SigningApi(NodeOptions options, RaftHost raft, HeadSigningCoordinator coordinator, Func<SignerService?> currentSigner, DkgService dkg,
    ReadBarrier barrier, LeaderIntake intake, RequestBudget budget, RequestBudget internalBudget, ILogger logger)
{
    /// <summary>
    /// The in-flight bytes of the internal routes, apart from the public budget: slow public submits that hold the
    /// public budget must not refuse the members' shares, nonce commitments and DKG messages (a refused share blames
    /// its signer), so public clients cannot stop signing by holding their requests open.
    /// </summary>
    public const long InternalBudgetBytes = 64L * MaxInternalBodyBytes;

    /// <summary>The largest internal request body.</summary>
    public const int MaxInternalBodyBytes = 1024 * 1024;

    /// <summary>The most heads in one <c>GET /v1/heads</c> answer.</summary>
    public const int MaxHeads = 1000;

    /// <summary>Maps the routes.</summary>
    public void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapGet("/v1/commitments/{height}", GetCommitmentAsync);
        routes.MapGet("/v1/heads", GetHeadsAsync);
        routes.MapGet("/v1/stream/heads", StreamHeadsAsync);
        routes.MapGet("/v1/signing/nonce-uses", GetNonceUsesAsync);
        routes.MapGet("/v1/keys", GetKeysAsync);
        routes.MapGet("/v1/signing", GetSigningAsync);
        routes.MapPost(LeaderChannel.SharesRoute, PostSharesAsync);
        routes.MapPost(SessionChannel.Route, PostSessionsAsync);
        routes.MapPost(LeaderChannel.NonceCommitmentsRoute, PostIntakeAsync);
        routes.MapPost("/admin/signer-fault", SetSignerFaultAsync);
        routes.MapPost(LeaderChannel.DkgRoute, PostIntakeAsync);
        routes.MapPost("/admin/dkg", StartDkgAsync);
        routes.MapPost("/admin/keys/rotate", RotateKeyAsync);
    }

    /// <summary>The most head streams a node serves at once; more get 429.</summary>
    public const int MaxHeadStreams = 64;

    private static int headStreams;

    /// <summary>
    /// <c>GET /v1/stream/heads?from=H</c> (Server-Sent Events): one <c>head</c> event per signed head at or above H, in
    /// height order, each with <c>linkFrom</c> (the previous event's head, or H - 1 for the first) and
    /// <c>linkProof</c>, the audit path of that height's commitment in this head's <c>historyRoot</c> (empty when
    /// linkFrom is 0). A client resuming after head L asks for <c>from=L+1</c> and gets its link from L. The stream reads
    /// the applied state as the client takes events (a slow client slows only its own stream: nothing is queued for
    /// it), sends a comment every 15 s while idle, and at most <see cref="MaxHeadStreams"/> are served at once.
    /// </summary>
    private async Task StreamHeadsAsync(HttpContext context)
    {
        if (!TryQuery(context, "from", 1, out var from) || from == 0)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_query", "use ?from=HEIGHT (>= 1)").ConfigureAwait(false);
            return;
        }

        if (Interlocked.Increment(ref headStreams) > MaxHeadStreams)
        {
            Interlocked.Decrement(ref headStreams);
            context.Response.Headers.RetryAfter = "5";
            await ApiResponses.WriteErrorAsync(context, 429, "too_many_streams", $"this node serves at most {MaxHeadStreams} head streams at once").ConfigureAwait(false);
            return;
        }

        try
        {
            var token = context.RequestAborted;
            context.Response.StatusCode = 200;
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            await context.Response.Body.FlushAsync(token).ConfigureAwait(false);
            var state = raft.State;
            var next = from;
            var linkFrom = from - 1;
            var idleSince = Environment.TickCount64;
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(4096);
            while (!token.IsCancellationRequested)
            {
                var heads = state.Heads(next, 100);
                if (heads.Count == 0)
                {
                    if (Environment.TickCount64 - idleSince > 15_000)
                    {
                        await context.Response.Body.WriteAsync(": idle\n\n"u8.ToArray(), token).ConfigureAwait(false);
                        await context.Response.Body.FlushAsync(token).ConfigureAwait(false);
                        idleSince = Environment.TickCount64;
                    }

                    await Task.Delay(100, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                    continue;
                }

                foreach (var head in heads)
                {
                    var batch = state.GetBatch(head.Height);
                    Invariant.Check(batch is not null, $"signed head {head.Height} is an applied batch");
                    var proof = linkFrom == 0 ? [] : HistoryTree.AuditPath(state.History, linkFrom - 1, head.Height - 1);
                    buffer.Clear();
                    using (var writer = new Utf8JsonWriter(buffer))
                    {
                        writer.WriteStartObject();
                        WriteHead(writer, batch!, head);
                        writer.WriteDecimal("linkFrom", linkFrom);
                        writer.WriteHashes("linkProof", proof);
                        writer.WriteEndObject();
                    }

                    var body = context.Response.Body;
                    await body.WriteAsync(System.Text.Encoding.ASCII.GetBytes($"event: head\nid: {head.Height.ToString(CultureInfo.InvariantCulture)}\ndata: "), token).ConfigureAwait(false);
                    await body.WriteAsync(buffer.WrittenMemory, token).ConfigureAwait(false);
                    await body.WriteAsync("\n\n"u8.ToArray(), token).ConfigureAwait(false);
                    linkFrom = head.Height;
                    next = head.Height + 1;
                }

                await context.Response.Body.FlushAsync(token).ConfigureAwait(false);
                idleSince = Environment.TickCount64;
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away.
        }
        catch (IOException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away mid-write.
        }
        finally
        {
            Interlocked.Decrement(ref headStreams);
        }
    }

    /// <summary>
    /// <c>GET /v1/commitments/{height}</c>: the header, its commitment, the lowest signed head that covers it, and the
    /// audit path of the commitment in that head's history root (empty when the height is itself the head).
    /// </summary>
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

        if (state.CoveringHead(value) is not { } head)
        {
            await ApiResponses.WriteErrorAsync(context, 404, "not_signed", $"batch {value} is ordered, but no signed head covers it yet").ConfigureAwait(false);
            return;
        }

        var headBatch = head.Height == value ? batch : state.GetBatch(head.Height);
        Invariant.Check(headBatch is not null, $"signed head {head.Height} is an applied batch");
        var proof = head.Height == value ? [] : HistoryTree.AuditPath(state.History, value - 1, head.Height - 1);
        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteHeader(batch);
            writer.WriteHash("commitment", batch.Header.Commitment);
            writer.WriteStartObject("head");
            WriteHead(writer, headBatch, head);
            writer.WriteEndObject();
            writer.WriteStartArray("historyProof");
            foreach (var node in proof)
                writer.WriteStringValue(node.ToString());
            writer.WriteEndArray();
            writer.WriteNumber("orderedAtMs", batch.OrderedAtMs);
        }).ConfigureAwait(false);
    }

    /// <summary><c>GET /v1/heads?from=H&amp;limit=N</c>: signed heads from height H upwards, ascending, and <c>next</c>, the height to ask from next.</summary>
    private async Task GetHeadsAsync(HttpContext context)
    {
        if (!TryQuery(context, "from", 1, out var from) || from == 0 || !TryQuery(context, "limit", 100, out var limit) || limit is 0 or > MaxHeads)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_query", $"use ?from=HEIGHT (>= 1) and optionally &limit=N (1 to {MaxHeads})").ConfigureAwait(false);
            return;
        }

        var state = raft.State;
        var heads = state.Heads(from, (int)limit).Select(h => (Head: h, Batch: state.GetBatch(h.Height))).ToList();
        Invariant.Check(heads.All(h => h.Batch is not null), "every signed head is an applied batch");
        await ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteStartArray("heads");
            foreach (var (head, batch) in heads)
            {
                writer.WriteStartObject();
                WriteHead(writer, batch!, head);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteDecimal("next", heads.Count == 0 ? from : heads[^1].Head.Height + 1);
        }).ConfigureAwait(false);
    }

    /// <summary>Writes a signed head's members: header, commitment, signature, signers, keyEpoch, signedAtMs.</summary>
    internal static void WriteHead(Utf8JsonWriter writer, StoredBatch batch, SignedHead head)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ArgumentNullException.ThrowIfNull(head);
        writer.WriteHeader(batch);
        writer.WriteHash("commitment", batch.Header.Commitment);
        WriteSignature(writer, head);
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
    private static void WriteSignature(Utf8JsonWriter writer, SignedHead signature)
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
                writer.WriteDecimal("raftIndex", (ulong)record.InForceFrom);
                if (record.Rotation is { } rotation)
                {
                    // The previous epoch's signature over the hand-over: a light client that trusts that epoch's key
                    // checks it with nothing else (the message is computed from the chain id, the epochs and this key).
                    writer.WriteStartObject("rotation");
                    writer.WriteDecimal("fromEpoch", rotation.FromEpoch);
                    writer.WriteString("message", "0x" + Convert.ToHexStringLower(KeyRotationMessage.Compute(options.ChainId, rotation.FromEpoch, record.Epoch, record.GroupKey)));
                    writer.WriteStartObject("signature");
                    writer.WriteString("R", "0x" + Convert.ToHexStringLower(rotation.R));
                    writer.WriteString("z", "0x" + Convert.ToHexStringLower(rotation.Z));
                    writer.WriteEndObject();
                    WriteIds(writer, "signers", rotation.Signers);
                    writer.WriteNumber("signedAtMs", rotation.SignedAtMs);
                    writer.WriteEndObject();
                }
                else
                {
                    writer.WriteNull("rotation");
                }

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
        var signer = currentSigner();
        var keyGeneration = state.Dkg;
        var flights = coordinator.Flights;
        var (sessionsStarted, headsSigned) = coordinator.Counters;
        return ApiResponses.WriteJsonAsync(context, 200, writer =>
        {
            WriteDkg(writer, keyGeneration);
            if (epoch is null)
                writer.WriteNull("keyEpoch");
            else
                writer.WriteDecimal("keyEpoch", epoch.Epoch);
            // A key epoch that a rotation's key generation made, waiting for the current epoch's hand-over signature.
            if (state.PendingKeyEpoch is { } pending)
                writer.WriteDecimal("pendingKeyEpoch", pending.Epoch);
            else
                writer.WriteNull("pendingKeyEpoch");
            writer.WriteNumber("signerEpoch", signer?.Epoch ?? 0);
            writer.WriteNumber("threshold", epoch?.Group.Threshold ?? 0);
            writer.WriteDecimal("height", state.LastHeader?.Height ?? 0);
            writer.WriteDecimal("signedThrough", state.SignedThrough);
            writer.WriteNumber("sessionsStarted", sessionsStarted);
            writer.WriteNumber("headsSigned", headsSigned);
            writer.WriteStartArray("sessions");
            foreach (var flight in flights)
            {
                writer.WriteStartObject();
                writer.WriteDecimal("head", flight.Session.Height);
                writer.WriteNumber("attempt", flight.Session.Attempt);
                writer.WriteString("stage", flight.Stage.ToString().ToLowerInvariant());
                writer.WriteBoolean("inline", flight.Inline);
                WriteIds(writer, "signers", flight.Session.Signers);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
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

            // The leader's view: who signs, who sent bad shares (reported by id), who timed out, who is left out.
            writer.WriteBoolean("leaderView", raft.IsLeader);
            writer.WriteStartArray("signers");
            foreach (var report in coordinator.Signers())
            {
                writer.WriteStartObject();
                writer.WriteNumber("id", report.Id);
                writer.WriteNumber("sharesAccepted", report.SharesAccepted);
                writer.WriteNumber("badShares", report.BadShares);
                writer.WriteNumber("offences", report.Offences);
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

        if (Security.InternalCaller.Refusal(context, message.SignerId, options.CertificatesDirectory is not null) is { } impersonation)
        {
            LogImpersonation(logger, "signature shares message", impersonation);
            await ApiResponses.WriteErrorAsync(context, 403, "wrong_sender", impersonation).ConfigureAwait(false);
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

    /// <summary>
    /// A signer's side of a direct session (<see cref="SessionChannel"/>): only the member this node knows as its leader
    /// may ask (with certificates, the one whose certificate made the connection); the signer checks the head against
    /// its own applied header and answers with its shares (a shares message), or with why not.
    /// </summary>
    private async Task PostSessionsAsync(HttpContext context)
    {
        using var budgeted = await ReadInternalBodyAsync(context).ConfigureAwait(false);
        if (budgeted?.Bytes is not { } body)
            return;
        SessionRequestMessage request;
        try
        {
            request = SessionRequestMessage.Decode(body);
        }
        catch (LogFormatException e)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_request", e.Message).ConfigureAwait(false);
            return;
        }

        if (Security.InternalCaller.Refusal(context, request.LeaderId, options.CertificatesDirectory is not null) is { } impersonation)
        {
            LogImpersonation(logger, "session request", impersonation);
            await ApiResponses.WriteErrorAsync(context, 403, "wrong_sender", impersonation).ConfigureAwait(false);
            return;
        }

        if (raft.Leader?.Id != request.LeaderId)
        {
            await ApiResponses.WriteErrorAsync(context, 409, "not_leader", $"member {request.LeaderId} is not this node's leader ({raft.Leader?.Id.ToString(CultureInfo.InvariantCulture) ?? "none known"})").ConfigureAwait(false);
            return;
        }

        if (currentSigner() is not { } signer)
        {
            await ApiResponses.WriteErrorAsync(context, 409, "not_signing", "this node holds no key share").ConfigureAwait(false);
            return;
        }

        // The leader asks only once it has applied the head, so it has committed it; this node learns that commit from
        // the leader's next AppendEntries, which at saturation arrives behind a megabyte or two of entries. The commit
        // index the leader sent with the request comes sooner (trusted as far as AppendEntries' own, see RaftHost).
        if (options.Limits.SessionCommitHints && request.CommitIndex > 0)
        {
            using var bound = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
            bound.CancelAfter(options.Limits.SigningLateShareMs);
            try
            {
                await raft.CommitAsLeaderSaysAsync(request.LeaderId, request.Term, request.CommitIndex, bound.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!context.RequestAborted.IsCancellationRequested)
            {
                // The entries are still being flushed: the signer waits for the apply as it always did.
            }
        }

        var answer = await signer.AnswerDirectAsync(request, context.RequestAborted).ConfigureAwait(false);
        if (answer.Shares is not { } shares)
        {
            await ApiResponses.WriteErrorAsync(context, answer.Status, answer.Code ?? "refused", answer.Reason ?? "refused").ConfigureAwait(false);
            return;
        }

        var encoded = shares.Encode();
        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/x-msgpack";
        context.Response.ContentLength = encoded.Length;
        await context.Response.Body.WriteAsync(encoded, context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>
    /// The leader's intake of entries from other nodes (nonce commitments, DKG messages): checked as apply would check
    /// them (<see cref="LeaderIntake"/>), then replicated; answered once committed.
    /// </summary>
    private async Task PostIntakeAsync(HttpContext context)
    {
        if (await ReadInternalCommandAsync(context).ConfigureAwait(false) is not { } entry)
            return;
        using var budgeted = entry.Body;
        var (body, command) = (entry.Body.Bytes!, entry.Command);
        var dkgRoute = context.Request.Path.Value == LeaderChannel.DkgRoute;
        var expected = dkgRoute
            ? command is DkgStartCommand or IDkgMessage
            : command is NonceCommitmentsCommand;
        if (!expected)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "bad_entry", $"a {command.GetType().Name} is not taken at {context.Request.Path}").ConfigureAwait(false);
            return;
        }

        // The sender the entry names must be the member whose certificate made this connection.
        int? claimed = command switch
        {
            NonceCommitmentsCommand c => c.SignerId,
            IDkgMessage c => c.From,
            _ => null,
        };
        if (claimed is { } sender && Security.InternalCaller.Refusal(context, sender, options.CertificatesDirectory is not null) is { } impersonation)
        {
            LogImpersonation(logger, command.GetType().Name, impersonation);
            await ApiResponses.WriteErrorAsync(context, 403, "wrong_sender", impersonation).ConfigureAwait(false);
            return;
        }

        var result = await intake.SubmitAsync(command, body, context.RequestAborted).ConfigureAwait(false);
        switch (result.Status)
        {
            case IntakeStatus.Committed:
                context.Response.StatusCode = 204;
                break;
            case IntakeStatus.Refused:
                await ApiResponses.WriteErrorAsync(context, dkgRoute ? 409 : 403, dkgRoute ? "dkg_rejected" : "bad_proof", result.Reason ?? "refused").ConfigureAwait(false);
                break;
            case IntakeStatus.NotLeader:
                await ApiResponses.WriteErrorAsync(context, 503, "not_leader", "this node is not the leader", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                break;
            case IntakeStatus.Busy:
                await ApiResponses.WriteErrorAsync(context, 503, "overloaded", result.Reason ?? "busy", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                break;
            default:
                await ApiResponses.WriteErrorAsync(context, 503, "not_committed", "the entry did not commit in time; publish again", TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                break;
        }
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
        writer.WriteStartObject("disqualified");
        foreach (var (member, why) in view.Disqualified.OrderBy(d => d.Key))
            writer.WriteString(member.ToString(System.Globalization.CultureInfo.InvariantCulture), why);
        writer.WriteEndObject();
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

    /// <summary><c>POST /admin/dkg {"threshold": t}</c>: starts a key generation among the members of a cluster that has no key.</summary>
    private async Task StartDkgAsync(HttpContext context)
    {
        if (await ReadThresholdAsync(context, required: true).ConfigureAwait(false) is not (true, { } threshold))
            return;
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

    /// <summary>
    /// <c>POST /admin/keys/rotate</c>, optionally <c>{"threshold": t}</c>: this member's vote for a rotation. Once t
    /// members (the threshold of the key in force) voted for the same threshold, a key generation among the configured
    /// members makes key epoch n + 1, which comes into force once key epoch n signs the hand-over (<c>GET /v1/keys</c>
    /// then shows it with its rotation proof, and the L1 poster rotates the contract's key before the first head of the
    /// new epoch). 202 with the votes so far (<c>votes</c>, <c>votesNeeded</c>) when the vote is in or the rotation under
    /// way; 409 with the reason when it cannot be.
    /// </summary>
    private async Task RotateKeyAsync(HttpContext context)
    {
        var (ok, requested) = await ReadThresholdAsync(context, required: false).ConfigureAwait(false);
        if (!ok)
            return;
        if (await dkg.RequestRotationAsync(requested, context.RequestAborted).ConfigureAwait(false) is { } reason)
        {
            await ApiResponses.WriteErrorAsync(context, 409, "rotation_refused", reason).ConfigureAwait(false);
            return;
        }

        var state = raft.State;
        await ApiResponses.WriteJsonAsync(context, 202, writer =>
        {
            writer.WriteDecimal("currentEpoch", state.CurrentKeyEpoch?.Epoch ?? 0);
            writer.WriteDecimal("nextEpoch", (state.CurrentKeyEpoch?.Epoch ?? 0) + 1);
            var dkgView = state.Dkg;
            writer.WriteString("stage", state.PendingKeyEpoch is not null ? "hand-over" : dkgView is not null && dkgView.Epoch == (state.CurrentKeyEpoch?.Epoch ?? 0) + 1 ? "dkg" : "votes");
            var (needed, votes) = dkg.RotationVotes;
            writer.WriteNumber("votesNeeded", needed);
            writer.WriteStartObject("votes");
            foreach (var (threshold, voters) in votes)
            {
                writer.WriteStartArray(threshold.ToString(System.Globalization.CultureInfo.InvariantCulture));
                foreach (var voter in voters)
                    writer.WriteNumberValue(voter);
                writer.WriteEndArray();
            }

            writer.WriteEndObject();
        }).ConfigureAwait(false);
    }

    // An admin key-generation request: authorized, its body read within the budget, and {"threshold": t} with t in
    // [1, n] (optional unless required: an empty body or no field gives null). Not ok once a 4xx has been written.
    private async Task<(bool Ok, int? Threshold)> ReadThresholdAsync(HttpContext context, bool required)
    {
        if (!await AdminApi.AuthorizeAsync(options, context).ConfigureAwait(false))
            return (false, null);
        using var budgeted = await budget.ReadBodyAsync(context, AdminApi.MaxBodyBytes).ConfigureAwait(false);
        if (budgeted.Bytes is not { } body)
        {
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
            return (false, null);
        }

        var shape = required ? "{\"threshold\": t}" : "empty or {\"threshold\": t}";
        if (body.Length == 0 && !required)
            return (true, null);
        try
        {
            using var document = JsonDocument.Parse(body);
            var root = document.RootElement;
            var given = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("threshold", out var value) ? value : (JsonElement?)null;
            if (root.ValueKind != JsonValueKind.Object || (given is null && required)
                || (given is { } field && (field.ValueKind != JsonValueKind.Number || !field.TryGetInt32(out var t) || t < 1 || t > options.Members.Count)))
            {
                await ApiResponses.WriteErrorAsync(context, 400, "bad_request", $"the body is {shape} with t in [1, {options.Members.Count}]").ConfigureAwait(false);
                return (false, null);
            }

            return (true, given?.GetInt32());
        }
        catch (JsonException e)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "malformed_json", e.Message).ConfigureAwait(false);
            return (false, null);
        }
    }

    private static string FaultName(SignerFault fault) => fault switch
    {
        SignerFault.WrongShares => "wrong-shares",
        SignerFault.Silent => "silent",
        _ => "none",
    };

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

        var budgeted = await internalBudget.ReadBodyAsync(context, MaxInternalBodyBytes).ConfigureAwait(false);
        if (budgeted.Bytes is null)
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
        return budgeted;
    }

    // The logger is a throttled one (ThrottledLoggerFactory): a member that keeps trying cannot flood the log.
    [LoggerMessage(EventId = 320, Level = LogLevel.Warning, Message = "Refused a {What} on the internal listener: {Reason}")]
    private static partial void LogImpersonation(ILogger logger, string what, string reason);
}
