using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Core.Storage;

/// <summary>An applied batch as the node keeps it: the header, its tx hashes and local bookkeeping.</summary>
public sealed class StoredBatch
{
    /// <summary>The deterministic header.</summary>
    public required BatchHeader Header { get; init; }

    /// <summary>
    /// The ordered tx hashes (the Merkle leaves); <c>TxHashes.Length == Header.TxCount</c>, or empty when the batch is
    /// <see cref="Pruned"/>.
    /// </summary>
    public required Hash32[] TxHashes { get; init; }

    /// <summary>
    /// True when retention removed the batch's per-tx data (hashes and receive times): the header, commitment and
    /// bookkeeping stay, and so do the tx accounts (ethereum mode: they rebuild the senders' nonces on a node that
    /// installs this batch from a snapshot).
    /// </summary>
    public bool Pruned { get; init; }

    /// <summary>For each tx, the leader's receive time in Unix ms, or 0 when unknown (empty when <see cref="Pruned"/>).</summary>
    public required ulong[] ReceivedMs { get; init; }

    /// <summary>The Raft log index of the entry that carried the batch.</summary>
    public required long RaftIndex { get; init; }

    /// <summary>When this node applied the batch, in Unix ms: the time the txs became <c>ordered</c> here.</summary>
    public required ulong OrderedAtMs { get; init; }

    /// <summary>In ethereum mode each tx's sender and nonce (<see cref="Validation.TxAccount.EncodedLength"/> bytes per tx, batch order); empty otherwise.</summary>
    public byte[] TxAccounts { get; init; } = [];

    /// <summary>The account of the tx at <paramref name="index"/>, or null in opaque mode.</summary>
    public Validation.TxAccount? AccountAt(int index)
        => TxAccounts.Length == 0 ? null : Validation.TxAccount.ReadFrom(TxAccounts.AsSpan(index * Validation.TxAccount.EncodedLength));

    /// <summary>Checks the internal consistency: counts match and the Merkle root matches the hashes.</summary>
    /// <exception cref="InvariantViolationException">The batch is corrupt.</exception>
    public void Verify()
    {
        Invariant.Check(TxAccounts.Length == 0 || TxAccounts.Length == Header.TxCount * Validation.TxAccount.EncodedLength, $"batch {Header.Height}: one account per tx or none");
        if (Pruned)
        {
            Invariant.Check(TxHashes.Length == 0 && ReceivedMs.Length == 0, $"pruned batch {Header.Height} holds no tx hashes or receive times");
            return;
        }

        Invariant.Check(Header.TxCount == TxHashes.Length, $"batch {Header.Height}: tx count matches the stored hashes");
        Invariant.Check(ReceivedMs.Length == TxHashes.Length, $"batch {Header.Height}: one receive time per tx");
        Invariant.Check(MerkleTree.ComputeRoot(TxHashes) == Header.TxRoot, $"batch {Header.Height}: txRoot matches the stored hashes");
    }

    /// <summary>The hash of the tx at <paramref name="index"/>, or <see cref="Hash32.Zero"/> when the batch is pruned (unknown).</summary>
    public Hash32 HashAt(int index) => Pruned ? Hash32.Zero : TxHashes[index];

    /// <summary>This batch without its per-tx data (<see cref="Pruned"/>).</summary>
    public StoredBatch WithoutTxData() => Pruned ? this : new StoredBatch
    {
        Header = Header,
        TxHashes = [],
        ReceivedMs = [],
        RaftIndex = RaftIndex,
        OrderedAtMs = OrderedAtMs,
        TxAccounts = TxAccounts,
        Pruned = true,
    };
}

/// <summary>
/// What the store has made durable. Everything up to <see cref="AppliedIndex"/> is in the store; the Raft log may be
/// compacted up to <see cref="SnapshotIndex"/>, which trails it so that briefly lagging followers catch up from
/// the log instead of receiving a whole snapshot.
/// </summary>
/// <param name="AppliedIndex">The last Raft index whose effects are stored.</param>
/// <param name="AppliedTerm">The term of that entry.</param>
/// <param name="LastHeight">The highest stored batch height (0 for none).</param>
/// <param name="SnapshotIndex">The Raft index the current snapshot covers (0 for none).</param>
/// <param name="SnapshotTerm">The term of that entry.</param>
/// <param name="SnapshotHeight">The highest batch height in the snapshot.</param>
/// <param name="SignedWatermark">Every height at or below it is signed or predates the first key epoch.</param>
public readonly record struct StoreCheckpoint(long AppliedIndex, long AppliedTerm, ulong LastHeight, long SnapshotIndex, long SnapshotTerm, ulong SnapshotHeight, ulong SignedWatermark = 0)
{
    /// <summary>An empty store.</summary>
    public static StoreCheckpoint Empty => default;
}

/// <summary>A data directory written in a format this node cannot use (for example v1 headers without a history root).</summary>
/// <param name="message">What was found and what to do.</param>
public sealed class DataFormatException(string message) : IOException(message);

/// <summary>
/// Durable storage of applied batches. Batches are appended in height order in grouped transactions and never
/// change afterwards.
/// </summary>
/// <remarks>Implementations are safe for one writer and concurrent readers.</remarks>
public interface IBatchStore : IDisposable
{
    /// <summary>The checkpoint written by the last <see cref="Append"/>, or <see cref="StoreCheckpoint.Empty"/>.</summary>
    StoreCheckpoint ReadCheckpoint();

