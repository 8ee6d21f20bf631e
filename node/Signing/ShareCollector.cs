using Sequencer.Core.Encoding;
using Sequencer.Signing;
using Sequencer.Threshold;
using BigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Node.Signing;

/// <summary>What one share did to its session.</summary>
public enum ShareOutcome
{
    /// <summary>Not for a session collected here, not from one of its signers, a repeat, or not a scalar.</summary>
    Ignored,

    /// <summary>Kept; the session waits for more.</summary>
    Kept,

    /// <summary>Kept, and every signer's share is in: the session is ready to aggregate.</summary>
    Complete,
}

/// <summary>The result of aggregating a complete session.</summary>
/// <param name="Session">The session.</param>
/// <param name="Signature">The verified group signature, or null when it did not verify.</param>
/// <param name="Culprits">The signers whose shares do not verify (when the signature did not), each under its own proof.</param>
/// <param name="Unproven">
/// The signers whose shares do not verify and came with no valid proof of their signer: not provably theirs (a
/// forged or corrupted answer), so not blamed as a bad share.
/// </param>
public sealed record Aggregation(AppliedSession Session, FrostSignature? Signature, IReadOnlyList<int> Culprits, IReadOnlyList<int> Unproven);

/// <summary>
/// The leader's collection of signature shares per applied session, and their aggregation: the shares are summed and
/// the group signature verified once; only when it fails is each share checked against its signer's verification
/// share, to name the culprits (cheater detection, as the ZF frost-core coordinator does). Nothing unverified leaves.
/// A share can come with its proof unchecked (a signer's answer to the leader's request, <see cref="Add"/>): the proof
/// (a Schnorr signature by the signer's share) matters only to blame a share that does not verify, so it is checked
/// only then, and a valid aggregate costs no proof check. Bounded by the sessions in flight (the planner's limit).
/// </summary>
/// <remarks>Not thread-safe: the coordinator serializes access.</remarks>
public sealed class ShareCollector
{
    private readonly Dictionary<(ulong Height, int Attempt), Collecting> sessions = [];

    /// <summary>Sessions being collected.</summary>
    public int Count => sessions.Count;

    /// <summary>Starts collecting the shares of <paramref name="session"/>.</summary>
    public void Track(AppliedSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        sessions[session.Id] = new Collecting(session);
    }

    /// <summary>True while exactly this session (its height, attempt, signers and commitments) is being collected.</summary>
    public bool Tracks(SigningSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        return sessions.TryGetValue((session.Height, session.Attempt), out var collecting) && collecting.Session.Session.KeyEpoch == session.KeyEpoch
            && collecting.Session.Session.Signers.SequenceEqual(session.Signers) && collecting.Session.Session.Sequences.SequenceEqual(session.Sequences);
    }

    /// <summary>
    /// Adds a share from <paramref name="signer"/>; <paramref name="proof"/>, when given, checks the proof that came with
    /// it (not checked yet: only if the aggregate fails).
    /// </summary>
    public ShareOutcome Add(int signer, ulong keyEpoch, SignatureShareMessage share, Func<bool>? proof = null)
    {
        ArgumentNullException.ThrowIfNull(share);
        if (!sessions.TryGetValue((share.Height, share.Attempt), out var collecting) || collecting.Session.Session.KeyEpoch != keyEpoch
            || !collecting.Session.Session.Signers.Contains(signer) || collecting.Shares.ContainsKey(signer))
            return ShareOutcome.Ignored;
        BigInteger z;
        try
        {
            z = Secp256k1.DeserializeScalar(share.Share);
        }
        catch (FormatException)
        {
            // Not even a scalar: keep a zero share, which cannot verify, so that aggregation names this signer.
            z = BigInteger.Zero;
        }

        collecting.Shares[signer] = z;
        if (proof is not null)
            collecting.Proofs[signer] = proof;
        return collecting.Shares.Count == collecting.Session.Session.Signers.Count ? ShareOutcome.Complete : ShareOutcome.Kept;
    }

    /// <summary>
    /// Takes a complete session out of the collection (to aggregate it), or null; <c>Proves</c> says whether a signer's
    /// share came with a valid proof (true for a share whose proof was checked before it was added).
    /// </summary>
    public (AppliedSession Session, IReadOnlyDictionary<int, BigInteger> Shares, Func<int, bool> Proves)? TakeComplete((ulong Height, int Attempt) id)
    {
        if (!sessions.TryGetValue(id, out var collecting) || collecting.Shares.Count != collecting.Session.Session.Signers.Count)
            return null;
        sessions.Remove(id);
        var proofs = collecting.Proofs;
        return (collecting.Session, collecting.Shares, signer => !proofs.TryGetValue(signer, out var proof) || proof());
    }

