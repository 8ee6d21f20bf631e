using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using MessagePack;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;

namespace Sequencer.Raft;

/// <summary>
/// The snapshot stream a leader sends to a follower that is behind its compacted log: an 8-byte magic, then
/// records of [4-byte length][8-byte XxHash64 of the body][MessagePack body] (a header, one record per batch in
/// height order, a trailer).
/// </summary>
/// <remarks>
/// Keys are explicit integers and never reused, like the log format. The receiver checks every record's checksum,
/// recomputes every commitment and Merkle root and checks the parent chain, so a corrupt or truncated stream is
/// rejected, never installed.
/// </remarks>
public static class SnapshotFormat
{
    /// <summary>"SEQSNAP" and format version 2 (header v2: batch records carry the history root).</summary>
    public static ReadOnlySpan<byte> Magic => "SEQSNAP\u0002"u8;

    /// <summary>The largest single record accepted, in bytes (a batch of hashes is far below it).</summary>
    public const int MaxRecordBytes = 64 * 1024 * 1024;

    private static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard
        .WithSecurity(MessagePackSecurity.UntrustedData);

    private const int PrefixBytes = 4 + 8;

    /// <summary>Serializes one record with its length and checksum prefix.</summary>
    public static void WriteRecord(ISnapshotRecord record, IBufferWriter<byte> output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var body = MessagePackSerializer.Serialize(record, Options);
        var prefix = output.GetSpan(PrefixBytes);
        BinaryPrimitives.WriteInt32LittleEndian(prefix, body.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(prefix[4..], XxHash64.HashToUInt64(body));
        output.Advance(PrefixBytes);
        output.Write(body);
    }

    /// <summary>Reads the next record, or null at a clean end of stream.</summary>
    /// <exception cref="LogFormatException">The stream is corrupt or truncated.</exception>
    public static ISnapshotRecord? ReadRecord(Stream input)
    {
        ArgumentNullException.ThrowIfNull(input);
        Span<byte> prefix = stackalloc byte[PrefixBytes];
        var read = input.ReadAtLeast(prefix, PrefixBytes, throwOnEndOfStream: false);
        if (read == 0)
            return null;
        if (read != PrefixBytes)
            throw new LogFormatException("snapshot stream truncated inside a record prefix");
        var length = BinaryPrimitives.ReadInt32LittleEndian(prefix);
        if (length is <= 0 or > MaxRecordBytes)
            throw new LogFormatException($"snapshot record length {length} is out of range");
        var body = new byte[length];
        if (input.ReadAtLeast(body, length, throwOnEndOfStream: false) != length)
            throw new LogFormatException("snapshot stream truncated inside a record");
        if (XxHash64.HashToUInt64(body) != BinaryPrimitives.ReadUInt64LittleEndian(prefix[4..]))
            throw new LogFormatException("snapshot record checksum mismatch: the stream is corrupt");
        ISnapshotRecord? record;
        try
        {
            record = MessagePackSerializer.Deserialize<ISnapshotRecord>(body, Options);
        }
        catch (MessagePackSerializationException e)
        {
            throw new LogFormatException($"snapshot record is not valid: {e.Message}", e);
        }

        // MessagePack decodes nil into null for any reference field; valid streams never hold one where it matters.
        var missing = record switch
        {
            null => "record",
            SnapshotCommitments c => c.Sequences is null || c.Values is null || c.Values.Any(v => v is null) ? "commitment" : null,
            SnapshotKeyEpoch k => k.GroupKey is null || k.Members is null || k.VerificationShares is null || k.VerificationShares.Any(v => v is null) ? "key epoch field" : null,
            SnapshotBatch b => b.ParentHash is null || b.TxRoot is null || b.Commitment is null || b.TxHashes is null || b.ReceivedMs is null || b.HistoryRoot is null ? "batch field" : null,
            SnapshotTrailer t => t.LastCommitment is null ? "last commitment" : null,
            _ => null,
        };
        if (missing is not null)
            throw new LogFormatException($"snapshot record has a nil {missing}");
        return record;
    }

    /// <summary>The record for <paramref name="batch"/>.</summary>
    public static SnapshotBatch ToRecord(StoredBatch batch, SignedHead? signature = null)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var hashes = new byte[batch.TxHashes.Length * Hash32.Length];
        for (var i = 0; i < batch.TxHashes.Length; i++)
            batch.TxHashes[i].CopyTo(hashes.AsSpan(i * Hash32.Length, Hash32.Length));
        var header = batch.Header;
        return new SnapshotBatch
        {
            ChainId = header.ChainId,
            KeyEpoch = header.KeyEpoch,
            Height = header.Height,
            Term = header.Term,
            ParentHash = header.ParentHash.ToArray(),
            HistoryRoot = header.HistoryRoot.ToArray(),
            TxRoot = header.TxRoot.ToArray(),
            TimestampMs = header.TimestampMs,
            Commitment = header.Commitment.ToArray(),
            TxHashes = hashes,
            ReceivedMs = batch.ReceivedMs,
            RaftIndex = batch.RaftIndex,
            OrderedAtMs = batch.OrderedAtMs,
            SignatureKeyEpoch = signature?.KeyEpoch,
            Signers = signature is null ? null : [.. signature.Signers],
            SignatureR = signature?.R,
            SignatureZ = signature?.Z,
            SignedAtMs = signature?.SignedAtMs ?? 0,
            TxAccounts = batch.TxAccounts,
            Pruned = batch.Pruned,
            PrunedTxCount = batch.Pruned ? header.TxCount : 0,
        };
    }

