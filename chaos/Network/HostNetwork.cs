using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Sequencer.Checker;

namespace Sequencer.Chaos.Network;

/// <summary>
/// Host mode (root): every node is a test host in its own network namespace, with its own address on a veth
/// bridge that only this run creates. Partitions are exact and directed: iptables rules inside the receiving
/// namespace drop packets from the blocked sources. Each member's advertised Raft address is still a
/// <see cref="FaultProxy"/>, listening inside the member's namespace, so it sees the true source address of every
/// connection and applies delay, loss, clog and reset per directed link (the kernel has no netem).
/// </summary>
/// <remarks>
/// Addresses are 10.231.S.N/24 (N = node id, .254 is the harness on the bridge), with S chosen per run; nothing is
/// sent outside the namespaces this run creates. <see cref="DisposeAsync"/> deletes the namespaces and the bridge.
/// </remarks>
public sealed partial class HostNetwork : IChaosNetwork
{
    private const int RaftPort = 7201;
    private const int RaftListenPort = 7202;
    private const int ApiPort = 7101;
    private const int InternalPort = 7301;
    private const int CloneNewNet = 0x40000000;

    private readonly string prefix;
    private readonly int subnet;
    private readonly Dictionary<int, FaultProxy> proxies = [];
    private readonly List<NodeAddress> nodes = [];
    private readonly List<string> namespacesCreated = [];
    private bool bridgeCreated;

    private HostNetwork(string prefix, int subnet)
    {
        this.prefix = prefix;
        this.subnet = subnet;
    }

    /// <inheritdoc/>
    public string Mode => "host";

    /// <inheritdoc/>
    public bool HasDirectedPartitions => true;

    /// <inheritdoc/>
    public IReadOnlyList<NodeAddress> Nodes => nodes;

    private string Bridge => $"{prefix}br";

    private string Namespace(int node) => $"{prefix}n{node}";

    private IPAddress Address(int node) => IPAddress.Parse($"10.231.{subnet}.{node}");

    /// <inheritdoc/>
    public string L1Host => $"10.231.{subnet}.254";

    /// <summary>True when this process can create namespaces and iptables is installed.</summary>
    public static string? WhyUnavailable()
    {
        if (!OperatingSystem.IsLinux())
            return "host mode needs Linux network namespaces";
        if (Environment.UserName != "root" && geteuid() != 0)
            return "host mode needs root (ip netns, veth, iptables)";
        if (!File.Exists("/usr/sbin/iptables") && !File.Exists("/sbin/iptables") && !File.Exists("/usr/bin/iptables"))
            return "host mode needs iptables: make chaos installs it (apt-get install iptables)";
        return null;
    }

    /// <summary>Creates the bridge, one namespace per node, and the proxies.</summary>
    /// <exception cref="InvalidOperationException">Host mode is not available here, or a command failed.</exception>
    public static async Task<HostNetwork> CreateAsync(int nodeCount, int seed)
    {
        if (WhyUnavailable() is { } reason)
            throw new InvalidOperationException(reason);
        // Not a replayed choice: the process id and the time are mixed in so that concurrent runs with one seed get
        // different subnets and namespace names. Nothing a run does depends on the subnet. A subnet that an address on
        // this host or a namespace already uses is skipped: a run that was killed leaves its bridge and namespaces
        // behind, and a new run on the same subnet had two host routes for it, so its nodes' connections were reset
        // from the start (chaos seed 505 on a fresh clone: "no agreed leader within 60 s", a stale 5-node network of
        // subnet 93 beside it). A setup that still collides (a concurrent run took the names first) tries another.
        InvalidOperationException? failure = null;
        for (var attempt = 0UL; attempt < 16; attempt++)
        {
            var (subnets, names) = await NetworksInUseAsync().ConfigureAwait(false);
            var free = Enumerable.Range(1, 250)
                .Where(n => !subnets.Contains(n) && !names.Any(name => name.StartsWith(PrefixFor(n), StringComparison.Ordinal)))
                .ToList();
            if (free.Count == 0)
                break;
            var subnet = free[(int)(SeedMixer.Mix(SeedMixer.FromRunSeed(seed), (ulong)SeedStream.HostSubnet, (ulong)Environment.ProcessId, unchecked((ulong)Environment.TickCount64), attempt) % (ulong)free.Count)];
            var network = new HostNetwork(PrefixFor(subnet), subnet);
            try
            {
                await network.SetUpAsync(nodeCount, seed).ConfigureAwait(false);
                return network;
            }
            catch (InvalidOperationException e)
            {
                failure = e;
                await network.DisposeAsync().ConfigureAwait(false);
            }
        }

        throw new InvalidOperationException("host mode found no free subnet of 10.231.0.0/16 (stale networks of killed runs: `ip netns list` and `ip link` names starting with \"sq\")", failure);
    }

    private static string PrefixFor(int subnet) => $"sq{subnet:x2}{Environment.ProcessId % 256:x2}";

