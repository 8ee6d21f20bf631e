using System.Buffers.Binary;
using Sequencer.Core.Encoding;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Signing;

/// <summary>A key generation in progress, as the log has decided it so far.</summary>
/// <param name="Epoch">The key epoch it creates.</param>
/// <param name="Attempt">The attempt.</param>
/// <param name="Threshold">t.</param>
/// <param name="Members">The participants, 1..n.</param>
/// <param name="Context">The session context Φ: chain id, epoch and attempt.</param>
/// <param name="Round1">The accepted round one broadcasts, by sender.</param>
/// <param name="Round2">The accepted round two messages, by sender.</param>
/// <param name="Confirmed">The participants that proved they hold their share.</param>
/// <param name="Failure">Why the attempt failed (fewer than t qualified participants left), or null.</param>
/// <param name="Group">The group key of the qualified participants' commitments, once every round one broadcast is in.</param>
/// <param name="Disqualified">The participants a complaint proved wrong, and why.</param>
public sealed record DkgView(
    ulong Epoch, int Attempt, int Threshold, IReadOnlyList<int> Members, byte[] Context,
    IReadOnlyDictionary<int, DkgRound1Command> Round1, IReadOnlyDictionary<int, DkgRound2Command> Round2,
    IReadOnlySet<int> Confirmed, string? Failure, GroupKey? Group, IReadOnlyDictionary<int, string> Disqualified)
{
    /// <summary>The participants not disqualified: their shares make the key, and the key epoch is theirs.</summary>
    public IReadOnlyList<int> Qualified => [.. Members.Where(m => !Disqualified.ContainsKey(m))];

    /// <summary>Every qualified participant's round one broadcast is in.</summary>
    public bool Round1Complete => Members.All(m => Disqualified.ContainsKey(m) || Round1.ContainsKey(m));

    /// <summary>Every qualified participant's round two message is in.</summary>
    public bool Round2Complete => Members.All(m => Disqualified.ContainsKey(m) || Round2.ContainsKey(m));

    /// <summary>The stage, for the API: round1, round2, confirm or failed.</summary>
    public string Stage => Failure is not null ? "failed" : !Round1Complete ? "round1" : !Round2Complete ? "round2" : "confirm";

    /// <summary>True when qualified <paramref name="member"/> has not yet done its part of the current stage.</summary>
    public bool Owes(int member) => DkgLedger.Owes(Stage, member, Round1, Round2, Confirmed) && !Disqualified.ContainsKey(member);
}

/// <summary>
/// What a node's own configuration says a key generation must look like (issue 9: every field a node accepts from the
/// log is checked against its own configuration). A <see cref="DkgStartCommand"/> that does not fit is refused at the
/// leader's intake and ignored by apply, so nobody who reaches an internal route can start a DKG with members or a
/// threshold of their choosing (say 255 members, 4 of them needed, all but three played by the attacker).
/// </summary>
/// <param name="Members">The configured member count n (their ids are 1..n).</param>
/// <param name="Threshold">The configured threshold, or null when none is configured (then any t of at least 2 for
/// n of at least 2: a threshold of 1 would let one member sign alone).</param>
/// <param name="IdentityKeys">Each member's identity key (SubjectPublicKeyInfo, from its pinned certificate), or null
/// on a node without identities: with them every DKG message must be signed by its sender's key.</param>
public sealed record DkgPolicy(int Members, int? Threshold, IReadOnlyDictionary<int, byte[]>? IdentityKeys = null)
{
    /// <summary>
    /// The first key epoch of this node's dealer key files (<c>--group-key</c>), or null on a node given none. A KeyEpoch
    /// entry is accepted only when it is exactly this one, and a node given none accepts no KeyEpoch entry at all: its
    /// first key comes from a DKG. Otherwise a leader could put a group key of its own dealing (whose secret it holds)
    /// in force with one entry.
    /// </summary>
    public KeyEpochCommand? DealerKey { get; init; }

