using System.Buffers;
using System.Text;
using MessagePack;
using Sequencer.Core;
using Sequencer.Core.Protocol;

namespace Sequencer.Tests;

public sealed class SubmitRequestTests
{
    private static readonly SequencerLimits Limits = new() { MaxTxBytes = 8, MaxBatchBytes = 1024, MaxTxsPerRequest = 3, MaxPendingTxs = 10, MaxRequestBytes = 1024 };

    private static List<byte[]>? Json(string body, out ApiError? error)
        => SubmitRequest.ParseJson(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(body)), Limits, out error);

    private delegate void Write(ref MessagePackWriter writer);

    private static List<byte[]>? Pack(Write write, out ApiError? error)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        write(ref writer);
        writer.Flush();
        return SubmitRequest.ParseMessagePack(new ReadOnlySequence<byte>(buffer.WrittenMemory), Limits, out error);
    }

    [Fact]
    public void ParseJson_SingleAndBulk_DecodeHex()
    {
        Assert.Equal([new byte[] { 1, 0xab }], Json("{\"tx\":\"0x01AB\"}", out _));
        Assert.Equal([[1], [2, 3]], Json(" {\"txs\": [\"0x01\", \"0X0203\"]} ", out _));
    }

    [Theory]
    [InlineData("{nope", 400, "malformed_json")]
    [InlineData("[]", 400, "malformed_json")]
    [InlineData("{}", 400, "missing_field")]
    [InlineData("{\"tx\":\"0x01\",\"extra\":1}", 400, "unknown_field")]
    [InlineData("{\"tx\":\"0x01\",\"txs\":[\"0x02\"]}", 400, "malformed_request")]
    [InlineData("{\"txs\":[]}", 400, "empty_request")]
    [InlineData("{\"tx\":\"0x\"}", 400, "empty_tx")]
    [InlineData("{\"tx\":\"01\"}", 400, "bad_hex")]
    [InlineData("{\"tx\":\"0x012\"}", 400, "bad_hex")]
    [InlineData("{\"tx\":\"0xzz\"}", 400, "bad_hex")]
    [InlineData("{\"tx\":1}", 400, "malformed_request")]
    [InlineData("{\"tx\":\"0x000000000000000000\"}", 413, "tx_too_large")]
    [InlineData("{\"txs\":[\"0x01\",\"0x02\",\"0x03\",\"0x04\"]}", 413, "too_many_txs")]
    [InlineData("{\"tx\":\"0x01\"} {}", 400, "malformed_json")]
    public void ParseJson_BadInput_ClearError(string body, int status, string code)
    {
        Assert.Null(Json(body, out var error));
        Assert.NotNull(error);
        Assert.Equal(status, error.Status);
        Assert.Equal(code, error.Code);
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
    }

    [Fact]
    public void ParseMessagePack_BinsAndHexStrings_AreAccepted()
    {
        var txs = Pack((ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(1);
            w.Write("txs");
            w.WriteArrayHeader(2);
            w.Write(new byte[] { 9, 8 });
            w.Write("0x0102");
        }, out var error);
        Assert.Null(error);
        Assert.Equal([[9, 8], [1, 2]], txs);
    }

    [Fact]
    public void ParseMessagePack_UnknownKeyEmptyBinTrailingDataOrGarbage_IsRejected()
    {
        Assert.Equal("unknown_field", Reject((ref MessagePackWriter w) => { w.WriteMapHeader(1); w.Write("nope"); w.Write(1); }));
        Assert.Equal("unknown_field", Reject((ref MessagePackWriter w) => { w.WriteMapHeader(2); w.Write("tx"); w.Write(new byte[] { 1 }); w.Write("x"); w.Write(1); }));
        Assert.Equal("empty_tx", Reject((ref MessagePackWriter w) => { w.WriteMapHeader(1); w.Write("tx"); w.Write(Array.Empty<byte>()); }));
        Assert.Equal("tx_too_large", Reject((ref MessagePackWriter w) => { w.WriteMapHeader(1); w.Write("tx"); w.Write(new byte[9]); }));
        Assert.Equal("malformed_msgpack", Reject((ref MessagePackWriter w) => { w.WriteMapHeader(1); w.Write("tx"); w.Write(new byte[] { 1 }); w.Write(5); }));
        Assert.Equal("malformed_msgpack", Reject((ref MessagePackWriter w) => w.Write(5)));
        Assert.Equal("too_many_txs", Reject((ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(1);
            w.Write("txs");
            w.WriteArrayHeader(4);
            for (var i = 0; i < 4; i++)
                w.Write(new byte[] { 1 });
        }));
        Assert.Null(SubmitRequest.ParseMessagePack(new ReadOnlySequence<byte>([0x81, 0xa2]), Limits, out var truncated));
        Assert.Equal("malformed_msgpack", truncated!.Code);
    }

    [Fact]
    public void ParseJson_InvalidUtf8InAKeyOrATx_IsMalformedJsonNotAnException()
    {
        // A 60 s fuzz of POST /v1/txs found invalid UTF-8 inside a JSON key answered 500 (GetString threw
        // InvalidOperationException, which nothing caught).
        byte[][] bodies =
        [
            [.. "{\""u8, 0xff, 0xfe, .. "\":\"0x01\"}"u8],
            [.. "{\"tx\":\"0x0"u8, 0xc3, 0x28, .. "\"}"u8],
            [.. "{\"txs\":[\""u8, 0xed, 0xa0, 0x80, .. "\"]}"u8],
        ];
        foreach (var body in bodies)
        {
            Assert.Null(SubmitRequest.ParseJson(new ReadOnlySequence<byte>(body), Limits, out var error));
            Assert.Equal(400, error!.Status);
            Assert.Equal("malformed_json", error.Code);
        }
    }

    private static string Reject(Write write)
    {
        Assert.Null(Pack(write, out var error));
        return error!.Code;
    }
}
