using System.Numerics;
using Microsoft.Extensions.Logging;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Ethereum;
using Sequencer.L1;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;

namespace Sequencer.Node.L1;

/// <summary>A head the inbox contract accepted, as this node saw it on the L1.</summary>
/// <param name="Height">The head's height.</param>
/// <param name="Commitment">Its commitment (this chain's own: checked).</param>
/// <param name="TxHash">The L1 transaction.</param>
/// <param name="Block">The L1 block.</param>
/// <param name="BlockHash">That block's hash (a reorg changes it).</param>
/// <param name="SeenAtMs">When this node first saw it, in Unix ms (the <c>posted</c> time).</param>
public sealed record L1Post(ulong Height, Hash32 Commitment, byte[] TxHash, ulong Block, byte[] BlockHash, ulong SeenAtMs)
{
    /// <summary>When this node first saw its block final, in Unix ms, or 0.</summary>
    public ulong FinalizedAtMs { get; set; }
}

/// <summary>What <c>GET /v1/l1</c> reports.</summary>
/// <param name="Rpc">The endpoint.</param>
/// <param name="ChainId">The L1's chain id, once read.</param>
/// <param name="Contract">The inbox contract.</param>
/// <param name="PostedHeight">The highest head this node saw accepted by the contract.</param>
/// <param name="FinalizedHeight">The highest of those in a final L1 block.</param>
/// <param name="LatestBlock">The L1's latest block.</param>
/// <param name="FinalizedBlock">The L1's final block (the finalized tag, or latest minus the configured depth).</param>
/// <param name="Reorgs">L1 reorgs that dropped blocks this node had scanned.</param>
/// <param name="Posts">Posts this node (as leader) made, and their gas.</param>
/// <param name="LastError">The last problem talking to the L1, or null.</param>
/// <param name="Posting">Whether this node posts (it leads and has a key).</param>
public sealed record L1Status(string Rpc, ulong? ChainId, string Contract, ulong PostedHeight, ulong FinalizedHeight, ulong LatestBlock, ulong FinalizedBlock,
    long Reorgs, long Posts, string? LastError, bool Posting);

/// <summary>
/// The node's L1 side (DESIGN section 5). Every node watches the inbox contract's <c>HeadPosted</c> events, checks
/// each posted head against its own chain (INV-L1PREFIX: the contract holds only this chain's signed heads, in
/// order), follows L1 reorgs (a post whose block changed is dropped until it reappears), and so serves the
/// <c>posted</c> and <c>finalized</c> levels from what it saw on the L1 itself. The leader, with a funded key, also
/// posts: the newest signed head, at most once per <see cref="L1Options.PostEveryBlocks"/> blocks, with the link
/// proof from the contract's last head; it bumps the fees of a post that stays unmined, records each accepted post
/// in the log (<see cref="L1ProgressCommand"/>), and through an L1 outage retries with backoff while ordering and
/// signing go on. Posting resumes from the contract's head, so a new leader neither posts twice nor leaves a gap.
/// </summary>
public sealed partial class L1Service : IAsyncDisposable
{
    /// <summary>The most posts kept in memory; older, final ones are summarized by the height they reach.</summary>
    public const int MaxPosts = 100_000;

    private const int LogChunkBlocks = 2_000;
    private static readonly TimeSpan StuckAfter = TimeSpan.FromMinutes(3);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(5);

    private readonly L1Options options;
    private readonly RaftHost raft;
    private readonly NodeMetrics metrics;
    private readonly TimeProvider time;
    private readonly ILogger logger;
    private readonly EthRpcClient rpc;
    private readonly Address contract;
    private readonly InboxReader reader;
    private readonly EthKey? key;
    private readonly CancellationTokenSource stopping = new();
    private readonly Lock gate = new();
    private readonly SortedList<ulong, L1Post> posts = [];
    private BackgroundLoop? loop;

    // Watcher state (under gate).
    private ulong? chainId;
    private bool deployed;
    private ulong latestBlock;
    private ulong finalizedBlock;
    private ulong scannedTo;
    private byte[]? scannedHash;
    private ulong trimmedThrough;
    private long reorgs;
    private string? lastError;

    // Poster state (the loop only).
    private Pending? pending;
    private ulong lastPostBlock;
    private long postCount;
    private string? lastReported;

