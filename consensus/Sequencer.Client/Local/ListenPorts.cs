using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Sequencer.Client.Local;

/// <summary>
/// Ports for processes that will listen later (nodes, proxies, anvil, etcd), chosen at run time.
/// </summary>
/// <remarks>
/// A port the kernel hands out for port 0 comes from the ephemeral range, the same range it takes the local port of
/// every outgoing connection from. Between the moment such a port is released and the moment the node binds it, any
/// connection on the machine (another test's proxy, an HTTP client) can take it as its local port, and the node then
/// fails to start with "address already in use". So the ports come from below the ephemeral range
/// (<c>/proc/sys/net/ipv4/ip_local_port_range</c>), where the kernel never picks one by itself: each is checked free
/// by binding it, and a port handed out once is not handed out again by this process (until most of the range is used).
/// Where the ephemeral range leaves too little room below it, the kernel's own choice (port 0) is the fallback.
/// </remarks>
public static class ListenPorts
{
    /// <summary>The lowest port handed out: above the project's fixed local ports (7101-7203, 8545, 17101-18545).</summary>
    public const int RangeStart = 20000;

    private static readonly Lock Gate = new();
    private static readonly HashSet<int> HandedOut = [];
    private static int next = -1;

    /// <summary>The first port of the kernel's ephemeral range (32768 where it cannot be read).</summary>
    public static int EphemeralStart { get; } = ReadEphemeralStart();

    /// <summary><paramref name="count"/> distinct ports on <paramref name="host"/>, each free when it was checked.</summary>
    public static int[] Take(string host, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        var address = IPAddress.Parse(host);
        var size = EphemeralStart - RangeStart;
        if (size < 1024)
            return KernelChosen(address, count);
        lock (Gate)
        {
            if (next < 0)
                next = RangeStart + (int)(unchecked((uint)(Environment.ProcessId * 7919 + Environment.TickCount)) % (uint)size);
            if (HandedOut.Count + count > size / 2)
                HandedOut.Clear();
            var ports = new List<int>(count);
            for (var tried = 0; ports.Count < count && tried < size; tried++)
            {
                var port = next;
                next = next + 1 >= EphemeralStart ? RangeStart : next + 1;
                if (HandedOut.Contains(port) || !IsFree(address, port))
                    continue;
                HandedOut.Add(port);
                ports.Add(port);
            }

            if (ports.Count < count)
                throw new InvalidOperationException($"no {count} free ports on {host} between {RangeStart} and {EphemeralStart}");
            return [.. ports];
        }
    }

    private static bool IsFree(IPAddress address, int port)
    {
        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(1);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static int[] KernelChosen(IPAddress address, int count)
    {
        var listeners = new List<TcpListener>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var listener = new TcpListener(address, 0);
                listener.Start();
                listeners.Add(listener);
            }

            return [.. listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port)];
        }
        finally
        {
            foreach (var listener in listeners)
                listener.Stop();
        }
    }

    private static int ReadEphemeralStart()
    {
        try
        {
            var text = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range");
            var first = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[0];
            return int.Parse(first, CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return 32768;
        }
    }

    /// <summary>
    /// True when <paramref name="address"/> (an http(s) URL, <c>host:port</c> or a bare host) names a loopback host:
    /// <c>localhost</c> or a loopback IP address. A node without certificates takes only such addresses.
    /// </summary>
    public static bool IsLoopbackAddress(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var host = Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" ? uri.Host
            : address.LastIndexOf(':') is > 0 and var colon ? address[..colon]
            : address;
        host = host.Trim('[', ']');
        return host == "localhost" || (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip));
    }
}
