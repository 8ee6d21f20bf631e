using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.EC;
using Sequencer.Threshold.Curve;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;
using BcPoint = Org.BouncyCastle.Math.EC.ECPoint;
using NBigInteger = System.Numerics.BigInteger;

namespace Sequencer.Tests;

/// <summary>
/// The managed secp256k1 arithmetic (Sequencer.Threshold.Curve) against reference arithmetic: the field against
/// System.Numerics integers, points and multiplications against BouncyCastle's secp256k1, on seeded random inputs and
/// the edge cases.
/// </summary>
public sealed class Secp256k1CurveTests
{
    private static readonly X9ECParameters Bc = CustomNamedCurves.GetByName("secp256k1");
    private static readonly NBigInteger P = (NBigInteger.One << 256) - (NBigInteger.One << 32) - 977;
    private static readonly NBigInteger N = NBigInteger.Parse("0FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", System.Globalization.NumberStyles.HexNumber);
    private static readonly BcBigInteger BcN = Bc.N;

    // ---- reference helpers ----

    private static NBigInteger ToN(ReadOnlySpan<byte> bigEndian) => new(bigEndian, isUnsigned: true, isBigEndian: true);

    private static NBigInteger ToN(FieldElement element) => ToN(element.ToBytes());

    private const ulong M52 = (1UL << 52) - 1;
    private const ulong M48 = (1UL << 48) - 1;

    /// <summary>The raw value of the limbs, Σ n_i·2^(52i) (possibly above p).</summary>
    private static NBigInteger Raw(FieldElement e)
        => e.N0 + ((NBigInteger)e.N1 << 52) + ((NBigInteger)e.N2 << 104) + ((NBigInteger)e.N3 << 156) + ((NBigInteger)e.N4 << 208);

    /// <summary>True when the limbs are within magnitude m: n_0..n_3 ≤ 2m·(2^52 - 1), n_4 ≤ 2m·(2^48 - 1).</summary>
    private static bool HasMagnitude(FieldElement e, ulong m)
        => e.N0 <= 2 * m * M52 && e.N1 <= 2 * m * M52 && e.N2 <= 2 * m * M52 && e.N3 <= 2 * m * M52 && e.N4 <= 2 * m * M48;

    private static byte[] To32(NBigInteger value)
    {
        var bytes = new byte[32];
        var raw = value.ToByteArray(isUnsigned: true, isBigEndian: true);
        raw.CopyTo(bytes, 32 - raw.Length);
        return bytes;
    }

    /// <summary>Limbs of magnitude m: random, the maximum, or small, limb by limb.</summary>
    private static FieldElement RandomLimbs(Random random, ulong m)
    {
        ulong Limb(ulong max) => random.Next(4) switch
        {
            0 => max,
            1 => (ulong)random.NextInt64(0, 4),
            2 => max - (ulong)random.NextInt64(0, 4),
            _ => (ulong)random.NextInt64(long.MinValue, long.MaxValue) % (max + 1),
        };
        return new FieldElement(Limb(2 * m * M52), Limb(2 * m * M52), Limb(2 * m * M52), Limb(2 * m * M52), Limb(2 * m * M48));
    }

    /// <summary>Canonical elements from values below 2^256 (reduced), with the edges first.</summary>
    private static IEnumerable<NBigInteger> FieldValues(int seed, int count)
    {
        var random = new Random(seed);
        NBigInteger top = (NBigInteger.One << 256) - 1;
        NBigInteger[] edges = [0, 1, 2, 977, P - 1, P - 2, P, P + 1, top, top - 1, NBigInteger.One << 255, (NBigInteger.One << 52) - 1, (NBigInteger.One << 32) + 977];
        foreach (var e in edges)
            yield return e;
        for (var i = 0; i < count; i++)
        {
            yield return (i % 4) switch
            {
                0 => Random256(random),
                1 => P - (Random256(random) >> random.Next(200, 256)),
                2 => top - (Random256(random) >> random.Next(200, 256)),
                _ => Random256(random) >> random.Next(0, 256),
            };
        }
    }

    private static NBigInteger Random256(Random random)
    {
        var bytes = new byte[32];
        random.NextBytes(bytes);
        return ToN(bytes);
    }

    private static NBigInteger Mod(NBigInteger a, NBigInteger m)
    {
        var r = a % m;
        return r.Sign < 0 ? r + m : r;
    }

