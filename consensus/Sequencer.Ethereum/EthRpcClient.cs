using System.Globalization;
using System.Net.Http.Headers;
using System.Numerics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Sequencer.Ethereum;

/// <summary>An error answer of a JSON-RPC endpoint (a revert carries its data).</summary>
public sealed class EthRpcException : Exception
{
    /// <summary>Creates the exception.</summary>
    public EthRpcException(string method, int code, string message, byte[]? data)
        : base($"{method}: {message} (code {code.ToString(CultureInfo.InvariantCulture)})")
    {
        Method = method;
        Code = code;
        Data = data;
    }

    /// <summary>Creates the exception.</summary>
    public EthRpcException()
        : this("?", 0, "error", null)
    {
    }

    /// <summary>Creates the exception.</summary>
    public EthRpcException(string message)
        : this("?", 0, message, null)
    {
    }

    /// <summary>Creates the exception.</summary>
    public EthRpcException(string message, Exception inner)
        : base(message, inner)
    {
        Method = "?";
    }

    /// <summary>The method called.</summary>
    public string Method { get; } = "?";

    /// <summary>The JSON-RPC error code (3: execution reverted).</summary>
    public int Code { get; }

    /// <summary>The error's data: for a revert, the ABI-encoded reason or custom error.</summary>
    public new byte[]? Data { get; }
}

/// <summary>A block's header fields this client reads.</summary>
/// <param name="Number">The block number.</param>
/// <param name="Hash">The block hash.</param>
/// <param name="ParentHash">The parent's hash.</param>
/// <param name="Timestamp">Seconds since the epoch.</param>
/// <param name="BaseFeePerGas">The EIP-1559 base fee, or null before London.</param>
public sealed record EthBlock(ulong Number, byte[] Hash, byte[] ParentHash, ulong Timestamp, BigInteger? BaseFeePerGas);

/// <summary>A log (event) entry.</summary>
/// <param name="Address">The contract that emitted it.</param>
/// <param name="Topics">The topics (the first is the event's signature hash).</param>
/// <param name="Data">The non-indexed data.</param>
/// <param name="BlockNumber">The block.</param>
/// <param name="BlockHash">The block's hash.</param>
/// <param name="TransactionHash">The transaction.</param>
/// <param name="LogIndex">The index in the block.</param>
/// <param name="Removed">True when a reorg removed it.</param>
public sealed record EthLog(Address Address, IReadOnlyList<byte[]> Topics, byte[] Data, ulong BlockNumber, byte[] BlockHash, byte[] TransactionHash, ulong LogIndex, bool Removed);

/// <summary>A transaction receipt.</summary>
/// <param name="TransactionHash">The transaction.</param>
/// <param name="Success">The status: true unless it reverted.</param>
/// <param name="BlockNumber">The block it is in.</param>
/// <param name="BlockHash">That block's hash.</param>
/// <param name="GasUsed">The gas it used.</param>
/// <param name="EffectiveGasPrice">The price per gas it paid.</param>
/// <param name="ContractAddress">The contract it created, or null.</param>
/// <param name="Logs">The logs it emitted.</param>
public sealed record EthReceipt(byte[] TransactionHash, bool Success, ulong BlockNumber, byte[] BlockHash, ulong GasUsed, BigInteger EffectiveGasPrice, Address? ContractAddress, IReadOnlyList<EthLog> Logs);

/// <summary>The fields of eth_call and eth_estimateGas.</summary>
/// <param name="To">The contract (null: a creation).</param>
/// <param name="Data">The call data.</param>
/// <param name="From">The caller, or null.</param>
/// <param name="Value">The wei sent.</param>
public sealed record EthCall(Address? To, byte[] Data, Address? From = null, BigInteger? Value = null);

