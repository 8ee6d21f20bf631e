using System.Buffers;

namespace Sequencer.Threshold.Curve;

/// <summary>
/// Scalar multiplication on secp256k1.
/// </summary>
/// <remarks>
/// <para>Constant time, for secret scalars (nonces, key shares, DKG coefficients and encryption keys):</para>
/// <list type="bullet">
/// <item><see cref="BaseMultiplyConstantTime"/>: G·k by a fixed 4-bit comb over a static table of j·16^i·G, one
/// mixed addition per window, every table row scanned in full and the identity cases handled by selects.</item>
/// <item><see cref="MultiplyConstantTime"/>: P·k by a fixed 4-bit window, 4 doublings and one addition per window,
/// the table scanned in full.</item>
/// </list>
/// <para>
/// Both run the same field operations and touch the same memory for every scalar below n (only the final check for
/// k = 0, the identity, branches). The scalar's conversion from a BouncyCastle integer is BouncyCastle's and not
/// constant time.
/// </para>
/// <para>Variable time, for public scalars only (verification, binding factors, Lagrange coefficients, challenges):</para>
/// <list type="bullet">
/// <item><see cref="BaseMultiply"/>: G·k over the comb table, skipping zero windows.</item>
/// <item><see cref="Multiply"/> and <see cref="MultiplyAdd"/> (g·G + Σ k_i·P_i): Strauss–Shamir interleaving of
/// width-5 wNAFs, each scalar split by the GLV endomorphism λ·(x, y) = (β·x, y) into two halves of about 128 bits,
/// sharing one chain of about 128 doublings; G's halves use width-8 wNAFs over static tables. The points' odd-multiple
/// tables are brought to one common Z with a few multiplications (no inversion), which makes them affine on an
/// isomorphic curve where the accumulator then runs with mixed additions.</item>
/// </list>
/// </remarks>
internal static class EcMultiplier
{
    /// <summary>The window of the wNAFs of arbitrary points (tables of 2^(w-2) odd multiples).</summary>
    private const int PointWindow = 5;

    /// <summary>The window of G's wNAFs (static tables of 64 odd multiples).</summary>
    private const int GeneratorWindow = 8;

    /// <summary>The longest wNAF of a GLV half (magnitudes below 2^192) plus room for the last carry.</summary>
    private const int WnafCapacity = 192 + GeneratorWindow;

    private static readonly FieldElement Beta = FieldElement.FromBytesReduced(
        Convert.FromHexString("7AE96A2B657C07106E64479EAC3434E99CF0497512F58995C1396C28719501EE"));

    /// <summary>Comb[16·i + j] = j·16^i·G for window i (0..63) and digit j (1..15); Comb[16·i] is (0, 0), unused.</summary>
    private static readonly AffinePoint[] Comb = BuildComb();

    /// <summary>Odd multiples G, 3G, ..., 127G and their images under the endomorphism (β·x, y).</summary>
    private static readonly AffinePoint[] GeneratorOdd = BuildOddMultiples(AffinePoint.Generator, 1 << (GeneratorWindow - 2));

    private static readonly AffinePoint[] GeneratorOddLambda = [.. GeneratorOdd.Select(p => new AffinePoint(FieldElement.Multiply(p.X, Beta), p.Y))];

    /// <summary>β, the cube root of unity modulo p with (β·x, y) = λ·(x, y).</summary>
    internal static FieldElement EndomorphismBeta => Beta;

    /// <summary>G·k, constant time in k (a secret): the comb with full-row scans.</summary>
    public static JacobianPoint BaseMultiplyConstantTime(in Scalar k)
    {
        var acc = JacobianPoint.Infinity;
        var accIsInfinity = ulong.MaxValue;
        var comb = Comb;
        for (var window = 0; window < 64; window++)
        {
            var digit = k.GetBits(4 * window, 4);
            // Scan the whole row: the memory touched does not depend on the digit.
            var x = FieldElement.Zero;
            var y = FieldElement.Zero;
            var row = 16 * window;
            for (uint j = 1; j < 16; j++)
            {
                var mask = FieldElement.IsZeroWord(j ^ digit);
                ref readonly var entry = ref comb[row + (int)j];
                x = FieldElement.Select(x, entry.X, mask);
                y = FieldElement.Select(y, entry.Y, mask);
            }

            // acc = (k mod 16^window)·G and the entry is digit·16^window·G, both multiples below n: they are equal or
            // opposite only when both are 0, so the formula is right whenever neither is the identity.
            var sum = JacobianPoint.AddAffineUnchecked(acc, x, y);
            sum = JacobianPoint.Select(sum, new JacobianPoint(x, y, FieldElement.One), accIsInfinity);
            var digitIsZero = FieldElement.IsZeroWord(digit);
            acc = JacobianPoint.Select(sum, acc, digitIsZero);
            accIsInfinity &= digitIsZero;
        }

        return accIsInfinity != 0 ? JacobianPoint.Infinity : acc;
    }