    private static BcBigInteger Bc256(Random random)
    {
        var bytes = new byte[32];
        random.NextBytes(bytes);
        return new BcBigInteger(1, bytes);
    }

    private static byte[] Encode(BcPoint point) => point.IsInfinity ? [0] : point.Normalize().GetEncoded(true);

    private static byte[] Encode(JacobianPoint point) => point.TryToAffine(out var affine) ? affine.EncodeCompressed() : [0];

    private static AffinePoint FromBc(BcPoint point)
    {
        Assert.True(AffinePoint.TryDecodeCompressed(point.Normalize().GetEncoded(true), out var affine));
        return affine;
    }

    /// <summary>Random scalars, half below n and half any 256-bit value, after the edges.</summary>
    private static IEnumerable<BcBigInteger> ScalarInputs(int seed, int count)
    {
        var random = new Random(seed);
        var lambda = Scalar.Lambda.ToBigInteger();
        var max = BcBigInteger.One.ShiftLeft(256).Subtract(BcBigInteger.One);
        BcBigInteger[] edges =
        [
            BcBigInteger.Zero, BcBigInteger.One, BcBigInteger.Two, BcBigInteger.ValueOf(15), BcBigInteger.ValueOf(16), BcBigInteger.ValueOf(17),
            BcN.Subtract(BcBigInteger.One), BcN.Subtract(BcBigInteger.Two), BcN, BcN.Add(BcBigInteger.One), max,
            BcN.ShiftRight(1), BcN.ShiftRight(1).Add(BcBigInteger.One), lambda, BcN.Subtract(lambda), BcBigInteger.One.ShiftLeft(128),
            BcBigInteger.One.ShiftLeft(255), BcBigInteger.One.ShiftLeft(252).Multiply(BcBigInteger.ValueOf(15)),
        ];
        foreach (var e in edges)
            yield return e;
        for (var i = 0; i < count; i++)
        {
            var value = Bc256(random);
            yield return (i % 3) switch
            {
                0 => value,
                1 => value.Mod(BcN),
                _ => value.ShiftRight(random.Next(0, 256)),
            };
        }
    }

    // ---- field ----

    [Fact]
    public void Field_MultiplyAndSquare_AtEveryMagnitudeUpTo8()
    {
        var random = new Random(1);
        for (var i = 0; i < 6000; i++)
        {
            var a = RandomLimbs(random, (ulong)(1 + (i % 8)));
            var b = RandomLimbs(random, (ulong)(1 + (i / 8 % 8)));
            var product = FieldElement.Multiply(a, b);
            Assert.True(HasMagnitude(product, 1));
            Assert.Equal(Mod(Raw(a) * Raw(b), P), Mod(Raw(product), P));
            Assert.Equal(Mod(Raw(a) * Raw(b), P), ToN(product));
            var square = FieldElement.Square(a);
            Assert.True(HasMagnitude(square, 1));
            Assert.Equal(Mod(Raw(a) * Raw(a), P), Mod(Raw(square), P));
        }

        // The largest column sums: every limb at its bound for magnitude 8, and each operand alone at it.
        var largest = new FieldElement(16 * M52, 16 * M52, 16 * M52, 16 * M52, 16 * M48);
        foreach (var (a, b) in new[] { (largest, largest), (largest, FieldElement.One), (largest, new FieldElement(M52, M52, M52, M52, M48)) })
        {
            var product = FieldElement.Multiply(a, b);
            Assert.True(HasMagnitude(product, 1));
            Assert.Equal(Mod(Raw(a) * Raw(b), P), ToN(product));
            var square = FieldElement.Square(a);
            Assert.True(HasMagnitude(square, 1));
            Assert.Equal(Mod(Raw(a) * Raw(a), P), ToN(square));
        }
    }

    /// <summary>
    /// The field product without the CPU's high-half multiply (Math.BigMul, as on a CPU without BMI2 or Arm64): the
    /// test above, run again in a child process of this test assembly with BMI2 turned off (DOTNET_EnableAVX2=0).
    /// </summary>
    [Fact]
    public async Task Field_MultiplyAndSquare_WithoutBmi2()
    {
        if (!System.Runtime.Intrinsics.X86.Bmi2.X64.IsSupported)
            Assert.Skip("no x64 BMI2 here: the child process would run the same path as the test above");
        // .NET 10 turns BMI2 off with the AVX2 group (DOTNET_EnableBMI2 is no longer read).
        await InstructionSetRuns.RunAsync([$"{typeof(Secp256k1CurveTests).FullName}.{nameof(Field_MultiplyAndSquare_AtEveryMagnitudeUpTo8)}"], 1,
            ("DOTNET_EnableAVX2", "0"));
    }

