using System.Globalization;
using System.Net;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.RateLimiting;
using Sequencer.Node.Configuration;

namespace Sequencer.Node.Api;

/// <summary>
/// Per-client rate limits on the public API (<see cref="Core.SequencerLimits.ClientRequestsPerSecond"/>), with ASP.NET
/// Core's rate limiter: a token bucket per client address (an IPv4 address, or an IPv6 /64, so that one host cannot
/// spread itself over its own address block), refilled every 100 ms, holding one second's worth. Internal routes are not
/// limited: with certificates they are served only to members, over mutual TLS, and a submit a member forwards to its
/// leader on a client's behalf arrives there (<c>/internal/v1/txs</c>), counted already by the member it arrived at. Health
/// probes and metrics are not limited either.
/// </summary>
public static class ClientRateLimit
{
    private const string Unlimited = "";

    /// <summary>Registers the limiter; a no-op when the limit is 0.</summary>
    /// <param name="services">The services.</param>
    /// <param name="options">The node's options.</param>
    public static void AddClientRateLimit(this IServiceCollection services, NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var perSecond = options.Limits.ClientRequestsPerSecond;
        if (perSecond == 0)
            return;
        var tokensPerPeriod = Math.Max(1, perSecond / 10);
        services.AddRateLimiter(limiter =>
        {
            limiter.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(context =>
            {
                var key = PartitionKey(context);
                return key.Length == 0
                    ? RateLimitPartition.GetNoLimiter(key)
                    : RateLimitPartition.GetTokenBucketLimiter(key, _ => new TokenBucketRateLimiterOptions
                    {
                        TokenLimit = perSecond,
                        TokensPerPeriod = tokensPerPeriod,
                        ReplenishmentPeriod = TimeSpan.FromMilliseconds(100),
                        QueueLimit = 0,
                        AutoReplenishment = true,
                    });
            });
            limiter.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            limiter.OnRejected = (rejected, _) =>
            {
                return new ValueTask(ApiResponses.WriteErrorAsync(rejected.HttpContext, 429, "rate_limited",
                    $"this client sent more than {perSecond.ToString(CultureInfo.InvariantCulture)} requests a second; retry after 1 s", TimeSpan.FromSeconds(1)));
            };
        });
    }

    /// <summary>Adds the limiter to the pipeline; a no-op when the limit is 0.</summary>
    public static void UseClientRateLimit(this WebApplication app, NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Limits.ClientRequestsPerSecond != 0)
            app.UseRateLimiter();
    }

    /// <summary>The bucket a request counts against, or the empty string for a request that is not limited.</summary>
    public static string PartitionKey(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var path = context.Request.Path;
        if (path.StartsWithSegments("/internal", StringComparison.Ordinal) || path.StartsWithSegments("/health", StringComparison.Ordinal)
            || path.StartsWithSegments("/metrics", StringComparison.Ordinal))
            return Unlimited;
        var address = context.Connection.RemoteIpAddress;
        if (address is null)
            return "unknown";
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        if (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
        {
            var bytes = address.GetAddressBytes();
            Array.Clear(bytes, 8, 8);
            return new IPAddress(bytes) + "/64";
        }

        return address.ToString();
    }
}
