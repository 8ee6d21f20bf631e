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
        // different subnets and namespace names. Nothing a run does depends on the subnet.
        var subnet = 1 + (int)(SeedMixer.Mix(SeedMixer.FromRunSeed(seed), (ulong)SeedStream.HostSubnet, (ulong)Environment.ProcessId, unchecked((ulong)Environment.TickCount64)) % 250);
        var network = new HostNetwork($"sq{subnet:x2}{Environment.ProcessId % 256:x2}", subnet);
        try
        {
            await network.SetUpAsync(nodeCount, seed).ConfigureAwait(false);
        }
        catch
        {
            await network.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return network;
    }

    private async Task SetUpAsync(int nodeCount, int seed)
    {
        await Shell.RunAsync("ip", "link", "add", Bridge, "type", "bridge").ConfigureAwait(false);
        await Shell.RunAsync("ip", "addr", "add", $"10.231.{subnet}.254/24", "dev", Bridge).ConfigureAwait(false);
        await Shell.RunAsync("ip", "link", "set", Bridge, "up").ConfigureAwait(false);
        for (var id = 1; id <= nodeCount; id++)
        {
            var ns = Namespace(id);
            var veth = $"{prefix}v{id}";
            await Shell.RunAsync("ip", "netns", "add", ns).ConfigureAwait(false);
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
        for (var id = 1; id <= 16; id++)
            await Shell.RunAsync(true, "ip", "netns", "del", Namespace(id)).ConfigureAwait(false);
        await Shell.RunAsync(true, "ip", "link", "del", Bridge).ConfigureAwait(false);
    }

    /// <summary>Removes namespaces and bridges left by runs that were killed (their names start with "sq").</summary>
    public static async Task CleanStaleAsync(string prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var list = await Shell.CaptureAsync("ip", "netns", "list").ConfigureAwait(false);
        foreach (var line in list.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var name = line.Split(' ')[0];
            if (name.StartsWith(prefix, StringComparison.Ordinal))
                await Shell.RunAsync(true, "ip", "netns", "del", name).ConfigureAwait(false);
        }
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
