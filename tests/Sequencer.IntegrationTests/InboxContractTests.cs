using Sequencer.Client.Local;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Ethereum;
using Sequencer.L1;
using Sequencer.Threshold;
using BcInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.IntegrationTests;

/// <summary>
/// The inbox contract (contracts/SequencerInbox.sol, compiled by solc-js) on a real L1 (anvil): it accepts only
/// heads signed by the group key that extend the last posted head, within the gas target, and its on-chain FROST
/// verifier agrees with the C# one.
/// </summary>
public sealed class InboxContractTests(ITestOutputHelper output)
{
    private const ulong ChainId = 7;
    private const int GasTarget = 80_000;

    /// <summary>A t-of-n key and a chain of headers whose history roots are real.</summary>
    private sealed class Fixture
    {
        public Fixture(int heights, ulong keyEpoch = 1, ulong chainId = ChainId)
        {
            (Shares, Group) = TrustedDealer.Generate(2, 3);
            var commitments = new List<Hash32>();
            for (var h = 1; h <= heights; h++)
            {
                var header = new BatchHeader(chainId, keyEpoch, (ulong)h, 1, h == 1 ? Hash32.Zero : commitments[^1],
                    MerkleTree.ComputeRoot(commitments.ToArray()), Keccak256.Hash(BitConverter.GetBytes(h)), 1, 1_000 + (ulong)h);
                Headers.Add(header);
                commitments.Add(header.Commitment);
            }
        }

        public IReadOnlyList<KeyShare> Shares { get; }

        public GroupKey Group { get; }

        public List<BatchHeader> Headers { get; } = [];

        public byte[] Key => Secp256k1.SerializeElement(Group.PublicKey);

        public BatchHeader Head(int height) => Headers[height - 1];

        // The audit path of head `last`'s commitment in head `height`'s history.
        public Hash32[] LinkProof(int last, int height)
            => MerkleTree.ComputeAuditPath([.. Headers.Take(height - 1).Select(h => h.Commitment)], last - 1);
    }

    private static (byte[] R, byte[] Z) Sign(IReadOnlyList<KeyShare> shares, GroupKey group, byte[] message)
    {
        var signers = shares.Take(group.Threshold).ToList();
        var commits = signers.Select(s => Frost.Commit(s.Identifier, s.Secret)).ToList();
        var session = new FrostSession(group.PublicKey, [.. commits.Select(c => c.Item2)], message);
        var signature = session.Aggregate(signers.Select((s, i) => session.Sign(s, commits[i].Item1)));
        Assert.True(Frost.Verify(message, signature, group.PublicKey));
        return (Secp256k1.SerializeElement(signature.R), Secp256k1.SerializeScalar(signature.Z));
    }

    private static (byte[] R, byte[] Z) Sign(Fixture fixture, BatchHeader header) => Sign(fixture.Shares, fixture.Group, header.Commitment.ToArray());

    private static async Task<(LocalAnvil Anvil, EthRpcClient Rpc, EthSender Sender)> StartL1Async(string name)
    {
        var anvil = await LocalAnvil.StartAsync(Path.Combine(Path.GetTempPath(), "sequencer-it", $"anvil-{name}-{Environment.ProcessId}.log"));
        var rpc = new EthRpcClient(anvil.Rpc);
        return (anvil, rpc, new EthSender(rpc, EthKey.FromHex(LocalAnvil.DefaultKey), anvil.ChainId));
    }

    private static async Task<Address> DeployAsync(EthSender sender, Fixture fixture, ulong keyEpoch = 1)
    {
        var receipt = await sender.SendAsync(null, InboxContract.Deployment(ChainId, keyEpoch, fixture.Key), TimeSpan.FromSeconds(30));
        Assert.True(receipt.Success);
        return receipt.ContractAddress!;
    }

    private static async Task<EthReceipt> PostAsync(EthSender sender, Address inbox, BatchHeader header, (byte[] R, byte[] Z) signature, Hash32[] proof)
        => await sender.SendAsync(inbox, InboxContract.PostHead(header, signature.R, signature.Z, proof), TimeSpan.FromSeconds(30));

