using Sequencer.Core.Encoding;
using Sequencer.Node.Configuration;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>A node's key material: the group key (public) and, on a signer, its secret share.</summary>
/// <param name="File">The group key file.</param>
/// <param name="Group">The group key.</param>
/// <param name="Share">This node's share, or null on a node that only verifies.</param>
/// <param name="Bootstrap">The KeyEpoch entry the leader proposes when the log has no key epoch yet.</param>
public sealed record SigningKeys(GroupKeyFile File, GroupKey Group, KeyShare? Share, KeyEpochCommand Bootstrap)
{
    /// <inheritdoc/>
    public override string ToString() => $"SigningKeys(epoch {File.Epoch}, {Group.Threshold} of {Group.VerificationShares.Count}, share {(Share is null ? "none" : "redacted")})";

    /// <summary>Reads the files named by <paramref name="options"/>; null when signing is not configured.</summary>
    /// <exception cref="InvalidDataException">A file is unreadable, invalid, too widely readable, or does not fit this node.</exception>
    public static SigningKeys? Load(NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.GroupKeyFile is not { } groupPath)
            return null;
        GroupKeyFile file;
        GroupKey group;
        KeyShare? share = null;
        try
        {
            file = KeyFiles.ReadGroup(groupPath);
            group = file.ToGroupKey();
            if (options.KeyShareFile is { } sharePath)
                share = KeyFiles.ReadShare(sharePath, group);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            throw new InvalidDataException($"cannot read the key files: {e.Message}", e);
        }

        if (file.Epoch != 1)
            throw new InvalidDataException($"{groupPath} is of key epoch {file.Epoch}: a cluster starts from key epoch 1; later epochs come from rotations (POST /admin/keys/rotate), whose shares each node keeps under its data directory");
        if (share is not null && share.Identifier != options.NodeId)
            throw new InvalidDataException($"the key share belongs to member {share.Identifier}, but this is node {options.NodeId}");
        var memberIds = options.Members.Select(m => m.Id).ToHashSet();
        var strangers = group.VerificationShares.Keys.Where(id => !memberIds.Contains(id)).Order().ToList();
        if (strangers.Count > 0)
            throw new InvalidDataException($"the group key names signers {string.Join(", ", strangers)} that are not members of this cluster");

        var members = group.VerificationShares.Keys.Order().ToList();
        var bootstrap = new KeyEpochCommand
        {
            Epoch = file.Epoch,
            Threshold = group.Threshold,
            GroupKey = Secp256k1.SerializeElement(group.PublicKey),
            Members = members,
            VerificationShares = [.. members.Select(id => Secp256k1.SerializeElement(group.VerificationShares[id]))],
        };
        return new SigningKeys(file, group, share, bootstrap);
    }
}
