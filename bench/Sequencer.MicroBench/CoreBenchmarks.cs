using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Validation;
using Sequencer.Ethereum;

BenchmarkSwitcher.FromAssembly(typeof(Sequencer.MicroBench.MerkleBenchmarks).Assembly).Run(args);

namespace Sequencer.MicroBench
{
    /// <summary>The RFC 6962 keccak256 root of a batch's tx hashes (every node computes it at apply).</summary>
    [MemoryDiagnoser]
    public class MerkleBenchmarks
    {
        private Hash32[] leaves = [];
        private byte[][] txs = [];
        private Hash32[] hashes = [];

        [Params(1, 100, 10_000)]
        public int Txs { get; set; }

        [GlobalSetup]
        public void Setup()
        {
            var random = new Random(1);
            leaves = [.. Enumerable.Range(0, Txs).Select(_ =>
            {
                var bytes = new byte[32];
                random.NextBytes(bytes);
                return new Hash32(bytes);
            })];
            txs = [.. Enumerable.Range(0, Txs).Select(_ =>
            {
                var tx = new byte[256];
                random.NextBytes(tx);
                return tx;
            })];
            hashes = new Hash32[Txs];
        }

        [Benchmark]
        public Hash32 TxRoot() => MerkleTree.ComputeRoot(leaves);

        [Benchmark]
        public Hash32 TxHashes()
        {
            // keccak256 of 256-byte txs one at a time.
            var last = Hash32.Zero;
            for (var i = 0; i < Txs; i++)
                last = Keccak256.Hash(txs[i]);
            return last;
        }

        [Benchmark]
        public Hash32 TxHashesTogether()
        {
            // The same hashes as intake and apply take them: a batch's txs together, four at a time where the CPU allows.
            Keccak256.HashEach(txs, hashes);
            return hashes[Txs - 1];
        }
    }

    /// <summary>The history root: one frontier append per batch, and the root read for the next header.</summary>
    [MemoryDiagnoser]
    public class HistoryBenchmarks
    {
        private MerkleFrontier frontier = new();
        private Hash32 leaf;

        [GlobalSetup]
        public void Setup()
        {
            frontier = new MerkleFrontier();
            for (var i = 0; i < 1_000_000; i++)
                frontier.Append(new Hash32(BitConverter.GetBytes((long)i).Concat(new byte[24]).ToArray()));
            leaf = new Hash32(new byte[32]);
        }

        [Benchmark]
        public Hash32 AppendAndRoot()
        {
            frontier.Append(leaf);
            return frontier.Root;
        }
    }

    /// <summary>The v2 header commitment (keccak256 of 10 ABI words).</summary>
    [MemoryDiagnoser]
    public class HeaderBenchmarks
    {
        private readonly BatchHeader header = new(1, 1, 123_456, 7, Hash32.Zero, Hash32.Zero, Hash32.Zero, 100, 1_796_000_000_000);

        [Benchmark]
        public Hash32 Commitment() => new BatchHeader(header.ChainId, header.KeyEpoch, header.Height, header.Term, header.ParentHash, header.HistoryRoot, header.TxRoot, header.TxCount, header.TimestampMs).Commitment;
    }

    /// <summary>A batch entry of 256-byte txs through the log codec, and its deterministic apply.</summary>
    [MemoryDiagnoser]
    public class EntryBenchmarks
    {
        private BatchCommand command = new();
        private byte[] encoded = [];

        [Params(1, 100, 1000)]
        public int Txs { get; set; }

        [GlobalSetup]
        public void Setup()
        {
            var random = new Random(2);
            command = new BatchCommand
            {
                ProposerTerm = 3, LeaderTimestampMs = 1_796_000_000_000,
                Txs = [.. Enumerable.Range(0, Txs).Select(_ =>
                {
                    var tx = new byte[256];
                    random.NextBytes(tx);
                    return tx;
                })],
                ReceivedAgoMs = [.. Enumerable.Repeat(2u, Txs)],
            };
            encoded = LogCommandCodec.Encode(command);
        }

        [Benchmark]
        public byte[] Encode() => LogCommandCodec.Encode(command);

        [Benchmark]
        public ILogCommand? Decode() => LogCommandCodec.Decode(new System.Buffers.ReadOnlySequence<byte>(encoded));

        [Benchmark]
        public AppliedBatch Apply() => BatchApplier.Apply(null, new MerkleFrontier(), new ChainParameters(1, 1), command, 3, NothingOrdered.Instance);

        private sealed class NothingOrdered : IOrderedTxLookup
        {
            public static readonly NothingOrdered Instance = new();

            public bool TryGetPosition(Hash32 hash, out TxPosition position)
            {
                position = default;
                return false;
            }
        }
    }

    /// <summary>Ethereum mode: decoding, checking and recovering the sender of one EIP-1559 tx.</summary>
    [MemoryDiagnoser]
    public class ValidationBenchmarks
    {
        private readonly EthereumTxRules rules = new(1);
        private byte[] tx = [];

        [GlobalSetup]
        public void Setup()
            => tx = new EthTransaction { ChainId = 1, Nonce = 5, MaxFeePerGas = 1_000_000_000, GasLimit = 21_000, Data = new byte[200] }
                .Sign(EthKey.FromHex("0x" + new string('7', 64))).Raw;

        [Benchmark]
        public TxAccount? Identify() => rules.Identify(tx, out _);
    }
}
