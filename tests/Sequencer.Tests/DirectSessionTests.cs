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
/// Direct head sessions: the leader's coordinator asks real signers (their nonce stores, their checks) through an
/// in-process session channel, and only the sessions' records go through the (in-process) log.
/// </summary>
public sealed class DirectSessionTests : IAsyncDisposable
{
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 4, MaxUnpersistedBatches = 64, PersistIntervalMs = 10_000, MinHeadIntervalMs = 0, SigningLateShareMs = 50 };
    private readonly FakeTimeProvider time = new(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000));
    private readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) key = TrustedDealer.Generate(2, 3);
    private readonly AppliedState state;
    private readonly FakeLeaderLog log;
    private readonly Channel channel = new();
    private readonly HeadSigningCoordinator coordinator;
    private readonly List<SignerService> signers = [];
    private int sessionsFromTheLog;

    public DirectSessionTests()
    {
        state = new AppliedState(new InMemoryBatchStore(), new ChainParameters(42, 0), Limits, new WalRetention(0, long.MaxValue), time, NullLogger.Instance);
        log = new FakeLeaderLog(state);
        coordinator = new HeadSigningCoordinator(1, state, log, Limits, time, new NodeMetrics(), NullLogger<HeadSigningCoordinator>.Instance, bootstrap: null, channel);
        state.SessionsStarted += started => sessionsFromTheLog += started.Count;
        coordinator.Subscribe();
    }

    /// <summary>The members' channel, in process: each signer answers itself, unless the test cuts it off.</summary>
    private sealed class Channel : ISessionChannel
    {
        public Dictionary<int, SignerService> Signers { get; } = [];

        public HashSet<int> CutOff { get; } = [];

        public List<(int Signer, SessionRequestMessage Request)> Asked { get; } = [];

        public async Task<DirectAnswer> AskAsync(int signer, SessionRequestMessage request, CancellationToken token)
        {
            lock (Asked)
                Asked.Add((signer, request));
            if (CutOff.Contains(signer))
                return DirectAnswer.Refuse(503, "unreachable", $"member {signer} is unreachable");
            return await Signers[signer].AnswerDirectAsync(request, token);
        }
    }

    private async Task ReplicateAsync(ILogCommand command) => await log.ReplicateAsync(LogCommandCodec.Encode(command), null, CancellationToken.None);

    private async Task SetUpAsync()
    {
        await ReplicateAsync(new KeyEpochCommand
        {
            Epoch = 1,
            Threshold = 2,
            GroupKey = Secp256k1.SerializeElement(key.Group.PublicKey),
            Members = [1, 2, 3],
            VerificationShares = [.. new[] { 1, 2, 3 }.Select(id => Secp256k1.SerializeElement(key.Group.VerificationShares[id]))],
        });
        foreach (var id in new[] { 1, 2, 3 })
        {
            var store = new InMemoryNonceStore();
            var made = store.Generate(1, key.Shares[id - 1], 1, 16);
            var unsigned = new NonceCommitmentsCommand { SignerId = id, KeyEpoch = 1, FirstSequence = 1, Commitments = [.. made.Select(c => c.Commitment)] };
            await ReplicateAsync(new NonceCommitmentsCommand
            {
                SignerId = id,
                KeyEpoch = 1,
                FirstSequence = 1,
                Commitments = unsigned.Commitments,
                Proof = SignerProof.Sign(SigningLedger.NonceCommitmentsProofDomain, unsigned.ProofPayload(), key.Shares[id - 1].Secret),
            });
            var signer = new SignerService(key.Shares[id - 1], key.Group, 1, state, new NoLeader(), store, Limits, new NodeMetrics(), NullLogger<SignerService>.Instance, SignerFault.None);
            signers.Add(signer);
            channel.Signers[id] = signer;
        }
    }

    private sealed class NoLeader : ILeaderChannel
    {
        public Task<LeaderDelivery> SendSharesAsync(SignatureSharesMessage message, CancellationToken token) => throw new InvalidOperationException("a direct session's shares come back in the answer");

        public Task<LeaderDelivery> ProposeAsync(ILogCommand command, CancellationToken token) => Task.FromResult(new LeaderDelivery(false, Reason: "not in this test"));
    }

    private async Task CutBatchAsync(int seed)
    {
        var riders = coordinator.Take();
        Assert.Null(riders.Session);
        await ReplicateAsync(new BatchCommand
        {
            LeaderTimestampMs = 5000,
            Txs = [BatchApplierTests.Tx(seed)],
            Signatures = riders.Signatures.Count == 0 ? null : riders.Signatures,
            Sessions = riders.Records.Count == 0 ? null : riders.Records,
        });
        coordinator.Completed(riders, committed: true);
    }

    // Steps the coordinator until a session's signature is aggregated (the asks run as tasks).
    private async Task<Flight> AggregatedAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            coordinator.Round();
            if (coordinator.Flights.FirstOrDefault(f => f.Stage == FlightStage.Aggregated) is { } done)
                return done;
            await Task.Delay(5);
        }

        throw new TimeoutException("no session was aggregated");
    }

    [Fact]
    public async Task ADirectSession_SignsTheNewestHead_ItsRecordRidesTheNextBatch_AndNoSignerAnswersTheRecord()
    {
        await SetUpAsync();
        await CutBatchAsync(1);
        var flight = await AggregatedAsync();
        Assert.True(flight.Session.Direct);
        Assert.Equal(1UL, flight.Session.Height);
        Assert.Equal([1, 2], flight.Session.Signers);

        // The signature and the record ride the next batch: head 1 is signed, the commitments used left the pool.
        await CutBatchAsync(2);
        Assert.Equal(1UL, state.SignedThrough);
        Assert.True(state.IsCovered(1));
        for (var i = 0; i < 2; i++)
            Assert.Null(state.UnusedCommitment(flight.Session.Signers[i], flight.Session.Sequences[i]));

        // Each signer took its nonce once, for head 1, and nobody answered the record from the log.
        Assert.Equal(0, sessionsFromTheLog);
        Assert.Equal(1UL, Assert.Single(signers[0].NonceUses(0, 10)).Use.Height);
        Assert.Equal(1UL, Assert.Single(signers[1].NonceUses(0, 10)).Use.Height);
        Assert.Empty(signers[2].NonceUses(0, 10));
    }

    [Fact]
    public async Task ASignerThatCannotBeReached_CountsAsTimedOut_TheHeadIsSignedWithoutIt_AndNoNonceServesTwoSessions()
    {
        await SetUpAsync();
        channel.CutOff.Add(2);
        await CutBatchAsync(1);
        var flight = await AggregatedAsync();
        Assert.Equal([1, 3], flight.Session.Signers);
        Assert.Equal(1, coordinator.Signers().Single(s => s.Id == 2).Timeouts);

        await CutBatchAsync(2);
        Assert.Equal(1UL, state.SignedThrough);

        // Signer 1 answered both attempts: with two nonces, and the refused session's record cleaned the pool too.
        var uses = signers[0].NonceUses(0, 10);
        Assert.Equal(2, uses.Count);
        Assert.Equal(2, uses.Select(u => u.Sequence).Distinct().Count());
        Assert.Equal(2, uses.Select(u => u.Use.Attempt).Distinct().Count());
        foreach (var (signer, request) in channel.Asked)
        {
            var session = request.Sessions[0];
            Assert.Null(state.UnusedCommitment(signer, session.Sequences[session.Signers.ToList().IndexOf(signer)]));
        }
    }

    [Fact]
    public async Task ASigner_RefusesAHeadItHasNotApplied_AHeadThatIsSigned_AndANonceItHasUsed()
    {
        await SetUpAsync();
        await CutBatchAsync(1);
        var signer = signers[1];
        SessionRequestMessage Request(ulong height, int attempt, ulong sequence1, ulong sequence2)
        {
            var session = new SigningSession { Height = height, Attempt = attempt, KeyEpoch = 1, Signers = [1, 2], Sequences = [sequence1, sequence2], Direct = true };
            return new SessionRequestMessage
            {
                LeaderId = 1,
                Sessions = [session],
                Commitments = [[state.UnusedCommitment(1, sequence1)!, state.UnusedCommitment(2, sequence2)!]],
            };
        }

        // Head 2 is not applied: the signer waits its late-share time for it, then refuses, and takes no nonce.
        var notApplied = await signer.AnswerDirectAsync(Request(2, 1, 5, 5), CancellationToken.None);
        Assert.Equal((409, "not_applied"), (notApplied.Status, notApplied.Code));
        Assert.Empty(signer.NonceUses(0, 10));

        // A head applied while the signer waits is answered.
        var waiting = signer.AnswerDirectAsync(Request(2, 1, 5, 5), CancellationToken.None);
        await CutBatchAsync(2);
        var answered = await waiting;
        Assert.Equal(200, answered.Status);
        var share = Assert.Single(answered.Shares!.Shares);
        Assert.Equal((2UL, 1), (share.Height, share.Attempt));
        Assert.True(SignerProof.Verify(SignatureSharesMessage.ProofDomain, answered.Shares.ProofPayload(), answered.Shares.Proof, key.Group.VerificationShares[2]));

        // The same nonce again, even for the same head: refused (it is never used twice, whoever asks).
        var again = await signer.AnswerDirectAsync(Request(2, 2, 6, 5), CancellationToken.None);
        Assert.Equal((409, "nonce_used"), (again.Status, again.Code));
        Assert.Single(signer.NonceUses(0, 10));

        // A malformed session (the signer not among the signers) is a 400.
        var notMine = await signers[2].AnswerDirectAsync(Request(2, 3, 7, 7), CancellationToken.None);
        Assert.Equal(400, notMine.Status);
    }

    public async ValueTask DisposeAsync()
    {
        await coordinator.DisposeAsync();
        foreach (var signer in signers)
            await signer.DisposeAsync();
        log.Dispose();
        await state.DisposeAsync();
    }
}
