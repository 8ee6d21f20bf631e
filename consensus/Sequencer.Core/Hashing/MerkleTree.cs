using System.Runtime.CompilerServices;

namespace Sequencer.Core.Hashing;

/// <summary>
/// RFC 6962 section 2.1 Merkle Tree Hash with keccak256 in place of SHA-256 (DESIGN section 5):
/// leaves are tx hashes, a leaf is hashed as keccak256(0x00 || txHash), an inner node as
/// keccak256(0x01 || left || right), the split is at the largest power of two below n,
/// and the empty tree is keccak256("").
/// </summary>
/// <remarks>
/// Computed bottom-up: pairing nodes left to right and promoting an unpaired last node unchanged builds exactly
/// the RFC 6962 tree, without recursion or allocation per level beyond one scratch array.
/// </remarks>
public static class MerkleTree
{
    private const byte LeafPrefix = 0x00;
    private const byte NodePrefix = 0x01;

    /// <summary>keccak256 of the empty string: the root of a tree with no leaves.</summary>
    public static readonly Hash32 EmptyRoot = Keccak256.Hash([]);

    /// <summary>The leaf hash keccak256(0x00 || leaf).</summary>
    public static Hash32 HashLeaf(Hash32 leaf)
    {
        Span<byte> buffer = stackalloc byte[1 + Hash32.Length];
        buffer[0] = LeafPrefix;
        leaf.CopyTo(buffer[1..]);
        return Keccak256.Hash(buffer);
    }

    /// <summary>The inner node hash keccak256(0x01 || left || right).</summary>
    public static Hash32 HashNode(Hash32 left, Hash32 right)
    {
        Span<byte> buffer = stackalloc byte[1 + 2 * Hash32.Length];
        buffer[0] = NodePrefix;
        left.CopyTo(buffer[1..]);
        right.CopyTo(buffer[(1 + Hash32.Length)..]);
        return Keccak256.Hash(buffer);
    }

    /// <summary>The Merkle Tree Hash of <paramref name="leaves"/> (tx hashes, in batch order).</summary>
    public static Hash32 ComputeRoot(ReadOnlySpan<Hash32> leaves)
    {
        if (leaves.IsEmpty)
            return EmptyRoot;

        // A batch's worth of hashes is on the large object heap at saturation: borrow the scratch level.
        var rented = System.Buffers.ArrayPool<Hash32>.Shared.Rent(leaves.Length);
        try
        {
            var level = rented.AsSpan(0, leaves.Length);
            HashLeaves(leaves, level);
            for (var size = level.Length; size > 1; size = (size + 1) / 2)
                HashLevel(level, size);

            return level[0];
        }
        finally
        {
            System.Buffers.ArrayPool<Hash32>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// The RFC 6962 section 2.1.1 audit path of leaf <paramref name="index"/>, listed from the leaf upwards.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not in [0, leaves.Length).</exception>
    public static Hash32[] ComputeAuditPath(ReadOnlySpan<Hash32> leaves, int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, leaves.Length);

        var level = new Hash32[leaves.Length];
        HashLeaves(leaves, level);
        var path = new List<Hash32>(32);
        var position = index;
        for (var size = level.Length; size > 1; size = (size + 1) / 2)
        {
            var sibling = position ^ 1;
            if (sibling < size)
                path.Add(level[sibling]);

            HashLevel(level, size);
            position >>= 1;
        }

        return [.. path];
    }

    // level[i] = HashLeaf(leaves[i]) for every leaf, four at a time where the CPU allows (a last group of fewer than four
    // is padded with copies of its last: one four-way permutation still costs less than two single ones).
    [SkipLocalsInit]
    private static void HashLeaves(ReadOnlySpan<Hash32> leaves, Span<Hash32> level)
    {
        const int Length = 1 + Hash32.Length;
        if (!Keccak256x4.IsAccelerated)
        {
            for (var i = 0; i < leaves.Length; i++)
                level[i] = HashLeaf(leaves[i]);
            return;
        }

        Span<byte> buffers = stackalloc byte[4 * Length];
        for (var i = 0; i < leaves.Length; i += 4)
        {
            var count = Math.Min(4, leaves.Length - i);
            for (var k = 0; k < count; k++)
            {
                buffers[k * Length] = LeafPrefix;
                leaves[i + k].CopyTo(buffers.Slice((k * Length) + 1, Hash32.Length));
            }

            HashFour(buffers, Length, count, level[i..]);
        }
    }

    // One level up, in place: the first size / 2 entries become the hashes of the pairs, and an unpaired last node
    // moves up unchanged (RFC 6962's tree, built bottom-up). Four pairs at a time where the CPU allows: the children are
    // copied out before their parents overwrite them.
    [SkipLocalsInit]
    private static void HashLevel(Span<Hash32> level, int size)
    {
        const int Length = 1 + (2 * Hash32.Length);
        var pairs = size / 2;
        if (!Keccak256x4.IsAccelerated)
        {
            for (var i = 0; i < pairs; i++)
                level[i] = HashNode(level[2 * i], level[(2 * i) + 1]);
        }
        else
        {
            Span<byte> buffers = stackalloc byte[4 * Length];
            for (var i = 0; i < pairs; i += 4)
            {
                var count = Math.Min(4, pairs - i);
                for (var k = 0; k < count; k++)
                {
                    var node = buffers.Slice(k * Length, Length);
                    node[0] = NodePrefix;
                    level[2 * (i + k)].CopyTo(node[1..]);
                    level[(2 * (i + k)) + 1].CopyTo(node[(1 + Hash32.Length)..]);
                }

                HashFour(buffers, Length, count, level[i..]);
            }
        }

        if ((size & 1) == 1)
            level[pairs] = level[size - 1];
    }

    // The keccak256 of the first `count` (1 to 4) messages of `length` bytes in `buffers` into `into`.
    private static void HashFour(ReadOnlySpan<byte> buffers, int length, int count, Span<Hash32> into)
    {
        var last = count - 1;
        Keccak256x4.Hash(buffers[..length], buffers.Slice(Math.Min(1, last) * length, length), buffers.Slice(Math.Min(2, last) * length, length),
            buffers.Slice(Math.Min(3, last) * length, length), count, into);
    }

    /// <summary>
    /// Verifies an audit path as RFC 9162 section 2.1.3.2 does (the same tree as RFC 6962).
    /// </summary>
    /// <returns>True when <paramref name="leaf"/> is at <paramref name="index"/> of a tree of
    /// <paramref name="size"/> leaves with root <paramref name="root"/>.</returns>
    public static bool VerifyInclusion(long index, long size, Hash32 leaf, ReadOnlySpan<Hash32> path, Hash32 root)
    {
        if (index < 0 || index >= size)
            return false;

        long fn = index, sn = size - 1;
        var r = HashLeaf(leaf);
        foreach (var p in path)
        {
            if (sn == 0)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                r = HashNode(p, r);
                if ((fn & 1) == 0)
                {
                    while (fn != 0 && (fn & 1) == 0)
                    {
                        fn >>= 1;
                        sn >>= 1;
                    }
                }
            }
            else
            {
                r = HashNode(r, p);
            }

            fn >>= 1;
            sn >>= 1;
        }

        return sn == 0 && r == root;
    }
}
