using Sequencer.Core.Hashing;
using Sequencer.Node.Storage;

namespace Sequencer.Tests;

public sealed class TxBloomFilterTests
{
    private static UInt128 Key(ulong i) => Keccak256.Hash(BitConverter.GetBytes(i)).Prefix128;

    [Fact]
    public void Filter_NeverMissesAnAddedKey_AndPassesAboutOnePercentOfOthers()
    {
        const int Keys = 100_000;
        var filter = TxBloomFilter.Create(Keys, salt: 12345);
        for (ulong i = 0; i < Keys; i++)
            filter.Add(Key(i));
        for (ulong i = 0; i < Keys; i++)
            Assert.True(filter.MayContain(Key(i)));
        var positives = 0;
        for (ulong i = Keys; i < 3 * Keys; i++)
            positives += filter.MayContain(Key(i)) ? 1 : 0;
        Assert.InRange(positives / (2.0 * Keys), 0.001, 0.025);
        Assert.InRange(filter.Bytes / (double)Keys, 1.2, 1.3);
    }

    [Fact]
    public void Filter_WrittenAndLoaded_AnswersTheSame()
    {
        var filter = TxBloomFilter.Create(1000, salt: 7);
        for (ulong i = 0; i < 1000; i++)
            filter.Add(Key(i));
        var bytes = new byte[filter.Bytes];
        filter.CopyTo(bytes);
        var loaded = TxBloomFilter.Load(bytes, 7);
        for (ulong i = 0; i < 5000; i++)
            Assert.Equal(filter.MayContain(Key(i)), loaded.MayContain(Key(i)));
        Assert.Throws<InvalidDataException>(() => TxBloomFilter.Load(bytes.AsSpan(1), 7));
    }
}
