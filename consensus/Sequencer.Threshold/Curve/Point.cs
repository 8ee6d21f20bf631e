using System.Runtime.CompilerServices;

namespace Sequencer.Threshold.Curve;

/// <summary>
/// A point of secp256k1 (y^2 = x^3 + 7 over GF(p)) in affine coordinates; never the identity (the identity has no
/// affine coordinates, and the code that can meet it uses <see cref="JacobianPoint"/>). Coordinates have magnitude at
/// most 2 (see <see cref="FieldElement"/>).
/// </summary>
internal readonly struct AffinePoint
{
    /// <summary>The curve constant b = 7.</summary>
    internal static readonly FieldElement B = FieldElement.FromUInt64(7);

    /// <summary>x.</summary>
    public readonly FieldElement X;

    /// <summary>y.</summary>
    public readonly FieldElement Y;

    /// <summary>A point from its coordinates (not checked: see <see cref="IsOnCurve"/>).</summary>
    public AffinePoint(in FieldElement x, in FieldElement y)
    {
        X = x;
        Y = y;
    }

    /// <summary>The generator G.</summary>
    public static AffinePoint Generator { get; } = new(
        Parse("79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798"),
        Parse("483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8"));

    /// <summary>True when y^2 = x^3 + 7.</summary>
    public bool IsOnCurve()
        => FieldElement.Square(Y).Equals(FieldElement.Add(FieldElement.Multiply(FieldElement.Square(X), X), B));

    /// <summary>-P = (x, -y).</summary>
    public AffinePoint Negate() => new(X, FieldElement.Negate(Y, 2).NormalizeWeak());

    /// <summary>As a Jacobian point (Z = 1).</summary>
    public JacobianPoint ToJacobian() => new(X, Y, FieldElement.One);

    /// <summary>Compressed SEC1: 0x02 or 0x03 (the parity of y), then x in 32 bytes big-endian.</summary>
    public void EncodeCompressed(Span<byte> destination)
    {
        if (destination.Length < 33)
            throw new ArgumentException("a compressed point is 33 bytes", nameof(destination));
        destination[0] = Y.IsOdd ? (byte)0x03 : (byte)0x02;
        X.WriteBytes(destination[1..]);
    }

    /// <summary>Compressed SEC1 (33 bytes).</summary>
    public byte[] EncodeCompressed()
    {
        var bytes = new byte[33];
        EncodeCompressed(bytes);
        return bytes;
    }

    /// <summary>
    /// Decodes compressed SEC1: false unless the bytes are 33, start with 0x02 or 0x03, hold an x below p, and x^3 + 7
    /// is a square (so that the point is on the curve). Variable time (public input).
    /// </summary>
    public static bool TryDecodeCompressed(ReadOnlySpan<byte> bytes, out AffinePoint point)
    {
        point = default;
        if (bytes.Length != 33 || (bytes[0] != 0x02 && bytes[0] != 0x03))
            return false;
        if (!FieldElement.TryParse(bytes[1..], out var x))
            return false;
        var rhs = FieldElement.Add(FieldElement.Multiply(FieldElement.Square(x), x), B);
        if (!FieldElement.Sqrt(rhs, out var y))
            return false;
        y = y.Normalize();
        if (y.IsOdd != (bytes[0] == 0x03))
            y = FieldElement.Negate(y, 1).Normalize();
        point = new AffinePoint(x, y);
        return true;
    }

    /// <summary>Coordinate equality (variable time).</summary>
    public bool Equals(in AffinePoint other) => X.Equals(other.X) && Y.Equals(other.Y);

    /// <summary>The compressed encoding in hexadecimal.</summary>
    public override string ToString() => Convert.ToHexString(EncodeCompressed());

    private static FieldElement Parse(string hex)
    {
        if (!FieldElement.TryParse(Convert.FromHexString(hex), out var value))
            throw new InvalidOperationException("bad constant");
        return value;
    }
}

