using Sequencer.Core.Encoding;
using Sequencer.Node.Signing;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

public sealed class ShareCollectorTests
{
    [Fact]
    public void ForgetAndNameSilent_NamesTheSignersWithoutAShare_Once()
    {
        // A key rotation attempt that got no signature in time: the leader counts its silent signers as timed out
        // before the next attempt, and the attempt's collection goes (it was never dropped before).
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var commitments = shares.Take(2).Select(s => Frost.Commit(s.Identifier, s.Secret).Item2).ToList();
        var session = new AppliedSession(new SigningSession { Height = 0, Attempt = 7, KeyEpoch = 1, Signers = [1, 2], Sequences = [4, 4] },
            new byte[32], commitments, group.PublicKey);
        var collector = new ShareCollector();
        collector.Track(session);
        Assert.Equal(ShareOutcome.Kept, collector.Add(1, 1, new SignatureShareMessage { Height = 0, Attempt = 7, Share = new byte[32] }));

        Assert.Equal([2], collector.ForgetAndNameSilent((0, 7)));
        Assert.False(collector.Tracks(session.Session));
        Assert.Equal(0, collector.Count);
        Assert.Empty(collector.ForgetAndNameSilent((0, 7)));
    }

    // A 2-of-3 head session with both shares computed honestly; each share is added with a proof check that counts its
    // calls and answers `proofHolds`.
    private static (ShareCollector Collector, AppliedSession Session, GroupKey Group, Dictionary<int, int> ProofChecks) HonestSession(
        Dictionary<int, bool> proofHolds, int? wrongShareOf = null)
    {
        var (keyShares, group) = TrustedDealer.Generate(2, 3);
        var message = new byte[32];
        message[0] = 9;
        var nonces = new Dictionary<int, SigningNonces>();
        var commitments = new List<NonceCommitment>();
        foreach (var id in new[] { 1, 2 })
        {
            var (n, c) = Frost.Commit(id, keyShares[id - 1].Secret);
            nonces[id] = n;
            commitments.Add(c);
        }

        var session = new AppliedSession(new SigningSession { Height = 5, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [3, 4] },
            message, commitments, group.PublicKey);
        var collector = new ShareCollector();
        collector.Track(session);
        var checks = new Dictionary<int, int> { [1] = 0, [2] = 0 };
        foreach (var id in new[] { 1, 2 })
        {
            var z = Frost.Sign(id, keyShares[id - 1].Secret, group.PublicKey, nonces[id], message, commitments);
            if (id == wrongShareOf)
                z = z.Add(Org.BouncyCastle.Math.BigInteger.One).Mod(Secp256k1.Order);
            var signer = id;
            collector.Add(id, 1, new SignatureShareMessage { Height = 5, Attempt = 1, Share = Secp256k1.SerializeScalar(z) }, () =>
            {
                checks[signer]++;
                return proofHolds[signer];
            });
        }

        return (collector, session, group, checks);
    }

    [Fact]
    public void AValidAggregate_ChecksNoProof()
    {
        // Even proofs that would fail are not looked at: the signature verifies, so every share was right.
        var (collector, session, group, checks) = HonestSession(new() { [1] = false, [2] = false });
        var ready = collector.TakeComplete(session.Id)!.Value;
        var aggregation = ShareCollector.Aggregate(ready.Session, ready.Shares, group, ready.Proves);

        Assert.NotNull(aggregation.Signature);
        Assert.Empty(aggregation.Culprits);
        Assert.Empty(aggregation.Unproven);
        Assert.Equal(0, checks[1] + checks[2]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ABadShare_IsACulprit_OnlyUnderAValidProof_AndTheGoodShareProofIsNotChecked(bool proofHolds)
    {
        var (collector, session, group, checks) = HonestSession(new() { [1] = true, [2] = proofHolds }, wrongShareOf: 2);
        var ready = collector.TakeComplete(session.Id)!.Value;
        var aggregation = ShareCollector.Aggregate(ready.Session, ready.Shares, group, ready.Proves);

        Assert.Null(aggregation.Signature);
        Assert.Equal(proofHolds ? [2] : [], aggregation.Culprits);
        Assert.Equal(proofHolds ? [] : [2], aggregation.Unproven);
        Assert.Equal(0, checks[1]);
        Assert.Equal(1, checks[2]);
    }
}
