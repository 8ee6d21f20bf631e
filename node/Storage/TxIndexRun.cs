using System.Buffers.Binary;
using System.Globalization;
using System.IO.Hashing;
using Microsoft.Win32.SafeHandles;
using Sequencer.Core;

namespace Sequencer.Node.Storage;

/// <summary>One entry of the stored tx index: a tx hash prefix and its packed position.</summary>
/// <param name="Key">The first 128 bits of the tx hash.</param>
/// <param name="Packed">The position, <see cref="Sequencer.Core.Ordering.TxPosition.Pack"/>.</param>
internal readonly record struct TxRecord(UInt128 Key, ulong Packed);

/// <summary>
/// One immutable run of the stored tx index: every tx of the stored batches at heights [<see cref="From"/>,
/// <see cref="To"/>], sorted by hash prefix, in one file. In memory it keeps a Bloom filter and a fence (the first key
/// and a checksum of every block of <see cref="BlockRecords"/> records), about 1.35 bytes per tx; a lookup that passes
/// the filter reads one block.
/// </summary>
/// <remarks>
/// <para>
/// Layout, little-endian: a 64-byte header (magic, version, level, block size, heights, count, filter blocks, filter
/// salt, header checksum); the records (16-byte key, 8-byte packed position); the fence (16-byte key, 8-byte XxHash64
/// of the block); the filter; a 16-byte trailer (XxHash64 over header, fence and filter, and an end magic). Opening
/// reads everything but the records and checks it; a block is checked against its fence checksum when read.
/// </para>
/// <para>
/// Readers hold a reference (<see cref="TryAcquire"/>, <see cref="Release"/>) while they read; a run replaced by a merge
/// is retired and its file closed (and deleted) when the last reader releases it. Thread-safe.
/// </para>
/// </remarks>
internal sealed class TxIndexRun
{
    /// <summary>Records per block: one fence entry and one read per block.</summary>
    public const int BlockRecords = 256;

    /// <summary>Bytes per record.</summary>
    public const int RecordBytes = 24;

    /// <summary>The most records in one run (its fence and filter stay within one array each).</summary>
    public const long MaxRecords = 1L << 31;

    private const int HeaderBytes = 64;
    private const int FenceEntryBytes = 24;
    private const int TrailerBytes = 16;
    private const uint FormatVersion = 1;

    private static ReadOnlySpan<byte> Magic => "SQTXRUN1"u8;

    private static ReadOnlySpan<byte> EndMagic => "SQTXEND1"u8;

    private readonly SafeFileHandle handle;
    private readonly UInt128[] fenceKeys;
    private readonly ulong[] fenceChecksums;
    private readonly TxBloomFilter filter;
    private int references = 1;
    private volatile bool deleteWhenClosed;