    /// <summary>
    /// Appends <paramref name="batches"/> (heights contiguous after the stored ones) and the signing records, and
    /// records <paramref name="checkpoint"/>, durably and atomically: after a crash either all of it is there or none.
    /// A signed head for a height that already has one is ignored (the first signature of a height stays).
    /// </summary>
    /// <exception cref="InvariantViolationException">The heights do not continue the stored chain, or a header's history root is not the
    /// root over the stored commitments below it.</exception>
    /// <exception cref="IOException">The disk failed; the store is unchanged.</exception>
    void Append(IReadOnlyList<StoredBatch> batches, StoreCheckpoint checkpoint, SigningWrites? signing = null);

    /// <summary>The signed head at exactly <paramref name="height"/>, or null when that height is not a signed head.</summary>
    SignedHead? GetHead(ulong height);

    /// <summary>The lowest stored signed head at or above <paramref name="height"/> (the head that covers it), or null.</summary>
    SignedHead? CoveringHead(ulong height);

    /// <summary>Stored signed heads at or above <paramref name="fromHeight"/>, ascending, at most <paramref name="limit"/>.</summary>
    IReadOnlyList<SignedHead> Heads(ulong fromHeight, int limit);

    /// <summary>Every stored key epoch, ascending.</summary>
    IReadOnlyList<StoredKeyEpoch> ReadKeyEpochs();

    /// <summary>The stored pool of published, unused nonce commitments.</summary>
    CommitmentPool ReadCommitments();

    /// <summary>
    /// The encoded DKG entries of a key generation still in progress, in log order (cleared once its key epoch is in
    /// force): a restarted node rebuilds the DKG from them.
    /// </summary>
    IReadOnlyList<byte[]> ReadDkgEntries();

    /// <summary>
    /// The encoded DKG entries of the key generation that was in progress at the snapshot point (empty when none was):
    /// a snapshot carries them, so that a node that installs it goes on with that key generation from the log.
    /// </summary>
    IReadOnlyList<byte[]> ReadSnapshotDkgEntries();

    /// <summary>
    /// The history tree over the commitments of every stored batch, in height order (its leaf count is the stored
    /// height): the completed subtrees that proofs of any head's history read.
    /// </summary>
    IHistoryNodes History { get; }

    /// <summary>The batch at <paramref name="height"/>, or null when it is not stored.</summary>
    StoredBatch? Get(ulong height);

    /// <summary>Stored batches with heights in [<paramref name="fromHeight"/>, <paramref name="toHeight"/>], ascending.</summary>
    IEnumerable<StoredBatch> Scan(ulong fromHeight, ulong toHeight);

    /// <summary>
    /// The position of the stored tx whose hash has the same first 128 bits as <paramref name="hash"/> (the key of the
    /// tx index, <see cref="RecentTxIndex"/>). Exact for every batch stored at a height at or below
    /// <paramref name="maxHeight"/> and above <see cref="PrunedHeight"/>: such a tx is never missed, and nothing that is not stored is ever found. A tx stored
    /// above <paramref name="maxHeight"/> may be found or not (the caller knows those from memory). Concurrent appends do
    /// not disturb a lookup below the heights they write.
    /// </summary>
    /// <remarks>Cheap for a tx that was never stored (the common case at apply): it must not cost a disk read as a rule.</remarks>
    /// <exception cref="IOException">The index could not be read, or was damaged.</exception>
    bool TryGetTxPosition(Hash32 hash, ulong maxHeight, out TxPosition position);

    /// <summary>The number of txs in the stored tx index (the stored batches' txs, less those pruned and merged away).</summary>
    long TxCount { get; }

    /// <summary>
    /// The highest height whose tx data retention removed (0: none). Pruned heights form a prefix: every stored batch
    /// at or below it is <see cref="StoredBatch.Pruned"/>, every one above it is whole. Lookups of txs at pruned
    /// heights (<see cref="TryGetTxPosition"/>) may find them until the index drops them, or not.
    /// </summary>
    ulong PrunedHeight { get; }

    /// <summary>
    /// Removes the tx hashes and receive times of the stored batches above <see cref="PrunedHeight"/> up to
    /// <paramref name="throughHeight"/> (at most <paramref name="maxBatches"/> of them, and never above the stored
    /// height), durably, in one transaction; headers, commitments, history nodes, signed heads and tx accounts stay.
    /// </summary>
    /// <returns>The new <see cref="PrunedHeight"/>.</returns>
    /// <exception cref="IOException">The disk failed; the store is unchanged.</exception>
    ulong Prune(ulong throughHeight, int maxBatches);

    /// <summary>
    /// An account's state as of the stored batches (ethereum mode: each stored batch's tx accounts move their
    /// senders' next nonce, in the same transaction as the batch), or null for an account with no stored tx.
    /// </summary>
    Validation.AccountState? ReadAccount(Validation.SenderId sender);

    /// <summary>The chain's genesis (the validation mode and chain id from the log's genesis entry), or null.</summary>
    (ulong ChainId, Validation.ValidationMode Mode)? ReadGenesis();

    /// <summary>Records the chain's genesis (durably, at once; the same genesis again is a no-op).</summary>
    void WriteGenesis(ulong chainId, Validation.ValidationMode mode);
}
