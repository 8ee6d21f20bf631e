using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Sequencer.Threshold.Curve;

/// <summary>
/// An element of the secp256k1 base field GF(p), p = 2^256 - 2^32 - 977, as five limbs of 52 bits (the value is
/// Σ n_i·2^(52·i)), with lazy reduction.
/// </summary>
/// <remarks>
/// <para>
/// Limbs may exceed 52 bits between reductions. An element has magnitude m when n_0..n_3 ≤ 2m·(2^52 - 1) and
/// n_4 ≤ 2m·(2^48 - 1); the canonical form (value below p, limbs of 52 and 48 bits) has magnitude 1.
/// <see cref="Add"/> adds magnitudes, <see cref="MultiplyInt"/> multiplies them, <see cref="Negate"/> of an element of
/// magnitude at most m gives magnitude m + 1. <see cref="Multiply"/> and <see cref="Square"/> take inputs of magnitude
/// at most 8 and give magnitude 1, as does <see cref="NormalizeWeak"/>. Callers keep to these bounds (the point
/// formulas note the magnitudes); additions are then plain limb additions, with no carry chain.
/// </para>
/// <para>
/// Reduction uses the special form of p: 2^256 ≡ 0x1000003D1 and 2^260 ≡ 0x1000003D10 (mod p), so the high columns
/// of a product fold into the low ones by a multiplication with a 37-bit constant.
/// </para>
/// <para>
/// Constant time: every arithmetic function (<see cref="Add"/>, <see cref="Negate"/>, <see cref="MultiplyInt"/>,
/// <see cref="Multiply"/>, <see cref="Square"/>, <see cref="Invert"/>, the power in <see cref="Sqrt"/>),
/// <see cref="NormalizeWeak"/>, <see cref="Normalize"/>, <see cref="Select"/>, <see cref="IsZeroMask"/> and
/// <see cref="EqualsMask"/> run the same instructions whatever the values (carries and comparisons are computed
/// arithmetically). <see cref="Equals(FieldElement)"/>, <see cref="IsZero"/>, <see cref="IsOdd"/> and
/// <see cref="TryParse"/> return a bool that callers branch on, for public values.
/// </para>
/// </remarks>
internal readonly struct FieldElement : IEquatable<FieldElement>
{
    private const ulong M52 = (1UL << 52) - 1;
    private const ulong M48 = (1UL << 48) - 1;

    /// <summary>2^256 mod p.</summary>
    private const ulong Fold256 = 0x1000003D1UL;

    /// <summary>2^260 mod p.</summary>
    private const ulong Fold260 = 0x1000003D10UL;

    // p in 52-bit limbs.
    private const ulong P0 = 0xFFFFEFFFFFC2FUL;
    private const ulong P1 = M52;
    private const ulong P4 = M48;

    /// <summary>The limbs, least significant first.</summary>
    internal readonly ulong N0, N1, N2, N3, N4;

    /// <summary>Makes an element from its 52-bit limbs (magnitude as the caller knows it).</summary>
    internal FieldElement(ulong n0, ulong n1, ulong n2, ulong n3, ulong n4)
    {
        N0 = n0;
        N1 = n1;
        N2 = n2;
        N3 = n3;
        N4 = n4;
    }

    /// <summary>0.</summary>
    public static FieldElement Zero => default;

    /// <summary>1.</summary>
    public static FieldElement One => new(1, 0, 0, 0, 0);

    /// <summary>A value below 2^52.</summary>
    public static FieldElement FromUInt64(ulong value)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(value, M52);
        return new FieldElement(value, 0, 0, 0, 0);
    }

    /// <summary>Parses 32 bytes big-endian; false when the value is not below p. The result is canonical.</summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out FieldElement element)
    {
        element = FromBytesUnreduced(bytes);
        return element.IsCanonical();
    }

    /// <summary>Parses 32 bytes big-endian, reducing the value modulo p (constant time); canonical.</summary>
    public static FieldElement FromBytesReduced(ReadOnlySpan<byte> bytes) => FromBytesUnreduced(bytes).Normalize();

    /// <summary>The 256-bit value as limbs (magnitude 1: below 2^256, not necessarily below p).</summary>
    private static FieldElement FromBytesUnreduced(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != 32)
            throw new ArgumentException("a field element is 32 bytes", nameof(bytes));
        var w0 = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
        var w1 = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        var w2 = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        var w3 = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        return new FieldElement(
            w0 & M52,
            ((w0 >> 52) | (w1 << 12)) & M52,
            ((w1 >> 40) | (w2 << 24)) & M52,
            ((w2 >> 28) | (w3 << 36)) & M52,
            w3 >> 16);
    }

    /// <summary>The canonical value as 32 bytes big-endian.</summary>
    public void WriteBytes(Span<byte> destination)
    {
        if (destination.Length < 32)
            throw new ArgumentException("a field element is 32 bytes", nameof(destination));
        var n = Normalize();
        BinaryPrimitives.WriteUInt64BigEndian(destination, (n.N3 >> 36) | (n.N4 << 16));
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], (n.N2 >> 24) | (n.N3 << 28));
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], (n.N1 >> 12) | (n.N2 << 40));
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], n.N0 | (n.N1 << 52));
    }

    /// <summary>The canonical value as 32 bytes big-endian.</summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[32];
        WriteBytes(bytes);
        return bytes;
    }

    /// <summary>True when the limbs are the canonical form (52-bit limbs, 48-bit top limb, value below p).</summary>
    public bool IsCanonical()
        => ((N0 | N1 | N2 | N3) >> 52) == 0 && (N4 >> 48) == 0
           && !(N4 == M48 && (N3 & N2 & N1) == M52 && N0 >= P0);

    /// <summary>
    /// Magnitude 1 (constant time): the carries propagated and the bits above 2^256 folded back, the value congruent
    /// but not necessarily below p. Needs limbs below 2^63 (any magnitude up to about 2^10).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public FieldElement NormalizeWeak()
    {
        ulong t0 = N0, t1 = N1, t2 = N2, t3 = N3, t4 = N4;
        var x = t4 >> 48;
        t4 &= M48;
        t0 += x * Fold256;
        t1 += t0 >> 52;
        t0 &= M52;
        t2 += t1 >> 52;
        t1 &= M52;
        t3 += t2 >> 52;
        t2 &= M52;
        t4 += t3 >> 52;
        t3 &= M52;
        // t4 <= 2^48 - 1 + 2^12: magnitude 1.
        return new FieldElement(t0, t1, t2, t3, t4);
    }

    /// <summary>The canonical form, value in [0, p) (constant time).</summary>
    public FieldElement Normalize()
    {
        var w = NormalizeWeak();
        ulong t0 = w.N0, t1 = w.N1, t2 = w.N2, t3 = w.N3, t4 = w.N4;
        // The value is below 2^256 + 2^220 < 2p: subtract p once when it is at least p, that is when it reaches 2^256
        // (bit 48 of t4) or equals p's limbs at the top with t0 >= p0. Subtracting p is adding 2^256 - p and
        // dropping 2^256.
        var ge = (t4 >> 48)
                 | (IsZeroWord(t4 ^ M48) & IsZeroWord((t3 & t2 & t1) ^ M52) & (((t0 - P0) >> 63) ^ 1));
        t0 += ge * Fold256;
        t1 += t0 >> 52;
        t0 &= M52;
        t2 += t1 >> 52;
        t1 &= M52;
        t3 += t2 >> 52;
        t2 &= M52;
        t4 += t3 >> 52;
        t3 &= M52;
        t4 &= M48;
        return new FieldElement(t0, t1, t2, t3, t4);
    }

    /// <summary>True when the element is 0 (variable time).</summary>
    public bool IsZero => IsZeroMask() != 0;

    /// <summary>All ones when the element is 0, else 0 (constant time).</summary>
    public ulong IsZeroMask()
    {
        var n = Normalize();
        return IsZeroWord(n.N0 | n.N1 | n.N2 | n.N3 | n.N4);
    }

    /// <summary>All ones when the elements are equal, else 0 (constant time; any magnitude up to about 2^10).</summary>
    public static ulong EqualsMask(in FieldElement a, in FieldElement b)
    {
        var x = a.Normalize();
        var y = b.Normalize();
        return IsZeroWord((x.N0 ^ y.N0) | (x.N1 ^ y.N1) | (x.N2 ^ y.N2) | (x.N3 ^ y.N3) | (x.N4 ^ y.N4));
    }

    /// <summary>True when the canonical value is odd.</summary>
    public bool IsOdd => (Normalize().N0 & 1) != 0;

    /// <summary>b when mask is all ones, a when it is 0 (constant time).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Select(in FieldElement a, in FieldElement b, ulong mask) => new(
        (a.N0 & ~mask) | (b.N0 & mask),
        (a.N1 & ~mask) | (b.N1 & mask),
        (a.N2 & ~mask) | (b.N2 & mask),
        (a.N3 & ~mask) | (b.N3 & mask),
        (a.N4 & ~mask) | (b.N4 & mask));

    /// <summary>a + b: the magnitudes add.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Add(in FieldElement a, in FieldElement b)
        => new(a.N0 + b.N0, a.N1 + b.N1, a.N2 + b.N2, a.N3 + b.N3, a.N4 + b.N4);

    /// <summary>2a: the magnitude doubles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Double(in FieldElement a) => new(a.N0 << 1, a.N1 << 1, a.N2 << 1, a.N3 << 1, a.N4 << 1);

    /// <summary>a·k for a small k: the magnitude is multiplied by k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement MultiplyInt(in FieldElement a, uint k)
        => new(a.N0 * k, a.N1 * k, a.N2 * k, a.N3 * k, a.N4 * k);

    /// <summary>-a for a of magnitude at most <paramref name="magnitude"/>: 2(m+1)·p - a, of magnitude m + 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Negate(in FieldElement a, uint magnitude)
    {
        var k = 2 * (magnitude + 1);
        return new FieldElement((k * P0) - a.N0, (k * P1) - a.N1, (k * P1) - a.N2, (k * P1) - a.N3, (k * P4) - a.N4);
    }

    /// <summary>a - b for b of magnitude at most <paramref name="magnitude"/>: magnitude of a plus m + 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FieldElement Subtract(in FieldElement a, in FieldElement b, uint magnitude) => Add(a, Negate(b, magnitude));

    /// <summary>a·b for magnitudes at most 8; magnitude 1 (constant time).</summary>
    /// <remarks>
    /// <para>
    /// The limbs are pre-shifted (a by 8 bits, b by 4) so that every 128-bit product is x·2^12 for x = a_i·b_j below
    /// 2^112: its high word is then x >> 52, the part of x that belongs to the next column up, and its low word >> 12 is
    /// x mod 2^52, the part that belongs to this column. Each column sum t_k collects at most 5 low parts (below 2^52)
    /// and 5 high parts of the column below (below 2^60), so it needs no carry detection, and the reduction then works
    /// on 64-bit words only.
    /// </para>
    /// <para>
    /// Nothing here may push the column sums into memory. <see cref="Accumulate"/> takes them by reference and the
    /// reduction takes 10 of them; both are inlined (the JIT inlines nothing with more than 16 arguments, and a call
    /// that is not inlined takes the sums' addresses). The 64×64 products come without an out parameter (see
    /// <see cref="Accumulate"/>). With Math.BigMul's out parameter and an 18-argument reduction, this product took
    /// 79 ns; it now takes 25.
    /// </para>
    /// </remarks>
    public static FieldElement Multiply(in FieldElement a, in FieldElement b)
    {
        ulong a0 = a.N0 << 8, a1 = a.N1 << 8, a2 = a.N2 << 8, a3 = a.N3 << 8, a4 = a.N4 << 8;
        ulong b0 = b.N0 << 4, b1 = b.N1 << 4, b2 = b.N2 << 4, b3 = b.N3 << 4, b4 = b.N4 << 4;

        ulong t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, t6 = 0, t7 = 0, t8 = 0, t9 = 0;
        Accumulate(a0, b0, ref t0, ref t1);

        Accumulate(a0, b1, ref t1, ref t2);
        Accumulate(a1, b0, ref t1, ref t2);

        Accumulate(a0, b2, ref t2, ref t3);
        Accumulate(a1, b1, ref t2, ref t3);
        Accumulate(a2, b0, ref t2, ref t3);

        Accumulate(a0, b3, ref t3, ref t4);
        Accumulate(a1, b2, ref t3, ref t4);
        Accumulate(a2, b1, ref t3, ref t4);
        Accumulate(a3, b0, ref t3, ref t4);

        Accumulate(a0, b4, ref t4, ref t5);
        Accumulate(a1, b3, ref t4, ref t5);
        Accumulate(a2, b2, ref t4, ref t5);
        Accumulate(a3, b1, ref t4, ref t5);
        Accumulate(a4, b0, ref t4, ref t5);

        Accumulate(a1, b4, ref t5, ref t6);
        Accumulate(a2, b3, ref t5, ref t6);
        Accumulate(a3, b2, ref t5, ref t6);
        Accumulate(a4, b1, ref t5, ref t6);

        Accumulate(a2, b4, ref t6, ref t7);
        Accumulate(a3, b3, ref t6, ref t7);
        Accumulate(a4, b2, ref t6, ref t7);

        Accumulate(a3, b4, ref t7, ref t8);
        Accumulate(a4, b3, ref t7, ref t8);

        Accumulate(a4, b4, ref t8, ref t9);

        return Reduce(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9);
    }

    /// <summary>a^2 for a magnitude at most 8; magnitude 1 (constant time). As <see cref="Multiply"/>, each cross product once, doubled.</summary>
    public static FieldElement Square(in FieldElement a)
    {
        // a_i << 8 times a_j << 4 is a_i·a_j·2^12; times a_j << 5 it is 2·a_i·a_j·2^12 (below 2^125).
        ulong a0 = a.N0 << 8, a1 = a.N1 << 8, a2 = a.N2 << 8, a3 = a.N3 << 8, a4 = a.N4 << 8;
        ulong s0 = a.N0 << 4, s1 = a.N1 << 4, s2 = a.N2 << 4, s3 = a.N3 << 4, s4 = a.N4 << 4;
        ulong c1 = a.N1 << 5, c2 = a.N2 << 5, c3 = a.N3 << 5, c4 = a.N4 << 5;

        ulong t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, t6 = 0, t7 = 0, t8 = 0, t9 = 0;
        Accumulate(a0, s0, ref t0, ref t1);
        Accumulate(a0, c1, ref t1, ref t2);
        Accumulate(a0, c2, ref t2, ref t3);
        Accumulate(a1, s1, ref t2, ref t3);
        Accumulate(a0, c3, ref t3, ref t4);
        Accumulate(a1, c2, ref t3, ref t4);
        Accumulate(a0, c4, ref t4, ref t5);
        Accumulate(a1, c3, ref t4, ref t5);
        Accumulate(a2, s2, ref t4, ref t5);
        Accumulate(a1, c4, ref t5, ref t6);
        Accumulate(a2, c3, ref t5, ref t6);
        Accumulate(a2, c4, ref t6, ref t7);
        Accumulate(a3, s3, ref t6, ref t7);
        Accumulate(a3, c4, ref t7, ref t8);
        Accumulate(a4, s4, ref t8, ref t9);

        return Reduce(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9);
    }

    /// <summary>
    /// Reduces the product Σ_k t_k·2^(52k), k = 0..9 (every t_k below 2^63), to magnitude 1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FieldElement Reduce(ulong t0, ulong t1, ulong t2, ulong t3, ulong t4, ulong t5, ulong t6, ulong t7, ulong t8, ulong t9)
    {
        // The high positions 5..9 as 52-bit digits d5..d8 and a top d9 below 2^53.
        var v = t5;
        var d5 = v & M52;
        v = (v >> 52) + t6;
        var d6 = v & M52;
        v = (v >> 52) + t7;
        var d7 = v & M52;
        v = (v >> 52) + t8;
        var d8 = v & M52;
        var d9 = (v >> 52) + t9;

        // 2^(52·(k+5)) ≡ 2^(52k)·Fold260: add d_(k+5)·Fold260 (below 2^90) at position k, split at 52 bits the same way
        // (d << 11 times Fold260 << 1): below 2^52 to t_k and below 2^38 to t_(k+1), which stay below 2^64. The part of
        // d9·Fold260 above position 4 is 'extra', at 2^260.
        const ulong fold260Shifted = Fold260 << 1;
        Accumulate(d5 << 11, fold260Shifted, ref t0, ref t1);
        Accumulate(d6 << 11, fold260Shifted, ref t1, ref t2);
        Accumulate(d7 << 11, fold260Shifted, ref t2, ref t3);
        Accumulate(d8 << 11, fold260Shifted, ref t3, ref t4);
        ulong extra = 0;
        Accumulate(d9 << 11, fold260Shifted, ref t4, ref extra);

        v = t0;
        var e0 = v & M52;
        v = (v >> 52) + t1;
        var e1 = v & M52;
        v = (v >> 52) + t2;
        var e2 = v & M52;
        v = (v >> 52) + t3;
        var e3 = v & M52;
        v = (v >> 52) + t4;
        var e4 = v & M48;

        // What lies from 2^256 up: (v >> 48)·2^256 + extra·2^260 ≡ ((v >> 48) + 16·extra)·Fold256, below 2^76: its
        // low 52 bits go to e0 and the rest (below 2^24) to e1, both then at most 2·(2^52 - 1): magnitude 1.
        var top = (v >> 48) + (extra << 4);
        ulong low = 0, high = 0;
        Accumulate(top << 12, Fold256, ref low, ref high);
        return new FieldElement(e0 + low, e1 + high, e2, e3, e4);
    }

    /// <summary>
    /// For a·b = x·2^12 with x below 2^116: low += x mod 2^52 and high += x >> 52 (the low word of the product >> 12 and
    /// its high word).
    /// </summary>
    /// <remarks>
    /// The high word comes from the CPU's high-half multiply and the low word from an ordinary one. Math.BigMul's out
    /// parameter takes the low word's address, and the JIT then keeps every column sum in memory (2.5 times slower).
    /// Without either instruction set, Math.BigMul gives the same result; Secp256k1CurveTests runs the field tests on
    /// that path too (DOTNET_EnableAVX2=0 in a child process).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(ulong a, ulong b, ref ulong low, ref ulong high)
    {
        ulong hi, lo;
        if (Bmi2.X64.IsSupported)
        {
            hi = Bmi2.X64.MultiplyNoFlags(a, b);
            lo = a * b;
        }
        else if (ArmBase.Arm64.IsSupported)
        {
            hi = ArmBase.Arm64.MultiplyHigh(a, b);
            lo = a * b;
        }
        else
        {
            hi = Math.BigMul(a, b, out lo);
        }

        low += lo >> 12;
        high += hi;
    }

    /// <summary>a^(2^count): <paramref name="count"/> squarings (constant time in a).</summary>
    public static FieldElement SquareTimes(in FieldElement a, int count)
    {
        var r = a;
        for (var i = 0; i < count; i++)
            r = Square(r);
        return r;
    }

    /// <summary>1 / a by Fermat, a^(p-2), with a fixed addition chain (constant time); 0 maps to 0.</summary>
    public static FieldElement Invert(in FieldElement a)
    {
        // p - 2 = [223 ones] 0 [22 ones] 0000101101.
        var x223 = OnesChain(a, out var x2, out var x22);
        var r = Multiply(SquareTimes(x223, 23), x22);
        r = Multiply(SquareTimes(r, 5), a);
        r = Multiply(SquareTimes(r, 3), x2);
        return Multiply(SquareTimes(r, 2), a);
    }

    /// <summary>
    /// A square root, a^((p+1)/4) (p ≡ 3 mod 4); false when a is not a square. The power is constant time; the
    /// result is one of the two roots (either parity).
    /// </summary>
    public static bool Sqrt(in FieldElement a, out FieldElement root)
    {
        // (p + 1) / 4 = [223 ones] 0 [22 ones] 00001100.
        var x223 = OnesChain(a, out var x2, out var x22);
        var r = Multiply(SquareTimes(x223, 23), x22);
        r = Multiply(SquareTimes(r, 6), x2);
        root = SquareTimes(r, 2);
        return EqualsMask(Square(root), a) != 0;
    }

    /// <summary>a^(2^223 - 1), with a^(2^2 - 1) and a^(2^22 - 1) on the way.</summary>
    private static FieldElement OnesChain(in FieldElement a, out FieldElement x2, out FieldElement x22)
    {
        // x_k = a^(2^k - 1); x_(j+k) = x_j^(2^k) · x_k.
        x2 = Multiply(Square(a), a);
        var x3 = Multiply(Square(x2), a);
        var x6 = Multiply(SquareTimes(x3, 3), x3);
        var x9 = Multiply(SquareTimes(x6, 3), x3);
        var x11 = Multiply(SquareTimes(x9, 2), x2);
        x22 = Multiply(SquareTimes(x11, 11), x11);
        var x44 = Multiply(SquareTimes(x22, 22), x22);
        var x88 = Multiply(SquareTimes(x44, 44), x44);
        var x176 = Multiply(SquareTimes(x88, 88), x88);
        var x220 = Multiply(SquareTimes(x176, 44), x44);
        return Multiply(SquareTimes(x220, 3), x3);
    }

    /// <summary>a + b + carryIn (carryIn 0 or 1), the carry out in <paramref name="carryOut"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong AddCarry(ulong a, ulong b, ulong carryIn, out ulong carryOut)
    {
        var s = a + b;
        var c = Bit(s < a);
        s += carryIn;
        carryOut = c | Bit(s < carryIn);
        return s;
    }

    /// <summary>a - b - borrowIn (borrowIn 0 or 1), the borrow out in <paramref name="borrowOut"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong SubBorrow(ulong a, ulong b, ulong borrowIn, out ulong borrowOut)
    {
        var d = a - b;
        var c = Bit(a < b);
        borrowOut = c | Bit(d < borrowIn);
        return d - borrowIn;
    }

    /// <summary>1 for true, 0 for false, without a branch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Bit(bool value) => Unsafe.BitCast<bool, byte>(value);

    /// <summary>All ones when <paramref name="word"/> is 0, else 0, without a branch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong IsZeroWord(ulong word) => ((word | (0UL - word)) >> 63) - 1;

    /// <summary>Equality of the values (variable time).</summary>
    public bool Equals(FieldElement other) => EqualsMask(this, other) != 0;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is FieldElement other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var n = Normalize();
        return HashCode.Combine(n.N0, n.N1, n.N2, n.N3, n.N4);
    }

    /// <summary>The canonical value in hexadecimal.</summary>
    public override string ToString() => Convert.ToHexString(ToBytes());

    /// <summary>Equality.</summary>
    public static bool operator ==(FieldElement left, FieldElement right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(FieldElement left, FieldElement right) => !left.Equals(right);
}
