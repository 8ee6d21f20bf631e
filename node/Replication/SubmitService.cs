using DotNext.Net.Cluster.Consensus.Raft;
using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Batching;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Validation;
using Sequencer.Core.Ordering;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;

namespace Sequencer.Node.Replication;

/// <summary>How a submit ended on this node.</summary>
public enum SubmitStatus
{
    /// <summary>Every tx is ordered; positions are known.</summary>
    Ordered,

    /// <summary>This node is not the leader and proposed nothing: safe to send elsewhere.</summary>
    NotLeader,

    /// <summary>The pending queue is full; nothing was queued.</summary>
    Overloaded,

    /// <summary>Some txs were proposed and their fate is unknown (leader change, timeout): resubmit, submits are idempotent.</summary>
    OutcomeUnknown,

    /// <summary>The chain's rules refused a tx (ethereum mode: invalid, nonce taken, nonce too far ahead); see <see cref="SubmitOutcome.Rejection"/>.</summary>
    Rejected,
}

/// <summary>The result of <see cref="SubmitService.SubmitAsync"/>.</summary>
/// <param name="Status">How it ended.</param>
/// <param name="Outcomes">One per submitted tx (request order) when <see cref="SubmitStatus.Ordered"/>.</param>
/// <param name="Message">Why it did not end ordered.</param>
public sealed record SubmitOutcome(SubmitStatus Status, TxOutcome[] Outcomes, string? Message = null)
{
    /// <summary>For <see cref="SubmitStatus.Rejected"/>: the code and message.</summary>
    public TxRejection? Rejection { get; init; }

    /// <summary>For a taken nonce: the tx that holds it, when known.</summary>
    public Hash32? ConflictsWith { get; init; }
}

/// <summary>
/// The leader's intake: dedups submits against ordered and pending txs, queues new ones within the limits, cuts
/// batches by <see cref="BatcherPolicy"/>, keeps up to <see cref="SequencerLimits.MaxInFlightEntries"/> entries in
/// flight, and completes each waiter when apply reports its tx's position.
/// </summary>
/// <remarks>
/// A tx is never ordered twice: apply drops any tx already ordered (on every node alike), and the intake only
/// proposes a tx that is neither ordered nor pending here. A waiter is completed by the apply of its tx, whichever
/// entry or leader carried it, so a retry after an indeterminate submit gets the original position.
/// </remarks>
public sealed partial class SubmitService : IAsyncDisposable
{
    private readonly ILeaderLog log;
    private readonly AppliedState state;
    private readonly SequencerLimits limits;
    private readonly BatcherPolicy policy;
    private readonly TimeProvider time;
    private readonly NodeMetrics metrics;
    private readonly ILogger logger;
    private readonly Action<Exception> fatal;
    private readonly IBatchRiders? riders;
    private readonly Lock gate = new();

    // Admission's scratch set of a request's distinct new hashes, reused under the gate (one set per request was a
    // tenth of the leader's allocations at saturation).
    private const int AdmitScratchTxs = 1024;
    private readonly HashSet<Hash32> admitSeen = new(AdmitScratchTxs);
    private readonly Dictionary<Hash32, PendingTx> pending = [];
    private readonly Queue<PendingTx> queue = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly BackgroundLoop batcher;
    private TaskCompletionSource wake = NewSignal();
    private int queuedTxs;
    private long queuedBytes;
    private int inFlight;

