using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Math;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>
/// One FROST signing session (one message, one signer set, one commitment each), with the values every step shares
/// computed once: the binding factors, the group commitment R, the challenge c and each signer's Lagrange
/// coefficient. Signing, share verification and aggregation then cost a few point multiplications each.
/// </summary>
/// <remarks>The results equal <see cref="Frost.Sign"/>, <see cref="Frost.VerifyShare"/> and <see cref="Frost.Aggregate"/>.</remarks>
public sealed class FrostSession
{
    private readonly IReadOnlyDictionary<int, BigInteger> bindingFactors;
    private readonly Dictionary<int, NonceCommitment> byIdentifier;
    private readonly Dictionary<int, BigInteger> lambdas;

    /// <summary>Precomputes the session.</summary>
    /// <exception cref="ArgumentException">The commitments are not sorted by identifier, or repeat one.</exception>
    public FrostSession(ECPoint groupPublicKey, IReadOnlyList<NonceCommitment> commitments, ReadOnlySpan<byte> message)
    {
        ArgumentNullException.ThrowIfNull(groupPublicKey);
        ArgumentNullException.ThrowIfNull(commitments);
        if (commitments.Count == 0)
            throw new ArgumentException("a session has at least one signer", nameof(commitments));
        GroupPublicKey = groupPublicKey;
        Commitments = commitments;
        Message = message.ToArray();
        bindingFactors = Frost.ComputeBindingFactors(groupPublicKey, commitments, message);
        // R = Σ D_i + Σ E_i * ρ_i as one multi-scalar multiplication (public values: variable time).
        GroupCommitment = Frost.ComputeGroupCommitment(commitments, bindingFactors);
        Challenge = Frost.ComputeChallenge(GroupCommitment, groupPublicKey, message);
        byIdentifier = commitments.ToDictionary(c => c.Identifier);
        lambdas = LagrangeCoefficients([.. commitments.Select(c => c.Identifier)]);
    }

    /// <summary>The most sessions <see cref="Shared"/> keeps (a leader has a few in flight).</summary>
    private const int SharedCacheSize = 64;

    private static readonly ConcurrentDictionary<string, FrostSession> SharedCache = new();

    /// <summary>
    /// The session for these inputs, computed once per process: on the leader, its coordinator (which aggregates) and
    /// its own signer (which signs) each build the session from the same head and commitments, and would otherwise
    /// each compute the group commitment, a multi-scalar multiplication. Keyed by a SHA-256 of every input.
    /// </summary>
    /// <exception cref="ArgumentException">The commitments are not sorted by identifier, or repeat one.</exception>
    public static FrostSession Shared(ECPoint groupPublicKey, IReadOnlyList<NonceCommitment> commitments, ReadOnlySpan<byte> message)
    {
        ArgumentNullException.ThrowIfNull(groupPublicKey);
        ArgumentNullException.ThrowIfNull(commitments);
        var key = Convert.ToHexString(SHA256.HashData([.. Secp256k1.SerializeElement(groupPublicKey), .. SHA256.HashData(message), .. Frost.EncodeCommitmentList(commitments)]));
        if (SharedCache.TryGetValue(key, out var cached))
            return cached;
        var session = new FrostSession(groupPublicKey, commitments, message);
        if (SharedCache.Count >= SharedCacheSize)
            SharedCache.Clear();
        SharedCache.TryAdd(key, session);
        return session;
    }

    /// <summary>The most signer sets whose Lagrange coefficients are kept (a consortium signs with a few sets).</summary>
    private const int LagrangeCacheSize = 256;

    private static readonly ConcurrentDictionary<string, Dictionary<int, BigInteger>> LagrangeCache = new();

    /// <summary>
    /// Each identifier's Lagrange coefficient over <paramref name="identifiers"/>: public values that depend on the
    /// signer set only, so they are computed once per set (two modular inversions each, about 10 us a session).
    /// </summary>
    private static Dictionary<int, BigInteger> LagrangeCoefficients(List<int> identifiers)
    {
        var key = string.Join(',', identifiers);
        if (LagrangeCache.TryGetValue(key, out var cached))
            return cached;
        var computed = identifiers.ToDictionary(i => i, i => Frost.InterpolatingValue(identifiers, i));
        if (LagrangeCache.Count < LagrangeCacheSize)
            LagrangeCache.TryAdd(key, computed);
        return computed;
    }

    /// <summary>The group public key.</summary>
    public ECPoint GroupPublicKey { get; }

    /// <summary>The signers' commitments, ascending by identifier.</summary>
    public IReadOnlyList<NonceCommitment> Commitments { get; }

    /// <summary>The message.</summary>
    public byte[] Message { get; }

    /// <summary>R.</summary>
    public ECPoint GroupCommitment { get; }

