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
            for (var i = 0; i < leaves.Length; i++)
                level[i] = HashLeaf(leaves[i]);

            for (var size = level.Length; size > 1; size = (size + 1) / 2)
            {
                for (var i = 0; i < size / 2; i++)
                    level[i] = HashNode(level[2 * i], level[2 * i + 1]);
                if ((size & 1) == 1)
                    level[size / 2] = level[size - 1];
            }

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
        for (var i = 0; i < leaves.Length; i++)
            level[i] = HashLeaf(leaves[i]);

        var path = new List<Hash32>(32);
        var position = index;
        for (var size = level.Length; size > 1; size = (size + 1) / 2)
        {
            var sibling = position ^ 1;
            if (sibling < size)
                path.Add(level[sibling]);

            for (var i = 0; i < size / 2; i++)
                level[i] = HashNode(level[2 * i], level[2 * i + 1]);
            if ((size & 1) == 1)
                level[size / 2] = level[size - 1];
            position >>= 1;
        }

        return [.. path];
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
