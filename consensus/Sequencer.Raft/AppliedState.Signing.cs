using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Signing;

namespace Sequencer.Raft;

/// <summary>A head signed by an applied entry.</summary>
/// <param name="Head">The signed head.</param>
/// <param name="CoveredFrom">The lowest height it newly covers (the previous highest signed head + 1).</param>
public sealed record HeadSignedEvent(SignedHead Head, ulong CoveredFrom);

/// <summary>
/// The signing state of the applied chain: a thin shell around the pure <see cref="SigningLedger"/> that applies
/// entries under the state's lock, stores the ledger's effects with the batches, serves reads, and tells the node's
/// services what happened (sessions to answer, heads signed, the DKG moved on).
/// </summary>
public sealed partial class AppliedState
{
    // Signed heads kept in memory for covering lookups: a contiguous run of the highest heads (every unpersisted one,
    // and recent persisted ones up to this many); lower heights are looked up in the store.
    /// <summary>Signed heads kept in memory beyond those the store holds (tests set fewer).</summary>
    internal int RecentHeads { get; init; } = 4096;

    /// <summary>Signed heads in memory now.</summary>
    internal int RecentHeadsInMemory
    {
        get
        {
            lock (gate)
                return recentHeads.Count;
        }
    }

    private readonly SortedList<ulong, SignedHead> recentHeads = [];
    private SigningLedger ledger = null!;

    // The most signatures remembered as verified by this node's coordinator, so that apply need not verify them again.
    private const int MaxTrustedSignatures = 64;

    private readonly Dictionary<ulong, byte[]> verifiedHere = [];
    private readonly Queue<ulong> verifiedOrder = new();

    /// <summary>Raised after an entry started signing sessions; the signers among this node's members answer them.</summary>
    public event Action<IReadOnlyList<AppliedSession>>? SessionsStarted;

    /// <summary>Raised after an entry (or a snapshot) signed a head.</summary>
    public event Action<HeadSignedEvent>? HeadSigned;

    /// <summary>Raised after an applied entry changed the key generation in progress (or ended it).</summary>
    public event Action? DkgChanged;

    /// <summary>The current key epoch, or null before the first.</summary>
    public KeyEpochView? CurrentKeyEpoch
    {
        get
        {
            lock (gate)
                return ledger.CurrentKeyEpoch;
        }
    }

    /// <summary>The key epoch a key generation made that waits for the current epoch's hand-over, or null.</summary>
    public KeyEpochView? PendingKeyEpoch
    {
        get
        {
            lock (gate)
                return ledger.PendingKeyEpoch;
        }
    }

    /// <summary>Every key epoch in force, ascending.</summary>
    public IReadOnlyList<KeyEpochView> KeyEpochs
    {
        get
        {
            lock (gate)
                return [.. ledger.KeyEpochs];
        }
    }

    /// <summary>The highest signed head: every height at or below it is covered by a signed head (0: none).</summary>
    public ulong SignedThrough
    {
        get
        {
            lock (gate)
                return ledger.SignedThrough;
        }
    }

    /// <summary>The key generation in progress, or null.</summary>
    public DkgView? Dkg
    {
        get
        {
            lock (gate)
                return ledger.Dkg;
        }
    }

    /// <summary>The members that voted for a rotation to the next key epoch, by the new key's threshold.</summary>
    public IReadOnlyDictionary<int, IReadOnlyList<int>> RotationVotes
    {
        get
        {
            lock (gate)
                return ledger.RotationVotes;
        }
    }

    /// <summary>Why the log would not accept <paramref name="command"/> now, or null when it would (for the leader's intake).</summary>
    public string? DkgRejection(ILogCommand command)
    {
        lock (gate)
            return ledger.DkgRejection(command);
    }

