using System.Numerics;
using System.Security.Cryptography;
using System.Text;

namespace Sequencer.Checker;

/// <summary>
/// The Schnorr verification equation of RFC 9591's FROST(secp256k1, SHA-256), z*G == R + c*PK with
/// c = H2(R || PK || msg), written here from scratch on <see cref="System.Numerics.BigInteger"/> affine arithmetic:
/// it shares no code with the implementation under test (not even BouncyCastle).
/// </summary>
public static class SchnorrVerifier
{
    private static readonly BigInteger P = BigInteger.Parse("0FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F", System.Globalization.NumberStyles.HexNumber);
    private static readonly BigInteger N = BigInteger.Parse("0FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", System.Globalization.NumberStyles.HexNumber);
    private static readonly (BigInteger X, BigInteger Y)? G = (
        BigInteger.Parse("079BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798", System.Globalization.NumberStyles.HexNumber),
        BigInteger.Parse("0483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8", System.Globalization.NumberStyles.HexNumber));

    /// <summary>True when <paramref name="signature"/> (R 33 bytes, z 32 bytes) verifies over <paramref name="message"/> under <paramref name="publicKey"/>.</summary>
    public static bool Verify(byte[] message, byte[] signature, byte[] publicKey)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(signature);
        ArgumentNullException.ThrowIfNull(publicKey);
        if (signature.Length != 65 || publicKey.Length != 33)
            return false;
        var r = Decompress(signature[..33]);
        var pk = Decompress(publicKey);
        var z = new BigInteger(signature.AsSpan(33), isUnsigned: true, isBigEndian: true);
        if (r is null || pk is null || z >= N)
            return false;
        var c = Challenge([.. signature[..33], .. publicKey, .. message]);
        return Equals(Multiply(G, z), Add(r, Multiply(pk, c)));
    }

    // hash_to_field(R || PK || msg) with expand_message_xmd(SHA-256), DST "FROST-secp256k1-SHA256-v1chal", 48 bytes.
    private static BigInteger Challenge(byte[] input)
    {
        var dst = Encoding.ASCII.GetBytes("FROST-secp256k1-SHA256-v1chal");
        byte[] dstPrime = [.. dst, (byte)dst.Length];
        var b0 = SHA256.HashData([.. new byte[64], .. input, 0, 48, 0, .. dstPrime]);
        var b1 = SHA256.HashData([.. b0, 1, .. dstPrime]);
        var b2 = SHA256.HashData([.. b0.Zip(b1, (a, b) => (byte)(a ^ b)), 2, .. dstPrime]);
        return new BigInteger([.. b1, .. b2[..16]], isUnsigned: true, isBigEndian: true) % N;
    }

    private static (BigInteger X, BigInteger Y)? Decompress(byte[] bytes)
    {
        if (bytes[0] is not (2 or 3))
            return null;
        var x = new BigInteger(bytes.AsSpan(1), isUnsigned: true, isBigEndian: true);
        if (x >= P)
            return null;
        var ySquared = (BigInteger.ModPow(x, 3, P) + 7) % P;
        var y = BigInteger.ModPow(ySquared, (P + 1) / 4, P);
        if (y * y % P != ySquared)
            return null;
        if ((y.IsEven ? 2 : 3) != bytes[0])
            y = P - y;
        return (x, y);
    }

    private static BigInteger Mod(BigInteger value)
    {
        var r = value % P;
        return r.Sign < 0 ? r + P : r;
    }

    private static BigInteger Inverse(BigInteger value) => BigInteger.ModPow(Mod(value), P - 2, P);

    // Jacobian coordinates (X, Y, Z) represent (X/Z^2, Y/Z^3); Z = 0 is the identity. One inversion per result.
    private static (BigInteger X, BigInteger Y, BigInteger Z) Double((BigInteger X, BigInteger Y, BigInteger Z) p)
    {
        if (p.Z.IsZero || p.Y.IsZero)
            return (0, 1, 0);
        var ysq = Mod(p.Y * p.Y);
        var s = Mod(4 * p.X * ysq);
        var m = Mod(3 * p.X * p.X);
        var x = Mod((m * m) - (2 * s));
        var y = Mod((m * (s - x)) - (8 * ysq * ysq));
        var z = Mod(2 * p.Y * p.Z);
        return (x, y, z);
    }

    private static (BigInteger X, BigInteger Y, BigInteger Z) AddJ((BigInteger X, BigInteger Y, BigInteger Z) p, (BigInteger X, BigInteger Y, BigInteger Z) q)
    {
        if (p.Z.IsZero)
            return q;
        if (q.Z.IsZero)
            return p;
        var z1z1 = Mod(p.Z * p.Z);
        var z2z2 = Mod(q.Z * q.Z);
        var u1 = Mod(p.X * z2z2);
        var u2 = Mod(q.X * z1z1);
        var s1 = Mod(p.Y * q.Z * z2z2);
        var s2 = Mod(q.Y * p.Z * z1z1);
        if (u1 == u2)
            return s1 == s2 ? Double(p) : (0, 1, 0);
        var h = Mod(u2 - u1);
        var r = Mod(s2 - s1);
        var hh = Mod(h * h);
        var hhh = Mod(h * hh);
        var v = Mod(u1 * hh);
        var x = Mod((r * r) - hhh - (2 * v));
        var y = Mod((r * (v - x)) - (s1 * hhh));
        var z = Mod(p.Z * q.Z * h);
        return (x, y, z);
    }

    private static (BigInteger X, BigInteger Y)? ToAffine((BigInteger X, BigInteger Y, BigInteger Z) p)
    {
        if (p.Z.IsZero)
            return null;
        var zi = Inverse(p.Z);
        var zi2 = Mod(zi * zi);
        return (Mod(p.X * zi2), Mod(p.Y * zi2 * zi));
    }

    private static (BigInteger X, BigInteger Y)? Add((BigInteger X, BigInteger Y)? a, (BigInteger X, BigInteger Y)? b)
    {
        if (a is null)
            return b;
        if (b is null)
            return a;
        return ToAffine(AddJ((a.Value.X, a.Value.Y, 1), (b.Value.X, b.Value.Y, 1)));
    }

    private static (BigInteger X, BigInteger Y)? Multiply((BigInteger X, BigInteger Y)? point, BigInteger scalar)
    {
        if (point is null)
            return null;
        (BigInteger X, BigInteger Y, BigInteger Z) result = (0, 1, 0);
        var addend = (point.Value.X, point.Value.Y, BigInteger.One);
        while (scalar > 0)
        {
            if (!scalar.IsEven)
                result = AddJ(result, addend);
            addend = Double(addend);
            scalar >>= 1;
        }

        return ToAffine(result);
    }
}
