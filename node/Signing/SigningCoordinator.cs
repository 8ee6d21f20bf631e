using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Storage;
using Sequencer.Node.Replication;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;
using Sequencer.Threshold;
using BigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Node.Signing;

/// <summary>What the coordinator knows about one signer, as served by <c>GET /v1/signing</c>.</summary>
/// <param name="Id">The member id.</param>
/// <param name="BadShares">Invalid shares it sent (each one named it).</param>
/// <param name="Timeouts">Sessions it did not answer in time.</param>
/// <param name="SharesAccepted">Valid shares it sent.</param>
/// <param name="ExcludedForMs">How much longer it is left out of new sessions (0: it is not).</param>
/// <param name="LastBadShareHeight">The height of its last invalid share (0: none).</param>
/// <param name="ShareLatencyMs">Its recent time from session start to a valid share, smoothed.</param>
public sealed record SignerReport(int Id, long BadShares, long Timeouts, long SharesAccepted, long ExcludedForMs, ulong LastBadShareHeight, double ShareLatencyMs);

/// <summary>
/// The leader's side of cluster signing (DESIGN sections 4 and 5). It starts signing sessions for unsigned batches
/// through the log (each naming t signers and the published nonce commitment each one uses), verifies every share it
/// receives against the signer's verification share, aggregates a complete set, and replicates the signatures.
/// </summary>
/// <remarks>
/// Signing never stalls ordering: it works on a window of unsigned heights behind the applied head. A session whose
/// shares do not all arrive within the timeout is retried with other signers and fresh commitments; a bad share names
/// its signer, who is left out of new sessions for a while. With fewer than t signers available it waits, and catches
/// up when they return.
/// </remarks>
public sealed partial class SigningCoordinator : IAsyncDisposable
{
    private const int MaxProposalsInFlight = 2;
    private const int MaxProbeSessionsPerRound = 4;
    private static readonly TimeSpan IdlePoll = TimeSpan.FromMilliseconds(20);
    private static readonly TimeSpan BadShareExclusion = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan MaxBadShareExclusion = TimeSpan.FromHours(1);
    private static readonly TimeSpan TimeoutExclusion = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan MaxTimeoutExclusion = TimeSpan.FromSeconds(4);
    private static readonly TimeSpan ProposalTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan UntrackedGrace = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan SignatureFlushDelay = TimeSpan.FromMilliseconds(2);

    private readonly int selfId;
    private volatile bool selfSigns;
    private readonly AppliedState state;
    private readonly ILeaderLog log;
    private readonly SequencerLimits limits;
    private readonly TimeProvider time;
    private readonly NodeMetrics metrics;
    private readonly ILogger logger;
    private readonly KeyEpochCommand? bootstrap;
    private readonly Lock gate = new();
    private readonly Dictionary<ulong, Tracked> sessions = [];
    private readonly Dictionary<ulong, long> proposedHeights = [];
    private readonly Dictionary<ulong, long> untracked = [];
    private readonly Dictionary<int, Dictionary<ulong, long>> reserved = [];
    private readonly Dictionary<int, Health> health = [];
    private readonly List<InboxShare> inbox = [];
    private readonly List<(ulong Height, BatchSignature Signature, long ReadyAt)> ready = [];
    private readonly Dictionary<ulong, long> handedOut = [];
    private readonly CancellationTokenSource stopping = new();
    private readonly Task loop;
    private TaskCompletionSource wake = NewSignal();
    private int sessionProposals;
    private int signatureProposals;
    private bool wasLeader;
    private long leaderTerm;
    private long bootstrapAt;
    private bool mismatchReported;

