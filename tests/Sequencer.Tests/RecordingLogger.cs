using Microsoft.Extensions.Logging;

namespace Sequencer.Tests;

/// <summary>One line a <see cref="RecordingLogger{T}"/> took.</summary>
public sealed record LoggedLine(int EventId, LogLevel Level, string Text, Exception? Exception);

/// <summary>A logger that keeps every line (thread-safe), for tests that check what a component says.</summary>
public sealed class RecordingLogger<T> : ILogger<T>
{
    private readonly List<LoggedLine> lines = [];

    /// <summary>The lines so far, oldest first.</summary>
    public IReadOnlyList<LoggedLine> Lines
    {
        get
        {
            lock (lines)
                return [.. lines];
        }
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        ArgumentNullException.ThrowIfNull(formatter);
        lock (lines)
            lines.Add(new LoggedLine(eventId.Id, logLevel, formatter(state, exception), exception));
    }
}
