namespace Sequencer.Core.Storage;

/// <summary>A group signature over the commitment of the batch at <see cref="Height"/>.</summary>
/// <param name="Height">The batch height.</param>
/// <param name="KeyEpoch">The key epoch that signed.</param>
/// <param name="Signers">The signers whose shares were aggregated, ascending.</param>
/// <param name="R">R, 33 bytes compressed.</param>
/// <param name="Z">z, 32 bytes.</param>
/// <param name="SignedAtMs">When this node applied the signature, in Unix ms (the <c>signed</c> time; local bookkeeping).</param>
public sealed record SignedHead(ulong Height, ulong KeyEpoch, IReadOnlyList<int> Signers, byte[] R, byte[] Z, ulong SignedAtMs);

/// <summary>A key epoch as the log established it.</summary>
/// <param name="Epoch">The epoch.</param>
/// <param name="Threshold">t.</param>
/// <param name="GroupKey">The group key, 33 bytes.</param>
/// <param name="Members">The member ids, ascending.</param>
/// <param name="VerificationShares">Each member's verification share, 33 bytes, in member order.</param>
/// <param name="RaftIndex">
/// The Raft index of the entry that made it: for the first epoch, headers applied after it carry the epoch; a later one
/// comes into force at its <see cref="Rotation"/>'s index.
/// </param>
/// <param name="Pending">
/// True for a key epoch that a key generation made while an earlier epoch is in force: it waits for the earlier
/// epoch's signature over the hand-over (its <see cref="Rotation"/>), and signs nothing until then.
/// </param>
/// <param name="Rotation">For an epoch after the first in force, the previous epoch's signature that handed over to it; else null.</param>
public sealed record StoredKeyEpoch(ulong Epoch, int Threshold, byte[] GroupKey, IReadOnlyList<int> Members, IReadOnlyList<byte[]> VerificationShares, long RaftIndex,
    bool Pending = false, KeyRotationProof? Rotation = null)
{
    /// <summary>The Raft index from which the epoch is in force (null rotation: <see cref="RaftIndex"/>).</summary>
    public long InForceFrom => Rotation?.RaftIndex ?? RaftIndex;

    /// <summary>Checks the record's shape before a store writes it: one verification share per member, a usable threshold.</summary>
    /// <exception cref="InvariantViolationException">The record is malformed (a programmer error: apply validated it).</exception>
    public void CheckShape()
        => Invariant.Check(GroupKey is not null && Members is not null && VerificationShares is not null && Members.Count == VerificationShares.Count
            && Threshold >= 1 && Threshold <= Members.Count, $"key epoch {Epoch}: one verification share per member and 1 <= t <= n");
}

/// <summary>The previous key epoch's signature over the hand-over to this one (<see cref="Encoding.KeyRotationMessage"/>).</summary>
/// <param name="FromEpoch">The key epoch that signed.</param>
/// <param name="Signers">Its signers whose shares were aggregated, ascending.</param>
/// <param name="R">R, 33 bytes compressed.</param>
/// <param name="Z">z, 32 bytes.</param>
/// <param name="SignedAtMs">When the leader verified the aggregate (Unix ms).</param>
/// <param name="RaftIndex">The Raft index of the hand-over entry: headers applied after it carry the new epoch.</param>
public sealed record KeyRotationProof(ulong FromEpoch, IReadOnlyList<int> Signers, byte[] R, byte[] Z, ulong SignedAtMs, long RaftIndex);

/// <summary>A published nonce commitment that no signing session has used yet.</summary>
/// <param name="Signer">The signer.</param>
/// <param name="Sequence">Its sequence number.</param>
/// <param name="Value">D then E, 33 bytes each.</param>
public sealed record StoredCommitment(int Signer, ulong Sequence, byte[] Value);

/// <summary>The published, unused nonce commitments of every signer, and each signer's next sequence.</summary>
/// <param name="Commitments">The commitments.</param>
/// <param name="NextSequences">Per signer, the lowest sequence a new NonceCommitments entry may use.</param>
public sealed record CommitmentPool(IReadOnlyList<StoredCommitment> Commitments, IReadOnlyDictionary<int, ulong> NextSequences)
{
    /// <summary>
    /// The highest Raft index whose signing parts this pool reflects (0: unknown). A leader streams its pool as it is when
    /// the snapshot is written, which can be past the snapshot's index: the entries in between come again after the install.
    /// </summary>
    public long ReflectsIndex { get; init; }

    /// <summary>No commitments.</summary>
    public static CommitmentPool Empty { get; } = new([], new Dictionary<int, ulong>());
}

/// <summary>What the signing protocol adds to one grouped store write.</summary>
/// <param name="Signatures">New signatures (at most one per height, ever).</param>
/// <param name="KeyEpochs">New key epochs.</param>
/// <param name="ClearCommitments">Drop every stored commitment and next sequence first (a new key epoch).</param>
/// <param name="AddedCommitments">Newly published commitments.</param>
/// <param name="RemovedCommitments">Commitments used by a session (signer, sequence).</param>
/// <param name="NextSequences">New next sequences per signer.</param>
/// <param name="DkgEntries">DKG entries to add to those of the key generation in progress.</param>
/// <param name="ClearDkg">Drop the stored DKG entries first.</param>
/// <param name="SnapshotDkg">The DKG entries of the key generation in progress at the snapshot point, replacing those stored
/// (the snapshot point moved); null when the point did not move.</param>
public sealed record SigningWrites(
    IReadOnlyList<SignedHead> Signatures,
    IReadOnlyList<StoredKeyEpoch> KeyEpochs,
    bool ClearCommitments = false,
    IReadOnlyList<StoredCommitment>? AddedCommitments = null,
    IReadOnlyList<(int Signer, ulong Sequence)>? RemovedCommitments = null,
    IReadOnlyDictionary<int, ulong>? NextSequences = null,
    IReadOnlyList<byte[]>? DkgEntries = null,
    bool ClearDkg = false,
    IReadOnlyList<byte[]>? SnapshotDkg = null)
{
    /// <summary>Nothing to write.</summary>
    public static SigningWrites None { get; } = new([], []);

    /// <summary>True when there is nothing to write.</summary>
    public bool IsEmpty => Signatures.Count == 0 && KeyEpochs.Count == 0 && !ClearCommitments && (AddedCommitments?.Count ?? 0) == 0
        && (RemovedCommitments?.Count ?? 0) == 0 && (NextSequences?.Count ?? 0) == 0
        && (DkgEntries?.Count ?? 0) == 0 && !ClearDkg && SnapshotDkg is null;
}
