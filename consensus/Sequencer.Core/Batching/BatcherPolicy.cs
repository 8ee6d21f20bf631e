namespace Sequencer.Core.Batching;

/// <summary>What the leader's batcher sees when it decides.</summary>
/// <param name="PendingTxs">Txs waiting for a batch.</param>
/// <param name="PendingBytes">Their total size in bytes.</param>
/// <param name="OldestPendingAgeMs">How long the oldest of them has waited; 0 when none waits.</param>
/// <param name="InFlightEntries">Batch entries proposed and not yet committed.</param>
public readonly record struct BatcherInput(int PendingTxs, long PendingBytes, long OldestPendingAgeMs, int InFlightEntries);

/// <summary>The batcher's decision.</summary>
/// <param name="Emit">Cut a batch now.</param>
/// <param name="WakeAfterMs">When not emitting: decide again after this many milliseconds at the latest,
/// or -1 to wait for the next event (a new tx or a committed entry).</param>
public readonly record struct BatcherDecision(bool Emit, long WakeAfterMs)
{
    /// <summary>Cut a batch now.</summary>
    public static BatcherDecision EmitNow => new(true, 0);

    /// <summary>Wait for a new tx or a committed entry.</summary>
    public static BatcherDecision WaitForEvent => new(false, -1);
}

/// <summary>
/// When to cut a batch (pure; time is an input). Only while fewer than <see cref="SequencerLimits.MaxInFlightEntries"/>
/// entries are in flight, a batch is cut when the pipeline is empty (nothing to wait for: lowest latency at low
/// load), when it is full by count or bytes, or when its oldest tx has waited <see cref="SequencerLimits.MaxBatchDelayMs"/>.
/// So under load batches grow instead of multiplying: at most one batch per delay while entries are in flight,
/// and fsync and (later) signing are paid per batch, not per tx.
/// </summary>
public sealed class BatcherPolicy
{
    private readonly SequencerLimits limits;

    /// <summary>Creates the policy over validated limits.</summary>
    public BatcherPolicy(SequencerLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        this.limits = limits;
    }

    /// <summary>Decides whether to cut a batch now.</summary>
    public BatcherDecision Decide(BatcherInput input)
    {
        Invariant.Check(input.PendingTxs >= 0 && input.PendingBytes >= 0 && input.InFlightEntries >= 0, "negative batcher input");

        if (input.PendingTxs == 0)
            return BatcherDecision.WaitForEvent;

        // A full pipeline: the next commit frees a slot and wakes the batcher.
        if (input.InFlightEntries >= limits.MaxInFlightEntries)
            return BatcherDecision.WaitForEvent;

        if (input.InFlightEntries == 0 || input.PendingTxs >= limits.MaxBatchTxs || input.PendingBytes >= limits.MaxBatchBytes)
            return BatcherDecision.EmitNow;

        var waited = Math.Max(0, input.OldestPendingAgeMs);
        return waited >= limits.MaxBatchDelayMs
            ? BatcherDecision.EmitNow
            : new BatcherDecision(false, limits.MaxBatchDelayMs - waited);
    }

    /// <summary>
    /// How many of the pending txs, in queue order, go into the next batch: as many as fit both the count and the byte
    /// limit, and always at least one (a single tx never exceeds <see cref="SequencerLimits.MaxBatchBytes"/>).
    /// </summary>
    /// <param name="pendingSizes">The sizes of the pending txs in queue order.</param>
    public int TakeCount(IEnumerable<int> pendingSizes)
    {
        ArgumentNullException.ThrowIfNull(pendingSizes);
        var count = 0;
        long bytes = 0;
        foreach (var size in pendingSizes)
        {
            Invariant.Check(size >= 1 && size <= limits.MaxTxBytes, "a pending tx violates MaxTxBytes");
            if (count == limits.MaxBatchTxs || (count > 0 && bytes + size > limits.MaxBatchBytes))
                break;
            count++;
            bytes += size;
        }

        return count;
    }
}
