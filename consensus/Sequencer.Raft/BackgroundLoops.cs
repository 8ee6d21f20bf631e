namespace Sequencer.Raft;

/// <summary>
/// A node's background loops (the store persister, the batcher, the signing loops). Each loop beats every time it
/// goes round. A loop that ends before shutdown, for any reason, is reported once through <see cref="Died"/>, and
/// the node must then stop: a loop that dies silently leaves a node half alive, answering and reporting ready while
/// it does nothing (the store persister did exactly that). A loop that stops beating is reported by
/// <see cref="Problems"/>, which readiness serves.
/// </summary>
/// <remarks>Thread-safe. Every loop must wake at least once per <c>stuckAfter</c> when idle, so that it can beat.</remarks>
public sealed class BackgroundLoops
{
    private readonly TimeProvider time;
    private readonly Lock gate = new();
    private readonly List<BackgroundLoop> loops = [];

    /// <summary>Creates an empty set of loops.</summary>
    /// <param name="time">The clock beats are read from.</param>
    public BackgroundLoops(TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(time);
        this.time = time;
    }

    /// <summary>
    /// Raised once for each loop that ended while its <c>stopping</c> token was not canceled: with the exception it
    /// threw, or null when it returned. Handlers run on the loop's thread and must not throw.
    /// </summary>
    public event Action<BackgroundLoop, Exception?>? Died;

    /// <summary>Starts <paramref name="body"/> on the thread pool as a loop named <paramref name="name"/>.</summary>
    /// <param name="name">What the loop does, in words an operator understands ("the store persister").</param>
    /// <param name="stuckAfter">How long without a beat makes the loop count as stuck.</param>
    /// <param name="body">The loop. It calls <see cref="BackgroundLoop.Beat"/> as it goes round and returns when the token is canceled.</param>
    /// <param name="stopping">Canceled at shutdown: the loop may then end without being reported.</param>
    public BackgroundLoop Start(string name, TimeSpan stuckAfter, Func<BackgroundLoop, CancellationToken, Task> body, CancellationToken stopping)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(body);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(stuckAfter, TimeSpan.Zero);
        var loop = new BackgroundLoop(name, stuckAfter, time);
        lock (gate)
        {
            // Bounded: loops are started once per component lifetime; a restarted component replaces its entry.
            loops.RemoveAll(l => l.Name == name && l.Completion.IsCompleted);
            loops.Add(loop);
        }

        loop.Completion = Task.Run(async () =>
        {
            Exception? failure = null;
            try
            {
                await body(loop, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
            }
            catch (Exception e)
            {
                failure = e;
            }

            if (!stopping.IsCancellationRequested)
            {
                loop.Failure = failure ?? new InvalidOperationException($"{name} returned before shutdown");
                Died?.Invoke(loop, failure);
            }
        }, CancellationToken.None);
        return loop;
    }

    /// <summary>Every loop that has died or stopped beating, each as one sentence; empty while all are healthy.</summary>
    public IReadOnlyList<string> Problems()
    {
        List<BackgroundLoop> snapshot;
        lock (gate)
            snapshot = [.. loops];
        var problems = new List<string>();
        foreach (var loop in snapshot)
        {
            if (loop.Failure is { } failure)
                problems.Add($"{loop.Name} stopped: {failure.Message}");
            else if (!loop.Completion.IsCompleted && loop.SinceBeat > loop.StuckAfter)
                problems.Add($"{loop.Name} has not gone round for {loop.SinceBeat.TotalSeconds:0.0} s");
        }

        return problems;
    }
}

/// <summary>One supervised loop; see <see cref="BackgroundLoops"/>.</summary>
public sealed class BackgroundLoop
{
    private readonly TimeProvider time;
    private long lastBeat;

    internal BackgroundLoop(string name, TimeSpan stuckAfter, TimeProvider time)
    {
        Name = name;
        StuckAfter = stuckAfter;
        this.time = time;
        lastBeat = time.GetTimestamp();
    }

    /// <summary>What the loop does.</summary>
    public string Name { get; }

    /// <summary>How long without a beat makes the loop count as stuck.</summary>
    public TimeSpan StuckAfter { get; }

    /// <summary>Completes when the loop has ended (after shutdown, or when it died).</summary>
    public Task Completion { get; internal set; } = Task.CompletedTask;

    /// <summary>Why the loop ended before shutdown, or null.</summary>
    public Exception? Failure { get; internal set; }

    /// <summary>The time since the last beat.</summary>
    public TimeSpan SinceBeat => time.GetElapsedTime(Interlocked.Read(ref lastBeat));

    /// <summary>Records that the loop went round.</summary>
    public void Beat() => Interlocked.Exchange(ref lastBeat, time.GetTimestamp());
}
