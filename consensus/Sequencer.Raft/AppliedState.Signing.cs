using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Raft;

/// <summary>A signing session as applied: what to sign, by whom, with which published commitments.</summary>
/// <param name="Session">The session entry.</param>
/// <param name="Message">The commitment of the header at the session's height, as this node computed it.</param>
/// <param name="Commitments">The signers' nonce commitments, ascending by signer.</param>
/// <param name="GroupKey">The group key of the session's key epoch.</param>
public sealed record AppliedSession(SigningSession Session, byte[] Message, IReadOnlyList<NonceCommitment> Commitments, Org.BouncyCastle.Math.EC.ECPoint GroupKey)
{
    private readonly Lazy<FrostSession> context = new(() => new FrostSession(GroupKey, Commitments, Message));

    /// <summary>
    /// The session's precomputed FROST values (binding factors, R, the challenge), computed once per node and shared by
    /// its signer and, on the leader, its coordinator.
    /// </summary>
    public FrostSession Context => context.Value;
}

/// <summary>A key epoch with its keys parsed.</summary>
/// <param name="Record">The stored form.</param>
/// <param name="Group">The group key and verification shares.</param>
public sealed record KeyEpochView(StoredKeyEpoch Record, GroupKey Group)
{
    /// <summary>The epoch.</summary>
    public ulong Epoch => Record.Epoch;
}

/// <summary>What one applied signing entry changed.</summary>
internal sealed class SigningEffect
{
    public List<StoredSignature> Signatures { get; } = [];

    public StoredKeyEpoch? KeyEpoch { get; set; }

    public List<AppliedSession> Sessions { get; } = [];

    public bool ClearCommitments { get; set; }

    public List<StoredCommitment> AddedCommitments { get; } = [];

    public List<(int Signer, ulong Sequence)> RemovedCommitments { get; } = [];

    public Dictionary<int, ulong> NextSequences { get; } = [];

    /// <summary>An accepted DKG entry, encoded, kept until its key generation ends.</summary>
    public byte[]? DkgEntry { get; set; }

    /// <summary>The key generation ended: drop its stored entries.</summary>
    public bool ClearDkg { get; set; }

    /// <summary>The DKG changed (an entry accepted, an attempt failed, a key epoch made).</summary>
    public bool DkgChanged { get; set; }
}

public sealed partial class AppliedState
{
    /// <summary>Published, unused nonce commitments kept per signer at most (more are dropped: the signer publishes again).</summary>
    public const int MaxCommitmentsPerSigner = 1024;

    /// <summary>Nonce sequences stay below 2^48.</summary>
    public const ulong MaxSequence = 1UL << 48;

    /// <summary>At most this many commitments in one NonceCommitments entry.</summary>
    public const int MaxCommitmentsPerEntry = 512;

    /// <summary>The <see cref="SignerProof"/> domain of a NonceCommitments entry.</summary>
    public const string NonceCommitmentsProofDomain = "nonce-commitments";

    // Deterministic, replicated state: key epochs and signatures (the first valid signature of a height stays).
    private readonly List<KeyEpochView> keyEpochs = [];
    private readonly Dictionary<ulong, StoredSignature> recentSignatures = [];
    private readonly SortedSet<ulong> signedAboveWatermark = [];
    private ulong signedWatermark;

    // Replicated and stored: the published commitments no session has used yet, and each signer's next sequence.
    private readonly Dictionary<int, SortedDictionary<ulong, byte[]>> availableCommitments = [];
    private readonly Dictionary<int, ulong> nextSequence = [];

    // Liveness only: the latest session of each unsigned height.
    private readonly Dictionary<ulong, SigningSession> activeSessions = [];

    /// <summary>Raised after an entry started signing sessions; the signers among this node's members answer them.</summary>
    public event Action<IReadOnlyList<AppliedSession>>? SessionsStarted;

    /// <summary>Raised after signatures were applied, with their heights.</summary>
    public event Action<IReadOnlyList<StoredSignature>>? SignaturesApplied;

    private KeyEpochView? CurrentKeyEpochLocked => keyEpochs.Count == 0 ? null : keyEpochs[^1];

