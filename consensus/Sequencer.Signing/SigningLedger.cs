using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Threshold;

namespace Sequencer.Signing;

/// <summary>What an entry is applied against, besides the ledger's own state.</summary>
/// <param name="Index">The Raft index of the entry (a key epoch records it).</param>
/// <param name="Produced">For a batch entry, the header it produced (its inline session signs it), or null.</param>
/// <param name="HeaderAt">The applied header at a height, or null when that height is not applied.</param>
/// <param name="VerifiedBefore">
/// True when this node verified exactly this signature a moment ago (the leader, before it proposed it), so that apply
/// need not verify it again; null to always verify.
/// </param>
public readonly record struct LedgerInput(long Index, BatchHeader? Produced, Func<ulong, BatchHeader?> HeaderAt, Func<HeadSignature, bool>? VerifiedBefore = null);

/// <summary>What a ledger starts from: the stored key epochs, nonce commitments, highest signed head and DKG entries.</summary>
/// <param name="ChainId">The chain (the DKG's context binds it).</param>
/// <param name="KeyEpochs">Every stored key epoch, ascending.</param>
/// <param name="Pool">The published, unused commitments.</param>
/// <param name="SignedThrough">The height of the highest signed head (0: none).</param>
/// <param name="DkgEntries">The entries of a key generation still in progress, in log order.</param>
public sealed record LedgerState(ulong ChainId, IReadOnlyList<StoredKeyEpoch> KeyEpochs, CommitmentPool Pool, ulong SignedThrough, IReadOnlyList<byte[]> DkgEntries)
{
    /// <summary>This node's configuration that a key generation must fit (null: none checked).</summary>
    public DkgPolicy? DkgPolicy { get; init; }

    /// <summary>A new chain: nothing yet.</summary>
    public static LedgerState Empty(ulong chainId) => new(chainId, [], CommitmentPool.Empty, 0, []);
}

/// <summary>
/// The replicated signing state (DESIGN sections 4 and 5) as a pure, deterministic ledger: key epochs, each signer's
/// published nonce commitments, the signing sessions in progress, and the highest signed head. <see cref="Apply"/>
/// takes one log entry and returns its effects; it depends only on the ledger's state and its input, so every node
/// that applies the same log reaches the same state. No lock (the caller serializes), no store, clock or logger.
/// </summary>
/// <remarks>
/// <para>
/// Signed heads: a session signs one head (the newest applied header, or the header its batch entry produces), and a
/// head signature is accepted only when it verifies under the group key of the head's key epoch and the head is
/// above every signed head, so signed heads only go up and one signed head covers every height below it.
/// </para>
/// <para>
/// A nonce commitment leaves the pool when a valid session names it, whatever happens to that session afterwards, so
/// a nonce pair serves at most one session (INV-NONCE).
/// </para>
/// </remarks>
public sealed class SigningLedger
{
    /// <summary>Published, unused nonce commitments kept per signer at most (more are dropped: the signer publishes again).</summary>
    public const int MaxCommitmentsPerSigner = 1024;

    /// <summary>Nonce sequences stay below 2^48.</summary>
    public const ulong MaxSequence = 1UL << 48;

    /// <summary>At most this many commitments in one NonceCommitments entry.</summary>
    public const int MaxCommitmentsPerEntry = 512;

    /// <summary>Sessions in progress kept at most; beyond it the lowest head's session is dropped (deterministically).</summary>
    public const int MaxActiveSessions = 64;

    /// <summary>The <see cref="SignerProof"/> domain of a NonceCommitments entry.</summary>
    public const string NonceCommitmentsProofDomain = "nonce-commitments";

    private readonly List<KeyEpochView> keyEpochs = [];
    private readonly Dictionary<int, SortedDictionary<ulong, byte[]>> pool = [];
    private readonly Dictionary<int, ulong> nextSequence = [];

    // The index of the entry being applied, the highest applied so far, and the highest whose commitment parts the pool
    // installed from a snapshot already reflects (see CommitmentPool.ReflectsIndex).
    private long applying, appliedThrough, replayedThrough;
    private readonly SortedDictionary<ulong, SigningSession> sessions = [];
    private DkgLedger dkg;
    private readonly DkgPolicy? policy;
    private KeyEpochView? pending;

