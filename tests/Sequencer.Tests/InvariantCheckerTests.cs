using System.Globalization;
using Sequencer.Checker;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;

namespace Sequencer.Tests;

public sealed class InvariantCheckerTests
{
    private static string TxHash(int i) => Keccak256.Hash(BatchApplierTests.Tx(i)).ToString();

    private static List<BatchResponse> Chain(params int[][] batches)
    {
        var result = new List<BatchResponse>();
        var parent = Hash32.Zero;
        var history = new MerkleFrontier();
        for (var h = 0; h < batches.Length; h++)
        {
            var leaves = batches[h].Select(i => Hash32.Parse(TxHash(i))).ToArray();
            var header = new BatchHeader(1, 0, (ulong)h + 1, 1, parent, history.Root, MerkleTree.ComputeRoot(leaves), (uint)leaves.Length, 1000);
            result.Add(new BatchResponse(
                new HeaderDto("1", "0", (h + 1).ToString(CultureInfo.InvariantCulture), "1", parent.ToString(), history.Root.ToString(), header.TxRoot.ToString(), leaves.Length, 1000),
                header.Commitment.ToString(), [.. leaves.Select(l => l.ToString())]));
            parent = header.Commitment;
            history.Append(header.Commitment);
        }

        return result;
    }

    private static HistoryOp Ok(int tx, ulong height, int index, long invoked, long completed)
        => new(0, TxHash(tx), 1, invoked, completed, OpOutcome.Ok, height, index, null);

    private static InvariantResult Verdict(IReadOnlyList<InvariantResult> results, string name) => results.Single(r => r.Name == name);

    [Fact]
    public void Check_ConsistentRun_PassesEveryInvariant()
    {
        var chain = Chain([1, 2], [3]);
        var history = new[] { Ok(1, 1, 0, 0, 10), Ok(2, 1, 1, 0, 10), Ok(3, 2, 0, 20, 30) };
        var results = InvariantChecker.Check(history, [new NodeChain(1, chain), new NodeChain(2, chain[..1])]);
        Assert.All(results, r => Assert.True(r.Passed, $"{r.Name}: {r.Detail}"));
    }

