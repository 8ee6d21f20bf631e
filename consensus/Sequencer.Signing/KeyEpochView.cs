using Sequencer.Core.Storage;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Signing;

/// <summary>A key epoch with its keys parsed.</summary>
/// <param name="Record">The stored form.</param>
/// <param name="Group">The group key and verification shares.</param>
public sealed record KeyEpochView(StoredKeyEpoch Record, GroupKey Group)
{
    /// <summary>The epoch.</summary>
    public ulong Epoch => Record.Epoch;

    /// <summary>
    /// Parses and checks a key epoch: valid points, 1 &lt;= t &lt;= n, distinct member ids in 1..255, and any t verification
    /// shares interpolate to the group key. Null when any of it fails.
    /// </summary>
    public static KeyEpochView? Parse(StoredKeyEpoch record)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (record.Members is null || record.VerificationShares is null || record.GroupKey is null || record.Members.Count == 0
            || record.Members.Count != record.VerificationShares.Count || record.Threshold < 1 || record.Threshold > record.Members.Count
            || record.Members.Distinct().Count() != record.Members.Count || record.Members.Any(m => m is < 1 or > 255))
            return null;
        try
        {
            var group = Secp256k1.DeserializeElement(record.GroupKey);
            var shares = new Dictionary<int, ECPoint>();
            for (var i = 0; i < record.Members.Count; i++)
                shares[record.Members[i]] = Secp256k1.DeserializeElement(record.VerificationShares[i]);

            // Lagrange interpolation in the exponent over the first t members must give the group key.
            var subset = record.Members.Take(record.Threshold).ToList();
            var sum = Secp256k1.SumOfMultiplies(null, [.. subset.Select(m => shares[m])], [.. subset.Select(m => Frost.InterpolatingValue(subset, m))]);
            if (!sum.Equals(group))
                return null;
            return new KeyEpochView(record, new GroupKey(group, record.Threshold, shares, []));
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