    /// <summary>The signature a batch record carries, or null; its validity is the installer's to check.</summary>
    /// <exception cref="LogFormatException">The signature fields are incomplete.</exception>
    public static SignedHead? SignatureOf(SnapshotBatch record)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (record.SignatureKeyEpoch is not { } epoch)
            return null;
        if (record.Signers is null || record.SignatureR?.Length != 33 || record.SignatureZ?.Length != 32)
            throw new LogFormatException($"snapshot batch {record.Height}: incomplete signature fields");
        return new SignedHead(record.Height, epoch, record.Signers, record.SignatureR, record.SignatureZ, record.SignedAtMs);
    }

    /// <summary>The record of a key epoch.</summary>
    public static SnapshotKeyEpoch ToRecord(StoredKeyEpoch epoch)
    {
        ArgumentNullException.ThrowIfNull(epoch);
        return new SnapshotKeyEpoch
        {
            Epoch = epoch.Epoch,
            Threshold = epoch.Threshold,
            GroupKey = epoch.GroupKey,
            Members = [.. epoch.Members],
            VerificationShares = [.. epoch.VerificationShares],
            RaftIndex = epoch.RaftIndex,
            Pending = epoch.Pending,
            RotationFrom = epoch.Rotation?.FromEpoch ?? 0,
            RotationSigners = epoch.Rotation is { } rotation ? [.. rotation.Signers] : null,
            RotationR = epoch.Rotation?.R,
            RotationZ = epoch.Rotation?.Z,
            RotationSignedAtMs = epoch.Rotation?.SignedAtMs ?? 0,
            RotationRaftIndex = epoch.Rotation?.RaftIndex ?? 0,
        };
    }

    /// <summary>The key epoch of a record (checked by the installer).</summary>
    public static StoredKeyEpoch FromRecord(SnapshotKeyEpoch record)
    {
        ArgumentNullException.ThrowIfNull(record);
        KeyRotationProof? rotation = null;
        if (record.RotationFrom != 0)
        {
            if (record.RotationSigners is null || record.RotationR?.Length != 33 || record.RotationZ?.Length != 32)
                throw new LogFormatException($"snapshot key epoch {record.Epoch}: incomplete rotation fields");
            rotation = new KeyRotationProof(record.RotationFrom, record.RotationSigners, record.RotationR, record.RotationZ, record.RotationSignedAtMs, record.RotationRaftIndex);
        }

        return new StoredKeyEpoch(record.Epoch, record.Threshold, record.GroupKey, record.Members, record.VerificationShares, record.RaftIndex, record.Pending, rotation);
    }

    /// <summary>Rebuilds and verifies the stored batch of a record.</summary>
    /// <exception cref="LogFormatException">The record is inconsistent (wrong sizes, root or commitment).</exception>
    public static StoredBatch FromRecord(SnapshotBatch record)
    {
        ArgumentNullException.ThrowIfNull(record);
        // A pruned batch holds no tx data: its count comes with it, and its txRoot cannot be checked here (the signed
        // heads above it commit to it; the installer checks the chain and the history root).
        uint count;
        if (record.Pruned)
        {
            count = record.PrunedTxCount;
            if (count == 0 || record.TxHashes.Length != 0 || record.ReceivedMs.Length != 0)
                throw new LogFormatException($"snapshot batch {record.Height}: a pruned batch names no tx count or still holds tx data");
        }
        else
        {
            if (record.TxHashes.Length == 0 || record.TxHashes.Length % Hash32.Length != 0)
                throw new LogFormatException($"snapshot batch {record.Height}: tx hash block has length {record.TxHashes.Length}");
            count = (uint)(record.TxHashes.Length / Hash32.Length);
            if (record.ReceivedMs.Length != count)
                throw new LogFormatException($"snapshot batch {record.Height}: {record.ReceivedMs.Length} receive times for {count} txs");
        }

        if (record.ParentHash.Length != Hash32.Length || record.HistoryRoot.Length != Hash32.Length || record.TxRoot.Length != Hash32.Length
            || record.Commitment.Length != Hash32.Length)
            throw new LogFormatException($"snapshot batch {record.Height}: a hash field is not 32 bytes");

        var hashes = new Hash32[record.Pruned ? 0 : count];
        for (var i = 0; i < hashes.Length; i++)
            hashes[i] = new Hash32(record.TxHashes.AsSpan(i * Hash32.Length, Hash32.Length));
        var header = new BatchHeader(record.ChainId, record.KeyEpoch, record.Height, record.Term,
            new Hash32(record.ParentHash), new Hash32(record.HistoryRoot), new Hash32(record.TxRoot), count, record.TimestampMs);
        if (header.Commitment != new Hash32(record.Commitment))
            throw new LogFormatException($"snapshot batch {record.Height}: the commitment does not match the header");
        if (!record.Pruned && MerkleTree.ComputeRoot(hashes) != header.TxRoot)
            throw new LogFormatException($"snapshot batch {record.Height}: txRoot does not match the tx hashes");
        var accounts = record.TxAccounts ?? [];
        var accountBytes = (long)count * Sequencer.Core.Validation.TxAccount.EncodedLength;
        if (record.Pruned && accounts.Length != accountBytes)
            throw new LogFormatException($"snapshot batch {record.Height}: a pruned batch needs one account per tx ({accounts.Length} bytes for {count} txs)");
        if (accounts.Length != 0 && accounts.Length != accountBytes)
            throw new LogFormatException($"snapshot batch {record.Height}: an account block of {accounts.Length} bytes for {count} txs");
        return new StoredBatch
        {
            Header = header, TxHashes = hashes, ReceivedMs = record.Pruned ? [] : record.ReceivedMs, RaftIndex = record.RaftIndex, OrderedAtMs = record.OrderedAtMs,
            TxAccounts = accounts, Pruned = record.Pruned,
        };
    }
}

