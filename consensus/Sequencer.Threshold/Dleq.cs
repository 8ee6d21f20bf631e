using System.Text;
using Org.BouncyCastle.Math;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>
/// A Chaum-Pedersen proof of discrete-log equality: the prover knows x with <c>A = G·x</c> and <c>S = B·x</c>, and
/// shows it without revealing x. A DKG complaint carries one: the accuser reveals the ECDH point S it shares with the
/// accused (A is the accuser's round one encryption key, B the accused's) and proves S is the true one, so that every
/// node can decrypt the disputed share itself and judge who lied. Non-interactive (Fiat-Shamir, FROST's
/// expand_message_xmd with a domain of its own), bound to the caller's context.
/// </summary>
public static class Dleq
{
    /// <summary>The proof's length: the challenge c and the response z, 32-byte scalars.</summary>
    public const int ProofLength = 64;

    private static readonly byte[] Dst = Encoding.ASCII.GetBytes(Frost.ContextString + "dleq");

    /// <summary>Proves log_G(G·<paramref name="secret"/>) = log_B(<paramref name="b"/>·<paramref name="secret"/>); returns S = B·x and the proof.</summary>
    public static (ECPoint Shared, byte[] Proof) Prove(BigInteger secret, ECPoint b, ReadOnlySpan<byte> context)
    {
        ArgumentNullException.ThrowIfNull(secret);
        ArgumentNullException.ThrowIfNull(b);
        if (b.IsInfinity || secret.SignValue <= 0 || secret.CompareTo(Secp256k1.Order) >= 0)
            throw new ArgumentException("the base is the identity or the secret is not in [1, q)");
        var a = Secp256k1.BaseMultiply(secret);
        var shared = Secp256k1.MultiplySecret(b, secret);
        var k = Secp256k1.RandomScalar();
        var r1 = Secp256k1.BaseMultiply(k);
        var r2 = Secp256k1.MultiplySecret(b, k);
        var c = Challenge(context, a, b, shared, r1, r2);
        var z = k.Add(c.Multiply(secret)).Mod(Secp256k1.Order);
        return (shared, [.. Secp256k1.SerializeScalar(c), .. Secp256k1.SerializeScalar(z)]);
    }

    /// <summary>True when <paramref name="proof"/> shows that log_G(<paramref name="a"/>) = log_B(<paramref name="shared"/>) (public values: variable time).</summary>
    public static bool Verify(ECPoint a, ECPoint b, ECPoint shared, ReadOnlySpan<byte> proof, ReadOnlySpan<byte> context)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        ArgumentNullException.ThrowIfNull(shared);
        if (proof.Length != ProofLength || a.IsInfinity || b.IsInfinity || shared.IsInfinity)
            return false;
        BigInteger c, z;
        try
        {
            c = Secp256k1.DeserializeScalar(proof[..32]);
            z = Secp256k1.DeserializeScalar(proof[32..]);
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            return false;
        }

        // R1 = G·z − A·c and R2 = B·z − S·c; the challenge must commit to them.
        var minusC = Secp256k1.Order.Subtract(c).Mod(Secp256k1.Order);
        var r1 = Secp256k1.SumOfMultiplies(z, [a], [minusC]);
        var r2 = Secp256k1.SumOfMultiplies(null, [b, shared], [z, minusC]);
        // A point at infinity would let the all-zero proof pass (z = 0 makes both commitments vanish).
        return !r1.IsInfinity && !r2.IsInfinity && Challenge(context, a, b, shared, r1, r2).Equals(c);
    }

    private static BigInteger Challenge(ReadOnlySpan<byte> context, ECPoint a, ECPoint b, ECPoint shared, ECPoint r1, ECPoint r2)
    {
        byte[] input =
        [
            .. context, .. Secp256k1.SerializeElement(a), .. Secp256k1.SerializeElement(b), .. Secp256k1.SerializeElement(shared),
            .. Secp256k1.SerializeElement(r1), .. Secp256k1.SerializeElement(r2),
        ];
        return new BigInteger(1, Frost.ExpandMessageXmd(input, Dst, 48)).Mod(Secp256k1.Order);
    }
}