    /// <summary>The current key epoch, or null before the first.</summary>
    public KeyEpochView? CurrentKeyEpoch
    {
        get
        {
            lock (gate)
                return CurrentKeyEpochLocked;
        }
    }

    /// <summary>Every key epoch, ascending.</summary>
    public IReadOnlyList<KeyEpochView> KeyEpochs
    {
        get
        {
            lock (gate)
                return [.. keyEpochs];
        }
    }

    /// <summary>Every height at or below this is signed or belongs to no key epoch.</summary>
    public ulong SignedWatermark
    {
        get
        {
            lock (gate)
                return signedWatermark;
        }
    }

    /// <summary>The most signatures remembered as verified by this node's coordinator.</summary>
    private const int MaxTrustedSignatures = 4096;

    private readonly Dictionary<ulong, byte[]> verifiedHere = [];
    private readonly Queue<ulong> verifiedOrder = new();

    /// <summary>
    /// Records that this node itself verified <paramref name="signature"/> (R then z) for <paramref name="height"/>
    /// under its key epoch (the leader's coordinator, just before it proposes it): when the entry comes back through the
    /// log with exactly these bytes, apply need not verify it again. Any other bytes are verified as usual.
    /// </summary>
    public void RememberVerified(ulong height, byte[] signature)
    {
        ArgumentNullException.ThrowIfNull(signature);
        lock (gate)
        {
            if (verifiedHere.TryAdd(height, signature))
                verifiedOrder.Enqueue(height);
            while (verifiedOrder.Count > MaxTrustedSignatures)
                verifiedHere.Remove(verifiedOrder.Dequeue());
        }
    }

    /// <summary>Whether the batch at <paramref name="height"/> has a group signature (or predates the first key epoch).</summary>
    public bool IsSigned(ulong height)
    {
        lock (gate)
            return IsSignedLocked(height);
    }

    /// <summary>The signature of the batch at <paramref name="height"/>, or null while it is not signed.</summary>
    public StoredSignature? GetSignature(ulong height)
    {
        lock (gate)
        {
            if (recentSignatures.TryGetValue(height, out var recent))
                return recent;
        }

        return store.GetSignature(height);
    }

    /// <summary>How many published, unused commitments the log holds for <paramref name="signer"/>, and the next sequence it should use.</summary>
    public (int Available, ulong NextSequence) CommitmentsOf(int signer)
    {
        lock (gate)
            return (availableCommitments.TryGetValue(signer, out var queue) ? queue.Count : 0, nextSequence.GetValueOrDefault(signer, 1UL));
    }

    /// <summary>The lowest unused commitment sequences of <paramref name="signer"/>, at most <paramref name="count"/>.</summary>
    public IReadOnlyList<ulong> AvailableSequences(int signer, int count)
    {
        lock (gate)
            return availableCommitments.TryGetValue(signer, out var queue) ? [.. queue.Keys.Take(count)] : [];
    }

    /// <summary>Unsigned heights that belong to a key epoch, oldest first, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<ulong> UnsignedHeights(int limit)
    {
        var result = new List<ulong>();
        lock (gate)
        {
            AdvanceWatermarkLocked();
            var last = lastHeader?.Height ?? 0;
            for (var height = signedWatermark + 1; height <= last && result.Count < limit; height++)
            {
                if (!signedAboveWatermark.Contains(height))
                    result.Add(height);
            }
        }

        return result;
    }

    /// <summary>The session in progress for <paramref name="height"/>, or null.</summary>
    public SigningSession? ActiveSession(ulong height)
    {
        lock (gate)
            return activeSessions.GetValueOrDefault(height);
    }

    private void LoadSigningState()
    {
        foreach (var record in store.ReadKeyEpochs())
            keyEpochs.Add(ToView(record) ?? throw new InvariantViolationException($"stored key epoch {record.Epoch} is not valid"));
        signedWatermark = durable.SignedWatermark;
        foreach (var height in store.SignedHeights(signedWatermark + 1))
            signedAboveWatermark.Add(height);
        LoadPoolLocked(store.ReadCommitments());
        LoadDkg(store.ReadDkgEntries());
    }

