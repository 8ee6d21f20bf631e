using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Node.Telemetry;

namespace Sequencer.Tests;

public sealed class ThrottledLoggerTests
{
    [Fact]
    public void RepeatedNetworkError_IsWrittenOncePerIntervalWithoutStackTrace_ThenWithTheCountLeftOut()
    {
        var time = new FakeTimeProvider();
        var sink = new RecordingLoggerFactory();
        var logger = new ThrottledLoggerFactory(sink, time).CreateLogger("DotNext.Net.Cluster.Consensus.Raft.RaftCluster");
        var refused = new SocketException((int)SocketError.ConnectionRefused);

        for (var i = 0; i < 1_000; i++)
            logger.LogWarning(new EventId(74010), refused, "Cluster member {EndPoint} is unavailable", "127.0.0.1:7203");
        var first = Assert.Single(sink.Lines);
        Assert.Null(first.Exception);
        Assert.Contains("127.0.0.1:7203 is unavailable: ConnectionRefused", first.Text, StringComparison.Ordinal);

        time.Advance(ThrottledLoggerFactory.RepeatInterval);
        logger.LogWarning(new EventId(74010), refused, "Cluster member {EndPoint} is unavailable", "127.0.0.1:7203");
        Assert.Equal(2, sink.Lines.Count);
        Assert.Contains("(999 more like this", sink.Lines[1].Text, StringComparison.Ordinal);
    }

    [Fact]
    public void DistinctLinesAndUnexpectedErrors_AreKeptApart_AndUnexpectedOnesKeepTheirException()
    {
        var time = new FakeTimeProvider();
        var sink = new RecordingLoggerFactory();
        var logger = new ThrottledLoggerFactory(sink, time).CreateLogger("DotNext");
        logger.LogWarning(new EventId(1), new SocketException((int)SocketError.ConnectionRefused), "member {Id} down", 2);
        logger.LogWarning(new EventId(1), new SocketException((int)SocketError.ConnectionRefused), "member {Id} down", 3);
        var bug = new InvalidOperationException("a bug");
        logger.LogError(new EventId(2), bug, "something broke");
        Assert.Equal(3, sink.Lines.Count);
        Assert.Same(bug, sink.Lines[2].Exception);
    }

    [Fact]
    public void ManyDistinctLines_StayWithinTheTrackedBound()
    {
        var time = new FakeTimeProvider();
        var sink = new RecordingLoggerFactory();
        var logger = new ThrottledLoggerFactory(sink, time).CreateLogger("DotNext");
        for (var i = 0; i < 10 * ThrottledLoggerFactory.MaxTrackedLines; i++)
            logger.LogInformation("line {Index}", i);
        Assert.Equal(10 * ThrottledLoggerFactory.MaxTrackedLines, sink.Lines.Count);
    }

    private sealed class RecordingLoggerFactory : ILoggerFactory, ILogger
    {
        public List<(string Text, Exception? Exception)> Lines { get; } = [];

        public ILogger CreateLogger(string categoryName) => this;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => Lines.Add((formatter(state, exception), exception));
    }
}

public sealed class LogThrottleTests
{
    [Fact]
    public void ARepeatingFailure_GetsOneLinePerInterval_AndTheNextLineCarriesWhatWasHeldBack()
    {
        var throttle = new LogThrottle(TimeSpan.FromSeconds(5));
        const long Start = 1_000_000;
        static long At(double seconds) => Start + (long)(seconds * System.Diagnostics.Stopwatch.Frequency);

        // A retry every 20 ms for 5 s: the first failure is written, the 249 after it are counted.
        Assert.True(throttle.Admit(At(0), 1, out var held));
        Assert.Equal(0, held);
        for (var i = 1; i < 250; i++)
            Assert.False(throttle.Admit(At(i * 0.02), 1, out _));
        Assert.True(throttle.Admit(At(5), 1, out held));
        Assert.Equal(249, held);

        // Weighted events (sessions left unanswered) add up their weights.
        Assert.False(throttle.Admit(At(6), 3, out _));
        Assert.False(throttle.Admit(At(9.99), 4, out _));
        Assert.True(throttle.Admit(At(10), 2, out held));
        Assert.Equal(7, held);

        // After a quiet stretch the next failure is written at once, with nothing held back.
        Assert.True(throttle.Admit(At(60), 1, out held));
        Assert.Equal(0, held);
    }
}
