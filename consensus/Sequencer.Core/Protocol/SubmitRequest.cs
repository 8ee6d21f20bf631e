using System.Buffers;
using System.Text.Json;
using MessagePack;

namespace Sequencer.Core.Protocol;

/// <summary>A rejected request: an API error code, an HTTP status and a sentence for humans.</summary>
/// <param name="Status">The HTTP status, always 4xx here.</param>
/// <param name="Code">The stable machine-readable code (the <c>error</c> field).</param>
/// <param name="Message">What was wrong, for humans.</param>
public sealed record ApiError(int Status, string Code, string Message);

/// <summary>
/// Parses the body of <c>POST /v1/txs</c> (DESIGN section 10): <c>{"tx": "0x.."}</c> or <c>{"txs": ["0x..", ...]}</c>,
/// as JSON or as the same shape in MessagePack, where a tx may be a bin or a 0x-hex string.
/// Strict: unknown fields, trailing data, empty txs and oversized txs are rejected with a clear message.
/// </summary>
public static class SubmitRequest
{
    /// <summary>The JSON media type.</summary>
    public const string JsonMediaType = "application/json";

    /// <summary>The MessagePack media type.</summary>
    public const string MessagePackMediaType = "application/x-msgpack";

    /// <summary>Parses a JSON body. Returns the txs, or null and an error.</summary>
    public static List<byte[]>? ParseJson(ReadOnlySequence<byte> body, SequencerLimits limits, out ApiError? error)
    {
        ArgumentNullException.ThrowIfNull(limits);
        error = null;
        try
        {
            var reader = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = 4, CommentHandling = JsonCommentHandling.Disallow });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                return Fail(out error, 400, "malformed_json", "the body must be a JSON object with a \"tx\" or a \"txs\" field");

