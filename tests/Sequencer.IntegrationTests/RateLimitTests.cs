using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Sequencer.IntegrationTests;

// Issue 9: per-client rate limits on the public API, answering 429 rate_limited with Retry-After.
[Collection("clusters")]
public sealed class RateLimitTests
{
    // High enough that the harness's own polling from 127.0.0.1 (at most 20 requests a second) stays under it.
    private const int PerSecond = 50;

    [Fact]
    public async Task AClientOverItsRate_Gets429RateLimited_WhileAnotherClientAndForwardedSubmitsAreServed()
    {
        await using var test = await TestCluster.StartAsync("ratelimit", nodes: 3, extraArguments: ["--limit", $"clientRequestsPerSecond={PerSecond}"]);
        var leader = test.Cluster.Node(await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30)));
        var api = new Uri(leader.Spec.Api);

        // Loopback answers on every 127/8 address, so two clients with addresses of their own can be real.
        using var greedy = ClientFrom(IPAddress.Parse("127.0.0.2"));
        using var other = ClientFrom(IPAddress.Parse("127.0.0.3"));

        // The greedy client spends its burst (one second's worth) and more, 16 requests at a time, so that it outruns
        // the refill however slow each request is on a loaded machine.
        var statuses = new List<HttpStatusCode>();
        HttpResponseMessage? refused = null;
        for (var round = 0; round < 200 && refused is null; round++)
        {
            var responses = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => greedy.GetAsync(new Uri(api, "/v1/cluster"))));
            foreach (var response in responses)
            {
                statuses.Add(response.StatusCode);
                if (response.StatusCode == HttpStatusCode.TooManyRequests && refused is null)
                    refused = response;
                else
                    response.Dispose();
            }
        }

        Assert.NotNull(refused);
        Assert.True(statuses.Count(s => s == HttpStatusCode.OK) >= PerSecond / 2, $"the burst is served first: {string.Join(",", statuses)}");
        Assert.Equal(TimeSpan.FromSeconds(1), refused.Headers.RetryAfter?.Delta);
        using (var body = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()))
        {
            Assert.Equal("rate_limited", body.RootElement.GetProperty("error").GetString());
            Assert.False(string.IsNullOrEmpty(body.RootElement.GetProperty("message").GetString()));
        }

        refused.Dispose();

        // Another client is not affected, and health probes are never limited.
        using (var response = await other.GetAsync(new Uri(api, "/v1/cluster")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using (var response = await greedy.GetAsync(new Uri(api, "/health/live")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        // A follower forwards submits from many clients to the leader from its own address: the leader does not count
        // them against the follower, so more submits than the rate allows go through one follower within a second.
        var follower = test.Cluster.Nodes.First(n => n.Spec.Id != leader.Spec.Id);
        var submits = Enumerable.Range(0, PerSecond * 2).Select(async i =>
        {
            using var client = ClientFrom(IPAddress.Parse($"127.0.1.{i + 1}"));
            var content = new StringContent($"{{\"tx\":\"0x{Convert.ToHexString(Encoding.UTF8.GetBytes($"forwarded-{i}-{Environment.TickCount64}"))}\"}}", Encoding.UTF8, "application/json");
            var answer = string.Empty;
            for (var attempt = 0; attempt < 5; attempt++)
            {
                // A starved machine can lose its leader for a moment: the follower then answers 503 no_leader, and a
                // client retries once a leader is known, as real clients do.
                using var response = await client.PostAsync(new Uri(new Uri(follower.Spec.Api), "/v1/txs"), content);
                answer = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
                if (response.StatusCode != HttpStatusCode.ServiceUnavailable)
                    break;
                await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
            }

            return answer;
        });
        var forwarded = await Task.WhenAll(submits);
        Assert.True(forwarded.All(answer => answer.StartsWith("200 ", StringComparison.Ordinal)), string.Join("\n", forwarded.Distinct().Take(5)));

        // A process at a member's address cannot claim to forward: the header that used to mark a forwarded request
        // (and exempted it when it came from a member's address) buys nothing on the public listener, and the route
        // members forward to is served only on the internal listener, to a member's certificate.
        using (var local = ClientFrom(IPAddress.Loopback))
        {
            Assert.Contains(IPAddress.Loopback.ToString(), leader.Spec.Api, StringComparison.Ordinal);
            var claimed = new List<HttpStatusCode>();
            for (var round = 0; round < 200 && !claimed.Contains(HttpStatusCode.TooManyRequests); round++)
            {
                var responses = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ =>
                {
                    var request = new HttpRequestMessage(HttpMethod.Get, new Uri(api, "/v1/cluster"));
                    request.Headers.Add("X-Sequencer-Forwarded", follower.Spec.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                    return local.SendAsync(request);
                }));
                foreach (var response in responses)
                {
                    claimed.Add(response.StatusCode);
                    response.Dispose();
                }
            }

            Assert.Contains(HttpStatusCode.TooManyRequests, claimed);
            using var content = new StringContent("{\"tx\":\"0x01\"}", Encoding.UTF8, "application/json");
            using var direct = await other.PostAsync(new Uri(api, "/internal/v1/txs"), content);
            Assert.Equal(HttpStatusCode.NotFound, direct.StatusCode);
        }

        // After a second the greedy client is served again.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        HttpStatusCode last;
        do
        {
            await Task.Delay(100);
            using var response = await greedy.GetAsync(new Uri(api, "/v1/cluster"));
            last = response.StatusCode;
        }
        while (last != HttpStatusCode.OK && DateTime.UtcNow < deadline);
        Assert.Equal(HttpStatusCode.OK, last);
    }

    private static HttpClient ClientFrom(IPAddress local)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, token) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.Bind(new IPEndPoint(local, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, token);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(15) };
    }
}