    [Fact]
    public void Field_AddNegateAndNormalize_KeepTheirMagnitudes()
    {
        var random = new Random(2);
        for (var i = 0; i < 6000; i++)
        {
            var ma = (uint)(1 + (i % 32));
            var mb = (uint)(1 + (i / 32 % 32));
            var a = RandomLimbs(random, ma);
            var b = RandomLimbs(random, mb);
            var sum = FieldElement.Add(a, b);
            Assert.True(HasMagnitude(sum, ma + mb));
            Assert.Equal(Raw(a) + Raw(b), Raw(sum));
            var negated = FieldElement.Negate(a, ma);
            Assert.True(HasMagnitude(negated, ma + 1));
            Assert.Equal(Mod(-Raw(a), P), Mod(Raw(negated), P));
            var difference = FieldElement.Subtract(a, b, mb);
            Assert.True(HasMagnitude(difference, ma + mb + 1));
            Assert.Equal(Mod(Raw(a) - Raw(b), P), Mod(Raw(difference), P));
            Assert.Equal(Mod(Raw(a) * 7, P), Mod(Raw(FieldElement.MultiplyInt(a, 7)), P));
            Assert.Equal(Mod(Raw(a) * 2, P), Mod(Raw(FieldElement.Double(a)), P));

            // Normalization, from magnitudes up to 512.
            var big = RandomLimbs(random, (ulong)(1 + (i % 512)));
            var weak = big.NormalizeWeak();
            Assert.True(HasMagnitude(weak, 1));
            Assert.Equal(Mod(Raw(big), P), Mod(Raw(weak), P));
            var normal = big.Normalize();
            Assert.Equal(Mod(Raw(big), P), Raw(normal));
            Assert.True(normal.IsCanonical());
            Assert.Equal(Mod(Raw(big), P).IsZero, big.IsZero);
            Assert.Equal(Mod(Raw(a), P) == Mod(Raw(b), P), a.Equals(b));
            Assert.Equal(Mod(Raw(a), P) == Mod(Raw(b), P), FieldElement.EqualsMask(a, b) == ulong.MaxValue);
            Assert.True(a.Equals(FieldElement.Add(FieldElement.Subtract(a, b, mb), b)));
        }

        // Values that are 0 or p in disguise.
        var p = FieldElement.FromBytesReduced(To32(P - 1));
        var zeroish = FieldElement.Add(p, FieldElement.One);
        Assert.True(zeroish.IsZero);
        Assert.True(FieldElement.Negate(FieldElement.Zero, 1).IsZero);
        Assert.Equal(NBigInteger.Zero, Raw(zeroish.Normalize()));
    }

    [Fact]
    public void Field_InverseAndSquareRootMatchReference()
    {
        var i = 0;
        foreach (var value in FieldValues(3, 1500))
        {
            // Inputs of magnitude 2 as the point formulas give them: the value plus a multiple of p.
            var fa = FieldElement.Add(FieldElement.FromBytesReduced(To32(Mod(value, P))), i++ % 2 == 0 ? FieldElement.Zero : FieldElement.Negate(FieldElement.Zero, 0));
            var reduced = Mod(value, P);
            Assert.Equal(reduced, Mod(Raw(fa), P));
            Assert.Equal(reduced.IsZero ? 0 : NBigInteger.ModPow(reduced, P - 2, P), ToN(FieldElement.Invert(fa)));
            if (!reduced.IsZero)
                Assert.Equal(NBigInteger.One, ToN(FieldElement.Multiply(FieldElement.Invert(fa), fa)));

            var isSquare = reduced.IsZero || NBigInteger.ModPow(reduced, (P - 1) / 2, P).IsOne;
            Assert.Equal(isSquare, FieldElement.Sqrt(fa, out var root));
            if (isSquare)
                Assert.Equal(reduced, Mod(ToN(root) * ToN(root), P));

            // A square always has a root.
            Assert.True(FieldElement.Sqrt(FieldElement.Square(fa), out var r2));
            Assert.Equal(Mod(value * value, P), Mod(ToN(r2) * ToN(r2), P));
        }
    }