/// <summary>
/// A JSON-RPC client for an Ethereum node (anvil, geth, a provider): the calls a poster and a light client need.
/// Every answer is bounded in size, every call has the caller's cancellation, and errors come back as
/// <see cref="EthRpcException"/> with the node's code, message and revert data.
/// </summary>
public sealed class EthRpcClient : IDisposable
{
    /// <summary>The most bytes one answer may have.</summary>
    public const int MaxResponseBytes = 32 * 1024 * 1024;

    private readonly HttpClient http;
    private readonly bool ownsHttp;
    private long nextId;

    /// <summary>A client for <paramref name="endpoint"/>; <paramref name="http"/> is used as given (null: a client of its own, 10 s timeout).</summary>
    public EthRpcClient(Uri endpoint, HttpClient? http = null)
    {
        Endpoint = endpoint ?? throw new ArgumentNullException(nameof(endpoint));
        ownsHttp = http is null;
        this.http = http ?? new HttpClient { Timeout = TimeSpan.FromSeconds(10), MaxResponseContentBufferSize = MaxResponseBytes };
    }

    /// <summary>The endpoint.</summary>
    public Uri Endpoint { get; }

    /// <summary>Calls <paramref name="method"/> and returns its result (a clone, independent of the answer's buffer).</summary>
    /// <exception cref="EthRpcException">The node answered an error.</exception>
    /// <exception cref="HttpRequestException">The node could not be reached or answered other than 200.</exception>
    public async Task<JsonElement> RequestAsync(string method, IEnumerable<JsonNode?> parameters, CancellationToken token = default)
    {
        ArgumentNullException.ThrowIfNull(method);
        var request = new JsonObject
        {
            ["jsonrpc"] = "2.0",
            ["id"] = Interlocked.Increment(ref nextId),
            ["method"] = method,
            ["params"] = new JsonArray([.. parameters ?? []]),
        };
        using var content = new StringContent(request.ToJsonString());
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var response = await http.PostAsync(Endpoint, content, token).ConfigureAwait(false);
        if (response.Content.Headers.ContentLength > MaxResponseBytes)
            throw new HttpRequestException($"{method}: the answer is over {MaxResponseBytes} bytes");
        var body = await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode && body.Length == 0)
            throw new HttpRequestException($"{method}: HTTP {(int)response.StatusCode}", null, response.StatusCode);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body);
        }
        catch (JsonException e)
        {
            throw new HttpRequestException($"{method}: the answer is not JSON (HTTP {(int)response.StatusCode})", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new HttpRequestException($"{method}: the answer is not a JSON-RPC object");
            if (root.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object)
            {
                var code = error.TryGetProperty("code", out var c) && c.TryGetInt32(out var value) ? value : 0;
                var message = error.TryGetProperty("message", out var m) ? m.GetString() ?? "error" : "error";
                byte[]? data = null;
                if (error.TryGetProperty("data", out var d) && d.ValueKind == JsonValueKind.String)
                {
                    try
                    {
                        data = EthHex.ToBytes(d.GetString()!);
                    }
                    catch (FormatException)
                    {
                        data = null;
                    }
                }

                throw new EthRpcException(method, code, message, data);
            }

            if (!root.TryGetProperty("result", out var result))
                throw new HttpRequestException($"{method}: the answer has neither result nor error");
            return result.Clone();
        }
    }

    /// <summary>eth_chainId.</summary>
    public async Task<ulong> ChainIdAsync(CancellationToken token = default) => EthHex.ToUInt64(Text(await RequestAsync("eth_chainId", [], token).ConfigureAwait(false)));

    /// <summary>eth_blockNumber.</summary>
    public async Task<ulong> BlockNumberAsync(CancellationToken token = default) => EthHex.ToUInt64(Text(await RequestAsync("eth_blockNumber", [], token).ConfigureAwait(false)));

    /// <summary>eth_getBlockByNumber for a tag (latest, safe, finalized, pending, earliest); null when the node has no such block.</summary>
    public async Task<EthBlock?> GetBlockAsync(string tag, CancellationToken token = default)
    {
        var result = await RequestAsync("eth_getBlockByNumber", [JsonValue.Create(tag), JsonValue.Create(false)], token).ConfigureAwait(false);
        return result.ValueKind == JsonValueKind.Null ? null : Block(result);
    }

    /// <summary>eth_getBlockByNumber; null when the node has no such block.</summary>
    public Task<EthBlock?> GetBlockAsync(ulong number, CancellationToken token = default) => GetBlockAsync(EthHex.Quantity(number), token);

    /// <summary>eth_getTransactionCount at <paramref name="tag"/> (pending counts transactions in the pool).</summary>
    public async Task<ulong> GetTransactionCountAsync(Address address, string tag = "pending", CancellationToken token = default)
        => EthHex.ToUInt64(Text(await RequestAsync("eth_getTransactionCount", [JsonValue.Create(Require(address).ToString()), JsonValue.Create(tag)], token).ConfigureAwait(false)));

    /// <summary>eth_getBalance at latest.</summary>
    public async Task<BigInteger> GetBalanceAsync(Address address, CancellationToken token = default)
        => EthHex.ToQuantity(Text(await RequestAsync("eth_getBalance", [JsonValue.Create(Require(address).ToString()), JsonValue.Create("latest")], token).ConfigureAwait(false)));

    /// <summary>eth_getCode at latest: the account's code (empty for an account without).</summary>
    public async Task<byte[]> GetCodeAsync(Address address, CancellationToken token = default)
        => EthHex.ToBytes(Text(await RequestAsync("eth_getCode", [JsonValue.Create(Require(address).ToString()), JsonValue.Create("latest")], token).ConfigureAwait(false)));

    /// <summary>eth_gasPrice.</summary>
    public async Task<BigInteger> GasPriceAsync(CancellationToken token = default) => EthHex.ToQuantity(Text(await RequestAsync("eth_gasPrice", [], token).ConfigureAwait(false)));

    /// <summary>eth_maxPriorityFeePerGas.</summary>
    public async Task<BigInteger> MaxPriorityFeePerGasAsync(CancellationToken token = default)
        => EthHex.ToQuantity(Text(await RequestAsync("eth_maxPriorityFeePerGas", [], token).ConfigureAwait(false)));

    /// <summary>eth_estimateGas.</summary>
    /// <exception cref="EthRpcException">The call reverts (the revert data is in <see cref="EthRpcException.Data"/>).</exception>
    public async Task<ulong> EstimateGasAsync(EthCall call, CancellationToken token = default)
        => EthHex.ToUInt64(Text(await RequestAsync("eth_estimateGas", [CallObject(call)], token).ConfigureAwait(false)));

    /// <summary>eth_call at <paramref name="tag"/>: the return data.</summary>
    /// <exception cref="EthRpcException">The call reverts.</exception>
    public async Task<byte[]> CallAsync(EthCall call, string tag = "latest", CancellationToken token = default)
        => EthHex.ToBytes(Text(await RequestAsync("eth_call", [CallObject(call), JsonValue.Create(tag)], token).ConfigureAwait(false)));

    /// <summary>eth_sendRawTransaction: the transaction hash.</summary>
    public async Task<byte[]> SendRawTransactionAsync(byte[] raw, CancellationToken token = default)
        => EthHex.ToBytes(Text(await RequestAsync("eth_sendRawTransaction", [JsonValue.Create(EthHex.Bytes(raw))], token).ConfigureAwait(false)));

    /// <summary>eth_getTransactionReceipt; null while the transaction is not in a block.</summary>
    public async Task<EthReceipt?> GetTransactionReceiptAsync(byte[] hash, CancellationToken token = default)
    {
        var result = await RequestAsync("eth_getTransactionReceipt", [JsonValue.Create(EthHex.Bytes(hash))], token).ConfigureAwait(false);
        if (result.ValueKind == JsonValueKind.Null)
            return null;
        var contract = result.TryGetProperty("contractAddress", out var c) && c.ValueKind == JsonValueKind.String ? Address.Parse(c.GetString()!) : null;
        var price = result.TryGetProperty("effectiveGasPrice", out var p) && p.ValueKind == JsonValueKind.String ? EthHex.ToQuantity(p.GetString()!) : BigInteger.Zero;
        return new EthReceipt(
            EthHex.ToBytes(Text(result, "transactionHash")), Text(result, "status") == "0x1", EthHex.ToUInt64(Text(result, "blockNumber")),
            EthHex.ToBytes(Text(result, "blockHash")), EthHex.ToUInt64(Text(result, "gasUsed")), price, contract,
            [.. result.GetProperty("logs").EnumerateArray().Select(Log)]);
    }

    /// <summary>eth_getLogs of <paramref name="address"/> in [<paramref name="fromBlock"/>, <paramref name="toBlock"/>], with topic 0 in <paramref name="topic0"/> when given.</summary>
    public async Task<IReadOnlyList<EthLog>> GetLogsAsync(Address address, ulong fromBlock, ulong toBlock, byte[]? topic0 = null, CancellationToken token = default)
    {
        var filter = new JsonObject
        {
            ["address"] = Require(address).ToString(),
            ["fromBlock"] = EthHex.Quantity(fromBlock),
            ["toBlock"] = EthHex.Quantity(toBlock),
        };
        if (topic0 is not null)
            filter["topics"] = new JsonArray(JsonValue.Create(EthHex.Bytes(topic0)));
        var result = await RequestAsync("eth_getLogs", [filter], token).ConfigureAwait(false);
        return [.. result.EnumerateArray().Select(Log)];
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (ownsHttp)
            http.Dispose();
    }

    private static Address Require(Address address) => address ?? throw new ArgumentNullException(nameof(address));

    private static JsonObject CallObject(EthCall call)
    {
        ArgumentNullException.ThrowIfNull(call);
        var json = new JsonObject { ["data"] = EthHex.Bytes(call.Data) };
        if (call.To is not null)
            json["to"] = call.To.ToString();
        if (call.From is not null)
            json["from"] = call.From.ToString();
        if (call.Value is { } value)
            json["value"] = EthHex.Quantity(value);
        return json;
    }

    private static EthBlock Block(JsonElement block)
    {
        BigInteger? baseFee = block.TryGetProperty("baseFeePerGas", out var fee) && fee.ValueKind == JsonValueKind.String ? EthHex.ToQuantity(fee.GetString()!) : null;
        return new EthBlock(EthHex.ToUInt64(Text(block, "number")), EthHex.ToBytes(Text(block, "hash")), EthHex.ToBytes(Text(block, "parentHash")),
            EthHex.ToUInt64(Text(block, "timestamp")), baseFee);
    }

    private static EthLog Log(JsonElement log)
        => new(Address.Parse(Text(log, "address")), [.. log.GetProperty("topics").EnumerateArray().Select(t => EthHex.ToBytes(t.GetString()!))],
            EthHex.ToBytes(Text(log, "data")), EthHex.ToUInt64(Text(log, "blockNumber")), EthHex.ToBytes(Text(log, "blockHash")),
            EthHex.ToBytes(Text(log, "transactionHash")), EthHex.ToUInt64(Text(log, "logIndex")),
            log.TryGetProperty("removed", out var removed) && removed.ValueKind == JsonValueKind.True);

    private static string Text(JsonElement element) => element.ValueKind == JsonValueKind.String ? element.GetString()! : throw new FormatException($"expected a JSON string, found {element.ValueKind}");

    private static string Text(JsonElement element, string property)
        => element.TryGetProperty(property, out var value) ? Text(value) : throw new FormatException($"the answer has no \"{property}\"");
}
