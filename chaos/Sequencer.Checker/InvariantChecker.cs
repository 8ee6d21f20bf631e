using System.Globalization;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Checker;

/// <summary>One invariant's verdict.</summary>
/// <param name="Name">The DESIGN section 7 name, e.g. INV-ORDER.</param>
/// <param name="Passed">Whether it holds.</param>
/// <param name="Detail">What was checked, or the first violations found.</param>
public sealed record InvariantResult(string Name, bool Passed, string Detail);

/// <summary>One node's applied log as read over the API.</summary>
/// <param name="NodeId">The node.</param>
/// <param name="Batches">Its batches from height 1 up.</param>
public sealed record NodeChain(int NodeId, IReadOnlyList<BatchResponse> Batches);

/// <summary>
/// Checks the safety invariants of DESIGN section 7 over a workload history and the applied logs of every node:
/// INV-ORDER, INV-CHAIN, INV-NODUP, INV-ACKED and INV-REALTIME. Every check recomputes what it can (commitments,
/// Merkle roots) independently of what the nodes claim.
/// </summary>
public static class InvariantChecker
{
    private const int MaxReported = 5;

    /// <summary>Runs every safety check.</summary>
    public static IReadOnlyList<InvariantResult> Check(IReadOnlyList<HistoryOp> history, IReadOnlyList<NodeChain> chains)
    {
        ArgumentNullException.ThrowIfNull(history);
        ArgumentNullException.ThrowIfNull(chains);
        var longest = chains.OrderByDescending(c => c.Batches.Count).FirstOrDefault()?.Batches ?? [];
        var positions = PositionsOf(longest, out var duplicates);
        return
        [
            CheckOrder(chains),
            CheckChain(chains),
            CheckNoDuplicates(duplicates, positions.Count),
            CheckAcknowledged(history, positions),
            CheckRealtime(history, positions),
        ];
    }

    /// <summary>INV-ORDER: the applied batch sequences of all nodes are prefixes of one another.</summary>
    public static InvariantResult CheckOrder(IReadOnlyList<NodeChain> chains)
    {
        ArgumentNullException.ThrowIfNull(chains);
        var problems = new List<string>();
        for (var a = 0; a < chains.Count; a++)
        {
            for (var b = a + 1; b < chains.Count; b++)
            {
                var shorter = Math.Min(chains[a].Batches.Count, chains[b].Batches.Count);
                for (var i = 0; i < shorter; i++)
                {
                    if (chains[a].Batches[i].Hash != chains[b].Batches[i].Hash)
                    {
                        problems.Add($"node{chains[a].NodeId} and node{chains[b].NodeId} differ at height {i + 1}");
                        break;
                    }
                }
            }
        }

        var lengths = string.Join(", ", chains.Select(c => $"node{c.NodeId}: {c.Batches.Count}"));
        return Result("INV-ORDER", problems, $"every pair of logs is prefix-consistent (heights {lengths})");
    }

    /// <summary>
    /// INV-CHAIN: heights are contiguous from 1, parentHash(h) == hash(header(h-1)), each hash is the commitment of
    /// its header, each txRoot the Merkle root of its txs, and each historyRoot the root over every earlier commitment
    /// (the history roots recomputed with the checker's own Merkle code).
    /// </summary>
    public static InvariantResult CheckChain(IReadOnlyList<NodeChain> chains)
    {
        ArgumentNullException.ThrowIfNull(chains);
        var problems = new List<string>();
        foreach (var chain in chains)
        {
            var parent = Hash32.Zero;
            var history = new CheckerMerkle.Accumulator();
            for (var i = 0; i < chain.Batches.Count && problems.Count < MaxReported; i++)
            {
                var batch = chain.Batches[i];
                var header = batch.Header;
                if (!string.Equals(header.HistoryRoot, "0x" + Convert.ToHexStringLower(history.Root), StringComparison.OrdinalIgnoreCase))
                    problems.Add($"node{chain.NodeId}: historyRoot of height {i + 1} is not the root over the {i} commitments before it");
                var expectedHeight = (ulong)i + 1;
                if (ulong.Parse(header.Height, CultureInfo.InvariantCulture) != expectedHeight)
                    problems.Add($"node{chain.NodeId}: batch {i + 1} claims height {header.Height}");
                if (Hash32.Parse(header.ParentHash) != parent)
                    problems.Add($"node{chain.NodeId}: parentHash of height {expectedHeight} does not link to height {expectedHeight - 1}");
                var leaves = batch.Txs.Select(t => Hash32.Parse(t)).ToArray();
                if (MerkleTree.ComputeRoot(leaves) != Hash32.Parse(header.TxRoot) || leaves.Length != header.TxCount)
                    problems.Add($"node{chain.NodeId}: txRoot of height {expectedHeight} is not the Merkle root of its txs");
                var recomputed = ToHeader(header).Commitment;
                if (recomputed != Hash32.Parse(batch.Hash))
                    problems.Add($"node{chain.NodeId}: hash of height {expectedHeight} is not the commitment of its header");
                parent = recomputed;
                history.Add(recomputed.ToArray());
            }
        }

        return Result("INV-CHAIN", problems, $"{chains.Sum(c => c.Batches.Count)} headers link, and their commitments, tx roots and history roots recompute");
    }

