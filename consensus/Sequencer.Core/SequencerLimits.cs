using Sequencer.Core.Ordering;

namespace Sequencer.Core;

/// <summary>
/// Every limit of a node in one place (DESIGN section 8). Validated at startup by <see cref="Validate"/> and
/// reported by <c>GET /v1/cluster</c>. When a limit is reached the API answers 429 or 503 with <c>Retry-After</c>
/// instead of queueing without bound.
/// </summary>
public sealed record SequencerLimits
{
    /// <summary>The largest tx the leader accepts, in bytes.</summary>
    public int MaxTxBytes { get; init; } = 64 * 1024;

    /// <summary>The largest sum of tx bytes in one batch entry.</summary>
    public int MaxBatchBytes { get; init; } = 1024 * 1024;

    /// <summary>The most txs in one batch entry.</summary>
    public int MaxBatchTxs { get; init; } = 10_000;

    /// <summary>How long the oldest pending tx may wait for more txs to join its batch.</summary>
    public int MaxBatchDelayMs { get; init; } = 3;

    /// <summary>The most txs waiting on the leader for a batch; beyond it submits get 429.</summary>
    public int MaxPendingTxs { get; init; } = 100_000;

    /// <summary>The most tx bytes waiting on the leader for a batch; beyond it submits get 429.</summary>
    public long MaxPendingBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>
    /// The most batch entries proposed but not yet committed. Two keep the pipeline busy (the next batch fills while one
    /// replicates; DotNext sends whatever the log holds in one AppendEntries) and keep it short: a head-signing session
    /// starts in an entry cut behind the in-flight ones, so at saturation its wait grows with their number. 2 against 8
    /// (2026-12-04): about half the ordered→signed p99 at 64 and 256 bulk clients, the same throughput within noise
    /// (the figures: README, Performance; docs/design.md, Known issues).
    /// </summary>
    public int MaxInFlightEntries { get; init; } = 2;

    /// <summary>The largest HTTP request body, in bytes.</summary>
    public int MaxRequestBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>
    /// The most request-body bytes a node holds at once over every route that reads a body. A request reserves its
    /// declared Content-Length before any of its body is read (a chunked one reserves in steps as it is read), and
    /// is refused with 429 and <c>Retry-After</c> when the budget cannot cover it, so that many connections with large
    /// bodies cannot take the node's memory.
    /// </summary>
    public long MaxInFlightRequestBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>
    /// The most of <see cref="MaxInFlightRequestBytes"/> one client (a remote IPv4 address, or an IPv6 /64) holds at
    /// once; beyond it that client's request is refused with 429 <c>overloaded</c>. Without it, a few maximal bodies
    /// sent just above the minimum data rate would hold the whole budget for minutes. Requests a member forwards on a
    /// client's behalf are counted where they arrived. 0 (the default): a quarter of the budget, and at least
    /// <see cref="MaxRequestBytes"/> (<see cref="ClientInFlightRequestBytes"/>).
    /// </summary>
    public long MaxClientInFlightRequestBytes { get; init; }

    /// <summary>The share of <see cref="MaxInFlightRequestBytes"/> one client holds at once, <see cref="MaxClientInFlightRequestBytes"/> resolved.</summary>
    public long ClientInFlightRequestBytes => MaxClientInFlightRequestBytes != 0 ? MaxClientInFlightRequestBytes
        : Math.Min(MaxInFlightRequestBytes, Math.Max(MaxRequestBytes, MaxInFlightRequestBytes / 4));

    /// <summary>
    /// The most public-API requests per second from one client (a remote IPv4 address, or an IPv6 /64), with a burst of
    /// one second's worth; beyond it the node answers 429 <c>rate_limited</c> with <c>Retry-After</c>. 0 turns the limit
    /// off. Requests a member forwards on a client's behalf were counted where they arrived and are not counted again.
    /// The default leaves room for the bench's 256 closed-loop clients on one address.
    /// </summary>
    public int ClientRequestsPerSecond { get; init; } = 50_000;

    /// <summary>
    /// How long a DKG participant waits for another to do its part of a stage (round one, round two, its confirmation)
    /// before it votes that one silent; t votes disqualify it and the key generation goes on without it. Long enough
    /// that a member restarted or started late still takes part.
    /// </summary>
    public int DkgSilenceMs { get; init; } = 300_000;