    /// <summary>Why a first key epoch <paramref name="epoch"/> (a KeyEpoch entry, a DKG's result or a snapshot's) does not fit this node, or null.</summary>
    /// <param name="epoch">The key epoch.</param>
    /// <param name="fromDkg">It is a DKG's result (else a KeyEpoch entry); null: from a snapshot, either.</param>
    public string? FirstEpochRejection(KeyEpochCommand epoch, bool? fromDkg)
    {
        ArgumentNullException.ThrowIfNull(epoch);
        if (DealerKey is { } dealt)
        {
            return Same(dealt, epoch) ? null
                : $"key epoch {epoch.Epoch} is not the one of this node's group key file ({Convert.ToHexStringLower(dealt.GroupKey)}, {dealt.Threshold} of {dealt.Members.Count})";
        }

        if (fromDkg == false)
            return "this node was given no group key file: its first key comes only from a DKG among the members, never from a KeyEpoch entry";
        if (epoch.Members.Count > Members || epoch.Members.Any(m => m < 1 || m > Members))
            return $"key epoch {epoch.Epoch} names members this node is not configured with ({Members} members)";
        return ThresholdRejection(epoch.Threshold, $"key epoch {epoch.Epoch} has");
    }

    private static bool Same(KeyEpochCommand a, KeyEpochCommand b)
        => a.Epoch == b.Epoch && a.Threshold == b.Threshold && a.GroupKey.AsSpan().SequenceEqual(b.GroupKey) && a.Members.SequenceEqual(b.Members)
            && a.VerificationShares.Count == b.VerificationShares.Count && a.VerificationShares.Zip(b.VerificationShares).All(p => p.First.AsSpan().SequenceEqual(p.Second));

    /// <summary>Why <paramref name="start"/> does not fit this policy, or null when it does.</summary>
    public string? Rejection(DkgStartCommand start)
    {
        ArgumentNullException.ThrowIfNull(start);
        if (start.Members.Count != Members)
            return $"the DKG names {start.Members.Count} members, but this node is configured with {Members}";
        return ThresholdRejection(start.Threshold, "the DKG asks for");
    }

    // The configured threshold, or when none is configured at least 2 (of at least 2 members).
    private string? ThresholdRejection(int threshold, string what)
        => Threshold is { } t && threshold != t ? $"{what} threshold {threshold}, but this node is configured with {t}"
            : Threshold is null && Members >= 2 && threshold < 2 ? "a threshold of 1 would let any one member sign alone"
            : null;
}

/// <summary>
/// The Pedersen DKG through the log (the FROST paper's KeyGen), as a pure ledger: apply a DKG entry to the state of
/// the key generation in progress and get what changed. Round one broadcasts (commitments, proofs of knowledge,
/// encryption keys), round two shares encrypted to their receivers, and confirmations signed with the new shares; the
/// key epoch comes into force when every qualified participant has confirmed. A complaint carries evidence (the ECDH
/// point of the disputed share, with a DLEQ proof): every node opens the share itself and disqualifies the dealer of a
/// bad share or the accuser of a good one, and the key generation goes on with the qualified set; only when fewer than
/// t remain does the attempt fail. The log is the broadcast channel, so every node sees the same messages and reaches
/// the same state. No lock, clock, store or logger.
/// </summary>
public sealed class DkgLedger
{
    /// <summary>The most attempts of one key generation (an attempt fails only when fewer than t participants stay qualified).</summary>
    public const int MaxAttempts = 16;

    /// <summary>The stages a participant can stay silent at.</summary>
    public static readonly IReadOnlyList<string> Stages = ["round1", "round2", "confirm"];

    /// <summary>The signer-proof domain of a DKG confirmation.</summary>
    public const string ConfirmProofDomain = "dkg-confirm";

    private readonly ulong chainId;
    private readonly DkgPolicy? policy;
    private Progress? progress;

    // Members' votes for a rotation to key epoch votesEpoch, by the new key's threshold (see KeyRotationVoteCommand);
    // cleared by a DkgStart, and replaced by the votes for a later epoch.
    private readonly SortedDictionary<int, SortedSet<int>> rotationVotes = [];
    private readonly SortedDictionary<(int Threshold, int From), byte[]> encodedVotes = [];
    private ulong votesEpoch;

    // The votes (encoded) that approved the key generation of key epoch approvedEpoch: kept with its entries from its
    // DkgStart on (and every retry's), so that replaying them (a restart, a snapshot) finds the DkgStart approved.
    private IReadOnlyList<byte[]> approvedVotes = [];
    private ulong approvedEpoch;

    /// <summary>An idle ledger for chain <paramref name="chainId"/>; <paramref name="policy"/> is this node's configuration (null: none checked).</summary>
    public DkgLedger(ulong chainId, DkgPolicy? policy = null)
    {
        this.chainId = chainId;
        this.policy = policy;
    }

