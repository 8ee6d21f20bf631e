using System.Diagnostics;

namespace Sequencer.Core;

/// <summary>
/// Named points where a test build can kill its own process (SIGKILL: no finally block, no flush), so that a test can
/// crash a node between any two steps of a durable protocol (the nonce store's take, erase, compaction and rewrite)
/// and check what survives. Calls compile to nothing outside the TestFaults configuration.
/// </summary>
public static class CrashPoints
{
    private static string? armed;
    private static int remaining;

    /// <summary>Arms <paramref name="point"/>: the <paramref name="times"/>-th time the process reaches it, it dies.</summary>
    public static void Arm(string point, int times)
    {
        ArgumentException.ThrowIfNullOrEmpty(point);
        ArgumentOutOfRangeException.ThrowIfLessThan(times, 1);
        Volatile.Write(ref remaining, times);
        Volatile.Write(ref armed, point);
    }

    /// <summary>Every point the nonce store passes, in the order of its steps.</summary>
    public static readonly IReadOnlyList<string> NonceStorePoints =
    [
        "nonce-append-before-sync", "nonce-append-after-sync",
        "take-before-sync", "take-after-sync",
        "compact-after-switch", "erase-before-sync", "compact-after-erase", "compact-after-uses", "compact-after-delete",
        "rewrite-after-new", "rewrite-after-zero", "rewrite-after-rename",
    ];

    /// <summary>The process dies here when this point is armed and its count is reached (test builds only).</summary>
    [Conditional("SEQUENCER_TEST_FAULTS")]
    public static void Reach(string point)
    {
        if (Volatile.Read(ref armed) != point || Interlocked.Decrement(ref remaining) != 0)
            return;
        Console.Out.Flush();
        Process.GetCurrentProcess().Kill();
        Thread.Sleep(Timeout.Infinite);
    }
}
