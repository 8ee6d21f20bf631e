using Sequencer.Node.Replication;

namespace Sequencer.Tests;

public sealed class EntryCadenceTests
{
    private static EntryCadence Steady(long gapMs, int entries, long min = 5, long max = 50)
    {
        var cadence = new EntryCadence(min, max);
        for (var i = 0; i < entries; i++)
            cadence.Entry(i * gapMs);
        return cadence;
    }

    [Fact]
    public void BeforeAnyEntry_ItIsQuiet_AndTheWaitIsTheLeast()
    {
        var cadence = new EntryCadence(5, 50);
        Assert.Equal(5, cadence.WaitMs);
        Assert.True(cadence.Quiet(0));
        Assert.True(cadence.Quiet(long.MinValue / 2));
    }

    [Theory]
    [InlineData(1, 5)]     // fast entries: the least wait
    [InlineData(4, 8)]
    [InlineData(14, 28)]   // a slow disk's rounds: twice the gap
    [InlineData(25, 50)]   // the most
    [InlineData(26, 5)]    // rarer than that: not worth waiting for
    [InlineData(1000, 5)]
    public void TheWait_IsTwiceTheUsualGap_WithinItsBounds(long gapMs, long expectedWaitMs)
    {
        var cadence = Steady(gapMs, 200);
        Assert.Equal(expectedWaitMs, cadence.WaitMs);
        var last = 199 * gapMs;
        Assert.False(cadence.Quiet(last + expectedWaitMs - 1));
        Assert.True(cadence.Quiet(last + expectedWaitMs));
    }

    [Fact]
    public void Quiet_HonoursAFloorAboveTheWait()
    {
        var cadence = Steady(1, 100);
        Assert.Equal(5, cadence.WaitMs);
        Assert.False(cadence.Quiet(99 + 7, atLeastMs: 8));
        Assert.True(cadence.Quiet(99 + 8, atLeastMs: 8));
    }

    [Fact]
    public void AfterAPauseLongerThanTheLongestWait_ANewFlowIsLearnedAfresh()
    {
        var cadence = Steady(14, 200);
        var now = 199 * 14L;
        Assert.Equal(28, cadence.WaitMs);

        // An idle hour: the next lone entry's riders wait only the least, as on a quiet cluster.
        now += 3_600_000;
        cadence.Entry(now);
        Assert.Equal(5, cadence.WaitMs);

        // A new burst at 14 ms brings the wait back to twice its gap (within the mean's rounding).
        var entries = 0;
        while (cadence.WaitMs < 27 && entries < 100)
        {
            now += 14;
            cadence.Entry(now);
            entries++;
        }

        Assert.InRange(entries, 1, 30);

        // A new leadership forgets the rhythm too, not the last entry.
        cadence.Reset();
        Assert.Equal(5, cadence.WaitMs);
        Assert.False(cadence.Quiet(now + 4));
        Assert.True(cadence.Quiet(now + 5));
    }

    [Fact]
    public void TheBounds_AreChecked()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new EntryCadence(-1, 50));
        Assert.Throws<ArgumentOutOfRangeException>(() => new EntryCadence(10, 5));
    }
}
