using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Sequencer.Node.Api;

/// <summary>
/// <c>GET /ui</c>: the node's live status page for operators (node/Ui: static HTML, CSS and JavaScript embedded in the
/// binary, no build step). It reads only this node's public API, from the same origin.
/// </summary>
public static class StatusPage
{
    private static readonly Dictionary<string, (byte[] Bytes, string ContentType)> Files = new(StringComparer.Ordinal)
    {
        ["index.html"] = (Load("index.html"), "text/html; charset=utf-8"),
        ["app.js"] = (Load("app.js"), "text/javascript; charset=utf-8"),
        ["style.css"] = (Load("style.css"), "text/css; charset=utf-8"),
    };

    /// <summary>Maps <c>/ui</c> and its assets.</summary>
    public static void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapGet("/ui", context => ServeAsync(context, "index.html"));
        routes.MapGet("/ui/{file}", context => ServeAsync(context, (string)context.Request.RouteValues["file"]!));
    }

    private static async Task ServeAsync(HttpContext context, string name)
    {
        if (!Files.TryGetValue(name, out var file))
        {
            await ApiResponses.WriteErrorAsync(context, 404, "not_found", $"the status page has no file {name}").ConfigureAwait(false);
            return;
        }

        context.Response.StatusCode = 200;
        context.Response.ContentType = file.ContentType;
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'";
        context.Response.Headers["X-Content-Type-Options"] = "nosniff";
        await context.Response.Body.WriteAsync(file.Bytes, context.RequestAborted).ConfigureAwait(false);
    }

    private static byte[] Load(string name)
    {
        using var stream = typeof(StatusPage).Assembly.GetManifestResourceStream("Sequencer.Node.Ui." + name)
            ?? throw new InvalidOperationException($"the status page's {name} is not embedded in the node's assembly");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }
}
