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
    }

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