    /// <summary>The key generation in progress, or null.</summary>
    public DkgView? View => progress?.View();

    /// <summary>The members that voted for a rotation to key epoch <paramref name="epoch"/>, by the new key's threshold (empty when none did).</summary>
    public IReadOnlyDictionary<int, IReadOnlyList<int>> RotationVotes(ulong epoch)
        => votesEpoch == epoch ? rotationVotes.ToDictionary(v => v.Key, v => (IReadOnlyList<int>)[.. v.Value]) : new Dictionary<int, IReadOnlyList<int>>();

    /// <summary>The DKG session context Φ: chain id, key epoch and attempt, big-endian.</summary>
    public static byte[] Context(ulong chainId, ulong epoch, int attempt)
    {
        var context = new byte[20];
        BinaryPrimitives.WriteUInt64BigEndian(context, chainId);
        BinaryPrimitives.WriteUInt64BigEndian(context.AsSpan(8), epoch);
        BinaryPrimitives.WriteInt32BigEndian(context.AsSpan(16), attempt);
        return context;
    }

    /// <summary>
    /// Why the leader does not start the rotation <paramref name="start"/> yet, or null: a DkgStart for key epoch
    /// <paramref name="currentEpoch"/> + 1 that is not a retry of a failed attempt of that epoch waits until the current
    /// epoch has been in force for <paramref name="minInterval"/> (zero: no wait). The first key generation and the
    /// retries of a failed one are never held back.
    /// </summary>
    public static string? RotationTooSoon(DkgStartCommand start, ulong currentEpoch, DkgView? dkg, TimeSpan inForceFor, TimeSpan minInterval)
    {
        ArgumentNullException.ThrowIfNull(start);
        if (currentEpoch == 0 || start.Epoch != currentEpoch + 1 || minInterval <= TimeSpan.Zero || inForceFor >= minInterval)
            return null;
        if (dkg is { Failure: not null } failed && failed.Epoch == start.Epoch)
            return null;
        return $"key epoch {currentEpoch} has been in force for {inForceFor.TotalSeconds:0} s (as the node that checked saw it; the leader decides); a rotation starts at most every "
            + $"{minInterval.TotalSeconds:0} s (MinKeyRotationIntervalMs), so in {(minInterval - inForceFor).TotalSeconds:0} s";
    }