    /// <summary>Stops collecting a session.</summary>
    public void Forget((ulong Height, int Attempt) id) => sessions.Remove(id);

    /// <summary>Stops collecting a session and returns its signers that sent no share (empty when it was not collected).</summary>
    public IReadOnlyList<int> ForgetAndNameSilent((ulong Height, int Attempt) id)
        => sessions.Remove(id, out var collecting) ? [.. collecting.Session.Session.Signers.Where(s => !collecting.Shares.ContainsKey(s))] : [];

    /// <summary>Stops collecting every session for a head at or below <paramref name="height"/>.</summary>
    public void ForgetThrough(ulong height)
    {
        foreach (var id in sessions.Keys.Where(k => k.Height <= height).ToList())
            sessions.Remove(id);
    }

    /// <summary>Stops collecting everything (leadership changed).</summary>
    public void Clear() => sessions.Clear();

    /// <summary>
    /// Aggregates a complete session and verifies the result under <paramref name="group"/>; pure computation. When it
    /// fails, each share that does not verify is a culprit if <paramref name="proves"/> (default: every share proven)
    /// holds for its signer, and unproven otherwise.
    /// </summary>
    public static Aggregation Aggregate(AppliedSession session, IReadOnlyDictionary<int, BigInteger> shares, GroupKey group, Func<int, bool>? proves = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(shares);
        ArgumentNullException.ThrowIfNull(group);
        var frost = session.Context;
        var signers = session.Session.Signers;
        var signature = frost.Aggregate(signers.Select(id => shares[id]));
        if (Frost.Verify(session.Message, signature, group.PublicKey))
            return new Aggregation(session, signature, [], []);
        var failed = signers.Where(id => !frost.VerifyShare(id, group.VerificationShares[id], shares[id])).ToList();
        var unproven = proves is null ? [] : failed.Where(id => !proves(id)).ToList();
        return new Aggregation(session, null, [.. failed.Except(unproven)], unproven);
    }

    private sealed class Collecting(AppliedSession session)
    {
        public AppliedSession Session { get; } = session;

        public Dictionary<int, BigInteger> Shares { get; } = [];

        // The checks of proofs that came with shares unchecked.
        public Dictionary<int, Func<bool>> Proofs { get; } = [];
    }
}

/// <summary>
/// Verified head signatures on their way to the log: each rides the next batch entry the leader cuts, or, when no batch
/// comes soon (the flush delay, or while batches flow twice their usual gap: the coordinator's EntryCadence), goes out in
/// an entry of its own. Ascending, because signed heads only go up.
/// </summary>
/// <remarks>Not thread-safe: the coordinator serializes access. Bounded by the sessions in flight.</remarks>
public sealed class SignatureOutbox
{
    private readonly SortedDictionary<ulong, (HeadSignature Signature, long ReadyAtMs)> ready = [];

    // The highest head whose signature left for the log: a lower one verified later (two sessions can finish out of
    // order) would only be ignored at apply, where the log can take no head below a signed one.
    private ulong highestTaken;

    /// <summary>Signatures waiting.</summary>
    public int Count => ready.Count;

    /// <summary>Adds a verified signature, unless a signature of a head at least as high has already left for the log.</summary>
    public void Add(HeadSignature signature, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(signature);
        if (signature.Height > highestTaken)
            ready[signature.Height] = (signature, nowMs);
    }

    /// <summary>Every waiting signature, ascending, for the batch entry being cut.</summary>
    public IReadOnlyList<HeadSignature> TakeAll()
    {
        var all = ready.Values.Select(r => r.Signature).ToList();
        ready.Clear();
        if (all.Count > 0)
            highestTaken = Math.Max(highestTaken, all[^1].Height);
        return all;
    }

    /// <summary>The signatures that waited at least <paramref name="delayMs"/>, ascending, for an entry of their own.</summary>
    public IReadOnlyList<HeadSignature> TakeDue(long nowMs, long delayMs)
    {
        if (ready.Count == 0 || ready.Values.Min(r => r.ReadyAtMs) > nowMs - delayMs)
            return [];
        return TakeAll();
    }

    /// <summary>Puts back signatures whose entry did not commit.</summary>
    public void Return(IEnumerable<HeadSignature> signatures, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(signatures);
        foreach (var signature in signatures)
            ready.TryAdd(signature.Height, (signature, nowMs));
    }

    /// <summary>Drops signatures of heads at or below <paramref name="height"/> (a head at least as high is signed).</summary>
    public void DropThrough(ulong height)
    {
        foreach (var key in ready.Keys.Where(k => k <= height).ToList())
            ready.Remove(key);
    }

    /// <summary>Drops everything (leadership changed).</summary>
    public void Clear()
    {
        ready.Clear();
        highestTaken = 0;
    }
}
