using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Sequencer.Checker;

namespace Sequencer.Chaos.Network;

/// <summary>The faults a proxy applies to the traffic of one link (or of every link into its member).</summary>
/// <remarks>Immutable; the proxy swaps whole values so that a pump never sees half of an update.</remarks>
public sealed record LinkFault
{
    /// <summary>No fault.</summary>
    public static LinkFault None { get; } = new();

    /// <summary>Data is swallowed and never delivered; on heal the affected connections are reset.</summary>
    public bool Blackhole { get; init; }

    /// <summary>Data is held (not lost) until the clog is lifted, then flushed in order.</summary>
    public bool Clogged { get; init; }

    /// <summary>Added to every chunk's delivery time.</summary>
    public int DelayMs { get; init; }

    /// <summary>A uniform random extra delay in [0, JitterMs] per chunk (order is kept).</summary>
    public int JitterMs { get; init; }

    /// <summary>
    /// The share of chunks, in percent, that are "lost": TCP would retransmit them, so they arrive a retransmission
    /// timeout (200 ms) late, in order, and the stream stays intact.
    /// </summary>
    public double LossPercent { get; init; }

    /// <summary>True when any fault is set.</summary>
    public bool IsActive => Blackhole || Clogged || DelayMs > 0 || JitterMs > 0 || LossPercent > 0;

    /// <summary>A short description for logs and reports.</summary>
    public override string ToString()
        => !IsActive ? "none"
            : string.Join(",", new[]
            {
                Blackhole ? "blackhole" : null,
                Clogged ? "clog" : null,
                DelayMs > 0 || JitterMs > 0 ? $"delay {DelayMs}±{JitterMs}ms" : null,
                LossPercent > 0 ? $"loss {LossPercent:0.#}%" : null,
            }.Where(s => s is not null));
}

/// <summary>
/// A fault-injecting TCP proxy that stands in front of one member's Raft listener: the member advertises the
/// proxy's address, so every node reaches it through here (etcd's robustness tests do the same). Faults apply to
/// everything into the member, or, when the proxy can tell the source (host mode, one address per node), per
/// source address.
/// </summary>
/// <remarks>
/// Bounded: at most <see cref="MaxConnections"/> connections, and at most <see cref="MaxBufferedChunks"/> chunks of
/// 64 KiB held per direction while clogged or delayed; a connection over that bound is reset rather than buffered
/// without limit.
/// </remarks>
public sealed class FaultProxy : IAsyncDisposable
{
    /// <summary>Connections accepted at most at a time.</summary>
    public const int MaxConnections = 256;

    /// <summary>Chunks queued at most per direction of a connection.</summary>
    public const int MaxBufferedChunks = 1024;

    private const int ChunkBytes = 64 * 1024;
    private const int RetransmitMs = 200;

    private readonly IPEndPoint target;
    private readonly Socket listener;
    private readonly CancellationTokenSource stopping = new();
    private readonly Lock gate = new();
    private readonly List<Connection> connections = [];
    private readonly Random random;
    private readonly Task acceptLoop;
    private LinkFault everyone = LinkFault.None;
    private Dictionary<IPAddress, LinkFault> bySource = [];

    /// <summary>
    /// The seed of the proxy in front of member <paramref name="memberId"/> in a run with seed <paramref name="runSeed"/>:
    /// the same in every process. (The proxy's draws still follow the order in which chunks arrive, which no seed fixes.)
    /// </summary>
    public static int SeedFor(int runSeed, int memberId) => SeedMixer.Derive32(runSeed, SeedStream.Proxy, (ulong)memberId);

    /// <summary>Listens on <paramref name="listen"/> and forwards to <paramref name="target"/>; <paramref name="seed"/> drives jitter and loss (see <see cref="SeedFor"/>).</summary>
    public FaultProxy(IPEndPoint listen, IPEndPoint target, int seed)
    {
        ArgumentNullException.ThrowIfNull(listen);
        this.target = target;
        random = new Random(seed);
        listener = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(listen);
        listener.Listen(128);
        Listen = (IPEndPoint)listener.LocalEndPoint!;
        acceptLoop = Task.Run(AcceptLoopAsync);
    }

    /// <summary>Where the proxy listens (the member's advertised address).</summary>
    public IPEndPoint Listen { get; }

    /// <summary>The fault applied to connections from every source.</summary>
    public LinkFault Fault
    {
        get
        {
            lock (gate)
                return everyone;
        }
    }

    /// <summary>Open connections.</summary>
    public int ConnectionCount
    {
        get
        {
            lock (gate)
                return connections.Count;
        }
    }

    /// <summary>Sets the fault for every source; lifting a blackhole resets the connections it swallowed data of.</summary>
    public void SetFault(LinkFault fault)
    {
        ArgumentNullException.ThrowIfNull(fault);
        List<Connection> reset;
        lock (gate)
        {
            var wasBlackhole = everyone.Blackhole;
            everyone = fault;
            reset = wasBlackhole && !fault.Blackhole ? [.. connections] : [];
        }

        foreach (var connection in reset)
            connection.Reset();
    }

    /// <summary>Sets the fault for connections from <paramref name="source"/> only (needs distinct source addresses).</summary>
    public void SetFault(IPAddress source, LinkFault fault)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(fault);
        List<Connection> reset;
        lock (gate)
        {
            var wasBlackhole = bySource.TryGetValue(source, out var old) && old.Blackhole;
            var next = new Dictionary<IPAddress, LinkFault>(bySource) { [source] = fault };
            if (!fault.IsActive)
                next.Remove(source);
            bySource = next;
            reset = wasBlackhole && !fault.Blackhole ? [.. connections.Where(c => c.Source.Equals(source))] : [];
        }

