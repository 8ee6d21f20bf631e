using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Sequencer.Core.Hashing;
using Sequencer.Core.Storage;

namespace Sequencer.Node.Api;

/// <summary>Writes API bodies: JSON with 0x hex hashes and decimal strings for numbers that can exceed 2^53.</summary>
public static class ApiResponses
{
    /// <summary>Writes <c>{"error": code, "message": text}</c> with <paramref name="status"/>.</summary>
    public static async Task WriteErrorAsync(HttpContext context, int status, string code, string message, TimeSpan? retryAfter = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Response.HasStarted)
            return;
        context.Response.StatusCode = status;
        if (retryAfter is { } delay)
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(delay.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        await WriteJsonAsync(context, status, writer =>
        {
            writer.WriteString("error", code);
            writer.WriteString("message", message);
        }).ConfigureAwait(false);
    }

    /// <summary>Writes one JSON object whose members <paramref name="body"/> writes.</summary>
    public static async Task WriteJsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> body)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(body);
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        var writer = new Utf8JsonWriter(context.Response.BodyWriter);
        await using (writer.ConfigureAwait(false))
        {
            writer.WriteStartObject();
            body(writer);
            writer.WriteEndObject();
            await writer.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        }
    }

    /// <summary>Writes a hash as a 0x hex string value.</summary>
    public static void WriteHash(this Utf8JsonWriter writer, string name, Hash32 hash)
    {
        ArgumentNullException.ThrowIfNull(writer);
        Span<byte> utf8 = stackalloc byte[Hash32.HexLength];
        hash.FormatHex(utf8);
        writer.WriteString(name, utf8);
    }

    /// <summary>Writes a 64-bit number as a decimal string.</summary>
    public static void WriteDecimal(this Utf8JsonWriter writer, string name, ulong value)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteString(name, value.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Writes an array of 0x hashes (an audit path).</summary>
    public static void WriteHashes(this Utf8JsonWriter writer, string name, IEnumerable<Hash32> hashes)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(hashes);
        writer.WriteStartArray(name);
        foreach (var hash in hashes)
            writer.WriteStringValue(hash.ToString());
        writer.WriteEndArray();
    }

    /// <summary>Writes the header object of DESIGN section 10.</summary>
    public static void WriteHeader(this Utf8JsonWriter writer, StoredBatch batch)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(batch);
        var header = batch.Header;
        writer.WriteStartObject("header");
        writer.WriteDecimal("chainId", header.ChainId);
        writer.WriteDecimal("keyEpoch", header.KeyEpoch);
        writer.WriteDecimal("height", header.Height);
        writer.WriteDecimal("term", header.Term);
        writer.WriteHash("parentHash", header.ParentHash);
        writer.WriteHash("historyRoot", header.HistoryRoot);
        writer.WriteHash("txRoot", header.TxRoot);
        writer.WriteNumber("txCount", header.TxCount);
        writer.WriteNumber("timestampMs", header.TimestampMs);
        writer.WriteEndObject();
    }
}
