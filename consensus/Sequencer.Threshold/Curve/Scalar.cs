using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Threshold.Curve;

/// <summary>
/// An integer modulo the secp256k1 group order n, as four 64-bit limbs (least significant first), always below n.
/// </summary>
/// <remarks>
/// Only what the multiplication algorithms need: conversions, negation, bit windows, the GLV decomposition and wNAF
/// recoding. The protocol code keeps its scalars as BouncyCastle integers. Conversions from bytes, <see cref="Negate"/>
/// and <see cref="GetBits"/> are constant time; <see cref="SplitLambda"/> and <see cref="Wnaf"/> are variable time
/// (public scalars only).
/// </remarks>
internal readonly struct Scalar : IEquatable<Scalar>
{
    private const ulong N0 = 0xBFD25E8CD0364141UL;
    private const ulong N1 = 0xBAAEDCE6AF48A03BUL;
    private const ulong N2 = 0xFFFFFFFFFFFFFFFEUL;
    private const ulong N3 = 0xFFFFFFFFFFFFFFFFUL;

    // The GLV decomposition k = k1 + k2 * λ (mod n) with |k1|, |k2| about 2^128 (Gallant, Lambert, Vanstone), from the
    // short lattice basis (a1, b1), (a2, b2) of {(x, y) : x + y * λ ≡ 0 (mod n)} found by the extended Euclidean
    // algorithm on (n, λ); g1 = round(2^384 * b2 / n), g2 = round(2^384 * -b1 / n). b2 = a1, and b1 < 0.
    private static readonly ulong[] A1 = [0xE86C90E49284EB15UL, 0x3086D221A7D46BCDUL];
    private static readonly ulong[] MinusB1 = [0x6F547FA90ABFE4C3UL, 0xE4437ED6010E8828UL];
    private static readonly ulong[] A2 = [0x57C1108D9D44CFD8UL, 0x14CA50F7A8E2F3F6UL, 0x1UL];
    private static readonly ulong[] G1 = [0xE893209A45DBB031UL, 0x3DAA8A1471E8CA7FUL, 0xE86C90E49284EB15UL, 0x3086D221A7D46BCDUL];
    private static readonly ulong[] G2 = [0x1571B4AE8AC47F71UL, 0x221208AC9DF506C6UL, 0x6F547FA90ABFE4C4UL, 0xE4437ED6010E8828UL];

    /// <summary>The limbs, least significant first.</summary>
    internal readonly ulong L0, L1, L2, L3;

    private Scalar(ulong l0, ulong l1, ulong l2, ulong l3)
    {
        L0 = l0;
        L1 = l1;
        L2 = l2;
        L3 = l3;
    }

    /// <summary>0.</summary>
    public static Scalar Zero => default;

    /// <summary>1.</summary>
    public static Scalar One => new(1, 0, 0, 0);

    /// <summary>λ, the cube root of unity modulo n with λ·(x, y) = (β·x, y).</summary>
    public static Scalar Lambda { get; } = FromBytes(Convert.FromHexString("5363AD4CC05C30E0A5261C028812645A122E22EA20816678DF02967C1B23BD72"));

    /// <summary>The order n as a BouncyCastle integer.</summary>
    public static BcBigInteger OrderBig { get; } = new(1, Convert.FromHexString("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"));

    /// <summary>32 bytes big-endian, reduced modulo n (constant time).</summary>
    public static Scalar FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != 32)
            throw new ArgumentException("a scalar is 32 bytes", nameof(bytes));
        return Reduce(
            BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes));
    }

    /// <summary>
    /// A BouncyCastle integer reduced modulo n (negative values too). The reduction and the byte conversion are
    /// BouncyCastle's, which are not constant time.
    /// </summary>
    public static Scalar FromBigInteger(BcBigInteger value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var reduced = value.SignValue < 0 || value.BitLength > 256 ? value.Mod(OrderBig) : value;
        Span<byte> bytes = stackalloc byte[32];
        bytes.Clear();
        // ToByteArrayUnsigned has no leading zero byte; below 2^256 it is at most 32 bytes.
        var raw = reduced.ToByteArrayUnsigned();
        raw.CopyTo(bytes[(32 - raw.Length)..]);
        var scalar = FromBytes(bytes);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(bytes);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(raw);
        return scalar;
    }

    /// <summary>The value as a BouncyCastle integer.</summary>
    public BcBigInteger ToBigInteger() => new(1, ToBytes());

    /// <summary>32 bytes big-endian.</summary>
    public void WriteBytes(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, L3);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], L2);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], L1);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], L0);
    }

    /// <summary>32 bytes big-endian.</summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[32];
        WriteBytes(bytes);
        return bytes;
    }

    /// <summary>True when 0.</summary>
    public bool IsZero => (L0 | L1 | L2 | L3) == 0;

    /// <summary>n - k, and 0 for 0 (constant time).</summary>
    public Scalar Negate()
    {
        var nonzero = ~FieldElement.IsZeroWord(L0 | L1 | L2 | L3);
        var r0 = FieldElement.SubBorrow(N0, L0, 0, out var c);
        var r1 = FieldElement.SubBorrow(N1, L1, c, out c);
        var r2 = FieldElement.SubBorrow(N2, L2, c, out c);
        var r3 = FieldElement.SubBorrow(N3, L3, c, out _);
        return new Scalar(r0 & nonzero, r1 & nonzero, r2 & nonzero, r3 & nonzero);
    }

    /// <summary>
    /// <paramref name="count"/> (1..32) bits from bit <paramref name="offset"/> (0..255) upwards, bits past 255 read as 0
    /// (constant time: fixed positions, no branch on the value).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint GetBits(int offset, int count)
    {
        var limb = offset >> 6;
        var shift = offset & 63;
        var low = Limb(limb) >> shift;
        // (x << 1) << (63 - shift) is x << (64 - shift) and 0 for shift 0, without a shift by 64.
        var high = (Limb(limb + 1) << 1) << (63 - shift);
        return (uint)((low | high) & ((1UL << count) - 1));
    }

    private ulong Limb(int index) => index switch
    {
        0 => L0,
        1 => L1,
        2 => L2,
        3 => L3,
        _ => 0,
    };

    /// <summary>
    /// The GLV decomposition k = k1 + k2·λ (mod n), each half a sign and a magnitude below 2^192 (about 2^128 in fact)
    /// as limbs, least significant first. Variable time.
    /// </summary>
    public void SplitLambda(Span<ulong> k1, out bool k1Negative, Span<ulong> k2, out bool k2Negative)
    {
        Span<ulong> k = [L0, L1, L2, L3];
        Span<ulong> c1 = stackalloc ulong[4];
        Span<ulong> c2 = stackalloc ulong[4];
        MulShift384(k, G1, c1);
        MulShift384(k, G2, c2);

        // Over the integers modulo 2^256 (the true results are small, so their two's complement is exact):
        // k1 = k - c1*a1 - c2*a2 and k2 = c1*(-b1) - c2*b2, with b2 = a1.
        Span<ulong> t = stackalloc ulong[4];
        Span<ulong> r1 = stackalloc ulong[4];
        k.CopyTo(r1);
        MulLow(c1, A1, t);
        Sub256(r1, t);
        MulLow(c2, A2, t);
        Sub256(r1, t);

        Span<ulong> r2 = stackalloc ulong[4];
        MulLow(c1, MinusB1, r2);
        MulLow(c2, A1, t);
        Sub256(r2, t);

        k1Negative = Abs256(r1);
        k2Negative = Abs256(r2);
        if (r1[3] != 0 || r2[3] != 0)
            throw new InvalidOperationException("GLV decomposition out of range");
        r1[..3].CopyTo(k1);
        r2[..3].CopyTo(k2);
    }

    /// <summary>
    /// The width-<paramref name="width"/> non-adjacent form of a magnitude (limbs, least significant first): digits
    /// odd and below 2^(w-1) in absolute value, or 0, any two non-zero digits at least w apart, Σ digits[i]·2^i equal
    /// to the magnitude (negated digits when <paramref name="negate"/>). The whole buffer is written (zeros past the
    /// last digit); it needs room for the magnitude's bit length plus w. Returns the position of the highest non-zero
    /// digit plus one (0 for 0). Variable time.
    /// </summary>
    public static int Wnaf(ReadOnlySpan<ulong> magnitude, bool negate, int width, Span<int> digits)
    {
        var bits = BitLength(magnitude);
        if (digits.Length < bits + width)
            throw new ArgumentException("the digit buffer is too short", nameof(digits));
        digits.Clear();
        var sign = negate ? -1 : 1;
        var carry = 0;
        var length = 0;
        var position = 0;
        // Scan upward; 'carry' is 1 when a negative digit left 2^w to add back above it. A bit equal to the carry gives
        // a zero digit; otherwise the next w bits plus the carry make an odd digit, brought into the signed range by
        // moving 2^w into the carry.
        while (position < bits || carry != 0)
        {
            if ((int)ReadBits(magnitude, position, 1) == carry)
            {
                position++;
                continue;
            }

            var word = (int)ReadBits(magnitude, position, width) + carry;
            carry = (word >> (width - 1)) & 1;
            word -= carry << width;
            digits[position] = sign * word;
            length = position + 1;
            position += width;
        }

        return length;
    }

    /// <summary>The number of significant bits of a magnitude.</summary>
    public static int BitLength(ReadOnlySpan<ulong> magnitude)
    {
        for (var i = magnitude.Length - 1; i >= 0; i--)
        {
            if (magnitude[i] != 0)
                return (64 * i) + 64 - System.Numerics.BitOperations.LeadingZeroCount(magnitude[i]);
        }

        return 0;
    }

    private static uint ReadBits(ReadOnlySpan<ulong> limbs, int offset, int count)
    {
        var limb = offset >> 6;
        var shift = offset & 63;
        var low = limb < limbs.Length ? limbs[limb] >> shift : 0;
        var high = shift != 0 && limb + 1 < limbs.Length ? limbs[limb + 1] << (64 - shift) : 0;
        return (uint)((low | high) & ((1UL << count) - 1));
    }

    private static Scalar Reduce(ulong l0, ulong l1, ulong l2, ulong l3)
    {
        // Below 2^256 < 2n: subtract n once when it does not borrow.
        var r0 = FieldElement.SubBorrow(l0, N0, 0, out var c);
        var r1 = FieldElement.SubBorrow(l1, N1, c, out c);
        var r2 = FieldElement.SubBorrow(l2, N2, c, out c);
        var r3 = FieldElement.SubBorrow(l3, N3, c, out c);
        var keep = 0UL - c;
        return new Scalar((l0 & keep) | (r0 & ~keep), (l1 & keep) | (r1 & ~keep), (l2 & keep) | (r2 & ~keep), (l3 & keep) | (r3 & ~keep));
    }

    /// <summary>round(a * b / 2^384) for 256-bit a and b (the result is below 2^128).</summary>
    private static void MulShift384(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b, Span<ulong> result)
    {
        Span<ulong> product = stackalloc ulong[8];
        MulFull(a, b, product);
        // Rounding: add bit 383.
        var round = product[5] >> 63;
        result[0] = FieldElement.AddCarry(product[6], round, 0, out var c);
        result[1] = product[7] + c;
        result[2] = 0;
        result[3] = 0;
    }

    private static void MulFull(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b, Span<ulong> product)
    {
        product.Clear();
        for (var i = 0; i < a.Length; i++)
        {
            ulong carry = 0;
            for (var j = 0; j < b.Length; j++)
            {
                var hi = Math.BigMul(a[i], b[j], out var lo);
                lo = FieldElement.AddCarry(lo, product[i + j], 0, out var c1);
                lo = FieldElement.AddCarry(lo, carry, 0, out var c2);
                product[i + j] = lo;
                carry = hi + c1 + c2;
            }

            product[i + b.Length] = carry;
        }
    }

    /// <summary>a * b modulo 2^256.</summary>
    private static void MulLow(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b, Span<ulong> result)
    {
        Span<ulong> product = stackalloc ulong[a.Length + b.Length];
        MulFull(a, b, product);
        result.Clear();
        product[..Math.Min(4, product.Length)].CopyTo(result);
    }

    private static void Sub256(Span<ulong> a, ReadOnlySpan<ulong> b)
    {
        ulong borrow = 0;
        for (var i = 0; i < 4; i++)
            a[i] = FieldElement.SubBorrow(a[i], b[i], borrow, out borrow);
    }

    /// <summary>Replaces a two's complement value by its magnitude; true when it was negative.</summary>
    private static bool Abs256(Span<ulong> a)
    {
        if ((a[3] >> 63) == 0)
            return false;
        ulong carry = 1;
        for (var i = 0; i < 4; i++)
            a[i] = FieldElement.AddCarry(~a[i], 0, carry, out carry);
        return true;
    }

    /// <inheritdoc/>
    public bool Equals(Scalar other) => L0 == other.L0 && L1 == other.L1 && L2 == other.L2 && L3 == other.L3;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Scalar other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(L0, L1, L2, L3);

    /// <summary>Equality.</summary>
    public static bool operator ==(Scalar left, Scalar right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(Scalar left, Scalar right) => !left.Equals(right);
}
