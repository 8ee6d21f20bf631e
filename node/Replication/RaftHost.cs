using DotNext.Net.Cluster;
using System.Net;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.Membership;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Node.Configuration;
using Sequencer.Node.Storage;
using Sequencer.Raft;
using Sequencer.Signing;

namespace Sequencer.Node.Replication;

/// <summary>The leader's view of the replicated log: the seam the submit path uses, faked in tests.</summary>
public interface ILeaderLog
{
    /// <summary>True while this node is the leader.</summary>
    bool IsLeader { get; }

    /// <summary>Canceled when this node stops being the leader; a fresh token each term.</summary>
    CancellationToken LeadershipToken { get; }

    /// <summary>The current Raft term.</summary>
    long Term { get; }

    /// <summary>The last committed Raft index.</summary>
    long CommitIndex { get; }

    /// <summary>The last Raft index this node has applied (entries without payload, a new leader's no-op, included; it moves per applier pass, not per entry).</summary>
    long AppliedIndex { get; }

    /// <summary>
    /// Appends an entry and returns once it is committed and applied on this node.
    /// </summary>
    /// <exception cref="NotLeaderException">This node is not the leader; the entry may still commit later.</exception>
    /// <exception cref="OperationCanceledException">Canceled; the entry may still commit later.</exception>
    ValueTask ReplicateAsync(ReadOnlyMemory<byte> payload, object? context, CancellationToken token);

    /// <summary>Raised when the known leader changes (including to none).</summary>
    event Action? LeaderChanged;

    /// <summary>On the leader: the followers should learn the commit index soon (a signer is about to be asked about an applied head).</summary>
    void FollowersMustApply();
}

/// <summary>
/// Owns the DotNext Raft node: the TCP transport, the durable WAL, the state machine and the applied state.
/// </summary>
public sealed partial class RaftHost : ILeaderLog, IAsyncDisposable
{
    private readonly NodeOptions options;
    private readonly ILogger logger;
    private readonly LiteDbBatchStore store;
    private readonly DurableWriteAheadLog wal;
    private readonly FollowerTips tips;
    private readonly RaftCluster cluster;
    private readonly Dictionary<IPEndPoint, MemberOptions> membersByEndPoint;
    private int started;

