using Sequencer.Core.Hashing;

namespace Sequencer.Raft;

/// <summary>
/// The history tree of the applied chain (DESIGN section 5): the frontier that gives each new header its history
/// root, and every completed subtree, read from the store for stored heights and from memory for the few applied
/// heights the store does not have yet. Proofs of any head's history read it in O(log n).
/// </summary>
/// <remarks>
/// One writer (the applier) appends; readers (the API) are safe concurrently. Memory holds only the subtrees of
/// unpersisted heights (bounded by <c>MaxUnpersistedBatches</c>), dropped by <see cref="Trim"/> once stored.
/// </remarks>
internal sealed class AppliedHistory : IHistoryNodes
{
    private readonly IHistoryNodes stored;
    private readonly Lock gate = new();
    private readonly Dictionary<(int Level, ulong Index), Hash32> recent = [];
    private readonly Queue<HistoryNode> order = new();
    private MerkleFrontier frontier;

    /// <summary>Starts from the first <paramref name="leaves"/> stored commitments.</summary>
    public AppliedHistory(IHistoryNodes stored, ulong leaves)
    {
        this.stored = stored;
        frontier = MerkleFrontier.Load(stored, leaves);
    }

    /// <summary>The frontier over every applied commitment; the applier's alone to read.</summary>
    public MerkleFrontier Frontier => frontier;

    /// <inheritdoc/>
    public ulong LeafCount
    {
        get
        {
            lock (gate)
                return frontier.LeafCount;
        }
    }

    /// <summary>Appends the commitment of a newly applied header.</summary>
    public void Append(Hash32 commitment)
    {
        lock (gate)
        {
            foreach (var node in frontier.Append(commitment))
            {
                recent[(node.Level, node.Index)] = node.Hash;
                order.Enqueue(node);
            }
        }
    }

    /// <summary>Forgets the subtrees the store now holds (every subtree within its first <paramref name="storedLeaves"/> leaves).</summary>
    public void Trim(ulong storedLeaves)
    {
        lock (gate)
        {
            while (order.TryPeek(out var node) && ((node.Index + 1) << node.Level) <= storedLeaves)
            {
                order.Dequeue();
                recent.Remove((node.Level, node.Index));
            }
        }
    }

    /// <summary>Starts again from the store (after a snapshot install replaced the applied state).</summary>
    public void Reload(ulong leaves)
    {
        lock (gate)
        {
            recent.Clear();
            order.Clear();
            frontier = MerkleFrontier.Load(stored, leaves);
        }
    }

    /// <inheritdoc/>
    public Hash32 Node(int level, ulong index)
    {
        lock (gate)
        {
            if (recent.TryGetValue((level, index), out var hash))
                return hash;
            if (level is < 0 or > 63 || ((index + 1) << level) > frontier.LeafCount)
                throw new ArgumentOutOfRangeException(nameof(index), $"subtree ({level}, {index}) is not complete in a history of {frontier.LeafCount} leaves");
        }

        return stored.Node(level, index);
    }
}
