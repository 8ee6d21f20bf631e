using System.Globalization;
using Sequencer.Client;

namespace Sequencer.Checker;

/// <summary>
/// INV-ROTATION: the key epochs every node serves (<c>GET /v1/keys</c>) are one history, and each epoch after the
/// pinned one was handed over by the epoch before it: its rotation proof is a FROST signature, under the previous
/// epoch's group key, over the rotation message that the checker computes itself (keccak256 over the ABI words of the
/// tag, chain id, both epochs and the new key's hash; BouncyCastle's Keccak and the checker's own Schnorr verifier,
/// no code shared with the nodes). The verified keys are what the signing invariants check heads against.
/// </summary>
public static class KeyHistoryChecker
{
    /// <summary>The rotation message's tag preimage (DESIGN section 5, the inbox contract's ROTATION_TAG).</summary>
    public const string RotationTag = "sequencer-cluster/key-rotation/v1";

    /// <summary>The message key epoch <paramref name="epoch"/> signs to hand over to <paramref name="epoch"/> + 1.</summary>
    public static byte[] RotationMessage(ulong chainId, ulong epoch, byte[] newGroupKey)
    {
        ArgumentNullException.ThrowIfNull(newGroupKey);
        static byte[] Word(ulong value)
        {
            var word = new byte[32];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(word.AsSpan(24), value);
            return word;
        }

        return CheckerMerkle.Keccak([.. CheckerMerkle.Keccak(System.Text.Encoding.ASCII.GetBytes(RotationTag)), .. Word(chainId), .. Word(epoch), .. Word(epoch + 1),
            .. CheckerMerkle.Keccak(newGroupKey)]);
    }

    /// <summary>
    /// Checks the served key histories from the pinned keys (<paramref name="pinned"/>: epoch to 33-byte group key, as
    /// the key files or the first DKG said) and returns the result with every key epoch's verified group key.
    /// </summary>
    public static (InvariantResult Result, IReadOnlyDictionary<ulong, byte[]> Keys) Check(IReadOnlyList<(int NodeId, IReadOnlyList<KeyEpochDto> Keys)> served, ulong chainId,
        IReadOnlyDictionary<ulong, byte[]> pinned)
    {
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(pinned);
        var problems = new List<string>();
        var keys = new Dictionary<ulong, byte[]>(pinned);

        // One history: every node lists the same epochs with the same keys (a node behind may list fewer).
        var longest = served.OrderByDescending(s => s.Keys.Count).FirstOrDefault().Keys ?? [];
        foreach (var (nodeId, list) in served)
        {
            for (var i = 0; i < list.Count; i++)
            {
                if (i >= longest.Count || list[i].Epoch != longest[i].Epoch || list[i].GroupKey != longest[i].GroupKey)
                    problems.Add($"n{nodeId} lists key epoch {list[i].Epoch} ({list[i].GroupKey}) where another node lists {(i < longest.Count ? $"{longest[i].Epoch} ({longest[i].GroupKey})" : "nothing")}");
            }
        }

        var rotations = 0;
        foreach (var entry in longest)
        {
            if (!ulong.TryParse(entry.Epoch, NumberStyles.None, CultureInfo.InvariantCulture, out var epoch))
            {
                problems.Add($"key epoch \"{entry.Epoch}\" is not a number");
                continue;
            }

            var key = Hex(entry.GroupKey);
            if (keys.TryGetValue(epoch, out var known))
            {
                if (!known.AsSpan().SequenceEqual(key))
                    problems.Add($"key epoch {epoch}: the nodes serve {entry.GroupKey}, not the pinned key");
                continue;
            }

            if (!keys.TryGetValue(epoch - 1, out var previous))
            {
                problems.Add($"key epoch {epoch}: no verified key of epoch {epoch - 1} to check its hand-over against");
                continue;
            }

            if (entry.Rotation is not { } rotation || rotation.FromEpoch != (epoch - 1).ToString(CultureInfo.InvariantCulture))
            {
                problems.Add($"key epoch {epoch} carries no hand-over from key epoch {epoch - 1}");
                continue;
            }

            var message = RotationMessage(chainId, epoch - 1, key);
            if (!Hex(rotation.Message).AsSpan().SequenceEqual(message))
                problems.Add($"key epoch {epoch}: the served rotation message is not the checker's");
            if (!SchnorrVerifier.Verify(message, [.. Hex(rotation.Signature.R), .. Hex(rotation.Signature.Z)], previous))
            {
                problems.Add($"key epoch {epoch}: the hand-over signature does not verify under key epoch {epoch - 1}'s key");
                continue;
            }

            keys[epoch] = key;
            rotations++;
        }

        var detail = problems.Count == 0
            ? $"{served.Count} nodes serve one key history of {longest.Count} epochs; {rotations} hand-overs verify under the key before them"
            : string.Join("; ", problems.Take(10));
        return (new InvariantResult("INV-ROTATION", problems.Count == 0, detail), keys);
    }

    private static byte[] Hex(string value) => Convert.FromHexString(value.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? value.AsSpan(2) : value.AsSpan());
}