    /// <summary>P·k, constant time in k (a secret): a fixed 4-bit window over a table of 0..15·P, scanned in full.</summary>
    public static JacobianPoint MultiplyConstantTime(in AffinePoint p, in Scalar k)
    {
        // The table depends on P only (public).
        Span<JacobianPoint> table = stackalloc JacobianPoint[16];
        table[0] = JacobianPoint.Infinity;
        table[1] = p.ToJacobian();
        for (var j = 2; j < 16; j++)
            table[j] = (j & 1) == 0 ? JacobianPoint.Double(table[j / 2]) : JacobianPoint.AddAffine(table[j - 1], p.X, p.Y);

        var acc = JacobianPoint.Infinity;
        var accIsInfinity = ulong.MaxValue;
        for (var window = 63; window >= 0; window--)
        {
            acc = JacobianPoint.Double(JacobianPoint.Double(JacobianPoint.Double(JacobianPoint.Double(acc))));
            var digit = k.GetBits(4 * window, 4);
            var entry = table[0];
            for (uint j = 1; j < 16; j++)
                entry = JacobianPoint.Select(entry, table[(int)j], FieldElement.IsZeroWord(j ^ digit));
            // acc = 16·m·P for m the scalar's bits above this window and the entry is digit·P; as 16·m + digit <= k < n,
            // they are equal or opposite only when both are 0, so the formula is right whenever neither is the identity.
            var sum = JacobianPoint.AddUnchecked(acc, entry);
            sum = JacobianPoint.Select(sum, entry, accIsInfinity);
            var digitIsZero = FieldElement.IsZeroWord(digit);
            acc = JacobianPoint.Select(sum, acc, digitIsZero);
            accIsInfinity &= digitIsZero;
        }

        return accIsInfinity != 0 ? JacobianPoint.Infinity : acc;
    }

    /// <summary>G·k, variable time (a public k): the comb, skipping zero windows and indexing the table directly.</summary>
    public static JacobianPoint BaseMultiply(in Scalar k)
    {
        var acc = JacobianPoint.Infinity;
        for (var window = 0; window < 64; window++)
        {
            var digit = (int)k.GetBits(4 * window, 4);
            if (digit == 0)
                continue;
            ref readonly var entry = ref Comb[(16 * window) + digit];
            acc = JacobianPoint.AddAffine(acc, entry.X, entry.Y);
        }

        return acc;
    }

    /// <summary>P·k, variable time (a public k).</summary>
    public static JacobianPoint Multiply(in AffinePoint p, in Scalar k)
        => MultiplyAdd(Scalar.Zero, [p], [k]);

