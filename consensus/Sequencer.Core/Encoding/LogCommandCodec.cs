using System.Buffers;
using MessagePack;

namespace Sequencer.Core.Encoding;

/// <summary>
/// Encodes a <see cref="ILogCommand"/> as one version byte followed by the MessagePack union.
/// </summary>
public static class LogCommandCodec
{
    /// <summary>The first format version.</summary>
    public const byte Version1 = 1;

    /// <summary>
    /// Version 2: an entry that carries records of direct signing sessions (<see cref="SigningSession.Direct"/>). A build
    /// that reads version 1 only would apply such an entry differently (it ignores the records, or takes a record for a
    /// session to answer), so it must refuse the entry and stop rather than let its state part from its peers'.
    /// Everything else is still written as version 1.
    /// </summary>
    public const byte Version2 = 2;

    private static byte VersionOf(ILogCommand command) => command switch
    {
        BatchCommand { Sessions.Count: > 0 } => Version2,
        SigningSessionsCommand c when c.Sessions.Any(x => x is { Direct: true }) => Version2,
        _ => Version1,
    };

    private static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard
        .WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>Writes the version byte and the command into <paramref name="writer"/>.</summary>
    public static void Encode(ILogCommand command, IBufferWriter<byte> writer)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(writer);
        var span = writer.GetSpan(1);
        span[0] = VersionOf(command);
        writer.Advance(1);
        MessagePackSerializer.Serialize(writer, command, Options);
    }

    /// <summary>The encoded command as a new array.</summary>
    public static byte[] Encode(ILogCommand command)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        Encode(command, buffer);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Decodes a command written by <see cref="Encode(ILogCommand, IBufferWriter{byte})"/>.</summary>
    /// <exception cref="LogFormatException">The version is unknown or the payload is not a valid command.</exception>
    public static ILogCommand Decode(ReadOnlySequence<byte> payload)
    {
        if (payload.IsEmpty)
            throw new LogFormatException("empty log entry payload");
        var version = payload.FirstSpan[0];
        if (version is not (Version1 or Version2))
            throw new LogFormatException($"log entry format version {version} is not supported by this build (it reads versions {Version1} and {Version2}); upgrade the node");
        ILogCommand command;
        try
        {
            command = MessagePackSerializer.Deserialize<ILogCommand>(payload.Slice(1), Options)
                ?? throw new LogFormatException("log entry holds a nil command");
        }
        catch (MessagePackSerializationException e)
        {
            throw new LogFormatException($"log entry is not a valid command: {e.Message}", e);
        }

        if (MissingField(command) is { } missing)
            throw new LogFormatException($"log entry {command.GetType().Name} has a nil {missing}");
        return command;
    }

    /// <summary>
    /// The first field that valid data never leaves nil but <paramref name="command"/> does, or null. MessagePack
    /// decodes nil into null for any reference field; found by the decoder fuzzer (a DkgStart with nil members
    /// threw in the leader's intake check), and checked here so that no later code meets such a null.
    /// </summary>
    public static string? MissingField(ILogCommand command) => command switch
    {
        BatchCommand c => c.Txs is null || c.Txs.Any(t => t is null) ? "tx list or tx"
            : c.ReceivedAgoMs is null ? "received times"
            : c.Session is { } session && MissingField(session) is { } inSession ? inSession
            : c.Sessions?.Any(x => x is null || MissingField(x) is not null) == true ? "session field"
            : c.Signatures?.Any(s => s is null || MissingField(s) is not null) == true ? "signature field" : null,
        NonceCommitmentsCommand c => c.Commitments is null || c.Commitments.Any(x => x is null) ? "commitment" : c.Proof is null ? "proof" : null,
        HeadSignaturesCommand c => c.Signatures is null || c.Signatures.Any(s => s is null || MissingField(s) is not null) ? "signature field" : null,
        KeyEpochCommand c => c.GroupKey is null ? "group key" : c.Members is null ? "member list"
            : c.VerificationShares is null || c.VerificationShares.Any(x => x is null) ? "verification share" : null,
        SigningSessionsCommand c => c.Sessions is null || c.Sessions.Any(x => x is null) ? "session"
            : c.Sessions.Select(MissingField).FirstOrDefault(m => m is not null),
        DkgStartCommand c => c.Members is null ? "member list" : null,
        KeyRotationSessionCommand c => c.Session is null ? "session" : MissingField(c.Session),
        KeyRotationCommand c => c.Signers is null ? "signer list" : c.R is null || c.Z is null ? "signature" : null,
        L1ProgressCommand c => c.Commitment is null || c.L1TxHash is null || c.Contract is null ? "L1 progress field" : null,
        IDkgMessage c when c.Identity is null => "identity signature",
        DkgRound1Command c => c.Commitment is null || c.Commitment.Any(x => x is null) ? "commitment"
            : c.ProofR is null || c.ProofMu is null ? "proof" : c.EncryptionKey is null ? "encryption key" : null,
        DkgRound2Command c => c.Shares is null || c.Shares.Any(x => x?.Ciphertext is null) ? "encrypted share" : null,
        DkgConfirmCommand c => c.GroupKey is null ? "group key" : c.Proof is null ? "proof" : null,
        DkgComplaintCommand c => c.Reason is null ? "reason" : c.SharedPoint is null || c.Proof is null ? "complaint evidence" : null,
        DkgSilenceCommand c => c.Stage is null ? "stage" : null,
        _ => null,
    };

    private static string? MissingField(SigningSession session)
        => session.Signers is null ? "session signer list" : session.Sequences is null ? "session sequence list" : null;

    private static string? MissingField(HeadSignature signature)
        => signature.Signers is null ? "signer list" : signature.R is null || signature.Z is null ? "signature" : null;
}

/// <summary>A log entry or snapshot that this build cannot read. Fatal for the state machine.</summary>
public sealed class LogFormatException : Exception
{
    /// <summary>Creates the exception.</summary>
    public LogFormatException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception with its cause.</summary>
    public LogFormatException(string message, Exception inner) : base(message, inner)
    {
    }
}
