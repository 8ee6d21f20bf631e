namespace Sequencer.Raft;

/// <summary>
/// The leader's view of when each follower last answered a replication request, so that log compaction waits while
/// a follower is silent (paused, or cut off): when it answers again, the entries it missed are still in the log.
/// </summary>
/// <remarks>
/// <para>
/// The hold was first made against a stall: DotNext's leader held the log's read lock for a follower until the
/// follower answered AppendEntries or the Raft request timeout (2 s) ended it, and compaction's barrier, queued behind
/// that read, held every later read (the applier's, the flusher's, replication to the other followers). Measured with
/// the chaos harness's <c>IsolateNode</c> (seed 202, proxy mode, 512 retained entries): the acknowledged rate during
/// each isolation fell to 38 to 130 tx/s from 360 to 460 before. The hold could not close it: a request sent just
/// before the cut-off looked healthy for <see cref="StallThreshold"/> (seed 1068277983 stalled 2.2 s). Replication
/// reads now hold no lock while a follower answers (<see cref="DurableWriteAheadLog"/>), and the hold keeps its other
/// use, catching up from the log.
/// </para>
/// <para>
/// The leader's failure detector (DotNext's <c>FailureDetectorFactory</c>, see <see cref="Detector"/>) reports each
/// answer here; it is always healthy, so it never makes DotNext drop a follower. A follower that has not answered for
/// <see cref="StallThreshold"/> holds the snapshot point (the owner bounds the hold, as for snapshot transfers, so a
/// follower that is gone for good cannot make the leader's log grow without limit). Only the leader has detectors; a
/// change of leadership clears the view (<see cref="Reset"/>).
/// </para>
/// </remarks>
public sealed class ReplicationWatch(TimeProvider time)
{
    /// <summary>How long a follower may go without answering before compaction waits for it.</summary>
    /// <remarks>Under load followers answer every few milliseconds; an idle cluster has nothing to compact.</remarks>
    public static readonly TimeSpan StallThreshold = TimeSpan.FromMilliseconds(100);

    private readonly Lock gate = new();
    private readonly Dictionary<string, long> lastAnswer = [];

    /// <summary>Forgets every follower (leadership changed: the new leader's detectors start afresh).</summary>
    public void Reset()
    {
        lock (gate)
            lastAnswer.Clear();
    }

    /// <summary>A replication process for <paramref name="member"/> started: it counts as having answered now.</summary>
    public void Started(string member) => Answered(member);

    /// <summary><paramref name="member"/> answered a replication request.</summary>
    public void Answered(string member)
    {
        var now = time.GetTimestamp();
        lock (gate)
            lastAnswer[member] = now;
    }

    /// <summary>The followers that have not answered for at least <see cref="StallThreshold"/>.</summary>
    public IReadOnlyList<string> Silent()
    {
        var now = time.GetTimestamp();
        lock (gate)
            return [.. lastAnswer.Where(p => time.GetElapsedTime(p.Value, now) >= StallThreshold).Select(p => p.Key)];
    }

    /// <summary>True when some follower has not answered for at least <see cref="StallThreshold"/>.</summary>
    public bool AnySilent => Silent().Count > 0;

    /// <summary>
    /// A failure detector for DotNext's leader that only reports answers to <paramref name="watch"/>: it is always
    /// healthy, so DotNext never treats the follower as unresponsive because of it.
    /// </summary>
    public sealed class Detector : DotNext.Diagnostics.IFailureDetector
    {
        private readonly ReplicationWatch watch;
        private readonly string member;

        public Detector(ReplicationWatch watch, string member)
        {
            ArgumentNullException.ThrowIfNull(watch);
            this.watch = watch;
            this.member = member;
            watch.Started(member);
        }

        /// <inheritdoc/>
        public bool IsHealthy => true;

        /// <inheritdoc/>
        public bool IsMonitoring => true;

        /// <inheritdoc/>
        public void ReportHeartbeat() => watch.Answered(member);

        /// <inheritdoc/>
        public void Reset() => watch.Answered(member);
    }
}
