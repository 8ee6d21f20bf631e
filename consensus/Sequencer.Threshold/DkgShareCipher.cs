using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Math;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>
/// Encrypts a DKG round two share to its receiver so that it can travel through the replicated log: ECDH between the
/// sender's and the receiver's fresh round one encryption keys, a SHA-256 pad bound to the session context and the
/// (sender, receiver) pair, XOR. Each key pair is used for one attempt only, so every pad is used once. Integrity
/// needs no MAC here: the receiver checks the decrypted share against the sender's public commitment.
/// </summary>
public static class DkgShareCipher
{
    private static readonly byte[] Domain = Encoding.ASCII.GetBytes(Frost.ContextString + "dkg-share");

    /// <summary>Encrypts f_from(to).</summary>
    public static byte[] Encrypt(BigInteger share, BigInteger senderSecret, ECPoint receiverKey, ReadOnlySpan<byte> context, int from, int to)
    {
        var plain = Secp256k1.SerializeScalar(share);
        // ECDH with a secret scalar: the constant-time multiplication.
        var pad = Pad(Secp256k1.MultiplySecret(receiverKey, senderSecret), context, from, to);
        for (var i = 0; i < plain.Length; i++)
            plain[i] ^= pad[i];
        return plain;
    }

    /// <summary>Decrypts a share addressed to <paramref name="to"/>; null when the bytes are not a scalar (a wrong key or a tampered ciphertext).</summary>
    public static BigInteger? Decrypt(ReadOnlySpan<byte> ciphertext, BigInteger receiverSecret, ECPoint senderKey, ReadOnlySpan<byte> context, int from, int to)
    {
        if (ciphertext.Length != 32)
            return null;
        var pad = Pad(Secp256k1.MultiplySecret(senderKey, receiverSecret), context, from, to);
        var plain = new byte[32];
        for (var i = 0; i < plain.Length; i++)
            plain[i] = (byte)(ciphertext[i] ^ pad[i]);
        var value = new BigInteger(1, plain);
        return value.CompareTo(Secp256k1.Order) >= 0 ? null : value;
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
