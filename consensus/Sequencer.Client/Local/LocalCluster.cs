using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Sequencer.Client.Local;

/// <summary>How to lay out a local cluster.</summary>
public sealed record LocalClusterOptions
{
    /// <summary>The number of nodes.</summary>
    public int Nodes { get; init; } = 3;

    /// <summary>Where each node gets a <c>nodeN</c> data directory.</summary>
    public required string DataRoot { get; init; }

    /// <summary>The first API port (node N listens on base + N - 1), or null to pick free ports.</summary>
    public int? ApiBasePort { get; init; }

    /// <summary>The first Raft port, or null to pick free ports.</summary>
    public int? RaftBasePort { get; init; }

    /// <summary>The loopback address to bind.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>The chain id.</summary>
    public ulong ChainId { get; init; } = 1;

    /// <summary>
    /// A key directory (from <c>keygen --dealer</c>: group.json and share-N.json): every node signs with its share.
    /// Null for a cluster that orders without signing.
    /// </summary>
    public string? KeysDirectory { get; init; }

    /// <summary>Extra <c>run</c> arguments for every node, such as <c>--limit maxBatchDelayMs=5</c>.</summary>
    public IReadOnlyList<string> ExtraArguments { get; init; } = [];

    /// <summary>Receives every line the nodes print, prefixed with the node; null to only write node logs.</summary>
    public Action<string>? Echo { get; init; }

    /// <summary>The node binary; null to locate the built one.</summary>
    public NodeBinary? Binary { get; init; }

    /// <summary>Fixed addresses per node (advertised Raft, Raft listen, API, internal) instead of loopback ports; used by the chaos harness.</summary>
    public IReadOnlyList<NodeSpec>? Specs { get; init; }

    /// <summary>
    /// Mutual TLS among the nodes (DESIGN section 5): the consortium's certificates under <c>DataRoot/certs</c> (made
    /// when missing) and an internal listener per node. False runs the nodes without identities (they warn), and on
    /// addresses other than loopback with <c>--insecure-plaintext</c>.
    /// </summary>
    public bool MutualTls { get; init; } = true;

    /// <summary>The first internal listener port (node N listens on base + N - 1); null: API base + 200, or free ports.</summary>
    public int? InternalBasePort { get; init; }
}

/// <summary>
/// A cluster of real node processes on loopback, for <c>make run</c>, tests, the benchmark and the chaos harness.
/// Ports are fixed or chosen at run time; every process is killed by id on dispose.
/// </summary>
public sealed class LocalCluster : IAsyncDisposable
{
    private readonly List<NodeProcess> nodes;

    private LocalCluster(List<NodeProcess> nodes, LocalClusterOptions options)
    {
        this.nodes = nodes;
        Options = options;
    }

    /// <summary>The layout.</summary>
    public LocalClusterOptions Options { get; }

    /// <summary>The node processes, in id order (id = position + 1).</summary>
    public IReadOnlyList<NodeProcess> Nodes => nodes;

    /// <summary>The node with member id <paramref name="id"/>.</summary>
    public NodeProcess Node(int id) => nodes[id - 1];

    /// <summary>Lays out (does not start) a cluster.</summary>
    public static LocalCluster Create(LocalClusterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Nodes, 1);
        var binary = options.Binary ?? NodeBinary.Locate();
        var specs = new List<NodeSpec>();
        if (options.Specs is { } given)
        {
            specs.AddRange(given);
        }
        else
        {
            var internalBase = options.InternalBasePort ?? options.ApiBasePort + 200;
            var free = options.ApiBasePort is null || options.RaftBasePort is null || internalBase is null ? ListenPorts.Take(options.Host, 3 * options.Nodes) : [];
            for (var i = 0; i < options.Nodes; i++)
            {
                var apiPort = options.ApiBasePort is { } apiBase ? apiBase + i : free[3 * i];
                var raftPort = options.RaftBasePort is { } raftBase ? raftBase + i : free[3 * i + 1];
                var internalPort = internalBase is { } inside ? inside + i : free[3 * i + 2];
                specs.Add(new NodeSpec(i + 1, $"{options.Host}:{raftPort}", $"http://{options.Host}:{apiPort}",
                    Path.Combine(Path.GetFullPath(options.DataRoot), $"node{i + 1}"), Internal: options.MutualTls ? $"https://{options.Host}:{internalPort}" : null));
            }
        }

        string? certificates = null;
        if (options.MutualTls)
        {
            if (specs.FirstOrDefault(s => s.Internal is null) is { } bare)
                throw new ArgumentException($"node {bare.Id} has no internal address, which mutual TLS needs", nameof(options));
            certificates = Path.Combine(Path.GetFullPath(options.DataRoot), "certs");
            var hosts = specs.SelectMany(s => new[] { new Uri(s.Api).Host, new Uri(s.Internal!).Host }).Append("localhost");
            Sequencer.Core.Security.ConsortiumCertificates.Create(certificates, specs.Select(s => s.Id), hosts, TimeSpan.FromDays(365), "local cluster");
        }

