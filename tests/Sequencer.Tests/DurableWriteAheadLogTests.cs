using DotNext.IO;
using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Sequencer.Raft;

namespace Sequencer.Tests;

/// <summary>
/// The follower's AppendEntries path as DotNext 6.12 drives it: <c>AppendAsync(producer)</c>, then
/// <c>IAuditTrail.CommitAsync(leaderCommit)</c>, then the answer. The commit must not return before the appended
/// entries are durable (flushed, checkpoint included), and it commits the entries already durable first.
/// </summary>
public sealed class DurableWriteAheadLogTests : IDisposable
{
    private readonly string directory = Path.Combine(Path.GetTempPath(), "sequencer-wal-tests", Guid.NewGuid().ToString("N"));

    private WriteAheadLog.Options Options => new()
    {
        Location = directory,
        ChunkSize = 1 << 16,
        MemoryManagement = WriteAheadLog.MemoryManagementStrategy.PrivateMemory,
    };

    private static LogEntryProducer<BinaryLogEntry> Entries(long term, int count, byte tag)
        => new(Enumerable.Range(0, count).Select(i => new BinaryLogEntry { Term = term, Content = new byte[] { tag, (byte)i, 7, 7 } }).ToArray());

    [Fact]
    public async Task AFollowerCommit_ReturnsWithTheAppendedEntriesDurable_AndCommitsTheDurableOnesBeforeTheFlush()
    {
        await using (var wal = new DurableWriteAheadLog(Options, IStateMachine.CreateNoOp(1_000_000)))
        {
            IAuditTrail<IRaftLogEntry> follower = wal;

            // First message: five entries, the leader's commit index still 0.
            await follower.AppendAsync(Entries(1, 5, 1), 1, skipCommitted: true);
            Assert.Equal(0, await follower.CommitAsync(0));
            Assert.Equal(1, wal.DurableAppends);
            Assert.Equal(0, wal.EarlyCommits);

            // Second message: five more, and the leader says the first five are committed. Those are durable already,
            // so they are committed before the new entries are flushed; all is durable when the commit returns.
            await follower.AppendAsync(Entries(1, 5, 2), 6, skipCommitted: true);
            Assert.Equal(5, await follower.CommitAsync(5));
            Assert.Equal(1, wal.EarlyCommits);
            Assert.Equal(2, wal.DurableAppends);
            Assert.Equal(5, wal.LastCommittedEntryIndex);

            // A new leader replaces entries 8 to 10 with its own: only 6 and 7 count as durable until the flush.
            await follower.AppendAsync(Entries(2, 2, 3), 8, skipCommitted: true);
            Assert.Equal(9, wal.LastEntryIndex);
            Assert.Equal(4, await follower.CommitAsync(9));
            Assert.Equal(2, wal.EarlyCommits);
            Assert.Equal(3, wal.DurableAppends);

            // A heartbeat (no entries) commits without a flush of its own.
            Assert.Equal(0, await follower.CommitAsync(9));
            Assert.Equal(3, wal.DurableAppends);

            // Entries appended and acknowledged beyond the commit index survive a restart.
            await follower.AppendAsync(Entries(2, 3, 4), 10, skipCommitted: true);
            Assert.Equal(0, await follower.CommitAsync(9));
            Assert.Equal(12, wal.LastEntryIndex);
        }

        await using var reopened = new WriteAheadLog(Options, IStateMachine.CreateNoOp(1_000_000));
        Assert.Equal(12, reopened.LastEntryIndex);
        Assert.Equal(9, reopened.LastCommittedEntryIndex);
    }

