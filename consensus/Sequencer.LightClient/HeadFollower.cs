using System.Runtime.CompilerServices;
using System.Text.Json;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.LightClient;

/// <summary>A signed head the follower verified.</summary>
/// <param name="Height">Its height.</param>
/// <param name="Commitment">Its commitment.</param>
/// <param name="Node">The node that served it (not trusted: every check was made here).</param>
/// <param name="TimestampMs">Its header's timestamp (the leader's clock when it ordered the batch).</param>
/// <param name="KeyEpoch">The key epoch that signed it.</param>
public sealed record VerifiedHead(ulong Height, Hash32 Commitment, Uri Node, ulong TimestampMs = 0, ulong KeyEpoch = 0);

/// <summary>Something a node served that failed a check (a lie, or a broken stream): the follower moved on to another node.</summary>
/// <param name="Node">The node.</param>
/// <param name="Check">The check that failed, or "connection".</param>
/// <param name="Detail">What was wrong.</param>
public sealed record FollowProblem(Uri Node, string Check, string Detail);

/// <summary>
/// Follows the signed heads of the cluster from any of several nodes (<c>GET /v1/stream/heads</c>), trusting none:
/// each head's commitment is recomputed from its header, its key epoch and FROST signature are checked under the
/// pinned key (or a key the pinned one handed over to, through verified rotations: <see cref="KeyChain"/>; a head of a
/// newer epoch makes the follower ask that node's <c>GET /v1/keys</c> for the hand-overs, and key epochs never go back),
/// and its link proof must put the last verified head's commitment in its history. When a node fails or
/// serves anything that does not verify, the follower moves to the next node and resumes after the last verified head.
/// A node that withholds heads (a stale stream) is caught too: while its stream has brought nothing new for
/// <paramref name="staleAfter"/>, the follower asks another node for the next head, and when that one shows a head
/// above the last verified one, signed under the pinned key, the withholding node is left ("head-stale").
/// </summary>
/// <param name="nodes">The nodes to read from, in order of preference.</param>
/// <param name="keys">The trusted keys: the pinned one, and those it hands over to.</param>
/// <param name="staleAfter">How long a stream may bring no head before another node is asked (default 5 s).</param>
public sealed class HeadFollower(IReadOnlyList<Uri> nodes, KeyChain keys, TimeSpan? staleAfter = null)
{
    private readonly TimeSpan staleAfter = staleAfter ?? TimeSpan.FromSeconds(5);

    /// <summary>A follower that pins <paramref name="groupKey"/> as the key of <paramref name="keyEpoch"/>.</summary>
    public HeadFollower(IReadOnlyList<Uri> nodes, ECPoint groupKey, ulong keyEpoch, TimeSpan? staleAfter = null)
        : this(nodes, new KeyChain(groupKey, keyEpoch), staleAfter)
    {
    }

    /// <summary>The trusted keys (they grow as the follower verifies key rotations).</summary>
    public KeyChain Keys => keys;

    /// <summary>The most bytes of one event line.</summary>
    public const int MaxEventBytes = 1 << 20;

    /// <summary>Problems with nodes, as they happen.</summary>
    public event Action<FollowProblem>? Problem;

    /// <summary>The last verified head, or null before the first.</summary>
    public VerifiedHead? Last { get; private set; }

    /// <summary>
    /// Verified heads from <paramref name="from"/> on (the first is trusted by its signature alone, unless
    /// <paramref name="anchor"/> gives a head already verified that it must link to), for as long as the caller reads.
    /// </summary>
    public async IAsyncEnumerable<VerifiedHead> FollowAsync(ulong from = 1, VerifiedHead? anchor = null, [EnumeratorCancellation] CancellationToken token = default)
    {
        if (nodes.Count == 0)
            throw new InvalidOperationException("the follower was given no node");
        Last = anchor;
        using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        var index = 0;
        var failures = 0;
        while (!token.IsCancellationRequested)
        {
            var node = nodes[index % nodes.Count];
            var start = Last is { } last ? last.Height + 1 : from;
            var channel = System.Threading.Channels.Channel.CreateBounded<VerifiedHead>(64);
            using var connection = CancellationTokenSource.CreateLinkedTokenSource(token);
            var reader = ReadAsync(http, node, start, channel.Writer, connection.Token);
            var delivered = false;
            try
            {
                await foreach (var head in channel.Reader.ReadAllAsync(token).ConfigureAwait(false))
                {
                    delivered = true;
                    yield return head;
                }
            }
            finally
            {
                // The caller stopped reading, or the node's stream ended: close this connection either way.
                await connection.CancelAsync().ConfigureAwait(false);
                await reader.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }

            // The node failed or lied: the next one, after a pause that grows while none serves anything.
            index++;
            failures = delivered ? 0 : failures + 1;
            if (failures >= nodes.Count)
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(2_000, 100 * failures)), token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task ReadAsync(HttpClient http, Uri node, ulong from, System.Threading.Channels.ChannelWriter<VerifiedHead> output, CancellationToken token)
    {
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(node, $"/v1/stream/heads?from={from}"));
            using var connect = CancellationTokenSource.CreateLinkedTokenSource(token);
            connect.CancelAfter(TimeSpan.FromSeconds(5));
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, connect.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                Report(node, "connection", $"HTTP {(int)response.StatusCode}");
                return;
            }