    [Fact]
    public void Field_ParsingAndSerialization()
    {
        foreach (var a in FieldValues(4, 1000))
        {
            var bytes = To32(a);
            Assert.Equal(a < P, FieldElement.TryParse(bytes, out var parsed));
            var reduced = FieldElement.FromBytesReduced(bytes);
            Assert.Equal(Mod(a, P), ToN(reduced));
            Assert.Equal(Mod(a, P), Raw(reduced));
            Assert.True(reduced.IsCanonical());
            if (a < P)
            {
                Assert.Equal(a, Raw(parsed));
                Assert.Equal(bytes, parsed.ToBytes());
                Assert.Equal(!a.IsEven, parsed.IsOdd);
            }
        }
    }

    // ---- scalars ----

    [Fact]
    public void Scalar_ConversionsNegationAndBits()
    {
        foreach (var k in ScalarInputs(5, 2000))
        {
            var s = Scalar.FromBigInteger(k);
            var reduced = k.Mod(BcN);
            Assert.Equal(reduced, s.ToBigInteger());
            Assert.Equal(BcN.Subtract(reduced).Mod(BcN), s.Negate().ToBigInteger());
            var bytes = new byte[32];
            var raw = k.ToByteArrayUnsigned();
            if (raw.Length <= 32)
            {
                raw.CopyTo(bytes, 32 - raw.Length);
                Assert.Equal(reduced, Scalar.FromBytes(bytes).ToBigInteger());
            }

            for (var offset = 0; offset < 256; offset += 37)
            {
                var count = 1 + (offset % 9);
                Assert.Equal(reduced.ShiftRight(offset).Mod(BcBigInteger.One.ShiftLeft(count)).IntValue, (int)s.GetBits(offset, count));
            }
        }
    }

    [Fact]
    public void Scalar_GlvSplitAndWnafRecombine()
    {
        var lambda = Scalar.Lambda.ToBigInteger();
        Assert.Equal(BcBigInteger.One, lambda.ModPow(BcBigInteger.Three, BcN));
        Span<ulong> k1 = stackalloc ulong[3];
        Span<ulong> k2 = stackalloc ulong[3];
        var digits = new int[200];
        foreach (var k in ScalarInputs(6, 3000))
        {
            var s = Scalar.FromBigInteger(k);
            s.SplitLambda(k1, out var n1, k2, out var n2);
            var v1 = Magnitude(k1, n1);
            var v2 = Magnitude(k2, n2);
            Assert.True(v1.Abs().BitLength <= 129 && v2.Abs().BitLength <= 129, $"halves of {k}: {v1}, {v2}");
            Assert.Equal(k.Mod(BcN), v1.Add(v2.Multiply(lambda)).Mod(BcN));

            foreach (var width in new[] { 4, 5, 8 })
            {
                var length = Scalar.Wnaf(k1, n1, width, digits);
                var sum = BcBigInteger.Zero;
                var lastNonZero = -width;
                for (var i = 0; i < digits.Length; i++)
                {
                    if (digits[i] == 0)
                        continue;
                    Assert.True(i < length);
                    Assert.True((digits[i] & 1) != 0 && Math.Abs(digits[i]) < (1 << (width - 1)));
                    Assert.True(i - lastNonZero >= width);
                    lastNonZero = i;
                    sum = sum.Add(BcBigInteger.ValueOf(digits[i]).ShiftLeft(i));
                }

                Assert.Equal(v1, sum);
            }
        }
    }

    private static BcBigInteger Magnitude(ReadOnlySpan<ulong> limbs, bool negative)
    {
        var value = BcBigInteger.Zero;
        for (var i = limbs.Length - 1; i >= 0; i--)
            value = value.ShiftLeft(64).Add(new BcBigInteger(1, BitConverter.GetBytes(limbs[i]).Reverse().ToArray()));
        return negative ? value.Negate() : value;
    }

    // ---- points ----

    [Fact]
    public void Generator_AndEndomorphismConstants()
    {
        Assert.Equal(Bc.G.GetEncoded(true), AffinePoint.Generator.EncodeCompressed());
        Assert.True(AffinePoint.Generator.IsOnCurve());
        var lambdaG = Bc.G.Multiply(Scalar.Lambda.ToBigInteger()).Normalize();
        var beta = EcMultiplier.EndomorphismBeta;
        var image = new AffinePoint(FieldElement.Multiply(AffinePoint.Generator.X, beta), AffinePoint.Generator.Y);
        Assert.Equal(lambdaG.GetEncoded(true), image.EncodeCompressed());
    }

