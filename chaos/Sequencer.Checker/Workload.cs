using System.Diagnostics;
using System.Globalization;
using Sequencer.Client;
using Sequencer.Core.Hashing;

namespace Sequencer.Checker;

/// <summary>How a workload runs.</summary>
public sealed record WorkloadOptions
{
    /// <summary>Concurrent clients.</summary>
    public int Clients { get; init; } = 16;

    /// <summary>Txs per request (1 = single submits).</summary>
    public int TxsPerRequest { get; init; } = 1;

    /// <summary>Bytes per tx.</summary>
    public int TxBytes { get; init; } = 256;

    /// <summary>Stop after this many txs are acknowledged in total (0: until canceled).</summary>
    public int TargetAcknowledged { get; init; }

    /// <summary>The timeout of one submit request.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How many times one tx is retried after an indeterminate or retryable answer before the client moves on.</summary>
    public int MaxAttempts { get; init; } = 50;

    /// <summary>The seed of the tx contents (so a run's txs are reproducible; see <see cref="ClientTxs"/>).</summary>
    public int Seed { get; init; } = 1;

    /// <summary>
    /// Ethereum mode (issue 13): each client is one sender sending signed transactions with its nonces in order, and
    /// every third nonce as two conflicting txs (the same nonce, other payloads) sent to two nodes at the same moment.
    /// The chain id the txs name; null for opaque random txs.
    /// </summary>
    public ulong? EthereumChainId { get; init; }

    /// <summary>
    /// How long a client avoids a node that timed out or refused the connection (it still uses it when every node is
    /// avoided): what a real client's endpoint balancer does, so that one paused or dead node does not hold every
    /// client in turn.
    /// </summary>
    public TimeSpan AvoidAfterFailure { get; init; } = TimeSpan.FromSeconds(5);
}

/// <summary>
/// Concurrent clients that submit fresh random txs to the nodes and record every attempt in a <see cref="History"/>.
/// A client that gets an indeterminate or retryable answer retries the same tx (the same hash) on the next node,
/// which is what a real client must do and what INV-NODUP must survive.
/// </summary>
public sealed partial class Workload
{
    private readonly IReadOnlyList<(int NodeId, SequencerClient Client)> nodes;
    private readonly WorkloadOptions options;
    private long acknowledged;
    private readonly long? fixedOrigin;
    private long started = Stopwatch.GetTimestamp();

    /// <summary>Creates a workload over the given nodes.</summary>
    /// <param name="nodes">The nodes to submit to.</param>
    /// <param name="options">How to run.</param>
    /// <param name="origin">A <see cref="Stopwatch"/> timestamp to measure op times from (shared with a harness's other clocks); by default the start of <see cref="RunAsync"/>.</param>
    public Workload(IReadOnlyList<(int NodeId, SequencerClient Client)> nodes, WorkloadOptions options, long? origin = null)
    {
        fixedOrigin = origin;
        if (origin is { } given)
            started = given;
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfZero(nodes.Count);
        this.nodes = nodes;
        this.options = options;
    }

    /// <summary>Everything recorded so far.</summary>
    public History History { get; } = new();

    /// <summary>Txs acknowledged so far.</summary>
    public long Acknowledged => Interlocked.Read(ref acknowledged);

    /// <summary>Nodes to skip (for example while they are known to be down); read by every client on every attempt.</summary>
    public Func<int, bool> IsAvailable { get; set; } = _ => true;

    /// <summary>Nanoseconds on the workload's monotonic clock.</summary>
    public long NowNs() => (long)(Stopwatch.GetElapsedTime(started).TotalMilliseconds * 1_000_000);

    /// <summary>Runs every client until the target is reached or <paramref name="token"/> is canceled.</summary>
    public async Task RunAsync(CancellationToken token)
    {
        started = fixedOrigin ?? Stopwatch.GetTimestamp();
        using var done = CancellationTokenSource.CreateLinkedTokenSource(token);
        var clients = Enumerable.Range(0, options.Clients)
            .Select(c => Task.Run(() => options.EthereumChainId is { } chainId ? EthereumClientLoopAsync(c, chainId, done) : ClientLoopAsync(c, done), CancellationToken.None)).ToArray();
        await Task.WhenAll(clients).ConfigureAwait(false);
    }

