using System.Diagnostics.Metrics;

namespace Sequencer.Node.Telemetry;

/// <summary>
/// The node's one <see cref="Meter"/>. Names use the words of DESIGN (batch, height, ordered), units last.
/// Exposed in Prometheus format at <c>/metrics</c>.
/// </summary>
public sealed class NodeMetrics : IDisposable
{
    /// <summary>The meter name to subscribe to.</summary>
    public const string MeterName = "Sequencer.Node";

    private readonly Meter meter;

    /// <summary>Creates the instruments.</summary>
    public NodeMetrics()
    {
        meter = new Meter(MeterName, "1.0");
        SubmitDuration = meter.CreateHistogram<double>("sequencer.submit.duration", "ms", "Time from a submit's arrival to its answer, on the node that answered it.");
        ReceivedToOrdered = meter.CreateHistogram<double>("sequencer.tx.received_to_ordered", "ms", "Finality ladder: time from received (leader intake) to ordered (committed and applied on the leader).");
        ReplicateDuration = meter.CreateHistogram<double>("sequencer.batch.replicate.duration", "ms", "Leader: time from cutting a batch to its commit and apply (ReplicateAsync).");
        BatchTxs = meter.CreateHistogram<long>("sequencer.batch.txs", "{tx}", "Txs per applied batch.");
        TxsOrdered = meter.CreateCounter<long>("sequencer.txs.ordered", "{tx}", "Txs ordered (applied) on this node.");
        TxsDuplicate = meter.CreateCounter<long>("sequencer.txs.duplicate", "{tx}", "Proposed txs dropped at apply because they were already ordered.");
        BatchesApplied = meter.CreateCounter<long>("sequencer.batches.applied", "{batch}", "Batches applied on this node.");
        SubmitsRejected = meter.CreateCounter<long>("sequencer.submits.rejected", "{request}", "Submits answered with an error, by error code.");
        SubmitsForwarded = meter.CreateCounter<long>("sequencer.submits.forwarded", "{request}", "Submits forwarded to the leader.");
        OrderedToSigned = meter.CreateHistogram<double>("sequencer.batch.ordered_to_signed", "ms", "Finality ladder, leader: time from a batch's apply (ordered) to the verification of the aggregate signature of the first head that covers it (signed).");
        AggregateDuration = meter.CreateHistogram<double>("sequencer.signing.aggregate.duration", "ms", "Leader: time to aggregate a head session's shares and verify the group signature.");
        HeadsSigned = meter.CreateCounter<long>("sequencer.signing.heads", "{head}", "Signed heads applied on this node.");
        ShareDuration = meter.CreateHistogram<double>("sequencer.signing.share.duration", "ms", "Signer: time to take the nonces durably and compute the shares of one applied SigningSessions entry.");
        SessionsStarted = meter.CreateCounter<long>("sequencer.signing.sessions", "{session}", "Head signing sessions planned by this node as leader, by how they travel (inline in a batch entry, standalone).");
        BadShares = meter.CreateCounter<long>("sequencer.signing.bad_shares", "{share}", "Signature shares that failed verification, by signer.");
        SessionTimeouts = meter.CreateCounter<long>("sequencer.signing.timeouts", "{signer}", "Signers that did not answer a signing session in time, by signer.");
        SignedToPosted = meter.CreateHistogram<double>("sequencer.l1.signed_to_posted", "ms", "Finality ladder, leader: time from a head's signature to the receipt of its L1 post.");
        L1PostGas = meter.CreateHistogram<long>("sequencer.l1.post.gas", "{gas}", "Gas used by each L1 post.");
        L1GasPerBatch = meter.CreateHistogram<double>("sequencer.l1.gas_per_batch", "{gas}", "Gas of each L1 post divided by the batches it newly covers.");
        L1Reorgs = meter.CreateCounter<long>("sequencer.l1.reorgs", "{reorg}", "L1 reorgs that changed blocks this node had scanned.");
        L1FeeBumps = meter.CreateCounter<long>("sequencer.l1.fee_bumps", "{bump}", "Fee bumps of unmined L1 posts.");
        BatchBytes = meter.CreateHistogram<long>("sequencer.batch.bytes", "By", "Tx bytes per batch the leader cut.", tags: null,
            advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = [256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216] });
        LeaderChanges = meter.CreateCounter<long>("sequencer.raft.leader_changes", "{change}", "Leader changes this node saw.");
        PostedToFinalized = meter.CreateHistogram<double>("sequencer.l1.posted_to_finalized", "ms", "Finality ladder: time from a post seen in the inbox (posted) to its L1 block final.");
        L1PostDuration = meter.CreateHistogram<double>("sequencer.l1.post.duration", "ms", "Leader: time from sending an L1 post to its receipt.");
        Errors = meter.CreateCounter<long>("sequencer.errors", "{error}", "Errors by kind: replication, l1, bad_share, submit_timeout.");
        NoncesPublished = meter.CreateCounter<long>("sequencer.signing.nonces_published", "{commitment}", "Nonce commitments this signer published.");
    }

    /// <summary>Ordered to signed, per batch.</summary>
    public Histogram<double> OrderedToSigned { get; }

    /// <summary>Signed to posted, on the leader.</summary>
    public Histogram<double> SignedToPosted { get; }

    /// <summary>Gas per L1 post.</summary>
    public Histogram<long> L1PostGas { get; }

    /// <summary>Gas per newly covered batch.</summary>
    public Histogram<double> L1GasPerBatch { get; }

    /// <summary>L1 reorgs seen.</summary>
    public Counter<long> L1Reorgs { get; }

    /// <summary>L1 fee bumps.</summary>
    public Counter<long> L1FeeBumps { get; }

    /// <summary>Share computation per SigningSessions entry.</summary>
    public Histogram<double> ShareDuration { get; }

    /// <summary>Leader: time to aggregate and verify one head session.</summary>
    public Histogram<double> AggregateDuration { get; }

    /// <summary>Signed heads applied.</summary>
    public Counter<long> HeadsSigned { get; }

    /// <summary>Sessions proposed.</summary>
    public Counter<long> SessionsStarted { get; }

    /// <summary>Bad shares, by signer.</summary>
    public Counter<long> BadShares { get; }

    /// <summary>Session timeouts, by signer.</summary>
    public Counter<long> SessionTimeouts { get; }

    /// <summary>Tx bytes per batch the leader cut.</summary>
    public Histogram<long> BatchBytes { get; }

    /// <summary>Leader changes seen.</summary>
    public Counter<long> LeaderChanges { get; }

    /// <summary>Posted to finalized.</summary>
    public Histogram<double> PostedToFinalized { get; }

    /// <summary>An L1 post, sent to mined.</summary>
    public Histogram<double> L1PostDuration { get; }

    /// <summary>Errors by kind (tag <c>kind</c>).</summary>
    public Counter<long> Errors { get; }

    /// <summary>Published commitments.</summary>
    public Counter<long> NoncesPublished { get; }

    /// <summary>Submit latency.</summary>
    public Histogram<double> SubmitDuration { get; }

    /// <summary>The received to ordered transition.</summary>
    public Histogram<double> ReceivedToOrdered { get; }

    /// <summary>Cut to committed, on the leader.</summary>
    public Histogram<double> ReplicateDuration { get; }

    /// <summary>Batch sizes.</summary>
    public Histogram<long> BatchTxs { get; }

    /// <summary>Ordered txs.</summary>
    public Counter<long> TxsOrdered { get; }

    /// <summary>Duplicates dropped at apply.</summary>
    public Counter<long> TxsDuplicate { get; }

    /// <summary>Applied batches.</summary>
    public Counter<long> BatchesApplied { get; }

    /// <summary>Rejected submits.</summary>
    public Counter<long> SubmitsRejected { get; }

    /// <summary>Forwarded submits.</summary>
    public Counter<long> SubmitsForwarded { get; }

    /// <summary>Registers gauges read from live state.</summary>
    public void ObserveGauge(string name, string unit, string description, Func<long> read)
        => meter.CreateObservableGauge(name, read, unit, description);

    /// <inheritdoc/>
    public void Dispose() => meter.Dispose();
}
