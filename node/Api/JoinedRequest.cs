namespace Sequencer.Node.Api;

/// <summary>
/// Callers that each need an answer fetched after they asked share the fetches: a call joins the next fetch to start,
/// never one already on its way (its answer may predate the call), so at most one fetch is in flight and a burst of
/// calls costs two. The read barrier asks the leader for its read index this way.
/// </summary>
/// <typeparam name="T">The answer.</typeparam>
/// <param name="fetch">Fetches one answer; an exception it throws goes to every call that joined that fetch.</param>
internal sealed class JoinedRequest<T>(Func<Task<T>> fetch)
{
    private readonly Lock gate = new();
    private TaskCompletionSource<T>? next;
    private bool running;
    private long fetches;

    /// <summary>Fetches started so far (the tests count them).</summary>
    public long Fetches => Interlocked.Read(ref fetches);

    /// <summary>The answer of a fetch that starts after this call.</summary>
    public Task<T> NextAsync()
    {
        lock (gate)
        {
            next ??= new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            var answer = next.Task;
            if (!running)
            {
                running = true;
                _ = Task.Run(PumpAsync);
            }

            return answer;
        }
    }

    private async Task PumpAsync()
    {
        while (true)
        {
            TaskCompletionSource<T> joined;
            lock (gate)
            {
                if (next is null)
                {
                    running = false;
                    return;
                }

                joined = next;
                next = null;
            }

            Interlocked.Increment(ref fetches);
            try
            {
                joined.TrySetResult(await fetch().ConfigureAwait(false));
            }
            catch (Exception e)
            {
                joined.TrySetException(e);
            }
        }
    }
}
