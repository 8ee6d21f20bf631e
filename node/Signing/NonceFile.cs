using Sequencer.Core;
using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Sequencer.Core.Storage;

namespace Sequencer.Node.Signing;

/// <summary>
/// The signer's secret nonce pairs at rest, in the project's own file (issue 9: nonces that stay dead): fixed-size
/// records appended and fsynced before their commitments are published, and erased in place (the secret bytes
/// overwritten with zeros, then fsynced) when taken or pruned, so a used nonce is gone from the disk itself, not only
/// from an index, and its tombstone needs no database commit that might not be synced.
/// </summary>
/// <remarks>
/// <para>Layout: a 64-byte header (magic, key epoch, the next unused sequence, the record count of a rewritten file,
/// a checksum), then 144-byte records: sequence, hiding nonce d, binding nonce e, commitment (D then E), a 4-byte
/// SHA-256 prefix of what precedes it. An erased record keeps its sequence and nothing else. A record whose checksum
/// fails was torn by a crash during its append (its commitment was never published) or erased.</para>
/// <para>When erased records dominate, the live ones are rewritten into <c>nonces.dat.new</c> (fsynced, directory
/// fsynced), the old file is overwritten with zeros and fsynced, and the new one renamed over it. A crash at any step
/// leaves either a complete new file (used at the next open) or the old one intact.</para>
/// <para>Not thread-safe: <see cref="NonceStore"/> serializes every call.</para>
/// </remarks>
internal sealed class NonceFile : IDisposable
{
    public const string FileName = "nonces.dat";
    private const string RewriteName = "nonces.dat.new";
    public const int HeaderBytes = 64;
    public const int RecordBytes = 144;
    private const int CommitmentBytes = 66;
    private const int CheckOffset = 8 + 32 + 32 + CommitmentBytes;
    private static readonly byte[] Magic = "SEQNONC1"u8.ToArray();

    private readonly string directory;
    private readonly SortedDictionary<ulong, (long Offset, byte[] Commitment)> live = [];
    private SafeFileHandle handle;
    private long length;
    private int erased;

    private NonceFile(string directory, SafeFileHandle handle, ulong epoch, ulong next)
    {
        this.directory = directory;
        this.handle = handle;
        Epoch = epoch;
        Next = next;
        length = HeaderBytes;
    }

    /// <summary>The key epoch of the nonces in the file (0: none yet).</summary>
    public ulong Epoch { get; private set; }

    /// <summary>The lowest sequence never generated in this epoch.</summary>
    public ulong Next { get; private set; }

    /// <summary>The live (unerased) records, by sequence.</summary>
    public IReadOnlyDictionary<ulong, (long Offset, byte[] Commitment)> Live => live;

    /// <summary>Live sequences at or above <paramref name="from"/>, ascending.</summary>
    public IEnumerable<KeyValuePair<ulong, (long Offset, byte[] Commitment)>> LiveFrom(ulong from) => live.SkipWhile(entry => entry.Key < from);

    /// <summary>Opens the file in <paramref name="directory"/>, finishing or discarding an interrupted rewrite.</summary>
    /// <exception cref="IOException">The file is damaged beyond a torn tail.</exception>
    public static NonceFile Open(string directory)
    {
        var path = Path.Combine(directory, FileName);
        var rewrite = Path.Combine(directory, RewriteName);
        if (File.Exists(rewrite))
        {
            if (TryReadComplete(rewrite))
            {
                // The rewrite was complete and synced before the old file was touched: it is the truth.
                DurableFiles.Erase(path);
                File.Move(rewrite, path);
                DurableFiles.SyncDirectory(directory);
            }
            else
            {
                DurableFiles.Erase(rewrite);
            }
        }

        if (!File.Exists(path))
        {
            var created = CreateFile(path, epoch: 0, next: 1, records: []);
            DurableFiles.SyncDirectory(directory);
            return new NonceFile(directory, created, 0, 1);
        }

        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        try
        {
            var header = new byte[HeaderBytes];
            if (RandomAccess.Read(handle, header, 0) != HeaderBytes || !ValidHeader(header))
                throw new IOException($"{path} is not a nonce file (bad header)");
            var file = new NonceFile(directory, handle, BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(8)), BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(16)));
            file.Load();
            return file;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private void Load()
    {
        var size = RandomAccess.GetLength(handle);
        var whole = HeaderBytes + ((size - HeaderBytes) / RecordBytes * RecordBytes);
        var record = new byte[RecordBytes];
        for (var offset = (long)HeaderBytes; offset < whole; offset += RecordBytes)
        {
            RandomAccess.Read(handle, record, offset);
            var sequence = BinaryPrimitives.ReadUInt64LittleEndian(record);
            if (sequence >= Next)
                Next = sequence + 1;
            if (ValidRecord(record))
                live[sequence] = (offset, record.AsSpan(72, CommitmentBytes).ToArray());
            else
                erased++;
        }

        // A partial record at the end was being appended when the process died: its commitment was never published.
        if (whole != size)
        {
            DurableFiles.Zero(handle, whole, size - whole);
            RandomAccess.SetLength(handle, whole);
            RandomAccess.FlushToDisk(handle);
        }

        length = whole;
        CryptographicOperations.ZeroMemory(record);
    }

