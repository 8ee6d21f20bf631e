using System.Security.Cryptography;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.EC;
using Org.BouncyCastle.Math;
using Org.BouncyCastle.Math.EC;
using Sequencer.Threshold.Curve;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;
using ECCurve = Org.BouncyCastle.Math.EC.ECCurve;

namespace Sequencer.Threshold;

/// <summary>
/// The secp256k1 group of RFC 9591's FROST(secp256k1, SHA-256): elements are points serialized as 33-byte compressed
/// SEC1, scalars are integers modulo the group order serialized as 32 bytes big-endian.
/// </summary>
/// <remarks>
/// <para>
/// Points are BouncyCastle's <see cref="ECPoint"/> (on its <see cref="CustomNamedCurves"/> secp256k1 curve), but every
/// scalar multiplication, multi-scalar sum and point decoding runs on the managed arithmetic of
/// <see cref="Curve.EcMultiplier"/> (4×64-bit limbs, GLV and wNAF, precomputed tables for G), several times faster than
/// BouncyCastle's. Points cross the boundary as affine coordinates.
/// </para>
/// <para>
/// Constant time (for secret scalars): <see cref="BaseMultiply"/> and <see cref="MultiplySecret"/>. Variable time
/// (public scalars only): <see cref="BaseMultiplyPublic"/>, <see cref="Multiply"/>, <see cref="SumOfMultiplies"/>
/// and <see cref="IsSumOfMultiplies"/>.
/// </para>
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

    /// <summary>
    /// G * <paramref name="scalar"/> for a secret scalar (nonces, shares, coefficients): constant time, a comb over a
    /// static table with every row scanned in full. The scalar's reduction modulo n is BouncyCastle's.
    /// </summary>
    public static ECPoint BaseMultiply(BigInteger scalar) => ToEcPoint(EcMultiplier.BaseMultiplyConstantTime(Scalar.FromBigInteger(scalar)));

    /// <summary>G * <paramref name="scalar"/> for a public scalar: variable time.</summary>
    public static ECPoint BaseMultiplyPublic(BigInteger scalar) => ToEcPoint(EcMultiplier.BaseMultiply(Scalar.FromBigInteger(scalar)));

    /// <summary><paramref name="point"/> * <paramref name="scalar"/> for a public scalar: variable time (GLV, wNAF).</summary>
    public static ECPoint Multiply(ECPoint point, BigInteger scalar)
    {
        ArgumentNullException.ThrowIfNull(point);
        if (point.IsInfinity)
            return Identity;
        return ToEcPoint(EcMultiplier.Multiply(ToAffine(point), Scalar.FromBigInteger(scalar)));
    }

    /// <summary>
    /// <paramref name="point"/> * <paramref name="scalar"/> for a secret scalar (ECDH): constant time in the scalar (a
    /// fixed 4-bit window, the table scanned in full).
    /// </summary>
    public static ECPoint MultiplySecret(ECPoint point, BigInteger scalar)
    {
        ArgumentNullException.ThrowIfNull(point);
        if (point.IsInfinity)
            return Identity;
        return ToEcPoint(EcMultiplier.MultiplyConstantTime(ToAffine(point), Scalar.FromBigInteger(scalar)));
    }

    /// <summary>
    /// G * <paramref name="generatorScalar"/> + Σ points[i] * scalars[i] for public scalars: variable time, one
    /// interleaved multi-scalar multiplication (terms with scalar 1 cost one addition). A null generator scalar is 0.
    /// </summary>
    public static ECPoint SumOfMultiplies(BigInteger? generatorScalar, IReadOnlyList<ECPoint> points, IReadOnlyList<BigInteger> scalars)
        => ToEcPoint(LinearCombination(generatorScalar, points, scalars));

    /// <summary>
    /// True when G * <paramref name="generatorScalar"/> + Σ points[i] * scalars[i] equals <paramref name="expected"/>,
    /// for public values: variable time, and no inversion to compare.
    /// </summary>
    public static bool IsSumOfMultiplies(ECPoint expected, BigInteger? generatorScalar, IReadOnlyList<ECPoint> points, IReadOnlyList<BigInteger> scalars)
    {
        ArgumentNullException.ThrowIfNull(expected);
        var sum = LinearCombination(generatorScalar, points, scalars);
        return expected.IsInfinity ? sum.IsInfinity : sum.EqualsAffine(ToAffine(expected));
    }

    /// <summary>Whether g·G + Σ k_i·P_i is the identity (public values, variable time).</summary>
    public static bool IsIdentityCombination(BigInteger generatorScalar, IReadOnlyList<ECPoint> points, IReadOnlyList<BigInteger> scalars)
        => LinearCombination(generatorScalar, points, scalars).IsInfinity;

    /// <summary>Σ points (public).</summary>
    public static ECPoint Sum(IEnumerable<ECPoint> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        var sum = JacobianPoint.Infinity;
        foreach (var point in points)
        {
            ArgumentNullException.ThrowIfNull(point);
            if (point.IsInfinity)
                continue;
            var affine = ToAffine(point);
            sum = JacobianPoint.AddAffine(sum, affine.X, affine.Y);
        }

        return ToEcPoint(sum);
    }

    private static JacobianPoint LinearCombination(BigInteger? generatorScalar, IReadOnlyList<ECPoint> points, IReadOnlyList<BigInteger> scalars)
    {
        ArgumentNullException.ThrowIfNull(points);
        ArgumentNullException.ThrowIfNull(scalars);
        if (points.Count != scalars.Count)
            throw new ArgumentException("one scalar per point");
        var affine = new AffinePoint[points.Count];
        var reduced = new Scalar[points.Count];
        var used = 0;
        for (var i = 0; i < points.Count; i++)
        {
            ArgumentNullException.ThrowIfNull(points[i]);
            if (points[i].IsInfinity)
                continue;
            affine[used] = ToAffine(points[i]);
            reduced[used] = Scalar.FromBigInteger(scalars[i]);
            used++;
        }

        var g = generatorScalar is null ? Scalar.Zero : Scalar.FromBigInteger(generatorScalar);
        return EcMultiplier.MultiplyAdd(g, affine.AsSpan(0, used), reduced.AsSpan(0, used));
    }

    /// <summary>A BouncyCastle point's affine coordinates (it must not be the identity).</summary>
    internal static AffinePoint ToAffine(ECPoint point)
    {
        var normalized = point.Normalize();
        var x = FieldElement.FromBytesReduced(normalized.AffineXCoord.GetEncoded());
        var y = FieldElement.FromBytesReduced(normalized.AffineYCoord.GetEncoded());
        return new AffinePoint(x, y);
    }

    /// <summary>A normalized BouncyCastle point from affine coordinates.</summary>
    internal static ECPoint ToEcPoint(in AffinePoint point)
        => Curve.CreatePoint(new BigInteger(1, point.X.ToBytes()), new BigInteger(1, point.Y.ToBytes()));

    /// <summary>A normalized BouncyCastle point (the identity included).</summary>
    internal static ECPoint ToEcPoint(in JacobianPoint point)
        => point.TryToAffine(out var affine) ? ToEcPoint(affine) : Identity;

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
        if (!AffinePoint.TryDecodeCompressed(bytes, out var point))
            throw new FormatException("not a point on secp256k1: x is not below p, or x^3 + 7 is not a square");
        return ToEcPoint(point);
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
