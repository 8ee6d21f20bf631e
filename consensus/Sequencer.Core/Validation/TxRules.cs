using System.Buffers.Binary;
using Sequencer.Core.Hashing;

namespace Sequencer.Core.Validation;

/// <summary>How a chain validates what it orders. Recorded in the log at genesis: every node applies the same rules.</summary>
public enum ValidationMode : byte
{
    /// <summary>Opaque bytes: only the exact same tx is refused twice (rollups with their own tx format).</summary>
    Opaque = 0,

    /// <summary>Signed Ethereum transactions: decoded, chain id checked, sender recovered; one ordered tx per (sender, nonce), in nonce order.</summary>
    Ethereum = 1,
}

/// <summary>A 20-byte account address, as a value that compares and hashes cheaply.</summary>
public readonly record struct SenderId(ulong High, ulong Middle, uint Low)
{
    /// <summary>The address's bytes.</summary>
    public const int Length = 20;

    /// <summary>From 20 bytes.</summary>
    public static SenderId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Length)
            throw new ArgumentException("an address is 20 bytes", nameof(bytes));
        return new SenderId(BinaryPrimitives.ReadUInt64BigEndian(bytes), BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]), BinaryPrimitives.ReadUInt32BigEndian(bytes[16..]));
    }

    /// <summary>Writes the 20 bytes.</summary>
    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, High);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Middle);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], Low);
    }

    /// <summary>The 20 bytes.</summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[Length];
        WriteTo(bytes);
        return bytes;
    }

    /// <summary>0x and 40 lower-case hex digits.</summary>
    public override string ToString() => "0x" + Convert.ToHexStringLower(ToBytes());

    /// <summary>Parses 0x and 40 hex digits (any case).</summary>
    public static bool TryParse(string? text, out SenderId sender)
    {
        sender = default;
        if (text is not { Length: 42 } || !text.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            return false;
        Span<byte> bytes = stackalloc byte[Length];
        if (Convert.FromHexString(text.AsSpan(2), bytes, out _, out var written) != System.Buffers.OperationStatus.Done || written != Length)
            return false;
        sender = FromBytes(bytes);
        return true;
    }
}

/// <summary>Who sent a tx and with which nonce.</summary>
public readonly record struct TxAccount(SenderId Sender, ulong Nonce)
{
    /// <summary>The bytes per tx in <see cref="Storage.StoredBatch.TxAccounts"/>: sender, then the nonce big-endian.</summary>
    public const int EncodedLength = SenderId.Length + 8;

    /// <summary>Writes sender and nonce.</summary>
    public void WriteTo(Span<byte> destination)
    {
        Sender.WriteTo(destination);
        BinaryPrimitives.WriteUInt64BigEndian(destination[SenderId.Length..], Nonce);
    }

    /// <summary>Reads what <see cref="WriteTo"/> wrote.</summary>
    public static TxAccount ReadFrom(ReadOnlySpan<byte> source)
        => new(SenderId.FromBytes(source[..SenderId.Length]), BinaryPrimitives.ReadUInt64BigEndian(source[SenderId.Length..EncodedLength]));
}

/// <summary>Why a tx is not valid under the chain's rules: a stable code for the API and a human message.</summary>
public sealed record TxRejection(string Code, string Message)
{
    /// <summary>For a nonce already used: the ordered tx that holds it, when known.</summary>
    public Hash32? ConflictsWith { get; init; }
}

/// <summary>
/// The chain's validity rules for one tx. Deterministic (the same answer on every node for the same bytes) and pure.
/// </summary>
public interface ITxRules
{
    /// <summary>The tx's sender and nonce when it is valid; otherwise null and why.</summary>
    TxAccount? Identify(ReadOnlySpan<byte> tx, out TxRejection? rejection);
}

/// <summary>An account's ordered state: the nonce its next tx must carry and its last ordered tx.</summary>
/// <param name="NextNonce">0 for an account with no ordered tx.</param>
/// <param name="LastTx">The hash of its last ordered tx (zero when none).</param>
/// <param name="LastHeight">The height that tx was ordered at (0 when none).</param>
public readonly record struct AccountState(ulong NextNonce, Hash32 LastTx, ulong LastHeight);

/// <summary>Reads the applied account states.</summary>
public interface IAccountLookup
{
    /// <summary>The account's state (default for an unknown account).</summary>
    AccountState Get(SenderId sender);
}
