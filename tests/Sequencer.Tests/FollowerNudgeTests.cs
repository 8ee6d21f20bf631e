using Microsoft.Extensions.Time.Testing;
using Sequencer.Node.Replication;

namespace Sequencer.Tests;

public sealed class FollowerNudgeTests
{
    private static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(10);

    [Fact]
    public void ARequestWithNothingProposed_NudgesOnceAfterTheDelay()
    {
        var time = new FakeTimeProvider();
        var nudges = 0;
        using var nudge = new FollowerNudge(time, Delay, () => Interlocked.Increment(ref nudges));
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(9));
        Assert.Equal(0, nudges);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, nudges);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, nudges);
        Assert.Equal((1L, 0L), nudge.Counters);
    }

    [Fact]
    public void AnEntryProposedAfterTheRequest_ToldTheFollowers_SoNoRoundOfTheirOwn()
    {
        var time = new FakeTimeProvider();
        var nudges = 0;
        using var nudge = new FollowerNudge(time, Delay, () => Interlocked.Increment(ref nudges));
        nudge.Proposed();
        nudge.Request();
        nudge.Proposed();
        time.Advance(Delay);
        Assert.Equal(0, nudges);
        Assert.Equal((0L, 1L), nudge.Counters);
    }

    [Fact]
    public void RequestsWithinTheDelay_AreOneCheck_AndTheLatestRequestDecides()
    {
        var time = new FakeTimeProvider();
        var nudges = 0;
        using var nudge = new FollowerNudge(time, Delay, () => Interlocked.Increment(ref nudges));
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(3));
        // An entry went out after the first request but before the second: its round may have carried a commit index
        // without the second's entry, so the check still nudges.
        nudge.Proposed();
        nudge.Request();
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(7));
        Assert.Equal(1, nudges);

        // After a check, the next request starts a new one.
        nudge.Request();
        time.Advance(Delay);
        Assert.Equal(2, nudges);
    }
}