    // What the contract says about a call, without sending it: null when it would succeed, else its error.
    private static async Task<string?> RevertOfAsync(EthRpcClient rpc, EthSender sender, Address inbox, byte[] data)
    {
        try
        {
            await rpc.EstimateGasAsync(new EthCall(inbox, data, sender.Address));
            return null;
        }
        catch (EthRpcException e)
        {
            return InboxContract.DescribeRevert(e.Data) ?? e.Message;
        }
    }

    [Fact]
    public async Task SignedHeadsThatExtendTheLast_AreAccepted_WithinTheGasTarget_WhateverTheyCover()
    {
        var (anvil, rpc, sender) = await StartL1Async("post");
        await using var _ = anvil;
        using var __ = rpc;
        var fixture = new Fixture(300);
        var inbox = await DeployAsync(sender, fixture);
        var reader = new InboxReader(rpc, inbox);
        Assert.Equal(0UL, await reader.LastHeightAsync());
        Assert.Equal(1UL, await reader.KeyEpochAsync());
        Assert.Equal(ChainId, await reader.ChainIdAsync());
        Assert.Equal(fixture.Key, await reader.GroupKeyAsync());

        // The first head needs no link proof; each later one proves the last posted head is in its history.
        (int Last, int Height)[] posts = [(0, 1), (1, 7), (7, 8), (8, 100), (100, 300)];
        foreach (var (last, height) in posts)
        {
            var head = fixture.Head(height);
            var receipt = await PostAsync(sender, inbox, head, Sign(fixture, head), last == 0 ? [] : fixture.LinkProof(last, height));
            Assert.True(receipt.Success);
            var posted = Assert.Single(receipt.Logs.Select(InboxContract.ReadHeadPosted).OfType<HeadPostedEvent>());
            Assert.Equal((ulong)height, posted.Height);
            Assert.Equal(head.Commitment, posted.Commitment);
            Assert.Equal(head.HistoryRoot, posted.HistoryRoot);
            Assert.Equal((ulong)height, await reader.LastHeightAsync());
            Assert.Equal(head.Commitment, await reader.LastHashAsync());
            output.WriteLine($"post of head {height} (covers {height - last} batches, link proof of {(last == 0 ? 0 : fixture.LinkProof(last, height).Length)} hashes): {receipt.GasUsed} gas, {receipt.GasUsed / (ulong)(height - last)} gas per covered batch");
            Assert.True(receipt.GasUsed <= GasTarget, $"a post cost {receipt.GasUsed} gas, over the {GasTarget} target");
        }

        var events = await reader.HeadsPostedAsync(0, await rpc.BlockNumberAsync());
        Assert.Equal(posts.Select(p => (ulong)p.Height), events.Select(e => e.Height));
    }

