using MessagePack;

namespace Sequencer.Core.Encoding;

/// <summary>
/// One Raft log entry's command (DESIGN section 4). All commands are one MessagePack union with explicit integer
/// keys, behind a version byte (see <see cref="LogCommandCodec"/>). Never reuse or renumber a union tag or a key:
/// old entries stay in the log and in snapshots.
/// </summary>
[Union(0, typeof(BatchCommand))]
[Union(1, typeof(NonceCommitmentsCommand))]
[Union(2, typeof(HeadSignaturesCommand))]
[Union(3, typeof(KeyEpochCommand))]
[Union(4, typeof(L1ProgressCommand))]
[Union(5, typeof(SigningSessionsCommand))]
[Union(6, typeof(DkgStartCommand))]
[Union(7, typeof(DkgRound1Command))]
[Union(8, typeof(DkgRound2Command))]
[Union(9, typeof(DkgConfirmCommand))]
[Union(10, typeof(DkgComplaintCommand))]
[Union(11, typeof(DkgSilenceCommand))]
[Union(12, typeof(GenesisCommand))]
[Union(13, typeof(KeyRotationSessionCommand))]
[Union(14, typeof(KeyRotationCommand))]
[Union(15, typeof(SnapshotMarkCommand))]
[Union(16, typeof(KeyRotationVoteCommand))]
public interface ILogCommand;

/// <summary>
/// A member's vote for a key rotation (<c>POST /admin/keys/rotate</c> on its own node): a key generation for key epoch
/// <see cref="Epoch"/> with threshold <see cref="Threshold"/>. The leader starts the rotation's key generation only once
/// as many members as the key in force needs to sign (its threshold t) have voted for the same epoch and threshold,
/// and apply refuses a rotation's first DkgStart without them: no fewer than t members can make the consortium change
/// its key. Signed by the voter's identity key like every DKG message; the votes are kept with the key generation's
/// entries until its DkgStart.
/// </summary>
[MessagePackObject]
public sealed class KeyRotationVoteCommand : IDkgMessage
{
    /// <summary>The key epoch the rotation makes: the one in force plus one.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The new key's threshold.</summary>
    [Key(1)] public int Threshold { get; init; }

    /// <summary>The voter.</summary>
    [Key(2)] public int From { get; init; }

    /// <summary>The voter's signature by its identity key (see <see cref="DkgSilenceCommand.Identity"/>); empty on a cluster without identities.</summary>
    [Key(3)] public byte[] Identity { get; init; } = [];

    /// <summary>Not an attempt's message: always 0.</summary>
    [IgnoreMember] public int Attempt => 0;

    /// <inheritdoc/>
    public IDkgMessage WithIdentity(byte[] identity) => new KeyRotationVoteCommand { Epoch = Epoch, Threshold = Threshold, From = From, Identity = identity };
}

/// <summary>
/// An entry that changes no state. The leader appends one when a snapshot must move to a newer entry and nothing else
/// comes to store (an idle leader whose snapshot a follower already installed, see <c>SnapshotTransfers</c>). An entry
/// without a payload never reaches the state machine (DotNext applies only entries with a payload), so it could not
/// become a snapshot point: this one does.
/// </summary>
[MessagePackObject]
public sealed class SnapshotMarkCommand : ILogCommand
{
    /// <summary>When the leader appended it, in Unix ms (its clock; informational).</summary>
    [Key(0)] public ulong AtMs { get; init; }
}

/// <summary>
/// The chain's rules, fixed once at genesis by the first leader before any batch (issue 13): the validation mode every
/// node applies batches with. A node configured with another mode refuses to start (or stops) rather than apply under
/// other rules. A genesis entry after the first one, or one that would change the rules of an existing chain, is
/// ignored by apply on every node alike.
/// </summary>
[MessagePackObject]
public sealed class GenesisCommand : ILogCommand
{
    /// <summary>The chain id of the cluster that proposed it.</summary>
    [Key(0)] public ulong ChainId { get; init; }

    /// <summary>The <see cref="Validation.ValidationMode"/> (0 opaque, 1 ethereum).</summary>
    [Key(1)] public byte ValidationMode { get; init; }
}