    /// <summary>Starts from a stored state.</summary>
    /// <exception cref="InvariantViolationException">A stored key epoch is not valid (the store is damaged).</exception>
    public SigningLedger(LedgerState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        ChainId = state.ChainId;
        foreach (var record in state.KeyEpochs)
        {
            var view = KeyEpochView.Parse(record) ?? throw new InvariantViolationException($"stored key epoch {record.Epoch} is not valid");
            if (record.Pending)
                pending = view;
            else
                keyEpochs.Add(view);
        }

        // A pending epoch that its hand-over has since put in force is no longer pending.
        if (pending is not null && pending.Epoch != (CurrentKeyEpoch?.Epoch ?? 0) + 1)
            pending = null;
        LoadPool(state.Pool);
        SignedThrough = state.SignedThrough;
        policy = state.DkgPolicy;
        dkg = new DkgLedger(state.ChainId, state.DkgPolicy);
        ReplaceDkg(state.DkgEntries);
    }

    /// <summary>
    /// Replaces the key generation in progress with the one <paramref name="entries"/> (encoded DKG entries, in log
    /// order) make, each checked against this node's configuration as apply would: a snapshot's DKG at its point.
    /// </summary>
    public void ReplaceDkg(IReadOnlyList<byte[]> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        dkg = new DkgLedger(ChainId, policy);
        foreach (var entry in entries)
            dkg.Apply(LogCommandCodec.Decode(new System.Buffers.ReadOnlySequence<byte>(entry)), CurrentKeyEpoch?.Epoch ?? 0, CurrentKeyEpoch?.Group.Threshold ?? 0, new LedgerEffects());
    }

    /// <summary>The chain.</summary>
    public ulong ChainId { get; }

    /// <summary>The current key epoch, or null before the first.</summary>
    public KeyEpochView? CurrentKeyEpoch => keyEpochs.Count == 0 ? null : keyEpochs[^1];

    /// <summary>Every key epoch in force, ascending.</summary>
    public IReadOnlyList<KeyEpochView> KeyEpochs => keyEpochs;

    /// <summary>
    /// The key epoch a key generation made while <see cref="CurrentKeyEpoch"/> is in force, waiting for the current
    /// epoch's signature over the hand-over (a <see cref="KeyRotationCommand"/>); null when none waits.
    /// </summary>
    public KeyEpochView? PendingKeyEpoch => pending;

    /// <summary>The message the current key epoch signs to hand over to the pending one, or null when none waits.</summary>
    public byte[]? RotationMessage => pending is { } next && CurrentKeyEpoch is { } current
        ? KeyRotationMessage.Compute(ChainId, current.Epoch, next.Epoch, next.Record.GroupKey)
        : null;

    /// <summary>The height of the highest signed head: every height at or below it is covered (0: none).</summary>
    public ulong SignedThrough { get; private set; }

    /// <summary>The key generation in progress, or null.</summary>
    public DkgView? Dkg => dkg.View;

    /// <summary>Why the DKG would not accept <paramref name="command"/> now, or null.</summary>
    public string? DkgRejection(ILogCommand command)
        => command is DkgStartCommand or KeyRotationVoteCommand && pending is { } waiting
            ? $"key epoch {waiting.Epoch} is made and waits for key epoch {CurrentKeyEpoch?.Epoch}'s hand-over; a new key generation starts after it"
            : ThresholdChange(command) ?? dkg.Rejection(command, CurrentKeyEpoch?.Epoch ?? 0, CurrentKeyEpoch?.Group.Threshold ?? 0);

    // A rotation keeps the threshold of the key in force unless the node is configured with one (--dkg-threshold, which
    // the policy then requires): otherwise any member that reaches the leader's intake could start a rotation to a key
    // that two members sign, and the current key would sign the hand-over to it.
    private string? ThresholdChange(ILogCommand command)
        => (command switch { DkgStartCommand start => (start.Epoch, start.Threshold), KeyRotationVoteCommand vote => (vote.Epoch, vote.Threshold), _ => (0UL, 0) }) is var (epoch, threshold)
            && epoch > 0 && CurrentKeyEpoch is { } current && epoch == current.Epoch + 1 && policy?.Threshold is null && threshold != current.Group.Threshold
            ? $"a rotation keeps the threshold {current.Group.Threshold} of key epoch {current.Epoch} (asked: {threshold}); another needs --dkg-threshold on every member"
            : null;

