using System.Globalization;
using Sequencer.Client;
using Sequencer.Client.Local;

namespace Sequencer.Chaos.Running;

/// <summary>One observation of one node.</summary>
/// <param name="AtMs">Milliseconds since the start of the run.</param>
/// <param name="NodeId">The node.</param>
/// <param name="Up">Whether it answered.</param>
/// <param name="Role">leader, follower or candidate.</param>
/// <param name="Leader">The leader it knows, or null.</param>
/// <param name="Term">Its Raft term.</param>
/// <param name="Height">Its applied height.</param>
/// <param name="LastLogIndex">The last index in its Raft log.</param>
/// <param name="SignedThrough">Its highest signed head (every height at or below it is covered).</param>
/// <param name="AskedAtMs">When the round that took this sample began asking (-1: at <paramref name="AtMs"/>): the node
/// answered at some moment between the two, so what it reported held no earlier than this and no later than AtMs.</param>
public sealed record NodeSample(long AtMs, int NodeId, bool Up, string? Role, int? Leader, long Term, ulong Height, long LastLogIndex, ulong SignedThrough = 0, long AskedAtMs = -1)
{
    /// <summary>The earliest moment the sample may describe.</summary>
    public long FromMs => AskedAtMs < 0 ? AtMs : AskedAtMs;
}

/// <summary>The leader's signing view at one moment, in one line (see <see cref="ClusterMonitor.DescribeSigning"/>).</summary>
/// <param name="AtMs">When it answered (milliseconds since the start of the run).</param>
/// <param name="NodeId">The leader asked.</param>
/// <param name="View">What it said.</param>
public sealed record SigningSample(long AtMs, int NodeId, string View);

/// <summary>
/// Polls every node's <c>/v1/cluster</c> a few times a second: who leads when, which heights nodes have applied, and
/// the leader changes of the run.
/// </summary>
public sealed class ClusterMonitor : IAsyncDisposable
{
    private readonly LocalCluster cluster;
    private readonly Func<long> nowMs;
    private readonly List<NodeSample> samples = [];
    private readonly Lock gate = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly Task loop;
    private readonly Task proofLoop;
    private readonly Task signingLoop;
    private readonly List<SigningSample> signingTrace = [];
    private const int MaxSigningTrace = 20_000;
    private readonly Dictionary<int, NodeSample> latest = [];
    private readonly Dictionary<(int NodeId, string Height, string Head), CommitmentResponse> observed = [];
    private const int MaxObserved = 100_000;

    /// <summary>How often every node is asked for its view.</summary>
    public const int PollIntervalMs = 200;

    /// <summary>How often coverage proofs are sampled, on a loop of their own (see <see cref="ProofRoundAsync"/>).</summary>
    public const int ProofIntervalMs = 1_000;
    private long proofRounds;

    /// <summary>How often the leader's signing view is recorded (a trace that explains a LIVE-SIGN failure).</summary>
    public const int SigningIntervalMs = 250;

    /// <summary>Starts polling.</summary>
    public ClusterMonitor(LocalCluster cluster, Func<long> nowMs)
    {
        this.cluster = cluster;
        this.nowMs = nowMs;
        loop = Task.Run(() => EveryAsync(PollIntervalMs, _ => PollRoundAsync()));
        proofLoop = Task.Run(() => EveryAsync(ProofIntervalMs, ProofRoundAsync));
        signingLoop = Task.Run(() => EveryAsync(SigningIntervalMs, SigningRoundAsync));
    }

    /// <summary>The leader's signing view four times a second (at most <c>20,000</c> lines, the first ones kept).</summary>
    public IReadOnlyList<SigningSample> SigningTrace
    {
        get
        {
            lock (gate)
                return [.. signingTrace];
        }
    }

    /// <summary>Every sample so far.</summary>
    public IReadOnlyList<NodeSample> Samples
    {
        get
        {
            lock (gate)
                return [.. samples];
        }
    }

    /// <summary>
    /// Coverage proofs seen served during the run (a few heights of every node, once a second, the newest among them):
    /// INV-HEADS, INV-ONESIG and INV-SIGVALID cover them too, including what a node served before its data was wiped.
    /// </summary>
    public IReadOnlyList<(int NodeId, CommitmentResponse Proof)> ObservedProofs
    {
        get
        {
            lock (gate)
                return [.. observed.Select(o => (o.Key.NodeId, o.Value))];
        }
    }

