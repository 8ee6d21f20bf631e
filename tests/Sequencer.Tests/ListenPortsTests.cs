using System.Net;
using System.Net.Sockets;
using Sequencer.Client.Local;

namespace Sequencer.Tests;

public sealed class ListenPortsTests
{
    [Theory]
    [InlineData("http://127.0.0.1:7101", true)]
    [InlineData("http://localhost:7101", true)]
    [InlineData("127.0.0.2:7201", true)]
    [InlineData("localhost:7201", true)]
    [InlineData("[::1]:7201", true)]
    [InlineData("http://[::1]:7101", true)]
    [InlineData("http://0.0.0.0:7101", false)]
    [InlineData("10.0.0.3:7203", false)]
    [InlineData("http://[2001:db8::2]:7102", false)]
    [InlineData("node3.example:7203", false)]
    public void IsLoopbackAddress_TakesUrlsAndHostPorts(string address, bool loopback)
        => Assert.Equal(loopback, ListenPorts.IsLoopbackAddress(address));

    [Fact]
    public void Ports_AreDistinct_BindableAndOutsideTheEphemeralRange()
    {
        // A port the kernel may give an outgoing connection as its local port (the ephemeral range) can be taken
        // between the choice and the node's bind: the CI run of 2026-12-06 lost a chaos run's node that way.
        var first = ListenPorts.Take("127.0.0.1", 12);
        var second = ListenPorts.Take("127.0.0.1", 12);
        var all = first.Concat(second).ToList();

        Assert.Equal(all.Count, all.Distinct().Count());
        if (ListenPorts.EphemeralStart - ListenPorts.RangeStart >= 1024)
            Assert.All(all, p => Assert.InRange(p, ListenPorts.RangeStart, ListenPorts.EphemeralStart - 1));
        foreach (var port in all)
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
        }
    }

    [Fact]
    public void APortInUse_IsNotHandedOut()
    {
        // Listeners on many of the ports the next call would try: none of them comes back.
        var held = ListenPorts.Take("127.0.0.1", 1)[0] + 1;
        var listeners = new List<TcpListener>();
        try
        {
            for (var port = held; port < held + 8 && port < 65536; port++)
            {
                var listener = new TcpListener(IPAddress.Loopback, port);
                try
                {
                    listener.Start();
                    listeners.Add(listener);
                }
                catch (SocketException)
                {
                    // Someone else's: equally not free.
                }
            }

            var taken = ListenPorts.Take("127.0.0.1", 4);
            var busy = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToHashSet();
            Assert.DoesNotContain(taken, busy.Contains);
        }
        finally
        {
            foreach (var listener in listeners)
                listener.Stop();
        }
    }
}
