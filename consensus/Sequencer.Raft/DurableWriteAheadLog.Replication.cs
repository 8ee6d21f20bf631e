using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Reflection;
using DotNext.IO;
using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using Sequencer.Core;

namespace Sequencer.Raft;

/// <remarks>
/// <para>
/// <b>Replication reads hold no lock while a follower answers.</b> DotNext's leader replicates to each follower by
/// reading the log through <see cref="IAuditTrail{TEntryImpl}.ReadAsync{TResult}"/> with a consumer that sends the
/// AppendEntries request and waits for the answer, all under the log's read lock. Log compaction takes a barrier that
/// waits for every read in progress, and the lock queue is first-in, first-out, so every later read (the flusher, the
/// applier, replication to the other followers) waits behind the barrier. One follower whose answer is lost (cut off,
/// not refused) thus stalled the whole cluster until the Raft request timeout (2 s) ended that request: the chaos run of
/// seed 1068277983 (IsolateNode, proxy mode) acknowledged nothing for 2.2 s while the leader and the other follower were
/// up, and the leader then stepped down. The leader's <c>ReplicationWatch</c> held compaction while a follower was
/// silent, but a request sent just before the cut-off looked healthy for its first 100 ms.
/// </para>
/// <para>
/// Here a replication read copies the entries' bytes under the lock, releases it, and hands the copies to the consumer:
/// the lock is held for a memory copy, never for a network round trip. A read copies at most
/// <see cref="MaxDetachedReadBytes"/> (always at least one entry); the interface allows fewer entries than asked for,
/// and DotNext's leader then counts the follower as replicated up to the last entry it sent and continues from there in
/// its next round. Reads that start at or below the snapshot (a snapshot transfer, held by <c>SnapshotTransfers</c>),
/// metadata-only reads and configuration entries keep DotNext's own path.
/// </para>
/// <para>
/// <b>Snapshot transfers start at the follower's tip.</b> Before DotNext sends a snapshot, the read asks the follower
/// for its applied tip (<see cref="FollowerTip"/>) and sets <see cref="SnapshotBase.Current"/>, which flows into the
/// transfer, so the stream holds only the batches the follower is missing (see <see cref="SnapshotBase"/>). When no
/// connection to the follower could be made at all, the follower is most likely down or still starting (its Raft port
/// opens before its internal listener), and the transfer is postponed to the next replication round instead of
/// streaming the whole history: a follower that came up during the ask got its whole history before, not a delta
/// (seen on <c>make run</c> after a restart). A member whose listener stays unreachable gets the whole history after
/// <see cref="MaxTransfersPostponed"/> postponements in a row, so a misconfigured listener cannot keep it from
/// catching up.
/// </para>
/// </remarks>
public sealed partial class DurableWriteAheadLog
{
    /// <summary>The most payload bytes one replication read copies (at least one entry is always sent).</summary>
    public const int DefaultMaxDetachedReadBytes = 8 * 1024 * 1024;

    // The copies' buffers: bounded (a few per size, no per-thread caches, unlike ArrayPool.Shared, whose idle thread
    // caches could each keep a megabyte buffer); larger ones are allocated and dropped.
    private static readonly ArrayPool<byte> CopyBuffers = ArrayPool<byte>.Create(DefaultMaxDetachedReadBytes, maxArraysPerBucket: 4);

    // The state machine's snapshot: a replication read that starts at or below it is a snapshot transfer.
    private readonly DotNext.Net.Cluster.Consensus.Raft.StateMachine.ISnapshotManager snapshots;

    // Transfers postponed in a row per follower, because its tip could not be asked (no connection).
    private readonly ConcurrentDictionary<EndPoint, int> postponedInARow = new();

    private long detachedReads, lockedReads, tipsTold, transfersPostponed;

    /// <summary>
    /// How many snapshot transfers in a row to one follower are postponed because its internal listener could not be
    /// reached to ask its tip (about 0.5 s each); the next one streams the whole history.
    /// </summary>
    public const int MaxTransfersPostponed = 16;

    /// <summary>The most payload bytes one replication read copies; the rest follows in DotNext's next round.</summary>
    public int MaxDetachedReadBytes { get; init; } = DefaultMaxDetachedReadBytes;

    /// <summary>Replication reads served from copies, with no lock held while the consumer ran.</summary>
    public long DetachedReads => Interlocked.Read(ref detachedReads);