    [Fact]
    public void Encoding_RoundTripsAndRejectsInvalid()
    {
        var random = new Random(7);
        for (var i = 0; i < 1000; i++)
        {
            var point = Bc.G.Multiply(Bc256(random)).Normalize();
            var encoded = point.GetEncoded(true);
            Assert.True(AffinePoint.TryDecodeCompressed(encoded, out var decoded));
            Assert.True(decoded.IsOnCurve());
            Assert.Equal(encoded, decoded.EncodeCompressed());
            Assert.Equal(point.AffineXCoord.GetEncoded(), decoded.X.ToBytes());
            Assert.Equal(point.AffineYCoord.GetEncoded(), decoded.Y.ToBytes());

            // The other parity decodes to the negation.
            var flipped = (byte[])encoded.Clone();
            flipped[0] ^= 1;
            Assert.True(AffinePoint.TryDecodeCompressed(flipped, out var negated));
            Assert.Equal(point.Negate().GetEncoded(true), negated.EncodeCompressed());

            foreach (var prefix in new byte[] { 0x00, 0x01, 0x04, 0x05, 0x06, 0x07, 0xFF })
            {
                var wrong = (byte[])encoded.Clone();
                wrong[0] = prefix;
                Assert.False(AffinePoint.TryDecodeCompressed(wrong, out _));
            }

            Assert.False(AffinePoint.TryDecodeCompressed(encoded.AsSpan(0, 32), out _));
            Assert.False(AffinePoint.TryDecodeCompressed([.. encoded, 0], out _));
        }

        // x not on the curve: agree with BouncyCastle on many x, and about half of them have no point.
        var rejected = 0;
        for (var i = 0; i < 1000; i++)
        {
            var x = To32(Random256(random) % P);
            byte[] encoded = [(byte)(2 + (i & 1)), .. x];
            var ours = AffinePoint.TryDecodeCompressed(encoded, out var point);
            bool theirs;
            try
            {
                theirs = Bc.Curve.DecodePoint(encoded).IsValid();
            }
            catch (ArgumentException)
            {
                theirs = false;
            }

            Assert.Equal(theirs, ours);
            if (ours)
                Assert.Equal(Bc.Curve.DecodePoint(encoded).GetEncoded(true), point.EncodeCompressed());
            else
                rejected++;
        }

        Assert.InRange(rejected, 400, 600);

        // x >= p, and x = 0 (7 is not a square modulo p).
        foreach (var x in new[] { P, P + 1, P + 7, (NBigInteger.One << 256) - 1, NBigInteger.Zero })
        {
            Assert.False(AffinePoint.TryDecodeCompressed([0x02, .. To32(x)], out _));
            Assert.False(AffinePoint.TryDecodeCompressed([0x03, .. To32(x)], out _));
        }
    }

