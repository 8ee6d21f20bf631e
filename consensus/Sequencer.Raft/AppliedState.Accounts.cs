using Microsoft.Extensions.Logging;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Core.Validation;

namespace Sequencer.Raft;

/// <summary>
/// The chain's genesis (its validation mode, from the log) and, in ethereum mode, the account index: each sender's next
/// nonce and last ordered tx. Recent accounts are in memory (bounded); the others are read from the store, which moves
/// each sender's state in the same transaction as the batch.
/// </summary>
public sealed partial class AppliedState : IAccountLookup
{
    // Guarded by gate.
    private (ulong ChainId, ValidationMode Mode)? genesis;
    private ITxRules? rules;
    private readonly Dictionary<SenderId, AccountState> accountCache = [];
    private readonly Queue<(SenderId Sender, ulong Height)> accountOrder = new();

    // Builds the rules of a validation mode for a chain id (the node gives the Ethereum rules; tests may give others).
    private readonly Func<ValidationMode, ulong, ITxRules?> rulesFor;

    /// <summary>Raised (under no lock) when a genesis entry is applied: the chain's validation mode from the log.</summary>
    public event Action<ValidationMode>? GenesisApplied;

    /// <summary>
    /// Raised (under no lock) when the log names a chain id other than this node's while this node holds no chain yet:
    /// its first genesis entry (ignored, as on every node), or a snapshot sent to this node (refused). The node,
    /// misconfigured or in another consortium's cluster, must not go on applying batches whose commitments it would
    /// compute for the wrong chain. A node whose store already holds its configured chain refuses such an entry or
    /// snapshot and keeps running: the member that sent it is the odd one.
    /// </summary>
    public event Action<ulong>? ForeignChain;

    /// <summary>
    /// The chain id this node's store was made for: its genesis entry's, or for a chain ordered without one, its newest
    /// header's; null when the store holds neither.
    /// </summary>
    public ulong? StoredChainId
    {
        get
        {
            lock (gate)
                return genesis?.ChainId ?? lastHeader?.ChainId;
        }
    }

    /// <summary>The chain's validation mode from its genesis entry; null before it (a chain that has ordered without one is opaque).</summary>
    public ValidationMode? Validation
    {
        get
        {
            lock (gate)
                return genesis?.Mode ?? (lastHeader is null ? null : ValidationMode.Opaque);
        }
    }

    /// <summary>Whether the log has its genesis entry (or the chain predates genesis entries).</summary>
    public bool HasGenesis
    {
        get
        {
            lock (gate)
                return genesis is not null || lastHeader is not null;
        }
    }

    /// <summary>The rules batches are applied with (null in opaque mode).</summary>
    public ITxRules? Rules
    {
        get
        {
            lock (gate)
                return rules;
        }
    }

    /// <inheritdoc/>
    public AccountState Get(SenderId sender)
    {
        lock (gate)
        {
            if (accountCache.TryGetValue(sender, out var cached))
                return cached;
        }

        // Not touched since it was stored: the store holds its state (an unstored change is always in the cache).
        return store.ReadAccount(sender) ?? default;
    }

    private void LoadGenesis()
    {
        genesis = store.ReadGenesis();
        if (genesis is { } known)
            rules = rulesFor(known.Mode, known.ChainId);
    }

    // A genesis entry fixes the rules once, before the first batch. A second one, or one after batches were ordered
    // without one (an opaque chain from before genesis entries), is ignored on every node alike.
    // The chain id of a first genesis entry that named another chain, until Apply raises ForeignChain. Guarded by gate.
    private ulong? foreignGenesis;