    /// <summary>
    /// Asks a follower (by its Raft endpoint) for its applied tip, so that a snapshot sent to it starts there (see
    /// <see cref="SnapshotBase"/>); null, or an answer without a tip, sends the whole history, and an answer that the
    /// follower could not be reached postpones the transfer (at most <see cref="MaxTransfersPostponed"/> times in a row).
    /// </summary>
    public Func<EndPoint, CancellationToken, ValueTask<FollowerTipAnswer>>? FollowerTip { get; init; }

    /// <summary>Snapshot transfers for which the follower told its tip.</summary>
    public long TipsTold => Interlocked.Read(ref tipsTold);

    /// <summary>Snapshot transfers postponed to the next round because the follower's tip could not be asked.</summary>
    public long TransfersPostponed => Interlocked.Read(ref transfersPostponed);

    /// <summary>Replication reads that start with the snapshot (a snapshot transfer) or hold a configuration entry: served under the read lock.</summary>
    public long LockedReads => Interlocked.Read(ref lockedReads);

    ValueTask<TResult> IAuditTrail<IRaftLogEntry>.ReadAsync<TResult>(ILogEntryConsumer<IRaftLogEntry, TResult> reader, long startIndex, long endIndex, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(reader);
        // Metadata-only reads (the term at an index) and empty ones (a heartbeat) carry no payload: DotNext's path.
        return reader.LogEntryMetadataOnly || startIndex > endIndex || IsDisposingOrDisposed
            ? ReadAsync(reader, startIndex, endIndex, token)
            : startIndex <= (snapshots.Snapshot?.Index ?? 0L)
                ? SnapshotReadAsync(reader, startIndex, endIndex, token)
                : DetachedReadAsync(reader, startIndex, endIndex, token);
    }

    /// <summary>
    /// The compaction fence snapshot transfers pass before they take the log's read lock (see <see cref="SnapshotTransfers"/>);
    /// null for none.
    /// </summary>
    public SnapshotTransfers? TransferFence { get; init; }

    // A snapshot transfer: DotNext's locked path, from the follower's tip when it tells it (the stream reads
    // SnapshotBase.Current, and the transfer's resend check SnapshotTransfers.Recipient, both flowing with this call
    // into DotNext's transfer). It first passes the compaction fence:
    // a compaction that began while it streamed would hold every other read of the log until the transfer ended.
    private async ValueTask<TResult> SnapshotReadAsync<TResult>(ILogEntryConsumer<IRaftLogEntry, TResult> reader, long startIndex, long endIndex, CancellationToken token)
    {
        using var admitted = TransferFence is { } fence ? await fence.AdmitAsync(token).ConfigureAwait(false) : null;
        var member = MemberOf(reader);
        SnapshotTransfers.Recipient = member?.EndPoint.ToString();
        if (FollowerTip is { } ask && member is not null)
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(token);
            bounded.CancelAfter(TipTimeout);
            var answer = FollowerTipAnswer.None;
            try
            {
                answer = await ask(member.EndPoint, bounded.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!token.IsCancellationRequested)
            {
            }

            if (answer.Unreachable && postponedInARow.AddOrUpdate(member.EndPoint, 1, static (_, n) => n + 1) <= MaxTransfersPostponed)
            {
                // DotNext's replication process counts the follower unavailable for this round and tries again in the
                // next one; the leader's failure detector (ReplicationWatch) is always healthy, so it never drops it.
                Interlocked.Increment(ref transfersPostponed);
                throw new DotNext.Net.Cluster.MemberUnavailableException(member, "the follower's internal listener could not be reached to ask its tip: the snapshot transfer waits for the next round");
            }

            postponedInARow.TryRemove(member.EndPoint, out _);
            if (answer.Tip is not null)
                Interlocked.Increment(ref tipsTold);
            SnapshotBase.Current = answer.Tip;
        }

        return await LockedReadAsync(reader, startIndex, endIndex, token).ConfigureAwait(false);
    }

    private ValueTask<TResult> LockedReadAsync<TResult>(ILogEntryConsumer<IRaftLogEntry, TResult> reader, long startIndex, long endIndex, CancellationToken token)
    {
        Interlocked.Increment(ref lockedReads);
        return ReadAsync(reader, startIndex, endIndex, token);
    }

