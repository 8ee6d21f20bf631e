using MessagePack;

namespace Sequencer.Core.Encoding;

/// <summary>
/// One Raft log entry's command (DESIGN section 4). All commands are one MessagePack union with explicit integer
/// keys, behind a version byte (see <see cref="LogCommandCodec"/>). Never reuse or renumber a union tag or a key:
/// old entries stay in the log and in snapshots.
/// </summary>
/// <remarks>
/// Tags 1 to 4 are reserved for NonceCommitments, BatchSignature, KeyEpoch and L1Progress.
/// </remarks>
[Union(0, typeof(BatchCommand))]
public interface ILogCommand;

/// <summary>
/// A batch of txs proposed by the leader. The header is derived at apply from the previous header and this entry;
/// followers never read their own clock.
/// </summary>
[MessagePackObject]
public sealed class BatchCommand : ILogCommand
{
    /// <summary>The leader's term when it proposed the batch. The header uses the Raft entry's own term.</summary>
    [Key(0)]
    public ulong ProposerTerm { get; init; }

    /// <summary>The leader's clock in Unix milliseconds when it cut the batch.</summary>
    [Key(1)]
    public ulong LeaderTimestampMs { get; init; }

    /// <summary>The txs in proposal order. Duplicates of ordered txs are dropped at apply.</summary>
    [Key(2)]
    public IReadOnlyList<byte[]> Txs { get; init; } = [];

    /// <summary>
    /// For each tx, how many milliseconds before <see cref="LeaderTimestampMs"/> the leader received it; lets every node
    /// report the <c>received</c> time. Empty when unknown. Not part of the header.
    /// </summary>
    [Key(3)]
    public IReadOnlyList<uint> ReceivedAgoMs { get; init; } = [];
}
