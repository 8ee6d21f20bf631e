using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Sequencer.Core.Encoding;

namespace Sequencer.Signing;

/// <summary>
/// DKG messages signed by their senders' long-term identity keys (DESIGN section 5, issue 9): ECDSA P-256 over the
/// domain tag, the chain id and the message's log encoding with the signature field empty. The signature covers every
/// field, round one's encryption key included, so nobody can race a member's round one with an encryption key of its
/// own, and every node checks it at apply: not even the leader can put a message in a member's name into the log.
/// </summary>
public static class DkgIdentity
{
    private static readonly byte[] Domain = Encoding.ASCII.GetBytes("sequencer-cluster/dkg-identity/v1");

    /// <summary>What the sender signs.</summary>
    public static byte[] Payload(IDkgMessage message, ulong chainId)
    {
        ArgumentNullException.ThrowIfNull(message);
        var encoded = LogCommandCodec.Encode(message.WithIdentity([]));
        var payload = new byte[Domain.Length + 8 + encoded.Length];
        Domain.CopyTo(payload, 0);
        BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(Domain.Length), chainId);
        encoded.CopyTo(payload, Domain.Length + 8);
        return payload;
    }

    /// <summary><paramref name="message"/> signed with <paramref name="identityKey"/>.</summary>
    public static IDkgMessage Sign(IDkgMessage message, ulong chainId, ECDsa identityKey)
    {
        ArgumentNullException.ThrowIfNull(identityKey);
        return message.WithIdentity(identityKey.SignData(Payload(message, chainId), HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation));
    }

    /// <summary>True when <paramref name="message"/> is signed by the identity key whose SubjectPublicKeyInfo is <paramref name="publicKey"/>.</summary>
    public static bool Verify(IDkgMessage message, ulong chainId, byte[] publicKey)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(publicKey);
        if (message.Identity.Length != 64)
            return false;
        try
        {
            using var key = ECDsa.Create();
            key.ImportSubjectPublicKeyInfo(publicKey, out _);
            return key.VerifyData(Payload(message, chainId), message.Identity, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        }
        catch (CryptographicException)
        {
            return false;
        }
    }
}
