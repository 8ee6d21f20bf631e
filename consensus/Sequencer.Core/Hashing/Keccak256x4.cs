using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sequencer.Core.Hashing;

/// <summary>
/// Four Keccak-256 hashes at once: lane i of the four states sits in one 256-bit vector, so every step of
/// Keccak-f[1600] runs on four independent messages with one instruction. The result is exactly
/// <see cref="Keccak256.Hash(ReadOnlySpan{byte})"/> of each message (the tests compare them for every length around
/// the rate, and run again in a child process with AVX-512 and with AVX2 turned off).
/// </summary>
/// <remarks>
/// A batch's tx hashes, its Merkle leaves and each level of its Merkle tree are independent messages of equal length,
/// and keccak-f took 18 % of all CPU samples at bulk saturation. With AVX-512 (VL) a rotation is one instruction
/// (<c>vprolq</c>) and chi and theta's five-way XOR are ternary-logic instructions (<c>vpternlogq</c>); with AVX2 alone a
/// rotation is two shifts and an OR. Where 256-bit vectors are not accelerated, <see cref="IsAccelerated"/> is false and
/// callers hash one message at a time.
/// </remarks>
internal static class Keccak256x4
{
    private const int Rate = Keccak256.RateBytes;

    /// <summary>Whether four-way hashing is faster than four single hashes here.</summary>
    public static bool IsAccelerated => Vector256.IsHardwareAccelerated;

    /// <summary>The number of blocks (after padding) a message of <paramref name="length"/> bytes absorbs.</summary>
    public static int BlocksFor(int length) => (length / Rate) + 1;

    [InlineArray(25)]
    private struct State
    {
        private Vector256<ulong> element;
    }

    /// <summary>
    /// keccak256 of four messages that absorb the same number of blocks (<see cref="BlocksFor"/>); the lengths may differ
    /// within a block.
    /// </summary>
    [SkipLocalsInit]
    public static void Hash(ReadOnlySpan<byte> m0, ReadOnlySpan<byte> m1, ReadOnlySpan<byte> m2, ReadOnlySpan<byte> m3,
        out Hash32 h0, out Hash32 h1, out Hash32 h2, out Hash32 h3)
    {
        var blocks = BlocksFor(m0.Length);
        Invariant.Check(BlocksFor(m1.Length) == blocks && BlocksFor(m2.Length) == blocks && BlocksFor(m3.Length) == blocks,
            "four-way keccak: every message absorbs the same number of blocks");

        var state = new State();
        for (var b = 0; b < blocks - 1; b++)
        {
            var offset = b * Rate;
            XorBlock(ref state, m0.Slice(offset, Rate), m1.Slice(offset, Rate), m2.Slice(offset, Rate), m3.Slice(offset, Rate));
            Permute(ref state);
        }

        // The last block of each message with Keccak's padding (0x01 ... 0x80).
        Span<byte> last = stackalloc byte[4 * Rate];
        var tail = (blocks - 1) * Rate;
        Pad(m0[tail..], last[..Rate]);
        Pad(m1[tail..], last.Slice(Rate, Rate));
        Pad(m2[tail..], last.Slice(2 * Rate, Rate));
        Pad(m3[tail..], last.Slice(3 * Rate, Rate));
        XorBlock(ref state, last[..Rate], last.Slice(Rate, Rate), last.Slice(2 * Rate, Rate), last.Slice(3 * Rate, Rate));
        Permute(ref state);

        h0 = Output(ref state, 0);
        h1 = Output(ref state, 1);
        h2 = Output(ref state, 2);
        h3 = Output(ref state, 3);
    }

    /// <summary>
    /// The first <paramref name="count"/> (1 to 4) of the four hashes into <paramref name="into"/>: a group of fewer than
    /// four passes its last message again in the unused lanes (one four-way permutation still costs less than two
    /// single ones).
    /// </summary>
    public static void Hash(ReadOnlySpan<byte> m0, ReadOnlySpan<byte> m1, ReadOnlySpan<byte> m2, ReadOnlySpan<byte> m3, int count, Span<Hash32> into)
    {
        Hash(m0, m1, m2, m3, out var h0, out var h1, out var h2, out var h3);
        ReadOnlySpan<Hash32> four = [h0, h1, h2, h3];
        four[..count].CopyTo(into);
    }

    private static void Pad(ReadOnlySpan<byte> remaining, Span<byte> block)
    {
        block.Clear();
        remaining.CopyTo(block);
        block[remaining.Length] ^= 0x01;
        block[Rate - 1] ^= 0x80;
    }

