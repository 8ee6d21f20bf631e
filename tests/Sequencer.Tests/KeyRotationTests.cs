using Sequencer.Client;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Storage;
using Sequencer.LightClient;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>
/// Key rotation outside the ledger's scenarios (<c>Scenarios/ledger/05-rotation.txt</c>): the rotation message, a
/// restarted or snapshot-installed ledger's pending and rotated epochs, and the light client's key chain.
/// </summary>
public sealed class KeyRotationTests
{
    private const ulong ChainId = 42;
    private static readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) First = TrustedDealer.Generate(2, 3);
    private static readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) Second = TrustedDealer.Generate(2, 3);
    private static readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) Third = TrustedDealer.Generate(2, 3);

    // Signers 1 and 2 of a key sign a message (a FROST round: commitments, shares, aggregate).
    private static byte[] Sign((IReadOnlyList<KeyShare> Shares, GroupKey Group) key, byte[] message)
    {
        var rounds = key.Shares.Take(2).Select(s => (Share: s, Pair: Frost.Commit(s.Identifier, s.Secret))).ToList();
        var session = new FrostSession(key.Group.PublicKey, [.. rounds.Select(r => r.Pair.Item2)], message);
        return session.Aggregate(rounds.Select(r => session.Sign(r.Share, r.Pair.Item1))).Encode();
    }

    private static StoredKeyEpoch Record(ulong epoch, GroupKey group, long index, bool pending = false, KeyRotationProof? rotation = null)
        => new(epoch, group.Threshold, Secp256k1.SerializeElement(group.PublicKey), [1, 2, 3],
            [.. new[] { 1, 2, 3 }.Select(id => Secp256k1.SerializeElement(group.VerificationShares[id]))], index, pending, rotation);

    private static KeyRotationProof Handover((IReadOnlyList<KeyShare> Shares, GroupKey Group) from, ulong fromEpoch, GroupKey to, long index)
    {
        var signature = Sign(from, KeyRotationMessage.Compute(ChainId, fromEpoch, fromEpoch + 1, Secp256k1.SerializeElement(to.PublicKey)));
        return new KeyRotationProof(fromEpoch, [1, 2], signature[..33], signature[33..], 5_000, index);
    }

    [Fact]
    public void RotationMessage_IsTheInboxContractsRotateKeyMessage()
    {
        var key = Secp256k1.SerializeElement(Second.Group.PublicKey);
        Assert.Equal(Sequencer.L1.InboxContract.RotationMessage(ChainId, 1, 2, key), KeyRotationMessage.Compute(ChainId, 1, 2, key));
        Assert.NotEqual(KeyRotationMessage.Compute(ChainId, 1, 2, key), KeyRotationMessage.Compute(ChainId + 1, 1, 2, key));
    }

    [Fact]
    public void RestartedLedger_KeepsThePendingEpoch_AndTheRotatedOneInForce()
    {
        var pending = new SigningLedger(new LedgerState(ChainId, [Record(1, First.Group, 5), Record(2, Second.Group, 30, pending: true)], CommitmentPool.Empty, 0, []));
        Assert.Equal(1UL, pending.CurrentKeyEpoch!.Epoch);
        Assert.Equal(2UL, pending.PendingKeyEpoch!.Epoch);
        Assert.Equal(KeyRotationMessage.Compute(ChainId, 1, 2, Secp256k1.SerializeElement(Second.Group.PublicKey)), pending.RotationMessage);

        var rotated = new SigningLedger(new LedgerState(ChainId, [Record(1, First.Group, 5), Record(2, Second.Group, 30, rotation: Handover(First, 1, Second.Group, 40))], CommitmentPool.Empty, 0, []));
        Assert.Equal(2UL, rotated.CurrentKeyEpoch!.Epoch);
        Assert.Null(rotated.PendingKeyEpoch);
        Assert.Equal(40, rotated.CurrentKeyEpoch.Record.InForceFrom);
    }

    [Fact]
    public void SnapshotInstall_AcceptsOnlyAHandoverSignedByTheKeyInForce()
    {
        var ledger = new SigningLedger(LedgerState.Empty(ChainId));
        Assert.Null(ledger.InstallKeyEpoch(Record(1, First.Group, 5)));

        // Signed by the new key itself, or by a stranger: refused. Without a proof: refused.
        Assert.Contains("does not verify", ledger.InstallKeyEpoch(Record(2, Second.Group, 30, rotation: Handover(Second, 1, Second.Group, 40))), StringComparison.Ordinal);
        Assert.Contains("does not verify", ledger.InstallKeyEpoch(Record(2, Second.Group, 30, rotation: Handover(Third, 1, Second.Group, 40))), StringComparison.Ordinal);
        Assert.Contains("no hand-over", ledger.InstallKeyEpoch(Record(2, Second.Group, 30)), StringComparison.Ordinal);
        Assert.Equal(1UL, ledger.CurrentKeyEpoch!.Epoch);

        // A pending one waits; the hand-over signed by epoch 1 puts it in force.
        Assert.Null(ledger.InstallKeyEpoch(Record(2, Second.Group, 30, pending: true)));
        Assert.Equal(2UL, ledger.PendingKeyEpoch!.Epoch);
        Assert.Null(ledger.InstallKeyEpoch(Record(2, Second.Group, 30, rotation: Handover(First, 1, Second.Group, 40))));
        Assert.Equal(2UL, ledger.CurrentKeyEpoch!.Epoch);
        Assert.Null(ledger.PendingKeyEpoch);
    }

    [Fact]
    public void SnapshotRecord_CarriesThePendingFlagAndTheRotationProof()
    {
        var rotated = Record(2, Second.Group, 30, rotation: Handover(First, 1, Second.Group, 40));
        var back = SnapshotFormat.FromRecord(SnapshotFormat.ToRecord(rotated));
        Assert.False(back.Pending);
        Assert.Equal(rotated.Rotation!.R, back.Rotation!.R);
        Assert.Equal(rotated.Rotation.Z, back.Rotation.Z);
        Assert.Equal([1, 2], back.Rotation.Signers);
        Assert.Equal(40, back.InForceFrom);
        Assert.True(SnapshotFormat.FromRecord(SnapshotFormat.ToRecord(Record(2, Second.Group, 30, pending: true))).Pending);
        Assert.Throws<LogFormatException>(() => SnapshotFormat.FromRecord(new SnapshotKeyEpoch { Epoch = 2, RotationFrom = 1, RotationR = [1] }));
    }

    private static KeyEpochDto Dto(ulong epoch, GroupKey group, KeyRotationProof? rotation)
        => new(epoch.ToString(System.Globalization.CultureInfo.InvariantCulture), "0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(group.PublicKey)), 2, [1, 2, 3], null,
            rotation is null ? null : new RotationDto(rotation.FromEpoch.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "0x" + Convert.ToHexStringLower(KeyRotationMessage.Compute(ChainId, rotation.FromEpoch, epoch, Secp256k1.SerializeElement(group.PublicKey))),
                new SignatureDto("0x" + Convert.ToHexStringLower(rotation.R), "0x" + Convert.ToHexStringLower(rotation.Z)), rotation.Signers));

    [Fact]
    public void Checker_VerifiesTheServedKeyHistoryWithItsOwnCode_AndNamesEveryBreak()
    {
        var honest = new[]
        {
            Dto(1, First.Group, null),
            Dto(2, Second.Group, Handover(First, 1, Second.Group, 40)),
            Dto(3, Third.Group, Handover(Second, 2, Third.Group, 80)),
        };
        var pinned = new Dictionary<ulong, byte[]> { [1] = Secp256k1.SerializeElement(First.Group.PublicKey) };
        Assert.Equal(KeyRotationMessage.Compute(ChainId, 1, 2, Secp256k1.SerializeElement(Second.Group.PublicKey)),
            Sequencer.Checker.KeyHistoryChecker.RotationMessage(ChainId, 1, Secp256k1.SerializeElement(Second.Group.PublicKey)));

        // A node behind lists fewer epochs: still one history.
        var (result, keys) = Sequencer.Checker.KeyHistoryChecker.Check([(1, honest), (2, honest), (3, honest[..2])], ChainId, pinned);
        Assert.True(result.Passed, result.Detail);
        Assert.Equal(Secp256k1.SerializeElement(Third.Group.PublicKey), keys[3]);

        // Another key at the same epoch on one node; a hand-over signed by the new key itself; another chain.
        var forked = new[] { honest[0], Dto(2, Third.Group, Handover(First, 1, Third.Group, 40)) };
        Assert.Contains("n2 lists key epoch 2", Sequencer.Checker.KeyHistoryChecker.Check([(1, honest), (2, forked)], ChainId, pinned).Result.Detail, StringComparison.Ordinal);
        var selfSigned = new[] { honest[0], Dto(2, Second.Group, Handover(Second, 1, Second.Group, 40)) };
        var (bad, badKeys) = Sequencer.Checker.KeyHistoryChecker.Check([(1, selfSigned)], ChainId, pinned);
        Assert.False(bad.Passed);
        Assert.Contains("does not verify under key epoch 1", bad.Detail, StringComparison.Ordinal);
        Assert.False(badKeys.ContainsKey(2));
        Assert.False(Sequencer.Checker.KeyHistoryChecker.Check([(1, honest)], ChainId + 1, pinned).Result.Passed);
    }

    [Fact]
    public void KeyChain_FollowsHandoversFromThePinnedKey_AndCatchesEveryForgery()
    {
        var honest = new[]
        {
            Dto(1, First.Group, null),
            Dto(2, Second.Group, Handover(First, 1, Second.Group, 40)),
            Dto(3, Third.Group, Handover(Second, 2, Third.Group, 80)),
        };
        var chain = new KeyChain(First.Group.PublicKey, 1);
        Assert.Null(chain.Extend(ChainId, honest));
        Assert.Equal(3UL, chain.NewestEpoch);
        Assert.Equal(Third.Group.PublicKey, chain.KeyOf(3));
        Assert.Null(chain.KeyOf(4));

        // Pinned at epoch 2, the client needs nothing of epoch 1.
        var later = new KeyChain(Second.Group.PublicKey, 2);
        Assert.Null(later.Extend(ChainId, honest));
        Assert.Null(later.KeyOf(1));
        Assert.Equal(3UL, later.NewestEpoch);

        // A key the previous one did not sign (signed by itself), another chain's hand-over, a gap, a wrong origin.
        var forged = new KeyChain(First.Group.PublicKey, 1);
        Assert.Contains("does not verify", forged.Extend(ChainId, [Dto(2, Third.Group, Handover(Third, 1, Third.Group, 40))]), StringComparison.Ordinal);
        Assert.Contains("does not verify", forged.Extend(ChainId + 1, honest), StringComparison.Ordinal);
        Assert.Contains("not key epoch 2", forged.Extend(ChainId, [honest[0], honest[2]]), StringComparison.Ordinal);
        Assert.Contains("no hand-over proof", forged.Extend(ChainId, [Dto(2, Second.Group, null)]), StringComparison.Ordinal);
        var wrongOrigin = Handover(First, 1, Second.Group, 40) with { FromEpoch = 7 };
        Assert.Contains("names key epoch 7", forged.Extend(ChainId, [Dto(2, Second.Group, wrongOrigin)]), StringComparison.Ordinal);
        Assert.Equal(1UL, forged.NewestEpoch);

        // A forgery above honest epochs keeps the honest ones.
        var partial = new KeyChain(First.Group.PublicKey, 1);
        Assert.NotNull(partial.Extend(ChainId, [honest[0], honest[1], Dto(3, Third.Group, Handover(First, 2, Third.Group, 80))]));
        Assert.Equal(2UL, partial.NewestEpoch);
    }
}
