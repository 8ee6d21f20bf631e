using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;

namespace Sequencer.Bench;

/// <summary>
/// A local 3-member etcd (Debian's etcd-server, fsync on as etcd always does) on loopback ports chosen at run time,
/// its processes killed by id on dispose: the system operators already trust, measured beside the cluster in the same
/// run with the same load shape.
/// </summary>
internal sealed class EtcdCluster : IAsyncDisposable
{
    private readonly List<Process> processes = [];

    private EtcdCluster(string root) => Root = root;

    public string Root { get; }

    /// <summary>Each member's client URL.</summary>
    public List<string> ClientUrls { get; } = [];

    /// <summary>The etcd binary: ETCD_BIN, else etcd on the PATH or in /usr/bin; null when there is none.</summary>
    public static string? Locate()
    {
        if (Environment.GetEnvironmentVariable("ETCD_BIN") is { Length: > 0 } configured)
            return File.Exists(configured) ? configured : null;
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':').Append("/usr/bin").Append("/usr/local/bin"))
        {
            var candidate = Path.Combine(directory, "etcd");
            if (directory.Length > 0 && File.Exists(candidate))
                return candidate;
        }

        return null;
    }

    public static async Task<EtcdCluster> StartAsync(string binary, string data, CancellationToken token)
    {
        var root = Path.Combine(data, "etcd");
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
        Directory.CreateDirectory(root);
        var cluster = new EtcdCluster(root);
        try
        {
            var ports = Sequencer.Client.Local.ListenPorts.Take("127.0.0.1", 6);
            var peers = Enumerable.Range(0, 3).Select(i => $"e{i + 1}=http://127.0.0.1:{ports[3 + i]}").ToList();
            for (var i = 0; i < 3; i++)
            {
                var client = $"http://127.0.0.1:{ports[i]}";
                var peer = $"http://127.0.0.1:{ports[3 + i]}";
                cluster.ClientUrls.Add(client);
                var info = new ProcessStartInfo(binary)
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                };
                foreach (var argument in new[]
                {
                    "--name", $"e{i + 1}", "--data-dir", Path.Combine(root, $"e{i + 1}"),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", string.Join(',', peers), "--initial-cluster-state", "new", "--initial-cluster-token", "sequencer-bench",
                    "--log-outputs", Path.Combine(root, $"e{i + 1}.log"), "--logger", "zap",
                })
                {
                    info.ArgumentList.Add(argument);
                }

                var process = Process.Start(info) ?? throw new InvalidOperationException("etcd did not start");
                process.OutputDataReceived += (_, _) => { };
                process.ErrorDataReceived += (_, _) => { };
                process.BeginOutputReadLine();
                process.BeginErrorReadLine();
                cluster.processes.Add(process);
            }

            await cluster.LeaderAsync(TimeSpan.FromSeconds(30), token);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>The leader's client URL, once the members agree on one.</summary>
    public async Task<string> LeaderAsync(TimeSpan timeout, CancellationToken token)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = "no answer";
        while (true)
        {
            foreach (var url in ClientUrls)
            {
                try
                {
                    using var client = new EtcdClient(url);
                    var status = await client.StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddSeconds(2), cancellationToken: token);
                    if (status.Leader != 0 && status.Leader == status.Header.MemberId)
                        return url;
                    last = $"{url}: leader {status.Leader}";
                }
                catch (Grpc.Core.RpcException e)
                {
                    last = $"{url}: {e.Status.Detail}";
                }
            }

            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"the etcd cluster under {Root} elected no leader within {timeout.TotalSeconds:0} s ({last}); see its logs there");
            await Task.Delay(200, token);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var process in processes)
        {
            try
            {
                if (!process.HasExited)
                    process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
            }
            catch (Exception e) when (e is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
            {
                // Already gone.
            }

            process.Dispose();
        }
    }

}

/// <summary>
/// The etcd phase of the bench: closed-loop clients putting 256-byte values (fresh keys) to etcd's leader through its
/// native gRPC API, at the same client counts, warm-up and duration as the cluster's single submits. One gRPC channel
/// per 16 clients (HTTP/2 multiplexes a channel's calls), as etcd's own benchmark tool spreads clients over connections.
/// </summary>
internal static class EtcdBench
{
    public static async Task<IReadOnlyList<ScenarioResult>?> RunAsync(string data, int valueBytes, IReadOnlyList<int> clientCounts, TimeSpan warmup, TimeSpan duration,
        TimeSpan clusterWarmup, CancellationToken token)
    {
        if (EtcdCluster.Locate() is not { } binary)
        {
            Console.WriteLine();
            Console.WriteLine("etcd: skipped, no etcd binary (make bench installs Debian's etcd-server as root; or set ETCD_BIN)");
            return null;
        }

        await using var etcd = await EtcdCluster.StartAsync(binary, data, token);
        var leader = await etcd.LeaderAsync(TimeSpan.FromSeconds(30), token);
        var version = FirstLine(binary, "--version");
        Console.WriteLine();
        Console.WriteLine($"started a local 3-member etcd ({version}, fsync on) under {etcd.Root}; putting to the leader, {leader}");
        var results = new List<ScenarioResult>();
        var channels = new List<EtcdClient>();
        try
        {
            EtcdClient Channel(int client)
            {
                lock (channels)
                {
                    while (channels.Count <= client / 16)
                        channels.Add(new EtcdClient(leader));
                    return channels[client / 16];
                }
            }

            var sequence = 0L;
            RequestSender Sender(int client, int _)
            {
                var channel = Channel(client);
                var random = new Random(HashCode.Combine(client, Environment.TickCount64));
                var value = new byte[valueBytes];
                return async token =>
                {
                    random.NextBytes(value);
                    var key = string.Create(CultureInfo.InvariantCulture, $"bench/{client}/{Interlocked.Increment(ref sequence)}");
                    await channel.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFrom(value) }, cancellationToken: token).ConfigureAwait(false);
                    return true;
                };
            }

            var generator = new LoadGenerator(null, valueBytes, Sender);
            if (clusterWarmup > TimeSpan.Zero)
                await generator.RunAsync("single", 16, 1, TimeSpan.Zero, clusterWarmup / 2, token);
            Console.WriteLine($"{"system",-7} {"clients",7} {"puts/s",10} {"p50 ms",8} {"p99 ms",8} {"max ms",8} {"errors",7}");
            foreach (var clients in clientCounts)
            {
                var result = await generator.RunAsync("etcd", clients, 1, warmup, duration, token);
                results.Add(result);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{"etcd",-7} {clients,7} {result.TxPerSecond,10:0} {result.P50Ms,8:0.0} {result.P99Ms,8:0.0} {result.MaxMs,8:0.0} {result.Errors,7}"));
            }
        }
        finally
        {
            foreach (var channel in channels)
                channel.Dispose();
        }

        return results;
    }

    private static string FirstLine(string binary, string argument)
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo(binary, argument) { RedirectStandardOutput = true, UseShellExecute = false });
            var line = process?.StandardOutput.ReadLine() ?? "etcd";
            process?.WaitForExit(5000);
            return line.Trim();
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "etcd";
        }
    }
}