    private async Task ClientLoopAsync(int client, CancellationTokenSource done)
    {
        var source = new ClientTxs(options.Seed, client, options.TxBytes);
        var nodeCursor = client % nodes.Count;
        var avoidUntil = new long[nodes.Count];
        var token = done.Token;
        while (!token.IsCancellationRequested)
        {
            var txs = new List<ReadOnlyMemory<byte>>(options.TxsPerRequest);
            for (var i = 0; i < options.TxsPerRequest; i++)
                txs.Add(source.Next());

            var hashes = txs.Select(t => Keccak256.Hash(t.Span).ToString()).ToArray();
            for (var attempt = 0; attempt < options.MaxAttempts && !token.IsCancellationRequested; attempt++)
            {
                var (slot, nodeId, api) = NextNode(ref nodeCursor, avoidUntil);
                var invoked = NowNs();
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                timeout.CancelAfter(options.RequestTimeout);
                try
                {
                    var results = await api.SubmitAsync(txs, timeout.Token).ConfigureAwait(false);
                    var completed = NowNs();
                    for (var i = 0; i < results.Count; i++)
                    {
                        History.Add(new HistoryOp(client, hashes[i], nodeId, invoked, completed, OpOutcome.Ok,
                            ulong.Parse(results[i].Height, CultureInfo.InvariantCulture), results[i].Index, null));
                    }

                    var total = Interlocked.Add(ref acknowledged, results.Count);
                    if (options.TargetAcknowledged > 0 && total >= options.TargetAcknowledged)
                        await done.CancelAsync().ConfigureAwait(false);
                    break;
                }
                catch (SequencerApiException e) when (!e.IsRetryable)
                {
                    // A definite rejection: nothing was ordered by this attempt, and retrying would not help.
                    Record(client, hashes, nodeId, invoked, OpOutcome.Fail, e.Code);
                    break;
                }
                catch (SequencerApiException e)
                {
                    Record(client, hashes, nodeId, invoked, e.IsIndeterminate ? OpOutcome.Info : OpOutcome.Fail, e.Code);
                    if (e.Status == 0 || e.Code == "connection_refused")
                        avoidUntil[slot] = NowNs() + (long)options.AvoidAfterFailure.TotalNanoseconds;
                }
                catch (OperationCanceledException) when (!token.IsCancellationRequested)
                {
                    Record(client, hashes, nodeId, invoked, OpOutcome.Info, "client_timeout");
                    avoidUntil[slot] = NowNs() + (long)options.AvoidAfterFailure.TotalNanoseconds;
                }
                catch (OperationCanceledException)
                {
                    Record(client, hashes, nodeId, invoked, OpOutcome.Info, "stopped");
                    return;
                }

                try
                {
                    await Task.Delay(Math.Min(200, 10 * (attempt + 1)), token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    /// <summary>The next node in this client's rotation that is available and not avoided; failing that, the available node avoided the shortest.</summary>
    private (int Slot, int NodeId, SequencerClient Client) NextNode(ref int cursor, long[] avoidUntil)
    {
        var now = NowNs();
        var fallback = -1;
        for (var i = 0; i < nodes.Count; i++)
        {
            var slot = (cursor + i) % nodes.Count;
            if (!IsAvailable(nodes[slot].NodeId))
                continue;
            if (avoidUntil[slot] <= now)
            {
                cursor = (slot + 1) % nodes.Count;
                return (slot, nodes[slot].NodeId, nodes[slot].Client);
            }

            if (fallback < 0 || avoidUntil[slot] < avoidUntil[fallback])
                fallback = slot;
        }

        if (fallback < 0)
            fallback = cursor;
        cursor = (fallback + 1) % nodes.Count;
        return (fallback, nodes[fallback].NodeId, nodes[fallback].Client);
    }

    private void Record(int client, string[] hashes, int nodeId, long invoked, OpOutcome outcome, string error)
    {
        var completed = NowNs();
        foreach (var hash in hashes)
            History.Add(new HistoryOp(client, hash, nodeId, invoked, completed, outcome, null, null, error));
    }
}