    /// <summary>Creates the service and starts its batcher.</summary>
    /// <param name="log">The replicated log.</param>
    /// <param name="state">The applied state, for dedup and apply notifications.</param>
    /// <param name="limits">Validated limits.</param>
    /// <param name="time">The leader's clock: batch timestamps and delays.</param>
    /// <param name="metrics">Metrics.</param>
    /// <param name="logger">Logger.</param>
    /// <param name="fatal">Called when replication fails in a way the node cannot survive.</param>
    /// <param name="loops">Where the batcher loop is supervised; a private set when null.</param>
    /// <param name="riders">What rides each batch entry (signing), or null for nothing.</param>
    public SubmitService(ILeaderLog log, AppliedState state, SequencerLimits limits, TimeProvider time, NodeMetrics metrics, ILogger<SubmitService> logger, Action<Exception> fatal,
        BackgroundLoops? loops = null, IBatchRiders? riders = null)
    {
        ArgumentNullException.ThrowIfNull(log);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(limits);
        this.log = log;
        this.state = state;
        this.limits = limits;
        this.time = time;
        this.metrics = metrics;
        this.logger = logger;
        this.fatal = fatal;
        this.riders = riders;
        policy = new BatcherPolicy(limits);
        state.Applied += OnApplied;
        log.LeaderChanged += OnLeaderChanged;
        batcher = (loops ?? new BackgroundLoops(time)).Start("the batcher", BatcherStuckAfter, BatcherLoopAsync, stopping.Token);
    }

    private const int NotReadyPollMs = 10;

    // The batcher wakes at least this often when idle, so that a stuck batcher shows in readiness.
    private const int IdleWakeMs = 1000;
    private static readonly TimeSpan BatcherStuckAfter = TimeSpan.FromSeconds(10);

    /// <summary>
    /// While this returns false the leader queues txs but cuts no batch: a cluster configured to sign orders nothing
    /// before its key epoch is in the log, so that every batch carries a key epoch and gets signed.
    /// </summary>
    public Func<bool>? ReadyToOrder { get; set; }


    /// <summary>Txs waiting for a batch.</summary>
    public int QueuedTxs
    {
        get
        {
            lock (gate)
                return queuedTxs;
        }
    }

    /// <summary>Batch entries proposed and not yet committed.</summary>
    public int InFlightEntries
    {
        get
        {
            lock (gate)
                return inFlight;
        }
    }

    /// <summary>Returns the leader's receive time of a tx that is pending here, or false.</summary>
    public bool TryGetReceived(Hash32 hash, out long receivedAtMs)
    {
        lock (gate)
        {
            var found = pending.TryGetValue(hash, out var tx);
            receivedAtMs = found ? tx!.ReceivedAtMs : 0;
            return found;
        }
    }

    /// <summary>
    /// Queues <paramref name="txs"/> (unless already ordered or pending) and waits until all are ordered, at most
    /// <see cref="SequencerLimits.SubmitTimeoutMs"/>.
    /// </summary>
    public async Task<SubmitOutcome> SubmitAsync(IReadOnlyList<byte[]> txs, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(txs);
        // Under the request's trace when its client traces it (a sampled traceparent), else a trace of its own: the
        // request's unsampled activity would make the sampler drop the span.
        using var activity = !Telemetry.NodeTracing.Source.HasListeners() ? null
            : System.Diagnostics.Activity.Current is { Recorded: true } request ? Telemetry.NodeTracing.Source.StartActivity("submit", System.Diagnostics.ActivityKind.Internal, request.Context)
            : Telemetry.NodeTracing.StartRoot("submit");
        if (activity is null)
            return await SubmitCoreAsync(txs, token).ConfigureAwait(false);
        activity.SetTag("sequencer.tx_count", txs.Count);
        var outcome = await SubmitCoreAsync(txs, token).ConfigureAwait(false);
        activity.SetTag("sequencer.outcome", outcome.Status.ToString());
        if (outcome.Status != SubmitStatus.Ordered)
            activity.SetStatus(System.Diagnostics.ActivityStatusCode.Error, outcome.Message);
        // Linked to the batches that ordered its txs (at most 16 of them).
        foreach (var height in outcome.Outcomes.Select(o => o.Position.Height).Distinct().Take(16))
        {
            if (state.Traces.Batch(height) is { } batch)
                activity.AddLink(new System.Diagnostics.ActivityLink(batch));
        }

        return outcome;
    }

