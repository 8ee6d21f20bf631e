using System.Numerics;
using System.Security.Cryptography;
using System.Text;

namespace Sequencer.IntegrationTests;

/// <summary>
/// The Schnorr verification equation of RFC 9591's FROST(secp256k1, SHA-256), z*G == R + c*PK with
/// c = H2(R || PK || msg), written here from scratch on <see cref="System.Numerics.BigInteger"/> affine arithmetic:
/// it shares no code with the implementation under test (not even BouncyCastle).
/// </summary>
internal static class IndependentSchnorr
{
    private static readonly BigInteger P = BigInteger.Parse("0FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F", System.Globalization.NumberStyles.HexNumber);
    private static readonly BigInteger N = BigInteger.Parse("0FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", System.Globalization.NumberStyles.HexNumber);
    private static readonly (BigInteger X, BigInteger Y)? G = (
        BigInteger.Parse("079BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798", System.Globalization.NumberStyles.HexNumber),
        BigInteger.Parse("0483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8", System.Globalization.NumberStyles.HexNumber));

    /// <summary>True when <paramref name="signature"/> (R 33 bytes, z 32 bytes) verifies over <paramref name="message"/> under <paramref name="publicKey"/>.</summary>
    public static bool Verify(byte[] message, byte[] signature, byte[] publicKey)
    {
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

    private static BigInteger Mod(BigInteger value) => ((value % P) + P) % P;

    private static BigInteger Inverse(BigInteger value) => BigInteger.ModPow(Mod(value), P - 2, P);

    private static (BigInteger X, BigInteger Y)? Add((BigInteger X, BigInteger Y)? a, (BigInteger X, BigInteger Y)? b)
    {
        if (a is null)
            return b;
        if (b is null)
            return a;
        var (x1, y1) = a.Value;
        var (x2, y2) = b.Value;
        BigInteger lambda;
        if (x1 == x2)
        {
            if (Mod(y1 + y2) == 0)
                return null;
            lambda = Mod(3 * x1 * x1 * Inverse(2 * y1));
        }
        else
        {
            lambda = Mod((y2 - y1) * Inverse(x2 - x1));
        }

        var x3 = Mod((lambda * lambda) - x1 - x2);
        return (x3, Mod((lambda * (x1 - x3)) - y1));
    }

    private static (BigInteger X, BigInteger Y)? Multiply((BigInteger X, BigInteger Y)? point, BigInteger scalar)
    {
        (BigInteger X, BigInteger Y)? result = null;
        var addend = point;
        while (scalar > 0)
        {
            if (!scalar.IsEven)
                result = Add(result, addend);
            addend = Add(addend, addend);
            scalar >>= 1;
        }

        return result;
    }
}