    /// <summary>
    /// Records that this node itself verified <paramref name="signature"/> (R then z) for the head at
    /// <paramref name="height"/> (the leader, just before it proposes it): when the entry comes back through the log
    /// with exactly these bytes, apply need not verify it again. Any other bytes are verified as usual.
    /// </summary>
    public void RememberVerified(ulong height, byte[] signature)
    {
        ArgumentNullException.ThrowIfNull(signature);
        lock (gate)
        {
            if (verifiedHere.TryAdd(height, signature))
                verifiedOrder.Enqueue(height);
            while (verifiedOrder.Count > MaxTrustedSignatures)
                verifiedHere.Remove(verifiedOrder.Dequeue());
        }
    }

    /// <summary>Whether a signed head covers <paramref name="height"/>.</summary>
    public bool IsCovered(ulong height)
    {
        lock (gate)
            return height <= ledger.SignedThrough;
    }

    /// <summary>The lowest signed head at or above <paramref name="height"/> (the head that covers it), or null.</summary>
    public SignedHead? CoveringHead(ulong height)
    {
        SignedHead? lowestInMemory;
        lock (gate)
        {
            if (height > ledger.SignedThrough)
                return null;
            if (recentHeads.Count > 0 && height >= recentHeads.Keys[0])
                return recentHeads.Values[LowerBound(recentHeads.Keys, height)];
            lowestInMemory = recentHeads.Count > 0 ? recentHeads.Values[0] : null;
        }

        // Below the heads in memory: a stored head between the height and the lowest one in memory covers it first;
        // otherwise (not stored yet) the lowest one in memory does.
        var stored = store.CoveringHead(height);
        return stored is not null && (lowestInMemory is null || stored.Height < lowestInMemory.Height) ? stored : lowestInMemory;
    }

    /// <summary>The signed head at exactly <paramref name="height"/>, or null when that height is not a signed head.</summary>
    public SignedHead? GetHead(ulong height)
    {
        lock (gate)
        {
            if (recentHeads.TryGetValue(height, out var head))
                return head;
            if (recentHeads.Count > 0 && height >= recentHeads.Keys[0])
                return null;
        }

        return store.GetHead(height);
    }

    /// <summary>Signed heads at or above <paramref name="from"/>, ascending, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<SignedHead> Heads(ulong from, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        lock (gate)
        {
            if (recentHeads.Count > 0 && from >= recentHeads.Keys[0])
                return [.. recentHeads.Values.Skip(LowerBound(recentHeads.Keys, from)).Take(limit)];
        }