    /// <summary>The latest sample of each node.</summary>
    public IReadOnlyDictionary<int, NodeSample> Latest
    {
        get
        {
            lock (gate)
                return new Dictionary<int, NodeSample>(latest);
        }
    }

    /// <summary>The node that reports itself leader in the highest term, or null.</summary>
    public int? CurrentLeader
    {
        get
        {
            lock (gate)
                return latest.Values.Where(s => s.Up && s.Role == "leader").OrderByDescending(s => s.Term).FirstOrDefault()?.NodeId;
        }
    }

    /// <summary>Asks every running node now (not from the poll) and returns the agreed leader, or null.</summary>
    public async Task<int?> AskLeaderAsync()
    {
        var running = cluster.Nodes.Where(n => n.IsRunning).ToList();
        var views = await Task.WhenAll(running.Select(LocalCluster.TryGetClusterAsync)).ConfigureAwait(false);
        return views.Where(v => v?.Role == "leader").OrderByDescending(v => long.Parse(v!.Term, CultureInfo.InvariantCulture)).FirstOrDefault()?.NodeId;
    }

    /// <summary>Leader changes: the number of times the observed leader differs from the previous observed leader.</summary>
    public int LeaderChanges()
    {
        var timeline = LeaderTimeline();
        return Math.Max(0, timeline.Count(t => t.Leader is not null) - 1);
    }

    /// <summary>Segments of who led: (from ms, to ms, leader or null).</summary>
    public IReadOnlyList<(long FromMs, long ToMs, int? Leader)> LeaderTimeline()
    {
        var byTime = Samples.GroupBy(s => s.AtMs / 200).OrderBy(g => g.Key);
        var segments = new List<(long, long, int?)>();
        int? current = null;
        long start = 0;
        var first = true;
        foreach (var group in byTime)
        {
            var leader = group.Where(s => s.Up && s.Role == "leader").OrderByDescending(s => s.Term).FirstOrDefault()?.NodeId;
            var at = group.Key * 200;
            if (first)
            {
                current = leader;
                start = at;
                first = false;
            }
            else if (leader != current)
            {
                segments.Add((start, at, current));
                current = leader;
                start = at;
            }
        }

        if (!first)
            segments.Add((start, nowMs(), current));
        return segments;
    }

    // Runs round every intervalMs until the monitor stops (a round that overruns delays the next, never overlaps it).
    private async Task EveryAsync(int intervalMs, Func<CancellationToken, Task> round)
    {
        var token = stopping.Token;
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(intervalMs));
        while (true)
        {
            try
            {
                await timer.WaitForNextTickAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            await round(token).ConfigureAwait(false);
        }
    }

    private async Task PollRoundAsync()
    {
        var nodes = cluster.Nodes;
        var asked = nowMs();
        var views = await Task.WhenAll(nodes.Select(n => n.IsRunning ? AskAsync(n) : Task.FromResult<ClusterResponse?>(null))).ConfigureAwait(false);
        var at = nowMs();
        lock (gate)
        {
            for (var i = 0; i < nodes.Count; i++)
            {
                var view = views[i];
                var sample = view is null
                    ? new NodeSample(at, nodes[i].Spec.Id, false, null, null, 0, 0, 0, AskedAtMs: asked)
                    : new NodeSample(at, view.NodeId, true, view.Role, view.Leader, long.Parse(view.Term, CultureInfo.InvariantCulture),
                        ulong.Parse(view.Height, CultureInfo.InvariantCulture), view.Pipeline?.GetValueOrDefault("lastLogIndex") ?? 0,
                        view.SignedThrough is { } signed ? ulong.Parse(signed, CultureInfo.InvariantCulture) : 0, asked);
                samples.Add(sample);
                latest[nodes[i].Spec.Id] = sample;
            }
        }
    }

    /// <summary>
    /// Once a second, a few coverage proofs of every node that reported a signed head. A loop of its own: these requests
    /// go one after another (up to 400 ms each, and a node that has just restarted answers its first ones slowly), and
    /// when they ran inside the poll loop they held back its next round by over a second, so LIVE-SIGN saw a height
    /// covered only at that late round and failed a run whose heads were signed within 100 ms all along.
    /// </summary>
    private async Task ProofRoundAsync(CancellationToken token)
    {
        proofRounds++;
        foreach (var node in cluster.Nodes)
        {
            if (token.IsCancellationRequested)
                return;
            NodeSample? last;
            lock (gate)
                last = latest.GetValueOrDefault(node.Spec.Id);
            if (node.IsRunning && last is { Up: true, SignedThrough: > 0 })
                await SampleNodeProofsAsync(node, last.NodeId, last.SignedThrough, token).ConfigureAwait(false);
        }
    }

