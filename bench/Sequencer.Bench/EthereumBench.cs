using System.Collections.Concurrent;
using System.Globalization;
using Sequencer.Ethereum;

namespace Sequencer.Bench;

/// <summary>
/// The validation phase of the bench (issue 13): the same single and bulk scenarios on a fresh 2-of-3 signing cluster in
/// opaque mode (random bytes) and in ethereum mode (each client its own sender, sending EIP-1559 txs of about 256 bytes
/// with its nonces in order, signed before the scenario so that the load generator's signing does not compete with the
/// nodes), and the throughput side by side.
/// </summary>
internal static class EthereumBench
{
    private static int clientsMax((string Mode, int Clients, int PerRequest)[] scenarios) => scenarios.Max(s => s.Clients);

    /// <summary>The most txs signed for one scenario (a scenario that uses them up says so).</summary>
    private const int MaxPool = 90_000;

    public static async Task<int> RunAsync(string data, string[] nodeArguments, bool withOpaque, TimeSpan warmup, TimeSpan duration, Uri? given, CancellationToken token)
    {
        var scenarios = new (string Mode, int Clients, int PerRequest)[] { ("single", 16, 1), ("single", 64, 1), ("bulk", 16, 100) };
        var results = new Dictionary<string, List<ScenarioResult>>();
        foreach (var mode in withOpaque ? new[] { "opaque", "ethereum" } : ["ethereum"])
        {
            // --target: a running ethereum-mode cluster (its own configuration), measured as it is.
            await using var started = given is null ? await BenchCluster.StartAsync(data, signing: true, [.. nodeArguments, "--validation", mode], token) : null;
            var cluster = new { Target = given ?? started!.Target };
            var rows = results[mode] = [];
            Console.WriteLine();
            Console.WriteLine($"validation {mode}:");
            Console.WriteLine($"{"mode",-7} {"clients",7} {"txs/req",7} {"tx/s",10} {"p50 ms",8} {"p99 ms",8} {"errors",7}");
            var keys = Enumerable.Range(0, 64).Select(i => EthKey.FromHex("0x" + (0x1000 + i).ToString("x64", CultureInfo.InvariantCulture))).ToArray();
            var nonces = new ulong[keys.Length];
            if (clientsMax(scenarios) > keys.Length)
                throw new InvalidOperationException("more clients than senders");
            // A short warm-up of the fresh cluster (JIT tiers), in its own mode.
            foreach (var (scenarioMode, clients, perRequest) in new[] { ("warm-up", 16, 10) }.Concat(scenarios))
            {
                var seconds = scenarioMode == "warm-up" ? TimeSpan.FromSeconds(10) : warmup + duration;
                LoadGenerator generator;
                var exhausted = 0;
                if (mode == "ethereum")
                {
                    // Each client one sender; txs signed ahead in parallel: the expected rate over the scenario, capped.
                    var perClient = Math.Max(perRequest * 4, MaxPool / clients);
                    var pools = new ConcurrentQueue<byte[]>[clients];
                    // Each sender's next nonce as the cluster has it (txs sent but cut off at the end of a scenario may or may not be ordered).
                    for (var c = 0; c < Math.Min(clients, keys.Length); c++)
                        nonces[c] = await Http.NextNonceAsync(cluster.Target, keys[c], token).ConfigureAwait(false);
                    Parallel.For(0, clients, c =>
                    {
                        var key = keys[c % keys.Length];
                        var queue = new ConcurrentQueue<byte[]>();
                        lock (keys[c % keys.Length])
                        {
                            for (var i = 0; i < perClient; i++)
                                queue.Enqueue(ValidationProbe.Signed(key, nonces[c % keys.Length]++));
                        }

                        pools[c] = queue;
                    });
                    generator = new LoadGenerator(cluster.Target, 256, (client, count) =>
                    {
                        var pool = pools[client];
                        return async token =>
                        {
                            var batch = new List<string>(count);
                            while (batch.Count < count && pool.TryDequeue(out var tx))
                                batch.Add("0x" + Convert.ToHexStringLower(tx));
                            if (batch.Count == 0)
                            {
                                Interlocked.Exchange(ref exhausted, 1);
                                await Task.Delay(Timeout.Infinite, token).ConfigureAwait(false);
                            }

                            return await Http.PostAsync(cluster.Target, batch, token).ConfigureAwait(false);
                        };
                    });
                }
                else
                {
                    generator = new LoadGenerator(cluster.Target, 256);
                }

                var load = await generator.RunAsync(scenarioMode, clients, perRequest, scenarioMode == "warm-up" ? TimeSpan.Zero : warmup,
                    scenarioMode == "warm-up" ? seconds : duration, token);
                if (scenarioMode == "warm-up")
                    continue;
                rows.Add(load);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{scenarioMode,-7} {clients,7} {perRequest,7} {load.TxPerSecond,10:0} {load.P50Ms,8:0.0} {load.P99Ms,8:0.0} {load.Errors,7}{(exhausted == 1 ? "   (the pre-signed txs ran out: a lower bound)" : "")}"));
            }
        }

        if (results.TryGetValue("opaque", out var opaque) && results.TryGetValue("ethereum", out var ethereum))
        {
            Console.WriteLine();
            Console.WriteLine("ethereum mode against opaque (each on its own fresh 2-of-3 signing cluster):");
            for (var i = 0; i < scenarios.Length; i++)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  {scenarios[i].Mode} {scenarios[i].Clients} clients x {scenarios[i].PerRequest}: opaque {opaque[i].TxPerSecond:0} tx/s, ethereum {ethereum[i].TxPerSecond:0} tx/s ({ethereum[i].TxPerSecond / Math.Max(1, opaque[i].TxPerSecond):0%}); p99 {opaque[i].P99Ms:0.0} / {ethereum[i].P99Ms:0.0} ms"));
            }
        }

