using System.Net.Sockets;
using System.Text;
using Sequencer.Client.Local;

namespace Sequencer.IntegrationTests;

// DESIGN section 8: the node refuses a request before reading its body when its in-flight bytes budget is spent.
[Collection("clusters")]
public sealed class RequestBudgetTests
{
    private const int BudgetBytes = 1024 * 1024;

    [Fact]
    public async Task DeclaredLengthOverRemainingBudget_Refused429BeforeItsBodyIsSent_AndAnAbortedRequestReleasesItsReservation()
    {
        await using var test = await TestCluster.StartAsync("budget", nodes: 1,
            extraArguments: ["--limit", $"maxRequestBytes={BudgetBytes}", "--limit", $"maxInFlightRequestBytes={BudgetBytes}"]);
        var node = test.Cluster.Node(1);
        var api = new Uri(node.Spec.Api);

        // A slow client declares most of the budget and sends only the start of its body.
        using var slow = new TcpClient();
        await slow.ConnectAsync(api.Host, api.Port);
        var held = BudgetBytes - 1000;
        await slow.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, held) + "{\"txs\": [\"0x00"));
        await WaitForInFlightBytesAsync(node, held, test);

        // The next request declares more than is left, and sends headers only: the answer cannot wait for its body.
        using (var refused = new TcpClient())
        {
            await refused.ConnectAsync(api.Host, api.Port);
            await refused.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, 5000)));
            var answer = await ReadAnswerAsync(refused.GetStream(), "}", TimeSpan.FromSeconds(10));
            Assert.StartsWith("HTTP/1.1 429", answer, StringComparison.Ordinal);
            Assert.Contains("Retry-After: 1", answer, StringComparison.OrdinalIgnoreCase);
            Assert.Contains("\"error\":\"overloaded\"", answer, StringComparison.Ordinal);
            Assert.Contains("\"message\":", answer, StringComparison.Ordinal);
        }

        // The members' internal routes (on the mutual-TLS listener) have a budget of their own: public submits that
        // hold the public one do not refuse a signer's shares. This body is read and refused as malformed, not as
        // overloaded.
        using (var member = test.MemberClient(1))
        {
            using var content = new ByteArrayContent(new byte[2000]);
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/x-msgpack");
            using var answer = await member.PostAsync(new Uri(test.Internal(1), "/internal/v1/shares"), content);
            var text = await answer.Content.ReadAsStringAsync();
            Assert.True(answer.StatusCode == System.Net.HttpStatusCode.BadRequest, $"{(int)answer.StatusCode}: {text}");
            Assert.Contains("\"error\":\"bad_shares\"", text, StringComparison.Ordinal);
        }

        // Over the request limit itself: 413 at once, nothing reserved.
        using (var tooLarge = new TcpClient())
        {
            await tooLarge.ConnectAsync(api.Host, api.Port);
            await tooLarge.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, BudgetBytes + 1)));
            var answer = await ReadAnswerAsync(tooLarge.GetStream(), "}", TimeSpan.FromSeconds(10));
            Assert.StartsWith("HTTP/1.1 413", answer, StringComparison.Ordinal);
            Assert.Contains("\"error\":\"body_too_large\"", answer, StringComparison.Ordinal);
        }

        var view = await node.Client.GetClusterAsync();
        Assert.Equal(held, view.Pipeline!["inFlightRequestBytes"]);
        Assert.True(view.Pipeline["requestBudgetRefusals"] >= 1, "the refusal is counted");
        Assert.Equal(BudgetBytes, view.Limits["maxInFlightRequestBytes"]);

        // The slow client goes away mid-body: its reservation is returned, and submits are admitted again.
        slow.Client.LingerState = new LingerOption(true, 0);
        slow.Close();
        await WaitForInFlightBytesAsync(node, 0, test);
        var tx = new byte[32];
        Random.Shared.NextBytes(tx);
        var result = await node.Client.SubmitAsync(tx);
        Assert.True(ulong.Parse(result.Height, System.Globalization.CultureInfo.InvariantCulture) >= 1);

        // A body that stops coming is cut off by the minimum data rate (16 KiB/s after 10 s), and its reservation
        // returns: a client cannot hold the budget by trickling.
        using var stalled = new TcpClient();
        await stalled.ConnectAsync(api.Host, api.Port);
        await stalled.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, held) + "{\"txs\": [\"0x00"));
        await WaitForInFlightBytesAsync(node, held, test);
        await WaitForInFlightBytesAsync(node, 0, test, TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task OneClientHoldsAtMostItsShare_AnotherAddressStillGetsIn()
    {
        // A 2 MiB budget, 1 MiB a client. Clients are told apart by address: 127.0.0.1 and 127.0.0.2 are two.
        await using var test = await TestCluster.StartAsync("budget-client", nodes: 1,
            extraArguments: ["--limit", $"maxRequestBytes={BudgetBytes}", "--limit", $"maxInFlightRequestBytes={2 * BudgetBytes}",
                "--limit", $"maxClientInFlightRequestBytes={BudgetBytes}"]);
        var node = test.Cluster.Node(1);
        var api = new Uri(node.Spec.Api);

        using var slow = await ConnectFromAsync("127.0.0.1", api);
        var held = BudgetBytes - 1000;
        await slow.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, held) + "{\"txs\": [\"0x00"));
        await WaitForInFlightBytesAsync(node, held, test);

        // The same address again: over its share, though the node's budget has room.
        using (var same = await ConnectFromAsync("127.0.0.1", api))
        {
            await same.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, 5000)));
            var answer = await ReadAnswerAsync(same.GetStream(), "}", TimeSpan.FromSeconds(10));
            Assert.StartsWith("HTTP/1.1 429", answer, StringComparison.Ordinal);
            Assert.Contains("held by its other requests", answer, StringComparison.Ordinal);
        }

        // Another address is admitted and its tx ordered.
        using (var other = await ConnectFromAsync("127.0.0.2", api))
        {
            const string body = "{\"tx\":\"0x0a0b0c0d0e0f\"}";
            await other.GetStream().WriteAsync(Encoding.ASCII.GetBytes(Headers(api, body.Length) + body));
            var answer = await ReadAnswerAsync(other.GetStream(), "}", TimeSpan.FromSeconds(10));
            Assert.True(answer.StartsWith("HTTP/1.1 200", StringComparison.Ordinal) || answer.StartsWith("HTTP/1.1 202", StringComparison.Ordinal), answer);
        }

        var view = await node.Client.GetClusterAsync();
        Assert.Equal(BudgetBytes, view.Limits["clientInFlightRequestBytes"]);
        slow.Client.LingerState = new LingerOption(true, 0);
        slow.Close();
        await WaitForInFlightBytesAsync(node, 0, test);
    }

    private static async Task<TcpClient> ConnectFromAsync(string source, Uri api)
    {
        var client = new TcpClient(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(source), 0));
        await client.ConnectAsync(api.Host, api.Port);
        return client;
    }

    private static string Headers(Uri api, long contentLength)
        => $"POST /v1/txs HTTP/1.1\r\nHost: {api.Authority}\r\nContent-Type: application/json\r\nContent-Length: {contentLength}\r\n\r\n";

    private static async Task<string> ReadAnswerAsync(NetworkStream stream, string until, TimeSpan timeout)
    {
        using var limit = new CancellationTokenSource(timeout);
        var text = new StringBuilder();
        var buffer = new byte[4096];
        // The answer is complete once its body (after the headers) holds the closing text.
        bool Complete()
        {
            var all = text.ToString();
            var headersEnd = all.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            return headersEnd >= 0 && all.IndexOf(until, headersEnd, StringComparison.Ordinal) >= 0;
        }

        while (!Complete())
        {
            int read;
            try
            {
                read = await stream.ReadAsync(buffer, limit.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"no complete answer within {timeout.TotalSeconds:0} s; got: {text}");
                throw;
            }

            if (read == 0)
                break;
            text.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }

        return text.ToString();
    }

    private static async Task WaitForInFlightBytesAsync(NodeProcess node, long expected, TestCluster test, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(15));
        long last = -1;
        while (DateTime.UtcNow < deadline)
        {
            var view = await LocalCluster.TryGetClusterAsync(node);
            last = view?.Pipeline?.GetValueOrDefault("inFlightRequestBytes", -1) ?? -1;
            if (last == expected)
                return;
            await Task.Delay(20);
        }

        Assert.Fail($"in-flight request bytes stayed at {last}, expected {expected}\n{test.Logs()}");
    }
}
