using System.Globalization;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Ethereum;
using Sequencer.L1;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.LightClient;

/// <summary>The levels of the finality ladder (DESIGN section 2), lowest first.</summary>
public enum FinalityLevel
{
    /// <summary>Nothing proven: the bundle does not even show the tx in a well-formed header.</summary>
    None,

    /// <summary>The tx is in a header with that commitment (the node's word that the header is committed).</summary>
    Ordered,

    /// <summary>A head signed by the pinned group key covers the header.</summary>
    Signed,

    /// <summary>The pinned L1 inbox accepted a head that covers the header.</summary>
    Posted,

    /// <summary>That L1 block is final.</summary>
    Finalized,
}

/// <summary>One check a light client made, and what it found.</summary>
/// <param name="Name">The check: tx-proof, header-commitment, head-commitment, history-proof, key-rotation, head-key-epoch, head-signature, l1-head-commitment, l1-history-proof, l1-event, l1-finality.</param>
/// <param name="Passed">Whether it held.</param>
/// <param name="Detail">The evidence, or why it failed.</param>
/// <param name="Pending">It did not hold, but that proves no lie: the L1 block is not final by the client's own rule
/// yet, or the client could not read its L1. The level stays below it; the verdict has no failure.</param>
public sealed record Check(string Name, bool Passed, string Detail, bool Pending = false);

/// <summary>What a light client proved about a tx.</summary>
/// <param name="TxHash">The tx.</param>
/// <param name="Proven">The highest level proven with the pinned key (and the pinned L1).</param>
/// <param name="Claimed">The level the node claimed.</param>
/// <param name="Checks">Every check, in order.</param>
public sealed record Verdict(string TxHash, FinalityLevel Proven, string Claimed, IReadOnlyList<Check> Checks)
{
    /// <summary>The first check that failed, or null: where a lying node was caught.</summary>
    public Check? Failed => Checks.FirstOrDefault(c => !c.Passed && !c.Pending);

    /// <summary>True when the node claimed more than could be proven (a lie, or an L1 the client cannot see yet).</summary>
    public bool Overclaimed => Enum.TryParse<FinalityLevel>(Claimed, ignoreCase: true, out var claimed) && claimed > Proven;
}

/// <summary>Where the client reads the L1 itself: an endpoint and the inbox it pins, and when a block counts as final.</summary>
/// <param name="Rpc">The L1 JSON-RPC client (the light client's own endpoint, not the node).</param>
/// <param name="Inbox">The pinned inbox contract.</param>
/// <param name="FinalityDepth">Blocks below the latest at which a block is final; null: the L1's finalized tag.</param>
public sealed record L1View(EthRpcClient Rpc, Address Inbox, int? FinalityDepth = null);

/// <summary>
/// Verifies a proof bundle (<c>GET /v1/proofs/{tx}</c>) with nothing but the pinned group key and, for the L1 levels,
/// the client's own L1 reads. Each level is proven only when every check below it holds; the verdict names the first
/// check that failed, so a lying node is caught with the reason.
/// </summary>
public static class TxVerifier
{
    /// <summary>Verifies <paramref name="bundle"/> for <paramref name="txHash"/> under <paramref name="groupKey"/> (key epoch <paramref name="keyEpoch"/>).</summary>
    public static Task<Verdict> VerifyAsync(string txHash, ProofBundleResponse bundle, ECPoint groupKey, ulong keyEpoch, L1View? l1, CancellationToken token = default)
        => VerifyAsync(txHash, bundle, new KeyChain(groupKey, keyEpoch), l1, null, token);