/// <summary>
/// A point of secp256k1 in Jacobian coordinates: (X, Y, Z) stands for (X / Z^2, Y / Z^3); Z = 0 is the identity.
/// </summary>
/// <remarks>
/// <para>
/// Constant time: <see cref="Double"/>, <see cref="AddAffineUnchecked"/>, <see cref="AddUnchecked"/>,
/// <see cref="Select"/>, <see cref="Negate"/> and <see cref="ToAffineUnchecked"/> run the same field operations
/// whatever the inputs. The unchecked additions are only correct when neither input is the identity and the two
/// inputs are not equal or opposite; the constant-time algorithms prove that this never happens for them and handle
/// the identity with selects.
/// </para>
/// <para>
/// Variable time: <see cref="AddAffine"/>, <see cref="Add"/>, <see cref="IsInfinity"/>, <see cref="EqualsAffine"/>
/// and <see cref="TryToAffine"/> branch on the values (the identity and the doubling case), for public points.
/// </para>
/// <para>
/// Coordinates have magnitude at most 2 (see <see cref="FieldElement"/>) going in and coming out of every function
/// here; the comments give the magnitudes on the way.
/// </para>
/// <para>
/// The formulas do not use the curve constant b, so they also work on the isomorphic curves
/// y^2 = x^3 + 7·u^6 that <see cref="EcMultiplier"/> moves its tables to (points with a common Z are affine there).
/// </para>
/// </remarks>
internal readonly struct JacobianPoint
{
    /// <summary>X.</summary>
    public readonly FieldElement X;

    /// <summary>Y.</summary>
    public readonly FieldElement Y;

    /// <summary>Z.</summary>
    public readonly FieldElement Z;

    /// <summary>A point from its coordinates.</summary>
    public JacobianPoint(in FieldElement x, in FieldElement y, in FieldElement z)
    {
        X = x;
        Y = y;
        Z = z;
    }

    /// <summary>The identity (Z = 0).</summary>
    public static JacobianPoint Infinity => new(FieldElement.One, FieldElement.One, FieldElement.Zero);

    /// <summary>True for the identity (variable time).</summary>
    public bool IsInfinity => Z.IsZero;

    /// <summary>-P.</summary>
    public JacobianPoint Negate() => new(X, FieldElement.Negate(Y, 2).NormalizeWeak(), Z);

    /// <summary>b when mask is all ones, a when it is 0 (constant time).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static JacobianPoint Select(in JacobianPoint a, in JacobianPoint b, ulong mask) => new(
        FieldElement.Select(a.X, b.X, mask), FieldElement.Select(a.Y, b.Y, mask), FieldElement.Select(a.Z, b.Z, mask));

    /// <summary>
    /// 2P (constant time; the identity doubles to Z = 0, the identity again). 3M + 4S (Z3 = 2YZ, D = 4XY^2, and no
    /// term in the curve's a, which is 0).
    /// </summary>
    public static JacobianPoint Double(in JacobianPoint p)
    {
        // Magnitudes in brackets.
        var a = FieldElement.Square(p.X);                                  // [1]
        var b = FieldElement.Square(p.Y);                                  // [1]
        var c = FieldElement.Square(b);                                    // [1]
        var d = FieldElement.MultiplyInt(FieldElement.Multiply(p.X, b), 4); // 4·X·Y^2 [4]
        var e = FieldElement.MultiplyInt(a, 3);                            // 3·X^2 [3]
        var f = FieldElement.Square(e);                                    // [1]
        var x3 = FieldElement.Subtract(f, FieldElement.Double(d), 8).NormalizeWeak();  // F - 2D [1 + 9] -> [1]
        var t = FieldElement.Subtract(d, x3, 1);                           // D - X3 [4 + 2]
        var y3 = FieldElement.Subtract(FieldElement.Multiply(e, t), FieldElement.MultiplyInt(c, 8), 8).NormalizeWeak(); // [1 + 9] -> [1]
        var z3 = FieldElement.Double(FieldElement.Multiply(p.Y, p.Z));     // 2·Y·Z [2]
        return new JacobianPoint(x3, y3, z3);
    }

    /// <summary>
    /// P + Q for an affine Q, by the formula alone (constant time, 8M + 3S): wrong when P is the identity or P = ±Q.
    /// </summary>
    public static JacobianPoint AddAffineUnchecked(in JacobianPoint p, in FieldElement qx, in FieldElement qy)
    {
        var z1z1 = FieldElement.Square(p.Z);                               // [1]
        var u2 = FieldElement.Multiply(qx, z1z1);                          // [1]
        var s2 = FieldElement.Multiply(qy, FieldElement.Multiply(z1z1, p.Z)); // [1]
        var h = FieldElement.Subtract(u2, p.X, 2);                         // [4]
        var r = FieldElement.Subtract(s2, p.Y, 2);                         // [4]
        return Finish(p.X, p.Y, h, r, FieldElement.Multiply(p.Z, h));
    }

    /// <summary>P + Q for an affine Q, with every case handled (variable time).</summary>
    public static JacobianPoint AddAffine(in JacobianPoint p, in FieldElement qx, in FieldElement qy)
    {
        if (p.IsInfinity)
            return new JacobianPoint(qx, qy, FieldElement.One);
        var z1z1 = FieldElement.Square(p.Z);
        var u2 = FieldElement.Multiply(qx, z1z1);
        var s2 = FieldElement.Multiply(qy, FieldElement.Multiply(z1z1, p.Z));
        var h = FieldElement.Subtract(u2, p.X, 2);
        var r = FieldElement.Subtract(s2, p.Y, 2);
        if (h.IsZero)
            return r.IsZero ? Double(p) : Infinity;
        return Finish(p.X, p.Y, h, r, FieldElement.Multiply(p.Z, h));
    }

    /// <summary>P + Q, by the formula alone (constant time, 12M + 4S): wrong when either is the identity or P = ±Q.</summary>
    public static JacobianPoint AddUnchecked(in JacobianPoint p, in JacobianPoint q)
    {
        var z1z1 = FieldElement.Square(p.Z);                               // [1]
        var z2z2 = FieldElement.Square(q.Z);                               // [1]
        var u1 = FieldElement.Multiply(p.X, z2z2);                         // [1]
        var u2 = FieldElement.Multiply(q.X, z1z1);                         // [1]
        var s1 = FieldElement.Multiply(p.Y, FieldElement.Multiply(z2z2, q.Z)); // [1]
        var s2 = FieldElement.Multiply(q.Y, FieldElement.Multiply(z1z1, p.Z)); // [1]
        var h = FieldElement.Subtract(u2, u1, 1);                          // [3]
        var r = FieldElement.Subtract(s2, s1, 1);                          // [3]
        return Finish(u1, s1, h, r, FieldElement.Multiply(FieldElement.Multiply(p.Z, q.Z), h));
    }

    /// <summary>P + Q with every case handled (variable time).</summary>
    public static JacobianPoint Add(in JacobianPoint p, in JacobianPoint q)
    {
        if (p.IsInfinity)
            return q;
        if (q.IsInfinity)
            return p;
        var z1z1 = FieldElement.Square(p.Z);
        var z2z2 = FieldElement.Square(q.Z);
        var u1 = FieldElement.Multiply(p.X, z2z2);
        var u2 = FieldElement.Multiply(q.X, z1z1);
        var s1 = FieldElement.Multiply(p.Y, FieldElement.Multiply(z2z2, q.Z));
        var s2 = FieldElement.Multiply(q.Y, FieldElement.Multiply(z1z1, p.Z));
        var h = FieldElement.Subtract(u2, u1, 1);
        var r = FieldElement.Subtract(s2, s1, 1);
        if (h.IsZero)
            return r.IsZero ? Double(p) : Infinity;
        return Finish(u1, s1, h, r, FieldElement.Multiply(FieldElement.Multiply(p.Z, q.Z), h));
    }

    /// <summary>
    /// The common tail of the additions: with U1 = X1·Z2^2, S1 = Y1·Z2^3, H = U2 - U1 and R = S2 - S1,
    /// X3 = R^2 - H^3 - 2·U1·H^2, Y3 = R·(U1·H^2 - X3) - S1·H^3. U1 and S1 of magnitude at most 2, H and R at most 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static JacobianPoint Finish(in FieldElement u1, in FieldElement s1, in FieldElement h, in FieldElement r, in FieldElement z3)
    {
        var hh = FieldElement.Square(h);                                   // [1]
        var hhh = FieldElement.Multiply(h, hh);                            // [1]
        var v = FieldElement.Multiply(u1, hh);                             // [1]
        var x3 = FieldElement.Add(
            FieldElement.Subtract(FieldElement.Square(r), hhh, 1),
            FieldElement.Negate(FieldElement.Double(v), 2)).NormalizeWeak(); // [1 + 2 + 3] -> [1]
        var y3 = FieldElement.Subtract(
            FieldElement.Multiply(r, FieldElement.Subtract(v, x3, 1)),
            FieldElement.Multiply(s1, hhh), 1).NormalizeWeak();            // [1 + 2] -> [1]
        return new JacobianPoint(x3, y3, z3);
    }

    /// <summary>The affine point (constant-time inversion); meaningless for the identity.</summary>
    public AffinePoint ToAffineUnchecked()
    {
        var zinv = FieldElement.Invert(Z);
        var zinv2 = FieldElement.Square(zinv);
        return new AffinePoint(FieldElement.Multiply(X, zinv2), FieldElement.Multiply(Y, FieldElement.Multiply(zinv2, zinv)));
    }

    /// <summary>The affine point; false for the identity.</summary>
    public bool TryToAffine(out AffinePoint point)
    {
        if (IsInfinity)
        {
            point = default;
            return false;
        }

        point = ToAffineUnchecked();
        return true;
    }

    /// <summary>True when this point is the affine point <paramref name="q"/>, without an inversion (variable time).</summary>
    public bool EqualsAffine(in AffinePoint q)
    {
        if (IsInfinity)
            return false;
        var zz = FieldElement.Square(Z);
        return FieldElement.Multiply(q.X, zz).Equals(X) && FieldElement.Multiply(q.Y, FieldElement.Multiply(zz, Z)).Equals(Y);
    }
}
