using System.Diagnostics.CodeAnalysis;
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

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Fail(string message, string? expression)
        => throw new InvariantViolationException($"invariant violated: {message} ({expression})");
}

/// <summary>Raised by <see cref="Invariant.Check"/>. Never caught to carry on.</summary>
public sealed class InvariantViolationException(string message) : Exception(message);
