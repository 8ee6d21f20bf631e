using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using MessagePack;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Core.Ordering;
using Sequencer.Core.Protocol;
using Sequencer.Core.Storage;
using Sequencer.Raft;
using Sequencer.Signing;

namespace Sequencer.Tests;

/// <summary>
/// Issue 9: every decoder of bytes from outside the process runs under a seeded mutation fuzzer (valid encodings of
/// every message kind, with bytes flipped, inserted, deleted, set to MessagePack nil, and truncated; and random bytes).
/// A decoder may answer a value or its one documented error, never another exception; a decoded internal entry goes
/// through the leader's intake check and, when taken, through apply, which must not throw either (a poison entry
/// would stop every node). <c>make test</c> runs <see cref="DefaultCases"/> cases per decoder; <c>make fuzz</c> runs
/// <c>SEQUENCER_FUZZ_CASES</c> (1,000,000 in total by default) and prints the counts.
/// </summary>
public sealed class DecoderFuzzTests
{
    /// <summary>Cases per decoder in the regular suite.</summary>
    public const int DefaultCases = 20_000;

    private static int Cases => int.TryParse(Environment.GetEnvironmentVariable("SEQUENCER_FUZZ_CASES"), out var cases) && cases > 0 ? cases : DefaultCases;

    private static readonly SequencerLimits Limits = new() { PersistGroupBatches = 1, MaxUnpersistedBatches = 16, PersistIntervalMs = 10 };

