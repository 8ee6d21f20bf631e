using Microsoft.AspNetCore.Http;
using Sequencer.Node.Api;

namespace Sequencer.Tests;

public sealed class RequestBudgetTests
{
    private const int MiB = 1024 * 1024;

    [Fact]
    public void TryReserve_WithinCapacity_ReservesUntilReleased()
    {
        var budget = new RequestBudget(1000);
        Assert.True(budget.TryReserve(600));
        Assert.True(budget.TryReserve(400));
        Assert.Equal(1000, budget.InUseBytes);
        budget.Release(600);
        Assert.Equal(400, budget.InUseBytes);
        budget.Release(400);
        Assert.Equal(0, budget.InUseBytes);
    }

    [Fact]
    public void TryReserve_OverRemaining_RefusesAndReservesNothing()
    {
        var budget = new RequestBudget(1000);
        Assert.True(budget.TryReserve(999));
        Assert.False(budget.TryReserve(2));
        Assert.Equal(999, budget.InUseBytes);
        Assert.True(budget.TryReserve(1));
        Assert.False(budget.TryReserve(1));
        Assert.False(new RequestBudget(10).TryReserve(11));
        Assert.True(new RequestBudget(10).TryReserve(0));
    }

    [Fact]
    public void Release_MoreThanReserved_IsAnInvariantViolation()
    {
        var budget = new RequestBudget(1000);
        Assert.True(budget.TryReserve(10));
        Assert.Throws<Sequencer.Core.InvariantViolationException>(() => budget.Release(11));
    }

