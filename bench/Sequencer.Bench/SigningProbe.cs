using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Sequencer.Client;
using Sequencer.Threshold;

namespace Sequencer.Bench;

/// <summary>Ordered-to-signed latency of a height range, read back from the leader.</summary>
/// <param name="Batches">Batches measured.</param>
/// <param name="P50Ms">Median.</param>
/// <param name="P99Ms">99th percentile.</param>
/// <param name="MaxMs">Maximum.</param>
public sealed record SigningLatency(int Batches, double P50Ms, double P99Ms, double MaxMs);

/// <summary>Measures signing: ordered→signed per batch on a running cluster, and the CPU cost of each FROST step.</summary>
public static class SigningProbe
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    /// <summary>Waits until every signer has published half its nonce pool (a fresh cluster makes them first).</summary>
    public static async Task WaitForNoncePoolsAsync(SequencerClient node, TimeSpan timeout, CancellationToken token)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node.BaseUrl, "/v1/signing"), token));
            var signers = document.RootElement.GetProperty("signers").EnumerateArray().ToList();
            if (signers.Count > 0 && signers.All(s => s.GetProperty("publishedNonces").GetInt32() >= 256))
                return;
            await Task.Delay(200, token);
        }
    }

    /// <summary>The applied height of <paramref name="node"/>.</summary>
    public static async Task<ulong> HeightAsync(SequencerClient node, CancellationToken token)
        => ulong.Parse((await node.GetClusterAsync(token)).Height, CultureInfo.InvariantCulture);

    /// <summary>The leader's counters of FROST sessions started and heads signed (GET /v1/signing).</summary>
    public static async Task<(long Sessions, long Heads)> CountersAsync(SequencerClient node, CancellationToken token)
    {
        using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node.BaseUrl, "/v1/signing"), token));
        return (document.RootElement.GetProperty("sessionsStarted").GetInt64(), document.RootElement.GetProperty("headsSigned").GetInt64());
    }

    /// <summary>
    /// Waits (at most 30 s) until <paramref name="node"/> has signed through <paramref name="to"/>, then reads the
    /// commitments of up to <paramref name="samples"/> heights in (<paramref name="from"/>, <paramref name="to"/>] and
    /// returns signedAtMs − orderedAtMs (both the node's own apply times). Null when nothing was signed.
    /// </summary>
    public static async Task<SigningLatency?> MeasureAsync(SequencerClient node, ulong from, ulong to, int samples, CancellationToken token)
    {
        if (to <= from)
            return null;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            using var document = JsonDocument.Parse(await Http.GetStringAsync(new Uri(node.BaseUrl, "/v1/signing"), token));
            if (ulong.Parse(document.RootElement.GetProperty("signedThrough").GetString()!, CultureInfo.InvariantCulture) >= to)
                break;
            await Task.Delay(100, token);
        }

        var step = Math.Max(1, (to - from) / (ulong)samples);
        var latencies = new List<double>();
        for (var height = from + 1; height <= to; height += step)
        {
            var commitment = await node.GetCommitmentAsync(height, token);
            if (commitment is { Head.SignedAtMs: { } signed, OrderedAtMs: { } ordered })
                latencies.Add(signed - ordered);
        }

        if (latencies.Count == 0)
            return null;
        latencies.Sort();
        return new SigningLatency(latencies.Count, Percentile(latencies, 0.50), Percentile(latencies, 0.99), latencies[^1]);
    }

    private static double Percentile(List<double> sorted, double q) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(q * sorted.Count) - 1)];

    /// <summary>Prints the CPU cost of each step of one batch's signing, in microseconds, for a t-of-n key.</summary>
    public static void PrintCryptoCosts(int threshold, int members, int rounds = 300)
    {
        var (shares, group) = TrustedDealer.Generate(threshold, members);
        rounds = Math.Max(rounds, 100);
        var signers = Enumerable.Range(1, threshold).ToList();
        var message = RandomNumberGenerator.GetBytes(32);
        var nonces = signers.ToDictionary(id => id, id => Frost.Commit(id, shares[id - 1].Secret));
        var commitments = signers.Select(id => nonces[id].Commitment).ToList();

        double Time(Action action)
        {
            // Warm up past tiered compilation: the first few hundred calls run unoptimized code.
            for (var i = 0; i < 600; i++)
                action();
            Thread.Sleep(200);
            for (var i = 0; i < 100; i++)
                action();
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < rounds; i++)
                action();
            return watch.Elapsed.TotalMicroseconds / rounds;
        }

        var session = new FrostSession(group.PublicKey, commitments, message);
        var zs = signers.Select(id => session.Sign(shares[id - 1], nonces[id].Nonces)).ToList();
        var signature = session.Aggregate(zs);
        var nonce = Time(() => Frost.Commit(1, shares[0].Secret));
        var share = Time(() => new FrostSession(group.PublicKey, commitments, message).Sign(shares[0], nonces[1].Nonces, nonces[1].Commitment));
        // What the leader does (ShareCollector.Aggregate): aggregate, then verify the signature once; each share is
        // verified only when that fails, to name the culprit (RFC 9591, section 5.4).
        var aggregate = Time(() =>
        {
            var leader = new FrostSession(group.PublicKey, commitments, message);
            Frost.Verify(message, leader.Aggregate(zs), group.PublicKey);
        });
        var blame = Time(() =>
        {
            var leader = new FrostSession(group.PublicKey, commitments, message);
            for (var i = 0; i < signers.Count; i++)
                leader.VerifyShare(signers[i], group.VerificationShares[signers[i]], zs[i]);
        });
        var verify = Time(() => Frost.Verify(message, signature, group.PublicKey));
        // Inside the two lines above: the session's precomputation (binding factors, the group commitment R, the
        // challenge), which the leader's coordinator and its own signer share; and a signer's proof over its shares
        // message (made by each signer asked over the network, checked by the leader).
        var context = Time(() => _ = new FrostSession(group.PublicKey, commitments, message));
        var proof = SignerProof.Sign("probe", message, shares[0].Secret);
        var proofSign = Time(() => SignerProof.Sign("probe", message, shares[0].Secret));
        var proofVerify = Time(() => SignerProof.Verify("probe", message, proof, group.VerificationShares[1]));
        // A snapshot install checks its heads' signatures in batches (Frost.VerifyBatch): the cost per head of a
        // batch of 512, as a group of the install checks them.
        var heads = Enumerable.Range(0, 512).Select(i =>
        {
            var m = System.Text.Encoding.ASCII.GetBytes($"head {i}");
            return (m, Frost.SignSingle(m, shares[0].Secret), group.VerificationShares[1]);
        }).ToList();
        var watchBatch = Stopwatch.StartNew();
        for (var i = 0; i < 4; i++)
            Frost.VerifyBatch(heads);
        var batchPerHead = watchBatch.Elapsed.TotalMicroseconds / (4 * heads.Count);
        Console.WriteLine($"FROST(secp256k1, SHA-256) cost per batch, {threshold}-of-{members}, one core ({rounds} rounds):");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  nonce pair + commitment (preprocessing, off the hot path) {nonce,8:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  make a share (each signer)                               {share,8:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  aggregate {threshold} shares and verify the result (leader)        {aggregate,8:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  verify each of {threshold} shares (only when the result fails)     {blame,8:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  verify the group signature (every node, at apply)        {verify,8:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  the session's R and challenge (in both lines above)     {context,8:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  a signer's proof: make / check                      {proofSign,5:0} / {proofVerify,3:0} us"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  a head of a snapshot install, checked in a batch of 512  {batchPerHead,8:0} us"));
    }
}