/// <summary>
/// A signer publishes FROST nonce commitments in advance (DESIGN section 4): this removes FROST's first round from the
/// hot path, and the log makes every node agree on which commitment a session uses.
/// </summary>
[MessagePackObject]
public sealed class NonceCommitmentsCommand : ILogCommand
{
    /// <summary>The signer (member id).</summary>
    [Key(0)] public int SignerId { get; init; }

    /// <summary>The key epoch of the signer's share.</summary>
    [Key(1)] public ulong KeyEpoch { get; init; }

    /// <summary>The sequence number of the first commitment; the others follow consecutively.</summary>
    [Key(2)] public ulong FirstSequence { get; init; }

    /// <summary>Each commitment: the hiding commitment D then the binding commitment E, 33 bytes each.</summary>
    [Key(3)] public IReadOnlyList<byte[]> Commitments { get; init; } = [];

    /// <summary>
    /// The signer's Schnorr proof (by its key share) over <see cref="ProofPayload"/>: nobody else can publish
    /// commitments in its name and so use up its sequence numbers.
    /// </summary>
    [Key(4)] public byte[] Proof { get; init; } = [];

    /// <summary>
    /// True when these commitments replace every unused one the signer published before: the signer no longer holds
    /// those nonces (its data directory was lost or wiped), so no session could ever get a share for them.
    /// </summary>
    [Key(5)] public bool ReplacesUnused { get; init; }

    /// <summary>
    /// The bytes the proof covers: signer id, key epoch, first sequence, count, then the commitments, and one byte 1 at
    /// the end for a replacement (so that a proof over an ordinary publication cannot be replayed as a replacement).
    /// </summary>
    public byte[] ProofPayload()
    {
        var payload = new byte[4 + 8 + 8 + 4 + Commitments.Sum(c => c.Length) + (ReplacesUnused ? 1 : 0)];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(payload, SignerId);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(4), KeyEpoch);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(12), FirstSequence);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(20), Commitments.Count);
        var offset = 24;
        foreach (var commitment in Commitments)
        {
            commitment.CopyTo(payload, offset);
            offset += commitment.Length;
        }

        if (ReplacesUnused)
            payload[offset] = 1;
        return payload;
    }
}

/// <summary>One signing session: a height, an attempt, and which commitment of which signer it uses.</summary>
[MessagePackObject]
public sealed class SigningSession
{
    /// <summary>The batch height whose commitment is signed.</summary>
    [Key(0)] public ulong Height { get; init; }

    /// <summary>1 for the first session of a height; a retry uses a new attempt and fresh commitments.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>The key epoch of the session.</summary>
    [Key(2)] public ulong KeyEpoch { get; init; }

    /// <summary>The signers, ascending.</summary>
    [Key(3)] public IReadOnlyList<int> Signers { get; init; } = [];

    /// <summary>For each signer, the sequence of the published commitment it uses.</summary>
    [Key(4)] public IReadOnlyList<ulong> Sequences { get; init; } = [];

    /// <summary>
    /// True for a session the leader ran outside the log: it asked the signers directly, and this entry only records
    /// which commitments it used, so that they leave every node's pool. Signers do not answer it from the log.
    /// </summary>
    [Key(5)] public bool Direct { get; init; }
}

/// <summary>The coordinator (leader) starts signing sessions; each named signer answers with its share.</summary>
[MessagePackObject]
public sealed class SigningSessionsCommand : ILogCommand
{
    /// <summary>The sessions.</summary>
    [Key(0)] public IReadOnlyList<SigningSession> Sessions { get; init; } = [];
}

/// <summary>
/// The aggregate group signature of a head (DESIGN section 5): the commitment of the header at <see cref="Height"/>,
/// which covers every height at or below it.
/// </summary>
[MessagePackObject]
public sealed class HeadSignature
{
    /// <summary>The head's height.</summary>
    [Key(0)] public ulong Height { get; init; }

    /// <summary>The key epoch that signed.</summary>
    [Key(1)] public ulong KeyEpoch { get; init; }