    /// <summary>
    /// The least time between key rotations: the leader refuses to start a rotation (a DKG for the next key epoch) until
    /// the current key epoch has been in force this long, counted from when the leader saw it come into force or from
    /// the leader's start, whichever is later. Any member can ask for a rotation; without this bound one member could
    /// keep the others in key generations and the L1 busy with hand-overs. A failed attempt's retries are not held
    /// back. 0: no bound (the devnet's default, so that a rotation can be tried at once).
    /// </summary>
    public int MinKeyRotationIntervalMs { get; init; } = 600_000;

    /// <summary>The most txs in one bulk submit.</summary>
    public int MaxTxsPerRequest { get; init; } = 10_000;

    /// <summary>How long a submit waits for its txs to be ordered before it answers "outcome unknown".</summary>
    public int SubmitTimeoutMs { get; init; } = 10_000;

    /// <summary>The most submits forwarded to the leader at once by one follower.</summary>
    public int MaxForwardedRequests { get; init; } = 1024;

    /// <summary>
    /// Ethereum mode: how far ahead of its sender's next nonce a tx may be. Such a tx waits at the leader's intake
    /// until the nonces before it are queued (a sender's txs are ordered in nonce order); one further ahead is refused
    /// (<c>nonce_gap</c>). 0 accepts only the next nonce.
    /// </summary>
    public int MaxNonceGap { get; init; } = 64;

    /// <summary>The most batches held in memory after apply and before they reach the store.</summary>
    public int MaxUnpersistedBatches { get; init; } = 4096;

    /// <summary>
    /// The most txs in the in-memory tx index (<see cref="RecentTxIndex"/>): the txs of the newest batches, about
    /// 32 bytes each, allocated at startup. Older txs are looked up in the store's tx index, behind a filter. Every batch
    /// not yet in the store must fit, so apply waits for the persister when the unstored txs would not. 524,288 (16 MB,
    /// about 6 s at 90,000 tx/s), with 16 MiB of recent batches, keeps a node under 500 MB RSS after 10 minutes of full
    /// bulk load where 1,000,000 and 32 MiB did not (scripts/memory-bench.sh; the figures: README, Performance).
    /// </summary>
    public int MaxRecentTxs { get; init; } = 524_288;

    /// <summary>
    /// The most bytes of applied batches kept in memory (<see cref="Storage.RecentBatches"/>: tx hashes and receive times,
    /// 40 bytes a tx, and a few hundred bytes a batch), so that recent lookups skip the store. Every batch not yet in the
    /// store must fit, so apply waits for the persister when the unstored batches would not. 16 MiB: see
    /// <see cref="MaxRecentTxs"/>.
    /// </summary>
    public long MaxRecentBatchBytes { get; init; } = 16L * 1024 * 1024;

    /// <summary>
    /// The most Raft entry bytes applied but not yet in the store. The WAL keeps every entry the store does not hold in
    /// process memory (it can only be compacted behind the store), so apply waits for the persister beyond this: with the
    /// node's retained WAL bytes it bounds the WAL's memory even when the store is slow.
    /// </summary>
    public long MaxUnpersistedEntryBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>The batch count in one grouped store transaction.</summary>
    public int PersistGroupBatches { get; init; } = 256;

    /// <summary>
    /// How often applied batches are written to the store in one grouped transaction (sooner when
    /// <see cref="PersistGroupBatches"/> are waiting or apply needs room). The Raft log keeps them durable meanwhile;
    /// each write costs three fsyncs on the disk the log's flushes share, so fewer writes are faster submits at low load
    /// (measured: one closed-loop client with signing, 512 tx/s at 50 ms, 592 at 200).
    /// </summary>
    public int PersistIntervalMs { get; init; } = 200;

    /// <summary>
    /// The most head-signing sessions in flight (planned, applied or aggregated but not yet signed). A new one starts
    /// whenever there is room and a head newer than every head signed or in flight (DESIGN section 5), so signing costs
    /// a bounded number of sessions per second, not one per batch.
    /// </summary>
    public int MaxSigningSessionsInFlight { get; init; } = 2;

