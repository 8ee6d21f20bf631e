using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace Sequencer.Core;

/// <summary>
/// Always-on assertions. A failed invariant is a programmer error or corrupt state: the process must stop
/// rather than serve or replicate wrong data. These checks are compiled into Release builds on purpose.
/// </summary>
public static class Invariant
{
    /// <summary>Throws <see cref="InvariantViolationException"/> when <paramref name="condition"/> is false.</summary>
    public static void Check([DoesNotReturnIf(false)] bool condition, string message,
        [CallerArgumentExpression(nameof(condition))] string? expression = null)
    {
        if (!condition)
            Fail(message, expression);
    }

    /// <summary>
    /// Throws <see cref="InvariantViolationException"/> when <paramref name="condition"/> is false. An interpolated
    /// message is formatted only then: checks on hot paths (every tx index record, every applied tx) cost no string.
    /// </summary>
    public static void Check([DoesNotReturnIf(false)] bool condition,
        [InterpolatedStringHandlerArgument(nameof(condition))] ref MessageHandler message,
        [CallerArgumentExpression(nameof(condition))] string? expression = null)
    {
        if (!condition)
            Fail(message.ToStringAndClear(), expression);
    }

    /// <summary>Formats a check's interpolated message only when the check fails (invariant culture).</summary>
    [InterpolatedStringHandler]
    public ref struct MessageHandler
    {
        private DefaultInterpolatedStringHandler inner;
        private readonly bool active;

        /// <summary>Called by the compiler; <paramref name="shouldAppend"/> is false when the check passes.</summary>
        public MessageHandler(int literalLength, int formattedCount, bool condition, out bool shouldAppend)
        {
            active = !condition;
            shouldAppend = active;
            inner = active ? new DefaultInterpolatedStringHandler(literalLength, formattedCount, CultureInfo.InvariantCulture) : default;
        }

        /// <summary>Called by the compiler.</summary>
        public void AppendLiteral(string value) => inner.AppendLiteral(value);

        /// <summary>Called by the compiler.</summary>
        public void AppendFormatted<T>(T value) => inner.AppendFormatted(value);

        /// <summary>Called by the compiler.</summary>
        public void AppendFormatted<T>(T value, string? format) => inner.AppendFormatted(value, format);

        /// <summary>Called by the compiler.</summary>
        public void AppendFormatted<T>(T value, int alignment) => inner.AppendFormatted(value, alignment);

        /// <summary>Called by the compiler.</summary>
        public void AppendFormatted(ReadOnlySpan<char> value) => inner.AppendFormatted(value);

        /// <summary>Called by the compiler.</summary>
        public void AppendFormatted(string? value) => inner.AppendFormatted(value);

        internal string ToStringAndClear() => active ? inner.ToStringAndClear() : string.Empty;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Fail(string message, string? expression)
        => throw new InvariantViolationException($"invariant violated: {message} ({expression})");
}

/// <summary>Raised by <see cref="Invariant.Check"/>. Never caught to carry on.</summary>
public sealed class InvariantViolationException(string message) : Exception(message);
