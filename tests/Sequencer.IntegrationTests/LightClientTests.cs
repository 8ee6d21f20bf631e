using System.Text.Json;
using System.Text.Json.Nodes;
using Sequencer.Client;
using Sequencer.Client.Local;
using Sequencer.Ethereum;
using Sequencer.LightClient;
using Sequencer.Threshold;

namespace Sequencer.IntegrationTests;

/// <summary>
/// A light client proves a tx's finality from any node's proof bundle with only the pinned group key and its own L1
/// reads, and a node that lies in any part of the bundle is caught with the name of the check that failed.
/// </summary>
/// <summary>
/// One L1 cluster for the light-client, API-conformance and tracing tests that do not kill nodes: anvil, three nodes
/// posting to it (with an admin token, for /admin/routes, and a span file each), 30 txs signed and finalized.
/// </summary>
public sealed class LightClusterFixture : IAsyncLifetime
{
    public const string AdminToken = "light-client-tests-admin-token";

    /// <summary>Each node's span file, under its data directory.</summary>
    public const string TraceFile = "traces.jsonl";

    public LocalAnvil Anvil { get; private set; } = null!;

    public Address Inbox { get; private set; } = null!;

    internal TestCluster Test { get; private set; } = null!;

    public GroupKey Group { get; private set; } = null!;

    public string GroupFile => Path.Combine(Test.KeysDirectory!, KeyFiles.GroupFileName);

    public IReadOnlyList<string> Txs { get; private set; } = [];

    public async ValueTask InitializeAsync()
    {
        (Anvil, Inbox, Test) = await L1PosterTests.StartAsync("light", ["--admin-token", AdminToken, "--trace-file", TraceFile]);
        Group = KeyFiles.ReadGroup(GroupFile).ToGroupKey();
        Txs = await SigningTests.SubmitAsync(Test.Cluster.Node(1).Client, 30, seed: 51);
        var signed = await SigningTests.WaitAllSignedAsync(Test, TimeSpan.FromSeconds(30));
        await L1PosterTests.WaitPostedAsync(Test, signed, finalized: true, TimeSpan.FromSeconds(40));
    }

    public async ValueTask DisposeAsync()
    {
        if (Test is not null)
            await Test.DisposeAsync();
        if (Anvil is not null)
            await Anvil.DisposeAsync();
    }

    /// <summary>Submits small requests to node 3 until cancelled (so that heads keep coming), riding out errors.</summary>
    public async Task LoadAsync(CancellationToken token)
    {
        var seed = 1000;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await SigningTests.SubmitAsync(Test.Cluster.Node(3).Client, 3, seed: seed++);
                await Task.Delay(20, token);
            }
            catch (Exception e) when (e is HttpRequestException or SequencerApiException or TaskCanceledException)
            {
                // A leader change, or the end.
            }
        }
    }
}

