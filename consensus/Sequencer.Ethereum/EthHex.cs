using System.Globalization;
using System.Numerics;

namespace Sequencer.Ethereum;

/// <summary>0x-prefixed hex as JSON-RPC uses it: byte strings (even length) and quantities (no leading zeros).</summary>
public static class EthHex
{
    /// <summary>0x-prefixed lower-case hex of <paramref name="bytes"/>.</summary>
    public static string Bytes(ReadOnlySpan<byte> bytes) => "0x" + Convert.ToHexStringLower(bytes);

    /// <summary>Parses 0x-prefixed (or bare) hex of even length.</summary>
    /// <exception cref="FormatException">Not hex, or of odd length.</exception>
    public static byte[] ToBytes(string hex)
    {
        ArgumentNullException.ThrowIfNull(hex);
        var digits = hex.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? hex.AsSpan(2) : hex.AsSpan();
        if (digits.Length % 2 != 0)
            throw new FormatException($"hex of odd length: {Shorten(hex)}");
        try
        {
            return Convert.FromHexString(digits);
        }
        catch (FormatException)
        {
            throw new FormatException($"not hex: {Shorten(hex)}");
        }
    }

    /// <summary>A JSON-RPC quantity: 0x and the value in hex without leading zeros (0 is "0x0").</summary>
    public static string Quantity(BigInteger value)
    {
        if (value.Sign < 0)
            throw new ArgumentOutOfRangeException(nameof(value), "a quantity is not negative");
        return value.IsZero ? "0x0" : "0x" + value.ToString("x", CultureInfo.InvariantCulture).TrimStart('0');
    }

    /// <summary>Parses a JSON-RPC quantity.</summary>
    /// <exception cref="FormatException">Not a 0x-prefixed hex quantity.</exception>
    public static BigInteger ToQuantity(string hex)
    {
        ArgumentNullException.ThrowIfNull(hex);
        if (!hex.StartsWith("0x", StringComparison.OrdinalIgnoreCase) || hex.Length < 3 || hex.Length > 2 + 64)
            throw new FormatException($"not a quantity: {Shorten(hex)}");
        if (!BigInteger.TryParse("0" + hex[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value))
            throw new FormatException($"not a quantity: {Shorten(hex)}");
        return value;
    }

    /// <summary>Parses a JSON-RPC quantity that fits 64 bits.</summary>
    public static ulong ToUInt64(string hex)
    {
        var value = ToQuantity(hex);
        return value > ulong.MaxValue ? throw new FormatException($"{Shorten(hex)} does not fit 64 bits") : (ulong)value;
    }

    /// <summary>The unsigned big-endian bytes of <paramref name="value"/>, without leading zeros (0 is empty).</summary>
    public static byte[] Unsigned(BigInteger value)
    {
        if (value.Sign < 0)
            throw new ArgumentOutOfRangeException(nameof(value), "the value is negative");
        return value.IsZero ? [] : value.ToByteArray(isUnsigned: true, isBigEndian: true);
    }

    /// <summary>The unsigned big-endian value of <paramref name="bytes"/>.</summary>
    public static BigInteger ToUnsigned(ReadOnlySpan<byte> bytes) => new(bytes, isUnsigned: true, isBigEndian: true);

    private static string Shorten(string text) => text.Length > 80 ? text[..80] + "..." : text;
}
