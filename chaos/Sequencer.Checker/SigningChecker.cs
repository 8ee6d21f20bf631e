using System.Globalization;
using Sequencer.Client;

namespace Sequencer.Checker;

/// <summary>What one node serves about signing: its signed commitments and, on a signer, its record of nonce uses.</summary>
/// <param name="NodeId">The node.</param>
/// <param name="Commitments">Every signed commitment it serves, by height.</param>
/// <param name="NonceUses">Its recorded nonce uses (empty on a node that does not sign).</param>
public sealed record NodeSigning(int NodeId, IReadOnlyList<CommitmentResponse> Commitments, IReadOnlyList<NonceUseDto> NonceUses);

/// <summary>
/// The signing invariants of DESIGN section 7, checked from what the nodes serve with a Schnorr verifier that shares no
/// code with the nodes (<see cref="SchnorrVerifier"/>) and headers recomputed here.
/// </summary>
public static class SigningChecker
{
    private const int MaxReported = 5;

    /// <summary>Reads every node's signed commitments and nonce uses; nodes that do not answer are named in <paramref name="unreachable"/>.</summary>
    public static async Task<IReadOnlyList<NodeSigning>> ReadAsync(IReadOnlyList<(int NodeId, SequencerClient Client)> nodes, List<int> unreachable, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentNullException.ThrowIfNull(unreachable);
        var result = new List<NodeSigning>();
        foreach (var (nodeId, client) in nodes)
        {
            try
            {
                result.Add(new NodeSigning(nodeId, await client.GetAllCommitmentsAsync(token).ConfigureAwait(false), await client.GetAllNonceUsesAsync(token).ConfigureAwait(false)));
            }
            catch (SequencerApiException)
            {
                unreachable.Add(nodeId);
            }
        }

        return result;
    }

    /// <summary>Runs INV-SIGVALID, INV-ONESIG and INV-NONCE.</summary>
    /// <param name="signing">What each node serves.</param>
    /// <param name="chains">Each node's applied log (the headers the signatures must be over).</param>
    /// <param name="groupKeys">The group key of each key epoch (33-byte compressed), as the key files say.</param>
    /// <param name="observed">Signatures seen served during the run (samples), checked like the final ones.</param>
    public static IReadOnlyList<InvariantResult> Check(IReadOnlyList<NodeSigning> signing, IReadOnlyList<NodeChain> chains, IReadOnlyDictionary<ulong, byte[]> groupKeys,
        IReadOnlyList<(int NodeId, CommitmentResponse Commitment)>? observed = null)
    {
        ArgumentNullException.ThrowIfNull(signing);
        ArgumentNullException.ThrowIfNull(chains);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var served = signing.SelectMany(s => s.Commitments.Select(c => (s.NodeId, Commitment: c))).Concat(observed ?? []).ToList();

        // Verify each distinct signature once, on every core, before the checks read the results.
        var distinct = served.Select(s => s.Commitment).DistinctBy(c => (c.Commitment, c.Signature.R, c.Signature.Z, c.KeyEpoch)).ToList();
        Parallel.ForEach(distinct, c =>
        {
            if (groupKeys.TryGetValue(ulong.Parse(c.KeyEpoch, CultureInfo.InvariantCulture), out var key) && c.Commitment.Length == 66)
                Verify(Convert.FromHexString(c.Commitment.AsSpan(2)), Signature(c), key);
        });
        return [CheckValid(served, chains, groupKeys), CheckOneSignature(served, groupKeys), CheckNonces(signing)];
    }

    /// <summary>
    /// INV-SIGVALID: every served signature verifies under its key epoch's group key, over the commitment recomputed from
    /// the served header, and that header is the one in the node's log at that height.
    /// </summary>
    public static InvariantResult CheckValid(IReadOnlyList<(int NodeId, CommitmentResponse Commitment)> served, IReadOnlyList<NodeChain> chains, IReadOnlyDictionary<ulong, byte[]> groupKeys)
    {
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(chains);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var problems = new List<string>();
        var logs = chains.ToDictionary(c => c.NodeId);
        foreach (var (nodeId, commitment) in served)
        {
            var header = InvariantChecker.ToHeader(commitment.Header);
            var recomputed = header.Commitment.ToString();
            var epoch = ulong.Parse(commitment.KeyEpoch, CultureInfo.InvariantCulture);
            if (!string.Equals(recomputed, commitment.Commitment, StringComparison.OrdinalIgnoreCase))
                problems.Add($"n{nodeId} height {header.Height}: served commitment {commitment.Commitment} is not the header's {recomputed}");
            else if (!groupKeys.TryGetValue(epoch, out var key))
                problems.Add($"n{nodeId} height {header.Height}: signed under unknown key epoch {epoch}");
            else if (header.KeyEpoch != epoch)
                problems.Add($"n{nodeId} height {header.Height}: the header is of key epoch {header.KeyEpoch}, the signature of {epoch}");
            else if (!Verify(header.Commitment.ToArray(), Signature(commitment), key))
                problems.Add($"n{nodeId} height {header.Height}: the signature does not verify under the group key of epoch {epoch}");
            else if (logs.TryGetValue(nodeId, out var log) && header.Height <= (ulong)log.Batches.Count
                && !string.Equals(log.Batches[(int)header.Height - 1].Hash, recomputed, StringComparison.OrdinalIgnoreCase))
                problems.Add($"n{nodeId} height {header.Height}: signed a header that is not the one in its log");
        }

        return Result("INV-SIGVALID", problems, $"{served.Count} served signatures verify under the group key, over headers in the logs");
    }

    /// <summary>INV-ONESIG: at most one commitment per (key epoch, height) carries a valid group signature, across every node and every observation.</summary>
    public static InvariantResult CheckOneSignature(IReadOnlyList<(int NodeId, CommitmentResponse Commitment)> served, IReadOnlyDictionary<ulong, byte[]> groupKeys)
    {
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(groupKeys);
        var problems = new List<string>();
        var valid = served
            .Where(s => groupKeys.TryGetValue(ulong.Parse(s.Commitment.KeyEpoch, CultureInfo.InvariantCulture), out var key)
                && Verify(Convert.FromHexString(s.Commitment.Commitment[2..]), Signature(s.Commitment), key))
            .GroupBy(s => (s.Commitment.KeyEpoch, s.Commitment.Header.Height));
        var heights = 0;
        foreach (var group in valid)
        {
            heights++;
            var distinct = group.Select(g => g.Commitment.Commitment.ToLowerInvariant()).Distinct().ToList();
            if (distinct.Count > 1)
                problems.Add($"epoch {group.Key.KeyEpoch} height {group.Key.Height}: {distinct.Count} different commitments carry valid signatures ({string.Join(", ", distinct)})");
        }

        return Result("INV-ONESIG", problems, $"{heights} (key epoch, height) pairs each have exactly one signed commitment");
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

    private static byte[] Signature(CommitmentResponse commitment)
        => [.. Convert.FromHexString(commitment.Signature.R.AsSpan(2)), .. Convert.FromHexString(commitment.Signature.Z.AsSpan(2))];

    private static InvariantResult Result(string name, List<string> problems, string passedDetail)
        => problems.Count == 0
            ? new InvariantResult(name, true, passedDetail)
            : new InvariantResult(name, false, string.Join("; ", problems.Take(MaxReported)) + (problems.Count > MaxReported ? $"; and {problems.Count - MaxReported} more" : string.Empty));
}