    [Fact]
    public async Task WhatTheContractMustRefuse_RevertsWithANamedError()
    {
        var (anvil, rpc, sender) = await StartL1Async("refuse");
        await using var _ = anvil;
        using var __ = rpc;
        var fixture = new Fixture(20);
        var inbox = await DeployAsync(sender, fixture);
        var head5 = fixture.Head(5);
        var good5 = Sign(fixture, head5);
        Assert.True((await PostAsync(sender, inbox, head5, good5, [])).Success);
        var head9 = fixture.Head(9);
        var good9 = Sign(fixture, head9);
        var proof = fixture.LinkProof(5, 9);
        Assert.Null(await RevertOfAsync(rpc, sender, inbox, InboxContract.PostHead(head9, good9.R, good9.Z, proof)));

        // A wrong signature: z changed, R of another signature, a signature over another head, or by another key.
        var z = new BcInteger(1, good9.Z).Add(BcInteger.One).Mod(Secp256k1.Order);
        var otherKey = new Fixture(1);
        var cases = new (string Error, byte[] Data)[]
        {
            ("BadSignature()", InboxContract.PostHead(head9, good9.R, Secp256k1.SerializeScalar(z), proof)),
            ("BadSignature()", InboxContract.PostHead(head9, Sign(fixture, fixture.Head(10)).R, good9.Z, proof)),
            ("BadSignature()", InboxContract.PostHead(head9, good5.R, good5.Z, proof)),
            ("BadSignature()", InboxContract.PostHead(head9, Sign(otherKey.Shares, otherKey.Group, head9.Commitment.ToArray()).R, Sign(otherKey.Shares, otherKey.Group, head9.Commitment.ToArray()).Z, proof)),
            // A bad link proof: a hash changed, the path of another leaf, none at all.
            ("BadLinkProof()", InboxContract.PostHead(head9, good9.R, good9.Z, [Keccak256.Hash([1]), .. proof[1..]])),
            ("BadLinkProof()", InboxContract.PostHead(head9, good9.R, good9.Z, fixture.LinkProof(4, 9))),
            ("BadLinkProof()", InboxContract.PostHead(head9, good9.R, good9.Z, [])),
            // Not higher: the same head again (a replay) or a lower one.
            ("NotHigher(5, 5)", InboxContract.PostHead(head5, good5.R, good5.Z, [])),
            ("NotHigher(5, 3)", InboxContract.PostHead(fixture.Head(3), Sign(fixture, fixture.Head(3)).R, Sign(fixture, fixture.Head(3)).Z, [])),
        };
        foreach (var (error, data) in cases)
            Assert.Equal(error, await RevertOfAsync(rpc, sender, inbox, data));

        // Another chain's or another key epoch's head, signed by the right key.
        var otherChain = new Fixture(9, chainId: ChainId + 1).Head(9);
        Assert.Equal($"WrongChain({ChainId}, {ChainId + 1})", await RevertOfAsync(rpc, sender, inbox, InboxContract.PostHead(otherChain, Sign(fixture, otherChain).R, Sign(fixture, otherChain).Z, proof)));
        var otherEpoch = new Fixture(9, keyEpoch: 2).Head(9);
        Assert.Equal("WrongKeyEpoch(1, 2)", await RevertOfAsync(rpc, sender, inbox, InboxContract.PostHead(otherEpoch, Sign(fixture, otherEpoch).R, Sign(fixture, otherEpoch).Z, proof)));

        // A refused post sent anyway is mined as a failure and changes nothing.
        var failed = await sender.SendAsync(inbox, cases[0].Data, TimeSpan.FromSeconds(30), gasLimit: 200_000);
        Assert.False(failed.Success);
        Assert.Equal(5UL, await new InboxReader(rpc, inbox).LastHeightAsync());

        // A group key that is not a curve point cannot be deployed.
        try
        {
            await rpc.EstimateGasAsync(new EthCall(null, InboxContract.Deployment(ChainId, 1, [0x02, .. new byte[32]]), sender.Address));
            Assert.Fail("a contract with the key 0x02 00..00 was deployable");
        }
        catch (EthRpcException e)
        {
            Assert.Equal("BadGroupKey()", InboxContract.DescribeRevert(e.Data));
        }
    }