    /// <summary>The signers whose shares were aggregated, ascending.</summary>
    [Key(2)] public IReadOnlyList<int> Signers { get; init; } = [];

    /// <summary>R, 33 bytes compressed.</summary>
    [Key(3)] public byte[] R { get; init; } = [];

    /// <summary>z, 32 bytes.</summary>
    [Key(4)] public byte[] Z { get; init; } = [];

    /// <summary>
    /// When the leader verified the aggregate (Unix ms, its clock): the <c>signed</c> time of every height the head
    /// covers, the same on every node.
    /// </summary>
    [Key(5)] public ulong SignedAtMs { get; init; }
}

/// <summary>Aggregated signatures, replicated so that every node can serve them (DESIGN section 4: HeadSignature).</summary>
[MessagePackObject]
public sealed class HeadSignaturesCommand : ILogCommand
{
    /// <summary>The signatures.</summary>
    [Key(0)] public IReadOnlyList<HeadSignature> Signatures { get; init; } = [];
}

/// <summary>A key epoch: the members, the threshold, the group key and the verification shares.</summary>
[MessagePackObject]
public sealed class KeyEpochCommand : ILogCommand
{
    /// <summary>The epoch; headers applied after this entry carry it.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>t.</summary>
    [Key(1)] public int Threshold { get; init; }

    /// <summary>The group public key, 33 bytes.</summary>
    [Key(2)] public byte[] GroupKey { get; init; } = [];

    /// <summary>The member ids, ascending.</summary>
    [Key(3)] public IReadOnlyList<int> Members { get; init; } = [];

    /// <summary>Each member's verification share PK_i, 33 bytes, in member order.</summary>
    [Key(4)] public IReadOnlyList<byte[]> VerificationShares { get; init; } = [];
}

/// <summary>
/// The leader starts the session in which key epoch n signs the hand-over to key epoch n + 1 (a key generation made
/// it; it waits in the ledger as the pending key epoch). Each named signer computes the rotation message itself from
/// its own ledger's pending key (never from bytes the leader hands it) and answers like a head session: its share
/// names height 0, which no head has.
/// </summary>
[MessagePackObject]
public sealed class KeyRotationSessionCommand : ILogCommand
{
    /// <summary>The key epoch handed over to (the pending one).</summary>
    [Key(0)] public ulong NewEpoch { get; init; }

    /// <summary>The session: height 0, an attempt that names its shares, the current key epoch, the signers and their commitments.</summary>
    [Key(1)] public SigningSession Session { get; init; } = new();
}

/// <summary>
/// Key epoch n's aggregate signature over the rotation message (<see cref="KeyRotationMessage"/>) to key epoch n + 1:
/// applied, it puts the pending key epoch in force. Headers applied after it carry the new epoch, and every node,
/// light client and the L1 contract can check the hand-over with the old key alone.
/// </summary>
[MessagePackObject]
public sealed class KeyRotationCommand : ILogCommand
{
    /// <summary>The key epoch handed over to.</summary>
    [Key(0)] public ulong NewEpoch { get; init; }

    /// <summary>The old epoch's signers whose shares were aggregated, ascending.</summary>
    [Key(1)] public IReadOnlyList<int> Signers { get; init; } = [];

    /// <summary>R, 33 bytes compressed.</summary>
    [Key(2)] public byte[] R { get; init; } = [];

    /// <summary>z, 32 bytes.</summary>
    [Key(3)] public byte[] Z { get; init; } = [];

    /// <summary>When the leader verified the aggregate (Unix ms, its clock).</summary>
    [Key(4)] public ulong SignedAtMs { get; init; }
}

/// <summary>
/// A batch of txs proposed by the leader. The header is derived at apply from the previous header and this entry;
/// followers never read their own clock.
/// </summary>
[MessagePackObject]
public sealed class BatchCommand : ILogCommand
{
    /// <summary>The leader's term when it proposed the batch. The header uses the Raft entry's own term.</summary>
    [Key(0)]
    public ulong ProposerTerm { get; init; }

    /// <summary>The leader's clock in Unix milliseconds when it cut the batch.</summary>
    [Key(1)]
    public ulong LeaderTimestampMs { get; init; }

