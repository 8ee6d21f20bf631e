using Sequencer.Core;
using Sequencer.Core.Hashing;
using Sequencer.Core.Validation;

namespace Sequencer.Node.Replication;

/// <summary>
/// The leader's intake in ethereum mode (issue 13): each tx's sender and nonce is worked out once here (senders are
/// recovered in parallel for large requests), a conflicting tx is refused at once (<c>nonce_used</c>, naming the tx
/// that holds the nonce), one too far ahead too (<c>nonce_gap</c>), and a sender's txs go into the queue in nonce
/// order: a tx ahead of its sender's next nonce (within <see cref="SequencerLimits.MaxNonceGap"/>) waits, parked,
/// until the nonces before it are queued. Apply decides for good on every node alike; this is the fast, friendly path.
/// </summary>
public sealed partial class SubmitService
{
    // Guarded by gate: the senders with a tx pending here (queued, in flight or parked). Bounded by the pending txs.
    private readonly Dictionary<SenderId, SenderLine> senders = [];

    private enum Admission
    {
        Known,
        Queue,
        Park,
    }

    // Works out every tx's account (in parallel for a large request); the first refusal, in request order, refuses all.
    private static (TxAccount[]? Accounts, int Index, TxRejection? Rejection) Identify(ITxRules rules, IReadOnlyList<byte[]> txs)
    {
        var accounts = new TxAccount?[txs.Count];
        var rejections = new TxRejection?[txs.Count];
        if (txs.Count >= 8)
            Parallel.For(0, txs.Count, i => accounts[i] = rules.Identify(txs[i], out rejections[i]));
        else
            for (var i = 0; i < txs.Count; i++)
                accounts[i] = rules.Identify(txs[i], out rejections[i]);
        for (var i = 0; i < txs.Count; i++)
        {
            if (accounts[i] is null)
                return (null, i, rejections[i] ?? new TxRejection("invalid_tx", "the tx is not valid under the chain's rules"));
        }

        return ([.. accounts.Select(a => a!.Value)], -1, null);
    }

    // Decides, without changing anything, what happens to each tx of a request: all or nothing. `applied` holds each
    // tx's sender state as apply knows it.
    // A nonce taken by a pending or parked tx (not ordered yet) gives that tx as the holder to wait for: the answer
    // names a holder only once it is ordered.
    // `known` marks each tx that is ordered, pending, or an earlier tx's copy in this request.
    private (Admission[]? Plan, SubmitOutcome? Refusal, PendingTx? Holder) PlanLocked(bool[] known, TxAccount[] accounts, AccountState[] applied)
    {
        var plan = new Admission[known.Length];
        var expected = new Dictionary<SenderId, ulong>();
        for (var i = 0; i < known.Length; i++)
        {
            if (known[i])
            {
                plan[i] = Admission.Known;
                continue;
            }

            var (sender, nonce) = accounts[i];
            senders.TryGetValue(sender, out var line);
            if (!expected.TryGetValue(sender, out var next))
                next = Math.Max(applied[i].NextNonce, line?.NextQueued ?? 0);
            if (nonce < next)
            {
                if (line?.ByNonce.GetValueOrDefault(nonce) is { } pendingHolder)
                    return (null, null, pendingHolder);
                if (HeldInRequest(accounts, i))
                    return (null, Refused(new TxRejection("nonce_used", $"tx {i}: nonce {nonce} of {sender} is also the nonce of an earlier tx of this request"), null), null);
                var holder = nonce + 1 == applied[i].NextNonce ? applied[i].LastTx : (Hash32?)null;
                return (null, Refused(new TxRejection("nonce_used", $"tx {i}: nonce {nonce} of {sender} is already taken (its next nonce is {next})"), holder), null);
            }

            if (line?.Parked.TryGetValue(nonce, out var parked) == true)
                return (null, null, parked);
            if (nonce - next > (ulong)limits.MaxNonceGap)
                return (null, Refused(new TxRejection("nonce_gap", $"tx {i}: nonce {nonce} of {sender} is {nonce - next} ahead of its next nonce {next} (at most {limits.MaxNonceGap})"), null), null);
            if (nonce == next)
            {
                plan[i] = Admission.Queue;
                // Parked successors (or later txs of this request) follow it.
                next++;
                while (line?.Parked.ContainsKey(next) == true)
                    next++;
                expected[sender] = next;
            }
            else
            {
                plan[i] = Admission.Park;
                expected[sender] = next;
            }
        }

        return (plan, null, null);

        static bool HeldInRequest(TxAccount[] accounts, int i)
        {
            for (var j = 0; j < i; j++)
            {
                if (accounts[j] == accounts[i])
                    return true;
            }

            return false;
        }
    }