    /// <summary>
    /// Why the ledger would not accept <paramref name="command"/> now, with key epoch <paramref name="currentEpoch"/>
    /// (threshold <paramref name="currentThreshold"/>; 0 and 0 before the first key) in force, or null.
    /// </summary>
    public string? Rejection(ILogCommand command, ulong currentEpoch, int currentThreshold)
    {
        ArgumentNullException.ThrowIfNull(command);
        if (command is DkgStartCommand start)
        {
            if (start.Epoch != currentEpoch + 1)
                return $"a DKG for key epoch {start.Epoch}, but the next key epoch is {currentEpoch + 1}";
            if (start.Attempt < 1 || start.Attempt > MaxAttempts)
                return $"attempt {start.Attempt} is outside 1..{MaxAttempts}";
            if (progress is not null && progress.Epoch == start.Epoch && (progress.Attempt >= start.Attempt || progress.Failure is null))
                return $"attempt {progress.Attempt} of this key generation is {(progress.Failure is null ? "in progress" : "newer")}";
            var n = start.Members.Count;
            if (n < 1 || n > 255 || !start.Members.SequenceEqual(Enumerable.Range(1, n)))
                return "the DKG members must be 1..n";
            if (start.Threshold < 1 || start.Threshold > n)
                return $"threshold {start.Threshold} does not fit {n} members";
            if (policy?.Rejection(start) is { } misfit)
                return misfit;
            // A rotation (a key is in force) starts only with t members' votes for it; the retries of a failed attempt
            // of that key generation were voted for already.
            var retry = progress is { Failure: not null } failed && failed.Epoch == start.Epoch;
            if (currentEpoch > 0 && !retry)
            {
                var votes = votesEpoch == start.Epoch && rotationVotes.TryGetValue(start.Threshold, out var voters) ? voters.Count : 0;
                if (votes < Math.Max(1, currentThreshold))
                    return $"a rotation to key epoch {start.Epoch} with threshold {start.Threshold} needs the votes of {Math.Max(1, currentThreshold)} members (POST /admin/keys/rotate on each one's node); it has {votes}";
            }

            return null;
        }

        if (command is KeyRotationVoteCommand ballot)
            return VoteRejection(ballot, currentEpoch);

        var (epoch, attempt, from) = command switch
        {
            DkgRound1Command c => (c.Epoch, c.Attempt, c.From),
            DkgRound2Command c => (c.Epoch, c.Attempt, c.From),
            DkgConfirmCommand c => (c.Epoch, c.Attempt, c.From),
            DkgComplaintCommand c => (c.Epoch, c.Attempt, c.From),
            DkgSilenceCommand c => (c.Epoch, c.Attempt, c.From),
            _ => (0UL, 0, 0),
        };
        if (progress is null || progress.Epoch != epoch || progress.Attempt != attempt)
            return $"no key generation for epoch {epoch} attempt {attempt} is in progress";
        if (!progress.Members.Contains(from))
            return $"member {from} is not a participant";
        if (policy?.IdentityKeys is { } identities && command is IDkgMessage signed)
        {
            if (!identities.TryGetValue(from, out var identity))
                return $"member {from} has no pinned identity key";
            if (!DkgIdentity.Verify(signed, chainId, identity))
                return signed.Identity.Length == 0 ? $"member {from}'s message is not signed by its identity key" : $"member {from}'s message carries a signature that its identity key did not make";
        }

        if (progress.Failure is not null)
            return "this attempt has failed";
        if (progress.Disqualified.TryGetValue(from, out var disqualified))
            return $"member {from} is disqualified from this attempt: {disqualified}";
        switch (command)
        {
            case DkgRound1Command round1:
                return progress.Round1.ContainsKey(from) ? $"member {from} already sent round one" : CheckRound1(round1, progress);
            case DkgRound2Command round2:
                if (!progress.Round1Complete)
                    return "round one is not complete";
                if (progress.Round2.ContainsKey(from))
                    return $"member {from} already sent round two";
                // One share for every other participant with a round one broadcast (and so an encryption key).
                var receivers = round2.Shares.Select(s => s.To).Order().ToList();
                if (!receivers.SequenceEqual(progress.Round1.Keys.Where(m => m != from).Order())
                    || round2.Shares.Any(s => s.Ciphertext.Length is not (DkgShareCipher.CiphertextLength or DkgShareCipher.LegacyCiphertextLength)))
                    return "round two must carry one encrypted share (48 bytes: the share and its tag) for every other participant with a round one broadcast";
                return null;
            case DkgComplaintCommand complaint:
                return Evidence(complaint, progress).Rejection;
            case DkgSilenceCommand vote:
                var stage = progress.Stage;
                if (!progress.Members.Contains(vote.Accused) || vote.Accused == from)
                    return "a silence vote names another participant";
                if (progress.Disqualified.ContainsKey(vote.Accused))
                    return $"member {vote.Accused} is already disqualified";
                if (vote.Stage != stage)
                    return $"the vote is for stage {vote.Stage}, but the key generation is at {stage}";
                if (!progress.Owes(vote.Accused))
                    return $"member {vote.Accused} has done its part of {stage}";
                if (progress.Owes(from))
                    return $"member {from} has not done its own part of {stage}";
                return progress.Votes.TryGetValue(vote.Accused, out var voters) && voters.Contains(from) ? $"member {from} already voted member {vote.Accused} silent" : null;
            case DkgConfirmCommand confirm:
                if (!progress.Round2Complete)
                    return "round two is not complete";
                if (progress.Confirmed.Contains(from))
                    return $"member {from} already confirmed";
                if (!confirm.GroupKey.AsSpan().SequenceEqual(Secp256k1.SerializeElement(progress.Group!.PublicKey)))
                    return $"member {from} derived a different group key";
                if (!SignerProof.Verify(ConfirmProofDomain, confirm.ProofPayload(), confirm.Proof, progress.Group.VerificationShares[from]))
                    return $"member {from}'s confirmation is not signed by its share of the new key";
                return null;
            default:
                return "not a DKG entry";
        }
    }

