using System.Runtime.CompilerServices;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Node.Replication;

namespace Sequencer.Tests;

public sealed class FollowerNudgeTests
{
    private static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(50);

    // A deferral under fake time whose nudges are counted in the returned box.
    private static (FakeTimeProvider Time, StrongBox<int> Nudges, FollowerNudge Nudge) Make()
    {
        var time = new FakeTimeProvider();
        var nudges = new StrongBox<int>();
        return (time, nudges, new FollowerNudge(time, Delay, MaxDelay, () => Interlocked.Increment(ref nudges.Value)));
    }

    // Forty entries `gap` apart.
    private static void Steady(FollowerNudge nudge, FakeTimeProvider time, TimeSpan gap)
    {
        for (var i = 0; i < 40; i++)
        {
            nudge.Proposed();
            time.Advance(gap);
        }
    }

    [Fact]
    public void ARequestWithNothingProposed_NudgesOnceAfterTheDelay()
    {
        var (time, nudges, nudge) = Make();
        using var _ = nudge;
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(9));
        Assert.Equal(0, nudges.Value);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, nudges.Value);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, nudges.Value);
        Assert.Equal((1L, 0L), nudge.Counters);
    }

    [Fact]
    public void AnEntryProposedAfterTheRequest_ToldTheFollowers_SoNoRoundOfTheirOwn()
    {
        var (time, nudges, nudge) = Make();
        using var _ = nudge;
        nudge.Proposed();
        nudge.Request();
        nudge.Proposed();
        time.Advance(Delay);
        Assert.Equal(0, nudges.Value);
        Assert.Equal((0L, 1L), nudge.Counters);
    }

    [Fact]
    public void RequestsWithinTheDelay_AreOneCheck_AndTheLatestRequestDecides()
    {
        var (time, nudges, nudge) = Make();
        using var _ = nudge;
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(3));
        // An entry went out after the first request but before the second: its round may have carried a commit index
        // without the second's entry, so the check still nudges.
        nudge.Proposed();
        nudge.Request();
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(7));
        Assert.Equal(1, nudges.Value);

        // After a check, the next request starts a new one.
        nudge.Request();
        time.Advance(Delay);
        Assert.Equal(2, nudges.Value);
    }

    [Fact]
    public void WhileEntriesFlowSlowly_ARequestWaitsForTheNextOne_InsteadOfARoundOfItsOwn()
    {
        // Entries 14 ms apart (a slow disk's rounds): the 10 ms delay alone would nudge between two of them every time.
        var (time, nudges, nudge) = Make();
        using var _ = nudge;
        Steady(nudge, time, TimeSpan.FromMilliseconds(14));

        Assert.InRange(nudge.Wait.TotalMilliseconds, 27, 29);
        nudge.Proposed();
        time.Advance(TimeSpan.FromMilliseconds(2));
        nudge.Request();
        time.Advance(TimeSpan.FromMilliseconds(12));
        nudge.Proposed();
        time.Advance(TimeSpan.FromMilliseconds(20));
        Assert.Equal(0, nudges.Value);
        Assert.Equal((0L, 1L), nudge.Counters);

        // When the entries stop, a request is still answered within the wait.
        nudge.Request();
        time.Advance(nudge.Wait);
        Assert.Equal(1, nudges.Value);
    }

    [Fact]
    public void WhenEntriesAreRare_ARequestWaitsOnlyTheDelay()
    {
        var (time, nudges, nudge) = Make();
        using var _ = nudge;
        Steady(nudge, time, TimeSpan.FromMilliseconds(200));

        Assert.Equal(Delay, nudge.Wait);
        nudge.Request();
        time.Advance(Delay);
        Assert.Equal(1, nudges.Value);
    }
}
