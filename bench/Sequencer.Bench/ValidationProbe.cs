using System.Diagnostics;
using System.Globalization;
using Sequencer.Ethereum;

namespace Sequencer.Bench;

/// <summary>
/// The cost of ethereum-mode validation (issue 13): decoding a signed transaction, checking it and recovering its
/// sender, on one core and on every core at once (the leader's intake recovers the senders of a large request in
/// parallel; every node recovers them again at apply).
/// </summary>
internal static class ValidationProbe
{
    public static (double MicrosPerTx, double TxPerSecondAllCores) Measure(int count = 4000)
    {
        var keys = Enumerable.Range(1, 64).Select(i => EthKey.FromHex("0x" + i.ToString("x64", CultureInfo.InvariantCulture))).ToArray();
        var signing = Stopwatch.StartNew();
        var txs = Enumerable.Range(0, count).Select(i => Signed(keys[i % keys.Length], (ulong)i)).ToArray();
        SignMicros = signing.Elapsed.TotalMicroseconds / count;
        var rules = new EthereumTxRules(1);
        foreach (var tx in txs.Take(500))
            rules.Identify(tx, out _); // past tiered compilation
        var watch = Stopwatch.StartNew();
        foreach (var tx in txs)
        {
            if (rules.Identify(tx, out var rejection) is null)
                throw new InvalidOperationException($"a valid tx was refused: {rejection}");
        }

        var single = watch.Elapsed.TotalMicroseconds / txs.Length;
        watch.Restart();
        Parallel.ForEach(txs, tx => rules.Identify(tx, out _));
        var parallel = txs.Length / watch.Elapsed.TotalSeconds;
        return (single, parallel);
    }

    /// <summary>Signing one tx (the load generator's cost, measured with the pool).</summary>
    public static double SignMicros { get; private set; }

    /// <summary>An EIP-1559 tx of about 256 bytes (200 bytes of call data) from <paramref name="key"/>.</summary>
    public static byte[] Signed(EthKey key, ulong nonce) => new EthTransaction
    {
        ChainId = 1, Nonce = nonce, MaxFeePerGas = 1_000_000_000, MaxPriorityFeePerGas = 1, GasLimit = 21_000,
        To = Address.Parse("0x000000000000000000000000000000000000beef"), Data = new byte[200],
    }.Sign(key).Raw;

    public static void Print()
    {
        var (single, parallel) = Measure();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"ethereum validation (decode, chain id, low s, recover the sender) of a 256-byte EIP-1559 tx: {single:0} us on one core; {parallel:0} tx/s on {Environment.ProcessorCount} cores; signing one costs {SignMicros:0} us"));
    }
}