    [Fact]
    public async Task ACommitIndexTheLeaderSends_CommitsOnlyWhereThisLogHoldsAnEntryOfItsTerm()
    {
        await using var wal = new DurableWriteAheadLog(Options, IStateMachine.CreateNoOp(1_000_000));
        IAuditTrail<IRaftLogEntry> follower = wal;
        await follower.AppendAsync(Entries(1, 5, 1), 1, skipCommitted: true);
        await follower.CommitAsync(0);

        // Another term's leader cannot commit entries it did not write.
        Assert.Equal(0, await wal.CommitAsLeaderSaysAsync(term: 2, commitIndex: 4, CancellationToken.None));
        Assert.Equal(0, wal.LastCommittedEntryIndex);

        // The leader of term 1 can, up to what this log holds.
        Assert.Equal(3, await wal.CommitAsLeaderSaysAsync(term: 1, commitIndex: 3, CancellationToken.None));
        Assert.Equal(3, wal.LastCommittedEntryIndex);
        Assert.Equal(2, await wal.CommitAsLeaderSaysAsync(term: 1, commitIndex: 99, CancellationToken.None));
        Assert.Equal(5, wal.LastCommittedEntryIndex);
        Assert.Equal(2, wal.LeaderSaidCommits);
        Assert.Equal(0, await wal.CommitAsLeaderSaysAsync(term: 1, commitIndex: 5, CancellationToken.None));

        // Term 2's leader appends after it: term 1's claims do not reach its entries.
        await follower.AppendAsync(Entries(2, 2, 2), 6, skipCommitted: true);
        Assert.Equal(0, await wal.CommitAsLeaderSaysAsync(term: 1, commitIndex: 7, CancellationToken.None));
        Assert.Equal(2, await wal.CommitAsLeaderSaysAsync(term: 2, commitIndex: 7, CancellationToken.None));

        // DotNext's own commit with the same index afterwards is a no-op, and still waits for the flush.
        Assert.Equal(0, await follower.CommitAsync(7));
        Assert.Equal(7, wal.LastCommittedEntryIndex);
    }

    /// <summary>
    /// The leader's replication reads the log with a consumer that sends AppendEntries and waits for the answer. A
    /// follower whose answer never comes must not hold the log's read lock: compaction waits for every reader, and every
    /// later read queues behind it (chaos seed 1068277983: the cluster stalled for the 2 s request timeout).
    /// </summary>
    [Fact]
    public async Task AReplicationReadWaitingForAFollower_HoldsNoLock_SoCompactionAndLaterReadsGoOn()
    {
        await using var wal = new DurableWriteAheadLog(Options, IStateMachine.CreateNoOp(4));
        IAuditTrail<IRaftLogEntry> log = wal;
        // Twelve entries of 20 kB, three to a 64 kB data page.
        var payloads = Enumerable.Range(1, 12).Select(i => Enumerable.Repeat((byte)i, 20_000).ToArray()).ToArray();
        await log.AppendAsync(new LogEntryProducer<BinaryLogEntry>(payloads.Select(p => new BinaryLogEntry { Term = 1, Content = p }).ToArray()), 1, skipCommitted: true);
        await log.CommitAsync(0);

        var follower = new SilentFollower();
        var replication = log.ReadAsync(follower, 2, 12).AsTask();
        await follower.Started.WaitAsync(TimeSpan.FromSeconds(10));

        // Commit everything: the no-op state machine snapshots at 8, and compaction deletes the data pages below it.
        // One more entry makes the flusher run after the snapshot moved.
        await log.CommitAsync(12);
        await wal.WaitForApplyAsync(12);
        await log.AppendAsync(new LogEntryProducer<BinaryLogEntry>([new BinaryLogEntry { Term = 1, Content = new byte[] { 13 } }]), 13, skipCommitted: true);
        await log.CommitAsync(13);
        var firstPage = Path.Combine(directory, "data", "0");
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            while (File.Exists(firstPage))
            {
                Assert.False(deadline.IsCancellationRequested, "compaction did not delete the first data page while a replication read waited");
                await Task.Delay(10);
            }
        }

        using (var entries = await wal.ReadAsync(13, 13).AsTask().WaitAsync(TimeSpan.FromSeconds(10)))
            Assert.Single(entries);

