using Sequencer.Core.Encoding;
using Sequencer.Core.Storage;

namespace Sequencer.Signing;

/// <summary>
/// What one applied log entry changed in the signing ledger: the caller (the applied state) stores it and tells the
/// node's services. Effects are a pure function of the ledger's state and the entry.
/// </summary>
public sealed class LedgerEffects
{
    /// <summary>Sessions started by the entry; the signers they name answer them.</summary>
    public List<AppliedSession> SessionsStarted { get; } = [];

    /// <summary>Heads signed by the entry (at most one per entry and strictly above every earlier head).</summary>
    public List<SignedHead> HeadsSigned { get; } = [];

    /// <summary>A key epoch that came into force.</summary>
    public StoredKeyEpoch? KeyEpoch { get; set; }

    /// <summary>A key epoch a key generation made that waits for the current epoch's hand-over.</summary>
    public StoredKeyEpoch? PendingKeyEpoch { get; set; }

    /// <summary>Every published commitment was dropped (a new key epoch) before <see cref="AddedCommitments"/>.</summary>
    public bool ClearCommitments { get; set; }

    /// <summary>Commitments published by the entry.</summary>
    public List<StoredCommitment> AddedCommitments { get; } = [];

    /// <summary>Commitments a session used (signer, sequence).</summary>
    public List<(int Signer, ulong Sequence)> RemovedCommitments { get; } = [];

    /// <summary>New next sequences per signer.</summary>
    public Dictionary<int, ulong> NextSequences { get; } = [];

    /// <summary>The entry, encoded, when it is part of a key generation still in progress (kept until it ends).</summary>
    public byte[]? DkgEntry { get; set; }

    /// <summary>The key generation ended or restarted: drop its kept entries.</summary>
    public bool ClearDkg { get; set; }

    /// <summary>
    /// Entries kept after a <see cref="ClearDkg"/> and before <see cref="DkgEntry"/>: the members' votes that approved a
    /// rotation's key generation, which a replay of its DkgStart (a restart, a snapshot) needs again.
    /// </summary>
    public IReadOnlyList<byte[]>? DkgPrefix { get; set; }

    /// <summary>The key generation changed (an entry accepted, an attempt failed, a key epoch made).</summary>
    public bool DkgChanged { get; set; }

    /// <summary>What happened in the key generation, in words, for the log (null: nothing worth a line).</summary>
    public string? DkgEvent { get; set; }

    /// <summary>Parts of the entry that were ignored, each with the reason (for the log; never thrown).</summary>
    public List<string> Ignored { get; } = [];

    /// <summary>
    /// Parts of the entry that were already redundant: a head signature or session at or below a higher signed head, or a
    /// publication or use of commitments that a pool installed from a snapshot already reflects. Two sessions in flight
    /// finish in either order, the leader's own signature entries and its batch entries reach the log in either order,
    /// and Raft resends the entries after a snapshot's index, so this is routine, not a fault (logged at debug level, not
    /// as a warning).
    /// </summary>
    public List<string> Superseded { get; } = [];

    /// <summary>True when nothing changed.</summary>
    public bool IsEmpty => SessionsStarted.Count == 0 && HeadsSigned.Count == 0 && KeyEpoch is null && PendingKeyEpoch is null && !ClearCommitments && AddedCommitments.Count == 0
        && RemovedCommitments.Count == 0 && NextSequences.Count == 0 && DkgEntry is null && !ClearDkg && !DkgChanged && Ignored.Count == 0
        && Superseded.Count == 0;

    /// <summary>Records that part of an entry was ignored, and why.</summary>
    internal void Note(string kind, string reason) => Ignored.Add($"{kind}: {reason}");

    /// <summary>Records that part of an entry was redundant behind a higher signed head.</summary>
    internal void NoteSuperseded(string kind, string reason) => Superseded.Add($"{kind}: {reason}");

    /// <summary>The signature entry's signed head.</summary>
    internal static SignedHead ToSignedHead(HeadSignature signature)
        => new(signature.Height, signature.KeyEpoch, [.. signature.Signers], signature.R, signature.Z, signature.SignedAtMs);
}