    /// <summary>
    /// g·G + Σ k_i·P_i, variable time (public scalars). Terms whose scalar is 1 are added directly, without a table.
    /// </summary>
    public static JacobianPoint MultiplyAdd(in Scalar g, ReadOnlySpan<AffinePoint> points, ReadOnlySpan<Scalar> scalars)
    {
        if (points.Length != scalars.Length)
            throw new ArgumentException("one scalar per point");

        // The terms that need a table: scalar neither 0 nor 1.
        var count = 0;
        for (var i = 0; i < scalars.Length; i++)
        {
            if (!scalars[i].IsZero && scalars[i] != Scalar.One)
                count++;
        }

        var hasG = !g.IsZero;
        var halves = 2 * count;
        var digitsLength = (halves + (hasG ? 2 : 0)) * WnafCapacity;
        var digitsArray = ArrayPool<int>.Shared.Rent(digitsLength);
        var tableLength = count * TableSize;
        var jacobianArray = ArrayPool<JacobianPoint>.Shared.Rent(Math.Max(tableLength, 1));
        var tableArray = ArrayPool<AffinePoint>.Shared.Rent(Math.Max(2 * tableLength, 1));
        try
        {
            var digits = digitsArray.AsSpan(0, digitsLength);
            var jacobian = jacobianArray.AsSpan(0, tableLength);
            var table = tableArray.AsSpan(0, tableLength);
            var lambdaTable = tableArray.AsSpan(tableLength, tableLength);
            Span<ulong> k1 = stackalloc ulong[3];
            Span<ulong> k2 = stackalloc ulong[3];

            // Recode every scalar and build every odd-multiple table.
            var term = 0;
            var maxLength = 0;
            for (var i = 0; i < scalars.Length; i++)
            {
                if (scalars[i].IsZero || scalars[i] == Scalar.One)
                    continue;
                scalars[i].SplitLambda(k1, out var k1Negative, k2, out var k2Negative);
                var length1 = Scalar.Wnaf(k1, k1Negative, PointWindow, digits.Slice(2 * term * WnafCapacity, WnafCapacity));
                var length2 = Scalar.Wnaf(k2, k2Negative, PointWindow, digits.Slice(((2 * term) + 1) * WnafCapacity, WnafCapacity));
                maxLength = Math.Max(maxLength, Math.Max(length1, length2));
                OddMultiples(points[i], jacobian.Slice(term * TableSize, TableSize));
                term++;
            }

            var commonZ = count > 0 ? ToCommonZ(jacobian, table) : FieldElement.One;
            for (var i = 0; i < tableLength; i++)
                lambdaTable[i] = new AffinePoint(FieldElement.Multiply(table[i].X, Beta), table[i].Y);

            if (hasG)
            {
                g.SplitLambda(k1, out var g1Negative, k2, out var g2Negative);
                var length1 = Scalar.Wnaf(k1, g1Negative, GeneratorWindow, digits.Slice(halves * WnafCapacity, WnafCapacity));
                var length2 = Scalar.Wnaf(k2, g2Negative, GeneratorWindow, digits.Slice((halves + 1) * WnafCapacity, WnafCapacity));
                maxLength = Math.Max(maxLength, Math.Max(length1, length2));
            }

            // G's static tables are affine on the true curve; on the tables' curve they are (x·Z^2, y·Z^3).
            var commonZ2 = FieldElement.Square(commonZ);
            var commonZ3 = FieldElement.Multiply(commonZ2, commonZ);
            var scaleG = count > 0;

            var acc = JacobianPoint.Infinity;
            for (var bit = maxLength - 1; bit >= 0; bit--)
            {
                if (!acc.IsInfinity)
                    acc = JacobianPoint.Double(acc);
                for (var t = 0; t < count; t++)
                {
                    var d1 = digits[(2 * t * WnafCapacity) + bit];
                    if (d1 != 0)
                        acc = AddDigit(acc, table.Slice(t * TableSize, TableSize), d1);
                    var d2 = digits[(((2 * t) + 1) * WnafCapacity) + bit];
                    if (d2 != 0)
                        acc = AddDigit(acc, lambdaTable.Slice(t * TableSize, TableSize), d2);
                }

                if (hasG)
                {
                    var d1 = digits[(halves * WnafCapacity) + bit];
                    if (d1 != 0)
                        acc = AddGeneratorDigit(acc, GeneratorOdd, d1, scaleG, commonZ2, commonZ3);
                    var d2 = digits[((halves + 1) * WnafCapacity) + bit];
                    if (d2 != 0)
                        acc = AddGeneratorDigit(acc, GeneratorOddLambda, d2, scaleG, commonZ2, commonZ3);
                }
            }

            // Back from the tables' curve to the true one: (X, Y, Z) there is (X, Y, Z·commonZ) here.
            var result = new JacobianPoint(acc.X, acc.Y, FieldElement.Multiply(acc.Z, commonZ));
            if (acc.IsInfinity)
                result = JacobianPoint.Infinity;

            // The terms with scalar 1.
            for (var i = 0; i < scalars.Length; i++)
            {
                if (scalars[i] == Scalar.One)
                    result = JacobianPoint.AddAffine(result, points[i].X, points[i].Y);
            }

            return result;
        }
        finally
        {
            ArrayPool<int>.Shared.Return(digitsArray);
            ArrayPool<JacobianPoint>.Shared.Return(jacobianArray);
            ArrayPool<AffinePoint>.Shared.Return(tableArray);
        }
    }

    /// <summary>The number of odd multiples per point: P, 3P, ..., (2^(w-1) - 1)·P.</summary>
    private const int TableSize = 1 << (PointWindow - 2);

    private static JacobianPoint AddDigit(in JacobianPoint acc, ReadOnlySpan<AffinePoint> table, int digit)
    {
        if (digit > 0)
        {
            ref readonly var entry = ref table[(digit - 1) >> 1];
            return JacobianPoint.AddAffine(acc, entry.X, entry.Y);
        }
        else
        {
            ref readonly var entry = ref table[(-digit - 1) >> 1];
            return JacobianPoint.AddAffine(acc, entry.X, FieldElement.Negate(entry.Y, 1));
        }
    }

