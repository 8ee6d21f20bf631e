using System.Globalization;
using Sequencer.Client;

namespace Sequencer.Checker;

/// <summary>What one node serves about signing: its signed heads, sampled coverage proofs and, on a signer, its record of nonce uses.</summary>
/// <param name="NodeId">The node.</param>
/// <param name="Heads">Every signed head it serves, ascending.</param>
/// <param name="Proofs">Coverage proofs it served for sampled heights (<c>GET /v1/commitments/{h}</c>).</param>
/// <param name="NonceUses">Its recorded nonce uses (empty on a node that does not sign).</param>
public sealed record NodeSigning(int NodeId, IReadOnlyList<HeadDto> Heads, IReadOnlyList<CommitmentResponse> Proofs, IReadOnlyList<NonceUseDto> NonceUses);

/// <summary>
/// The signing invariants of DESIGN section 7, checked from what the nodes serve with a Schnorr verifier and a Merkle
/// implementation that share no code with the nodes (<see cref="SchnorrVerifier"/>, <see cref="CheckerMerkle"/>) and
/// headers recomputed here.
/// </summary>
public static class SigningChecker
{
    private const int MaxReported = 5;

    /// <summary>Coverage proofs read per node at the end of a run (spread over its heights, and the newest ones).</summary>
    public const int ProofSamples = 48;

    /// <summary>Reads every node's signed heads, sampled coverage proofs and nonce uses; nodes that do not answer are named in <paramref name="unreachable"/>.</summary>
    public static async Task<IReadOnlyList<NodeSigning>> ReadAsync(IReadOnlyList<(int NodeId, SequencerClient Client)> nodes, List<int> unreachable, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentNullException.ThrowIfNull(unreachable);
        var result = new List<NodeSigning>();
        foreach (var (nodeId, client) in nodes)
        {
            try
            {
                var heads = await client.GetAllHeadsAsync(token).ConfigureAwait(false);
                var height = ulong.Parse((await client.GetClusterAsync(token).ConfigureAwait(false)).Height, CultureInfo.InvariantCulture);
                var proofs = new List<CommitmentResponse>();
                foreach (var sample in SampleHeights(height, ProofSamples))
                {
                    if (await client.GetCommitmentAsync(sample, token).ConfigureAwait(false) is { } proof)
                        proofs.Add(proof);
                }

                result.Add(new NodeSigning(nodeId, heads, proofs, await client.GetAllNonceUsesAsync(token).ConfigureAwait(false)));
            }
            catch (SequencerApiException)
            {
                unreachable.Add(nodeId);
            }
        }

        return result;
    }

    /// <summary>Up to <paramref name="count"/> heights in [1, <paramref name="height"/>]: the newest few and the rest spread evenly.</summary>
    public static IReadOnlyList<ulong> SampleHeights(ulong height, int count)
    {
        if (height == 0)
            return [];
        var set = new SortedSet<ulong>();
        for (ulong h = height; h >= 1 && set.Count < count / 4; h--)
            set.Add(h);
        var step = Math.Max(1UL, height / (ulong)Math.Max(1, count - set.Count));
        for (ulong h = 1; h <= height && set.Count < count; h += step)
            set.Add(h);
        return [.. set];
    }

