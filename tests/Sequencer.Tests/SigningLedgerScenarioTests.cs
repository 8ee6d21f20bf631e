using System.Globalization;
using System.Text;
using Sequencer.Core.Encoding;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Core.Storage;
using Sequencer.Signing;
using Sequencer.Threshold;
using BigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Sequencer.Tests;

/// <summary>
/// Data-driven scenarios of the pure signing ledger (etcd-raft's style): each file under <c>Scenarios/ledger</c> is a
/// list of commands, each followed by <c>----</c> and the trace of effects it must produce. Set
/// <c>SEQUENCER_REWRITE=1</c> to rewrite the expected traces from the current behaviour (then review the diff like code).
/// </summary>
/// <remarks>
/// Commands: <c>epoch</c>; <c>batch [inline=S@Q,S@Q]</c>; <c>publish SIGNER FIRST COUNT [prover=ID] [replace=1] [forge=1]</c>;
/// <c>session HEIGHT ATTEMPT S@Q,S@Q</c>; <c>sign HEIGHT ATTEMPT [corrupt=ID] [at=HEIGHT] [carrier=batch]</c> (the session's
/// shares made with the right nonces and aggregated); <c>dkg EPOCH [attempt=A]</c> (a Pedersen DKG among members 1..3 run
/// through the ledger); <c>rotate ATTEMPT S@Q,S@Q [epoch=N]</c> (the hand-over session to the pending epoch);
/// <c>handover ATTEMPT [corrupt=ID] [to=N]</c> (the session's shares aggregated into a KeyRotation entry);
/// <c>keyepoch N</c> (a KeyEpoch entry of the dealer's key for epoch N); <c>install replay=N</c> (a snapshot install of
/// the pool as it is, then the last N entries again at their own indexes); <c>state</c>.
/// </remarks>
public sealed class SigningLedgerScenarioTests
{
    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Scenarios", "ledger"), "*.txt").Order())
            data.Add(Path.GetFileName(file));
        return data;
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Scenario_ProducesItsExpectedTrace(string file)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Scenarios", "ledger", file);
        var blocks = Parse(File.ReadAllText(path));
        var run = new Run();
        var actual = new StringBuilder();
        var mismatches = new List<string>();
        foreach (var (comments, command, expected) in blocks)
        {
            var trace = run.Execute(command);
            foreach (var comment in comments)
                actual.Append(comment).Append('\n');
            actual.Append(command).Append("\n----\n");
            foreach (var line in trace)
                actual.Append(line).Append('\n');
            actual.Append('\n');
            if (!trace.SequenceEqual(expected))
                mismatches.Add($"{command}\n  expected:\n    {string.Join("\n    ", expected)}\n  actual:\n    {string.Join("\n    ", trace)}");
        }

        if (Environment.GetEnvironmentVariable("SEQUENCER_REWRITE") == "1")
        {
            var source = Path.Combine(SourceDirectory(), "Scenarios", "ledger", file);
            File.WriteAllText(source, actual.ToString().TrimEnd('\n') + "\n");
            return;
        }

