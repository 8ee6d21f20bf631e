using System.Buffers;
using MessagePack;

namespace Sequencer.Core.Encoding;

/// <summary>
/// Encodes a <see cref="ILogCommand"/> as one version byte followed by the MessagePack union.
/// </summary>
public static class LogCommandCodec
{
    /// <summary>The only format version so far.</summary>
    public const byte Version1 = 1;

    private static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard
        .WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>Writes the version byte and the command into <paramref name="writer"/>.</summary>
    public static void Encode(ILogCommand command, IBufferWriter<byte> writer)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(writer);
        var span = writer.GetSpan(1);
        span[0] = Version1;
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
        if (version != Version1)
            throw new LogFormatException($"log entry format version {version} is not supported by this build (it reads version {Version1}); upgrade the node");
        try
        {
            return MessagePackSerializer.Deserialize<ILogCommand>(payload.Slice(1), Options)
                ?? throw new LogFormatException("log entry holds a nil command");
        }
        catch (MessagePackSerializationException e)
        {
            throw new LogFormatException($"log entry is not a valid command: {e.Message}", e);
        }
    }
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
