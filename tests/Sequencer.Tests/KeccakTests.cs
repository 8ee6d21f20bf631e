using System.Text;
using Org.BouncyCastle.Crypto.Digests;
using Sequencer.Core.Hashing;

namespace Sequencer.Tests;

public sealed class KeccakTests
{
    [Theory]
    [InlineData("", "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")]
    [InlineData("abc", "0x4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45")]
    [InlineData("sequencer-cluster/commitment/v1", null)]
    public void Hash_PublishedVectors_Match(string input, string? expected)
    {
        var hash = Keccak256.Hash(Encoding.UTF8.GetBytes(input));
        Assert.Equal(expected ?? Reference(Encoding.UTF8.GetBytes(input)), hash.ToString());
    }

    [Fact]
    public void Hash_TransferSelector_MatchesEthereum()
    {
        var hash = Keccak256.Hash("transfer(address,uint256)"u8).ToArray();
        Assert.Equal("a9059cbb", Convert.ToHexStringLower(hash.AsSpan(0, 4)));
    }

    [Fact]
    public void Hash_EveryLengthAroundTheRate_MatchesBouncyCastle()
    {
        var random = new Random(7);
        for (var length = 0; length <= 3 * Keccak256.RateBytes + 1; length++)
        {
            var data = new byte[length];
            random.NextBytes(data);
            Assert.Equal(Reference(data), Keccak256.Hash(data).ToString());
        }
    }

    [Fact]
    public void Hash_TwoSpans_EqualsHashOfConcatenation()
    {
        var random = new Random(11);
        foreach (var (a, b) in new[] { (0, 0), (1, 0), (0, 1), (135, 1), (136, 136), (100, 300), (300, 7) })
        {
            var first = new byte[a];
            var second = new byte[b];
            random.NextBytes(first);
            random.NextBytes(second);
            Assert.Equal(Keccak256.Hash([.. first, .. second]), Keccak256.Hash(first, second));
        }
    }

    private static string Reference(byte[] data)
    {
        var digest = new KeccakDigest(256);
        digest.BlockUpdate(data, 0, data.Length);
        var output = new byte[32];
        digest.DoFinal(output, 0);
        return "0x" + Convert.ToHexStringLower(output);
    }
}
