using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Sequencer.Node.Telemetry;

/// <summary>
/// A logger factory for a noisy library (DotNext's Raft transport): a line that repeats (the same event and text) is
/// written at most once per <see cref="RepeatInterval"/>, with the number of lines left out since, and an expected
/// network error (a refused or reset connection, a closed stream, a timeout) is written as one line without its stack
/// trace. Without this, a dead member makes every other node log a full stack trace every few milliseconds.
/// </summary>
/// <remarks>Thread-safe. The set of distinct lines it tracks is bounded (<see cref="MaxTrackedLines"/>).</remarks>
public sealed class ThrottledLoggerFactory : ILoggerFactory
{
    /// <summary>A repeated line is written at most this often.</summary>
    public static readonly TimeSpan RepeatInterval = TimeSpan.FromSeconds(5);

    /// <summary>The most distinct lines tracked at once; beyond it the oldest are forgotten.</summary>
    public const int MaxTrackedLines = 256;

    private readonly ILoggerFactory inner;
    private readonly TimeProvider time;
    private readonly Lock gate = new();
    private readonly Dictionary<string, Seen> seen = [];

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    public ThrottledLoggerFactory(ILoggerFactory inner, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(time);
        this.inner = inner;
        this.time = time;
    }

    /// <inheritdoc/>
    public ILogger CreateLogger(string categoryName) => new ThrottledLogger(this, inner.CreateLogger(categoryName), categoryName);

    /// <inheritdoc/>
    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    /// <inheritdoc/>
    public void Dispose()
    {
        // The inner factory belongs to the host.
    }

    /// <summary>True for the errors a network produces in normal operation: their stack traces say nothing.</summary>
    public static bool IsExpectedNetworkError(Exception? exception) => exception switch
    {
        null => false,
        SocketException or EndOfStreamException or TimeoutException or OperationCanceledException => true,
        IOException { InnerException: SocketException } => true,
        AggregateException aggregate => aggregate.InnerExceptions.All(IsExpectedNetworkError),
        _ => exception.InnerException is { } inner && IsExpectedNetworkError(inner),
    };

    /// <summary>Decides whether a line is written now; returns the number of repeats left out before it.</summary>
    private bool Admit(string key, out long suppressed)
    {
        var now = time.GetTimestamp();
        lock (gate)
        {
            if (seen.TryGetValue(key, out var entry) && time.GetElapsedTime(entry.WrittenAt, now) < RepeatInterval)
            {
                entry.Suppressed++;
                suppressed = 0;
                return false;
            }

            suppressed = entry?.Suppressed ?? 0;
            if (entry is null)
            {
                if (seen.Count >= MaxTrackedLines)
                {
                    foreach (var stale in seen.OrderBy(p => p.Value.WrittenAt).Take(seen.Count - MaxTrackedLines + 1).Select(p => p.Key).ToList())
                        seen.Remove(stale);
                }

                seen[key] = entry = new Seen();
            }

            entry.WrittenAt = now;
            entry.Suppressed = 0;
            return true;
        }
    }

    private sealed class Seen
    {
        public long WrittenAt { get; set; }

        public long Suppressed { get; set; }
    }

    private sealed class ThrottledLogger(ThrottledLoggerFactory owner, ILogger inner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!inner.IsEnabled(logLevel))
                return;
            var text = formatter(state, null);
            var expected = IsExpectedNetworkError(exception);
            var key = $"{category}|{eventId.Id}|{text}|{(expected ? Describe(exception!) : exception?.GetType().Name)}";
            if (!owner.Admit(key, out var suppressed))
                return;
            var suffix = suppressed > 0 ? $" ({suppressed} more like this in the last {(int)RepeatInterval.TotalSeconds} s)" : string.Empty;
            if (expected)
                inner.Log(logLevel, eventId, $"{text}: {Describe(exception!)}{suffix}", null, static (message, _) => message);
            else
                inner.Log(logLevel, eventId, text + suffix, exception, static (message, _) => message);
        }

        private static string Describe(Exception exception)
        {
            var innermost = exception;
            while (innermost.InnerException is { } next && innermost is not SocketException)
                innermost = next;
            return innermost is SocketException socket ? $"{socket.SocketErrorCode} ({socket.Message})" : $"{innermost.GetType().Name} ({innermost.Message})";
        }
    }
}
