using Microsoft.Win32.SafeHandles;
using Sequencer.Core;
using Sequencer.Core.Hashing;

namespace Sequencer.Node.Storage;

/// <summary>
/// The store's history tree (DESIGN section 5): every completed subtree hash of the tree over all stored commitments,
/// in one append-only file laid out in post-order (<see cref="HistoryTree.PostOrderPosition"/>), 32 bytes a node, so
/// that any node is one read and any audit path of any head's history O(log n) reads.
/// </summary>
/// <remarks>
/// The file is derived data: it is written and fsynced before the LiteDB transaction that stores the same batches
/// commits, and cut back at open to what the store's checkpoint names. A file that is shorter than that, or whose
/// last leaf does not match the last stored header, is rebuilt from the stored commitments. One writer (the
/// persister); readers are safe concurrently (positional reads).
/// </remarks>
public sealed class HistoryFile : IHistoryNodes, IDisposable
{
    private const int NodeBytes = Hash32.Length;
    private const int ChunkNodes = 8192;

    private readonly SafeFileHandle handle;
    private MerkleFrontier frontier;
    private ulong committedLeaves;

    /// <summary>Opens (or creates) the file at <paramref name="path"/>, holding exactly the first <paramref name="leaves"/> leaves once <paramref name="rebuild"/> has supplied what is missing.</summary>
    /// <param name="path">The file.</param>
    /// <param name="leaves">The number of commitments the store holds (its checkpoint's last height).</param>
    /// <param name="lastCommitment">The commitment of the last stored header, to check the file against (ignored when <paramref name="leaves"/> is 0).</param>
    /// <param name="rebuild">Every stored commitment from height 1, ascending: read only when the file must be rebuilt.</param>
    /// <exception cref="IOException">The file cannot be opened or written.</exception>
    public HistoryFile(string path, ulong leaves, Hash32 lastCommitment, Func<IEnumerable<Hash32>> rebuild)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(rebuild);
        handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        var expected = (long)HistoryTree.PostOrderCount(leaves) * NodeBytes;
        var length = RandomAccess.GetLength(handle);
        frontier = new MerkleFrontier();
        if (length >= expected)
        {
            // A longer file holds subtrees of a group whose store transaction never committed: cut them off.
            if (length > expected)
                RandomAccess.SetLength(handle, expected);
            committedLeaves = leaves;
            if (leaves == 0 || Node(0, leaves - 1) == MerkleTree.HashLeaf(lastCommitment))
            {
                frontier = MerkleFrontier.Load(this, leaves);
                return;
            }
        }

        // Missing or damaged (or a store from before the file existed): rebuild it from the stored commitments.
        RandomAccess.SetLength(handle, 0);
        committedLeaves = 0;
        frontier = new MerkleFrontier();
        Append(rebuild());
        Invariant.Check(committedLeaves == leaves, $"the history rebuilt from the store holds its {leaves} commitments");
        RebuiltLeaves = leaves;
    }

    /// <summary>How many leaves were rebuilt from the store at open (0: the file was intact).</summary>
    public ulong RebuiltLeaves { get; }

    /// <inheritdoc/>
    public ulong LeafCount => Volatile.Read(ref committedLeaves);

    /// <summary>The root of every appended leaf (the next header's history root).</summary>
    public Hash32 Root => frontier.Root;

    /// <summary>
    /// Appends commitments and makes them durable (fsync). Called before the store transaction that holds the same
    /// batches commits; if that transaction fails, <see cref="Truncate"/> takes them back.
    /// </summary>
    public void Append(IEnumerable<Hash32> commitments)
    {
        ArgumentNullException.ThrowIfNull(commitments);
        // Written in bounded chunks: a rebuild of a long history must not hold it all in memory.
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(ChunkNodes * NodeBytes);
        try
        {
            AppendChunked(commitments, buffer.AsSpan(0, ChunkNodes * NodeBytes));
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void AppendChunked(IEnumerable<Hash32> commitments, Span<byte> buffer)
    {
        var filled = 0;
        var position = (long)HistoryTree.PostOrderCount(frontier.LeafCount) * NodeBytes;
        var appended = 0UL;
        foreach (var commitment in commitments)
        {
            foreach (var node in frontier.Append(commitment))
            {
                node.Hash.CopyTo(buffer.Slice(filled, NodeBytes));
                filled += NodeBytes;
                if (filled == buffer.Length)
                {
                    RandomAccess.Write(handle, buffer, position);
                    position += filled;
                    filled = 0;
                }
            }

            appended++;
        }

        if (appended == 0)
            return;
        RandomAccess.Write(handle, buffer[..filled], position);
        RandomAccess.FlushToDisk(handle);
        Volatile.Write(ref committedLeaves, frontier.LeafCount);
    }

    /// <summary>Cuts the file back to its first <paramref name="leaves"/> leaves (a store write that failed after <see cref="Append"/>).</summary>
    public void Truncate(ulong leaves)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(leaves, frontier.LeafCount);
        Volatile.Write(ref committedLeaves, leaves);
        RandomAccess.SetLength(handle, (long)HistoryTree.PostOrderCount(leaves) * NodeBytes);
        frontier = MerkleFrontier.Load(this, leaves);
    }

    /// <inheritdoc/>
    public Hash32 Node(int level, ulong index)
    {
        if (level is < 0 or > 63 || ((index + 1) << level) > LeafCount || ((index + 1) << level) >> level != index + 1)
            throw new ArgumentOutOfRangeException(nameof(index), $"subtree ({level}, {index}) is not complete in a history of {LeafCount} leaves");
        Span<byte> bytes = stackalloc byte[NodeBytes];
        var read = RandomAccess.Read(handle, bytes, (long)HistoryTree.PostOrderPosition(level, index) * NodeBytes);
        if (read != NodeBytes)
            throw new IOException($"the history file ends before subtree ({level}, {index})");
        return new Hash32(bytes);
    }

    /// <inheritdoc/>
    public void Dispose() => handle.Dispose();
}
