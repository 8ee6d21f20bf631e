using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Threshold;

namespace Sequencer.Node.Cli;

/// <summary><c>keygen</c> and <c>verify</c>: threshold key material and signature checks.</summary>
public static class KeyCommands
{
    /// <summary>Builds <c>keygen</c>.</summary>
    public static Command CreateKeygen()
    {
        var dealer = new Option<bool>("--dealer") { Description = "Trusted-dealer key generation (RFC 9591 appendix C), for development." };
        var threshold = new Option<int>("--threshold") { Description = "t: shares needed to sign.", DefaultValueFactory = _ => 2 };
        var members = new Option<int>("--members") { Description = "n: members 1..n.", DefaultValueFactory = _ => 3 };
        var epoch = new Option<ulong>("--epoch") { Description = "The key epoch.", DefaultValueFactory = _ => 1UL };
        var output = new Option<string>("--out") { Description = "Directory for group.json and share-N.json.", DefaultValueFactory = _ => "keys" };
        var json = new Option<bool>("--json") { Description = "Print a machine-readable result." };
        var dkg = new Option<bool>("--dkg") { Description = "Pedersen DKG among the running nodes of --node's cluster (no party ever holds the group secret); writes the public group.json to --out." };
        var node = new Option<string>("--node") { Description = "With --dkg: a node's API address.", DefaultValueFactory = _ => "http://127.0.0.1:7101" };
        var adminToken = new Option<string?>("--admin-token") { Description = "With --dkg: the nodes' admin token (or set SEQUENCER_ADMIN_TOKEN)." };
        var timeout = new Option<int>("--timeout") { Description = "With --dkg: seconds to wait for the key epoch.", DefaultValueFactory = _ => 120 };
        var command = new Command("keygen", "Generate a t-of-n FROST(secp256k1) key: with --dealer, a group key file and one owner-only share file per member; with --dkg, a DKG among the running nodes, each of which keeps its own share.")
        {
            dealer, dkg, threshold, members, epoch, output, json, node, adminToken, timeout,
        };
        command.SetAction(async (result, token) =>
        {
            if (result.GetValue(dkg))
            {
                return await RunDkgAsync(new Uri(result.GetValue(node)!), result.GetValue(threshold), result.GetValue(output)!,
                    result.GetValue(adminToken) ?? Environment.GetEnvironmentVariable("SEQUENCER_ADMIN_TOKEN"), TimeSpan.FromSeconds(result.GetValue(timeout)),
                    result.GetValue(json), token).ConfigureAwait(false);
            }

            if (!result.GetValue(dealer))
                return Fail("choose --dealer (trusted dealer, development) or --dkg (among the running nodes)");
            var t = result.GetValue(threshold);
            var n = result.GetValue(members);
            if (n is < 1 or > 255 || t < 1 || t > n)
                return Fail($"need 1 <= threshold <= members <= 255, not {t} of {n}");
            var directory = Directory.CreateDirectory(result.GetValue(output)!);
            var groupPath = Path.Combine(directory.FullName, KeyFiles.GroupFileName);
            GroupKeyFile groupFile;
            try
            {
                groupFile = KeyFiles.WriteDealerKeys(directory.FullName, t, n, result.GetValue(epoch));
            }
            catch (IOException e)
            {
                return Fail($"{e.Message} (keygen never overwrites a share file)");
            }

            var shares = Enumerable.Range(1, n).Select(id => Path.Combine(directory.FullName, KeyFiles.ShareFileName(id)));
            Console.WriteLine(result.GetValue(json)
                ? JsonSerializer.Serialize(new { groupKey = groupFile.GroupKey, threshold = t, members = n, epoch = groupFile.Epoch, directory = directory.FullName })
                : $"{t}-of-{n} key, epoch {groupFile.Epoch}: group key {groupFile.GroupKey}\n  {groupPath}\n  {string.Join("\n  ", shares.Select(s => s + " (mode 600)"))}");
            return 0;
        });
        return command;
    }

    // keygen --dkg: asks a node to start the DKG (POST /admin/dkg), waits until the key epoch is in force, and writes
    // the group key file. The shares never leave the nodes: each keeps its own under its data directory (keys/).
    private static async Task<int> RunDkgAsync(Uri node, int threshold, string output, string? adminToken, TimeSpan timeout, bool json, CancellationToken token)
    {
        using var http = new HttpClient { BaseAddress = node, Timeout = TimeSpan.FromSeconds(10) };
        using var client = new SequencerClient(node, TimeSpan.FromSeconds(5));
        try
        {
            if ((await client.GetKeysAsync(token).ConfigureAwait(false)).Count == 0)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "admin/dkg")
                {
                    Content = new StringContent($"{{\"threshold\":{threshold.ToString(CultureInfo.InvariantCulture)}}}", System.Text.Encoding.UTF8, "application/json"),
                };
                if (adminToken is not null)
                    request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", adminToken);
                using var response = await http.SendAsync(request, token).ConfigureAwait(false);
                if (!response.IsSuccessStatusCode)
                    return Fail($"{node} refused the DKG: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(token).ConfigureAwait(false)}");
            }

