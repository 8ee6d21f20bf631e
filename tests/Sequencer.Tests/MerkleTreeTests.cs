using Sequencer.Core.Hashing;

namespace Sequencer.Tests;

public sealed class MerkleTreeTests
{
    private static Hash32[] Leaves(int count) => [.. Enumerable.Range(0, count).Select(i => Keccak256.Hash([(byte)i]))];

    // Vectors computed by shared/tools/commit.py (an independent Python implementation of DESIGN section 5).
    [Theory]
    [InlineData(0, "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")]
    [InlineData(1, "0x343096bd2584d8dd159b7fc39f6b0d6fed8314f70c301f040611ded4dc7a2565")]
    [InlineData(2, "0x031f9a4372fba9eb47edeb1d9c2895364f80300cedc7d80b70ed1e26adebd280")]
    [InlineData(3, "0x2103d78c84b2bd3626b8706bda8d1b5679c0ec273e8bf809a86758b0f792a8b3")]
    [InlineData(5, "0xbd0ae5020232f374b56074221435d2c61ebed6f0e0a8063b25ce5f716b2efb78")]
    [InlineData(7, "0x4a28a6dbc91d1d74865c73e646bc489dc9cadfc528dc025961bc9b35e8e5bf37")]
    public void ComputeRoot_ReferenceVectors_Match(int count, string expected)
        => Assert.Equal(expected, MerkleTree.ComputeRoot(Leaves(count)).ToString());

    [Fact]
    public void ComputeRoot_UpTo70Leaves_EqualsRecursiveRfc6962Definition()
    {
        for (var n = 0; n <= 70; n++)
        {
            var leaves = Leaves(n);
            Assert.Equal(RecursiveRoot(leaves), MerkleTree.ComputeRoot(leaves));
        }
    }

    [Fact]
    public void AuditPath_EveryLeafOfEverySizeUpTo40_EqualsRfc6962AndVerifies()
    {
        for (var n = 1; n <= 40; n++)
        {
            var leaves = Leaves(n);
            var root = MerkleTree.ComputeRoot(leaves);
            for (var i = 0; i < n; i++)
            {
                var path = MerkleTree.ComputeAuditPath(leaves, i);
                Assert.Equal(RecursivePath(i, leaves), path);
                Assert.True(MerkleTree.VerifyInclusion(i, n, leaves[i], path, root), $"leaf {i} of {n}");
            }
        }
    }

    [Fact]
    public void VerifyInclusion_WrongLeafIndexSizeOrRoot_Fails()
    {
        var leaves = Leaves(13);
        var root = MerkleTree.ComputeRoot(leaves);
        var path = MerkleTree.ComputeAuditPath(leaves, 3);
        Assert.True(MerkleTree.VerifyInclusion(3, 13, leaves[3], path, root));
        Assert.False(MerkleTree.VerifyInclusion(3, 13, leaves[4], path, root));
        Assert.False(MerkleTree.VerifyInclusion(4, 13, leaves[3], path, root));
        // An audit path does not bind the tree size within the same shape (sizes 9 to 16 share this path), but it binds the depth.
        Assert.False(MerkleTree.VerifyInclusion(3, 4, leaves[3], path, root));
        Assert.False(MerkleTree.VerifyInclusion(3, 13, leaves[3], path, leaves[0]));
        Assert.False(MerkleTree.VerifyInclusion(3, 13, leaves[3], path.AsSpan()[..^1], root));
        Assert.False(MerkleTree.VerifyInclusion(13, 13, leaves[3], path, root));
    }

    [Fact]
    public void AuditPath_IndexOutOfRange_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => MerkleTree.ComputeAuditPath(Leaves(3), 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => MerkleTree.ComputeAuditPath(Leaves(3), -1));
    }

    // The RFC 6962 definitions, written recursively and independently of the implementation under test.
    private static int Split(int n)
    {
        var k = 1;
        while (k * 2 < n)
            k *= 2;
        return k;
    }

    internal static Hash32 RecursiveRoot(ReadOnlySpan<Hash32> d)
    {
        if (d.Length == 0)
            return Keccak256.Hash([]);
        if (d.Length == 1)
            return Keccak256.Hash([0x00, .. d[0].ToArray()]);
        var k = Split(d.Length);
        return Keccak256.Hash([0x01, .. RecursiveRoot(d[..k]).ToArray(), .. RecursiveRoot(d[k..]).ToArray()]);
    }

    internal static Hash32[] RecursivePath(int m, ReadOnlySpan<Hash32> d)
    {
        if (d.Length <= 1)
            return [];
        var k = Split(d.Length);
        return m < k
            ? [.. RecursivePath(m, d[..k]), RecursiveRoot(d[k..])]
            : [.. RecursivePath(m - k, d[k..]), RecursiveRoot(d[..k])];
    }
}