    /// <summary>
    /// Verifies <paramref name="bundle"/> for <paramref name="txHash"/> under the trusted <paramref name="keys"/>. When the
    /// covering head is of a key epoch newer than any trusted one, the hand-overs in <paramref name="keyEpochs"/> (a
    /// node's <c>GET /v1/keys</c>, untrusted) are verified first (check "key-rotation"), and the keys they reach added.
    /// </summary>
    public static async Task<Verdict> VerifyAsync(string txHash, ProofBundleResponse bundle, KeyChain keys, L1View? l1, IReadOnlyList<KeyEpochDto>? keyEpochs,
        CancellationToken token = default)
    {
        ArgumentNullException.ThrowIfNull(bundle);
        ArgumentNullException.ThrowIfNull(keys);
        var checks = new List<Check>();
        var proven = FinalityLevel.None;
        Verdict Done() => new(txHash, proven, bundle.Level, checks);
        bool Add(string name, bool passed, string detail, bool pending = false)
        {
            checks.Add(new Check(name, passed, detail, !passed && pending));
            return passed;
        }

        BatchHeader header;
        try
        {
            header = bundle.Header.ToHeader();
            var hash = Hash32.Parse(txHash);
            if (!Add("tx-proof", bundle.Tx.Hash.Equals(txHash, StringComparison.OrdinalIgnoreCase) && bundle.Tx.Height == bundle.Header.Height
                    && MerkleTree.VerifyInclusion(bundle.Tx.Index, header.TxCount, hash, Hashes(bundle.Tx.Proof), header.TxRoot),
                    $"the audit path puts tx {Short(txHash)} at index {bundle.Tx.Index} of batch {header.Height}'s txRoot {Short(header.TxRoot.ToString())}"))
                return Done();
            if (!Add("header-commitment", header.Commitment == Hash32.Parse(bundle.Commitment),
                    $"batch {header.Height}'s header recomputes to commitment {Short(header.Commitment.ToString())}"))
                return Done();
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            Add("bundle-format", false, "the bundle is malformed: " + e.Message);
            return Done();
        }

        proven = FinalityLevel.Ordered;
        if (bundle.Head is not { } signedHead)
            return Done();
        BatchHeader head;
        try
        {
            head = signedHead.Header.ToHeader();
            if (!Add("head-commitment", head.Commitment == Hash32.Parse(signedHead.Commitment), $"head {head.Height}'s header recomputes to its commitment"))
                return Done();
            if (!Add("history-proof", Covers(header, head, bundle.HistoryProof), $"batch {header.Height}'s commitment is leaf {header.Height - 1} of head {head.Height}'s history"))
                return Done();
            if (head.KeyEpoch > keys.NewestEpoch && keyEpochs is not null)
            {
                var problem = keys.Extend(head.ChainId, keyEpochs);
                if (!Add("key-rotation", head.KeyEpoch <= keys.NewestEpoch, head.KeyEpoch <= keys.NewestEpoch
                        ? $"key epoch {head.KeyEpoch} is reached from the pinned key epoch {keys.PinnedEpoch}: each hand-over verifies under the key before it"
                        : problem ?? $"the node shows no hand-over beyond key epoch {keys.NewestEpoch}"))
                    return Done();
            }

            var key = keys.KeyOf(head.KeyEpoch);
            if (!Add("head-key-epoch", key is not null, key is null
                    ? $"head {head.Height} is of key epoch {head.KeyEpoch}; no trusted key is of it (pinned: key epoch {keys.PinnedEpoch}, newest trusted: {keys.NewestEpoch})"
                    : $"head {head.Height} is of key epoch {head.KeyEpoch}: {keys.Describe(head.KeyEpoch)}"))
                return Done();
            var signature = FrostSignature.Decode(signedHead.SignatureBytes());
            if (!Add("head-signature", Frost.Verify(head.Commitment.ToArray(), signature, key!), $"head {head.Height}'s FROST signature verifies under {keys.Describe(head.KeyEpoch)}"))
                return Done();
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            Add("head-format", false, "the signed head is malformed: " + e.Message);
            return Done();
        }

        proven = FinalityLevel.Signed;
        if (bundle.L1 is not { } post || l1 is null)
        {
            if (bundle.L1 is not null)
                Add("l1-pinned", false, "the node names an L1 post, but no L1 endpoint and inbox are pinned: it cannot be proven", pending: true);
            return Done();
        }

        BatchHeader posted;
        ulong block;
        try
        {
            posted = post.Head.Header.ToHeader();
            block = ulong.Parse(post.BlockNumber, CultureInfo.InvariantCulture);
            if (!Add("l1-head-commitment", posted.Commitment == Hash32.Parse(post.Head.Commitment), $"posted head {posted.Height}'s header recomputes to its commitment"))
                return Done();
            if (!Add("l1-history-proof", Covers(header, posted, post.HistoryProof), $"batch {header.Height}'s commitment is leaf {header.Height - 1} of posted head {posted.Height}'s history"))
                return Done();
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            Add("l1-format", false, "the L1 part is malformed: " + e.Message);
            return Done();
        }

        // The client's own L1 read: a HeadPosted event of the pinned inbox in that block with that height and commitment.
        try
        {
            var events = await new InboxReader(l1.Rpc, l1.Inbox).HeadsPostedAsync(block, block, token).ConfigureAwait(false);
            var match = events.FirstOrDefault(e => e.Height == posted.Height && e.Commitment == posted.Commitment && !e.Log.Removed);
            if (!Add("l1-event", match is not null, match is null
                    ? $"the pinned inbox {l1.Inbox} has no HeadPosted({posted.Height}, {Short(posted.Commitment.ToString())}) in block {block}"
                    : $"the pinned inbox {l1.Inbox} holds HeadPosted({posted.Height}, {Short(posted.Commitment.ToString())}) in block {block}, tx {Short(EthHex.Bytes(match.Log.TransactionHash))}"))
                return Done();
            proven = FinalityLevel.Posted;
            var latest = await l1.Rpc.BlockNumberAsync(token).ConfigureAwait(false);
            var final = l1.FinalityDepth is { } depth
                ? (latest > (ulong)depth ? latest - (ulong)depth : 0)
                : (await l1.Rpc.GetBlockAsync("finalized", token).ConfigureAwait(false))?.Number ?? 0;
            if (Add("l1-finality", block <= final, $"block {block} {(block <= final ? "is" : "is not yet")} final (the final block is {final}, latest {latest}{(l1.FinalityDepth is { } d ? $": {d} blocks deep" : ": the L1's finalized tag")})", pending: true))
                proven = FinalityLevel.Finalized;
        }
        catch (Exception e) when (e is HttpRequestException or EthRpcException or FormatException or TaskCanceledException)
        {
            Add("l1-read", false, "the L1 could not be read: " + e.Message, pending: true);
        }

        return Done();
    }

    // The header's commitment is in the head's history (or is the head).
    private static bool Covers(BatchHeader header, BatchHeader head, IReadOnlyList<string> proof)
    {
        if (head.Height == header.Height)
            return proof.Count == 0 && head.Commitment == header.Commitment;
        return head.Height > header.Height
            && MerkleTree.VerifyInclusion((long)header.Height - 1, (long)head.Height - 1, header.Commitment, Hashes(proof), head.HistoryRoot);
    }

    private static Hash32[] Hashes(IReadOnlyList<string> proof) => [.. proof.Select(p => Hash32.Parse(p))];

    private static string Short(string hex) => hex.Length > 14 ? hex[..10] + ".." + hex[^4..] : hex;
}