    /// <summary>Opens the store and the WAL and builds the Raft node; <see cref="StartAsync"/> joins the cluster.</summary>
    /// <param name="identity">The consortium identities: with them the Raft port is mutual TLS and accepts members only.</param>
    /// <param name="dealerKey">The first key epoch of this node's dealer key files, or null: the only KeyEpoch entry it accepts (see <see cref="DkgPolicy.DealerKey"/>).</param>
    public RaftHost(NodeOptions options, TimeProvider time, ILoggerFactory loggerFactory, BackgroundLoops loops, Security.ClusterIdentity? identity = null,
        Sequencer.Core.Encoding.KeyEpochCommand? dealerKey = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        this.options = options;
        this.time = time;
        followerNudge = new FollowerNudge(time, TimeSpan.FromMilliseconds(options.Limits.FollowerNudgeDelayMs), TimeSpan.FromMilliseconds(options.Limits.MaxRiderWaitMs), NudgeFollowers);
        leaderLostAt = time.GetTimestamp();
        // Member status lines go through the throttle too: a flapping link must not flood the log.
        logger = new Telemetry.ThrottledLoggerFactory(loggerFactory, time).CreateLogger<RaftHost>();

        membersByEndPoint = [];
        foreach (var member in options.Members)
        {
            // Keyed as a connection reads its peer's address (ClusterIdentity.RemoteEndPoint): IPv4-mapped as IPv4.
            var endPoint = NodeOptions.ParseEndPoint(member.Raft);
            membersByEndPoint[endPoint.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(endPoint.Address.MapToIPv4(), endPoint.Port) : endPoint] = member;
        }

        var dataDir = Directory.CreateDirectory(options.DataDir);
        store = new LiteDbBatchStore(Path.Combine(dataDir.FullName, "store.db"));
        if (store.RebuiltIndexTxs > 0)
            LogTxIndexRebuilt(logger, store.RebuiltIndexTxs);
        State = new AppliedState(store, new ChainParameters(options.ChainId, 0), options.Limits,
            new WalRetention(options.WalRetainedEntries, options.WalRetainedBytes), time, loggerFactory.CreateLogger<AppliedState>(), loops,
            new DkgPolicy(options.Members.Count, options.DkgThreshold, identity?.Members.ToDictionary(m => m.Key, m => m.Value.PublicKey.ExportSubjectPublicKeyInfo()))
            {
                DealerKey = dealerKey,
            },
            (mode, chainId) => mode == Sequencer.Core.Validation.ValidationMode.Ethereum ? new Sequencer.Ethereum.EthereumTxRules(chainId) : null);
        var stateMachine = new SequencerStateMachine(State, dataDir.CreateSubdirectory("scratch"));
        var walDir = Path.Combine(dataDir.FullName, "wal");
        var chunkBytes = WalChunkSize.Resolve(walDir, options.WalChunkBytes);
        if (chunkBytes != options.WalChunkBytes)
            LogWalChunkKept(logger, walDir, chunkBytes, options.WalChunkBytes);
        WalChunkSize.Record(walDir, chunkBytes);
        tips = new FollowerTips(MemberAt, identity);
        wal = new DurableWriteAheadLog(new WriteAheadLog.Options
        {
            Location = walDir,
            ChunkSize = chunkBytes,
            HashAlgorithm = WriteAheadLog.IntegrityHashAlgorithm.XxHash64,
            // Private buffers written with pwrite, not memory-mapped chunks: on a full disk a write through a mapping
            // kills the process with SIGBUS and no message, while pwrite fails with ENOSPC and the node stops cleanly.
            // DotNext keeps every chunk from the compaction point to the tail in process memory; what bounds that memory
            // is the retention (WalRetainedBytes: the snapshot point, and so compaction, trails the store by at most that
            // many bytes) and a chunk size that lets released chunks leave memory (NodeOptions.WalChunkBytes).
            MemoryManagement = WriteAheadLog.MemoryManagementStrategy.PrivateMemory,
        }, stateMachine)
        {
            FollowerTip = tips.AskAsync,
            TransferFence = State.Transfers,
        };

        var advertised = NodeOptions.ParseEndPoint(options.Raft);
        var listen = options.RaftListen is null ? advertised : NodeOptions.ParseEndPoint(options.RaftListen);

        var configuration = new RaftCluster.TcpConfiguration(listen)
        {
            PublicEndPoint = advertised,
            LowerElectionTimeout = options.RaftTiming.ElectionTimeoutLowerMs,
            UpperElectionTimeout = options.RaftTiming.ElectionTimeoutUpperMs,
            RequestTimeout = TimeSpan.FromMilliseconds(options.RaftTiming.RequestTimeoutMs ?? options.RaftTiming.ElectionTimeoutLowerMs),
            HeartbeatThreshold = options.RaftTiming.HeartbeatThreshold,
            ColdStart = false,
            TransmissionBlockSize = 65536,
            // Every replicated entry and every forced round queues one barrier per member; DotNext counts a member whose
            // queue is full as unavailable for that round ("too far behind the leader"). At the default of 16, a follower
            // catching up after a restart (one long AppendEntries) overflowed its queue under load while the other
            // follower was paused, and the leader lost its quorum and stepped down (signing soak seed 332048342). The
            // barriers are a few bytes each; the bound stays.
            MaxReplicationLag = 128,
            // DotNext logs every failed request to a down member with a stack trace (hundreds a second): repeats are
            // written at most every few seconds, network errors as one line. Member status changes are logged below.
            LoggerFactory = new Telemetry.ThrottledLoggerFactory(loggerFactory, time),
            ConfigurationStorage = null!,
            SslOptions = identity?.RaftSslOptions(endPoint => membersByEndPoint.TryGetValue(endPoint, out var member) ? member.Id : null),
        };
        var builder = ((InMemoryClusterConfigurationStorage<EndPoint>)configuration.ConfigurationStorage).CreateInitialConfigurationBuilder();
        foreach (var endPoint in membersByEndPoint.Keys)
            builder.Add(endPoint);
        builder.Build();

        cluster = new RaftCluster(configuration)
        {
            AuditTrail = wal,
            // Never unhealthy: it only tells the applied state when each follower last answered (see ReplicationWatch).
            FailureDetectorFactory = (_, member) => new ReplicationWatch.Detector(State.Replication, member.EndPoint.ToString() ?? "?"),
        };
        cluster.LeaderChanged += OnLeaderChanged;
        State.FreshSnapshotNeeded += OnFreshSnapshotNeeded;
        State.SnapshotPointMoved += OnSnapshotPointMoved;
    }

    /// <summary>The applied state.</summary>
    public AppliedState State { get; }

    /// <inheritdoc/>
    public event Action? LeaderChanged;

