using System.Collections.Concurrent;
using System.Globalization;
using Sequencer.Client;
using Sequencer.Ethereum;

namespace Sequencer.Checker;

/// <summary>A signed tx the ethereum workload sent: its sender and nonce.</summary>
public sealed record SentAccount(string Sender, ulong Nonce, int Client);

/// <summary>A tx a node refused with 409 nonce_used, and the holder it named (null when it named none).</summary>
public sealed record NonceRefusal(string TxHash, string? Holder, int Node);

public sealed partial class Workload
{
    /// <summary>Ethereum mode: every tx sent, by hash.</summary>
    public ConcurrentDictionary<string, SentAccount> SentAccounts { get; } = new(StringComparer.Ordinal);

    /// <summary>Ethereum mode: every 409 nonce_used answer.</summary>
    public ConcurrentQueue<NonceRefusal> Refusals { get; } = new();

    private async Task EthereumClientLoopAsync(int client, ulong chainId, CancellationTokenSource done)
    {
        var random = SeedMixer.CreateRandom(options.Seed, SeedStream.Workload, (ulong)client);
        var secret = new byte[32];
        random.NextBytes(secret);
        secret[0] = 0x01; // well below the curve order
        var key = EthKey.FromHex("0x" + Convert.ToHexStringLower(secret));
        var sender = key.Address.ToString().ToLowerInvariant();
        var cursor = client % nodes.Count;
        var avoidUntil = new long[nodes.Count];
        var token = done.Token;
        ulong nonce = 0;
        while (!token.IsCancellationRequested)
        {
            // One tx for this nonce, or two that conflict, each to its own node at the same moment.
            var conflict = nodes.Count > 1 && random.Next(3) == 0;
            var sends = new List<Task<bool>>();
            for (var i = 0; i < (conflict ? 2 : 1); i++)
            {
                var payload = new byte[Math.Max(1, options.TxBytes - 120)];
                random.NextBytes(payload);
                var raw = new EthTransaction { ChainId = chainId, Nonce = nonce, MaxFeePerGas = 1, GasLimit = 21_000, Data = payload }.Sign(key).Raw;
                var hash = "0x" + Convert.ToHexStringLower(Keccak.Hash(raw));
                SentAccounts[hash] = new SentAccount(sender, nonce, client);
                var (slot, nodeId, api) = NextNode(ref cursor, avoidUntil);
                sends.Add(SendOnceAsync(client, raw, hash, slot, nodeId, api, avoidUntil, token));
            }

            bool[] answered;
            try
            {
                answered = await Task.WhenAll(sends).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (answered.Any(ok => ok))
            {
                var total = Interlocked.Increment(ref acknowledged);
                if (options.TargetAcknowledged > 0 && total >= options.TargetAcknowledged)
                    await done.CancelAsync().ConfigureAwait(false);
                nonce++;
                continue;
            }

            // No acknowledgement (a conflict lost to an earlier tx, a fault, a timeout): the cluster says where the
            // sender stands. Until some node answers, the same nonce is tried again with fresh payloads.
            var (_, _, reader) = NextNode(ref cursor, avoidUntil);
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                timeout.CancelAfter(options.RequestTimeout);
                var account = await reader.GetAccountAsync(sender, timeout.Token).ConfigureAwait(false);
                nonce = Math.Max(nonce, ulong.Parse(account.NextNonce, CultureInfo.InvariantCulture));
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                // The workload is stopping. (This read's filter used to let the cancellation through, and the harness
                // exited with code 1 and no report when the stop came during it: soak seed 1975947296.)
                return;
            }
            catch (Exception e) when (e is SequencerApiException or HttpRequestException or OperationCanceledException)
            {
                // Try again next round.
            }

            try
            {
                await Task.Delay(20, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    // One attempt: true when acknowledged. Every outcome is recorded; a 409 nonce_used also with the holder it names.
    private async Task<bool> SendOnceAsync(int client, byte[] raw, string hash, int slot, int nodeId, SequencerClient api, long[] avoidUntil, CancellationToken token)
    {
        var invoked = NowNs();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
        timeout.CancelAfter(options.RequestTimeout);
        try
        {
            var results = await api.SubmitAsync([raw], timeout.Token).ConfigureAwait(false);
            History.Add(new HistoryOp(client, hash, nodeId, invoked, NowNs(), OpOutcome.Ok, ulong.Parse(results[0].Height, CultureInfo.InvariantCulture), results[0].Index, null));
            return true;
        }
        catch (SequencerApiException e) when (!e.IsRetryable)
        {
            if (e.Code == "nonce_used")
                Refusals.Enqueue(new NonceRefusal(hash, e.ConflictsWith, nodeId));
            Record(client, [hash], nodeId, invoked, OpOutcome.Fail, e.Code);
            return false;
        }
        catch (SequencerApiException e)
        {
            Record(client, [hash], nodeId, invoked, e.IsIndeterminate ? OpOutcome.Info : OpOutcome.Fail, e.Code);
            if (e.Status == 0 || e.Code == "connection_refused")
                avoidUntil[slot] = NowNs() + (long)options.AvoidAfterFailure.TotalNanoseconds;
            return false;
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            Record(client, [hash], nodeId, invoked, OpOutcome.Info, "client_timeout");
            avoidUntil[slot] = NowNs() + (long)options.AvoidAfterFailure.TotalNanoseconds;
            return false;
        }
        catch (OperationCanceledException)
        {
            Record(client, [hash], nodeId, invoked, OpOutcome.Info, "stopped");
            throw;
        }
    }
}

/// <summary>
/// INV-NOCONFLICT (issue 13): no two ordered txs share (sender, nonce); each sender's ordered nonces are 0, 1, 2, ... in
/// chain order; every acknowledged tx is the one ordered for its (sender, nonce); a tx refused with nonce_used is not
/// ordered, and the holder it was told of is the ordered tx of that (sender, nonce). Checked on every node's chain.
/// </summary>
public static class NonceConflictChecker
{
    public static InvariantResult Check(IReadOnlyList<NodeChain> chains, IReadOnlyDictionary<string, SentAccount> sent, IReadOnlyCollection<NonceRefusal> refusals, IReadOnlyList<HistoryOp> history)
    {
        var problems = new List<string>();
        var longest = chains.OrderByDescending(c => c.Batches.Count).FirstOrDefault();
        var holders = new Dictionary<(string, ulong), string>();
        foreach (var chain in chains)
        {
            var seen = new Dictionary<(string, ulong), string>();
            var next = new Dictionary<string, ulong>(StringComparer.Ordinal);
            foreach (var batch in chain.Batches)
            {
                foreach (var hash in batch.Txs)
                {
                    if (!sent.TryGetValue(hash, out var account))
                        continue;
                    if (seen.TryGetValue((account.Sender, account.Nonce), out var other))
                        problems.Add($"n{chain.NodeId}: ({account.Sender}, {account.Nonce}) is ordered twice: {other} and {hash}");
                    seen[(account.Sender, account.Nonce)] = hash;
                    var expected = next.GetValueOrDefault(account.Sender);
                    if (account.Nonce != expected)
                        problems.Add($"n{chain.NodeId}: {account.Sender} ordered nonce {account.Nonce} where {expected} was next");
                    next[account.Sender] = account.Nonce + 1;
                }
            }

            if (ReferenceEquals(chain, longest))
                holders = seen;
        }

        var ordered = new HashSet<string>(holders.Values, StringComparer.Ordinal);
        foreach (var op in history.Where(o => o.Outcome == OpOutcome.Ok))
        {
            if (sent.TryGetValue(op.TxHash, out var account) && (!holders.TryGetValue((account.Sender, account.Nonce), out var holder) || holder != op.TxHash))
                problems.Add($"acknowledged {op.TxHash} ({account.Sender}, {account.Nonce}) is not the ordered tx of its nonce (that is {holder ?? "none"})");
        }

        foreach (var refusal in refusals)
        {
            if (ordered.Contains(refusal.TxHash))
                problems.Add($"{refusal.TxHash} was refused with nonce_used by n{refusal.Node} but is ordered");
            if (refusal.Holder is { } named && sent.TryGetValue(refusal.TxHash, out var account)
                && holders.TryGetValue((account.Sender, account.Nonce), out var holder) && holder != named)
            {
                problems.Add($"n{refusal.Node} named {named} as the holder of ({account.Sender}, {account.Nonce}), but {holder} is ordered");
            }
        }

        var conflicts = sent.Values.GroupBy(a => (a.Sender, a.Nonce)).Count(g => g.Count() > 1);
        return problems.Count == 0
            ? new InvariantResult("INV-NOCONFLICT", true, $"{holders.Count} ordered txs of {sent.Count} sent, one per (sender, nonce) on every node, nonces in order; {conflicts} nonces were contested, {refusals.Count} refusals named the holder correctly")
            : new InvariantResult("INV-NOCONFLICT", false, string.Join("; ", problems.Take(10)) + (problems.Count > 10 ? $" (and {problems.Count - 10} more)" : string.Empty));
    }
}
