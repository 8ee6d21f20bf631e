using System.Security.Cryptography;
using Org.BouncyCastle.Math;
using Sequencer.Threshold;

namespace Sequencer.Tests;

public sealed class PedersenDkgTests
{
    private static readonly byte[] Context = "chain 1, key epoch 1"u8.ToArray();

    private static List<(KeyShare Share, GroupKey Group)> Run(int threshold, int participants, Func<DkgRound2, DkgRound2>? tamper = null)
    {
        var sessions = Enumerable.Range(1, participants).Select(i => new PedersenDkg(i, threshold, participants, Context)).ToList();
        var broadcasts = sessions.Select(s => s.Round1()).ToList();
        foreach (var session in sessions)
        {
            foreach (var message in broadcasts)
            {
                if (message.Identifier != sessions.IndexOf(session) + 1)
                    Assert.Null(session.Receive(message));
            }
        }

        var mail = sessions.SelectMany(s => s.Round2()).Select(m => tamper?.Invoke(m) ?? m).ToList();
        var results = new List<(KeyShare, GroupKey)>();
        foreach (var session in sessions)
        {
            var (share, group, complaints) = session.Finish(mail);
            Assert.Empty(complaints);
            results.Add((share!, group!));
        }

        return results;
    }

    [Theory]
    [InlineData(2, 3)]
    [InlineData(3, 5)]
    public void Dkg_EveryoneAgreesOnTheGroupKey_AndAnyTSharesSign(int threshold, int participants)
    {
        var results = Run(threshold, participants);
        var group = results[0].Group;
        Assert.All(results, r => Assert.Equal(group.PublicKey, r.Group.PublicKey));
        Assert.All(results, r => Assert.Equal(r.Group.VerificationShares[r.Share.Identifier], Secp256k1.BaseMultiply(r.Share.Secret)));

        var signers = Enumerable.Range(1, participants).Reverse().Take(threshold).Order().ToList();
        var message = RandomNumberGenerator.GetBytes(32);
        var nonces = signers.ToDictionary(i => i, i => Frost.Commit(i, results[i - 1].Share.Secret));
        var commitments = signers.Select(i => nonces[i].Commitment).ToList();
        var shares = signers.Select(i => Frost.Sign(i, results[i - 1].Share.Secret, group.PublicKey, nonces[i].Nonces, message, commitments)).ToList();
        var signature = Frost.Aggregate(commitments, message, group.PublicKey, shares);
        Assert.True(FrostPropertyTests.IndependentSchnorrCheck(message, signature.Encode(), Secp256k1.SerializeElement(group.PublicKey)));
    }

    [Fact]
    public void Receive_ForgedProofOrWrongContext_IsAComplaint()
    {
        var a = new PedersenDkg(1, 2, 3, Context);
        var b = new PedersenDkg(2, 2, 3, Context);
        var message = b.Round1();
        Assert.NotNull(a.Receive(message with { ProofMu = message.ProofMu.Add(BigInteger.One) }));
        Assert.NotNull(new PedersenDkg(1, 2, 3, "another session"u8).Receive(message));
        Assert.NotNull(a.Receive(message with { Identifier = 3 }));
        Assert.Null(a.Receive(message));
    }

    [Fact]
    public void Finish_TamperedShare_NamesItsSender()
    {
        var sessions = Enumerable.Range(1, 3).Select(i => new PedersenDkg(i, 2, 3, Context)).ToList();
        var broadcasts = sessions.Select(s => s.Round1()).ToList();
        for (var i = 0; i < 3; i++)
            foreach (var message in broadcasts.Where(m => m.Identifier != i + 1))
                Assert.Null(sessions[i].Receive(message));
        var mail = sessions.SelectMany(s => s.Round2()).Select(m => m.From == 2 && m.To == 1 ? m with { Share = m.Share.Add(BigInteger.One) } : m).ToList();
        var (share, _, complaints) = sessions[0].Finish(mail);
        Assert.Null(share);
        Assert.Equal(2, Assert.Single(complaints).Identifier);
    }
}
