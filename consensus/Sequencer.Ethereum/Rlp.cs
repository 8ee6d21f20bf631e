using System.Numerics;

namespace Sequencer.Ethereum;

/// <summary>A decoded RLP item: a byte string or a list.</summary>
public abstract class RlpItem
{
    /// <summary>The bytes of a string item.</summary>
    /// <exception cref="FormatException">The item is a list.</exception>
    public virtual byte[] Bytes => throw new FormatException("expected an RLP string, found a list");

    /// <summary>The items of a list item.</summary>
    /// <exception cref="FormatException">The item is a string.</exception>
    public virtual IReadOnlyList<RlpItem> Items => throw new FormatException("expected an RLP list, found a string");

    /// <summary>The string as an unsigned integer (canonical: no leading zero byte).</summary>
    public BigInteger ToInteger(int maxBytes = 32)
    {
        var bytes = Bytes;
        if (bytes.Length > maxBytes)
            throw new FormatException($"an RLP integer of {bytes.Length} bytes is over {maxBytes}");
        if (bytes.Length > 0 && bytes[0] == 0)
            throw new FormatException("an RLP integer has a leading zero byte");
        return EthHex.ToUnsigned(bytes);
    }

    /// <summary>The string as a 64-bit unsigned integer.</summary>
    public ulong ToUInt64() => (ulong)ToInteger(8);
}

/// <summary>An RLP byte string.</summary>
public sealed class RlpString(byte[] bytes) : RlpItem
{
    /// <inheritdoc/>
    public override byte[] Bytes { get; } = bytes;
}

/// <summary>An RLP list.</summary>
public sealed class RlpList(IReadOnlyList<RlpItem> items) : RlpItem
{
    /// <inheritdoc/>
    public override IReadOnlyList<RlpItem> Items { get; } = items;
}

/// <summary>Recursive Length Prefix encoding (the Ethereum yellow paper, appendix B), strict when decoding.</summary>
public static class Rlp
{
    /// <summary>The deepest nesting the decoder accepts.</summary>
    public const int MaxDepth = 16;

    /// <summary>Encodes a byte string.</summary>
    public static byte[] Encode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 1 && bytes[0] < 0x80)
            return [bytes[0]];
        return [.. Prefix(0x80, bytes.Length), .. bytes];
    }

    /// <summary>Encodes an unsigned integer (big-endian, no leading zeros; 0 is the empty string).</summary>
    public static byte[] Encode(BigInteger value) => Encode(EthHex.Unsigned(value));

    /// <summary>Encodes an unsigned integer.</summary>
    public static byte[] Encode(ulong value) => Encode(new BigInteger(value));

    /// <summary>Encodes a list of already encoded items.</summary>
    public static byte[] List(params IEnumerable<byte[]> encodedItems)
    {
        ArgumentNullException.ThrowIfNull(encodedItems);
        var payload = encodedItems.SelectMany(item => item).ToArray();
        return [.. Prefix(0xc0, payload.Length), .. payload];
    }

    /// <summary>Decodes exactly one item that spans all of <paramref name="encoded"/>.</summary>
    /// <exception cref="FormatException">Malformed, non-canonical, nested deeper than <see cref="MaxDepth"/>, or with bytes left over.</exception>
    public static RlpItem Decode(ReadOnlySpan<byte> encoded)
    {
        var item = DecodeOne(encoded, 0, out var used);
        if (used != encoded.Length)
            throw new FormatException($"{encoded.Length - used} bytes follow the RLP item");
        return item;
    }

    private static byte[] Prefix(byte offset, int length)
    {
        if (length <= 55)
            return [(byte)(offset + length)];
        var lengthBytes = EthHex.Unsigned(length);
        return [(byte)(offset + 55 + lengthBytes.Length), .. lengthBytes];
    }

    private static RlpItem DecodeOne(ReadOnlySpan<byte> input, int depth, out int used)
    {
        if (input.IsEmpty)
            throw new FormatException("RLP input ends where an item should begin");
        var first = input[0];
        if (first < 0x80)
        {
            used = 1;
            return new RlpString([first]);
        }

        var isList = first >= 0xc0;
        var offset = isList ? 0xc0 : 0x80;
        int header, length;
        if (first - offset <= 55)
        {
            header = 1;
            length = first - offset;
        }
        else
        {
            var lengthOfLength = first - offset - 55;
            if (input.Length < 1 + lengthOfLength)
                throw new FormatException("RLP input ends inside a length");
            var lengthBytes = input.Slice(1, lengthOfLength);
            if (lengthBytes[0] == 0)
                throw new FormatException("an RLP length has a leading zero byte");
            var value = EthHex.ToUnsigned(lengthBytes);
            if (value > int.MaxValue)
                throw new FormatException("an RLP length is too large");
            if (value <= 55)
                throw new FormatException("an RLP length of at most 55 uses the long form");
            header = 1 + lengthOfLength;
            length = (int)value;
        }

        if (input.Length - header < length)
            throw new FormatException($"RLP input ends inside an item of {length} bytes");
        var payload = input.Slice(header, length);
        used = header + length;
        if (!isList)
        {
            if (length == 1 && payload[0] < 0x80)
                throw new FormatException("a single byte below 0x80 is its own RLP encoding");
            return new RlpString(payload.ToArray());
        }

        if (depth >= MaxDepth)
            throw new FormatException($"RLP lists nest deeper than {MaxDepth}");
        var items = new List<RlpItem>();
        while (!payload.IsEmpty)
        {
            items.Add(DecodeOne(payload, depth + 1, out var consumed));
            payload = payload[consumed..];
        }

        return new RlpList(items);
    }
}
