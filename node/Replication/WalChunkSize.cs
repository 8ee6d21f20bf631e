using System.Globalization;

namespace Sequencer.Node.Replication;

/// <summary>The chunk size a WAL directory was created with.</summary>
/// <remarks>
/// DotNext cannot change the chunk size of an existing log: it maps a log address to chunk <c>address / size</c>, so a
/// node started with another size reads the wrong bytes and stops on an integrity error. The default size changed
/// (16 MiB to 1 MiB, docs/design.md departure 9), so a node keeps the size its log was created with: the size written
/// in <see cref="MarkerFile"/> beside the log, or, for a log from before the marker, the length of its chunk files
/// (each is extended to the full chunk size when it is first written).
/// </remarks>
public static class WalChunkSize
{
    /// <summary>The file in the WAL directory that records the chunk size.</summary>
    public const string MarkerFile = "chunk-bytes";

    /// <summary>
    /// The chunk size of the log under <paramref name="walDirectory"/>, or <paramref name="configured"/> for a new log.
    /// Only lengths that are valid chunk sizes (powers of two) count, and the longest wins, so that a chunk whose tail was
    /// cut off (a damaged disk) cannot decide the size.
    /// </summary>
    public static int Resolve(string walDirectory, int configured)
    {
        ArgumentException.ThrowIfNullOrEmpty(walDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(configured, 1);
        var marker = Path.Combine(walDirectory, MarkerFile);
        if (File.Exists(marker) && int.TryParse(File.ReadAllText(marker).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var recorded) && IsChunkSize(recorded))
            return recorded;
        var data = new DirectoryInfo(Path.Combine(walDirectory, "data"));
        if (!data.Exists)
            return configured;
        long existing = 0;
        foreach (var file in data.EnumerateFiles())
        {
            if (uint.TryParse(file.Name, NumberStyles.None, CultureInfo.InvariantCulture, out _) && file.Length <= int.MaxValue && IsChunkSize((int)file.Length))
                existing = Math.Max(existing, file.Length);
        }

        return existing > 0 ? (int)existing : configured;
    }

    /// <summary>Records <paramref name="chunkBytes"/> as the chunk size of the log under <paramref name="walDirectory"/>.</summary>
    public static void Record(string walDirectory, int chunkBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(walDirectory);
        if (!IsChunkSize(chunkBytes))
            throw new ArgumentOutOfRangeException(nameof(chunkBytes), chunkBytes, "not a valid WAL chunk size");
        Directory.CreateDirectory(walDirectory);
        var marker = Path.Combine(walDirectory, MarkerFile);
        if (!File.Exists(marker))
            File.WriteAllText(marker, chunkBytes.ToString(CultureInfo.InvariantCulture));
    }

    private static bool IsChunkSize(int bytes) => bytes >= 4096 && int.IsPow2(bytes);
}
