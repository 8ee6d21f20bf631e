using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;
using BigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Tests;

/// <summary>The Pedersen DKG run through the log: <see cref="AppliedState"/>'s DKG entries and <see cref="DkgShareCipher"/>.</summary>
public sealed class DkgStateTests
{
    private const ulong ChainId = 42;
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 1, MaxUnpersistedBatches = 16, PersistIntervalMs = 10 };
    private long index;

    private static AppliedState Open(IBatchStore store)
        => new(store, new ChainParameters(ChainId, 0), Limits, WalRetention.None, new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance);

    private Task<AppliedBatch?> ApplyAsync(AppliedState state, ILogCommand command) => state.ApplyAsync(command, ++index, 1, CancellationToken.None).AsTask();

    /// <summary>One simulated participant: its DKG instance and round two decryption key.</summary>
    private sealed class Participant(int id, int t, int n, byte[] context)
    {
        public int Id { get; } = id;

        public PedersenDkg Dkg { get; } = new(id, t, n, context);

        public BigInteger EncryptionSecret { get; } = Secp256k1.RandomScalar();

        public DkgRound1Command Round1(ulong epoch, int attempt)
        {
            var message = Dkg.Round1();
            return new DkgRound1Command
            {
                Epoch = epoch,
                Attempt = attempt,
                From = Id,
                Commitment = [.. message.Commitment.Select(Secp256k1.SerializeElement)],
                ProofR = Secp256k1.SerializeElement(message.ProofR),
                ProofMu = Secp256k1.SerializeScalar(message.ProofMu),
                EncryptionKey = Secp256k1.SerializeElement(Secp256k1.BaseMultiply(EncryptionSecret)),
            };
        }
    }

    private static DkgRound1 Decode(DkgRound1Command c)
        => new(c.From, [.. c.Commitment.Select(p => Secp256k1.DeserializeElement(p))], Secp256k1.DeserializeElement(c.ProofR), Secp256k1.DeserializeScalar(c.ProofMu));

    /// <summary>Runs rounds one and two for everyone, then each participant decrypts and finishes; returns the shares.</summary>
    private async Task<(List<KeyShare> Shares, GroupKey Group, List<DkgRound2Command> Round2)> RunRoundsAsync(AppliedState state, List<Participant> people, byte[] context, Func<int, int, BigInteger, BigInteger>? tamper = null)
    {
        var round1 = people.Select(p => p.Round1(1, 1)).ToList();
        foreach (var message in round1)
            await ApplyAsync(state, message);
        foreach (var p in people)
        {
            foreach (var message in round1.Where(m => m.From != p.Id))
                Assert.Null(p.Dkg.Receive(Decode(message)));
        }

        var round2 = people.Select(p => new DkgRound2Command
        {
            Epoch = 1,
            Attempt = 1,
            From = p.Id,
            Shares = [.. p.Dkg.Round2().Select(s => new DkgEncryptedShare
            {
                To = s.To,
                Ciphertext = DkgShareCipher.Encrypt(tamper?.Invoke(p.Id, s.To, s.Share) ?? s.Share, p.EncryptionSecret,
                    Secp256k1.DeserializeElement(round1[s.To - 1].EncryptionKey), context, p.Id, s.To),
            })],
        }).ToList();
        foreach (var message in round2)
            await ApplyAsync(state, message);

        var shares = new List<KeyShare>();
        GroupKey? group = null;
        foreach (var p in people)
        {
            var received = round2.Where(m => m.From != p.Id).Select(m => new DkgRound2(m.From, p.Id,
                DkgShareCipher.Decrypt(m.Shares.Single(s => s.To == p.Id).Ciphertext, p.EncryptionSecret,
                    Secp256k1.DeserializeElement(round1[m.From - 1].EncryptionKey), context, m.From, p.Id)!)).ToList();
            var (share, g, complaints) = p.Dkg.Finish(received);
            if (complaints.Count > 0)
                return (shares, null!, round2);
            shares.Add(share!);
            group = g;
        }

        return (shares, group!, round2);
    }

    private static DkgConfirmCommand Confirm(KeyShare share, GroupKey group)
    {
        var unsigned = new DkgConfirmCommand { Epoch = 1, Attempt = 1, From = share.Identifier, GroupKey = Secp256k1.SerializeElement(group.PublicKey) };
        return new DkgConfirmCommand
        {
            Epoch = 1,
            Attempt = 1,
            From = share.Identifier,
            GroupKey = unsigned.GroupKey,
            Proof = SignerProof.Sign(DkgLedger.ConfirmProofDomain, unsigned.ProofPayload(), share.Secret),
        };
    }

    [Fact]
    public async Task ThreeNodeDkgThroughTheLog_PutsTheKeyEpochInForce_AndAnyTwoSharesSign()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        Assert.Equal(context, state.Dkg!.Context);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        var (shares, group, _) = await RunRoundsAsync(state, people, context);
        Assert.Equal("confirm", state.Dkg!.Stage);
        Assert.Equal(group.PublicKey, state.Dkg.Group!.PublicKey);

        // A confirmation signed by the wrong share, or naming another group key, is not taken.
        var forged = Confirm(new KeyShare(2, shares[0].Secret), group);
        Assert.NotNull(state.DkgRejection(forged));
        foreach (var share in shares)
            await ApplyAsync(state, Confirm(share, group));

        Assert.Null(state.Dkg);
        var epoch = state.CurrentKeyEpoch!;
        Assert.Equal(1UL, epoch.Epoch);
        Assert.Equal(group.PublicKey, epoch.Group.PublicKey);
        await state.FlushAsync(CancellationToken.None);
        Assert.Empty(store.ReadDkgEntries());
        Assert.Single(store.ReadKeyEpochs());

        // Any two of the three shares make a signature under the key nobody ever held.
        var message = "dkg"u8.ToArray();
        foreach (var pair in new[] { (0, 1), (0, 2), (1, 2) })
        {
            var signers = new[] { shares[pair.Item1], shares[pair.Item2] };
            var commits = signers.Select(s => Frost.Commit(s.Identifier, s.Secret)).ToList();
            var session = new FrostSession(group.PublicKey, [.. commits.Select(c => c.Item2)], message);
            var zs = signers.Select((s, i) => session.Sign(s, commits[i].Item1)).ToList();
            Assert.True(Frost.Verify(message, session.Aggregate(zs), group.PublicKey));
        }
    }

    [Fact]
    public async Task DkgStartThatDoesNotFitThisNodesConfiguration_IsRefusedAndIgnored()
    {
        // Issue 9: a node took any DkgStart the log held (any n up to 255, any t of at least 1), so whoever reached an
        // internal route could start a DKG of 255 members needing 4, and play all but three of them.
        using var store = new InMemoryBatchStore();
        await using var configured = new AppliedState(store, new ChainParameters(ChainId, 0), Limits, WalRetention.None,
            new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance, dkgPolicy: new DkgPolicy(3, 2));
        var many = new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 4, Members = [.. Enumerable.Range(1, 255)] };
        var lowThreshold = new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 1, Members = [1, 2, 3] };
        Assert.Contains("configured with 3", configured.DkgRejection(many), StringComparison.Ordinal);
        Assert.Contains("configured with 2", configured.DkgRejection(lowThreshold), StringComparison.Ordinal);
        await ApplyAsync(configured, many);
        await ApplyAsync(configured, lowThreshold);
        Assert.Null(configured.Dkg);

        // The configured shape is taken.
        await ApplyAsync(configured, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        Assert.Equal(2, configured.Dkg!.Threshold);

        // No threshold configured (one asked for with keygen --dkg): any t from 2, never 1.
        var policy = new DkgPolicy(3, null);
        Assert.NotNull(policy.Rejection(lowThreshold));
        Assert.Null(policy.Rejection(new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 3, Members = [1, 2, 3] }));
        Assert.Null(new DkgPolicy(1, null).Rejection(new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 1, Members = [1] }));
    }

    [Fact]
    public async Task WithIdentities_EveryDkgMessageMustBeSignedByItsSendersIdentityKey_AtApply()
    {
        // Members' identity keys (ECDSA P-256), pinned through the policy; the leader cannot forge a member's message.
        var keys = Enumerable.Range(1, 3).ToDictionary(id => id, _ => System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256));
        try
        {
            var policy = new DkgPolicy(3, 2, keys.ToDictionary(k => k.Key, k => k.Value.ExportSubjectPublicKeyInfo()));
            using var store = new InMemoryBatchStore();
            await using var state = new AppliedState(store, new ChainParameters(ChainId, 0), Limits, WalRetention.None,
                new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance, dkgPolicy: policy);
            await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
            var context = DkgLedger.Context(ChainId, 1, 1);
            var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
            var round1 = people[0].Round1(1, 1);

            // Unsigned, signed by another member's key, or signed and then altered (a different encryption key): refused.
            Assert.Contains("not signed by its identity key", state.DkgRejection(round1), StringComparison.Ordinal);
            var byOther = (DkgRound1Command)DkgIdentity.Sign(round1, ChainId, keys[2]);
            Assert.Contains("did not make", state.DkgRejection(byOther), StringComparison.Ordinal);
            var signed = (DkgRound1Command)DkgIdentity.Sign(round1, ChainId, keys[1]);
            var swapped = (DkgRound1Command)new DkgRound1Command
            {
                Epoch = 1, Attempt = 1, From = 1, Commitment = signed.Commitment, ProofR = signed.ProofR, ProofMu = signed.ProofMu,
                EncryptionKey = people[2].Round1(1, 1).EncryptionKey,
            }.WithIdentity(signed.Identity);
            Assert.NotNull(state.DkgRejection(swapped));
            Assert.NotNull(state.DkgRejection(DkgIdentity.Sign(round1, ChainId + 1, keys[1])));
            await ApplyAsync(state, round1);
            await ApplyAsync(state, byOther);
            await ApplyAsync(state, swapped);
            Assert.Empty(state.Dkg!.Round1);

            // Signed by its own sender: taken.
            Assert.Null(state.DkgRejection(signed));
            await ApplyAsync(state, signed);
            Assert.Single(state.Dkg!.Round1);

            // A complaint in member 2's name by anyone but member 2 cannot fail the attempt.
            var complaint = new DkgComplaintCommand { Epoch = 1, Attempt = 1, From = 2, Accused = 3, Reason = "forged" };
            await ApplyAsync(state, DkgIdentity.Sign(complaint, ChainId, keys[1]));
            await ApplyAsync(state, complaint);
            Assert.Null(state.Dkg!.Failure);
            await ApplyAsync(state, DkgIdentity.Sign(complaint, ChainId, keys[2]));
            Assert.Contains("member 2 accuses member 3", state.Dkg!.Failure, StringComparison.Ordinal);
        }
        finally
        {
            foreach (var key in keys.Values)
                key.Dispose();
        }
    }

    [Fact]
    public async Task BadRound1Proof_IsRejected_AndATamperedShareLeadsToAComplaintThatFailsTheAttempt()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);

        // A round one message bound to another context (replayed from another chain or attempt) has no valid proof here.
        var stranger = new Participant(1, 2, 3, DkgLedger.Context(ChainId + 1, 1, 1)).Round1(1, 1);
        Assert.Contains("proof of knowledge", state.DkgRejection(stranger), StringComparison.Ordinal);
        await ApplyAsync(state, stranger);
        Assert.Empty(state.Dkg!.Round1);

        // Member 3 sends member 1 a share that does not match its commitment: member 1 cannot finish and complains.
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        var (shares, _, _) = await RunRoundsAsync(state, people, context, (from, to, share) => from == 3 && to == 1 ? share.Add(BigInteger.One) : share);
        Assert.Empty(shares);
        await ApplyAsync(state, new DkgComplaintCommand { Epoch = 1, Attempt = 1, From = 1, Accused = 3, Reason = "share does not match the sender's commitment" });
        Assert.Equal("failed", state.Dkg!.Stage);
        Assert.Contains("member 1 accuses member 3", state.Dkg.Failure, StringComparison.Ordinal);

        // The next attempt starts over; the failed attempt's entries are no longer accepted.
        var again = new DkgStartCommand { Epoch = 1, Attempt = 2, Threshold = 2, Members = [1, 2, 3] };
        Assert.Null(state.DkgRejection(again));
        await ApplyAsync(state, again);
        Assert.Equal(2, state.Dkg!.Attempt);
        Assert.NotNull(state.DkgRejection(people[0].Round1(1, 1)));
        Assert.Null(state.CurrentKeyEpoch);
    }

    [Fact]
    public async Task RestartInTheMiddleOfADkg_RebuildsItFromTheStore()
    {
        using var store = new InMemoryBatchStore();
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        List<DkgRound2Command> round2;
        await using (var state = Open(store))
        {
            await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
            (_, _, round2) = await RunRoundsAsync(state, people, context);
            await state.FlushAsync(CancellationToken.None);
        }

        await using var reopened = Open(store);
        var view = reopened.Dkg!;
        Assert.Equal("confirm", view.Stage);
        Assert.Equal([1, 2, 3], view.Round1.Keys.Order());
        Assert.Equal(round2[1].Shares[0].Ciphertext, view.Round2[2].Shares[0].Ciphertext);
    }

    [Fact]
    public void ShareCipher_RoundTrips_AndAWrongKeyDoesNotRecoverTheShare()
    {
        var context = DkgLedger.Context(ChainId, 1, 1);
        var sender = Secp256k1.RandomScalar();
        var receiver = Secp256k1.RandomScalar();
        var share = Secp256k1.RandomScalar();
        var ciphertext = DkgShareCipher.Encrypt(share, sender, Secp256k1.BaseMultiply(receiver), context, 1, 2);
        Assert.Equal(DkgShareCipher.CiphertextLength, ciphertext.Length);
        Assert.Equal(share, DkgShareCipher.Decrypt(ciphertext, receiver, Secp256k1.BaseMultiply(sender), context, 1, 2));
        Assert.NotEqual(share, DkgShareCipher.Decrypt(ciphertext, Secp256k1.RandomScalar(), Secp256k1.BaseMultiply(sender), context, 1, 2));
        Assert.NotEqual(share, DkgShareCipher.Decrypt(ciphertext, receiver, Secp256k1.BaseMultiply(sender), context, 2, 1));
        Assert.NotEqual(share, DkgShareCipher.Decrypt(ciphertext, receiver, Secp256k1.BaseMultiply(sender), DkgLedger.Context(ChainId, 1, 2), 1, 2));

        // A tampered ciphertext (any bit, share or tag) fails its tag: told apart from a dealer's bad share.
        for (var bit = 0; bit < ciphertext.Length * 8; bit += 13)
        {
            var tampered = (byte[])ciphertext.Clone();
            tampered[bit / 8] ^= (byte)(1 << (bit % 8));
            var (opened, problem) = DkgShareCipher.Open(tampered, receiver, Secp256k1.BaseMultiply(sender), context, 1, 2);
            Assert.Null(opened);
            Assert.Contains("authentication tag", problem, StringComparison.Ordinal);
        }

        // A wrong length is refused with the reason.
        Assert.Contains("bytes", DkgShareCipher.Open(new byte[40], receiver, Secp256k1.BaseMultiply(sender), context, 1, 2).Problem, StringComparison.Ordinal);
    }

    [Fact]
    public void CoefficientsFromSeed_AreDeterministicAndDistinct()
    {
        var seed = new byte[32];
        seed[0] = 7;
        var a = PedersenDkg.CoefficientsFromSeed(seed, 3);
        Assert.Equal(a, PedersenDkg.CoefficientsFromSeed(seed, 3));
        Assert.Equal(3, a.Distinct().Count());
        seed[0] = 8;
        Assert.NotEqual(a[0], PedersenDkg.CoefficientsFromSeed(seed, 3)[0]);
    }
}