    [Fact]
    public void Addition_EdgeCases()
    {
        var random = new Random(8);
        for (var i = 0; i < 300; i++)
        {
            var bcP = Bc.G.Multiply(Bc256(random)).Normalize();
            var bcQ = Bc.G.Multiply(Bc256(random)).Normalize();
            var p = FromBc(bcP);
            var q = FromBc(bcQ);
            var jp = p.ToJacobian();
            // A Jacobian P with Z != 1: 3P - 2P.
            var jp2 = JacobianPoint.Add(JacobianPoint.Double(JacobianPoint.Double(jp)), jp.Negate());
            jp2 = JacobianPoint.Add(jp2, JacobianPoint.Double(jp).Negate());
            Assert.Equal(Encode(bcP), Encode(jp2));

            Assert.Equal(Encode(bcP.Add(bcQ)), Encode(JacobianPoint.Add(jp, q.ToJacobian())));
            Assert.Equal(Encode(bcP.Add(bcQ)), Encode(JacobianPoint.AddAffine(jp2, q.X, q.Y)));
            Assert.Equal(Encode(bcP.Add(bcQ)), Encode(JacobianPoint.AddUnchecked(jp2, q.ToJacobian())));
            Assert.Equal(Encode(bcP.Add(bcQ)), Encode(JacobianPoint.AddAffineUnchecked(jp2, q.X, q.Y)));
            Assert.Equal(Encode(bcP.Twice()), Encode(JacobianPoint.Double(jp2)));
            Assert.Equal(Encode(bcP.Twice()), Encode(JacobianPoint.Add(jp2, jp)));
            Assert.Equal(Encode(bcP.Twice()), Encode(JacobianPoint.AddAffine(jp2, p.X, p.Y)));
            Assert.True(JacobianPoint.Add(jp2, jp.Negate()).IsInfinity);
            Assert.True(JacobianPoint.AddAffine(jp2, p.X, FieldElement.Negate(p.Y, 2)).IsInfinity);
            Assert.Equal(Encode(bcP), Encode(JacobianPoint.Add(JacobianPoint.Infinity, jp2)));
            Assert.Equal(Encode(bcP), Encode(JacobianPoint.Add(jp2, JacobianPoint.Infinity)));
            Assert.Equal(Encode(bcP), Encode(JacobianPoint.AddAffine(JacobianPoint.Infinity, p.X, p.Y)));
            Assert.True(JacobianPoint.Double(JacobianPoint.Infinity).IsInfinity);
            Assert.True(jp2.EqualsAffine(p));
            Assert.False(jp2.EqualsAffine(q));
            Assert.False(JacobianPoint.Infinity.EqualsAffine(p));
        }
    }

    [Fact]
    public void BaseMultiply_MatchesBouncyCastle()
    {
        foreach (var k in ScalarInputs(9, 1500))
        {
            var expected = Encode(Bc.G.Multiply(k.Mod(BcN)));
            var s = Scalar.FromBigInteger(k);
            Assert.Equal(expected, Encode(EcMultiplier.BaseMultiplyConstantTime(s)));
            Assert.Equal(expected, Encode(EcMultiplier.BaseMultiply(s)));
            Assert.Equal(expected, Encode(EcMultiplier.MultiplyAdd(s, [], [])));
        }
    }

    [Fact]
    public void PointMultiply_MatchesBouncyCastle()
    {
        var random = new Random(10);
        foreach (var k in ScalarInputs(11, 1500))
        {
            var bcP = Bc.G.Multiply(Bc256(random)).Normalize();
            var p = FromBc(bcP);
            var expected = Encode(bcP.Multiply(k.Mod(BcN)));
            var s = Scalar.FromBigInteger(k);
            Assert.Equal(expected, Encode(EcMultiplier.Multiply(p, s)));
            Assert.Equal(expected, Encode(EcMultiplier.MultiplyConstantTime(p, s)));
        }

        // P = G and P = -G, where the tables meet the generator's own.
        foreach (var k in ScalarInputs(12, 50))
        {
            var s = Scalar.FromBigInteger(k);
            Assert.Equal(Encode(Bc.G.Multiply(k.Mod(BcN))), Encode(EcMultiplier.Multiply(AffinePoint.Generator, s)));
            Assert.Equal(Encode(Bc.G.Negate().Multiply(k.Mod(BcN))), Encode(EcMultiplier.MultiplyConstantTime(AffinePoint.Generator.Negate(), s)));
        }
    }

    [Fact]
    public void DoubleMultiply_MatchesBouncyCastle()
    {
        var random = new Random(13);
        var bs = ScalarInputs(14, 1500).ToList();
        var i = 0;
        foreach (var a in ScalarInputs(15, 1500))
        {
            var b = bs[i++ % bs.Count];
            var bcP = Bc.G.Multiply(Bc256(random)).Normalize();
            var p = FromBc(bcP);
            var expected = Encode(Bc.G.Multiply(a.Mod(BcN)).Add(bcP.Multiply(b.Mod(BcN))));
            Assert.Equal(expected, Encode(EcMultiplier.MultiplyAdd(Scalar.FromBigInteger(a), [p], [Scalar.FromBigInteger(b)])));
        }

        // a·G + b·P = identity, and a·G + b·(c·G) = (a + bc)·G (P a known multiple of G, the sum cancelling).
        for (var j = 0; j < 200; j++)
        {
            var c = Bc256(random).Mod(BcN);
            var b = Bc256(random).Mod(BcN);
            var a = BcN.Subtract(b.Multiply(c).Mod(BcN)).Mod(BcN);
            var p = FromBc(Bc.G.Multiply(c));
            Assert.True(EcMultiplier.MultiplyAdd(Scalar.FromBigInteger(a), [p], [Scalar.FromBigInteger(b)]).IsInfinity);
            // Schnorr verification's shape: z·G - c·PK == R.
            var z = a.Add(BcBigInteger.One);
            var r = EcMultiplier.MultiplyAdd(Scalar.FromBigInteger(z), [p], [Scalar.FromBigInteger(b)]);
            Assert.True(r.EqualsAffine(AffinePoint.Generator));
        }
    }