/// <summary>One record of the snapshot stream.</summary>
[Union(0, typeof(SnapshotHeader))]
[Union(1, typeof(SnapshotBatch))]
[Union(2, typeof(SnapshotTrailer))]
[Union(3, typeof(SnapshotKeyEpoch))]
[Union(4, typeof(SnapshotCommitments))]
[Union(5, typeof(SnapshotDkgEntry))]
public interface ISnapshotRecord;

/// <summary>
/// One entry (log encoded) of the key generation in progress at the snapshot's point, in log order; after the key
/// epochs, before any batch. The installing node rebuilds that key generation from them, checking each as apply would,
/// and goes on with it from the log: without them it refused the rest of the key generation, and once the new key
/// epoch came into force elsewhere its headers (which name the key epoch) were not the others'.
/// </summary>
[MessagePackObject]
public sealed class SnapshotDkgEntry : ISnapshotRecord
{
    /// <summary>The most DKG entries one snapshot carries (a key generation among 255 members, its complaints and silence votes included, stays below it).</summary>
    public const int MaxEntries = 1 << 17;

    /// <summary>The entry, as the log encodes it.</summary>
    [Key(0)] public byte[] Entry { get; init; } = [];
}

/// <summary>One signer's published, unused nonce commitments and its next sequence; after the key epochs, before any batch.</summary>
[MessagePackObject]
public sealed class SnapshotCommitments : ISnapshotRecord
{
    /// <summary>The signer.</summary>
    [Key(0)] public int Signer { get; init; }

