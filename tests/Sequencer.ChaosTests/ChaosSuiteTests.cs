using Sequencer.Chaos.Faults;
using Sequencer.Chaos.Network;
using Sequencer.Chaos.Running;
using Sequencer.Client.Local;

namespace Sequencer.ChaosTests;

/// <summary>
/// The short seeded chaos suite of make test: real node processes, every fault kind at least once across the runs,
/// three nodes, fixed seeds (a failure prints its SEED and keeps its data for replay).
/// </summary>
[Collection("chaos")]
public sealed class ChaosSuiteTests
{
    internal static ChaosOptions Options(string scenario, int seed, double seconds, string mode = "proxy", int nodes = 3) => new()
    {
        Scenario = scenario,
        Seed = seed,
        DurationSeconds = seconds,
        Mode = mode,
        Nodes = nodes,
        Clients = 6,
        OutputRoot = Path.Combine(Path.GetTempPath(), "sequencer-chaos-tests"),
        Progress = line => TestContext.Current.SendDiagnosticMessage(line),
    };

    internal static string Explain(ChaosResult result)
        => $"SEED={result.Seed} ({result.Directory})\n" + Sequencer.Chaos.Reporting.ReportWriter.Summary(result.Report);

    private static async Task RunAndAssertPassAsync(ChaosOptions options, params FaultKind[] mustInject)
    {
        var result = await ChaosRun.RunAsync(options, CancellationToken.None);
        Assert.True(result.Passed, Explain(result));
        foreach (var kind in mustInject)
            Assert.Contains(result.Report.Faults, f => f.Kind == kind && f.EndMs is not null);
        Assert.True(result.Report.Ops.Ok > 100, $"only {result.Report.Ops.Ok} txs acknowledged\n{Explain(result)}");
        Assert.True(File.Exists(Path.Combine(result.Directory, "timeline.svg")) && File.Exists(Path.Combine(result.Directory, "report.json")));
    }

    [Fact]
    public Task L1Faults_ReorgOutageGasSpikeAndALeaderKill_KeepTheContractAPrefixOfTheChain_AndPostingCatchesUp()
        => RunAndAssertPassAsync(Options("L1Reorg,L1Outage,L1GasSpike,KillLeader", 404, 40),
            FaultKind.L1Reorg, FaultKind.L1Outage, FaultKind.L1GasSpike, FaultKind.KillLeader);

    [Fact]
    public Task ProcessFaults_KillsAndPausesOfEveryKind_KeepEveryInvariant()
        => RunAndAssertPassAsync(Options("KillLeader,KillFollower,KillMinority,KillMajority,KillAll,PauseLeader,PauseFollower", 101, 48),
            FaultKind.KillLeader, FaultKind.KillFollower, FaultKind.KillMinority, FaultKind.KillMajority, FaultKind.KillAll, FaultKind.PauseLeader, FaultKind.PauseFollower);

    [Fact]
    public Task LinkClockAndIsolationFaults_KeepEveryInvariant()
        => RunAndAssertPassAsync(Options("Delay,Loss,Reset,ClogThenFlush,ClockSkew,ClockStrobe,IsolateNode", 202, 46),
            FaultKind.Delay, FaultKind.Loss, FaultKind.Reset, FaultKind.ClogThenFlush, FaultKind.ClockSkew, FaultKind.ClockStrobe, FaultKind.IsolateNode);

    [Fact]
    public Task DiskFaults_NodesRecoverOrFailFastAndNeverServeCorruptData()
    {
        var kinds = Environment.UserName == "root"
            ? "DiskTruncateWalTail,DiskFlipBits,DiskDeleteChunk,DiskExhaustFileHandles,DiskFull"
            : "DiskTruncateWalTail,DiskFlipBits,DiskDeleteChunk,DiskExhaustFileHandles";
        // With signing: a wiped node catching up from a snapshot cannot answer a session it has not applied; the leader
        // prefers signers that answered recently and signs without a late one (SigningLateShareMs), so LIVE-SIGN holds.
        return RunAndAssertPassAsync(Options(kinds, 303, 40),
            FaultKind.DiskTruncateWalTail, FaultKind.DiskFlipBits, FaultKind.DiskDeleteChunk, FaultKind.DiskExhaustFileHandles);
    }

    [Fact]
    public Task Signing_ByzantineSignerKillsAndDelays_KeepSigValidOneSigAndNonce()
        => RunAndAssertPassAsync(Options("ByzantineSigner,KillFollower,KillLeader,Delay", 808, 36),
            FaultKind.ByzantineSigner, FaultKind.KillFollower, FaultKind.KillLeader);