    [Fact]
    public void Check_AcknowledgedTxMissing_FailsInvAcked()
    {
        var results = InvariantChecker.Check([Ok(1, 1, 0, 0, 10), Ok(9, 1, 1, 0, 10)], [new NodeChain(1, Chain([1]))]);
        Assert.False(Verdict(results, "INV-ACKED").Passed);
        Assert.Contains("lost", Verdict(results, "INV-ACKED").Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_TxOrderedTwice_FailsInvNodup()
        => Assert.False(Verdict(InvariantChecker.Check([], [new NodeChain(1, Chain([1, 2], [1]))]), "INV-NODUP").Passed);

    [Fact]
    public void Check_DivergentLogs_FailInvOrder()
        => Assert.False(Verdict(InvariantChecker.Check([], [new NodeChain(1, Chain([1], [2])), new NodeChain(2, Chain([1], [3]))]), "INV-ORDER").Passed);

    [Fact]
    public void Check_BrokenParentLinkOrWrongRoot_FailsInvChain()
    {
        var chain = Chain([1], [2]);
        chain[1] = chain[1] with { Header = chain[1].Header with { ParentHash = Hash32.Zero.ToString() } };
        Assert.False(Verdict(InvariantChecker.Check([], [new NodeChain(1, chain)]), "INV-CHAIN").Passed);
        var wrongRoot = Chain([1]);
        wrongRoot[0] = wrongRoot[0] with { Txs = [TxHash(5)] };
        Assert.False(Verdict(InvariantChecker.Check([], [new NodeChain(1, wrongRoot)]), "INV-CHAIN").Passed);
    }

    [Fact]
    public void Check_WrongHistoryRoot_FailsInvChain_EvenWhenTheHashMatchesTheAlteredHeader()
    {
        // A node that serves a consistent header (its hash recomputes) whose history root lies is caught.
        var chain = Chain([1], [2], [3]);
        Assert.True(Verdict(InvariantChecker.Check([], [new NodeChain(1, chain)]), "INV-CHAIN").Passed);
        var lying = chain[2].Header with { HistoryRoot = chain[1].Header.HistoryRoot };
        chain[2] = chain[2] with { Header = lying, Hash = lying.ToHeader().Commitment.ToString() };
        var verdict = Verdict(InvariantChecker.Check([], [new NodeChain(1, chain)]), "INV-CHAIN");
        Assert.False(verdict.Passed);
        Assert.Contains("historyRoot of height 3", verdict.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckerMerkle_AgreesWithTheNodesMerkleCode_RootsAndInclusion()
    {
        var leaves = Enumerable.Range(0, 70).Select(i => Keccak256.Hash(BitConverter.GetBytes(i))).ToArray();
        var accumulator = new CheckerMerkle.Accumulator();
        Assert.Equal(MerkleTree.EmptyRoot.ToArray(), accumulator.Root);
        for (var n = 1; n <= leaves.Length; n++)
        {
            accumulator.Add(leaves[n - 1].ToArray());
            var root = MerkleTree.ComputeRoot(leaves.AsSpan(0, n));
            Assert.Equal(root.ToArray(), accumulator.Root);
            for (var i = 0; i < n; i += 7)
            {
                var path = MerkleTree.ComputeAuditPath(leaves.AsSpan(0, n), i).Select(p => p.ToArray()).ToList();
                Assert.True(CheckerMerkle.VerifyInclusion((ulong)i, (ulong)n, leaves[i].ToArray(), path, root.ToArray()));
                Assert.False(CheckerMerkle.VerifyInclusion((ulong)i, (ulong)n, leaves[(i + 1) % n].ToArray(), path, root.ToArray()) && n > 1);
            }
        }
    }

    [Fact]
    public void Check_LaterSubmitOrderedFirst_FailsInvRealtime()
    {
        // tx 2 completed (t=10) before tx 1 was invoked (t=20), yet tx 1 is ordered first.
        var chain = Chain([1], [2]);
        var results = InvariantChecker.Check([Ok(2, 2, 0, 0, 10), Ok(1, 1, 0, 20, 30)], [new NodeChain(1, chain)]);
        Assert.False(Verdict(results, "INV-REALTIME").Passed);
    }

    [Fact]
    public void NoConflict_PassesOnePerSenderAndNonce_AndFailsEachWayItCanBeBroken()
    {
        // txs 1..4: alice nonces 0, 1, 1 (a conflicting tx), and bob nonce 0.
        var sent = new Dictionary<string, SentAccount>
        {
            [TxHash(1)] = new("0xa", 0, 0), [TxHash(2)] = new("0xa", 1, 0), [TxHash(3)] = new("0xa", 1, 0), [TxHash(4)] = new("0xb", 0, 1),
        };
        var good = new NodeChain(1, Chain([1, 4], [2]));
        var acked = new List<HistoryOp> { Ok(1, 1, 0, 0, 1), Ok(2, 2, 0, 2, 3) };
        Assert.True(NonceConflictChecker.Check([good], sent, [new NonceRefusal(TxHash(3), TxHash(2), 2)], acked).Passed);

        // The same nonce ordered twice.
        var twice = NonceConflictChecker.Check([new NodeChain(1, Chain([1, 2], [3]))], sent, [], []);
        Assert.False(twice.Passed);
        Assert.Contains("ordered twice", twice.Detail, StringComparison.Ordinal);

        // A nonce ordered before the one below it.
        Assert.Contains("was next", NonceConflictChecker.Check([new NodeChain(1, Chain([2], [1]))], sent, [], []).Detail, StringComparison.Ordinal);

        // An acknowledged tx that is not the one ordered for its nonce (its conflict won).
        var lost = NonceConflictChecker.Check([good], sent, [], [Ok(3, 2, 0, 2, 3)]);
        Assert.False(lost.Passed);
        Assert.Contains("is not the ordered tx", lost.Detail, StringComparison.Ordinal);

        // A refusal that names the wrong holder, or a refused tx that got ordered after all.
        Assert.Contains("named", NonceConflictChecker.Check([good], sent, [new NonceRefusal(TxHash(3), TxHash(1), 2)], []).Detail, StringComparison.Ordinal);
        Assert.Contains("but is ordered", NonceConflictChecker.Check([good], sent, [new NonceRefusal(TxHash(2), null, 2)], []).Detail, StringComparison.Ordinal);
    }
}