    /// <summary>
    /// The shortest time between two head sessions. A session costs about a dozen secp256k1 multiplications across the
    /// cluster (nonces, the group commitment on each signer, verification on every node), so this caps the CPU that
    /// signing takes whatever the batch rate, at the price of this much added commit-to-signed latency at most.
    /// </summary>
    public int MinHeadIntervalMs { get; init; } = 10;

    /// <summary>
    /// How long the leader waits at least (while entries flow, longer: <see cref="MaxRiderWaitMs"/>) before it sends the
    /// followers a round of their own (no entries) to tell them the commit index of an entry they must apply (a head it
    /// signs, a signature it carries), when none of its own entries went out meanwhile: under load the next batch's
    /// round tells them anyway, and an extra round there costs a synchronous write on every node and holds up the next
    /// batch's round. Measured (2026-12-07): a round at once for every request gave two extra rounds a session (839
    /// rounds a second for 643 batches at one client); deferred, one client ordered 713 and 711 tx/s against 643 and
    /// 650, with the same ordered→signed latency. Signers do not wait for it: a session request carries the commit index.
    /// </summary>
    public int FollowerNudgeDelayMs { get; init; } = 10;

    /// <summary>How long a signing session waits for its shares before it is dropped (and the newest head signed again).</summary>
    public int SigningSessionTimeoutMs { get; init; } = 1000;

    /// <summary>
    /// How long a signing session waits for a signer's share (or four times that signer's usual latency, if longer)
    /// before that signer counts as timed out and the leader may start another session for the head without it. The
    /// late session still takes the share until <see cref="SigningSessionTimeoutMs"/>. This keeps a signer that cannot
    /// answer soon (it restarted, is catching up from a snapshot, or is cut off) from holding the head for a whole
    /// session timeout.
    /// </summary>
    public int SigningLateShareMs { get; init; } = 250;

    /// <summary>How long a planned session may take to reach the log, and an aggregated signature to be applied, before they are given up.</summary>
    public int SigningProposalTimeoutMs { get; init; } = 5000;

    /// <summary>
    /// How long an aggregated signature waits at least for a batch entry to ride before it gets an entry of its own
    /// (while batches flow it waits longer, for the next one: <see cref="MaxRiderWaitMs"/>); only a quiet cluster pays
    /// the extra entry.
    /// </summary>
    public int SignatureFlushDelayMs { get; init; } = 5;

    /// <summary>
    /// How long the leader waits at least without cutting a batch before it gives a head session (or a direct session's
    /// record) an entry of its own (while batches flow, they ride them: <see cref="MaxRiderWaitMs"/>).
    /// </summary>
    public int StandaloneSessionDelayMs { get; init; } = 5;

    /// <summary>
    /// The longest a head signature, a direct session's record or a follower nudge waits for the leader's next entry to
    /// ride before it takes a replication round of its own. Within it, each waits twice the usual gap between the
    /// leader's entries (at least <see cref="SignatureFlushDelayMs"/>, <see cref="StandaloneSessionDelayMs"/> or
    /// <see cref="FollowerNudgeDelayMs"/>), so that while batches flow, however slowly the disk makes them, riders ride
    /// them (Sequencer.Node's EntryCadence). Measured (2026-12-07, fdatasync p50 300 µs): with the short waits alone,
    /// one bulk client ran 110 rounds a second for 70 batches, at 50 ms 95 for 88, and ordered 24 to 49 % more.
    /// </summary>
    public int MaxRiderWaitMs { get; init; } = 50;

    /// <summary>
    /// True: the leader runs head sessions outside the log (it asks each chosen signer directly over the members'
    /// internal channel and gets its share in the answer; only a record of the commitments used goes through the log),
    /// so that a session does not wait for its own entry to be replicated behind the batches in flight. False: a
    /// session rides the next batch entry and its signers answer once it is applied (docs/design.md, "Signing heads").
    /// </summary>
    public bool DirectSigningSessions { get; init; } = true;

    /// <summary>
    /// True: a follower asked for a direct session commits up to the commit index the leader sends with the request,
    /// when its log holds an entry of the leader's term there, instead of waiting for the leader's next AppendEntries to
    /// bring that commit index (behind a megabyte or two of entries at saturation). The claim is trusted exactly as
    /// much as the commit index of AppendEntries from the same leader (docs/design.md, departure 1).
    /// </summary>
    public bool SessionCommitHints { get; init; } = true;