    // A vote: for the next key epoch, from a configured member, signed by its identity key, once per member and
    // threshold, and only while no key generation for that epoch is under way.
    private string? VoteRejection(KeyRotationVoteCommand vote, ulong currentEpoch)
    {
        if (currentEpoch == 0)
            return "there is no key to rotate yet: the first key generation needs no votes";
        if (vote.Epoch != currentEpoch + 1)
            return $"a vote for key epoch {vote.Epoch}, but the next key epoch is {currentEpoch + 1}";
        if (progress is not null && progress.Epoch == vote.Epoch)
            return $"the key generation for key epoch {vote.Epoch} has started";
        var n = policy?.Members ?? 255;
        if (vote.From < 1 || vote.From > n)
            return $"member {vote.From} is not one of the {n} members";
        if (vote.Threshold < 1 || vote.Threshold > n)
            return $"threshold {vote.Threshold} does not fit {n} members";
        if (policy?.Rejection(new DkgStartCommand { Epoch = vote.Epoch, Attempt = 1, Threshold = vote.Threshold, Members = [.. Enumerable.Range(1, n)] }) is { } misfit)
            return misfit;
        if (policy?.IdentityKeys is { } identities)
        {
            if (!identities.TryGetValue(vote.From, out var identity))
                return $"member {vote.From} has no pinned identity key";
            if (!DkgIdentity.Verify(vote, chainId, identity))
                return vote.Identity.Length == 0 ? $"member {vote.From}'s vote is not signed by its identity key" : $"member {vote.From}'s vote carries a signature that its identity key did not make";
        }

        return votesEpoch == vote.Epoch && rotationVotes.TryGetValue(vote.Threshold, out var voters) && voters.Contains(vote.From)
            ? $"member {vote.From} already voted for key epoch {vote.Epoch} with threshold {vote.Threshold}"
            : null;
    }

    /// <summary>
    /// Applies a DKG entry (<see cref="Rejection"/>'s arguments). Returns the key epoch it completed (every participant
    /// confirmed), or null; records what changed in <paramref name="effects"/>, and a refused entry as ignored.
    /// </summary>
    public KeyEpochCommand? Apply(ILogCommand command, ulong currentEpoch, int currentThreshold, LedgerEffects effects)
    {
        ArgumentNullException.ThrowIfNull(effects);
        if (Rejection(command, currentEpoch, currentThreshold) is { } reason)
        {
            effects.Note(command.GetType().Name, reason);
            return null;
        }

        KeyEpochCommand? complete = null;
        switch (command)
        {
            case KeyRotationVoteCommand vote:
                if (votesEpoch != vote.Epoch)
                {
                    rotationVotes.Clear();
                    encodedVotes.Clear();
                    votesEpoch = vote.Epoch;
                }

                if (!rotationVotes.TryGetValue(vote.Threshold, out var ballot))
                    rotationVotes[vote.Threshold] = ballot = [];
                ballot.Add(vote.From);
                encodedVotes[(vote.Threshold, vote.From)] = LogCommandCodec.Encode(vote);
                effects.DkgEvent = $"member {vote.From} voted for a rotation to key epoch {vote.Epoch} with threshold {vote.Threshold} ({ballot.Count} of {Math.Max(1, currentThreshold)} votes)";
                break;
            case DkgStartCommand start:
                progress = new Progress(start, Context(chainId, start.Epoch, start.Attempt));
                if (currentEpoch > 0)
                {
                    // A rotation: the votes that approved it stay with its entries (a retry keeps the first attempt's).
                    if (votesEpoch == start.Epoch && encodedVotes.Any(v => v.Key.Threshold == start.Threshold))
                    {
                        approvedVotes = [.. encodedVotes.Where(v => v.Key.Threshold == start.Threshold).Select(v => v.Value)];
                        approvedEpoch = start.Epoch;
                    }

                    if (approvedEpoch == start.Epoch)
                        effects.DkgPrefix = approvedVotes;
                }

                rotationVotes.Clear();
                encodedVotes.Clear();
                effects.ClearDkg = true;
                effects.DkgEvent = $"key generation for epoch {start.Epoch} started (attempt {start.Attempt}): {start.Threshold} of {start.Members.Count} members";
                break;
            case DkgRound1Command round1:
                progress!.Round1[round1.From] = round1;
                progress.Votes.Remove(round1.From);
                if (progress.Round1Complete)
                    progress.DeriveGroup();
                break;
            case DkgRound2Command round2:
                progress!.Round2[round2.From] = round2;
                progress.Votes.Remove(round2.From);
                break;
            case DkgComplaintCommand complaint:
                var (_, culprit, why) = Evidence(complaint, progress!);
                Disqualify(progress!, culprit, why, $"member {complaint.From} accused member {complaint.Accused}", effects);
                break;
            case DkgSilenceCommand vote:
                if (!progress!.Votes.TryGetValue(vote.Accused, out var voters))
                    progress.Votes[vote.Accused] = voters = [];
                voters.Add(vote.From);
                // t votes (fewer than t members can never silence an honest one), or every other qualified member when
                // fewer remain (then the attempt fails: nothing better is possible without the silent one).
                if (voters.Count >= Math.Max(1, Math.Min(progress.Threshold, progress.Qualified.Count - 1)))
                    Disqualify(progress, vote.Accused, $"silent at {vote.Stage}: members {string.Join(", ", voters.Order())} voted", $"member {vote.Accused} stayed silent", effects);
                break;
            case DkgConfirmCommand confirm:
                progress!.Confirmed.Add(confirm.From);
                progress.Votes.Remove(confirm.From);
                var qualified = progress.Qualified;
                if (qualified.All(progress.Confirmed.Contains))
                {
                    var group = progress.Group!;
                    complete = new KeyEpochCommand
                    {
                        Epoch = progress.Epoch,
                        Threshold = progress.Threshold,
                        GroupKey = Secp256k1.SerializeElement(group.PublicKey),
                        Members = qualified,
                        VerificationShares = [.. qualified.Select(m => Secp256k1.SerializeElement(group.VerificationShares[m]))],
                    };
                    progress = null;
                }

                break;
        }

        effects.DkgChanged = true;
        if (complete is null)
        {
            effects.DkgEntry = LogCommandCodec.Encode(command);
        }
        else
        {
            effects.ClearDkg = true;
            effects.DkgEntry = null;
        }

        return complete;
    }