    private TxIndexRun(string path, SafeFileHandle handle, int level, ulong from, ulong to, long count, UInt128[] fenceKeys, ulong[] fenceChecksums, TxBloomFilter filter)
    {
        Path = path;
        this.handle = handle;
        Level = level;
        From = from;
        To = to;
        Count = count;
        this.fenceKeys = fenceKeys;
        this.fenceChecksums = fenceChecksums;
        this.filter = filter;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>How many merges made this run (0: written by one store append or a rebuild).</summary>
    public int Level { get; }

    /// <summary>The lowest height the run covers.</summary>
    public ulong From { get; }

    /// <summary>The highest height the run covers.</summary>
    public ulong To { get; }

    /// <summary>The number of txs.</summary>
    public long Count { get; }

    /// <summary>The run's memory: filter and fence.</summary>
    public long MemoryBytes => filter.Bytes + ((long)fenceKeys.Length * FenceEntryBytes);

    /// <summary>The file name of the run covering [<paramref name="from"/>, <paramref name="to"/>].</summary>
    public static string FileName(ulong from, ulong to) => string.Create(CultureInfo.InvariantCulture, $"{from:D13}-{to:D13}.run");

    /// <summary>Parses a name made by <see cref="FileName"/>.</summary>
    public static bool TryParseName(string name, out ulong from, out ulong to)
    {
        from = to = 0;
        var dash = name.IndexOf('-', StringComparison.Ordinal);
        return name.EndsWith(".run", StringComparison.Ordinal) && dash > 0
            && ulong.TryParse(name.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out from)
            && ulong.TryParse(name.AsSpan(dash + 1, name.Length - dash - 1 - 4), NumberStyles.None, CultureInfo.InvariantCulture, out to)
            && from >= 1 && from <= to;
    }

    /// <summary>
    /// Writes a run of <paramref name="count"/> records, ascending by key, to <paramref name="path"/> (through a temporary
    /// file, fsynced, then renamed) and opens it. The records must be strictly ascending: a key twice is a tx ordered
    /// twice (INV-NODUP).
    /// </summary>
    /// <exception cref="IOException">The disk failed; no file is left at <paramref name="path"/>.</exception>
    public static TxIndexRun Write(string path, int level, ulong from, ulong to, long count, IEnumerable<TxRecord> records)
    {
        ArgumentNullException.ThrowIfNull(records);
        Invariant.Check(from >= 1 && from <= to && count >= 0 && count <= MaxRecords, $"a tx index run covers heights {from} to {to} with {count} txs");
        var temporary = path + ".tmp";
        var salt = (ulong)Random.Shared.NextInt64() ^ ((ulong)Random.Shared.NextInt64() << 1);
        var filter = TxBloomFilter.Create(count, salt);
        var blocks = (count + BlockRecords - 1) / BlockRecords;
        var fence = new byte[checked((int)(blocks * FenceEntryBytes))];
        try
        {
            using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Span<byte> header = stackalloc byte[HeaderBytes];
                WriteHeader(header, level, from, to, count, filter.Blocks, salt);
                output.Write(header);
                var blockHash = new XxHash64();
                Span<byte> record = stackalloc byte[RecordBytes];
                var written = 0L;
                var previous = UInt128.Zero;
                foreach (var (key, packed) in records)
                {
                    Invariant.Check(written < count, $"the tx index run {path} gets the {count} records it announced");
                    Invariant.Check(written == 0 || key > previous, "tx index records are strictly ascending: a tx is ordered once (INV-NODUP)");
                    BinaryPrimitives.WriteUInt64LittleEndian(record, (ulong)key);
                    BinaryPrimitives.WriteUInt64LittleEndian(record[8..], (ulong)(key >> 64));
                    BinaryPrimitives.WriteUInt64LittleEndian(record[16..], packed);
                    output.Write(record);
                    if (written % BlockRecords == 0)
                        record[..16].CopyTo(fence.AsSpan((int)(written / BlockRecords * FenceEntryBytes), 16));
                    blockHash.Append(record);
                    filter.Add(key);
                    previous = key;
                    written++;
                    if (written % BlockRecords == 0 || written == count)
                    {
                        BinaryPrimitives.WriteUInt64LittleEndian(fence.AsSpan((int)(((written - 1) / BlockRecords * FenceEntryBytes) + 16)), blockHash.GetCurrentHashAsUInt64());
                        blockHash.Reset();
                    }
                }

                Invariant.Check(written == count, $"the tx index run {path} got {written} of the {count} records it announced");
                // A run of pruned heights holds no records; its heights stay covered, so the index knows they hold nothing.
                output.Write(fence);
                output.Write(filter.Span);
                var check = new XxHash64();
                check.Append(header);
                check.Append(fence);
                check.Append(filter.Span);
                Span<byte> trailer = stackalloc byte[TrailerBytes];
                BinaryPrimitives.WriteUInt64LittleEndian(trailer, check.GetCurrentHashAsUInt64());
                EndMagic.CopyTo(trailer[8..]);
                output.Write(trailer);
                output.Flush(flushToDisk: true);
            }

            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }

        // Check data after it is written: the run is used as read back, not as it was meant to be.
        return Open(path);
    }

