using Sequencer.Core.Encoding;
using Sequencer.Core.Storage;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>
/// A node accepts a first key only as its own configuration says (a dealer's group key file, or a DKG among its
/// members), and a rotation only with the threshold in force or the configured one: a leader, or any member that reaches
/// the leader's intake, must not be able to put a key of its own dealing in force or lower the threshold.
/// </summary>
public sealed class KeyPolicyTests
{
    private const ulong ChainId = 42;
    private static readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) Dealt = TrustedDealer.Generate(2, 3);
    private static readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) Forged = TrustedDealer.Generate(2, 3);

    private static LedgerInput At(long index) => new(index, null, _ => null);

    private static SigningLedger Ledger(DkgPolicy? policy) => new(LedgerState.Empty(ChainId) with { DkgPolicy = policy });

    private static StoredKeyEpoch Record(KeyEpochCommand epoch) => new(epoch.Epoch, epoch.Threshold, epoch.GroupKey, epoch.Members, epoch.VerificationShares, 5);

    [Fact]
    public void DealerNode_AcceptsOnlyTheKeyEpochOfItsOwnGroupFile()
    {
        var ledger = Ledger(new DkgPolicy(3, null) { DealerKey = SigningFixtures.EpochOne(Dealt.Group) });

        // A leader's own key (it holds the whole secret) is refused, and so is the right key with another threshold.
        var forged = ledger.Apply(SigningFixtures.EpochOne(Forged.Group), At(3));
        Assert.Null(ledger.CurrentKeyEpoch);
        Assert.Contains(forged.Ignored, n => n.Contains("not the one of this node's group key file", StringComparison.Ordinal));
        var oneOfThree = new KeyEpochCommand
        {
            Epoch = 1,
            Threshold = 1,
            GroupKey = SigningFixtures.EpochOne(Dealt.Group).GroupKey,
            Members = [1, 2, 3],
            VerificationShares = SigningFixtures.EpochOne(Dealt.Group).VerificationShares,
        };
        ledger.Apply(oneOfThree, At(4));
        Assert.Null(ledger.CurrentKeyEpoch);

        var accepted = ledger.Apply(SigningFixtures.EpochOne(Dealt.Group), At(5));
        Assert.Empty(accepted.Ignored);
        Assert.Equal(Secp256k1.SerializeElement(Dealt.Group.PublicKey), ledger.CurrentKeyEpoch!.Record.GroupKey);
    }

    [Fact]
    public void NodeWithoutKeyFiles_TakesNoKeyEpochEntry_ItsKeyComesFromTheDkg()
    {
        var ledger = Ledger(new DkgPolicy(3, 2));
        var effects = ledger.Apply(SigningFixtures.EpochOne(Forged.Group), At(3));
        Assert.Null(ledger.CurrentKeyEpoch);
        Assert.Contains(effects.Ignored, n => n.Contains("comes only from a DKG", StringComparison.Ordinal));

        // Without a policy (the pure ledger's own tests) nothing is checked against a configuration.
        var unchecked_ = Ledger(null);
        unchecked_.Apply(SigningFixtures.EpochOne(Forged.Group), At(3));
        Assert.NotNull(unchecked_.CurrentKeyEpoch);
    }

    [Fact]
    public void SnapshotKeyEpoch_IsCheckedAgainstTheConfigurationToo()
    {
        var dealer = Ledger(new DkgPolicy(3, null) { DealerKey = SigningFixtures.EpochOne(Dealt.Group) });
        Assert.Contains("not the one of this node's group key file", dealer.InstallKeyEpoch(Record(SigningFixtures.EpochOne(Forged.Group))), StringComparison.Ordinal);
        Assert.Null(dealer.CurrentKeyEpoch);
        Assert.Null(dealer.InstallKeyEpoch(Record(SigningFixtures.EpochOne(Dealt.Group))));

        // A DKG node cannot tell a snapshot's DKG key from a dealt one, but its members and threshold must fit.
        var dkg = Ledger(new DkgPolicy(3, 3));
        Assert.Contains("configured with 3", dkg.InstallKeyEpoch(Record(SigningFixtures.EpochOne(Forged.Group))), StringComparison.Ordinal);
        Assert.Null(dkg.CurrentKeyEpoch);
        var open = Ledger(new DkgPolicy(3, null));
        Assert.Null(open.InstallKeyEpoch(Record(SigningFixtures.EpochOne(Forged.Group))));
    }

    [Fact]
    public void Rotation_KeepsTheThresholdInForce_UnlessOneIsConfigured()
    {
        var ledger = Ledger(new DkgPolicy(3, null) { DealerKey = SigningFixtures.EpochOne(Dealt.Group) });
        ledger.Apply(SigningFixtures.EpochOne(Dealt.Group), At(5));
        var other = new DkgStartCommand { Epoch = 2, Attempt = 1, Threshold = 3, Members = [1, 2, 3] };

        Assert.Contains("keeps the threshold 2", ledger.DkgRejection(other), StringComparison.Ordinal);
        var effects = ledger.Apply(other, At(6));
        Assert.Contains(effects.Ignored, n => n.Contains("keeps the threshold 2", StringComparison.Ordinal));
        Assert.Null(ledger.Dkg);

        // The same threshold, once t = 2 members voted for it.
        var same = new DkgStartCommand { Epoch = 2, Attempt = 1, Threshold = 2, Members = [1, 2, 3] };
        Assert.Contains("needs the votes of 2 members", ledger.DkgRejection(same), StringComparison.Ordinal);
        Assert.Contains("keeps the threshold 2", ledger.DkgRejection(new KeyRotationVoteCommand { Epoch = 2, Threshold = 3, From = 1 }), StringComparison.Ordinal);
        ledger.Apply(new KeyRotationVoteCommand { Epoch = 2, Threshold = 2, From = 1 }, At(7));
        ledger.Apply(new KeyRotationVoteCommand { Epoch = 2, Threshold = 2, From = 2 }, At(8));
        Assert.Null(ledger.DkgRejection(same));
        ledger.Apply(same, At(9));
        Assert.Equal(2, ledger.Dkg!.Threshold);
    }

    [Fact]
    public void ARotation_StartsOnlyOnceTheKeyEpochHasBeenInForceTheMinimumInterval()
    {
        var interval = TimeSpan.FromMinutes(10);
        static DkgStartCommand Start(ulong epoch, int attempt) => new() { Epoch = epoch, Attempt = attempt, Threshold = 2, Members = [1, 2, 3] };
        var rotation = Start(2, 1);

        // Too soon: refused, with what is left to wait.
        var early = DkgLedger.RotationTooSoon(rotation, 1, null, TimeSpan.FromMinutes(4), interval);
        Assert.NotNull(early);
        Assert.Contains("in force for 240 s", early, StringComparison.Ordinal);
        Assert.Contains("so in 360 s", early, StringComparison.Ordinal);

        // A later attempt number is no way around it; nor is an attempt in progress of another epoch.
        Assert.NotNull(DkgLedger.RotationTooSoon(Start(2, 5), 1, null, TimeSpan.Zero, interval));

        // After the interval, without an interval, for the first key, and for the retry of a failed attempt: not held back.
        Assert.Null(DkgLedger.RotationTooSoon(rotation, 1, null, interval, interval));
        Assert.Null(DkgLedger.RotationTooSoon(rotation, 1, null, TimeSpan.Zero, TimeSpan.Zero));
        Assert.Null(DkgLedger.RotationTooSoon(Start(1, 1), 0, null, TimeSpan.Zero, interval));
        var failed = new DkgView(2, 1, 2, [1, 2, 3], [], new Dictionary<int, DkgRound1Command>(), new Dictionary<int, DkgRound2Command>(),
            new HashSet<int>(), "member 3 stayed silent", null, new Dictionary<int, string>());
        Assert.Null(DkgLedger.RotationTooSoon(Start(2, 2), 1, failed, TimeSpan.Zero, interval));
        Assert.NotNull(DkgLedger.RotationTooSoon(Start(2, 2), 1, failed with { Failure = null }, TimeSpan.Zero, interval));
        Assert.NotNull(DkgLedger.RotationTooSoon(Start(2, 2), 1, failed with { Epoch = 3 }, TimeSpan.Zero, interval));
    }
}
