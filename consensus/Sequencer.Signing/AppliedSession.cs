using Sequencer.Core.Encoding;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Signing;

/// <summary>A signing session as applied: which head to sign, by whom, with which published commitments.</summary>
/// <param name="Session">The session entry, with the head's height filled in (an inline session names none).</param>
/// <param name="Message">The commitment of the head's header, as this node computed it from its own applied log.</param>
/// <param name="Commitments">The signers' nonce commitments, ascending by signer.</param>
/// <param name="GroupKey">The group key of the session's key epoch.</param>
public sealed record AppliedSession(SigningSession Session, byte[] Message, IReadOnlyList<NonceCommitment> Commitments, ECPoint GroupKey)
{
    private readonly Lazy<FrostSession> context = new(() => FrostSession.Shared(GroupKey, Commitments, Message));

    /// <summary>
    /// The session's precomputed FROST values (binding factors, R, the challenge), computed once per node and shared by
    /// its signer and, on the leader, its coordinator.
    /// </summary>
    public FrostSession Context => context.Value;

    /// <summary>The session's identity: its head's height and its attempt.</summary>
    public (ulong Height, int Attempt) Id => (Session.Height, Session.Attempt);
}
