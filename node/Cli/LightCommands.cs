using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Sequencer.Client;
using Sequencer.Ethereum;
using Sequencer.LightClient;
using Sequencer.Threshold;

namespace Sequencer.Node.Cli;

/// <summary>
/// <c>light</c>: a light client that trusts no node. <c>light verify-tx HASH</c> fetches the proof bundle of a tx from
/// any node and proves its finality level with the pinned group key and its own L1 reads.
/// </summary>
public static class LightCommands
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var hash = new Argument<string>("hash") { Description = "The tx hash (0x, 32 bytes)." };
        var node = new Option<string>("--node") { Description = "Any node's API address (it is not trusted).", DefaultValueFactory = _ => "http://127.0.0.1:7101" };
        var groupKey = new Option<string?>("--group-key") { Description = "The pinned group key: 0x 33-byte compressed point, or a group.json file. Without it the key the node reports is used, and the verdict says so: pin it." };
        var keyEpoch = new Option<ulong>("--key-epoch") { Description = "The key epoch of the pinned group key.", DefaultValueFactory = _ => 1UL };
        var l1Rpc = new Option<string?>("--l1-rpc") { Description = "The client's own L1 endpoint (to prove posted and finalized)." };
        var l1Contract = new Option<string?>("--l1-contract") { Description = "The pinned inbox contract." };
        var depth = new Option<int?>("--l1-finality-depth") { Description = "Blocks below the latest at which a post is final (default: the L1's finalized tag)." };
        var json = new Option<bool>("--json") { Description = "Print a machine-readable verdict." };
        var verify = new Command("verify-tx", "Prove a tx's finality from a node's proof bundle with only the pinned group key (and the L1); exits 1 when a check fails.")
        {
            hash, node, groupKey, keyEpoch, l1Rpc, l1Contract, depth, json,
        };
        verify.SetAction(async (result, token) =>
        {
            var txHash = result.GetValue(hash)!;
            using var client = new SequencerClient(new Uri(result.GetValue(node)!));
            var notes = new List<string>();
            Org.BouncyCastle.Math.EC.ECPoint key;
            try
            {
                if (result.GetValue(groupKey) is { } given)
                {
                    key = File.Exists(given) ? KeyFiles.ReadGroup(given).ToGroupKey().PublicKey : KeyFiles.ParsePoint(given);
                }
                else
                {
                    var reported = (await client.GetKeysAsync(token).ConfigureAwait(false)).FirstOrDefault(k => k.Epoch == result.GetValue(keyEpoch).ToString(CultureInfo.InvariantCulture))
                        ?? throw new FormatException($"the node reports no key epoch {result.GetValue(keyEpoch)}");
                    key = KeyFiles.ParsePoint(reported.GroupKey);
                    notes.Add($"the group key {reported.GroupKey} was taken from the node: pin it with --group-key for a verdict that needs no trust in the node");
                }
            }
            catch (Exception e) when (e is FormatException or InvalidDataException or HttpRequestException or SequencerApiException)
            {
                await Console.Error.WriteLineAsync($"light verify-tx: --group-key: {e.Message}").ConfigureAwait(false);
                return 2;
            }

            ProofBundleResponse? bundle;
            try
            {
                bundle = await client.GetProofAsync(txHash, token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or SequencerApiException or JsonException)
            {
                await Console.Error.WriteLineAsync($"light verify-tx: {client.BaseUrl}: {e.Message}").ConfigureAwait(false);
                return 2;
            }

            if (bundle is null)
            {
                await Console.Error.WriteLineAsync($"light verify-tx: {client.BaseUrl} does not know tx {txHash}").ConfigureAwait(false);
                return 1;
            }

            using var rpc = result.GetValue(l1Rpc) is { } rpcUrl ? new EthRpcClient(new Uri(rpcUrl)) : null;
            L1View? l1 = null;
            if (rpc is not null && result.GetValue(l1Contract) is { } contract)
                l1 = new L1View(rpc, Address.Parse(contract), result.GetValue(depth));
            else if (bundle.L1 is not null)
                notes.Add("no --l1-rpc and --l1-contract: posted and finalized cannot be proven");
            // The node's key history (untrusted): a head of a newer key epoch than the pinned one is accepted only through
            // hand-overs that each verify under the key before it.
            IReadOnlyList<KeyEpochDto>? history = null;
            if (bundle.Head is { } head && ulong.TryParse(head.KeyEpoch, NumberStyles.None, CultureInfo.InvariantCulture, out var headEpoch) && headEpoch > result.GetValue(keyEpoch))
            {
                try
                {
                    history = await client.GetKeysAsync(token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is HttpRequestException or SequencerApiException or JsonException)
                {
                    notes.Add($"GET /v1/keys failed ({e.Message}): the key rotations to epoch {headEpoch} cannot be checked");
                }
            }

            var verdict = await TxVerifier.VerifyAsync(txHash, bundle, new KeyChain(key, result.GetValue(keyEpoch)), l1, history, token).ConfigureAwait(false);
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    tx = verdict.TxHash,
                    proven = verdict.Proven.ToString().ToLowerInvariant(),
                    claimed = verdict.Claimed,
                    failed = verdict.Failed?.Name,
                    checks = verdict.Checks.Select(c => new { name = c.Name, passed = c.Passed, pending = c.Pending, detail = c.Detail }),
                    notes,
                }));
            }
            else
            {
                Console.WriteLine($"tx {verdict.TxHash}: proven {verdict.Proven.ToString().ToLowerInvariant()} (the node claims {verdict.Claimed})");
                foreach (var check in verdict.Checks)
                    Console.WriteLine($"  {(check.Passed ? "ok  " : check.Pending ? "wait" : "FAIL")} {check.Name,-20} {check.Detail}");
                foreach (var note in notes)
                    Console.WriteLine($"  note: {note}");
                if (verdict.Failed is { } failed)
                    Console.WriteLine($"the node lied or served a broken proof: check {failed.Name} failed");
                else if (verdict.Overclaimed)
                    Console.WriteLine($"no lie proven, but the node claims more than this client can prove yet ({verdict.Claimed}): ask again later, or with --l1-finality-depth the node's depth");
            }

            return verdict.Failed is null ? 0 : 1;
        });
        return new Command("light", "A light client that trusts no node: it proves what the nodes claim.") { verify, CreateFollow() };
    }

    // light follow: verified signed heads from any of the nodes, with progress once a second.
    private static Command CreateFollow()
    {
        var nodes = new Option<string[]>("--node") { Description = "Nodes to follow (repeatable; the next one is used when one fails or lies).", DefaultValueFactory = _ => ["http://127.0.0.1:7101", "http://127.0.0.1:7102", "http://127.0.0.1:7103"], AllowMultipleArgumentsPerToken = true };
        var groupKey = new Option<string>("--group-key") { Description = "The pinned group key: 0x 33-byte compressed point, or a group.json file.", Required = true };
        var keyEpoch = new Option<ulong>("--key-epoch") { Description = "The key epoch of the pinned group key.", DefaultValueFactory = _ => 1UL };
        var from = new Option<ulong>("--from") { Description = "The height to follow from.", DefaultValueFactory = _ => 1UL };
        var count = new Option<int>("--count") { Description = "Stop after this many heads (0: until Ctrl-C).", DefaultValueFactory = _ => 0 };
        var follow = new Command("follow", "Stream signed heads from any node and verify each (signature under the pinned key, link to the previous head).")
        {
            nodes, groupKey, keyEpoch, from, count,
        };
        follow.SetAction(async (result, token) =>
        {
            Org.BouncyCastle.Math.EC.ECPoint key;
            try
            {
                var given = result.GetValue(groupKey)!;
                key = File.Exists(given) ? KeyFiles.ReadGroup(given).ToGroupKey().PublicKey : KeyFiles.ParsePoint(given);
            }
            catch (Exception e) when (e is FormatException or InvalidDataException)
            {
                await Console.Error.WriteLineAsync($"light follow: --group-key: {e.Message}").ConfigureAwait(false);
                return 2;
            }

            var follower = new HeadFollower([.. result.GetValue(nodes)!.Select(n => new Uri(n))], key, result.GetValue(keyEpoch));
            follower.Problem += problem => Console.WriteLine($"  {problem.Node}: {problem.Check}: {problem.Detail}; moving on");
            var limit = result.GetValue(count);
            var verified = 0L;
            var window = (Count: 0L, At: Environment.TickCount64);
            try
            {
                await foreach (var head in follower.FollowAsync(result.GetValue(from), token: token).ConfigureAwait(false))
                {
                    verified++;
                    var now = Environment.TickCount64;
                    if (now - window.At >= 1000 || verified == limit)
                    {
                        var rate = (verified - window.Count) * 1000.0 / Math.Max(1, now - window.At);
                        var lag = (long)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - (long)head.TimestampMs;
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"head {head.Height} verified ({verified} heads, {rate:0.0}/s, lag {lag} ms) from {head.Node}"));
                        window = (verified, now);
                    }

                    if (limit > 0 && verified >= limit)
                        break;
                }
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                // Ctrl-C.
            }

            Console.WriteLine($"light follow: {verified} heads verified; the last: {follower.Last?.Height.ToString(CultureInfo.InvariantCulture) ?? "none"}");
            return 0;
        });
        return follow;
    }
}
