using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;

namespace Sequencer.Raft;

/// <summary>
/// DotNext's <see cref="WriteAheadLog"/> with three changes on a follower: appended entries are durable before they are
/// acknowledged, entries the leader says are committed are applied while the new ones are flushed, and a commit index
/// the leader sends with a session request is committed at once (<see cref="CommitAsLeaderSaysAsync"/>). On the leader,
/// replication sends copies of the entries and holds no read of the log while it waits for a follower
/// (DurableWriteAheadLog.Replication.cs).
/// </summary>
/// <remarks>
/// <para>
/// In DotNext.Net.Cluster 6.12 a follower handles AppendEntries by appending the entries and then committing up to
/// the leader's commit index (<c>AppendAsync</c>, then <c>CommitAsync</c>, then the answer); only the commit waits for
/// the flusher, and only up to the commit index. Entries beyond it were acknowledged while they sat in unflushed pages,
/// and on restart the WAL trusts only its checkpoint, so a follower killed right after acknowledging forgot them. The
/// leader counts that acknowledgement towards a majority, so a batch the client was told is ordered could then be lost
/// when the leader dies too (Raft requires the follower to persist before it answers). DESIGN section 9 raised this;
/// the chaos scenario "kill the leader and the acknowledging follower right after an ack" probes it.
/// </para>
/// <para>
/// Here the follower's commit waits until every entry the message appended is flushed (pages and checkpoint, fsync
/// included), so the answer, which DotNext sends only after the commit returns, follows durability. One flush covers
/// every entry of the message. Before it waits, the commit goes as far as the leader's commit index allows among the
/// entries already durable: those are applied (the signer then holds the newest head) while the message's own entries,
/// at saturation a megabyte or two, are being flushed. Before, the apply of a committed head waited for that flush.
/// The leader's own appends are untouched: the leader flushes before it commits.
/// </para>
/// </remarks>
public sealed partial class DurableWriteAheadLog : WriteAheadLog, IAuditTrail<IRaftLogEntry>, IAuditTrail
{
    /// <summary>Creates the log; see <see cref="WriteAheadLog(Options, IStateMachine)"/>.</summary>
    public DurableWriteAheadLog(Options configuration, IStateMachine stateMachine)
        : base(configuration, stateMachine)
    {
        snapshots = stateMachine;
        durableThrough = LastCommittedEntryIndex;
    }

    /// <summary>How many times a follower append was flushed before it was acknowledged.</summary>
    public long DurableAppends => Interlocked.Read(ref durableAppends);

    /// <summary>How many follower commits applied durable entries before the flush of the message's own entries.</summary>
    public long EarlyCommits => Interlocked.Read(ref earlyCommits);

    /// <summary>How many commit indexes sent with session requests committed entries (<see cref="CommitAsLeaderSaysAsync"/>).</summary>
    public long LeaderSaidCommits => Interlocked.Read(ref leaderSaidCommits);

    /// <summary>
    /// Wakes DotNext's background flusher, which compacts the log up to the state machine's snapshot point (and then
    /// calls <see cref="ISnapshotManager.ReclaimGarbageAsync"/>) once per pass. It passes only when an entry is appended
    /// or the commit index moves, so a point moved on an idle node was not compacted until the next entry: snapshot
    /// reads waited at the compaction fence for its whole bound (measured: 3,002 ms in the slow-install integration
    /// test, after the mark entry that moved the point). A pass with nothing to flush writes nothing. DotNext 6.12 has
    /// no public way to ask for one: its private event <c>flushTrigger</c> is set from a thread-pool thread, so that
    /// the flusher never runs on the caller's. False when the field is not there (a unit test holds it).
    /// </summary>
    public bool WakeFlusher()
    {
        if (FlushTriggerSet is not { } set || FlushTrigger?.GetValue(this) is not { } trigger)
            return false;
        ThreadPool.UnsafeQueueUserWorkItem(static state =>
        {
            try
            {
                state.set.Invoke(state.trigger, [true]);
            }
            catch (System.Reflection.TargetInvocationException e) when (e.InnerException is ObjectDisposedException)
            {
                // The log was disposed meanwhile: there is nothing left to compact.
            }
        }, (set, trigger), preferLocal: false);
        return true;
    }

    private static readonly System.Reflection.FieldInfo? FlushTrigger =
        typeof(WriteAheadLog).GetField("flushTrigger", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic);

    private static readonly System.Reflection.MethodInfo? FlushTriggerSet = FlushTrigger?.FieldType.GetMethod("Set", [typeof(bool)]);

    private long durableAppends, earlyCommits, leaderSaidCommits;

    // The last index a follower append added that is not known durable yet (0: none), and the last index known durable.
    private long unflushedThrough, durableThrough;

    // DotNext's commit and flush wait on an event that takes one waiter at a time (a second concurrent waiter throws
    // InvalidOperationException on a thread-pool thread, which ends the process): every commit and flush made
    // through this class takes this first. DotNext reaches them only through IAuditTrail.CommitAsync, re-implemented here.
    private readonly SemaphoreSlim commits = new(1, 1);