    /// <summary>Its next sequence.</summary>
    [Key(1)] public ulong Next { get; init; }

    /// <summary>The sequences of its commitments.</summary>
    [Key(2)] public ulong[] Sequences { get; init; } = [];

    /// <summary>The commitments (66 bytes each), in the order of <see cref="Sequences"/>.</summary>
    [Key(3)] public byte[][] Values { get; init; } = [];

    /// <summary>The highest Raft index the writer's pool reflected (<c>CommitmentPool.ReflectsIndex</c>; 0 unknown).</summary>
    [Key(4)] public long ReflectsIndex { get; init; }
}

/// <summary>A key epoch the snapshot covers; these records follow the header, in epoch order, before any batch.</summary>
[MessagePackObject]
public sealed class SnapshotKeyEpoch : ISnapshotRecord
{
    /// <summary>The epoch.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>t.</summary>
    [Key(1)] public int Threshold { get; init; }

    /// <summary>The group key, 33 bytes.</summary>
    [Key(2)] public byte[] GroupKey { get; init; } = [];

    /// <summary>The member ids, ascending.</summary>
    [Key(3)] public int[] Members { get; init; } = [];

    /// <summary>The verification shares, in member order.</summary>
    [Key(4)] public byte[][] VerificationShares { get; init; } = [];

    /// <summary>The Raft index of the entry that established the epoch.</summary>
    [Key(5)] public long RaftIndex { get; init; }

    /// <summary>Made by a key generation, waiting for the previous epoch's hand-over.</summary>
    [Key(6)] public bool Pending { get; init; }

    /// <summary>The epoch that signed the hand-over to this one (0: none, the first epoch or a pending one).</summary>
    [Key(7)] public ulong RotationFrom { get; init; }

    /// <summary>The hand-over's signers.</summary>
    [Key(8)] public int[]? RotationSigners { get; init; }

    /// <summary>The hand-over signature's R.</summary>
    [Key(9)] public byte[]? RotationR { get; init; }

    /// <summary>The hand-over signature's z.</summary>
    [Key(10)] public byte[]? RotationZ { get; init; }

    /// <summary>When the hand-over was signed (Unix ms).</summary>
    [Key(11)] public ulong RotationSignedAtMs { get; init; }

    /// <summary>The Raft index of the hand-over entry.</summary>
    [Key(12)] public long RotationRaftIndex { get; init; }
}

/// <summary>The first record: what the snapshot covers.</summary>
[MessagePackObject]
public sealed class SnapshotHeader : ISnapshotRecord
{
    /// <summary>The Raft index the snapshot covers.</summary>
    [Key(0)] public long Index { get; init; }

    /// <summary>The term of that entry.</summary>
    [Key(1)] public long Term { get; init; }

    /// <summary>The highest batch height included.</summary>
    [Key(2)] public ulong LastHeight { get; init; }

    /// <summary>The chain id of every header; a follower of another chain refuses it.</summary>
    [Key(3)] public ulong ChainId { get; init; }

