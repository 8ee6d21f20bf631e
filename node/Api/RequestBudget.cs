using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Sequencer.Core;

namespace Sequencer.Node.Api;

/// <summary>
/// The node's in-flight request bytes budget (DESIGN section 8, <see cref="SequencerLimits.MaxInFlightRequestBytes"/>):
/// every route that reads a body reads it through <see cref="ReadBodyAsync"/>, which reserves the bytes before it
/// reads them and refuses the request with 429 when the budget cannot cover them. Without it, every open connection
/// could hold a maximal body at once (10,000 connections of 16 MiB each).
/// </summary>
/// <remarks>
/// A request that declares its Content-Length reserves all of it before the first byte is read, so a refused body
/// is never read at all. A chunked request reserves <see cref="StepBytes"/> at a time as its bytes arrive and is
/// refused part-way when a step cannot be reserved. The reservation is held until the request ends (the caller
/// disposes the <see cref="BudgetedBody"/>; the request's end disposes it too), because the body, or the txs parsed
/// from it, live as long as the request: a submit waits for its txs to be ordered, a follower forwards the body.
/// One client (as <c>clientOf</c> names it: an IPv4 address or an IPv6 /64) holds at most
/// <see cref="ClientCapacityBytes"/> of it at once, so that a few large bodies sent just fast enough cannot take the
/// whole budget from everyone else.
/// </remarks>
public sealed class RequestBudget
{
    /// <summary>How much a chunked request reserves at a time.</summary>
    public const int StepBytes = 64 * 1024;

    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(1);

    private readonly Func<HttpContext, string>? clientOf;

    // The bytes each client holds now; a client is here only while it holds some (at most one entry per request in
    // flight, so the map is bounded by the requests the node serves at once).
    private readonly ConcurrentDictionary<string, long> clients = new(StringComparer.Ordinal);
    private long inUseBytes;
    private long refusals;

