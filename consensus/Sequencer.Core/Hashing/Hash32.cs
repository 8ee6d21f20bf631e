using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Sequencer.Core.Hashing;

/// <summary>
/// A 32-byte hash (keccak256 output: a tx hash, a Merkle node, a commitment). A value type with value equality,
/// so it can key dictionaries without allocating.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 8)]
public readonly struct Hash32 : IEquatable<Hash32>, IComparable<Hash32>
{
    /// <summary>The length of a hash in bytes.</summary>
    public const int Length = 32;

    // Stored big-endian per word so that CompareTo orders hashes like their byte strings do.
    private readonly ulong word0, word1, word2, word3;

    /// <summary>Copies 32 bytes from <paramref name="bytes"/>.</summary>
    /// <exception cref="ArgumentException">The span is not exactly 32 bytes long.</exception>
    public Hash32(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Length)
            throw new ArgumentException($"a hash is {Length} bytes, not {bytes.Length}", nameof(bytes));
        word0 = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        word1 = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        word2 = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        word3 = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
    }

    private Hash32(ulong word0, ulong word1, ulong word2, ulong word3)
    {
        this.word0 = word0;
        this.word1 = word1;
        this.word2 = word2;
        this.word3 = word3;
    }

    /// <summary>The hash whose bytes are these four 64-bit words, each little-endian (keccak's output lanes).</summary>
    internal static Hash32 FromLittleEndianWords(ulong lane0, ulong lane1, ulong lane2, ulong lane3)
        => new(BinaryPrimitives.ReverseEndianness(lane0), BinaryPrimitives.ReverseEndianness(lane1),
            BinaryPrimitives.ReverseEndianness(lane2), BinaryPrimitives.ReverseEndianness(lane3));

    /// <summary>The all-zero hash: the parent hash of height 1.</summary>
    public static Hash32 Zero => default;

    /// <summary>The first 8 bytes as a big-endian integer; uniformly distributed for keccak output.</summary>
    public ulong Prefix => word0;

    /// <summary>The first 16 bytes as a big-endian integer: the key of the in-memory tx index.</summary>
    public UInt128 Prefix128 => new(word0, word1);

    /// <summary>Writes the 32 bytes into <paramref name="destination"/>.</summary>
    public void CopyTo(Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, Length);
        BinaryPrimitives.WriteUInt64BigEndian(destination, word0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], word1);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], word2);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], word3);
    }

    /// <summary>A new 32-byte array with the hash.</summary>
    public byte[] ToArray()
    {
        var bytes = new byte[Length];
        CopyTo(bytes);
        return bytes;
    }

    /// <summary>0x-prefixed lower-case hex, as the HTTP API writes hashes.</summary>
    public override string ToString()
    {
        Span<byte> utf8 = stackalloc byte[HexLength];
        FormatHex(utf8);
        return System.Text.Encoding.ASCII.GetString(utf8);
    }

    /// <summary>The length of <see cref="FormatHex"/>'s text: "0x" and 64 hex digits.</summary>
    public const int HexLength = 2 + (2 * Length);

    /// <summary>Writes <see cref="ToString"/>'s text as UTF-8 into the first <see cref="HexLength"/> bytes, allocating nothing.</summary>
    public void FormatHex(Span<byte> utf8)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(utf8.Length, HexLength);
        Span<byte> bytes = stackalloc byte[Length];
        CopyTo(bytes);
        utf8[0] = (byte)'0';
        utf8[1] = (byte)'x';
        var written = Convert.TryToHexStringLower(bytes, utf8[2..], out var count);
        Invariant.Check(written && count == 2 * Length, "a hash formats as 64 hex digits");
    }

    /// <summary>Parses 0x-prefixed hex of exactly 32 bytes. Returns false for anything else.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out Hash32 hash)
    {
        hash = default;
        if (text.Length != 2 + 2 * Length || text[0] != '0' || (text[1] != 'x' && text[1] != 'X'))
            return false;
        Span<byte> bytes = stackalloc byte[Length];
        if (Convert.FromHexString(text[2..], bytes, out _, out var written) != System.Buffers.OperationStatus.Done || written != Length)
            return false;
        hash = new Hash32(bytes);
        return true;
    }

    /// <summary>Parses 0x-prefixed hex of exactly 32 bytes.</summary>
    /// <exception cref="FormatException">The text is not a 0x-prefixed 32-byte hex string.</exception>
    public static Hash32 Parse(ReadOnlySpan<char> text)
        => TryParse(text, out var hash) ? hash : throw new FormatException("expected 0x followed by 64 hex digits");

    /// <inheritdoc/>
    public bool Equals(Hash32 other)
        => word0 == other.word0 && word1 == other.word1 && word2 == other.word2 && word3 == other.word3;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Hash32 other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => unchecked((int)word0 ^ (int)(word0 >> 32));

    /// <inheritdoc/>
    public int CompareTo(Hash32 other)
    {
        var c = word0.CompareTo(other.word0);
        if (c != 0) return c;
        c = word1.CompareTo(other.word1);
        if (c != 0) return c;
        c = word2.CompareTo(other.word2);
        return c != 0 ? c : word3.CompareTo(other.word3);
    }

    /// <summary>Value equality.</summary>
    public static bool operator ==(Hash32 left, Hash32 right) => left.Equals(right);

    /// <summary>Value inequality.</summary>
    public static bool operator !=(Hash32 left, Hash32 right) => !left.Equals(right);

    /// <summary>Byte-string order.</summary>
    public static bool operator <(Hash32 left, Hash32 right) => left.CompareTo(right) < 0;

    /// <summary>Byte-string order.</summary>
    public static bool operator >(Hash32 left, Hash32 right) => left.CompareTo(right) > 0;

    /// <summary>Byte-string order.</summary>
    public static bool operator <=(Hash32 left, Hash32 right) => left.CompareTo(right) <= 0;

    /// <summary>Byte-string order.</summary>
    public static bool operator >=(Hash32 left, Hash32 right) => left.CompareTo(right) >= 0;
}