    /// <summary>The members that voted for a rotation to the next key epoch, by the new key's threshold.</summary>
    public IReadOnlyDictionary<int, IReadOnlyList<int>> RotationVotes => dkg.RotationVotes((CurrentKeyEpoch?.Epoch ?? 0) + 1);

    /// <summary>How many published, unused commitments <paramref name="signer"/> has, and the next sequence it should use.</summary>
    public (int Available, ulong NextSequence) CommitmentsOf(int signer)
        => (pool.TryGetValue(signer, out var queue) ? queue.Count : 0, nextSequence.GetValueOrDefault(signer, 1UL));

    /// <summary>The lowest unused commitment sequences of <paramref name="signer"/>, at most <paramref name="count"/>.</summary>
    public IReadOnlyList<ulong> AvailableSequences(int signer, int count)
        => pool.TryGetValue(signer, out var queue) ? [.. queue.Keys.Take(count)] : [];

    /// <summary>The lowest unused commitments of <paramref name="signer"/> (sequence and value), at most <paramref name="count"/>.</summary>
    public IReadOnlyList<(ulong Sequence, byte[] Value)> AvailableCommitments(int signer, int count)
        => pool.TryGetValue(signer, out var queue) ? [.. queue.Take(count).Select(c => (c.Key, c.Value))] : [];

    /// <summary>The published, unused commitment of <paramref name="signer"/> at <paramref name="sequence"/>, or null.</summary>
    public byte[]? UnusedCommitment(int signer, ulong sequence)
        => pool.TryGetValue(signer, out var queue) && queue.TryGetValue(sequence, out var value) ? value : null;

    /// <summary>The session in progress for the head at <paramref name="height"/>, or null.</summary>
    public SigningSession? ActiveSession(ulong height) => sessions.GetValueOrDefault(height);

    /// <summary>The pool of published, unused commitments (for a snapshot), ascending by signer then sequence.</summary>
    public CommitmentPool PoolSnapshot()
        => new([.. pool.OrderBy(p => p.Key).SelectMany(p => p.Value.Select(c => new StoredCommitment(p.Key, c.Key, c.Value)))],
            new SortedDictionary<int, ulong>(nextSequence))
        {
            ReflectsIndex = appliedThrough,
        };

    /// <summary>Replaces the pool (a snapshot install).</summary>
    public void LoadPool(CommitmentPool commitments)
    {
        ArgumentNullException.ThrowIfNull(commitments);
        pool.Clear();
        nextSequence.Clear();
        replayedThrough = commitments.ReflectsIndex;
        appliedThrough = Math.Max(appliedThrough, commitments.ReflectsIndex);
        foreach (var commitment in commitments.Commitments)
        {
            if (!pool.TryGetValue(commitment.Signer, out var queue))
                pool[commitment.Signer] = queue = [];
            queue[commitment.Sequence] = commitment.Value;
        }

        foreach (var (signer, next) in commitments.NextSequences)
            nextSequence[signer] = next;
    }

    /// <summary>Accepts a key epoch of a snapshot: a known one must match, the next one must be valid. Returns why not, or null.</summary>
    public string? InstallKeyEpoch(StoredKeyEpoch record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var known = keyEpochs.FirstOrDefault(k => k.Epoch == record.Epoch);
        if (known is not null)
        {
            return known.Record.GroupKey.AsSpan().SequenceEqual(record.GroupKey) && known.Record.RaftIndex == record.RaftIndex
                ? null
                : $"the local key epoch {record.Epoch} differs from the snapshot's (committed entries never differ)";
        }

        var expected = (CurrentKeyEpoch?.Epoch ?? 0) + 1;
        if (record.Epoch != expected)
            return $"key epoch {record.Epoch} does not follow the local epoch {expected - 1}";
        var view = KeyEpochView.Parse(record);
        if (view is null)
            return $"key epoch {record.Epoch} has invalid keys";
        if (record.Pending)
        {
            pending = view;
            return null;
        }

        if (CurrentKeyEpoch is { } previous && RotationProblem(previous, record) is { } problem)
            return problem;
        if (CurrentKeyEpoch is null && policy?.FirstEpochRejection(new KeyEpochCommand
            {
                Epoch = record.Epoch,
                Threshold = record.Threshold,
                GroupKey = record.GroupKey,
                Members = record.Members,
                VerificationShares = record.VerificationShares,
            }, fromDkg: null) is { } refused)
        {
            return refused;
        }

        AddInForce(view);
        return null;
    }