    /// <summary>Runs INV-SIGVALID, INV-ONESIG, INV-HEADS and INV-NONCE.</summary>
    /// <param name="signing">What each node serves.</param>
    /// <param name="chains">Each node's applied log (the headers the heads must be).</param>
    /// <param name="groupKeys">The group key of each key epoch (33-byte compressed), as the key files say.</param>
    /// <param name="observedProofs">Coverage proofs seen served during the run (samples), checked like the final ones.</param>
    public static IReadOnlyList<InvariantResult> Check(IReadOnlyList<NodeSigning> signing, IReadOnlyList<NodeChain> chains, IReadOnlyDictionary<ulong, byte[]> groupKeys,
        IReadOnlyList<(int NodeId, CommitmentResponse Proof)>? observedProofs = null)
    {
        ArgumentNullException.ThrowIfNull(signing);
        ArgumentNullException.ThrowIfNull(chains);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var proofs = signing.SelectMany(s => s.Proofs.Select(p => (s.NodeId, Proof: p))).Concat(observedProofs ?? []).ToList();
        var heads = signing.SelectMany(s => s.Heads.Select(h => (s.NodeId, Head: h))).Concat(proofs.Select(p => (p.NodeId, Head: p.Proof.Head))).ToList();

        // Verify each distinct signature once, on every core, before the checks read the results.
        var distinct = heads.Select(h => h.Head).DistinctBy(h => (h.Commitment, h.Signature.R, h.Signature.Z, h.KeyEpoch)).ToList();
        Parallel.ForEach(distinct, h =>
        {
            if (groupKeys.TryGetValue(ulong.Parse(h.KeyEpoch, CultureInfo.InvariantCulture), out var key) && h.Commitment.Length == 66)
                Verify(Convert.FromHexString(h.Commitment.AsSpan(2)), h.SignatureBytes(), key);
        });
        return [CheckValid(heads, chains, groupKeys), CheckOneSignature(heads, groupKeys), CheckHeads(signing, proofs, chains, groupKeys), CheckNonces(signing)];
    }

    /// <summary>
    /// INV-SIGVALID: every served signed head verifies under its key epoch's group key, over the commitment recomputed
    /// from the served header, and that header is the one in the node's log at that height.
    /// </summary>
    public static InvariantResult CheckValid(IReadOnlyList<(int NodeId, HeadDto Head)> served, IReadOnlyList<NodeChain> chains, IReadOnlyDictionary<ulong, byte[]> groupKeys)
    {
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(chains);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var problems = new List<string>();
        var logs = chains.ToDictionary(c => c.NodeId);
        foreach (var (nodeId, head) in served)
        {
            var header = InvariantChecker.ToHeader(head.Header);
            var recomputed = header.Commitment.ToString();
            var epoch = ulong.Parse(head.KeyEpoch, CultureInfo.InvariantCulture);
            if (!string.Equals(recomputed, head.Commitment, StringComparison.OrdinalIgnoreCase))
                problems.Add($"n{nodeId} head {header.Height}: served commitment {head.Commitment} is not the header's {recomputed}");
            else if (!groupKeys.TryGetValue(epoch, out var key))
                problems.Add($"n{nodeId} head {header.Height}: signed under unknown key epoch {epoch}");
            else if (header.KeyEpoch != epoch)
                problems.Add($"n{nodeId} head {header.Height}: the header is of key epoch {header.KeyEpoch}, the signature of {epoch}");
            else if (!Verify(header.Commitment.ToArray(), head.SignatureBytes(), key))
                problems.Add($"n{nodeId} head {header.Height}: the signature does not verify under the group key of epoch {epoch}");
            else if (logs.TryGetValue(nodeId, out var log) && header.Height <= (ulong)log.Batches.Count
                && !string.Equals(log.Batches[(int)header.Height - 1].Hash, recomputed, StringComparison.OrdinalIgnoreCase))
                problems.Add($"n{nodeId} head {header.Height}: signed a header that is not the one in its log");
        }

        return Result("INV-SIGVALID", problems, $"{served.Count} served head signatures verify under the group key, over headers in the logs");
    }

