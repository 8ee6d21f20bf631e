using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Sequencer.Core.Storage;

/// <summary>
/// The steps that make a file's existence, name and contents survive a power loss (fsync of the file, then of its
/// directory), and erasure of secrets at rest (overwrite with zeros and sync before a file is deleted).
/// </summary>
public static class DurableFiles
{
    /// <summary>Makes the entries of <paramref name="directory"/> (files created, renamed or deleted in it) durable.</summary>
    /// <exception cref="IOException">The directory could not be synced.</exception>
    public static void SyncDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (OperatingSystem.IsWindows())
            return;
        var fd = Open(directory, ORdOnly | ODirectory);
        if (fd < 0)
            throw new IOException($"cannot open directory {directory} to sync it (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (Fsync(fd) != 0)
                throw new IOException($"fsync of directory {directory} failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>
    /// Writes a whole file durably: through a synced temporary (mode 0600 when <paramref name="secret"/>), renamed into
    /// place, the directory synced; so the file is never there half written.
    /// </summary>
    public static void WriteAllText(string path, string contents, bool secret)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(contents);
        var temporary = path + ".tmp";
        File.Delete(temporary);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (secret && !OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var stream = new FileStream(temporary, options))
        {
            stream.Write(System.Text.Encoding.UTF8.GetBytes(contents));
            stream.Flush(flushToDisk: true);
        }

        File.Move(temporary, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Overwrites <paramref name="length"/> bytes at <paramref name="offset"/> with zeros (not synced).</summary>
    public static void Zero(SafeFileHandle handle, long offset, long length)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Span<byte> zeros = stackalloc byte[4096];
        zeros.Clear();
        while (length > 0)
        {
            var chunk = (int)Math.Min(length, zeros.Length);
            RandomAccess.Write(handle, zeros[..chunk], offset);
            offset += chunk;
            length -= chunk;
        }
    }

    /// <summary>
    /// Erases a file holding secrets: overwrites its whole length with zeros, syncs it, deletes it and syncs its
    /// directory. A missing file is fine.
    /// </summary>
    public static void Erase(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
            return;
        using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
        {
            Zero(handle, 0, RandomAccess.GetLength(handle));
            RandomAccess.FlushToDisk(handle);
        }

        File.Delete(path);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    private const int ORdOnly = 0;
    private const int ODirectory = 0x10000; // Linux

#pragma warning disable CA5392, SYSLIB1054 // libc is a system library; a plain DllImport keeps this file free of source generators.
    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int Close(int fd);
#pragma warning restore CA5392, SYSLIB1054
}