    [Fact]
    public async Task TryReserve_ConcurrentReservations_NeverExceedTheCapacityTogether()
    {
        const long capacity = 10_000;
        var budget = new RequestBudget(capacity);
        // What the workers hold by their own count: raised after a grant, lowered before a release, so it never
        // exceeds what the budget has granted; if the budget ever over-granted, it would exceed the capacity.
        long held = 0;
        long heldMax = 0;
        long refused = 0;
        using var start = new Barrier(4);
        var workers = Enumerable.Range(0, 4).Select(worker => Task.Run(() =>
        {
            var random = new Random(worker);
            var mine = new List<int>();
            start.SignalAndWait();
            for (var i = 0; i < 50_000; i++)
            {
                var bytes = random.Next(1, 3000);
                var granted = budget.TryReserve(bytes);
                if (granted)
                {
                    mine.Add(bytes);
                    var now = Interlocked.Add(ref held, bytes);
                    long seen;
                    while ((seen = Interlocked.Read(ref heldMax)) < now && Interlocked.CompareExchange(ref heldMax, now, seen) != seen)
                    {
                    }
                }
                else
                {
                    Interlocked.Increment(ref refused);
                }

                if (!granted || mine.Count == 4)
                {
                    foreach (var reserved in mine)
                    {
                        Interlocked.Add(ref held, -reserved);
                        budget.Release(reserved);
                    }

                    mine.Clear();
                }
            }

            foreach (var reserved in mine)
            {
                Interlocked.Add(ref held, -reserved);
                budget.Release(reserved);
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.Equal(0, budget.InUseBytes);
        Assert.InRange(heldMax, 3000, capacity);
        Assert.True(refused > 0, "no reservation was refused: the test did not contend");
    }

    [Fact]
    public async Task ReadBodyAsync_DeclaredLengthOverRemainingBudget_Refuses429WithoutReadingTheBody()
    {
        var budget = new RequestBudget(2 * MiB);
        Assert.True(budget.TryReserve((2 * MiB) - 1000));
        var body = new CountingStream(new byte[5000]);
        var context = Request(body, declared: 5000);

        using var result = await budget.ReadBodyAsync(context, MiB);

        Assert.Null(result.Bytes);
        Assert.Equal(429, result.Status);
        Assert.Equal("overloaded", result.Code);
        Assert.Equal(TimeSpan.FromSeconds(1), result.RetryAfter);
        Assert.Equal(0, body.Reads);
        Assert.Equal((2 * MiB) - 1000, budget.InUseBytes);
        Assert.Equal(1, budget.Refusals);

        await result.WriteRefusalAsync(context);
        Assert.Equal(429, context.Response.StatusCode);
        Assert.Equal("1", context.Response.Headers.RetryAfter.ToString());
    }

    [Fact]
    public async Task ReadBodyAsync_DeclaredLengthOverMax_Refuses413WithoutReadingOrReserving()
    {
        var budget = new RequestBudget(4 * MiB);
        var body = new CountingStream(new byte[10]);
        using var result = await budget.ReadBodyAsync(Request(body, declared: MiB + 1), MiB);
        Assert.Equal(413, result.Status);
        Assert.Equal("body_too_large", result.Code);
        Assert.Equal(0, body.Reads);
        Assert.Equal(0, budget.InUseBytes);
        Assert.Equal(0, budget.Refusals);
    }

    [Fact]
    public async Task ReadBodyAsync_DeclaredLengthWithinBudget_HoldsTheReservationUntilDisposed()
    {
        var budget = new RequestBudget(MiB);
        var payload = Enumerable.Range(0, 100_000).Select(i => (byte)i).ToArray();
        var context = Request(new CountingStream(payload), declared: payload.Length);

        var result = await budget.ReadBodyAsync(context, MiB);

        Assert.Equal(payload, result.Bytes);
        Assert.Equal(0, result.Status);
        Assert.Equal(payload.Length, result.ReservedBytes);
        Assert.Equal(payload.Length, budget.InUseBytes);
        result.Dispose();
        Assert.Equal(0, budget.InUseBytes);
        result.Dispose();
        Assert.Equal(0, budget.InUseBytes);
    }

    [Fact]
    public async Task ReadBodyAsync_BodyLongerThanItsDeclaredLength_Refuses413AndReleasesTheReservation()
    {
        // Kestrel never hands over more than Content-Length; a body source that does must not write past the array
        // sized for it.
        var budget = new RequestBudget(MiB);
        using var result = await budget.ReadBodyAsync(Request(new CountingStream(new byte[5000]), declared: 100), MiB);
        Assert.Null(result.Bytes);
        Assert.Equal(413, result.Status);
        Assert.Equal(0, budget.InUseBytes);
    }

    [Fact]
    public async Task ReadBodyAsync_BodyShorterThanItsDeclaredLength_HoldsWhatArrived()
    {
        var budget = new RequestBudget(MiB);
        var payload = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        using var result = await budget.ReadBodyAsync(Request(new CountingStream(payload), declared: 1000), MiB);
        Assert.Equal(payload, result.Bytes);
        Assert.Equal(1000, budget.InUseBytes);
    }

    [Fact]
    public async Task ReadBodyAsync_ChunkedBody_ReservesInStepsNeverMoreThanItNeeds()
    {
        var budget = new RequestBudget(MiB);
        var payload = new byte[(2 * RequestBudget.StepBytes) + 10];
        using var result = await budget.ReadBodyAsync(Request(new CountingStream(payload), declared: null), MiB);
        Assert.Equal(payload.Length, result.Bytes!.Length);
        Assert.Equal(3 * RequestBudget.StepBytes, result.ReservedBytes);
        Assert.Equal(3 * RequestBudget.StepBytes, budget.InUseBytes);
    }

    [Fact]
    public async Task ReadBodyAsync_ChunkedBodyOutgrowingTheBudget_Refuses429AndReleasesWhatItHeld()
    {
        var budget = new RequestBudget(MiB);
        Assert.True(budget.TryReserve(MiB - (2 * RequestBudget.StepBytes)));
        var body = new CountingStream(new byte[4 * RequestBudget.StepBytes]);

        using var result = await budget.ReadBodyAsync(Request(body, declared: null), MiB);

        Assert.Equal(429, result.Status);
        Assert.Equal("overloaded", result.Code);
        Assert.Equal(MiB - (2 * RequestBudget.StepBytes), budget.InUseBytes);
        // It stopped soon after the budget ran out, not at the end of the body.
        Assert.InRange(body.BytesRead, 1, (3 * RequestBudget.StepBytes) + 4096);
    }

    [Fact]
    public async Task ReadBodyAsync_ChunkedBodyOverMax_Refuses413WithoutReadingFarBeyondMax()
    {
        var budget = new RequestBudget(4 * MiB);
        var body = new CountingStream(new byte[3 * MiB]);
        using var result = await budget.ReadBodyAsync(Request(body, declared: null), MiB);
        Assert.Equal(413, result.Status);
        Assert.Equal(0, budget.InUseBytes);
        // The pipe reads in small segments: at most one segment past the limit is taken from the body.
        Assert.InRange(body.BytesRead, MiB + 1, MiB + 4096);
    }

    [Fact]
    public async Task ReadBodyAsync_ClientGoesAway_ThrowsAndReleasesTheReservation()
    {
        var budget = new RequestBudget(MiB);
        using var aborted = new CancellationTokenSource();
        var context = Request(new StallingStream(firstBytes: 1000), declared: 50_000);
        context.RequestAborted = aborted.Token;

        // The declared length is reserved before the first read; the body then stalls after its first bytes.
        var reading = budget.ReadBodyAsync(context, MiB);
        Assert.False(reading.IsCompleted);
        Assert.Equal(50_000, budget.InUseBytes);
        await aborted.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading);
        Assert.Equal(0, budget.InUseBytes);
    }

    [Fact]
    public async Task ReadBodyAsync_OneClient_HoldsAtMostItsShare_AndOthersStillGetIn()
    {
        var budget = new RequestBudget(4 * MiB, MiB, ClientOf);
        DefaultHttpContext From(string client, int bytes)
        {
            var context = Request(new CountingStream(new byte[bytes]), declared: bytes);
            context.Request.Headers["X-Client"] = client;
            return context;
        }

        var first = await budget.ReadBodyAsync(From("a", 600_000), MiB);
        Assert.NotNull(first.Bytes);
        Assert.Equal(600_000, budget.HeldBy("a"));

        // Client a's second body would take it past its share: refused, with the share named; nothing of it is held.
        var second = From("a", 600_000);
        using (var refused = await budget.ReadBodyAsync(second, MiB))
        {
            Assert.Equal(429, refused.Status);
            Assert.Equal("overloaded", refused.Code);
            Assert.Contains("this client's share", refused.Message, StringComparison.Ordinal);
            Assert.Contains("600000 held by its other requests", refused.Message, StringComparison.Ordinal);
        }

        Assert.Equal(0, ((CountingStream)second.Request.Body).Reads);
        Assert.Equal(600_000, budget.HeldBy("a"));
        Assert.Equal(600_000, budget.InUseBytes);

        // Others are not held back by a's share, and a request that counts against no client (forwarded by a
        // member, or an internal route) is bounded only by the node's budget.
        using (var other = await budget.ReadBodyAsync(From("b", 600_000), MiB))
            Assert.NotNull(other.Bytes);
        using (var uncounted = await budget.ReadBodyAsync(From(string.Empty, MiB), MiB))
        {
            Assert.NotNull(uncounted.Bytes);
            Assert.Equal(0, budget.HeldBy(string.Empty));
        }

        // When a's first body ends, a leaves the map and its share is whole again.
        first.Dispose();
        Assert.Equal(0, budget.ClientsHolding);
        Assert.Equal(0, budget.InUseBytes);
        using var again = await budget.ReadBodyAsync(From("a", MiB), MiB);
        Assert.NotNull(again.Bytes);
    }

    [Fact]
    public async Task ReadBodyAsync_NodeBudgetSpent_GivesBackTheClientsShare()
    {
        var budget = new RequestBudget(MiB, MiB, ClientOf);
        Assert.True(budget.TryReserve(MiB - 1000));
        var context = Request(new CountingStream(new byte[5000]), declared: 5000);
        context.Request.Headers["X-Client"] = "a";
        using var refused = await budget.ReadBodyAsync(context, MiB);
        Assert.Equal(429, refused.Status);
        Assert.Contains("the node's in-flight request bytes budget", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, budget.ClientsHolding);
        Assert.Equal(MiB - 1000, budget.InUseBytes);
    }

    [Fact]
    public async Task TryReserveFor_ConcurrentClients_NeverExceedTheirShare_AndLeaveNothingBehind()
    {
        const long share = 10_000;
        var budget = new RequestBudget(1_000_000, share);
        var clients = new[] { "a", "b", "c" };
        long worst = 0;
        var workers = Enumerable.Range(0, 8).Select(w => Task.Run(() =>
        {
            var random = new Random(w);
            for (var i = 0; i < 20_000; i++)
            {
                var client = clients[random.Next(clients.Length)];
                var bytes = random.Next(1, 4000);
                if (!budget.TryReserveFor(client, bytes))
                    continue;
                var held = budget.HeldBy(client);
                Assert.InRange(held, 1, share);
                InterlockedMax(ref worst, held);
                budget.ReleaseFor(client, bytes);
            }
        })).ToArray();
        await Task.WhenAll(workers);
        Assert.Equal(0, budget.ClientsHolding);
        Assert.InRange(worst, 4000, share);
    }

    private static void InterlockedMax(ref long target, long value)
    {
        var current = Interlocked.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
                return;
            current = seen;
        }
    }

    private static string ClientOf(HttpContext context) => context.Request.Headers["X-Client"].ToString();

    private static DefaultHttpContext Request(Stream body, long? declared)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = "POST";
        context.Request.Body = body;
        context.Request.ContentLength = declared;
        context.Response.Body = new MemoryStream();
        return context;
    }

    // A request body that counts what is taken from it.
    private sealed class CountingStream(byte[] content) : MemoryStream(content, writable: false)
    {
        public int Reads { get; private set; }

        public long BytesRead { get; private set; }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Reads++;
            var read = await base.ReadAsync(buffer, cancellationToken);
            BytesRead += read;
            return read;
        }

    }

    // A body whose client sends a few bytes and then nothing until it goes away.
    private sealed class StallingStream(int firstBytes) : Stream
    {
        private bool sent;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!sent)
            {
                sent = true;
                var count = Math.Min(firstBytes, buffer.Length);
                buffer.Span[..count].Fill(7);
                return count;
            }

            await Task.Delay(Timeout.Infinite, cancellationToken);
            return 0;
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