/// <summary>
/// A light client proves a tx's finality from any node's proof bundle with only the pinned group key and its own L1
/// reads, and a node that lies in any part of the bundle or of the head stream is caught with the name of the check
/// that failed: each lie is served by a real proxy in front of a real node.
/// </summary>
[Collection("clusters")]
public sealed class LightClientTests(LightClusterFixture fixture) : IClassFixture<LightClusterFixture>
{
    [Fact]
    public async Task VerifyTx_ProvesFinalizedFromAnyNode_AndEveryKindOfLieIsCaughtByName()
    {
        var test = fixture.Test;
        using var rpc = new EthRpcClient(fixture.Anvil.Rpc);
        var group = fixture.Group;
        var l1 = new L1View(rpc, fixture.Inbox, FinalityDepth: 2);

        // From every node, the tx is proven finalized: the node's claim and the proof agree.
        var tx = fixture.Txs[3];
        ProofBundleResponse? bundle = null;
        foreach (var (_, client) in test.Clients)
        {
            bundle = await client.GetProofAsync(tx);
            Assert.NotNull(bundle);
            var verdict = await TxVerifier.VerifyAsync(tx, bundle, group.PublicKey, 1, l1);
            Assert.True(verdict.Failed is null, string.Join("\n", verdict.Checks));
            Assert.Equal(FinalityLevel.Finalized, verdict.Proven);
            Assert.Equal("finalized", verdict.Claimed);
        }

        // Without an L1 of its own the client proves only signed, however much the node claims.
        var unpinned = await TxVerifier.VerifyAsync(tx, bundle!, group.PublicKey, 1, null);
        Assert.Equal(FinalityLevel.Signed, unpinned.Proven);
        Assert.True(unpinned.Overclaimed);

        // With a stricter finality rule than the node's, posted is proven and finalized is pending: no lie, no failure.
        var strict = await TxVerifier.VerifyAsync(tx, bundle!, group.PublicKey, 1, new L1View(rpc, fixture.Inbox, FinalityDepth: 1_000_000));
        Assert.Equal(FinalityLevel.Posted, strict.Proven);
        Assert.Null(strict.Failed);
        Assert.Contains(strict.Checks, c => c.Name == "l1-finality" && c.Pending);

        // A bundle from before the height was signed proves ordered, and nothing more.
        var early = bundle! with { Level = "ordered", Head = null, HistoryProof = [], L1 = null };
        var ordered = await TxVerifier.VerifyAsync(tx, early, group.PublicKey, 1, l1);
        Assert.Equal(FinalityLevel.Ordered, ordered.Proven);
        Assert.Null(ordered.Failed);
        Assert.False(ordered.Overclaimed);

        // Each lie, served by a proxy in front of node 2, and the check that the CLI names.
        await using var liar = new LyingNode(new Uri(test.Cluster.Node(2).Spec.Api));
        var honest = await VerifyCliAsync(liar.Url, tx, fixture.GroupFile);
        Assert.True(honest.Exit == 0, honest.Output);
        Assert.Equal("finalized", honest.Verdict!.RootElement.GetProperty("proven").GetString());

        static string Flip(string hex) => LyingNode.Flip(hex);
        var head = bundle!.Head!;
        var post = bundle.L1!;
        var lies = new (string Lie, Func<ProofBundleResponse, ProofBundleResponse> Rewrite, string Check)[]
        {
            ("a wrong tx proof", b => b with { Tx = b.Tx with { Proof = b.Tx.Proof.Count == 0 ? [Flip(b.Header.TxRoot)] : [Flip(b.Tx.Proof[0]), .. b.Tx.Proof.Skip(1)] } }, "tx-proof"),
            ("a forged header (its commitment kept)", b => b with { Header = b.Header with { TimestampMs = b.Header.TimestampMs + 1 } }, "header-commitment"),
            ("a forged header with its own commitment", Forged, "history-proof"),
            ("a wrong history proof", b => b with { HistoryProof = b.HistoryProof.Count == 0 ? [Flip(head.Commitment)] : [Flip(b.HistoryProof[0]), .. b.HistoryProof.Skip(1)] }, "history-proof"),
            ("a wrong signature", b => b with { Head = head with { Signature = head.Signature with { Z = Flip(head.Signature.Z) } } }, "head-signature"),
            ("a forged head (its commitment kept)", b => b with { Head = head with { Header = head.Header with { Term = "99" } } }, "head-commitment"),
            ("a claimed L1 post that the contract does not show", b => b with { L1 = post with { BlockNumber = "1" } }, "l1-event"),
            ("a wrong L1 history proof", b => b with { L1 = post with { HistoryProof = post.HistoryProof.Count == 0 ? [Flip(post.Head.Commitment)] : [Flip(post.HistoryProof[0]), .. post.HistoryProof.Skip(1)] } }, "l1-history-proof"),
        };
        foreach (var (lie, rewrite, check) in lies)
        {
            liar.Json = (path, json) => path.StartsWith("/v1/proofs/", StringComparison.Ordinal)
                ? JsonSerializer.Serialize(rewrite(JsonSerializer.Deserialize(json, ApiJsonContext.Default.ProofBundleResponse)!), ApiJsonContext.Default.ProofBundleResponse)
                : json;
            var (exit, verdict, output) = await VerifyCliAsync(liar.Url, tx, fixture.GroupFile);
            Assert.True(exit == 1 && verdict?.RootElement.GetProperty("failed").GetString() == check, $"{lie}: expected exit 1 with {check} failed\n{output}");
        }

        // A head chain signed by another key (a fork, or a stale cluster's key) does not verify under the pinned key.
        liar.Json = null;
        var otherKey = TrustedDealer.Generate(2, 3).Group;
        var foreign = await VerifyCliAsync(liar.Url, tx, "0x" + Convert.ToHexStringLower(otherKey.PublicKey.GetEncoded(true)));
        Assert.True(foreign.Exit == 1 && foreign.Verdict?.RootElement.GetProperty("failed").GetString() == "head-signature", foreign.Output);
        Assert.Equal("ordered", foreign.Verdict!.RootElement.GetProperty("proven").GetString());
    }