            await using var stream = await response.Content.ReadAsStreamAsync(token).ConfigureAwait(false);
            using var reader = new StreamReader(stream);
            using var stale = CancellationTokenSource.CreateLinkedTokenSource(token);
            var lastNew = Environment.TickCount64;
            var watcher = WatchStaleAsync(node, () => lastNew, stale);
            string? eventName = null;
            while (!stale.IsCancellationRequested)
            {
                // A stream that says nothing for 30 s (the node sends a comment every 15 s) is dead.
                using var quiet = CancellationTokenSource.CreateLinkedTokenSource(token);
                quiet.CancelAfter(TimeSpan.FromSeconds(30));
                using var either = CancellationTokenSource.CreateLinkedTokenSource(quiet.Token, stale.Token);
                string? line;
                try
                {
                    line = await reader.ReadLineAsync(either.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stale.IsCancellationRequested && !token.IsCancellationRequested)
                {
                    return; // Reported by the watcher.
                }

                if (line is null)
                {
                    Report(node, "connection", "the stream ended");
                    return;
                }

                if (line.Length > MaxEventBytes)
                {
                    Report(node, "stream-format", $"an event line of {line.Length} bytes");
                    return;
                }

                if (line.StartsWith("event:", StringComparison.Ordinal))
                {
                    eventName = line[6..].Trim();
                }
                else if (line.StartsWith("data:", StringComparison.Ordinal) && eventName == "head")
                {
                    var head = JsonSerializer.Deserialize(line[5..], ApiJsonContext.Default.StreamedHeadDto);
                    if (head is null || !await KnowsKeyAsync(node, head.Header, report: true, token).ConfigureAwait(false) || Verify(node, head) is not { } verified)
                        return;
                    Last = verified;
                    lastNew = Environment.TickCount64;
                    await output.WriteAsync(verified, token).ConfigureAwait(false);
                }
            }

            await stale.CancelAsync().ConfigureAwait(false);
            await watcher.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
        catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException or JsonException)
        {
            if (!token.IsCancellationRequested)
                Report(node, e is JsonException ? "stream-format" : "connection", e.Message);
        }
        finally
        {
            output.TryComplete();
        }
    }

    // While the stream of `node` brings nothing new, asks the other nodes in turn (one every staleAfter) for the head
    // after the last verified one; one that verifies (signature and key epoch, height above the last) proves the
    // stream stale, and `stale` is cancelled. A lying witness cannot make the follower leave an honest node: it would
    // need a head signed under the pinned key that the honest node does not have.
    private async Task WatchStaleAsync(Uri node, Func<long> lastNew, CancellationTokenSource stale)
    {
        var witnesses = nodes.Where(n => n != node).ToList();
        var turn = 0;
        try
        {
            while (!stale.IsCancellationRequested)
            {
                await Task.Delay(staleAfter, stale.Token).ConfigureAwait(false);
                if (witnesses.Count == 0 || Environment.TickCount64 - lastNew() < staleAfter.TotalMilliseconds)
                    continue;
                var witness = witnesses[turn++ % witnesses.Count];
                var after = Last?.Height ?? 0;
                try
                {
                    using var client = new SequencerClient(witness, TimeSpan.FromSeconds(5), maxConnections: 1);
                    var heads = await client.GetHeadsAsync(after + 1, 1, stale.Token).ConfigureAwait(false);
                    if (heads.Heads.Count == 1 && await KnowsKeyAsync(witness, heads.Heads[0].Header, report: false, stale.Token).ConfigureAwait(false)
                        && Signed(heads.Heads[0]) is { } height && height > after && (Last?.Height ?? 0) == after)
                    {
                        Report(node, "head-stale", $"no head above {after} for {staleAfter.TotalSeconds:0.#} s, while {witness} serves head {height} signed under the pinned key (a node withholding heads, or one cut off from the cluster)");
                        await stale.CancelAsync().ConfigureAwait(false);
                        return;
                    }
                }
                catch (Exception e) when (e is HttpRequestException or SequencerApiException or JsonException or OperationCanceledException && !stale.IsCancellationRequested)
                {
                    // The witness is down or lying: ask the next one next time.
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The stream ended.
        }
    }

    // True when a key is trusted for the head's key epoch; for a newer epoch than any trusted one, after the hand-overs
    // that `node` shows (GET /v1/keys) verified. A node that shows a head of an epoch no verified hand-over reaches is
    // caught ("key-rotation").
    private async Task<bool> KnowsKeyAsync(Uri node, HeaderDto header, bool report, CancellationToken token)
    {
        ulong epoch, chainId;
        try
        {
            epoch = ulong.Parse(header.KeyEpoch, System.Globalization.CultureInfo.InvariantCulture);
            chainId = ulong.Parse(header.ChainId, System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentNullException)
        {
            return true; // Verify reports the malformed header.
        }

        if (epoch <= keys.NewestEpoch)
            return true;
        List<KeyEpochDto> listed;
        try
        {
            using var client = new SequencerClient(node, TimeSpan.FromSeconds(5), maxConnections: 1);
            listed = await client.GetKeysAsync(token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or SequencerApiException or JsonException or OperationCanceledException && !token.IsCancellationRequested)
        {
            if (report)
                Report(node, "connection", $"GET /v1/keys for key epoch {epoch}: {e.Message}");
            return false;
        }

        var problem = keys.Extend(chainId, listed);
        if (epoch <= keys.NewestEpoch)
            return true;
        if (report)
            Fail(node, "key-rotation", problem ?? $"head of key epoch {epoch}, but the node shows no hand-over beyond key epoch {keys.NewestEpoch}");
        return false;
    }

    // The head's height when its commitment, key epoch and signature verify; otherwise null.
    private ulong? Signed(HeadDto dto)
    {
        try
        {
            var header = dto.Header.ToHeader();
            if (header.Commitment != Hash32.Parse(dto.Commitment) || keys.KeyOf(header.KeyEpoch) is null || header.KeyEpoch < (Last?.KeyEpoch ?? 0))
                return null;
            return SignatureHolds(header, dto.Signature) ? header.Height : null;
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            return null;
        }
    }

    // The head's checks; null (and a reported problem) when one fails.
    private VerifiedHead? Verify(Uri node, StreamedHeadDto dto)
    {
        try
        {
            var header = dto.Header.ToHeader();
            if (header.Commitment != Hash32.Parse(dto.Commitment))
                return Fail(node, "head-commitment", $"head {header.Height}'s header does not recompute to its commitment");
            if (keys.KeyOf(header.KeyEpoch) is null)
                return Fail(node, "head-key-epoch", $"head {header.Height} is of key epoch {header.KeyEpoch}, and no trusted key is of it (pinned: key epoch {keys.PinnedEpoch}, newest trusted: {keys.NewestEpoch})");
            if (Last is { } previous && header.KeyEpoch < previous.KeyEpoch)
                return Fail(node, "head-key-epoch", $"head {header.Height} is of key epoch {header.KeyEpoch}, below the last verified head's {previous.KeyEpoch} (an old key signing past its hand-over)");
            if (!SignatureHolds(header, dto.Signature))
                return Fail(node, "head-signature", $"head {header.Height}'s signature does not verify under {keys.Describe(header.KeyEpoch)}");
            if (Last is { } last)
            {
                var linkFrom = ulong.Parse(dto.LinkFrom, System.Globalization.CultureInfo.InvariantCulture);
                if (header.Height <= last.Height)
                    return Fail(node, "head-order", $"head {header.Height} is not above the last verified head {last.Height} (a stale or replayed head)");
                if (linkFrom != last.Height
                    || !MerkleTree.VerifyInclusion((long)last.Height - 1, (long)header.Height - 1, last.Commitment, [.. dto.LinkProof.Select(p => Hash32.Parse(p))], header.HistoryRoot))
                    return Fail(node, "link-proof", $"head {header.Height}'s link proof does not put head {last.Height} ({last.Commitment}) in its history (a fork, or a broken proof)");
            }

            return new VerifiedHead(header.Height, header.Commitment, node, header.TimestampMs, header.KeyEpoch);
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            return Fail(node, "head-format", e.Message);
        }
    }

    // The head's FROST signature (R then z, 0x hex) verifies over its commitment under the trusted key of its epoch.
    private bool SignatureHolds(Sequencer.Core.Ordering.BatchHeader header, SignatureDto signature)
        => keys.KeyOf(header.KeyEpoch) is { } key && Frost.Verify(header.Commitment.ToArray(),
            FrostSignature.Decode([.. Convert.FromHexString(signature.R.AsSpan(2)), .. Convert.FromHexString(signature.Z.AsSpan(2))]), key);

    private VerifiedHead? Fail(Uri node, string check, string detail)
    {
        Report(node, check, detail);
        return null;
    }

    private void Report(Uri node, string check, string detail) => Problem?.Invoke(new FollowProblem(node, check, detail));
}