    private static byte[] R(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    // Valid encodings of every log command kind: the seeds the mutations start from.
    private static List<byte[]> CommandSeeds(Random random) =>
    [
        LogCommandCodec.Encode(new BatchCommand { ProposerTerm = 3, LeaderTimestampMs = 5000, Txs = [R(random, 40), R(random, 3)], ReceivedAgoMs = [1, 2] }),
        LogCommandCodec.Encode(new BatchCommand
        {
            ProposerTerm = 1, LeaderTimestampMs = 1, Txs = [R(random, 8)],
            Session = new SigningSession { Height = 1, Attempt = 1, KeyEpoch = 1, Signers = [1, 2], Sequences = [1, 1] },
            Signatures = [new HeadSignature { Height = 1, KeyEpoch = 1, Signers = [1, 2], R = R(random, 33), Z = R(random, 32), SignedAtMs = 9 }],
        }),
        LogCommandCodec.Encode(new NonceCommitmentsCommand { SignerId = 2, KeyEpoch = 1, FirstSequence = 1, Commitments = [R(random, 66), R(random, 66)], Proof = R(random, 65), ReplacesUnused = true }),
        LogCommandCodec.Encode(new HeadSignaturesCommand { Signatures = [new HeadSignature { Height = 2, KeyEpoch = 1, Signers = [1, 3], R = R(random, 33), Z = R(random, 32) }] }),
        LogCommandCodec.Encode(new KeyEpochCommand { Epoch = 1, Threshold = 2, GroupKey = R(random, 33), Members = [1, 2, 3], VerificationShares = [R(random, 33), R(random, 33), R(random, 33)] }),
        LogCommandCodec.Encode(new SigningSessionsCommand { Sessions = [new SigningSession { Height = 4, Attempt = 2, KeyEpoch = 1, Signers = [2, 3], Sequences = [7, 9] }] }),
        LogCommandCodec.Encode(new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] }),
        LogCommandCodec.Encode(new DkgRound1Command { Epoch = 1, Attempt = 1, From = 2, Commitment = [R(random, 33), R(random, 33)], ProofR = R(random, 33), ProofMu = R(random, 32), EncryptionKey = R(random, 33) }),
        LogCommandCodec.Encode(new DkgRound2Command { Epoch = 1, Attempt = 1, From = 3, Shares = [new DkgEncryptedShare { To = 1, Ciphertext = R(random, 48) }, new DkgEncryptedShare { To = 2, Ciphertext = R(random, 48) }] }),
        LogCommandCodec.Encode(new DkgConfirmCommand { Epoch = 1, Attempt = 1, From = 1, GroupKey = R(random, 33), Proof = R(random, 65) }),
        LogCommandCodec.Encode(new DkgComplaintCommand { Epoch = 1, Attempt = 1, From = 1, Accused = 2, Reason = "bad share", SharedPoint = new byte[33], Proof = new byte[64] }),
        LogCommandCodec.Encode(new DkgSilenceCommand { Epoch = 1, Attempt = 1, From = 1, Accused = 2, Stage = "round2" }),
    ];

    internal static byte[] Mutate(Random random, byte[] seed)
    {
        if (random.Next(20) == 0)
            return R(random, random.Next(0, 64));
        var bytes = new List<byte>(seed);
        for (var edits = random.Next(1, 4); edits > 0; edits--)
        {
            var at = random.Next(bytes.Count + 1);
            switch (random.Next(6))
            {
                case 0 when at < bytes.Count: bytes[at] = (byte)random.Next(256); break;
                case 1: bytes.Insert(at, (byte)random.Next(256)); break;
                case 2 when at < bytes.Count: bytes.RemoveAt(at); break;
                case 3 when at < bytes.Count: bytes[at] = 0xc0; break; // MessagePack nil: a field that is never null in valid data
                case 4 when at < bytes.Count: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                default: bytes.RemoveRange(at, bytes.Count - at); break;
            }
        }

        return [.. bytes];
    }

    [Fact]
    public async Task LogEntryDecoder_AndTheIntakeCheckAndApplyOfWhatItDecodes_NeverThrowUnexpectedly()
    {
        var random = new Random(9_001);
        var seeds = CommandSeeds(random);
        using var store = new InMemoryBatchStore();
        await using var state = new AppliedState(store, new ChainParameters(42, 0), Limits, WalRetention.None,
            new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_000_000)), NullLogger.Instance, dkgPolicy: new DkgPolicy(3, 2));
        long index = 0;
        await state.ApplyAsync(new DkgStartCommand { Epoch = 1, Attempt = 1, Threshold = 2, Members = [1, 2, 3] }, ++index, 1, CancellationToken.None);
        var (decoded, refused, applied) = (0, 0, 0);
        for (var i = 0; i < Cases; i++)
        {
            var bytes = Mutate(random, seeds[i % seeds.Count]);
            ILogCommand command;
            try
            {
                command = LogCommandCodec.Decode(new ReadOnlySequence<byte>(bytes));
            }
            catch (LogFormatException)
            {
                continue;
            }

            decoded++;

            // What the leader's intake does with an internal entry: check it as apply would, and propose it if taken.
            if (command is DkgStartCommand or IDkgMessage or NonceCommitmentsCommand)
            {
                if (state.DkgRejection(command) is not null)
                {
                    refused++;
                    continue;
                }

                await state.ApplyAsync(command, ++index, 1, CancellationToken.None);
                applied++;
            }
        }

        TestContext.Current.SendDiagnosticMessage($"log entries: {Cases} cases, {decoded} decoded, {refused} refused by the intake check, {applied} applied");
        Assert.True(decoded > Cases / 20, $"the mutations reach past the decoder's first checks ({decoded} of {Cases} decoded)");
    }

    [Fact]
    public void Corpus_TheCasesTheFuzzerFound_StayFixed()
    {
        // A DkgStart whose member list is nil: the leader's intake check threw NullReferenceException on it.
        byte[] nilMembers = [LogCommandCodec.Version1, 0x92, 0x06, 0x94, 0x01, 0x01, 0x02, 0xc0];
        Assert.Contains("nil member list", Assert.Throws<LogFormatException>(() => LogCommandCodec.Decode(new ReadOnlySequence<byte>(nilMembers))).Message, StringComparison.Ordinal);

        // A batch whose tx list holds a nil tx, and one whose session has a nil signer list.
        byte[] nilTx = [LogCommandCodec.Version1, 0x92, 0x00, 0x96, 0x01, 0x01, 0x91, 0xc0, 0x90, 0xc0, 0xc0];
        Assert.Contains("nil tx list or tx", Assert.Throws<LogFormatException>(() => LogCommandCodec.Decode(new ReadOnlySequence<byte>(nilTx))).Message, StringComparison.Ordinal);
        byte[] nilSigners = [LogCommandCodec.Version1, 0x92, 0x00, 0x96, 0x01, 0x01, 0x90, 0x90, 0x95, 0x01, 0x01, 0x01, 0xc0, 0x90, 0xc0];
        Assert.Contains("nil session signer list", Assert.Throws<LogFormatException>(() => LogCommandCodec.Decode(new ReadOnlySequence<byte>(nilSigners))).Message, StringComparison.Ordinal);

        // A MessagePack string whose declared length runs past the body (ArgumentOutOfRangeException, a 500).
        var limits = new SequencerLimits();
        byte[] longString = [0x81, 0xa2, (byte)'t', (byte)'x', 0xd9, 0xff, (byte)'0', (byte)'x'];
        Assert.Null(SubmitRequest.ParseMessagePack(new ReadOnlySequence<byte>(longString), limits, out var error));
        Assert.Equal("malformed_msgpack", error!.Code);

        // Invalid UTF-8 inside a JSON key (InvalidOperationException, a 500).
        byte[] badKey = [.. "{\""u8, 0xff, .. "\":\"0x01\"}"u8];
        Assert.Null(SubmitRequest.ParseJson(new ReadOnlySequence<byte>(badKey), limits, out error));
        Assert.Equal("malformed_json", error!.Code);
    }

    [Fact]
    public void SharesMessageDecoder_AnswersAMessageOrLogFormatException()
    {
        var random = new Random(9_002);
        var seed = new SignatureSharesMessage
        {
            SignerId = 2, KeyEpoch = 1, Proof = R(random, 65),
            Shares = [new SignatureShareMessage { Height = 3, Attempt = 1, Share = R(random, 32) }, new SignatureShareMessage { Height = 4, Attempt = 2, Share = R(random, 32) }],
        }.Encode();
        var decoded = 0;
        for (var i = 0; i < Cases; i++)
        {
            try
            {
                var message = SignatureSharesMessage.Decode(Mutate(random, seed));
                Assert.All(message.Shares, share => Assert.Equal(32, share.Share.Length));
                decoded++;
            }
            catch (LogFormatException)
            {
            }
        }

        TestContext.Current.SendDiagnosticMessage($"shares messages: {Cases} cases, {decoded} decoded");
    }

    [Fact]
    public void SnapshotRecordReader_AnswersARecordOrLogFormatException()
    {
        // The checksum would catch almost every mutation before the MessagePack layer: it is recomputed, so that the
        // record decoder itself sees the mutated bodies.
        var random = new Random(9_003);
        ISnapshotRecord[] records =
        [
            new SnapshotHeader { Index = 10, Term = 2, LastHeight = 1, ChainId = 42 },
            new SnapshotBatch
            {
                ChainId = 42, Height = 1, Term = 1, ParentHash = R(random, 32), TxRoot = R(random, 32), TimestampMs = 5, Commitment = R(random, 32),
                TxHashes = R(random, 64), ReceivedMs = [1, 2], RaftIndex = 3, OrderedAtMs = 5, HistoryRoot = R(random, 32),
                SignatureKeyEpoch = 1, Signers = [1, 2], SignatureR = R(random, 33), SignatureZ = R(random, 32),
            },
            new SnapshotCommitments { Signer = 2, Next = 5, Sequences = [1, 2], Values = [R(random, 66), R(random, 66)] },
            new SnapshotTrailer { BatchCount = 1, LastCommitment = R(random, 32) },
        ];
        var bodies = records.Select(r => MessagePackSerializer.Serialize(r, MessagePackSerializerOptions.Standard)).ToArray();
        var decoded = 0;
        for (var i = 0; i < Cases; i++)
        {
            var body = Mutate(random, bodies[i % bodies.Length]);
            var stream = new MemoryStream();
            var prefix = new byte[12];
            BinaryPrimitives.WriteInt32LittleEndian(prefix, body.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(prefix.AsSpan(4), XxHash64.HashToUInt64(body));
            stream.Write(prefix);
            stream.Write(body);
            stream.Position = 0;
            try
            {
                if (SnapshotFormat.ReadRecord(stream) is not null)
                    decoded++;
            }
            catch (LogFormatException)
            {
            }
        }

        TestContext.Current.SendDiagnosticMessage($"snapshot records: {Cases} cases, {decoded} decoded");
        Assert.True(decoded > 0);
    }

    [Fact]
    public void SubmitDecoders_AnswerTxsOrA4xx()
    {
        var random = new Random(9_004);
        var limits = new SequencerLimits { MaxTxBytes = 8, MaxBatchBytes = 1024, MaxTxsPerRequest = 3, MaxPendingTxs = 10, MaxRequestBytes = 1024 };
        byte[][] seeds =
        [
            "{\"tx\":\"0x01ab\"}"u8.ToArray(),
            "{\"txs\":[\"0x01\",\"0x0203\"]}"u8.ToArray(),
            [0x81, 0xa2, (byte)'t', (byte)'x', 0xc4, 0x02, 0x09, 0x08],
            [0x81, 0xa3, (byte)'t', (byte)'x', (byte)'s', 0x92, 0xc4, 0x01, 0x07, 0xa4, (byte)'0', (byte)'x', (byte)'0', (byte)'1'],
        ];
        for (var i = 0; i < Cases; i++)
        {
            var body = new ReadOnlySequence<byte>(Mutate(random, seeds[i % seeds.Length]));
            foreach (var json in new[] { true, false })
            {
                var txs = json ? SubmitRequest.ParseJson(body, limits, out var error) : SubmitRequest.ParseMessagePack(body, limits, out error);
                if (txs is null)
                    Assert.InRange(error!.Status, 400, 499);
                else
                    Assert.All(txs, tx => Assert.InRange(tx.Length, 1, limits.MaxTxBytes));
            }
        }
    }
}
