using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Running;

namespace Sequencer.ChaosTests;

/// <summary>LIVE-SIGN judged from synthetic monitor samples: it can fail, it skips faults and leader changes.</summary>
public sealed class LiveSignTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan Sampling = TimeSpan.FromMilliseconds(200);

    /// <summary>Samples every 200 ms for 10 s: height grows 10 a sample, signed trails it by <paramref name="lagMs"/>.</summary>
    private static List<NodeSample> Samples(long lagMs, Func<long, int>? leader = null)
    {
        var samples = new List<NodeSample>();
        for (long at = 0; at <= 10_000; at += 200)
        {
            var height = (ulong)(at / 20) + 1;
            var signed = at < lagMs ? 0UL : (ulong)((at - lagMs) / 20) + 1;
            var lead = leader?.Invoke(at) ?? 1;
            foreach (var node in new[] { 1, 2, 3 })
                samples.Add(new NodeSample(at, node, true, node == lead ? "leader" : "follower", lead, 1, height, (long)height, signed));
        }

        return samples;
    }

    [Fact]
    public void SigningWithinTheBound_Passes()
    {
        var result = Liveness.CheckSigning(Samples(400), [], Bound, Sampling, 10_000);
        Assert.True(result.Passed, result.Detail);
        Assert.Contains("quiet moments", result.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void SigningTwoSecondsBehind_Fails()
    {
        var result = Liveness.CheckSigning(Samples(2_000), [], Bound, Sampling, 10_000);
        Assert.False(result.Passed);
        Assert.Contains("was not covered by a signed head until", result.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void AFailure_QuotesTheLeadersSigningViewDuringTheStall()
    {
        // The leader's /v1/signing, as the monitor records it four times a second: the failure says why signing stalled.
        const string json = """
            {"height":"412","signedThrough":"200","sessions":[{"head":"410","attempt":2,"stage":"collecting","inline":false,"signers":[1,2]}],
             "signers":[{"id":1,"sharesAccepted":90,"timeouts":0,"badShares":0,"excludedForMs":0,"shareLatencyMs":12.5,"publishedNonces":40},
                        {"id":2,"sharesAccepted":70,"timeouts":6,"badShares":0,"excludedForMs":2000,"shareLatencyMs":680.2,"publishedNonces":0}]}
            """;
        using var view = System.Text.Json.JsonDocument.Parse(json);
        var line = ClusterMonitor.DescribeSigning(view.RootElement);
        Assert.Equal("height 412 signed 200 | sessions: 410#2 collecting [1,2] | signers: n1 ok 90 to 0 bad 0 out 0 ms lat 12.5 ms nonces 40; "
            + "n2 ok 70 to 6 bad 0 out 2000 ms lat 680.2 ms nonces 0", line);

        var trace = Enumerable.Range(0, 40).Select(i => new SigningSample(i * 250L, 1, i is >= 12 and <= 28 ? line : "fine")).ToList();
        var stalled = Samples(0).Select(s => s.AtMs is >= 3_000 and < 6_000 ? s with { SignedThrough = 150 } : s).ToList();
        var failed = Liveness.CheckSigning(stalled, [], Bound, Sampling, 10_000, trace);
        Assert.False(failed.Passed);
        Assert.Contains("the leader's signing view then:", failed.Detail, StringComparison.Ordinal);
        Assert.Contains("n1: " + line, failed.Detail, StringComparison.Ordinal);

        // Bounded: at most eight views (and the last), however long the stall.
        Assert.InRange(failed.Detail.Split("\n      ").Length - 1, 2, 9);
    }

    [Fact]
    public void ASlowMonitorRound_IsAGapInTheEvidence_NotAStall()
    {
        // Signing trails by 100 ms, but one round begins asking at 5.0 s and ends only at 6.4 s (a node that has just
        // restarted answers slowly): the next round is the first to see 5.0 s's height covered. Coverage happened at some
        // moment in that gap, which is no evidence of a stall (a run failed this way).
        var samples = Samples(100).Where(s => s.AtMs is <= 5_000 or > 6_400).ToList();
        samples.AddRange(Samples(100).Where(s => s.AtMs == 5_000).Select(s => s with { AtMs = 6_400, AskedAtMs = 5_000, Height = s.Height + 1, SignedThrough = s.SignedThrough }));
        var result = Liveness.CheckSigning(samples, [], Bound, Sampling, 10_000);
        Assert.True(result.Passed, result.Detail);

        // A stall seen from both sides of the gap still fails: uncovered in a round that began 1.4 s after the moment.
        var stalled = samples.Select(s => s.AtMs is >= 5_000 and <= 6_800 ? s with { SignedThrough = 200 } : s).ToList();
        var failed = Liveness.CheckSigning(stalled, [], Bound, Sampling, 10_000);
        Assert.False(failed.Passed);
        Assert.Contains("still uncovered at", failed.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void LagDuringAFaultOrRightAfterALeaderChange_IsNotJudged()
    {
        // Signing stops between 3 s and 6 s: first inside a fault window (healed at 6 s; settled 3 s later), then around a leader change.
        var stalled = Samples(0).Select(s => s.AtMs is >= 3_000 and < 6_000 ? s with { SignedThrough = 150 } : s).ToList();
        var fault = new FaultRecord { Sequence = 1, Kind = FaultKind.KillFollower, StartMs = 3_000, EndMs = 6_000 };
        Assert.True(Liveness.CheckSigning(stalled, [fault], Bound, Sampling, 10_000).Passed);
        Assert.False(Liveness.CheckSigning(stalled, [], Bound, Sampling, 10_000).Passed);

        // Node 2 takes over at 2.8 s: the stall is within the settle time after the change, and not judged.
        var newLeader = stalled.Select(s => s.AtMs >= 2_800 ? s with { Role = s.NodeId == 2 ? "leader" : "follower", Leader = 2 } : s).ToList();
        Assert.True(Liveness.CheckSigning(newLeader, [], Bound, Sampling, 10_000).Passed);
    }
}