    [Fact]
    public void MultiScalarSum_MatchesBouncyCastle()
    {
        var random = new Random(16);
        var scalars = ScalarInputs(17, 2000).ToList();
        var next = 0;
        for (var round = 0; round < 600; round++)
        {
            var count = 1 + (round % 6);
            var bcPoints = new List<BcPoint>();
            var ks = new List<BcBigInteger>();
            for (var j = 0; j < count; j++)
            {
                // Repeat a point now and then, and use scalar 1 (the direct-add path) now and then.
                var point = j > 0 && random.Next(5) == 0 ? bcPoints[random.Next(j)] : Bc.G.Multiply(Bc256(random)).Normalize();
                bcPoints.Add(point);
                ks.Add(random.Next(6) == 0 ? BcBigInteger.One : scalars[next++ % scalars.Count]);
            }

            var g = round % 3 == 0 ? BcBigInteger.Zero : scalars[next++ % scalars.Count];
            var expected = Bc.G.Multiply(g.Mod(BcN));
            for (var j = 0; j < count; j++)
                expected = expected.Add(bcPoints[j].Multiply(ks[j].Mod(BcN)));
            var actual = EcMultiplier.MultiplyAdd(
                Scalar.FromBigInteger(g), [.. bcPoints.Select(FromBc)], [.. ks.Select(Scalar.FromBigInteger)]);
            Assert.Equal(Encode(expected), Encode(actual));
        }

        // Terms that cancel: k·P + (n - k)·P.
        var point2 = FromBc(Bc.G.Multiply(Bc256(random)));
        var k2 = Scalar.FromBigInteger(Bc256(random));
        Assert.True(EcMultiplier.MultiplyAdd(Scalar.Zero, [point2, point2], [k2, k2.Negate()]).IsInfinity);
        Assert.True(EcMultiplier.MultiplyAdd(Scalar.Zero, [], []).IsInfinity);
    }

    [Fact]
    public void ConstantTimeVariants_EqualVariableTimeOnes()
    {
        var random = new Random(18);
        foreach (var k in ScalarInputs(19, 1000))
        {
            var s = Scalar.FromBigInteger(k);
            var p = FromBc(Bc.G.Multiply(Bc256(random)));
            Assert.Equal(Encode(EcMultiplier.BaseMultiply(s)), Encode(EcMultiplier.BaseMultiplyConstantTime(s)));
            Assert.Equal(Encode(EcMultiplier.Multiply(p, s)), Encode(EcMultiplier.MultiplyConstantTime(p, s)));
        }
    }

    // ---- the Secp256k1 API on top of it ----