    /// <summary>Starts a new key epoch: every nonce of the old one is erased with its file.</summary>
    public void Reset(ulong epoch)
    {
        var path = Path.Combine(directory, FileName);
        handle.Dispose();
        DurableFiles.Erase(path);
        handle = CreateFile(path, epoch, next: 1, records: []);
        DurableFiles.SyncDirectory(directory);
        live.Clear();
        erased = 0;
        length = HeaderBytes;
        Epoch = epoch;
        Next = 1;
    }

    /// <summary>Appends nonce pairs at <paramref name="firstSequence"/> onwards and syncs them (and the next sequence).</summary>
    public void Append(ulong firstSequence, IReadOnlyList<(byte[] D, byte[] E, byte[] Commitment)> pairs)
    {
        if (firstSequence < Next)
            throw new InvalidOperationException($"sequence {firstSequence} was already generated (next is {Next})");
        var buffer = new byte[pairs.Count * RecordBytes];
        try
        {
            for (var i = 0; i < pairs.Count; i++)
                WriteRecord(buffer.AsSpan(i * RecordBytes, RecordBytes), firstSequence + (ulong)i, pairs[i]);
            RandomAccess.Write(handle, buffer, length);
            var next = firstSequence + (ulong)pairs.Count;
            var header = Header(Epoch, next, 0);
            RandomAccess.Write(handle, header, 0);
            CrashPoints.Reach("nonce-append-before-sync");
            RandomAccess.FlushToDisk(handle);
            CrashPoints.Reach("nonce-append-after-sync");
            for (var i = 0; i < pairs.Count; i++)
                live[firstSequence + (ulong)i] = (length + ((long)i * RecordBytes), pairs[i].Commitment);
            length += buffer.Length;
            Next = next;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(buffer);
        }
    }

    /// <summary>Reads a live record's secret nonces (d, e); the caller zeroes the arrays when done.</summary>
    public (byte[] D, byte[] E) ReadSecrets(ulong sequence)
    {
        var (offset, _) = live[sequence];
        var record = new byte[RecordBytes];
        try
        {
            RandomAccess.Read(handle, record, offset);
            if (!ValidRecord(record) || BinaryPrimitives.ReadUInt64LittleEndian(record) != sequence)
                throw new IOException($"the nonce record of sequence {sequence} is damaged");
            return (record.AsSpan(8, 32).ToArray(), record.AsSpan(40, 32).ToArray());
        }
        finally
        {
            CryptographicOperations.ZeroMemory(record);
        }
    }

    /// <summary>
    /// Overwrites the records of <paramref name="sequences"/> with zeros (keeping each sequence number) and syncs
    /// the file; rewrites the file when erased records dominate. Returns how many were live.
    /// </summary>
    public int Erase(IEnumerable<ulong> sequences)
    {
        var count = 0;
        foreach (var sequence in sequences)
        {
            if (!live.Remove(sequence, out var entry))
                continue;
            DurableFiles.Zero(handle, entry.Offset + 8, RecordBytes - 8);
            count++;
        }

        if (count == 0)
            return 0;
        CrashPoints.Reach("erase-before-sync");
        RandomAccess.FlushToDisk(handle);
        erased += count;
        if (erased > 256 && erased > 2 * live.Count)
            Rewrite();
        return count;
    }

