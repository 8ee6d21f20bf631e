using System.Diagnostics;
using System.Net;

namespace Sequencer.Chaos.Network;

/// <summary>
/// Proxy mode: every node on 127.0.0.1; each member's advertised Raft address is a <see cref="FaultProxy"/> in front of
/// its real listener, and every node uses that same address for it (DotNext identifies members by endpoint, so a
/// proxy per directed link would split the membership).
/// </summary>
/// <remarks>
/// A per-member proxy sees every connection into its member but cannot tell which node opened it (all come from
/// 127.0.0.1), so it can blackhole, reset, delay, drop or clog everything into a member, and nothing finer. A
/// partition is accepted only when it blocks every link into each affected member (isolating a member's inbound
/// traffic); exact directed partitions (isolating the leader, majority/minority splits, rings, bridges, one-way
/// links) need host mode.
/// </remarks>
public sealed class ProxyNetwork : IChaosNetwork
{
    private readonly Dictionary<int, FaultProxy> proxies = [];

    private ProxyNetwork(List<NodeAddress> nodes, Dictionary<int, FaultProxy> proxies)
    {
        Nodes = nodes;
        this.proxies = proxies;
    }

    /// <inheritdoc/>
    public string Mode => "proxy";

    /// <inheritdoc/>
    public bool HasDirectedPartitions => false;

    /// <inheritdoc/>
    public string L1Host => "127.0.0.1";

    /// <inheritdoc/>
    public IReadOnlyList<NodeAddress> Nodes { get; }

    /// <summary>Lays out <paramref name="nodeCount"/> nodes on free loopback ports with a proxy each.</summary>
    public static ProxyNetwork Create(int nodeCount, int seed)
    {
        var ports = Sequencer.Client.Local.ListenPorts.Take("127.0.0.1", 4 * nodeCount);
        var nodes = new List<NodeAddress>();
        var proxies = new Dictionary<int, FaultProxy>();
        for (var i = 0; i < nodeCount; i++)
        {
            var id = i + 1;
            var listen = new IPEndPoint(IPAddress.Loopback, ports[4 * i + 1]);
            var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, ports[4 * i]), listen, FaultProxy.SeedFor(seed, id));
            proxies[id] = proxy;
            nodes.Add(new NodeAddress(id, proxy.Listen.ToString(), listen.ToString(), $"http://127.0.0.1:{ports[4 * i + 2]}", $"https://127.0.0.1:{ports[4 * i + 3]}"));
        }

        return new ProxyNetwork(nodes, proxies);
    }

    /// <inheritdoc/>
    public ProcessStartInfo Wrap(int nodeId, ProcessStartInfo start) => start;

    /// <inheritdoc/>
    public Task PartitionAsync(IReadOnlyCollection<Link> blocked)
    {
        ArgumentNullException.ThrowIfNull(blocked);
        var targets = blocked.Select(l => l.To).Distinct().ToList();
        foreach (var to in targets)
        {
            var sources = Nodes.Select(n => n.NodeId).Where(id => id != to);
            if (!sources.All(from => blocked.Contains(new Link(from, to))))
                throw new NotSupportedException($"proxy mode can only block every link into a member; this partition blocks some links into node {to} and not others (use host mode)");
        }

        foreach (var to in targets)
            proxies[to].SetFault(new LinkFault { Blackhole = true });
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public void SetLinkFault(int? from, int to, LinkFault fault)
    {
        if (from is not null)
            throw new NotSupportedException("proxy mode cannot tell the source of a connection: faults apply to everything into a member (use host mode)");
        proxies[to].SetFault(fault);
    }

    /// <inheritdoc/>
    public void Reset(int to) => proxies[to].ResetAll();

    /// <inheritdoc/>
    public Task HealAsync()
    {
        foreach (var proxy in proxies.Values)
            proxy.Heal();
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        foreach (var proxy in proxies.Values)
            await proxy.DisposeAsync().ConfigureAwait(false);
    }
}