    /// <inheritdoc/>
    public bool IsLeader => Volatile.Read(ref started) == 1 && !cluster.LeadershipToken.IsCancellationRequested;

    /// <inheritdoc/>
    public CancellationToken LeadershipToken => cluster.LeadershipToken;

    /// <inheritdoc/>
    public long Term => ((IPersistentState)wal).Term;

    /// <summary>The last committed Raft index.</summary>
    public long CommitIndex => wal.LastCommittedEntryIndex;

    /// <inheritdoc/>
    public long AppliedIndex => wal.LastAppliedIndex;

    /// <summary>The last Raft index in the local log.</summary>
    public long LastLogIndex => wal.LastEntryIndex;

    /// <summary>The number of follower appends made durable before they were acknowledged.</summary>
    public long DurableAppends => wal.DurableAppends;

    /// <summary>Follower commits that applied durable entries before the flush of the new ones.</summary>
    public long EarlyFollowerCommits => wal.EarlyCommits;

    /// <summary>Replication reads (as leader) that sent copies of the entries and held no lock while the follower answered.</summary>
    public long DetachedReplicationReads => wal.DetachedReads;

    /// <summary>Replication reads (as leader) made under the log's read lock: snapshot transfers and the like.</summary>
    public long LockedReplicationReads => wal.LockedReads;

    /// <summary>Snapshot transfers (as leader) for which the follower told its tip.</summary>
    public long SnapshotTipsTold => wal.TipsTold;

    /// <summary>Snapshot transfers (as leader) postponed to the next round because the follower could not be reached to ask its tip.</summary>
    public long SnapshotTransfersPostponed => wal.TransfersPostponed;

    /// <summary>Commit indexes sent with session requests that committed entries on this follower.</summary>
    public long SessionCommitHintsApplied => wal.LeaderSaidCommits;

    /// <summary>The memory the store's tx index keeps (its filters and fences: about 1.35 bytes per stored tx).</summary>
    public long StoredTxIndexBytes => store.TxIndexMemoryBytes;

    /// <summary>The highest height whose tx data retention pruned (0: none).</summary>
    public ulong PrunedHeight => store.PrunedHeight;

    /// <summary>Prunes the tx data of stored heights up to <paramref name="throughHeight"/> (at most <paramref name="maxBatches"/> of them).</summary>
    /// <exception cref="IOException">The store failed.</exception>
    public ulong Prune(ulong throughHeight, int maxBatches) => store.Prune(throughHeight, maxBatches);

    /// <summary>The store's tx index run files.</summary>
    public int StoredTxIndexRuns => store.TxIndexRuns;

    /// <summary>This node's member entry.</summary>
    public MemberOptions Self => options.Members.First(m => m.Id == options.NodeId);

    /// <summary>The leader's member entry, or null while no leader is known.</summary>
    public MemberOptions? Leader
    {
        get
        {
            if (IsLeader)
                return Self;
            return MemberAt(cluster.Leader?.EndPoint);
        }
    }

    /// <summary>True once the consensus is reached in the current term (a leader is known).</summary>
    public bool HasLeader => Leader is not null;

    /// <summary>How long this node has known no leader (zero while it knows one).</summary>
    public TimeSpan LeaderlessFor => HasLeader ? TimeSpan.Zero : time.GetElapsedTime(Interlocked.Read(ref leaderLostAt));

    /// <summary>Joins the cluster: replays the WAL into the state, then starts elections and the transport.</summary>
    public async Task StartAsync(CancellationToken token)
    {
        await cluster.StartAsync(token).ConfigureAwait(false);
        foreach (var member in cluster.Members.Where(m => m.IsRemote))
            member.MemberStatusChanged += OnMemberStatusChanged;
        Volatile.Write(ref started, 1);
        LogStarted(logger, options.NodeId, options.Raft, State.AppliedIndex, State.LastHeader?.Height ?? 0);
    }

    /// <inheritdoc/>
    public async ValueTask ReplicateAsync(ReadOnlyMemory<byte> payload, object? context, CancellationToken token)
    {
        followerNudge.Proposed();
        await cluster.ReplicateAsync(payload, context, token).ConfigureAwait(false);
    }

