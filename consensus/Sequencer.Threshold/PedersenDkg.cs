using System.Text;
using Org.BouncyCastle.Math;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>Round one broadcast of the DKG: the commitment to a participant's polynomial and a proof of knowledge of its secret.</summary>
/// <param name="Identifier">The sender.</param>
/// <param name="Commitment">φ_i0..φ_i(t-1) = G * a_ij.</param>
/// <param name="ProofR">R_i = G * k of the Schnorr proof of knowledge of a_i0.</param>
/// <param name="ProofMu">μ_i = k + a_i0 * c_i.</param>
public sealed record DkgRound1(int Identifier, IReadOnlyList<ECPoint> Commitment, ECPoint ProofR, BigInteger ProofMu);

/// <summary>Round two private message: the share f_i(l) from sender i to receiver l. Secret: send encrypted, never log.</summary>
/// <param name="From">The sender i.</param>
/// <param name="To">The receiver l.</param>
/// <param name="Share">f_i(l).</param>
public sealed record DkgRound2(int From, int To, BigInteger Share)
{
    /// <inheritdoc/>
    public override string ToString() => $"DkgRound2({From}->{To}, redacted)";
}

/// <summary>A participant that misbehaved in the DKG, and how.</summary>
/// <param name="Identifier">The culprit.</param>
/// <param name="Reason">What was wrong.</param>
public sealed record DkgComplaint(int Identifier, string Reason);

/// <summary>
/// The Pedersen distributed key generation with proofs of knowledge of the FROST paper (Komlo and Goldberg, KeyGen):
/// no party ever holds the group secret. One instance per participant; the messages travel over the cluster.
/// </summary>
/// <remarks>
/// Round 1: each participant samples a degree t-1 polynomial, broadcasts Feldman commitments to its coefficients and
/// a Schnorr proof of knowledge of its constant term, bound to its identifier and the session context (rogue-key
/// defence). Round 2: each sends f_i(l) privately to every l, checks what it receives against the sender's commitment,
/// and sums its shares. The group key is the sum of the constant-term commitments.
/// </remarks>
public sealed class PedersenDkg
{
    private readonly int identifier;
    private readonly int threshold;
    private readonly int participants;
    private readonly byte[] context;
    private readonly List<BigInteger> coefficients;
    private readonly Dictionary<int, DkgRound1> round1 = [];

    /// <summary>Starts a participant's session.</summary>
    /// <param name="identifier">This participant, in [1, participants].</param>
    /// <param name="threshold">t.</param>
    /// <param name="participants">n.</param>
    /// <param name="context">The session context Φ (for example chain id and key epoch), the same for everyone.</param>
    public PedersenDkg(int identifier, int threshold, int participants, ReadOnlySpan<byte> context)
        : this(identifier, threshold, participants, context, [.. Enumerable.Range(0, threshold).Select(_ => Secp256k1.RandomScalar())])
    {
    }

