using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Validation;

namespace Sequencer.Core.Ordering;

/// <summary>The cluster-wide constants that enter every header.</summary>
/// <param name="ChainId">The rollup chain id.</param>
/// <param name="KeyEpoch">The current threshold key epoch (0 until signing exists).</param>
public readonly record struct ChainParameters(ulong ChainId, ulong KeyEpoch);

/// <summary>Answers whether a tx hash is already ordered. Reads applied state only.</summary>
public interface IOrderedTxLookup
{
    /// <summary>Returns true and the position when <paramref name="hash"/> is in an applied batch.</summary>
    bool TryGetPosition(Hash32 hash, out TxPosition position);
}

/// <summary>What happened to one proposed tx at apply.</summary>
/// <param name="Hash">keccak256 of the tx bytes.</param>
/// <param name="Position">Where the tx is ordered: in this batch, or where it was ordered before.</param>
/// <param name="Duplicate">True when the tx was already ordered (earlier, or earlier in this batch) and was dropped.</param>
/// <param name="Rejected">Set when the chain's rules dropped the tx (invalid, or its (sender, nonce) is taken or not
/// next): it is not ordered, and <paramref name="Position"/> is default.</param>
/// <remarks>64 bytes: one is kept per proposed tx of every batch, so the rare conflict rides in the rejection.</remarks>
public readonly record struct TxOutcome(Hash32 Hash, TxPosition Position, bool Duplicate, TxRejection? Rejected = null)
{
    /// <summary>For a nonce already used: the ordered tx that holds it, when known.</summary>
    public Hash32? ConflictsWith => Rejected?.ConflictsWith;
}

/// <summary>The chain's rules at apply, and the account states they read (ethereum mode); null in opaque mode.</summary>
/// <param name="Rules">The validity rules.</param>
/// <param name="Accounts">The applied account states before this batch.</param>
/// <param name="Known">On the leader: each tx's account as intake found it from these very bytes, or null to work it out.</param>
public sealed record ValidationContext(ITxRules Rules, IAccountLookup Accounts, IReadOnlyList<TxAccount?>? Known = null);

/// <summary>The result of applying one batch entry.</summary>
public sealed class AppliedBatch
{
    /// <summary>The new header, or null when every tx was a duplicate and no batch was formed.</summary>
    public required BatchHeader? Header { get; init; }

    /// <summary>The ordered tx hashes (the Merkle leaves) in batch order; empty when <see cref="Header"/> is null.</summary>
    public required Hash32[] TxHashes { get; init; }

    /// <summary>For each ordered tx, the leader's receive time in Unix ms, or 0 when unknown.</summary>
    public required ulong[] ReceivedMs { get; init; }

    /// <summary>One outcome per proposed tx, in proposal order.</summary>
    public required TxOutcome[] Outcomes { get; init; }

    /// <summary>
    /// In ethereum mode, each ordered tx's sender and nonce (<see cref="TxAccount.EncodedLength"/> bytes each, in batch
    /// order); empty in opaque mode.
    /// </summary>
    public byte[] TxAccounts { get; init; } = [];
}

/// <summary>
/// The deterministic apply of a batch entry. Depends only on (previous header, the history of earlier commitments,
/// chain parameters, entry, entry term, the set of ordered txs): every node computes the same header from the same
/// log. No clock, no randomness, no I/O.
/// </summary>
public static class BatchApplier
{
    /// <summary>Applies <paramref name="command"/> on top of <paramref name="previous"/>.</summary>
    /// <param name="previous">The last header, or null before the first batch.</param>
    /// <param name="history">The frontier of the tree over the commitments of heights 1 to <c>previous.Height</c>; read, not changed
    /// (the caller appends the new header's commitment once it keeps the batch).</param>
    /// <param name="chain">Chain id and key epoch for the new header.</param>
    /// <param name="command">The batch entry.</param>
    /// <param name="entryTerm">The Raft term of the log entry carrying the command.</param>
    /// <param name="ordered">The txs ordered by earlier batches.</param>
    /// <param name="knownHashes">The keccak256 of each tx when the caller has already computed them from these very
    /// bytes (the leader hashed them at intake), or null to hash here.</param>
    /// <param name="validation">The chain's rules (ethereum mode): a tx they refuse, or whose nonce is not its sender's
    /// next, is dropped with the reason; null in opaque mode.</param>
    public static AppliedBatch Apply(BatchHeader? previous, MerkleFrontier history, ChainParameters chain, BatchCommand command, ulong entryTerm, IOrderedTxLookup ordered,
        IReadOnlyList<Hash32>? knownHashes = null, ValidationContext? validation = null)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(ordered);
        ArgumentNullException.ThrowIfNull(history);
        Invariant.Check(history.LeafCount == (previous?.Height ?? 0), "the history holds exactly the commitments below the new height");
        Invariant.Check(knownHashes is null || knownHashes.Count == command.Txs.Count, "one known hash per tx");
        Invariant.Check(previous is null || previous.Height >= 1, "previous header has height 0");
        Invariant.Check(previous is null || entryTerm >= previous.Term, "Raft terms never decrease along the log");