        // Older heads come from the store, then the rest from memory (a head persisted meanwhile is simply read twice).
        var stored = store.Heads(from, limit);
        if (stored.Count == limit)
            return stored;
        var next = stored.Count == 0 ? from : stored[^1].Height + 1;
        lock (gate)
            return [.. stored, .. recentHeads.Values.Where(h => h.Height >= next).Take(limit - stored.Count)];
    }

    // When this node saw the current key epoch come into force (applied it), or its start: a restart counts the epoch
    // as new, which only ever holds a rotation back longer.
    private long keyEpochSeenAt;

    /// <summary>How long the current key epoch has been in force, as this node saw it (at most since its start).</summary>
    public TimeSpan KeyEpochInForceFor => time.GetElapsedTime(Interlocked.Read(ref keyEpochSeenAt));

    /// <summary>How many published, unused commitments the log holds for <paramref name="signer"/>, and the next sequence it should use.</summary>
    public (int Available, ulong NextSequence) CommitmentsOf(int signer)
    {
        lock (gate)
            return ledger.CommitmentsOf(signer);
    }

    /// <summary>The lowest unused commitment sequences of <paramref name="signer"/>, at most <paramref name="count"/>.</summary>
    public IReadOnlyList<ulong> AvailableSequences(int signer, int count)
    {
        lock (gate)
            return ledger.AvailableSequences(signer, count);
    }

    /// <summary>The lowest unused commitments of <paramref name="signer"/> (sequence and value), at most <paramref name="count"/>.</summary>
    public IReadOnlyList<(ulong Sequence, byte[] Value)> AvailableCommitments(int signer, int count)
    {
        lock (gate)
            return ledger.AvailableCommitments(signer, count);
    }

    /// <summary>The published, unused commitment of <paramref name="signer"/> at <paramref name="sequence"/>, or null.</summary>
    public byte[]? UnusedCommitment(int signer, ulong sequence)
    {
        lock (gate)
            return ledger.UnusedCommitment(signer, sequence);
    }

    /// <summary>
    /// Why this node's log does not let <paramref name="signer"/> answer the direct <paramref name="session"/> with its
    /// nonce <paramref name="sequence"/> (published as <paramref name="commitment"/>), or null when it does: when the log
    /// offers that commitment unused, has not seen the sequence published yet, or recorded this very session as the one
    /// that used it (the same head, attempt, signers and nonces: the same share again, which gives nothing away). Read in
    /// one step, so that an entry applied meanwhile cannot make a fresh nonce look used.
    /// </summary>
    public string? NonceUseRejection(int signer, ulong sequence, byte[] commitment, SigningSession session)
    {
        ArgumentNullException.ThrowIfNull(commitment);
        ArgumentNullException.ThrowIfNull(session);
        lock (gate)
        {
            if (ledger.CurrentKeyEpoch?.Epoch != session.KeyEpoch)
                return $"key epoch {session.KeyEpoch} is not the one in force in this node's log";
            if (ledger.UnusedCommitment(signer, sequence) is { } offered)
                return offered.AsSpan().SequenceEqual(commitment) ? null : $"the log offers nonce {sequence} of signer {signer} with another value";
            if (sequence >= ledger.CommitmentsOf(signer).NextSequence)
                return null;
            return ledger.ActiveSession(session.Height) is { } recorded && recorded.Attempt == session.Attempt && recorded.KeyEpoch == session.KeyEpoch
                && recorded.Direct == session.Direct && recorded.Signers.SequenceEqual(session.Signers) && recorded.Sequences.SequenceEqual(session.Sequences)
                ? null
                : $"the log records nonce {sequence} of signer {signer} as used";
        }
    }

    /// <summary>The ledger's last session for the head at <paramref name="height"/>, or null.</summary>
    public SigningSession? ActiveSession(ulong height)
    {
        lock (gate)
            return ledger.ActiveSession(height);
    }

    /// <summary>The pool of published, unused commitments (for a snapshot).</summary>
    internal CommitmentPool CommitmentPoolSnapshot()
    {
        lock (gate)
            return ledger.PoolSnapshot();
    }

    private void LoadSigningState()
    {
        var dkgEntries = store.ReadDkgEntries();
        ledger = new SigningLedger(new LedgerState(chain.ChainId, store.ReadKeyEpochs(), store.ReadCommitments(), durable.SignedWatermark, dkgEntries)
        {
            DkgPolicy = dkgPolicy,
        });
        dkgApplied = [.. dkgEntries];
    }

    /// <summary>
    /// Applies a signing entry (or the signing parts of a batch entry) under the lock; the caller holds <see cref="gate"/>.
    /// Returns the effects and the lowest height the entry's heads newly cover.
    /// </summary>
    private (LedgerEffects Effects, ulong CoveredFrom) ApplySigningLocked(ILogCommand command, long index, BatchHeader? produced)
    {
        var coveredFrom = ledger.SignedThrough + 1;
        var effects = ledger.Apply(command, new LedgerInput(index, produced, HeaderAtLocked, VerifiedHereLocked));
        foreach (var head in effects.HeadsSigned)
        {
            recentHeads[head.Height] = head;
            TrimRecentHeadsLocked();
        }

        return (effects, coveredFrom);
    }

    private bool VerifiedHereLocked(HeadSignature signature)
        => verifiedHere.Remove(signature.Height, out var known) && known.AsSpan().SequenceEqual([.. signature.R, .. signature.Z]);

    private BatchHeader? HeaderAtLocked(ulong height)
    {
        if (height == 0 || lastHeader is null || height > lastHeader.Height)
            return null;
        var cached = recent[height % (ulong)recent.Length];
        return cached is not null && cached.Header.Height == height ? cached.Header : store.Get(height)?.Header;
    }

    private void TrimRecentHeadsLocked(ulong storedThrough = 0)
    {
        // Only heads the store already holds (up to its watermark, or a snapshot group's highest just stored) may leave
        // memory, lowest first, so memory keeps a contiguous top run.
        while (recentHeads.Count > RecentHeads && recentHeads.Keys[0] <= Math.Max(durable.SignedWatermark, storedThrough))
            recentHeads.RemoveAt(0);
    }

    private void RaiseSigningEvents(LedgerEffects effects, ulong coveredFrom)
    {
        foreach (var reason in effects.Ignored)
            NoteIgnored(reason);
        foreach (var reason in effects.Superseded)
            LogSuperseded(logger, reason);
        if (effects.DkgEvent is { } dkgEvent)
            LogDkgEvent(logger, dkgEvent);
        if (effects.KeyEpoch is { } epoch)
        {
            Interlocked.Exchange(ref keyEpochSeenAt, time.GetTimestamp());
            LogKeyEpoch(logger, epoch.Epoch, epoch.Threshold, epoch.Members.Count);
        }
        if (effects.SessionsStarted.Count > 0)
            SessionsStarted?.Invoke(effects.SessionsStarted);
        foreach (var head in effects.HeadsSigned)
        {
            HeadSigned?.Invoke(new HeadSignedEvent(head, coveredFrom));
            coveredFrom = head.Height + 1;
        }

        if (effects.DkgChanged)
            DkgChanged?.Invoke();
    }

    private static int LowerBound(IList<ulong> keys, ulong value)
    {
        int low = 0, high = keys.Count;
        while (low < high)
        {
            var middle = (low + high) / 2;
            if (keys[middle] < value)
                low = middle + 1;
            else
                high = middle;
        }

        return low;
    }

    // Ignored parts come in runs (after a snapshot install the entries just above its point repeat publications and
    // uses of commitments the snapshot already holds; a deposed leader's sessions fail together): one line per interval,
    // with the count left out, keeps the log readable.
    private static readonly TimeSpan IgnoredLogInterval = TimeSpan.FromSeconds(5);
    private long ignoredLoggedAt;
    private long ignoredSuppressed;

    private void NoteIgnored(string reason)
    {
        var now = time.GetTimestamp();
        if (ignoredLoggedAt != 0 && time.GetElapsedTime(ignoredLoggedAt, now) < IgnoredLogInterval)
        {
            ignoredSuppressed++;
            return;
        }

        LogIgnored(logger, reason, ignoredSuppressed);
        ignoredLoggedAt = now;
        ignoredSuppressed = 0;
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Warning, Message = "Ignored part of a log entry: {Reason} ({Suppressed} more ignored parts before this one were not logged)")]
    private static partial void LogIgnored(ILogger logger, string reason, long suppressed);

    [LoggerMessage(EventId = 113, Level = LogLevel.Debug, Message = "Redundant part of a log entry (a higher head is signed, or a snapshot install already reflects it): {Reason}")]
    private static partial void LogSuperseded(ILogger logger, string reason);

    [LoggerMessage(EventId = 111, Level = LogLevel.Information, Message = "Key epoch {Epoch} is in force: {Threshold} of {Members} members sign")]
    private static partial void LogKeyEpoch(ILogger logger, ulong epoch, int threshold, int members);

    [LoggerMessage(EventId = 112, Level = LogLevel.Information, Message = "DKG: {Event}")]
    private static partial void LogDkgEvent(ILogger logger, string @event);
}