    private static Hash32 Output(ref State state, int message)
        => Hash32.FromLittleEndianWords(state[0].GetElement(message), state[1].GetElement(message),
            state[2].GetElement(message), state[3].GetElement(message));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void XorBlock(ref State state, ReadOnlySpan<byte> b0, ReadOnlySpan<byte> b1, ReadOnlySpan<byte> b2, ReadOnlySpan<byte> b3)
    {
        for (var i = 0; i < Rate / 8; i++)
        {
            var at = i * 8;
            state[i] ^= Vector256.Create(
                BinaryPrimitives.ReadUInt64LittleEndian(b0[at..]),
                BinaryPrimitives.ReadUInt64LittleEndian(b1[at..]),
                BinaryPrimitives.ReadUInt64LittleEndian(b2[at..]),
                BinaryPrimitives.ReadUInt64LittleEndian(b3[at..]));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Rol(Vector256<ulong> v, [ConstantExpected(Min = 1, Max = 63)] byte n)
        => Avx512F.VL.IsSupported
            ? Avx512F.VL.RotateLeft(v, n)
            : Vector256.ShiftLeft(v, n) | Vector256.ShiftRightLogical(v, 64 - n);

    // a ^ b ^ c ^ d ^ e
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Xor5(Vector256<ulong> a, Vector256<ulong> b, Vector256<ulong> c, Vector256<ulong> d, Vector256<ulong> e)
        => Avx512F.VL.IsSupported
            ? Avx512F.VL.TernaryLogic(Avx512F.VL.TernaryLogic(a, b, c, 0x96), d, e, 0x96)
            : a ^ b ^ c ^ d ^ e;

    // Keccak's chi for one lane: a ^ (~b & c).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Chi(Vector256<ulong> a, Vector256<ulong> b, Vector256<ulong> c)
        => Avx512F.VL.IsSupported
            ? Avx512F.VL.TernaryLogic(a, b, c, 0xD2)
            : a ^ Vector256.AndNot(c, b);

    /// <summary>Keccak-f[1600] on four states; the same steps and names as <c>Keccak256.Permute</c>.</summary>
    [SkipLocalsInit]
    private static void Permute(ref State s)
    {
        Vector256<ulong> a00 = s[0], a10 = s[1], a20 = s[2], a30 = s[3], a40 = s[4];
        Vector256<ulong> a01 = s[5], a11 = s[6], a21 = s[7], a31 = s[8], a41 = s[9];
        Vector256<ulong> a02 = s[10], a12 = s[11], a22 = s[12], a32 = s[13], a42 = s[14];
        Vector256<ulong> a03 = s[15], a13 = s[16], a23 = s[17], a33 = s[18], a43 = s[19];
        Vector256<ulong> a04 = s[20], a14 = s[21], a24 = s[22], a34 = s[23], a44 = s[24];
        ReadOnlySpan<ulong> constants = Keccak256.RoundConstantsSpan;

        for (var round = 0; round < 24; round++)
        {
            // theta
            var c0 = Xor5(a00, a01, a02, a03, a04);
            var c1 = Xor5(a10, a11, a12, a13, a14);
            var c2 = Xor5(a20, a21, a22, a23, a24);
            var c3 = Xor5(a30, a31, a32, a33, a34);
            var c4 = Xor5(a40, a41, a42, a43, a44);
            var d0 = c4 ^ Rol(c1, 1);
            var d1 = c0 ^ Rol(c2, 1);
            var d2 = c1 ^ Rol(c3, 1);
            var d3 = c2 ^ Rol(c4, 1);
            var d4 = c3 ^ Rol(c0, 1);

            // rho and pi
            var b00 = a00 ^ d0;
            var b02 = Rol(a10 ^ d1, 1);
            var b04 = Rol(a20 ^ d2, 62);
            var b01 = Rol(a30 ^ d3, 28);
            var b03 = Rol(a40 ^ d4, 27);

            var b13 = Rol(a01 ^ d0, 36);
            var b10 = Rol(a11 ^ d1, 44);
            var b12 = Rol(a21 ^ d2, 6);
            var b14 = Rol(a31 ^ d3, 55);
            var b11 = Rol(a41 ^ d4, 20);

            var b21 = Rol(a02 ^ d0, 3);
            var b23 = Rol(a12 ^ d1, 10);
            var b20 = Rol(a22 ^ d2, 43);
            var b22 = Rol(a32 ^ d3, 25);
            var b24 = Rol(a42 ^ d4, 39);

            var b34 = Rol(a03 ^ d0, 41);
            var b31 = Rol(a13 ^ d1, 45);
            var b33 = Rol(a23 ^ d2, 15);
            var b30 = Rol(a33 ^ d3, 21);
            var b32 = Rol(a43 ^ d4, 8);

            var b42 = Rol(a04 ^ d0, 18);
            var b44 = Rol(a14 ^ d1, 2);
            var b41 = Rol(a24 ^ d2, 61);
            var b43 = Rol(a34 ^ d3, 56);
            var b40 = Rol(a44 ^ d4, 14);

            // chi
            a00 = Chi(b00, b10, b20); a10 = Chi(b10, b20, b30); a20 = Chi(b20, b30, b40); a30 = Chi(b30, b40, b00); a40 = Chi(b40, b00, b10);
            a01 = Chi(b01, b11, b21); a11 = Chi(b11, b21, b31); a21 = Chi(b21, b31, b41); a31 = Chi(b31, b41, b01); a41 = Chi(b41, b01, b11);
            a02 = Chi(b02, b12, b22); a12 = Chi(b12, b22, b32); a22 = Chi(b22, b32, b42); a32 = Chi(b32, b42, b02); a42 = Chi(b42, b02, b12);
            a03 = Chi(b03, b13, b23); a13 = Chi(b13, b23, b33); a23 = Chi(b23, b33, b43); a33 = Chi(b33, b43, b03); a43 = Chi(b43, b03, b13);
            a04 = Chi(b04, b14, b24); a14 = Chi(b14, b24, b34); a24 = Chi(b24, b34, b44); a34 = Chi(b34, b44, b04); a44 = Chi(b44, b04, b14);

            // iota
            a00 ^= Vector256.Create(constants[round]);
        }

        s[0] = a00; s[1] = a10; s[2] = a20; s[3] = a30; s[4] = a40;
        s[5] = a01; s[6] = a11; s[7] = a21; s[8] = a31; s[9] = a41;
        s[10] = a02; s[11] = a12; s[12] = a22; s[13] = a32; s[14] = a42;
        s[15] = a03; s[16] = a13; s[17] = a23; s[18] = a33; s[19] = a43;
        s[20] = a04; s[21] = a14; s[22] = a24; s[23] = a34; s[24] = a44;
    }
}
