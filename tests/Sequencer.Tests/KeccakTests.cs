using System.Text;
using Org.BouncyCastle.Crypto.Digests;
using Sequencer.Core;
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

    [Fact]
    public void FourWay_EveryLengthAroundTheRate_MatchesOneAtATime()
    {
        var random = new Random(13);
        for (var length = 0; length <= (3 * Keccak256.RateBytes) + 1; length++)
        {
            // With three partners that absorb as many blocks: the shortest, the longest and one between.
            var blocks = Keccak256x4.BlocksFor(length);
            var shortest = (blocks - 1) * Keccak256.RateBytes;
            var longest = (blocks * Keccak256.RateBytes) - 1;
            var messages = new[] { length, shortest, random.Next(shortest, longest + 1), longest }.Select(n => RandomBytes(random, n)).ToArray();
            Keccak256x4.Hash(messages[0], messages[1], messages[2], messages[3], out var h0, out var h1, out var h2, out var h3);
            Assert.Equal(messages.Select(m => Keccak256.Hash(m)).ToArray(), new[] { h0, h1, h2, h3 });
            Assert.Equal(Reference(messages[0]), h0.ToString());
        }
    }

    [Fact]
    public void FourWay_MessagesOfDifferentBlockCounts_AreRefused()
    {
        var error = Assert.Throws<InvariantViolationException>(() =>
            Keccak256x4.Hash(new byte[10], new byte[10], new byte[10], new byte[Keccak256.RateBytes], out _, out _, out _, out _));
        Assert.Contains("same number of blocks", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(3, 1)]
    [InlineData(4, 1)]
    [InlineData(7, 2)]
    [InlineData(64, 1)]
    [InlineData(1000, 3)]
    [InlineData(1000, 20)]
    public void HashEach_MixedLengths_EqualsOneAtATime(int count, int distinctBlockCounts)
    {
        // More distinct block counts than the open groups (8) sends some inputs through the one-at-a-time path.
        var random = new Random(count + distinctBlockCounts);
        var inputs = Enumerable.Range(0, count)
            .Select(_ => RandomBytes(random, (random.Next(distinctBlockCounts) * Keccak256.RateBytes) + random.Next(Keccak256.RateBytes)))
            .ToArray();
        var output = new Hash32[count + 2];
        Keccak256.HashEach(inputs, output);
        Assert.Equal(inputs.Select(i => Keccak256.Hash(i)).ToArray(), output[..count]);
        Assert.Equal(default, output[count]);
    }

    [Fact]
    public void HashEach_ShortOutput_Throws()
        => Assert.Throws<ArgumentException>(() => Keccak256.HashEach([new byte[1], new byte[2]], new Hash32[1]));

    /// <summary>
    /// The four-way hashes and the Merkle trees built with them, run again in child processes of this test assembly:
    /// without AVX-512 (rotations as two shifts and an OR, chi without ternary logic) and without AVX2 (no four-way
    /// hashing at all, so HashEach and the trees take the one-at-a-time path).
    /// </summary>
    [Theory]
    [InlineData("DOTNET_EnableAVX512", "avx512")] // .NET 10 reads this name, not DOTNET_EnableAVX512F
    [InlineData("DOTNET_EnableAVX2", "avx2")]
    public async Task FourWayAndMerkle_WithoutAvx512OrAvx2_StillMatch(string variable, string turnedOff)
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported)
            Assert.Skip("no AVX2 here: the child process would run the same path as the tests above");
        await InstructionSetRuns.RunAsync(
            [$"{typeof(KeccakTests).FullName}.FourWay_*", $"{typeof(KeccakTests).FullName}.HashEach_*", $"{typeof(KeccakTests).FullName}.{nameof(InstructionSetsAsTheParentSaid)}",
                $"{typeof(MerkleTreeTests).FullName}.*"],
            0, (variable, "0"), ("SEQUENCER_EXPECT_ISA_OFF", turnedOff));
    }

    /// <summary>In a child process of the test above: the instruction set it turned off is off (else it tested nothing).</summary>
    [Fact]
    public void InstructionSetsAsTheParentSaid()
    {
        switch (Environment.GetEnvironmentVariable("SEQUENCER_EXPECT_ISA_OFF"))
        {
            case "avx512":
                Assert.False(System.Runtime.Intrinsics.X86.Avx512F.VL.IsSupported, "AVX-512 is still on in the child process");
                Assert.True(Keccak256x4.IsAccelerated);
                break;
            case "avx2":
                Assert.False(System.Runtime.Intrinsics.X86.Avx2.IsSupported, "AVX2 is still on in the child process");
                Assert.False(Keccak256x4.IsAccelerated);
                break;
        }
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
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
