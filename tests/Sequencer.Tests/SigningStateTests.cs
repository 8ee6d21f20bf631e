using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Node.Signing;
using Sequencer.Raft;
using Sequencer.Threshold;
using BigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Tests;

/// <summary>The replicated signing state of <see cref="AppliedState"/>: key epochs, commitments, sessions, signatures.</summary>
public sealed class SigningStateTests : IDisposable
{
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 4, MaxUnpersistedBatches = 16, PersistIntervalMs = 10_000 };

    private readonly IReadOnlyList<KeyShare> shares;
    private readonly GroupKey group;
    private readonly Dictionary<(int, ulong), SigningNonces> nonces = [];
    private readonly List<string> directories = [];
    private long index;

    public SigningStateTests() => (shares, group) = TrustedDealer.Generate(2, 3);

    private static AppliedState Open(IBatchStore store, long retained = 0)
        => new(store, new ChainParameters(42, 0), Limits, retained, new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance);

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
            Proof = SignerProof.Sign(AppliedState.NonceCommitmentsProofDomain, command.ProofPayload(), (prover ?? shares[signer - 1]).Secret),
        };
    }

    private Task<AppliedBatch?> ApplyAsync(AppliedState state, ILogCommand command) => state.ApplyAsync(command, ++index, 1, CancellationToken.None).AsTask();

    private async Task ApplyBatchAsync(AppliedState state, int seed)
        => await ApplyAsync(state, new BatchCommand { LeaderTimestampMs = 5000, Txs = [BatchApplierTests.Tx(seed), BatchApplierTests.Tx(seed + 1)] });

    /// <summary>Signs the applied session as its signers would, and returns the signature entry.</summary>
    private BatchSignature SignSession(AppliedSession session, bool corruptShareOf2 = false)
    {
        var frost = new FrostSession(group.PublicKey, session.Commitments, session.Message);
        var zs = session.Session.Signers.Select((id, i) =>
        {
            var z = frost.Sign(shares[id - 1], nonces[(id, session.Session.Sequences[i])]);
            return corruptShareOf2 && id == 2 ? z.Add(BigInteger.One).Mod(Secp256k1.Order) : z;
        }).ToList();
        var signature = frost.Aggregate(zs).Encode();
        return new BatchSignature { Height = session.Session.Height, KeyEpoch = 1, Signers = session.Session.Signers, R = signature[..33], Z = signature[33..] };
    }

    [Fact]
    public async Task KeyEpoch_SessionsAndSignatures_SignEveryHeightOnce_AndOnlyValidSignaturesAreKept()
    {
        var store = new InMemoryBatchStore();
        await using var state = Open(store);
        var started = new List<AppliedSession>();
        state.SessionsStarted += started.AddRange;

        await ApplyBatchAsync(state, 1);
        Assert.Equal(0UL, state.LastHeader!.KeyEpoch);
        await ApplyAsync(state, Epoch());
        Assert.Equal(1UL, state.CurrentKeyEpoch!.Epoch);
        await ApplyBatchAsync(state, 10);
        await ApplyBatchAsync(state, 20);
        Assert.Equal(1UL, state.LastHeader!.KeyEpoch);

        // Height 1 predates the key epoch: nothing to sign there. Heights 2 and 3 wait.
        Assert.Equal([2UL, 3UL], state.UnsignedHeights(10));

        await ApplyAsync(state, Publish(1, 1, 4));
        await ApplyAsync(state, Publish(2, 1, 4));
        Assert.Equal((4, 5UL), state.CommitmentsOf(1));

        await ApplyAsync(state, new SigningSessionsCommand
        {
            Sessions = [new SigningSession { Height = 2, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [1, 1] }],
        });
        var session = Assert.Single(started);
        Assert.Equal(state.GetBatch(2)!.Header.Commitment.ToArray(), session.Message);
        Assert.Equal((3, 5UL), state.CommitmentsOf(1));

        // A wrong share makes an invalid aggregate: never stored (INV-SIGVALID).
        await ApplyAsync(state, new BatchSignaturesCommand { Signatures = [SignSession(session, corruptShareOf2: true)] });
        Assert.False(state.IsSigned(2));
        Assert.Null(state.GetSignature(2));

        var first = SignSession(session);
        await ApplyAsync(state, new BatchSignaturesCommand { Signatures = [first] });
        Assert.True(state.IsSigned(2));
        Assert.Equal(first.Z, state.GetSignature(2)!.Z);
        Assert.True(Frost.Verify(session.Message, FrostSignature.Decode([.. first.R, .. first.Z]), group.PublicKey));

        // A second valid signature of the same height (another session) does not replace the first (INV-ONESIG).
        await ApplyAsync(state, new SigningSessionsCommand
        {
            Sessions = [new SigningSession { Height = 2, Attempt = 2, KeyEpoch = 1, Signers = [1, 2], Sequences = [2, 2] }],
        });
        Assert.Empty(started.Skip(1));
        await ApplyAsync(state, new SigningSessionsCommand
        {
            Sessions = [new SigningSession { Height = 3, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [2, 2] }],
        });
        var third = started[^1];
        Assert.Equal(3UL, third.Session.Height);
        await ApplyAsync(state, new BatchSignaturesCommand { Signatures = [SignSession(third)] });
        Assert.Equal(3UL, state.SignedWatermark);
        Assert.Empty(state.UnsignedHeights(10));

        // A signature over another height's commitment, or for a height not yet ordered, is refused.
        await ApplyBatchAsync(state, 30);
        var misplaced = SignSession(third);
        await ApplyAsync(state, new BatchSignaturesCommand { Signatures = [new BatchSignature { Height = 4, KeyEpoch = 1, Signers = misplaced.Signers, R = misplaced.R, Z = misplaced.Z }] });
        Assert.False(state.IsSigned(4));
        await ApplyAsync(state, new BatchSignaturesCommand { Signatures = [new BatchSignature { Height = 99, KeyEpoch = 1, Signers = misplaced.Signers, R = misplaced.R, Z = misplaced.Z }] });
        Assert.False(state.IsSigned(99));
    }

    [Fact]
    public async Task Commitments_NeedTheSignersProof_AndASessionUsesEachCommitmentOnce()
    {
        await using var state = Open(new InMemoryBatchStore());
        var started = new List<AppliedSession>();
        state.SessionsStarted += started.AddRange;
        await ApplyAsync(state, Epoch());
        await ApplyBatchAsync(state, 1);

        // Signer 3 cannot publish in signer 1's name; a replayed or overlapping publication is ignored.
        await ApplyAsync(state, Publish(1, 1, 3, prover: shares[2]));
        Assert.Equal(0, state.CommitmentsOf(1).Available);
        await ApplyAsync(state, Publish(1, 1, 3));
        await ApplyAsync(state, Publish(1, 2, 3));
        Assert.Equal((3, 4UL), state.CommitmentsOf(1));
        await ApplyAsync(state, Publish(3, 1, 3));

        // A session needs t signers, each with a published and unused commitment.
        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 1, Attempt = 1, KeyEpoch = 1, Signers = [1], Sequences = [1] }] });
        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 1, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [1, 1] }] });
        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 1, Attempt = 1, KeyEpoch = 1, Signers = [3, 1], Sequences = [1, 1] }] });
        Assert.Empty(started);

        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 1, Attempt = 1, KeyEpoch = 1, Signers = [1, 3], Sequences = [1, 1] }] });
        Assert.Single(started);
        await ApplyAsync(state, new SigningSessionsCommand { Sessions = [new SigningSession { Height = 1, Attempt = 2, KeyEpoch = 1, Signers = [1, 3], Sequences = [1, 2] }] });
        Assert.Single(started);
        Assert.Equal([2UL, 3UL], state.AvailableSequences(1, 10));
    }

    [Fact]
    public async Task SigningState_SurvivesAReopen_AndTravelsInASnapshot()
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
            await ApplyAsync(state, new SigningSessionsCommand
            {
                Sessions = [.. Enumerable.Range(1, 4).Select(h => new SigningSession { Height = (ulong)h, Attempt = 1, KeyEpoch = 1, Signers = [1, 3], Sequences = [(ulong)h, (ulong)h] })],
            });
            await ApplyAsync(state, new BatchSignaturesCommand { Signatures = [.. started.Take(3).Select(s => SignSession(s))] });
            Assert.Equal(3UL, state.SignedWatermark);
            await state.FlushAsync(CancellationToken.None);
        }

        await using var reopened = Open(store, retained: 0);
        Assert.Equal(1UL, reopened.CurrentKeyEpoch!.Epoch);
        Assert.Equal(3UL, reopened.SignedWatermark);
        Assert.NotNull(reopened.GetSignature(2));
        Assert.Null(reopened.GetSignature(4));
        Assert.Equal((4, 9UL), reopened.CommitmentsOf(1));
        Assert.Equal([5UL, 6UL, 7UL, 8UL], reopened.AvailableSequences(3, 10));

        var snapshot = reopened.CurrentSnapshot!;
        using var stream = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, stream, 4096, CancellationToken.None);
        await using var empty = Open(new InMemoryBatchStore());
        await empty.InstallSnapshotAsync(new MemoryStream(stream.ToArray()), snapshot.Index, snapshot.Term, CancellationToken.None);
        Assert.Equal(1UL, empty.CurrentKeyEpoch!.Epoch);
        Assert.Equal(reopened.GetSignature(3)!.Z, empty.GetSignature(3)!.Z);
        Assert.Equal(3UL, empty.SignedWatermark);
        Assert.Equal(reopened.CommitmentsOf(1), empty.CommitmentsOf(1));

        // A snapshot whose signature was tampered with is refused.
        var bytes = stream.ToArray();
        var z = reopened.GetSignature(3)!.Z;
        var at = IndexOf(bytes, z);
        Assert.True(at > 0);
        bytes[at + 5] ^= 1;
        await using var victim = Open(new InMemoryBatchStore());
        await Assert.ThrowsAnyAsync<Exception>(() => victim.InstallSnapshotAsync(new MemoryStream(bytes), snapshot.Index, snapshot.Term, CancellationToken.None));
    }

    [Fact]
    public void NonceStore_TakesEachNonceOnceDurably_AndIsOwnerOnly()
    {
        var directory = Path.Combine(Path.GetTempPath(), "nonce-store-" + Guid.NewGuid().ToString("N"));
        directories.Add(directory);
        var share = shares[0];
        IReadOnlyList<StoredNonceCommitment> generated;
        using (var store = new NonceStore(directory))
        {
            generated = store.Generate(1, share, 1, 5);
            Assert.Equal(6UL, store.NextSequence(1));
            Assert.Throws<InvalidOperationException>(() => store.Generate(1, share, 3, 1));
            var taken = store.Take(1, [2, 3, 99]);
            Assert.Equal([2UL, 3UL], taken.Keys.Order());
            Assert.Equal(generated[1].Commitment, taken[2].Commitment);
            var commitment = Frost.CommitmentOf(1, taken[2].Nonces);
            byte[] recomputed = [.. Secp256k1.SerializeElement(commitment.Hiding), .. Secp256k1.SerializeElement(commitment.Binding)];
            Assert.Equal(generated[1].Commitment, recomputed);
        }

        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(directory));
        using (var reopened = new NonceStore(directory))
        {
            // Taken nonces stay gone after a restart; the others are still there.
            Assert.Empty(reopened.Take(1, [2, 3]));
            Assert.Equal(3, reopened.Count);
            Assert.Equal(1, reopened.Prune(5, s => s == 4));
            Assert.Equal([4UL, 5UL], reopened.CommitmentsFrom(1, 10).Select(c => c.Sequence));

            // A new epoch starts over.
            reopened.Generate(2, share, 1, 2);
            Assert.Equal(2, reopened.Count);
            Assert.Empty(reopened.Take(1, [4]));
        }
    }

    [Fact]
    public void NonceStore_UsedNonceLog_SurvivesARestartBeforeCompaction_RecordsEachUseOnce_AndIgnoresATornTail()
    {
        var directory = Path.Combine(Path.GetTempPath(), "nonce-store-" + Guid.NewGuid().ToString("N"));
        directories.Add(directory);
        var use = new NonceUse(7, 1, [1, 2, 3], [1, 2], new byte[32]);
        using (var store = new NonceStore(directory))
        {
            store.Generate(1, shares[0], 1, 6);
            Assert.Equal([1UL, 2UL], store.Take(1, new Dictionary<ulong, NonceUse?> { [1] = use, [2] = use with { Height = 8 } }).Keys.Order());
            Assert.Equal(2, store.Uncompacted);
            Assert.Equal(4, store.Count);
            Assert.DoesNotContain(store.CommitmentsFrom(1, 10), c => c.Sequence is 1 or 2);

            // Taken but not compacted: the log alone says they are used.
            Assert.Empty(store.Take(1, [1, 2]));
        }

        // A crash can leave half a record at the end of the log: that take never returned, so its share never left.
        File.AppendAllBytes(Directory.GetFiles(directory, "used-*.log").Single(), [40, 0, 0, 0, 1, 2, 3]);
        using (var reopened = new NonceStore(directory))
        {
            Assert.Equal(0, reopened.Uncompacted);
            Assert.Empty(reopened.Take(1, [1, 2]));
            Assert.Equal(4, reopened.Count);
            var uses = reopened.Uses(0, 10);
            Assert.Equal([(1UL, 7UL), (2UL, 8UL)], uses.Select(u => (u.Sequence, u.Use.Height)));
            Assert.Single(reopened.Take(1, new Dictionary<ulong, NonceUse?> { [3] = use with { Height = 9 } }));
            reopened.Compact();
            reopened.Compact();
            Assert.Equal(3, reopened.Uses(0, 10).Count);
        }
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

    public void Dispose()
    {
        foreach (var directory in directories)
        {
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
