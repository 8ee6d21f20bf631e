using Sequencer.Core.Encoding;

namespace Sequencer.Node.Replication;

/// <summary>
/// What rides a batch entry besides its txs: a head session (it signs the header the entry produces), records of direct
/// sessions, and head signatures.
/// </summary>
/// <param name="Session">The session, or null.</param>
/// <param name="Signatures">Verified head signatures, ascending, or empty.</param>
public sealed record BatchRiders(SigningSession? Session, IReadOnlyList<HeadSignature> Signatures)
{
    /// <summary>Nothing rides.</summary>
    public static BatchRiders None { get; } = new(null, []);

    /// <summary>Records of direct sessions (their commitments leave every node's pool), or empty.</summary>
    public IReadOnlyList<SigningSession> Records { get; init; } = [];

    /// <summary>True when nothing rides.</summary>
    public bool IsEmpty => Session is null && Signatures.Count == 0 && Records.Count == 0;
}

/// <summary>
/// The seam between the batcher and signing: as the leader cuts a batch it asks what should ride it, and later says
/// whether the entry committed. Under load every session and signature rides a batch, and signing adds no Raft entries
/// of its own.
/// </summary>
public interface IBatchRiders
{
    /// <summary>What the batch entry being cut should carry (called on the leader, once per batch).</summary>
    BatchRiders Take();

    /// <summary>The entry that carried <paramref name="riders"/> committed (and is applied here), or its proposal failed.</summary>
    void Completed(BatchRiders riders, bool committed);
}
