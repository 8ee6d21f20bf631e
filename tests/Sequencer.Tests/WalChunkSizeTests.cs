using Sequencer.Node.Replication;

namespace Sequencer.Tests;

public sealed class WalChunkSizeTests : IDisposable
{
    private readonly string directory = Path.Combine(Path.GetTempPath(), "sequencer-wal-tests", Guid.NewGuid().ToString("N"));

    [Fact]
    public void Resolve_NewLog_UsesTheConfiguredSize()
    {
        Assert.Equal(5000, WalChunkSize.Resolve(directory, 5000));
        Directory.CreateDirectory(Path.Combine(directory, "data"));
        Assert.Equal(5000, WalChunkSize.Resolve(directory, 5000));
    }

    [Fact]
    public void Resolve_ExistingLog_KeepsTheSizeItWasCreatedWith_EvenWhenAChunkWasCutShort()
    {
        // A log written by a node with 16 MiB chunks (the old default): DotNext cannot read it with another size.
        var data = Directory.CreateDirectory(Path.Combine(directory, "data"));
        foreach (var (name, length) in new[] { ("0", 16L << 20), ("1", 16L << 20), ("2", 3L << 20) })
        {
            using var file = File.Create(Path.Combine(data.FullName, name));
            file.SetLength(length);
        }

        // Files that are not chunks (DotNext's chunk files are named by their index) do not count.
        File.WriteAllText(Path.Combine(data.FullName, "notes.txt"), new string('x', 100));
        Assert.Equal(16 << 20, WalChunkSize.Resolve(directory, 4 << 20));
    }

    [Fact]
    public void Resolve_OnlyAChunkCutShort_UsesTheConfiguredSize_AndTheMarkerWinsOverEverything()
    {
        // The chaos harness's DiskTruncateWalTail leaves a chunk of a length that is no chunk size: it must not count.
        var data = Directory.CreateDirectory(Path.Combine(directory, "data"));
        using (var file = File.Create(Path.Combine(data.FullName, "0")))
            file.SetLength(700_001);
        Assert.Equal(1 << 20, WalChunkSize.Resolve(directory, 1 << 20));

        WalChunkSize.Record(directory, 16 << 20);
        Assert.Equal(16 << 20, WalChunkSize.Resolve(directory, 1 << 20));
        // Recorded once: a later start with another configured size does not overwrite it.
        WalChunkSize.Record(directory, 1 << 20);
        Assert.Equal(16 << 20, WalChunkSize.Resolve(directory, 1 << 20));
        Assert.Throws<ArgumentOutOfRangeException>(() => WalChunkSize.Record(directory, 3000));
    }

    public void Dispose()
    {
        if (Directory.Exists(directory))
            Directory.Delete(directory, recursive: true);
    }
}
