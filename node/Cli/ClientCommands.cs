using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Sequencer.Client;

namespace Sequencer.Node.Cli;

/// <summary><c>submit</c> and <c>status</c>: thin clients of a node's API.</summary>
public static class ClientCommands
{
    private static readonly Option<string> NodeOption = new("--node") { Description = "The node's API address.", DefaultValueFactory = _ => "http://127.0.0.1:7101" };
    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print a machine-readable result." };

    /// <summary>Builds <c>submit</c>.</summary>
    public static Command CreateSubmit()
    {
        var txs = new Argument<string[]>("tx") { Description = "Txs as 0x-prefixed hex.", Arity = ArgumentArity.ZeroOrMore };
        var random = new Option<int>("--random") { Description = "Submit this many random txs instead (one bulk request)." };
        var size = new Option<int>("--size") { Description = "The size of each random tx in bytes.", DefaultValueFactory = _ => 256 };
        var command = new Command("submit", "Submit txs and wait until they are ordered.") { txs, random, size, NodeOption, JsonOption };
        command.SetAction(async (result, token) =>
        {
            var payloads = new List<ReadOnlyMemory<byte>>();
            foreach (var text in result.GetValue(txs) ?? [])
            {
                if (!text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) || text.Length < 4 || text.Length % 2 != 0)
                    return Fail($"\"{text}\" is not 0x-prefixed hex");
                try
                {
                    payloads.Add(Convert.FromHexString(text.AsSpan(2)));
                }
                catch (FormatException)
                {
                    return Fail($"\"{text}\" is not 0x-prefixed hex");
                }
            }

            for (var i = 0; i < result.GetValue(random); i++)
                payloads.Add(RandomNumberGenerator.GetBytes(Math.Max(1, result.GetValue(size))));
            if (payloads.Count == 0)
                return Fail("give txs as arguments or --random N");

            using var client = new SequencerClient(new Uri(result.GetValue(NodeOption)!));
            try
            {
                var results = await client.SubmitAsync(payloads, token).ConfigureAwait(false);
                if (result.GetValue(JsonOption))
                    Console.WriteLine(JsonSerializer.Serialize(new SubmitResponse(results), ApiJsonContext.Default.SubmitResponse));
                else
                    foreach (var item in results)
                        Console.WriteLine($"{item.Hash} ordered at height {item.Height} index {item.Index.ToString(CultureInfo.InvariantCulture)}");
                return 0;
            }
            catch (SequencerApiException e)
            {
                return Fail(e.Message);
            }
        });
        return command;
    }

    /// <summary>Builds <c>status</c>: a tx's status, or the cluster's without a hash.</summary>
    public static Command CreateStatus()
    {
        var hash = new Argument<string?>("hash") { Description = "A tx hash; without it, the cluster status.", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("status", "Show a tx's status, or the cluster's.") { hash, NodeOption, JsonOption };
        command.SetAction(async (result, token) =>
        {
            using var client = new SequencerClient(new Uri(result.GetValue(NodeOption)!));
            var json = result.GetValue(JsonOption);
            try
            {
                if (result.GetValue(hash) is { } txHash)
                {
                    var status = await client.GetTxAsync(txHash, token).ConfigureAwait(false);
                    if (status is null)
                        return Fail($"tx {txHash} is not known to {client.BaseUrl}");
                    Console.WriteLine(json
                        ? JsonSerializer.Serialize(status, ApiJsonContext.Default.TxStatusResponse)
                        : $"{status.Hash}: {status.Level}{(status.Height is null ? string.Empty : $" at height {status.Height} index {status.Index}")}");
                    return 0;
                }

                var cluster = await client.GetClusterAsync(token).ConfigureAwait(false);
                Console.WriteLine(json
                    ? JsonSerializer.Serialize(cluster, ApiJsonContext.Default.ClusterResponse)
                    : $"node {cluster.NodeId}: {cluster.Role}, leader {cluster.Leader?.ToString(CultureInfo.InvariantCulture) ?? "none"}, term {cluster.Term}, height {cluster.Height}, commit {cluster.CommitIndex}, applied {cluster.AppliedIndex}");
                return 0;
            }
            catch (SequencerApiException e)
            {
                return Fail(e.Message);
            }
        });
        return command;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message);
        return 1;
    }
}