    private ValidationMode? ApplyGenesisLocked(GenesisCommand command)
    {
        if (!Enum.IsDefined((ValidationMode)command.ValidationMode))
        {
            LogGenesisIgnored(logger, command.ValidationMode, "an unknown validation mode");
            return null;
        }

        var mode = (ValidationMode)command.ValidationMode;
        if (genesis is not null)
        {
            if (genesis.Value.Mode != mode)
                LogGenesisIgnored(logger, command.ValidationMode, $"the chain's genesis already set {genesis.Value.Mode}");
            return null;
        }

        if (lastHeader is not null && mode != ValidationMode.Opaque)
        {
            LogGenesisIgnored(logger, command.ValidationMode, "batches were ordered before it under the opaque rules");
            return null;
        }

        if (command.ChainId != chain.ChainId)
        {
            LogGenesisIgnored(logger, command.ValidationMode, $"it names chain {command.ChainId}, this node sequences chain {chain.ChainId}");
            // Only a node with no chain yet stops; one with batches of its configured chain keeps them (the proposer is
            // the odd one).
            if (lastHeader is null)
                foreignGenesis = command.ChainId;
            return null;
        }

        store.WriteGenesis(command.ChainId, mode);
        genesis = (command.ChainId, mode);
        rules = rulesFor(mode, command.ChainId);
        Invariant.Check(mode == ValidationMode.Opaque || rules is not null, "a validation mode other than opaque has rules");
        return mode;
    }

    // After a batch is applied: its senders move on (in memory until stored, then the store has them too).
    private void RecordAccountsLocked(StoredBatch batch)
    {
        if (batch.TxAccounts.Length == 0)
            return;
        for (var i = 0; i < batch.Header.TxCount; i++)
        {
            var account = batch.AccountAt(i)!.Value;
            accountCache[account.Sender] = new AccountState(account.Nonce + 1, batch.HashAt(i), batch.Header.Height);
            accountOrder.Enqueue((account.Sender, batch.Header.Height));
        }
    }

    // Keeps at most MaxRecentTxs accounts in memory: the oldest whose state is stored go (the store answers for them).
    private void TrimAccountsLocked()
    {
        while (accountOrder.Count > limits.MaxRecentTxs && accountOrder.TryPeek(out var oldest))
        {
            if (accountCache.TryGetValue(oldest.Sender, out var state) && state.LastHeight == oldest.Height)
            {
                if (oldest.Height > durable.LastHeight)
                    break;
                accountCache.Remove(oldest.Sender);
            }

            accountOrder.Dequeue();
        }
    }

    // After a snapshot install the store holds every installed account: the cache starts again from it.
    private void ResetAccountsLocked()
    {
        accountCache.Clear();
        accountOrder.Clear();
    }

    // The genesis a snapshot carries: installed when this node has none; a different one is a misconfigured member.
    private void InstallGenesis(byte? mode)
    {
        if (mode is not { } value)
            return;
        var installed = (ValidationMode)value;
        lock (gate)
        {
            if (genesis is { } known)
            {
                if (known.Mode != installed)
                    throw new LogFormatException($"the snapshot's chain validates {installed}, this node's log says {known.Mode}");
                return;
            }

            store.WriteGenesis(chain.ChainId, installed);
            genesis = (chain.ChainId, installed);
            rules = rulesFor(installed, chain.ChainId);
        }

        GenesisApplied?.Invoke(installed);
    }

    /// <summary>
    /// The validation context of a batch entry: null in opaque mode. The leader's intake worked out each tx's account
    /// from these very bytes; a follower works them out here, in parallel across cores (recovering a sender is the cost
    /// of the mode). Deterministic either way: the rules are pure.
    /// </summary>
    private ValidationContext? ValidationFor(BatchCommand batch, BatchProposal? proposal)
    {
        ITxRules? current;
        lock (gate)
            current = rules;
        if (current is null)
            return null;
        if (proposal?.AccountsFor(batch) is { } known)
            return new ValidationContext(current, this, known);
        if (batch.Txs.Count < ParallelIdentifyFrom)
            return new ValidationContext(current, this);
        var accounts = new TxAccount?[batch.Txs.Count];
        Parallel.For(0, accounts.Length, i => accounts[i] = current.Identify(batch.Txs[i], out _));
        return new ValidationContext(current, this, accounts);
    }

    // Below this many txs a batch's senders are recovered on the applier's own thread.
    private const int ParallelIdentifyFrom = 8;

    [LoggerMessage(EventId = 120, Level = LogLevel.Warning, Message = "A genesis entry (validation mode {Mode}) was ignored: {Reason}")]
    private static partial void LogGenesisIgnored(ILogger logger, byte mode, string reason);
}
