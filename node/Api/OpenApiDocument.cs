using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Sequencer.Node.Configuration;

namespace Sequencer.Node.Api;

/// <summary>
/// <c>GET /openapi.json</c>: the OpenAPI 3.1 document of every public route (node/Api/openapi.json, embedded in the
/// binary), so that clients in other languages are written from it; and <c>GET /admin/routes</c>, every route the
/// node maps, which a test compares with the document. At start the node logs an error for a public route that the
/// document lacks or a documented route it does not map.
/// </summary>
public sealed class OpenApiDocument(NodeOptions options)
{
    /// <summary>The document's bytes (UTF-8 JSON).</summary>
    public static ReadOnlyMemory<byte> Bytes { get; } = Load();

    /// <summary>The routes of the members' internal listener (mutual TLS), which are not part of the public API.</summary>
    public const string InternalPrefix = "/internal/";

    /// <summary>Maps the two routes.</summary>
    public void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapGet("/openapi.json", async context =>
        {
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/json";
            await context.Response.Body.WriteAsync(Bytes, context.RequestAborted).ConfigureAwait(false);
        });
        routes.MapGet("/admin/routes", async context =>
        {
            if (!await AdminApi.AuthorizeAsync(options, context).ConfigureAwait(false))
                return;
            var mapped = Mapped(routes);
            await ApiResponses.WriteJsonAsync(context, 200, writer =>
            {
                writer.WriteStartArray("routes");
                foreach (var (method, path) in mapped)
                {
                    writer.WriteStartObject();
                    writer.WriteString("method", method);
                    writer.WriteString("path", path);
                    writer.WriteEndObject();
                }

                writer.WriteEndArray();
            }).ConfigureAwait(false);
        });
    }

    /// <summary>Every (method, route template) mapped on <paramref name="routes"/>, sorted.</summary>
    public static IReadOnlyList<(string Method, string Path)> Mapped(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        return routes.DataSources.SelectMany(source => source.Endpoints).OfType<RouteEndpoint>()
            .SelectMany(endpoint => (endpoint.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? ["GET"])
                .Select(method => (method.ToUpperInvariant(), "/" + (endpoint.RoutePattern.RawText ?? string.Empty).TrimStart('/'))))
            .Distinct().OrderBy(route => route.Item2, StringComparer.Ordinal).ThenBy(route => route.Item1, StringComparer.Ordinal).ToList();
    }

    /// <summary>Every (method, path) the document describes.</summary>
    public static IReadOnlyList<(string Method, string Path)> Documented()
    {
        using var document = JsonDocument.Parse(Bytes);
        var routes = new List<(string, string)>();
        foreach (var path in document.RootElement.GetProperty("paths").EnumerateObject())
        {
            foreach (var operation in path.Value.EnumerateObject())
                routes.Add((operation.Name.ToUpperInvariant(), path.Name));
        }

        return routes;
    }

    /// <summary>
    /// The differences between what is mapped and what is documented: public routes (all but
    /// <see cref="InternalPrefix"/>) missing from the document, and documented routes that are not mapped.
    /// </summary>
    public static (IReadOnlyList<string> Undocumented, IReadOnlyList<string> Unmapped) Compare(IEnumerable<(string Method, string Path)> mapped)
    {
        var publicRoutes = mapped.Where(route => !route.Path.StartsWith(InternalPrefix, StringComparison.Ordinal)).Select(Name).ToHashSet(StringComparer.Ordinal);
        var documented = Documented().Select(Name).ToHashSet(StringComparer.Ordinal);
        return (publicRoutes.Except(documented).Order(StringComparer.Ordinal).ToList(), documented.Except(publicRoutes).Order(StringComparer.Ordinal).ToList());

        static string Name((string Method, string Path) route) => $"{route.Method} {route.Path}";
    }

    /// <summary>Logs an error for each difference between the mapped routes and the document.</summary>
    public static void Check(IEndpointRouteBuilder routes, ILogger logger)
    {
        var (undocumented, unmapped) = Compare(Mapped(routes));
        if (undocumented.Count > 0)
            LogUndocumented(logger, string.Join(", ", undocumented), null);
        if (unmapped.Count > 0)
            LogUnmapped(logger, string.Join(", ", unmapped), null);
    }

    private static ReadOnlyMemory<byte> Load()
    {
        using var stream = typeof(OpenApiDocument).Assembly.GetManifestResourceStream("Sequencer.Node.Api.openapi.json")
            ?? throw new InvalidOperationException("the OpenAPI document is not embedded in the node's assembly");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        using (JsonDocument.Parse(copy.ToArray()))
        {
            // Parsed once here so that a broken document fails every test that starts a node, not a client.
        }

        return copy.ToArray();
    }

    private static readonly Action<ILogger, string, Exception?> LogUndocumented =
        LoggerMessage.Define<string>(LogLevel.Error, new EventId(30, "Undocumented"), "Routes missing from /openapi.json: {Routes}");

    private static readonly Action<ILogger, string, Exception?> LogUnmapped =
        LoggerMessage.Define<string>(LogLevel.Error, new EventId(31, "Unmapped"), "/openapi.json documents routes this node does not map: {Routes}");
}