    private static InvariantResult CheckNoDuplicates(List<string> duplicates, int ordered)
        => Result("INV-NODUP", duplicates, $"{ordered} distinct txs, none ordered twice");

    /// <summary>INV-ACKED: every tx acknowledged as ordered is in the final order exactly once, where it was acknowledged.</summary>
    private static InvariantResult CheckAcknowledged(IReadOnlyList<HistoryOp> history, Dictionary<string, TxPosition> positions)
    {
        var problems = new List<string>();
        var acknowledged = 0;
        foreach (var op in history.Where(o => o.Outcome == OpOutcome.Ok))
        {
            acknowledged++;
            if (!positions.TryGetValue(op.TxHash, out var position))
                problems.Add($"{op.TxHash} was acknowledged at height {op.Height} index {op.Index} but is not in the final order (lost)");
            else if (position.Height != op.Height || position.Index != op.Index)
                problems.Add($"{op.TxHash} was acknowledged at height {op.Height} index {op.Index} but is at height {position.Height} index {position.Index}");
        }

        return Result("INV-ACKED", problems, $"{acknowledged} acknowledged submits are in the final order at their acknowledged positions");
    }

    /// <summary>
    /// INV-REALTIME: if submit A completed before submit B was invoked, A is ordered before B. A tx's interval runs
    /// from its first invocation to its first acknowledgement (a retry of the same tx keeps its first position).
    /// </summary>
    private static InvariantResult CheckRealtime(IReadOnlyList<HistoryOp> history, Dictionary<string, TxPosition> positions)
    {
        var firstInvoke = new Dictionary<string, long>();
        foreach (var op in history)
            firstInvoke[op.TxHash] = firstInvoke.TryGetValue(op.TxHash, out var t) ? Math.Min(t, op.InvokedNs) : op.InvokedNs;
        var intervals = history.Where(o => o.Outcome == OpOutcome.Ok && positions.ContainsKey(o.TxHash))
            .GroupBy(o => o.TxHash)
            .Select(g => (Hash: g.Key, Invoked: firstInvoke[g.Key], Completed: g.Min(o => o.CompletedNs), Position: positions[g.Key]))
            .ToList();

        var byCompletion = intervals.OrderBy(i => i.Completed).ToList();
        var byInvocation = intervals.OrderBy(i => i.Invoked).ToList();
        var problems = new List<string>();
        var next = 0;
        (string Hash, TxPosition Position)? latest = null;
        foreach (var b in byInvocation)
        {
            // Every op that completed before b was invoked must be ordered before b.
            while (next < byCompletion.Count && byCompletion[next].Completed < b.Invoked)
            {
                var a = byCompletion[next++];
                if (latest is null || Compare(a.Position, latest.Value.Position) > 0)
                    latest = (a.Hash, a.Position);
            }

            if (latest is { } before && Compare(before.Position, b.Position) >= 0 && problems.Count < MaxReported)
                problems.Add($"{before.Hash} completed before {b.Hash} was invoked, yet is ordered at {before.Position.Height}/{before.Position.Index}, not before {b.Position.Height}/{b.Position.Index}");
        }

        return Result("INV-REALTIME", problems, $"{intervals.Count} acknowledged txs respect real-time order");
    }

    private static int Compare(TxPosition a, TxPosition b) => a.Height != b.Height ? a.Height.CompareTo(b.Height) : a.Index.CompareTo(b.Index);

    private static Dictionary<string, TxPosition> PositionsOf(IReadOnlyList<BatchResponse> batches, out List<string> duplicates)
    {
        var positions = new Dictionary<string, TxPosition>(StringComparer.OrdinalIgnoreCase);
        duplicates = [];
        foreach (var batch in batches)
        {
            var height = ulong.Parse(batch.Header.Height, CultureInfo.InvariantCulture);
            for (var i = 0; i < batch.Txs.Count; i++)
            {
                if (!positions.TryAdd(batch.Txs[i], new TxPosition(height, i)) && duplicates.Count < MaxReported)
                    duplicates.Add($"{batch.Txs[i]} is ordered at {positions[batch.Txs[i]].Height}/{positions[batch.Txs[i]].Index} and again at {height}/{i}");
            }
        }

        return positions;
    }

    /// <summary>Rebuilds a header from its API form.</summary>
    public static BatchHeader ToHeader(HeaderDto header)
    {
        ArgumentNullException.ThrowIfNull(header);
        return header.ToHeader();
    }

    private static InvariantResult Result(string name, List<string> problems, string passedDetail)
        => problems.Count == 0
            ? new InvariantResult(name, true, passedDetail)
            : new InvariantResult(name, false, string.Join("; ", problems.Take(MaxReported)) + (problems.Count > MaxReported ? $"; and {problems.Count - MaxReported} more" : string.Empty));
}
