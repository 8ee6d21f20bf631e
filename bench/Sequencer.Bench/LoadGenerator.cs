using System.Buffers;
using System.Diagnostics;
using System.Net.Http.Headers;
using MessagePack;

namespace Sequencer.Bench;

/// <summary>The figures of one load scenario.</summary>
internal sealed record ScenarioResult(string Mode, int Clients, int TxsPerRequest, long Txs, long Requests, long Errors, double Seconds,
    double P50Ms, double P99Ms, double MaxMs)
{
    public double TxPerSecond => Txs / Seconds;
}

/// <summary>Sends one request of a client and tells whether it succeeded; made once per client.</summary>
internal delegate Task<bool> RequestSender(CancellationToken token);

/// <summary>
/// Closed-loop clients: each sends a request of fresh random txs (MessagePack bins), waits for the answer (the txs
/// are ordered), records the latency and sends the next. Latency is submit to ordered, per request. With a
/// <paramref name="senders"/> factory (client index, txs per request → sender) the same loop drives another system
/// (etcd, for the side-by-side bench); it then sends nothing over HTTP.
/// </summary>
internal sealed class LoadGenerator(Uri? target, int txBytes, Func<int, int, RequestSender>? senders = null)
{
    /// <param name="requestsPerSecond">Open-loop pacing: the total request rate over all clients; null for closed-loop clients.</param>
    /// <param name="onMeasuring">Called when the warm-up ends and measuring starts.</param>
    public async Task<ScenarioResult> RunAsync(string mode, int clients, int txsPerRequest, TimeSpan warmup, TimeSpan duration, CancellationToken token,
        double? requestsPerSecond = null, Func<Task>? onMeasuring = null)
    {
        using var http = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = clients,
            UseProxy = false,
            PooledConnectionLifetime = TimeSpan.FromMinutes(10),
        })
        {
            BaseAddress = target ?? new Uri("http://127.0.0.1/"),
            Timeout = TimeSpan.FromSeconds(30),
        };

        var measuring = 0;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
        var latencies = new List<double>[clients];
        var txs = new long[clients];
        var requests = new long[clients];
        var errors = new long[clients];
        var tasks = new Task[clients];
        for (var c = 0; c < clients; c++)
        {
            var client = c;
            latencies[c] = new List<double>(1 << 16);
            tasks[c] = Task.Run(async () =>
            {
                var random = new Random(HashCode.Combine(client, Environment.TickCount64, mode));
                var body = new ArrayBufferWriter<byte>(txsPerRequest * (txBytes + 4) + 16);
                var tx = new byte[txBytes];
                var send = senders?.Invoke(client, txsPerRequest) ?? (async token =>
                {
                    body.ResetWrittenCount();
                    var writer = new MessagePackWriter(body);
                    writer.WriteMapHeader(1);
                    writer.Write(txsPerRequest == 1 ? "tx" : "txs");
                    if (txsPerRequest > 1)
                        writer.WriteArrayHeader(txsPerRequest);
                    for (var i = 0; i < txsPerRequest; i++)
                    {
                        random.NextBytes(tx);
                        writer.Write(tx);
                    }

                    writer.Flush();
                    using var content = new ReadOnlyMemoryContent(body.WrittenMemory);
                    content.Headers.ContentType = new MediaTypeHeaderValue("application/x-msgpack");
                    using var response = await http.PostAsync("/v1/txs", content, token).ConfigureAwait(false);
                    await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false);
                    return response.IsSuccessStatusCode;
                });
                var interval = requestsPerSecond is { } rate ? TimeSpan.FromSeconds(clients / rate) : TimeSpan.Zero;
                var next = Stopwatch.GetTimestamp() + (long)(interval.TotalSeconds * Stopwatch.Frequency * client / clients);
                while (!stop.IsCancellationRequested)
                {
                    if (interval > TimeSpan.Zero)
                    {
                        var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next);
                        if (wait > TimeSpan.Zero)
                        {
                            try
                            {
                                await Task.Delay(wait, stop.Token).ConfigureAwait(false);
                            }
                            catch (OperationCanceledException)
                            {
                                return;
                            }
                        }

                        next += (long)(interval.TotalSeconds * Stopwatch.Frequency);
                    }

                    var started = Stopwatch.GetTimestamp();
                    try
                    {
                        var succeeded = await send(stop.Token).ConfigureAwait(false);
                        var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                        if (Volatile.Read(ref measuring) == 1)
                        {
                            if (succeeded)
                            {
                                latencies[client].Add(elapsed);
                                txs[client] += txsPerRequest;
                                requests[client]++;
                            }
                            else
                            {
                                errors[client]++;
                            }
                        }
                    }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (Exception e) when (e is HttpRequestException or Grpc.Core.RpcException)
                    {
                        if (Volatile.Read(ref measuring) == 1)
                            errors[client]++;
                    }
                }
            }, CancellationToken.None);
        }

        await Task.Delay(warmup, token).ConfigureAwait(false);
        if (onMeasuring is not null)
            await onMeasuring().ConfigureAwait(false);
        Volatile.Write(ref measuring, 1);
        var clock = Stopwatch.StartNew();
        await Task.Delay(duration, token).ConfigureAwait(false);
        Volatile.Write(ref measuring, 0);
        var seconds = clock.Elapsed.TotalSeconds;
        await stop.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(tasks).ConfigureAwait(false);

        var all = latencies.SelectMany(l => l).ToArray();
        Array.Sort(all);
        double Percentile(double q) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)(q * all.Length))];
        return new ScenarioResult(mode, clients, txsPerRequest, txs.Sum(), requests.Sum(), errors.Sum(), seconds,
            Percentile(0.50), Percentile(0.99), all.Length == 0 ? double.NaN : all[^1]);
    }
}
