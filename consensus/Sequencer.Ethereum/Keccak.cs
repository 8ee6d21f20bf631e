using Org.BouncyCastle.Crypto.Digests;

namespace Sequencer.Ethereum;

/// <summary>Keccak-256 as Ethereum uses it (the original padding, not SHA3-256's).</summary>
public static class Keccak
{
    /// <summary>keccak256(<paramref name="data"/>).</summary>
    public static byte[] Hash(ReadOnlySpan<byte> data)
    {
        var digest = new KeccakDigest(256);
        digest.BlockUpdate(data);
        var output = new byte[32];
        digest.DoFinal(output);
        return output;
    }

    /// <summary>keccak256 of the UTF-8 bytes of <paramref name="text"/>.</summary>
    public static byte[] Hash(string text) => Hash(System.Text.Encoding.UTF8.GetBytes(text));
}