        Assert.True(mismatches.Count == 0, $"{file}:\n{string.Join("\n\n", mismatches)}");
    }

    private static List<(List<string> Comments, string Command, List<string> Expected)> Parse(string text)
    {
        var result = new List<(List<string>, string, List<string>)>();
        var lines = text.Replace("\r", string.Empty, StringComparison.Ordinal).Split('\n');
        var comments = new List<string>();
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            if (line.StartsWith('#'))
            {
                comments.Add(line);
                continue;
            }

            if (line.Length == 0)
                continue;
            Assert.True(i + 1 < lines.Length && lines[i + 1] == "----", $"line {i + 1}: a command is followed by ----");
            var expected = new List<string>();
            i += 2;
            while (i < lines.Length && lines[i].Length > 0)
                expected.Add(lines[i++]);
            result.Add((comments, line, expected));
            comments = [];
        }

        return result;
    }

    private static string SourceDirectory()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Sequencer.Tests.csproj")))
            directory = directory.Parent;
        return directory?.FullName ?? throw new InvalidOperationException("cannot find the test project's source directory");
    }

    /// <summary>A ledger, a chain of headers it signs, a dealer key, and the nonces behind every published commitment.</summary>
    private sealed class Run
    {
        private static readonly (IReadOnlyList<KeyShare> Shares, GroupKey Group) Key = TrustedDealer.Generate(2, 3);
        private readonly SigningLedger ledger = new(LedgerState.Empty(42));
        private readonly List<BatchHeader> headers = [];
        private readonly MerkleFrontier history = new();
        private readonly Dictionary<(int Signer, ulong Sequence), SigningNonces> nonces = [];
        private readonly Dictionary<(int Signer, ulong Sequence), SigningNonces> offered = [];
        private readonly Dictionary<(ulong Height, int Attempt), AppliedSession> sessions = [];
        private readonly Dictionary<ulong, IReadOnlyList<KeyShare>> shares = new() { [1] = Key.Shares };
        private long index;
        private readonly List<(ILogCommand Command, long Index, BatchHeader? Produced)> applied = [];

        // The shares of the key epoch in force (the dealer's before any).
        private IReadOnlyList<KeyShare> Shares => shares[ledger.CurrentKeyEpoch?.Epoch ?? 1];

        private ulong Epoch => ledger.CurrentKeyEpoch?.Epoch ?? 1;

        public List<string> Execute(string line)
        {
            var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var options = words.Skip(1).Where(w => w.Contains('=', StringComparison.Ordinal)).ToDictionary(w => w[..w.IndexOf('=', StringComparison.Ordinal)], w => w[(w.IndexOf('=', StringComparison.Ordinal) + 1)..]);
            var args = words.Skip(1).Where(w => !w.Contains('=', StringComparison.Ordinal)).ToList();
            return words[0] switch
            {
                "epoch" or "keyepoch" => Apply(new KeyEpochCommand
                {
                    Epoch = args.Count > 0 ? ulong.Parse(args[0], CultureInfo.InvariantCulture) : (ulong)ledger.KeyEpochs.Count + 1,
                    Threshold = 2,
                    GroupKey = Secp256k1.SerializeElement(Key.Group.PublicKey),
                    Members = [1, 2, 3],
                    VerificationShares = [.. new[] { 1, 2, 3 }.Select(id => Secp256k1.SerializeElement(Key.Group.VerificationShares[id]))],
                }),
                "batch" => Batch(options.GetValueOrDefault("inline"), options.GetValueOrDefault("sign"), options.GetValueOrDefault("record")),
                "direct" => Apply(new SigningSessionsCommand { Sessions = [Direct(ulong.Parse(args[0], CultureInfo.InvariantCulture), int.Parse(args[1], CultureInfo.InvariantCulture), args[2])] }),
                "publish" => Apply(Publish(int.Parse(args[0], CultureInfo.InvariantCulture), ulong.Parse(args[1], CultureInfo.InvariantCulture), int.Parse(args[2], CultureInfo.InvariantCulture),
                    options.TryGetValue("prover", out var prover) ? int.Parse(prover, CultureInfo.InvariantCulture) : null,
                    options.ContainsKey("replace"), options.ContainsKey("forge"))),
                "session" => Apply(new SigningSessionsCommand { Sessions = [Session(ulong.Parse(args[0], CultureInfo.InvariantCulture), int.Parse(args[1], CultureInfo.InvariantCulture), args[2])] }),
                "sign" => Apply(new HeadSignaturesCommand { Signatures = [Sign(args, options)] }),
                "dkg" => Dkg(ulong.Parse(args[0], CultureInfo.InvariantCulture), options.TryGetValue("attempt", out var attempt) ? int.Parse(attempt, CultureInfo.InvariantCulture) : 1),
                "vote" => Apply(new KeyRotationVoteCommand
                {
                    From = int.Parse(args[0], CultureInfo.InvariantCulture),
                    Epoch = options.TryGetValue("epoch", out var voted) ? ulong.Parse(voted, CultureInfo.InvariantCulture) : (ledger.CurrentKeyEpoch?.Epoch ?? 0) + 1,
                    Threshold = options.TryGetValue("threshold", out var t) ? int.Parse(t, CultureInfo.InvariantCulture) : 2,
                }),
                "rotate" => Apply(new KeyRotationSessionCommand
                {
                    NewEpoch = options.TryGetValue("epoch", out var next) ? ulong.Parse(next, CultureInfo.InvariantCulture) : Epoch + 1,
                    Session = Session(0, int.Parse(args[0], CultureInfo.InvariantCulture), args[1]),
                }),
                "handover" => Apply(Handover(int.Parse(args[0], CultureInfo.InvariantCulture), options)),
                "state" => State(),
                "install" => Install(int.Parse(options.GetValueOrDefault("replay", "0"), CultureInfo.InvariantCulture)),
                _ => throw new InvalidOperationException($"unknown command {words[0]}"),
            };
        }

        // A direct session as the leader runs it: its signers sign (the test keeps its applied form, from the pool as it
        // is now, so that "sign" can aggregate it) before its record reaches the ledger.
        private SigningSession Direct(ulong height, int attempt, string signers)
        {
            var plain = Session(height, attempt, signers);
            var session = new SigningSession { Height = height, Attempt = attempt, KeyEpoch = plain.KeyEpoch, Signers = plain.Signers, Sequences = plain.Sequences, Direct = true };
            var commitments = session.Signers.Zip(session.Sequences).Select(p => ledger.UnusedCommitment(p.First, p.Second) is { } value
                ? NonceCommitment.Decode(p.First, value)
                : null).ToList();
            if (height >= 1 && height <= (ulong)headers.Count && commitments.All(c => c is not null) && ledger.CurrentKeyEpoch is { } epoch)
                sessions[(height, attempt)] = new AppliedSession(session, headers[(int)height - 1].Commitment.ToArray(), commitments!, epoch.Group.PublicKey);
            return session;
        }

        private List<string> Batch(string? inline, string? sign, string? record = null)
        {
            var height = (ulong)headers.Count + 1;
            var epoch = ledger.CurrentKeyEpoch?.Epoch ?? 0;
            var header = new BatchHeader(42, epoch, height, 1, headers.Count == 0 ? Hash32.Zero : headers[^1].Commitment, history.Root,
                Keccak256.Hash(BitConverter.GetBytes(height)), 1, 1000 + height);
            headers.Add(header);
            history.Append(header.Commitment);
            var command = new BatchCommand
            {
                Txs = [[1]],
                Session = inline is null ? null : Session(0, 1, inline),
                Signatures = sign is null ? null : [Sign([.. sign.Split('/')], new Dictionary<string, string>())],
                Sessions = record is null ? null : [Direct(ulong.Parse(record.Split('/')[0], CultureInfo.InvariantCulture), int.Parse(record.Split('/')[1], CultureInfo.InvariantCulture), record.Split('/')[2])],
            };
            var trace = Apply(command, header);
            trace.Insert(0, $"header {height} (key epoch {epoch})");
            return trace;
        }

        private SigningSession Session(ulong height, int attempt, string signers)
        {
            var epoch = Epoch;
            var pairs = signers.Split(',').Select(p => p.Split('@')).ToList();
            return new SigningSession
            {
                Height = height,
                Attempt = attempt,
                KeyEpoch = epoch,
                Signers = [.. pairs.Select(p => int.Parse(p[0], CultureInfo.InvariantCulture))],
                Sequences = [.. pairs.Select(p => ulong.Parse(p[1], CultureInfo.InvariantCulture))],
            };
        }

        // replace: the commitments replace every unused one of the signer; forge: the flag is set on a command whose proof
        // covers an ordinary publication (a replay that must be refused).
        private NonceCommitmentsCommand Publish(int signer, ulong first, int count, int? prover, bool replace = false, bool forge = false)
        {
            var values = new List<byte[]>();
            for (var i = 0; i < count; i++)
            {
                var (pair, commitment) = Frost.Commit(signer, Shares[signer - 1].Secret);
                offered[(signer, first + (ulong)i)] = pair;
                values.Add([.. Secp256k1.SerializeElement(commitment.Hiding), .. Secp256k1.SerializeElement(commitment.Binding)]);
            }

            var unsigned = new NonceCommitmentsCommand { SignerId = signer, KeyEpoch = Epoch, FirstSequence = first, Commitments = values, ReplacesUnused = replace && !forge };
            return new NonceCommitmentsCommand
            {
                SignerId = signer,
                KeyEpoch = Epoch,
                FirstSequence = first,
                Commitments = values,
                ReplacesUnused = replace || forge,
                Proof = SignerProof.Sign(SigningLedger.NonceCommitmentsProofDomain, unsigned.ProofPayload(), Shares[(prover ?? signer) - 1].Secret),
            };
        }

        private HeadSignature Sign(List<string> args, Dictionary<string, string> options)
        {
            var session = sessions[(ulong.Parse(args[0], CultureInfo.InvariantCulture), int.Parse(args[1], CultureInfo.InvariantCulture))];
            var signature = Aggregate(session, options);
            return new HeadSignature
            {
                Height = options.TryGetValue("at", out var at) ? ulong.Parse(at, CultureInfo.InvariantCulture) : session.Session.Height,
                KeyEpoch = Epoch,
                Signers = session.Session.Signers,
                R = signature[..33],
                Z = signature[33..],
                SignedAtMs = 5000,
            };
        }

        // The session's shares, made with the key epoch's shares and the session's nonces (corrupt=ID: that signer's is
        // off by one), aggregated: R then z.
        private byte[] Aggregate(AppliedSession session, Dictionary<string, string> options)
        {
            var corrupt = options.TryGetValue("corrupt", out var culprit) ? int.Parse(culprit, CultureInfo.InvariantCulture) : 0;
            var zs = session.Session.Signers.Select((id, i) =>
            {
                var z = session.Context.Sign(Shares[id - 1], nonces[(id, session.Session.Sequences[i])]);
                return id == corrupt ? z.Add(BigInteger.One).Mod(Secp256k1.Order) : z;
            }).ToList();
            return session.Context.Aggregate(zs).Encode();
        }

        // The hand-over: the rotation session's shares (made with the current epoch's shares and the session's nonces),
        // aggregated into a KeyRotation entry.
        private KeyRotationCommand Handover(int attempt, Dictionary<string, string> options)
        {
            var session = sessions[(0, attempt)];
            var signature = Aggregate(session, options);
            return new KeyRotationCommand
            {
                NewEpoch = options.TryGetValue("to", out var to) ? ulong.Parse(to, CultureInfo.InvariantCulture) : session.Session.KeyEpoch + 1,
                Signers = session.Session.Signers,
                R = signature[..33],
                Z = signature[33..],
                SignedAtMs = 6000,
            };
        }

        // A Pedersen DKG among members 1..3 (t = 2) through the ledger: start, round one, round two (encrypted shares),
        // confirmations. Only the last entry's trace is shown (and any entry that was ignored).
        private List<string> Dkg(ulong epoch, int attempt)
        {
            var trace = Apply(new DkgStartCommand { Epoch = epoch, Attempt = attempt, Threshold = 2, Members = [1, 2, 3] });
            if (trace.Any(line => line.StartsWith("ignored", StringComparison.Ordinal)))
                return trace;
            var context = DkgLedger.Context(42, epoch, attempt);
            var people = new[] { 1, 2, 3 }.Select(id => (Id: id, Dkg: new PedersenDkg(id, 2, 3, context), Secret: Secp256k1.RandomScalar())).ToList();
            var round1 = people.Select(p =>
            {
                var message = p.Dkg.Round1();
                return new DkgRound1Command
                {
                    Epoch = epoch, Attempt = attempt, From = p.Id, Commitment = [.. message.Commitment.Select(Secp256k1.SerializeElement)],
                    ProofR = Secp256k1.SerializeElement(message.ProofR), ProofMu = Secp256k1.SerializeScalar(message.ProofMu),
                    EncryptionKey = Secp256k1.SerializeElement(Secp256k1.BaseMultiply(p.Secret)),
                };
            }).ToList();
            foreach (var message in round1)
                Quiet(Apply(message));
            foreach (var p in people)
            {
                foreach (var message in round1.Where(m => m.From != p.Id))
                    p.Dkg.Receive(new DkgRound1(message.From, [.. message.Commitment.Select(c => Secp256k1.DeserializeElement(c))], Secp256k1.DeserializeElement(message.ProofR), Secp256k1.DeserializeScalar(message.ProofMu)));
            }

            var round2 = people.Select(p => new DkgRound2Command
            {
                Epoch = epoch, Attempt = attempt, From = p.Id,
                Shares = [.. p.Dkg.Round2().Select(share => new DkgEncryptedShare
                {
                    To = share.To,
                    Ciphertext = DkgShareCipher.Encrypt(share.Share, p.Secret, Secp256k1.DeserializeElement(round1[share.To - 1].EncryptionKey), context, p.Id, share.To),
                })],
            }).ToList();
            foreach (var message in round2)
                Quiet(Apply(message));
            var made = new List<KeyShare>();
            foreach (var p in people)
            {
                var received = round2.Where(m => m.From != p.Id).Select(m => new DkgRound2(m.From, p.Id, DkgShareCipher.Decrypt(m.Shares.Single(x => x.To == p.Id).Ciphertext,
                    p.Secret, Secp256k1.DeserializeElement(round1[m.From - 1].EncryptionKey), context, m.From, p.Id)!)).ToList();
                var (share, group, _) = p.Dkg.Finish(received);
                made.Add(share!);
                var unsigned = new DkgConfirmCommand { Epoch = epoch, Attempt = attempt, From = p.Id, GroupKey = Secp256k1.SerializeElement(group!.PublicKey) };
                trace = Apply(new DkgConfirmCommand
                {
                    Epoch = epoch, Attempt = attempt, From = p.Id, GroupKey = unsigned.GroupKey,
                    Proof = SignerProof.Sign(DkgLedger.ConfirmProofDomain, unsigned.ProofPayload(), share!.Secret),
                });
                if (p.Id < 3)
                    Quiet(trace);
            }

            shares[epoch] = made;
            return trace;
        }

        private static void Quiet(List<string> trace)
            => Assert.True(trace.SequenceEqual(["(no effect)"]) || trace.All(l => !l.StartsWith("ignored", StringComparison.Ordinal)), string.Join("\n", trace));

        private List<string> Apply(ILogCommand command, BatchHeader? produced = null)
        {
            applied.Add((command, ++index, produced));
            if (applied.Count > 16)
                applied.RemoveAt(0);
            return Apply(command, index, produced);
        }

        // A follower's snapshot install whose pool the leader streamed N entries after the snapshot's index: the pool as it
        // is now is installed, and the last N entries are applied again at their own indexes, as Raft sends them.
        private List<string> Install(int replay)
        {
            var pool = ledger.PoolSnapshot();
            ledger.LoadPool(pool);
            var trace = new List<string> { $"installed the pool as of entry {pool.ReflectsIndex}" };
            foreach (var (command, at, produced) in applied.TakeLast(replay).ToList())
                trace.AddRange(Apply(command, at, produced).Select(line => $"entry {at} again: {line}"));
            return trace;
        }

        private List<string> Apply(ILogCommand command, long at, BatchHeader? produced)
        {
            var effects = ledger.Apply(command, new LedgerInput(at, produced, h => h >= 1 && h <= (ulong)headers.Count ? headers[(int)h - 1] : null));
            // The signer keeps the nonces of the commitments the log took, and no others.
            foreach (var added in effects.AddedCommitments)
                nonces[(added.Signer, added.Sequence)] = offered[(added.Signer, added.Sequence)];
            offered.Clear();
            var trace = new List<string>();
            if (effects.PendingKeyEpoch is { } made)
                trace.Add($"key epoch {made.Epoch} made, pending: {made.Threshold} of {made.Members.Count}");
            if (effects.KeyEpoch is { } epoch)
            {
                trace.Add($"key epoch {epoch.Epoch} in force: {epoch.Threshold} of {epoch.Members.Count}"
                    + (epoch.Rotation is { } rotation ? $", handed over by key epoch {rotation.FromEpoch} (signers {string.Join(",", rotation.Signers)})" : string.Empty));
            }

            if (effects.ClearCommitments)
                trace.Add("pool cleared");
            if (effects.AddedCommitments.Count > 0)
                trace.Add($"published {string.Join(" ", effects.AddedCommitments.GroupBy(c => c.Signer).Select(g => $"{g.Key}@{g.Min(c => c.Sequence)}..{g.Max(c => c.Sequence)}"))}");
            foreach (var (signer, next) in effects.NextSequences.OrderBy(p => p.Key))
                trace.Add($"next sequence of {signer}: {next}");
            if (effects.RemovedCommitments.Count > 0)
                trace.Add($"used {string.Join(" ", effects.RemovedCommitments.Select(r => $"{r.Signer}@{r.Sequence}"))}");
            foreach (var session in effects.SessionsStarted)
            {
                sessions[session.Id] = session;
                if (session.Session.Height == 0)
                {
                    var pending = ledger.PendingKeyEpoch!;
                    var message = KeyRotationMessage.Compute(42, session.Session.KeyEpoch, pending.Epoch, pending.Record.GroupKey);
                    trace.Add($"hand-over session started: key epoch {session.Session.KeyEpoch} to {pending.Epoch} attempt {session.Session.Attempt} signers {string.Join(",", session.Session.Signers)}"
                        + (session.Message.AsSpan().SequenceEqual(message) ? string.Empty : " MESSAGE IS NOT THE ROTATION MESSAGE"));
                    continue;
                }

                var expected = headers[(int)session.Session.Height - 1].Commitment.ToArray();
                trace.Add($"session started: head {session.Session.Height} attempt {session.Session.Attempt} signers {string.Join(",", session.Session.Signers)}"
                    + (session.Message.AsSpan().SequenceEqual(expected) ? string.Empty : " MESSAGE IS NOT THE HEADER'S COMMITMENT"));
            }

            foreach (var head in effects.HeadsSigned)
                trace.Add($"head signed: {head.Height} by {string.Join(",", head.Signers)}; signed through {ledger.SignedThrough}");
            foreach (var (threshold, voters) in command is KeyRotationVoteCommand && effects.Ignored.Count == 0 ? ledger.RotationVotes : new Dictionary<int, IReadOnlyList<int>>())
                trace.Add($"rotation votes for key epoch {(ledger.CurrentKeyEpoch?.Epoch ?? 0) + 1}, threshold {threshold}: {string.Join(",", voters)}");
            trace.AddRange(effects.Ignored.Select(reason => "ignored " + reason));
            trace.AddRange(effects.Superseded.Select(reason => "superseded " + reason));
            if (trace.Count == 0)
                trace.Add("(no effect)");
            return trace;
        }

        private List<string> State()
        {
            var epoch = ledger.CurrentKeyEpoch;
            var trace = new List<string> { $"key epoch {epoch?.Epoch.ToString(CultureInfo.InvariantCulture) ?? "none"}, signed through {ledger.SignedThrough}, height {headers.Count}"
                + (ledger.PendingKeyEpoch is { } pending ? $", key epoch {pending.Epoch} pending" : string.Empty) };
            foreach (var signer in new[] { 1, 2, 3 })
            {
                var (available, next) = ledger.CommitmentsOf(signer);
                trace.Add($"signer {signer}: {available} published [{string.Join(",", ledger.AvailableSequences(signer, 8))}], next {next}");
            }

            return trace;
        }
    }
}
