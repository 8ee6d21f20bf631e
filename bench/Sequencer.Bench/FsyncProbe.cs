using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Sequencer.Bench;

/// <summary>Measures fdatasync latency of 4 KiB appends in a directory: the cost every commit amortises.</summary>
internal static partial class FsyncProbe
{
    public static (double P50Us, double P99Us, double MaxUs) Measure(string directory, int iterations)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, "fsync-probe.bin");
        var block = new byte[4096];
        Random.Shared.NextBytes(block);
        var samples = new double[iterations];
        using (var handle = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, FileOptions.None))
        {
            for (var i = 0; i < iterations; i++)
            {
                RandomAccess.Write(handle, block, (long)i * block.Length);
                var started = Stopwatch.GetTimestamp();
                if (fdatasync(handle) != 0)
                    throw new IOException($"fdatasync failed with errno {Marshal.GetLastPInvokeError()}");
                samples[i] = Stopwatch.GetElapsedTime(started).TotalMicroseconds;
            }
        }

        File.Delete(path);
        Array.Sort(samples);
        return (samples[iterations / 2], samples[(int)(iterations * 0.99)], samples[^1]);
    }

    private static int fdatasync(SafeFileHandle handle) => NativeMethods.fdatasync((int)handle.DangerousGetHandle());

    private static partial class NativeMethods
    {
        [LibraryImport("libc", SetLastError = true)]
        internal static partial int fdatasync(int fd);
    }
}
