using Sequencer.Core;

namespace Sequencer.Tests;

public sealed class InvariantTests
{
    [Fact]
    public void Check_Passing_DoesNotFormatItsInterpolatedMessage()
    {
        var formatted = 0;
        var probe = new FormatProbe(() => formatted++);
        for (var i = 0; i < 100; i++)
            Invariant.Check(i >= 0, $"i is {i} and {probe}");
        Assert.Equal(0, formatted);
    }

    [Fact]
    public void Check_Failing_FormatsTheMessageWithTheExpression()
    {
        var formatted = 0;
        var probe = new FormatProbe(() => formatted++);
        var height = 12345UL;
        var error = Assert.Throws<InvariantViolationException>(() => Invariant.Check(height < 10, $"height {height:D6} of {probe}"));
        Assert.Equal(1, formatted);
        Assert.Equal("invariant violated: height 012345 of probe (height < 10)", error.Message);
    }

    [Fact]
    public void Check_FailingWithAPlainMessage_Throws()
    {
        var error = Assert.Throws<InvariantViolationException>(() => Invariant.Check(1 > 2, "one is not above two"));
        Assert.Equal("invariant violated: one is not above two (1 > 2)", error.Message);
    }

    private sealed class FormatProbe(Action onFormat)
    {
        public override string ToString()
        {
            onFormat();
            return "probe";
        }
    }
}
