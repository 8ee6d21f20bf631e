using Sequencer.Node.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>One nonce store contract (INV-NONCE: a nonce pair serves at most one session), run against the in-memory fake and the durable store.</summary>
public abstract class NonceStoreContractTests : IDisposable
{
    protected static readonly IReadOnlyList<KeyShare> Shares = TrustedDealer.Generate(2, 3).Shares;

    protected string Directory { get; } = Path.Combine(Path.GetTempPath(), "nonce-store-" + Guid.NewGuid().ToString("N"));

    protected abstract INonceStore Open();

    protected static Dictionary<ulong, NonceUse?> Uses(params ulong[] sequences) => sequences.ToDictionary(s => s, s => (NonceUse?)new NonceUse(s, 1, [1], [1, 2], new byte[32]));

    [Fact]
    public void Take_HandsOutEachNonceOnce_WithTheCommitmentItWasPublishedUnder()
    {
        using var store = Open();
        var generated = store.Generate(1, Shares[0], 1, 5);
        Assert.Equal(6UL, store.NextSequence(1));
        Assert.Throws<InvalidOperationException>(() => store.Generate(1, Shares[0], 3, 1));
        var taken = store.Take(1, Uses(2, 3, 99));
        Assert.Equal([2UL, 3UL], taken.Keys.Order());
        var commitment = Frost.CommitmentOf(1, taken[2].Nonces);
        byte[] recomputed = [.. Secp256k1.SerializeElement(commitment.Hiding), .. Secp256k1.SerializeElement(commitment.Binding)];
        Assert.Equal(generated[1].Commitment, recomputed);
        Assert.Equal(generated[1].Commitment, taken[2].Commitment);

        // Taken is taken: never again, and not offered.
        Assert.Empty(store.Take(1, Uses(2, 3)));
        Assert.Equal(3, store.Count);
        Assert.DoesNotContain(store.CommitmentsFrom(1, 10), c => c.Sequence is 2 or 3);
        Assert.Equal([2UL, 3UL], store.Uses(0, 10).Select(u => u.Sequence));

        // Pruning keeps what the callback keeps; a new epoch starts over and the old epoch's nonces are gone.
        Assert.Equal(1, store.Prune(5, s => s == 4));
        Assert.Equal([4UL, 5UL], store.CommitmentsFrom(1, 10).Select(c => c.Sequence));
        Assert.Empty(store.Take(2, Uses(4)));
        store.Generate(2, Shares[0], 1, 2);
        Assert.Equal(2, store.Count);
        Assert.Empty(store.Take(1, Uses(4)));
        Assert.Equal(2UL, store.Epoch);
    }

    [Fact]
    public async Task Take_ConcurrentTakesOfTheSameNonce_OnlyOneGetsIt()
    {
        using var store = Open();
        store.Generate(1, Shares[1], 1, 64);
        var winners = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => store.Take(1, Uses([.. Enumerable.Range(1, 64).Select(i => (ulong)i)])).Count)));
        Assert.Equal(64, winners.Sum());
    }

    public void Dispose()
    {
        try
        {
            if (System.IO.Directory.Exists(Directory))
                System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }

        GC.SuppressFinalize(this);
    }
}

public sealed class InMemoryNonceStoreTests : NonceStoreContractTests
{
    protected override INonceStore Open() => new InMemoryNonceStore();
}

public sealed class DurableNonceStoreTests : NonceStoreContractTests
{
    protected override INonceStore Open() => new NonceStore(Directory);

    [Fact]
    public void Reopen_TakenNoncesStayGone_TheOthersRemain_AndTheDirectoryIsOwnerOnly()
    {
        using (var store = Open())
        {
            store.Generate(1, Shares[0], 1, 5);
            Assert.Equal(2, store.Take(1, Uses(2, 3)).Count);
        }

        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Directory));
        using var reopened = Open();
        Assert.Empty(reopened.Take(1, Uses(2, 3)));
        Assert.Equal(3, reopened.Count);
        Assert.Equal(6UL, reopened.NextSequence(1));
    }

    [Fact]
    public void UsedNonceLog_SurvivesARestartBeforeCompaction_RecordsEachUseOnce_AndIgnoresATornTail()
    {
        var use = new NonceUse(7, 1, [1, 2, 3], [1, 2], new byte[32]);
        using (var store = Open())
        {
            store.Generate(1, Shares[0], 1, 6);
            Assert.Equal([1UL, 2UL], store.Take(1, new Dictionary<ulong, NonceUse?> { [1] = use, [2] = use with { Height = 8 } }).Keys.Order());
            Assert.Equal(2, store.Uncompacted);
            Assert.Equal(4, store.Count);
            Assert.DoesNotContain(store.CommitmentsFrom(1, 10), c => c.Sequence is 1 or 2);

            // Taken but not compacted: the log alone says they are used.
            Assert.Empty(store.Take(1, Uses(1, 2)));
        }

        // A crash can leave half a record at the end of the log: that take never returned, so its share never left.
        File.AppendAllBytes(System.IO.Directory.GetFiles(Directory, "used-*.log").Single(), [40, 0, 0, 0, 1, 2, 3]);
        using (var reopened = Open())
        {
            Assert.Equal(0, reopened.Uncompacted);
            Assert.Empty(reopened.Take(1, Uses(1, 2)));
            Assert.Equal(4, reopened.Count);
            var uses = reopened.Uses(0, 10);
            Assert.Equal([(1UL, 7UL), (2UL, 8UL)], uses.Select(u => (u.Sequence, u.Use.Height)));
            Assert.Single(reopened.Take(1, new Dictionary<ulong, NonceUse?> { [3] = use with { Height = 9 } }));
            reopened.Compact();
            reopened.Compact();
            Assert.Equal(3, reopened.Uses(0, 10).Count);
        }
    }
}
