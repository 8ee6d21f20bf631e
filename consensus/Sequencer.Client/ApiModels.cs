using System.Text.Json.Serialization;

namespace Sequencer.Client;

// The wire types of DESIGN section 10. Hashes are 0x-prefixed lower-case hex; numbers that can exceed 2^53
// (heights, chain ids, key epochs, Raft terms and indexes) are decimal strings.

/// <summary>One submitted tx's position.</summary>
public sealed record SubmitResult(
    [property: JsonPropertyName("hash")] string Hash,
    [property: JsonPropertyName("height")] string Height,
    [property: JsonPropertyName("index")] int Index);

/// <summary>The answer to <c>POST /v1/txs</c>, one result per tx in request order.</summary>
public sealed record SubmitResponse([property: JsonPropertyName("results")] IReadOnlyList<SubmitResult> Results);

/// <summary>A batch header.</summary>
public sealed record HeaderDto(
    [property: JsonPropertyName("chainId")] string ChainId,
    [property: JsonPropertyName("keyEpoch")] string KeyEpoch,
    [property: JsonPropertyName("height")] string Height,
    [property: JsonPropertyName("term")] string Term,
    [property: JsonPropertyName("parentHash")] string ParentHash,
    [property: JsonPropertyName("historyRoot")] string HistoryRoot,
    [property: JsonPropertyName("txRoot")] string TxRoot,
    [property: JsonPropertyName("txCount")] long TxCount,
    [property: JsonPropertyName("timestampMs")] long TimestampMs)
{
    /// <summary>Rebuilds the header (and so recomputes its commitment) from its API form.</summary>
    /// <exception cref="FormatException">A field is not a number or a 0x hash.</exception>
    /// <exception cref="OverflowException">A number is out of range.</exception>
    public Sequencer.Core.Ordering.BatchHeader ToHeader() => new(
        ulong.Parse(ChainId, System.Globalization.CultureInfo.InvariantCulture),
        ulong.Parse(KeyEpoch, System.Globalization.CultureInfo.InvariantCulture),
        ulong.Parse(Height, System.Globalization.CultureInfo.InvariantCulture),
        ulong.Parse(Term, System.Globalization.CultureInfo.InvariantCulture),
        Sequencer.Core.Hashing.Hash32.Parse(ParentHash ?? throw new FormatException("the header has no parentHash")),
        Sequencer.Core.Hashing.Hash32.Parse(HistoryRoot ?? throw new FormatException("the header has no historyRoot (a v1 header?)")),
        Sequencer.Core.Hashing.Hash32.Parse(TxRoot ?? throw new FormatException("the header has no txRoot")),
        checked((uint)TxCount),
        checked((ulong)TimestampMs));
}

/// <summary>The answer to <c>GET /v1/batches/{height}</c>.</summary>
public sealed record BatchResponse(
    [property: JsonPropertyName("header")] HeaderDto Header,
    [property: JsonPropertyName("hash")] string Hash,
    [property: JsonPropertyName("txs")] IReadOnlyList<string> Txs);

/// <summary>The answer to <c>GET /v1/txs/{hash}</c>.</summary>
public sealed record TxStatusResponse(
    [property: JsonPropertyName("hash")] string Hash,
    [property: JsonPropertyName("level")] string Level,
    [property: JsonPropertyName("height")] string? Height,
    [property: JsonPropertyName("index")] int? Index,
    [property: JsonPropertyName("proof")] IReadOnlyList<string> Proof,
    [property: JsonPropertyName("times")] IReadOnlyDictionary<string, long> Times);

/// <summary>One member of the cluster.</summary>
public sealed record MemberDto(
    [property: JsonPropertyName("id")] int Id,
    [property: JsonPropertyName("raft")] string Raft,
    [property: JsonPropertyName("api")] string Api);

/// <summary>The answer to <c>GET /v1/cluster</c>.</summary>
public sealed record ClusterResponse(
    [property: JsonPropertyName("nodeId")] int NodeId,
    [property: JsonPropertyName("role")] string Role,
    [property: JsonPropertyName("leader")] int? Leader,
    [property: JsonPropertyName("term")] string Term,
    [property: JsonPropertyName("commitIndex")] string CommitIndex,
    [property: JsonPropertyName("appliedIndex")] string AppliedIndex,
    [property: JsonPropertyName("height")] string Height,
    [property: JsonPropertyName("members")] IReadOnlyList<MemberDto> Members,
    [property: JsonPropertyName("limits")] IReadOnlyDictionary<string, long> Limits,
    [property: JsonPropertyName("pipeline")] IReadOnlyDictionary<string, long>? Pipeline = null,
    [property: JsonPropertyName("signedThrough")] string? SignedThrough = null);