        // The follower answers: the entries it was given still hold their bytes, though their pages are gone.
        follower.Answer();
        var seen = await replication.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(11, seen.Count);
        for (var i = 0; i < seen.Count; i++)
        {
            Assert.Equal(1, seen[i].Term);
            Assert.Equal(payloads[i + 1], seen[i].Payload);
        }

        Assert.Equal(1, wal.DetachedReads);
    }

    [Fact]
    public async Task AReplicationRead_CopiesAtMostItsByteLimit_AtLeastOneEntry_AndLeavesSnapshotsToDotNextsPath()
    {
        await using var wal = new DurableWriteAheadLog(Options, IStateMachine.CreateNoOp(4)) { MaxDetachedReadBytes = 50_000 };
        IAuditTrail<IRaftLogEntry> log = wal;
        var sizes = new[] { 20_000, 20_000, 20_000, 70_000, 10 };
        await log.AppendAsync(new LogEntryProducer<BinaryLogEntry>(sizes.Select((n, i) => new BinaryLogEntry { Term = 2, Content = Enumerable.Repeat((byte)(i + 1), n).ToArray() }).ToArray()), 1, skipCommitted: true);
        await log.CommitAsync(0);

        // Two entries fit in 50 kB, the third would not: the read returns two, and DotNext goes on from the third.
        var first = await log.ReadAsync(new SilentFollower(answered: true), 1, 5);
        Assert.Equal([20_000, 20_000], first.Select(e => e.Payload.Length));
        // An entry larger than the limit is sent alone.
        var large = await log.ReadAsync(new SilentFollower(answered: true), 4, 5);
        Assert.Equal([70_000], large.Select(e => e.Payload.Length));
        Assert.All(large[0].Payload, b => Assert.Equal(4, b));
        Assert.Equal(2, wal.DetachedReads);

        // Once entries are in the snapshot, a read from there starts with the snapshot, on DotNext's own path.
        await log.CommitAsync(5);
        await wal.WaitForApplyAsync(5);
        var fromSnapshot = await log.ReadAsync(new SilentFollower(answered: true), 1, 5);
        Assert.True(fromSnapshot[0].IsSnapshot);
        Assert.Equal(1, wal.LockedReads);
    }

    /// <summary>
    /// Before a snapshot transfer the leader asks the follower for its tip. A follower that was down when the ask began
    /// and came up during it got the whole history (seen on <c>make run</c> after a restart): a transfer whose follower
    /// could not be reached is now postponed to the next round, and after <see cref="DurableWriteAheadLog.MaxTransfersPostponed"/>
    /// in a row the whole history goes, so a follower whose internal listener stays unreachable still catches up.
    /// </summary>
    [Fact]
    public async Task ASnapshotTransfer_ToAFollowerThatCannotBeReached_IsPostponed_ABoundedNumberOfTimesInARow()
    {
        var answers = new Queue<FollowerTipAnswer>();
        var asked = 0;
        await using var wal = new DurableWriteAheadLog(Options, IStateMachine.CreateNoOp(4))
        {
            FollowerTip = (endPoint, _) =>
            {
                Assert.Equal(FollowerAt, endPoint);
                asked++;
                return ValueTask.FromResult(answers.Dequeue());
            },
        };
        IAuditTrail<IRaftLogEntry> log = wal;
        await log.AppendAsync(Entries(2, 6, 1), 1, skipCommitted: true);
        await log.CommitAsync(6);
        await wal.WaitForApplyAsync(6);

        // Unreachable every time: postponed MaxTransfersPostponed times in a row, then the whole history (no base).
        for (var i = 0; i < DurableWriteAheadLog.MaxTransfersPostponed; i++)
        {
            answers.Enqueue(FollowerTipAnswer.NotReached);
            await Assert.ThrowsAsync<DotNext.Net.Cluster.MemberUnavailableException>(() => log.ReadAsync(new SnapshotFollower(), 1, 6).AsTask());
        }

        Assert.Equal(DurableWriteAheadLog.MaxTransfersPostponed, wal.TransfersPostponed);
        answers.Enqueue(FollowerTipAnswer.NotReached);
        var whole = new SnapshotFollower();
        Assert.True((await log.ReadAsync(whole, 1, 6))[0].IsSnapshot);
        Assert.Null(whole.Base);

        // The count starts again after a transfer went: one more unreachable ask is postponed, and once the follower
        // answers, the transfer starts at its tip.
        answers.Enqueue(FollowerTipAnswer.NotReached);
        await Assert.ThrowsAsync<DotNext.Net.Cluster.MemberUnavailableException>(() => log.ReadAsync(new SnapshotFollower(), 1, 6).AsTask());
        var tip = new SnapshotBase(3, Sequencer.Core.Hashing.Hash32.Zero);
        answers.Enqueue(new FollowerTipAnswer(tip, Unreachable: false));
        var delta = new SnapshotFollower();
        Assert.True((await log.ReadAsync(delta, 1, 6))[0].IsSnapshot);
        Assert.Equal(tip, delta.Base);
        Assert.Equal(1, wal.TipsTold);

        // A follower that answers nothing useful (too late, or nonsense) is not postponed: the whole history goes.
        answers.Enqueue(FollowerTipAnswer.None);
        var silent = new SnapshotFollower();
        Assert.True((await log.ReadAsync(silent, 1, 6))[0].IsSnapshot);
        Assert.Null(silent.Base);
        Assert.Equal(DurableWriteAheadLog.MaxTransfersPostponed + 1, wal.TransfersPostponed);
        Assert.Equal(DurableWriteAheadLog.MaxTransfersPostponed + 4, asked);
        Assert.Empty(answers);
    }

    private static readonly System.Net.EndPoint FollowerAt = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 7203);

    /// <summary>
    /// A leader's consumer of a replication read to the follower at <see cref="FollowerAt"/>, which keeps its follower in a
    /// private field <c>member</c> as DotNext's replication process does; it records the snapshot base of its transfer.
    /// </summary>
    private sealed class SnapshotFollower : ILogEntryConsumer<IRaftLogEntry, IReadOnlyList<SeenEntry>>
    {
#pragma warning disable IDE0052, CS0414 // read by DurableWriteAheadLog through reflection, as DotNext's field is
        private readonly DotNext.Net.Cluster.IClusterMember member = new Member();
#pragma warning restore IDE0052, CS0414

        public SnapshotBase? Base { get; private set; }

        public async ValueTask<IReadOnlyList<SeenEntry>> ReadAsync<TEntry, TList>(TList entries, long? snapshotIndex, CancellationToken token)
            where TEntry : IRaftLogEntry
            where TList : IReadOnlyList<TEntry>
        {
            Base = SnapshotBase.Current;
            var seen = new List<SeenEntry>();
            foreach (var entry in entries)
                seen.Add(new SeenEntry(entry.Term, entry.IsSnapshot, entry.IsSnapshot ? [] : await entry.ToByteArrayAsync(token: token)));
            return seen;
        }

        private sealed class Member : DotNext.Net.Cluster.IClusterMember
        {
            public System.Net.EndPoint EndPoint => FollowerAt;

            public bool IsLeader => false;

            public bool IsRemote => true;

            public DotNext.Net.Cluster.ClusterMemberStatus Status => DotNext.Net.Cluster.ClusterMemberStatus.Available;

            public event Action<DotNext.Net.Cluster.ClusterMemberStatusChangedEventArgs>? MemberStatusChanged { add { } remove { } }

            public ValueTask<IReadOnlyDictionary<string, string>> GetMetadataAsync(bool refresh = false, CancellationToken token = default)
                => ValueTask.FromResult<IReadOnlyDictionary<string, string>>(new Dictionary<string, string>());

            public Task<bool> ResignAsync(CancellationToken token) => Task.FromResult(false);
        }
    }

    private sealed record SeenEntry(long Term, bool IsSnapshot, byte[] Payload);

    /// <summary>A leader's consumer of a replication read whose follower answers only when told to.</summary>
    private sealed class SilentFollower(bool answered = false) : ILogEntryConsumer<IRaftLogEntry, IReadOnlyList<SeenEntry>>
    {
        private readonly TaskCompletionSource started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource answer = NewAnswer(answered);

        public Task Started => started.Task;

        public void Answer() => answer.TrySetResult();

        public async ValueTask<IReadOnlyList<SeenEntry>> ReadAsync<TEntry, TList>(TList entries, long? snapshotIndex, CancellationToken token)
            where TEntry : IRaftLogEntry
            where TList : IReadOnlyList<TEntry>
        {
            started.TrySetResult();
            await answer.Task.WaitAsync(token);
            var seen = new List<SeenEntry>();
            foreach (var entry in entries)
                seen.Add(new SeenEntry(entry.Term, entry.IsSnapshot, entry.IsSnapshot ? [] : await entry.ToByteArrayAsync(token: token)));
            return seen;
        }

        private static TaskCompletionSource NewAnswer(bool answered)
        {
            var source = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (answered)
                source.SetResult();
            return source;
        }
    }

    [Fact]
    public async Task APointMovedOnAnIdleLog_IsCompacted_WhenTheFlusherIsWoken()
    {
        // DotNext compacts, and calls ReclaimGarbageAsync, only in its flusher's pass, which appends and commits start:
        // a snapshot point that moves once the log is idle waits for the next entry unless the flusher is woken.
        var machine = new MovablePointMachine();
        await using var wal = new DurableWriteAheadLog(Options, machine);
        IAuditTrail<IRaftLogEntry> follower = wal;
        await follower.AppendAsync(Entries(1, 10, 1), 1, skipCommitted: true);
        Assert.Equal(10, await follower.CommitAsync(10));
        await machine.WaitAppliedAsync(10).WaitAsync(TimeSpan.FromSeconds(10));

        machine.MovePoint(8);
        Assert.True(wal.WakeFlusher(), "DotNext's WriteAheadLog no longer has the private flushTrigger event this wakes");
        Assert.Equal(8, await machine.Reclaimed.Task.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    // A state machine whose snapshot point the test moves, and which reports the first compaction past 0.
    private sealed class MovablePointMachine : IStateMachine
    {
        private volatile ISnapshot? snapshot;
        private long applied;
        private readonly TaskCompletionSource allApplied = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long awaited = long.MaxValue;

        public TaskCompletionSource<long> Reclaimed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ISnapshot? Snapshot => snapshot;

        public void MovePoint(long index) => snapshot = new Point(index);

        public Task WaitAppliedAsync(long index)
        {
            Interlocked.Exchange(ref awaited, index);
            if (Interlocked.Read(ref applied) >= index)
                allApplied.TrySetResult();
            return allApplied.Task;
        }

        public ValueTask<long> ApplyAsync(LogEntry entry, CancellationToken token)
        {
            Interlocked.Exchange(ref applied, entry.Index);
            if (entry.Index >= Interlocked.Read(ref awaited))
                allApplied.TrySetResult();
            return ValueTask.FromResult(entry.Index);
        }

        public ValueTask ReclaimGarbageAsync(long watermark, CancellationToken token)
        {
            if (watermark > 0)
                Reclaimed.TrySetResult(watermark);
            return ValueTask.CompletedTask;
        }

        private sealed class Point(long index) : ISnapshot
        {
            public long Index => index;

            public long Term => 1;

            bool IDataTransferObject.IsReusable => true;

            long? IDataTransferObject.Length => 0;

            ValueTask IDataTransferObject.WriteToAsync<TWriter>(TWriter writer, CancellationToken token) => ValueTask.CompletedTask;
        }
    }

    public void Dispose()
    {
        if (Directory.Exists(directory))
            Directory.Delete(directory, recursive: true);
    }
}
