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

        /// <summary>Changes an answer on its way back (a forged or corrupted one).</summary>
        public Func<int, DirectAnswer, DirectAnswer>? Tamper { get; set; }

        /// <summary>Signers whose answers (made at once) are handed back only when the test releases them, in order.</summary>
        private readonly HashSet<int> holding = [];
        private readonly List<(int Signer, TaskCompletionSource Release)> held = [];

        public async Task<DirectAnswer> AskAsync(int signer, SessionRequestMessage request, CancellationToken token)
        {
            lock (Asked)
                Asked.Add((signer, request));
            if (CutOff.Contains(signer))
                return DirectAnswer.Refuse(503, "unreachable", $"member {signer} is unreachable");
            // The leader (member 1) asks its own signer in process, as SessionChannel does: that answer carries no proof.
            var answer = await Signers[signer].AnswerDirectAsync(request, token, inProcess: signer == request.LeaderId);
            if (Tamper is { } tamper)
                answer = tamper(signer, answer);
            TaskCompletionSource? release = null;
            lock (held)
            {
                if (holding.Contains(signer))
                {
                    release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    held.Add((signer, release));
                }
            }

            if (release is not null)
                await release.Task;
            return answer;
        }

        public void Hold(int signer)
        {
            lock (held)
                holding.Add(signer);
        }

        public int HeldCount(int signer)
        {
            lock (held)
                return held.Count(h => h.Signer == signer);
        }

        /// <summary>Hands back the oldest held answer of <paramref name="signer"/>.</summary>
        public void Release(int signer)
        {
            lock (held)
            {
                var index = held.FindIndex(h => h.Signer == signer);
                held[index].Release.SetResult();
                held.RemoveAt(index);
            }
        }

        /// <summary>Stops holding <paramref name="signer"/>'s answers and hands back every held one.</summary>
        public void ReleaseAll(int signer)
        {
            lock (held)
            {
                holding.Remove(signer);
                foreach (var (_, release) in held.Where(h => h.Signer == signer))
                    release.SetResult();
                held.RemoveAll(h => h.Signer == signer);
            }
        }
    }

    private async Task ReplicateAsync(ILogCommand command) => await log.ReplicateAsync(LogCommandCodec.Encode(command), null, CancellationToken.None);

    private async Task SetUpAsync(Func<int, INonceStore>? storeOf = null)
    {
        await ReplicateAsync(SigningFixtures.EpochOne(key.Group));
        foreach (var id in new[] { 1, 2, 3 })
        {
            var store = storeOf?.Invoke(id) ?? new InMemoryNonceStore();
            var made = store.Generate(1, key.Shares[id - 1], 1, 16);
            await ReplicateAsync(SigningFixtures.Publication(key.Shares[id - 1], 1, [.. made.Select(c => c.Commitment)]));
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
            time.Advance(TimeSpan.FromMilliseconds(5));
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

        // Each request carries the leader's term and its commit index (a follower may commit up to it at once).
        lock (channel.Asked)
        {
            Assert.All(channel.Asked, asked => Assert.Equal(log.Term, asked.Request.Term));
            Assert.All(channel.Asked, asked => Assert.True(asked.Request.CommitIndex >= 1, "the request carries the commit index of the applied head"));
        }

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

    /// <summary>
    /// A signer's proof is checked only when its share does not verify: an answer whose proof does not hold but whose
    /// share is right gives a signature (and nobody is blamed), and one whose share and proof are both wrong (not
    /// provably the signer's) counts as no answer, a timeout, never as a bad share.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnAnswerWhoseProofDoesNotHold_IsCheckedOnlyIfItsShareFails_AndIsNeverBlamedAsABadShare(bool shareBroken)
    {
        await SetUpAsync();
        static byte[] Flipped(byte[] bytes) => [.. bytes.Select((b, i) => i == bytes.Length - 1 ? (byte)(b ^ 1) : b)];
        channel.Tamper = (signer, answer) => signer != 2 || answer.Shares is not { } message ? answer : new DirectAnswer(new SignatureSharesMessage
        {
            SignerId = message.SignerId,
            KeyEpoch = message.KeyEpoch,
            Shares = shareBroken ? [.. message.Shares.Select(s => new SignatureShareMessage { Height = s.Height, Attempt = s.Attempt, Share = Flipped(s.Share) })] : message.Shares,
            Proof = Flipped(message.Proof),
        }, 200, null, null);

        await CutBatchAsync(1);
        var flight = await AggregatedAsync();
        var report = coordinator.Signers().Single(s => s.Id == 2);
        Assert.Equal(0, report.BadShares);
        if (shareBroken)
        {
            Assert.Equal([1, 3], flight.Session.Signers);
            Assert.Equal(1, report.Timeouts);
        }
        else
        {
            Assert.Equal([1, 2], flight.Session.Signers);
            Assert.Equal(0, report.Timeouts);
        }

        await CutBatchAsync(2);
        Assert.Equal(1UL, state.SignedThrough);
    }

    [Fact]
    public async Task ANewTerm_FindsTheNoncesOfTheLostRecordUsed_WithoutBlamingAnyone_AndALateAnswerOfTheOldTermIsDropped()
    {
        await SetUpAsync();
        channel.Hold(2);
        await CutBatchAsync(1);
        await UntilAsync(() => channel.HeldCount(2) == 1);
        var first = Assert.Single(coordinator.Flights).Session;

        // A new term (the same node wins again) before the first session's record reached the log: the new leadership
        // knows nothing of it, offers the same commitments again, and its signers refuse them (used). That blames
        // nobody; the refused session's record takes them out of the pool, and the next attempt uses fresh ones.
        log.WinNextTerm();
        await UntilAsync(() => channel.HeldCount(2) >= 2);
        Assert.Equal(first.Sequences, channel.Asked[^1].Request.Sessions[0].Sequences);

        // The old term's answer comes now: it is for a session of another term, and is dropped.
        channel.Release(2);
        channel.ReleaseAll(2);
        var flight = await AggregatedAsync();
        Assert.NotEqual(first.Sequences, flight.Session.Sequences);
        Assert.True(flight.Session.Attempt > first.Attempt);
        Assert.All(coordinator.Signers(), s => Assert.Equal((0L, 0L), (s.BadShares, s.Timeouts)));
        await CutBatchAsync(2);
        Assert.Equal(1UL, state.SignedThrough);
        Assert.All(signers.Select(x => x.NonceUses(0, 10)), uses => Assert.Equal(uses.Count, uses.Select(u => u.Sequence).Distinct().Count()));
    }

    [Fact]
    public async Task ANewLeader_AsksNoSignerUntilItHasAppliedEverythingCommittedBeforeItsTerm()
    {
        await SetUpAsync();
        coordinator.Round();

        // A new term won while the apply is one entry short of the commit index (and stays there): a batch is cut, and for
        // a second of rounds no signer is asked.
        log.AppliedThrough = log.CommitIndex - 1;
        log.WinNextTerm();
        coordinator.Round();
        await CutBatchAsync(1);
        for (var i = 0; i < 200; i++)
        {
            coordinator.Round();
            time.Advance(TimeSpan.FromMilliseconds(5));
        }

        Assert.Empty(channel.Asked);
        Assert.Empty(coordinator.Flights);

        // Applied through: the head is signed.
        log.AppliedThrough = null;
        var flight = await AggregatedAsync();
        Assert.Equal(1UL, flight.Session.Height);
    }

    // Steps the coordinator until the condition holds.
    private async Task UntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition did not hold in 10 s");
            coordinator.Round();
            await Task.Delay(5);
            time.Advance(TimeSpan.FromMilliseconds(5));
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

        // Refused before any nonce is taken: a signer set that is not t members of the epoch, and a request that gives
        // this signer's commitment another value than it published.
        var fewer = Request(2, 4, 8, 8);
        fewer = new SessionRequestMessage
        {
            LeaderId = 1,
            Sessions = [new SigningSession { Height = 2, Attempt = 4, KeyEpoch = 1, Signers = [2], Sequences = [8], Direct = true }],
            Commitments = [[fewer.Commitments[0][1]]],
        };
        Assert.Equal((400, "bad_session"), ((await signer.AnswerDirectAsync(fewer, CancellationToken.None)).Status, (await signer.AnswerDirectAsync(fewer, CancellationToken.None)).Code));
        var strangers = Request(2, 5, 8, 8);
        strangers = new SessionRequestMessage
        {
            LeaderId = 1,
            Sessions = [new SigningSession { Height = 2, Attempt = 5, KeyEpoch = 1, Signers = [2, 9], Sequences = [8, 8], Direct = true }],
            Commitments = [[strangers.Commitments[0][1], strangers.Commitments[0][0]]],
        };
        Assert.Equal("bad_session", (await signer.AnswerDirectAsync(strangers, CancellationToken.None)).Code);
        var forged = Request(2, 6, 8, 8);
        forged = new SessionRequestMessage { LeaderId = 1, Sessions = forged.Sessions, Commitments = [[forged.Commitments[0][0], forged.Commitments[0][0]]] };
        Assert.Equal((400, "bad_commitment"), ((await signer.AnswerDirectAsync(forged, CancellationToken.None)).Status, (await signer.AnswerDirectAsync(forged, CancellationToken.None)).Code));
        Assert.Single(signer.NonceUses(0, 10));

        // ... so the nonce those requests named still serves a proper one.
        Assert.Equal(200, (await signer.AnswerDirectAsync(Request(2, 7, 8, 8), CancellationToken.None)).Status);
        Assert.Equal(2, signer.NonceUses(0, 10).Count);

        // The leader's own signer, asked in process, answers with the same checks and no proof (the leader checks none of
        // its own); asked over the channel it proves its shares.
        var own = await signers[0].AnswerDirectAsync(Request(2, 8, 9, 9), CancellationToken.None, inProcess: true);
        Assert.Equal(200, own.Status);
        Assert.Empty(own.Shares!.Proof);
        var reused = await signers[0].AnswerDirectAsync(Request(2, 9, 9, 9), CancellationToken.None, inProcess: true);
        Assert.Equal((409, "nonce_used"), (reused.Status, reused.Code));
        var proved = await signers[0].AnswerDirectAsync(Request(2, 10, 10, 10), CancellationToken.None);
        Assert.True(SignerProof.Verify(SignatureSharesMessage.ProofDomain, proved.Shares!.ProofPayload(), proved.Shares.Proof, key.Group.VerificationShares[1]));
    }

    [Fact]
    public async Task TheKeyEpochsTimeInForce_CountsFromWhenThisNodeAppliedIt()
    {
        time.Advance(TimeSpan.FromMinutes(7));
        Assert.Equal(TimeSpan.FromMinutes(7), state.KeyEpochInForceFor);
        await SetUpAsync();
        Assert.Equal(TimeSpan.Zero, state.KeyEpochInForceFor);
        time.Advance(TimeSpan.FromSeconds(90));
        Assert.Equal(TimeSpan.FromSeconds(90), state.KeyEpochInForceFor);
    }

    [Fact]
    public async Task ASignerWhoseStoreWasRestoredFromABackup_RefusesANonceItsLogRecordsAsUsed()
    {
        var directory = Path.Combine(Path.GetTempPath(), "sequencer-restored-" + Guid.NewGuid().ToString("N"));
        var backup = directory + "-backup";
        try
        {
            NonceStore? original = null;
            await SetUpAsync(id => id == 2 ? original = new NonceStore(directory) : new InMemoryNonceStore());
            await CutBatchAsync(1);
            // The operator's backup of the signer's directory, taken before any nonce was used.
            original!.Dispose();
            CopyDirectory(directory, backup);
            var reopened = new NonceStore(directory);
            var signer = new SignerService(key.Shares[1], key.Group, 1, state, new NoLeader(), reopened, Limits, new NodeMetrics(), NullLogger<SignerService>.Instance, SignerFault.None);
            var published = state.UnusedCommitment(2, 1)!;
            var firstSigner = Enumerable.Range(1, 4).ToDictionary(q => (ulong)q, q => state.UnusedCommitment(1, (ulong)q)!);
            SessionRequestMessage Request(ulong height, int attempt, ulong sequence1) => new()
            {
                LeaderId = 1,
                Sessions = [new SigningSession { Height = height, Attempt = attempt, KeyEpoch = 1, Signers = [1, 2], Sequences = [sequence1, 1], Direct = true }],
                Commitments = [[firstSigner[sequence1], published]],
            };

            // Nonce 1 serves head 1, and the session's record reaches the log (it takes the commitments out of the pool).
            var first = await signer.AnswerDirectAsync(Request(1, 1, 1), CancellationToken.None);
            Assert.Equal(200, first.Status);
            await ReplicateAsync(new BatchCommand { LeaderTimestampMs = 5000, Txs = [BatchApplierTests.Tx(2)], Sessions = [Request(1, 1, 1).Sessions[0]] });
            Assert.Null(state.UnusedCommitment(2, 1));
            reopened.Dispose();

            // The directory is restored from the backup: the store holds nonce 1 again. A leader asks for it for
            // another head: refused from the log's record, and nothing is taken.
            Directory.Delete(directory, recursive: true);
            CopyDirectory(backup, directory);
            using var restored = new NonceStore(directory);
            Assert.Contains(restored.CommitmentsFrom(1, 1), c => c.Sequence == 1);
            var again = new SignerService(key.Shares[1], key.Group, 1, state, new NoLeader(), restored, Limits, new NodeMetrics(), NullLogger<SignerService>.Instance, SignerFault.None);
            var refused = await again.AnswerDirectAsync(Request(2, 1, 2), CancellationToken.None);
            Assert.Equal((409, "nonce_used"), (refused.Status, refused.Code));
            Assert.Contains("the log records nonce 1", refused.Reason, StringComparison.Ordinal);
            Assert.Empty(again.NonceUses(0, 10));

            // The very session the log recorded may be answered again: the same head, attempt, signers and nonces
            // make the same share, which gives nothing away.
            var same = await again.AnswerDirectAsync(Request(1, 1, 1), CancellationToken.None);
            Assert.Equal(200, same.Status);
            Assert.Equal(first.Shares!.Shares[0].Share, same.Shares!.Shares[0].Share);

            // A record that reaches the signer's log before the signer answers (the leader queues it as the session
            // starts) does not refuse the session it records.
            var published3 = state.UnusedCommitment(2, 3)!;
            var recordFirst = new SessionRequestMessage
            {
                LeaderId = 1,
                Sessions = [new SigningSession { Height = 2, Attempt = 3, KeyEpoch = 1, Signers = [1, 2], Sequences = [3, 3], Direct = true }],
                Commitments = [[firstSigner[3], published3]],
            };
            await ReplicateAsync(new BatchCommand { LeaderTimestampMs = 5000, Txs = [BatchApplierTests.Tx(3)], Sessions = [recordFirst.Sessions[0]] });
            Assert.Null(state.UnusedCommitment(2, 3));
            Assert.Equal(200, (await again.AnswerDirectAsync(recordFirst, CancellationToken.None)).Status);
            await again.DisposeAsync();
            await signer.DisposeAsync();
        }
        finally
        {
            foreach (var path in new[] { directory, backup })
            {
                if (Directory.Exists(path))
                    Directory.Delete(path, recursive: true);
            }
        }
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
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