        foreach (var connection in reset)
            connection.Reset();
    }

    /// <summary>Removes every fault and resets connections that lost data to a blackhole.</summary>
    public void Heal()
    {
        List<Connection> reset;
        lock (gate)
        {
            var hadBlackhole = everyone.Blackhole || bySource.Values.Any(f => f.Blackhole);
            everyone = LinkFault.None;
            bySource = [];
            reset = hadBlackhole ? [.. connections] : [];
        }

        foreach (var connection in reset)
            connection.Reset();
    }

    /// <summary>Closes every open connection abruptly (TCP RST), as a network reset would.</summary>
    public void ResetAll()
    {
        List<Connection> all;
        lock (gate)
            all = [.. connections];
        foreach (var connection in all)
            connection.Reset();
    }

    private LinkFault FaultFor(IPAddress source)
    {
        lock (gate)
            return bySource.TryGetValue(source, out var fault) ? Combine(everyone, fault) : everyone;
    }

    private static LinkFault Combine(LinkFault a, LinkFault b) => new()
    {
        Blackhole = a.Blackhole || b.Blackhole,
        Clogged = a.Clogged || b.Clogged,
        DelayMs = a.DelayMs + b.DelayMs,
        JitterMs = a.JitterMs + b.JitterMs,
        LossPercent = Math.Min(100, a.LossPercent + b.LossPercent),
    };

    private int NextJitter(int max)
    {
        lock (random)
            return max <= 0 ? 0 : random.Next(max + 1);
    }

    private bool NextLoss(double percent)
    {
        lock (random)
            return percent > 0 && random.NextDouble() * 100 < percent;
    }

    private async Task AcceptLoopAsync()
    {
        var token = stopping.Token;
        while (!token.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            var source = ((IPEndPoint)client.RemoteEndPoint!).Address;
            lock (gate)
            {
                if (connections.Count >= MaxConnections)
                {
                    client.Close(0);
                    continue;
                }
            }

            _ = Task.Run(() => ServeAsync(client, source, token), CancellationToken.None);
        }
    }

    private async Task ServeAsync(Socket client, IPAddress source, CancellationToken token)
    {
        var upstream = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.NoDelay = true;
        try
        {
            await upstream.ConnectAsync(target, token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            client.Close(0);
            upstream.Dispose();
            return;
        }

        var connection = new Connection(this, client, upstream, source);
        lock (gate)
            connections.Add(connection);
        try
        {
            await connection.RunAsync(token).ConfigureAwait(false);
        }
        finally
        {
            lock (gate)
                connections.Remove(connection);
            connection.Dispose();
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        listener.Dispose();
        await acceptLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        ResetAll();
        stopping.Dispose();
    }

    private sealed class Connection(FaultProxy proxy, Socket client, Socket upstream, IPAddress source) : IDisposable
    {
        private readonly CancellationTokenSource closed = new();

        public IPAddress Source { get; } = source;

        public async Task RunAsync(CancellationToken token)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(token, closed.Token);
            var inbound = PumpAsync(client, upstream, linked.Token);
            var outbound = PumpAsync(upstream, client, linked.Token);
            await Task.WhenAny(inbound, outbound).ConfigureAwait(false);
            Reset();
            await Task.WhenAll(inbound, outbound).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        public void Reset()
        {
            try
            {
                closed.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }

            client.Close(0);
            upstream.Close(0);
        }

        private async Task PumpAsync(Socket from, Socket to, CancellationToken token)
        {
            var queue = Channel.CreateBounded<(long DueMs, byte[] Data, int Length)>(new BoundedChannelOptions(MaxBufferedChunks)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            var sender = SendLoopAsync(queue.Reader, to, token);
            long lastDue = 0;
            try
            {
                while (!token.IsCancellationRequested)
                {
                    var buffer = new byte[ChunkBytes];
                    var read = await from.ReceiveAsync(buffer, SocketFlags.None, token).ConfigureAwait(false);
                    if (read == 0)
                        break;
                    var fault = proxy.FaultFor(Source);
                    if (fault.Blackhole)
                        continue;
                    var now = Environment.TickCount64;
                    var due = now + fault.DelayMs + proxy.NextJitter(fault.JitterMs) + (proxy.NextLoss(fault.LossPercent) ? RetransmitMs : 0);
                    lastDue = Math.Max(lastDue, due);
                    if (!queue.Writer.TryWrite((lastDue, buffer, read)))
                    {
                        // Over the buffering bound: reset rather than queue without limit.
                        break;
                    }
                }
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
            {
            }
            finally
            {
                queue.Writer.TryComplete();
                await sender.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }

        private async Task SendLoopAsync(ChannelReader<(long DueMs, byte[] Data, int Length)> reader, Socket to, CancellationToken token)
        {
            try
            {
                await foreach (var (dueMs, data, length) in reader.ReadAllAsync(token).ConfigureAwait(false))
                {
                    while (true)
                    {
                        var fault = proxy.FaultFor(Source);
                        if (fault.Blackhole)
                            break;
                        if (fault.Clogged)
                        {
                            await Task.Delay(10, token).ConfigureAwait(false);
                            continue;
                        }

                        var wait = dueMs - Environment.TickCount64;
                        if (wait > 0)
                        {
                            await Task.Delay((int)Math.Min(wait, 50), token).ConfigureAwait(false);
                            continue;
                        }

                        await to.SendAsync(data.AsMemory(0, length), SocketFlags.None, token).ConfigureAwait(false);
                        break;
                    }
                }
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
            {
                Reset();
            }
        }

        public void Dispose()
        {
            client.Dispose();
            upstream.Dispose();
            closed.Dispose();
        }
    }
}