    private static SubmitOutcome Refused(TxRejection rejection, Hash32? holder)
        => new(SubmitStatus.Rejected, [], rejection.Message) { Rejection = rejection, ConflictsWith = holder };

    // Queues a new tx of a sender (its nonce is the next), then every parked successor that now follows.
    private void QueueForSenderLocked(PendingTx tx)
    {
        var account = tx.Account!.Value;
        if (!senders.TryGetValue(account.Sender, out var line))
            senders[account.Sender] = line = new SenderLine();
        Invariant.Check(account.Nonce >= line.NextQueued, "a sender's txs are queued in nonce order");
        EnqueueLocked(tx, line);
        while (line.Parked.Remove(line.NextQueued, out var parked))
            EnqueueLocked(parked, line);
    }

    private void EnqueueLocked(PendingTx tx, SenderLine line)
    {
        line.ByNonce[tx.Account!.Value.Nonce] = tx;
        line.NextQueued = tx.Account.Value.Nonce + 1;
        tx.Parked = false;
        queue.Enqueue(tx);
        queuedTxs++;
        queuedBytes += tx.Bytes.Length;
    }

    private void ParkLocked(PendingTx tx)
    {
        var account = tx.Account!.Value;
        if (!senders.TryGetValue(account.Sender, out var line))
            senders[account.Sender] = line = new SenderLine();
        tx.Parked = true;
        line.Parked[account.Nonce] = tx;
    }

    // A tx that is no longer pending here (ordered, refused, failed): its sender's line forgets it, and a nonce that
    // was not ordered may be sent again.
    private void ForgetLocked(PendingTx tx, bool ordered)
    {
        if (tx.Account is not { } account || !senders.TryGetValue(account.Sender, out var line))
            return;
        if (line.ByNonce.TryGetValue(account.Nonce, out var held) && ReferenceEquals(held, tx))
            line.ByNonce.Remove(account.Nonce);
        if (line.Parked.TryGetValue(account.Nonce, out var parked) && ReferenceEquals(parked, tx))
            line.Parked.Remove(account.Nonce);
        if (!ordered && account.Nonce < line.NextQueued)
            line.NextQueued = account.Nonce;
        if (line.ByNonce.Count == 0 && line.Parked.Count == 0)
            senders.Remove(account.Sender);
    }

    // A submit that timed out: its txs still parked (the nonces before them never came) leave, refused as a gap.
    private void UnparkLocked(IEnumerable<PendingTx> txs)
    {
        foreach (var tx in txs)
        {
            if (!tx.Parked || tx.Completion.Task.IsCompleted)
                continue;
            pending.Remove(tx.Hash);
            ForgetLocked(tx, ordered: false);
            tx.Completion.TrySetException(new TxRefusedException(new TxRejection("nonce_gap",
                $"nonce {tx.Account!.Value.Nonce} of {tx.Account.Value.Sender} waited {limits.SubmitTimeoutMs} ms for the nonces before it"), null));
        }
    }

    private sealed class SenderLine
    {
        // The nonce the sender's next queued tx must carry (above every queued or in-flight one).
        public ulong NextQueued { get; set; }

        public Dictionary<ulong, PendingTx> ByNonce { get; } = [];

        public SortedDictionary<ulong, PendingTx> Parked { get; } = [];
    }

    /// <summary>A tx refused by the chain's rules, at intake or at apply.</summary>
    private sealed class TxRefusedException(TxRejection rejection, Hash32? conflictsWith) : Exception(rejection.Message)
    {
        public TxRejection Rejection { get; } = rejection;

        public Hash32? ConflictsWith { get; } = conflictsWith;
    }
}
