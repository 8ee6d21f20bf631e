using System.Globalization;

namespace Sequencer.Node.Replication;

/// <summary>The chunk size a WAL directory was created with.</summary>
/// <remarks>
/// DotNext cannot change the chunk size of an existing log: it maps a log address to chunk <c>address / size</c>, so a
/// node started with another size reads the wrong bytes and stops on an integrity error. The default size changed
/// (16 MiB to 1 MiB, docs/design.md departure 9), so a node keeps the size its log was created with. Every
/// chunk file is extended to the full chunk size when it is first written, so any chunk file's length is that size.
/// </remarks>
public static class WalChunkSize
{
    /// <summary>
    /// The chunk size of the log under <paramref name="walDirectory"/>, or <paramref name="configured"/> for a new log.
    /// The longest chunk file wins, so that a chunk whose tail was cut off (a damaged disk) cannot shrink the size.
    /// </summary>
    public static int Resolve(string walDirectory, int configured)
    {
        ArgumentException.ThrowIfNullOrEmpty(walDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(configured, 1);
        var data = new DirectoryInfo(Path.Combine(walDirectory, "data"));
        if (!data.Exists)
            return configured;
        long existing = 0;
        foreach (var file in data.EnumerateFiles())
        {
            if (uint.TryParse(file.Name, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                existing = Math.Max(existing, file.Length);
        }

        return existing is > 0 and <= int.MaxValue ? (int)existing : configured;
    }
}
