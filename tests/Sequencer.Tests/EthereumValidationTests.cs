using System.Numerics;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Validation;
using Sequencer.Ethereum;

namespace Sequencer.Tests;

/// <summary>
/// Issue 13: the ethereum validation mode's rules on published vectors and on what must be refused, the apply rule
/// (one ordered tx per sender and nonce, in nonce order) as a property over random conflicting batches, and fuzzed raw
/// transactions that never crash the rules.
/// </summary>
public sealed class EthereumValidationTests
{
    private const string Eip155Raw = "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";
    private static readonly BigInteger N = BigInteger.Parse("115792089237316195423570985008687907852837564279074904382605163141518161494337", System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void Eip155Example_IsValid_ForChain1_WithItsPublishedSender_AndRefusedElsewhere()
    {
        var raw = Convert.FromHexString(Eip155Raw);
        var account = new EthereumTxRules(1).Identify(raw, out var rejection);
        Assert.Null(rejection);
        Assert.Equal("0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f", account!.Value.Sender.ToString());
        Assert.Equal(9UL, account.Value.Nonce);

        Assert.Null(new EthereumTxRules(5).Identify(raw, out rejection));
        Assert.Equal("wrong_chain", rejection!.Code);
    }

    [Theory]
    [MemberData(nameof(EthereumTests.Eip1559Vectors), MemberType = typeof(EthereumTests))]
    public void Eip1559Vectors_AreValid_WithTheirSenderAndNonce(ulong nonce, ulong value, ulong gasLimit, ulong priorityFee, ulong maxFee, string wrapped)
    {
        _ = (value, gasLimit, priorityFee, maxFee);
        var raw = Rlp.Decode(Convert.FromHexString(wrapped[2..])).Bytes;
        var account = new EthereumTxRules(7822).Identify(raw, out var rejection);
        Assert.Null(rejection);
        Assert.Equal(EthKey.FromHex("0x8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63").Address.ToString().ToLowerInvariant(), account!.Value.Sender.ToString());
        Assert.Equal(nonce, account.Value.Nonce);
    }

    [Fact]
    public void MalleatedUnprotectedUnsignedAndMalformedTxs_AreRefused_WithTheirCode()
    {
        var rules = new EthereumTxRules(1);
        var key = EthKey.FromHex("0x4646464646464646464646464646464646464646464646464646464646464646");
        var transaction = new EthTransaction { Type = TransactionType.Legacy, ChainId = 1, Nonce = 9, GasPrice = 20_000_000_000, GasLimit = 21000, Value = 1 };
        var signed = transaction.Sign(key);

        // The same signature with s' = n - s (and the other parity) recovers the same key: refused (EIP-2).
        var high = signed.Signature with { S = N - signed.Signature.S, YParity = 1 - signed.Signature.YParity };
        Assert.Equal("high_s", Code(rules, Reencode(transaction, high)));

        // A legacy tx without EIP-155 (v 27/28) could be replayed on any chain.
        var unprotected = (transaction with { ChainId = null }).Sign(key);
        Assert.Equal("unprotected_tx", Code(rules, unprotected.Raw));

        // r = s = 0: unsigned.
        Assert.Equal("bad_signature", Code(rules, Reencode(transaction, new EcdsaSignature(BigInteger.Zero, BigInteger.One, 0))));

        Assert.Equal("malformed_tx", Code(rules, [0x02, 0xc0]));
        Assert.Equal("malformed_tx", Code(rules, [0x7f]));
        Assert.Equal("malformed_tx", Code(rules, []));
        Assert.Equal("nonce_max", Code(rules, (transaction with { Nonce = ulong.MaxValue }).Sign(key).Raw));

        static byte[] Reencode(EthTransaction transaction, EcdsaSignature signature) => transaction.Encode(signature);

        static string? Code(EthereumTxRules rules, byte[] raw)
        {
            Assert.Null(rules.Identify(raw, out var rejection));
            return rejection?.Code;
        }
    }

    [Fact]
    public void FuzzedRawTransactions_NeverThrow_OnlyRefuse()
    {
        var rules = new EthereumTxRules(1);
        var key = EthKey.FromHex("0x4646464646464646464646464646464646464646464646464646464646464646");
        var seeds = new[]
        {
            Convert.FromHexString(Eip155Raw),
            new EthTransaction { ChainId = 1, Nonce = 3, MaxFeePerGas = 10, GasLimit = 21000, Data = [1, 2, 3] }.Sign(key).Raw,
            new EthTransaction { Type = TransactionType.AccessList, ChainId = 1, Nonce = 4, GasPrice = 9, GasLimit = 30000 }.Sign(key).Raw,
        };
        var random = new Random(1309);
        var valid = 0;
        for (var round = 0; round < 20_000; round++)
        {
            var raw = (byte[])seeds[round % seeds.Length].Clone();
            for (var flips = random.Next(1, 4); flips > 0; flips--)
            {
                switch (random.Next(3))
                {
                    case 0:
                        raw[random.Next(raw.Length)] ^= (byte)(1 << random.Next(8));
                        break;
                    case 1:
                        raw = raw[..random.Next(raw.Length)];
                        break;
                    default:
                        raw = [.. raw, (byte)random.Next(256)];
                        break;
                }

                if (raw.Length == 0)
                    break;
            }

            var account = rules.Identify(raw, out var rejection);
            Assert.True(account is null != (rejection is null), "either an account or a refusal");
            if (account is not null)
                valid++;
        }

        Assert.True(valid < 20_000);
    }

    // Rules for the apply property: a tx is "sender byte, nonce byte, payload"; its (sender, nonce) is read off it.
    private sealed class ToyRules : ITxRules
    {
        public TxAccount? Identify(ReadOnlySpan<byte> tx, out TxRejection? rejection)
        {
            rejection = tx.Length < 3 ? new TxRejection("malformed_tx", "short") : null;
            if (rejection is not null)
                return null;
            Span<byte> address = stackalloc byte[20];
            address[19] = tx[0];
            return new TxAccount(SenderId.FromBytes(address), tx[1]);
        }
    }

    private sealed class Accounts : IAccountLookup
    {
        public Dictionary<SenderId, AccountState> States { get; } = [];

        public AccountState Get(SenderId sender) => States.GetValueOrDefault(sender);
    }

    private sealed class Ordered : IOrderedTxLookup
    {
        public Dictionary<Hash32, TxPosition> Positions { get; } = [];

        public bool TryGetPosition(Hash32 hash, out TxPosition position) => Positions.TryGetValue(hash, out position);
    }

    [Fact]
    public void Apply_OrdersAtMostOneTxPerSenderAndNonce_InNonceOrder_WhateverTheLeaderProposes()
    {
        for (var seed = 0; seed < 200; seed++)
        {
            var random = new Random(seed);
            var rules = new ToyRules();
            var accounts = new Accounts();
            var ordered = new Ordered();
            var history = new MerkleFrontier();
            BatchHeader? previous = null;
            var orderedPairs = new Dictionary<(SenderId, ulong), Hash32>();
            for (var batchNumber = 0; batchNumber < 30; batchNumber++)
            {
                // Txs from 4 senders with nonces near their next, with conflicting payloads, retries of the same bytes, and junk.
                var txs = new List<byte[]>();
                for (var i = random.Next(1, 12); i > 0; i--)
                {
                    var sender = (byte)random.Next(4);
                    var next = accounts.Get(new TxAccount(SenderId.FromBytes([.. new byte[19], sender]), 0).Sender).NextNonce;
                    var nonce = (byte)Math.Max(0, (int)next + random.Next(-2, 3));
                    txs.Add(random.Next(20) == 0 ? [sender] : [sender, nonce, (byte)random.Next(3)]);
                }

                var command = new BatchCommand { ProposerTerm = 1, LeaderTimestampMs = (ulong)batchNumber, Txs = txs, ReceivedAgoMs = [] };
                var result = BatchApplier.Apply(previous, history, new ChainParameters(1, 0), command, 1, ordered, null, new ValidationContext(rules, accounts));
                if (result.Header is { } header)
                {
                    for (var i = 0; i < result.TxHashes.Length; i++)
                    {
                        var account = TxAccount.ReadFrom(result.TxAccounts.AsSpan(i * TxAccount.EncodedLength));
                        Assert.True(orderedPairs.TryAdd((account.Sender, account.Nonce), result.TxHashes[i]), $"seed {seed}: ({account.Sender}, {account.Nonce}) ordered twice");
                        Assert.Equal(accounts.Get(account.Sender).NextNonce, account.Nonce);
                        accounts.States[account.Sender] = new AccountState(account.Nonce + 1, result.TxHashes[i], header.Height);
                        ordered.Positions[result.TxHashes[i]] = new TxPosition(header.Height, i);
                    }

                    history.Append(header.Commitment);
                    previous = header;
                }

                // Every refused tx says why; a taken nonce names the holder when it is the sender's last tx.
                foreach (var outcome in result.Outcomes.Where(o => o.Rejected is not null))
                    Assert.Contains(outcome.Rejected!.Code, new[] { "nonce_used", "nonce_gap", "malformed_tx" });
            }
        }
    }
}

/// <summary>The applied state in ethereum mode: genesis and accounts through a store reopen and a snapshot install.</summary>
public sealed class EthereumAppliedStateTests
{
    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 4, MaxUnpersistedBatches = 16, PersistIntervalMs = 10_000 };

