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
}
