using Sequencer.Chaos.Faults;

namespace Sequencer.ChaosTests;

/// <summary>The target choice of <see cref="FaultTargets.Choose"/>: pure, and true to each fault's meaning.</summary>
public sealed class FaultTargetsTests
{
    private static ScheduledFault Fault(FaultKind kind, int pick) => new(1, kind, 3, 2, pick, 0.5);

    public static TheoryData<FaultKind> AllKinds() => [.. Enum.GetValues<FaultKind>()];

    [Theory]
    [MemberData(nameof(AllKinds))]
    public void Choose_SameInputsInAnyMemberOrder_GivesTheSameTarget(FaultKind kind)
    {
        for (var pick = 0; pick < 200; pick++)
        {
            var fault = Fault(kind, pick * 7919);
            var a = FaultTargets.Choose(fault, [1, 2, 3, 4, 5], 3);
            var b = FaultTargets.Choose(fault, [5, 3, 1, 4, 2], 3);
            Assert.Equal(a.Description, b.Description);
            Assert.Equal(a.Nodes, b.Nodes);
            Assert.Equal(a.Groups.Select(g => string.Join(",", g)), b.Groups.Select(g => string.Join(",", g)));
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    public void Choose_EveryKind_HitsWhatTheKindNames(int nodes)
    {
        var members = Enumerable.Range(1, nodes).ToList();
        for (var pick = 0; pick < 100; pick++)
        {
            foreach (var leader in members)
            {
                FaultTarget Of(FaultKind kind) => FaultTargets.Choose(Fault(kind, pick * 104729), members, leader);
                Assert.Equal([leader], Of(FaultKind.KillLeader).Nodes);
                Assert.Equal([leader], Of(FaultKind.PauseLeader).Nodes);
                Assert.NotEqual(leader, Of(FaultKind.KillFollower).Node);
                Assert.NotEqual(leader, Of(FaultKind.DiskFlipBits).Node);
                Assert.Equal((nodes - 1) / 2, Of(FaultKind.KillMinority).Nodes.Distinct().Count());
                Assert.Equal(nodes / 2 + 1, Of(FaultKind.KillMajority).Nodes.Distinct().Count());
                Assert.Equal(members, Of(FaultKind.KillAll).Nodes);

                var split = Of(FaultKind.SplitMajorityMinority);
                Assert.Equal(members, split.Groups.SelectMany(g => g).Order());
                Assert.Equal((nodes - 1) / 2, split.Groups[0].Count);
                Assert.Equal([leader], Of(FaultKind.IsolateLeader).Groups[0]);
                Assert.NotEqual(leader, Of(FaultKind.IsolateNode).Groups[0].Single());

                Assert.Equal(members, Of(FaultKind.MajoritiesRing).Nodes.Order());
                var bridge = Of(FaultKind.Bridge);
                Assert.Equal(members, bridge.Groups.SelectMany(g => g).Order());
                Assert.Single(bridge.Groups[1]);

                var oneWay = Of(FaultKind.OneWayLink).Nodes;
                Assert.Equal(leader, oneWay[0]);
                Assert.NotEqual(leader, oneWay[1]);

                var probe = Of(FaultKind.KillLeaderAndAcker).Nodes;
                Assert.Equal(leader, probe[0]);
                Assert.Equal(3, probe.Distinct().Count());
            }
        }
    }

    [Fact]
    public void Choose_NoKnownLeader_PicksAMemberForLeaderFaults()
    {
        var target = FaultTargets.Choose(Fault(FaultKind.KillLeader, 4), [1, 2, 3], leader: null);
        Assert.Equal([2], target.Nodes);
    }

    [Fact]
    public void Choose_PinnedValues_NeverChange()
    {
        // Changing these changes which nodes every recorded seed hits (computed independently from SplitMix64 in Python).
        Assert.Equal("ring n5-n3-n2-n1-n4", FaultTargets.Choose(Fault(FaultKind.MajoritiesRing, 12345), [1, 2, 3, 4, 5], 1).Description);
        Assert.Equal("n2,n3,n5", FaultTargets.Choose(Fault(FaultKind.KillMajority, 12345), [1, 2, 3, 4, 5], 1).Description);
    }

    [Fact]
    public void Choose_LeaderNotAMember_IsRejected()
        => Assert.Throws<ArgumentException>(() => FaultTargets.Choose(Fault(FaultKind.KillLeader, 1), [1, 2, 3], 4));
}
