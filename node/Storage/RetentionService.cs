using Microsoft.Extensions.Logging;
using Sequencer.Node.Replication;
using Sequencer.Raft;

namespace Sequencer.Node.Storage;

/// <summary>
/// What retention may prune: the tx data (hashes, receive times, tx index records) of heights more than
/// <c>retainHeights</c> below the stored height, but never of a height that no signed head covers yet, nor, with L1
/// posting on, one that no final L1 post covers yet (a light client can still fetch its proof until it is final).
/// </summary>
public static class RetentionPolicy
{
    /// <summary>The height through which tx data may be pruned now (0: nothing).</summary>
    /// <param name="storedHeight">The store's height.</param>
    /// <param name="retainHeights">How many of the newest heights keep their tx data (0: retention is off).</param>
    /// <param name="signedThrough">The highest height a signed head covers.</param>
    /// <param name="l1FinalizedHeight">The highest height a final L1 post covers, or null without L1 posting.</param>
    public static ulong PrunableThrough(ulong storedHeight, ulong retainHeights, ulong signedThrough, ulong? l1FinalizedHeight)
    {
        if (retainHeights == 0 || storedHeight <= retainHeights)
            return 0;
        return Math.Min(Math.Min(storedHeight - retainHeights, signedThrough), l1FinalizedHeight ?? ulong.MaxValue);
    }
}

/// <summary>
/// Prunes old tx data from the store in the background (<c>--retain-heights</c>, ethereum mode only: an opaque
/// chain's duplicate check reads the whole tx index). Each pass prunes at most <see cref="BatchesPerStep"/> batches per
/// store transaction, so the persister never waits long behind it.
/// </summary>
public sealed partial class RetentionService(RaftHost raft, ulong retainHeights, Func<ulong?> l1FinalizedHeight, TimeProvider time, ILogger<RetentionService> logger)
    : IAsyncDisposable
{
    /// <summary>Batches pruned per store transaction.</summary>
    public const int BatchesPerStep = 256;

    /// <summary>How often the service looks for heights to prune.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    private static readonly TimeSpan StuckAfter = TimeSpan.FromMinutes(2);
    private readonly CancellationTokenSource stopping = new();
    private BackgroundLoop? loop;
    private int failures;
    private ulong unreportedFrom;
    private long lastReport;

    /// <summary>How often at most a line reports what was pruned (the first prune is reported at once).</summary>
    public static readonly TimeSpan ReportEvery = TimeSpan.FromMinutes(1);

    /// <summary>Starts the loop (the host starts lifetimes).</summary>
    public void Start(BackgroundLoops loops)
    {
        ArgumentNullException.ThrowIfNull(loops);
        loop = loops.Start("retention", StuckAfter, LoopAsync, stopping.Token);
    }

    /// <summary>Prunes what the policy allows now, step by step; returns the pruned height.</summary>
    /// <exception cref="IOException">The store failed.</exception>
    public async Task<ulong> PruneOnceAsync(CancellationToken token)
    {
        // A cluster without a key (development only) signs nothing: there, heights do not wait for a signed head.
        var state = raft.State;
        var signed = state.CurrentKeyEpoch is null && state.PendingKeyEpoch is null ? ulong.MaxValue : state.SignedThrough;
        var target = RetentionPolicy.PrunableThrough(state.Durable.LastHeight, retainHeights, signed, l1FinalizedHeight());
        var from = raft.PrunedHeight;
        var pruned = from;
        while (pruned < target && !token.IsCancellationRequested)
        {
            pruned = raft.Prune(target, BatchesPerStep);
            loop?.Beat();
            // Let the persister and readers in between steps.
            await Task.Delay(TimeSpan.FromMilliseconds(5), time, token).ConfigureAwait(false);
        }

        if (pruned > from)
        {
            if (unreportedFrom == 0)
                unreportedFrom = from + 1;
            if (lastReport == 0 || time.GetElapsedTime(lastReport) >= ReportEvery)
            {
                LogPruned(logger, unreportedFrom, pruned, retainHeights);
                unreportedFrom = 0;
                lastReport = time.GetTimestamp();
            }
        }

        return pruned;
    }

    private async Task LoopAsync(BackgroundLoop self, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            var wait = Interval;
            try
            {
                await PruneOnceAsync(token).ConfigureAwait(false);
                failures = 0;
            }
            catch (IOException e)
            {
                // A full or failing disk: the data stays; try again later, less and less often.
                failures++;
                LogPruneFailed(logger, e.Message);
                wait = TimeSpan.FromSeconds(Math.Min(60, 2 << Math.Min(failures, 5)));
            }

            await Task.Delay(wait, time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
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

    [LoggerMessage(EventId = 900, Level = LogLevel.Information, Message = "Retention pruned the tx data of heights {From} to {To} (the newest {Retain} heights keep theirs)")]
    private static partial void LogPruned(ILogger logger, ulong from, ulong to, ulong retain);

    [LoggerMessage(EventId = 901, Level = LogLevel.Warning, Message = "Retention could not prune: {Problem}; it tries again later")]
    private static partial void LogPruneFailed(ILogger logger, string problem);
}