    /// <summary>The txs in proposal order. Duplicates of ordered txs are dropped at apply.</summary>
    [Key(2)]
    public IReadOnlyList<byte[]> Txs { get; init; } = [];

    /// <summary>
    /// For each tx, how many milliseconds before <see cref="LeaderTimestampMs"/> the leader received it; lets every node
    /// report the <c>received</c> time. Empty when unknown. Not part of the header.
    /// </summary>
    [Key(3)]
    public IReadOnlyList<uint> ReceivedAgoMs { get; init; } = [];

    /// <summary>
    /// The first signing session of this batch's header, started by the same entry that orders it (its height field
    /// is ignored: the session signs the header this entry produces, attempt 1). Absent when the leader had no
    /// commitments to assign; the header is then signed through a SigningSessions entry.
    /// </summary>
    [Key(4)]
    public SigningSession? Session { get; init; }

    /// <summary>
    /// Group signatures of earlier batches that ride along with this one (applied exactly as a BatchSignatures entry):
    /// under load, signing adds no Raft entries of its own.
    /// </summary>
    [Key(5)]
    public IReadOnlyList<HeadSignature>? Signatures { get; init; }

    /// <summary>
    /// Records of direct sessions (<see cref="SigningSession.Direct"/>) that ride along, applied exactly as a
    /// SigningSessions entry and before <see cref="Signatures"/>.
    /// </summary>
    [Key(6)]
    public IReadOnlyList<SigningSession>? Sessions { get; init; }
}

/// <summary>
/// Starts (or restarts, with a higher attempt) a Pedersen DKG among <see cref="Members"/> for key epoch
/// <see cref="Epoch"/>. Proposed by the leader of a cluster that boots without a key, or on an operator's request.
/// </summary>
[MessagePackObject]
public sealed class DkgStartCommand : ILogCommand
{
    /// <summary>The key epoch the DKG creates.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The attempt, from 1; a failed attempt is followed by a new one with fresh secrets.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>t: shares needed to sign.</summary>
    [Key(2)] public int Threshold { get; init; }

    /// <summary>The participants: member ids 1..n.</summary>
    [Key(3)] public IReadOnlyList<int> Members { get; init; } = [];
}

/// <summary>A DKG message a participant sends in its own name (rounds one and two, confirmations, complaints).</summary>
public interface IDkgMessage : ILogCommand
{
    /// <summary>The key epoch.</summary>
    ulong Epoch { get; }

    /// <summary>The attempt.</summary>
    int Attempt { get; }

    /// <summary>The sender.</summary>
    int From { get; }

    /// <summary>The sender's identity-key signature (empty without identities).</summary>
    byte[] Identity { get; }

    /// <summary>The same message with <paramref name="identity"/> as its signature.</summary>
    IDkgMessage WithIdentity(byte[] identity);
}

/// <summary>DKG round one: a participant's Feldman commitment, its proof of knowledge, and its encryption key for round two.</summary>
[MessagePackObject]
public sealed class DkgRound1Command : IDkgMessage
{
    /// <summary>The key epoch.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The attempt.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>The sender.</summary>
    [Key(2)] public int From { get; init; }

    /// <summary>t compressed points: G * a_j for the sender's polynomial coefficients.</summary>
    [Key(3)] public IReadOnlyList<byte[]> Commitment { get; init; } = [];

    /// <summary>R of the Schnorr proof of knowledge of a_0 (compressed point).</summary>
    [Key(4)] public byte[] ProofR { get; init; } = [];

    /// <summary>μ of that proof (32-byte scalar).</summary>
    [Key(5)] public byte[] ProofMu { get; init; } = [];

    /// <summary>A fresh secp256k1 public key (compressed) that round two shares for the sender are encrypted to.</summary>
    [Key(6)] public byte[] EncryptionKey { get; init; } = [];

    /// <summary>
    /// The sender's signature by its identity key (ECDSA P-256, r||s) over <c>DkgIdentity.Payload</c> of this message
    /// with this field empty; empty on a cluster without identities. Every node checks it at apply.
    /// </summary>
    [Key(7)] public byte[] Identity { get; init; } = [];

