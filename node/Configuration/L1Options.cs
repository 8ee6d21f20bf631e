using System.Text.Json.Serialization;

namespace Sequencer.Node.Configuration;

/// <summary>
/// Where signed heads go: an Ethereum JSON-RPC endpoint, the inbox contract on it, and the funded key that pays for
/// posts (a file or <c>SEQUENCER_L1_KEY</c>; never logged). Every node watches the contract to serve the
/// <c>posted</c> and <c>finalized</c> levels; the leader posts.
/// </summary>
public sealed record L1Options
{
    /// <summary>The L1 JSON-RPC endpoint.</summary>
    public string Rpc { get; init; } = "http://127.0.0.1:8545";

    /// <summary>The inbox contract's address (0x, 20 bytes).</summary>
    public string Contract { get; init; } = string.Empty;

    /// <summary>A file holding the poster's private key (0x-prefixed hex, owner-only); or set <c>SEQUENCER_L1_KEY</c>. Without a key the node only watches.</summary>
    public string? KeyFile { get; init; }

    /// <summary>Blocks below the latest at which a post is final; null: the L1's <c>finalized</c> block tag.</summary>
    public int? FinalityDepth { get; init; }

    /// <summary>The least number of L1 blocks between two posts (1: at most one post per block).</summary>
    public int PostEveryBlocks { get; init; } = 1;

    /// <summary>The L1 block to scan the contract's events from (its deployment block).</summary>
    public ulong StartBlock { get; init; }

    /// <summary>How often the L1 is polled, in ms.</summary>
    public int PollMs { get; init; } = 250;

    /// <summary>Blocks a post may wait unmined before its fees are bumped.</summary>
    public int BumpAfterBlocks { get; init; } = 3;

    /// <summary>The most a post may offer per gas, in gwei (bumps stop there).</summary>
    public int MaxFeeGwei { get; init; } = 500;

    /// <summary>Problems, one sentence each.</summary>
    [JsonIgnore]
    public IEnumerable<string> Problems
    {
        get
        {
            if (!Uri.TryCreate(Rpc, UriKind.Absolute, out var rpc) || rpc.Scheme is not ("http" or "https"))
                yield return $"the L1 RPC \"{Rpc}\" is not an http(s) URL";
            if (Contract.Length != 42 || !Contract.StartsWith("0x", StringComparison.OrdinalIgnoreCase) || !Contract[2..].All(Uri.IsHexDigit))
                yield return $"the L1 contract \"{Contract}\" is not a 0x-prefixed 20-byte address";
            if (KeyFile is not null && !File.Exists(KeyFile))
                yield return $"the L1 key file \"{KeyFile}\" does not exist";
            if (FinalityDepth is < 0 or > 10_000)
                yield return "the L1 finality depth must be in [0, 10000]";
            if (PostEveryBlocks is < 1 or > 10_000)
                yield return "posts every N L1 blocks needs N in [1, 10000]";
            if (PollMs is < 10 or > 60_000)
                yield return "the L1 poll interval must be in [10, 60000] ms";
            if (BumpAfterBlocks is < 1 or > 1_000)
                yield return "the fee bump wait must be in [1, 1000] blocks";
            if (MaxFeeGwei is < 1 or > 100_000)
                yield return "the most a post offers must be in [1, 100000] gwei";
        }
    }

    /// <summary>Every problem.</summary>
    public IReadOnlyList<string> Validate() => [.. Problems];
}
