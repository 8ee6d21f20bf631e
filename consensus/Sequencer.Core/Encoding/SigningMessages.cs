using System.Buffers.Binary;
using MessagePack;

namespace Sequencer.Core.Encoding;

/// <summary>One signature share of a signing session.</summary>
[MessagePackObject]
public sealed class SignatureShareMessage
{
    /// <summary>The batch height of the session.</summary>
    [Key(0)] public ulong Height { get; init; }

    /// <summary>The session's attempt.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>z_i, a 32-byte big-endian scalar.</summary>
    [Key(2)] public byte[] Share { get; init; } = [];
}

/// <summary>
/// The body of <c>POST /internal/v1/shares</c>: a signer's shares, sent to the leader, with the signer's Schnorr proof
/// (by its key share) over <see cref="ProofPayload"/>. The proof means that a bad share can only come from the signer
/// it names: nobody can frame an honest signer by posting garbage in its name.
/// </summary>
[MessagePackObject]
public sealed class SignatureSharesMessage
{
    /// <summary>The most shares in one message.</summary>
    public const int MaxShares = 4096;

    /// <summary>The signer proof domain of this message.</summary>
    public const string ProofDomain = "signature-shares";

    /// <summary>The signer.</summary>
    [Key(0)] public int SignerId { get; init; }

    /// <summary>The key epoch of every session.</summary>
    [Key(1)] public ulong KeyEpoch { get; init; }

    /// <summary>The shares.</summary>
    [Key(2)] public IReadOnlyList<SignatureShareMessage> Shares { get; init; } = [];

    /// <summary>The signer's proof over <see cref="ProofPayload"/>.</summary>
    [Key(3)] public byte[] Proof { get; init; } = [];

    /// <summary>The bytes the proof covers: signer, epoch, count, then height, attempt and share of each.</summary>
    public byte[] ProofPayload()
    {
        var payload = new byte[4 + 8 + 4 + (Shares.Count * (8 + 4 + 32))];
        BinaryPrimitives.WriteInt32BigEndian(payload, SignerId);
        BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(4), KeyEpoch);
        BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(12), Shares.Count);
        var offset = 16;
        foreach (var share in Shares)
        {
            BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(offset), share.Height);
            BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(offset + 8), share.Attempt);
            share.Share.CopyTo(payload, offset + 12);
            offset += 44;
        }

        return payload;
    }

    /// <summary>Serializes the message.</summary>
    public byte[] Encode() => MessagePackSerializer.Serialize(this, SigningMessageCodec.Options);

    /// <summary>Parses a message from an untrusted peer (the proof is the receiver's to check).</summary>
    /// <exception cref="LogFormatException">The bytes are not a valid message, or it holds too many shares.</exception>
    public static SignatureSharesMessage Decode(ReadOnlyMemory<byte> bytes)
    {
        var message = SigningMessageCodec.Deserialize<SignatureSharesMessage>(bytes, "a shares message");

        if (message?.Shares is null || message.Shares.Count is 0 or > MaxShares || message.Shares.Any(s => s?.Share is not { Length: 32 }) || message.Proof is null)
            throw new LogFormatException($"a shares message holds 1 to {MaxShares} shares of 32 bytes each, and a proof");
        return message;
    }
}

/// <summary>
/// The body of <c>POST /internal/v1/sessions</c>: the leader asks one signer directly for its shares of head sessions
/// (a direct session, outside the log). Each session names its signers, the sequence of each one's published nonce
/// commitment and that commitment (hiding and binding points, 33 bytes each). The signer checks the head against its
/// own applied header at that height, takes its own nonce pair durably and answers with a
/// <see cref="SignatureSharesMessage"/>; the other signers' commitments are the coordinator's to choose, as in
/// RFC 9591 (a wrong one only makes the aggregate fail). A nonce is never used twice whoever asks.
/// </summary>
[MessagePackObject]
public sealed class SessionRequestMessage
{
    /// <summary>The most sessions in one request.</summary>
    public const int MaxSessions = 16;

    /// <summary>The most signers in one session.</summary>
    public const int MaxSigners = 256;

    /// <summary>The member that asks (the leader, as far as it knows).</summary>
    [Key(0)] public int LeaderId { get; init; }

    /// <summary>The sessions.</summary>
    [Key(1)] public IReadOnlyList<SigningSession> Sessions { get; init; } = [];

    /// <summary>For each session, each signer's commitment (66 bytes: hiding then binding point), in signer order.</summary>
    [Key(2)] public IReadOnlyList<IReadOnlyList<byte[]>> Commitments { get; init; } = [];

    /// <summary>The Raft term the leader asks in (0: not sent, as by a build before it).</summary>
    [Key(3)] public long Term { get; init; }

    /// <summary>
    /// The leader's commit index when it asked (0: not sent). A follower whose log holds an entry of <see cref="Term"/>
    /// there may commit up to it at once, as it would on the leader's next AppendEntries.
    /// </summary>
    [Key(4)] public long CommitIndex { get; init; }

    /// <summary>Serializes the message.</summary>
    public byte[] Encode() => MessagePackSerializer.Serialize(this, SigningMessageCodec.Options);

    /// <summary>Parses a request from an untrusted peer.</summary>
    /// <exception cref="LogFormatException">The bytes are not a valid request.</exception>
    public static SessionRequestMessage Decode(ReadOnlyMemory<byte> bytes)
    {
        var message = SigningMessageCodec.Deserialize<SessionRequestMessage>(bytes, "a session request");

        if (message?.Sessions is null || message.Commitments is null || message.Sessions.Count is 0 or > MaxSessions
            || message.Commitments.Count != message.Sessions.Count)
            throw new LogFormatException($"a session request holds 1 to {MaxSessions} sessions, each with its commitments");
        if (message.Term < 0 || message.CommitIndex < 0)
            throw new LogFormatException("a session request's term and commit index are not negative");
        for (var i = 0; i < message.Sessions.Count; i++)
        {
            var session = message.Sessions[i];
            var commitments = message.Commitments[i];
            if (session?.Signers is null || session.Sequences is null || commitments is null || session.Height == 0 || session.Attempt < 1
                || session.Signers.Count is 0 or > MaxSigners || session.Sequences.Count != session.Signers.Count
                || commitments.Count != session.Signers.Count || commitments.Any(c => c is not { Length: 66 }))
                throw new LogFormatException($"session {i}: a height, an attempt, 1 to {MaxSigners} signers with one sequence and one 66-byte commitment each");
        }

        return message;
    }
}

/// <summary>The MessagePack settings and untrusted-input parsing the internal signing messages share.</summary>
internal static class SigningMessageCodec
{
    /// <summary>Standard settings, hardened for untrusted data.</summary>
    public static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>Parses a <typeparamref name="T"/> (<paramref name="what"/> in the error) from an untrusted peer.</summary>
    /// <exception cref="LogFormatException">The bytes are not one.</exception>
    public static T Deserialize<T>(ReadOnlyMemory<byte> bytes, string what)
        where T : class
    {
        try
        {
            return MessagePackSerializer.Deserialize<T>(bytes, Options) ?? throw new LogFormatException($"not {what}: nil");
        }
        catch (MessagePackSerializationException e)
        {
            throw new LogFormatException($"not {what}: {e.Message}", e);
        }
    }
}