    /// <summary>Resumes a participant's session from its secret polynomial (kept by the caller, owner-only, across restarts).</summary>
    /// <param name="identifier">This participant, in [1, participants].</param>
    /// <param name="threshold">t.</param>
    /// <param name="participants">n.</param>
    /// <param name="context">The session context Φ.</param>
    /// <param name="coefficients">The t nonzero coefficients a_0..a_(t-1).</param>
    public PedersenDkg(int identifier, int threshold, int participants, ReadOnlySpan<byte> context, IReadOnlyList<BigInteger> coefficients)
    {
        ArgumentNullException.ThrowIfNull(coefficients);
        ArgumentOutOfRangeException.ThrowIfLessThan(threshold, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(threshold, participants);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(participants, 255);
        ArgumentOutOfRangeException.ThrowIfLessThan(identifier, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(identifier, participants);
        this.identifier = identifier;
        this.threshold = threshold;
        this.participants = participants;
        this.context = context.ToArray();
        if (coefficients.Count != threshold || coefficients.Any(c => c.SignValue <= 0 || c.CompareTo(Secp256k1.Order) >= 0))
            throw new ArgumentException($"a participant's polynomial has {threshold} coefficients in [1, q)", nameof(coefficients));
        this.coefficients = [.. coefficients];
    }

    /// <summary>
    /// Derives a participant's secret polynomial from a 32-byte seed (so that only the seed has to be kept):
    /// a_j = hash_to_field(seed, j), with FROST's expand_message_xmd.
    /// </summary>
    public static IReadOnlyList<BigInteger> CoefficientsFromSeed(ReadOnlySpan<byte> seed, int threshold)
    {
        if (seed.Length != 32)
            throw new ArgumentException("the seed is 32 bytes", nameof(seed));
        var dst = Encoding.ASCII.GetBytes(Frost.ContextString + "dkg-polynomial");
        var result = new List<BigInteger>(threshold);
        for (var j = 0; j < threshold; j++)
        {
            byte[] input = [.. seed, (byte)j];
            var value = new BigInteger(1, Frost.ExpandMessageXmd(input, dst, 48)).Mod(Secp256k1.Order);
            result.Add(value.SignValue == 0 ? BigInteger.One : value);
        }

        return result;
    }

    /// <summary>
    /// The group key and every participant's verification share, from the round one commitments of every participant
    /// that deals (all of them, or the qualified set once a DKG complaint has disqualified someone). Public: anyone
    /// holding the broadcasts can derive them.
    /// </summary>
    public static GroupKey DeriveGroup(int threshold, int participants, IEnumerable<IReadOnlyList<ECPoint>> commitments)
    {
        ArgumentNullException.ThrowIfNull(commitments);
        var all = commitments.ToList();
        if (all.Count == 0 || all.Count > participants || all.Any(c => c.Count != threshold))
            throw new ArgumentException($"expected 1 to {participants} commitments of {threshold} points");
        var sum = Enumerable.Range(0, threshold)
            .Select(j => Secp256k1.Sum(all.Select(c => c[j])))
            .ToList();
        return TrustedDealer.DeriveGroupInfo(participants, threshold, sum);
    }

    /// <summary>This participant's round one broadcast.</summary>
    public DkgRound1 Round1()
    {
        var commitment = coefficients.Select(Secp256k1.BaseMultiply).ToList();
        var k = Secp256k1.RandomScalar();
        var r = Secp256k1.BaseMultiply(k);
        var c = Challenge(identifier, context, commitment[0], r);
        var mu = k.Add(coefficients[0].Multiply(c)).Mod(Secp256k1.Order);
        return new DkgRound1(identifier, commitment, r, mu);
    }

    /// <summary>Checks and records another participant's round one broadcast; returns a complaint when it is invalid.</summary>
    public DkgComplaint? Receive(DkgRound1 message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.Identifier < 1 || message.Identifier > participants)
            return new DkgComplaint(message.Identifier, "identifier out of range");
        if (message.Commitment.Count != threshold)
            return new DkgComplaint(message.Identifier, $"commitment has {message.Commitment.Count} elements, not {threshold}");
        if (!VerifyProof(message, context))
            return new DkgComplaint(message.Identifier, "invalid proof of knowledge of the secret");
        if (round1.TryGetValue(message.Identifier, out var earlier) && !earlier.Equals(message))
            return new DkgComplaint(message.Identifier, "two different round one messages (equivocation)");
        round1[message.Identifier] = message;
        return null;
    }

    /// <summary>This participant's round two messages, one for every other participant in <paramref name="receivers"/> (null: all; send each privately).</summary>
    /// <exception cref="InvalidOperationException">Round one is not complete among the receivers.</exception>
    public IReadOnlyList<DkgRound2> Round2(IReadOnlyCollection<int>? receivers = null)
    {
        var to = (receivers ?? [.. Enumerable.Range(1, participants)]).Where(l => l != identifier).Order().ToList();
        RequireRound1Complete(to);
        return [.. to.Select(l => new DkgRound2(identifier, l, TrustedDealer.Evaluate(coefficients, BigInteger.ValueOf(l))))];
    }

    /// <summary>
    /// Verifies the round two shares addressed to this participant and derives its key share and the group key.
    /// Returns complaints naming every sender whose share does not match its commitment.
    /// </summary>
    /// <param name="received">The shares addressed to this participant.</param>
    /// <param name="qualified">The dealers whose shares count (this participant among them); null: every participant.</param>
    public (KeyShare? Share, GroupKey? Group, IReadOnlyList<DkgComplaint> Complaints) Finish(IReadOnlyList<DkgRound2> received, IReadOnlyCollection<int>? qualified = null)
    {
        ArgumentNullException.ThrowIfNull(received);
        var dealers = qualified is null ? [.. Enumerable.Range(1, participants)] : qualified.Order().ToList();
        if (!dealers.Contains(identifier) || dealers.Count < threshold || dealers.Any(d => d < 1 || d > participants))
            throw new ArgumentException($"the qualified dealers must include participant {identifier}, be at least {threshold} and lie in 1..{participants}", nameof(qualified));
        RequireRound1Complete(dealers);
        var complaints = new List<DkgComplaint>();
        var sum = TrustedDealer.Evaluate(coefficients, BigInteger.ValueOf(identifier));
        foreach (var sender in dealers.Where(l => l != identifier))
        {
            var messages = received.Where(m => m.From == sender && m.To == identifier).ToList();
            if (messages.Count != 1)
            {
                complaints.Add(new DkgComplaint(sender, messages.Count == 0 ? "no share received" : "several shares received"));
                continue;
            }

            var share = messages[0].Share;
            var expected = TrustedDealer.EvaluateCommitment(round1[sender].Commitment, identifier);
            if (share.SignValue < 0 || share.CompareTo(Secp256k1.Order) >= 0 || !Secp256k1.BaseMultiply(share).Equals(expected))
            {
                complaints.Add(new DkgComplaint(sender, "share does not match the sender's commitment"));
                continue;
            }

            sum = sum.Add(share).Mod(Secp256k1.Order);
        }

        if (complaints.Count > 0)
            return (null, null, complaints);

        // The group commitment is the sum of every participant's polynomial commitment, coefficient by coefficient.
        var all = round1.Values.Where(m => dealers.Contains(m.Identifier)).Append(Round1Self()).ToList();
        var commitment = Enumerable.Range(0, threshold)
            .Select(j => Secp256k1.Sum(all.Select(m => m.Commitment[j])))
            .ToList();
        var group = TrustedDealer.DeriveGroupInfo(participants, threshold, commitment);
        var keyShare = new KeyShare(identifier, sum);
        if (!group.VerificationShares[identifier].Equals(Secp256k1.BaseMultiply(sum)))
            throw new InvalidOperationException("the derived share does not match the derived verification share");
        return (keyShare, group, complaints);
    }

    private DkgRound1 Round1Self() => new(identifier, [.. coefficients.Select(Secp256k1.BaseMultiply)], Secp256k1.Identity, BigInteger.Zero);

    private void RequireRound1Complete(IEnumerable<int> needed)
    {
        var missing = needed.Where(l => l != identifier && !round1.ContainsKey(l)).ToList();
        if (missing.Count > 0)
            throw new InvalidOperationException($"round one is missing participants {string.Join(", ", missing)}");
    }

    /// <summary>Checks a round one proof of knowledge: G * μ == R + φ_0 * c (public values: variable time).</summary>
    public static bool VerifyProof(DkgRound1 message, ReadOnlySpan<byte> context)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.Commitment.Count == 0 || message.ProofR.IsInfinity || message.Commitment[0].IsInfinity)
            return false;
        var c = Challenge(message.Identifier, context, message.Commitment[0], message.ProofR);
        // G * μ - φ_0 * c == R, one interleaved double multiplication.
        return Secp256k1.IsSumOfMultiplies(message.ProofR, message.ProofMu, [message.Commitment[0]], [Secp256k1.Order.Subtract(c).Mod(Secp256k1.Order)]);
    }

    private static BigInteger Challenge(int identifier, ReadOnlySpan<byte> context, ECPoint secretCommitment, ECPoint r)
    {
        byte[] input = [.. Secp256k1.SerializeScalar(BigInteger.ValueOf(identifier)), .. context, .. Secp256k1.SerializeElement(secretCommitment), .. Secp256k1.SerializeElement(r)];
        var dst = Encoding.ASCII.GetBytes(Frost.ContextString + "dkg");
        return new BigInteger(1, Frost.ExpandMessageXmd(input, dst, 48)).Mod(Secp256k1.Order);
    }
}
