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
        var (round1, round2) = await DealAsync(state, people, context, tamper);
        var (shares, group) = FinishAll(people, round1, round2, context, null);
        return (shares, group!, round2);
    }

    /// <summary>Each participant in <paramref name="qualified"/> (null: everyone) decrypts the qualified dealers' shares and finishes; no shares when one cannot.</summary>
    private static (List<KeyShare> Shares, GroupKey? Group) FinishAll(List<Participant> people, List<DkgRound1Command> round1, List<DkgRound2Command> round2, byte[] context, IReadOnlyList<int>? qualified)
    {
        var shares = new List<KeyShare>();
        GroupKey? group = null;
        foreach (var p in people.Where(p => qualified?.Contains(p.Id) != false))
        {
            var received = round2.Where(m => m.From != p.Id && qualified?.Contains(m.From) != false).Select(m => new DkgRound2(m.From, p.Id,
                DkgShareCipher.Decrypt(m.Shares.Single(s => s.To == p.Id).Ciphertext, p.EncryptionSecret,
                    Secp256k1.DeserializeElement(round1[m.From - 1].EncryptionKey), context, m.From, p.Id)!)).ToList();
            var (share, g, complaints) = p.Dkg.Finish(received, qualified);
            if (complaints.Count > 0)
                return ([], null);
            shares.Add(share!);
            group = g;
        }

        return (shares, group);
    }

    /// <summary>A complaint by <paramref name="accuser"/> against <paramref name="accused"/> with true evidence (the ECDH point and its DLEQ proof).</summary>
    private static DkgComplaintCommand Complaint(Participant accuser, int accused, List<DkgRound1Command> round1, byte[] context, string reason = "share does not match the sender's commitment")
    {
        var (shared, proof) = Dleq.Prove(accuser.EncryptionSecret, Secp256k1.DeserializeElement(round1[accused - 1].EncryptionKey), DkgLedger.ComplaintContext(context, accuser.Id, accused));
        return new DkgComplaintCommand { Epoch = 1, Attempt = 1, From = accuser.Id, Accused = accused, Reason = reason, SharedPoint = Secp256k1.SerializeElement(shared), Proof = proof };
    }

    /// <summary>Rounds one and two through the log; <paramref name="tamper"/> changes a dealt share, <paramref name="tamperCiphertext"/> an encrypted one.</summary>
    private async Task<(List<DkgRound1Command> Round1, List<DkgRound2Command> Round2)> DealAsync(AppliedState state, List<Participant> people, byte[] context,
        Func<int, int, BigInteger, BigInteger>? tamper = null, Func<int, int, byte[], byte[]>? tamperCiphertext = null)
    {
        var round1 = people.Select(p => p.Round1(1, 1)).ToList();
        foreach (var message in round1)
            await ApplyAsync(state, message);
        var round2 = Round2Of(people, round1, context, tamper, tamperCiphertext);
        foreach (var message in round2)
            await ApplyAsync(state, message);
        return (round1, round2);
    }

    /// <summary>Every participant takes the others' round one broadcasts and deals its round two (epoch 1, attempt 1), encrypted.</summary>
    private static List<DkgRound2Command> Round2Of(List<Participant> people, List<DkgRound1Command> round1, byte[] context,
        Func<int, int, BigInteger, BigInteger>? tamper = null, Func<int, int, byte[], byte[]>? tamperCiphertext = null)
    {
        foreach (var p in people)
        {
            foreach (var message in round1.Where(m => m.From != p.Id))
                Assert.Null(p.Dkg.Receive(Decode(message)));
        }

        return [.. people.Select(p => new DkgRound2Command
        {
            Epoch = 1,
            Attempt = 1,
            From = p.Id,
            Shares = [.. p.Dkg.Round2().Select(s => new DkgEncryptedShare
            {
                To = s.To,
                Ciphertext = (tamperCiphertext ?? ((_, _, c) => c))(p.Id, s.To, DkgShareCipher.Encrypt(tamper?.Invoke(p.Id, s.To, s.Share) ?? s.Share, p.EncryptionSecret,
                    Secp256k1.DeserializeElement(round1[s.To - 1].EncryptionKey), context, p.Id, s.To)),
            })],
        })];
    }

    /// <summary>Any <paramref name="t"/> of <paramref name="shares"/> sign under <paramref name="group"/>'s key.</summary>
    private static void AssertSigns(List<KeyShare> shares, GroupKey group, int t)
    {
        var message = "dkg"u8.ToArray();
        for (var first = 0; first + t <= shares.Count; first++)
        {
            var signers = shares.Skip(first).Take(t).ToList();
            var commits = signers.Select(s => Frost.Commit(s.Identifier, s.Secret)).ToList();
            var session = new FrostSession(group.PublicKey, [.. commits.Select(c => c.Item2)], message);
            var zs = signers.Select((s, i) => session.Sign(s, commits[i].Item1)).ToList();
            Assert.True(Frost.Verify(message, session.Aggregate(zs), group.PublicKey));
        }
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

            // A complaint in member 2's name by anyone but member 2 is refused; member 2's own, without a round two
            // share to judge and without evidence, proves nothing either: nobody is disqualified, nothing fails.
            var complaint = new DkgComplaintCommand { Epoch = 1, Attempt = 1, From = 2, Accused = 3, Reason = "forged" };
            Assert.Contains("did not make", state.DkgRejection(DkgIdentity.Sign(complaint, ChainId, keys[1])), StringComparison.Ordinal);
            await ApplyAsync(state, DkgIdentity.Sign(complaint, ChainId, keys[1]));
            await ApplyAsync(state, complaint);
            Assert.Contains("no round two share", state.DkgRejection(DkgIdentity.Sign(complaint, ChainId, keys[2])), StringComparison.Ordinal);
            await ApplyAsync(state, DkgIdentity.Sign(complaint, ChainId, keys[2]));
            Assert.Null(state.Dkg!.Failure);
            Assert.Empty(state.Dkg.Disqualified);
        }
        finally
        {
            foreach (var key in keys.Values)
                key.Dispose();
        }
    }

    [Fact]
    public async Task ARotation_StartsOnlyWithTheVotesOfTMembers_EachSignedByItsVoter_AndTheVotesSurviveARestart()
    {
        // One member's request no longer starts a rotation: t members (the threshold of the key in force) must vote
        // for it, each vote signed by the voter's identity key, and apply refuses the rotation's DkgStart without them.
        var keys = Enumerable.Range(1, 3).ToDictionary(id => id, _ => System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256));
        try
        {
            var (_, group) = TrustedDealer.Generate(2, 3);
            var epochOne = SigningFixtures.EpochOne(group);
            var policy = new DkgPolicy(3, null, keys.ToDictionary(k => k.Key, k => k.Value.ExportSubjectPublicKeyInfo())) { DealerKey = epochOne };
            AppliedState OpenWithPolicy(IBatchStore on) => new(on, new ChainParameters(ChainId, 0), Limits, WalRetention.None,
                new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance, dkgPolicy: policy);
            KeyRotationVoteCommand Vote(int from, ulong epoch = 2, int threshold = 2) => new() { Epoch = epoch, Threshold = threshold, From = from };
            IDkgMessage Signed(KeyRotationVoteCommand vote, int by) => DkgIdentity.Sign(vote, ChainId, keys[by]);
            var start = new DkgStartCommand { Epoch = 2, Attempt = 1, Threshold = 2, Members = [1, 2, 3] };

            using var store = new InMemoryBatchStore();
            await using (var state = OpenWithPolicy(store))
            {
                // Before the first key there is nothing to rotate.
                Assert.Contains("no key to rotate", state.DkgRejection(Signed(Vote(1, epoch: 1), 1)), StringComparison.Ordinal);
                await ApplyAsync(state, epochOne);
                Assert.Equal(1UL, state.CurrentKeyEpoch!.Epoch);
                Assert.Contains("needs the votes of 2 members", state.DkgRejection(start), StringComparison.Ordinal);
                Assert.Contains("it has 0", state.DkgRejection(start), StringComparison.Ordinal);

                // Refused: unsigned, signed by another member, for another epoch, another threshold, a non-member.
                Assert.Contains("not signed by its identity key", state.DkgRejection(Vote(1)), StringComparison.Ordinal);
                Assert.Contains("did not make", state.DkgRejection(Signed(Vote(1), 2)), StringComparison.Ordinal);
                Assert.Contains("next key epoch is 2", state.DkgRejection(Signed(Vote(1, epoch: 3), 1)), StringComparison.Ordinal);
                Assert.Contains("keeps the threshold 2", state.DkgRejection(Signed(Vote(1, threshold: 3), 1)), StringComparison.Ordinal);
                Assert.Contains("not one of the 3 members", state.DkgRejection(Vote(4)), StringComparison.Ordinal);
                foreach (var refused in new ILogCommand[] { Vote(1), Signed(Vote(1), 2), Signed(Vote(1, epoch: 3), 1) })
                    await ApplyAsync(state, refused);
                Assert.Empty(state.RotationVotes);

                // One vote: not enough, and the DkgStart is ignored by apply; the same vote again is refused.
                await ApplyAsync(state, Signed(Vote(1), 1));
                Assert.Equal([1], state.RotationVotes[2]);
                Assert.Contains("already voted", state.DkgRejection(Signed(Vote(1), 1)), StringComparison.Ordinal);
                Assert.Contains("it has 1", state.DkgRejection(start), StringComparison.Ordinal);
                await ApplyAsync(state, start);
                Assert.Null(state.Dkg);
                await state.FlushAsync(CancellationToken.None);
            }

            // The vote is kept with the key generation's entries: a restarted node still counts it.
            await using (var reopened = OpenWithPolicy(store))
            {
                Assert.Equal([1], reopened.RotationVotes[2]);
                await ApplyAsync(reopened, Signed(Vote(3), 3));
                Assert.Equal([1, 3], reopened.RotationVotes[2]);
                Assert.Null(reopened.DkgRejection(start));
                await ApplyAsync(reopened, start);
                Assert.Equal(2UL, reopened.Dkg!.Epoch);
                Assert.Empty(reopened.RotationVotes);

                // Once its key generation started, no more votes for that epoch are taken.
                Assert.Contains("has started", reopened.DkgRejection(Signed(Vote(2), 2)), StringComparison.Ordinal);
                await reopened.FlushAsync(CancellationToken.None);
            }

            // The votes that approved it stay with its entries: a restart replays the DkgStart as approved (they were
            // dropped with the DkgStart at first, and a restarted node then refused its own key generation).
            Assert.Equal(3, store.ReadDkgEntries().Count);
            await using var again = OpenWithPolicy(store);
            Assert.Equal(2UL, again.Dkg?.Epoch);
            Assert.Equal("round1", again.Dkg!.Stage);
        }
        finally
        {
            foreach (var key in keys.Values)
                key.Dispose();
        }
    }

    [Fact]
    public async Task BadRound1Proof_IsRejected()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });

        // A round one message bound to another context (replayed from another chain or attempt) has no valid proof here.
        var stranger = new Participant(1, 2, 3, DkgLedger.Context(ChainId + 1, 1, 1)).Round1(1, 1);
        Assert.Contains("proof of knowledge", state.DkgRejection(stranger), StringComparison.Ordinal);
        await ApplyAsync(state, stranger);
        Assert.Empty(state.Dkg!.Round1);
    }

    [Theory]
    [InlineData("wrong share")]
    [InlineData("tampered ciphertext")]
    public async Task ADealerOfABadShare_IsDisqualifiedByTheComplaintsEvidence_AndTheDkgCompletesWithTheQualifiedSet_AndTheKeySigns(string fault)
    {
        // Issue 9: a complaint failed the whole attempt without evidence. Now member 1 reveals the ECDH point it shares
        // with member 3 and proves it; every node opens member 3's share for member 1 itself and finds it bad.
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        var (round1, round2) = fault == "wrong share"
            ? await DealAsync(state, people, context, tamper: (from, to, share) => from == 3 && to == 1 ? share.Add(BigInteger.One) : share)
            : await DealAsync(state, people, context, tamperCiphertext: (from, to, c) => from == 3 && to == 1 ? [.. c.Take(5), (byte)(c[5] ^ 1), .. c.Skip(6)] : c);
        var fullGroup = state.Dkg!.Group!;

        // Member 2 confirms the key of all three before the complaint: its confirmation no longer counts afterwards.
        var (early, earlyGroup) = FinishAll([people[1]], round1, round2, context, null);
        Assert.Equal(fullGroup.PublicKey, earlyGroup!.PublicKey);
        await ApplyAsync(state, Confirm(early[0], earlyGroup));
        Assert.Equal([2], state.Dkg!.Confirmed);

        await ApplyAsync(state, Complaint(people[0], 3, round1, context));
        var view = state.Dkg!;
        Assert.Null(view.Failure);
        Assert.Equal([3], view.Disqualified.Keys);
        Assert.Contains(fault == "wrong share" ? "does not match its commitment" : "authentication tag", view.Disqualified[3], StringComparison.Ordinal);
        Assert.Equal([1, 2], view.Qualified);
        Assert.Empty(view.Confirmed);
        Assert.NotEqual(fullGroup.PublicKey, view.Group!.PublicKey);

        // The disqualified dealer can send nothing more; the qualified members finish with each other's shares only.
        Assert.Contains("disqualified", state.DkgRejection(Complaint(people[2], 1, round1, context)), StringComparison.Ordinal);
        var (shares, group) = FinishAll(people, round1, round2, context, [1, 2]);
        Assert.Equal(view.Group.PublicKey, group!.PublicKey);
        Assert.NotNull(state.DkgRejection(Confirm(early[0], earlyGroup)));
        foreach (var share in shares)
            await ApplyAsync(state, Confirm(share, group));

        Assert.Null(state.Dkg);
        var epoch = state.CurrentKeyEpoch!;
        Assert.Equal(group.PublicKey, epoch.Group.PublicKey);
        Assert.Equal([1, 2], epoch.Group.VerificationShares.Keys.Order());
        AssertSigns(shares, epoch.Group, 2);
    }

    [Fact]
    public async Task AMemberThatLiesInAComplaint_IsDisqualified_AndTheDkgCompletesWithTheQualifiedSet_AndTheKeySigns()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        var (round1, round2) = await DealAsync(state, people, context);

        // Member 3 accuses member 1 of a share that is good: the revealed share opens and matches, so member 3 lied.
        await ApplyAsync(state, Complaint(people[2], 1, round1, context, "a lie"));
        var view = state.Dkg!;
        Assert.Null(view.Failure);
        Assert.Equal([3], view.Disqualified.Keys);
        Assert.Contains("accused member 1 of a share that opens and matches", view.Disqualified[3], StringComparison.Ordinal);

        // The verdict is the same on a node that rebuilds the DKG from its store (apply is deterministic).
        await state.FlushAsync(CancellationToken.None);
        await using (var reopened = Open(store))
        {
            Assert.Equal([3], reopened.Dkg!.Disqualified.Keys);
            Assert.Equal(view.Group!.PublicKey, reopened.Dkg.Group!.PublicKey);
        }

        var (shares, group) = FinishAll(people, round1, round2, context, [1, 2]);
        foreach (var share in shares)
            await ApplyAsync(state, Confirm(share, group!));
        Assert.Null(state.Dkg);
        Assert.Equal(group!.PublicKey, state.CurrentKeyEpoch!.Group.PublicKey);
        AssertSigns(shares, state.CurrentKeyEpoch.Group, 2);
    }

    [Fact]
    public async Task AComplaintWithoutValidEvidence_IsRefused_AndDisqualifiesNobody()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        var (round1, _) = await DealAsync(state, people, context);
        var honest = Complaint(people[0], 3, round1, context);

        DkgComplaintCommand With(byte[] point, byte[] proof, int from = 1, int accused = 3)
            => new() { Epoch = 1, Attempt = 1, From = from, Accused = accused, Reason = "x", SharedPoint = point, Proof = proof };
        var cases = new (DkgComplaintCommand Complaint, string Reason)[]
        {
            (With([], []), "does not decode"),
            (With(honest.SharedPoint, []), "DLEQ"),
            (With(honest.SharedPoint, new byte[64]), "DLEQ"),
            (With(Secp256k1.SerializeElement(Secp256k1.BaseMultiply(Secp256k1.RandomScalar())), honest.Proof), "DLEQ"),
            // Member 2 replays member 1's evidence in its own name: the proof is bound to the accuser.
            (With(honest.SharedPoint, honest.Proof, from: 2), "DLEQ"),
            (With(honest.SharedPoint, honest.Proof, accused: 1), "another participant"),
        };
        foreach (var (complaint, reason) in cases)
        {
            Assert.Contains(reason, state.DkgRejection(complaint), StringComparison.Ordinal);
            await ApplyAsync(state, complaint);
        }

        Assert.Empty(state.Dkg!.Disqualified);
        Assert.Equal("confirm", state.Dkg.Stage);
    }

    [Fact]
    public async Task WhenFewerThanTRemainQualified_TheAttemptFails_AndANewOneStarts()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 3, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 3, 3, context)).ToList();
        var (round1, _) = await DealAsync(state, people, context, tamper: (from, to, share) => from == 3 && to == 1 ? share.Add(BigInteger.One) : share);
        await ApplyAsync(state, Complaint(people[0], 3, round1, context));
        Assert.Equal("failed", state.Dkg!.Stage);
        Assert.Contains("fewer than the threshold 3", state.Dkg.Failure, StringComparison.Ordinal);

        // The next attempt starts over; the failed attempt's entries are no longer accepted.
        var again = new DkgStartCommand { Epoch = 1, Attempt = 2, Threshold = 3, Members = [1, 2, 3] };
        Assert.Null(state.DkgRejection(again));
        await ApplyAsync(state, again);
        Assert.Equal(2, state.Dkg!.Attempt);
        Assert.Empty(state.Dkg.Disqualified);
        Assert.NotNull(state.DkgRejection(people[0].Round1(1, 1)));
        Assert.Null(state.CurrentKeyEpoch);
    }

    [Fact]
    public async Task AMemberSilentPastTheLimit_IsDisqualifiedByTVotes_AndTheOthersMakeTheKey()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        DkgSilenceCommand Vote(int from, int accused, string stage = "round1") => new() { Epoch = 1, Attempt = 1, From = from, Accused = accused, Stage = stage };

        // Members 1 and 2 send round one; member 3 says nothing.
        var round1 = people.Take(2).Select(p => p.Round1(1, 1)).ToList();
        foreach (var message in round1)
            await ApplyAsync(state, message);

        // Votes that prove nothing are refused: another stage, against a member that did its part, or twice by the same
        // voter.
        Assert.Contains("stage round2", state.DkgRejection(Vote(1, 3, "round2")), StringComparison.Ordinal);
        Assert.Contains("has done its part", state.DkgRejection(Vote(1, 2)), StringComparison.Ordinal);
        await ApplyAsync(state, Vote(1, 3));
        Assert.Contains("already voted", state.DkgRejection(Vote(1, 3)), StringComparison.Ordinal);
        Assert.Empty(state.Dkg!.Disqualified);

        // One vote is not enough (t = 2); the second disqualifies member 3, and round one is complete without it.
        await ApplyAsync(state, Vote(2, 3));
        var view = state.Dkg!;
        Assert.Equal([3], view.Disqualified.Keys);
        Assert.Contains("silent at round1: members 1, 2 voted", view.Disqualified[3], StringComparison.Ordinal);
        Assert.Equal("round2", view.Stage);
        Assert.Contains("disqualified", state.DkgRejection(people[2].Round1(1, 1)), StringComparison.Ordinal);

        // Round two goes only to members with a round one broadcast; one for member 3 as well is refused.
        foreach (var p in people.Take(2))
            Assert.Null(p.Dkg.Receive(Decode(round1.Single(m => m.From != p.Id))));
        var round2 = people.Take(2).Select(p => new DkgRound2Command
        {
            Epoch = 1,
            Attempt = 1,
            From = p.Id,
            Shares = [.. p.Dkg.Round2([1, 2]).Select(s => new DkgEncryptedShare
            {
                To = s.To,
                Ciphertext = DkgShareCipher.Encrypt(s.Share, p.EncryptionSecret, Secp256k1.DeserializeElement(round1[s.To - 1].EncryptionKey), context, p.Id, s.To),
            })],
        }).ToList();
        var padded = new DkgRound2Command { Epoch = 1, Attempt = 1, From = 1, Shares = [.. round2[0].Shares, new DkgEncryptedShare { To = 3, Ciphertext = round2[0].Shares[0].Ciphertext }] };
        Assert.Contains("every other participant with a round one broadcast", state.DkgRejection(padded), StringComparison.Ordinal);
        foreach (var message in round2)
            await ApplyAsync(state, message);

        var shares = new List<KeyShare>();
        GroupKey? group = null;
        foreach (var p in people.Take(2))
        {
            var m = round2.Single(r => r.From != p.Id);
            var share = DkgShareCipher.Decrypt(m.Shares.Single(s => s.To == p.Id).Ciphertext, p.EncryptionSecret, Secp256k1.DeserializeElement(round1[m.From - 1].EncryptionKey), context, m.From, p.Id)!;
            var (keyShare, g, complaints) = p.Dkg.Finish([new DkgRound2(m.From, p.Id, share)], [1, 2]);
            Assert.Empty(complaints);
            shares.Add(keyShare!);
            group = g;
        }

        foreach (var share in shares)
            await ApplyAsync(state, Confirm(share, group!));
        Assert.Null(state.Dkg);
        Assert.Equal([1, 2], state.CurrentKeyEpoch!.Group.VerificationShares.Keys.Order());
        AssertSigns(shares, state.CurrentKeyEpoch.Group, 2);
    }

    [Fact]
    public async Task ASilenceVoteLapses_WhenTheMemberSpeaks()
    {
        using var store = new InMemoryBatchStore();
        await using var state = Open(store);
        await ApplyAsync(state, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        await ApplyAsync(state, people[0].Round1(1, 1));

        // A member that has not done its own part cannot vote another silent.
        Assert.Contains("not done its own part", state.DkgRejection(new DkgSilenceCommand { Epoch = 1, Attempt = 1, From = 2, Accused = 3, Stage = "round1" }), StringComparison.Ordinal);
        await ApplyAsync(state, people[1].Round1(1, 1));
        await ApplyAsync(state, new DkgSilenceCommand { Epoch = 1, Attempt = 1, From = 1, Accused = 3, Stage = "round1" });

        // Member 3 was only slow: its round one lands, and an old vote cannot combine with a later one against it.
        await ApplyAsync(state, people[2].Round1(1, 1));
        Assert.Equal("round2", state.Dkg!.Stage);
        Assert.NotNull(state.DkgRejection(new DkgSilenceCommand { Epoch = 1, Attempt = 1, From = 2, Accused = 3, Stage = "round1" }));
        Assert.Empty(state.Dkg.Disqualified);
    }

    [Fact]
    public void DleqProof_VerifiesForTheTruePointOnly_AndIsBoundToItsContext()
    {
        var x = Secp256k1.RandomScalar();
        var b = Secp256k1.BaseMultiply(Secp256k1.RandomScalar());
        var context = "ctx"u8.ToArray();
        var (shared, proof) = Dleq.Prove(x, b, context);
        var a = Secp256k1.BaseMultiply(x);
        Assert.Equal(Secp256k1.Multiply(b, x), shared);
        Assert.True(Dleq.Verify(a, b, shared, proof, context));
        Assert.False(Dleq.Verify(a, b, shared, proof, "other"u8));
        Assert.False(Dleq.Verify(a, b, shared.Add(Secp256k1.Generator), proof, context));
        Assert.False(Dleq.Verify(Secp256k1.BaseMultiply(Secp256k1.RandomScalar()), b, shared, proof, context));
        Assert.False(Dleq.Verify(a, b, shared, new byte[Dleq.ProofLength], context));
        Assert.False(Dleq.Verify(a, b, shared, proof.AsSpan(0, 63), context));
        for (var bit = 0; bit < proof.Length * 8; bit += 11)
        {
            var flipped = (byte[])proof.Clone();
            flipped[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.False(Dleq.Verify(a, b, shared, flipped, context));
        }
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
    public async Task SnapshotTakenInTheMiddleOfADkg_CarriesItsProgress_SoTheInstalledNodeMakesTheSameKeyAndHeaders()
    {
        // A follower that installs a snapshot whose point lies inside a key generation then applies the rest of it
        // from the log: it must reach the same key epoch, or its headers (which name the key epoch) differ.
        var context = DkgLedger.Context(ChainId, 1, 1);
        var people = Enumerable.Range(1, 3).Select(id => new Participant(id, 2, 3, context)).ToList();
        using var leaderStore = new InMemoryBatchStore();
        await using var leader = Open(leaderStore);
        await ApplyAsync(leader, new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] });
        var round1 = people.Select(p => p.Round1(1, 1)).ToList();
        foreach (var message in round1)
            await ApplyAsync(leader, message);
        await ApplyAsync(leader, new BatchCommand { LeaderTimestampMs = 5000, Txs = [BatchApplierTests.Tx(1)] });
        await leader.FlushAsync(CancellationToken.None);
        var snapshot = leader.CurrentSnapshot!;
        Assert.Equal(index, snapshot.Index);
        // The point's key generation is stored with it (a restarted leader sends it too): the start and three round ones.
        Assert.Equal(4, leaderStore.ReadSnapshotDkgEntries().Count);
        using var stream = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, stream, 4096, CancellationToken.None);
        await using var follower = Open(new InMemoryBatchStore());
        await follower.InstallSnapshotAsync(new MemoryStream(stream.ToArray()), snapshot.Index, snapshot.Term, CancellationToken.None);
        Assert.Equal("round2", leader.Dkg!.Stage);
        Assert.Equal(leader.Dkg.Stage, follower.Dkg?.Stage);
        Assert.Equal(leader.Dkg.Round1.Keys.Order(), follower.Dkg!.Round1.Keys.Order());

        // The rest of the key generation, and a batch, reach both.
        var round2 = Round2Of(people, round1, context);
        var (shares, group) = FinishAll(people, round1, round2, context, null);
        var rest = new List<ILogCommand>(round2);
        rest.AddRange(shares.Select(share => Confirm(share, group!)));
        rest.Add(new BatchCommand { LeaderTimestampMs = 6000, Txs = [BatchApplierTests.Tx(2)] });
        foreach (var command in rest)
        {
            var at = ++index;
            await leader.ApplyAsync(command, at, 1, CancellationToken.None);
            await follower.ApplyAsync(command, at, 1, CancellationToken.None);
        }

        Assert.Equal(1UL, leader.CurrentKeyEpoch!.Epoch);
        Assert.Equal(1UL, follower.CurrentKeyEpoch?.Epoch);
        Assert.Equal(leader.LastHeader, follower.LastHeader);
        Assert.Equal(1UL, follower.LastHeader!.KeyEpoch);

        // Past the key generation, the point carries none.
        await leader.FlushAsync(CancellationToken.None);
        Assert.Equal(index, leader.CurrentSnapshot!.Index);
        Assert.Empty(leaderStore.ReadSnapshotDkgEntries());
        Assert.Empty(leader.CurrentSnapshot.Dkg);
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