    /// <summary>Builds the service; <see cref="Start"/> runs it.</summary>
    public L1Service(L1Options options, RaftHost raft, NodeMetrics metrics, TimeProvider time, ILogger<L1Service> logger, EthKey? key)
    {
        ArgumentNullException.ThrowIfNull(options);
        this.options = options;
        this.raft = raft;
        this.metrics = metrics;
        this.time = time;
        this.logger = logger;
        this.key = key;
        rpc = new EthRpcClient(new Uri(options.Rpc));
        contract = Address.Parse(options.Contract);
        reader = new InboxReader(rpc, contract);
    }

    /// <summary>Loads the poster's key from <see cref="L1Options.KeyFile"/> or <c>SEQUENCER_L1_KEY</c>; null when neither is given.</summary>
    /// <exception cref="InvalidDataException">The key file is readable by others or holds no key.</exception>
    public static EthKey? LoadKey(L1Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        string? text = null;
        if (options.KeyFile is { } path)
        {
            if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(path) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
                throw new InvalidDataException($"the L1 key file {path} is readable or writable by others: chmod 600 it");
            text = File.ReadAllText(path);
        }
        else if (Environment.GetEnvironmentVariable("SEQUENCER_L1_KEY") is { Length: > 0 } variable)
        {
            text = variable;
        }

        if (text is null)
            return null;
        try
        {
            return EthKey.FromHex(text.Trim());
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            // The message never quotes the key.
            throw new InvalidDataException("the L1 key is not a 0x-prefixed 32-byte hex private key");
        }
    }

    /// <summary>The poster's address, or null when this node only watches.</summary>
    public Address? PosterAddress => key?.Address;

    /// <summary>What the node sees on the L1 now.</summary>
    public L1Status Status
    {
        get
        {
            lock (gate)
            {
                var posted = posts.Count > 0 ? posts.Keys[^1] : trimmedThrough;
                return new L1Status(options.Rpc, chainId, contract.ToString(), posted, FinalizedHeightLocked(), latestBlock, finalizedBlock,
                    reorgs, Interlocked.Read(ref postCount), lastError, key is not null && raft.IsLeader);
            }
        }
    }

    /// <summary>The lowest post that covers <paramref name="height"/> and whether it is final; (null, true) for a height below the posts kept in memory.</summary>
    public (L1Post? Post, bool Finalized) Covering(ulong height)
    {
        lock (gate)
        {
            if (height <= trimmedThrough)
                return (null, true);
            // Posts are few next to heights; the lowest key at or above the height.
            var keys = posts.Keys;
            int low = 0, high = keys.Count - 1, found = -1;
            while (low <= high)
            {
                var middle = (low + high) / 2;
                if (keys[middle] >= height)
                {
                    found = middle;
                    high = middle - 1;
                }
                else
                {
                    low = middle + 1;
                }
            }

            if (found < 0)
                return (null, false);
            var post = posts.Values[found];
            return (post, post.Block <= finalizedBlock && post.FinalizedAtMs > 0);
        }
    }

    /// <summary>Starts watching (and, on the leader with a key, posting).</summary>
    public void Start(BackgroundLoops loops)
    {
        ArgumentNullException.ThrowIfNull(loops);
        loop = loops.Start("the L1 watcher and poster", StuckAfter, LoopAsync, stopping.Token);
        LogStarted(logger, options.Rpc, contract.ToString(), key?.Address.ToString() ?? "none (this node only watches)");
    }

