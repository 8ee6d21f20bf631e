using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Org.BouncyCastle.Math;
using Sequencer.Core.Storage;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>The public key file: what every node and every light client may know.</summary>
public sealed record GroupKeyFile
{
    /// <summary>The key epoch.</summary>
    [JsonPropertyName("epoch")] public ulong Epoch { get; init; }

    /// <summary>t.</summary>
    [JsonPropertyName("threshold")] public int Threshold { get; init; }

    /// <summary>The group public key, 33-byte compressed, 0x hex.</summary>
    [JsonPropertyName("groupKey")] public string GroupKey { get; init; } = string.Empty;

    /// <summary>Member id to verification share PK_i, 0x hex.</summary>
    [JsonPropertyName("verificationShares")] public IReadOnlyDictionary<string, string> VerificationShares { get; init; } = new Dictionary<string, string>();

    /// <summary>How the key was made: "dealer" or "dkg".</summary>
    [JsonPropertyName("origin")] public string Origin { get; init; } = "dealer";

    /// <summary>The group key as a point.</summary>
    public GroupKey ToGroupKey()
    {
        var shares = VerificationShares.ToDictionary(p => int.Parse(p.Key, CultureInfo.InvariantCulture), p => Secp256k1.DeserializeElement(Hex(p.Value)));
        var group = Secp256k1.DeserializeElement(Hex(GroupKey));
        if (Threshold < 1 || Threshold > shares.Count)
            throw new FormatException($"threshold {Threshold} does not fit {shares.Count} members");
        return new GroupKey(group, Threshold, shares, []);
    }

    /// <summary>The file of a group key.</summary>
    public static GroupKeyFile From(GroupKey group, ulong epoch, string origin)
    {
        ArgumentNullException.ThrowIfNull(group);
        return new GroupKeyFile
        {
            Epoch = epoch,
            Threshold = group.Threshold,
            GroupKey = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(group.PublicKey)),
            VerificationShares = group.VerificationShares.ToDictionary(p => p.Key.ToString(CultureInfo.InvariantCulture), p => "0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(p.Value))),
            Origin = origin,
        };
    }

    internal static byte[] Hex(string text) => HexBytes(text);

    /// <summary>Decodes 0x-prefixed hex.</summary>
    /// <exception cref="FormatException">Not 0x-prefixed hex.</exception>
    public static byte[] HexBytes(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? Convert.FromHexString(text.AsSpan(2)) : throw new FormatException($"\"{text}\" is not 0x-prefixed hex");
    }
}

/// <summary>A member's secret share file. Written with owner-only permissions; its secret never reaches a log line.</summary>
public sealed record ShareFile
{
    /// <summary>The key epoch.</summary>
    [JsonPropertyName("epoch")] public ulong Epoch { get; init; }

    /// <summary>The member id (the FROST identifier).</summary>
    [JsonPropertyName("identifier")] public int Identifier { get; init; }

    /// <summary>The secret share, 32 bytes, 0x hex.</summary>
    [JsonPropertyName("share")] public string Share { get; init; } = string.Empty;

    /// <summary>The group key this share belongs to, for a consistency check at load.</summary>
    [JsonPropertyName("groupKey")] public string GroupKey { get; init; } = string.Empty;

    /// <inheritdoc/>
    public override string ToString() => $"ShareFile(epoch {Epoch}, member {Identifier}, redacted)";

    /// <summary>The share.</summary>
    public KeyShare ToKeyShare() => new(Identifier, Secp256k1.DeserializeScalar(GroupKeyFile.Hex(Share)));
}

