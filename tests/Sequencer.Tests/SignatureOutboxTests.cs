using Sequencer.Core.Encoding;
using Sequencer.Node.Signing;

namespace Sequencer.Tests;

/// <summary>The leader's outbox of verified head signatures on their way to the log.</summary>
public sealed class SignatureOutboxTests
{
    private static HeadSignature Head(ulong height) => new() { Height = height, KeyEpoch = 1, Signers = [1, 2], R = new byte[33], Z = new byte[32] };

    [Fact]
    public void ASignatureVerifiedAfterAHigherOneLeft_IsNotProposed_ButOutOfOrderOnesWaitingTogetherGoInOrder()
    {
        var outbox = new SignatureOutbox();

        // Two sessions finish out of order while both wait: both go, ascending (the log takes them in that order).
        outbox.Add(Head(7), 0);
        outbox.Add(Head(5), 0);
        Assert.Equal([5UL, 7UL], outbox.TakeAll().Select(h => h.Height));

        // Head 6 verified after head 7 left for the log would only be ignored at apply: it is not proposed.
        outbox.Add(Head(6), 1);
        outbox.Add(Head(9), 1);
        Assert.Equal([9UL], outbox.TakeAll().Select(h => h.Height));

        // A proposal that did not commit comes back whatever its height; the next leadership starts afresh.
        outbox.Return([Head(9)], 2);
        Assert.Equal([9UL], outbox.TakeDue(10, 5).Select(h => h.Height));
        outbox.Clear();
        outbox.Add(Head(3), 3);
        Assert.Equal(1, outbox.Count);
    }
}