    // Admits a request under the gate, all or nothing, so that a refused bulk submit leaves no partial trace: an
    // outcome when it is refused now, a pending holder when a nonce of it is held by a tx not ordered yet, or neither
    // (admitted: `waits` and `mine` are filled).
    private (SubmitOutcome? Refusal, PendingTx? Holder) Admit(IReadOnlyList<byte[]> txs, Hash32[] hashes, TxAccount[]? accounts, Task<TxPosition>[] waits, List<PendingTx> mine)
    {
        if (!log.IsLeader)
            return (new SubmitOutcome(SubmitStatus.NotLeader, [], "this node is not the leader"), null);
        AccountState[]? applied = null;
        if (accounts is not null)
        {
            // The senders' applied state, read outside the gate (an older sender is read from the store).
            applied = new AccountState[txs.Count];
            var known = new Dictionary<SenderId, AccountState>();
            for (var i = 0; i < txs.Count; i++)
            {
                if (!known.TryGetValue(accounts[i].Sender, out applied[i]))
                    known[accounts[i].Sender] = applied[i] = state.Get(accounts[i].Sender);
            }
        }

        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (gate)
        {
            // Admission first, all or nothing, so a rejected bulk submit leaves no partial trace.
            var newTxs = 0;
            long newBytes = 0;
            // A large request gets its own set, so the scratch stays small and cheap to clear.
            var seen = txs.Count <= AdmitScratchTxs ? admitSeen : new HashSet<Hash32>(txs.Count);
            seen.Clear();
            // Each tx is looked up in the applied state once (a new tx probes every run of the store's tx index): its
            // position when ordered, and whether it is known (ordered, pending, or earlier in this request).
            var orderedAt = new TxPosition[txs.Count];
            var known = new bool[txs.Count];
            for (var i = 0; i < txs.Count; i++)
            {
                if (state.TryGetPosition(hashes[i], out orderedAt[i]) || pending.ContainsKey(hashes[i]))
                {
                    known[i] = true;
                    continue;
                }

                if (seen.Add(hashes[i]))
                {
                    newTxs++;
                    newBytes += txs[i].Length;
                }
                else
                {
                    known[i] = true;
                }
            }

            if (queue.Count + newTxs > limits.MaxPendingTxs || queuedBytes + newBytes > limits.MaxPendingBytes || (accounts is not null && pending.Count + newTxs > limits.MaxPendingTxs))
                return (new SubmitOutcome(SubmitStatus.Overloaded, [], $"the pending queue is full ({queue.Count} txs, {queuedBytes} bytes)"), null);

            Admission[]? plan = null;
            if (accounts is not null)
            {
                var (planned, refusal, holder) = PlanLocked(known, accounts, applied!);
                if (refusal is not null || holder is not null)
                    return (refusal, holder);
                plan = planned;
            }

            for (var i = 0; i < txs.Count; i++)
            {
                if (orderedAt[i].Height > 0)
                {
                    waits[i] = Task.FromResult(orderedAt[i]);
                }
                else if (pending.TryGetValue(hashes[i], out var existing))
                {
                    waits[i] = existing.Completion.Task;
                }
                else
                {
                    var tx = new PendingTx(hashes[i], txs[i], now) { Account = accounts?[i] };
                    pending.Add(tx.Hash, tx);
                    mine.Add(tx);
                    if (plan is null)
                    {
                        queue.Enqueue(tx);
                        queuedTxs++;
                        queuedBytes += tx.Bytes.Length;
                    }
                    else if (plan[i] == Admission.Park)
                    {
                        ParkLocked(tx);
                    }
                    else
                    {
                        QueueForSenderLocked(tx);
                    }

                    waits[i] = tx.Completion.Task;
                }
            }

            if (newTxs > 0)
                wake.TrySetResult();
        }

        return (null, null);
    }

