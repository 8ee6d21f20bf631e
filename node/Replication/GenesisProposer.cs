using Microsoft.Extensions.Logging;
using Sequencer.Core.Encoding;
using Sequencer.Core.Validation;
using Sequencer.Raft;

namespace Sequencer.Node.Replication;

/// <summary>
/// Puts the chain's genesis entry (its validation mode) in the log: while this node leads a chain that has none, it
/// proposes one, and the batcher orders nothing before it is applied. Every node then applies batches under the
/// log's rules, whatever its own configuration; a node configured otherwise stops (see NodeRunner).
/// </summary>
public sealed partial class GenesisProposer(RaftHost raft, ulong chainId, ValidationMode mode, ILogger<GenesisProposer> logger) : IAsyncDisposable
{
    /// <summary>A loop that has not gone round for this long is stuck.</summary>
    public static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(30);

    private readonly CancellationTokenSource stopping = new();
    private BackgroundLoop? loop;

    /// <summary>Starts the loop (the host starts lifetimes).</summary>
    public void Start(BackgroundLoops loops)
    {
        ArgumentNullException.ThrowIfNull(loops);
        loop = loops.Start("the genesis proposer", StuckAfter, LoopAsync, stopping.Token);
    }

    private async Task LoopAsync(BackgroundLoop self, CancellationToken token)
    {
        var backoff = TimeSpan.FromMilliseconds(100);
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            if (!raft.State.HasGenesis && raft.IsLeader)
            {
                try
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                    timeout.CancelAfter(TimeSpan.FromSeconds(5));
                    await raft.ReplicateAsync(LogCommandCodec.Encode(new GenesisCommand { ChainId = chainId, ValidationMode = (byte)mode }), null, timeout.Token).ConfigureAwait(false);
                    LogProposed(logger, mode, chainId);
                    backoff = TimeSpan.FromMilliseconds(100);
                }
                catch (Exception e) when (e is not OutOfMemoryException && !token.IsCancellationRequested)
                {
                    // Lost leadership or quorum: try again (a committed duplicate is ignored by apply).
                    backoff = TimeSpan.FromMilliseconds(Math.Min(2_000, backoff.TotalMilliseconds * 2));
                }
            }

            await Task.Delay(raft.State.HasGenesis ? TimeSpan.FromSeconds(1) : backoff, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
            await loop.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
    }

    [LoggerMessage(EventId = 170, Level = LogLevel.Information, Message = "Proposed the chain's genesis: validation {Mode}, chain {ChainId}")]
    private static partial void LogProposed(ILogger logger, ValidationMode mode, ulong chainId);
}
