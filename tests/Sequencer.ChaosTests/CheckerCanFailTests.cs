using Sequencer.Chaos.Running;
using Sequencer.Client.Local;

namespace Sequencer.ChaosTests;

/// <summary>
/// The checker must be able to fail: nodes built with deliberate safety bugs (the TestFaults configuration) are run
/// under the harness, and the broken invariant must be caught and named.
/// </summary>
[Collection("chaos")]
public sealed class CheckerCanFailTests
{
    private static NodeBinary TestFaultsNode()
    {
        try
        {
            return NodeBinary.Locate(configuration: "TestFaults");
        }
        catch (FileNotFoundException e)
        {
            throw new InvalidOperationException("build the TestFaults node first: dotnet build node -c TestFaults (make test does)", e);
        }
    }

    [Fact]
    public async Task LeaderAcknowledgesBeforeCommit_IsCaughtAsInvAcked()
    {
        var options = ChaosSuiteTests.Options("KillLeader", 606, 16) with
        {
            Binary = TestFaultsNode(),
            NodeArguments = ["--test-fault", "ack-before-commit"],
        };
        var result = await ChaosRun.RunAsync(options, CancellationToken.None);
        Assert.False(result.Passed, "a leader that acknowledges before commit must fail the checker\n" + ChaosSuiteTests.Explain(result));
        var failed = result.Report.Invariants.Where(i => !i.Passed).Select(i => i.Name).ToList();
        Assert.Contains("INV-ACKED", failed);
    }

    [Fact]
    public async Task FollowerDropsACommittedBatch_IsCaughtAsInvOrder()
    {
        var options = ChaosSuiteTests.Options("Delay", 707, 12) with
        {
            Binary = TestFaultsNode(),
            NodeArgumentsById = new Dictionary<int, IReadOnlyList<string>> { [2] = ["--test-fault", "drop-batch=30"] },
        };
        var result = await ChaosRun.RunAsync(options, CancellationToken.None);
        Assert.False(result.Passed, "a node that drops a committed batch must fail the checker\n" + ChaosSuiteTests.Explain(result));
        var failed = result.Report.Invariants.Where(i => !i.Passed).ToList();
        Assert.Contains(failed, i => i.Name == "INV-ORDER" && i.Detail.Contains("node2", StringComparison.Ordinal));
    }
}
