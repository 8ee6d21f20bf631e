using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Tests;

public sealed class BatchHeaderTests
{
    private static BatchHeader Sample() => new(42, 0, 7, 3, Hash32.Parse("0x" + new string('1', 64)), Hash32.Parse("0x" + new string('2', 64)), 250, 1764000000123);

    [Fact]
    public void Commitment_ReferenceVector_MatchesIndependentPythonImplementation()
        => Assert.Equal("0x89bd8b2d5151fae6934a098a18022039b0a21a6ee15c5929b36ee4102d8f2463", Sample().Commitment.ToString());

    [Fact]
    public void EncodeAbi_IsNineWordsStartingWithTheDomainTag()
    {
        var abi = Sample().EncodeAbi();
        Assert.Equal(9 * 32, abi.Length);
        Assert.Equal(Keccak256.Hash("sequencer-cluster/commitment/v1"u8).ToArray(), abi[..32]);
        Assert.Equal(42, abi[63]);
        Assert.All(abi[32..63], b => Assert.Equal(0, b));
    }

    [Fact]
    public void Commitment_AnyFieldChanged_Changes()
    {
        var a = Sample();
        var variants = new[]
        {
            new BatchHeader(43, 0, 7, 3, a.ParentHash, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 1, 7, 3, a.ParentHash, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 8, 3, a.ParentHash, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 4, a.ParentHash, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, Hash32.Zero, a.TxRoot, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, Hash32.Zero, 250, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, a.TxRoot, 251, a.TimestampMs),
            new BatchHeader(42, 0, 7, 3, a.ParentHash, a.TxRoot, 250, a.TimestampMs + 1),
        };
        Assert.Equal(variants.Length, variants.Select(v => v.Commitment).Append(a.Commitment).Distinct().Count() - 1);
        Assert.Equal(a, Sample());
        Assert.DoesNotContain(a, variants);
    }
}
