using Sequencer.Core;

namespace Sequencer.Checker;

/// <summary>
/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014): a 64-bit state that
/// advances by a fixed odd constant, and a bijective finalizer on the result. Its outputs are the same in every process
/// on every machine, unlike <see cref="HashCode.Combine{T1, T2}(T1, T2)"/>, which .NET seeds randomly per process.
/// </summary>
/// <remarks>Not thread-safe and not cryptographic: it derives reproducible seeds and choices from a run's seed.</remarks>
/// <param name="state">The starting state (the generator's seed).</param>
public struct SplitMix64(ulong state)
{
    /// <summary>The golden-ratio increment (2^64 / phi, odd).</summary>
    public const ulong Gamma = 0x9E3779B97F4A7C15;

    private ulong state = state;

    /// <summary>The next output; for seed 0 the first three are 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F.</summary>
    public ulong Next()
    {
        state = unchecked(state + Gamma);
        return Finalize(state);
    }

    /// <summary>The SplitMix64 output function (a bijection on 64-bit values, Stafford's "Mix13" variant).</summary>
    public static ulong Finalize(ulong value)
    {
        unchecked
        {
            var z = value;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            return z ^ (z >> 31);
        }
    }
}

/// <summary>
/// What a run's seed is used for. Each use draws from its own stream, so that, for example, adding a workload client
/// does not change which node a fault hits. The numbers are part of the replay contract: never renumber them.
/// </summary>
public enum SeedStream
{
    /// <summary>The contents of a workload client's txs (one part: the client's index).</summary>
    Workload = 1,

    /// <summary>A fault proxy's jitter and loss draws (one part: the member id it stands in front of).</summary>
    Proxy = 2,

    /// <summary>The order in which a fault picks sets of nodes, rings and bridges (parts: the fault's pick, the node id).</summary>
    FaultTarget = 3,

    /// <summary>The per-run subnet of host mode (mixed with the process id and time on purpose: concurrent runs must differ).</summary>
    HostSubnet = 4,
}

/// <summary>
/// Derives seeds and keys from a seed and a list of parts with SplitMix64: a pure function, the same in every process.
/// Use it, never <see cref="HashCode"/>, wherever something is derived from a chaos run's seed (DESIGN section 9).
/// </summary>
public static class SeedMixer
{
    /// <summary>
    /// Mixes <paramref name="parts"/> into <paramref name="seed"/>, in order. With no parts this is SplitMix64's first
    /// output for <paramref name="seed"/>; each part is folded in with another SplitMix64 step, so that every part changes
    /// the result (the step is a bijection of the part for fixed other inputs) and the order of parts matters.
    /// </summary>
    public static ulong Mix(ulong seed, params ulong[] parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        var mixed = SplitMix64.Finalize(unchecked(seed + SplitMix64.Gamma));
        foreach (var part in parts)
            mixed = SplitMix64.Finalize(unchecked((mixed ^ part) + SplitMix64.Gamma));
        return mixed;
    }

    /// <summary>The run seed as the mixer's 64-bit input (its 32 bits, so a negative seed is not sign-extended).</summary>
    public static ulong FromRunSeed(int runSeed) => unchecked((uint)runSeed);

    /// <summary>A non-negative 32-bit seed derived from a run's seed, a stream and parts (for <see cref="Random"/>).</summary>
    public static int Derive32(int runSeed, SeedStream stream, params ulong[] parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        var mixed = Mix(Mix(FromRunSeed(runSeed), (ulong)stream), parts);
        var derived = (int)(mixed >> 33);
        Invariant.Check(derived >= 0, "a derived seed is non-negative");
        return derived;
    }

    /// <summary>
    /// A <see cref="Random"/> seeded with <see cref="Derive32"/>. A seeded <see cref="Random"/> gives the same sequence
    /// in every process (it is only the unseeded one that draws its seed from the OS).
    /// </summary>
    public static Random CreateRandom(int runSeed, SeedStream stream, params ulong[] parts)
        => new(Derive32(runSeed, stream, parts));
}