    /// <summary>Accepts a signed head of a snapshot, verified; returns why not, or null. Heads only go up.</summary>
    public string? InstallHead(BatchHeader header, SignedHead head, bool equationVerified = false)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(head);
        if (head.Height <= SignedThrough)
            return null;
        if (Verify(header, head.KeyEpoch, head.Signers, [.. head.R, .. head.Z], skipEquation: equationVerified) is { } problem)
            return problem;
        SignedThrough = head.Height;
        DropSessionsThrough(head.Height);
        return null;
    }

    /// <summary>
    /// The Schnorr equation <see cref="InstallHead"/> would check for <paramref name="head"/> (its message, signature and
    /// group key), for a batch check of many heads (<see cref="Frost.VerifyBatch"/>) before each is installed with
    /// <c>equationVerified</c>; null when the head is at or below the signed height, or is refused without the equation.
    /// </summary>
    public (byte[] Message, FrostSignature Signature, Org.BouncyCastle.Math.EC.ECPoint PublicKey)? EquationFor(BatchHeader header, SignedHead head)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(head);
        if (head.Height <= SignedThrough || Verify(header, head.KeyEpoch, head.Signers, [.. head.R, .. head.Z], skipEquation: true) is not null)
            return null;
        var epoch = keyEpochs.First(k => k.Epoch == head.KeyEpoch);
        return (header.Commitment.ToArray(), FrostSignature.Decode([.. head.R, .. head.Z]), epoch.Group.PublicKey);
    }

    /// <summary>Applies one log entry and returns its effects.</summary>
    public LedgerEffects Apply(ILogCommand command, LedgerInput input)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(input.HeaderAt);
        var effects = new LedgerEffects();
        applying = input.Index;
        appliedThrough = Math.Max(appliedThrough, input.Index);
        switch (command)
        {
            case BatchCommand batch:
                if (batch.Session is { } inline && input.Produced is { } produced)
                {
                    // An inline session signs the header its own entry produced (its height field is not used).
                    ApplySession(new SigningSession { Height = produced.Height, Attempt = 1, KeyEpoch = inline.KeyEpoch, Signers = inline.Signers, Sequences = inline.Sequences },
                        input, effects);
                }

                foreach (var recorded in batch.Sessions ?? [])
                    ApplySession(recorded, input, effects);
                foreach (var signature in batch.Signatures ?? [])
                    ApplyHeadSignature(signature, input, effects);
                break;
            case KeyEpochCommand epoch:
                ApplyKeyEpoch(epoch, input.Index, effects, fromDkg: false);
                break;
            case NonceCommitmentsCommand commitments:
                ApplyCommitments(commitments, effects);
                break;
            case SigningSessionsCommand started:
                foreach (var session in started.Sessions)
                    ApplySession(session, input, effects);
                break;
            case HeadSignaturesCommand signatures:
                foreach (var signature in signatures.Signatures)
                    ApplyHeadSignature(signature, input, effects);
                break;
            case DkgStartCommand when pending is not null || ThresholdChange(command) is not null:
                effects.Note(nameof(DkgStartCommand), DkgRejection(command)!);
                break;
            case KeyRotationVoteCommand when pending is not null || ThresholdChange(command) is not null:
                effects.Note(nameof(KeyRotationVoteCommand), DkgRejection(command)!);
                break;
            case DkgStartCommand or IDkgMessage:
                if (dkg.Apply(command, CurrentKeyEpoch?.Epoch ?? 0, CurrentKeyEpoch?.Group.Threshold ?? 0, effects) is { } complete)
                {
                    if (CurrentKeyEpoch is null)
                        ApplyKeyEpoch(complete, input.Index, effects, fromDkg: true);
                    else
                        MakePending(complete, input.Index, effects);
                }

                break;
            case KeyRotationSessionCommand rotationSession:
                ApplyRotationSession(rotationSession, effects);
                break;
            case KeyRotationCommand rotation:
                ApplyRotation(rotation, input.Index, effects);
                break;
            default:
                Invariant.Check(false, $"unknown command type {command.GetType().Name}");
                break;
        }

        return effects;
    }

    private void ApplyKeyEpoch(KeyEpochCommand command, long index, LedgerEffects effects, bool fromDkg)
    {
        if (CurrentKeyEpoch is { } current)
        {
            effects.Note("KeyEpoch", $"epoch {command.Epoch}: after the first key epoch a new one comes only through a hand-over signed by the current one ({current.Epoch})");
            return;
        }

        var expected = (CurrentKeyEpoch?.Epoch ?? 0) + 1;
        if (command.Epoch != expected)
        {
            effects.Note("KeyEpoch", $"epoch {command.Epoch}, expected {expected}");
            return;
        }

        if (policy?.FirstEpochRejection(command, fromDkg) is { } refused)
        {
            effects.Note("KeyEpoch", refused);
            return;
        }

        var record = new StoredKeyEpoch(command.Epoch, command.Threshold, command.GroupKey, command.Members, command.VerificationShares, index);
        if (KeyEpochView.Parse(record) is not { } view)
        {
            effects.Note("KeyEpoch", $"epoch {command.Epoch} has invalid keys or a threshold that does not fit its members");
            return;
        }

        AddInForce(view);
        effects.ClearCommitments = true;
        effects.KeyEpoch = record;
    }

    // A key epoch comes into force: the old epoch's commitments and sessions serve nothing any more.
    private void AddInForce(KeyEpochView view)
    {
        keyEpochs.Add(view);
        pending = null;
        pool.Clear();
        nextSequence.Clear();
        sessions.Clear();
    }

    // A key generation finished while an epoch is in force: the new epoch waits for the current one's hand-over.
    private void MakePending(KeyEpochCommand command, long index, LedgerEffects effects)
    {
        var record = new StoredKeyEpoch(command.Epoch, command.Threshold, command.GroupKey, command.Members, command.VerificationShares, index, Pending: true);
        if (command.Epoch != CurrentKeyEpoch!.Epoch + 1 || KeyEpochView.Parse(record) is not { } view)
        {
            effects.Note("KeyEpoch", $"the key generation made epoch {command.Epoch}, which does not follow epoch {CurrentKeyEpoch.Epoch} or has invalid keys");
            return;
        }

        pending = view;
        effects.PendingKeyEpoch = record;
        effects.DkgEvent = $"key epoch {command.Epoch} is made ({command.Threshold} of {command.Members.Count}: members {string.Join(", ", command.Members)}); "
            + $"it comes into force once key epoch {CurrentKeyEpoch.Epoch} signs the hand-over";
    }

    // The session in which the current epoch signs the hand-over: checked like a head session, and its commitments
    // leave the pool now (INV-NONCE). Its message is computed here, from this node's own pending key.
    private void ApplyRotationSession(KeyRotationSessionCommand command, LedgerEffects effects)
    {
        var epoch = CurrentKeyEpoch;
        var session = command.Session;
        if (epoch is null || pending is null || command.NewEpoch != pending.Epoch || session.KeyEpoch != epoch.Epoch || session.Height != 0 || session.Attempt < 1)
        {
            effects.Note("KeyRotationSession", $"no hand-over from key epoch {session.KeyEpoch} to {command.NewEpoch} waits (or the session does not name height 0 and an attempt)");
            return;
        }

        if (UseCommitments(session, epoch, "KeyRotationSession", effects) is not { } commitments)
            return;
        effects.SessionsStarted.Add(new AppliedSession(session, RotationMessage!, commitments, epoch.Group.PublicKey));
    }

    // The hand-over: the current epoch's signature over the rotation message puts the pending epoch in force.
    private void ApplyRotation(KeyRotationCommand command, long index, LedgerEffects effects)
    {
        var epoch = CurrentKeyEpoch;
        if (epoch is null || pending is null || command.NewEpoch != pending.Epoch)
        {
            effects.Note("KeyRotation", $"no key epoch {command.NewEpoch} waits for its hand-over");
            return;
        }

        var proof = new KeyRotationProof(epoch.Epoch, [.. command.Signers], command.R, command.Z, command.SignedAtMs, index);
        var record = pending.Record with { Pending = false, Rotation = proof };
        if (RotationProblem(epoch, record) is { } problem)
        {
            effects.Note("KeyRotation", problem);
            return;
        }

        AddInForce(new KeyEpochView(record, pending.Group));
        effects.ClearCommitments = true;
        effects.KeyEpoch = record;
        effects.DkgEvent = $"key epoch {epoch.Epoch} handed over to key epoch {record.Epoch} (signed by members {string.Join(", ", proof.Signers)})";
        effects.DkgChanged = true;
    }

    /// <summary>Why <paramref name="next"/>'s rotation proof does not hand over from <paramref name="previous"/>, or null when it does.</summary>
    private string? RotationProblem(KeyEpochView previous, StoredKeyEpoch next)
    {
        if (next.Rotation is not { } proof || proof.FromEpoch != previous.Epoch || next.Epoch != previous.Epoch + 1)
            return $"key epoch {next.Epoch} carries no hand-over signed by key epoch {previous.Epoch}";
        if (proof.Signers.Count < previous.Group.Threshold || !Ascending(proof.Signers) || proof.Signers.Any(s => !previous.Group.VerificationShares.ContainsKey(s)))
            return $"the hand-over to key epoch {next.Epoch}: the signer set is not t or more members of epoch {previous.Epoch}, ascending";
        FrostSignature signature;
        try
        {
            signature = FrostSignature.Decode([.. proof.R, .. proof.Z]);
        }
        catch (FormatException)
        {
            return $"the hand-over to key epoch {next.Epoch}: the signature is malformed";
        }

        return Frost.Verify(KeyRotationMessage.Compute(ChainId, previous.Epoch, next.Epoch, next.GroupKey), signature, previous.Group.PublicKey)
            ? null
            : $"the hand-over to key epoch {next.Epoch} does not verify under the group key of epoch {previous.Epoch}";
    }

    private void ApplyCommitments(NonceCommitmentsCommand command, LedgerEffects effects)
    {
        var epoch = CurrentKeyEpoch;
        if (epoch is null || command.KeyEpoch != epoch.Epoch || !epoch.Group.VerificationShares.TryGetValue(command.SignerId, out var publicShare))
        {
            effects.Note("NonceCommitments", $"signer {command.SignerId} is not a signer of the current key epoch");
            return;
        }

        var next = nextSequence.GetValueOrDefault(command.SignerId, 1UL);
        if (command.FirstSequence < next || command.FirstSequence >= MaxSequence - (ulong)command.Commitments.Count
            || command.Commitments.Count is 0 or > MaxCommitmentsPerEntry || command.Commitments.Any(c => c is not { Length: 2 * Secp256k1.ElementLength }))
        {
            NoteUnlessReplayed(effects, "NonceCommitments", $"signer {command.SignerId}: sequences from {command.FirstSequence} (next is {next}), or the commitments are malformed");
            return;
        }

        // The points are parsed when a session uses them (a malformed one fails that session); the proof shows that
        // the signer itself published them, so nobody else can use up its sequences.
        if (!SignerProof.Verify(NonceCommitmentsProofDomain, command.ProofPayload(), command.Proof, publicShare))
        {
            effects.Note("NonceCommitments", $"signer {command.SignerId}: the proof does not verify under its verification share");
            return;
        }

        if (!pool.TryGetValue(command.SignerId, out var queue))
            pool[command.SignerId] = queue = [];
        if (command.ReplacesUnused)
        {
            // Every unused commitment is below FirstSequence (it is at least next): none of them can serve a session.
            foreach (var dropped in queue.Keys)
                effects.RemovedCommitments.Add((command.SignerId, dropped));
            queue.Clear();
        }

        for (var i = 0; i < command.Commitments.Count && queue.Count < MaxCommitmentsPerSigner; i++)
        {
            var sequence = command.FirstSequence + (ulong)i;
            queue[sequence] = command.Commitments[i];
            effects.AddedCommitments.Add(new StoredCommitment(command.SignerId, sequence, command.Commitments[i]));
        }

        next = command.FirstSequence + (ulong)command.Commitments.Count;
        nextSequence[command.SignerId] = next;
        effects.NextSequences[command.SignerId] = next;
    }

    private void ApplySession(SigningSession session, LedgerInput input, LedgerEffects effects)
    {
        var epoch = CurrentKeyEpoch;
        if (epoch is null || session.KeyEpoch != epoch.Epoch)
        {
            effects.Note("SigningSession", $"head {session.Height}: key epoch {session.KeyEpoch} is not the current one");
            return;
        }

        if (session.Direct)
        {
            RecordDirectSession(session, epoch, input, effects);
            return;
        }

        if (session.Height <= SignedThrough)
        {
            effects.NoteSuperseded("SigningSession", $"head {session.Height} is not above the highest signed head {SignedThrough}");
            return;
        }

        if (session.Attempt < 1 || (sessions.TryGetValue(session.Height, out var earlier) && earlier.Attempt >= session.Attempt))
        {
            NoteUnlessReplayed(effects, "SigningSession", $"head {session.Height}: attempt {session.Attempt} does not follow the last one");
            return;
        }

        var header = input.HeaderAt(session.Height);
        if (header is null || header.KeyEpoch != session.KeyEpoch)
        {
            effects.Note("SigningSession", $"head {session.Height} is not applied, or belongs to another key epoch");
            return;
        }

        if (UseCommitments(session, epoch, "SigningSession", effects) is not { } commitments)
            return;

        sessions[session.Height] = session;
        while (sessions.Count > MaxActiveSessions)
            sessions.Remove(sessions.Keys.First());
        effects.SessionsStarted.Add(new AppliedSession(session, header.Commitment.ToArray(), commitments, epoch.Group.PublicKey));
    }

    // A direct session ran outside the log (its signers answered the leader directly, each taking its nonce durably
    // first): its record takes whichever of its commitments are still in the pool out of it, whatever became of the
    // session or its head, so that no planner offers a used nonce again; a record that comes after its head was signed
    // (or after a failed session) still cleans the pool. It starts nothing: no signer answers a session from its record.
    private void RecordDirectSession(SigningSession session, KeyEpochView epoch, LedgerInput input, LedgerEffects effects)
    {
        if (session.Signers.Count < epoch.Group.Threshold || session.Signers.Count != session.Sequences.Count
            || session.Signers.Any(s => !epoch.Group.VerificationShares.ContainsKey(s)) || !Ascending(session.Signers))
        {
            effects.Note("SigningSession", $"head {session.Height}: the signers are not {epoch.Group.Threshold} or more distinct members, ascending, one sequence each");
            return;
        }

        for (var i = 0; i < session.Signers.Count; i++)
        {
            if (pool.TryGetValue(session.Signers[i], out var queue) && queue.Remove(session.Sequences[i]))
                effects.RemovedCommitments.Add((session.Signers[i], session.Sequences[i]));
        }

        // The newest attempt of a head still unsigned is remembered, so that a later leader numbers its attempts above it.
        if (session.Height > SignedThrough && session.Attempt >= 1 && input.HeaderAt(session.Height) is { } header && header.KeyEpoch == session.KeyEpoch
            && (!sessions.TryGetValue(session.Height, out var earlier) || earlier.Attempt < session.Attempt))
        {
            sessions[session.Height] = session;
            while (sessions.Count > MaxActiveSessions)
                sessions.Remove(sessions.Keys.First());
        }
    }

    // After a snapshot install, the entries just above its point repeat publications and uses of commitments that the
    // installed pool already reflects: redundant, not wrong. Anything else is noted as ignored.
    private void NoteUnlessReplayed(LedgerEffects effects, string kind, string reason)
    {
        if (applying <= replayedThrough)
            effects.NoteSuperseded(kind, $"{reason}; the pool installed from a snapshot already reflects entry {applying}");
        else
            effects.Note(kind, reason);
    }

    // Checks the session's signers and takes their commitments out of the pool (INV-NONCE: used now, whatever happens
    // to the session); null when the session is not valid.
    private List<NonceCommitment>? UseCommitments(SigningSession session, KeyEpochView epoch, string kind, LedgerEffects effects)
    {
        var threshold = epoch.Group.Threshold;
        if (session.Signers.Count < threshold || session.Signers.Count != session.Sequences.Count
            || session.Signers.Any(s => !epoch.Group.VerificationShares.ContainsKey(s)) || !Ascending(session.Signers))
        {
            effects.Note(kind, $"head {session.Height}: the signers are not {threshold} or more distinct members, ascending, one sequence each");
            return null;
        }

        var encoded = new List<byte[]>(session.Signers.Count);
        for (var i = 0; i < session.Signers.Count; i++)
        {
            if (!pool.TryGetValue(session.Signers[i], out var queue) || !queue.TryGetValue(session.Sequences[i], out var value))
            {
                NoteUnlessReplayed(effects, kind, $"head {session.Height}: signer {session.Signers[i]} has no unused commitment {session.Sequences[i]}");
                return null;
            }

            encoded.Add(value);
        }

        // The session is valid: its commitments are used now, whatever happens to it (INV-NONCE).
        for (var i = 0; i < session.Signers.Count; i++)
        {
            pool[session.Signers[i]].Remove(session.Sequences[i]);
            effects.RemovedCommitments.Add((session.Signers[i], session.Sequences[i]));
        }

        var commitments = new List<NonceCommitment>(session.Signers.Count);
        for (var i = 0; i < session.Signers.Count; i++)
        {
            try
            {
                commitments.Add(NonceCommitment.Decode(session.Signers[i], encoded[i]));
            }
            catch (FormatException)
            {
                effects.Note(kind, $"head {session.Height}: signer {session.Signers[i]} published an invalid commitment {session.Sequences[i]}");
                return null;
            }
        }

        return commitments;
    }

    private void ApplyHeadSignature(HeadSignature signature, LedgerInput input, LedgerEffects effects)
    {
        // INV-SIGVALID: only a signature that verifies under the group key is ever stored or served (verified here, or
        // by this node's leader a moment ago over exactly these bytes).
        var header = input.HeaderAt(signature.Height);
        var problem = header is null
            ? "it is not applied"
            : Verify(header, signature.KeyEpoch, signature.Signers, [.. signature.R, .. signature.Z], skipEquation: input.VerifiedBefore?.Invoke(signature) ?? false);
        if (signature.Height <= SignedThrough)
        {
            // Redundant behind a higher signed head. A valid signature that lost a race is routine; anything else
            // is a fault worth a warning.
            if (problem is null)
                effects.NoteSuperseded("HeadSignature", $"head {signature.Height} is not above the highest signed head {SignedThrough}");
            else
                effects.Note("HeadSignature", $"head {signature.Height} is not above the highest signed head {SignedThrough}, and {problem}");
            return;
        }

        if (problem is not null)
        {
            effects.Note("HeadSignature", header is null ? $"head {signature.Height} is not applied" : $"head {signature.Height}: {problem}");
            return;
        }

        SignedThrough = signature.Height;
        DropSessionsThrough(signature.Height);
        effects.HeadsSigned.Add(LedgerEffects.ToSignedHead(signature));
    }

    /// <summary>Why a head signature is not valid for <paramref name="header"/>, or null when it is.</summary>
    private string? Verify(BatchHeader header, ulong keyEpoch, IReadOnlyList<int> signers, byte[] encoded, bool skipEquation = false)
    {
        var epoch = keyEpochs.FirstOrDefault(k => k.Epoch == keyEpoch);
        if (epoch is null || header.KeyEpoch != keyEpoch)
            return $"signed under key epoch {keyEpoch}, which is not the head's ({header.KeyEpoch})";
        if (signers.Count < epoch.Group.Threshold || !Ascending(signers) || signers.Any(s => !epoch.Group.VerificationShares.ContainsKey(s)))
            return "the signer set is not t or more members, ascending";
        FrostSignature decoded;
        try
        {
            decoded = FrostSignature.Decode(encoded);
        }
        catch (FormatException)
        {
            return "the signature is malformed";
        }

        return skipEquation || Frost.Verify(header.Commitment.ToArray(), decoded, epoch.Group.PublicKey)
            ? null
            : $"it does not verify under the group key of epoch {keyEpoch}";
    }

    private void DropSessionsThrough(ulong height)
    {
        while (sessions.Count > 0 && sessions.Keys.First() <= height)
            sessions.Remove(sessions.Keys.First());
    }

    private static bool Ascending(IReadOnlyList<int> ids)
    {
        for (var i = 1; i < ids.Count; i++)
        {
            if (ids[i] <= ids[i - 1])
                return false;
        }

        return true;
    }
}
