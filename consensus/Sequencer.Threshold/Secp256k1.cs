using System.Security.Cryptography;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.EC;
using Org.BouncyCastle.Math;
using Org.BouncyCastle.Math.EC;
using Org.BouncyCastle.Math.EC.Multiplier;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;
using ECCurve = Org.BouncyCastle.Math.EC.ECCurve;

namespace Sequencer.Threshold;

/// <summary>
/// The secp256k1 group of RFC 9591's FROST(secp256k1, SHA-256): elements are points serialized as 33-byte compressed
/// SEC1, scalars are integers modulo the group order serialized as 32 bytes big-endian.
/// </summary>
/// <remarks>
/// Uses BouncyCastle's <see cref="CustomNamedCurves"/> implementation, measured about 7 times faster per scalar
/// multiplication than the generic one (DESIGN section 9).
/// </remarks>
public static class Secp256k1
{
    /// <summary>The length of a serialized element.</summary>
    public const int ElementLength = 33;

    /// <summary>The length of a serialized scalar.</summary>
    public const int ScalarLength = 32;

    private static readonly X9ECParameters Parameters = CustomNamedCurves.GetByName("secp256k1");

    /// <summary>The group order n.</summary>
    public static BigInteger Order { get; } = Parameters.N;

    /// <summary>The generator G.</summary>
    public static ECPoint Generator { get; } = Parameters.G;

    /// <summary>The curve.</summary>
    public static ECCurve Curve { get; } = Parameters.Curve;

    /// <summary>The identity element.</summary>
    public static ECPoint Identity => Curve.Infinity;

    // A fixed-point comb over G: its precomputed table is built once and reused, which makes every G * k several times
    // faster than a generic multiplication, and the comb's running time does not depend on k's bits (DESIGN section 9).
    private static readonly FixedPointCombMultiplier Comb = new();

    /// <summary>G * <paramref name="scalar"/>, through a fixed-point comb (fast, and regular in the scalar).</summary>
    public static ECPoint BaseMultiply(BigInteger scalar) => Comb.Multiply(Generator, Reduce(scalar)).Normalize();

    /// <summary>Reduces modulo the order.</summary>
    public static BigInteger Reduce(BigInteger value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return value.Mod(Order);
    }

    /// <summary>A uniformly random scalar in [1, n-1] (rejection sampling on 32 random bytes).</summary>
    public static BigInteger RandomScalar()
    {
        Span<byte> bytes = stackalloc byte[ScalarLength];
        while (true)
        {
            RandomNumberGenerator.Fill(bytes);
            var candidate = new BigInteger(1, bytes);
            CryptographicOperations.ZeroMemory(bytes);
            if (candidate.SignValue > 0 && candidate.CompareTo(Order) < 0)
                return candidate;
        }
    }

    /// <summary>SerializeElement: compressed SEC1; the identity cannot be serialized.</summary>
    /// <exception cref="ArgumentException">The element is the identity.</exception>
    public static byte[] SerializeElement(ECPoint element)
    {
        ArgumentNullException.ThrowIfNull(element);
        if (element.IsInfinity)
            throw new ArgumentException("the identity element cannot be serialized", nameof(element));
        return element.Normalize().GetEncoded(true);
    }

    /// <summary>DeserializeElement: a 33-byte compressed point on the curve, not the identity.</summary>
    /// <exception cref="FormatException">The bytes are not a valid element.</exception>
    public static ECPoint DeserializeElement(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != ElementLength || (bytes[0] != 0x02 && bytes[0] != 0x03))
            throw new FormatException("an element is 33 bytes of compressed SEC1 (0x02 or 0x03 first)");
        ECPoint point;
        try
        {
            point = Curve.DecodePoint(bytes.ToArray());
        }
        catch (ArgumentException e)
        {
            throw new FormatException("not a point on secp256k1: " + e.Message, e);
        }

        if (point.IsInfinity || !point.IsValid())
            throw new FormatException("not a valid secp256k1 point");
        return point.Normalize();
    }

    /// <summary>SerializeScalar: 32 bytes big-endian.</summary>
    public static byte[] SerializeScalar(BigInteger scalar)
    {
        ArgumentNullException.ThrowIfNull(scalar);
        var value = Reduce(scalar);
        var bytes = value.ToByteArrayUnsigned();
        if (bytes.Length == ScalarLength)
            return bytes;
        var padded = new byte[ScalarLength];
        bytes.CopyTo(padded.AsSpan(ScalarLength - bytes.Length));
        return padded;
    }

    /// <summary>DeserializeScalar: 32 bytes big-endian, less than the order.</summary>
    /// <exception cref="FormatException">Not 32 bytes, or not below the order.</exception>
    public static BigInteger DeserializeScalar(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != ScalarLength)
            throw new FormatException("a scalar is 32 bytes");
        var value = new BigInteger(1, bytes);
        if (value.CompareTo(Order) >= 0)
            throw new FormatException("the scalar is not below the group order");
        return value;
    }
}