    /// <summary>Opens a run file and checks everything but the records (checked per block when read).</summary>
    /// <exception cref="InvalidDataException">The file is damaged or not a run.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static TxIndexRun Open(string path)
    {
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            if (RandomAccess.Read(handle, header, 0) != HeaderBytes || !header[..8].SequenceEqual(Magic))
                throw new InvalidDataException($"{path} is not a tx index run");
            if (BinaryPrimitives.ReadUInt64LittleEndian(header[56..]) != XxHash64.HashToUInt64(header[..56]))
                throw new InvalidDataException($"{path}: the header checksum does not match");
            if (BinaryPrimitives.ReadUInt32LittleEndian(header[8..]) != FormatVersion || BinaryPrimitives.ReadUInt16LittleEndian(header[14..]) != BlockRecords)
                throw new InvalidDataException($"{path}: unknown format version or block size");
            var level = BinaryPrimitives.ReadUInt16LittleEndian(header[12..]);
            var from = BinaryPrimitives.ReadUInt64LittleEndian(header[16..]);
            var to = BinaryPrimitives.ReadUInt64LittleEndian(header[24..]);
            var count = BinaryPrimitives.ReadInt64LittleEndian(header[32..]);
            var filterBlocks = BinaryPrimitives.ReadInt64LittleEndian(header[40..]);
            var salt = BinaryPrimitives.ReadUInt64LittleEndian(header[48..]);
            if (from < 1 || from > to || count < 0 || count > MaxRecords || filterBlocks != TxBloomFilter.BlocksFor(count))
                throw new InvalidDataException($"{path}: the header names an impossible run");
            var blocks = (count + BlockRecords - 1) / BlockRecords;
            var tailBytes = checked((blocks * FenceEntryBytes) + (filterBlocks * TxBloomFilter.BlockBytes) + TrailerBytes);
            var recordsEnd = HeaderBytes + (count * RecordBytes);
            if (RandomAccess.GetLength(handle) != recordsEnd + tailBytes)
                throw new InvalidDataException($"{path}: {RandomAccess.GetLength(handle)} bytes, the header names {recordsEnd + tailBytes}");
            // The fence and trailer are small; the filter is read straight into its words.
            var fence = new byte[checked((int)(blocks * FenceEntryBytes))];
            Span<byte> trailer = stackalloc byte[TrailerBytes];
            var filterOffset = recordsEnd + fence.Length;
            var trailerOffset = filterOffset + (filterBlocks * TxBloomFilter.BlockBytes);
            if (RandomAccess.Read(handle, fence, recordsEnd) != fence.Length || RandomAccess.Read(handle, trailer, trailerOffset) != TrailerBytes)
                throw new InvalidDataException($"{path} ends early");
            var filter = TxBloomFilter.Read(handle, filterOffset, filterBlocks, salt);
            var check = new XxHash64();
            check.Append(header);
            check.Append(fence);
            check.Append(filter.Span);
            if (!trailer[8..].SequenceEqual(EndMagic) || BinaryPrimitives.ReadUInt64LittleEndian(trailer) != check.GetCurrentHashAsUInt64())
                throw new InvalidDataException($"{path}: the fence and filter checksum does not match");
            var fenceKeys = new UInt128[blocks];
            var fenceChecksums = new ulong[blocks];
            for (var b = 0; b < blocks; b++)
            {
                var entry = fence.AsSpan(b * FenceEntryBytes, FenceEntryBytes);
                fenceKeys[b] = new UInt128(BinaryPrimitives.ReadUInt64LittleEndian(entry[8..]), BinaryPrimitives.ReadUInt64LittleEndian(entry));
                fenceChecksums[b] = BinaryPrimitives.ReadUInt64LittleEndian(entry[16..]);
                if (b > 0 && fenceKeys[b] <= fenceKeys[b - 1])
                    throw new InvalidDataException($"{path}: the fence is not ascending");
            }

            return new TxIndexRun(path, handle, level, from, to, count, fenceKeys, fenceChecksums, filter);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>False when the filter rules <paramref name="key"/> out (no disk read is needed).</summary>
    public bool MayContain(UInt128 key) => filter.MayContain(key);

    /// <summary>Looks <paramref name="key"/> up: the filter, then one block read. The caller holds a reference.</summary>
    /// <exception cref="InvalidDataException">The block read back does not match its checksum.</exception>
    public bool TryFind(UInt128 key, out ulong packed)
    {
        packed = 0;
        if (!filter.MayContain(key))
            return false;
        // The block whose first key is the greatest one at or below key: keys are unique, so only it can hold key.
        var block = Array.BinarySearch(fenceKeys, key);
        if (block < 0)
            block = ~block - 1;
        if (block < 0)
            return false;
        var records = (int)Math.Min(BlockRecords, Count - ((long)block * BlockRecords));
        Span<byte> span = stackalloc byte[BlockRecords * RecordBytes];
        span = span[..(records * RecordBytes)];
        ReadBlock(block, span);
        int low = 0, high = records - 1;
        while (low <= high)
        {
            var middle = (low + high) >>> 1;
            var record = span.Slice(middle * RecordBytes, RecordBytes);
            var candidate = new UInt128(BinaryPrimitives.ReadUInt64LittleEndian(record[8..]), BinaryPrimitives.ReadUInt64LittleEndian(record));
            if (candidate == key)
            {
                packed = BinaryPrimitives.ReadUInt64LittleEndian(record[16..]);
                return true;
            }

            if (candidate < key)
                low = middle + 1;
            else
                high = middle - 1;
        }

        return false;
    }

    /// <summary>Every record, ascending, each block checked (for a merge). The caller holds a reference while it reads.</summary>
    public IEnumerable<TxRecord> ReadAll()
    {
        const int BlocksPerRead = 8; // 48 KiB: below the large object heap, which is not compacted
        var buffer = new byte[BlocksPerRead * BlockRecords * RecordBytes];
        for (var block = 0; block < fenceKeys.Length; block += BlocksPerRead)
        {
            var blocks = Math.Min(BlocksPerRead, fenceKeys.Length - block);
            var records = (int)Math.Min((long)blocks * BlockRecords, Count - ((long)block * BlockRecords));
            var span = buffer.AsMemory(0, records * RecordBytes);
            ReadBlocks(block, blocks, span.Span);
            for (var i = 0; i < records; i++)
                yield return Parse(buffer.AsSpan(i * RecordBytes, RecordBytes));
        }
    }

    private static TxRecord Parse(ReadOnlySpan<byte> record)
        => new(new UInt128(BinaryPrimitives.ReadUInt64LittleEndian(record[8..]), BinaryPrimitives.ReadUInt64LittleEndian(record)), BinaryPrimitives.ReadUInt64LittleEndian(record[16..]));

    private void ReadBlock(int block, Span<byte> destination) => ReadBlocks(block, 1, destination);

    // Reads blocks [first, first + blocks) into destination (sized for exactly their records) and checks each.
    private void ReadBlocks(int first, int blocks, Span<byte> destination)
    {
        var offset = HeaderBytes + ((long)first * BlockRecords * RecordBytes);
        if (RandomAccess.Read(handle, destination, offset) != destination.Length)
            throw new InvalidDataException($"{Path} ends inside block {first}");
        for (var b = 0; b < blocks; b++)
        {
            var start = b * BlockRecords * RecordBytes;
            var block = destination.Slice(start, Math.Min(BlockRecords * RecordBytes, destination.Length - start));
            if (XxHash64.HashToUInt64(block) != fenceChecksums[first + b])
            {
                throw new InvalidDataException(
                    $"the tx index run {Path} is damaged (block {first + b} does not match its checksum); stop the node and delete the txindex directory: it is rebuilt from the store at the next start");
            }
        }
    }

    private static void WriteHeader(Span<byte> header, int level, ulong from, ulong to, long count, long filterBlocks, ulong salt)
    {
        header.Clear();
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], FormatVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(header[12..], checked((ushort)level));
        BinaryPrimitives.WriteUInt16LittleEndian(header[14..], BlockRecords);
        BinaryPrimitives.WriteUInt64LittleEndian(header[16..], from);
        BinaryPrimitives.WriteUInt64LittleEndian(header[24..], to);
        BinaryPrimitives.WriteInt64LittleEndian(header[32..], count);
        BinaryPrimitives.WriteInt64LittleEndian(header[40..], filterBlocks);
        BinaryPrimitives.WriteUInt64LittleEndian(header[48..], salt);
        BinaryPrimitives.WriteUInt64LittleEndian(header[56..], XxHash64.HashToUInt64(header[..56]));
    }

    /// <summary>Takes a reading reference; false once the run is retired and closed.</summary>
    public bool TryAcquire()
    {
        while (true)
        {
            var current = Volatile.Read(ref references);
            if (current == 0)
                return false;
            if (Interlocked.CompareExchange(ref references, current + 1, current) == current)
                return true;
        }
    }

    /// <summary>Returns a reference; the last one closes the file (and deletes it when the run was retired for deletion).</summary>
    public void Release()
    {
        var left = Interlocked.Decrement(ref references);
        Invariant.Check(left >= 0, "a tx index run is released once per reference");
        if (left > 0)
            return;
        handle.Dispose();
        if (deleteWhenClosed)
            File.Delete(Path);
    }

    /// <summary>Drops the owner's reference: the file is closed (and, with <paramref name="delete"/>, deleted) once no reader holds it.</summary>
    public void Retire(bool delete)
    {
        deleteWhenClosed = delete;
        Release();
    }
}
