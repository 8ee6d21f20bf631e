using System.Diagnostics;

namespace Sequencer.Raft;

/// <summary>The <see cref="ActivitySource"/> of this assembly: the <c>batch.apply</c> span.</summary>
public static class RaftTracing
{
    /// <summary>The source's name (what a tracer provider subscribes to).</summary>
    public const string SourceName = "Sequencer.Raft";

    /// <summary>The source.</summary>
    public static readonly ActivitySource Source = new(SourceName, "1");
}

/// <summary>
/// The trace context of each recent batch (by height) and signed head (by head height) on the leader, so that the
/// spans of later stages (signing, posting, the submits that the batch answered) can nest under or link to them.
/// Bounded: the newest <see cref="Capacity"/> of each; empty when nothing traces.
/// </summary>
public sealed class TraceContexts
{
    /// <summary>How many batch and head contexts are kept.</summary>
    public const int Capacity = 4096;

    private readonly Lock gate = new();
    private readonly Dictionary<ulong, ActivityContext> batches = [];
    private readonly Queue<ulong> batchOrder = new();
    private readonly Dictionary<ulong, ActivityContext> heads = [];
    private readonly Queue<ulong> headOrder = new();

    /// <summary>Keeps the context of the batch at <paramref name="height"/>.</summary>
    public void SetBatch(ulong height, ActivityContext context) => Set(batches, batchOrder, height, context);

    /// <summary>The context of the batch at <paramref name="height"/>, if kept.</summary>
    public ActivityContext? Batch(ulong height) => Get(batches, height);

    /// <summary>Keeps the context of the signing of the head at <paramref name="height"/>.</summary>
    public void SetHead(ulong height, ActivityContext context) => Set(heads, headOrder, height, context);

    /// <summary>The context of the head at <paramref name="height"/>'s signing, if kept.</summary>
    public ActivityContext? Head(ulong height) => Get(heads, height);

    private void Set(Dictionary<ulong, ActivityContext> map, Queue<ulong> order, ulong height, ActivityContext context)
    {
        lock (gate)
        {
            if (map.TryAdd(height, context))
            {
                order.Enqueue(height);
                while (order.Count > Capacity)
                    map.Remove(order.Dequeue());
            }
            else
            {
                map[height] = context;
            }
        }
    }

    private ActivityContext? Get(Dictionary<ulong, ActivityContext> map, ulong height)
    {
        lock (gate)
            return map.TryGetValue(height, out var context) ? context : null;
    }
}
