using Sequencer.Node.Api;

namespace Sequencer.Tests;

public sealed class JoinedRequestTests
{
    [Fact]
    public async Task CallsDuringAFetch_JoinTheNextFetch_NotTheOneOnItsWay_AndAtMostOneIsInFlight()
    {
        var fetches = new List<TaskCompletionSource<int>>();
        var inFlight = 0;
        var maxInFlight = 0;
        var gate = new Lock();
        var joined = new JoinedRequest<int>(async () =>
        {
            var fetch = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (gate)
            {
                fetches.Add(fetch);
                maxInFlight = Math.Max(maxInFlight, ++inFlight);
            }

            try
            {
                return await fetch.Task;
            }
            finally
            {
                lock (gate)
                    inFlight--;
            }
        });

        var first = joined.NextAsync();
        await WaitUntilAsync(() => Count(fetches, gate) == 1);
        // Asked while the first fetch is on its way: they share the second.
        var second = Enumerable.Range(0, 50).Select(_ => joined.NextAsync()).ToArray();
        Assert.Equal(1, Count(fetches, gate));
        fetches[0].SetResult(1);
        Assert.Equal(1, await first);
        await WaitUntilAsync(() => Count(fetches, gate) == 2);
        Assert.All(second, task => Assert.False(task.IsCompleted));
        var third = joined.NextAsync();
        fetches[1].SetResult(2);
        Assert.All(await Task.WhenAll(second), answer => Assert.Equal(2, answer));
        await WaitUntilAsync(() => Count(fetches, gate) == 3);
        fetches[2].SetResult(3);
        Assert.Equal(3, await third);
        Assert.Equal(1, maxInFlight);
        Assert.Equal(3, joined.Fetches);
    }

    [Fact]
    public async Task AFetchThatFails_FailsTheCallsThatJoinedIt_AndTheNextCallFetchesAgain()
    {
        var calls = 0;
        var joined = new JoinedRequest<int>(() => Interlocked.Increment(ref calls) == 1
            ? Task.FromException<int>(new InvalidOperationException("down"))
            : Task.FromResult(7));
        await Assert.ThrowsAsync<InvalidOperationException>(() => joined.NextAsync());
        Assert.Equal(7, await joined.NextAsync());
    }

    private static int Count(List<TaskCompletionSource<int>> fetches, Lock gate)
    {
        lock (gate)
            return fetches.Count;
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition did not hold within 10 s");
            await Task.Delay(5);
        }
    }
}