    private static JacobianPoint AddGeneratorDigit(in JacobianPoint acc, AffinePoint[] table, int digit, bool scale, in FieldElement z2, in FieldElement z3)
    {
        ref readonly var entry = ref table[(Math.Abs(digit) - 1) >> 1];
        var x = scale ? FieldElement.Multiply(entry.X, z2) : entry.X;
        var y = scale ? FieldElement.Multiply(entry.Y, z3) : entry.Y;
        if (digit < 0)
            y = FieldElement.Negate(y, 1);
        return JacobianPoint.AddAffine(acc, x, y);
    }

    /// <summary>P, 3P, 5P, ... in Jacobian coordinates (as many as <paramref name="destination"/> holds).</summary>
    private static void OddMultiples(in AffinePoint p, Span<JacobianPoint> destination)
    {
        var twice = JacobianPoint.Double(p.ToJacobian());
        destination[0] = p.ToJacobian();
        for (var i = 1; i < destination.Length; i++)
            destination[i] = JacobianPoint.Add(destination[i - 1], twice);
    }

    /// <summary>
    /// Rescales Jacobian points (none the identity) to one common Z = Π Z_i: point i is multiplied through by
    /// u_i = Π_(j≠i) Z_j, from prefix and suffix products, so that (X_i·u_i^2, Y_i·u_i^3) are affine points of the
    /// curve y^2 = x^3 + 7·Z^6. Returns Z.
    /// </summary>
    private static FieldElement ToCommonZ(ReadOnlySpan<JacobianPoint> points, Span<AffinePoint> destination)
    {
        // destination[i].X temporarily holds the prefix product Z_0 ... Z_(i-1).
        var prefix = FieldElement.One;
        for (var i = 0; i < points.Length; i++)
        {
            destination[i] = new AffinePoint(prefix, default);
            prefix = FieldElement.Multiply(prefix, points[i].Z);
        }

        var suffix = FieldElement.One;
        for (var i = points.Length - 1; i >= 0; i--)
        {
            var u = FieldElement.Multiply(destination[i].X, suffix);
            suffix = FieldElement.Multiply(suffix, points[i].Z);
            var u2 = FieldElement.Square(u);
            destination[i] = new AffinePoint(
                FieldElement.Multiply(points[i].X, u2),
                FieldElement.Multiply(points[i].Y, FieldElement.Multiply(u2, u)));
        }

        return prefix;
    }

    /// <summary>Affine coordinates for many Jacobian points (none the identity) with one inversion (Montgomery's trick).</summary>
    internal static void ToAffineBatch(ReadOnlySpan<JacobianPoint> points, Span<AffinePoint> destination)
    {
        var products = new FieldElement[points.Length];
        var acc = FieldElement.One;
        for (var i = 0; i < points.Length; i++)
        {
            products[i] = acc;
            acc = FieldElement.Multiply(acc, points[i].Z);
        }

        var inverse = FieldElement.Invert(acc);
        for (var i = points.Length - 1; i >= 0; i--)
        {
            var zinv = FieldElement.Multiply(inverse, products[i]);
            inverse = FieldElement.Multiply(inverse, points[i].Z);
            var zinv2 = FieldElement.Square(zinv);
            destination[i] = new AffinePoint(
                FieldElement.Multiply(points[i].X, zinv2),
                FieldElement.Multiply(points[i].Y, FieldElement.Multiply(zinv2, zinv)));
        }
    }

    private static AffinePoint[] BuildComb()
    {
        var jacobian = new JacobianPoint[64 * 15];
        var b = AffinePoint.Generator.ToJacobian();
        for (var window = 0; window < 64; window++)
        {
            var row = 15 * window;
            jacobian[row] = b;
            for (var j = 1; j < 15; j++)
                jacobian[row + j] = JacobianPoint.Add(jacobian[row + j - 1], b);
            b = JacobianPoint.Add(jacobian[row + 14], b);
        }

        var affine = new AffinePoint[64 * 15];
        ToAffineBatch(jacobian, affine);
        var comb = new AffinePoint[64 * 16];
        for (var window = 0; window < 64; window++)
        {
            for (var j = 1; j < 16; j++)
                comb[(16 * window) + j] = affine[(15 * window) + j - 1];
        }

        return comb;
    }

    private static AffinePoint[] BuildOddMultiples(in AffinePoint p, int count)
    {
        var jacobian = new JacobianPoint[count];
        OddMultiples(p, jacobian);
        var affine = new AffinePoint[count];
        ToAffineBatch(jacobian, affine);
        return affine;
    }
}