    [Fact]
    public Task DkgKey_KillsAndARestartedLeader_KeepEveryInvariant()
        // The nodes' own DKG key (what make run uses), not a dealer's: stored DKG state, key epoch from the log,
        // signing through kills and a pause.
        => RunAndAssertPassAsync(Options("KillLeader,KillFollower,PauseFollower", 909, 30) with { Dkg = true },
            FaultKind.KillLeader, FaultKind.KillFollower);

    [Fact]
    public async Task EthereumMode_ConflictingTxsToTwoNodesAtOnce_AcrossLeaderKillsAndPartitions_OrderOnePerSenderAndNonce()
    {
        // Issue 13: signed txs, a third of the nonces sent twice (other payloads) to two nodes at the same moment, while
        // leaders are killed and nodes cut off; INV-NOCONFLICT on every node's chain.
        var result = await ChaosRun.RunAsync(Options("KillLeader,IsolateNode,PauseLeader", 1313, 30) with { Ethereum = true }, CancellationToken.None);
        Assert.True(result.Passed, Explain(result));
        var noConflict = Assert.Single(result.Report.Invariants, i => i.Name == "INV-NOCONFLICT");
        Assert.Contains("nonces were contested", noConflict.Detail, StringComparison.Ordinal);
        Assert.Contains(result.Report.Faults, f => f.Kind == FaultKind.KillLeader && f.EndMs is not null);
    }

    [Fact]
    public Task KillLeaderAndAcker_RightAfterAnAck_LosesNothingAcknowledged()
        => RunAndAssertPassAsync(Options("kill-leader-and-acker", 404, 24), FaultKind.KillLeaderAndAcker);

    [Fact]
    public async Task HostMode_ExactDirectedPartitions_KeepEveryInvariant()
    {
        if (HostNetwork.WhyUnavailable() is { } reason)
        {
            Assert.Skip($"host mode is not available here: {reason}");
        }

        await RunAndAssertPassAsync(Options("IsolateLeader,SplitMajorityMinority,OneWayLink,IsolateNode", 505, 32, mode: "host"),
            FaultKind.IsolateLeader, FaultKind.SplitMajorityMinority, FaultKind.OneWayLink, FaultKind.IsolateNode);
    }

    [Fact]
    public async Task HostMode_FiveNodes_MajoritiesRingAndBridge_KeepEveryInvariant()
    {
        if (HostNetwork.WhyUnavailable() is { } reason)
        {
            Assert.Skip($"host mode is not available here: {reason}");
        }

        await RunAndAssertPassAsync(Options("MajoritiesRing,Bridge", 606, 22, mode: "host", nodes: 5), FaultKind.MajoritiesRing, FaultKind.Bridge);
    }

    [Fact]
    public void Schedule_SameSeed_GivesTheSameSchedule_AndAnotherSeedAnother()
    {
        var scenario = FaultSchedule.Find("mixed");
        var (usable, _) = FaultSchedule.Usable(scenario, hostMode: false, nodes: 3, root: false);
        var a = FaultSchedule.Build(7, scenario, usable, 120);
        var b = FaultSchedule.Build(7, scenario, usable, 120);
        var c = FaultSchedule.Build(8, scenario, usable, 120);
        Assert.NotEmpty(a);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.All(a.Zip(a.Skip(1)), pair => Assert.True(pair.Second.AtSeconds >= pair.First.AtSeconds + pair.First.ForSeconds, "faults never overlap"));
        Assert.DoesNotContain(a, f => FaultSchedule.NeedHostMode.Contains(f.Kind));
    }

    [Fact]
    public void Cover_InjectsEveryUsableKindBeforeRepeating()
    {
        var scenario = FaultSchedule.Find("cover");
        var (usable, skipped) = FaultSchedule.Usable(scenario, hostMode: false, nodes: 3, root: false);
        var schedule = FaultSchedule.Build(9, scenario, usable, 600);
        Assert.Equal(usable.ToHashSet(), schedule.Take(usable.Count).Select(f => f.Kind).ToHashSet());
        Assert.Contains(skipped, s => s.StartsWith("IsolateLeader", StringComparison.Ordinal));
        Assert.Contains(skipped, s => s.StartsWith("MajoritiesRing", StringComparison.Ordinal));
    }
}
