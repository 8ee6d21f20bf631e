using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>How a signer misbehaves on purpose (the chaos harness's Byzantine-signer fault).</summary>
public enum SignerFault
{
    /// <summary>It signs honestly.</summary>
    None,

    /// <summary>It sends a wrong share for every session (and a valid proof over it: it is caught and named).</summary>
    WrongShares,

    /// <summary>It never sends its shares.</summary>
    Silent,
}

/// <summary>
/// A node's signer (DESIGN section 5). It keeps a pool of nonce commitments published through the log, and answers
/// every signing session that names it (the leader's direct requests, <see cref="AnswerDirectAsync"/>, or sessions
/// applied from the log): it computes the commitment from its own applied header (never from bytes the leader hands
/// it), takes the session's nonce pair out of its store durably, and only then computes its share and gives it to the
/// leader (in the answer, or posted).
/// </summary>
public sealed partial class SignerService : IAsyncDisposable
{
    private const int SendAttempts = 5;

    /// <summary>How long all attempts to send one shares message may take together.</summary>
    private static readonly TimeSpan SendDeadline = TimeSpan.FromSeconds(3);
    private const int MaxDirectRequests = 32;
    private const int GenerateStep = 64;
    private const int CompactAfter = 64;
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan ReplenishPoll = TimeSpan.FromMilliseconds(20);
    private static readonly TimeSpan PruneInterval = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan PublishTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan PoolCheckInterval = TimeSpan.FromSeconds(1);
    private const int PoolCheckSize = 16;
    private static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(10);

    // A failing disk fails the loops on every pass (every 20 to 100 ms): each failure is logged at most this often, and a
    // failed compaction is retried at most every CompactRetry (each try copies every waiting take under the store's lock,
    // and may start a used-nonce log).
    private static readonly TimeSpan FailureLogInterval = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan CompactRetry = TimeSpan.FromSeconds(1);

    private readonly KeyShare share;
    private readonly GroupKey group;
    private readonly ulong epoch;
    private readonly AppliedState state;
    private readonly ILeaderChannel leader;
    private readonly INonceStore nonces;
    private readonly SequencerLimits limits;
    private readonly NodeMetrics metrics;
    private readonly ILogger logger;
    private readonly Lock gate = new();
    private long lastPoolCheck;
    private readonly LogThrottle sessionFailures = new(FailureLogInterval);
    private readonly LogThrottle poolFailures = new(FailureLogInterval);
    private readonly LogThrottle compactionFailures = new(FailureLogInterval);
    private readonly LogThrottle refusedSessions = new(FailureLogInterval);
    private readonly LogThrottle usedInLog = new(FailureLogInterval);
    private readonly List<AppliedSession> queue = [];
    private readonly CancellationTokenSource stopping = new();
    private BackgroundLoop? loop;
    private BackgroundLoop? replenisher;
    private HashSet<ulong> pruneCandidates = [];
    private readonly SemaphoreSlim sends = new(4);
    private readonly SemaphoreSlim directRequests = new(MaxDirectRequests);
    private TaskCompletionSource wake = NewSignal();
    private long lastPrune;
    private long publishStarted;

    // The next sequence after the last publication the leader committed, and when: until this node has applied it, the
    // same range is not published again (a duplicate is ignored at apply, but costs a Raft entry and a proof check on
    // every node).
    private ulong publishedNext;
    private long publishedAt;
    private bool mismatchReported;
    private int dropped;

    /// <summary>Builds the signer; <see cref="Start"/> runs it.</summary>
    public SignerService(KeyShare share, GroupKey group, ulong epoch, AppliedState state, ILeaderChannel leader, INonceStore nonces,
        SequencerLimits limits, NodeMetrics metrics, ILogger<SignerService> logger, SignerFault fault)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(leader);
        ArgumentNullException.ThrowIfNull(nonces);
        this.share = share;
        this.group = group;
        this.epoch = epoch;
        this.state = state;
        this.leader = leader;
        this.nonces = nonces;
        this.limits = limits;
        this.metrics = metrics;
        this.logger = logger;
        Fault = fault;
    }

    /// <summary>Starts answering sessions and keeping the nonce pool full (both loops supervised).</summary>
    public void Start(BackgroundLoops loops)
    {
        ArgumentNullException.ThrowIfNull(loops);
        Invariant.Check(loop is null, "a signer starts once");
        state.SessionsStarted += OnSessionsStarted;
        loop = loops.Start($"signer {share.Identifier}", StuckAfter, LoopAsync, stopping.Token);
        replenisher = loops.Start($"signer {share.Identifier}'s nonce pool", StuckAfter, ReplenishLoopAsync, stopping.Token);
    }

    // Making nonces (about 0.2 ms a pair) and publishing them runs beside answering sessions, never in front of it.
    private async Task ReplenishLoopAsync(BackgroundLoop self, CancellationToken token)
    {
        using var timer = new PeriodicTimer(ReplenishPoll);
        long compactFailedAt = 0;
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            try
            {
                if (IsActive())
                    Replenish();
            }
            catch (Exception e) when (e is IOException or LiteDB.LiteException or InvalidOperationException)
            {
                LogFailure(poolFailures, "nonce pool upkeep", e);
            }

            // Apart from the pool's upkeep, so that one's failure never stops the other.
            var now = Stopwatch.GetTimestamp();
            if (nonces.Uncompacted >= CompactAfter && (compactFailedAt == 0 || Stopwatch.GetElapsedTime(compactFailedAt, now) >= CompactRetry))
            {
                try
                {
                    nonces.Compact();
                    compactFailedAt = 0;
                }
                catch (Exception e) when (e is IOException or LiteDB.LiteException or InvalidOperationException)
                {
                    compactFailedAt = now;
                    LogFailure(compactionFailures, "nonce compaction", e);
                }
            }

            try
            {
                if (!await timer.WaitForNextTickAsync(token).ConfigureAwait(false))
                    return;
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>The Byzantine-signer fault in force; the chaos harness changes it through <c>/admin/signer-fault</c>.</summary>
    public SignerFault Fault { get; set; }

    /// <summary>The key epoch of this signer's share.</summary>
    public ulong Epoch => epoch;

    /// <summary>This signer's member id.</summary>
    public int Id => share.Identifier;

    /// <summary>Unused nonce pairs in the store.</summary>
    public int StoredNonces => nonces.Count;

    /// <summary>The recorded nonce uses (oldest first).</summary>
    public IReadOnlyList<RecordedNonceUse> NonceUses(int skip, int limit) => nonces.Uses(skip, limit);

    private void OnSessionsStarted(IReadOnlyList<AppliedSession> sessions)
    {
        // A direct session's record is not a request: its signers answered the leader directly.
        var mine = sessions.Where(s => !s.Session.Direct && s.Session.KeyEpoch == epoch && s.Session.Signers.Contains(share.Identifier)).ToList();
        if (mine.Count == 0)
            return;
        lock (gate)
        {
            // Bounded: a session left out here times out on the leader and the head is signed again with fresh nonces.
            var room = Math.Max(0, limits.MaxQueuedSigningSessions - queue.Count);
            if (room < mine.Count)
                dropped += mine.Count - room;
            queue.AddRange(mine.Take(room));
        }

        Volatile.Read(ref wake).TrySetResult();
    }

    private async Task LoopAsync(BackgroundLoop self, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            var signal = Volatile.Read(ref wake);
            try
            {
                if (IsActive())
                {
                    await AnswerSessionsAsync(token).ConfigureAwait(false);
                    Prune();
                }
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is IOException or LiteDB.LiteException or InvalidOperationException)
            {
                LogFailure(sessionFailures, "session round", e);
            }

            await signal.Task.WaitAsync(Poll, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (signal.Task.IsCompleted)
                Interlocked.CompareExchange(ref wake, NewSignal(), signal);
        }
    }

    /// <summary>Signs only while the log's current key epoch is the one of this node's share and names the same keys.</summary>
    private bool IsActive()
    {
        var current = state.CurrentKeyEpoch;
        if (current is null || current.Epoch != epoch)
            return false;
        if (current.Group.PublicKey.Equals(group.PublicKey) && current.Group.VerificationShares.TryGetValue(share.Identifier, out var mine)
            && mine.Equals(group.VerificationShares[share.Identifier]))
            return true;
        if (!mismatchReported)
        {
            mismatchReported = true;
            LogKeyMismatch(logger, epoch, share.Identifier);
        }

        return false;
    }

    private async Task AnswerSessionsAsync(CancellationToken token)
    {
        List<AppliedSession> batch;
        lock (gate)
        {
            if (queue.Count == 0)
                return;
            batch = [.. queue];
            queue.Clear();
            if (dropped > 0)
            {
                LogDropped(logger, dropped);
                dropped = 0;
            }
        }

        var started = Stopwatch.GetTimestamp();
        var shares = MakeShares(batch);
        metrics.ShareDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        if (shares.Count == 0 || Fault == SignerFault.Silent)
            return;

        for (var i = 0; i < shares.Count; i += SignatureSharesMessage.MaxShares)
        {
            var message = SharesMessage(shares.GetRange(i, Math.Min(SignatureSharesMessage.MaxShares, shares.Count - i)));
            await sends.WaitAsync(token).ConfigureAwait(false);
            _ = SendSharesAsync(message, token);
        }
    }

    /// <summary>
    /// Answers the leader's direct request (<c>POST /internal/v1/sessions</c>): for each session that names this signer,
    /// waits (briefly) until this node has applied the head, computes the head's commitment from its own applied header,
    /// takes its nonce pair durably and signs. Returns the shares, or why none can be given. Asked
    /// <paramref name="inProcess"/> (by the leader's own coordinator, which checks no proof of its own signer), the
    /// shares message carries no proof.
    /// </summary>
    public async Task<DirectAnswer> AnswerDirectAsync(SessionRequestMessage request, CancellationToken token, bool inProcess = false)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!IsActive())
            return DirectAnswer.Refuse(409, "not_signing", $"this node does not sign under the log's current key epoch (its share is of epoch {epoch})");
        if (!await directRequests.WaitAsync(0, token).ConfigureAwait(false))
            return DirectAnswer.Refuse(503, "overloaded", "too many session requests at once");
        try
        {
            var started = Stopwatch.GetTimestamp();

            // Everything that can be checked without waiting is checked first, and nothing is taken before every check
            // passed: a request this signer refuses costs it no nonce.
            var parsed = new List<List<NonceCommitment>>(request.Sessions.Count);
            var own = new HashSet<ulong>();
            for (var i = 0; i < request.Sessions.Count; i++)
            {
                var session = request.Sessions[i];
                var index = IndexOf(session.Signers, share.Identifier);
                if (session.KeyEpoch != epoch || !session.Direct || index < 0 || !Ascending(session.Signers) || session.Signers.Count < group.Threshold
                    || session.Signers.Any(id => !group.VerificationShares.ContainsKey(id)) || !own.Add(session.Sequences[index]))
                {
                    return DirectAnswer.Refuse(400, "bad_session",
                        $"head {session.Height}: not a direct session of key epoch {epoch} with {group.Threshold} or more of its members, ascending, this signer among them once");
                }

                var commitments = new List<NonceCommitment>(session.Signers.Count);
                try
                {
                    for (var j = 0; j < session.Signers.Count; j++)
                    {
                        commitments.Add(NonceCommitment.Decode(session.Signers[j], request.Commitments[i][j]));
                    }
                }
                catch (FormatException)
                {
                    return DirectAnswer.Refuse(400, "bad_commitment", $"head {session.Height}: a commitment is not two points");
                }

                // This signer's own commitment must be one it holds, unused, with the value it published.
                var held = nonces.Epoch == epoch ? nonces.CommitmentsFrom(session.Sequences[index], 1) : [];
                if (held is not [var mine] || mine.Sequence != session.Sequences[index])
                    return DirectAnswer.Refuse(409, "nonce_used", $"this signer no longer holds nonce {session.Sequences[index]} (used or lost); it is never used again");
                if (!mine.Commitment.AsSpan().SequenceEqual(request.Commitments[i][index]))
                    return DirectAnswer.Refuse(400, "bad_commitment", $"head {session.Height}: commitment {session.Sequences[index]} is not the one this signer published");

                // ... and one its own log does not record as used (checked again once the head is applied). A store
                // restored from a backup holds nonces used since; a leader that named one again would get a second share
                // under that nonce for another head, and two shares under one nonce give away this signer's key share.
                if (UsedInLog(session, index, mine.Commitment) is { } refusal)
                    return refusal;
                parsed.Add(commitments);
            }

            var applied = new List<AppliedSession>(request.Sessions.Count);
            for (var i = 0; i < request.Sessions.Count; i++)
            {
                var session = request.Sessions[i];
                if (!await WaitAppliedAsync(session.Height, TimeSpan.FromMilliseconds(limits.SigningLateShareMs), token).ConfigureAwait(false))
                    return DirectAnswer.Refuse(409, "not_applied", $"head {session.Height} is not applied on this node yet");
                if (session.Height <= state.SignedThrough)
                    return DirectAnswer.Refuse(409, "signed", $"head {session.Height} is signed already");
                var mine = IndexOf(session.Signers, share.Identifier);
                if (UsedInLog(session, mine, request.Commitments[i][mine]) is { } used)
                    return used;
                var header = state.GetBatch(session.Height)?.Header;
                if (header is null || header.KeyEpoch != epoch)
                    return DirectAnswer.Refuse(409, "other_epoch", $"head {session.Height} is not a head of key epoch {epoch}");
                var prepared = new AppliedSession(session, header.Commitment.ToArray(), parsed[i], group.PublicKey);
                try
                {
                    _ = prepared.Context;
                }
                catch (ArgumentException e)
                {
                    return DirectAnswer.Refuse(400, "bad_session", $"head {session.Height}: {e.Message}");
                }

                applied.Add(prepared);
            }

            var shares = MakeShares(applied);
            metrics.ShareDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            if (shares.Count < applied.Count)
            {
                return nonces.Uncompacted >= INonceStore.MaxUncompacted
                    ? DirectAnswer.Refuse(503, "store_full", "this signer's nonce store cannot record more uses until its compaction succeeds again")
                    : DirectAnswer.Refuse(409, "nonce_used", "this signer no longer holds a nonce the request names (used or lost); it is never used again");
            }
            if (Fault == SignerFault.Silent)
            {
                // Silent: the request hangs until the leader gives up on it, as a signer that is cut off would.
                await Task.Delay(TimeSpan.FromMilliseconds(limits.SigningSessionTimeoutMs), token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                return DirectAnswer.Refuse(503, "silent", "the signer is silent");
            }

            // The leader's own signer, asked in process, needs no proof: the leader does not check its own (a base
            // multiplication saved per session).
            return new DirectAnswer(SharesMessage(shares, proved: !inProcess), 200, null, null);
        }
        finally
        {
            directRequests.Release();
        }
    }

    // Waits until this node has applied the batch at height (a follower learns of a commit a moment after the leader).
    private async Task<bool> WaitAppliedAsync(ulong height, TimeSpan timeout, CancellationToken token)
    {
        if ((state.LastHeader?.Height ?? 0) >= height)
            return true;
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnApplied(AppliedEvent applied)
        {
            if (applied.Batch is { } batch && batch.Header.Height >= height)
                reached.TrySetResult();
        }

        state.Applied += OnApplied;
        try
        {
            if ((state.LastHeader?.Height ?? 0) >= height)
                return true;
            await reached.Task.WaitAsync(timeout, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            return (state.LastHeader?.Height ?? 0) >= height;
        }
        finally
        {
            state.Applied -= OnApplied;
        }
    }

    // This signer's shares message, with its proof unless it goes no further than this process.
    private SignatureSharesMessage SharesMessage(List<SignatureShareMessage> shares, bool proved = true)
    {
        var message = new SignatureSharesMessage { SignerId = share.Identifier, KeyEpoch = epoch, Shares = shares };
        if (!proved)
            return message;
        return new SignatureSharesMessage { SignerId = message.SignerId, KeyEpoch = epoch, Shares = shares, Proof = SignerProof.Sign(SignatureSharesMessage.ProofDomain, message.ProofPayload(), share.Secret) };
    }

    // INV-NONCE: the nonces leave the store durably before any share made with them leaves this node, together with a
    // record of the session each one serves. A nonce that is not there (used before, or lost) is never recreated: that
    // session goes unanswered and is retried.
    private List<SignatureShareMessage> MakeShares(IReadOnlyList<AppliedSession> batch)
    {
        var wanted = new Dictionary<ulong, AppliedSession>();
        foreach (var session in batch)
        {
            var index = IndexOf(session.Session.Signers, share.Identifier);
            wanted.TryAdd(session.Session.Sequences[index], session);
        }

        var taken = nonces.Take(epoch, wanted.ToDictionary(w => w.Key, w => (NonceUse?)new NonceUse(
            w.Value.Session.Height, w.Value.Session.Attempt, w.Value.Message, w.Value.Session.Signers,
            System.Security.Cryptography.SHA256.HashData(Frost.EncodeCommitmentList(w.Value.Commitments)))));
        var shares = new List<SignatureShareMessage>(taken.Count);
        foreach (var (sequence, (pair, stored)) in taken)
        {
            var applied = wanted[sequence];
            var mine = applied.Commitments.First(c => c.Identifier == share.Identifier);
            var published = mine.Encode();
            if (!published.AsSpan().SequenceEqual(stored))
            {
                LogCommitmentMismatch(logger, applied.Session.Height, sequence);
                continue;
            }

            // The stored commitment was computed from these nonces when they were made, and equals the session's.
            var z = applied.Context.Sign(share, pair, mine);
            if (Fault == SignerFault.WrongShares)
                z = z.Add(Org.BouncyCastle.Math.BigInteger.One).Mod(Secp256k1.Order);
            shares.Add(new SignatureShareMessage { Height = applied.Session.Height, Attempt = applied.Session.Attempt, Share = Secp256k1.SerializeScalar(z) });
        }

        var missing = wanted.Count - taken.Count;
        if (missing > 0 && nonces.Uncompacted >= INonceStore.MaxUncompacted)
        {
            // At the store's bound (its compaction keeps failing), every session is refused until one succeeds.
            if (refusedSessions.Admit(Stopwatch.GetTimestamp(), missing, out var held))
                LogNoncesRefused(logger, missing + held, nonces.Uncompacted, (int)refusedSessions.Interval.TotalSeconds);
        }
        else if (missing > 0)
        {
            LogMissingNonces(logger, missing);
        }

        return shares;
    }

    // The refusal of a session whose nonce this node's log records as used by another session (NonceUseRejection), logged
    // as the likely restore of the signer's directory from a backup; null when the log lets it be used.
    private DirectAnswer? UsedInLog(SigningSession session, int index, byte[] commitment)
    {
        var sequence = session.Sequences[index];
        if (state.NonceUseRejection(share.Identifier, sequence, commitment, session) is not { } reason)
            return null;
        // A key epoch that changed meanwhile (a rotation's hand-over) is no sign of a restore.
        if (state.CurrentKeyEpoch?.Epoch != session.KeyEpoch)
            return DirectAnswer.Refuse(409, "other_epoch", reason);
        if (usedInLog.Admit(Stopwatch.GetTimestamp(), 1, out var since))
            LogUsedInLog(logger, sequence, reason, since, (int)usedInLog.Interval.TotalSeconds);
        return DirectAnswer.Refuse(409, "nonce_used", $"{reason}; this signer never uses it again");
    }

    private static bool Ascending(IReadOnlyList<int> ids)
    {
        for (var i = 1; i < ids.Count; i++)
        {
            if (ids[i] <= ids[i - 1])
                return false;
        }

        return true;
    }

    private async Task SendSharesAsync(SignatureSharesMessage message, CancellationToken token)
    {
        // Every attempt together within a deadline: a share is worth nothing after its session timed out, and the loop
        // that makes shares waits for a free send slot, so hung sends must not hold the slots for half a minute.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(token);
        deadline.CancelAfter(SendDeadline);
        token = deadline.Token;
        try
        {
            // The same shares for the same sessions may be sent again (to a new leader): that reuses no nonce.
            for (var attempt = 0; attempt < SendAttempts && !token.IsCancellationRequested; attempt++)
            {
                var delivery = await leader.SendSharesAsync(message, token).ConfigureAwait(false);
                if (delivery.Delivered)
                    return;
                if (delivery.Refused)
                {
                    LogSharesRefused(logger, delivery.Reason ?? "refused");
                    return;
                }

                await Task.Delay(TimeSpan.FromMilliseconds(50 << attempt), token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            sends.Release();
        }
    }

    /// <summary>
    /// Keeps the published pool at the target: republishes stored but unpublished commitments, or makes new ones. When
    /// this signer holds none of its lowest published commitments (its nonces were lost with its data), or the pool
    /// offers one its store dropped at open (<see cref="INonceStore.LostAtOpen"/>), the next publication replaces every
    /// unused one, so that sessions stop choosing commitments no share can come for.
    /// </summary>
    private void Replenish()
    {
        var (available, next) = state.CommitmentsOf(share.Identifier);
        var replace = available > 0 && PoolNeedsReplacing();
        if (available >= limits.NoncePoolTarget / 2 && !replace)
            return;
        var now = Stopwatch.GetTimestamp();
        lock (gate)
        {
            if (publishStarted != 0 && Stopwatch.GetElapsedTime(publishStarted, now) < PublishTimeout)
                return;
            if (next < publishedNext && Stopwatch.GetElapsedTime(publishedAt, now) < PublishTimeout)
                return;
            publishStarted = now;
        }

        // Small steps (a nonce pair costs about 0.2 ms): answering sessions never waits long behind preprocessing.
        var count = replace ? GenerateStep : Math.Min(limits.NoncePoolTarget - available, GenerateStep);
        var pending = nonces.Epoch == epoch ? nonces.CommitmentsFrom(next, count) : [];
        List<StoredNonceCommitment> batch = [];
        foreach (var stored in pending)
        {
            if (stored.Sequence != (batch.Count == 0 ? stored.Sequence : batch[^1].Sequence + 1) || (batch.Count == 0 && stored.Sequence < next))
                break;
            batch.Add(stored);
        }

        if (batch.Count == 0)
            batch = [.. nonces.Generate(epoch, share, Math.Max(next, nonces.NextSequence(epoch)), count)];
        var command = new NonceCommitmentsCommand
        {
            SignerId = share.Identifier,
            KeyEpoch = epoch,
            FirstSequence = batch[0].Sequence,
            Commitments = [.. batch.Select(b => b.Commitment)],
            ReplacesUnused = replace,
        };
        if (replace)
            LogReplacingPool(logger, share.Identifier, available);
        command = new NonceCommitmentsCommand
        {
            SignerId = command.SignerId,
            KeyEpoch = command.KeyEpoch,
            FirstSequence = command.FirstSequence,
            Commitments = command.Commitments,
            ReplacesUnused = command.ReplacesUnused,
            Proof = SignerProof.Sign(SigningLedger.NonceCommitmentsProofDomain, command.ProofPayload(), share.Secret),
        };
        _ = PublishAsync(command);
    }

    private async Task PublishAsync(NonceCommitmentsCommand command)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token);
            timeout.CancelAfter(PublishTimeout);
            if ((await leader.ProposeAsync(command, timeout.Token).ConfigureAwait(false)).Delivered)
            {
                metrics.NoncesPublished.Add(command.Commitments.Count);
                lock (gate)
                {
                    publishedNext = command.FirstSequence + (ulong)command.Commitments.Count;
                    publishedAt = Stopwatch.GetTimestamp();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            lock (gate)
                publishStarted = 0;
            Volatile.Read(ref wake).TrySetResult();
        }
    }

    // True when none of the lowest published commitments is one this signer holds (same sequence, same value), or the
    // pool offers one the store dropped at open. Checked at most once a second. A session that uses one of them at the
    // same moment can make one look missing, never all of them; a node still catching up may see commitments it used
    // since as unused, and then replaces a pool it could have used: that costs a publication, never a nonce.
    private bool PoolNeedsReplacing()
    {
        var now = Stopwatch.GetTimestamp();
        if (lastPoolCheck != 0 && Stopwatch.GetElapsedTime(lastPoolCheck, now) < PoolCheckInterval)
            return false;
        lastPoolCheck = now;
        // Nonces the store dropped at open (a crash may have used them without a durable record) are looked for in a
        // wider window: a pool that still offers one is replaced, or every session that picks one is refused.
        var lost = nonces.LostAtOpen;
        var window = state.AvailableCommitments(share.Identifier, lost.Count > 0 ? 4 * PoolCheckSize : PoolCheckSize);
        if (window.Count == 0)
            return false;
        if (nonces.Epoch != epoch || (lost.Count > 0 && window.Any(o => lost.Contains(o.Sequence))))
            return true;

        var offered = window.Take(PoolCheckSize).ToList();
        var held = nonces.CommitmentsFrom(offered[0].Sequence, 4 * PoolCheckSize).ToDictionary(c => c.Sequence, c => c.Commitment);
        return !offered.Any(o => held.TryGetValue(o.Sequence, out var value) && value.AsSpan().SequenceEqual(o.Value));
    }

    /// <summary>Deletes stored nonces whose commitments the log no longer offers (used, dropped or never published in time).</summary>
    private void Prune()
    {
        var now = Stopwatch.GetTimestamp();
        if (lastPrune != 0 && Stopwatch.GetElapsedTime(lastPrune, now) < PruneInterval)
            return;
        lastPrune = now;
        var (_, next) = state.CommitmentsOf(share.Identifier);
        var offered = state.AvailableSequences(share.Identifier, SigningLedger.MaxCommitmentsPerSigner).ToHashSet();

        // Two passes: a nonce goes only when the log has not offered it for a whole prune interval. A session applied
        // a moment ago has taken its commitment out of the pool before this signer answered it; its nonce must stay.
        var previous = pruneCandidates;
        var candidates = new HashSet<ulong>();
        var removed = nonces.Prune(next, sequence =>
        {
            if (offered.Contains(sequence))
                return true;
            candidates.Add(sequence);
            return !previous.Contains(sequence);
        });
        pruneCandidates = candidates;
        if (removed > 0)
            LogPruned(logger, removed);
    }

    private void LogFailure(LogThrottle throttle, string work, Exception exception)
    {
        if (throttle.Admit(Stopwatch.GetTimestamp(), 1, out var held))
            LogSignerFailed(logger, exception, work, (int)throttle.Interval.TotalSeconds, held);
    }

    private static int IndexOf(IReadOnlyList<int> list, int value)
    {
        for (var i = 0; i < list.Count; i++)
        {
            if (list[i] == value)
                return i;
        }

        return -1;
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        state.SessionsStarted -= OnSessionsStarted;
        await stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
            await loop.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (replenisher is not null)
            await replenisher.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
    }

    [LoggerMessage(EventId = 310, Level = LogLevel.Error, Message = "Key epoch {Epoch} in the log does not match this node's key share (member {Id}): this node does not sign; check --key-share and --group-key")]
    private static partial void LogKeyMismatch(ILogger logger, ulong epoch, int id);

    [LoggerMessage(EventId = 311, Level = LogLevel.Warning, Message = "{Count} signing sessions were not answered: the session queue was full")]
    private static partial void LogDropped(ILogger logger, int count);

    [LoggerMessage(EventId = 312, Level = LogLevel.Warning, Message = "{Count} signing sessions named nonces this signer no longer holds (used or pruned); they are retried with fresh ones")]
    private static partial void LogMissingNonces(ILogger logger, int count);

    [LoggerMessage(EventId = 313, Level = LogLevel.Error, Message = "The session for height {Height} names commitment {Sequence} with other values than this signer stored; it is not answered")]
    private static partial void LogCommitmentMismatch(ILogger logger, ulong height, ulong sequence);

    [LoggerMessage(EventId = 314, Level = LogLevel.Warning, Message = "The leader refused this signer's shares: {Reason}")]
    private static partial void LogSharesRefused(ILogger logger, string reason);

    [LoggerMessage(EventId = 315, Level = LogLevel.Information, Message = "Pruned {Count} stored nonces the log no longer offers")]
    private static partial void LogPruned(ILogger logger, int count);

    [LoggerMessage(EventId = 316, Level = LogLevel.Error, Message = "The signer's {Work} failed; it retries, and logs this at most every {Seconds} s ({Held} more failures since the last line)")]
    private static partial void LogSignerFailed(ILogger logger, Exception exception, string work, int seconds, long held);

    [LoggerMessage(EventId = 317, Level = LogLevel.Warning, Message = "Signer {SignerId} holds none of its lowest published nonce commitments (its nonces were lost with its data): publishing new ones that replace all {Count} unused")]
    private static partial void LogReplacingPool(ILogger logger, int signerId, int count);

    [LoggerMessage(EventId = 319, Level = LogLevel.Warning, Message = "A session named nonce {Sequence}, which this signer's store still holds but its log does not offer ({Reason}): refused, as every such nonce is. A leader that planned it before it applied an earlier session's record would name it (harmless; a new leader plans only once it has applied everything committed before its term); otherwise the signer directory may have been restored from a backup. Logged at most every {Seconds} s ({Held} more since the last line)")]
    private static partial void LogUsedInLog(ILogger logger, ulong sequence, string reason, long held, int seconds);

    [LoggerMessage(EventId = 318, Level = LogLevel.Warning, Message = "{Count} signing sessions were not answered: the nonce store is at its bound of {Uncompacted} takes not yet compacted (its audit database uses.db failed); this signer answers again once a compaction succeeds (after a failed write LiteDB stays closed until the node restarts; logged at most every {Seconds} s)")]
    private static partial void LogNoncesRefused(ILogger logger, long count, int uncompacted, int seconds);
}

/// <summary>A signer's answer to a direct session request: its shares, or an HTTP status with a code and the reason.</summary>
public sealed record DirectAnswer(SignatureSharesMessage? Shares, int Status, string? Code, string? Reason)
{
    /// <summary>A refusal.</summary>
    public static DirectAnswer Refuse(int status, string code, string reason) => new(null, status, code, reason);
}
