using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Node.Signing;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>
/// The leader's head-signing coordinator with an in-process log, simulated signers and fake time, stepped round by
/// round: what a leader does with sessions, shares and signatures, and what a change of leadership does to them.
/// </summary>
public sealed class HeadSigningCoordinatorTests : IAsyncDisposable
{
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 4, MaxUnpersistedBatches = 64, PersistIntervalMs = 10_000, MinHeadIntervalMs = 0 };
    private readonly FakeTimeProvider time = new(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000));
    private readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) key = TrustedDealer.Generate(2, 3);
    private readonly Dictionary<(int Signer, ulong Sequence), SigningNonces> nonces = [];
    private readonly List<SignatureSharesMessage> outgoing = [];
    private readonly AppliedState state;
    private readonly FakeLeaderLog log;
    private readonly NodeMetrics metrics = new();
    private readonly RecordingLogger<HeadSigningCoordinator> logger = new();
    private readonly HeadSigningCoordinator coordinator;

    public HeadSigningCoordinatorTests()
    {
        state = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), Limits, new WalRetention(0, long.MaxValue), time, NullLogger.Instance);
        log = new FakeLeaderLog(state);
        coordinator = new HeadSigningCoordinator(1, state, log, Limits, time, metrics, logger, bootstrap: null);
        // The signers answer every session at once, honestly (the test delivers their shares when it chooses).
        state.SessionsStarted += sessions =>
        {
            foreach (var session in sessions)
            {
                foreach (var (signer, i) in session.Session.Signers.Select((s, i) => (s, i)))
                {
                    var z = session.Context.Sign(key.Shares[signer - 1], nonces[(signer, session.Session.Sequences[i])]);
                    var message = new SignatureSharesMessage
                    {
                        SignerId = signer,
                        KeyEpoch = 1,
                        Shares = [new SignatureShareMessage { Height = session.Session.Height, Attempt = session.Session.Attempt, Share = Secp256k1.SerializeScalar(z) }],
                    };
                    outgoing.Add(message);
                }
            }
        };
        // The coordinator listens as Start has it do; its loop is not run: the test steps it round by round.
        coordinator.Subscribe();
    }

    private async Task ReplicateAsync(ILogCommand command) => await log.ReplicateAsync(LogCommandCodec.Encode(command), null, CancellationToken.None);

    private async Task SetUpKeyAsync()
    {
        await ReplicateAsync(SigningFixtures.EpochOne(key.Group));
        foreach (var signer in new[] { 1, 2, 3 })
        {
            var values = new List<byte[]>();
            for (ulong sequence = 1; sequence <= 16; sequence++)
            {
                var (pair, commitment) = Frost.Commit(signer, key.Shares[signer - 1].Secret);
                nonces[(signer, sequence)] = pair;
                values.Add([.. Secp256k1.SerializeElement(commitment.Hiding), .. Secp256k1.SerializeElement(commitment.Binding)]);
            }

            await ReplicateAsync(SigningFixtures.Publication(key.Shares[signer - 1], 1, values));
        }
    }

    // A new term won while this node still applies an entry an earlier leader committed.
    private void WinNextTermWithApplyOneEntryShort()
    {
        log.AppliedThrough = log.CommitIndex - 1;
        log.WinNextTerm();
    }

    /// <summary>Cuts a batch as the batcher would: with whatever rides it.</summary>
    private async Task CutBatchAsync(int seed)
    {
        var riders = coordinator.Take();
        await ReplicateAsync(new BatchCommand { LeaderTimestampMs = 5000, Txs = [BatchApplierTests.Tx(seed)], Session = riders.Session, Signatures = riders.Signatures.Count == 0 ? null : riders.Signatures });
        coordinator.Completed(riders, committed: true);
    }

    // The key set up, batch 1 cut, and its head's signature aggregated (not yet in the log).
    private async Task AggregateHeadOneAsync()
    {
        await SetUpKeyAsync();
        coordinator.Round();
        await CutBatchAsync(1);
        DeliverShares();
        coordinator.Round();
    }

    private void DeliverShares()
    {
        foreach (var message in outgoing)
            Assert.True(coordinator.Receive(message));
        outgoing.Clear();
    }

    [Fact]
    public async Task Leader_SignsTheHeadItsBatchCarriesTheSessionOf_TheSignatureRidingTheNextBatch()
    {
        await SetUpKeyAsync();
        coordinator.Round();
        await CutBatchAsync(1);
        Assert.Single(coordinator.Flights);
        DeliverShares();
        coordinator.Round();
        Assert.Equal(FlightStage.Aggregated, Assert.Single(coordinator.Flights).Stage);
        Assert.Equal(0UL, state.SignedThrough);

        // The signature rides the next batch entry: head 1 is signed, and the new batch carries a session of its own.
        await CutBatchAsync(2);
        Assert.Equal(1UL, state.SignedThrough);
        Assert.Equal(2UL, Assert.Single(coordinator.Flights).Session.Height);
        Assert.True(state.IsCovered(1));
        Assert.False(state.IsCovered(2));
    }

    [Fact]
    public async Task WhileBatchesFlowSlowly_ASignatureWaitsForTheNextBatch_AndGetsAnEntryOfItsOwnOnlyWhenTheyStop()
    {
        await SetUpKeyAsync();
        coordinator.Round();
        // Batches 14 ms apart (a slow disk's rounds), longer than a signature's own 5 ms delay. The heads of batches 1
        // and 2 get sessions; their shares come in 2 ms after the last batch.
        for (var i = 1; i <= 30; i++)
        {
            if (i > 1)
                time.Advance(TimeSpan.FromMilliseconds(14));
            await CutBatchAsync(i);
        }

        time.Advance(TimeSpan.FromMilliseconds(2));
        DeliverShares();
        coordinator.Round();
        Assert.All(coordinator.Flights, f => Assert.Equal(FlightStage.Aggregated, f.Stage));

        // 10 ms later the signatures have waited twice their delay, but the next batch is due: they wait for it, and ride it.
        time.Advance(TimeSpan.FromMilliseconds(10));
        coordinator.Round();
        Assert.Equal(0UL, state.SignedThrough);
        time.Advance(TimeSpan.FromMilliseconds(2));
        await CutBatchAsync(31);
        Assert.Equal(2UL, state.SignedThrough);

        // The batches stop: the next signature (batch 31's head) gets an entry of its own once twice the usual gap passed.
        DeliverShares();
        coordinator.Round();
        time.Advance(TimeSpan.FromMilliseconds(20));
        coordinator.Round();
        Assert.Equal(2UL, state.SignedThrough);
        time.Advance(TimeSpan.FromMilliseconds(10));
        coordinator.Round();
        Assert.Equal(31UL, state.SignedThrough);
    }

    [Fact]
    public async Task LeadershipFlippedAroundAnAggregatedSignature_TheHeadIsSignedAnyway()
    {
        await AggregateHeadOneAsync();
        Assert.Equal(FlightStage.Aggregated, Assert.Single(coordinator.Flights).Stage);

        // Before the signature reaches the log, the leader steps down and wins the next term within milliseconds (a
        // ClogThenFlush does this): the aggregated signature is thrown away with the old leadership.
        time.Advance(TimeSpan.FromMilliseconds(3));
        log.WinNextTerm();
        coordinator.Round();
        Assert.Empty(coordinator.Flights);
        Assert.Equal(0UL, state.SignedThrough);

        // No batch comes: once the standalone delay has passed, the newest head gets a session of its own (attempt 2),
        // is signed, and its signature gets an entry of its own after the flush delay.
        time.Advance(TimeSpan.FromMilliseconds(Limits.StandaloneSessionDelayMs));
        coordinator.Round();
        var retry = Assert.Single(coordinator.Flights);
        Assert.Equal((1UL, 2), (retry.Session.Height, retry.Session.Attempt));
        DeliverShares();
        coordinator.Round();
        time.Advance(TimeSpan.FromMilliseconds(Limits.SignatureFlushDelayMs));
        coordinator.Round();
        Assert.Equal(1UL, state.SignedThrough);
        Assert.Empty(coordinator.Flights);
    }

    [Fact]
    public async Task ANewLeader_PlansNoSessionUntilItHasAppliedEverythingCommittedBeforeItsTerm()
    {
        await AggregateHeadOneAsync();

        // A new term, won while this node still applies entries an earlier leader committed (a session's record
        // among them, say): the head stays without a session, however long it waits.
        WinNextTermWithApplyOneEntryShort();
        coordinator.Round();
        Assert.Empty(coordinator.Flights);
        time.Advance(TimeSpan.FromMilliseconds(Limits.StandaloneSessionDelayMs * 4));
        coordinator.Round();
        Assert.Empty(coordinator.Flights);

        // Nor does a batch cut meanwhile carry a session.
        var riders = coordinator.Take();
        Assert.Null(riders.Session);
        coordinator.Completed(riders, committed: false);

        // Applied through the term's start: it plans from what it has applied (a session of its own once no batch came
        // for its delay).
        log.AppliedThrough = null;
        time.Advance(TimeSpan.FromMilliseconds(Limits.StandaloneSessionDelayMs * 4));
        coordinator.Round();
        var session = Assert.Single(coordinator.Flights);
        Assert.Equal(1UL, session.Session.Height);
    }

    [Fact]
    public async Task ANewLeaderWhoseApplyHoldsSigningBack_SaysSoOnceATerm_AndSaysWhenItResumes()
    {
        await AggregateHeadOneAsync();
        WinNextTermWithApplyOneEntryShort();

        // Under a second of waiting, nothing is said: a new leader's apply is usually a few entries behind.
        coordinator.Round();
        time.Advance(HeadSigningCoordinator.ApplyWaitLogAfter - TimeSpan.FromMilliseconds(1));
        coordinator.Round();
        Assert.DoesNotContain(logger.Lines, l => l.EventId == 304);

        // Past it, one warning with the indexes, however many rounds wait on.
        time.Advance(TimeSpan.FromMilliseconds(1));
        for (var i = 0; i < 5; i++)
        {
            coordinator.Round();
            time.Advance(TimeSpan.FromMilliseconds(100));
        }

        var wait = Assert.Single(logger.Lines, l => l.EventId == 304);
        Assert.Equal(LogLevel.Warning, wait.Level);
        Assert.Contains($"applied index {log.CommitIndex - 1} of {log.CommitIndex}", wait.Text, StringComparison.Ordinal);
        Assert.DoesNotContain(logger.Lines, l => l.EventId == 322);

        // Applied: signing resumes, and the node says so once.
        log.AppliedThrough = null;
        coordinator.Round();
        coordinator.Round();
        Assert.Single(logger.Lines, l => l.EventId == 322);
        Assert.Single(logger.Lines, l => l.EventId == 304);

        // The next term that waits as long says so again.
        WinNextTermWithApplyOneEntryShort();
        coordinator.Round();
        time.Advance(HeadSigningCoordinator.ApplyWaitLogAfter);
        coordinator.Round();
        Assert.Equal(2, logger.Lines.Count(l => l.EventId == 304));
    }

    [Fact]
    public async Task ByzantineSigner_ItsBadShareNamesIt_AndTheHeadIsSignedWithoutIt()
    {
        await SetUpKeyAsync();
        coordinator.Round();
        await CutBatchAsync(1);
        var bad = outgoing.Single(m => m.SignerId == 2);
        outgoing.Remove(bad);
        var share = Secp256k1.DeserializeScalar(bad.Shares[0].Share).Add(Org.BouncyCastle.Math.BigInteger.One).Mod(Secp256k1.Order);
        outgoing.Add(new SignatureSharesMessage { SignerId = 2, KeyEpoch = 1, Shares = [new SignatureShareMessage { Height = 1, Attempt = 1, Share = Secp256k1.SerializeScalar(share) }] });
        DeliverShares();
        coordinator.Round();
        var report = coordinator.Signers().Single(s => s.Id == 2);
        Assert.Equal(1, report.BadShares);
        Assert.True(report.ExcludedForMs > 0);
        Assert.Equal(0, coordinator.Signers().Single(s => s.Id == 1).BadShares);

        // The head is signed again without signer 2 at the next opportunity.
        time.Advance(TimeSpan.FromMilliseconds(Limits.StandaloneSessionDelayMs));
        coordinator.Round();
        var retry = Assert.Single(coordinator.Flights);
        Assert.DoesNotContain(2, retry.Session.Signers);
        DeliverShares();
        coordinator.Round();
        time.Advance(TimeSpan.FromMilliseconds(Limits.SignatureFlushDelayMs));
        coordinator.Round();
        Assert.Equal(1UL, state.SignedThrough);
    }

    public async ValueTask DisposeAsync()
    {
        await coordinator.DisposeAsync();
        await state.DisposeAsync();
        log.Dispose();
        metrics.Dispose();
    }
}