    /// <param name="capacityBytes">The most bytes reserved at once; at least 1.</param>
    /// <param name="clientCapacityBytes">The most bytes one client reserves at once (at least 1, at most the capacity; the capacity when omitted).</param>
    /// <param name="clientOf">The client a request counts against, or the empty string for one that is not counted (a request a member forwards, an internal route); without it no request is counted per client.</param>
    public RequestBudget(long capacityBytes, long? clientCapacityBytes = null, Func<HttpContext, string>? clientOf = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacityBytes, 1);
        CapacityBytes = capacityBytes;
        ClientCapacityBytes = clientCapacityBytes ?? capacityBytes;
        ArgumentOutOfRangeException.ThrowIfLessThan(ClientCapacityBytes, 1, nameof(clientCapacityBytes));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ClientCapacityBytes, capacityBytes, nameof(clientCapacityBytes));
        this.clientOf = clientOf;
    }

    /// <summary>The most bytes reserved at once.</summary>
    public long CapacityBytes { get; }

    /// <summary>The most bytes one client reserves at once.</summary>
    public long ClientCapacityBytes { get; }

    /// <summary>How many clients hold bytes now.</summary>
    public int ClientsHolding => clients.Count;

    /// <summary>The bytes <paramref name="client"/> holds now.</summary>
    public long HeldBy(string client) => clients.TryGetValue(client, out var held) ? held : 0;

    /// <summary>The bytes reserved now, in [0, <see cref="CapacityBytes"/>].</summary>
    public long InUseBytes => Interlocked.Read(ref inUseBytes);

    /// <summary>How many requests were refused because the budget was spent, since start.</summary>
    public long Refusals => Interlocked.Read(ref refusals);

    /// <summary>
    /// Reserves <paramref name="bytes"/> when the budget has that much left, atomically: concurrent reservations never
    /// take more than <see cref="CapacityBytes"/> together. Returns false, reserving nothing, otherwise.
    /// </summary>
    public bool TryReserve(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        while (true)
        {
            var current = Interlocked.Read(ref inUseBytes);
            Invariant.Check(current >= 0 && current <= CapacityBytes, "the request budget in use is within [0, capacity]");
            if (bytes > CapacityBytes - current)
                return false;
            if (Interlocked.CompareExchange(ref inUseBytes, current + bytes, current) == current)
                return true;
        }
    }

    /// <summary>
    /// Reserves <paramref name="bytes"/> of <paramref name="client"/>'s share, atomically (the empty string: not
    /// counted). Returns false, reserving nothing, when the share has not that much left.
    /// </summary>
    internal bool TryReserveFor(string client, long bytes)
    {
        if (client.Length == 0 || bytes == 0)
            return true;
        while (true)
        {
            if (clients.TryGetValue(client, out var held))
            {
                Invariant.Check(held > 0 && held <= ClientCapacityBytes, "a client's share in use is within (0, client capacity]");
                if (bytes > ClientCapacityBytes - held)
                    return false;
                if (clients.TryUpdate(client, held + bytes, held))
                    return true;
            }
            else
            {
                if (bytes > ClientCapacityBytes)
                    return false;
                if (clients.TryAdd(client, bytes))
                    return true;
            }
        }
    }

    /// <summary>Returns <paramref name="bytes"/> of <paramref name="client"/>'s share; a client that holds nothing leaves the map.</summary>
    internal void ReleaseFor(string client, long bytes)
    {
        if (client.Length == 0 || bytes == 0)
            return;
        while (true)
        {
            var found = clients.TryGetValue(client, out var held);
            Invariant.Check(found && held >= bytes, "a client never releases more of its share than it reserved");
            if (held == bytes ? clients.TryRemove(KeyValuePair.Create(client, held)) : clients.TryUpdate(client, held - bytes, held))
                return;
        }
    }

    /// <summary>Returns <paramref name="bytes"/> reserved earlier by <see cref="TryReserve"/>.</summary>
    public void Release(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        var after = Interlocked.Add(ref inUseBytes, -bytes);
        // More released than reserved is a bookkeeping bug that would let the budget grow without bound.
        Invariant.Check(after >= 0, "the request budget never releases more than it reserved");
    }

    /// <summary>
    /// Reads the whole request body, at most <paramref name="maxBytes"/>, within the budget. The result holds the body
    /// and its reservation, or says why the request is refused: 413 <c>body_too_large</c> (over
    /// <paramref name="maxBytes"/>, declared or read) or 429 <c>overloaded</c> with <c>Retry-After</c> (the budget is
    /// spent). Nothing is read beyond <paramref name="maxBytes"/>, and a declared length that cannot be reserved is
    /// refused before any of the body is read. The caller disposes the result when the request ends; it is also
    /// registered for disposal at the request's end, so an exception or an aborted connection releases it too.
    /// </summary>
    /// <exception cref="OperationCanceledException">The client went away; the reservation is released.</exception>
    public async Task<BudgetedBody> ReadBodyAsync(HttpContext context, int maxBytes)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1);
        var declared = context.Request.ContentLength;
        if (declared > maxBytes)
            return BudgetedBody.TooLarge(maxBytes);

        var body = new BudgetedBody(this, clientOf?.Invoke(context) ?? string.Empty);
        context.Response.RegisterForDispose(body);
        // A declared length is reserved whole; a chunked body reserves its first step.
        if (!body.TryGrow(declared ?? Math.Min(StepBytes, maxBytes)))
            return Refuse(body);

        try
        {
            // A declared length is read straight into an array of that size (one allocation, no copy at the end);
            // a chunked body grows a buffer.
            var exact = declared is { } declaredLength ? new byte[declaredLength] : null;
            var growing = exact is null ? new ArrayBufferWriter<byte>(Math.Min(StepBytes, maxBytes)) : null;
            long written = 0;
            var reader = context.Request.BodyReader;
            while (true)
            {
                var result = await reader.ReadAsync(context.RequestAborted).ConfigureAwait(false);
                var length = result.Buffer.Length;
                var total = written + length;
                if (total > maxBytes || (exact is not null && total > exact.Length))
                {
                    reader.AdvanceTo(result.Buffer.End);
                    body.Dispose();
                    return BudgetedBody.TooLarge(maxBytes);
                }

                // Reserve before copying: in whole steps, never past maxBytes.
                if (total > body.ReservedBytes)
                {
                    var wanted = Math.Min(maxBytes, body.ReservedBytes + ((total - body.ReservedBytes + StepBytes - 1) / StepBytes * StepBytes));
                    if (!body.TryGrow(wanted - body.ReservedBytes))
                    {
                        reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
                        return Refuse(body);
                    }
                }

                if (exact is not null)
                    result.Buffer.CopyTo(exact.AsSpan((int)written));
                else
                    foreach (var segment in result.Buffer)
                        growing!.Write(segment.Span);
                written = total;
                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    Invariant.Check(written <= body.ReservedBytes, "a body never holds more bytes than it reserved");
                    body.Bytes = exact is null ? growing!.WrittenSpan.ToArray()
                        : written == exact.Length ? exact : exact.AsSpan(0, (int)written).ToArray();
                    return body;
                }
            }
        }
        catch
        {
            body.Dispose();
            throw;
        }
    }

    private BudgetedBody Refuse(BudgetedBody body)
    {
        Interlocked.Increment(ref refusals);
        var inUse = InUseBytes;
        var client = body.Client;
        var byClient = body.Shortfall == BudgetShortfall.Client;
        var held = HeldBy(client) - body.ReservedBytes;
        body.Dispose();
        return byClient
            ? BudgetedBody.Refused(429, "overloaded",
                $"this client's share of the node's in-flight request bytes ({ClientCapacityBytes} bytes, {held} held by its other requests) cannot take this body now; retry when they end", RetryAfter)
            : BudgetedBody.Refused(429, "overloaded",
                $"the node's in-flight request bytes budget ({CapacityBytes} bytes, {inUse} in use) cannot take this body now; retry later", RetryAfter);
    }
}