            List<byte[]>? txs = null;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                var name = reader.GetString();
                if (name is not ("tx" or "txs"))
                    return Fail(out error, 400, "unknown_field", $"unknown field \"{name}\": the body has exactly one of \"tx\" or \"txs\"");
                if (txs is not null)
                    return Fail(out error, 400, "malformed_request", "give exactly one of \"tx\" or \"txs\"");
                reader.Read();
                txs = [];
                if (name == "tx")
                {
                    if (reader.TokenType != JsonTokenType.String)
                        return Fail(out error, 400, "malformed_request", "\"tx\" must be a 0x-prefixed hex string");
                    if (!TryDecodeHex(ref reader, limits, 0, txs, out error))
                        return null;
                }
                else
                {
                    if (reader.TokenType != JsonTokenType.StartArray)
                        return Fail(out error, 400, "malformed_request", "\"txs\" must be an array of 0x-prefixed hex strings");
                    while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                    {
                        if (reader.TokenType != JsonTokenType.String)
                            return Fail(out error, 400, "malformed_request", $"txs[{txs.Count}] must be a 0x-prefixed hex string");
                        if (txs.Count == limits.MaxTxsPerRequest)
                            return Fail(out error, 413, "too_many_txs", $"a bulk submit holds at most {limits.MaxTxsPerRequest} txs");
                        if (!TryDecodeHex(ref reader, limits, txs.Count, txs, out error))
                            return null;
                    }
                }
            }

            if (reader.Read())
                return Fail(out error, 400, "malformed_json", "unexpected data after the JSON object");
            if (txs is null)
                return Fail(out error, 400, "missing_field", "the body needs a \"tx\" or a \"txs\" field");
            if (txs.Count == 0)
                return Fail(out error, 400, "empty_request", "\"txs\" is empty");
            return txs;
        }
        catch (JsonException e)
        {
            return Fail(out error, 400, "malformed_json", $"the body is not valid JSON: {e.Message}");
        }
        catch (InvalidOperationException)
        {
            // Utf8JsonReader.GetString throws this for a string (a key, or a tx) that is not valid UTF-8.
            return Fail(out error, 400, "malformed_json", "the body is not valid JSON: a string is not valid UTF-8");
        }
    }

    /// <summary>Parses a MessagePack body. Returns the txs, or null and an error.</summary>
    public static List<byte[]>? ParseMessagePack(ReadOnlySequence<byte> body, SequencerLimits limits, out ApiError? error)
    {
        ArgumentNullException.ThrowIfNull(limits);
        error = null;
        try
        {
            var reader = new MessagePackReader(body);
            if (reader.NextMessagePackType != MessagePackType.Map)
                return Fail(out error, 400, "malformed_msgpack", "the body must be a MessagePack map with a \"tx\" or a \"txs\" key");
            var fields = reader.ReadMapHeader();
            if (fields != 1)
                return Fail(out error, 400, fields == 0 ? "missing_field" : "unknown_field", "the map has exactly one key: \"tx\" or \"txs\"");
            if (reader.NextMessagePackType != MessagePackType.String)
                return Fail(out error, 400, "malformed_msgpack", "map keys are strings");
            var name = reader.ReadString();
            List<byte[]> txs = [];
            if (name == "tx")
            {
                if (!TryReadMessagePackTx(ref reader, limits, 0, txs, out error))
                    return null;
            }
            else if (name == "txs")
            {
                if (reader.NextMessagePackType != MessagePackType.Array)
                    return Fail(out error, 400, "malformed_request", "\"txs\" must be an array");
                var count = reader.ReadArrayHeader();
                if (count == 0)
                    return Fail(out error, 400, "empty_request", "\"txs\" is empty");
                if (count > limits.MaxTxsPerRequest)
                    return Fail(out error, 413, "too_many_txs", $"a bulk submit holds at most {limits.MaxTxsPerRequest} txs");
                for (var i = 0; i < count; i++)
                {
                    if (!TryReadMessagePackTx(ref reader, limits, i, txs, out error))
                        return null;
                }
            }
            else
            {
                return Fail(out error, 400, "unknown_field", $"unknown key \"{name}\": the map has exactly one of \"tx\" or \"txs\"");
            }

            if (!reader.End)
                return Fail(out error, 400, "malformed_msgpack", "unexpected data after the MessagePack map");
            return txs;
        }
        catch (Exception e) when (e is MessagePackSerializationException or EndOfStreamException or InvalidOperationException or OverflowException or ArgumentException)
        {
            return Fail(out error, 400, "malformed_msgpack", $"the body is not valid MessagePack: {e.Message}");
        }
    }

    private static bool TryReadMessagePackTx(ref MessagePackReader reader, SequencerLimits limits, int index, List<byte[]> txs, out ApiError? error)
    {
        error = null;
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Binary:
                var bytes = reader.ReadBytes();
                if (bytes is null || bytes.Value.Length == 0)
                    return Reject(out error, 400, "empty_tx", $"tx {index} is empty");
                if (bytes.Value.Length > limits.MaxTxBytes)
                    return Reject(out error, 413, "tx_too_large", $"tx {index} is {bytes.Value.Length} bytes; the limit is {limits.MaxTxBytes}");
                txs.Add(bytes.Value.ToArray());
                return true;
            case MessagePackType.String:
                var text = reader.ReadString() ?? string.Empty;
                return TryDecodeHex(text, limits, index, txs, out error);
            default:
                return Reject(out error, 400, "malformed_request", $"tx {index} must be a bin or a 0x-prefixed hex string");
        }
    }

    private static bool TryDecodeHex(ref Utf8JsonReader reader, SequencerLimits limits, int index, List<byte[]> txs, out ApiError? error)
    {
        // Check the length before unescaping so that an oversized tx costs no allocation.
        var encodedLength = reader.HasValueSequence ? reader.ValueSequence.Length : reader.ValueSpan.Length;
        if (encodedLength > 2 + 2L * limits.MaxTxBytes + 16)
            return Reject(out error, 413, "tx_too_large", $"tx {index} is over the limit of {limits.MaxTxBytes} bytes");
        return TryDecodeHex(reader.GetString() ?? string.Empty, limits, index, txs, out error);
    }

    private static bool TryDecodeHex(string text, SequencerLimits limits, int index, List<byte[]> txs, out ApiError? error)
    {
        error = null;
        if (text.Length < 2 || text[0] != '0' || (text[1] != 'x' && text[1] != 'X'))
            return Reject(out error, 400, "bad_hex", $"tx {index} must start with 0x");
        var digits = text.AsSpan(2);
        if (digits.Length == 0)
            return Reject(out error, 400, "empty_tx", $"tx {index} is empty");
        if ((digits.Length & 1) == 1)
            return Reject(out error, 400, "bad_hex", $"tx {index} has an odd number of hex digits");
        if (digits.Length / 2 > limits.MaxTxBytes)
            return Reject(out error, 413, "tx_too_large", $"tx {index} is {digits.Length / 2} bytes; the limit is {limits.MaxTxBytes}");
        var bytes = new byte[digits.Length / 2];
        if (Convert.FromHexString(digits, bytes, out _, out var written) != OperationStatus.Done || written != bytes.Length)
            return Reject(out error, 400, "bad_hex", $"tx {index} is not valid hex");
        txs.Add(bytes);
        return true;
    }

    private static bool Reject(out ApiError? error, int status, string code, string message)
    {
        error = new ApiError(status, code, message);
        return false;
    }

    private static List<byte[]>? Fail(out ApiError? error, int status, string code, string message)
    {
        error = new ApiError(status, code, message);
        return null;
    }
}
