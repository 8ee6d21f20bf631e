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

    [Fact]
    public void DirectSessionRecords_RoundTrip_AsVersion2_EverythingElseStaysVersion1()
    {
        var record = new SigningSession { Height = 7, Attempt = 3, KeyEpoch = 1, Signers = [1, 3], Sequences = [10, 11], Direct = true };
        var batch = LogCommandCodec.Encode(new BatchCommand { Txs = [[1]], Sessions = [record] });
        Assert.Equal(LogCommandCodec.Version2, batch[0]);
        var decoded = Assert.IsType<BatchCommand>(LogCommandCodec.Decode(new ReadOnlySequence<byte>(batch)));
        var back = Assert.Single(decoded.Sessions!);
        Assert.True(back.Direct);
        Assert.Equal((7UL, 3, 1UL), (back.Height, back.Attempt, back.KeyEpoch));
        Assert.Equal([1, 3], back.Signers);
        Assert.Equal([10UL, 11UL], back.Sequences);

        var standalone = LogCommandCodec.Encode(new SigningSessionsCommand { Sessions = [record] });
        Assert.Equal(LogCommandCodec.Version2, standalone[0]);
        Assert.True(Assert.Single(Assert.IsType<SigningSessionsCommand>(LogCommandCodec.Decode(new ReadOnlySequence<byte>(standalone))).Sessions).Direct);

        // A session to answer, and a batch without records, are version 1 as before (an older build reads them).
        var inLog = new SigningSession { Height = 7, Attempt = 1, KeyEpoch = 1, Signers = [1, 3], Sequences = [10, 11] };
        Assert.Equal(LogCommandCodec.Version1, LogCommandCodec.Encode(new SigningSessionsCommand { Sessions = [inLog] })[0]);
        Assert.Equal(LogCommandCodec.Version1, LogCommandCodec.Encode(new BatchCommand { Txs = [[1]], Session = inLog })[0]);
        Assert.Null(Assert.IsType<BatchCommand>(LogCommandCodec.Decode(new ReadOnlySequence<byte>(LogCommandCodec.Encode(new BatchCommand { Txs = [[1]] })))).Sessions);

        // A nil record is refused at decode, like every other nil field.
        var nil = LogCommandCodec.Encode(new BatchCommand { Txs = [[1]], Sessions = [new SigningSession { Signers = null!, Sequences = [1] }] });
        Assert.Throws<LogFormatException>(() => LogCommandCodec.Decode(new ReadOnlySequence<byte>(nil)));
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

    [Fact]
    public void ASessionRequest_CarriesTermAndCommitIndex_OneFromAnOlderBuildReadsAsZero_AndNegativeOnesAreRefused()
    {
        var session = new SigningSession { Height = 5, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [3, 4], Direct = true };
        byte[][] commitments = [new byte[66], new byte[66]];
        var request = new SessionRequestMessage { LeaderId = 2, Term = 7, CommitIndex = 40, Sessions = [session], Commitments = [commitments] };
        var decoded = SessionRequestMessage.Decode(request.Encode());
        Assert.Equal((2, 7L, 40L), (decoded.LeaderId, decoded.Term, decoded.CommitIndex));

        // A build before the fields sent three: they read as 0 ("not sent"), and the follower waits as it always did.
        var older = new ArrayBufferWriter<byte>();
        var writer = new MessagePack.MessagePackWriter(older);
        writer.WriteArrayHeader(3);
        writer.Write(2);
        writer.Flush();
        var sessions = MessagePack.MessagePackSerializer.Serialize<IReadOnlyList<SigningSession>>([session]);
        var commitmentsBytes = MessagePack.MessagePackSerializer.Serialize<IReadOnlyList<IReadOnlyList<byte[]>>>([commitments]);
        var bytes = older.WrittenSpan.ToArray().Concat(sessions).Concat(commitmentsBytes).ToArray();
        var old = SessionRequestMessage.Decode(bytes);
        Assert.Equal((2, 0L, 0L), (old.LeaderId, old.Term, old.CommitIndex));

        var negative = new SessionRequestMessage { LeaderId = 2, Term = 7, CommitIndex = -1, Sessions = [session], Commitments = [commitments] };
        Assert.Throws<LogFormatException>(() => SessionRequestMessage.Decode(negative.Encode()));
    }
}