    private async Task<SubmitOutcome> SubmitCoreAsync(IReadOnlyList<byte[]> txs, CancellationToken token)
    {
        Invariant.Check(txs.Count is > 0, "a submit carries at least one tx");

        for (var i = 0; i < txs.Count; i++)
            Invariant.Check(txs[i].Length is > 0 && txs[i].Length <= limits.MaxTxBytes, "the API checked tx sizes");
        var hashes = new Hash32[txs.Count];
        Keccak256.HashEach(txs, hashes);

        if (!log.IsLeader)
            return new SubmitOutcome(SubmitStatus.NotLeader, [], "this node is not the leader");

        // Ethereum mode: every tx's sender and nonce, once, before anything is queued; a refused tx refuses the request.
        TxAccount[]? accounts = null;
        if (state.Rules is { } rules)
        {
            var (identified, index, rejection) = Identify(rules, txs);
            if (identified is null)
                return Refused(rejection! with { Message = $"tx {index}: {rejection!.Message}" }, null);
            accounts = identified;
        }

        var waits = new Task<TxPosition>[txs.Count];
        var mine = new List<PendingTx>();
        for (var round = 0; ; round++)
        {
            var (admitted, holder) = Admit(txs, hashes, accounts, waits, mine);
            if (admitted is not null)
                return admitted;
            if (holder is null)
                break;

            // A tx not yet ordered holds a nonce of this request: its fate decides. Ordered, it is the holder to name;
            // dropped or lost, the nonce is looked at again (a tx in flight from an earlier leader may hold it).
            try
            {
                await holder.Completion.Task.WaitAsync(TimeSpan.FromMilliseconds(limits.SubmitTimeoutMs), time, token).ConfigureAwait(false);
                var account = holder.Account!.Value;
                return Refused(new TxRejection("nonce_used", $"nonce {account.Nonce} of {account.Sender} is taken by {holder.Hash}"), holder.Hash);
            }
            catch (TimeoutException)
            {
                return new SubmitOutcome(SubmitStatus.OutcomeUnknown, [], $"the tx holding a nonce of this request was not ordered within {limits.SubmitTimeoutMs} ms");
            }
            catch (Exception e) when (e is TxRefusedException or NotProposedException or OutcomeUnknownException)
            {
                if (!log.IsLeader)
                    return new SubmitOutcome(SubmitStatus.NotLeader, [], "leadership moved while a nonce of this request was contested");
                if (round >= 3)
                    return Refused(new TxRejection("nonce_used", "a nonce of this request is contested by txs whose fate is not settled yet; try again"), null);
            }
        }

        try
        {
            await Task.WhenAll(waits).WaitAsync(TimeSpan.FromMilliseconds(limits.SubmitTimeoutMs), time, token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested && accounts is not null)
        {
            // The client went away: its parked txs (waiting for the nonces before them) leave now. Otherwise they would
            // hold their pending slots until a leadership change, and a client that drops its requests fills them all.
            lock (gate)
                UnparkLocked([.. mine.Where(tx => tx.Parked && !tx.Completion.Task.IsCompleted)]);
            throw;
        }
        catch (TimeoutException)
        {
            metrics.Errors.Add(1, new KeyValuePair<string, object?>("kind", "submit_timeout"));
            if (accounts is not null)
            {
                // Txs still parked waited in vain for the nonces before them: they leave, refused as a gap.
                List<PendingTx> parked;
                lock (gate)
                {
                    parked = mine.Where(tx => tx.Parked && !tx.Completion.Task.IsCompleted).ToList();
                    UnparkLocked(parked);
                }

                if (parked.Count > 0)
                {
                    var first = parked[0].Account!.Value;
                    return Refused(new TxRejection("nonce_gap", $"nonce {first.Nonce} of {first.Sender} waited {limits.SubmitTimeoutMs} ms for the nonces before it, which never came"), null);
                }
            }

            return new SubmitOutcome(SubmitStatus.OutcomeUnknown, [], $"not ordered within {limits.SubmitTimeoutMs} ms");
        }
        catch (TxRefusedException e)
        {
            return Refused(e.Rejection, e.ConflictsWith);
        }
        catch (NotProposedException e)
        {
            return new SubmitOutcome(SubmitStatus.NotLeader, [], e.Message);
        }
        catch (OutcomeUnknownException e)
        {
            return new SubmitOutcome(SubmitStatus.OutcomeUnknown, [], e.Message);
        }

        var outcomes = new TxOutcome[txs.Count];
        for (var i = 0; i < txs.Count; i++)
            outcomes[i] = new TxOutcome(hashes[i], waits[i].Result, Duplicate: false);
        return new SubmitOutcome(SubmitStatus.Ordered, outcomes);
    }

    private void OnApplied(AppliedEvent applied)
    {
        if (applied.Batch is { } batch)
        {
            metrics.BatchesApplied.Add(1);
            metrics.TxsOrdered.Add(batch.TxHashes.Length);
            metrics.BatchTxs.Record(batch.TxHashes.Length);
        }

        var duplicates = 0;
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (gate)
        {
            foreach (var outcome in applied.Outcomes)
            {
                if (outcome.Duplicate)
                    duplicates++;
                if (!pending.Remove(outcome.Hash, out var tx))
                    continue;
                if (!tx.Proposed && !tx.Parked)
                {
                    // Ordered (or refused) through another path (an earlier leader's entry) while still queued here.
                    queuedTxs--;
                    queuedBytes -= tx.Bytes.Length;
                }

                ForgetLocked(tx, ordered: outcome.Rejected is null);
                if (outcome.Rejected is { } rejection)
                {
                    tx.Completion.TrySetException(new TxRefusedException(rejection, outcome.ConflictsWith));
                    continue;
                }

                tx.Completion.TrySetResult(outcome.Position);
                metrics.ReceivedToOrdered.Record(now - tx.ReceivedAtMs);
            }
        }

        if (duplicates > 0)
            metrics.TxsDuplicate.Add(duplicates);
    }

    private void OnLeaderChanged()
    {
        if (log.IsLeader)
            return;

        // Txs still queued here were never proposed: fail them as not-leader so the API sends them to the new leader.
        var failed = 0;
        lock (gate)
        {
            while (queue.TryDequeue(out var tx))
            {
                if (tx.Completion.Task.IsCompleted || tx.Proposed)
                    continue;
                pending.Remove(tx.Hash);
                tx.Completion.TrySetException(new NotProposedException("leadership moved before the tx was proposed"));
                failed++;
            }

            queuedTxs = 0;
            queuedBytes = 0;

            // Parked txs were never queued; every sender's line starts again under the next leader.
            foreach (var line in senders.Values)
            {
                foreach (var tx in line.Parked.Values)
                {
                    pending.Remove(tx.Hash);
                    tx.Completion.TrySetException(new NotProposedException("leadership moved before the tx was proposed"));
                    failed++;
                }
            }

            senders.Clear();
        }

        if (failed > 0)
            LogRequeued(logger, failed);
    }

    private async Task BatcherLoopAsync(BackgroundLoop loop, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            loop.Beat();
            BatcherDecision decision;
            Task signal;
            lock (gate)
            {
                DropCompletedHead();
                var oldestAge = queue.TryPeek(out var oldest) ? time.GetUtcNow().ToUnixTimeMilliseconds() - oldest.ReceivedAtMs : 0;
                decision = !log.IsLeader ? BatcherDecision.WaitForEvent
                    : !(ReadyToOrder?.Invoke() ?? true) ? new BatcherDecision(false, NotReadyPollMs)
                    : policy.Decide(new BatcherInput(queuedTxs, queuedBytes, oldestAge, inFlight));
                if (wake.Task.IsCompleted)
                    wake = NewSignal();
                signal = wake.Task;
            }

            if (decision.Emit)
            {
                CutBatch();
                continue;
            }

            // A timed-out wait is the normal way to wake up here: suppress instead of throwing.
            var wait = decision.WakeAfterMs < 0 ? IdleWakeMs : Math.Clamp(decision.WakeAfterMs, 1, IdleWakeMs);
            await signal.WaitAsync(TimeSpan.FromMilliseconds(wait), time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private void DropCompletedHead()
    {
        while (queue.TryPeek(out var head) && head.Completion.Task.IsCompleted)
            queue.Dequeue();
    }

    private void CutBatch()
    {
        var items = new List<PendingTx>();
        long bytes = 0;
        long term;
        CancellationToken leadership;
        lock (gate)
        {
            if (!log.IsLeader)
                return;
            term = log.Term;
            leadership = log.LeadershipToken;
            while (items.Count < limits.MaxBatchTxs && queue.TryPeek(out var tx))
            {
                if (tx.Completion.Task.IsCompleted)
                {
                    queue.Dequeue();
                    continue;
                }

                if (items.Count > 0 && bytes + tx.Bytes.Length > limits.MaxBatchBytes)
                    break;
                queue.Dequeue();
                tx.Proposed = true;
                items.Add(tx);
                bytes += tx.Bytes.Length;
            }

            if (items.Count == 0)
                return;
            queuedTxs -= items.Count;
            queuedBytes -= bytes;
            inFlight++;
            Invariant.Check(queuedTxs >= 0 && queuedBytes >= 0 && inFlight <= limits.MaxInFlightEntries, "batcher accounting stays within its bounds");
        }

        var timestamp = (ulong)time.GetUtcNow().ToUnixTimeMilliseconds();
        var carried = riders?.Take() ?? BatchRiders.None;
        var command = new BatchCommand
        {
            ProposerTerm = (ulong)term,
            LeaderTimestampMs = timestamp,
            Txs = items.ConvertAll(tx => tx.Bytes),
            ReceivedAgoMs = items.ConvertAll(tx => (uint)Math.Clamp((long)timestamp - tx.ReceivedAtMs, 0, uint.MaxValue)),
            Session = carried.Session,
            Signatures = carried.Signatures.Count == 0 ? null : carried.Signatures,
            Sessions = carried.Records.Count == 0 ? null : carried.Records,
        };
        // Encoded into a pooled buffer, returned once the entry is in the WAL (ReplicateAsync has copied it by the time
        // it completes): a full batch is hundreds of KB, and a new array per batch (and its doublings) was tens of MB
        // a second of large-object garbage under bulk load, which only a full GC reclaims (the leader's RSS).
        var payload = new DotNext.Buffers.PoolingArrayBufferWriter<byte>(System.Buffers.ArrayPool<byte>.Shared) { Capacity = (int)Math.Min(int.MaxValue / 2, bytes + (items.Count * 16L) + 256) };
        LogCommandCodec.Encode(command, payload);
        metrics.BatchBytes.Record(bytes);
        var trace = Telemetry.NodeTracing.StartRoot("batch");
        trace?.SetTag("sequencer.tx_count", items.Count);
        trace?.SetTag("sequencer.batch_bytes", bytes);
        trace?.SetTag("raft.term", term);
        var proposal = new BatchProposal(command.Txs, items.ConvertAll(tx => tx.Hash))
        {
            Trace = trace?.Context ?? default,
            Accounts = items[0].Account is null ? null : items.ConvertAll(tx => tx.Account),
        };
#if SEQUENCER_TEST_FAULTS
        if (TestFaults.AckBeforeCommit)
        {
            // Answer now with a guessed position: the next height, as if this batch were committed already.
            var guess = (state.LastHeader?.Height ?? 0) + 1;
            lock (gate)
            {
                for (var i = 0; i < items.Count; i++)
                {
                    pending.Remove(items[i].Hash);
                    items[i].Completion.TrySetResult(new TxPosition(guess, i));
                }
            }
        }
#endif
        _ = ReplicateAsync(items, payload, proposal, carried, trace, leadership);
    }

    private async Task ReplicateAsync(List<PendingTx> items, DotNext.Buffers.PoolingArrayBufferWriter<byte> payload, BatchProposal proposal, BatchRiders carried,
        System.Diagnostics.Activity? trace, CancellationToken leadership)
    {
        var started = time.GetTimestamp();
        var committed = false;
        var replicate = trace is null ? null : Telemetry.NodeTracing.Source.StartActivity("batch.replicate", System.Diagnostics.ActivityKind.Internal, trace.Context);
        try
        {
            await log.ReplicateAsync(payload.WrittenMemory, proposal, leadership).ConfigureAwait(false);
            committed = true;
            metrics.ReplicateDuration.Record(time.GetElapsedTime(started).TotalMilliseconds);
        }
        catch (Exception e) when (e is NotLeaderException or OperationCanceledException or ObjectDisposedException or QuorumUnreachableException or InvalidOperationException)
        {
            // The entry may still commit under a new leader; until someone sees it applied, its fate is unknown.
            FailUnknown(items, $"leadership changed while the batch was in flight ({e.GetType().Name})");
        }
        catch (Exception e)
        {
            FailUnknown(items, "replication failed");
            metrics.Errors.Add(1, new KeyValuePair<string, object?>("kind", "replication"));
            LogReplicationFailed(logger, e);
            fatal(e);
        }
        finally
        {
            payload.Dispose();
            lock (gate)
            {
                inFlight--;
                wake.TrySetResult();
            }

            if (!carried.IsEmpty)
                riders?.Completed(carried, committed);
            if (trace is not null)
            {
                if (!committed)
                {
                    replicate?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, "not committed");
                    trace.SetStatus(System.Diagnostics.ActivityStatusCode.Error, "not committed");
                }

                replicate?.Dispose();
                trace.Dispose();
            }
        }
    }

    private void FailUnknown(List<PendingTx> items, string reason)
    {
        lock (gate)
        {
            foreach (var tx in items)
            {
                if (tx.Completion.Task.IsCompleted)
                    continue;
                pending.Remove(tx.Hash);
                ForgetLocked(tx, ordered: false);
                tx.Completion.TrySetException(new OutcomeUnknownException(reason));
            }
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        state.Applied -= OnApplied;
        log.LeaderChanged -= OnLeaderChanged;
        await stopping.CancelAsync().ConfigureAwait(false);
        await batcher.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        lock (gate)
        {
            foreach (var tx in pending.Values)
                tx.Completion.TrySetException(new OutcomeUnknownException("the node is shutting down"));
            pending.Clear();
            queue.Clear();
        }

        stopping.Dispose();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private sealed class PendingTx(Hash32 hash, byte[] bytes, long receivedAtMs)
    {
        public Hash32 Hash { get; } = hash;

        public byte[] Bytes { get; } = bytes;

        public long ReceivedAtMs { get; } = receivedAtMs;

        public TaskCompletionSource<TxPosition> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool Proposed { get; set; }

        /// <summary>Ethereum mode: its sender and nonce.</summary>
        public TxAccount? Account { get; init; }

        /// <summary>Waiting for its sender's earlier nonces (not in the queue).</summary>
        public bool Parked { get; set; }
    }

    private sealed class NotProposedException(string message) : Exception(message);

    private sealed class OutcomeUnknownException(string message) : Exception(message);

    [LoggerMessage(EventId = 20, Level = LogLevel.Information, Message = "Leadership lost: {Count} queued txs were handed back to their submitters")]
    private static partial void LogRequeued(ILogger logger, int count);

    [LoggerMessage(EventId = 21, Level = LogLevel.Critical, Message = "Replication failed in a way the node cannot recover from")]
    private static partial void LogReplicationFailed(ILogger logger, Exception exception);
}
