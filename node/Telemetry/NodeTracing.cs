using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using OpenTelemetry;

namespace Sequencer.Node.Telemetry;

/// <summary>
/// The node's <see cref="ActivitySource"/>. The spans, on the leader: <c>batch</c> (cut to committed; tx count and
/// bytes) with the children <c>batch.replicate</c> and <c>batch.apply</c> (the latter from Sequencer.Raft);
/// <c>head.sign</c> (the head's batch ordered to its signature verified; a child of that batch's span); <c>head.post</c>
/// (the L1 post sent to mined; a child of the head's signing); and <c>submit</c> on the node that took the request,
/// linked to the batches that ordered its txs. Nothing is created while no exporter listens.
/// </summary>
public static class NodeTracing
{
    /// <summary>The source's name.</summary>
    public const string SourceName = "Sequencer.Node";

    /// <summary>The source.</summary>
    public static readonly ActivitySource Source = new(SourceName, "1");

    /// <summary>Starts a span with no parent (not under whatever request or loop is current), or null when nothing listens.</summary>
    public static Activity? StartRoot(string name)
    {
        if (!Source.HasListeners())
            return null;
        var previous = Activity.Current;
        Activity.Current = null;
        var activity = Source.StartActivity(name, ActivityKind.Internal, default(ActivityContext));
        // StartActivity made the new span current; the caller's flow keeps what it had (the span is ended explicitly).
        Activity.Current = previous;
        return activity;
    }

    /// <summary>Records a span that already happened (from <paramref name="startMs"/> to <paramref name="endMs"/>, Unix ms) under <paramref name="parent"/>.</summary>
    public static ActivityContext? Record(string name, ActivityContext? parent, long startMs, long endMs, IEnumerable<KeyValuePair<string, object?>> tags)
    {
        if (!Source.HasListeners())
            return null;
        var previous = Activity.Current;
        Activity.Current = null;
        try
        {
            using var activity = Source.StartActivity(name, ActivityKind.Internal, parent ?? default, tags, startTime: DateTimeOffset.FromUnixTimeMilliseconds(startMs));
            if (activity is null)
                return null;
            activity.SetEndTime(DateTimeOffset.FromUnixTimeMilliseconds(Math.Max(startMs, endMs)).UtcDateTime);
            return activity.Context;
        }
        finally
        {
            Activity.Current = previous;
        }
    }
}

/// <summary>Appends each finished span to a file as one JSON line (name, ids, parent, times, tags, links).</summary>
public sealed class JsonLinesSpanExporter(string path) : BaseExporter<Activity>
{
    private readonly StreamWriter writer = new(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false)) { AutoFlush = false };

    /// <inheritdoc/>
    public override ExportResult Export(in Batch<Activity> batch)
    {
        var buffer = new MemoryStream();
        foreach (var activity in batch)
        {
            buffer.SetLength(0);
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartObject();
                json.WriteString("name", activity.DisplayName);
                json.WriteString("source", activity.Source.Name);
                json.WriteString("traceId", activity.TraceId.ToHexString());
                json.WriteString("spanId", activity.SpanId.ToHexString());
                json.WriteString("parentSpanId", activity.ParentSpanId == default ? null : activity.ParentSpanId.ToHexString());
                json.WriteString("start", activity.StartTimeUtc.ToString("O", CultureInfo.InvariantCulture));
                json.WriteNumber("durationMs", activity.Duration.TotalMilliseconds);
                json.WriteString("status", activity.Status.ToString());
                json.WriteStartObject("tags");
                foreach (var (key, value) in activity.TagObjects)
                    json.WriteString(key, Convert.ToString(value, CultureInfo.InvariantCulture));
                json.WriteEndObject();
                json.WriteStartArray("links");
                foreach (var link in activity.Links)
                {
                    json.WriteStartObject();
                    json.WriteString("traceId", link.Context.TraceId.ToHexString());
                    json.WriteString("spanId", link.Context.SpanId.ToHexString());
                    json.WriteEndObject();
                }

                json.WriteEndArray();
                json.WriteEndObject();
            }

            writer.WriteLine(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        }

        writer.Flush();
        return ExportResult.Success;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
            writer.Dispose();
        base.Dispose(disposing);
    }
}
