#if SEQUENCER_TEST_FAULTS
namespace Sequencer.Core;

/// <summary>
/// Deliberate safety bugs, compiled only into test builds (-p:SequencerTestFaults=true), so that the chaos checker
/// can be shown to catch and name them. A production build has no such switches.
/// </summary>
public static class TestFaults
{
    /// <summary>The leader answers a submit when it proposes the batch, before commit, with a guessed position.</summary>
    public static bool AckBeforeCommit { get; set; }

    /// <summary>This node silently skips applying the committed batch at this height (0: never).</summary>
    public static ulong DropBatchAtHeight { get; set; }

    /// <summary>Followers acknowledge appended entries without flushing them (DotNext's own behaviour).</summary>
    public static bool FollowerAckBeforeFsync { get; set; }

    /// <summary>The node hangs at shutdown while it stops its applied state, as a stuck disk or a deadlock would.</summary>
    public static bool HangAtShutdown { get; set; }

    /// <summary>The first snapshot install of the process takes this much longer than it does (0: no delay), past the Raft request timeout.</summary>
    public static int SlowInstallMs { get; set; }

    /// <summary>In a DKG, member From deals member To a share that does not match its commitment (null: never).</summary>
    public static (int From, int To)? DkgBadShare { get; set; }

    /// <summary>In a DKG, member From complains falsely (with true evidence) about member Accused's good share (null: never).</summary>
    public static (int From, int Accused)? DkgFalseComplaint { get; set; }

    /// <summary>In a DKG, member From stays silent from stage Stage on (round1, round2 or confirm; null: never).</summary>
    public static (int From, string Stage)? DkgSilent { get; set; }

    /// <summary>Parses a --test-fault value.</summary>
    public static void Enable(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name == "ack-before-commit")
            AckBeforeCommit = true;
        else if (name.StartsWith("drop-batch=", StringComparison.Ordinal))
            DropBatchAtHeight = ulong.Parse(name["drop-batch=".Length..], System.Globalization.CultureInfo.InvariantCulture);
        else if (name == "follower-ack-before-fsync")
            FollowerAckBeforeFsync = true;
        else if (name == "hang-at-shutdown")
            HangAtShutdown = true;
        else if (name.StartsWith("slow-install=", StringComparison.Ordinal))
            SlowInstallMs = int.Parse(name["slow-install=".Length..], System.Globalization.CultureInfo.InvariantCulture);
        else if (name.StartsWith("dkg-bad-share=", StringComparison.Ordinal))
            DkgBadShare = Pair(name["dkg-bad-share=".Length..]);
        else if (name.StartsWith("dkg-false-complaint=", StringComparison.Ordinal))
            DkgFalseComplaint = Pair(name["dkg-false-complaint=".Length..]);
        else if (name.StartsWith("dkg-silent=", StringComparison.Ordinal) && name.Split(':') is [var from, var stage])
            DkgSilent = (int.Parse(from["dkg-silent=".Length..], System.Globalization.CultureInfo.InvariantCulture), stage);
        else
            throw new FormatException($"unknown test fault \"{name}\" (ack-before-commit, drop-batch=HEIGHT, follower-ack-before-fsync, hang-at-shutdown, slow-install=MS, dkg-bad-share=FROM:TO, dkg-false-complaint=FROM:ACCUSED, dkg-silent=FROM:STAGE)");
    }

    private static (int, int) Pair(string value)
    {
        var parts = value.Split(':');
        if (parts.Length != 2)
            throw new FormatException($"\"{value}\" is not two member ids, FROM:TO");
        return (int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
    }
}
#endif