/// <summary>A threshold signature: R (33-byte compressed point) and z (32-byte scalar), 0x hex.</summary>
public sealed record SignatureDto(
    [property: JsonPropertyName("R")] string R,
    [property: JsonPropertyName("z")] string Z);

/// <summary>A signed head: its header and commitment, the group signature over the commitment, the signer set and key epoch.</summary>
public sealed record HeadDto(
    [property: JsonPropertyName("header")] HeaderDto Header,
    [property: JsonPropertyName("commitment")] string Commitment,
    [property: JsonPropertyName("signature")] SignatureDto Signature,
    [property: JsonPropertyName("signers")] IReadOnlyList<int> Signers,
    [property: JsonPropertyName("keyEpoch")] string KeyEpoch,
    [property: JsonPropertyName("signedAtMs")] long? SignedAtMs = null)
{
    /// <summary>R then z, 65 bytes.</summary>
    public byte[] SignatureBytes() => [.. Convert.FromHexString(Signature.R.AsSpan(2)), .. Convert.FromHexString(Signature.Z.AsSpan(2))];
}

/// <summary>
/// The answer to <c>GET /v1/commitments/{height}</c>: the header, its commitment, the lowest signed head that covers it,
/// and the audit path of the commitment in the head's history root (empty when the height is the head).
/// </summary>
public sealed record CommitmentResponse(
    [property: JsonPropertyName("header")] HeaderDto Header,
    [property: JsonPropertyName("commitment")] string Commitment,
    [property: JsonPropertyName("head")] HeadDto Head,
    [property: JsonPropertyName("historyProof")] IReadOnlyList<string> HistoryProof,
    [property: JsonPropertyName("orderedAtMs")] long? OrderedAtMs = null);

/// <summary>One <c>head</c> event of <c>GET /v1/stream/heads</c>: a signed head and its link to the previous one.</summary>
public sealed record StreamedHeadDto(
    [property: JsonPropertyName("header")] HeaderDto Header,
    [property: JsonPropertyName("commitment")] string Commitment,
    [property: JsonPropertyName("signature")] SignatureDto Signature,
    [property: JsonPropertyName("signers")] IReadOnlyList<int> Signers,
    [property: JsonPropertyName("keyEpoch")] string KeyEpoch,
    [property: JsonPropertyName("linkFrom")] string LinkFrom,
    [property: JsonPropertyName("linkProof")] IReadOnlyList<string> LinkProof);

/// <summary>A tx's place in its batch: the audit path of its hash up to the header's <c>txRoot</c>.</summary>
public sealed record TxInclusionDto(
    [property: JsonPropertyName("hash")] string Hash,
    [property: JsonPropertyName("height")] string Height,
    [property: JsonPropertyName("index")] int Index,
    [property: JsonPropertyName("proof")] IReadOnlyList<string> Proof);

/// <summary>A head (header and commitment) without its signature: the head an L1 post put in the contract.</summary>
public sealed record PostedHeadDto(
    [property: JsonPropertyName("header")] HeaderDto Header,
    [property: JsonPropertyName("commitment")] string Commitment);

/// <summary>
/// The L1 status of a proof bundle: the posted head that covers the tx, where the post landed, and the audit path of
/// the tx's header in the posted head's history (empty when the header is that head).
/// </summary>
public sealed record L1ProofDto(
    [property: JsonPropertyName("contract")] string Contract,
    [property: JsonPropertyName("head")] PostedHeadDto Head,
    [property: JsonPropertyName("historyProof")] IReadOnlyList<string> HistoryProof,
    [property: JsonPropertyName("txHash")] string TxHash,
    [property: JsonPropertyName("blockNumber")] string BlockNumber,
    [property: JsonPropertyName("confirmations")] string Confirmations,
    [property: JsonPropertyName("finalized")] bool Finalized);

