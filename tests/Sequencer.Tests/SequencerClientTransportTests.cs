using System.Net;
using System.Net.Sockets;
using Sequencer.Client;

namespace Sequencer.Tests;

/// <summary>
/// The client library turns every transport failure into its own exception, with the outcome unknown: a chaos run's
/// workload once died of a bare <see cref="SocketException"/> (107, "Transport endpoint is not connected") that
/// SocketsHttpHandler threw while reading a just-reset connection's remote end point.
/// </summary>
public sealed class SequencerClientTransportTests
{
    private sealed class FailingHandler(Func<HttpResponseMessage> answer) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) => Task.FromResult(answer());
    }

    // A body that breaks off after a few bytes, as a connection reset in the middle of an answer does.
    private sealed class BrokenStream : Stream
    {
        private int served;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count)
        {
            if (served++ > 0)
                throw new IOException("Unable to read data from the transport connection: Connection reset by peer.", new SocketException((int)SocketError.ConnectionReset));
            buffer[offset] = (byte)'{';
            return 1;
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private static SequencerClient Client(Func<HttpResponseMessage> answer) =>
        new(new HttpClient(new FailingHandler(answer)) { BaseAddress = new Uri("http://127.0.0.1:1/") });

    public static TheoryData<string> Failures => ["socket", "io"];

    [Theory]
    [MemberData(nameof(Failures))]
    public async Task ABareTransportErrorBeforeTheAnswer_IsAnUnreachableNode_WithTheOutcomeUnknown(string kind)
    {
        using var client = Client(() => throw (kind == "socket" ? new SocketException(107) : new IOException("broken pipe")));
        var e = await Assert.ThrowsAsync<SequencerApiException>(() => client.SubmitAsync(new byte[] { 1, 2, 3 }, CancellationToken.None));
        Assert.Equal(0, e.Status);
        Assert.Equal("unreachable", e.Code);
        Assert.True(e.IsIndeterminate);
        Assert.True(e.IsRetryable);
    }

    [Fact]
    public async Task AnAnswerBrokenOffInTheMiddle_IsAnUnknownOutcome_NotACrash()
    {
        using var client = Client(() => new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(new BrokenStream()) });
        var e = await Assert.ThrowsAsync<SequencerApiException>(() => client.SubmitAsync(new byte[] { 1, 2, 3 }, CancellationToken.None));
        Assert.Equal(0, e.Status);
        Assert.True(e.IsIndeterminate);
        Assert.Contains("127.0.0.1:1", e.Message, StringComparison.Ordinal);
    }
}