    /// <summary>
    /// On a follower: commits up to <paramref name="commitIndex"/>, which <paramref name="leaderId"/>, the leader this
    /// node knows in <paramref name="term"/>, sent with a session request (<see cref="DurableWriteAheadLog.CommitAsLeaderSaysAsync"/>).
    /// Does nothing on the leader, in another term, or for another sender.
    /// </summary>
    /// <returns>How many entries were committed.</returns>
    public async ValueTask<long> CommitAsLeaderSaysAsync(int leaderId, long term, long commitIndex, CancellationToken token)
    {
        if (IsLeader || term != Term || Leader?.Id != leaderId)
            return 0L;
        try
        {
            return await wal.CommitAsLeaderSaysAsync(term, commitIndex, token).ConfigureAwait(false);
        }
        catch (ArgumentOutOfRangeException)
        {
            // The log was cut back under the read (a new leader's entries replaced the tail): nothing to commit.
            return 0L;
        }
    }

    /// <summary>
    /// On the leader: an applied entry needs the followers to apply it soon (they serve a signature it carries, or sign a
    /// head it starts). The next round of an entry this node proposes soon (<see cref="FollowerNudge"/>'s wait, from
    /// <see cref="SequencerLimits.FollowerNudgeDelayMs"/> to <see cref="SequencerLimits.MaxRiderWaitMs"/> as the entries
    /// flow) tells them the commit index; if none comes, the followers are nudged then rather than with the next heartbeat
    /// (<see cref="FollowerNudge"/>).
    /// </summary>
    public void FollowersMustApply()
    {
        if (IsLeader)
            followerNudge.Request();
    }