/// <summary>
/// The answer to <c>GET /v1/proofs/{txHash}</c>: everything a light client needs to prove a tx's finality with only
/// the group key (and an L1 endpoint of its own): the tx's audit path, its header, the lowest signed head that covers
/// it with the history proof, and the L1 post that covers it. <see cref="Level"/> is what the node claims.
/// </summary>
public sealed record ProofBundleResponse(
    [property: JsonPropertyName("level")] string Level,
    [property: JsonPropertyName("tx")] TxInclusionDto Tx,
    [property: JsonPropertyName("header")] HeaderDto Header,
    [property: JsonPropertyName("commitment")] string Commitment,
    [property: JsonPropertyName("head")] HeadDto? Head,
    [property: JsonPropertyName("historyProof")] IReadOnlyList<string> HistoryProof,
    [property: JsonPropertyName("l1")] L1ProofDto? L1);

/// <summary>The answer to <c>GET /v1/heads?from=H&amp;limit=N</c>.</summary>
public sealed record HeadsResponse(
    [property: JsonPropertyName("heads")] IReadOnlyList<HeadDto> Heads,
    [property: JsonPropertyName("next")] string Next);

/// <summary>One key epoch of <c>GET /v1/keys</c>.</summary>
public sealed record KeyEpochDto(
    [property: JsonPropertyName("epoch")] string Epoch,
    [property: JsonPropertyName("groupKey")] string GroupKey,
    [property: JsonPropertyName("threshold")] int Threshold,
    [property: JsonPropertyName("members")] IReadOnlyList<int> Members,
    [property: JsonPropertyName("verificationShares")] IReadOnlyDictionary<string, string>? VerificationShares = null,
    [property: JsonPropertyName("rotation")] RotationDto? Rotation = null);

/// <summary>The previous key epoch's signature over the hand-over to a key epoch (<c>rotation</c> in <c>GET /v1/keys</c>).</summary>
public sealed record RotationDto(
    [property: JsonPropertyName("fromEpoch")] string FromEpoch,
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("signature")] SignatureDto Signature,
    [property: JsonPropertyName("signers")] IReadOnlyList<int> Signers);

/// <summary>One recorded use of a signer's nonce pair.</summary>
public sealed record NonceUseDto(
    [property: JsonPropertyName("epoch")] string Epoch,
    [property: JsonPropertyName("sequence")] string Sequence,
    [property: JsonPropertyName("commitment")] string Commitment,
    [property: JsonPropertyName("height")] string Height,
    [property: JsonPropertyName("attempt")] int Attempt,
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("signers")] IReadOnlyList<int> Signers,
    [property: JsonPropertyName("commitmentList")] string CommitmentList);

/// <summary>The answer to <c>GET /v1/signing/nonce-uses</c>.</summary>
public sealed record NonceUsesResponse(
    [property: JsonPropertyName("signer")] int Signer,
    [property: JsonPropertyName("uses")] IReadOnlyList<NonceUseDto> Uses);

/// <summary>Every API error body.</summary>
public sealed record ErrorResponse(
    [property: JsonPropertyName("error")] string Error,
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("conflictsWith")] string? ConflictsWith = null);

/// <summary><c>GET /v1/accounts/{address}</c> (ethereum mode).</summary>
public sealed record AccountResponse(
    [property: JsonPropertyName("address")] string Address,
    [property: JsonPropertyName("nextNonce")] string NextNonce,
    [property: JsonPropertyName("lastTx")] string? LastTx);

/// <summary>Source-generated JSON metadata for the wire types.</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(ProofBundleResponse))]
[JsonSerializable(typeof(StreamedHeadDto))]
[JsonSerializable(typeof(SubmitResponse))]
[JsonSerializable(typeof(BatchResponse))]
[JsonSerializable(typeof(TxStatusResponse))]
[JsonSerializable(typeof(ClusterResponse))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(AccountResponse))]
[JsonSerializable(typeof(CommitmentResponse))]
[JsonSerializable(typeof(List<KeyEpochDto>))]
[JsonSerializable(typeof(HeaderDto))]
[JsonSerializable(typeof(HeadsResponse))]
[JsonSerializable(typeof(NonceUsesResponse))]
public sealed partial class ApiJsonContext : JsonSerializerContext;