    /// <inheritdoc/>
    public IDkgMessage WithIdentity(byte[] identity) => new DkgRound1Command
    {
        Epoch = Epoch, Attempt = Attempt, From = From, Commitment = Commitment, ProofR = ProofR, ProofMu = ProofMu, EncryptionKey = EncryptionKey, Identity = identity,
    };
}

/// <summary>One round two share, encrypted to its receiver.</summary>
[MessagePackObject]
public sealed class DkgEncryptedShare
{
    /// <summary>The receiver.</summary>
    [Key(0)] public int To { get; init; }

    /// <summary>f_from(to), encrypted (32 bytes).</summary>
    [Key(1)] public byte[] Ciphertext { get; init; } = [];
}

/// <summary>DKG round two: a participant's shares for every other participant, each encrypted to its receiver.</summary>
[MessagePackObject]
public sealed class DkgRound2Command : IDkgMessage
{
    /// <summary>The key epoch.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The attempt.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>The sender.</summary>
    [Key(2)] public int From { get; init; }

    /// <summary>One encrypted share per other participant.</summary>
    [Key(3)] public IReadOnlyList<DkgEncryptedShare> Shares { get; init; } = [];

    /// <summary>
    /// The sender's signature by its identity key (ECDSA P-256, r||s) over <c>DkgIdentity.Payload</c> of this message
    /// with this field empty; empty on a cluster without identities. Every node checks it at apply.
    /// </summary>
    [Key(4)] public byte[] Identity { get; init; } = [];

    /// <inheritdoc/>
    public IDkgMessage WithIdentity(byte[] identity) => new DkgRound2Command { Epoch = Epoch, Attempt = Attempt, From = From, Shares = Shares, Identity = identity };
}

/// <summary>
/// A participant holds its share of the new key: it proves that with a signature by that share over the group key.
/// When every participant has confirmed, the key epoch is in force.
/// </summary>
[MessagePackObject]
public sealed class DkgConfirmCommand : IDkgMessage
{
    /// <summary>The key epoch.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The attempt.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>The sender.</summary>
    [Key(2)] public int From { get; init; }

    /// <summary>The group key the sender derived (compressed).</summary>
    [Key(3)] public byte[] GroupKey { get; init; } = [];

    /// <summary>A signer proof by the sender's new share over <see cref="ProofPayload"/>.</summary>
    [Key(4)] public byte[] Proof { get; init; } = [];

    /// <summary>
    /// The sender's signature by its identity key (ECDSA P-256, r||s) over <c>DkgIdentity.Payload</c> of this message
    /// with this field empty; empty on a cluster without identities. Every node checks it at apply.
    /// </summary>
    [Key(5)] public byte[] Identity { get; init; } = [];

    /// <inheritdoc/>
    public IDkgMessage WithIdentity(byte[] identity) => new DkgConfirmCommand { Epoch = Epoch, Attempt = Attempt, From = From, GroupKey = GroupKey, Proof = Proof, Identity = identity };

    /// <summary>What the proof signs: epoch, attempt, sender and group key.</summary>
    public byte[] ProofPayload()
    {
        var payload = new byte[8 + 4 + 4 + GroupKey.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(payload, Epoch);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(8), Attempt);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(12), From);
        GroupKey.CopyTo(payload, 16);
        return payload;
    }
}

/// <summary>
/// A participant received a round two share that does not open or does not match its sender's commitment. It reveals
/// the ECDH point it shares with the accused and proves it (a DLEQ proof against both round one encryption keys), so
/// that every node decrypts the disputed share itself and disqualifies whoever is wrong: the dealer of a bad share, or
/// the accuser of a good one. The key generation goes on with the qualified set.
/// </summary>
[MessagePackObject]
public sealed class DkgComplaintCommand : IDkgMessage
{
    /// <summary>The key epoch.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The attempt.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>The complaining participant.</summary>
    [Key(2)] public int From { get; init; }

    /// <summary>The participant accused.</summary>
    [Key(3)] public int Accused { get; init; }

