using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sequencer.IntegrationTests;

/// <summary>
/// A node that lies: an HTTP proxy in front of a real node that passes every GET through and rewrites what it returns.
/// <see cref="Json"/> rewrites a JSON body (given the request path); <see cref="Event"/> rewrites each head event of
/// <c>/v1/stream/heads</c> (given its index on this connection) into zero (withheld), one or more events. Light
/// clients are pointed at it to show that each lie is caught by name.
/// </summary>
internal sealed class LyingNode : IAsyncDisposable
{
    private readonly HttpListener listener = new();
    private readonly HttpClient upstream;
    private readonly CancellationTokenSource stop = new();
    private readonly Task serving;

    public LyingNode(Uri node)
    {
        upstream = new HttpClient { BaseAddress = node, Timeout = Timeout.InfiniteTimeSpan };
        // A port chosen at run time, from below the ephemeral range (see ListenPorts).
        Url = new Uri($"http://127.0.0.1:{Sequencer.Client.Local.ListenPorts.Take("127.0.0.1", 1)[0]}/");

        listener.Prefixes.Add(Url.ToString());
        listener.Start();
        serving = Task.Run(ServeAsync);
    }

    /// <summary>Where clients reach the liar.</summary>
    public Uri Url { get; }

    /// <summary>Rewrites a JSON body: (path, body) → the body served. Null serves the truth.</summary>
    public Func<string, string, string>? Json { get; set; }

    /// <summary>Rewrites a head event: (index on this connection, data JSON) → the data of the events served.</summary>
    public Func<int, string, IReadOnlyList<string>>? Event { get; set; }

    /// <summary>Requests served.</summary>
    public int Requests;

    private async Task ServeAsync()
    {
        while (!stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync().WaitAsync(stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or HttpListenerException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref Requests);
            _ = Task.Run(() => HandleAsync(context));
        }
    }

    private async Task HandleAsync(HttpListenerContext context)
    {
        var path = context.Request.Url!.PathAndQuery;
        try
        {
            using var request = new HttpRequestMessage(new HttpMethod(context.Request.HttpMethod), path);
            if (context.Request.HasEntityBody)
            {
                using var body = new MemoryStream();
                await context.Request.InputStream.CopyToAsync(body, stop.Token);
                request.Content = new ByteArrayContent(body.ToArray());
                request.Content.Headers.TryAddWithoutValidation("Content-Type", context.Request.ContentType);
            }

            using var response = await upstream.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, stop.Token);
            context.Response.StatusCode = (int)response.StatusCode;
            context.Response.ContentType = response.Content.Headers.ContentType?.ToString();
            if (context.Response.ContentType?.StartsWith("text/event-stream", StringComparison.Ordinal) == true)
            {
                context.Response.SendChunked = true;
                await RelayEventsAsync(response, context.Response);
            }
            else
            {
                var text = await response.Content.ReadAsStringAsync(stop.Token);
                if (response.IsSuccessStatusCode && Json is { } lie && context.Response.ContentType?.StartsWith("application/json", StringComparison.Ordinal) == true)
                    text = lie(context.Request.Url.AbsolutePath, text);
                var bytes = Encoding.UTF8.GetBytes(text);
                context.Response.ContentLength64 = bytes.Length;
                await context.Response.OutputStream.WriteAsync(bytes, stop.Token);
            }
        }
        catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException or HttpListenerException or ObjectDisposedException)
        {
            // The client or the node went away.
        }
        finally
        {
            try
            {
                context.Response.Close();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                // Already closed.
            }
        }
    }

    private async Task RelayEventsAsync(HttpResponseMessage response, HttpListenerResponse output)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(stop.Token);
        using var reader = new StreamReader(stream);
        var index = 0;
        string? name = null;
        while (await reader.ReadLineAsync(stop.Token) is { } line)
        {
            string text;
            if (line.StartsWith("event:", StringComparison.Ordinal))
            {
                name = line[6..].Trim();
                continue;
            }

            if (line.StartsWith("id:", StringComparison.Ordinal) || line.Length == 0)
                continue;
            if (line.StartsWith("data:", StringComparison.Ordinal) && name == "head")
            {
                var data = line[5..].Trim();
                var served = Event is { } lie ? lie(index++, data) : [data];
                text = string.Concat(served.Select(d => $"event: head\ndata: {d}\n\n"));
                if (text.Length == 0)
                    text = ": withheld\n\n";
            }
            else
            {
                text = line + "\n\n";
            }

            await output.OutputStream.WriteAsync(Encoding.UTF8.GetBytes(text), stop.Token);
            await output.OutputStream.FlushAsync(stop.Token);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stop.CancelAsync();
        listener.Stop();
        listener.Close();
        await serving.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        upstream.Dispose();
        stop.Dispose();
    }

    internal static string Flip(string hex) => hex[..^1] + (hex[^1] == '0' ? '1' : '0');
}
