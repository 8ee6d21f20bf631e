using Sequencer.Client;

namespace Sequencer.Checker;

/// <summary>A head the inbox contract accepted (a HeadPosted event that no reorg removed).</summary>
/// <param name="Height">The head's height.</param>
/// <param name="Commitment">Its commitment, 0x hex.</param>
/// <param name="Block">The L1 block.</param>
public sealed record PostedHead(ulong Height, string Commitment, ulong Block);

/// <summary>
/// INV-L1PREFIX (DESIGN section 7): the contract's posted heads are a prefix of the cluster's signed chain. Every
/// posted head is the cluster's header at its height (the checker compares the commitment with every node's applied
/// log, whose commitments INV-CHAIN recomputes), heights strictly increase in L1 order, and the contract's state is
/// the last of them.
/// </summary>
public static class L1Checker
{
    /// <summary>Checks the posted heads against the chains.</summary>
    /// <param name="posted">The HeadPosted events in L1 order.</param>
    /// <param name="contractHeight">The contract's lastHeight at the end.</param>
    /// <param name="contractHash">Its lastHash, 0x hex.</param>
    /// <param name="chains">Every node's applied log.</param>
    public static InvariantResult Check(IReadOnlyList<PostedHead> posted, ulong contractHeight, string contractHash, IReadOnlyList<NodeChain> chains)
    {
        ArgumentNullException.ThrowIfNull(posted);
        ArgumentNullException.ThrowIfNull(chains);
        var problems = new List<string>();
        ulong previous = 0;
        foreach (var head in posted)
        {
            if (head.Height <= previous)
                problems.Add($"head {head.Height} was posted after head {previous} (block {head.Block})");
            previous = Math.Max(previous, head.Height);
            foreach (var chain in chains)
            {
                var batch = chain.Batches.FirstOrDefault(b => Height(b) == head.Height);
                if (batch is not null && !string.Equals(batch.Hash, head.Commitment, StringComparison.OrdinalIgnoreCase))
                    problems.Add($"the contract holds {head.Commitment} at height {head.Height}, n{chain.NodeId}'s chain {batch.Hash}");
            }

            if (!chains.Any(c => c.Batches.Any(b => Height(b) == head.Height)))
                problems.Add($"no node has height {head.Height}, which the contract holds");
        }

        var last = posted.Count > 0 ? posted[^1] : null;
        if (contractHeight != (last?.Height ?? 0) || (last is not null && !string.Equals(last.Commitment, contractHash, StringComparison.OrdinalIgnoreCase)))
            problems.Add($"the contract's state (height {contractHeight}, {contractHash}) is not its last HeadPosted event ({last?.Height ?? 0})");
        return problems.Count == 0
            ? new InvariantResult("INV-L1PREFIX", true, $"{posted.Count} posted heads, heights increasing up to {contractHeight}, each this chain's head at its height")
            : new InvariantResult("INV-L1PREFIX", false, string.Join("; ", problems.Take(5)));
    }

    private static ulong Height(BatchResponse batch) => ulong.Parse(batch.Header.Height, System.Globalization.CultureInfo.InvariantCulture);
}
