namespace Sequencer.Node.Storage;

/// <summary>
/// A blocked Bloom filter over 128-bit tx hash prefixes: every key sets <see cref="BitsPerKeyProbe"/> bits within one
/// 512-bit block (one cache line), so a lookup costs one memory access. It never misses a key it was given; about
/// 1% of other keys are false positives at <see cref="BitsPerKey"/> bits a key.
/// </summary>
/// <remarks>
/// The probe bits come from the key mixed with a per-filter salt (SplitMix64's finalizer), so that nobody can grind tx
/// hashes into the positives of a filter they cannot read. A positive only costs a disk read: the answer is exact.
/// </remarks>
internal sealed class TxBloomFilter
{
    /// <summary>Filter bits per key: 10 gives about 1% false positives with one-block filters.</summary>
    public const int BitsPerKey = 10;

    /// <summary>Bits set per key.</summary>
    public const int BitsPerKeyProbe = 7;

    /// <summary>Bytes per block (one cache line).</summary>
    public const int BlockBytes = 64;

    private const int BlockWords = BlockBytes / sizeof(ulong);

    private readonly ulong[] words;
    private readonly ulong salt;

    private TxBloomFilter(ulong[] words, ulong salt)
    {
        this.words = words;
        this.salt = salt;
    }

    /// <summary>The salt the probe positions are derived with.</summary>
    public ulong Salt => salt;

    /// <summary>The number of 64-byte blocks.</summary>
    public long Blocks => words.Length / BlockWords;

    /// <summary>The filter's memory in bytes.</summary>
    public long Bytes => (long)words.Length * sizeof(ulong);

    /// <summary>The blocks a filter for <paramref name="keys"/> keys takes.</summary>
    public static long BlocksFor(long keys) => Math.Max(1, ((keys * BitsPerKey) + (BlockBytes * 8) - 1) / (BlockBytes * 8));

    /// <summary>An empty filter for <paramref name="keys"/> keys.</summary>
    public static TxBloomFilter Create(long keys, ulong salt)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keys);
        return new TxBloomFilter(new ulong[checked(BlocksFor(keys) * BlockWords)], salt);
    }

    /// <summary>A filter read back from <paramref name="bytes"/> (little-endian words).</summary>
    public static TxBloomFilter Load(ReadOnlySpan<byte> bytes, ulong salt)
    {
        if (bytes.Length == 0 || bytes.Length % BlockBytes != 0)
            throw new InvalidDataException($"a filter of {bytes.Length} bytes is not whole blocks");
        var filter = new TxBloomFilter(new ulong[bytes.Length / sizeof(ulong)], salt);
        bytes.CopyTo(filter.AsBytes());
        return filter;
    }

    /// <summary>
    /// A filter of <paramref name="blocks"/> blocks read straight from a file at <paramref name="offset"/> (no
    /// intermediate buffer: a filter of a large run is megabytes).
    /// </summary>
    /// <exception cref="InvalidDataException">The file ends early.</exception>
    public static TxBloomFilter Read(Microsoft.Win32.SafeHandles.SafeFileHandle handle, long offset, long blocks, ulong salt)
    {
        var filter = new TxBloomFilter(new ulong[checked(blocks * BlockWords)], salt);
        if (RandomAccess.Read(handle, filter.AsBytes(), offset) != filter.Bytes)
            throw new InvalidDataException("the file ends inside the filter");
        return filter;
    }

    /// <summary>The filter as little-endian bytes (this machine's words; the file format is little-endian).</summary>
    public ReadOnlySpan<byte> Span => AsBytes();

    /// <summary>Writes the filter as little-endian words.</summary>
    public void CopyTo(Span<byte> destination) => AsBytes().CopyTo(destination);

    private Span<byte> AsBytes()
    {
        Sequencer.Core.Invariant.Check(BitConverter.IsLittleEndian, "the tx index files are read and written on a little-endian machine");
        return System.Runtime.InteropServices.MemoryMarshal.AsBytes(words.AsSpan());
    }

    /// <summary>Adds <paramref name="key"/>.</summary>
    public void Add(UInt128 key)
    {
        var block = Block(key, out var bits);
        for (var i = 0; i < BitsPerKeyProbe; i++, bits >>= 9)
            words[block + (int)((bits >> 6) & 7)] |= 1UL << (int)(bits & 63);
    }

    /// <summary>False when <paramref name="key"/> was never added; true when it was, or (rarely) when it was not.</summary>
    public bool MayContain(UInt128 key)
    {
        var block = Block(key, out var bits);
        for (var i = 0; i < BitsPerKeyProbe; i++, bits >>= 9)
        {
            if ((words[block + (int)((bits >> 6) & 7)] & (1UL << (int)(bits & 63))) == 0)
                return false;
        }

        return true;
    }

    // The first word of key's block, and 63 bits of probe positions (seven 9-bit positions within the block).
    private int Block(UInt128 key, out ulong bits)
    {
        var low = Mix((ulong)key ^ salt);
        bits = Mix((ulong)(key >> 64) ^ low);
        var block = Math.BigMul(low, (ulong)(words.Length / BlockWords), out _);
        return (int)block * BlockWords;
    }

    private static ulong Mix(ulong value)
    {
        value ^= value >> 30;
        value *= 0xbf58476d1ce4e5b9UL;
        value ^= value >> 27;
        value *= 0x94d049bb133111ebUL;
        value ^= value >> 31;
        return value;
    }
}