    /// <summary>The third octets of the 10.231.x.y addresses on this host, and the names of its network namespaces and links.</summary>
    private static async Task<(HashSet<int> Subnets, List<string> Names)> NetworksInUseAsync()
    {
        var subnets = new HashSet<int>();
        foreach (System.Text.RegularExpressions.Match match in InUseAddress().Matches(await Shell.CaptureAsync("ip", "-4", "-o", "addr", "show").ConfigureAwait(false)))
            subnets.Add(int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        var names = (await Shell.CaptureAsync("ip", "netns", "list").ConfigureAwait(false))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => line.Split(' ')[0]).ToList();
        // "3: sq5d3bv1@if2: <BROADCAST,...": a veth or a bridge of another run, or left by a killed one.
        names.AddRange((await Shell.CaptureAsync("ip", "-o", "link", "show").ConfigureAwait(false))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => line.Split(':')).Where(parts => parts.Length > 1).Select(parts => parts[1].Trim()));
        return (subnets, names);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"inet 10\.231\.(\d{1,3})\.")]
    private static partial System.Text.RegularExpressions.Regex InUseAddress();

    private async Task SetUpAsync(int nodeCount, int seed)
    {
        await Shell.RunAsync("ip", "link", "add", Bridge, "type", "bridge").ConfigureAwait(false);
        bridgeCreated = true;
        await Shell.RunAsync("ip", "addr", "add", $"10.231.{subnet}.254/24", "dev", Bridge).ConfigureAwait(false);
        await Shell.RunAsync("ip", "link", "set", Bridge, "up").ConfigureAwait(false);
        for (var id = 1; id <= nodeCount; id++)
        {
            var ns = Namespace(id);
            var veth = $"{prefix}v{id}";
            await Shell.RunAsync("ip", "netns", "add", ns).ConfigureAwait(false);
            namespacesCreated.Add(ns);
            await Shell.RunAsync("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns).ConfigureAwait(false);
            await Shell.RunAsync("ip", "link", "set", veth, "master", Bridge, "up").ConfigureAwait(false);
            await Shell.RunAsync("ip", "-n", ns, "addr", "add", $"{Address(id)}/24", "dev", "eth0").ConfigureAwait(false);
            await Shell.RunAsync("ip", "-n", ns, "link", "set", "eth0", "up").ConfigureAwait(false);
            await Shell.RunAsync("ip", "-n", ns, "link", "set", "lo", "up").ConfigureAwait(false);
            await Shell.RunAsync("ip", "netns", "exec", ns, "iptables", "-F", "INPUT").ConfigureAwait(false);

            var advertised = new IPEndPoint(Address(id), RaftPort);
            var listen = new IPEndPoint(Address(id), RaftListenPort);
            proxies[id] = CreateProxyInNamespace(ns, advertised, listen, FaultProxy.SeedFor(seed, id));
            nodes.Add(new NodeAddress(id, advertised.ToString(), listen.ToString(), $"http://{Address(id)}:{ApiPort}", $"https://{Address(id)}:{InternalPort}"));
        }
    }

    /// <inheritdoc/>
    public ProcessStartInfo Wrap(int nodeId, ProcessStartInfo start)
    {
        ArgumentNullException.ThrowIfNull(start);
        var wrapped = new ProcessStartInfo("ip") { UseShellExecute = false };
        foreach (var argument in new[] { "netns", "exec", Namespace(nodeId), start.FileName })
            wrapped.ArgumentList.Add(argument);
        foreach (var argument in start.ArgumentList)
            wrapped.ArgumentList.Add(argument);
        foreach (var (key, value) in start.Environment)
            wrapped.Environment[key] = value;
        return wrapped;
    }

    /// <inheritdoc/>
    public async Task PartitionAsync(IReadOnlyCollection<Link> blocked)
    {
        ArgumentNullException.ThrowIfNull(blocked);
        foreach (var link in blocked)
            await Shell.RunAsync("ip", "netns", "exec", Namespace(link.To), "iptables", "-A", "INPUT", "-s", Address(link.From).ToString(), "-j", "DROP").ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public void SetLinkFault(int? from, int to, LinkFault fault)
    {
        if (from is { } source)
            proxies[to].SetFault(Address(source), fault);
        else
            proxies[to].SetFault(fault);
    }

    /// <inheritdoc/>
    public void Reset(int to) => proxies[to].ResetAll();

    /// <inheritdoc/>
    public async Task HealAsync()
    {
        foreach (var (id, proxy) in proxies)
        {
            proxy.Heal();
            await Shell.RunAsync("ip", "netns", "exec", Namespace(id), "iptables", "-F", "INPUT").ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        foreach (var proxy in proxies.Values)
            await proxy.DisposeAsync().ConfigureAwait(false);
        // Only what this run created: a setup that collided with another run's names must not delete that run's.
        foreach (var ns in namespacesCreated)
            await Shell.RunAsync(true, "ip", "netns", "del", ns).ConfigureAwait(false);
        namespacesCreated.Clear();
        if (bridgeCreated)
            await Shell.RunAsync(true, "ip", "link", "del", Bridge).ConfigureAwait(false);
        bridgeCreated = false;
    }

    private static FaultProxy CreateProxyInNamespace(string ns, IPEndPoint listen, IPEndPoint target, int seed)
    {
        // A socket belongs to the network namespace of the thread that creates it, so the proxy's listener is made on
        // a dedicated thread that has joined the member's namespace; it then accepts from any thread.
        FaultProxy? proxy = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var handle = File.OpenHandle($"/var/run/netns/{ns}", FileMode.Open, FileAccess.Read);
                if (setns((int)handle.DangerousGetHandle(), CloneNewNet) != 0)
                    throw new InvalidOperationException($"setns({ns}) failed with errno {Marshal.GetLastPInvokeError()}");
                proxy = new FaultProxy(listen, target, seed);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
            {
                failure = e;
            }
        })
        { IsBackground = true, Name = $"netns {ns}" };
        thread.Start();
        thread.Join();
        return proxy ?? throw new InvalidOperationException($"cannot create the proxy in namespace {ns}: {failure?.Message}", failure);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setns(int fd, int nstype);

    [LibraryImport("libc")]
    private static partial uint geteuid();
}
