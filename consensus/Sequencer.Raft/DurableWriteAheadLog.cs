using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;

namespace Sequencer.Raft;

/// <summary>
/// DotNext's <see cref="WriteAheadLog"/> with one change: a follower makes appended entries durable before it
/// acknowledges them.
/// </summary>
/// <remarks>
/// <para>
/// In DotNext.Net.Cluster 6.12 a follower handles AppendEntries by appending the entries and then committing up to
/// the leader's commit index; only the commit waits for the flusher. Entries beyond the commit index are acknowledged
/// while they sit in unflushed pages, and on restart the WAL trusts only its checkpoint, so a follower killed right
/// after acknowledging forgets them. The leader counts that acknowledgement towards a majority, so a batch the
/// client was told is ordered could then be lost when the leader dies too (Raft requires the follower to persist
/// before it answers). DESIGN section 9 raised this; the chaos scenario "kill the leader and the acknowledging
/// follower right after an ack" probes it.
/// </para>
/// <para>
/// The fix re-implements <see cref="IAuditTrail{TEntry}.AppendAsync{TEntryImpl}(ILogEntryProducer{TEntryImpl}, long, bool, CancellationToken)"/>,
/// the call a follower makes for replicated entries, to flush (pages and checkpoint, fsync included) before it
/// returns. One flush covers every entry of the AppendEntries message, so the cost is per message, not per entry.
/// The leader's own appends are untouched: the leader flushes before it commits.
/// </para>
/// </remarks>
public sealed class DurableWriteAheadLog : WriteAheadLog, IAuditTrail<IRaftLogEntry>
{
    /// <summary>Creates the log; see <see cref="WriteAheadLog(Options, IStateMachine)"/>.</summary>
    public DurableWriteAheadLog(Options configuration, IStateMachine stateMachine)
        : base(configuration, stateMachine)
    {
    }

    /// <summary>How many times a follower append was flushed before it was acknowledged.</summary>
    public long DurableAppends => Interlocked.Read(ref durableAppends);

    private long durableAppends;

    /// <summary>Appends replicated entries and flushes them before returning.</summary>
    public new async ValueTask AppendAsync<TEntry>(ILogEntryProducer<TEntry> entries, long startIndex, bool skipCommitted = false, CancellationToken token = default)
        where TEntry : IRaftLogEntry
    {
        ArgumentNullException.ThrowIfNull(entries);
        var hasEntries = entries.RemainingCount > 0L;
        await base.AppendAsync(entries, startIndex, skipCommitted, token).ConfigureAwait(false);
#if SEQUENCER_TEST_FAULTS
        if (Sequencer.Core.TestFaults.FollowerAckBeforeFsync)
            return;
#endif
        if (hasEntries)
        {
            await FlushAsync(token).ConfigureAwait(false);
            Interlocked.Increment(ref durableAppends);
        }
    }

    ValueTask IAuditTrail<IRaftLogEntry>.AppendAsync<TEntry>(ILogEntryProducer<TEntry> entries, long startIndex, bool skipCommitted, CancellationToken token)
        => AppendAsync(entries, startIndex, skipCommitted, token);
}