            var deadline = DateTime.UtcNow + timeout;
            while (true)
            {
                if ((await client.GetKeysAsync(token).ConfigureAwait(false)) is [var key, ..])
                {
                    var file = new GroupKeyFile
                    {
                        Epoch = ulong.Parse(key.Epoch, CultureInfo.InvariantCulture),
                        Threshold = key.Threshold,
                        GroupKey = key.GroupKey,
                        VerificationShares = key.VerificationShares ?? new Dictionary<string, string>(),
                        Origin = "dkg",
                    };
                    file.ToGroupKey();
                    var directory = Directory.CreateDirectory(output);
                    var path = Path.Combine(directory.FullName, KeyFiles.GroupFileName);
                    KeyFiles.WriteGroup(path, file);
                    Console.WriteLine(json
                        ? JsonSerializer.Serialize(new { groupKey = file.GroupKey, threshold = file.Threshold, members = file.VerificationShares.Count, epoch = file.Epoch, groupFile = path })
                        : $"{file.Threshold}-of-{file.VerificationShares.Count} key from a DKG among the nodes, epoch {file.Epoch}: group key {file.GroupKey}\n  {path}\n  each node keeps its own share under its data directory (keys/share-N.json, mode 600)");
                    return 0;
                }

                if (DateTime.UtcNow > deadline)
                    return Fail($"no key epoch after {timeout.TotalSeconds:0} s; see GET {node}v1/signing (dkg) and the node logs");
                await Task.Delay(250, token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or SequencerApiException or FormatException or InvalidDataException)
        {
            return Fail($"{node}: {e.Message}");
        }
    }

    /// <summary>Builds <c>verify</c>: checks a header's signature against a group key, offline or fetched from a node.</summary>
    public static Command CreateVerify()
    {
        var groupKey = new Option<string>("--group-key") { Description = "The group key: 0x 33-byte compressed point, or a group.json file.", Required = true };
        var header = new Option<string?>("--header") { Description = "A header as JSON (the API's header object); with --signature checks offline." };
        var signature = new Option<string?>("--signature") { Description = "The signature, 0x R (33 bytes) || z (32 bytes)." };
        var height = new Option<ulong?>("--height") { Description = "Fetch GET /v1/commitments/{height} from --node and check it." };
        var node = new Option<string>("--node") { Description = "The node's API address.", DefaultValueFactory = _ => "http://127.0.0.1:7101" };
        var json = new Option<bool>("--json") { Description = "Print a machine-readable result." };
        var command = new Command("verify", "Check a commitment's threshold signature against a group key; exits non-zero when it does not verify.")
        {
            groupKey, header, signature, height, node, json,
        };
        command.SetAction(async (result, token) =>
        {
            Org.BouncyCastle.Math.EC.ECPoint key;
            try
            {
                var given = result.GetValue(groupKey)!;
                key = File.Exists(given) ? KeyFiles.ReadGroup(given).ToGroupKey().PublicKey : KeyFiles.ParsePoint(given);
            }
            catch (Exception e) when (e is FormatException or InvalidDataException)
            {
                return Fail($"--group-key: {e.Message}");
            }

            HeaderDto headerDto;
            string signatureHex;
            if (result.GetValue(height) is { } h)
            {
                using var client = new SequencerClient(new Uri(result.GetValue(node)!));
                CommitmentResponse? commitment;
                try
                {
                    commitment = await client.GetCommitmentAsync(h, token).ConfigureAwait(false);
                }
                catch (SequencerApiException e)
                {
                    return Fail(e.Message);
                }

                if (commitment is null)
                    return Fail($"batch {h} is not signed (yet) on {client.BaseUrl}");
                headerDto = commitment.Header;
                signatureHex = commitment.Signature.R + commitment.Signature.Z[2..];
            }
            else if (result.GetValue(header) is { } headerJson && result.GetValue(signature) is { } sig)
            {
                try
                {
                    headerDto = JsonSerializer.Deserialize(headerJson, ApiJsonContext.Default.HeaderDto) ?? throw new FormatException("empty header");
                }
                catch (Exception e) when (e is JsonException or FormatException)
                {
                    return Fail($"--header: {e.Message}");
                }

                signatureHex = sig;
            }
            else
            {
                return Fail("give --height (fetch from --node), or --header and --signature");
            }

            BatchHeader parsed;
            FrostSignature decoded;
            try
            {
                parsed = HeaderFrom(headerDto);
                decoded = FrostSignature.Decode(GroupKeyFile.HexBytes(signatureHex));
            }
            catch (Exception e) when (e is FormatException or OverflowException)
            {
                return Fail(e.Message);
            }

            var valid = Frost.Verify(parsed.Commitment.ToArray(), decoded, key);
            Console.WriteLine(result.GetValue(json)
                ? JsonSerializer.Serialize(new { valid, height = parsed.Height.ToString(CultureInfo.InvariantCulture), commitment = parsed.Commitment.ToString() })
                : valid ? $"valid: batch {parsed.Height} commitment {parsed.Commitment} is signed by the group key" : $"INVALID: the signature does not verify for batch {parsed.Height} commitment {parsed.Commitment}");
            return valid ? 0 : 1;
        });
        return command;
    }

    /// <summary>Rebuilds a header from its API form.</summary>
    public static BatchHeader HeaderFrom(HeaderDto header)
    {
        ArgumentNullException.ThrowIfNull(header);
        return header.ToHeader();
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message);
        return 1;
    }
}
