using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Sequencer.Client;

/// <summary>
/// A client of one node's HTTP API. Thread-safe; share one per node. Every call has a timeout and never retries
/// by itself: the caller decides, using <see cref="SequencerApiException.IsRetryable"/>.
/// </summary>
public sealed class SequencerClient : IDisposable
{
    private readonly HttpClient http;
    private readonly bool ownsClient;

    /// <summary>Creates a client of the node at <paramref name="baseUrl"/> with its own connection pool.</summary>
    public SequencerClient(Uri baseUrl, TimeSpan? timeout = null, int maxConnections = 256)
    {
        ArgumentNullException.ThrowIfNull(baseUrl);
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = maxConnections,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectTimeout = TimeSpan.FromSeconds(2),
            UseProxy = false,
        };
        http = new HttpClient(handler) { BaseAddress = baseUrl, Timeout = timeout ?? TimeSpan.FromSeconds(30) };
        ownsClient = true;
        BaseUrl = baseUrl;
    }

    /// <summary>Creates a client over a caller-owned <see cref="HttpClient"/> whose base address is the node.</summary>
    public SequencerClient(HttpClient http)
    {
        ArgumentNullException.ThrowIfNull(http);
        this.http = http;
        BaseUrl = http.BaseAddress ?? throw new ArgumentException("the HttpClient needs a BaseAddress", nameof(http));
    }

    /// <summary>The node's API address.</summary>
    public Uri BaseUrl { get; }

    /// <summary>Submits one tx and waits until it is ordered.</summary>
    public async Task<SubmitResult> SubmitAsync(ReadOnlyMemory<byte> tx, CancellationToken token = default)
        => (await SubmitAsync([tx], token).ConfigureAwait(false))[0];

    /// <summary>Submits txs in one request and waits until all are ordered; results are in request order.</summary>
    public async Task<IReadOnlyList<SubmitResult>> SubmitAsync(IReadOnlyList<ReadOnlyMemory<byte>> txs, CancellationToken token = default)
    {
        ArgumentNullException.ThrowIfNull(txs);
        var body = new StringBuilder(txs.Sum(t => 2 * t.Length + 5) + 16);
        body.Append(txs.Count == 1 ? "{\"tx\":" : "{\"txs\":[");
        for (var i = 0; i < txs.Count; i++)
        {
            if (i > 0)
                body.Append(',');
            body.Append("\"0x").Append(Convert.ToHexStringLower(txs[i].Span)).Append('"');
        }

        body.Append(txs.Count == 1 ? "}" : "]}");
        using var content = new StringContent(body.ToString(), Encoding.UTF8, "application/json");
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        var response = await SendAsync(HttpMethod.Post, "v1/txs", content, token).ConfigureAwait(false);
        var parsed = (SubmitResponse?)JsonSerializer.Deserialize(response, ApiJsonContext.Default.SubmitResponse)
            ?? throw new SequencerApiException(200, "bad_response", "empty submit response");
        if (parsed.Results.Count != txs.Count)
            throw new SequencerApiException(200, "bad_response", $"{parsed.Results.Count} results for {txs.Count} txs");
        return parsed.Results;
    }

    /// <summary>The status of a tx, or null when the node does not know it (404).</summary>
    public async Task<TxStatusResponse?> GetTxAsync(string hash, CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, $"v1/txs/{hash}", null, token, allowNotFound: true).ConfigureAwait(false);
        return body is null ? null : JsonSerializer.Deserialize(body, ApiJsonContext.Default.TxStatusResponse);
    }

    /// <summary>The batch at <paramref name="height"/>, or null when it is not applied on this node.</summary>
    public async Task<BatchResponse?> GetBatchAsync(ulong height, CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, $"v1/batches/{height}", null, token, allowNotFound: true).ConfigureAwait(false);
        return body is null ? null : JsonSerializer.Deserialize(body, ApiJsonContext.Default.BatchResponse);
    }

    /// <summary>The latest batch, or null before the first one.</summary>
    public async Task<BatchResponse?> GetLatestBatchAsync(CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, "v1/batches/latest", null, token, allowNotFound: true).ConfigureAwait(false);
        return body is null ? null : JsonSerializer.Deserialize(body, ApiJsonContext.Default.BatchResponse);
    }

    /// <summary>The commitment at <paramref name="height"/> with its covering signed head and history proof, or null while no head covers it (404).</summary>
    public async Task<CommitmentResponse?> GetCommitmentAsync(ulong height, CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, $"v1/commitments/{height}", null, token, allowNotFound: true).ConfigureAwait(false);
        return body is null ? null : JsonSerializer.Deserialize(body, ApiJsonContext.Default.CommitmentResponse);
    }

    /// <summary>The proof bundle of a tx (<c>GET /v1/proofs/{hash}</c>), or null when the node does not know it.</summary>
    public async Task<ProofBundleResponse?> GetProofAsync(string hash, CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, $"v1/proofs/{Uri.EscapeDataString(hash)}", null, token, allowNotFound: true).ConfigureAwait(false);
        return body is null ? null : JsonSerializer.Deserialize(body, ApiJsonContext.Default.ProofBundleResponse);
    }

    /// <summary>Signed heads from <paramref name="from"/> upwards, at most <paramref name="limit"/>, and the height to continue from.</summary>
    public async Task<HeadsResponse> GetHeadsAsync(ulong from, int limit = 1000, CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, $"v1/heads?from={from}&limit={limit}", null, token).ConfigureAwait(false);
        return JsonSerializer.Deserialize(body!, ApiJsonContext.Default.HeadsResponse)
            ?? throw new SequencerApiException(200, "bad_response", "empty heads response");
    }

    /// <summary>Every signed head the node serves, read in pages.</summary>
    public async Task<List<HeadDto>> GetAllHeadsAsync(CancellationToken token = default)
    {
        var result = new List<HeadDto>();
        for (ulong from = 1; ;)
        {
            var page = await GetHeadsAsync(from, 1000, token).ConfigureAwait(false);
            result.AddRange(page.Heads);
            if (page.Heads.Count == 0)
                return result;
            from = ulong.Parse(page.Next, System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    /// <summary>This signer's recorded nonce uses (empty for a node that does not sign).</summary>
    public async Task<List<NonceUseDto>> GetAllNonceUsesAsync(CancellationToken token = default)
    {
        var result = new List<NonceUseDto>();
        while (true)
        {
            var body = await SendAsync(HttpMethod.Get, $"v1/signing/nonce-uses?skip={result.Count}&limit=10000", null, token, allowNotFound: true).ConfigureAwait(false);
            if (body is null)
                return result;
            var page = JsonSerializer.Deserialize(body, ApiJsonContext.Default.NonceUsesResponse);
            if (page is null || page.Uses.Count == 0)
                return result;
            result.AddRange(page.Uses);
        }
    }

    /// <summary>The key epochs the node knows.</summary>
    public async Task<List<KeyEpochDto>> GetKeysAsync(CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, "v1/keys", null, token).ConfigureAwait(false);
        return JsonSerializer.Deserialize(body!, ApiJsonContext.Default.ListKeyEpochDto) ?? [];
    }

    /// <summary>The node's view of the cluster.</summary>
    /// <summary><c>GET /v1/accounts/{address}</c> (ethereum mode): the sender's next nonce and last ordered tx.</summary>
    public async Task<AccountResponse> GetAccountAsync(string address, CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, $"v1/accounts/{address}", null, token).ConfigureAwait(false);
        return JsonSerializer.Deserialize(body!, ApiJsonContext.Default.AccountResponse)
            ?? throw new SequencerApiException(200, "bad_response", "empty account response");
    }

    public async Task<ClusterResponse> GetClusterAsync(CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, "v1/cluster", null, token).ConfigureAwait(false);
        return JsonSerializer.Deserialize(body!, ApiJsonContext.Default.ClusterResponse)
            ?? throw new SequencerApiException(200, "bad_response", "empty cluster response");
    }

    /// <summary>
    /// The node's signing view, <c>GET /v1/signing</c>, as the JSON it served (key epoch, sessions in flight and, on the
    /// leader, each signer's record). Raw, because it is read by people and diagnostics, not by code that depends on it.
    /// </summary>
    public async Task<JsonDocument> GetSigningViewAsync(CancellationToken token = default)
    {
        var body = await SendAsync(HttpMethod.Get, "v1/signing", null, token).ConfigureAwait(false);
        return JsonDocument.Parse(body!);
    }

    /// <summary>Every applied batch from height 1 up, read page by page until the node has no more.</summary>
    public async Task<List<BatchResponse>> GetAllBatchesAsync(CancellationToken token = default)
    {
        var result = new List<BatchResponse>();
        for (ulong height = 1; ; height++)
        {
            var batch = await GetBatchAsync(height, token).ConfigureAwait(false);
            if (batch is null)
                return result;
            result.Add(batch);
        }
    }

    private async Task<byte[]?> SendAsync(HttpMethod method, string path, HttpContent? content, CancellationToken token, bool allowNotFound = false)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request, token).ConfigureAwait(false);
        }
        catch (HttpRequestException e) when (e.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused })
        {
            // Nothing listens: the request never reached a node, so it certainly had no effect.
            throw new SequencerApiException(503, "connection_refused", $"node {BaseUrl} refused the connection");
        }
        catch (Exception e) when (e is HttpRequestException or System.Net.Sockets.SocketException or IOException)
        {
            // A socket error can also escape the handler bare (SocketsHttpHandler reading a just-reset connection's
            // remote end point throws SocketException 107): the outcome is unknown either way.
            throw new SequencerApiException($"node {BaseUrl} unreachable: {e.Message}", e);
        }
        catch (TaskCanceledException e) when (!token.IsCancellationRequested)
        {
            throw new SequencerApiException($"node {BaseUrl} did not answer in time", e);
        }

        using (response)
        {
            byte[] body;
            try
            {
                body = await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or System.Net.Sockets.SocketException or IOException)
            {
                // The connection broke in the middle of the answer: the request reached the node, its outcome is unknown.
                throw new SequencerApiException($"node {BaseUrl} broke off its answer: {e.Message}", e);
            }
            catch (TaskCanceledException e) when (!token.IsCancellationRequested)
            {
                throw new SequencerApiException($"node {BaseUrl} did not finish its answer in time", e);
            }

            if (response.IsSuccessStatusCode)
                return body;
            if (allowNotFound && response.StatusCode == HttpStatusCode.NotFound)
                return null;
            ErrorResponse? error = null;
            try
            {
                error = JsonSerializer.Deserialize(body, ApiJsonContext.Default.ErrorResponse);
            }
            catch (JsonException)
            {
            }

            var retryAfter = response.Headers.RetryAfter?.Delta;
            throw new SequencerApiException((int)response.StatusCode, error?.Error ?? "http_error", error?.Message ?? Encoding.UTF8.GetString(body), retryAfter)
            {
                ConflictsWith = error?.ConflictsWith,
            };
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (ownsClient)
            http.Dispose();
    }
}