    /// <summary>c = H2(R || PK || msg).</summary>
    public BigInteger Challenge { get; }

    /// <summary>Round two for <paramref name="share"/>'s owner.</summary>
    /// <param name="share">The signer's key share.</param>
    /// <param name="nonces">Its nonce pair for this session.</param>
    /// <param name="commitment">
    /// The commitment of <paramref name="nonces"/> as the signer stored it when it made them; null to recompute it
    /// (two base multiplications). Either way it must be the one the session names for this signer.
    /// </param>
    /// <exception cref="ArgumentException">The owner is not a signer of the session, or the nonces are not the ones its commitment names.</exception>
    public BigInteger Sign(KeyShare share, SigningNonces nonces, NonceCommitment? commitment = null)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentNullException.ThrowIfNull(nonces);
        if (!byIdentifier.TryGetValue(share.Identifier, out var mine))
            throw new ArgumentException($"participant {share.Identifier} is not a signer of this session");
        var expected = commitment ?? Frost.CommitmentOf(share.Identifier, nonces);
        if (!mine.Hiding.Equals(expected.Hiding) || !mine.Binding.Equals(expected.Binding))
            throw new ArgumentException($"the session holds other commitments for participant {share.Identifier} than its nonces");
        return nonces.Hiding
            .Add(nonces.Binding.Multiply(bindingFactors[share.Identifier]))
            .Add(lambdas[share.Identifier].Multiply(share.Secret).Multiply(Challenge))
            .Mod(Secp256k1.Order);
    }

    /// <summary>verify_signature_share: G * z_i == D_i + E_i * ρ_i + PK_i * (c * λ_i).</summary>
    public bool VerifyShare(int identifier, ECPoint publicShare, BigInteger share)
    {
        ArgumentNullException.ThrowIfNull(publicShare);
        if (share is null || share.SignValue < 0 || share.CompareTo(Secp256k1.Order) >= 0 || !byIdentifier.TryGetValue(identifier, out var mine))
            return false;
        // G * z_i - E_i * ρ_i - PK_i * (c * λ_i) == D_i, as one multi-scalar multiplication.
        var order = Secp256k1.Order;
        return Secp256k1.IsSumOfMultiplies(mine.Hiding, share, [mine.Binding, publicShare],
            [order.Subtract(bindingFactors[identifier]).Mod(order), order.Subtract(Challenge.Multiply(lambdas[identifier]).Mod(order)).Mod(order)]);
    }

    /// <summary>aggregate: (R, Σ z_i) over one share per signer.</summary>
    public FrostSignature Aggregate(IEnumerable<BigInteger> shares)
    {
        ArgumentNullException.ThrowIfNull(shares);
        var z = BigInteger.Zero;
        foreach (var share in shares)
            z = z.Add(share);
        return new FrostSignature(GroupCommitment, z.Mod(Secp256k1.Order));
    }
}

/// <summary>
/// A Schnorr proof that a message comes from the holder of a secret key share: a signer authenticates what it
/// publishes (its nonce commitments, its DKG confirmation) with its share, checked against its public verification
/// share. Domain-separated from batch signatures: the signed bytes are SHA-256 of a domain tag and the payload, never
/// a 32-byte batch commitment under the group key.
/// </summary>
public static class SignerProof
{
    /// <summary>The encoded length: R (33) then z (32).</summary>
    public const int Length = Secp256k1.ElementLength + Secp256k1.ScalarLength;

    /// <summary>Signs <paramref name="payload"/> under <paramref name="domain"/> with <paramref name="secret"/>.</summary>
    public static byte[] Sign(string domain, ReadOnlySpan<byte> payload, BigInteger secret)
        => Frost.SignSingle(Digest(domain, payload), secret).Encode();

    /// <summary>True when <paramref name="proof"/> is a valid proof over <paramref name="payload"/> under <paramref name="domain"/> by the owner of <paramref name="publicKey"/>.</summary>
    public static bool Verify(string domain, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> proof, ECPoint publicKey)
    {
        ArgumentNullException.ThrowIfNull(publicKey);
        if (proof.Length != Length)
            return false;
        try
        {
            return Frost.Verify(Digest(domain, payload), FrostSignature.Decode(proof), publicKey);
        }
        catch (FormatException)
        {
            return false;
        }
    }

    private static byte[] Digest(string domain, ReadOnlySpan<byte> payload)
    {
        ArgumentException.ThrowIfNullOrEmpty(domain);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes("sequencer-cluster/signer-proof/v1/" + domain));
        hash.AppendData([0]);
        hash.AppendData(payload);
        // 33 bytes (a leading domain byte) so that a proof can never be mistaken for a signature over a 32-byte commitment.
        return [0xA5, .. hash.GetHashAndReset()];
    }
}