    private async ValueTask<TResult> DetachedReadAsync<TResult>(ILogEntryConsumer<IRaftLogEntry, TResult> reader, long startIndex, long endIndex, CancellationToken token)
    {
        DetachedEntries? copy;
        bool snapshot;
        using (var entries = await ReadAsync(startIndex, endIndex, token).ConfigureAwait(false))
        {
            snapshot = entries.Count > 0 && entries[0].IsSnapshot;
            copy = snapshot ? null : DetachedEntries.TryCopy(entries, MaxDetachedReadBytes);
        }

        // The snapshot moved past startIndex since the check (a snapshot transfer after all), or the read holds a
        // configuration entry: DotNext's path.
        if (copy is null)
        {
            return snapshot
                ? await SnapshotReadAsync(reader, startIndex, endIndex, token).ConfigureAwait(false)
                : await LockedReadAsync(reader, startIndex, endIndex, token).ConfigureAwait(false);
        }

        Interlocked.Increment(ref detachedReads);
        var completed = false;
        try
        {
            var result = await reader.ReadAsync<DetachedEntry, ArraySegment<DetachedEntry>>(copy.Entries, null, token).ConfigureAwait(false);
            completed = true;
            return result;
        }
        finally
        {
            // A consumer that failed or was cancelled may leave a write of the buffer behind it: only a buffer whose
            // consumer finished goes back to the pool.
            if (completed)
                copy.Return();
        }
    }

    /// <summary>How long a snapshot transfer waits for the follower's tip, before the transfer starts; then it sends the whole history.</summary>
    public static readonly TimeSpan TipTimeout = TimeSpan.FromMilliseconds(500);

    private static readonly ConcurrentDictionary<Type, FieldInfo?> MemberFields = new();

    // DotNext's replication consumer (ReplicationProcess<TMember>) keeps its follower in a private field "member"; the
    // slow-install snapshot integration test fails if that stops being so (no delta snapshot is sent).
    private static DotNext.Net.Cluster.IClusterMember? MemberOf(object consumer)
        => MemberFields.GetOrAdd(consumer.GetType(), type => type.GetField("member", BindingFlags.Instance | BindingFlags.NonPublic))?.GetValue(consumer) as DotNext.Net.Cluster.IClusterMember;

    /// <summary>Copies of log entries in one buffer from <see cref="CopyBuffers"/>.</summary>
    private sealed class DetachedEntries
    {
        private byte[]? buffer;

        private DetachedEntries(byte[] buffer, ArraySegment<DetachedEntry> entries)
        {
            this.buffer = buffer;
            Entries = entries;
        }

        public ArraySegment<DetachedEntry> Entries { get; }

        /// <summary>
        /// Copies entries from the start of <paramref name="entries"/> while their payloads total at most
        /// <paramref name="maxBytes"/> (the first always); null when the read holds a configuration entry (the caller handles a snapshot).
        /// </summary>
        public static DetachedEntries? TryCopy<TList>(TList entries, int maxBytes)
            where TList : IReadOnlyList<DotNext.Net.Cluster.Consensus.Raft.StateMachine.LogEntry>
        {
            var count = 0;
            long bytes = 0;
            for (; count < entries.Count; count++)
            {
                var entry = entries[count];
                if (entry.IsConfiguration || entry.Length is not { } length)
                    return null;
                if (count > 0 && bytes + length > maxBytes)
                    break;
                bytes += length;
            }

            Invariant.Check(count > 0 && bytes <= Array.MaxLength, "a replication read copies at least one entry, within one array");
            var buffer = CopyBuffers.Rent((int)bytes);
            var copies = new DetachedEntry[count];
            var offset = 0;
            for (var i = 0; i < count; i++)
            {
                var entry = entries[i];
                var length = (int)entry.Length!.Value;
                var target = buffer.AsMemory(offset, length);
                if (!entry.TryGetPayload(out var payload))
                    throw new InvalidOperationException($"log entry {entry.Index} has no payload in memory");
                Invariant.Check(payload.Length == length, "a log entry's payload has its recorded length");
                payload.CopyTo(target.Span);
                copies[i] = new DetachedEntry(entry.Term, entry.CommandId, target);
                offset += length;
            }

            return new DetachedEntries(buffer, copies);
        }

        public void Return()
        {
            if (Interlocked.Exchange(ref buffer, null) is { } rented)
                CopyBuffers.Return(rented);
        }
    }

    /// <summary>A copy of one log entry: its term, command id and payload.</summary>
    private readonly struct DetachedEntry(long term, int? commandId, ReadOnlyMemory<byte> payload) : IRaftLogEntry
    {
        public long Term => term;

        public int? CommandId => commandId;

        bool IDataTransferObject.IsReusable => true;

        long? IDataTransferObject.Length => payload.Length;

        ValueTask IDataTransferObject.WriteToAsync<TWriter>(TWriter writer, CancellationToken token) => writer.Invoke(payload, token);

        bool IDataTransferObject.TryGetMemory(out ReadOnlyMemory<byte> memory)
        {
            memory = payload;
            return true;
        }
    }
}