    private void LoadPoolLocked(CommitmentPool pool)
    {
        availableCommitments.Clear();
        nextSequence.Clear();
        foreach (var commitment in pool.Commitments)
        {
            if (!availableCommitments.TryGetValue(commitment.Signer, out var queue))
                availableCommitments[commitment.Signer] = queue = [];
            queue[commitment.Sequence] = commitment.Value;
        }

        foreach (var (signer, next) in pool.NextSequences)
            nextSequence[signer] = next;
    }

    /// <summary>The pool of published, unused commitments (for a snapshot).</summary>
    internal CommitmentPool CommitmentPoolSnapshot()
    {
        lock (gate)
        {
            return new CommitmentPool(
                [.. availableCommitments.SelectMany(p => p.Value.Select(c => new StoredCommitment(p.Key, c.Key, c.Value)))],
                new Dictionary<int, ulong>(nextSequence));
        }
    }

    private SigningEffect ApplySigning(ILogCommand command, long index)
    {
        var effect = new SigningEffect();
        switch (command)
        {
            case KeyEpochCommand epoch:
                ApplyKeyEpoch(epoch, index, effect);
                break;
            case NonceCommitmentsCommand commitments:
                ApplyCommitments(commitments, effect);
                break;
            case SigningSessionsCommand sessions:
                foreach (var session in sessions.Sessions)
                    ApplySession(session, effect);
                break;
            case BatchSignaturesCommand signatures:
                foreach (var signature in signatures.Signatures)
                    ApplySignature(signature, effect);
                break;
            case DkgStartCommand or DkgRound1Command or DkgRound2Command or DkgConfirmCommand or DkgComplaintCommand:
                ApplyDkg(command, index, effect);
                break;
            default:
                Invariant.Check(false, $"unknown command type {command.GetType().Name}");
                break;
        }

        return effect;
    }

    private void ApplyKeyEpoch(KeyEpochCommand command, long index, SigningEffect effect)
    {
        var record = new StoredKeyEpoch(command.Epoch, command.Threshold, command.GroupKey, command.Members, command.VerificationShares, index);
        lock (gate)
        {
            var expected = (CurrentKeyEpochLocked?.Epoch ?? 0) + 1;
            if (command.Epoch != expected)
            {
                LogIgnored(logger, "KeyEpoch", $"epoch {command.Epoch}, expected {expected}");
                return;
            }
        }

        if (ToView(record) is not { } view)
        {
            LogIgnored(logger, "KeyEpoch", $"epoch {command.Epoch} has invalid keys or a threshold that does not fit its members");
            return;
        }

        lock (gate)
        {
            keyEpochs.Add(view);
            availableCommitments.Clear();
            nextSequence.Clear();
            activeSessions.Clear();
        }

        effect.ClearCommitments = true;

        effect.KeyEpoch = record;
        LogKeyEpoch(logger, command.Epoch, command.Threshold, command.Members.Count);
    }

    /// <summary>Parses and checks a key epoch: valid points, t of n, and any t verification shares interpolate to the group key.</summary>
    private static KeyEpochView? ToView(StoredKeyEpoch record)
    {
        if (record.Members.Count == 0 || record.Members.Count != record.VerificationShares.Count || record.Threshold < 1 || record.Threshold > record.Members.Count
            || record.Members.Distinct().Count() != record.Members.Count || record.Members.Any(m => m is < 1 or > 255))
            return null;
        try
        {
            var group = Secp256k1.DeserializeElement(record.GroupKey);
            var shares = new Dictionary<int, ECPoint>();
            for (var i = 0; i < record.Members.Count; i++)
                shares[record.Members[i]] = Secp256k1.DeserializeElement(record.VerificationShares[i]);

            // Lagrange interpolation in the exponent over the first t members must give the group key.
            var subset = record.Members.Take(record.Threshold).ToList();
            var sum = Secp256k1.Identity;
            foreach (var member in subset)
                sum = sum.Add(shares[member].Multiply(Frost.InterpolatingValue(subset, member)));
            if (!sum.Normalize().Equals(group))
                return null;
            return new KeyEpochView(record, new GroupKey(group, record.Threshold, shares, []));
        }
        catch (FormatException)
        {
            return null;
        }
    }

