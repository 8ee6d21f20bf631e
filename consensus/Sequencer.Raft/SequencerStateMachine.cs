using DotNext.IO;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Sequencer.Core.Encoding;

namespace Sequencer.Raft;

/// <summary>
/// The DotNext <see cref="IStateMachine"/>: decodes committed entries and hands them to <see cref="AppliedState"/>,
/// installs snapshots, and exposes the current snapshot for log compaction and lagging followers.
/// </summary>
/// <param name="state">The applied state.</param>
/// <param name="scratchDirectory">Where an incoming snapshot is spooled before it is verified and installed.</param>
public sealed class SequencerStateMachine(AppliedState state, DirectoryInfo scratchDirectory) : IStateMachine
{
    /// <inheritdoc/>
    public ISnapshot? Snapshot => state.CurrentSnapshot;

    /// <inheritdoc/>
    public ValueTask ReclaimGarbageAsync(long watermark, CancellationToken token)
    {
        // Snapshots are views over immutable stored batches: there are no old snapshot files to delete. DotNext calls
        // this once it has compacted the log up to the watermark, still under its barrier: snapshot transfers held at
        // the compaction fence may go on.
        state.Transfers.Reclaimed(watermark);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public async ValueTask<long> ApplyAsync(LogEntry entry, CancellationToken token)
    {
        if (entry.IsSnapshot)
        {
            await InstallAsync(entry, token).ConfigureAwait(false);
            return entry.Index;
        }

        ILogCommand? command = null;
        long bytes = 0;
        if (entry.TryGetPayload(out var payload) && !payload.IsEmpty)
        {
            command = LogCommandCodec.Decode(payload);
            bytes = payload.Length;
        }

        var proposal = entry.Context as BatchProposal;
        using var activity = proposal is not null && proposal.Trace != default
            ? RaftTracing.Source.StartActivity("batch.apply", System.Diagnostics.ActivityKind.Internal, proposal.Trace)
            : null;
        if (activity is not null)
        {
            // Kept before apply, which answers the submits (their spans link to the batch): the height this entry forms
            // when it forms one (an entry of duplicates only forms none, and the next batch takes the height over).
            state.Traces.SetBatch((state.LastHeader?.Height ?? 0) + 1, proposal!.Trace);
        }

        var applied = await state.ApplyAsync(command, entry.Index, entry.Term, token, proposal, bytes).ConfigureAwait(false);
        if (activity is not null && applied?.Header is { } header)
        {
            activity.SetTag("sequencer.height", (long)header.Height);
            activity.SetTag("sequencer.tx_count", applied.TxHashes.Length);
        }

        return entry.Index;
    }

    private async Task InstallAsync(LogEntry entry, CancellationToken token)
    {
        scratchDirectory.Create();
        var path = Path.Combine(scratchDirectory.FullName, $"incoming-snapshot-{entry.Index}.tmp");
        try
        {
            var output = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            await using (output.ConfigureAwait(false))
            {
                await entry.WriteToAsync(output, 1 << 16, token).ConfigureAwait(false);
                output.Position = 0;
                await state.InstallSnapshotAsync(output, entry.Index, entry.Term, token).ConfigureAwait(false);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
