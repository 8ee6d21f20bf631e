using Org.BouncyCastle.Crypto.Digests;

namespace Sequencer.Checker;

/// <summary>
/// RFC 6962 Merkle trees with keccak256 (DESIGN section 5), written for the checker on BouncyCastle's Keccak alone,
/// sharing no code with the node's Merkle implementation: the history roots and coverage proofs a node serves are
/// checked against this.
/// </summary>
public static class CheckerMerkle
{
    /// <summary>keccak256 of <paramref name="data"/>.</summary>
    public static byte[] Keccak(ReadOnlySpan<byte> data)
    {
        var digest = new KeccakDigest(256);
        digest.BlockUpdate(data);
        var output = new byte[32];
        digest.DoFinal(output, 0);
        return output;
    }

    /// <summary>keccak256(0x00 || leaf).</summary>
    public static byte[] Leaf(ReadOnlySpan<byte> leaf) => Keccak([0x00, .. leaf]);

    /// <summary>keccak256(0x01 || left || right).</summary>
    public static byte[] Node(ReadOnlySpan<byte> left, ReadOnlySpan<byte> right) => Keccak([0x01, .. left, .. right]);

    /// <summary>RFC 9162 section 2.1.3.2: is <paramref name="leaf"/> leaf <paramref name="index"/> of a tree of <paramref name="size"/> leaves with <paramref name="root"/>?</summary>
    public static bool VerifyInclusion(ulong index, ulong size, ReadOnlySpan<byte> leaf, IReadOnlyList<byte[]> path, ReadOnlySpan<byte> root)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (index >= size)
            return false;
        var fn = index;
        var sn = size - 1;
        var r = Leaf(leaf);
        foreach (var p in path)
        {
            if (p.Length != 32 || sn == 0)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                r = Node(p, r);
                while ((fn & 1) == 0 && fn != 0)
                {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
            else
            {
                r = Node(r, p);
            }

            fn >>= 1;
            sn >>= 1;
        }

        return sn == 0 && r.AsSpan().SequenceEqual(root);
    }

    /// <summary>The roots of a growing tree, one leaf at a time: <see cref="Root"/> after n appends is the tree hash of those n leaves.</summary>
    public sealed class Accumulator
    {
        // Perfect subtrees, largest first, as (leaf count, hash).
        private readonly List<(ulong Size, byte[] Hash)> parts = [];

        /// <summary>The number of leaves.</summary>
        public ulong Count { get; private set; }

        /// <summary>The tree hash of every leaf so far (keccak256("") for none).</summary>
        public byte[] Root
        {
            get
            {
                if (parts.Count == 0)
                    return Keccak([]);
                var root = parts[^1].Hash;
                for (var i = parts.Count - 2; i >= 0; i--)
                    root = Node(parts[i].Hash, root);
                return root;
            }
        }

        /// <summary>Adds a leaf.</summary>
        public void Add(ReadOnlySpan<byte> leaf)
        {
            var hash = Leaf(leaf);
            ulong size = 1;
            while (parts.Count > 0 && parts[^1].Size == size)
            {
                hash = Node(parts[^1].Hash, hash);
                size *= 2;
                parts.RemoveAt(parts.Count - 1);
            }

            parts.Add((size, hash));
            Count++;
        }
    }
}
