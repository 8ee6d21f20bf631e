namespace Sequencer.Core.Ordering;

/// <summary>Where a tx sits in the order: its batch height and its index within the batch.</summary>
public readonly record struct TxPosition(ulong Height, int Index)
{
    /// <summary>Heights fit in 40 bits when packed.</summary>
    public const ulong MaxHeight = (1UL << 40) - 1;

    /// <summary>Indexes fit in 24 bits when packed.</summary>
    public const int MaxIndex = (1 << 24) - 1;

    /// <summary>Packs into one word: height in the high 40 bits, index in the low 24. Zero is never a valid position.</summary>
    public ulong Pack()
    {
        Invariant.Check(Height is >= 1 and <= MaxHeight, "height out of packable range");
        Invariant.Check(Index is >= 0 and <= MaxIndex, "index out of packable range");
        return (Height << 24) | (uint)Index;
    }

    /// <summary>The inverse of <see cref="Pack"/>.</summary>
    public static TxPosition Unpack(ulong packed) => new(packed >> 24, (int)(packed & MaxIndex));
}