    private void ApplyCommitments(NonceCommitmentsCommand command, SigningEffect effect)
    {
        ECPoint publicShare;
        lock (gate)
        {
            var epoch = CurrentKeyEpochLocked;
            if (epoch is null || command.KeyEpoch != epoch.Epoch || !epoch.Group.VerificationShares.TryGetValue(command.SignerId, out publicShare!))
                return;
            var next = nextSequence.GetValueOrDefault(command.SignerId, 1UL);
            if (command.FirstSequence < next || command.FirstSequence >= MaxSequence - (ulong)command.Commitments.Count
                || command.Commitments.Count is 0 or > MaxCommitmentsPerEntry || command.Commitments.Any(c => c is not { Length: 2 * Secp256k1.ElementLength }))
                return;
        }

        // The points are parsed when a session uses them (a malformed one fails that session and is dropped); the
        // proof shows that the signer itself published them.
        if (!SignerProof.Verify(NonceCommitmentsProofDomain, command.ProofPayload(), command.Proof, publicShare))
        {
            LogIgnored(logger, "NonceCommitments", $"signer {command.SignerId}: the proof does not verify under its verification share");
            return;
        }

        lock (gate)
        {
            if (!availableCommitments.TryGetValue(command.SignerId, out var queue))
                availableCommitments[command.SignerId] = queue = [];
            for (var i = 0; i < command.Commitments.Count && queue.Count < MaxCommitmentsPerSigner; i++)
            {
                var sequence = command.FirstSequence + (ulong)i;
                queue[sequence] = command.Commitments[i];
                effect.AddedCommitments.Add(new StoredCommitment(command.SignerId, sequence, command.Commitments[i]));
            }

            var next = command.FirstSequence + (ulong)command.Commitments.Count;
            nextSequence[command.SignerId] = next;
            effect.NextSequences[command.SignerId] = next;
        }
    }

    private void ApplySession(SigningSession session, SigningEffect effect)
    {
        lock (gate)
            ApplySessionLocked(session, effect);
    }

    private void ApplySessionLocked(SigningSession session, SigningEffect effect)
    {
        {
            var epoch = CurrentKeyEpochLocked;
            if (epoch is null || session.KeyEpoch != epoch.Epoch || lastHeader is null || session.Height > lastHeader.Height
                || IsSignedLocked(session.Height) || session.Signers.Count < epoch.Group.Threshold || session.Signers.Count != session.Sequences.Count)
                return;
            for (var i = 1; i < session.Signers.Count; i++)
            {
                if (session.Signers[i] <= session.Signers[i - 1])
                    return;
            }

            var header = HeaderLocked(session.Height);
            if (header is null || header.KeyEpoch != session.KeyEpoch)
                return;
            var encoded = new List<byte[]>(session.Signers.Count);
            for (var i = 0; i < session.Signers.Count; i++)
            {
                if (!availableCommitments.TryGetValue(session.Signers[i], out var queue) || !queue.TryGetValue(session.Sequences[i], out var value))
                    return;
                encoded.Add(value);
            }

            // The session is valid: its commitments are used now, whatever happens to it.
            for (var i = 0; i < session.Signers.Count; i++)
            {
                availableCommitments[session.Signers[i]].Remove(session.Sequences[i]);
                effect.RemovedCommitments.Add((session.Signers[i], session.Sequences[i]));
            }

            var commitments = new List<NonceCommitment>(session.Signers.Count);
            for (var i = 0; i < session.Signers.Count; i++)
            {
                try
                {
                    commitments.Add(new NonceCommitment(session.Signers[i],
                        Secp256k1.DeserializeElement(encoded[i].AsSpan(0, Secp256k1.ElementLength)),
                        Secp256k1.DeserializeElement(encoded[i].AsSpan(Secp256k1.ElementLength))));
                }
                catch (FormatException)
                {
                    LogIgnored(logger, "SigningSession", $"height {session.Height}: signer {session.Signers[i]} published an invalid commitment {session.Sequences[i]}");
                    return;
                }
            }

            activeSessions[session.Height] = session;
            effect.Sessions.Add(new AppliedSession(session, header.Commitment.ToArray(), commitments, epoch.Group.PublicKey));
        }
    }

