using System.Globalization;

namespace Sequencer.Chaos.Faults;

/// <summary>A small file system mounted over a node's data directory.</summary>
/// <param name="DataDir">The node's data directory (the mount point).</param>
/// <param name="Saved">Where the original contents wait.</param>
/// <param name="SizeMiB">The size of the tmpfs.</param>
public sealed record SmallMount(string DataDir, string Saved, int SizeMiB);

/// <summary>Damage done to a stopped node's files.</summary>
public static class DiskFaults
{
    /// <summary>Applies a WAL fault to the data directory of a stopped node and says what it did.</summary>
    public static string Apply(FaultKind kind, string dataDir, int pick)
    {
        var chunks = WalChunks(dataDir);
        if (chunks.Count == 0)
            return "no WAL chunk to damage";
        var random = new Random(pick);
        var newest = chunks[^1];
        switch (kind)
        {
            case FaultKind.DiskTruncateWalTail:
            {
                var length = new FileInfo(newest).Length;
                var keep = (long)(WrittenBytes(newest) * (0.3 + random.NextDouble() * 0.6));
                using (var stream = new FileStream(newest, FileMode.Open, FileAccess.Write))
                    stream.SetLength(keep);
                return $"truncated {Relative(dataDir, newest)} from {length} to {keep} bytes";
            }

            case FaultKind.DiskFlipBits:
            {
                var written = Math.Max(1, WrittenBytes(newest));
                using var stream = new FileStream(newest, FileMode.Open, FileAccess.ReadWrite);
                var offsets = new List<long>();
                for (var i = 0; i < 16; i++)
                {
                    var offset = (long)(random.NextDouble() * written);
                    stream.Position = offset;
                    var value = stream.ReadByte();
                    stream.Position = offset;
                    stream.WriteByte((byte)(value ^ (1 << random.Next(8))));
                    offsets.Add(offset);
                }

                return $"flipped 16 bits in the written part of {Relative(dataDir, newest)} (first at offset {offsets[0]})";
            }

            case FaultKind.DiskDeleteChunk:
            {
                var victim = chunks[random.Next(chunks.Count)];
                File.Delete(victim);
                return $"deleted {Relative(dataDir, victim)}";
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a WAL fault");
        }
    }

    /// <summary>The WAL data chunk files, oldest first.</summary>
    public static IReadOnlyList<string> WalChunks(string dataDir)
    {
        var directory = Path.Combine(dataDir, "wal", "data");
        return Directory.Exists(directory)
            ? [.. new DirectoryInfo(directory).EnumerateFiles().OrderBy(f => f.Name.Length).ThenBy(f => f.Name, StringComparer.Ordinal).Select(f => f.FullName)]
            : [];
    }

    /// <summary>Deletes everything a node stored, so that it rejoins empty and catches up from its peers.</summary>
    public static void Wipe(string dataDir)
    {
        foreach (var entry in new[] { "wal", "store.db", "store-log.db", "scratch" })
        {
            var path = Path.Combine(dataDir, entry);
            if (Directory.Exists(path))
                Directory.Delete(path, recursive: true);
            else if (File.Exists(path))
                File.Delete(path);
        }
    }

    /// <summary>Free space left on the small file system.</summary>
    public const int HeadroomMiB = 1;

    /// <summary>
    /// Moves a stopped node's data onto a tmpfs only a little larger than what it holds (root only), so the node runs
    /// out of space soon after it restarts.
    /// </summary>
    public static async Task<SmallMount> MountSmallFileSystemAsync(string dataDir)
    {
        // Real usage (du), not apparent sizes: WAL chunk files are sparse.
        var usedKiB = long.Parse((await Shell.CaptureAsync("du", "-sk", dataDir).ConfigureAwait(false)).Split('\t')[0], CultureInfo.InvariantCulture);
        var sizeMiB = (int)(usedKiB / 1024) + 1 + HeadroomMiB;
        var saved = dataDir.TrimEnd('/') + ".saved";
        Directory.Move(dataDir, saved);
        Directory.CreateDirectory(dataDir);
        await Shell.RunAsync("mount", "-t", "tmpfs", "-o", $"size={sizeMiB.ToString(CultureInfo.InvariantCulture)}m", "tmpfs", dataDir).ConfigureAwait(false);
        await Shell.RunAsync("cp", "-a", saved + "/.", dataDir + "/").ConfigureAwait(false);
        return new SmallMount(dataDir, saved, sizeMiB);
    }

    /// <summary>Copies what the node wrote on the tmpfs back to its real data directory and unmounts.</summary>
    public static async Task UnmountAsync(SmallMount mount)
    {
        ArgumentNullException.ThrowIfNull(mount);
        var back = mount.Saved + ".new";
        Directory.CreateDirectory(back);
        await Shell.RunAsync("cp", "-a", mount.DataDir + "/.", back + "/").ConfigureAwait(false);
        await Shell.RunAsync("umount", mount.DataDir).ConfigureAwait(false);
        Directory.Delete(mount.DataDir, recursive: true);
        Directory.Move(back, mount.DataDir);
        Directory.Delete(mount.Saved, recursive: true);
    }

    private static long WrittenBytes(string path)
    {
        // Chunk files are preallocated; the written part ends where the trailing zeros begin.
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read);
        var buffer = new byte[64 * 1024];
        long lastNonZero = 0;
        long offset = 0;
        int read;
        while ((read = stream.Read(buffer)) > 0)
        {
            for (var i = read - 1; i >= 0; i--)
            {
                if (buffer[i] != 0)
                {
                    lastNonZero = offset + i + 1;
                    break;
                }
            }

            offset += read;
        }

        return lastNonZero;
    }

    private static string Relative(string root, string path) => Path.GetRelativePath(root, path);
}
