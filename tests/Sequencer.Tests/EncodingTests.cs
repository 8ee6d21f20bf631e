using System.Buffers;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;

namespace Sequencer.Tests;

public sealed class EncodingTests
{
    [Fact]
    public void BatchCommand_RoundTrips_WithItsVersionByte()
    {
        var command = new BatchCommand { ProposerTerm = 7, LeaderTimestampMs = 1234, Txs = [[1, 2, 3], [4], new byte[70_000]], ReceivedAgoMs = [1, 2, 3] };
        var bytes = LogCommandCodec.Encode(command);
        Assert.Equal(LogCommandCodec.Version1, bytes[0]);
        var decoded = Assert.IsType<BatchCommand>(LogCommandCodec.Decode(new ReadOnlySequence<byte>(bytes)));
        Assert.Equal(7UL, decoded.ProposerTerm);
        Assert.Equal(1234UL, decoded.LeaderTimestampMs);
        Assert.Equal(command.Txs.Count, decoded.Txs.Count);
        for (var i = 0; i < command.Txs.Count; i++)
            Assert.Equal(command.Txs[i], decoded.Txs[i]);
        Assert.Equal(command.ReceivedAgoMs, decoded.ReceivedAgoMs);
    }

    [Fact]
    public void Decode_UnknownVersion_SaysSoClearly()
    {
        var bytes = LogCommandCodec.Encode(new BatchCommand { Txs = [[1]] });
        bytes[0] = 9;
        var error = Assert.Throws<LogFormatException>(() => LogCommandCodec.Decode(new ReadOnlySequence<byte>(bytes)));
        Assert.Contains("version 9", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { 1 })]
    [InlineData(new byte[] { 1, 0xc1 })]
    [InlineData(new byte[] { 1, 0x92, 0x2a, 0x90 })]
    public void Decode_Garbage_ThrowsLogFormatException(byte[] bytes)
        => Assert.Throws<LogFormatException>(() => LogCommandCodec.Decode(new ReadOnlySequence<byte>(bytes)));

    [Theory]
    [InlineData(1UL, 0)]
    [InlineData(1UL, 16_777_215)]
    [InlineData(1_099_511_627_775UL, 5)]
    public void TxPosition_PackUnpack_RoundTrips(ulong height, int index)
        => Assert.Equal(new TxPosition(height, index), TxPosition.Unpack(new TxPosition(height, index).Pack()));

    [Fact]
    public void TxPosition_OutOfRange_FailsTheInvariant()
    {
        Assert.Throws<Sequencer.Core.InvariantViolationException>(() => new TxPosition(0, 0).Pack());
        Assert.Throws<Sequencer.Core.InvariantViolationException>(() => new TxPosition(1, 1 << 24).Pack());
    }
}