/// <summary>
/// A request body read within a <see cref="RequestBudget"/> and the reservation that covers it, or the reason the
/// request is refused. Disposing returns the reservation (once; later calls do nothing).
/// </summary>
public sealed class BudgetedBody : IDisposable
{
    private readonly RequestBudget? budget;
    private long reservedBytes;
    private int disposed;

    internal BudgetedBody(RequestBudget budget, string client)
    {
        this.budget = budget;
        Client = client;
    }

    /// <summary>The client the reservation counts against (empty: none).</summary>
    internal string Client { get; } = string.Empty;

    /// <summary>Which limit refused the last growth.</summary>
    internal BudgetShortfall Shortfall { get; private set; }

    private BudgetedBody(int status, string code, string message, TimeSpan? retryAfter)
    {
        Status = status;
        Code = code;
        Message = message;
        RetryAfter = retryAfter;
    }

    /// <summary>The body, or null when the request is refused.</summary>
    public byte[]? Bytes { get; internal set; }

    /// <summary>The bytes reserved for this body now.</summary>
    public long ReservedBytes => Interlocked.Read(ref reservedBytes);

    /// <summary>The status to answer a refused request with (413 or 429); 0 when the body was read.</summary>
    public int Status { get; }

    /// <summary>The error code of a refusal.</summary>
    public string? Code { get; }

    /// <summary>The message of a refusal.</summary>
    public string? Message { get; }

    /// <summary>The <c>Retry-After</c> of a refusal, when retrying can help.</summary>
    public TimeSpan? RetryAfter { get; }

    internal static BudgetedBody TooLarge(int maxBytes) => new(413, "body_too_large", $"the request body is over the limit of {maxBytes} bytes", null);

    internal static BudgetedBody Refused(int status, string code, string message, TimeSpan? retryAfter) => new(status, code, message, retryAfter);

    internal bool TryGrow(long bytes)
    {
        Invariant.Check(budget is not null && Volatile.Read(ref disposed) == 0, "only a live reservation grows");
        if (!budget.TryReserveFor(Client, bytes))
        {
            Shortfall = BudgetShortfall.Client;
            return false;
        }

        if (!budget.TryReserve(bytes))
        {
            budget.ReleaseFor(Client, bytes);
            Shortfall = BudgetShortfall.Node;
            return false;
        }

        Interlocked.Add(ref reservedBytes, bytes);
        return true;
    }

    /// <summary>Writes the refusal as <c>{"error", "message"}</c>.</summary>
    public Task WriteRefusalAsync(HttpContext context)
    {
        Invariant.Check(Bytes is null && Code is not null && Message is not null, "only a refusal is written as one");
        return ApiResponses.WriteErrorAsync(context, Status, Code, Message, RetryAfter);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 1 || budget is null)
            return;
        var bytes = Interlocked.Exchange(ref reservedBytes, 0);
        budget.Release(bytes);
        budget.ReleaseFor(Client, bytes);
    }
}

/// <summary>Which limit a body's reservation ran into.</summary>
internal enum BudgetShortfall
{
    /// <summary>None.</summary>
    None,

    /// <summary>The client's share.</summary>
    Client,

    /// <summary>The node's budget.</summary>
    Node,
}