    /// <summary>Starts the coordinator; it acts only while <paramref name="log"/> is the leader.</summary>
    /// <param name="selfId">This node's member id.</param>
    /// <param name="selfSigns">Whether this node holds a key share (it then prefers itself as a signer).</param>
    /// <param name="state">The applied state.</param>
    /// <param name="log">The replicated log.</param>
    /// <param name="limits">Limits.</param>
    /// <param name="time">Clock.</param>
    /// <param name="metrics">Metrics.</param>
    /// <param name="logger">Logger.</param>
    /// <param name="bootstrap">The first key epoch, from the group key file, proposed when the log has none.</param>
    public SigningCoordinator(int selfId, bool selfSigns, AppliedState state, ILeaderLog log, SequencerLimits limits, TimeProvider time,
        NodeMetrics metrics, ILogger<SigningCoordinator> logger, KeyEpochCommand? bootstrap)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(log);
        this.selfId = selfId;
        this.selfSigns = selfSigns;
        this.state = state;
        this.log = log;
        this.limits = limits;
        this.time = time;
        this.metrics = metrics;
        this.logger = logger;
        this.bootstrap = bootstrap;
        state.SessionsStarted += OnSessionsStarted;
        state.SignaturesApplied += OnSignaturesApplied;
        log.LeaderChanged += Wake;
        loop = Task.Run(LoopAsync);
    }

    /// <summary>
    /// Queues shares sent by a signer; false when the queue is full (the sender retries later). Shares are verified
    /// by the loop, never trusted.
    /// </summary>
    public bool Receive(SignatureSharesMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        lock (gate)
        {
            if (inbox.Count + message.Shares.Count > limits.MaxQueuedShares)
                return false;
            foreach (var share in message.Shares)
                inbox.Add(new InboxShare(message.SignerId, message.KeyEpoch, share));
        }

        Wake();
        return true;
    }

    /// <summary>Whether this node holds a key share (it then prefers itself as a signer); set once a DKG gives it one.</summary>
    public bool SelfSigns
    {
        get => selfSigns;
        set => selfSigns = value;
    }

    /// <summary>What the coordinator knows about each signer of the current key epoch.</summary>
    public IReadOnlyList<SignerReport> Signers()
    {
        var epoch = state.CurrentKeyEpoch;
        if (epoch is null)
            return [];
        var now = time.GetTimestamp();
        lock (gate)
        {
            return [.. epoch.Record.Members.Select(id =>
            {
                var h = health.GetValueOrDefault(id) ?? new Health();
                var until = Math.Max(h.ExcludedUntil, h.BannedUntil);
                var excluded = until > now ? (long)time.GetElapsedTime(now, until).TotalMilliseconds : 0;
                return new SignerReport(id, h.BadShares, h.Timeouts, h.Accepted, excluded, h.LastBadHeight, Math.Round(h.LatencyMs, 2));
            })];
        }
    }

    /// <summary>Signing sessions this node tracks (active or awaiting their signature).</summary>
    public int ActiveSessions
    {
        get
        {
            lock (gate)
                return sessions.Count;
        }
    }

    private void OnSessionsStarted(IReadOnlyList<AppliedSession> started)
    {
        var now = time.GetTimestamp();
        lock (gate)
        {
            foreach (var applied in started)
            {
                var height = applied.Session.Height;
                proposedHeights.Remove(height);
                untracked.Remove(height);
                if (sessions.TryGetValue(height, out var existing) && existing.Applied.Session.Attempt >= applied.Session.Attempt)
                    continue;
                sessions[height] = new Tracked(applied, now);
            }

            // Bounded: a follower tracks sessions too (it may lead next), and drops the oldest beyond twice the window.
            if (sessions.Count > 2 * limits.SigningWindowBatches)
            {
                foreach (var height in sessions.Keys.Order().Take(sessions.Count - 2 * limits.SigningWindowBatches).ToList())
                    sessions.Remove(height);
            }
        }

        Wake();
    }

    private void OnSignaturesApplied(IReadOnlyList<StoredSignature> signatures)
    {
        lock (gate)
        {
            foreach (var signature in signatures)
            {
                sessions.Remove(signature.Height);
                proposedHeights.Remove(signature.Height);
                untracked.Remove(signature.Height);
                handedOut.Remove(signature.Height);
            }
        }

        Wake();
    }

    private void Wake() => Volatile.Read(ref wake).TrySetResult();

    private async Task LoopAsync()
    {
        var token = stopping.Token;
        while (!token.IsCancellationRequested)
        {
            var signal = Volatile.Read(ref wake);
            try
            {
                Round();
            }
            catch (Exception e) when (e is not InvariantViolationException and not OutOfMemoryException)
            {
                LogRoundFailed(logger, e);
            }

            bool waiting;
            lock (gate)
                waiting = ready.Count > 0;
            await signal.Task.WaitAsync(waiting ? SignatureFlushDelay : IdlePoll, time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (signal.Task.IsCompleted)
                Interlocked.CompareExchange(ref wake, NewSignal(), signal);
        }
    }

    private void Round()
    {
        var isLeader = log.IsLeader;
        var now = time.GetTimestamp();
        lock (gate)
        {
            // Leadership is judged by term, not by a sampled flag: a step-down and re-election between two rounds
            // (a few milliseconds under a ClogThenFlush) must reset exactly as a visible loss would.
            var term = log.Term;
            if (!isLeader || !wasLeader || term != leaderTerm)
            {
                // Signatures aggregated but not yet in the log were thrown away with the old leadership: every
                // unsigned session becomes eligible again, aggregated or not.
                inbox.Clear();
                ready.Clear();
                handedOut.Clear();
                proposedHeights.Clear();
                reserved.Clear();
                foreach (var tracked in sessions.Values)
                {
                    tracked.Aggregated = false;
                    tracked.Retry = RetryReason.NewLeader;
                }

                wasLeader = isLeader;
                leaderTerm = term;
                if (!isLeader)
                    return;
            }
        }

        var epoch = state.CurrentKeyEpoch;
        if (epoch is null)
        {
            ProposeBootstrap(now);
            return;
        }

        CheckBootstrapMatches(epoch);
        VerifyShares(now);
        ProposeSignatures(now);
        StartSessions(epoch, now);
    }

    private void ProposeBootstrap(long now)
    {
        if (bootstrap is null)
            return;
        lock (gate)
        {
            if (bootstrapAt != 0 && time.GetElapsedTime(bootstrapAt, now) < TimeSpan.FromSeconds(1))
                return;
            bootstrapAt = now;
        }

        LogProposingKeyEpoch(logger, bootstrap.Epoch, bootstrap.Threshold, bootstrap.Members.Count);
        _ = ProposeAsync(bootstrap, () => { });
    }

    private void CheckBootstrapMatches(KeyEpochView epoch)
    {
        if (bootstrap is null || mismatchReported || epoch.Epoch != bootstrap.Epoch || epoch.Record.GroupKey.AsSpan().SequenceEqual(bootstrap.GroupKey))
            return;
        mismatchReported = true;
        LogKeyMismatch(logger, epoch.Epoch);
    }

    private void VerifyShares(long now)
    {
        List<InboxShare> shares;
        lock (gate)
        {
            if (inbox.Count == 0)
                return;
            shares = [.. inbox];
            inbox.Clear();
        }

        var epochs = state.KeyEpochs.ToDictionary(e => e.Epoch);
        foreach (var (signerId, keyEpoch, item) in shares)
        {
            Tracked? tracked;
            lock (gate)
            {
                if (!sessions.TryGetValue(item.Height, out tracked) || tracked.Applied.Session.Attempt != item.Attempt || tracked.Aggregated
                    || tracked.Applied.Session.KeyEpoch != keyEpoch || tracked.Shares.ContainsKey(signerId)
                    || !tracked.Applied.Session.Signers.Contains(signerId) || tracked.Retry == RetryReason.BadShare)
                    continue;
            }

            if (!epochs.TryGetValue(keyEpoch, out var epoch) || !epoch.Group.VerificationShares.ContainsKey(signerId))
                continue;
            var z = ParseScalar(item.Share);
            lock (gate)
            {
                if (z is null)
                {
                    BlameLocked(signerId, tracked, now);
                    continue;
                }

                tracked.Shares[signerId] = z;
                var signer = HealthOf(signerId);
                var latency = time.GetElapsedTime(tracked.SeenAt, now).TotalMilliseconds;
                signer.LatencyMs = signer.Accepted == 0 ? latency : (0.8 * signer.LatencyMs) + (0.2 * latency);
                if (tracked.Shares.Count < tracked.Applied.Session.Signers.Count)
                    continue;
            }

            Complete(tracked, epoch, now);
        }
    }

    /// <summary>
    /// All t shares are in: aggregate and verify the group signature (one check for all of them). Only when it fails
    /// is each share checked against its signer's verification share, to name the culprits (cheater detection, as
    /// the ZF frost-core coordinator does); the session is then retried without them. Nothing unverified is proposed.
    /// </summary>
    private void Complete(Tracked tracked, KeyEpochView epoch, long now)
    {
        var applied = tracked.Applied;
        var frost = applied.Context;
        var signers = applied.Session.Signers;
        var signature = frost.Aggregate(signers.Select(id => tracked.Shares[id]));
        if (!Frost.Verify(applied.Message, signature, epoch.Group.PublicKey))
        {
            var culprits = signers.Where(id => !frost.VerifyShare(id, epoch.Group.VerificationShares[id], tracked.Shares[id])).ToList();
            lock (gate)
            {
                foreach (var id in culprits)
                    BlameLocked(id, tracked, now);
                if (culprits.Count == 0)
                {
                    // Cannot happen when every share verifies (the aggregate then verifies); retry rather than stall.
                    tracked.Retry = RetryReason.BadShare;
                    LogNoCulprit(logger, applied.Session.Height, applied.Session.Attempt);
                }

                tracked.Shares.Clear();
            }

            return;
        }

        var encoded = signature.Encode();
        state.RememberVerified(applied.Session.Height, encoded);
        lock (gate)
        {
            foreach (var id in signers)
            {
                var signer = HealthOf(id);
                signer.Accepted++;
                signer.Backoff = 0;
                // A valid share readmits a probed signer at once.
                signer.BannedUntil = 0;
                signer.ExcludedUntil = 0;
            }

            tracked.Aggregated = true;
            tracked.AggregatedAt = now;
            ready.Add((applied.Session.Height, new BatchSignature
            {
                Height = applied.Session.Height,
                KeyEpoch = applied.Session.KeyEpoch,
                Signers = signers,
                R = encoded[..Secp256k1.ElementLength],
                Z = encoded[Secp256k1.ElementLength..],
            }, now));
        }
    }

    private void BlameLocked(int signerId, Tracked tracked, long now)
    {
        var signer = HealthOf(signerId);
        signer.BadShares++;
        signer.LastBadHeight = tracked.Applied.Session.Height;
        tracked.Retry = RetryReason.BadShare;
        metrics.BadShares.Add(1, new KeyValuePair<string, object?>("signer", signerId));
        // An exclusion grows with offences, not with the sessions one offence touched: a bad share from a session
        // that started before the current exclusion began is the same offence, and does not extend it.
        if (signer.BannedSince != 0 && tracked.SeenAt <= signer.BannedSince)
            return;
        signer.Offences++;
        var exclusion = TimeSpan.FromTicks(Math.Min(MaxBadShareExclusion.Ticks, BadShareExclusion.Ticks << (int)Math.Min(16, signer.Offences - 1)));
        signer.BannedSince = now;
        signer.BannedUntil = now + (long)(exclusion.TotalSeconds * time.TimestampFrequency);
        LogBadShare(logger, signerId, tracked.Applied.Session.Height, tracked.Applied.Session.Attempt, (int)exclusion.TotalSeconds);
    }

    /// <summary>
    /// The signatures to carry in the batch entry the leader is cutting now (at most one entry's worth); they are then
    /// in flight with it. Under load every signature rides a batch and signing adds no Raft entry of its own.
    /// </summary>
    public IReadOnlyList<BatchSignature>? TakeSignaturesForBatch()
    {
        var now = time.GetTimestamp();
        lock (gate)
        {
            if (ready.Count == 0 || !log.IsLeader)
                return null;
            var taken = ready.Take(limits.MaxSigningEntryItems).ToList();
            ready.RemoveRange(0, taken.Count);
            foreach (var (height, _, _) in taken)
                handedOut[height] = now;
            return [.. taken.Select(t => t.Signature)];
        }
    }

    /// <summary>
    /// Signatures no batch picked up within <see cref="SignatureFlushDelay"/> (an idle cluster) go out in a
    /// BatchSignatures entry of their own; signatures handed to a batch that never committed are signed again.
    /// </summary>
    private void ProposeSignatures(long now)
    {
        List<(ulong Height, BatchSignature Signature, long ReadyAt)> batch;
        lock (gate)
        {
            foreach (var (height, at) in handedOut.ToList())
            {
                if (state.IsSigned(height))
                {
                    handedOut.Remove(height);
                }
                else if (time.GetElapsedTime(at, now) > ProposalTimeout)
                {
                    handedOut.Remove(height);
                    if (sessions.TryGetValue(height, out var lost))
                    {
                        lost.Aggregated = false;
                        lost.Retry = RetryReason.Timeout;
                    }
                }
            }

            if (ready.Count == 0 || signatureProposals >= MaxProposalsInFlight || time.GetElapsedTime(ready[0].ReadyAt, now) < SignatureFlushDelay)
                return;
            batch = [.. ready.Take(limits.MaxSigningEntryItems)];
            ready.RemoveRange(0, batch.Count);
            signatureProposals++;
        }

        var command = new BatchSignaturesCommand { Signatures = [.. batch.Select(b => b.Signature)] };
        _ = ProposeAsync(command, () =>
        {
            lock (gate)
            {
                signatureProposals--;
                // Not applied (a failed or lost proposal): the sessions may start again.
                foreach (var (height, _, _) in batch)
                {
                    if (!state.IsSigned(height) && sessions.TryGetValue(height, out var tracked))
                    {
                        tracked.Aggregated = false;
                        tracked.Retry = RetryReason.Timeout;
                    }
                }
            }
        });
    }

    private void StartSessions(KeyEpochView epoch, long now)
    {
        lock (gate)
        {
            if (sessionProposals >= MaxProposalsInFlight)
                return;
        }

        var unsigned = state.UnsignedHeights(limits.SigningWindowBatches);
        if (unsigned.Count == 0)
            return;
        var timeout = TimeSpan.FromMilliseconds(limits.SigningSessionTimeoutMs);
        var planned = new List<SigningSession>();
        var reasons = new Dictionary<RetryReason, int>();
        lock (gate)
        {
            var pools = new Dictionary<int, Queue<ulong>>();
            var probes = 0;
            foreach (var height in unsigned)
            {
                if (planned.Count >= limits.MaxSigningEntryItems)
                    break;
                if (proposedHeights.TryGetValue(height, out var proposedAt) && time.GetElapsedTime(proposedAt, now) < ProposalTimeout)
                    continue;
                var reason = RetryReason.First;
                var attempt = state.ActiveSession(height)?.Attempt ?? 0;
                var known = sessions.TryGetValue(height, out var tracked);
                if (attempt > (known ? tracked!.Applied.Session.Attempt : 0))
                {
                    // Applied a moment ago: its SessionsStarted event is on its way. (Should it never come, the
                    // height gets a new session after a short while.)
                    if (!untracked.TryGetValue(height, out var since))
                        untracked[height] = since = now;
                    if (time.GetElapsedTime(since, now) < UntrackedGrace)
                        continue;
                    untracked.Remove(height);
                    known = false;
                    tracked = null;
                }

                if (known && tracked is not null)
                {
                    attempt = Math.Max(attempt, tracked.Applied.Session.Attempt);
                    if (tracked.Aggregated && time.GetElapsedTime(tracked.AggregatedAt, now) > ProposalTimeout)
                    {
                        // Watchdog: an aggregated signature that has not reached the log by now was lost on some
                        // path; sign the height again rather than let it pin the watermark for good.
                        tracked.Aggregated = false;
                        tracked.Retry = RetryReason.Timeout;
                        ready.RemoveAll(r => r.Height == height);
                        handedOut.Remove(height);
                    }

                    if (tracked.Aggregated)
                        continue;
                    if (tracked.Retry is { } retry)
                    {
                        reason = retry;
                    }
                    else if (time.GetElapsedTime(tracked.SeenAt, now) >= timeout)
                    {
                        reason = RetryReason.Timeout;
                        foreach (var signer in tracked.Applied.Session.Signers.Where(s => !tracked.Shares.ContainsKey(s)))
                            RecordTimeoutLocked(signer, now);
                    }
                    else
                    {
                        continue;
                    }
                }

                var signers = ChooseSignersLocked(epoch, now, pools, ref probes);
                if (signers is null)
                    break;
                planned.Add(new SigningSession
                {
                    Height = height,
                    Attempt = attempt + 1,
                    KeyEpoch = epoch.Epoch,
                    Signers = [.. signers.Select(s => s.Id)],
                    Sequences = [.. signers.Select(s => s.Sequence)],
                });
                reasons[reason] = reasons.GetValueOrDefault(reason) + 1;
                proposedHeights[height] = now;
                if (tracked is not null)
                    tracked.Retry = null;
                foreach (var (id, sequence) in signers)
                    ReservedOf(id)[sequence] = now;
            }

            if (planned.Count == 0)
                return;
            sessionProposals++;
        }

        foreach (var (reason, count) in reasons)
            metrics.SessionsStarted.Add(count, new KeyValuePair<string, object?>("reason", reason.ToString().ToLowerInvariant()));
        _ = ProposeAsync(new SigningSessionsCommand { Sessions = planned }, () =>
        {
            lock (gate)
            {
                sessionProposals--;
                foreach (var session in planned)
                {
                    for (var i = 0; i < session.Signers.Count; i++)
                        ReservedOf(session.Signers[i]).Remove(session.Sequences[i]);
                }

            }
        });
    }

    /// <summary>
    /// Picks t signers with a free published commitment each: this node first, then healthy signers by recent
    /// latency, then (probing, a few sessions a round) signers still left out after a timeout, and only when even
    /// that leaves fewer than t, signers excluded for a bad share, earliest expiry first (DESIGN section 5: excluding
    /// signers must never leave fewer than t eligible; a good share readmits one). Null when fewer than t are available.
    /// </summary>
    private List<(int Id, ulong Sequence)>? ChooseSignersLocked(KeyEpochView epoch, long now, Dictionary<int, Queue<ulong>> pools, ref int probes)
    {
        var threshold = epoch.Group.Threshold;
        var healthy = new List<int>();
        var probation = new List<int>();
        var banned = new List<int>();
        foreach (var id in epoch.Record.Members)
        {
            var signer = HealthOf(id);
            if (signer.BannedUntil > now)
                banned.Add(id);
            else if (signer.ExcludedUntil <= now)
                healthy.Add(id);
            else
                probation.Add(id);
        }

        var ordered = healthy
            .OrderBy(id => id == selfId && selfSigns ? 0 : 1)
            .ThenBy(id => HealthOf(id).LatencyMs)
            .ThenBy(id => id)
            .ToList();
        if (CountWithCommitments(ordered, pools) < threshold && probes < MaxProbeSessionsPerRound)
        {
            ordered.AddRange(probation.OrderBy(id => HealthOf(id).ExcludedUntil));
            if (CountWithCommitments(ordered, pools) < threshold)
                ordered.AddRange(banned.OrderBy(id => HealthOf(id).BannedUntil));
            probes++;
        }

        var chosen = new List<(int, ulong)>(threshold);
        foreach (var id in ordered)
        {
            if (chosen.Count == threshold)
                break;
            var pool = PoolOf(id, pools);
            if (pool.Count > 0)
                chosen.Add((id, pool.Peek()));
        }

        if (chosen.Count < threshold)
            return null;
        foreach (var (id, _) in chosen)
            pools[id].Dequeue();
        chosen.Sort((a, b) => a.Item1.CompareTo(b.Item1));
        return chosen;
    }

    private int CountWithCommitments(List<int> ids, Dictionary<int, Queue<ulong>> pools) => ids.Count(id => PoolOf(id, pools).Count > 0);

    private Queue<ulong> PoolOf(int id, Dictionary<int, Queue<ulong>> pools)
    {
        if (!pools.TryGetValue(id, out var pool))
        {
            var taken = ReservedOf(id);
            var available = state.AvailableSequences(id, taken.Count + limits.MaxSigningEntryItems);
            // Reservations of commitments the log has used since (or long ago) are dropped.
            if (taken.Count > 0)
            {
                var now = time.GetTimestamp();
                var offered = available.ToHashSet();
                foreach (var stale in taken.Where(r => !offered.Contains(r.Key) || time.GetElapsedTime(r.Value, now) > ProposalTimeout).Select(r => r.Key).ToList())
                    taken.Remove(stale);
            }

            pool = new Queue<ulong>(available.Where(s => !taken.ContainsKey(s)));
            pools[id] = pool;
        }

        return pool;
    }

    /// <summary>
    /// The session the leader puts into its next batch entry, so that signing starts in the same round that orders
    /// the batch: t healthy signers (this node first) with a reserved commitment each. Null when signing is not set
    /// up, this node does not lead, or fewer than t signers have commitments (the batch is then signed through a
    /// SigningSessions entry).
    /// </summary>
    public SigningSession? InlineSession()
    {
        if (!log.IsLeader || state.CurrentKeyEpoch is not { } epoch)
            return null;
        var now = time.GetTimestamp();
        lock (gate)
        {
            if (!wasLeader)
                return null;
            var probes = MaxProbeSessionsPerRound;
            var signers = ChooseSignersLocked(epoch, now, [], ref probes);
            if (signers is null)
                return null;
            foreach (var (id, sequence) in signers)
                ReservedOf(id)[sequence] = now;
            metrics.SessionsStarted.Add(1, new KeyValuePair<string, object?>("reason", "inline"));
            return new SigningSession
            {
                Attempt = 1,
                KeyEpoch = epoch.Epoch,
                Signers = [.. signers.Select(s => s.Id)],
                Sequences = [.. signers.Select(s => s.Sequence)],
            };
        }
    }

    private void RecordTimeoutLocked(int id, long now)
    {
        var signer = HealthOf(id);
        signer.Timeouts++;
        signer.Backoff = Math.Min(signer.Backoff + 1, 8);
        var exclusion = TimeSpan.FromTicks(Math.Min(MaxTimeoutExclusion.Ticks, TimeoutExclusion.Ticks << (signer.Backoff - 1)));
        signer.ExcludedUntil = Math.Max(signer.ExcludedUntil, now + (long)(exclusion.TotalSeconds * time.TimestampFrequency));
        metrics.SessionTimeouts.Add(1, new KeyValuePair<string, object?>("signer", id));
    }

    private async Task ProposeAsync(ILogCommand command, Action completed)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(log.LeadershipToken, stopping.Token);
            timeout.CancelAfter(ProposalTimeout);
            await log.ReplicateAsync(LogCommandCodec.Encode(command), null, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException
            or DotNext.Net.Cluster.Consensus.Raft.NotLeaderException or TimeoutException)
        {
            if (!stopping.IsCancellationRequested)
                LogProposalFailed(logger, command.GetType().Name, e.Message);
        }
        finally
        {
            completed();
            Wake();
        }
    }

    private Health HealthOf(int id)
    {
        if (!health.TryGetValue(id, out var signer))
            health[id] = signer = new Health();
        return signer;
    }

    private Dictionary<ulong, long> ReservedOf(int id)
    {
        if (!reserved.TryGetValue(id, out var set))
            reserved[id] = set = [];
        return set;
    }

    private static BigInteger? ParseScalar(byte[] bytes)
    {
        try
        {
            return Secp256k1.DeserializeScalar(bytes);
        }
        catch (FormatException)
        {
            return null;
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        state.SessionsStarted -= OnSessionsStarted;
        state.SignaturesApplied -= OnSignaturesApplied;
        log.LeaderChanged -= Wake;
        await stopping.CancelAsync().ConfigureAwait(false);
        await loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
    }

    private readonly record struct InboxShare(int SignerId, ulong KeyEpoch, SignatureShareMessage Share);

    private enum RetryReason
    {
        First,
        Timeout,
        BadShare,
        NewLeader,
    }

    private sealed class Tracked(AppliedSession applied, long seenAt)
    {
        public AppliedSession Applied { get; } = applied;

        public long SeenAt { get; } = seenAt;

        public Dictionary<int, BigInteger> Shares { get; } = [];

        public bool Aggregated { get; set; }

        public long AggregatedAt { get; set; }

        public RetryReason? Retry { get; set; }
    }

    private sealed class Health
    {
        public long BadShares { get; set; }

        public long Timeouts { get; set; }

        public long Accepted { get; set; }

        public int Backoff { get; set; }

        /// <summary>Left out after timeouts (it may be probed).</summary>
        public long ExcludedUntil { get; set; }

        /// <summary>Left out after a bad share (probed only when fewer than t signers are otherwise eligible).</summary>
        public long BannedUntil { get; set; }

        /// <summary>When the current exclusion for a bad share began (0: none yet).</summary>
        public long BannedSince { get; set; }

        /// <summary>Distinct offences: bad shares from sessions started after the previous exclusion began.</summary>
        public long Offences { get; set; }

        public ulong LastBadHeight { get; set; }

        public double LatencyMs { get; set; }
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Warning, Message = "Signer {SignerId} sent an invalid signature share for height {Height} (attempt {Attempt}); the session is retried without it, and it is left out of signing for {Seconds} s")]
    private static partial void LogBadShare(ILogger logger, int signerId, ulong height, int attempt, int seconds);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Proposing key epoch {Epoch} from the group key file: {Threshold} of {Members} members sign")]
    private static partial void LogProposingKeyEpoch(ILogger logger, ulong epoch, int threshold, int members);

    [LoggerMessage(EventId = 302, Level = LogLevel.Error, Message = "Key epoch {Epoch} in the log has another group key than this node's group key file: this node does not sign; check --group-key")]
    private static partial void LogKeyMismatch(ILogger logger, ulong epoch);

    [LoggerMessage(EventId = 303, Level = LogLevel.Debug, Message = "A {Command} proposal did not commit: {Reason}")]
    private static partial void LogProposalFailed(ILogger logger, string command, string reason);

    [LoggerMessage(EventId = 305, Level = LogLevel.Error, Message = "The signature for height {Height} (attempt {Attempt}) did not verify although every share did; the session is retried")]
    private static partial void LogNoCulprit(ILogger logger, ulong height, int attempt);

    [LoggerMessage(EventId = 304, Level = LogLevel.Error, Message = "A signing round failed; the next round retries")]
    private static partial void LogRoundFailed(ILogger logger, Exception exception);
}