    private async Task SampleNodeProofsAsync(NodeProcess node, int nodeId, ulong signed, CancellationToken token)
    {
        // The newest covered height and two older ones (a head, and a height a history proof must reach).
        foreach (var height in new[] { signed, signed - Math.Min(signed - 1, 7), 1 + ((ulong)proofRounds * 7919 % signed) }.Distinct())
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
            timeout.CancelAfter(TimeSpan.FromMilliseconds(400));
            try
            {
                if (await node.Client.GetCommitmentAsync(height, timeout.Token).ConfigureAwait(false) is not { } proof)
                    continue;
                lock (gate)
                {
                    if (observed.Count < MaxObserved)
                        observed.TryAdd((nodeId, proof.Header.Height, proof.Head.Commitment), proof);
                }
            }
            catch (Exception e) when (e is SequencerApiException or OperationCanceledException or System.Text.Json.JsonException)
            {
            }
        }
    }

    // The leader's sessions in flight and its record of every signer: when signing stalls, this says why (a signer left
    // out, late, or without published nonces; sessions stuck at one stage).
    private async Task SigningRoundAsync(CancellationToken token)
    {
        var leader = CurrentLeader;
        if (leader is not { } id || cluster.Node(id) is not { IsRunning: true } node)
            return;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
        timeout.CancelAfter(TimeSpan.FromMilliseconds(400));
        try
        {
            using var view = await node.Client.GetSigningViewAsync(timeout.Token).ConfigureAwait(false);
            var line = DescribeSigning(view.RootElement);
            lock (gate)
            {
                if (signingTrace.Count < MaxSigningTrace)
                    signingTrace.Add(new SigningSample(nowMs(), id, line));
            }
        }
        catch (Exception e) when (e is SequencerApiException or OperationCanceledException or System.Text.Json.JsonException)
        {
        }
    }

    /// <summary>
    /// One line of a <c>GET /v1/signing</c> answer: applied height and signed head, the sessions in flight (head#attempt,
    /// stage, signers) and the leader's record of each signer (shares accepted, timeouts, bad shares, how long it is left
    /// out, its share latency, its published nonces).
    /// </summary>
    public static string DescribeSigning(System.Text.Json.JsonElement view)
    {
        static string Text(System.Text.Json.JsonElement parent, string name)
            => parent.ValueKind == System.Text.Json.JsonValueKind.Object && parent.TryGetProperty(name, out var value)
                ? value.ValueKind == System.Text.Json.JsonValueKind.String ? value.GetString() ?? "?" : value.GetRawText()
                : "?";
        static IEnumerable<System.Text.Json.JsonElement> Items(System.Text.Json.JsonElement parent, string name)
            => parent.ValueKind == System.Text.Json.JsonValueKind.Object && parent.TryGetProperty(name, out var value) && value.ValueKind == System.Text.Json.JsonValueKind.Array
                ? value.EnumerateArray()
                : [];

        var sessions = Items(view, "sessions").Take(8)
            .Select(s => $"{Text(s, "head")}#{Text(s, "attempt")} {Text(s, "stage")}{(Text(s, "inline") == "true" ? " inline" : string.Empty)} [{string.Join(",", Items(s, "signers").Select(i => i.GetRawText()))}]");
        var signers = Items(view, "signers").Take(16)
            .Select(s => $"n{Text(s, "id")} ok {Text(s, "sharesAccepted")} to {Text(s, "timeouts")} bad {Text(s, "badShares")} out {Text(s, "excludedForMs")} ms lat {Text(s, "shareLatencyMs")} ms nonces {Text(s, "publishedNonces")}");
        return $"height {Text(view, "height")} signed {Text(view, "signedThrough")} | sessions: {string.Join("; ", sessions.DefaultIfEmpty("none"))} | signers: {string.Join("; ", signers.DefaultIfEmpty("none"))}";
    }

    private static async Task<ClusterResponse?> AskAsync(NodeProcess node)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(400));
        try
        {
            return await node.Client.GetClusterAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SequencerApiException or OperationCanceledException or System.Text.Json.JsonException)
        {
            return null;
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        await loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await proofLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await signingLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
    }
}