    /// <summary>The first exclusion of a signer that sent a bad share; it doubles with each further offence.</summary>
    public int BadShareExclusionMs { get; init; } = 60_000;

    /// <summary>The longest exclusion for bad shares.</summary>
    public int MaxBadShareExclusionMs { get; init; } = 3_600_000;

    /// <summary>The first exclusion of a signer that did not answer a session; it doubles with each consecutive timeout.</summary>
    public int TimeoutExclusionMs { get; init; } = 500;

    /// <summary>The longest exclusion for timeouts.</summary>
    public int MaxTimeoutExclusionMs { get; init; } = 4_000;

    /// <summary>The most signing sessions a signer keeps queued to answer; beyond it the oldest are left to time out.</summary>
    public int MaxQueuedSigningSessions { get; init; } = 1024;

    /// <summary>How many published, unused nonce commitments each signer keeps in the log (it publishes more below half).</summary>
    public int NoncePoolTarget { get; init; } = 512;

    /// <summary>The most signature shares queued on the leader for verification; beyond it shares are refused with 503.</summary>
    public int MaxQueuedShares { get; init; } = 16_384;

    /// <summary>
    /// Returns every violated rule, each as one sentence; an empty list means the limits are usable.
    /// </summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        void Require(bool condition, string message)
        {
            if (!condition)
                errors.Add(message);
        }

