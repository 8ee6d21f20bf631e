namespace Sequencer.Core.Hashing;

/// <summary>
/// One completed (perfect) subtree of an append-only RFC 6962 tree: the <paramref name="Hash"/> of leaves
/// [<c>Index * 2^Level</c>, <c>(Index + 1) * 2^Level</c>). Level 0 nodes are leaf hashes (<c>keccak256(0x00 || leaf)</c>).
/// </summary>
/// <param name="Level">The subtree's height: it covers 2^Level leaves.</param>
/// <param name="Index">Its position among the subtrees of that level, from 0.</param>
/// <param name="Hash">Its Merkle Tree Hash.</param>
public readonly record struct HistoryNode(int Level, ulong Index, Hash32 Hash);

/// <summary>
/// Reads the completed subtree hashes of an append-only tree (as certificate transparency logs keep them), so that
/// any root or audit path of any prefix of the tree costs O(log n) reads.
/// </summary>
/// <remarks>Implementations are safe for concurrent readers.</remarks>
public interface IHistoryNodes
{
    /// <summary>The number of leaves appended.</summary>
    ulong LeafCount { get; }

    /// <summary>
    /// The hash of the perfect subtree (<paramref name="level"/>, <paramref name="index"/>). Only subtrees whose leaves
    /// are all appended exist: <c>(index + 1) * 2^level &lt;= LeafCount</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The subtree is not complete.</exception>
    Hash32 Node(int level, ulong index);
}

/// <summary>
/// The O(log n) frontier of an append-only RFC 6962 tree with keccak256 (DESIGN section 5): the roots of the perfect
/// subtrees that the binary decomposition of the leaf count gives, largest first. Appending a leaf yields the nodes
/// it completes (for the store), and <see cref="Root"/> is the Merkle Tree Hash of every leaf so far. Pure: no I/O.
/// </summary>
/// <remarks>Not thread-safe: one owner appends (the applier).</remarks>
public sealed class MerkleFrontier
{
    private readonly List<(int Level, Hash32 Hash)> peaks = [];

    /// <summary>An empty tree.</summary>
    public MerkleFrontier()
    {
    }

    private MerkleFrontier(ulong count, IEnumerable<(int Level, Hash32 Hash)> peaks)
    {
        LeafCount = count;
        this.peaks.AddRange(peaks);
    }

    /// <summary>The number of leaves appended.</summary>
    public ulong LeafCount { get; private set; }

    /// <summary>The Merkle Tree Hash of every leaf so far (the empty tree's root when there are none).</summary>
    public Hash32 Root
    {
        get
        {
            if (peaks.Count == 0)
                return MerkleTree.EmptyRoot;
            var root = peaks[^1].Hash;
            for (var i = peaks.Count - 2; i >= 0; i--)
                root = MerkleTree.HashNode(peaks[i].Hash, root);
            return root;
        }
    }

    /// <summary>Appends a leaf and returns every subtree it completes, the leaf's own node first.</summary>
    public HistoryNode[] Append(Hash32 leaf)
    {
        var index = LeafCount;
        var node = MerkleTree.HashLeaf(leaf);
        var level = 0;
        var completed = new List<HistoryNode>(2) { new(0, index, node) };
        while (peaks.Count > 0 && peaks[^1].Level == level)
        {
            node = MerkleTree.HashNode(peaks[^1].Hash, node);
            peaks.RemoveAt(peaks.Count - 1);
            level++;
            index >>= 1;
            completed.Add(new HistoryNode(level, index, node));
        }

        peaks.Add((level, node));
        LeafCount++;
        Invariant.Check(peaks.Count == System.Numerics.BitOperations.PopCount(LeafCount), "the frontier has one peak per set bit of the leaf count");
        return [.. completed];
    }

    /// <summary>A copy that appends independently.</summary>
    public MerkleFrontier Clone() => new(LeafCount, peaks);

    /// <summary>The frontier of the first <paramref name="count"/> leaves of a stored tree (one read per peak).</summary>
    public static MerkleFrontier Load(IHistoryNodes nodes, ulong count)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, nodes.LeafCount);
        var peaks = new List<(int, Hash32)>();
        ulong start = 0;
        for (var level = 63; level >= 0; level--)
        {
            var size = 1UL << level;
            if ((count & size) == 0)
                continue;
            peaks.Add((level, nodes.Node(level, start >> level)));
            start += size;
        }

        return new MerkleFrontier(count, peaks);
    }
}

