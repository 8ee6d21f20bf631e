using System.Numerics;
using System.Text;

namespace Sequencer.Ethereum;

/// <summary>A value in the Solidity contract ABI (the subset this client needs), ready to encode.</summary>
public abstract class AbiValue
{
    /// <summary>True for types whose encoding is out of line (bytes, string, T[], tuples holding one of those).</summary>
    public abstract bool IsDynamic { get; }

    /// <summary>The ABI encoding of this value on its own.</summary>
    public abstract byte[] Encode();

    /// <summary>uint256 (or any uintN: the value must fit <paramref name="bits"/>).</summary>
    public static AbiValue Uint(BigInteger value, int bits = 256) => new Word(UintWord(value, bits));

    /// <summary>address.</summary>
    public static AbiValue Of(Address address) => new Word([.. new byte[12], .. (address ?? throw new ArgumentNullException(nameof(address))).Bytes]);

    /// <summary>bool.</summary>
    public static AbiValue Of(bool value) => Uint(value ? BigInteger.One : BigInteger.Zero);

    /// <summary>bytes32 (or a shorter bytesN, right-padded).</summary>
    public static AbiValue Bytes32(ReadOnlySpan<byte> value)
        => value.Length <= 32 ? new Word([.. value, .. new byte[32 - value.Length]]) : throw new ArgumentException("bytesN holds at most 32 bytes", nameof(value));

    /// <summary>bytes (dynamic).</summary>
    public static AbiValue Bytes(ReadOnlySpan<byte> value) => new DynamicBytes(value.ToArray());

    /// <summary>string (dynamic, UTF-8).</summary>
    public static AbiValue String(string value) => new DynamicBytes(Encoding.UTF8.GetBytes(value));

    /// <summary>T[] (dynamic).</summary>
    public static AbiValue Array(IEnumerable<AbiValue> items) => new DynamicArray([.. items]);

    /// <summary>A tuple (a struct).</summary>
    public static AbiValue Tuple(params IEnumerable<AbiValue> items) => new TupleValue([.. items]);

    internal static byte[] UintWord(BigInteger value, int bits = 256)
    {
        if (value.Sign < 0 || value.GetBitLength() > bits)
            throw new ArgumentOutOfRangeException(nameof(value), $"{value} does not fit uint{bits}");
        var bytes = EthHex.Unsigned(value);
        return [.. new byte[32 - bytes.Length], .. bytes];
    }

    private sealed class Word(byte[] word) : AbiValue
    {
        public override bool IsDynamic => false;

        public override byte[] Encode() => word;
    }

    private sealed class DynamicBytes(byte[] value) : AbiValue
    {
        public override bool IsDynamic => true;

        public override byte[] Encode() => [.. UintWord(value.Length), .. value, .. new byte[(32 - value.Length % 32) % 32]];
    }

    private sealed class DynamicArray(List<AbiValue> items) : AbiValue
    {
        public override bool IsDynamic => true;

        public override byte[] Encode() => [.. UintWord(items.Count), .. Abi.EncodeTuple(items)];
    }

    private sealed class TupleValue(List<AbiValue> items) : AbiValue
    {
        public override bool IsDynamic => items.Any(i => i.IsDynamic);

        public override byte[] Encode() => Abi.EncodeTuple(items);
    }
}

/// <summary>Contract ABI encoding: function selectors, call data, and reading return data, events and custom errors.</summary>
public static class Abi
{
    /// <summary>The 4-byte selector of a function or error signature such as <c>postHead((uint256,...),bytes32[])</c>.</summary>
    public static byte[] Selector(string signature) => Keccak.Hash(signature)[..4];

    /// <summary>The topic of an event signature: its keccak256.</summary>
    public static byte[] EventTopic(string signature) => Keccak.Hash(signature);

    /// <summary>Call data: the selector of <paramref name="signature"/> and the arguments as one tuple.</summary>
    public static byte[] Call(string signature, params IEnumerable<AbiValue> arguments) => [.. Selector(signature), .. EncodeTuple([.. arguments])];

    /// <summary>The encoding of several values as one tuple (heads, then the tails of dynamic values).</summary>
    public static byte[] EncodeTuple(IReadOnlyList<AbiValue> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        var encoded = items.Select(i => i.Encode()).ToList();
        var headSize = 0;
        for (var i = 0; i < items.Count; i++)
            headSize += items[i].IsDynamic ? 32 : encoded[i].Length;
        var head = new List<byte>();
        var tail = new List<byte>();
        for (var i = 0; i < items.Count; i++)
        {
            if (items[i].IsDynamic)
            {
                head.AddRange(AbiValue.UintWord(headSize + tail.Count));
                tail.AddRange(encoded[i]);
            }
            else
            {
                head.AddRange(encoded[i]);
            }
        }

        return [.. head, .. tail];
    }
}

/// <summary>Reads ABI-encoded data (return values, event data) word by word, with bounds checked.</summary>
/// <param name="data">The encoded data.</param>
public sealed class AbiReader(byte[] data)
{
    /// <summary>The number of whole words.</summary>
    public int Words => data.Length / 32;

    /// <summary>Word <paramref name="index"/>'s 32 bytes.</summary>
    public ReadOnlySpan<byte> Word(int index)
        => index >= 0 && (index + 1) * 32 <= data.Length ? data.AsSpan(index * 32, 32) : throw new FormatException($"the ABI data has no word {index} ({data.Length} bytes)");

    /// <summary>Word <paramref name="index"/> as an unsigned integer.</summary>
    public BigInteger Uint(int index) => EthHex.ToUnsigned(Word(index));

    /// <summary>Word <paramref name="index"/> as a uint that must fit 64 bits.</summary>
    public ulong UInt64(int index)
    {
        var value = Uint(index);
        return value > ulong.MaxValue ? throw new FormatException($"word {index} does not fit 64 bits") : (ulong)value;
    }

    /// <summary>Word <paramref name="index"/> as bytes32.</summary>
    public byte[] Bytes32(int index) => Word(index).ToArray();

    /// <summary>Word <paramref name="index"/> as an address (its high 12 bytes must be zero).</summary>
    public Address Address(int index)
    {
        var word = Word(index);
        return word[..12].IndexOfAnyExcept((byte)0) < 0 ? Ethereum.Address.FromBytes(word[12..]) : throw new FormatException($"word {index} is not an address");
    }

    /// <summary>Word <paramref name="index"/> as bool.</summary>
    public bool Bool(int index)
    {
        var value = Uint(index);
        return value <= 1 ? value == 1 : throw new FormatException($"word {index} is not a bool");
    }

    /// <summary>The dynamic bytes whose offset is word <paramref name="index"/>.</summary>
    public byte[] Bytes(int index)
    {
        var offset = Offset(index);
        var length = EthHex.ToUnsigned(Slice(offset, 32));
        if (length > data.Length)
            throw new FormatException("a bytes length runs past the data");
        return Slice(offset + 32, (int)length).ToArray();
    }

    private int Offset(int index)
    {
        var offset = Uint(index);
        return offset <= data.Length - 32 ? (int)offset : throw new FormatException($"word {index}'s offset runs past the data");
    }

    private ReadOnlySpan<byte> Slice(int offset, int length)
        => offset >= 0 && length >= 0 && offset + length <= data.Length ? data.AsSpan(offset, length) : throw new FormatException("ABI data ends early");
}
