using System.Globalization;
using Sequencer.Checker;
using Sequencer.Client;
using Sequencer.Client.Local;



namespace Sequencer.IntegrationTests;

/// <summary>Starts a real 3-node cluster on loopback ports chosen at run time, and kills every process at the end.</summary>
internal sealed class TestCluster : IAsyncDisposable
{
    private readonly string root;
    private readonly List<string> alsoDelete = [];

    /// <summary>Files outside the cluster's directory (an anvil log, a poster key) deleted with it.</summary>
    public void DeleteOnDispose(params string[] paths) => alsoDelete.AddRange(paths);

    private TestCluster(LocalCluster cluster, string root)
    {
        Cluster = cluster;
        this.root = root;
    }

    public LocalCluster Cluster { get; }

    public IReadOnlyList<(int NodeId, SequencerClient Client)> Clients => [.. Cluster.Nodes.Select(n => (n.Spec.Id, n.Client))];

    /// <summary>The consortium's certificates of this cluster (LocalCluster makes them).</summary>
    public string CertificatesDirectory => Path.Combine(root, "certs");

    /// <summary>An HTTP client that presents member <paramref name="member"/>'s certificate (from <paramref name="directory"/>, default this cluster's).</summary>
    public HttpClient MemberClient(int member, string? directory = null)
    {
        directory ??= CertificatesDirectory;
        var certificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPemFile(
            Path.Combine(directory, Sequencer.Core.Security.ConsortiumCertificates.CertificateFile(member)),
            Path.Combine(directory, Sequencer.Core.Security.ConsortiumCertificates.KeyFile(member)));
        // The nodes are this cluster's members: their certificates are the pinned ones of this cluster.
        var pinned = Directory.EnumerateFiles(CertificatesDirectory, "node-*.crt").Select(File.ReadAllText)
            .Select(pem => System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(pem).RawData).ToList();
        return new HttpClient(new SocketsHttpHandler
        {
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                ClientCertificates = [certificate],
                RemoteCertificateValidationCallback = (_, server, _, _) => server is not null && pinned.Any(p => p.AsSpan().SequenceEqual(server.GetRawCertData())),
            },
        })
        {
            Timeout = TimeSpan.FromSeconds(10),
        };
    }

    /// <summary>Node <paramref name="id"/>'s internal listener.</summary>
    public Uri Internal(int id) => new(Cluster.Node(id).Spec.Internal ?? throw new InvalidOperationException("the cluster runs without mutual TLS"));

    /// <summary>The key directory of a signing cluster, or null.</summary>
    public string? KeysDirectory { get; private init; }

    public static async Task<TestCluster> StartAsync(string name, int nodes = 3, IReadOnlyList<string>? extraArguments = null, int signingThreshold = 0,
        NodeBinary? binary = null)
    {
        var root = Path.Combine(Path.GetTempPath(), "sequencer-it", $"{name}-{Environment.ProcessId}-{DateTime.UtcNow:HHmmssfff}");
        string? keys = null;
        if (signingThreshold > 0)
        {
            keys = Path.Combine(root, "keys");
            Sequencer.Threshold.KeyFiles.WriteDealerKeys(keys, signingThreshold, nodes);
        }

        var cluster = LocalCluster.Create(new LocalClusterOptions { Nodes = nodes, DataRoot = root, ExtraArguments = extraArguments ?? [], KeysDirectory = keys, Binary = binary });
        var test = new TestCluster(cluster, root) { KeysDirectory = keys };
        try
        {
            cluster.StartAll();
            await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        }
        catch
        {
            await test.DisposeAsync();
            throw;
        }

        return test;
    }

    /// <summary>Waits until every running node has applied the same height (the leader's), and returns it.</summary>
    public async Task<ulong> WaitForConvergenceAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var last = string.Empty;
        while (DateTime.UtcNow < deadline)
        {
            var running = Cluster.Nodes.Where(n => n.IsRunning).ToList();
            var views = await Task.WhenAll(running.Select(LocalCluster.TryGetClusterAsync));
            last = string.Join(", ", running.Zip(views, (n, v) => $"node{n.Spec.Id}: {(v is null ? "down" : $"height {v.Height} commit {v.CommitIndex} applied {v.AppliedIndex}")}"));
            if (views.All(v => v is not null) && views.Select(v => v!.Height).Distinct().Count() == 1
                && views.All(v => v!.CommitIndex == v.AppliedIndex || ulong.Parse(v.AppliedIndex, CultureInfo.InvariantCulture) >= ulong.Parse(v.CommitIndex, CultureInfo.InvariantCulture)))
            {
                return ulong.Parse(views[0]!.Height, CultureInfo.InvariantCulture);
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"the nodes did not converge within {timeout.TotalSeconds} s: {last}\n{Logs()}");
    }

    public async Task<IReadOnlyList<NodeChain>> ReadChainsAsync()
    {
        var unreachable = new List<int>();
        var running = Clients.Where(c => Cluster.Node(c.NodeId).IsRunning).ToList();
        var chains = await ChainReader.ReadAsync(running, unreachable, CancellationToken.None);
        Assert.Empty(unreachable);
        return chains;
    }

    /// <summary>The node built with deliberate faults (<c>dotnet build node -c TestFaults</c>, which make test runs).</summary>
    public static NodeBinary TestFaultsBinary()
    {
        try
        {
            return NodeBinary.Locate(configuration: "TestFaults");
        }
        catch (FileNotFoundException e)
        {
            throw new InvalidOperationException("build the TestFaults node first: dotnet build node -c TestFaults (make test does)", e);
        }
    }

    /// <summary>
    /// The last <paramref name="lines"/> of the node's log once one of them contains <paramref name="text"/>, or after
    /// <paramref name="timeout"/> (then without it): the console logger writes on its own thread, so a line can follow
    /// the state it reports by a moment.
    /// </summary>
    public async Task<string> WaitForLogAsync(int node, string text, TimeSpan timeout, int lines = 400)
    {
        var deadline = DateTime.UtcNow + timeout;
        var tail = Cluster.Node(node).Tail(lines);
        while (!tail.Contains(text, StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
            tail = Cluster.Node(node).Tail(lines);
        }

        return tail;
    }

    public string Logs() => string.Join("\n", Cluster.Nodes.Select(n => $"--- node{n.Spec.Id} ---\n{n.Tail(30)}"));

    public async ValueTask DisposeAsync()
    {
        await Cluster.DisposeAsync();
        if (Environment.GetEnvironmentVariable("SEQUENCER_KEEP_TEST_DATA") == "1")
            return;
        try
        {
            Directory.Delete(root, recursive: true);
            foreach (var path in alsoDelete)
                File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}

internal static class InvariantAssert
{
    public static void AllPass(IReadOnlyList<InvariantResult> results, Func<string> context)
    {
        var failed = results.Where(r => !r.Passed).ToList();
        Assert.True(failed.Count == 0, string.Join("\n", failed.Select(f => $"{f.Name}: {f.Detail}")) + "\n" + context());
        Assert.Contains(results, r => r.Name == "INV-ORDER");
        Assert.Contains(results, r => r.Name == "INV-ACKED");
        Assert.Contains(results, r => r.Name == "INV-NODUP");
        Assert.Contains(results, r => r.Name == "INV-CHAIN");
    }
}