    /// <summary>The chain's genesis validation mode (0 opaque, 1 ethereum), or null for a chain without a genesis entry (opaque).</summary>
    [Key(4)] public byte? ValidationMode { get; init; }

    /// <summary>
    /// A delta snapshot's base: the stream holds the batches above this height only, for a follower that already stores
    /// every batch up to it (0: the whole history).
    /// </summary>
    [Key(5)] public ulong FromHeight { get; init; }

    /// <summary>The commitment of the batch at <see cref="FromHeight"/>, which the follower must store (null when it is 0).</summary>
    [Key(6)] public byte[]? FromCommitment { get; init; }
}

/// <summary>One batch: its header fields, commitment, tx hashes and bookkeeping.</summary>
[MessagePackObject]
public sealed class SnapshotBatch : ISnapshotRecord
{
    /// <summary>Header field.</summary>
    [Key(0)] public ulong ChainId { get; init; }

    /// <summary>Header field.</summary>
    [Key(1)] public ulong KeyEpoch { get; init; }

    /// <summary>Header field.</summary>
    [Key(2)] public ulong Height { get; init; }

    /// <summary>Header field.</summary>
    [Key(3)] public ulong Term { get; init; }

    /// <summary>Header field, 32 bytes.</summary>
    [Key(4)] public byte[] ParentHash { get; init; } = [];

    /// <summary>Header field, 32 bytes.</summary>
    [Key(5)] public byte[] TxRoot { get; init; } = [];

    /// <summary>Header field.</summary>
    [Key(6)] public ulong TimestampMs { get; init; }

    /// <summary>The commitment, checked against the recomputed one.</summary>
    [Key(7)] public byte[] Commitment { get; init; } = [];

    /// <summary>The tx hashes, concatenated (32 bytes each).</summary>
    [Key(8)] public byte[] TxHashes { get; init; } = [];

    /// <summary>Receive times, one per tx.</summary>
    [Key(9)] public ulong[] ReceivedMs { get; init; } = [];

    /// <summary>The Raft index of the entry that carried the batch.</summary>
    [Key(10)] public long RaftIndex { get; init; }

    /// <summary>When the sending node applied it.</summary>
    [Key(11)] public ulong OrderedAtMs { get; init; }

    /// <summary>The key epoch of the batch's group signature; absent (with 13 to 16) while the batch is unsigned.</summary>
    [Key(12)] public ulong? SignatureKeyEpoch { get; init; }

    /// <summary>The signers of the group signature.</summary>
    [Key(13)] public int[]? Signers { get; init; }

    /// <summary>The signature's R, 33 bytes.</summary>
    [Key(14)] public byte[]? SignatureR { get; init; }

    /// <summary>The signature's z, 32 bytes.</summary>
    [Key(15)] public byte[]? SignatureZ { get; init; }

    /// <summary>When the sending node applied the signature.</summary>
    [Key(16)] public ulong SignedAtMs { get; init; }

    /// <summary>The history root (header v2); the installer checks it against the commitments before it.</summary>
    [Key(17)] public byte[] HistoryRoot { get; init; } = [];

    /// <summary>In ethereum mode, each tx's sender and nonce (28 bytes per tx); empty otherwise.</summary>
    [Key(18)] public byte[] TxAccounts { get; init; } = [];

    /// <summary>True for a batch whose tx hashes and receive times retention removed (both empty; the count is <see cref="PrunedTxCount"/>).</summary>
    [Key(19)] public bool Pruned { get; init; }

    /// <summary>The tx count of a pruned batch's header (0 otherwise: the hashes give it).</summary>
    [Key(20)] public uint PrunedTxCount { get; init; }
}

/// <summary>The last record: lets the receiver tell a complete stream from a truncated one.</summary>
[MessagePackObject]
public sealed class SnapshotTrailer : ISnapshotRecord
{
    /// <summary>The number of batch records.</summary>
    [Key(0)] public ulong BatchCount { get; init; }

    /// <summary>The commitment of the last batch, or 32 zero bytes.</summary>
    [Key(1)] public byte[] LastCommitment { get; init; } = [];
}
