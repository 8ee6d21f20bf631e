using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Math;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>
/// Encrypts a DKG round two share to its receiver so that it can travel through the replicated log: ECDH between the
/// sender's and the receiver's fresh round one encryption keys, then AES-256-GCM under a key derived (SHA-256) from the
/// shared point, the session context and the (sender, receiver) pair, with those as associated data. Each key pair
/// serves one attempt only, so every derived key encrypts one message (the nonce is fixed). The tag tells a tampered
/// ciphertext apart from a dealer that sent a bad share (which decrypts, then fails the check against its commitment).
/// </summary>
/// <remarks>
/// A 32-byte ciphertext is the earlier format (a SHA-256 pad, no tag): still decrypted, so that a log holding an old
/// key generation replays, but never produced.
/// </remarks>
public static class DkgShareCipher
{
    /// <summary>The length of a ciphertext: the 32-byte share and the 16-byte tag.</summary>
    public const int CiphertextLength = 32 + 16;

    /// <summary>The length of a ciphertext of the earlier, untagged format.</summary>
    public const int LegacyCiphertextLength = 32;

    private static readonly byte[] Domain = Encoding.ASCII.GetBytes(Frost.ContextString + "dkg-share");
    private static readonly byte[] AeadDomain = Encoding.ASCII.GetBytes(Frost.ContextString + "dkg-share-aead");

    /// <summary>Encrypts f_from(to).</summary>
    public static byte[] Encrypt(BigInteger share, BigInteger senderSecret, ECPoint receiverKey, ReadOnlySpan<byte> context, int from, int to)
    {
        var plain = Secp256k1.SerializeScalar(share);
        // ECDH with a secret scalar: the constant-time multiplication.
        var key = Key(Secp256k1.MultiplySecret(receiverKey, senderSecret), context, from, to);
        var output = new byte[CiphertextLength];
        try
        {
            using var aead = new AesGcm(key, 16);
            aead.Encrypt(new byte[12], plain, output.AsSpan(0, 32), output.AsSpan(32), PairContext(context, from, to));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plain);
            CryptographicOperations.ZeroMemory(key);
        }

        return output;
    }

    /// <summary>Decrypts a share addressed to <paramref name="to"/>; null on any failure (see <see cref="Open"/> for why).</summary>
    public static BigInteger? Decrypt(ReadOnlySpan<byte> ciphertext, BigInteger receiverSecret, ECPoint senderKey, ReadOnlySpan<byte> context, int from, int to)
        => Open(ciphertext, receiverSecret, senderKey, context, from, to).Share;

    /// <summary>
    /// Decrypts a share addressed to <paramref name="to"/>: the share, or why there is none (a ciphertext that fails its
    /// tag was tampered with or made for another key; one that decrypts to a non-scalar was made so by its sender).
    /// </summary>
    public static (BigInteger? Share, string? Problem) Open(ReadOnlySpan<byte> ciphertext, BigInteger receiverSecret, ECPoint senderKey, ReadOnlySpan<byte> context, int from, int to)
        => OpenShared(ciphertext, Secp256k1.MultiplySecret(senderKey, receiverSecret), context, from, to);

    /// <summary>
    /// Decrypts a share with the ECDH point itself (the sender's and receiver's keys multiplied): how every node judges a
    /// complaint once the accuser has revealed that point with a <see cref="Dleq"/> proof.
    /// </summary>
    public static (BigInteger? Share, string? Problem) OpenShared(ReadOnlySpan<byte> ciphertext, ECPoint shared, ReadOnlySpan<byte> context, int from, int to)
    {
        ArgumentNullException.ThrowIfNull(shared);
        if (shared.IsInfinity)
            return (null, "the shared point is the identity");
        var plain = new byte[32];
        try
        {
            if (ciphertext.Length == CiphertextLength)
            {
                var key = Key(shared, context, from, to);
                try
                {
                    using var aead = new AesGcm(key, 16);
                    aead.Decrypt(new byte[12], ciphertext[..32], ciphertext[32..], plain, PairContext(context, from, to));
                }
                catch (AuthenticationTagMismatchException)
                {
                    return (null, "the encrypted share fails its authentication tag (tampered with, or not encrypted to this member's key)");
                }
                finally
                {
                    CryptographicOperations.ZeroMemory(key);
                }
            }
            else if (ciphertext.Length == LegacyCiphertextLength)
            {
                var pad = Pad(shared, context, from, to);
                for (var i = 0; i < plain.Length; i++)
                    plain[i] = (byte)(ciphertext[i] ^ pad[i]);
            }
            else
            {
                return (null, $"the encrypted share is {ciphertext.Length} bytes, not {CiphertextLength}");
            }

            var value = new BigInteger(1, plain);
            return value.CompareTo(Secp256k1.Order) >= 0 ? (null, "the encrypted share does not decrypt to a scalar") : (value, null);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plain);
        }
    }

    private static byte[] Key(ECPoint shared, ReadOnlySpan<byte> context, int from, int to)
    {
        if (shared.IsInfinity)
            throw new ArgumentException("the encryption key is the identity");
        byte[] input = [.. AeadDomain, .. Secp256k1.SerializeElement(shared), .. PairContext(context, from, to)];
        return SHA256.HashData(input);
    }

    /// <summary>The session context followed by two member ids, big-endian: what binds a share, or a complaint's proof, to its pair.</summary>
    public static byte[] PairContext(ReadOnlySpan<byte> context, int from, int to)
    {
        var data = new byte[context.Length + 8];
        context.CopyTo(data);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(context.Length), from);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(context.Length + 4), to);
        return data;
    }

    private static byte[] Pad(ECPoint shared, ReadOnlySpan<byte> context, int from, int to)
    {
        if (shared.IsInfinity)
            throw new ArgumentException("the encryption key is the identity");
        Span<byte> ids = stackalloc byte[8];
        BinaryPrimitives.WriteInt32BigEndian(ids, from);
        BinaryPrimitives.WriteInt32BigEndian(ids[4..], to);
        byte[] input = [.. Domain, .. Secp256k1.SerializeElement(shared), .. context, .. ids];
        return SHA256.HashData(input);
    }
}