    /// <summary>INV-ONESIG: at most one commitment per (key epoch, height) carries a valid group signature, across every node and every observation.</summary>
    public static InvariantResult CheckOneSignature(IReadOnlyList<(int NodeId, HeadDto Head)> served, IReadOnlyDictionary<ulong, byte[]> groupKeys)
    {
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var problems = new List<string>();
        var valid = served
            .Where(s => groupKeys.TryGetValue(ulong.Parse(s.Head.KeyEpoch, CultureInfo.InvariantCulture), out var key)
                && Verify(Convert.FromHexString(s.Head.Commitment[2..]), s.Head.SignatureBytes(), key))
            .GroupBy(s => (s.Head.KeyEpoch, s.Head.Header.Height));
        var heights = 0;
        foreach (var group in valid)
        {
            heights++;
            var commitments = group.Select(g => g.Head.Commitment.ToLowerInvariant()).Distinct().ToList();
            if (commitments.Count > 1)
                problems.Add($"epoch {group.Key.KeyEpoch} height {group.Key.Height}: {commitments.Count} different commitments carry valid signatures ({string.Join(", ", commitments)})");
        }

        return Result("INV-ONESIG", problems, $"{heights} (key epoch, height) pairs each have exactly one signed commitment");
    }

    /// <summary>
    /// INV-HEADS: every signed head's history contains every lower signed head (its history root, recomputed here from
    /// the agreed log with the checker's own Merkle code, is the root over commitments that include every lower head's),
    /// and every coverage proof served verifies: the proof puts the header's commitment at its leaf of a head at or above
    /// it, and that head's signature verifies.
    /// </summary>
    public static InvariantResult CheckHeads(IReadOnlyList<NodeSigning> signing, IReadOnlyList<(int NodeId, CommitmentResponse Proof)> proofs, IReadOnlyList<NodeChain> chains,
        IReadOnlyDictionary<ulong, byte[]> groupKeys)
    {
        ArgumentNullException.ThrowIfNull(signing);
        ArgumentNullException.ThrowIfNull(proofs);
        ArgumentNullException.ThrowIfNull(chains);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var problems = new List<string>();

        // The longest log is the agreed order (INV-ORDER says the others are its prefixes); its history roots, recomputed here.
        var longest = chains.OrderByDescending(c => c.Batches.Count).FirstOrDefault()?.Batches ?? [];
        var commitments = longest.Select(b => Convert.FromHexString(b.Hash.AsSpan(2))).ToList();
        var roots = new List<byte[]>(commitments.Count + 1);
        var accumulator = new CheckerMerkle.Accumulator();
        roots.Add(accumulator.Root);
        foreach (var commitment in commitments)
        {
            accumulator.Add(commitment);
            roots.Add(accumulator.Root);
        }

        var headsChecked = 0;
        foreach (var node in signing)
        {
            ulong previous = 0;
            foreach (var head in node.Heads)
            {
                headsChecked++;
                var height = ulong.Parse(head.Header.Height, CultureInfo.InvariantCulture);
                if (height <= previous)
                    problems.Add($"n{node.NodeId}: signed heads do not ascend ({previous} then {height})");
                if (height > (ulong)commitments.Count)
                {
                    problems.Add($"n{node.NodeId}: head {height} is above the agreed log ({commitments.Count})");
                }
                else
                {
                    // Its history is the root over every commitment below it, so every lower head is a leaf of it.
                    if (!Hex(roots[(int)height - 1]).Equals(head.Header.HistoryRoot, StringComparison.OrdinalIgnoreCase))
                        problems.Add($"n{node.NodeId}: head {height}'s history root is not the root over the {height - 1} commitments before it");
                    if (previous > 0 && !Hex(commitments[(int)previous - 1]).Equals(node.Heads.First(h => h.Header.Height == previous.ToString(CultureInfo.InvariantCulture)).Commitment, StringComparison.OrdinalIgnoreCase))
                        problems.Add($"n{node.NodeId}: head {previous} is not the agreed header at its height");
                }

                previous = height;
            }
        }

        foreach (var (nodeId, proof) in proofs)
        {
            var height = ulong.Parse(proof.Header.Height, CultureInfo.InvariantCulture);
            var headHeight = ulong.Parse(proof.Head.Header.Height, CultureInfo.InvariantCulture);
            var leaf = Convert.FromHexString(proof.Commitment.AsSpan(2));
            var path = proof.HistoryProof.Select(p => Convert.FromHexString(p.AsSpan(2))).ToList();
            var epoch = ulong.Parse(proof.Head.KeyEpoch, CultureInfo.InvariantCulture);
            var recomputed = InvariantChecker.ToHeader(proof.Header).Commitment.ToString();
            if (!recomputed.Equals(proof.Commitment, StringComparison.OrdinalIgnoreCase))
                problems.Add($"n{nodeId} proof of {height}: the commitment is not its header's");
            else if (headHeight < height)
                problems.Add($"n{nodeId} proof of {height}: the covering head {headHeight} is below it");
            else if (headHeight == height ? path.Count != 0 || !proof.Head.Commitment.Equals(proof.Commitment, StringComparison.OrdinalIgnoreCase)
                : !CheckerMerkle.VerifyInclusion(height - 1, headHeight - 1, leaf, path, Convert.FromHexString(proof.Head.Header.HistoryRoot.AsSpan(2))))
                problems.Add($"n{nodeId} proof of {height}: the history proof does not put it in head {headHeight}'s history root");
            else if (!groupKeys.TryGetValue(epoch, out var key) || !Verify(Convert.FromHexString(InvariantChecker.ToHeader(proof.Head.Header).Commitment.ToString().AsSpan(2)), proof.Head.SignatureBytes(), key))
                problems.Add($"n{nodeId} proof of {height}: head {headHeight}'s signature does not verify");
        }

        return Result("INV-HEADS", problems, $"{headsChecked} served heads each hold every lower head in their history; {proofs.Count} coverage proofs verify");
    }

