using System.Globalization;
using Sequencer.Client;
using Sequencer.Core.Encoding;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.LightClient;

/// <summary>
/// The group keys a light client trusts: the pinned one, and each later key epoch whose hand-over the key before it
/// signed (DESIGN section 5: a key rotation is accepted only when the current key signs it). A node can add keys only
/// by showing such signatures (<see cref="Extend"/>), so a client that pinned key epoch n follows the cluster through
/// any number of rotations with no trust in the node that serves them.
/// </summary>
/// <remarks>Thread-safe.</remarks>
public sealed class KeyChain
{
    private readonly Lock gate = new();
    private readonly SortedDictionary<ulong, ECPoint> keys = [];

    /// <summary>A chain that trusts <paramref name="pinned"/> as the key of <paramref name="pinnedEpoch"/>.</summary>
    public KeyChain(ECPoint pinned, ulong pinnedEpoch)
    {
        ArgumentNullException.ThrowIfNull(pinned);
        ArgumentOutOfRangeException.ThrowIfZero(pinnedEpoch);
        keys[pinnedEpoch] = pinned;
        PinnedEpoch = pinnedEpoch;
    }

    /// <summary>The pinned key's epoch.</summary>
    public ulong PinnedEpoch { get; }

    /// <summary>The newest trusted key epoch.</summary>
    public ulong NewestEpoch
    {
        get
        {
            lock (gate)
                return keys.Keys.Last();
        }
    }

    /// <summary>The trusted key of <paramref name="epoch"/>, or null (older than the pinned one, or no verified hand-over reaches it).</summary>
    public ECPoint? KeyOf(ulong epoch)
    {
        lock (gate)
            return keys.GetValueOrDefault(epoch);
    }

    /// <summary>How the key of <paramref name="epoch"/> is trusted, in words (for a verdict's evidence).</summary>
    public string Describe(ulong epoch)
        => epoch == PinnedEpoch
            ? $"the pinned group key (key epoch {epoch})"
            : $"key epoch {epoch}'s group key, reached from the pinned key epoch {PinnedEpoch} through hand-overs each signed by the key before it";

    /// <summary>
    /// Adds every key epoch above the newest trusted one that <paramref name="epochs"/> (a node's <c>GET /v1/keys</c>)
    /// hands over to in turn: epoch e + 1 is added only when its rotation proof is key epoch e's FROST signature over
    /// the rotation message of <paramref name="chainId"/>, e, e + 1 and its group key (computed here, not taken from
    /// the node). Returns null when every epoch the node lists above the newest trusted one was added, otherwise the
    /// first that was not and why (keys before it stay added).
    /// </summary>
    public string? Extend(ulong chainId, IReadOnlyList<KeyEpochDto> epochs)
    {
        ArgumentNullException.ThrowIfNull(epochs);
        lock (gate)
        {
            var byEpoch = new Dictionary<ulong, KeyEpochDto>();
            foreach (var dto in epochs)
            {
                if (ulong.TryParse(dto.Epoch, NumberStyles.None, CultureInfo.InvariantCulture, out var number))
                    byEpoch.TryAdd(number, dto);
            }

            var newest = keys.Keys.Last();
            var listedAbove = byEpoch.Keys.Where(e => e > newest).Order().ToList();
            foreach (var epoch in listedAbove)
            {
                if (epoch != newest + 1)
                    return $"the node lists key epoch {epoch} but not key epoch {newest + 1}, the hand-over in between";
                var next = byEpoch[epoch];
                if (Rejection(chainId, newest, keys[newest], epoch, next) is { } why)
                    return why;
                keys[epoch] = Secp256k1.DeserializeElement(GroupKeyFile.HexBytes(next.GroupKey));
                newest = epoch;
            }

            return null;
        }
    }

    // Why the rotation proof of `next` does not hand over from `previousKey` (key epoch `from`), or null.
    private static string? Rejection(ulong chainId, ulong from, ECPoint previousKey, ulong epoch, KeyEpochDto next)
    {
        if (next.Rotation is not { } rotation)
            return $"key epoch {epoch} carries no hand-over proof from key epoch {from}";
        try
        {
            if (!ulong.TryParse(rotation.FromEpoch, NumberStyles.None, CultureInfo.InvariantCulture, out var claimedFrom) || claimedFrom != from)
                return $"key epoch {epoch}'s hand-over names key epoch {rotation.FromEpoch}, not {from}";
            var groupKey = GroupKeyFile.HexBytes(next.GroupKey);
            _ = Secp256k1.DeserializeElement(groupKey);
            var message = KeyRotationMessage.Compute(chainId, from, epoch, groupKey);
            var signature = FrostSignature.Decode([.. GroupKeyFile.HexBytes(rotation.Signature.R), .. GroupKeyFile.HexBytes(rotation.Signature.Z)]);
            return Frost.Verify(message, signature, previousKey)
                ? null
                : $"key epoch {epoch}'s hand-over signature does not verify under key epoch {from}'s key (chain {chainId})";
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            return $"key epoch {epoch}'s key or hand-over is malformed: {e.Message}";
        }
    }
}
