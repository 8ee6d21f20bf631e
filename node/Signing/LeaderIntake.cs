using Sequencer.Core.Encoding;
using Sequencer.Node.Replication;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>How the leader's intake ended.</summary>
public enum IntakeStatus
{
    /// <summary>The entry is committed.</summary>
    Committed,

    /// <summary>The entry would be ignored by apply (or is not an internal entry): it was not proposed.</summary>
    Refused,

    /// <summary>This node is not the leader.</summary>
    NotLeader,

    /// <summary>Too many entries are being proposed at once; try again.</summary>
    Busy,

    /// <summary>The entry did not commit in time (it may still); try again, entries are idempotent.</summary>
    NotCommitted,
}

/// <summary>The result of <see cref="LeaderIntake.SubmitAsync"/>.</summary>
/// <param name="Status">How it ended.</param>
/// <param name="Reason">Why it was refused or not committed, or null.</param>
public sealed record IntakeResult(IntakeStatus Status, string? Reason = null);

/// <summary>
/// The leader's intake of entries that other nodes (or this one) ask it to put into the log: nonce commitments and DKG
/// messages. Each is checked as apply would check it, so that nobody can fill the log with entries that apply ignores,
/// and then replicated. Bounded: at most a few proposals at once, and a quarter of them per sender, so that one member
/// that keeps proposing cannot make the others' nonce commitments and DKG messages wait.
/// </summary>
/// <param name="raft">The node's Raft host and applied state.</param>
/// <param name="minRotationInterval">The least time between key rotations (<see cref="Core.SequencerLimits.MinKeyRotationIntervalMs"/>).</param>
/// <param name="maxConcurrent">The most proposals at once.</param>
public sealed class LeaderIntake(RaftHost raft, TimeSpan minRotationInterval, int maxConcurrent = 8) : IDisposable
{
    private readonly SemaphoreSlim proposals = new(maxConcurrent, maxConcurrent);
    private readonly Dictionary<int, int> perSender = [];
    private readonly int maxPerSender = Math.Max(1, maxConcurrent / 4);

    /// <summary>How long a proposal may take to commit.</summary>
    public static readonly TimeSpan CommitTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Why apply would not take <paramref name="command"/> now, or null when it would.</summary>
    public string? Check(ILogCommand command)
    {
        ArgumentNullException.ThrowIfNull(command);
        switch (command)
        {
            case NonceCommitmentsCommand commitments:
                var epoch = raft.State.CurrentKeyEpoch;
                if (epoch is null || epoch.Epoch != commitments.KeyEpoch || !epoch.Group.VerificationShares.TryGetValue(commitments.SignerId, out var publicShare))
                    return $"signer {commitments.SignerId} is not a signer of the current key epoch";
                if (commitments.Commitments.Count is 0 or > SigningLedger.MaxCommitmentsPerEntry)
                    return $"1 to {SigningLedger.MaxCommitmentsPerEntry} commitments per entry";
                if (commitments.Commitments.Any(c => c is not { Length: 2 * Secp256k1.ElementLength }))
                    return "a commitment is not two compressed points";
                var (available, next) = raft.State.CommitmentsOf(commitments.SignerId);
                if (commitments.FirstSequence < next)
                    return $"signer {commitments.SignerId}'s sequences from {commitments.FirstSequence} are used or published already (next is {next})";
                if (!commitments.ReplacesUnused && available >= SigningLedger.MaxCommitmentsPerSigner)
                    return $"signer {commitments.SignerId} has {available} unused commitments published, the most the pool keeps";
                return SignerProof.Verify(SigningLedger.NonceCommitmentsProofDomain, commitments.ProofPayload(), commitments.Proof, publicShare)
                    ? null
                    : $"the entry is not signed by signer {commitments.SignerId}'s key share";
            case DkgStartCommand start:
                return raft.State.DkgRejection(command)
                    ?? DkgLedger.RotationTooSoon(start, raft.State.CurrentKeyEpoch?.Epoch ?? 0, raft.State.Dkg, raft.State.KeyEpochInForceFor, minRotationInterval);
            case IDkgMessage:
                return raft.State.DkgRejection(command);
            default:
                return $"a {command.GetType().Name} is not taken from other nodes";
        }
    }

    /// <summary>Checks <paramref name="command"/> and, on the leader, replicates its encoding <paramref name="encoded"/>.</summary>
    public async Task<IntakeResult> SubmitAsync(ILogCommand command, byte[] encoded, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        if (!raft.IsLeader)
            return new IntakeResult(IntakeStatus.NotLeader, "this node is not the leader");
        if (Check(command) is { } reason)
            return new IntakeResult(IntakeStatus.Refused, reason);
        var sender = command switch
        {
            NonceCommitmentsCommand c => c.SignerId,
            IDkgMessage m => m.From,
            _ => 0,
        };
        lock (perSender)
        {
            if (perSender.GetValueOrDefault(sender) >= maxPerSender)
                return new IntakeResult(IntakeStatus.Busy, $"{maxPerSender} entries of this sender are being proposed already");
            perSender[sender] = perSender.GetValueOrDefault(sender) + 1;
        }

        if (!await proposals.WaitAsync(0, token).ConfigureAwait(false))
        {
            Release(sender);
            return new IntakeResult(IntakeStatus.Busy, "too many entries are being proposed");
        }

        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token, raft.LeadershipToken);
            timeout.CancelAfter(CommitTimeout);
            await raft.ReplicateAsync(encoded, null, timeout.Token).ConfigureAwait(false);
            return new IntakeResult(IntakeStatus.Committed);
        }
        catch (Exception e) when (e is OperationCanceledException or DotNext.Net.Cluster.Consensus.Raft.NotLeaderException or InvalidOperationException
            or DotNext.Net.Cluster.Consensus.Raft.QuorumUnreachableException)
        {
            return new IntakeResult(IntakeStatus.NotCommitted, "the entry did not commit in time");
        }
        finally
        {
            proposals.Release();
            Release(sender);
        }
    }

    private void Release(int sender)
    {
        lock (perSender)
        {
            if (perSender[sender] <= 1)
                perSender.Remove(sender);
            else
                perSender[sender]--;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => proposals.Dispose();
}
