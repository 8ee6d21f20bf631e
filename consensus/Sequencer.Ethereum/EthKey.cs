using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.EC;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Org.BouncyCastle.Math.EC;
using Org.BouncyCastle.Math.EC.Multiplier;
using BcInteger = Org.BouncyCastle.Math.BigInteger;
using BigInteger = System.Numerics.BigInteger;

namespace Sequencer.Ethereum;

/// <summary>A secp256k1 ECDSA signature as Ethereum carries it: r, s (low-s) and the y parity of the nonce point.</summary>
/// <param name="R">r.</param>
/// <param name="S">s, at most n/2.</param>
/// <param name="YParity">0 or 1: the parity of the nonce point's y, which lets the signer's key be recovered.</param>
public sealed record EcdsaSignature(BigInteger R, BigInteger S, int YParity);

/// <summary>
/// An Ethereum account key: secp256k1 ECDSA over a 32-byte hash, with deterministic nonces (RFC 6979, HMAC-SHA256),
/// low-s signatures (EIP-2) and the recovery id. The private key never appears in <see cref="ToString"/>.
/// </summary>
public sealed class EthKey
{
    internal static readonly X9ECParameters Curve = CustomNamedCurves.GetByName("secp256k1");
    internal static readonly ECDomainParameters Domain = new(Curve);
    private static readonly BcInteger HalfOrder = Curve.N.ShiftRight(1);

    private readonly ECPrivateKeyParameters privateKey;

    private EthKey(BcInteger secret)
    {
        if (secret.SignValue <= 0 || secret.CompareTo(Curve.N) >= 0)
            throw new ArgumentException("a private key is in [1, n)");
        privateKey = new ECPrivateKeyParameters(secret, Domain);
        var point = new FixedPointCombMultiplier().Multiply(Curve.G, secret).Normalize();
        PublicKey = [.. point.AffineXCoord.GetEncoded(), .. point.AffineYCoord.GetEncoded()];
        Address = Address.FromPublicKey(PublicKey);
    }

    /// <summary>The uncompressed public key, x || y (64 bytes).</summary>
    public byte[] PublicKey { get; }

    /// <summary>The account's address.</summary>
    public Address Address { get; }

    /// <summary>A key from its 32 secret bytes.</summary>
    public static EthKey FromBytes(ReadOnlySpan<byte> secret)
        => secret.Length == 32 ? new EthKey(new BcInteger(1, secret)) : throw new ArgumentException("a private key is 32 bytes", nameof(secret));

    /// <summary>A key from 0x-prefixed hex.</summary>
    public static EthKey FromHex(string hex) => FromBytes(EthHex.ToBytes(hex.Trim()));

    /// <summary>A new random key.</summary>
    public static EthKey Generate()
    {
        while (true)
        {
            var bytes = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
            var value = new BcInteger(1, bytes);
            if (value.SignValue > 0 && value.CompareTo(Curve.N) < 0)
                return new EthKey(value);
        }
    }

    /// <summary>Signs a 32-byte hash (RFC 6979 nonce, low s).</summary>
    public EcdsaSignature Sign(ReadOnlySpan<byte> hash)
    {
        if (hash.Length != 32)
            throw new ArgumentException("ECDSA here signs a 32-byte hash", nameof(hash));
        var signer = new ECDsaSigner(new HMacDsaKCalculator(new Sha256Digest()));
        signer.Init(true, privateKey);
        var parts = signer.GenerateSignature(hash.ToArray());
        var (r, s) = (parts[0], parts[1]);
        if (s.CompareTo(HalfOrder) > 0)
            s = Curve.N.Subtract(s);
        for (var parity = 0; parity < 2; parity++)
        {
            var signature = new EcdsaSignature(ToSystem(r), ToSystem(s), parity);
            if (Recover(hash, signature) is { } recovered && recovered.AsSpan().SequenceEqual(PublicKey))
                return signature;
        }

        // r is the x of the nonce point reduced mod n; when that point's x was at least n (probability about 2^-128)
        // no parity recovers the key, and Ethereum cannot carry the signature.
        throw new InvalidOperationException("the signature's nonce point cannot be recovered from r; sign again with another message");
    }

    /// <summary>
    /// The uncompressed public key (x || y) that made <paramref name="signature"/> over <paramref name="hash"/>, or
    /// null when none can have (r or s out of range, or r is not the x of a curve point).
    /// </summary>
    public static byte[]? Recover(ReadOnlySpan<byte> hash, EcdsaSignature signature)
    {
        ArgumentNullException.ThrowIfNull(signature);
        if (hash.Length != 32 || signature.YParity is not (0 or 1))
            return null;
        var n = Curve.N;
        var r = ToBouncy(signature.R);
        var s = ToBouncy(signature.S);
        if (r.SignValue <= 0 || r.CompareTo(n) >= 0 || s.SignValue <= 0 || s.CompareTo(n) >= 0)
            return null;
        // R from r and the parity; then Q = r^-1 (s R - e G) = u2 R + u1 G, one interleaved multiplication on the
        // repository's own secp256k1 arithmetic (Sequencer.Threshold: 5x52 field, GLV endomorphism, a fixed-base table
        // for G), about twice as fast as BouncyCastle's generic curve code.
        ECPoint point;
        try
        {
            var x = new byte[33];
            x[0] = (byte)(2 + signature.YParity);
            var rBytes = r.ToByteArrayUnsigned();
            rBytes.CopyTo(x, 33 - rBytes.Length);
            point = Sequencer.Threshold.Secp256k1.DeserializeElement(x);
        }
        catch (FormatException)
        {
            return null;
        }

        var e = new BcInteger(1, hash).Mod(n);
        var rInverse = r.ModInverse(n);
        var q = Sequencer.Threshold.Secp256k1.SumOfMultiplies(n.Subtract(e).Multiply(rInverse).Mod(n), [point], [s.Multiply(rInverse).Mod(n)]).Normalize();
        if (q.IsInfinity)
            return null;
        return [.. q.AffineXCoord.GetEncoded(), .. q.AffineYCoord.GetEncoded()];
    }

    /// <summary>The address that made <paramref name="signature"/> over <paramref name="hash"/>, or null.</summary>
    public static Address? RecoverAddress(ReadOnlySpan<byte> hash, EcdsaSignature signature)
        => Recover(hash, signature) is { } key ? Address.FromPublicKey(key) : null;

    /// <summary>True when s is at most n/2 (EIP-2).</summary>
    public static bool IsLowS(BigInteger s) => s.Sign > 0 && ToBouncy(s).CompareTo(HalfOrder) <= 0;

    /// <inheritdoc/>
    public override string ToString() => $"EthKey({Address})";

    internal static BigInteger ToSystem(BcInteger value) => new(value.ToByteArrayUnsigned(), isUnsigned: true, isBigEndian: true);

    internal static BcInteger ToBouncy(BigInteger value) => value.Sign < 0 ? throw new ArgumentOutOfRangeException(nameof(value)) : new BcInteger(1, EthHex.Unsigned(value));
}