/// <summary>Reads and writes key files.</summary>
public static class KeyFiles
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Writes the group key file (world-readable: it is public).</summary>
    public static void WriteGroup(string path, GroupKeyFile file)
    {
        // Through a synced temporary and a rename, then the directory synced: the group file's presence says the key
        // directory is complete, so it must never be there half written, nor vanish after a power loss.
        DurableFiles.WriteAllText(path, JsonSerializer.Serialize(file, Json), secret: false);
    }

    /// <summary>Reads a group key file.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid group key file.</exception>
    public static GroupKeyFile ReadGroup(string path)
    {
        try
        {
            var file = JsonSerializer.Deserialize<GroupKeyFile>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path} is empty");
            file.ToGroupKey();
            return file;
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new InvalidDataException($"{path} is not a valid group key file: {e.Message}", e);
        }
    }

    /// <summary>Writes a share file readable and writable by its owner only (mode 0600), created fresh.</summary>
    public static void WriteShare(string path, ShareFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var stream = new FileStream(path, options);
        JsonSerializer.Serialize(stream, file, Json);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Reads a share file; refuses one that others can read, and one of another group key.</summary>
    /// <exception cref="InvalidDataException">The file is invalid, too widely readable, or of another key.</exception>
    public static KeyShare ReadShare(string path, GroupKey group)
    {
        ArgumentNullException.ThrowIfNull(group);
        if (!OperatingSystem.IsWindows())
        {
            var mode = File.GetUnixFileMode(path);
            if ((mode & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite)) != 0)
                throw new InvalidDataException($"{path} is readable by others (mode {Convert.ToString((int)mode, 8)}): a secret share must be owner-only (chmod 600)");
        }

        ShareFile file;
        try
        {
            file = JsonSerializer.Deserialize<ShareFile>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path} is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not a valid share file: {e.Message}", e);
        }

        KeyShare share;
        try
        {
            share = file.ToKeyShare();
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"{path} holds no valid share: {e.Message}", e);
        }

        if (!group.VerificationShares.TryGetValue(share.Identifier, out var expected) || !expected.Equals(Secp256k1.BaseMultiply(share.Secret)))
            throw new InvalidDataException($"{path}: the share of member {share.Identifier} does not match the group key's verification share");
        return share;
    }

    /// <summary>The group key file's name in a key directory.</summary>
    public const string GroupFileName = "group.json";

    /// <summary>Member <paramref name="id"/>'s share file name in a key directory.</summary>
    public static string ShareFileName(int id) => $"share-{id.ToString(CultureInfo.InvariantCulture)}.json";

    /// <summary>
    /// Trusted-dealer key generation into <paramref name="directory"/>: <see cref="GroupFileName"/> and one owner-only
    /// share file per member 1..<paramref name="members"/>. Never overwrites a share file.
    /// </summary>
    /// <returns>The group key file written.</returns>
    /// <exception cref="IOException">A share file exists already, or the directory is not writable.</exception>
    public static GroupKeyFile WriteDealerKeys(string directory, int threshold, int members, ulong epoch = 1)
    {
        var info = Directory.CreateDirectory(directory);
        var (shares, group) = TrustedDealer.Generate(threshold, members);
        var groupFile = GroupKeyFile.From(group, epoch, "dealer");
        foreach (var share in shares)
        {
            WriteShare(Path.Combine(info.FullName, ShareFileName(share.Identifier)), new ShareFile
            {
                Epoch = epoch,
                Identifier = share.Identifier,
                Share = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeScalar(share.Secret)),
                GroupKey = groupFile.GroupKey,
            });
        }

        // The group file last: its presence says the directory is complete.
        DurableFiles.SyncDirectory(info.FullName);
        WriteGroup(Path.Combine(info.FullName, GroupFileName), groupFile);
        return groupFile;
    }

    /// <summary>
    /// Writes one member's key files into <paramref name="directory"/> (a DKG participant's own result): the share
    /// (owner-only, replacing an earlier attempt's through a rename) and then the group key file.
    /// </summary>
    public static GroupKeyFile WriteMemberKeys(string directory, KeyShare share, GroupKey group, ulong epoch, string origin)
    {
        ArgumentNullException.ThrowIfNull(share);
        var info = Directory.CreateDirectory(directory);
        var groupFile = GroupKeyFile.From(group, epoch, origin);
        var path = Path.Combine(info.FullName, ShareFileName(share.Identifier));
        var temporary = path + ".tmp";
        File.Delete(temporary);
        WriteShare(temporary, new ShareFile
        {
            Epoch = epoch,
            Identifier = share.Identifier,
            Share = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeScalar(share.Secret)),
            GroupKey = groupFile.GroupKey,
        });
        File.Move(temporary, path, overwrite: true);
        DurableFiles.SyncDirectory(info.FullName);
        WriteGroup(Path.Combine(info.FullName, GroupFileName), groupFile);
        return groupFile;
    }

    /// <summary>Parses a 0x point.</summary>
    public static ECPoint ParsePoint(string text) => Secp256k1.DeserializeElement(GroupKeyFile.Hex(text));

    /// <summary>Parses a 0x scalar.</summary>
    public static BigInteger ParseScalar(string text) => Secp256k1.DeserializeScalar(GroupKeyFile.Hex(text));
}
