using Sequencer.Core.Hashing;

namespace Sequencer.Tests;

/// <summary>The history tree (DESIGN section 5): frontier roots, stored subtrees and audit paths of every prefix.</summary>
public sealed class HistoryTreeTests
{
    private static Hash32[] Leaves(int count) => [.. Enumerable.Range(0, count).Select(i => Keccak256.Hash(BitConverter.GetBytes(i * 7919L)))];

    private static InMemoryHistoryNodes Stored(IEnumerable<Hash32> leaves)
    {
        var nodes = new InMemoryHistoryNodes();
        foreach (var leaf in leaves)
            nodes.Append(leaf);
        return nodes;
    }

    [Fact]
    public void FrontierRoot_EverySizeUpTo300_EqualsTheRecursiveDefinitionAndTheBottomUpRoot()
    {
        var leaves = Leaves(300);
        var frontier = new MerkleFrontier();
        Assert.Equal(MerkleTree.EmptyRoot, frontier.Root);
        for (var n = 1; n <= leaves.Length; n++)
        {
            frontier.Append(leaves[n - 1]);
            var prefix = leaves.AsSpan(0, n);
            Assert.Equal(MerkleTreeTests.RecursiveRoot(prefix), frontier.Root);
            Assert.Equal(MerkleTree.ComputeRoot(prefix), frontier.Root);
        }
    }

    [Theory]
    [InlineData(1_000)]
    [InlineData(4_097)]
    [InlineData(65_537)]
    public void FrontierRoot_LargeTrees_EqualsTheBottomUpRoot(int size)
    {
        var leaves = Leaves(size);
        var frontier = new MerkleFrontier();
        foreach (var leaf in leaves)
            frontier.Append(leaf);
        Assert.Equal(MerkleTree.ComputeRoot(leaves), frontier.Root);
        Assert.Equal(MerkleTree.ComputeRoot(leaves), HistoryTree.Root(Stored(leaves), (ulong)size));
    }

    [Fact]
    public void AuditPath_EveryLeafOfEveryPrefixUpTo130_EqualsRfc6962AndVerifies()
    {
        // One stored tree of 130 leaves serves the proofs of every prefix (every head's history).
        var leaves = Leaves(130);
        var nodes = Stored(leaves);
        for (var size = 1; size <= leaves.Length; size++)
        {
            var prefix = leaves.AsSpan(0, size);
            var root = HistoryTree.Root(nodes, (ulong)size);
            Assert.Equal(MerkleTreeTests.RecursiveRoot(prefix), root);
            for (var index = 0; index < size; index++)
            {
                var path = HistoryTree.AuditPath(nodes, (ulong)index, (ulong)size);
                Assert.Equal(MerkleTreeTests.RecursivePath(index, prefix), path);
                Assert.True(MerkleTree.VerifyInclusion(index, size, leaves[index], path, root), $"leaf {index} of {size}");
            }
        }
    }

    [Theory]
    [InlineData(300)]
    [InlineData(4_097)]
    [InlineData(65_537)]
    public void AuditPath_LargeTrees_EqualsTheBottomUpPath(int size)
    {
        var leaves = Leaves(size);
        var nodes = Stored(leaves);
        var root = MerkleTree.ComputeRoot(leaves);
        var random = new Random(size);
        foreach (var index in new[] { 0, size - 1, size / 2 }.Concat(Enumerable.Range(0, 20).Select(_ => random.Next(size))))
        {
            var path = HistoryTree.AuditPath(nodes, (ulong)index, (ulong)size);
            Assert.Equal(MerkleTree.ComputeAuditPath(leaves, index), path);
            Assert.True(MerkleTree.VerifyInclusion(index, size, leaves[index], path, root));
            Assert.True(path.Length <= 64);
        }
    }

    [Fact]
    public void Append_YieldsEveryCompletedSubtreeOnce_AndLoadRebuildsTheFrontier()
    {
        var leaves = Leaves(77);
        var frontier = new MerkleFrontier();
        var emitted = new List<HistoryNode>();
        foreach (var leaf in leaves)
            emitted.AddRange(frontier.Append(leaf));

        // 77 leaves: 77 + 38 + 19 + 9 + 4 + 2 + 1 completed subtrees.
        Assert.Equal(77 + 38 + 19 + 9 + 4 + 2 + 1, emitted.Count);
        Assert.Equal(emitted.Count, emitted.Select(n => (n.Level, n.Index)).Distinct().Count());
        var nodes = Stored(leaves);
        Assert.All(emitted, n => Assert.Equal(nodes.Node(n.Level, n.Index), n.Hash));
        for (ulong count = 0; count <= 77; count++)
            Assert.Equal(HistoryTree.Root(nodes, count), MerkleFrontier.Load(nodes, count).Root);
    }

    [Fact]
    public void PostOrderPosition_IsTheOrderAppendsCompleteSubtrees()
    {
        var frontier = new MerkleFrontier();
        ulong position = 0;
        foreach (var leaf in Leaves(200))
        {
            foreach (var node in frontier.Append(leaf))
                Assert.Equal(position++, HistoryTree.PostOrderPosition(node.Level, node.Index));
            Assert.Equal(position, HistoryTree.PostOrderCount(frontier.LeafCount));
        }
    }

    [Fact]
    public void AuditPath_OutOfRange_Throws()
    {
        var nodes = Stored(Leaves(5));
        Assert.Throws<ArgumentOutOfRangeException>(() => HistoryTree.AuditPath(nodes, 5, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => HistoryTree.AuditPath(nodes, 0, 6));
        Assert.Throws<ArgumentOutOfRangeException>(() => nodes.Node(1, 2));
    }
}
