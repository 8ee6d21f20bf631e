using System.CommandLine;
using System.Globalization;
using System.Numerics;
using Sequencer.Ethereum;

namespace Sequencer.Node.Cli;

/// <summary>
/// <c>sign-tx</c>: signs an EIP-1559 transaction for a chain in ethereum validation mode and prints the raw bytes
/// (what <c>submit</c> or <c>POST /v1/txs</c> takes), its hash and its sender. For trying the mode out; real clients sign
/// with their own wallets.
/// </summary>
public static class SignTxCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var key = new Option<string>("--key") { Description = "The sender's private key (0x, 32 bytes hex), or a file holding it.", Required = true };
        var nonce = new Option<ulong>("--nonce") { Description = "The sender's nonce.", Required = true };
        var chainId = new Option<ulong>("--chain-id") { Description = "The chain id (the cluster's).", DefaultValueFactory = _ => 1UL };
        var to = new Option<string>("--to") { Description = "The receiver.", DefaultValueFactory = _ => "0x000000000000000000000000000000000000dead" };
        var value = new Option<string>("--value") { Description = "Wei sent (decimal).", DefaultValueFactory = _ => "0" };
        var data = new Option<string>("--data") { Description = "Call data (0x hex).", DefaultValueFactory = _ => "0x" };
        var command = new Command("sign-tx", "Sign an EIP-1559 transaction (ethereum validation mode) and print its raw bytes, hash and sender.")
        {
            key, nonce, chainId, to, value, data,
        };
        command.SetAction(async (result, token) =>
        {
            try
            {
                var given = result.GetValue(key)!;
                var secret = File.Exists(given) ? (await File.ReadAllTextAsync(given, token).ConfigureAwait(false)).Trim() : given;
                var signer = EthKey.FromHex(secret);
                var signed = new EthTransaction
                {
                    ChainId = result.GetValue(chainId), Nonce = result.GetValue(nonce), MaxFeePerGas = 1_000_000_000, MaxPriorityFeePerGas = 1, GasLimit = 21_000,
                    To = Address.Parse(result.GetValue(to)!), Value = BigInteger.Parse(result.GetValue(value)!, CultureInfo.InvariantCulture),
                    Data = EthHex.ToBytes(result.GetValue(data)!),
                }.Sign(signer);
                Console.WriteLine($"raw    {EthHex.Bytes(signed.Raw)}");
                Console.WriteLine($"hash   {EthHex.Bytes(signed.Hash)}");
                Console.WriteLine($"sender {signed.Sender.ToString().ToLowerInvariant()}");
                return 0;
            }
            catch (Exception e) when (e is FormatException or ArgumentException or IOException)
            {
                await Console.Error.WriteLineAsync($"sign-tx: {e.Message}").ConfigureAwait(false);
                return 2;
            }
        });
        return command;
    }
}
