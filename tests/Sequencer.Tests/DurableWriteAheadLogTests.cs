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

    public void Dispose()
    {
        if (Directory.Exists(directory))
            Directory.Delete(directory, recursive: true);
    }
}
