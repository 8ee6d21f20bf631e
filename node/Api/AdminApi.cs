using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Sequencer.Node.Configuration;

namespace Sequencer.Node.Api;

/// <summary>
/// The authenticated <c>/admin</c> routes (DESIGN section 10). Disabled (403) unless the node has an admin token;
/// a request must send <c>Authorization: Bearer TOKEN</c> (401 otherwise). So far: the clock skew the chaos
/// harness injects.
/// </summary>
public sealed class AdminApi(NodeOptions options, AdjustableClock clock, RequestBudget budget)
{
    /// <summary>The largest body of an admin route: a small JSON object.</summary>
    public const int MaxBodyBytes = 64 * 1024;

    /// <summary>The largest skew accepted, in milliseconds (a day).</summary>
    public const long MaxSkewMs = 24L * 3600 * 1000;

    /// <summary>Maps the admin routes.</summary>
    public void Map(IEndpointRouteBuilder routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        routes.MapGet("/admin/clock-skew", GetSkewAsync);
        routes.MapPost("/admin/clock-skew", SetSkewAsync);
    }

    private async Task GetSkewAsync(HttpContext context)
    {
        if (await AuthorizeAsync(context).ConfigureAwait(false))
            await ApiResponses.WriteJsonAsync(context, 200, writer => writer.WriteNumber("ms", clock.SkewMs)).ConfigureAwait(false);
    }

    private async Task SetSkewAsync(HttpContext context)
    {
        if (!await AuthorizeAsync(context).ConfigureAwait(false))
            return;
        using var budgeted = await budget.ReadBodyAsync(context, MaxBodyBytes).ConfigureAwait(false);
        if (budgeted.Bytes is not { } body)
        {
            await budgeted.WriteRefusalAsync(context).ConfigureAwait(false);
            return;
        }

        long ms;
        try
        {
            using var document = JsonDocument.Parse(body);
            if (!document.RootElement.TryGetProperty("ms", out var value) || !value.TryGetInt64(out ms))
            {
                await ApiResponses.WriteErrorAsync(context, 400, "bad_request", "the body is {\"ms\": <skew in milliseconds>}").ConfigureAwait(false);
                return;
            }
        }
        catch (JsonException e)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "malformed_json", e.Message).ConfigureAwait(false);
            return;
        }

        if (Math.Abs(ms) > MaxSkewMs)
        {
            await ApiResponses.WriteErrorAsync(context, 400, "out_of_range", $"the skew must be within ±{MaxSkewMs} ms").ConfigureAwait(false);
            return;
        }

        clock.SkewMs = ms;
        await ApiResponses.WriteJsonAsync(context, 200, writer => writer.WriteNumber("ms", ms)).ConfigureAwait(false);
    }

    private Task<bool> AuthorizeAsync(HttpContext context) => AuthorizeAsync(options, context);

    /// <summary>Answers 403 or 401 and returns false unless the request carries the admin token.</summary>
    internal static async Task<bool> AuthorizeAsync(NodeOptions options, HttpContext context)
    {
        if (options.AdminToken is not { } token)
        {
            await ApiResponses.WriteErrorAsync(context, 403, "admin_disabled", "this node has no admin token (--admin-token)").ConfigureAwait(false);
            return false;
        }

        var header = context.Request.Headers.Authorization.ToString();
        var given = header.StartsWith("Bearer ", StringComparison.Ordinal) ? header["Bearer ".Length..] : string.Empty;
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(token)))
        {
            await ApiResponses.WriteErrorAsync(context, 401, "unauthorized", "send Authorization: Bearer <admin token>").ConfigureAwait(false);
            return false;
        }

        return true;
    }
}