    [Fact]
    public async Task KeyRotation_NeedsTheCurrentKeysSignature_AndLaterHeadsTheNewKey()
    {
        var (anvil, rpc, sender) = await StartL1Async("rotate");
        await using var _ = anvil;
        using var __ = rpc;
        var first = new Fixture(4);
        var inbox = await DeployAsync(sender, first);
        var reader = new InboxReader(rpc, inbox);
        Assert.True((await PostAsync(sender, inbox, first.Head(4), Sign(first, first.Head(4)), [])).Success);

        // Epoch 2's key and headers continue the same chain: heights 5.. under key epoch 2, histories over 1..4 too.
        var second = new Fixture(0);
        var commitments = first.Headers.Select(h => h.Commitment).ToList();
        var headers = new List<BatchHeader>(first.Headers);
        for (var h = 5; h <= 8; h++)
        {
            var header = new BatchHeader(ChainId, 2, (ulong)h, 2, commitments[^1], MerkleTree.ComputeRoot(commitments.ToArray()), Keccak256.Hash([(byte)h]), 1, 2_000 + (ulong)h);
            headers.Add(header);
            commitments.Add(header.Commitment);
        }

        var message = InboxContract.RotationMessage(ChainId, 1, 2, second.Key);
        var bySelf = Sign(second.Shares, second.Group, message);
        Assert.Equal("BadSignature()", await RevertOfAsync(rpc, sender, inbox, InboxContract.RotateKey(2, second.Key, bySelf.R, bySelf.Z)));
        var byCurrent = Sign(first.Shares, first.Group, message);
        Assert.Equal("WrongKeyEpoch(2, 3)", await RevertOfAsync(rpc, sender, inbox, InboxContract.RotateKey(3, second.Key, byCurrent.R, byCurrent.Z)));
        Assert.True((await sender.SendAsync(inbox, InboxContract.RotateKey(2, second.Key, byCurrent.R, byCurrent.Z), TimeSpan.FromSeconds(30))).Success);
        Assert.Equal(2UL, await reader.KeyEpochAsync());
        Assert.Equal(second.Key, await reader.GroupKeyAsync());
        // The same rotation again is refused (the epoch moved on).
        Assert.Equal("WrongKeyEpoch(3, 2)", await RevertOfAsync(rpc, sender, inbox, InboxContract.RotateKey(2, second.Key, byCurrent.R, byCurrent.Z)));

        // Heads of epoch 2 need the new key; the link to the last head of epoch 1 is still required.
        var head8 = headers[7];
        var proof = MerkleTree.ComputeAuditPath([.. commitments.Take(7)], 3);
        var oldKey = Sign(first.Shares, first.Group, head8.Commitment.ToArray());
        Assert.Equal("BadSignature()", await RevertOfAsync(rpc, sender, inbox, InboxContract.PostHead(head8, oldKey.R, oldKey.Z, proof)));
        var newKey = Sign(second.Shares, second.Group, head8.Commitment.ToArray());
        Assert.Equal("BadLinkProof()", await RevertOfAsync(rpc, sender, inbox, InboxContract.PostHead(head8, newKey.R, newKey.Z, [])));
        Assert.True((await PostAsync(sender, inbox, head8, newKey, proof)).Success);
        Assert.Equal(8UL, await reader.LastHeightAsync());
    }

    [Fact]
    public async Task OnChainVerifier_AgreesWithTheCSharpVerifier_OnRandomKeysAndMessages()
    {
        var (anvil, rpc, sender) = await StartL1Async("verify");
        await using var _ = anvil;
        using var __ = rpc;
        var random = new Random(9591);
        var checkedCount = 0;
        for (var k = 0; k < 4; k++)
        {
            var fixture = new Fixture(0);
            var inbox = await DeployAsync(sender, fixture);
            for (var m = 0; m < 12; m++)
            {
                var message = new byte[32];
                random.NextBytes(message);
                var (r, z) = Sign(fixture.Shares, fixture.Group, message);
                var other = new byte[32];
                random.NextBytes(other);
                var zPlus = Secp256k1.SerializeScalar(new BcInteger(1, z).Add(BcInteger.One).Mod(Secp256k1.Order));
                foreach (var (msg, sr, sz) in new[] { (message, r, z), (other, r, z), (message, r, zPlus), (message, Sign(fixture.Shares, fixture.Group, other).R, z) })
                {
                    var expected = Frost.Verify(msg, new FrostSignature(Secp256k1.DeserializeElement(sr), new BcInteger(1, sz)), fixture.Group.PublicKey);
                    var point = Secp256k1.DeserializeElement(sr).Normalize();
                    var call = Abi.Call("verify(bytes32,(uint256,uint256,uint256))", AbiValue.Bytes32(msg),
                        AbiValue.Tuple(AbiValue.Bytes32(point.AffineXCoord.GetEncoded()), AbiValue.Bytes32(point.AffineYCoord.GetEncoded()), AbiValue.Bytes32(sz)));
                    var onChain = new AbiReader(await rpc.CallAsync(new EthCall(inbox, call))).Bool(0);
                    Assert.Equal(expected, onChain);
                    checkedCount++;
                }
            }
        }

        output.WriteLine($"{checkedCount} signatures checked on chain and in C#, all in agreement");
        Assert.Equal(4 * 12 * 4, checkedCount);
    }
}