    /// <summary>
    /// The leader's read index: its commit index once it has committed an entry of its own term (DotNext's write
    /// barrier, the no-op a new leader appends), so that it covers everything any earlier leader acknowledged. Null
    /// when this node is not the leader or does not settle before <paramref name="token"/> is canceled.
    /// </summary>
    public async Task<long?> ReadIndexAsync(CancellationToken token)
    {
        if (cluster.Leader is not { IsRemote: false })
            return null;
        try
        {
            // On the leader, a weak barrier waits until the write barrier of its term is committed.
            await cluster.ApplyReadBarrierAsync(ReadBarrierType.Weak, token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or QuorumUnreachableException or NotLeaderException or InvalidOperationException or IOException)
        {
            return null;
        }

        // LeadershipToken is live only once the write barrier is committed; check it after reading the index.
        var index = CommitIndex;
        return IsLeader ? index : null;
    }

    /// <summary>Waits until this node has applied <paramref name="index"/>; false when canceled first.</summary>
    public async Task<bool> WaitForAppliedAsync(long index, CancellationToken token)
    {
        try
        {
            await wal.WaitForApplyAsync(index, token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private long lastEmptyEntryAt;

    // The point moved: DotNext compacts up to it in its flusher's next pass, which an idle node would not make.
    private void OnSnapshotPointMoved() => wal.WakeFlusher();

    /// <summary>
    /// A snapshot is being sent again and its point must move to a newer entry (see <see cref="SnapshotTransfers"/>):
    /// on an idle leader nothing new would come, so append a mark (at most one a second). It carries a payload: an
    /// empty entry never reaches the state machine and so never became a point to move to, and an idle leader resent
    /// the same snapshot to a follower that had installed it, which refused it, for as long as the cluster stayed idle.
    /// </summary>
    private void OnFreshSnapshotNeeded()
    {
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref lastEmptyEntryAt);
        if (!IsLeader || now - last < 1000 || Interlocked.CompareExchange(ref lastEmptyEntryAt, now, last) != last)
            return;
        _ = Task.Run(async () =>
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                var mark = LogCommandCodec.Encode(new SnapshotMarkCommand { AtMs = (ulong)time.GetUtcNow().ToUnixTimeMilliseconds() });
                await cluster.ReplicateAsync(mark, null, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or NotLeaderException or InvalidOperationException or IOException or QuorumUnreachableException)
            {
                // Leadership moved or the cluster is busy: the next resend asks again.
            }
        });
    }

    private int nudging;

    /// <summary>
    /// On the leader, sends the followers the new commit index now instead of with the next heartbeat, so that they
    /// apply (and sign) a committed batch without waiting up to a heartbeat period. Coalesced: at most one forced
    /// round runs, and a request during it runs one more.
    /// </summary>
    public void NudgeFollowers()
    {
        if (!IsLeader || Interlocked.Increment(ref nudging) != 1)
            return;
        _ = Task.Run(async () =>
        {
            do
            {
                Volatile.Write(ref nudging, 1);
                try
                {
                    using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(options.RaftTiming.ElectionTimeoutLowerMs));
                    await cluster.ForceReplicationAsync(timeout.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException or NotLeaderException or InvalidOperationException or IOException)
                {
                }
            }
            while (Interlocked.CompareExchange(ref nudging, 0, 1) != 1 && IsLeader);
            Volatile.Write(ref nudging, 0);
        });
    }

    /// <summary>Fails when the WAL's background applier or flusher has died; the node must then stop.</summary>
    public ValueTask WaitForApplyAsync(long index, CancellationToken token) => wal.WaitForApplyAsync(index, token);

    private CancellationTokenSource leaderEpoch = new();
    private readonly TimeProvider time;
    private readonly FollowerNudge followerNudge;
    private long leaderLostAt;

    /// <summary>Canceled at the next leader change: work aimed at the current leader (a forwarded submit) stops then.</summary>
    public CancellationToken LeaderEpoch => Volatile.Read(ref leaderEpoch).Token;

    private void OnLeaderChanged(RaftCluster<RaftClusterMember> sender, RaftClusterMember? leader)
    {
        var previous = Interlocked.Exchange(ref leaderEpoch, new CancellationTokenSource());
        previous.Cancel();
        previous.Dispose();
        var member = MemberAt(leader?.EndPoint);
        if (leader is null)
            Interlocked.Exchange(ref leaderLostAt, time.GetTimestamp());
        if (leader is not { IsRemote: false })
            State.Replication.Reset(); // a follower has no replication of its own; the next term's leader starts afresh
        LogLeaderChanged(logger, member?.Id ?? 0, Term);
        LeaderChanged?.Invoke();
    }

    // The configured member at a Raft endpoint as DotNext names it, or null.
    private MemberOptions? MemberAt(EndPoint? endPoint)
        => endPoint is IPEndPoint ip && membersByEndPoint.TryGetValue(ip, out var member) ? member : null;

    private void OnMemberStatusChanged(ClusterMemberStatusChangedEventArgs<RaftClusterMember> change)
    {
        if (change.NewStatus == change.PreviousStatus || change.NewStatus == ClusterMemberStatus.Unknown)
            return;
        var id = MemberAt(change.Member.EndPoint)?.Id ?? 0;
        if (change.NewStatus == ClusterMemberStatus.Unavailable)
            LogMemberUnavailable(logger, id, change.Member.EndPoint);
        else
            LogMemberAvailable(logger, id, change.Member.EndPoint);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref started, 2) == 1)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await cluster.StopAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        cluster.LeaderChanged -= OnLeaderChanged;
        State.FreshSnapshotNeeded -= OnFreshSnapshotNeeded;
        State.SnapshotPointMoved -= OnSnapshotPointMoved;
        foreach (var member in cluster.Members.Where(m => m.IsRemote))
            member.MemberStatusChanged -= OnMemberStatusChanged;
        await wal.DisposeAsync().ConfigureAwait(false);
        tips.Dispose();
        followerNudge.Dispose();
        cluster.Dispose();
        await State.DisposeAsync().ConfigureAwait(false);
        var durable = State.Durable;
        LogStopped(logger, options.NodeId, State.AppliedIndex, durable.AppliedIndex, durable.LastHeight);
        store.Dispose();
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Node {NodeId} joined the cluster at {Raft}: applied index {AppliedIndex}, height {Height}")]
    private static partial void LogStarted(ILogger logger, int nodeId, string raft, long appliedIndex, ulong height);

    [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "Member {MemberId} ({EndPoint}) is unavailable")]
    private static partial void LogMemberUnavailable(ILogger logger, int memberId, EndPoint endPoint);

    [LoggerMessage(EventId = 4, Level = LogLevel.Information, Message = "Member {MemberId} ({EndPoint}) is available again")]
    private static partial void LogMemberAvailable(ILogger logger, int memberId, EndPoint endPoint);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Node {NodeId} stopped: applied index {AppliedIndex}, stored index {StoredIndex}, stored height {StoredHeight}")]
    private static partial void LogStopped(ILogger logger, int nodeId, long appliedIndex, long storedIndex, ulong storedHeight);

    [LoggerMessage(EventId = 7, Level = LogLevel.Information, Message = "The store's tx index was rebuilt from the stored batches: {TxCount} txs")]
    private static partial void LogTxIndexRebuilt(ILogger logger, long txCount);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "The WAL at {Path} was created with {ExistingBytes}-byte chunks and keeps them (configured: {ConfiguredBytes}); DotNext cannot change the chunk size of an existing log")]
    private static partial void LogWalChunkKept(ILogger logger, string path, int existingBytes, int configuredBytes);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Leader changed to node {LeaderId} in term {Term} (0: none)")]
    private static partial void LogLeaderChanged(ILogger logger, int leaderId, long term);
}
