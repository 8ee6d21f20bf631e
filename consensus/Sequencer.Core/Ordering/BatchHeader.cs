using System.Buffers.Binary;
using Sequencer.Core.Hashing;

namespace Sequencer.Core.Ordering;

/// <summary>
/// The header of one batch (DESIGN section 5). Every field is fixed-width and ABI-encodable, and the whole header
/// is derived deterministically at apply from the previous header and the batch entry.
/// </summary>
public sealed class BatchHeader : IEquatable<BatchHeader>
{
    /// <summary>Creates a header and computes its commitment once.</summary>
    public BatchHeader(ulong chainId, ulong keyEpoch, ulong height, ulong term, Hash32 parentHash, Hash32 historyRoot, Hash32 txRoot, uint txCount, ulong timestampMs)
    {
        ChainId = chainId;
        KeyEpoch = keyEpoch;
        Height = height;
        Term = term;
        ParentHash = parentHash;
        HistoryRoot = historyRoot;
        TxRoot = txRoot;
        TxCount = txCount;
        TimestampMs = timestampMs;
        Commitment = Keccak256.Hash(EncodeAbi());
    }

    /// <summary>The rollup chain this cluster sequences.</summary>
    public ulong ChainId { get; }

    /// <summary>The threshold key epoch; 0 until signing exists.</summary>
    public ulong KeyEpoch { get; }

    /// <summary>1 for the first batch, then contiguous.</summary>
    public ulong Height { get; }

    /// <summary>The Raft term of the log entry that carried the batch.</summary>
    public ulong Term { get; }

    /// <summary>The commitment of the header at <c>Height - 1</c>, or zero at height 1.</summary>
    public Hash32 ParentHash { get; }

    /// <summary>
    /// The RFC 6962 keccak256 Merkle root over the commitments of every earlier header (heights 1 to
    /// <c>Height - 1</c>; the empty tree at height 1): this header commits to its whole history, so one signed head
    /// covers every batch below it.
    /// </summary>
    public Hash32 HistoryRoot { get; }

    /// <summary>The RFC 6962 keccak256 Merkle root of the batch's tx hashes.</summary>
    public Hash32 TxRoot { get; }

    /// <summary>The number of txs in the batch.</summary>
    public uint TxCount { get; }

    /// <summary>The leader's timestamp in Unix milliseconds, never below the parent's.</summary>
    public ulong TimestampMs { get; }

    /// <summary>
    /// <c>keccak256(abi.encode(DOMAIN_TAG, chainId, keyEpoch, height, term, parentHash, historyRoot, txRoot, txCount, timestampMs))</c>.
    /// This is what the group signs, what the L1 contract chains, and the <c>hash</c> the API serves.
    /// </summary>
    public Hash32 Commitment { get; }

    /// <inheritdoc/>
    public bool Equals(BatchHeader? other) => other is not null && Commitment == other.Commitment
        && ChainId == other.ChainId && KeyEpoch == other.KeyEpoch && Height == other.Height && Term == other.Term
        && ParentHash == other.ParentHash && HistoryRoot == other.HistoryRoot && TxRoot == other.TxRoot && TxCount == other.TxCount && TimestampMs == other.TimestampMs;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as BatchHeader);

    /// <inheritdoc/>
    public override int GetHashCode() => Commitment.GetHashCode();

    /// <inheritdoc/>
    public override string ToString() => $"batch {Height} term {Term} txs {TxCount} commitment {Commitment}";

    /// <summary>The number of 32-byte ABI words hashed into the commitment: the domain tag and 9 fields (header v2).</summary>
    public const int CommitmentWords = 10;

    /// <summary>The header format version: 2 since <see cref="HistoryRoot"/> (v1 had 9 words and the tag <c>.../v1</c>).</summary>
    public const int FormatVersion = 2;

    /// <summary><c>keccak256("sequencer-cluster/commitment/v2")</c>.</summary>
    public static readonly Hash32 DomainTag = Keccak256.Hash("sequencer-cluster/commitment/v2"u8);

    /// <summary>The 320-byte ABI encoding that <see cref="Commitment"/> hashes.</summary>
    public byte[] EncodeAbi()
    {
        var buffer = new byte[CommitmentWords * 32];
        var span = buffer.AsSpan();
        DomainTag.CopyTo(span[..32]);
        WriteWord(span.Slice(32, 32), ChainId);
        WriteWord(span.Slice(64, 32), KeyEpoch);
        WriteWord(span.Slice(96, 32), Height);
        WriteWord(span.Slice(128, 32), Term);
        ParentHash.CopyTo(span.Slice(160, 32));
        HistoryRoot.CopyTo(span.Slice(192, 32));
        TxRoot.CopyTo(span.Slice(224, 32));
        WriteWord(span.Slice(256, 32), TxCount);
        WriteWord(span.Slice(288, 32), TimestampMs);
        return buffer;
    }

    private static void WriteWord(Span<byte> word, ulong value)
    {
        word[..24].Clear();
        BinaryPrimitives.WriteUInt64BigEndian(word[24..], value);
    }
}