    private static string? CheckRound1(DkgRound1Command round1, Progress progress)
    {
        if (round1.Commitment.Count != progress.Threshold)
            return $"the commitment has {round1.Commitment.Count} points, not {progress.Threshold}";
        try
        {
            var commitment = Points(round1.Commitment);
            var encryptionKey = Secp256k1.DeserializeElement(round1.EncryptionKey);
            if (encryptionKey.IsInfinity || commitment.Any(p => p.IsInfinity))
                return "a point is the identity";
            var message = new DkgRound1(round1.From, commitment, Secp256k1.DeserializeElement(round1.ProofR), Secp256k1.DeserializeScalar(round1.ProofMu));
            return PedersenDkg.VerifyProof(message, progress.Context) ? null : "the proof of knowledge does not verify";
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            return "a point or scalar does not decode: " + e.Message;
        }
    }

    /// <summary>The context a complaint's DLEQ proof is bound to: the session context, the accuser and the accused.</summary>
    public static byte[] ComplaintContext(ReadOnlySpan<byte> context, int accuser, int accused) => DkgShareCipher.PairContext(context, accuser, accused);

    // Checks a complaint's evidence: the revealed ECDH point must be proven (DLEQ against both round one encryption
    // keys). With it, anyone opens the disputed share: a share that fails its tag, is no scalar or misses the dealer's
    // commitment convicts the dealer; one that opens and matches convicts the accuser. A complaint without valid
    // evidence proves nothing about anyone and is refused.
    private static (string? Rejection, int Culprit, string Why) Evidence(DkgComplaintCommand complaint, Progress progress)
    {
        var (from, accused) = (complaint.From, complaint.Accused);
        if (!progress.Members.Contains(accused) || accused == from || complaint.Reason.Length > 200)
            return ("a complaint names another participant and a short reason", 0, string.Empty);
        if (progress.Disqualified.ContainsKey(accused))
            return ($"member {accused} is already disqualified", 0, string.Empty);
        if (!progress.Round2.TryGetValue(accused, out var dealt))
            return ($"member {accused} has sent no round two share to complain about", 0, string.Empty);
        ECPoint shared;
        try
        {
            shared = Secp256k1.DeserializeElement(complaint.SharedPoint);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            return ("the complaint's shared point does not decode: " + e.Message, 0, string.Empty);
        }

        var accuserKey = Secp256k1.DeserializeElement(progress.Round1[from].EncryptionKey);
        var accusedKey = Secp256k1.DeserializeElement(progress.Round1[accused].EncryptionKey);
        if (!Dleq.Verify(accuserKey, accusedKey, shared, complaint.Proof, ComplaintContext(progress.Context, from, accused)))
            return ("the complaint's DLEQ proof does not verify: no evidence that the revealed point opens the share", 0, string.Empty);

        var ciphertext = dealt.Shares.First(s => s.To == from).Ciphertext;
        var (share, problem) = DkgShareCipher.OpenShared(ciphertext, shared, progress.Context, accused, from);
        if (share is null)
            return (null, accused, $"its share for member {from}: {problem}");
        var expected = TrustedDealer.EvaluateCommitment(Points(progress.Round1[accused].Commitment), from);
        return Secp256k1.BaseMultiplyPublic(share).Equals(expected)
            ? (null, from, $"it accused member {accused} of a share that opens and matches member {accused}'s commitment")
            : (null, accused, $"its share for member {from} does not match its commitment");
    }