    // Copies the live records into a fresh file and erases the old one (see the remarks for the crash cases).
    private void Rewrite()
    {
        var path = Path.Combine(directory, FileName);
        var rewrite = Path.Combine(directory, RewriteName);
        var records = new List<byte[]>(live.Count);
        try
        {
            foreach (var (sequence, (offset, _)) in live)
            {
                var record = new byte[RecordBytes];
                RandomAccess.Read(handle, record, offset);
                records.Add(record);
            }

            using (CreateFile(rewrite, Epoch, Next, records))
            {
            }

            DurableFiles.SyncDirectory(directory);
            CrashPoints.Reach("rewrite-after-new");
            handle.Dispose();
            DurableFiles.Erase(path);
            CrashPoints.Reach("rewrite-after-zero");
            File.Move(rewrite, path);
            DurableFiles.SyncDirectory(directory);
            CrashPoints.Reach("rewrite-after-rename");
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
            var sequences = live.Keys.ToList();
            for (var i = 0; i < sequences.Count; i++)
                live[sequences[i]] = (HeaderBytes + ((long)i * RecordBytes), live[sequences[i]].Commitment);
            length = HeaderBytes + ((long)records.Count * RecordBytes);
            erased = 0;
        }
        finally
        {
            foreach (var record in records)
                CryptographicOperations.ZeroMemory(record);
        }
    }

    private static SafeFileHandle CreateFile(string path, ulong epoch, ulong next, List<byte[]> records)
    {
        var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        try
        {
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(handle, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            RandomAccess.Write(handle, Header(epoch, next, records.Count), 0);
            for (var i = 0; i < records.Count; i++)
                RandomAccess.Write(handle, records[i], HeaderBytes + ((long)i * RecordBytes));
            RandomAccess.FlushToDisk(handle);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    // A rewritten file is complete when its header names exactly the records it holds and each of them is valid.
    private static bool TryReadComplete(string path)
    {
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.None);
            var header = new byte[HeaderBytes];
            if (RandomAccess.Read(handle, header, 0) != HeaderBytes || !ValidHeader(header))
                return false;
            var count = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(24));
            if (RandomAccess.GetLength(handle) != HeaderBytes + (count * RecordBytes))
                return false;
            var record = new byte[RecordBytes];
            for (var i = 0L; i < count; i++)
            {
                RandomAccess.Read(handle, record, HeaderBytes + (i * RecordBytes));
                if (!ValidRecord(record))
                    return false;
            }

            CryptographicOperations.ZeroMemory(record);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static byte[] Header(ulong epoch, ulong next, long records)
    {
        var header = new byte[HeaderBytes];
        Magic.CopyTo(header, 0);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), epoch);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(16), next);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(24), records);
        SHA256.HashData(header.AsSpan(0, 32)).AsSpan(0, 4).CopyTo(header.AsSpan(32));
        return header;
    }

    private static bool ValidHeader(ReadOnlySpan<byte> header)
        => header[..8].SequenceEqual(Magic) && SHA256.HashData(header[..32])[..4].AsSpan().SequenceEqual(header.Slice(32, 4));

    private static void WriteRecord(Span<byte> record, ulong sequence, (byte[] D, byte[] E, byte[] Commitment) pair)
    {
        if (pair.D.Length != 32 || pair.E.Length != 32 || pair.Commitment.Length != CommitmentBytes)
            throw new ArgumentException("a nonce pair is two 32-byte scalars and a 66-byte commitment");
        BinaryPrimitives.WriteUInt64LittleEndian(record, sequence);
        pair.D.CopyTo(record[8..]);
        pair.E.CopyTo(record[40..]);
        pair.Commitment.CopyTo(record[72..]);
        SHA256.HashData(record[..CheckOffset])[..4].AsSpan().CopyTo(record[CheckOffset..]);
    }

    private static bool ValidRecord(ReadOnlySpan<byte> record)
    {
        // An erased record is zeros after its sequence, checksum included: no SHA-256 prefix is four zero bytes here
        // by more than chance, and the secrets must be non-zero scalars anyway.
        if (record.Slice(8, 64).IndexOfAnyExcept((byte)0) < 0)
            return false;
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(record[..CheckOffset], hash);
        return hash[..4].SequenceEqual(record.Slice(CheckOffset, 4));
    }

    /// <inheritdoc/>
    public void Dispose() => handle.Dispose();
}
