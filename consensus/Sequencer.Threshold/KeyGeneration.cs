using Org.BouncyCastle.Math;
using Org.BouncyCastle.Math.EC;

namespace Sequencer.Threshold;

/// <summary>A participant's secret key share s_i. Secret: never logged; stored with owner-only permissions.</summary>
/// <param name="Identifier">The participant identifier (the member id).</param>
/// <param name="Secret">The share.</param>
public sealed record KeyShare(int Identifier, BigInteger Secret)
{
    /// <inheritdoc/>
    public override string ToString() => $"KeyShare({Identifier}, redacted)";
}

/// <summary>The public side of a key: the group key, the threshold, and each participant's verification share.</summary>
/// <param name="PublicKey">The group public key PK.</param>
/// <param name="Threshold">t: the shares needed to sign.</param>
/// <param name="VerificationShares">PK_i = G * s_i for every participant.</param>
/// <param name="VssCommitment">The Feldman commitment to the polynomial coefficients (its first element is PK).</param>
public sealed record GroupKey(ECPoint PublicKey, int Threshold, IReadOnlyDictionary<int, ECPoint> VerificationShares, IReadOnlyList<ECPoint> VssCommitment);

/// <summary>
/// Shamir sharing with Feldman VSS and the trusted dealer of RFC 9591 appendix C.
/// </summary>
public static class TrustedDealer
{
    /// <summary>trusted_dealer_keygen with a given secret and coefficients (the RFC's test vectors supply them).</summary>
    public static (IReadOnlyList<KeyShare> Shares, GroupKey Group) Generate(BigInteger secret, IReadOnlyList<BigInteger> coefficients, int participants)
    {
        ArgumentNullException.ThrowIfNull(coefficients);
        ArgumentOutOfRangeException.ThrowIfLessThan(participants, coefficients.Count + 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(participants, 255);
        var polynomial = new List<BigInteger> { Secp256k1.Reduce(secret) };
        polynomial.AddRange(coefficients.Select(Secp256k1.Reduce));
        var shares = new List<KeyShare>();
        for (var i = 1; i <= participants; i++)
            shares.Add(new KeyShare(i, Evaluate(polynomial, BigInteger.ValueOf(i))));
        var commitment = polynomial.Select(Secp256k1.BaseMultiply).ToList();
        return (shares, DeriveGroupInfo(participants, polynomial.Count, commitment));
    }

    /// <summary>A fresh t-of-n key from a random secret and random coefficients.</summary>
    public static (IReadOnlyList<KeyShare> Shares, GroupKey Group) Generate(int threshold, int participants)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threshold, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(threshold, participants);
        var coefficients = Enumerable.Range(0, threshold - 1).Select(_ => Secp256k1.RandomScalar()).ToList();
        return Generate(Secp256k1.RandomScalar(), coefficients, participants);
    }

    /// <summary>polynomial_evaluate with Horner's method.</summary>
    public static BigInteger Evaluate(IReadOnlyList<BigInteger> coefficients, BigInteger x)
    {
        ArgumentNullException.ThrowIfNull(coefficients);
        var value = BigInteger.Zero;
        for (var i = coefficients.Count - 1; i >= 0; i--)
            value = value.Multiply(x).Add(coefficients[i]).Mod(Secp256k1.Order);
        return value;
    }

    /// <summary>vss_verify: G * s_i == Σ_j C_j * i^j.</summary>
    public static bool VerifyShare(KeyShare share, IReadOnlyList<ECPoint> commitment)
    {
        ArgumentNullException.ThrowIfNull(share);
        return Secp256k1.BaseMultiply(share.Secret).Equals(EvaluateCommitment(commitment, share.Identifier));
    }

    /// <summary>derive_group_info: PK = C_0 and PK_i = Σ_j C_j * i^j.</summary>
    public static GroupKey DeriveGroupInfo(int participants, int threshold, IReadOnlyList<ECPoint> commitment)
    {
        ArgumentNullException.ThrowIfNull(commitment);
        if (commitment.Count != threshold)
            throw new ArgumentException($"a commitment to a degree {threshold - 1} polynomial has {threshold} elements, not {commitment.Count}");
        var shares = new Dictionary<int, ECPoint>();
        for (var i = 1; i <= participants; i++)
            shares[i] = EvaluateCommitment(commitment, i);
        return new GroupKey(commitment[0].Normalize(), threshold, shares, commitment);
    }

    /// <summary>secret_share_combine: the secret from at least t shares (tests only; nobody holds it in production).</summary>
    public static BigInteger Combine(IReadOnlyList<KeyShare> shares)
    {
        ArgumentNullException.ThrowIfNull(shares);
        var identifiers = shares.Select(s => s.Identifier).ToList();
        var secret = BigInteger.Zero;
        foreach (var share in shares)
            secret = secret.Add(share.Secret.Multiply(Frost.InterpolatingValue(identifiers, share.Identifier)));
        return secret.Mod(Secp256k1.Order);
    }

    /// <summary>Σ_j C_j * i^j, as one multi-scalar multiplication (public values: variable time).</summary>
    public static ECPoint EvaluateCommitment(IReadOnlyList<ECPoint> commitment, int identifier)
    {
        ArgumentNullException.ThrowIfNull(commitment);
        var x = BigInteger.ValueOf(identifier);
        var power = BigInteger.One;
        var powers = new List<BigInteger>(commitment.Count);
        foreach (var _ in commitment)
        {
            powers.Add(power);
            power = power.Multiply(x).Mod(Secp256k1.Order);
        }

        return Secp256k1.SumOfMultiplies(null, commitment, powers);
    }
}