    [Fact]
    public async Task Follow_CatchesEachLieOfTheHeadStream_ByName_AndGoesOnFromAnHonestNode()
    {
        var test = fixture.Test;
        using var load = new CancellationTokenSource();
        var loader = fixture.LoadAsync(load.Token);
        try
        {
            var lies = new (string Lie, Func<int, string, IReadOnlyList<string>> Rewrite, string Check)[]
            {
                ("a link proof that does not hold", (i, data) => i == 2 ? [Rewrite(data, head => head["linkProof"] = new JsonArray([.. head["linkProof"]!.AsArray().Select(p => (JsonNode)LyingNode.Flip(p!.GetValue<string>())), "0x" + new string('0', 64)]))] : [data], "link-proof"),
                ("a head served twice (a replay)", (i, data) => i == 2 ? [data, data] : [data], "head-order"),
                ("a forged header (its commitment kept)", (i, data) => i == 1 ? [Rewrite(data, head => head["header"]!["term"] = "99")] : [data], "head-commitment"),
                ("a stream that withholds new heads", (i, data) => i >= 2 ? [] : [data], "head-stale"),
            };
            foreach (var (lie, rewrite, check) in lies)
            {
                await using var liar = new LyingNode(new Uri(test.Cluster.Node(1).Spec.Api)) { Event = rewrite };
                var follower = new HeadFollower([liar.Url, new Uri(test.Cluster.Node(2).Spec.Api), new Uri(test.Cluster.Node(3).Spec.Api)], fixture.Group.PublicKey, 1, staleAfter: TimeSpan.FromSeconds(1));
                var problems = new System.Collections.Concurrent.ConcurrentQueue<FollowProblem>();
                follower.Problem += problems.Enqueue;
                var heads = new List<VerifiedHead>();
                using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(45));
                try
                {
                    await foreach (var head in follower.FollowAsync(1, token: deadline.Token))
                    {
                        heads.Add(head);
                        if (problems.Any(p => p.Node == liar.Url && p.Check == check) && heads.Count(h => h.Node != liar.Url) >= 3)
                            break;
                    }
                }
                catch (OperationCanceledException)
                {
                    Assert.Fail($"{lie}: within 45 s, problems {string.Join("; ", problems)}; heads {string.Join(", ", heads.Select(h => $"{h.Height}@{h.Node.Port}"))}");
                }

                Assert.True(problems.Any(p => p.Node == liar.Url && p.Check == check), $"{lie}: expected {check}; problems {string.Join("; ", problems)}");
                Assert.Equal(heads.Select(h => h.Height).Order(), heads.Select(h => h.Height));
                Assert.Equal(heads.Count, heads.Select(h => h.Height).Distinct().Count());
                // The first signed head (batches signed before the signers had published nonces are covered by a later one).
                var first = ulong.Parse((await test.Cluster.Node(2).Client.GetHeadsAsync(1, 1)).Heads[0].Header.Height, System.Globalization.CultureInfo.InvariantCulture);
                Assert.True(heads[0].Height == first, $"{lie}: the first head followed is {heads[0].Height}, the first signed head {first}; problems {string.Join("; ", problems)}");
            }
        }
        finally
        {
            await load.CancelAsync();
            await loader;
        }
    }

    [Fact]
    public async Task Traces_EachBatchHasItsSpans_FromCutThroughReplicateApplySigningAndPosting_AndSubmitsLinkToThem()
    {
        var test = fixture.Test;
        await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 20, seed: 77);
        var signed = await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));
        await L1PosterTests.WaitPostedAsync(test, signed, finalized: false, TimeSpan.FromSeconds(30));

        // Every node's span file (the leader wrote the batch spans; a follower that forwarded a submit wrote its own).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        List<JsonElement> spans;
        while (true)
        {
            spans = [];
            foreach (var node in test.Cluster.Nodes)
            {
                var path = Path.Combine(node.Spec.DataDir, LightClusterFixture.TraceFile);
                if (!File.Exists(path))
                    continue;
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                using var reader = new StreamReader(stream);
                while (await reader.ReadLineAsync() is { } line)
                {
                    if (line.Length > 0 && line[^1] == '}')
                        spans.Add(JsonDocument.Parse(line).RootElement.Clone());
                }
            }

            if (spans.Any(s => Name(s) == "head.post") || DateTime.UtcNow > deadline)
                break;
            await Task.Delay(200);
        }

        static string Name(JsonElement span) => span.GetProperty("name").GetString()!;
        var byId = spans.ToDictionary(s => s.GetProperty("spanId").GetString()!);
        JsonElement? Parent(JsonElement span) => span.GetProperty("parentSpanId").GetString() is { } id && byId.TryGetValue(id, out var parent) ? parent : null;
        var names = spans.GroupBy(Name).ToDictionary(g => g.Key, g => g.Count());
        foreach (var name in new[] { "batch", "batch.replicate", "batch.apply", "head.sign", "head.post", "submit" })
            Assert.True(names.ContainsKey(name), $"no {name} span among {string.Join(", ", names.Select(n => $"{n.Key} x{n.Value}"))}");

        // A batch is a root span with its tx count; replicate and apply nest under a batch; a head's signing under the
        // batch it signs; a post under the signing of the head it posts.
        foreach (var batch in spans.Where(s => Name(s) == "batch"))
        {
            Assert.Null(batch.GetProperty("parentSpanId").GetString());
            Assert.True(int.Parse(batch.GetProperty("tags").GetProperty("sequencer.tx_count").GetString()!, System.Globalization.CultureInfo.InvariantCulture) > 0);
        }

        foreach (var (child, parent) in new[] { ("batch.replicate", "batch"), ("batch.apply", "batch"), ("head.sign", "batch"), ("head.post", "head.sign") })
        {
            var nested = spans.Where(s => Name(s) == child).Count(s => Parent(s) is { } p && Name(p) == parent
                && p.GetProperty("traceId").GetString() == s.GetProperty("traceId").GetString());
            Assert.True(nested > 0, $"no {child} span nests under a {parent} span");
        }

        var applied = spans.Where(s => Name(s) == "batch.apply" && Parent(s) is not null).ToList();
        Assert.Contains(applied, s => s.GetProperty("tags").TryGetProperty("sequencer.height", out _));

        // A submit on the leader links to the batch that ordered its txs.
        Assert.Contains(spans.Where(s => Name(s) == "submit"), s => s.GetProperty("links").EnumerateArray()
            .Any(l => byId.TryGetValue(l.GetProperty("spanId").GetString()!, out var target) && Name(target) == "batch"));
    }

    [Fact]
    public async Task StatusPage_InAHeadlessBrowser_ShowsMembersHeightsRatesSignersAndATxsLadder()
    {
        // Debian's chromium and chromium-driver (make test installs them as root); skipped with the reason otherwise.
        const string browser = "/usr/bin/chromium", driverDirectory = "/usr/bin";
        if (!File.Exists(browser) || !File.Exists(Path.Combine(driverDirectory, "chromedriver")))
            Assert.Skip($"no headless browser: {browser} and {driverDirectory}/chromedriver are missing (apt-get install chromium chromium-driver; make test does it as root)");

        var test = fixture.Test;
        using var load = new CancellationTokenSource();
        var loader = fixture.LoadAsync(load.Token);
        var options = new OpenQA.Selenium.Chrome.ChromeOptions { BinaryLocation = browser };
        options.AddArguments("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600");
        using var service = OpenQA.Selenium.Chrome.ChromeDriverService.CreateDefaultService(driverDirectory, "chromedriver");
        service.HideCommandPromptWindow = true;
        service.SuppressInitialDiagnosticInformation = true;
        using var driver = new OpenQA.Selenium.Chrome.ChromeDriver(service, options, TimeSpan.FromSeconds(60));
        try
        {
            driver.Navigate().GoToUrl(new Uri(new Uri(test.Cluster.Node(1).Spec.Api), "/ui"));
            var wait = new OpenQA.Selenium.Support.UI.WebDriverWait(driver, TimeSpan.FromSeconds(30));
            string Text(string id) => driver.FindElement(OpenQA.Selenium.By.Id(id)).Text;
            static bool Positive(string value) => ulong.TryParse(value, out var number) && number > 0;

            // Members and roles: three, one leader.
            wait.Until(d => d.FindElements(OpenQA.Selenium.By.CssSelector("#members tbody tr")).Count == 3
                && d.FindElements(OpenQA.Selenium.By.CssSelector("#members td.leader")).Count == 1);
            // Heights at each finality level, from the node and its L1 view.
            wait.Until(_ => Positive(Text("height-ordered")) && Positive(Text("height-signed")) && Positive(Text("height-posted")) && Positive(Text("height-finalized")));
            // Every signer's record.
            wait.Until(d => d.FindElements(OpenQA.Selenium.By.CssSelector("#signers tbody tr")).Count == 3);
            // The live chart: tx/s samples from /metrics and heads from the head stream, under load.
            var chart = driver.FindElement(OpenQA.Selenium.By.Id("chart"));
            wait.Until(_ => int.Parse(chart.GetDomAttribute("data-points") ?? "0", System.Globalization.CultureInfo.InvariantCulture) >= 3
                && int.Parse(chart.GetDomAttribute("data-heads") ?? "0", System.Globalization.CultureInfo.InvariantCulture) >= 1);
            Assert.True(ulong.TryParse(Text("last-head"), out _), Text("last-head"));

            // A tx lookup shows its ladder up to finalized, and its proofs.
            var input = driver.FindElement(OpenQA.Selenium.By.Id("tx-hash"));
            input.SendKeys(fixture.Txs[1]);
            driver.FindElement(OpenQA.Selenium.By.Id("tx-go")).Click();
            wait.Until(d => d.FindElements(OpenQA.Selenium.By.CssSelector("#ladder li[data-level='finalized'][data-reached='true']")).Count == 1);
            var result = Text("tx-result");
            Assert.Contains("covering signed head", result, StringComparison.Ordinal);
            Assert.Contains("history proof", result, StringComparison.Ordinal);
            Assert.Contains("L1 post", result, StringComparison.Ordinal);

            // A bad hash is refused on the page, not sent.
            input.Clear();
            input.SendKeys("0x1234");
            driver.FindElement(OpenQA.Selenium.By.Id("tx-go")).Click();
            wait.Until(_ => Text("tx-result").Contains("64 hex digits", StringComparison.Ordinal));
        }
        finally
        {
            driver.Quit();
            await load.CancelAsync();
            await loader;
        }
    }

    // Parses a head event's JSON, changes it, and writes it back.
    private static string Rewrite(string data, Action<JsonNode> change)
    {
        var node = JsonNode.Parse(data)!;
        change(node);
        return node.ToJsonString();
    }

    // Runs `light verify-tx` (the CLI, as a user would) against `node` with the fixture's L1; the exit code, the --json
    // verdict (null when none was printed) and everything it printed.
    private async Task<(int Exit, JsonDocument? Verdict, string Output)> VerifyCliAsync(Uri node, string tx, string groupKey)
    {
        var info = NodeBinary.Locate().CreateStartInfo(["light", "verify-tx", tx, "--node", node.ToString(), "--group-key", groupKey,
            "--l1-rpc", fixture.Anvil.Rpc.ToString(), "--l1-contract", fixture.Inbox.ToString(), "--l1-finality-depth", "2", "--json"]);
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        info.UseShellExecute = false;
        using var process = System.Diagnostics.Process.Start(info) ?? throw new InvalidOperationException("light verify-tx did not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("light verify-tx did not end within 60 s");
        }

        var output = await stdout;
        var all = output + await stderr;
        var line = output.Split('\n').LastOrDefault(l => l.StartsWith('{'));
        return (process.ExitCode, line is null ? null : JsonDocument.Parse(line), all);
    }

    [Fact]
    public async Task OpenApi_DocumentsEveryMappedRoute_AndTheNodesAnswersFitIt()
    {
        var node = new Uri(fixture.Test.Cluster.Node(1).Spec.Api);
        using var http = new HttpClient { BaseAddress = node, Timeout = TimeSpan.FromSeconds(10) };
        using var document = JsonDocument.Parse(await http.GetStringAsync("/openapi.json"));
        var root = document.RootElement;
        Assert.StartsWith("3.1", root.GetProperty("openapi").GetString(), StringComparison.Ordinal);

        // Every route the node maps (but the members' /internal routes) is documented, and nothing else is.
        using var routesRequest = new HttpRequestMessage(HttpMethod.Get, "/admin/routes");
        routesRequest.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", LightClusterFixture.AdminToken);
        using var routesResponse = await http.SendAsync(routesRequest);
        Assert.Equal(System.Net.HttpStatusCode.OK, routesResponse.StatusCode);
        using var routes = JsonDocument.Parse(await routesResponse.Content.ReadAsStringAsync());
        var mapped = routes.RootElement.GetProperty("routes").EnumerateArray()
            .Select(r => $"{r.GetProperty("method").GetString()} {r.GetProperty("path").GetString()}")
            .Where(r => !r.Contains(" /internal/", StringComparison.Ordinal)).ToHashSet();
        var documented = root.GetProperty("paths").EnumerateObject()
            .SelectMany(p => p.Value.EnumerateObject().Select(o => $"{o.Name.ToUpperInvariant()} {p.Name}")).ToHashSet();
        Assert.True(mapped.Count >= 20, string.Join(", ", mapped));
        Assert.Empty(mapped.Except(documented));
        Assert.Empty(documented.Except(mapped));

        // Every $ref resolves, every operation has an id and responses.
        var problems = new List<string>();
        OpenApiSchema.CheckReferences(root, root, "#", problems);
        foreach (var path in root.GetProperty("paths").EnumerateObject())
        {
            foreach (var operation in path.Value.EnumerateObject())
            {
                if (!operation.Value.TryGetProperty("operationId", out _) || !operation.Value.TryGetProperty("responses", out _))
                    problems.Add($"{operation.Name} {path.Name}: no operationId or responses");
            }
        }

        Assert.True(problems.Count == 0, string.Join("\n", problems));

        // What the node answers fits the schema documented for that route and status.
        var tx = fixture.Txs[0];
        var requests = new (string Method, string Template, string Url, string? Body)[]
        {
            ("POST", "/v1/txs", "/v1/txs", "{\"txs\":[\"0x0a0b0c\"]}"),
            ("POST", "/v1/txs", "/v1/txs", "{\"tx\":\"0xzz\"}"),
            ("GET", "/v1/txs/{hash}", $"/v1/txs/{tx}", null),
            ("GET", "/v1/txs/{hash}", "/v1/txs/0x" + new string('1', 64), null),
            ("GET", "/v1/txs/{hash}", "/v1/txs/nothex", null),
            ("GET", "/v1/batches/latest", "/v1/batches/latest", null),
            ("GET", "/v1/batches/{height}", "/v1/batches/1", null),
            ("GET", "/v1/batches/{height}", "/v1/batches/99999999", null),
            ("GET", "/v1/commitments/{height}", "/v1/commitments/2", null),
            ("GET", "/v1/commitments/{height}", "/v1/commitments/99999999", null),
            ("GET", "/v1/heads", "/v1/heads?from=1&limit=5", null),
            ("GET", "/v1/heads", "/v1/heads?from=1&limit=0", null),
            ("GET", "/v1/keys", "/v1/keys", null),
            ("GET", "/v1/proofs/{hash}", $"/v1/proofs/{tx}", null),
            ("GET", "/v1/proofs/{hash}", "/v1/proofs/0x" + new string('2', 64), null),
            ("GET", "/v1/cluster", "/v1/cluster", null),
            ("GET", "/v1/l1", "/v1/l1", null),
            ("GET", "/v1/signing", "/v1/signing", null),
            ("GET", "/v1/signing/nonce-uses", "/v1/signing/nonce-uses?limit=3", null),
            ("GET", "/health/live", "/health/live", null),
            ("GET", "/health/ready", "/health/ready", null),
            ("GET", "/admin/clock-skew", "/admin/clock-skew", null),
        };
        foreach (var (method, template, url, body) in requests)
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), url);
            if (body is not null)
                request.Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
            using var response = await http.SendAsync(request);
            var status = ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
            var operation = root.GetProperty("paths").GetProperty(template).GetProperty(method.ToLowerInvariant());
            if (!operation.GetProperty("responses").TryGetProperty(status, out var documentedResponse))
            {
                problems.Add($"{method} {url}: status {status} is not documented");
                continue;
            }

            var text = await response.Content.ReadAsStringAsync();
            if (documentedResponse.TryGetProperty("content", out var content) && content.TryGetProperty("application/json", out var json))
            {
                using var answer = JsonDocument.Parse(text);
                OpenApiSchema.Validate(answer.RootElement, json.GetProperty("schema"), root, $"{method} {url} ({status})", problems);
            }
        }

        // A head event of the stream fits StreamedHead.
        using (var stream = await http.GetStreamAsync("/v1/stream/heads?from=1"))
        using (var reader = new StreamReader(stream))
        {
            string? line;
            while ((line = await reader.ReadLineAsync()) is not null && !line.StartsWith("data:", StringComparison.Ordinal))
            {
            }

            Assert.NotNull(line);
            using var head = JsonDocument.Parse(line[5..]);
            OpenApiSchema.Validate(head.RootElement, root.GetProperty("components").GetProperty("schemas").GetProperty("StreamedHead"), root, "head event", problems);
        }

        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public async Task Follow_VerifiesEveryHead_ThroughAKillOfTheLeaderItReads_AndSkipsALyingNode()
    {
        await using var test = await TestCluster.StartAsync("follow", signingThreshold: 2);
        var group = KeyFiles.ReadGroup(Path.Combine(test.KeysDirectory!, KeyFiles.GroupFileName)).ToGroupKey();
        await SigningTests.SubmitAsync(test.Cluster.Node(2).Client, 5, seed: 61);
        await SigningTests.WaitAllSignedAsync(test, TimeSpan.FromSeconds(30));

        // A lying node: a stream whose first head carries a wrong signature (the real head 1 otherwise).
        var real = (await test.Cluster.Node(2).Client.GetHeadsAsync(1, 1)).Heads[0];
        var lie = new StreamedHeadDto(real.Header, real.Commitment, real.Signature with { Z = real.Signature.Z[..^1] + (real.Signature.Z[^1] == '0' ? '1' : '0') },
            real.Signers, real.KeyEpoch, "0", []);
        using var liar = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        liar.Start();
        var liarTask = Task.Run(async () =>
        {
            using var socket = await liar.AcceptSocketAsync();
            await using var stream = new System.Net.Sockets.NetworkStream(socket);
            var buffer = new byte[4096];
            await stream.ReadAtLeastAsync(buffer, 1, throwOnEndOfStream: false);
            var json = System.Text.Json.JsonSerializer.Serialize(lie, ApiJsonContext.Default.StreamedHeadDto);
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nevent: head\ndata: {json}\n\n"));
            await stream.FlushAsync();
            await Task.Delay(2000);
        });
        var liarUri = new Uri($"http://127.0.0.1:{((System.Net.IPEndPoint)liar.LocalEndpoint).Port}");

        // The follower reads the leader first (after the liar), and the leader is what gets killed.
        var leader = await test.Cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var order = new[] { leader }.Concat(Enumerable.Range(1, 3).Where(i => i != leader)).Select(i => new Uri(test.Cluster.Node(i).Spec.Api));
        var follower = new HeadFollower([liarUri, .. order], group.PublicKey, 1);
        var problems = new System.Collections.Concurrent.ConcurrentQueue<FollowProblem>();
        follower.Problem += problems.Enqueue;

        // Steady load while following (through a node that is not the leader); the leader being read is killed once it
        // has served a few heads.
        var submitter = test.Cluster.Node(Enumerable.Range(1, 3).First(i => i != leader)).Client;
        using var load = new CancellationTokenSource();
        var loader = Task.Run(async () =>
        {
            var seed = 100;
            while (!load.IsCancellationRequested)
            {
                try
                {
                    await SigningTests.SubmitAsync(submitter, 3, seed: seed++);
                }
                catch (Exception e) when (e is HttpRequestException or SequencerApiException or TaskCanceledException)
                {
                    // A leader change.
                }

                await Task.Delay(20);
            }
        });

        var heads = new List<VerifiedHead>();
        int? killed = null;
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await foreach (var head in follower.FollowAsync(1, token: deadline.Token))
        {
            heads.Add(head);
            if (killed is null && heads.Count >= 5)
            {
                killed = test.Cluster.Nodes.First(n => new Uri(n.Spec.Api).Port == head.Node.Port).Spec.Id;
                Assert.Equal(leader, killed);
                await test.Cluster.Node(killed.Value).KillAsync();
            }

            if (killed is not null && heads.Count(h => new Uri(test.Cluster.Node(killed.Value).Spec.Api).Port != h.Node.Port) >= 10)
                break;
        }

        await load.CancelAsync();
        await loader;
        await liarTask;
        Assert.NotNull(killed);
        Assert.Contains(problems, p => p.Node == liarUri && p.Check == "head-signature");
        Assert.DoesNotContain(heads, h => h.Node == liarUri);
        Assert.Equal(heads.Select(h => h.Height).Order(), heads.Select(h => h.Height));
        Assert.Equal(heads.Count, heads.Select(h => h.Height).Distinct().Count());
        Assert.Equal(1UL, heads[0].Height);
    }

    // A liar that rewrites the header (a different tx root) and recomputes the commitment to match: the tx proof and
    // the commitment then hold, but the header is in no signed head's history.
    private static ProofBundleResponse Forged(ProofBundleResponse bundle)
    {
        var header = bundle.Header with { TimestampMs = bundle.Header.TimestampMs + 1 };
        return bundle with { Header = header, Commitment = header.ToHeader().Commitment.ToString() };
    }
}
