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
        var node = new Option<string[]>("--node")
        {
            Description = "With --dkg: a node's API address. With --rotate: the node(s) to vote on, repeatable (a rotation starts once t members voted, each on its own node; one operator of a devnet gives t of them).",
            DefaultValueFactory = _ => ["http://127.0.0.1:7101"],
        };
        var adminToken = new Option<string?>("--admin-token") { Description = "With --dkg: the nodes' admin token (or set SEQUENCER_ADMIN_TOKEN)." };
        var timeout = new Option<int>("--timeout") { Description = "With --dkg or --rotate: seconds to wait for the key epoch.", DefaultValueFactory = _ => 120 };
        var rotate = new Option<bool>("--rotate")
        {
            Description = "Vote to rotate the running cluster's key on each --node: once t members voted, a DKG among the nodes makes key epoch n+1, which comes into force once key epoch n signs the hand-over; waits for it and writes the new public group.json to --out.",
        };
        var command = new Command("keygen", "Generate a t-of-n FROST(secp256k1) key: with --dealer, a group key file and one owner-only share file per member; with --dkg, a DKG among the running nodes, each of which keeps its own share.")
        {
            dealer, dkg, rotate, threshold, members, epoch, output, json, node, adminToken, timeout,
        };
        command.SetAction(async (result, token) =>
        {
            if (result.GetValue(rotate))
            {
                // The threshold only when given: by default the nodes keep the configured (or current) one.
                int? given = result.GetResult(threshold) is { Implicit: false } ? result.GetValue(threshold) : null;
                return await RunRotationAsync([.. result.GetValue(node)!.Select(n => new Uri(n))], given, result.GetValue(output)!,
                    result.GetValue(adminToken) ?? Environment.GetEnvironmentVariable("SEQUENCER_ADMIN_TOKEN"), TimeSpan.FromSeconds(result.GetValue(timeout)),
                    result.GetValue(json), token).ConfigureAwait(false);
            }

            if (result.GetValue(dkg))
            {
                return await RunDkgAsync(new Uri(result.GetValue(node)![0]), result.GetValue(threshold), result.GetValue(output)!,
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
                    var (file, path) = WriteGroupFile(key, output);
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

    // The public group key file of a key epoch the nodes made by a DKG, checked (the shares interpolate to the key).
    private static (GroupKeyFile File, string Path) WriteGroupFile(KeyEpochDto key, string output)
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
        return (file, path);
    }

    // keygen --rotate: votes on each given node (POST /admin/keys/rotate), waits until key epoch n+1 is in force (once t
    // members voted), checks its hand-over signature under key epoch n's key, and writes the new group key file.
    private static async Task<int> RunRotationAsync(IReadOnlyList<Uri> nodes, int? threshold, string output, string? adminToken, TimeSpan timeout, bool json, CancellationToken token)
    {
        if (nodes.Count == 0)
            return Fail("give at least one --node");
        var node = nodes[0];
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        using var client = new SequencerClient(node, TimeSpan.FromSeconds(5));
        try
        {
            var before = await client.GetKeysAsync(token).ConfigureAwait(false);
            if (before.Count == 0)
                return Fail($"{node} has no key yet: make the first with keygen --dkg");
            var current = before[^1];
            var target = ulong.Parse(current.Epoch, CultureInfo.InvariantCulture) + 1;
            var answer = string.Empty;
            foreach (var voter in nodes)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(voter, "admin/keys/rotate"));
                request.Content = new StringContent(threshold is { } t ? $"{{\"threshold\":{t.ToString(CultureInfo.InvariantCulture)}}}" : "{}", System.Text.Encoding.UTF8, "application/json");
                if (adminToken is not null)
                    request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", adminToken);
                using var response = await http.SendAsync(request, token).ConfigureAwait(false);
                answer = await response.Content.ReadAsStringAsync(token).ConfigureAwait(false);
                if (!response.IsSuccessStatusCode)
                    return Fail($"{voter} refused the vote: {(int)response.StatusCode} {answer}");
            }

            if (!json)
                Console.WriteLine($"voted on {nodes.Count} node(s); {answer}\nkey epoch {target} comes once t members voted and key epoch {target - 1} signed the hand-over; waiting up to {timeout.TotalSeconds:0} s");

            var deadline = DateTime.UtcNow + timeout;
            while (true)
            {
                var keys = await client.GetKeysAsync(token).ConfigureAwait(false);
                if (keys.FirstOrDefault(k => k.Epoch == target.ToString(CultureInfo.InvariantCulture)) is { } key)
                {
                    // The hand-over must verify under the previous key (the one the operator already knew).
                    var chain = new Sequencer.LightClient.KeyChain(KeyFiles.ParsePoint(current.GroupKey), target - 1);
                    var chainId = (await client.GetBatchAsync(1, token).ConfigureAwait(false))?.Header.ToHeader().ChainId
                        ?? throw new InvalidDataException("the node serves no batch 1 to read the chain id from");
                    if (chain.Extend(chainId, keys) is { } problem && chain.NewestEpoch < target)
                        return Fail($"key epoch {target} is in force, but its hand-over does not verify: {problem}");
                    var (file, path) = WriteGroupFile(key, output);
                    Console.WriteLine(json
                        ? JsonSerializer.Serialize(new { groupKey = file.GroupKey, threshold = file.Threshold, members = file.VerificationShares.Count, epoch = file.Epoch, previousEpoch = target - 1, signers = key.Rotation?.Signers, groupFile = path })
                        : $"key epoch {target} is in force: {file.Threshold}-of-{file.VerificationShares.Count}, group key {file.GroupKey}\n  handed over by key epoch {target - 1} (signers {string.Join(", ", key.Rotation?.Signers ?? [])}; the signature verifies under its key)\n  {path}");
                    return 0;
                }

                if (DateTime.UtcNow > deadline)
                    return Fail($"key epoch {target} is not in force after {timeout.TotalSeconds:0} s: a rotation needs t members' votes (each operator runs keygen --rotate on its own node); see GET {node}v1/signing (dkg, pendingKeyEpoch), POST {node}admin/keys/rotate (votes) and the node logs");
                await Task.Delay(250, token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or SequencerApiException or FormatException or InvalidDataException)
        {
            return Fail($"{node}: {e.Message}");
        }
    }

    /// <summary>
    /// Builds <c>verify</c>: checks that a height is covered by a signed head, with nothing but the group key: the
    /// header's commitment, the head's commitment and signature, and the history proof that puts the header in the
    /// head's history. Online (<c>--height</c> from <c>--node</c>) or offline (<c>--proof</c>: a saved
    /// <c>GET /v1/commitments/{h}</c> answer; or <c>--header</c> and <c>--signature</c> for a head itself).
    /// </summary>
    public static Command CreateVerify()
    {
        var groupKey = new Option<string>("--group-key") { Description = "The group key: 0x 33-byte compressed point, or a group.json file.", Required = true };
        var header = new Option<string?>("--header") { Description = "A head's header as JSON (the API's header object); with --signature checks that head offline." };
        var signature = new Option<string?>("--signature") { Description = "The head's signature, 0x R (33 bytes) || z (32 bytes)." };
        var proof = new Option<string?>("--proof") { Description = "Offline: a GET /v1/commitments/{height} answer (JSON, or a file holding it)." };
        var height = new Option<ulong?>("--height") { Description = "Fetch GET /v1/commitments/{height} from --node and check it." };
        var node = new Option<string>("--node") { Description = "The node's API address.", DefaultValueFactory = _ => "http://127.0.0.1:7101" };
        var json = new Option<bool>("--json") { Description = "Print a machine-readable result." };
        var command = new Command("verify", "Check that a height is covered by a head signed under the group key; exits non-zero when it is not.")
        {
            groupKey, header, signature, proof, height, node, json,
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

            CommitmentResponse commitment;
            if (result.GetValue(height) is { } h)
            {
                using var client = new SequencerClient(new Uri(result.GetValue(node)!));
                try
                {
                    if (await client.GetCommitmentAsync(h, token).ConfigureAwait(false) is not { } fetched)
                        return Fail($"batch {h} is not covered by a signed head (yet) on {client.BaseUrl}");
                    commitment = fetched;
                }
                catch (SequencerApiException e)
                {
                    return Fail(e.Message);
                }
            }
            else if (result.GetValue(proof) is { } proofText)
            {
                try
                {
                    var text = File.Exists(proofText) ? await File.ReadAllTextAsync(proofText, token).ConfigureAwait(false) : proofText;
                    commitment = JsonSerializer.Deserialize(text, ApiJsonContext.Default.CommitmentResponse) ?? throw new FormatException("empty proof");
                }
                catch (Exception e) when (e is JsonException or FormatException or IOException)
                {
                    return Fail($"--proof: {e.Message}");
                }
            }
            else if (result.GetValue(header) is { } headerJson && result.GetValue(signature) is { } sig)
            {
                try
                {
                    var headerDto = JsonSerializer.Deserialize(headerJson, ApiJsonContext.Default.HeaderDto) ?? throw new FormatException("empty header");
                    var bytes = GroupKeyFile.HexBytes(sig);
                    if (bytes.Length != 65)
                        throw new FormatException("the signature is 65 bytes: R (33) then z (32)");
                    var commitmentHex = headerDto.ToHeader().Commitment.ToString();
                    var signatureDto = new SignatureDto("0x" + Convert.ToHexStringLower(bytes.AsSpan(0, 33)), "0x" + Convert.ToHexStringLower(bytes.AsSpan(33)));
                    commitment = new CommitmentResponse(headerDto, commitmentHex, new HeadDto(headerDto, commitmentHex, signatureDto, [], headerDto.KeyEpoch), []);
                }
                catch (Exception e) when (e is JsonException or FormatException or OverflowException)
                {
                    return Fail($"--header/--signature: {e.Message}");
                }
            }
            else
            {
                return Fail("give --height (fetch from --node), --proof (offline), or --header and --signature (a head, offline)");
            }

            var (valid, problem) = CheckCoverage(commitment, key);
            Console.WriteLine(result.GetValue(json)
                ? JsonSerializer.Serialize(new { valid, height = commitment.Header.Height, commitment = commitment.Commitment, head = commitment.Head.Header.Height, problem })
                : valid ? $"valid: batch {commitment.Header.Height} commitment {commitment.Commitment} is covered by head {commitment.Head.Header.Height}, signed by the group key"
                : $"INVALID: batch {commitment.Header.Height}: {problem}");
            return valid ? 0 : 1;
        });
        return command;
    }

    /// <summary>
    /// Checks a coverage proof with nothing but the group key: both commitments recompute from their headers, the head is
    /// at or above the height, the history proof puts the header's commitment at its leaf of the head's history root
    /// (no proof when the height is the head), and the head's signature verifies. Returns why not, or null.
    /// </summary>
    public static (bool Valid, string? Problem) CheckCoverage(CommitmentResponse proof, Org.BouncyCastle.Math.EC.ECPoint groupKey)
    {
        ArgumentNullException.ThrowIfNull(proof);
        ArgumentNullException.ThrowIfNull(groupKey);
        try
        {
            var header = proof.Header.ToHeader();
            var head = proof.Head.Header.ToHeader();
            if (header.Commitment != Hash32.Parse(proof.Commitment))
                return (false, "the commitment is not the header's");
            if (head.Commitment != Hash32.Parse(proof.Head.Commitment))
                return (false, "the head's commitment is not its header's");
            if (head.Height < header.Height)
                return (false, $"the head {head.Height} is below the height");
            var path = proof.HistoryProof.Select(p => Hash32.Parse(p)).ToArray();
            if (head.Height == header.Height ? path.Length != 0 || head.Commitment != header.Commitment
                : !MerkleTree.VerifyInclusion((long)header.Height - 1, (long)head.Height - 1, header.Commitment, path, head.HistoryRoot))
                return (false, $"the history proof does not put the header in head {head.Height}'s history");
            var signature = FrostSignature.Decode(proof.Head.SignatureBytes());
            return Frost.Verify(head.Commitment.ToArray(), signature, groupKey) ? (true, null) : (false, $"head {head.Height}'s signature does not verify under the group key");
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            return (false, $"malformed: {e.Message}");
        }
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
