using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sequencer.Checker;

/// <summary>How a submit ended, in Jepsen's words.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<OpOutcome>))]
public enum OpOutcome
{
    /// <summary>Acknowledged as ordered, with a position.</summary>
    Ok,

    /// <summary>Certainly not ordered by this attempt (rejected before anything was proposed).</summary>
    Fail,

    /// <summary>Unknown: it may or may not be ordered (timeout, lost connection, leader change).</summary>
    Info,
}

/// <summary>One tx submit attempt: invoked at <see cref="InvokedNs"/>, completed at <see cref="CompletedNs"/>.</summary>
/// <param name="Client">The workload client that made it.</param>
/// <param name="TxHash">keccak256 of the tx, 0x hex.</param>
/// <param name="Node">The node the submit was sent to.</param>
/// <param name="InvokedNs">When the request was sent, on the harness's monotonic clock (ns).</param>
/// <param name="CompletedNs">When its answer (or failure) arrived.</param>
/// <param name="Outcome">How it ended.</param>
/// <param name="Height">The acknowledged height when <see cref="OpOutcome.Ok"/>.</param>
/// <param name="Index">The acknowledged index when <see cref="OpOutcome.Ok"/>.</param>
/// <param name="Error">The error code otherwise.</param>
public sealed record HistoryOp(int Client, string TxHash, int Node, long InvokedNs, long CompletedNs, OpOutcome Outcome, ulong? Height, int? Index, string? Error);

/// <summary>The thread-safe record of every submit of a run.</summary>
public sealed class History
{
    private readonly List<HistoryOp> ops = [];
    private readonly Lock gate = new();

    /// <summary>Records one completed op.</summary>
    public void Add(HistoryOp op)
    {
        lock (gate)
            ops.Add(op);
    }

    /// <summary>A copy of every op so far, in completion order.</summary>
    public IReadOnlyList<HistoryOp> Snapshot()
    {
        lock (gate)
            return [.. ops];
    }

    /// <summary>Counts by outcome.</summary>
    public (int Ok, int Fail, int Info) Counts()
    {
        lock (gate)
            return (ops.Count(o => o.Outcome == OpOutcome.Ok), ops.Count(o => o.Outcome == OpOutcome.Fail), ops.Count(o => o.Outcome == OpOutcome.Info));
    }

    /// <summary>Writes the history as JSON lines, one op per line.</summary>
    public async Task WriteJsonLinesAsync(string path, CancellationToken token = default)
    {
        var snapshot = Snapshot();
        await using var writer = new StreamWriter(path);
        foreach (var op in snapshot)
            await writer.WriteLineAsync(JsonSerializer.Serialize(op, CheckerJsonContext.Default.HistoryOp).AsMemory(), token).ConfigureAwait(false);
    }
}

/// <summary>JSON metadata of the checker's types.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = false)]
[JsonSerializable(typeof(HistoryOp))]
[JsonSerializable(typeof(InvariantResult))]
[JsonSerializable(typeof(List<InvariantResult>))]
public sealed partial class CheckerJsonContext : JsonSerializerContext;
