using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Node.Signing;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;
using BigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Tests;

/// <summary>The signing state of <see cref="AppliedState"/>: the ledger's effects stored, served and carried by snapshots.</summary>
public sealed class SigningStateTests
{
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 4, MaxUnpersistedBatches = 16, PersistIntervalMs = 10_000 };

    private readonly IReadOnlyList<KeyShare> shares;
    private readonly GroupKey group;
    private readonly Dictionary<(int, ulong), SigningNonces> nonces = [];
    private long index;

    public SigningStateTests() => (shares, group) = TrustedDealer.Generate(2, 3);

    private static AppliedState Open(IBatchStore store, long retained = 0)
        => new(store, new ChainParameters(42, 0), Limits, new WalRetention(retained, long.MaxValue), new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance);

    private KeyEpochCommand Epoch() => new()
    {
        Epoch = 1,
        Threshold = 2,
        GroupKey = Secp256k1.SerializeElement(group.PublicKey),
        Members = [1, 2, 3],
        VerificationShares = [.. new[] { 1, 2, 3 }.Select(id => Secp256k1.SerializeElement(group.VerificationShares[id]))],
    };

    private NonceCommitmentsCommand Publish(int signer, ulong first, int count, KeyShare? prover = null)
    {
        var values = new List<byte[]>();
        for (var i = 0; i < count; i++)
        {
            var (pair, commitment) = Frost.Commit(signer, shares[signer - 1].Secret);
            nonces[(signer, first + (ulong)i)] = pair;
            values.Add([.. Secp256k1.SerializeElement(commitment.Hiding), .. Secp256k1.SerializeElement(commitment.Binding)]);
        }

        var command = new NonceCommitmentsCommand { SignerId = signer, KeyEpoch = 1, FirstSequence = first, Commitments = values };
        return new NonceCommitmentsCommand
        {
            SignerId = signer,
            KeyEpoch = 1,
            FirstSequence = first,
            Commitments = values,
            Proof = SignerProof.Sign(SigningLedger.NonceCommitmentsProofDomain, command.ProofPayload(), (prover ?? shares[signer - 1]).Secret),
        };
    }

    private Task<AppliedBatch?> ApplyAsync(AppliedState state, ILogCommand command) => state.ApplyAsync(command, ++index, 1, CancellationToken.None).AsTask();

    private async Task ApplyBatchAsync(AppliedState state, int seed)
        => await ApplyAsync(state, new BatchCommand { LeaderTimestampMs = 5000, Txs = [BatchApplierTests.Tx(seed), BatchApplierTests.Tx(seed + 1)] });

    /// <summary>Signs the applied session as its signers would, and returns the signature entry.</summary>
    private HeadSignature SignSession(AppliedSession session, bool corruptShareOf2 = false)
    {
        var frost = new FrostSession(group.PublicKey, session.Commitments, session.Message);
        var zs = session.Session.Signers.Select((id, i) =>
        {
            var z = frost.Sign(shares[id - 1], nonces[(id, session.Session.Sequences[i])]);
            return corruptShareOf2 && id == 2 ? z.Add(BigInteger.One).Mod(Secp256k1.Order) : z;
        }).ToList();
        var signature = frost.Aggregate(zs).Encode();
        return new HeadSignature { Height = session.Session.Height, KeyEpoch = 1, Signers = session.Session.Signers, R = signature[..33], Z = signature[33..] };
    }

    [Fact]
    public async Task HeadsSigned_CoverEveryHeightBelow_AreServedFromMemoryAndStore_AndOnlyValidOnesAreKept()
    {
        var store = new InMemoryBatchStore();
        await using var state = Open(store);
        var started = new List<AppliedSession>();
        var signed = new List<HeadSignedEvent>();
        state.SessionsStarted += started.AddRange;
        state.HeadSigned += signed.Add;

        await ApplyBatchAsync(state, 1);
        await ApplyAsync(state, Epoch());
        for (var i = 0; i < 4; i++)
            await ApplyBatchAsync(state, 10 * (i + 1));
        await ApplyAsync(state, Publish(1, 1, 4));
        await ApplyAsync(state, Publish(2, 1, 4));
        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 3, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [1, 1] }] });
        var session = Assert.Single(started);
        Assert.Equal(state.GetBatch(3)!.Header.Commitment.ToArray(), session.Message);

        // A wrong share makes an invalid aggregate: never stored (INV-SIGVALID).
        await ApplyAsync(state, new HeadSignaturesCommand { Signatures = [SignSession(session, corruptShareOf2: true)] });
        Assert.False(state.IsCovered(1));
        Assert.Null(state.CoveringHead(1));

        await ApplyAsync(state, new HeadSignaturesCommand { Signatures = [SignSession(session)] });
        var head = Assert.Single(signed);
        Assert.Equal((3UL, 1UL), (head.Head.Height, head.CoveredFrom));
        Assert.Equal(3UL, state.SignedThrough);
        Assert.All(new ulong[] { 1, 2, 3 }, h => Assert.Equal(3UL, state.CoveringHead(h)!.Height));
        Assert.Null(state.CoveringHead(4));
        Assert.Equal(3UL, state.GetHead(3)!.Height);
        Assert.Null(state.GetHead(2));

        // A second head covers what lies between; heads are listed ascending, from memory and after a flush from the store.
        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 5, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [2, 2] }] });
        await ApplyAsync(state, new HeadSignaturesCommand { Signatures = [SignSession(started[^1])] });
        Assert.Equal(4UL, signed[^1].CoveredFrom);
        Assert.Equal(5UL, state.CoveringHead(4)!.Height);
        Assert.Equal([3UL, 5UL], state.Heads(1, 10).Select(h => h.Height));
        await state.FlushAsync(CancellationToken.None);
        Assert.Equal([3UL, 5UL], store.Heads(1, 10).Select(h => h.Height));
        Assert.Equal(5UL, store.CoveringHead(4)!.Height);

        // A proof of any covered height against its head's history root verifies (the history tree of the applied chain).
        var covering = state.GetBatch(5)!.Header;
        for (ulong h = 1; h < 5; h++)
        {
            var proof = HistoryTree.AuditPath(state.History, h - 1, covering.Height - 1);
            Assert.True(MerkleTree.VerifyInclusion((long)h - 1, (long)covering.Height - 1, state.GetBatch(h)!.Header.Commitment, proof, covering.HistoryRoot));
        }
    }

    [Fact]
    public async Task SigningState_SurvivesAReopen_AndTravelsInASnapshot_AndATamperedHeadIsRefused()
    {
        var store = new InMemoryBatchStore();
        var started = new List<AppliedSession>();
        await using (var state = Open(store, retained: 0))
        {
            state.SessionsStarted += started.AddRange;
            await ApplyAsync(state, Epoch());
            await ApplyAsync(state, Publish(1, 1, 8));
            await ApplyAsync(state, Publish(3, 1, 8));
            for (var i = 0; i < 6; i++)
                await ApplyBatchAsync(state, 100 + (10 * i));
            await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 4, Attempt = 1, KeyEpoch = 1, Signers = [1, 3], Sequences = [1, 1] }] });
            await ApplyAsync(state, new HeadSignaturesCommand { Signatures = [SignSession(started[^1])] });
            Assert.Equal(4UL, state.SignedThrough);
            await state.FlushAsync(CancellationToken.None);
        }

        await using var reopened = Open(store, retained: 0);
        Assert.Equal(1UL, reopened.CurrentKeyEpoch!.Epoch);
        Assert.Equal(4UL, reopened.SignedThrough);
        Assert.Equal(4UL, reopened.CoveringHead(2)!.Height);
        Assert.Null(reopened.CoveringHead(5));
        Assert.Equal((7, 9UL), reopened.CommitmentsOf(1));
        Assert.Equal([2UL, 3UL, 4UL, 5UL, 6UL, 7UL, 8UL], reopened.AvailableSequences(3, 10));

        var snapshot = reopened.CurrentSnapshot!;
        using var stream = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, stream, 4096, CancellationToken.None);
        await using var empty = Open(new InMemoryBatchStore());
        await empty.InstallSnapshotAsync(new MemoryStream(stream.ToArray()), snapshot.Index, snapshot.Term, CancellationToken.None);
        Assert.Equal(1UL, empty.CurrentKeyEpoch!.Epoch);
        Assert.Equal(reopened.GetHead(4)!.Z, empty.GetHead(4)!.Z);
        Assert.Equal(4UL, empty.SignedThrough);
        Assert.Equal(4UL, empty.CoveringHead(1)!.Height);
        Assert.Equal(reopened.CommitmentsOf(1), empty.CommitmentsOf(1));

        // A snapshot whose head signature was tampered with is refused.
        var bytes = stream.ToArray();
        var z = reopened.GetHead(4)!.Z;
        var at = IndexOf(bytes, z);
        Assert.True(at > 0);
        bytes[at + 5] ^= 1;
        await using var victim = Open(new InMemoryBatchStore());
        await Assert.ThrowsAnyAsync<Exception>(() => victim.InstallSnapshotAsync(new MemoryStream(bytes), snapshot.Index, snapshot.Term, CancellationToken.None));
    }

    // A state with key epoch 1 and twelve batches, each signed by its own head (the batches' txs from `firstTx`),
    // flushed so that its snapshot holds them all.
    private async Task<AppliedState> WithTwelveSignedHeadsAsync(int firstTx)
    {
        var started = new List<AppliedSession>();
        var source = Open(new InMemoryBatchStore(), retained: 0);
        source.SessionsStarted += started.AddRange;
        await ApplyAsync(source, Epoch());
        await ApplyAsync(source, Publish(1, 1, 16));
        await ApplyAsync(source, Publish(2, 1, 16));
        for (var i = 0; i < 12; i++)
        {
            await ApplyBatchAsync(source, firstTx + (10 * i));
            var height = (ulong)(i + 1);
            await ApplyAsync(source, new SigningSessionsCommand { Sessions = [new SigningSession { Height = height, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [height, height] }] });
            await ApplyAsync(source, new HeadSignaturesCommand { Signatures = [SignSession(started[^1])] });
        }

        await source.FlushAsync(CancellationToken.None);
        return source;
    }

    [Fact]
    public async Task SnapshotInstall_KeepsOnlyTheNewestHeadsInMemory()
    {
        // An install of a long chain stores its heads group by group: memory keeps the newest few, as apply does, and
        // the others are served from the store.
        await using var source = await WithTwelveSignedHeadsAsync(1000);
        Assert.Equal(12UL, source.SignedThrough);
        var snapshot = source.CurrentSnapshot!;
        using var stream = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, stream, 4096, CancellationToken.None);

        var limits = Limits with { PersistGroupBatches = 2 };
        await using var installed = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), limits, WalRetention.None,
            new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance) { RecentHeads = 3 };
        await installed.InstallSnapshotAsync(new MemoryStream(stream.ToArray()), snapshot.Index, snapshot.Term, CancellationToken.None);

        Assert.Equal(12UL, installed.SignedThrough);
        Assert.InRange(installed.RecentHeadsInMemory, 1, 3);
        Assert.Equal([.. Enumerable.Range(1, 12).Select(h => (ulong)h)], installed.Heads(1, 100).Select(h => h.Height));
        Assert.All(Enumerable.Range(1, 12), h => Assert.Equal((ulong)h, installed.CoveringHead((ulong)h)!.Height));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(12)]
    public async Task SnapshotInstall_VerifiesItsHeadsInABatch_AndRefusesTheOneTamperedHead_ByHeight(int tampered)
    {
        // The heads of an install are checked as one batch per store group; a batch with one bad head fails, and the
        // heads are then checked one by one, which names the bad one. Nothing of its group reaches the store.
        await using var source = await WithTwelveSignedHeadsAsync(2000);
        var snapshot = source.CurrentSnapshot!;
        using var stream = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, stream, 4096, CancellationToken.None);

        // Untouched, every head installs (in groups of 4 batches and heads: several batch checks).
        var limits = Limits with { PersistGroupBatches = 2 };
        await using (var whole = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), limits, WalRetention.None,
            new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance))
        {
            await whole.InstallSnapshotAsync(new MemoryStream(stream.ToArray()), snapshot.Index, snapshot.Term, CancellationToken.None);
            Assert.Equal(12UL, whole.SignedThrough);
        }

        // One head's z changed by one bit: refused, and the error names that head.
        var bytes = stream.ToArray();
        var z = source.GetHead((ulong)tampered)!.Z;
        var at = IndexOf(bytes, z);
        Assert.True(at > 0);
        bytes[at + 31] ^= 1;
        Reseal(bytes, at);
        var store = new InMemoryBatchStore();
        await using var victim = new AppliedState(store, new ChainParameters(42, 0), limits, WalRetention.None,
            new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance);
        var refused = await Assert.ThrowsAsync<LogFormatException>(() => victim.InstallSnapshotAsync(new MemoryStream(bytes), snapshot.Index, snapshot.Term, CancellationToken.None));
        Assert.Contains($"snapshot head {tampered}:", refused.Message);
        Assert.Contains("does not verify", refused.Message);
        Assert.Null(store.GetHead((ulong)tampered));
        Assert.True(victim.SignedThrough < (ulong)tampered);
    }

    [Fact]
    public async Task SnapshotInstall_ThenTheEntriesAfterItsIndexAgain_IgnoresNothing()
    {
        // The leader streams its commitment pool as it is when it writes the snapshot, past the snapshot's index; Raft then
        // sends the entries after that index again. Their publications and uses are redundant (a debug line), not
        // ignored parts (a warning that an operator would chase).
        var started = new List<AppliedSession>();
        await using var leader = Open(new InMemoryBatchStore(), retained: 0);
        leader.SessionsStarted += started.AddRange;
        await ApplyAsync(leader, Epoch());
        await ApplyAsync(leader, Publish(1, 1, 8));
        await ApplyAsync(leader, Publish(3, 1, 8));
        for (var i = 0; i < 4; i++)
            await ApplyBatchAsync(leader, 300 + (10 * i));
        await leader.FlushAsync(CancellationToken.None);
        var snapshot = leader.CurrentSnapshot!;

        // After the snapshot's index: more publications, a batch and a session that uses commitments.
        var after = new List<(ILogCommand Command, long Index)>();
        foreach (var command in new ILogCommand[]
        {
            Publish(1, 9, 4),
            Publish(3, 9, 4),
            new BatchCommand { LeaderTimestampMs = 6000, Txs = [BatchApplierTests.Tx(900), BatchApplierTests.Tx(901)] },
            new SigningSessionsCommand { Sessions = [new SigningSession { Height = 5, Attempt = 1, KeyEpoch = 1, Signers = [1, 3], Sequences = [1, 1] }] },
        })
        {
            await ApplyAsync(leader, command);
            after.Add((command, index));
        }

        Assert.True(after[0].Index > snapshot.Index);
        using var stream = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, stream, 4096, CancellationToken.None);

        var logger = new RecordingLogger<SigningStateTests>();
        await using var follower = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), Limits, WalRetention.None,
            new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), logger);
        await follower.InstallSnapshotAsync(new MemoryStream(stream.ToArray()), snapshot.Index, snapshot.Term, CancellationToken.None);
        foreach (var (command, at) in after)
            await follower.ApplyAsync(command, at, 1, CancellationToken.None);

        Assert.DoesNotContain(logger.Lines, l => l.Level >= LogLevel.Warning);
        Assert.Contains(logger.Lines, l => l.Level == LogLevel.Debug && l.Text.Contains("already reflects entry", StringComparison.Ordinal));
        Assert.Equal(leader.CommitmentsOf(1), follower.CommitmentsOf(1));
        Assert.Equal(leader.CommitmentsOf(3), follower.CommitmentsOf(3));
        Assert.Equal(leader.LastHeader!.Commitment, follower.LastHeader!.Commitment);

        // A stale publication at a new index is still a warning.
        await follower.ApplyAsync(Publish(1, 2, 1), after[^1].Index + 1, 1, CancellationToken.None);
        Assert.Contains(logger.Lines, l => l.Level == LogLevel.Warning && l.Text.Contains("Ignored part of a log entry: NonceCommitments", StringComparison.Ordinal));
    }

    // Recomputes the checksum of the snapshot record that holds byte `at`, so that a changed field reaches the install's
    // own checks rather than the stream's checksum.
    private static void Reseal(byte[] snapshot, int at)
    {
        var offset = SnapshotFormat.Magic.Length;
        while (offset < snapshot.Length)
        {
            var length = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(snapshot.AsSpan(offset));
            var body = offset + 12;
            if (at >= body && at < body + length)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(snapshot.AsSpan(offset + 4), System.IO.Hashing.XxHash64.HashToUInt64(snapshot.AsSpan(body, length)));
                return;
            }

            offset = body + length;
        }

        throw new InvalidOperationException($"byte {at} is in no record");
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (var i = 0; i <= haystack.Length - needle.Length; i++)
        {
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle))
                return i;
        }

        return -1;
    }
}