    private static void Disqualify(Progress progress, int culprit, string why, string cause, LedgerEffects effects)
    {
        progress.Disqualified[culprit] = why;
        // Confirmations were of the group key before this; the qualified set has a new one. Votes start over.
        progress.Confirmed.Clear();
        progress.Votes.Clear();
        var prefix = $"key generation for epoch {progress.Epoch} attempt {progress.Attempt}: {cause}; member {culprit} is disqualified ({why})";
        var qualified = progress.Qualified;
        if (qualified.Count < progress.Threshold)
        {
            progress.Failure = $"only {qualified.Count} qualified participants remain, fewer than the threshold {progress.Threshold}; the last disqualified: member {culprit} ({why})";
            effects.DkgEvent = $"{prefix}; the attempt failed: {progress.Failure}";
            return;
        }

        if (progress.Round1Complete)
            progress.DeriveGroup();
        effects.DkgEvent = $"{prefix}; it goes on with members {string.Join(", ", qualified)}";
    }

    /// <summary>True when <paramref name="member"/> has not yet done its part of <paramref name="stage"/>.</summary>
    public static bool Owes(string stage, int member, IReadOnlyDictionary<int, DkgRound1Command> round1, IReadOnlyDictionary<int, DkgRound2Command> round2, IReadOnlySet<int> confirmed)
    {
        ArgumentNullException.ThrowIfNull(round1);
        ArgumentNullException.ThrowIfNull(round2);
        ArgumentNullException.ThrowIfNull(confirmed);
        return stage switch
        {
            "round1" => !round1.ContainsKey(member),
            "round2" => !round2.ContainsKey(member),
            "confirm" => !confirmed.Contains(member),
            _ => false,
        };
    }

    private static List<ECPoint> Points(IReadOnlyList<byte[]> encoded) => [.. encoded.Select(p => Secp256k1.DeserializeElement(p))];

    private sealed class Progress(DkgStartCommand start, byte[] context)
    {
        public ulong Epoch { get; } = start.Epoch;

        public int Attempt { get; } = start.Attempt;

        public int Threshold { get; } = start.Threshold;

        public IReadOnlyList<int> Members { get; } = [.. start.Members];

        public byte[] Context { get; } = context;

        public Dictionary<int, DkgRound1Command> Round1 { get; } = [];

        public Dictionary<int, DkgRound2Command> Round2 { get; } = [];

        public HashSet<int> Confirmed { get; } = [];

        public string? Failure { get; set; }

        public GroupKey? Group { get; set; }

        public Dictionary<int, string> Disqualified { get; } = [];

        // Silence votes by accused: who voted it silent at the current stage.
        public Dictionary<int, HashSet<int>> Votes { get; } = [];

        public List<int> Qualified => [.. Members.Where(m => !Disqualified.ContainsKey(m))];

        public bool Round1Complete => Members.All(m => Disqualified.ContainsKey(m) || Round1.ContainsKey(m));

        public string Stage => Failure is not null ? "failed" : !Round1Complete ? "round1" : !Round2Complete ? "round2" : "confirm";

        public bool Owes(int member) => !Disqualified.ContainsKey(member) && DkgLedger.Owes(Stage, member, Round1, Round2, Confirmed);

        public bool Round2Complete => Members.All(m => Disqualified.ContainsKey(m) || Round2.ContainsKey(m));

        // The group key and verification shares from the qualified participants' commitments.
        public void DeriveGroup() => Group = PedersenDkg.DeriveGroup(Threshold, Members.Count, Qualified.Select(m => Points(Round1[m].Commitment)));

        public DkgView View() => new(Epoch, Attempt, Threshold, Members, Context, new Dictionary<int, DkgRound1Command>(Round1),
            new Dictionary<int, DkgRound2Command>(Round2), new HashSet<int>(Confirmed), Failure, Group, new Dictionary<int, string>(Disqualified));
    }
}