        return results.Values.SelectMany(r => r).Any(r => r.Errors > 0) ? 1 : 0;
    }

    // JSON submits of pre-signed txs; true when ordered.
    private static class Http
    {
        public static async Task<ulong> NextNonceAsync(Uri target, EthKey key, CancellationToken token)
        {
            // Until the genesis entry is applied the node has no accounts to show.
            for (var attempt = 0; attempt < 100; attempt++)
            {
                try
                {
                    return await ReadNextNonceAsync(target, key, token).ConfigureAwait(false);
                }
                catch (HttpRequestException) when (attempt < 99)
                {
                    await Task.Delay(200, token).ConfigureAwait(false);
                }
            }

            throw new InvalidOperationException("unreachable");
        }

        private static async Task<ulong> ReadNextNonceAsync(Uri target, EthKey key, CancellationToken token)
        {
            await using var stream = await Client.GetStreamAsync(new Uri(target, $"/v1/accounts/{key.Address.ToString().ToLowerInvariant()}"), token).ConfigureAwait(false);
            using var document = await System.Text.Json.JsonDocument.ParseAsync(stream, cancellationToken: token).ConfigureAwait(false);
            return ulong.Parse(document.RootElement.GetProperty("nextNonce").GetString()!, CultureInfo.InvariantCulture);
        }

        private static readonly HttpClient Client = new(new SocketsHttpHandler { MaxConnectionsPerServer = 512, UseProxy = false }) { Timeout = TimeSpan.FromSeconds(30) };

        public static async Task<bool> PostAsync(Uri target, List<string> txs, CancellationToken token)
        {
            using var content = System.Net.Http.Json.JsonContent.Create(txs.Count == 1 ? (object)new { tx = txs[0] } : new { txs });
            using var response = await Client.PostAsync(new Uri(target, "/v1/txs"), content, token).ConfigureAwait(false);
            await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false);
            return response.IsSuccessStatusCode;
        }
    }
}