    /// <summary>Appends replicated entries; the commit that DotNext makes next waits until they are flushed.</summary>
    public new async ValueTask AppendAsync<TEntry>(ILogEntryProducer<TEntry> entries, long startIndex, bool skipCommitted = false, CancellationToken token = default)
        where TEntry : IRaftLogEntry
    {
        ArgumentNullException.ThrowIfNull(entries);
        var hasEntries = entries.RemainingCount > 0L;
        // Entries from startIndex on may replace what was there: nothing from there is known durable any more.
        if (hasEntries)
            InterlockedMin(ref durableThrough, startIndex - 1L);
        await base.AppendAsync(entries, startIndex, skipCommitted, token).ConfigureAwait(false);
        if (hasEntries)
            InterlockedMax(ref unflushedThrough, LastEntryIndex);
    }

    ValueTask IAuditTrail<IRaftLogEntry>.AppendAsync<TEntry>(ILogEntryProducer<TEntry> entries, long startIndex, bool skipCommitted, CancellationToken token)
        => AppendAsync(entries, startIndex, skipCommitted, token);

    /// <summary>
    /// Commits up to <paramref name="endIndex"/>: first as far as the entries known durable go, then, once every entry a
    /// follower append added is flushed, the rest.
    /// </summary>
    public new async ValueTask<long> CommitAsync(long endIndex, CancellationToken token = default)
    {
        await commits.WaitAsync(token).ConfigureAwait(false);
        try
        {
            return await CommitCoreAsync(endIndex, token).ConfigureAwait(false);
        }
        finally
        {
            commits.Release();
        }
    }

    private async ValueTask<long> CommitCoreAsync(long endIndex, CancellationToken token)
    {
        var committed = 0L;
        var pending = Interlocked.Read(ref unflushedThrough);
        if (pending > 0L)
        {
            var early = Math.Min(endIndex, Interlocked.Read(ref durableThrough));
            if (early > LastCommittedEntryIndex)
            {
                committed += await base.CommitAsync(early, token).ConfigureAwait(false);
                Interlocked.Increment(ref earlyCommits);
            }
#if SEQUENCER_TEST_FAULTS
            if (!Sequencer.Core.TestFaults.FollowerAckBeforeFsync)
#endif
            {
                await FlushAsync(token).ConfigureAwait(false);
                InterlockedMax(ref durableThrough, pending);
                Interlocked.CompareExchange(ref unflushedThrough, 0L, pending);
                Interlocked.Increment(ref durableAppends);
            }
        }

        return committed + await base.CommitAsync(endIndex, token).ConfigureAwait(false);
    }

    ValueTask<long> IAuditTrail.CommitAsync(long endIndex, CancellationToken token) => CommitAsync(endIndex, token);

    /// <summary>
    /// On a follower: commits up to <paramref name="commitIndex"/>, which the leader of <paramref name="term"/> says is
    /// committed, when this log holds an entry of that term there (or at its last entry, if that is lower). By Raft's
    /// log matching, an entry of the leader's term at an index, which only that leader wrote, means this log equals
    /// the leader's up to it, so the commit is the one DotNext makes when the leader's next AppendEntries brings the
    /// same commit index; it only comes sooner. The claim is trusted as much as that message's commit index is.
    /// Waits for the flush of the entries it commits, as every commit does.
    /// </summary>
    /// <returns>How many entries were committed (0 when the log holds no entry of <paramref name="term"/> there).</returns>
    public async ValueTask<long> CommitAsLeaderSaysAsync(long term, long commitIndex, CancellationToken token)
    {
        if (Math.Min(commitIndex, LastEntryIndex) <= LastCommittedEntryIndex)
            return 0L;
        await commits.WaitAsync(token).ConfigureAwait(false);
        try
        {
            var target = Math.Min(commitIndex, LastEntryIndex);
            if (target <= LastCommittedEntryIndex)
                return 0L;
            using (var entries = await ReadAsync(target, target, token).ConfigureAwait(false))
            {
                if (entries.Count != 1 || entries[0].IsSnapshot || entries[0].Term != term)
                    return 0L;
            }

            var committed = await base.CommitAsync(target, token).ConfigureAwait(false);
            if (committed > 0L)
                Interlocked.Increment(ref leaderSaidCommits);
            return committed;
        }
        finally
        {
            commits.Release();
        }
    }

    private static void InterlockedMax(ref long location, long value)
    {
        for (var current = Interlocked.Read(ref location); value > current;)
        {
            var seen = Interlocked.CompareExchange(ref location, value, current);
            if (seen == current)
                return;
            current = seen;
        }
    }

    private static void InterlockedMin(ref long location, long value)
    {
        for (var current = Interlocked.Read(ref location); value < current;)
        {
            var seen = Interlocked.CompareExchange(ref location, value, current);
            if (seen == current)
                return;
            current = seen;
        }
    }
}