/// <summary>Roots and audit paths of any prefix of a stored append-only tree, in O(log n) node reads.</summary>
public static class HistoryTree
{
    /// <summary>The Merkle Tree Hash of the first <paramref name="size"/> leaves.</summary>
    public static Hash32 Root(IHistoryNodes nodes, ulong size)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, nodes.LeafCount);
        return size == 0 ? MerkleTree.EmptyRoot : RangeRoot(nodes, 0, size);
    }

    /// <summary>
    /// The RFC 6962 audit path (section 2.1.1) of leaf <paramref name="index"/> in the tree of the first
    /// <paramref name="size"/> leaves, from the leaf upwards. At most one sibling is not a perfect subtree, so the
    /// path costs O(log n) reads.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not below <paramref name="size"/>, or the tree has fewer leaves.</exception>
    public static Hash32[] AuditPath(IHistoryNodes nodes, ulong index, ulong size)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, nodes.LeafCount);

        // Walk down from the root (RFC 6962: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) or PATH(m - k, D[k:n]) : MTH(D[0:k])),
        // collecting siblings top-down, then reverse them to list the path from the leaf up.
        var siblings = new List<Hash32>(64);
        ulong start = 0;
        var length = size;
        var leaf = index;
        while (length > 1)
        {
            var split = LargestPowerOfTwoBelow(length);
            if (leaf < split)
            {
                siblings.Add(RangeRoot(nodes, start + split, length - split));
                length = split;
            }
            else
            {
                siblings.Add(nodes.Node(Log2(split), start / split));
                start += split;
                leaf -= split;
                length -= split;
            }
        }

        siblings.Reverse();
        return [.. siblings];
    }

    /// <summary>
    /// The Merkle Tree Hash of leaves [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>),
    /// where <paramref name="start"/> is a multiple of a power of two at least <paramref name="length"/> (true for
    /// every subtree of an RFC 6962 tree): the perfect subtrees of the length's binary decomposition, largest first,
    /// folded from the right.
    /// </summary>
    private static Hash32 RangeRoot(IHistoryNodes nodes, ulong start, ulong length)
    {
        Invariant.Check(length > 0, "a subtree has at least one leaf");
        Span<Hash32> parts = stackalloc Hash32[64];
        var count = 0;
        for (var level = 63; level >= 0; level--)
        {
            var size = 1UL << level;
            if ((length & size) == 0)
                continue;
            Invariant.Check(start % size == 0, "perfect subtrees of an RFC 6962 tree are aligned");
            parts[count++] = nodes.Node(level, start >> level);
            start += size;
        }

        var root = parts[count - 1];
        for (var i = count - 2; i >= 0; i--)
            root = MerkleTree.HashNode(parts[i], root);
        return root;
    }

    /// <summary>
    /// Where subtree (<paramref name="level"/>, <paramref name="index"/>) sits when every completed subtree is written
    /// in the order appends complete them (post-order, as a Merkle mountain range lays them out): after the leaf
    /// <c>L - 1</c> that completes it (<c>L = (index + 1) * 2^level</c>) and its <paramref name="level"/> - 1 smaller
    /// parents. A tree of n leaves has <see cref="PostOrderCount"/>(n) nodes.
    /// </summary>
    public static ulong PostOrderPosition(int level, ulong index)
    {
        var completing = ((index + 1) << level) - 1;
        return PostOrderCount(completing) + (ulong)level;
    }

    /// <summary>The number of completed subtrees of a tree of <paramref name="leaves"/> leaves: 2n - popcount(n).</summary>
    public static ulong PostOrderCount(ulong leaves) => (2 * leaves) - (ulong)System.Numerics.BitOperations.PopCount(leaves);

    private static ulong LargestPowerOfTwoBelow(ulong n) => 1UL << (63 - System.Numerics.BitOperations.LeadingZeroCount(n - 1));

    private static int Log2(ulong powerOfTwo) => System.Numerics.BitOperations.Log2(powerOfTwo);
}

/// <summary>The in-memory <see cref="IHistoryNodes"/>: every completed subtree, by level. For tests and fakes.</summary>
public sealed class InMemoryHistoryNodes : IHistoryNodes
{
    private readonly List<List<Hash32>> levels = [];
    private readonly MerkleFrontier frontier = new();
    private readonly Lock gate = new();

    /// <inheritdoc/>
    public ulong LeafCount
    {
        get
        {
            lock (gate)
                return frontier.LeafCount;
        }
    }

    /// <summary>Appends a leaf.</summary>
    public void Append(Hash32 leaf)
    {
        lock (gate)
        {
            foreach (var node in frontier.Append(leaf))
            {
                while (levels.Count <= node.Level)
                    levels.Add([]);
                Invariant.Check((ulong)levels[node.Level].Count == node.Index, "subtrees are completed in order");
                levels[node.Level].Add(node.Hash);
            }
        }
    }

    /// <inheritdoc/>
    public Hash32 Node(int level, ulong index)
    {
        lock (gate)
        {
            if (level < 0 || level >= levels.Count || index >= (ulong)levels[level].Count)
                throw new ArgumentOutOfRangeException(nameof(index), $"subtree ({level}, {index}) is not complete");
            return levels[level][(int)index];
        }
    }
}
