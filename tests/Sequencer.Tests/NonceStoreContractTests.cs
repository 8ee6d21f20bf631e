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

    [Fact]
    public void Compaction_LeavesTheUseRecordsInTheAuditDatabase_BeforeTheLogThatHeldThemGoes()
    {
        // The used-nonce log is deleted once its records are in uses.db: a copy of the audit database taken right
        // after the compaction (the store still open, as at a crash) must hold them.
        var use = new NonceUse(11, 2, [4, 5, 6], [1, 3], new byte[32]);
        var copy = Directory + "-copy";
        using (var store = new NonceStore(Directory))
        {
            store.Generate(1, Shares[0], 1, 4);
            store.Take(1, new Dictionary<ulong, NonceUse?> { [2] = use, [3] = use with { Height = 12 } });
            store.Compact();
            Assert.Equal(0, store.LoggedTakes());
            System.IO.Directory.CreateDirectory(copy);
            foreach (var file in System.IO.Directory.GetFiles(Directory, "uses*.db"))
                File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }

        try
        {
            using var reopened = new NonceStore(copy);
            Assert.Equal([(2UL, 11UL), (3UL, 12UL)], reopened.Uses(0, 10).Select(u => (u.Sequence, u.Use.Height)));
        }
        finally
        {
            System.IO.Directory.Delete(copy, recursive: true);
        }
    }

    [Fact]
    public void AFailingAuditDatabase_KeepsTheUsedNonceLogs_OpensNoLogPerRetry_AndTheNextOpenRecordsTheUses()
    {
        var use = new NonceUse(5, 1, [1, 2], [1, 2], new byte[32]);
        var fail = false;
        using (var store = new NonceStore(Directory, () => Volatile.Read(ref fail)))
        {
            store.Generate(1, Shares[0], 1, 4);
            store.Take(1, new Dictionary<ulong, NonceUse?> { [1] = use, [2] = use with { Height = 6 } });
            Volatile.Write(ref fail, true);
            for (var attempt = 0; attempt < 5; attempt++)
                Assert.ThrowsAny<Exception>(store.Compact);

            // The tombstones stay in force, and the retries opened one log at most beside the one that holds them.
            Assert.Equal(2, store.Uncompacted);
            Assert.Empty(store.Take(1, Uses(1, 2)));
            Assert.InRange(System.IO.Directory.GetFiles(Directory, "used-*.log").Length, 1, 2);
        }

        using var reopened = new NonceStore(Directory);
        Assert.Equal(0, reopened.Uncompacted);
        Assert.Empty(reopened.Take(1, Uses(1, 2)));
        Assert.Equal([(1UL, 5UL), (2UL, 6UL)], reopened.Uses(0, 10).Select(u => (u.Sequence, u.Use.Height)));
    }

    [Fact]
    public void AnOpenWhoseCompactionFails_ReleasesItsFiles_AndTheNextOpenInTheSameProcessSucceeds()
    {
        using (var store = new NonceStore(Directory))
        {
            store.Generate(1, Shares[0], 1, 4);
            Assert.Single(store.Take(1, Uses(1)));
        }

        // The opening compaction fails (the audit database's disk is full): the open fails, and leaves no file locked.
        Assert.ThrowsAny<Exception>(() => new NonceStore(Directory, () => true).Dispose());
        using var reopened = new NonceStore(Directory);
        Assert.Empty(reopened.Take(1, Uses(1)));
        Assert.Equal([1UL], reopened.Uses(0, 10).Select(u => u.Sequence));
        Assert.Single(reopened.Take(1, Uses(2)));
    }

    [Fact]
    public void AFailingAuditDatabase_StopsTakesAtTheBound_LosesNoTombstone_AndTakesResumeOnceACompactionSucceeds()
    {
        // Compaction keeps failing (a full disk under uses.db): past the bound, takes hand out nothing, and what they
        // refuse stays stored and untouched. LiteDB stays closed after a failed write: the next open (a restart, once
        // the disk works) compacts, records every use once, and takes work again, refused nonces included, each once.
        const int Bound = 8;
        var fail = false;
        var handedOut = new List<ulong>();
        IReadOnlyList<StoredNonceCommitment> generated;
        using (var store = new NonceStore(Directory, () => Volatile.Read(ref fail), Bound))
        {
            generated = store.Generate(1, Shares[0], 1, 20);
            Volatile.Write(ref fail, true);
            handedOut.AddRange(store.Take(1, Uses(1, 2, 3, 4, 5)).Keys);
            CompactFails(store);

            // Three more fit; 9 to 12 are refused, before and after more failed compactions.
            var partial = store.Take(1, Uses(6, 7, 8, 9, 10, 11, 12));
            Assert.Equal([6UL, 7UL, 8UL], partial.Keys.Order());
            handedOut.AddRange(partial.Keys);
            for (var attempt = 0; attempt < 3; attempt++)
            {
                Assert.Empty(store.Take(1, Uses(9, 10, 11, 12)));
                Assert.Empty(store.Take(1, Uses(1, 2, 3)));
                CompactFails(store);
                Assert.Equal(Bound, store.Uncompacted);
            }

            // A refused nonce was not taken: still stored and offered; the taken ones are not.
            Assert.Equal(20 - Bound, store.Count);
            Assert.Equal([.. Enumerable.Range(9, 12).Select(i => (ulong)i)], store.CommitmentsFrom(1, 100).Select(c => c.Sequence));
        }

        Volatile.Write(ref fail, false);
        using (var store = new NonceStore(Directory, () => Volatile.Read(ref fail), Bound))
        {
            Assert.Equal(0, store.Uncompacted);
            Assert.Equal(0, store.LoggedTakes());
            Assert.Equal([.. Enumerable.Range(1, Bound).Select(i => ((ulong)i, (ulong)i))], store.Uses(0, 100).Select(u => (u.Sequence, u.Use.Height)));
            var resumed = store.Take(1, Uses(1, 9, 10, 11, 12, 13));
            Assert.Equal([9UL, 10UL, 11UL, 12UL, 13UL], resumed.Keys.Order());
            Assert.All(resumed, r => Assert.Equal(generated[(int)r.Key - 1].Commitment, r.Value.Commitment));
            handedOut.AddRange(resumed.Keys);
            store.Compact();
            Assert.Equal(13, store.Uses(0, 100).Count);
        }

        // Never one nonce twice, across the refusals and the restarts.
        Assert.Equal([.. Enumerable.Range(1, 13).Select(i => (ulong)i)], handedOut.Order());
        using var reopened = new NonceStore(Directory);
        Assert.Empty(reopened.Take(1, Uses([.. Enumerable.Range(1, 13).Select(i => (ulong)i)])));
        Assert.Equal(7, reopened.Count);
        Assert.Equal(13, reopened.Uses(0, 100).Count);
    }

    // A failed compaction fails in time, with what the signer's loop catches and retries (anything else ends the loop).
    private static void CompactFails(NonceStore store)
    {
        var failure = Task.Run(() => Record.Exception(store.Compact));
        Assert.True(failure.Wait(TimeSpan.FromSeconds(20)), "a failed compaction returns");
        Assert.True(failure.Result is IOException or LiteDB.LiteException or InvalidOperationException, $"unexpected {failure.Result?.GetType()}");
    }

    [Fact]
    public void TakenNonces_AreErasedFromTheDisk_AndStayDeadWithoutTheAuditDatabase()
    {
        // Issue 9: LiteDB 5 does not fsync its commits, so a used nonce's only tombstone must never be a LiteDB
        // delete. Taken nonces are overwritten with zeros in the project's own nonce file before the used-nonce log
        // that named them goes; losing uses.db entirely (a lost commit) brings none of them back.
        byte[] secret;
        using (var store = new NonceStore(Directory))
        {
            store.Generate(1, Shares[0], 1, 8);
            secret = Secp256k1.SerializeScalar(store.Take(1, Uses(3, 4))[3].Nonces.Hiding);
        }

        // Taken, not yet compacted (the process died first): the log is the tombstone, and the secret is still there.
        Assert.True(File.ReadAllBytes(Path.Combine(Directory, "nonces.dat")).AsSpan().IndexOf(secret) >= 0);
        using (var store = new NonceStore(Directory))
        {
            // Opening compacts: the records are erased and synced, then the log is deleted.
            Assert.Equal(0, store.Uncompacted);
            Assert.Equal(0, store.LoggedTakes());
        }

        Assert.True(File.ReadAllBytes(Path.Combine(Directory, "nonces.dat")).AsSpan().IndexOf(secret) < 0, "a taken nonce's secret is overwritten");
        File.Delete(Path.Combine(Directory, "uses.db"));
        using var reopened = new NonceStore(Directory);
        Assert.Empty(reopened.Take(1, Uses(3, 4)));
        Assert.Equal(6, reopened.Count);
        Assert.Equal(9UL, reopened.NextSequence(1));
    }

    [Fact]
    public void EveryNonceTakenAndTheFileRewritten_TheNextSequenceNeverGoesBack()
    {
        // A sequence once published must never be generated again, even after every record is erased and the file is
        // rewritten without them.
        using (var store = new NonceStore(Directory))
        {
            for (var round = 0; round < 4; round++)
            {
                var first = store.NextSequence(1);
                store.Generate(1, Shares[1], first, 100);
                Assert.Equal(100, store.Take(1, Uses([.. Enumerable.Range(0, 100).Select(i => first + (ulong)i)])).Count);
                store.Compact();
            }

            Assert.Equal(0, store.Count);
            Assert.Equal(401UL, store.NextSequence(1));
        }

        Assert.True(new FileInfo(Path.Combine(Directory, "nonces.dat")).Length < NonceFileRecordBytes * 200, "erased records are dropped by a rewrite");
        using var reopened = new NonceStore(Directory);
        Assert.Equal(401UL, reopened.NextSequence(1));
        Assert.Throws<InvalidOperationException>(() => reopened.Generate(1, Shares[1], 400, 1));
        Assert.Single(reopened.Generate(1, Shares[1], 401, 1));
        Assert.Equal(400, reopened.Uses(0, 1000).Count);
    }

    private const int NonceFileRecordBytes = 144;

    [Fact]
    public void InterruptedRewrite_ACompleteNewFileWins_ATornOneIsErased()
    {
        using (var store = new NonceStore(Directory))
            store.Generate(1, Shares[0], 1, 4);
        var path = Path.Combine(Directory, "nonces.dat");
        var rewrite = path + ".new";

        // A torn rewrite (cut short before it was synced): the old file stays the truth.
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(rewrite, bytes[..^10]);
        using (var store = new NonceStore(Directory))
            Assert.Equal(4, store.Count);
        Assert.False(File.Exists(rewrite));

        // A complete rewrite that holds fewer records (the others were erased), and an old file already zeroed by the
        // interrupted step: the rewrite is used.
        var complete = bytes[..(64 + (2 * NonceFileRecordBytes))];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(complete.AsSpan(24), 2);
        System.Security.Cryptography.SHA256.HashData(complete.AsSpan(0, 32)).AsSpan(0, 4).CopyTo(complete.AsSpan(32));
        File.WriteAllBytes(rewrite, complete);
        File.WriteAllBytes(path, new byte[bytes.Length]);
        using (var store = new NonceStore(Directory))
        {
            Assert.Equal([1UL, 2UL], store.CommitmentsFrom(1, 10).Select(c => c.Sequence));
            Assert.Equal(2, store.Take(1, Uses(1, 2)).Count);
        }

        Assert.False(File.Exists(rewrite));
    }

    [Fact]
    public void ADirectoryOfTheLiteDbFormat_HasItsSecretNoncesErased()
    {
        // Nonces used to live in LiteDB, whose deleted pages keep them: the old file is overwritten and deleted; its
        // commitments are then not held, and the signer publishes a replacement pool.
        System.IO.Directory.CreateDirectory(Directory);
        var legacy = Path.Combine(Directory, "nonces.db");
        File.WriteAllBytes(legacy, [1, 2, 3, 4]);
        using var store = new NonceStore(Directory);
        Assert.False(File.Exists(legacy));
        Assert.Equal(0, store.Count);
    }
    private string NewestLog() => System.IO.Directory.GetFiles(Directory, "used-*.log")
        .OrderBy(f => long.Parse(Path.GetFileNameWithoutExtension(f)[5..], System.Globalization.CultureInfo.InvariantCulture)).Last();

    [Fact]
    public void TakesBelowTheReservation_SurviveAKilledProcess_AndAFailedMachineDropsEveryUnnamedNonceBelowIt()
    {
        // One take syncs a reservation 16 past itself (through 18); the next takes below it append their records
        // without an fsync.
        using (var store = new NonceStore(Directory, null, bootId: "boot-a"))
        {
            store.Generate(1, Shares[0], 1, 40);
            Assert.Single(store.Take(1, Uses(1)));
            Assert.Equal(2, store.Take(1, Uses(2, 3)).Count);
        }

        // The process died (same boot): the kernel kept every record, nothing is lost and the rest stay usable.
        var synced = 0L;
        using (var store = new NonceStore(Directory, null, bootId: "boot-a"))
        {
            Assert.Empty(store.LostAtOpen);
            Assert.Empty(store.Take(1, Uses(1, 2, 3)));
            Assert.Equal(37, store.Count);
            Assert.Single(store.Take(1, Uses(4)));
            synced = new FileInfo(NewestLog()).Length;
            Assert.Equal(2, store.Take(1, Uses(5, 6)).Count);
        }

        // The machine failed (another boot) and the unsynced records after the last reservation were lost: every
        // stored nonce below the reservation that the log does not name is dropped, whether it served or not.
        using (var log = new FileStream(NewestLog(), FileMode.Open))
            log.SetLength(synced);
        using (var store = new NonceStore(Directory, null, bootId: "boot-b"))
        {
            Assert.Equal([.. Enumerable.Range(5, 13).Select(i => (ulong)i)], store.LostAtOpen.Order());
            Assert.Empty(store.Take(1, Uses(5, 6, 7, 17)));
            Assert.Equal(23, store.Count);
            Assert.Equal([18UL], store.CommitmentsFrom(1, 1).Select(c => c.Sequence));
            Assert.Single(store.Take(1, Uses(18)));
        }

        // What was dropped stays dropped (tombstoned before the new boot's reservation), and nothing else goes.
        using (var store = new NonceStore(Directory, null, bootId: "boot-b"))
        {
            Assert.Empty(store.LostAtOpen);
            Assert.Empty(store.Take(1, Uses(5, 17, 18)));
            Assert.Equal(22, store.Count);
        }
    }

    [Fact]
    public void Compaction_CarriesTheReservation_SoATakeAfterItIsNotLostWithTheMachine()
    {
        long synced;
        using (var store = new NonceStore(Directory, null, bootId: "boot-a"))
        {
            store.Generate(1, Shares[0], 1, 40);
            Assert.Single(store.Take(1, Uses(1)));
            store.Compact();

            // The log that held the reservation is gone; the new one holds it, synced, and no take.
            var log = Assert.Single(System.IO.Directory.GetFiles(Directory, "used-*.log"));
            Assert.Equal(0, store.LoggedTakes());
            synced = new FileInfo(log).Length;
            Assert.True(synced > 0);
            Assert.Single(store.Take(1, Uses(2)));
        }

        using (var log = new FileStream(NewestLog(), FileMode.Open))
            log.SetLength(synced);
        using var reopened = new NonceStore(Directory, null, bootId: "boot-b");
        Assert.Empty(reopened.Take(1, Uses(2)));
        Assert.Contains(2UL, reopened.LostAtOpen);
        Assert.Single(reopened.Uses(0, 10));
    }

    [Fact]
    public void WithoutAReservation_EveryTakeSyncs_AndNothingIsLostAtOpen()
    {
        using (var store = new NonceStore(Directory, null, reserveAhead: 0, bootId: "boot-a"))
        {
            store.Generate(1, Shares[0], 1, 10);
            Assert.Single(store.Take(1, Uses(1)));
            Assert.Single(store.Take(1, Uses(2)));
        }

        using var reopened = new NonceStore(Directory, null, reserveAhead: 0, bootId: "boot-b");
        Assert.Empty(reopened.LostAtOpen);
        Assert.Equal(8, reopened.Count);
    }
}
