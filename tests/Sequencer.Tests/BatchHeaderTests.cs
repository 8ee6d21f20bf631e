using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Tests;

public sealed class BatchHeaderTests
{
    private static BatchHeader Sample() => new(42, 0, 7, 3, Hash32.Parse("0x" + new string('1', 64)), Hash32.Parse("0x" + new string('3', 64)),
        Hash32.Parse("0x" + new string('2', 64)), 250, 1764000000123);

    // Computed by shared/tools/commit.py (an independent Python implementation of DESIGN section 5, header v2).
    [Fact]
    public void Commitment_ReferenceVector_MatchesIndependentPythonImplementation()
        => Assert.Equal("0x4d415f13279abd284d121c63758f9018bccb956e467d4e36d5082dbf72814e4e", Sample().Commitment.ToString());

    [Fact]
    public void EncodeAbi_IsTenWordsStartingWithTheV2DomainTag_HistoryRootBetweenParentAndTxRoot()
    {
        var header = Sample();
        var abi = header.EncodeAbi();
        Assert.Equal(10 * 32, abi.Length);
        Assert.Equal(Keccak256.Hash("sequencer-cluster/commitment/v2"u8).ToArray(), abi[..32]);
        Assert.Equal(42, abi[63]);
        Assert.All(abi[32..63], b => Assert.Equal(0, b));
        Assert.Equal(header.ParentHash.ToArray(), abi[160..192]);
        Assert.Equal(header.HistoryRoot.ToArray(), abi[192..224]);
        Assert.Equal(header.TxRoot.ToArray(), abi[224..256]);
        Assert.Equal(Keccak256.Hash(abi), header.Commitment);
    }

    [Fact]
    public void Commitment_AnyFieldChanged_Changes()
    {
        var a = Sample();
        var variants = new[]
        {
            new BatchHeader(43, 0, 7, 3, a.ParentHash, a.HistoryRoot, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 1, 7, 3, a.ParentHash, a.HistoryRoot, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 8, 3, a.ParentHash, a.HistoryRoot, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 4, a.ParentHash, a.HistoryRoot, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, Hash32.Zero, a.HistoryRoot, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, Hash32.Zero, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, a.HistoryRoot, Hash32.Zero, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, a.HistoryRoot, a.TxRoot, 251, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, a.HistoryRoot, a.TxRoot, 250, a.TimestampMs + 1),
        };
        Assert.Equal(variants.Length, variants.Select(v => v.Commitment).Append(a.Commitment).Distinct().Count() - 1);
        Assert.Equal(a, Sample());
        Assert.DoesNotContain(a, variants);
    }
}