    private static Sequencer.Raft.AppliedState Open(Sequencer.Core.Storage.IBatchStore store, long retained = 0, ulong chainId = 1)
        => new(store, new ChainParameters(chainId, 0), Limits, new Sequencer.Raft.WalRetention(retained, long.MaxValue),
            new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)),
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, rulesFor: (mode, chain) => mode == ValidationMode.Ethereum ? new EthereumTxRules(chain) : null);

    private static readonly EthKey Alice = EthKey.FromHex("0x" + new string('5', 64));

    private static byte[] Tx(ulong nonce, byte payload)
        => new EthTransaction { ChainId = 1, Nonce = nonce, MaxFeePerGas = 1, GasLimit = 21_000, Data = [payload] }.Sign(Alice).Raw;

    private static SenderId Sender => SenderId.FromBytes(Alice.Address.Bytes);

    [Fact]
    public async Task ARequestRepeatingTxs_OrdersEachOnce_AndAnOrderedTxInALaterRequestKeepsItsPosition()
    {
        // A copy of a tx in the same request is known, not a second use of its nonce; so is a tx ordered before.
        await using var state = Open(new Sequencer.Core.Storage.InMemoryBatchStore());
        await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Ethereum }, 1, 1, CancellationToken.None);
        using var log = new FakeLeaderLog(state, appliedThrough: 1);
        await using var service = new Sequencer.Node.Replication.SubmitService(log, state, Limits,
            new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), new Sequencer.Node.Telemetry.NodeMetrics(),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<Sequencer.Node.Replication.SubmitService>.Instance, _ => { });
        var first = await service.SubmitAsync([Tx(0, 1), Tx(1, 2), Tx(0, 1), Tx(1, 2)], CancellationToken.None);
        Assert.Equal(Sequencer.Node.Replication.SubmitStatus.Ordered, first.Status);
        var positions = first.Outcomes.Select(o => o.Position).ToArray();
        Assert.Equal(positions[0], positions[2]);
        Assert.Equal(positions[1], positions[3]);
        Assert.NotEqual(positions[0], positions[1]);

        var second = await service.SubmitAsync([Tx(0, 1), Tx(2, 3), Tx(2, 3)], CancellationToken.None);
        Assert.Equal(Sequencer.Node.Replication.SubmitStatus.Ordered, second.Status);
        Assert.Equal(positions[0], second.Outcomes[0].Position);
        Assert.Equal(second.Outcomes[1].Position, second.Outcomes[2].Position);
        Assert.Equal(3UL, state.Get(Sender).NextNonce);
    }

    [Fact]
    public async Task ParkedTx_LeavesWhenItsClientGoesAway()
    {
        // A tx whose nonce is ahead of its sender's next one waits (parked) for the nonces before it. When the client
        // disconnects first, the tx leaves at once: a client that drops such requests must not fill the pending slots
        // until the next leadership change.
        await using var state = Open(new Sequencer.Core.Storage.InMemoryBatchStore());
        await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Ethereum }, 1, 1, CancellationToken.None);
        using var log = new FakeLeaderLog(state);
        await using var service = new Sequencer.Node.Replication.SubmitService(log, state, Limits,
            new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), new Sequencer.Node.Telemetry.NodeMetrics(),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<Sequencer.Node.Replication.SubmitService>.Instance, _ => { });
        var parked = Tx(1, 9);
        using var client = new CancellationTokenSource();
        var waiting = service.SubmitAsync([parked], client.Token);
        Assert.True(service.TryGetReceived(Keccak256.Hash(parked), out _));

        await client.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.False(service.TryGetReceived(Keccak256.Hash(parked), out _));

        // Nonce 1 is free again: another tx takes its place in the sender's line.
        using var again = new CancellationTokenSource();
        var other = Tx(1, 10);
        var retry = service.SubmitAsync([other], again.Token);
        Assert.True(service.TryGetReceived(Keccak256.Hash(other), out _));
        await again.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => retry.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    /// <summary>
    /// The chain id fixes every commitment. A first genesis entry for another chain is ignored, as on every node, and
    /// raises <c>ForeignChain</c> (the node stops: it is misconfigured, or the members disagree); the store's chain id
    /// (its genesis, else its newest header) is what a node checks its configuration against at start.
    /// </summary>
    [Fact]
    public async Task AGenesisForAnotherChain_IsIgnored_AndRaisesForeignChain_AndTheStoredChainIdComesFromGenesisOrHeaders()
    {
        var store = new Sequencer.Core.Storage.InMemoryBatchStore();
        var foreign = new List<ulong>();
        await using (var state = Open(store))
        {
            state.ForeignChain += foreign.Add;
            Assert.Null(state.StoredChainId);
            await state.ApplyAsync(new GenesisCommand { ChainId = 3, ValidationMode = (byte)ValidationMode.Opaque }, 1, 1, CancellationToken.None);
            Assert.Equal([3UL], foreign);
            Assert.False(state.HasGenesis);
            Assert.Null(state.StoredChainId);

            // The node's own chain's genesis is applied; a later one for another chain is a second genesis, ignored quietly.
            await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Opaque }, 2, 1, CancellationToken.None);
            await state.ApplyAsync(new GenesisCommand { ChainId = 3, ValidationMode = (byte)ValidationMode.Opaque }, 3, 1, CancellationToken.None);
            Assert.Equal([3UL], foreign);
            Assert.Equal(1UL, state.StoredChainId);
            await state.FlushAsync(CancellationToken.None);
        }

        await using (var reopened = Open(store))
            Assert.Equal(1UL, reopened.StoredChainId);

        // A chain ordered without a genesis entry: its headers name the chain.
        var old = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using (var state = Open(old))
        {
            state.ForeignChain += foreign.Add;
            await state.ApplyAsync(new BatchCommand { LeaderTimestampMs = 5, Txs = [[0x01]] }, 1, 1, CancellationToken.None);
            // Its batches are of its configured chain: a genesis for another one is ignored, and the node stays.
            await state.ApplyAsync(new GenesisCommand { ChainId = 3, ValidationMode = (byte)ValidationMode.Opaque }, 2, 1, CancellationToken.None);
            Assert.Equal([3UL], foreign);
            await state.FlushAsync(CancellationToken.None);
        }

        (byte[] Bytes, long Index, long Term) snapshot;
        await using (var reopened = Open(old))
        {
            Assert.Equal(1UL, reopened.StoredChainId);
            snapshot = await SnapshotOf(reopened);
        }

        // A snapshot of chain 1 sent to a node of chain 3 (an empty one, configured with another --chain-id) is
        // refused, and raises ForeignChain: before, the install failed on every attempt while the node stayed up, and
        // the leader resent it for ever.
        await using var other = Open(new Sequencer.Core.Storage.InMemoryBatchStore(), chainId: 3);
        var told = new List<ulong>();
        other.ForeignChain += told.Add;
        await Assert.ThrowsAsync<Sequencer.Core.Encoding.LogFormatException>(() => other.InstallSnapshotAsync(new MemoryStream(snapshot.Bytes), snapshot.Index, snapshot.Term, CancellationToken.None));
        Assert.Equal([1UL], told);
        Assert.Null(other.StoredChainId);

        // A node that holds its configured chain already refuses another chain's snapshot and stays: the leader that
        // sent it is the odd one.
        var chain3 = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using (var state = Open(chain3, chainId: 3))
        {
            await state.ApplyAsync(new BatchCommand { LeaderTimestampMs = 5, Txs = [[0x03]] }, 1, 1, CancellationToken.None);
            await state.FlushAsync(CancellationToken.None);
            snapshot = await SnapshotOf(state);
        }

        await using var holder = Open(old);
        holder.ForeignChain += told.Add;
        var refused = await Assert.ThrowsAsync<Sequencer.Core.Encoding.LogFormatException>(() => holder.InstallSnapshotAsync(new MemoryStream(snapshot.Bytes), snapshot.Index, snapshot.Term, CancellationToken.None));
        Assert.Contains("snapshot is of chain 3", refused.Message, StringComparison.Ordinal);
        Assert.Equal([1UL], told);
        Assert.Equal(1UL, holder.StoredChainId);
    }

    [Fact]
    public async Task GenesisAndAccounts_SurviveAReopen_AndASnapshotInstall_AndDropConflictsAlike()
    {
        var store = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using (var state = Open(store, retained: 1))
        {
            Assert.Null(state.Validation);
            Assert.False(state.HasGenesis);
            await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Ethereum }, 1, 1, CancellationToken.None);
            Assert.Equal(ValidationMode.Ethereum, state.Validation);

            // A later genesis with other rules is ignored.
            await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Opaque }, 2, 1, CancellationToken.None);
            Assert.Equal(ValidationMode.Ethereum, state.Validation);

            var applied = await state.ApplyAsync(new BatchCommand { LeaderTimestampMs = 5, Txs = [Tx(0, 1), Tx(0, 2), Tx(1, 3), Tx(3, 4), [0x01]] }, 3, 1, CancellationToken.None);
            Assert.Equal(2, applied!.TxHashes.Length);
            Assert.Equal(["nonce_used", "nonce_gap", "malformed_tx"], applied.Outcomes.Where(o => o.Rejected is not null).Select(o => o.Rejected!.Code));
            Assert.Equal(new Hash32(Keccak256.Hash(Tx(0, 1)).ToArray()), applied.Outcomes[1].ConflictsWith);
            Assert.Equal(2UL, state.Get(Sender).NextNonce);
            await state.ApplyAsync(new BatchCommand { LeaderTimestampMs = 6, Txs = [Tx(2, 5)] }, 4, 1, CancellationToken.None);
            await state.FlushAsync(CancellationToken.None);
        }

        // Reopened: the genesis and the account come from the store.
        byte[] snapshotBytes;
        long snapshotIndex, snapshotTerm;
        await using (var reopened = Open(store, retained: 0))
        {
            Assert.Equal(ValidationMode.Ethereum, reopened.Validation);
            Assert.Equal(3UL, reopened.Get(Sender).NextNonce);
            Assert.Equal(new Hash32(Keccak256.Hash(Tx(2, 5)).ToArray()), reopened.Get(Sender).LastTx);
            var replay = await reopened.ApplyAsync(new BatchCommand { LeaderTimestampMs = 7, Txs = [Tx(2, 6), Tx(3, 7)] }, 5, 1, CancellationToken.None);
            Assert.Equal("nonce_used", replay!.Outcomes[0].Rejected!.Code);
            Assert.Null(replay.Outcomes[1].Rejected);
            await reopened.FlushAsync(CancellationToken.None);
            var snapshot = reopened.CurrentSnapshot!;
            (snapshotIndex, snapshotTerm) = (snapshot.Index, snapshot.Term);
            using var buffer = new MemoryStream();
            await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, buffer, 4096, CancellationToken.None);
            snapshotBytes = buffer.ToArray();
        }

        // A new node installs the snapshot: same genesis, same accounts, same decisions.
        await using var installed = Open(new Sequencer.Core.Storage.InMemoryBatchStore());
        await installed.InstallSnapshotAsync(new MemoryStream(snapshotBytes), snapshotIndex, snapshotTerm, CancellationToken.None);
        Assert.Equal(ValidationMode.Ethereum, installed.Validation);
        Assert.Equal(4UL, installed.Get(Sender).NextNonce);
        var after = await installed.ApplyAsync(new BatchCommand { LeaderTimestampMs = 8, Txs = [Tx(3, 8), Tx(4, 9)] }, snapshotIndex + 1, 1, CancellationToken.None);
        Assert.Equal("nonce_used", after!.Outcomes[0].Rejected!.Code);
        Assert.Null(after.Outcomes[1].Rejected);
    }

    private static async Task<(byte[] Bytes, long Index, long Term)> SnapshotOf(Sequencer.Raft.AppliedState state)
    {
        var snapshot = state.CurrentSnapshot!;
        using var buffer = new MemoryStream();
        await DotNext.IO.DataTransferObject.WriteToAsync(snapshot, buffer, 4096, CancellationToken.None);
        return (buffer.ToArray(), snapshot.Index, snapshot.Term);
    }

    [Fact]
    public async Task Retention_APrunedChain_StillRefusesItsOldTxs_AndASnapshotOfItRebuildsTheNonces()
    {
        // Retention prunes the tx hashes (and the index) of old heights. An ethereum chain refuses an old tx again
        // by its sender's nonce, so apply decides alike on every node whatever each one pruned.
        var store = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using (var state = Open(store, retained: 0))
        {
            await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Ethereum }, 1, 1, CancellationToken.None);
            for (var nonce = 0UL; nonce < 10; nonce++)
                await state.ApplyAsync(new BatchCommand { LeaderTimestampMs = 5 + nonce, Txs = [Tx(nonce, (byte)nonce)] }, 2 + (long)nonce, 1, CancellationToken.None);
            await state.FlushAsync(CancellationToken.None);
        }

        Assert.Equal(6UL, store.Prune(6, 100));
        Assert.True(store.Get(6)!.Pruned);

        (byte[] Bytes, long Index, long Term) snapshot;
        await using (var reopened = Open(store, retained: 0))
        {
            // The old tx is no longer in any index: the nonce rule refuses it.
            Assert.False(reopened.TryGetPosition(new Hash32(Keccak256.Hash(Tx(0, 0)).ToArray()), out _));
            var replay = await reopened.ApplyAsync(new BatchCommand { LeaderTimestampMs = 20, Txs = [Tx(0, 0), Tx(10, 10)] }, 12, 1, CancellationToken.None);
            Assert.Equal("nonce_used", replay!.Outcomes[0].Rejected!.Code);
            Assert.Null(replay.Outcomes[1].Rejected);
            Assert.Equal(11UL, replay.Header!.Height);
            await reopened.FlushAsync(CancellationToken.None);
            snapshot = await SnapshotOf(reopened);
        }

        // A new node installs the pruned chain: headers and history whole, the pruned prefix without tx data, and
        // the sender's nonce rebuilt from the accounts the pruned batches keep.
        var fresh = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using var installed = Open(fresh);
        await installed.InstallSnapshotAsync(new MemoryStream(snapshot.Bytes), snapshot.Index, snapshot.Term, CancellationToken.None);
        Assert.Equal(11UL, installed.LastHeader!.Height);
        Assert.Equal(6UL, fresh.PrunedHeight);
        Assert.True(installed.GetBatch(3)!.Pruned);
        Assert.False(installed.GetBatch(7)!.Pruned);
        Assert.Equal(11UL, installed.Get(Sender).NextNonce);
        var after = await installed.ApplyAsync(new BatchCommand { LeaderTimestampMs = 30, Txs = [Tx(1, 1), Tx(11, 11)] }, snapshot.Index + 1, 1, CancellationToken.None);
        Assert.Equal("nonce_used", after!.Outcomes[0].Rejected!.Code);
        Assert.Null(after.Outcomes[1].Rejected);
    }

    [Fact]
    public async Task Retention_ADeltaSnapshotPrunedPastTheFollowersTip_PrunesTheFollowersOwnBatchesFirst()
    {
        // A follower that stored 6 whole batches is sent a delta from its tip whose first batches the leader has
        // pruned: pruned batches form a prefix of every chain, so it prunes its own first (an integration run of the
        // retention test stopped on "pruned batches form a prefix of the stored chain: batch 37 after pruned height
        // 28" and never caught up).
        var leaderStore = new Sequencer.Core.Storage.InMemoryBatchStore();
        var followerStore = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using var leader = Open(leaderStore);
        await using var follower = Open(followerStore);
        foreach (var state in new[] { leader, follower })
            await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Ethereum }, 1, 1, CancellationToken.None);
        for (var nonce = 0UL; nonce < 12; nonce++)
        {
            var command = new BatchCommand { LeaderTimestampMs = 5 + nonce, Txs = [Tx(nonce, (byte)nonce)] };
            await leader.ApplyAsync(command, 2 + (long)nonce, 1, CancellationToken.None);
            if (nonce < 6)
                await follower.ApplyAsync(command, 2 + (long)nonce, 1, CancellationToken.None);
        }

        await leader.FlushAsync(CancellationToken.None);
        await follower.FlushAsync(CancellationToken.None);
        Assert.Equal(2UL, followerStore.Prune(2, 100));
        Assert.Equal(9UL, leaderStore.Prune(9, 100));

        var snapshot = leader.CurrentSnapshot!;
        Sequencer.Raft.SnapshotBase.Current = follower.DeltaBase;
        (byte[] Bytes, long Index, long Term) delta;
        try
        {
            delta = await SnapshotOf(leader);
        }
        finally
        {
            Sequencer.Raft.SnapshotBase.Current = null;
        }

        Assert.Equal(1, leader.DeltaSnapshotsSent);
        await follower.InstallSnapshotAsync(new MemoryStream(delta.Bytes), delta.Index, delta.Term, CancellationToken.None);
        Assert.Equal(12UL, follower.LastHeader!.Height);
        Assert.Equal(9UL, followerStore.PrunedHeight);
        for (ulong height = 1; height <= 12; height++)
        {
            Assert.Equal(leaderStore.Get(height)!.Header, followerStore.Get(height)!.Header);
            Assert.Equal(height <= 9, followerStore.Get(height)!.Pruned);
        }

        Assert.Equal(12UL, follower.Get(Sender).NextNonce);
    }

    [Fact]
    public async Task Retention_ASnapshotOfAnOpaqueChainWithPrunedBatches_IsRefused()
    {
        // An opaque chain refuses a tx again only by its hash: a node that installed pruned batches would order an
        // old tx its peers drop. No node prunes one (the option needs ethereum validation), and none installs one.
        var store = new Sequencer.Core.Storage.InMemoryBatchStore();
        await using var state = Open(store);
        await state.ApplyAsync(new GenesisCommand { ChainId = 1, ValidationMode = (byte)ValidationMode.Opaque }, 1, 1, CancellationToken.None);
        for (var i = 0; i < 5; i++)
            await state.ApplyAsync(new BatchCommand { LeaderTimestampMs = 5, Txs = [[(byte)i, 1, 2]] }, 2 + i, 1, CancellationToken.None);
        await state.FlushAsync(CancellationToken.None);
        store.Prune(2, 10);
        var snapshot = await SnapshotOf(state);
        await using var installing = Open(new Sequencer.Core.Storage.InMemoryBatchStore());
        await Assert.ThrowsAsync<Sequencer.Core.Encoding.LogFormatException>(
            () => installing.InstallSnapshotAsync(new MemoryStream(snapshot.Bytes), snapshot.Index, snapshot.Term, CancellationToken.None));
    }
}
