using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Sequencer.Client;
using Sequencer.Client.Local;
using Sequencer.Ethereum;
using Sequencer.L1;

namespace Sequencer.Bench;

/// <summary>
/// The L1 phase of the bench: a 2-of-3 cluster posting to a local anvil (one block a second, final two blocks deep),
/// paced load, then submit→posted and submit→finalized per sampled tx (from each tx's own times: received, posted,
/// finalized, all on the machine's clock) and the gas of each post and per batch it newly covered.
/// </summary>
internal static class L1Probe
{

    public static async Task<int> RunAsync(string data, int txBytes, double txPerSecond, TimeSpan duration, string[] extraArguments, CancellationToken token)
    {
        var root = Path.Combine(data, "cluster-l1");
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
        Directory.CreateDirectory(root);
        await using var anvil = await LocalAnvil.StartAsync(Path.Combine(root, "anvil.log"), blockTimeSeconds: 1, token: token);
        var inbox = Address.ForContract(EthKey.FromHex(LocalAnvil.DeployerKey).Address, 0);
        var posterKey = Path.Combine(root, "poster.key");
        Sequencer.Core.Storage.DurableFiles.WriteAllText(posterKey, LocalAnvil.DefaultKey, secret: true);
        var keys = Path.Combine(root, "keys");
        var group = Sequencer.Threshold.KeyFiles.WriteDealerKeys(keys, 2, 3);
        using var rpc = new EthRpcClient(anvil.Rpc);
        var deployed = await new EthSender(rpc, EthKey.FromHex(LocalAnvil.DeployerKey), anvil.ChainId)
            .SendAsync(null, InboxContract.Deployment(1, group.Epoch, EthHex.ToBytes(group.GroupKey)), TimeSpan.FromSeconds(30), token: token);
        await using var cluster = LocalCluster.Create(new LocalClusterOptions
        {
            Nodes = 3,
            DataRoot = root,
            KeysDirectory = keys,
            ExtraArguments = ["--l1-rpc", anvil.Rpc.ToString(), "--l1-contract", inbox.ToString(), "--l1-key-file", posterKey, "--l1-finality-depth", "2", .. extraArguments],
        });
        cluster.StartAll();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(60), token: token);
        var target = cluster.Node(leader).Client;
        Console.WriteLine();
        Console.WriteLine($"== L1: 2-of-3 cluster posting to anvil (1 s blocks, final 2 blocks deep), inbox deployed in block {deployed.BlockNumber}; {txPerSecond:0} tx/s offered for {duration.TotalSeconds:0} s in requests of 10 from 8 clients");

        // Paced load; every 20th acknowledged tx is sampled.
        var startBlock = await rpc.BlockNumberAsync(token);
        var sampled = new List<string>();
        long acknowledged = 0, failed = 0;
        using var stop = new CancellationTokenSource(duration);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop.Token, token);
        const int clients = 8;
        var interval = TimeSpan.FromSeconds(clients * 10 / txPerSecond);
        var tasks = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var random = new Random(c + 1);
            var next = Stopwatch.GetTimestamp();
            while (!linked.IsCancellationRequested)
            {
                var batch = Enumerable.Range(0, 10).Select(_ =>
                {
                    var tx = new byte[txBytes];
                    random.NextBytes(tx);
                    return (ReadOnlyMemory<byte>)tx;
                }).ToList();
                try
                {
                    var results = await target.SubmitAsync(batch, linked.Token);
                    Interlocked.Add(ref acknowledged, results.Count);
                    lock (sampled)
                    {
                        if (sampled.Count < 5_000)
                            sampled.AddRange(results.Where((_, i) => (i + c) % 20 == 0).Select(r => r.Hash));
                    }
                }
                catch (Exception e) when (e is HttpRequestException or SequencerApiException or TaskCanceledException)
                {
                    if (!linked.IsCancellationRequested)
                        Interlocked.Increment(ref failed);
                }

                next += (long)(interval.TotalSeconds * Stopwatch.Frequency);
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next);
                if (wait > TimeSpan.Zero)
                    await Task.Delay(wait, linked.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        })).ToList();
        await Task.WhenAll(tasks);

        // Everything signed must reach the contract and become final.
        var height = ulong.Parse((await target.GetClusterAsync(token)).Height, CultureInfo.InvariantCulture);
        var reader = new InboxReader(rpc, inbox);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        var finalized = false;
        while (DateTime.UtcNow < deadline && !finalized)
        {
            using var document = JsonDocument.Parse(await new HttpClient().GetStringAsync(new Uri(target.BaseUrl, "/v1/l1"), token));
            finalized = ulong.Parse(document.RootElement.GetProperty("finalizedHeight").GetString()!, CultureInfo.InvariantCulture) >= height;
            await Task.Delay(250, token);
        }

        var posted = new List<double>();
        var final = new List<double>();
        foreach (var hash in sampled)
        {
            var status = await target.GetTxAsync(hash, token);
            if (status?.Times is { } times && times.TryGetValue("received", out var received))
            {
                if (times.TryGetValue("posted", out var p))
                    posted.Add(p - received);
                if (times.TryGetValue("finalized", out var f))
                    final.Add(f - received);
            }
        }

        // Gas: every post of the window, its receipt, and the batches it newly covered.
        var events = await reader.HeadsPostedAsync(startBlock, await rpc.BlockNumberAsync(token), token);
        var gas = new List<double>();
        var perBatch = new List<double>();
        ulong previous = events.Count > 0 ? (await reader.HeadsPostedAsync(0, startBlock > 0 ? startBlock - 1 : 0, token)).Select(e => e.Height).DefaultIfEmpty(0UL).Max() : 0;
        foreach (var posting in events)
        {
            var receipt = await rpc.GetTransactionReceiptAsync(posting.Log.TransactionHash, token);
            if (receipt is null)
                continue;
            gas.Add(receipt.GasUsed);
            perBatch.Add((double)receipt.GasUsed / Math.Max(1, posting.Height - previous));
            previous = posting.Height;
        }

        Console.WriteLine($"   acknowledged {acknowledged} txs ({acknowledged / duration.TotalSeconds:0} tx/s), {failed} failed requests; height {height}; everything finalized on L1: {(finalized ? "yes" : "NO (within 60 s)")}");
        Console.WriteLine($"   submit→posted    {Describe(posted)}");
        Console.WriteLine($"   submit→finalized {Describe(final)}");
        Console.WriteLine($"   {events.Count} posts: gas per post {Describe(gas, "")}; gas per covered batch {Describe(perBatch, "")} ({height / (double)Math.Max(1, events.Count):0} batches per post)");
        return finalized && failed == 0 ? 0 : 1;
    }

    private static string Describe(List<double> values, string unit = " ms")
    {
        if (values.Count == 0)
            return "no samples";
        values.Sort();
        double At(double q) => values[Math.Min(values.Count - 1, (int)Math.Ceiling(q * values.Count) - 1)];
        return string.Create(CultureInfo.InvariantCulture, $"p50 {At(0.5):0}{unit}, p99 {At(0.99):0}{unit}, max {values[^1]:0}{unit} ({values.Count} samples)");
    }
}
