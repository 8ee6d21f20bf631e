using Sequencer.Core.Hashing;

namespace Sequencer.Raft;

/// <summary>
/// A follower's applied tip (height and commitment): a snapshot sent to that follower may start above it (a delta
/// snapshot), since the follower already stores every batch up to it.
/// </summary>
/// <remarks>
/// Without it every snapshot transfer streams the whole history from height 1, and both ends stop a transfer at the Raft
/// request timeout: a follower a few tens of thousands of batches behind then gained less with each attempt and
/// stopped moving (measured on <c>make run</c>: stuck at height 54,783 of 61,964 while the leader spent a core
/// restreaming). The leader's replication read for a follower (<see cref="DurableWriteAheadLog"/>) asks the follower for
/// its tip when it is about to send a snapshot and sets <see cref="Current"/> for that transfer; the snapshot stream
/// reads it. The follower's install checks that the base is its own batch.
/// </remarks>
/// <param name="Height">The follower's applied height.</param>
/// <param name="Commitment">The commitment of its batch at that height.</param>
public readonly record struct SnapshotBase(ulong Height, Hash32 Commitment)
{
    private static readonly AsyncLocal<SnapshotBase?> current = new();

    /// <summary>The base of the snapshot transfer this asynchronous flow is making, if the follower told it.</summary>
    public static SnapshotBase? Current
    {
        get => current.Value;
        internal set => current.Value = value;
    }
}

/// <summary>A follower's answer when the leader asks for its tip before a snapshot transfer.</summary>
/// <param name="Tip">The tip it told, or null.</param>
/// <param name="Unreachable">
/// True when no connection to the follower's internal listener could be made in the whole budget (refused, reset, or a
/// failed TLS handshake): the follower is most likely down or starting, and the transfer waits for the next round
/// rather than stream it the whole history (see <see cref="DurableWriteAheadLog.MaxTransfersPostponed"/>).
/// </param>
public readonly record struct FollowerTipAnswer(SnapshotBase? Tip, bool Unreachable)
{
    /// <summary>No useful answer: the transfer sends the whole history.</summary>
    public static FollowerTipAnswer None => default;

    /// <summary>No connection could be made.</summary>
    public static FollowerTipAnswer NotReached => new(null, true);
}