    [Fact]
    public void Api_MultiplicationsMatchBouncyCastle()
    {
        var random = new Random(20);
        var scalars = ScalarInputs(21, 400).ToList();
        for (var i = 0; i < scalars.Count; i++)
        {
            var k = scalars[i];
            var l = scalars[(i * 7 + 3) % scalars.Count];
            var p = Bc.G.Multiply(Bc256(random)).Normalize();
            var q = Bc.G.Multiply(Bc256(random)).Normalize();
            var expectedG = Bc.G.Multiply(k.Mod(BcN)).Normalize();
            Assert.Equal(Encode(expectedG), Encode(Threshold.Secp256k1.BaseMultiply(k)));
            Assert.Equal(Encode(expectedG), Encode(Threshold.Secp256k1.BaseMultiplyPublic(k)));
            if (!expectedG.IsInfinity)
                Assert.True(Threshold.Secp256k1.BaseMultiply(k).Equals(expectedG));
            var expectedP = p.Multiply(k.Mod(BcN)).Normalize();
            Assert.Equal(Encode(expectedP), Encode(Threshold.Secp256k1.Multiply(p, k)));
            Assert.Equal(Encode(expectedP), Encode(Threshold.Secp256k1.MultiplySecret(p, k)));
            var expectedSum = Bc.G.Multiply(l.Mod(BcN)).Add(p.Multiply(k.Mod(BcN))).Add(q.Multiply(l.Mod(BcN))).Add(p).Normalize();
            var sum = Threshold.Secp256k1.SumOfMultiplies(l, [p, q, p, Bc.Curve.Infinity], [k, l, BcBigInteger.One, k]);
            Assert.Equal(Encode(expectedSum), Encode(sum));
            if (!expectedSum.IsInfinity)
            {
                Assert.True(sum.Equals(expectedSum));
                Assert.True(Threshold.Secp256k1.IsSumOfMultiplies(expectedSum, l, [p, q, p], [k, l, BcBigInteger.One]));
                Assert.False(Threshold.Secp256k1.IsSumOfMultiplies(expectedSum.Negate(), l, [p, q, p], [k, l, BcBigInteger.One]));
                Assert.False(Threshold.Secp256k1.IsSumOfMultiplies(Bc.Curve.Infinity, l, [p, q, p], [k, l, BcBigInteger.One]));
            }

            Assert.Equal(Encode(p.Add(q).Add(p).Normalize()), Encode(Threshold.Secp256k1.Sum([p, q, Bc.Curve.Infinity, p])));
        }

        // The identity: as an input, as a result, and negative scalars.
        var point = Bc.G.Multiply(Bc256(random)).Normalize();
        Assert.True(Threshold.Secp256k1.Multiply(Bc.Curve.Infinity, BcBigInteger.Two).IsInfinity);
        Assert.True(Threshold.Secp256k1.MultiplySecret(Bc.Curve.Infinity, BcBigInteger.Two).IsInfinity);
        Assert.True(Threshold.Secp256k1.Multiply(point, BcN).IsInfinity);
        Assert.True(Threshold.Secp256k1.Sum([point, point.Negate()]).IsInfinity);
        Assert.True(Threshold.Secp256k1.Sum([]).IsInfinity);
        Assert.True(Threshold.Secp256k1.IsSumOfMultiplies(Bc.Curve.Infinity, BcBigInteger.Zero, [point, point], [BcBigInteger.One, BcN.Subtract(BcBigInteger.One)]));
        Assert.Equal(Encode(point.Negate()), Encode(Threshold.Secp256k1.Multiply(point, BcBigInteger.One.Negate())));
        Assert.Equal(Encode(Bc.G.Negate()), Encode(Threshold.Secp256k1.BaseMultiply(BcBigInteger.One.Negate())));
    }

    [Fact]
    public void Api_DeserializeElement_AcceptsExactlyTheValidCompressedPoints()
    {
        var random = new Random(22);
        for (var i = 0; i < 300; i++)
        {
            var point = Bc.G.Multiply(Bc256(random)).Normalize();
            var encoded = point.GetEncoded(true);
            var decoded = Threshold.Secp256k1.DeserializeElement(encoded);
            Assert.True(decoded.Equals(point));
            Assert.Equal(encoded, Threshold.Secp256k1.SerializeElement(decoded));
            Assert.True(decoded.IsValid());

            byte[] offCurve = [(byte)(2 + (i & 1)), .. To32(Random256(random) % P)];
            bool valid;
            try
            {
                valid = Bc.Curve.DecodePoint(offCurve).IsValid();
            }
            catch (ArgumentException)
            {
                valid = false;
            }

            if (valid)
                Assert.True(Threshold.Secp256k1.DeserializeElement(offCurve).Equals(Bc.Curve.DecodePoint(offCurve)));
            else
                Assert.Throws<FormatException>(() => Threshold.Secp256k1.DeserializeElement(offCurve));
        }

        Assert.Throws<FormatException>(() => Threshold.Secp256k1.DeserializeElement([0x02, .. To32(P)]));
        Assert.Throws<FormatException>(() => Threshold.Secp256k1.DeserializeElement([0x04, .. To32(1)]));
        Assert.Throws<FormatException>(() => Threshold.Secp256k1.DeserializeElement([0x02, .. To32(0)]));
        Assert.Throws<FormatException>(() => Threshold.Secp256k1.DeserializeElement(Bc.G.GetEncoded(false)));
        Assert.Throws<FormatException>(() => Threshold.Secp256k1.DeserializeElement([]));
    }
}
