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
        // Snapshots are views over immutable stored batches: there are no old snapshot files to delete.
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

        await state.ApplyAsync(command, entry.Index, entry.Term, token, entry.Context as BatchProposal, bytes).ConfigureAwait(false);
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
