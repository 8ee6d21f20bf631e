using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;

namespace Sequencer.Raft;

/// <summary>
/// What the leader proposed in one batch entry, passed to its own apply as the DotNext entry context so that the
/// leader does not hash each tx a second time.
/// </summary>
/// <remarks>
/// DotNext keeps contexts by log index and does not drop one when a later leader overwrites that index, so a
/// stale context can meet a different entry. <see cref="HashesFor"/> therefore uses the hashes only when the
/// entry holds byte-for-byte the proposed txs (a memory compare costs about 1% of hashing them).
/// </remarks>
/// <param name="txs">The proposed txs.</param>
/// <param name="hashes">keccak256 of each.</param>
public sealed class BatchProposal(IReadOnlyList<byte[]> txs, IReadOnlyList<Hash32> hashes)
{
    /// <summary>In ethereum mode, each tx's sender and nonce as the leader's intake found them from these bytes; null otherwise.</summary>
    public IReadOnlyList<Sequencer.Core.Validation.TxAccount?>? Accounts { get; init; }

    /// <summary>The accounts when <paramref name="command"/> carries exactly the proposed txs, else null.</summary>
    public IReadOnlyList<Sequencer.Core.Validation.TxAccount?>? AccountsFor(BatchCommand command)
        => Accounts is { } accounts && accounts.Count == txs.Count && HashesFor(command) is not null ? accounts : null;

    /// <summary>The trace context of the batch's span (default when nothing traces): its apply nests under it.</summary>
    public System.Diagnostics.ActivityContext Trace { get; init; }

    /// <summary>The hashes when <paramref name="command"/> carries exactly the proposed txs, else null.</summary>
    public IReadOnlyList<Hash32>? HashesFor(BatchCommand command)
    {
        ArgumentNullException.ThrowIfNull(command);
        if (command.Txs.Count != txs.Count || hashes.Count != txs.Count)
            return null;
        for (var i = 0; i < txs.Count; i++)
        {
            if (!command.Txs[i].AsSpan().SequenceEqual(txs[i]))
                return null;
        }

        return hashes;
    }
}