    private void ApplySignature(BatchSignature signature, SigningEffect effect)
    {
        BatchHeader? header;
        KeyEpochView? epoch;
        lock (gate)
        {
            if (IsSignedLocked(signature.Height) || lastHeader is null || signature.Height > lastHeader.Height)
                return;
            header = HeaderLocked(signature.Height);
            epoch = keyEpochs.FirstOrDefault(k => k.Epoch == signature.KeyEpoch);
        }

        header ??= store.Get(signature.Height)?.Header;
        if (header is null || epoch is null || header.KeyEpoch != signature.KeyEpoch)
            return;
        FrostSignature decoded;
        try
        {
            decoded = FrostSignature.Decode([.. signature.R, .. signature.Z]);
        }
        catch (FormatException)
        {
            LogIgnored(logger, "BatchSignature", $"height {signature.Height}: malformed signature");
            return;
        }

        // INV-SIGVALID: only a signature that verifies under the group key is ever stored or served (verified here, or
        // by this node's coordinator over exactly these bytes a moment ago).
        bool verifiedBefore;
        lock (gate)
            verifiedBefore = verifiedHere.Remove(signature.Height, out var known) && known.AsSpan().SequenceEqual([.. signature.R, .. signature.Z]);
        if (!verifiedBefore && !Frost.Verify(header.Commitment.ToArray(), decoded, epoch.Group.PublicKey))
        {
            LogIgnored(logger, "BatchSignature", $"height {signature.Height}: does not verify under the group key of epoch {signature.KeyEpoch}");
            return;
        }

        var stored = new StoredSignature(signature.Height, signature.KeyEpoch, signature.Signers, signature.R, signature.Z, (ulong)time.GetUtcNow().ToUnixTimeMilliseconds());
        lock (gate)
        {
            if (IsSignedLocked(signature.Height))
                return;
            recentSignatures[signature.Height] = stored;
            signedAboveWatermark.Add(signature.Height);
            activeSessions.Remove(signature.Height);
            AdvanceWatermarkLocked();
        }

        effect.Signatures.Add(stored);
    }

    private bool IsSignedLocked(ulong height) => height <= signedWatermark || signedAboveWatermark.Contains(height);

    private BatchHeader? HeaderLocked(ulong height)
    {
        var cached = recent[height % (ulong)recent.Length];
        return cached is not null && cached.Header.Height == height ? cached.Header : null;
    }

    /// <summary>Moves the watermark over heights that are signed or belong to no key epoch.</summary>
    private void AdvanceWatermarkLocked()
    {
        var last = lastHeader?.Height ?? 0;
        while (signedWatermark < last)
        {
            var next = signedWatermark + 1;
            if (signedAboveWatermark.Remove(next))
            {
                signedWatermark = next;
                continue;
            }

            var header = HeaderLocked(next) ?? store.Get(next)?.Header;
            if (header is not null && header.KeyEpoch == 0)
            {
                signedWatermark = next;
                continue;
            }

            break;
        }
    }

    private void RaiseSigningEvents(SigningEffect effect)
    {
        if (effect.Sessions.Count > 0)
            SessionsStarted?.Invoke(effect.Sessions);
        if (effect.Signatures.Count > 0)
            SignaturesApplied?.Invoke(effect.Signatures);
        if (effect.DkgChanged)
            DkgChanged?.Invoke();
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Warning, Message = "Ignored a {Kind} entry: {Reason}")]
    private static partial void LogIgnored(ILogger logger, string kind, string reason);

    [LoggerMessage(EventId = 111, Level = LogLevel.Information, Message = "Key epoch {Epoch} is in force: {Threshold} of {Members} members sign")]
    private static partial void LogKeyEpoch(ILogger logger, ulong epoch, int threshold, int members);
}
