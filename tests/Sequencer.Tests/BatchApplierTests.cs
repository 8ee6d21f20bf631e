using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Tests;

public sealed class BatchApplierTests
{
    private static readonly ChainParameters Chain = new(42, 0);

    internal static byte[] Tx(int i) => [.. BitConverter.GetBytes(i), 0xAB, 0xCD];

    internal static BatchCommand Batch(ulong timestamp, params int[] txs)
        => new() { ProposerTerm = 1, LeaderTimestampMs = timestamp, Txs = [.. txs.Select(Tx)] };

    private sealed class Index : IOrderedTxLookup
    {
        public RecentTxIndex Inner { get; } = new(1 << 16);

        public MerkleFrontier History { get; } = new();

        public bool TryGetPosition(Hash32 hash, out TxPosition position) => Inner.TryGetPosition(hash, out position);

        public AppliedBatch Apply(BatchHeader? previous, BatchCommand command, ulong term = 1)
        {
            var applied = BatchApplier.Apply(previous, History, Chain, command, term, this);
            if (applied.Header is not null)
            {
                Inner.AddBatch(applied.Header.Height, applied.TxHashes);
                History.Append(applied.Header.Commitment);
            }

            return applied;
        }
    }

    [Fact]
    public void Apply_FirstBatch_HasHeight1ZeroParentAndTheMerkleRootOfItsTxs()
    {
        var applied = new Index().Apply(null, Batch(1000, 1, 2, 3));
        var header = applied.Header!;
        Assert.Equal(1UL, header.Height);
        Assert.Equal(Hash32.Zero, header.ParentHash);
        Assert.Equal(3U, header.TxCount);
        Assert.Equal(42UL, header.ChainId);
        Assert.Equal(MerkleTree.ComputeRoot([.. new[] { 1, 2, 3 }.Select(i => Keccak256.Hash(Tx(i)))]), header.TxRoot);
        Assert.Equal([0, 1, 2], applied.Outcomes.Select(o => o.Position.Index));
        Assert.All(applied.Outcomes, o => Assert.False(o.Duplicate));
    }

    [Fact]
    public void Apply_Chain_HeightsAreContiguousAndParentsLinkToCommitments()
    {
        var index = new Index();
        BatchHeader? previous = null;
        for (var i = 0; i < 20; i++)
        {
            var header = index.Apply(previous, Batch(1000 + (ulong)i, i))!.Header!;
            Assert.Equal((ulong)i + 1, header.Height);
            Assert.Equal(previous?.Commitment ?? Hash32.Zero, header.ParentHash);
            previous = header;
        }
    }

    [Fact]
    public void Apply_TxOrderedEarlier_IsDroppedAndReportsItsFirstPosition()
    {
        var index = new Index();
        var first = index.Apply(null, Batch(1000, 1, 2)).Header;
        var second = index.Apply(first, Batch(1001, 3, 2, 4));
        Assert.Equal(2U, second.Header!.TxCount);
        var duplicate = second.Outcomes[1];
        Assert.True(duplicate.Duplicate);
        Assert.Equal(new TxPosition(1, 1), duplicate.Position);
        Assert.Equal([new TxPosition(2, 0), new TxPosition(2, 1)], new[] { second.Outcomes[0].Position, second.Outcomes[2].Position });
    }

    [Fact]
    public void Apply_SameTxTwiceInOneBatch_OrdersItOnce()
    {
        var applied = new Index().Apply(null, Batch(1000, 7, 8, 7));
        Assert.Equal(2U, applied.Header!.TxCount);
        Assert.True(applied.Outcomes[2].Duplicate);
        Assert.Equal(applied.Outcomes[0].Position, applied.Outcomes[2].Position);
    }

    [Fact]
    public void Apply_EveryTxAlreadyOrdered_FormsNoBatch()
    {
        var index = new Index();
        var first = index.Apply(null, Batch(1000, 1, 2)).Header;
        var again = index.Apply(first, Batch(1001, 2, 1));
        Assert.Null(again.Header);
        Assert.Empty(again.TxHashes);
        Assert.All(again.Outcomes, o => Assert.True(o.Duplicate));
    }

    [Fact]
    public void Apply_LeaderClockBehindItsPredecessor_KeepsTimestampsMonotonic()
    {
        var index = new Index();
        var first = index.Apply(null, Batch(5000, 1)).Header!;
        var second = index.Apply(first, Batch(4000, 2)).Header!;
        Assert.Equal(5000UL, second.TimestampMs);
    }

    [Fact]
    public void Apply_SameInputsOnTwoNodes_GiveTheSameHeaders()
    {
        var a = new Index();
        var b = new Index();
        BatchHeader? lastA = null, lastB = null;
        for (var i = 0; i < 10; i++)
        {
            var command = Batch(1000 + (ulong)i, i, i + 100, i % 3);
            lastA = a.Apply(lastA, command, 3).Header ?? lastA;
            lastB = b.Apply(lastB, command, 3).Header ?? lastB;
            Assert.Equal(lastA, lastB);
        }
    }

    [Fact]
    public void Apply_KnownHashes_GiveTheSameResultAsHashingHere()
    {
        var command = Batch(1000, 1, 2, 3);
        var hashed = BatchApplier.Apply(null, new MerkleFrontier(), Chain, command, 1, new Index());
        var known = BatchApplier.Apply(null, new MerkleFrontier(), Chain, command, 1, new Index(), [.. command.Txs.Select(t => Keccak256.Hash(t))]);
        Assert.Equal(hashed.Header, known.Header);
    }

    [Fact]
    public void Apply_TermBelowThePrevious_FailsTheInvariant()
    {
        var index = new Index();
        var first = index.Apply(null, Batch(1000, 1), term: 5).Header;
        Assert.Throws<InvariantViolationException>(() => index.Apply(first, Batch(1001, 2), term: 4));
    }

    [Fact]
    public void Apply_ReceiveTimes_AreRecoveredFromTheOffsets()
    {
        var command = new BatchCommand { LeaderTimestampMs = 10_000, Txs = [Tx(1), Tx(2)], ReceivedAgoMs = [5, 12] };
        var applied = BatchApplier.Apply(null, new MerkleFrontier(), Chain, command, 1, new Index());
        Assert.Equal([9_995UL, 9_988UL], applied.ReceivedMs);
    }
}