        Require(MaxTxBytes >= 1, "MaxTxBytes must be at least 1");
        Require(MaxBatchBytes >= MaxTxBytes, "MaxBatchBytes must be at least MaxTxBytes, or a maximal tx could never be batched");
        Require(MaxBatchBytes <= 64 * 1024 * 1024, "MaxBatchBytes must be at most 64 MiB (one Raft entry)");
        Require(MaxBatchTxs is >= 1 and <= TxPosition.MaxIndex + 1, $"MaxBatchTxs must be in [1, {TxPosition.MaxIndex + 1}]");
        Require(MaxBatchDelayMs is >= 0 and <= 1000, "MaxBatchDelayMs must be in [0, 1000]");
        Require(MaxPendingTxs >= MaxTxsPerRequest, "MaxPendingTxs must be at least MaxTxsPerRequest, or a maximal bulk submit could never be accepted");
        Require(MaxPendingBytes >= MaxBatchBytes, "MaxPendingBytes must be at least MaxBatchBytes");
        Require(MaxInFlightEntries is >= 1 and <= 1024, "MaxInFlightEntries must be in [1, 1024]");
        Require(MaxTxsPerRequest >= 1, "MaxTxsPerRequest must be at least 1");
        Require(DkgSilenceMs is >= 1_000 and <= 86_400_000, "DkgSilenceMs must be in [1000, 86400000]");
        Require(MinKeyRotationIntervalMs is >= 0 and <= 604_800_000, "MinKeyRotationIntervalMs must be in [0, 604800000] (a week)");
        Require(ClientRequestsPerSecond is >= 0 and <= 10_000_000, "ClientRequestsPerSecond must be in [0, 10000000] (0: no limit)");
        // A JSON body carries a tx as 0x-prefixed hex: two characters a byte plus quoting.
        Require(MaxRequestBytes >= 2 * MaxTxBytes + 64, "MaxRequestBytes must hold at least one maximal tx in hex");
        Require(MaxInFlightRequestBytes >= MaxRequestBytes, "MaxInFlightRequestBytes must be at least MaxRequestBytes, or a maximal request could never be admitted");
        Require(MaxClientInFlightRequestBytes == 0 || (MaxClientInFlightRequestBytes >= MaxRequestBytes && MaxClientInFlightRequestBytes <= MaxInFlightRequestBytes),
            "MaxClientInFlightRequestBytes must be 0 (a quarter of the budget) or in [MaxRequestBytes, MaxInFlightRequestBytes]: a client's maximal request must fit its share, and the share the node's budget");
        Require(SubmitTimeoutMs is >= 100 and <= 600_000, "SubmitTimeoutMs must be in [100, 600000]");
        Require(MaxForwardedRequests >= 1, "MaxForwardedRequests must be at least 1");
        Require(MaxNonceGap is >= 0 and <= 100_000, "MaxNonceGap must be in [0, 100000]");
        Require(MaxUnpersistedBatches >= PersistGroupBatches, "MaxUnpersistedBatches must be at least PersistGroupBatches");
        Require(MaxUnpersistedEntryBytes >= MaxBatchBytes, "MaxUnpersistedEntryBytes must be at least MaxBatchBytes, or the store would be written one entry at a time");
        Require(MaxRecentBatchBytes >= 2 * Storage.RecentBatches.BytesFor(MaxBatchTxs) && MaxRecentBatchBytes <= 16L * 1024 * 1024 * 1024,
            "MaxRecentBatchBytes must be in [two maximal batches, 16 GiB]: the recent batches hold every unstored batch");
        Require(MaxRecentTxs >= 2L * MaxBatchTxs && MaxRecentTxs <= RecentTxIndex.MaxCapacity,
            $"MaxRecentTxs must be in [2 * MaxBatchTxs, {RecentTxIndex.MaxCapacity}]: the recent tx index holds every unstored batch, at least two maximal ones");
        Require(PersistGroupBatches >= 1, "PersistGroupBatches must be at least 1");
        Require(PersistIntervalMs is >= 1 and <= 10_000, "PersistIntervalMs must be in [1, 10000]");
        Require(MaxSigningSessionsInFlight is >= 1 and <= 16, "MaxSigningSessionsInFlight must be in [1, 16]");
        Require(MinHeadIntervalMs is >= 0 and <= 10_000, "MinHeadIntervalMs must be in [0, 10000]");
        Require(FollowerNudgeDelayMs is >= 0 and <= 1000, "FollowerNudgeDelayMs must be in [0, 1000]");
        Require(SigningSessionTimeoutMs is >= 50 and <= 60_000, "SigningSessionTimeoutMs must be in [50, 60000]");
        Require(SigningLateShareMs >= 10 && SigningLateShareMs <= SigningSessionTimeoutMs, "SigningLateShareMs must be in [10, SigningSessionTimeoutMs]");
        Require(SigningProposalTimeoutMs >= SigningSessionTimeoutMs && SigningProposalTimeoutMs <= 600_000, "SigningProposalTimeoutMs must be in [SigningSessionTimeoutMs, 600000]");
        Require(SignatureFlushDelayMs is >= 0 and <= 1000, "SignatureFlushDelayMs must be in [0, 1000]");
        Require(StandaloneSessionDelayMs is >= 0 and <= 1000, "StandaloneSessionDelayMs must be in [0, 1000]");
        Require(MaxRiderWaitMs >= Math.Max(Math.Max(SignatureFlushDelayMs, StandaloneSessionDelayMs), FollowerNudgeDelayMs) && MaxRiderWaitMs <= 1000,
            "MaxRiderWaitMs must be in [the largest of SignatureFlushDelayMs, StandaloneSessionDelayMs and FollowerNudgeDelayMs, 1000]");
        Require(BadShareExclusionMs is >= 1 && MaxBadShareExclusionMs >= BadShareExclusionMs, "BadShareExclusionMs must be at least 1 and at most MaxBadShareExclusionMs");
        Require(TimeoutExclusionMs is >= 1 && MaxTimeoutExclusionMs >= TimeoutExclusionMs, "TimeoutExclusionMs must be at least 1 and at most MaxTimeoutExclusionMs");
        Require(MaxQueuedSigningSessions is >= 1 and <= 65_536, "MaxQueuedSigningSessions must be in [1, 65536]");
        // The log keeps at most 1024 unused commitments per signer, and one entry carries at most 512.
        Require(NoncePoolTarget is >= 8 and <= 1024, "NoncePoolTarget must be in [8, 1024]");
        Require(MaxQueuedShares is >= 16 and <= 1_000_000, "MaxQueuedShares must be in [16, 1000000]");
        return errors;
    }

    /// <summary>Throws when <see cref="Validate"/> finds a problem, listing all of them.</summary>
    /// <exception cref="ArgumentException">At least one limit is out of range.</exception>
    public void ThrowIfInvalid()
    {
        var errors = Validate();
        if (errors.Count > 0)
            throw new ArgumentException("invalid limits: " + string.Join("; ", errors));
    }
}