    private async Task LoopAsync(BackgroundLoop self, CancellationToken token)
    {
        var backoff = TimeSpan.FromMilliseconds(options.PollMs);
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            try
            {
                await WatchAsync(token).ConfigureAwait(false);
                await PostAsync(token).ConfigureAwait(false);
                lock (gate)
                    lastError = null;
                backoff = TimeSpan.FromMilliseconds(options.PollMs);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is HttpRequestException or EthRpcException or FormatException or TimeoutException or TaskCanceledException or InvalidOperationException)
            {
                // An L1 outage or a bad answer: ordering and signing go on; this loop retries with a growing backoff.
                var message = $"{e.GetType().Name}: {e.Message}";
                lock (gate)
                    lastError = message;
                Report(message);
                backoff = TimeSpan.FromMilliseconds(Math.Min(MaxBackoff.TotalMilliseconds, backoff.TotalMilliseconds * 2));
            }

            await Task.Delay(backoff, time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private ulong NowMs => (ulong)time.GetUtcNow().ToUnixTimeMilliseconds();

    // Reads the L1: new HeadPosted events, reorgs of blocks already scanned, and the final block.
    private async Task WatchAsync(CancellationToken token)
    {
        chainId ??= await rpc.ChainIdAsync(token).ConfigureAwait(false);
        if (!deployed)
        {
            // Until the contract exists (the devnet deploys it once the key epoch is in force) there is nothing to do.
            if ((await rpc.GetCodeAsync(contract, token).ConfigureAwait(false)).Length == 0)
                throw new InvalidOperationException($"no contract is deployed at {contract} yet");
            deployed = true;
        }

        var latest = await rpc.BlockNumberAsync(token).ConfigureAwait(false);
        var final = options.FinalityDepth is { } depth
            ? (latest > (ulong)depth ? latest - (ulong)depth : 0)
            : (await rpc.GetBlockAsync("finalized", token).ConfigureAwait(false))?.Number ?? 0;

        // A reorg: the last scanned block, or the block of a post not yet final, has another hash now.
        ulong? rollbackTo = null;
        if (scannedTo > 0 && scannedTo <= latest && (await rpc.GetBlockAsync(scannedTo, token).ConfigureAwait(false))?.Hash is { } hash && !hash.AsSpan().SequenceEqual(scannedHash))
            rollbackTo = scannedTo;
        if (scannedTo > latest)
            rollbackTo = latest;
        if (rollbackTo is not null)
        {
            // Every post came from a block at or below the last scanned one, whose hash commits to all of them: while it
            // stands, no post's block changed. When it changed, the changed blocks are a suffix of the chain, so a binary
            // search over the open posts' blocks finds the lowest changed one in O(log n) requests (one request per open
            // post on every poll would grow with a finality stall).
            List<(ulong Block, byte[] Hash)> open;
            lock (gate)
                open = [.. posts.Values.Where(p => p.Block > finalizedBlock).DistinctBy(p => p.Block).OrderBy(p => p.Block).Select(p => (p.Block, p.BlockHash))];
            var (low, high) = (0, open.Count);
            while (low < high)
            {
                var middle = low + ((high - low) / 2);
                var block = await rpc.GetBlockAsync(open[middle].Block, token).ConfigureAwait(false);
                if (block is null || !block.Hash.AsSpan().SequenceEqual(open[middle].Hash))
                    high = middle;
                else
                    low = middle + 1;
            }

            if (low < open.Count)
                rollbackTo = Math.Min(rollbackTo.Value, open[low].Block);
        }

        if (rollbackTo is { } changed)
        {
            // Everything from the first changed block is scanned again: posts the reorg dropped are forgotten until
            // they reappear (the leader posts them again when the contract's head went back).
            var from = Math.Max(Math.Min(changed, finalizedBlock + 1), options.StartBlock);
            int dropped;
            lock (gate)
            {
                var gone = posts.Values.Where(p => p.Block >= from).Select(p => p.Height).ToList();
                foreach (var height in gone)
                    posts.Remove(height);
                dropped = gone.Count;
                reorgs++;
            }

            scannedTo = from > 0 ? from - 1 : 0;
            scannedHash = scannedTo > 0 ? (await rpc.GetBlockAsync(scannedTo, token).ConfigureAwait(false))?.Hash : null;
            metrics.L1Reorgs.Add(1);
            LogReorg(logger, changed, from, dropped);
        }

        var next = scannedTo == 0 ? options.StartBlock : scannedTo + 1;
        while (next <= latest && !token.IsCancellationRequested)
        {
            var end = Math.Min(latest, next + LogChunkBlocks - 1);
            var endBlock = await rpc.GetBlockAsync(end, token).ConfigureAwait(false) ?? throw new InvalidOperationException($"the L1 has no block {end}");
            var events = await reader.HeadsPostedAsync(next, end, token).ConfigureAwait(false);
            foreach (var posted in events.Where(e => !e.Log.Removed))
            {
                if (!Accept(posted))
                {
                    // This node has not applied that height yet: scan from that block again later.
                    end = posted.Log.BlockNumber - 1;
                    endBlock = end >= next ? await rpc.GetBlockAsync(end, token).ConfigureAwait(false) : null;
                    break;
                }
            }

            if (end < next)
                break;
            scannedTo = end;
            scannedHash = endBlock?.Hash;
            next = end + 1;
        }

        lock (gate)
        {
            latestBlock = latest;
            finalizedBlock = final;
            var now = NowMs;
            foreach (var post in posts.Values)
            {
                if (post.Block > final)
                    break;
                if (post.FinalizedAtMs == 0)
                {
                    post.FinalizedAtMs = now;
                    if (now >= post.SeenAtMs)
                        metrics.PostedToFinalized.Record(now - post.SeenAtMs);
                }
            }

            while (posts.Count > MaxPosts && posts.Values[0].FinalizedAtMs > 0)
            {
                trimmedThrough = posts.Keys[0];
                posts.RemoveAt(0);
            }
        }
    }

    // A HeadPosted event: kept when it is this chain's head at that height; false when this node cannot tell yet.
    private bool Accept(HeadPostedEvent posted)
    {
        var own = raft.State.GetBatch(posted.Height);
        if (own is null)
            return false;
        if (own.Header.Commitment != posted.Commitment)
        {
            // INV-L1PREFIX: the contract holds a head this chain never had. Nothing of it is served as posted.
            LogForeignHead(logger, posted.Height, posted.Commitment.ToString(), own.Header.Commitment.ToString(), EthHex.Bytes(posted.Log.TransactionHash));
            lock (gate)
                lastError = $"INV-L1PREFIX: the contract's head at height {posted.Height} is not this chain's";
            return true;
        }

        lock (gate)
        {
            if (!posts.ContainsKey(posted.Height))
                posts[posted.Height] = new L1Post(posted.Height, posted.Commitment, posted.Log.TransactionHash, posted.Log.BlockNumber, posted.Log.BlockHash, NowMs);
        }

        return true;
    }

    private ulong FinalizedHeightLocked()
    {
        var height = trimmedThrough;
        foreach (var post in posts.Values)
        {
            if (post.Block > finalizedBlock || post.FinalizedAtMs == 0)
                break;
            height = post.Height;
        }

        return height;
    }

    // The leader posts the newest signed head (see the class remarks).
    private async Task PostAsync(CancellationToken token)
    {
        if (key is null || !raft.IsLeader)
        {
            pending = null;
            return;
        }

        var state = raft.State;
        var contractHeight = await reader.LastHeightAsync("latest", token).ConfigureAwait(false);
        ulong latest;
        lock (gate)
            latest = latestBlock;

        if (pending is { } waiting)
        {
            await FollowPendingAsync(waiting, contractHeight, latest, token).ConfigureAwait(false);
            return;
        }

        var target = state.SignedThrough;
        if (target <= contractHeight || latest < lastPostBlock + (ulong)options.PostEveryBlocks)
            return;
        if (contractHeight > 0)
        {
            var contractHash = await reader.LastHashAsync("latest", token).ConfigureAwait(false);
            if (state.GetBatch(contractHeight)?.Header.Commitment is not { } own || own != contractHash)
            {
                Report($"INV-L1PREFIX: the contract's head {contractHeight} ({contractHash}) is not this chain's; nothing is posted");
                return;
            }
        }

        var head = state.CoveringHead(target);
        var batch = state.GetBatch(target);
        if (head is null || head.Height != target || batch is null)
            return;

        // The contract verifies heads under its key epoch: a head of a later one needs the hand-overs first (each signed
        // by the key before it), sent one at a time; a head of an earlier one can never be posted (a later head covers it).
        var contractEpoch = await reader.KeyEpochAsync("latest", token).ConfigureAwait(false);
        if (head.KeyEpoch > contractEpoch)
        {
            await RotateContractKeyAsync(contractEpoch, token).ConfigureAwait(false);
            return;
        }

        if (head.KeyEpoch < contractEpoch)
        {
            Report($"head {target} is of key epoch {head.KeyEpoch}, but the contract is at key epoch {contractEpoch}; a head of the newer epoch will cover it");
            return;
        }

        var proof = contractHeight == 0 ? [] : HistoryTree.AuditPath(state.History, contractHeight - 1, target - 1);
        var data = InboxContract.PostHead(batch.Header, head.R, head.Z, proof);
        ulong gas;
        try
        {
            gas = await rpc.EstimateGasAsync(new EthCall(contract, data, key.Address), token).ConfigureAwait(false);
        }
        catch (EthRpcException e) when (e.Data is not null || e.Code == 3)
        {
            Report($"the contract would refuse head {target}: {InboxContract.DescribeRevert(e.Data) ?? e.Message}");
            return;
        }

        // The next nonce the L1 has mined: a post the pool still holds at that nonce (a former leader's, or one whose
        // predecessor a reorg dropped) is replaced, never queued behind (see SendAsync).
        var nonce = await rpc.GetTransactionCountAsync(key.Address, "latest", token).ConfigureAwait(false);
        var sender = new EthSender(rpc, key, chainId ?? await rpc.ChainIdAsync(token).ConfigureAwait(false));
        var (priority, maxFee) = await sender.FeesAsync(token).ConfigureAwait(false);
        var post = new Pending(target, contractHeight, nonce, gas * 6 / 5 + 5_000, data, head.SignedAtMs, NowMs) { Priority = priority, MaxFee = Cap(maxFee), SentAtBlock = latest };
        await SendAsync(post, token).ConfigureAwait(false);
        pending = post;
    }

    private async Task FollowPendingAsync(Pending waiting, ulong contractHeight, ulong latest, CancellationToken token)
    {
        if (await MinedReceiptAsync(waiting, token).ConfigureAwait(false) is { } receipt)
        {
            await RecordMinedAsync(waiting, receipt, token).ConfigureAwait(false);
            return;
        }

        if (contractHeight >= waiting.Height)
        {
            // The contract moved past it without a receipt of ours (a former leader's post of the same head, say).
            pending = null;
            return;
        }

        // No receipt: if the L1 has mined another transaction at this nonce, or a reorg dropped the one before it (a
        // nonce gap: this post could never be mined), the post is abandoned and built again from the contract's head.
        var mined = await rpc.GetTransactionCountAsync(key!.Address, "latest", token).ConfigureAwait(false);
        if (mined != waiting.Nonce)
        {
            // The post itself may have been mined between the receipt lookups above and the nonce read (a devnet under
            // load logged a sound post as lost this way, and its receipt, gas and L1 progress were never recorded).
            if (mined > waiting.Nonce && await MinedReceiptAsync(waiting, token).ConfigureAwait(false) is { } late)
            {
                await RecordMinedAsync(waiting, late, token).ConfigureAwait(false);
                return;
            }

            Report($"the post of head {waiting.Height} (nonce {waiting.Nonce}) can no longer be mined (the L1 account's next nonce is {mined}); it is sent anew");
            pending = null;
            return;
        }

        await BumpIfStuckAsync(waiting, latest, token).ConfigureAwait(false);
    }

    // The receipt of any of the post's transactions (the original or a fee bump), or null when none is mined.
    private async Task<EthReceipt?> MinedReceiptAsync(Pending waiting, CancellationToken token)
    {
        foreach (var hash in waiting.Hashes)
        {
            if (await rpc.GetTransactionReceiptAsync(hash, token).ConfigureAwait(false) is { } receipt)
                return receipt;
        }

        return null;
    }

    private async Task RecordMinedAsync(Pending waiting, EthReceipt receipt, CancellationToken token)
    {
        pending = null;
        lastPostBlock = receipt.BlockNumber;
        if (!receipt.Success)
        {
            Report($"the post of head {waiting.Height} reverted in block {receipt.BlockNumber} (another post got there first, or the contract moved on)");
            return;
        }

        Interlocked.Increment(ref postCount);
        var covered = Math.Max(1, waiting.Height - waiting.From);
        metrics.L1PostGas.Record((long)receipt.GasUsed);
        metrics.L1GasPerBatch.Record((double)receipt.GasUsed / covered);
        var now = NowMs;
        if (now >= waiting.SignedAtMs)
            metrics.SignedToPosted.Record(now - waiting.SignedAtMs);
        if (now >= waiting.SentAtMs)
            metrics.L1PostDuration.Record(now - waiting.SentAtMs);
        LogPosted(logger, waiting.Height, covered, EthHex.Bytes(receipt.TransactionHash), receipt.BlockNumber, receipt.GasUsed, now - waiting.SentAtMs);
        Telemetry.NodeTracing.Record("head.post", raft.State.Traces.Head(waiting.Height), (long)waiting.SentAtMs, (long)now,
            [new("sequencer.height", (long)waiting.Height), new("sequencer.covered_batches", (long)covered), new("l1.gas", (long)receipt.GasUsed),
             new("l1.block", (long)receipt.BlockNumber), new("l1.tx", EthHex.Bytes(receipt.TransactionHash))]);
        var progress = new L1ProgressCommand
        {
            Height = waiting.Height,
            Commitment = raft.State.GetBatch(waiting.Height)?.Header.Commitment.ToArray() ?? [],
            L1TxHash = receipt.TransactionHash,
            L1Block = receipt.BlockNumber,
            Contract = contract.Bytes.ToArray(),
            ObservedAtMs = now,
        };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token, raft.LeadershipToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(5));
        try
        {
            await raft.ReplicateAsync(LogCommandCodec.Encode(progress), null, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or DotNext.Net.Cluster.Consensus.Raft.NotLeaderException or DotNext.Net.Cluster.Consensus.Raft.QuorumUnreachableException)
        {
            // The contract holds the post; the log's record of it waits for the next one.
            Report($"the L1 progress of head {waiting.Height} did not commit: {e.GetType().Name}");
        }
    }

    private async Task BumpIfStuckAsync(Pending waiting, ulong latest, CancellationToken token)
    {
        if (latest >= waiting.SentAtBlock + (ulong)options.BumpAfterBlocks)
        {
            if (waiting.Hashes.Count >= 16)
            {
                Report($"the post of head {waiting.Height} stayed unmined after {waiting.Hashes.Count} fee bumps; it is sent anew");
                pending = null;
                return;
            }

            // A replacement needs at least 10 % more on both fees; 25 % moves it along, or what the L1 asks now when
            // that is more (a base fee spike).
            var (priority, maxFee) = await new EthSender(rpc, key!, chainId ?? 0).FeesAsync(token).ConfigureAwait(false);
            waiting.Priority = BigInteger.Max(waiting.Priority * 5 / 4 + 1, priority);
            waiting.MaxFee = Cap(BigInteger.Max(BigInteger.Max(waiting.MaxFee * 5 / 4 + 1, maxFee), waiting.Priority));
            waiting.SentAtBlock = latest;
            LogBump(logger, waiting.Height, waiting.Nonce, (double)waiting.MaxFee / 1e9);
            metrics.L1FeeBumps.Add(1);
            await SendAsync(waiting, token).ConfigureAwait(false);
        }
    }

    // Sends the contract the hand-over from key epoch `from` to the next (its rotation proof from the log) and waits
    // for the receipt. Rare (an operator's rotation), so it waits in line; a reorg that drops it only means the next
    // round sends it again, since the contract's epoch is read each time.
    private async Task RotateContractKeyAsync(ulong from, CancellationToken token)
    {
        var next = raft.State.KeyEpochs.FirstOrDefault(k => k.Epoch == from + 1);
        if (next?.Record.Rotation is not { } rotation || rotation.FromEpoch != from)
        {
            Report($"the contract is at key epoch {from}, but this node's log holds no hand-over from it to key epoch {from + 1}");
            return;
        }

        var data = InboxContract.RotateKey(next.Epoch, next.Record.GroupKey, rotation.R, rotation.Z);
        ulong gas;
        try
        {
            gas = await rpc.EstimateGasAsync(new EthCall(contract, data, key!.Address), token).ConfigureAwait(false);
        }
        catch (EthRpcException e) when (e.Data is not null || e.Code == 3)
        {
            Report($"the contract would refuse the rotation to key epoch {next.Epoch}: {InboxContract.DescribeRevert(e.Data) ?? e.Message}");
            return;
        }

        var sender = new EthSender(rpc, key, chainId ?? await rpc.ChainIdAsync(token).ConfigureAwait(false));
        var receipt = await sender.SendAsync(contract, data, TimeSpan.FromSeconds(30), gasLimit: gas * 6 / 5 + 5_000, token: token).ConfigureAwait(false);
        if (receipt.Success)
            LogRotated(logger, from, next.Epoch, EthHex.Bytes(receipt.TransactionHash), receipt.BlockNumber, receipt.GasUsed);
        else
            Report($"the rotation to key epoch {next.Epoch} reverted in block {receipt.BlockNumber}");
    }

    private BigInteger Cap(BigInteger fee) => BigInteger.Min(fee, new BigInteger(options.MaxFeeGwei) * 1_000_000_000);

    private async Task SendAsync(Pending post, CancellationToken token)
    {
        var signed = new EthTransaction
        {
            Type = TransactionType.DynamicFee, ChainId = chainId, Nonce = post.Nonce, To = contract, Data = post.Data, GasLimit = post.GasLimit,
            MaxPriorityFeePerGas = BigInteger.Min(post.Priority, post.MaxFee), MaxFeePerGas = post.MaxFee,
        }.Sign(key!);
        post.Hashes.Add(signed.Hash);
        try
        {
            await rpc.SendRawTransactionAsync(signed.Raw, token).ConfigureAwait(false);
        }
        catch (EthRpcException e) when (e.Message.Contains("nonce too low", StringComparison.OrdinalIgnoreCase) || e.Message.Contains("already known", StringComparison.OrdinalIgnoreCase))
        {
            // An earlier attempt was mined or is in the pool: its receipt ends the wait.
        }
        catch (EthRpcException e) when (e.Message.Contains("underpriced", StringComparison.OrdinalIgnoreCase) && post.Hashes.Count < 8 && post.MaxFee < Cap(post.MaxFee * 2))
        {
            // The pool holds another transaction at this nonce with higher fees (a stale post): outbid it.
            post.Priority *= 2;
            post.MaxFee = Cap(post.MaxFee * 2);
            await SendAsync(post, token).ConfigureAwait(false);
        }
    }

    private void Report(string message)
    {
        metrics.Errors.Add(1, new KeyValuePair<string, object?>("kind", "l1"));
        if (message == lastReported)
            return;
        lastReported = message;
        LogProblem(logger, message);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
            await loop.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
        rpc.Dispose();
    }

    private sealed class Pending(ulong height, ulong from, ulong nonce, ulong gasLimit, byte[] data, ulong signedAtMs, ulong sentAtMs)
    {
        public ulong Height { get; } = height;

        public ulong From { get; } = from;

        public ulong Nonce { get; } = nonce;

        public ulong GasLimit { get; } = gasLimit;

        public byte[] Data { get; } = data;

        public ulong SignedAtMs { get; } = signedAtMs;

        public ulong SentAtMs { get; } = sentAtMs;

        public BigInteger Priority { get; set; }

        public BigInteger MaxFee { get; set; }

        public ulong SentAtBlock { get; set; }

        public List<byte[]> Hashes { get; } = [];
    }

    [LoggerMessage(EventId = 160, Level = LogLevel.Information, Message = "L1: watching the inbox {Contract} at {Rpc}; poster {Poster}")]
    private static partial void LogStarted(ILogger logger, string rpc, string contract, string poster);

    [LoggerMessage(EventId = 161, Level = LogLevel.Information, Message = "L1: head {Height} posted (covers {Covered} batches) in {TxHash}, block {Block}, {Gas} gas, {Ms} ms after sending")]
    private static partial void LogPosted(ILogger logger, ulong height, ulong covered, string txHash, ulong block, ulong gas, ulong ms);

    [LoggerMessage(EventId = 162, Level = LogLevel.Warning, Message = "L1: reorg at block {Block}: scanning again from block {From}; {Dropped} posts dropped until they reappear")]
    private static partial void LogReorg(ILogger logger, ulong block, ulong from, int dropped);

    [LoggerMessage(EventId = 163, Level = LogLevel.Error, Message = "L1: INV-L1PREFIX: the contract holds commitment {Posted} at height {Height}, but this chain's is {Own} (L1 tx {TxHash})")]
    private static partial void LogForeignHead(ILogger logger, ulong height, string posted, string own, string txHash);

    [LoggerMessage(EventId = 164, Level = LogLevel.Information, Message = "L1: the post of head {Height} (nonce {Nonce}) is unmined; fees bumped to {MaxFeeGwei} gwei")]
    private static partial void LogBump(ILogger logger, ulong height, ulong nonce, double maxFeeGwei);

    [LoggerMessage(EventId = 166, Level = LogLevel.Information, Message = "L1: the contract's key rotated from key epoch {From} to {Epoch} in {TxHash}, block {Block}, {Gas} gas")]
    private static partial void LogRotated(ILogger logger, ulong from, ulong epoch, string txHash, ulong block, ulong gas);

    [LoggerMessage(EventId = 165, Level = LogLevel.Warning, Message = "L1: {Message}")]
    private static partial void LogProblem(ILogger logger, string message);
}
