using System.Diagnostics;

namespace Sequencer.Chaos.Network;

/// <summary>Where one node listens and how peers and the harness reach it.</summary>
/// <param name="NodeId">The member id.</param>
/// <param name="RaftAdvertised">The Raft address every node uses for this member (its proxy).</param>
/// <param name="RaftListen">Where the node's Raft listener really binds.</param>
/// <param name="Api">The node's API address.</param>
public sealed record NodeAddress(int NodeId, string RaftAdvertised, string RaftListen, string Api, string Internal);

/// <summary>A directed link: traffic from <see cref="From"/> into <see cref="To"/>.</summary>
public readonly record struct Link(int From, int To)
{
    /// <inheritdoc/>
    public override string ToString() => $"{From}->{To}";
}

/// <summary>
/// The network the nodes of a chaos run talk over, and the network faults it can inject.
/// </summary>
/// <remarks>
/// Two implementations: <see cref="ProxyNetwork"/> (default, no root: one fault proxy per member on loopback, so
/// faults apply to everything into a member) and <see cref="HostNetwork"/> (root: one network namespace per node,
/// exact directed partitions with iptables, and per-link delay and loss in the proxies, which can tell the source).
/// </remarks>
public interface IChaosNetwork : IAsyncDisposable
{
    /// <summary>"proxy" or "host".</summary>
    string Mode { get; }

    /// <summary>True when partitions can block exact directed links; false when only everything into a member can be blocked.</summary>
    bool HasDirectedPartitions { get; }

    /// <summary>The address the run's L1 listens on so that every node reaches it (loopback, or the harness's bridge address in host mode).</summary>
    string L1Host { get; }

    /// <summary>The addresses of every node.</summary>
    IReadOnlyList<NodeAddress> Nodes { get; }

    /// <summary>Wraps a node's start so that it runs in its place in this network.</summary>
    ProcessStartInfo Wrap(int nodeId, ProcessStartInfo start);

    /// <summary>Blocks traffic on every link in <paramref name="blocked"/> until <see cref="HealAsync"/>.</summary>
    /// <exception cref="NotSupportedException">The network cannot block exactly these links.</exception>
    Task PartitionAsync(IReadOnlyCollection<Link> blocked);

    /// <summary>Applies <paramref name="fault"/> to traffic into <paramref name="to"/>, from <paramref name="from"/> only when given.</summary>
    /// <exception cref="NotSupportedException">A per-source fault on a network that cannot tell sources apart.</exception>
    void SetLinkFault(int? from, int to, LinkFault fault);

    /// <summary>Resets (TCP RST) every connection into <paramref name="to"/>.</summary>
    void Reset(int to);

    /// <summary>Removes every network fault.</summary>
    Task HealAsync();
}
