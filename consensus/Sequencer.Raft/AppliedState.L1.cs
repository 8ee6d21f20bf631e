using Microsoft.Extensions.Logging;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;

namespace Sequencer.Raft;

/// <summary>How far posting to the L1 got, as the log last recorded it (an applied <see cref="L1ProgressCommand"/>).</summary>
/// <param name="Height">The posted head's height.</param>
/// <param name="Commitment">Its commitment.</param>
/// <param name="L1TxHash">The L1 transaction.</param>
/// <param name="L1Block">The L1 block.</param>
/// <param name="Contract">The inbox contract (20 bytes).</param>
/// <param name="ObservedAtMs">When the leader saw the receipt.</param>
/// <param name="RaftIndex">The entry that recorded it.</param>
public sealed record L1ProgressView(ulong Height, Hash32 Commitment, byte[] L1TxHash, ulong L1Block, byte[] Contract, ulong ObservedAtMs, long RaftIndex);

/// <summary>The L1 posting progress of the applied log.</summary>
public sealed partial class AppliedState
{
    private L1ProgressView? l1Progress;

    /// <summary>
    /// The last L1 progress the log recorded since this node started (null before the first): a new leader's poster
    /// knows from it what the old one posted. Not persisted: after a restart the contract itself is read again.
    /// </summary>
    public L1ProgressView? L1Progress
    {
        get
        {
            lock (gate)
                return l1Progress;
        }
    }

    // Every field is checked against this node's own chain: the height must be a signed head of it with that
    // commitment. A progress the node cannot check (a head it has not applied) is ignored, never trusted.
    private void ApplyL1ProgressLocked(L1ProgressCommand progress, long index)
    {
        string? problem = null;
        if (progress.Contract.Length != 20 || progress.L1TxHash.Length != 32)
            problem = "the contract is not 20 bytes or the L1 transaction hash not 32";
        else if (progress.Height > ledger.SignedThrough)
            problem = $"height {progress.Height} is above the highest signed head {ledger.SignedThrough}";
        else if (progress.Height > 0 && (progress.Commitment.Length != 32 || GetBatch(progress.Height)?.Header.Commitment != new Hash32(progress.Commitment)))
            problem = $"the commitment is not this chain's commitment at height {progress.Height}";
        if (problem is not null)
        {
            LogL1ProgressIgnored(logger, index, problem);
            return;
        }

        l1Progress = new L1ProgressView(progress.Height, progress.Height == 0 ? Hash32.Zero : new Hash32(progress.Commitment), progress.L1TxHash, progress.L1Block,
            progress.Contract, progress.ObservedAtMs, index);
    }

    [LoggerMessage(EventId = 130, Level = LogLevel.Warning, Message = "The L1 progress entry at index {Index} is ignored: {Problem}")]
    private static partial void LogL1ProgressIgnored(ILogger logger, long index, string problem);
}