    /// <summary>What was wrong (at most 200 characters).</summary>
    [Key(4)] public string Reason { get; init; } = string.Empty;

    /// <summary>
    /// The sender's signature by its identity key (ECDSA P-256, r||s) over <c>DkgIdentity.Payload</c> of this message
    /// with this field empty; empty on a cluster without identities. Every node checks it at apply.
    /// </summary>
    [Key(5)] public byte[] Identity { get; init; } = [];

    /// <summary>The ECDH point (compressed) of the accuser's and the accused's round one encryption keys: it opens the disputed share.</summary>
    [Key(6)] public byte[] SharedPoint { get; init; } = [];

    /// <summary>A DLEQ proof (c || z, 64 bytes) that <see cref="SharedPoint"/> is the accused's encryption key times the accuser's encryption secret.</summary>
    [Key(7)] public byte[] Proof { get; init; } = [];

    /// <inheritdoc/>
    public IDkgMessage WithIdentity(byte[] identity) => new DkgComplaintCommand
    {
        Epoch = Epoch, Attempt = Attempt, From = From, Accused = Accused, Reason = Reason, Identity = identity, SharedPoint = SharedPoint, Proof = Proof,
    };
}

/// <summary>
/// A participant's vote that another has stayed silent at the current stage of the key generation (no round one, no
/// round two, or no confirmation) for longer than its silence limit. When enough qualified participants vote (t, or
/// all the others when fewer remain), the silent one is disqualified and the key generation goes on without it: one
/// member can no longer stall it by saying nothing.
/// </summary>
[MessagePackObject]
public sealed class DkgSilenceCommand : IDkgMessage
{
    /// <summary>The key epoch.</summary>
    [Key(0)] public ulong Epoch { get; init; }

    /// <summary>The attempt.</summary>
    [Key(1)] public int Attempt { get; init; }

    /// <summary>The voter.</summary>
    [Key(2)] public int From { get; init; }

    /// <summary>The participant that stays silent.</summary>
    [Key(3)] public int Accused { get; init; }

    /// <summary>The stage it is silent at: round1, round2 or confirm (a vote for another stage than the current is refused).</summary>
    [Key(4)] public string Stage { get; init; } = string.Empty;

    /// <summary>
    /// The sender's signature by its identity key (ECDSA P-256, r||s) over <c>DkgIdentity.Payload</c> of this message
    /// with this field empty; empty on a cluster without identities. Every node checks it at apply.
    /// </summary>
    [Key(5)] public byte[] Identity { get; init; } = [];

    /// <inheritdoc/>
    public IDkgMessage WithIdentity(byte[] identity) => new DkgSilenceCommand { Epoch = Epoch, Attempt = Attempt, From = From, Accused = Accused, Stage = Stage, Identity = identity };
}

/// <summary>
/// The leader's poster saw a head it posted accepted by the L1 contract (DESIGN section 4): the posted height, the
/// head's commitment and where the post landed, so that every node, and a new leader, knows how far posting got.
/// Apply checks the height and commitment against the node's own chain (a signed head of it); the L1 inclusion
/// itself each node checks against the L1 when it serves the <c>posted</c> level.
/// </summary>
[MessagePackObject]
public sealed class L1ProgressCommand : ILogCommand
{
    /// <summary>The posted head's height (a reorg that dropped posts is recorded with the lower height now on L1).</summary>
    [Key(0)] public ulong Height { get; init; }

    /// <summary>That head's commitment (32 bytes; empty at height 0).</summary>
    [Key(1)] public byte[] Commitment { get; init; } = [];

    /// <summary>The L1 transaction that posted it (32 bytes).</summary>
    [Key(2)] public byte[] L1TxHash { get; init; } = [];

    /// <summary>The L1 block it is in.</summary>
    [Key(3)] public ulong L1Block { get; init; }

    /// <summary>The inbox contract (20 bytes).</summary>
    [Key(4)] public byte[] Contract { get; init; } = [];

    /// <summary>When the leader saw the receipt, in Unix ms (its clock; informational).</summary>
    [Key(5)] public ulong ObservedAtMs { get; init; }
}