    /// <summary>
    /// INV-NONCE: no nonce pair (by its public commitment, and by its sequence) served two signing sessions with
    /// different inputs (message, signer set, commitment list), on any signer, across restarts.
    /// </summary>
    public static InvariantResult CheckNonces(IReadOnlyList<NodeSigning> signing)
    {
        ArgumentNullException.ThrowIfNull(signing);
        var problems = new List<string>();
        var total = 0;
        foreach (var node in signing)
        {
            total += node.NonceUses.Count;
            foreach (var group in node.NonceUses.GroupBy(u => u.Commitment.ToLowerInvariant()).Concat(node.NonceUses.GroupBy(u => $"{u.Epoch}/{u.Sequence}")))
            {
                var inputs = group.Select(u => $"{u.Message.ToLowerInvariant()}|{string.Join(",", u.Signers)}|{u.CommitmentList.ToLowerInvariant()}").Distinct().ToList();
                if (inputs.Count > 1)
                    problems.Add($"n{node.NodeId}: nonce {group.Key} served {inputs.Count} sessions with different inputs (heights {string.Join(", ", group.Select(u => u.Height).Distinct())})");
            }
        }

        return Result("INV-NONCE", problems, $"{total} recorded nonce uses on {signing.Count(s => s.NonceUses.Count > 0)} signers, each nonce pair in one session");
    }

    // Each distinct (message, signature, key) is verified once: every node serves the same signatures.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> Verified = new();

    private static bool Verify(byte[] message, byte[] signature, byte[] key)
    {
        if (Verified.Count > 1_000_000)
            Verified.Clear();
        return Verified.GetOrAdd(Convert.ToHexString(message) + Convert.ToHexString(signature) + Convert.ToHexString(key), _ => SchnorrVerifier.Verify(message, signature, key));
    }

    private static string Hex(byte[] bytes) => "0x" + Convert.ToHexStringLower(bytes);

    private static InvariantResult Result(string name, List<string> problems, string passedDetail)
        => problems.Count == 0
            ? new InvariantResult(name, true, passedDetail)
            : new InvariantResult(name, false, string.Join("; ", problems.Take(MaxReported)) + (problems.Count > MaxReported ? $"; and {problems.Count - MaxReported} more" : string.Empty));
}