        var parent = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        var list = new List<NodeProcess>();
        foreach (var spec in specs.OrderBy(s => s.Id))
        {
            var arguments = new List<string>
            {
                "run", "--id", spec.Id.ToString(CultureInfo.InvariantCulture), "--data", spec.DataDir,
                "--raft", spec.Raft, "--api", spec.Api, "--chain-id", options.ChainId.ToString(CultureInfo.InvariantCulture),
                "--exit-with-parent", parent,
            };
            if (spec.RaftListen is not null)
                arguments.AddRange(["--raft-listen", spec.RaftListen]);
            foreach (var member in specs)
                arguments.AddRange(["--member", $"{member.Id}={member.Raft},{member.Api}{(certificates is null ? "" : "," + member.Internal)}"]);
            if (certificates is not null)
                arguments.AddRange(["--certs", certificates]);
            else if (specs.Any(s => !IsLoopback(s)))
                arguments.Add("--insecure-plaintext"); // the caller chose no identities on a network of its own
            if (options.KeysDirectory is { } keys)
            {
                arguments.AddRange(["--group-key", Path.Combine(keys, "group.json")]);
                var share = Path.Combine(keys, $"share-{spec.Id.ToString(CultureInfo.InvariantCulture)}.json");
                if (File.Exists(share))
                    arguments.AddRange(["--key-share", share]);
            }

            arguments.AddRange(options.ExtraArguments);
            list.Add(new NodeProcess(binary, spec, arguments, options.Echo));
        }

        return new LocalCluster(list, options);
    }

    // True when every address of the node is loopback (a node without certificates refuses anything else unless told).
    private static bool IsLoopback(NodeSpec spec)
        => ListenPorts.IsLoopbackAddress(spec.Api) && ListenPorts.IsLoopbackAddress(spec.Raft) && (spec.RaftListen is null || ListenPorts.IsLoopbackAddress(spec.RaftListen));

    /// <summary>Starts every node that is not running.</summary>
    public void StartAll()
    {
        foreach (var node in nodes.Where(n => !n.IsRunning))
            node.Start();
    }

    /// <summary>
    /// Waits until every running node (or those in <paramref name="among"/>) reports the same leader, which is one of
    /// them, and returns its id.
    /// </summary>
    /// <exception cref="TimeoutException">No agreed leader within <paramref name="timeout"/>; the message says what each node reported.</exception>
    public async Task<int> WaitForLeaderAsync(TimeSpan timeout, IReadOnlyCollection<int>? among = null, CancellationToken token = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = "no answer yet";
        while (DateTime.UtcNow < deadline)
        {
            token.ThrowIfCancellationRequested();
            // Nodes that were started and have all exited (a refused configuration, a damaged store) elect nobody.
            if (nodes.All(n => n.ExitCode is not null))
                throw new TimeoutException($"every node exited ({string.Join(", ", nodes.Select(n => $"node{n.Spec.Id}: exit code {n.ExitCode}"))}); see their logs");
            var asked = nodes.Where(n => n.IsRunning && (among is null || among.Contains(n.Spec.Id))).ToList();
            var views = await Task.WhenAll(asked.Select(TryGetClusterAsync)).ConfigureAwait(false);
            last = string.Join(", ", asked.Zip(views, (n, v) => $"node{n.Spec.Id}: {(v is null ? "down" : $"{v.Role}, leader {v.Leader?.ToString(CultureInfo.InvariantCulture) ?? "none"}, term {v.Term}")}"));
            if (views.Length > 0 && views.All(v => v?.Leader is not null) && views.Select(v => v!.Leader).Distinct().Count() == 1)
            {
                var leader = views[0]!.Leader!.Value;
                if (asked.Any(n => n.Spec.Id == leader) && views.Count(v => v!.Role == "leader") == 1)
                    return leader;
            }

            await Task.Delay(50, token).ConfigureAwait(false);
        }

        throw new TimeoutException($"no agreed leader within {timeout.TotalSeconds:0.#} s: {last}");
    }

    /// <summary>The node's cluster view, or null when it does not answer.</summary>
    public static async Task<ClusterResponse?> TryGetClusterAsync(NodeProcess node)
    {
        ArgumentNullException.ThrowIfNull(node);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            return await node.Client.GetClusterAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (SequencerApiException)
        {
            return null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>Kills every node (SIGKILL) and releases the clients.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var node in nodes)
            await node.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Stops every node with SIGTERM, killing those that do not exit within <paramref name="grace"/>.</summary>
    public Task StopAllAsync(TimeSpan grace) => Task.WhenAll(nodes.Select(n => n.StopAsync(grace)));

}
