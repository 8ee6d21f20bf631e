using Sequencer.Node.Storage;

namespace Sequencer.Tests;

public sealed class RetentionPolicyTests
{
    [Theory]
    [InlineData(1000UL, 0UL, 1000UL, null, 0UL)] // off
    [InlineData(100UL, 100UL, 100UL, null, 0UL)] // nothing old enough
    [InlineData(1000UL, 100UL, 1000UL, null, 900UL)] // the newest 100 keep their data
    [InlineData(1000UL, 100UL, 850UL, null, 850UL)] // never above the highest signed head
    [InlineData(1000UL, 100UL, 1000UL, 700UL, 700UL)] // nor above what is final on the L1
    [InlineData(1000UL, 100UL, 1000UL, 0UL, 0UL)] // nothing final on the L1 yet: nothing goes
    public void PrunableThrough_KeepsTheNewestHeights_AndWhatIsNotSignedOrFinal(ulong stored, ulong retain, ulong signed, ulong? l1Final, ulong expected)
        => Assert.Equal(expected, RetentionPolicy.PrunableThrough(stored, retain, signed, l1Final));
}
