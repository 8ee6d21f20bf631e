using System.Buffers.Binary;
using Sequencer.Core.Hashing;

namespace Sequencer.Core.Encoding;

/// <summary>
/// What key epoch n signs to hand over to key epoch n + 1 (DESIGN section 5: the L1 contract "accepts a key rotation
/// only when the current key signs it"): keccak256(abi.encode(ROTATION_TAG, chainId, n, n + 1, keccak256(newGroupKey))),
/// exactly the inbox contract's <c>rotateKey</c> message, so that one signature serves the log, the light clients and
/// the L1.
/// </summary>
public static class KeyRotationMessage
{
    /// <summary>The domain tag's preimage (the contract's <c>ROTATION_TAG</c> is its keccak256).</summary>
    public const string Tag = "sequencer-cluster/key-rotation/v1";

    /// <summary>The 32-byte message.</summary>
    public static byte[] Compute(ulong chainId, ulong keyEpoch, ulong newKeyEpoch, ReadOnlySpan<byte> newGroupKey)
    {
        // Five ABI words: the tag, three uint256 (big-endian, left-padded) and the group key's hash.
        var words = new byte[5 * 32];
        Keccak256.Hash(System.Text.Encoding.ASCII.GetBytes(Tag), words.AsSpan(0, 32));
        BinaryPrimitives.WriteUInt64BigEndian(words.AsSpan(32 + 24), chainId);
        BinaryPrimitives.WriteUInt64BigEndian(words.AsSpan(64 + 24), keyEpoch);
        BinaryPrimitives.WriteUInt64BigEndian(words.AsSpan(96 + 24), newKeyEpoch);
        Keccak256.Hash(newGroupKey, words.AsSpan(128, 32));
        return Keccak256.Hash(words).ToArray();
    }
}