        var height = (previous?.Height ?? 0) + 1;
        var txs = command.Txs;
        var outcomes = new TxOutcome[txs.Count];
        // Sized for every tx (a duplicate or a refusal is rare) and cut to the ordered count at the end: no list
        // and no copy of a batch's worth of hashes (a batch at saturation is thousands of txs, on the large object heap).
        var leaves = new Hash32[txs.Count];
        var received = new ulong[txs.Count];
        var orderedCount = 0;
        var inThisBatch = new Dictionary<Hash32, int>(txs.Count);
        var hasReceived = command.ReceivedAgoMs.Count == txs.Count;
        Invariant.Check(validation?.Known is null || validation.Known.Count == txs.Count, "one known account per tx");
        var accounts = validation is null ? null : new List<TxAccount>(txs.Count);
        var touched = validation is null ? null : new Dictionary<SenderId, AccountState>();

        // Hashed together, four at a time where the CPU allows, unless the leader already hashed these very bytes.
        Hash32[]? computed = null;
        if (knownHashes is null)
        {
            computed = System.Buffers.ArrayPool<Hash32>.Shared.Rent(txs.Count);
            Keccak256.HashEach(txs, computed);
            knownHashes = computed;
        }

        for (var i = 0; i < txs.Count; i++)
        {
            var hash = knownHashes[i];
            TxAccount account = default;
            if (ordered.TryGetPosition(hash, out var earlier))
            {
                Invariant.Check(earlier.Height < height, "an ordered tx claims a height that is not applied yet");
                outcomes[i] = new TxOutcome(hash, earlier, Duplicate: true);
            }
            else if (inThisBatch.TryGetValue(hash, out var index))
            {
                outcomes[i] = new TxOutcome(hash, new TxPosition(height, index), Duplicate: true);
            }
            else if (validation is not null && Check(validation, i, txs[i], hash, height, touched!, out account) is { } refused)
            {
                outcomes[i] = refused;
            }
            else
            {
                if (validation is not null)
                    accounts!.Add(account);
                index = orderedCount++;
                inThisBatch.Add(hash, index);
                leaves[index] = hash;
                received[index] = hasReceived ? command.LeaderTimestampMs - Math.Min(command.LeaderTimestampMs, command.ReceivedAgoMs[i]) : 0;
                outcomes[i] = new TxOutcome(hash, new TxPosition(height, index), Duplicate: false);
            }
        }

        if (computed is not null)
            System.Buffers.ArrayPool<Hash32>.Shared.Return(computed);
        if (orderedCount == 0)
            return new AppliedBatch { Header = null, TxHashes = [], ReceivedMs = [], Outcomes = outcomes };

        var hashes = orderedCount == leaves.Length ? leaves : leaves.AsSpan(0, orderedCount).ToArray();
        if (orderedCount != received.Length)
            received = received.AsSpan(0, orderedCount).ToArray();
        // A leader with a clock behind its predecessor's must not move time backwards in the chain.
        var timestamp = Math.Max(previous?.TimestampMs ?? 0, command.LeaderTimestampMs);
        var header = new BatchHeader(
            chain.ChainId,
            chain.KeyEpoch,
            height,
            entryTerm,
            previous?.Commitment ?? Hash32.Zero,
            history.Root,
            MerkleTree.ComputeRoot(hashes),
            (uint)hashes.Length,
            timestamp);

        Invariant.Check(header.TxCount == hashes.Length && header.TxCount > 0, "header tx count matches its leaves");
        var encoded = Array.Empty<byte>();
        if (accounts is not null)
        {
            Invariant.Check(accounts.Count == hashes.Length, "one account per ordered tx");
            encoded = new byte[accounts.Count * TxAccount.EncodedLength];
            for (var i = 0; i < accounts.Count; i++)
                accounts[i].WriteTo(encoded.AsSpan(i * TxAccount.EncodedLength));
        }

        return new AppliedBatch { Header = header, TxHashes = hashes, ReceivedMs = received, Outcomes = outcomes, TxAccounts = encoded };
    }

    // The chain's rules for one tx that is not a duplicate: null when it is ordered (and its sender's state in `touched`
    // moves on), otherwise the outcome that drops it. A sender's txs are ordered one nonce after another: a nonce below
    // the next is taken (by the sender's earlier tx), one above it is a gap.
    private static TxOutcome? Check(ValidationContext validation, int i, byte[] tx, Hash32 hash, ulong height, Dictionary<SenderId, AccountState> touched,
        out TxAccount account)
    {
        TxRejection? rejection = null;
        account = default;
        if ((validation.Known?[i] ?? validation.Rules.Identify(tx, out rejection)) is not { } identified)
            return new TxOutcome(hash, default, Duplicate: false, rejection ?? new TxRejection("invalid_tx", "the tx is not valid under the chain's rules"));
        account = identified;
        if (!touched.TryGetValue(account.Sender, out var state))
            state = validation.Accounts.Get(account.Sender);
        if (account.Nonce < state.NextNonce)
        {
            return new TxOutcome(hash, default, Duplicate: false,
                new TxRejection("nonce_used", $"nonce {account.Nonce} of {account.Sender} is already ordered (its next nonce is {state.NextNonce})")
                {
                    ConflictsWith = account.Nonce + 1 == state.NextNonce ? state.LastTx : null,
                });
        }

        if (account.Nonce > state.NextNonce || account.Nonce == ulong.MaxValue)
            return new TxOutcome(hash, default, Duplicate: false, new TxRejection("nonce_gap", $"nonce {account.Nonce} of {account.Sender} is not its next nonce {state.NextNonce}"));
        touched[account.Sender] = new AccountState(account.Nonce + 1, hash, height);
        return null;
    }
}
