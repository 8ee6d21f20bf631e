using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Org.BouncyCastle.Math;
using Sequencer.Core.Encoding;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;
using Sequencer.Core;
using Sequencer.Core.Storage;
using Sequencer.Raft;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>
/// This node's part in a Pedersen DKG run through the log (see <see cref="AppliedState"/>'s DKG entries). On the
/// leader it starts the key generation when the cluster boots without a key (or when an operator asks), and starts a
/// new attempt after one fails. On every participant it sends round one, round two and the confirmation as the log
/// reaches each stage, writes its share (owner-only) under <c>DATA/keys</c> before it confirms, and hands the share to
/// the signer once the key epoch is in force.
/// </summary>
/// <remarks>
/// The secret polynomial is derived from a 32-byte seed kept, owner-only, in <c>DATA/signer</c> before round one
/// leaves the node, so a participant that restarts resumes the same attempt; the seed is deleted once the key epoch
/// is in force. Shares and seeds never reach a log line.
/// </remarks>
public sealed partial class DkgService : IAsyncDisposable
{
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan Resend = TimeSpan.FromSeconds(2);

    private static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(10);

    private readonly NodeOptions options;
    private readonly RaftHost raft;
    private readonly ILeaderChannel leader;
    private readonly Action<KeyShare, GroupKey, ulong> activate;
    private readonly bool hasKeyFiles;
    private readonly ILogger logger;
    private readonly CancellationTokenSource stopping = new();
    private readonly Dictionary<string, DateTime> sent = [];
    private readonly Dictionary<string, DateTime> waitingSince = [];
    private BackgroundLoop? loop;
    private TaskCompletionSource wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int? requestedThreshold;
    private ulong activatedEpoch;
    private (ulong Epoch, int Attempt) erasedFailure;
    private string? lastReport;

    private readonly Security.ClusterIdentity? identity;

    /// <summary>Builds the service; <see cref="Start"/> runs it.</summary>
    /// <param name="options">The node's options (id, data directory, members, DKG threshold).</param>
    /// <param name="raft">The Raft host.</param>
    /// <param name="leader">Where DKG messages go (the leader's intake).</param>
    /// <param name="activate">Hands this node's share of a key epoch in force to the signer (called once).</param>
    /// <param name="hasKeyFiles">The node was given key files: it takes no share from a DKG.</param>
    /// <param name="logger">The logger.</param>
    /// <param name="identity">This node's identity: every DKG message it sends is signed with its identity key (null: unsigned, no identities).</param>
    public DkgService(NodeOptions options, RaftHost raft, ILeaderChannel leader, Action<KeyShare, GroupKey, ulong> activate, bool hasKeyFiles, ILogger<DkgService> logger,
        Security.ClusterIdentity? identity = null)
    {
        this.identity = identity;
        ArgumentNullException.ThrowIfNull(raft);
        ArgumentNullException.ThrowIfNull(leader);
        this.options = options;
        this.raft = raft;
        this.leader = leader;
        this.activate = activate;
        this.hasKeyFiles = hasKeyFiles;
        this.logger = logger;
    }

    /// <summary>Starts following the key generation (supervised).</summary>
    public void Start(BackgroundLoops loops)
    {
        ArgumentNullException.ThrowIfNull(loops);
        Invariant.Check(loop is null, "the DKG service starts once");
        raft.State.DkgChanged += Wake;
        loop = loops.Start("the DKG participant", StuckAfter, LoopAsync, stopping.Token);
    }

    /// <summary>Where this node keeps the key files a DKG gave it.</summary>
    public string KeysDirectory => Path.Combine(options.DataDir, "keys");

    /// <summary>Where this node keeps the key files of key epoch <paramref name="epoch"/> (the first directly under <see cref="KeysDirectory"/>).</summary>
    public string KeysDirectoryFor(ulong epoch) => epoch <= 1 ? KeysDirectory : Path.Combine(KeysDirectory, $"epoch-{epoch}");

    private string SecretsDirectory => Path.Combine(options.DataDir, "signer");

    /// <summary>
    /// An operator asks for a key generation (<c>keygen --dkg</c>): the leader starts one with threshold
    /// <paramref name="threshold"/> if the cluster has no key. Returns why not, or null.
    /// </summary>
    public async Task<string?> RequestAsync(int threshold, CancellationToken token)
    {
        var members = options.Members.Select(m => m.Id).Order().ToList();
        if (raft.State.CurrentKeyEpoch is not null)
            return "the cluster already has a key: rotate it with POST /admin/keys/rotate (keygen --rotate)";
        if (raft.State.Dkg is { Failure: null })
            return null;
        var start = new DkgStartCommand { Epoch = 1, Attempt = (raft.State.Dkg?.Attempt ?? 0) + 1, Threshold = threshold, Members = members };
        if (raft.State.DkgRejection(start) is { } reason)
            return reason;
        requestedThreshold = threshold;
        if (raft.IsLeader)
        {
            Wake();
            return null;
        }

        return await SendAsync(start, token).ConfigureAwait(false) ? null : "the leader did not take the request; try again";
    }

    /// <summary>
    /// An operator votes for a key rotation (<c>POST /admin/keys/rotate</c> on its own node): this member's vote, signed
    /// by its identity key, goes into the log (<see cref="KeyRotationVoteCommand"/>). Once as many members as the key in
    /// force needs to sign (t) voted for the same key epoch and threshold, the leader starts a DKG among the configured
    /// members for key epoch n + 1 (threshold <paramref name="threshold"/>, by default the configured or current one),
    /// which comes into force once key epoch n signs the hand-over. Returns why not, or null (also when this member
    /// voted already, or the rotation is under way).
    /// </summary>
    public async Task<string?> RequestRotationAsync(int? threshold, CancellationToken token)
    {
        var state = raft.State;
        if (state.CurrentKeyEpoch is not { } current)
            return "the cluster has no key yet: the first key generation comes first (keygen --dkg)";
        if (state.PendingKeyEpoch is not null || state.Dkg is { } dkg && dkg.Epoch == current.Epoch + 1)
            return null;
        var vote = new KeyRotationVoteCommand { Epoch = current.Epoch + 1, Threshold = threshold ?? options.DkgThreshold ?? current.Group.Threshold, From = options.NodeId };
        if (state.RotationVotes.TryGetValue(vote.Threshold, out var voters) && voters.Contains(options.NodeId))
            return null;
        // Checked as the leader will check it: signed by this member's identity key (SendAsync signs it the same way).
        if (state.DkgRejection(identity is not null ? identity.SignDkg(vote, options.ChainId) : vote) is { } reason)
            return reason;
        // The leader decides by its own view; this node's gives the operator the reason up front.
        var start = new DkgStartCommand { Epoch = vote.Epoch, Attempt = 1, Threshold = vote.Threshold, Members = [.. options.Members.Select(m => m.Id).Order()] };
        if (DkgLedger.RotationTooSoon(start, current.Epoch, state.Dkg, state.KeyEpochInForceFor, TimeSpan.FromMilliseconds(options.Limits.MinKeyRotationIntervalMs)) is { } early)
            return early;
        // A vote that did not reach the log (a leader change, a busy intake) is sent again a few times: the operator
        // asked once. A refusal is final (the leader's reason is in this node's log).
        for (var attempt = 1; attempt <= 3; attempt++)
        {
            if (await SendAsync(vote, token).ConfigureAwait(false))
                return null;
            // Taken after all, or too late to count: the other votes started the rotation meanwhile.
            var now = raft.State;
            if (now.RotationVotes.TryGetValue(vote.Threshold, out var applied) && applied.Contains(options.NodeId)
                || now.PendingKeyEpoch is not null || now.Dkg is { } started && started.Epoch == vote.Epoch || (now.CurrentKeyEpoch?.Epoch ?? 0) >= vote.Epoch)
                return null;
            await Task.Delay(TimeSpan.FromMilliseconds(250 * attempt), token).ConfigureAwait(false);
        }

        return "the leader did not take the vote; try again";
    }

    /// <summary>The votes a rotation needs (the key in force's threshold) and those it has, by the new key's threshold.</summary>
    public (int Needed, IReadOnlyDictionary<int, IReadOnlyList<int>> Votes) RotationVotes
        => (raft.State.CurrentKeyEpoch?.Group.Threshold ?? 0, raft.State.RotationVotes);

    private void Wake() => Volatile.Read(ref wake).TrySetResult();

    private async Task LoopAsync(BackgroundLoop self, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            self.Beat();
            var signal = Volatile.Read(ref wake);
            try
            {
                await StepAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or InvalidOperationException
                or ArgumentException or JsonException or HttpRequestException)
            {
                Report($"DKG step failed: {e.GetType().Name}: {e.Message}");
            }

            await signal.Task.WaitAsync(Poll, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (signal.Task.IsCompleted)
                Interlocked.CompareExchange(ref wake, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), signal);
        }
    }

    private async Task StepAsync(CancellationToken token)
    {
        var state = raft.State;
        var current = state.CurrentKeyEpoch;
        if (current is not null)
            Activate(current);

        var dkg = state.Dkg;
        if (current is not null && (dkg is null || dkg.Epoch <= current.Epoch))
        {
            if (raft.IsLeader)
                await StartVotedRotationAsync(current, token).ConfigureAwait(false);
            return;
        }

        if (raft.IsLeader)
            await StartIfDueAsync(dkg, token).ConfigureAwait(false);
        if (dkg?.Failure is not null)
        {
            // A failed attempt's secrets serve nothing any more: erase them now (once per failed attempt, not on every
            // step while the failure stands), not when a later attempt succeeds.
            if (erasedFailure != (dkg.Epoch, dkg.Attempt))
            {
                DeleteSecrets();
                erasedFailure = (dkg.Epoch, dkg.Attempt);
            }

            return;
        }

        // A node given key files for the first epoch takes part in the key generations of later ones (rotations).
        if (dkg is null || !dkg.Members.Contains(options.NodeId) || (hasKeyFiles && dkg.Epoch <= 1))
            return;

        var me = options.NodeId;
        if (!raft.HasLeader)
            return;
        if (dkg.Disqualified.TryGetValue(me, out var why))
        {
            Report($"key generation attempt {dkg.Attempt}: this node is disqualified ({why}); it takes no share of this key");
            return;
        }

        if (SilentAt(me, dkg.Stage))
            return;
        await VoteOnSilenceAsync(dkg, token).ConfigureAwait(false);

        var secrets = LoadOrCreateSecrets(dkg.Epoch, dkg.Attempt, create: !dkg.Round1.ContainsKey(me));
        if (secrets is null)
        {
            // Round one of this node is in the log, but its secrets are gone (a lost data directory): it cannot go on.
            // The attempt stalls until an operator restores them; starting over needs a new attempt.
            Report($"key generation attempt {dkg.Attempt}: this node's DKG secrets are missing from {SecretsDirectory}; it cannot take part in this attempt");
            return;
        }

        var session = new PedersenDkg(me, dkg.Threshold, dkg.Members.Count, dkg.Context, PedersenDkg.CoefficientsFromSeed(secrets.Seed, dkg.Threshold));
        if (!dkg.Round1.ContainsKey(me))
        {
            var round1 = session.Round1();
            await SendOnceAsync($"r1-{dkg.Epoch}-{dkg.Attempt}", new DkgRound1Command
            {
                Epoch = dkg.Epoch,
                Attempt = dkg.Attempt,
                From = me,
                Commitment = [.. round1.Commitment.Select(Secp256k1.SerializeElement)],
                ProofR = Secp256k1.SerializeElement(round1.ProofR),
                ProofMu = Secp256k1.SerializeScalar(round1.ProofMu),
                EncryptionKey = Secp256k1.SerializeElement(Secp256k1.BaseMultiply(secrets.EncryptionSecret)),
            }, token).ConfigureAwait(false);
            return;
        }

        if (!dkg.Round1Complete)
            return;
        foreach (var (from, message) in dkg.Round1.Where(p => p.Key != me))
        {
            // The log accepted only valid broadcasts, so no complaint can come back here.
            session.Receive(new DkgRound1(from, [.. message.Commitment.Select(p => Secp256k1.DeserializeElement(p))],
                Secp256k1.DeserializeElement(message.ProofR), Secp256k1.DeserializeScalar(message.ProofMu)));
        }

        if (!dkg.Round2.ContainsKey(me))
        {
            var shares = session.Round2([.. dkg.Round1.Keys]).Select(share => new DkgEncryptedShare
            {
                To = share.To,
                Ciphertext = DkgShareCipher.Encrypt(Dealt(me, share), secrets.EncryptionSecret, Secp256k1.DeserializeElement(dkg.Round1[share.To].EncryptionKey), dkg.Context, me, share.To),
            }).ToList();
            await SendOnceAsync($"r2-{dkg.Epoch}-{dkg.Attempt}", new DkgRound2Command { Epoch = dkg.Epoch, Attempt = dkg.Attempt, From = me, Shares = shares }, token).ConfigureAwait(false);
            return;
        }

        if (!dkg.Round2Complete || dkg.Confirmed.Contains(me))
            return;

        // Only the qualified dealers' shares count: a complaint (this node's or another's) may have disqualified some.
        var qualified = dkg.Qualified;
        var received = new List<DkgRound2>();
        var accused = new List<(int Dealer, string Reason)>();
        foreach (var from in qualified.Where(q => q != me))
        {
            var mine = dkg.Round2[from].Shares.First(s => s.To == me);
            var (share, problem) = DkgShareCipher.Open(mine.Ciphertext, secrets.EncryptionSecret, Secp256k1.DeserializeElement(dkg.Round1[from].EncryptionKey), dkg.Context, from, me);
            if (share is null)
                accused.Add((from, problem ?? "the encrypted share cannot be decrypted"));
            else
                received.Add(new DkgRound2(from, me, share));
        }

        var (keyShare, group, complaints) = accused.Count > 0 ? (null, null, []) : session.Finish(received, qualified);
        accused.AddRange(complaints.Select(c => (c.Identifier, c.Reason)));
        if (FalselyAccused(me, qualified) is { } victim)
            accused.Add((victim, "test fault: a false complaint"));
        if (accused.Count > 0)
        {
            // Every node judges each complaint from its evidence; this one waits for the verdicts.
            foreach (var (dealer, reason) in accused)
                await ComplainAsync(dkg, secrets, dealer, reason, token).ConfigureAwait(false);
            return;
        }

        if (keyShare is null || group is null)
            throw new InvalidOperationException("the DKG derived no share and no complaint");
        if (!group.PublicKey.Equals(dkg.Group?.PublicKey))
            throw new InvalidOperationException("the group key derived here differs from the one the log derived");
        var confirmKey = $"confirm-{dkg.Epoch}-{dkg.Attempt}-{string.Join('.', qualified)}";
        if (!sent.ContainsKey(confirmKey))
        {
            // The share is durable before the log can put the key in force.
            KeyFiles.WriteMemberKeys(KeysDirectoryFor(dkg.Epoch), keyShare, group, dkg.Epoch, "dkg");
            LogKeyWritten(logger, dkg.Epoch, dkg.Attempt, KeysDirectoryFor(dkg.Epoch));
        }

        var confirm = new DkgConfirmCommand { Epoch = dkg.Epoch, Attempt = dkg.Attempt, From = me, GroupKey = Secp256k1.SerializeElement(group.PublicKey) };
        confirm = new DkgConfirmCommand
        {
            Epoch = confirm.Epoch,
            Attempt = confirm.Attempt,
            From = me,
            GroupKey = confirm.GroupKey,
            Proof = SignerProof.Sign(DkgLedger.ConfirmProofDomain, confirm.ProofPayload(), keyShare.Secret),
        };
        await SendOnceAsync(confirmKey, confirm, token).ConfigureAwait(false);
    }

    // A member that has not done its part of the current stage for the silence limit (while this node has done its
    // own) gets this node's vote; t votes disqualify it. The wait starts again after every disqualification.
    private async Task VoteOnSilenceAsync(DkgView dkg, CancellationToken token)
    {
        var me = options.NodeId;
        var stage = dkg.Stage;
        if (!DkgLedger.Stages.Contains(stage) || dkg.Owes(me))
            return;
        var now = DateTime.UtcNow;
        foreach (var member in dkg.Qualified.Where(m => m != me && dkg.Owes(m)))
        {
            var key = $"silence-{dkg.Epoch}-{dkg.Attempt}-{stage}-{dkg.Disqualified.Count}-{member}";
            if (!waitingSince.TryGetValue(key, out var since))
            {
                if (waitingSince.Count >= 4096)
                    waitingSince.Clear();
                waitingSince[key] = now;
                continue;
            }

            if (now - since < TimeSpan.FromMilliseconds(options.Limits.DkgSilenceMs))
                continue;
            if (!sent.ContainsKey(key))
                LogSilence(logger, dkg.Epoch, dkg.Attempt, member, stage, options.Limits.DkgSilenceMs);
            await SendOnceAsync(key, new DkgSilenceCommand { Epoch = dkg.Epoch, Attempt = dkg.Attempt, From = me, Accused = member, Stage = stage }, token).ConfigureAwait(false);
        }
    }

    // Test builds (dkg-silent): this node says nothing from that stage on.
    private static bool SilentAt(int me, string stage)
    {
#if SEQUENCER_TEST_FAULTS
        if (Sequencer.Core.TestFaults.DkgSilent is { } silent && silent.From == me)
        {
            var from = DkgLedger.Stages.ToList().IndexOf(silent.Stage);
            var now = DkgLedger.Stages.ToList().IndexOf(stage);
            return from >= 0 && now >= from;
        }
#endif
        _ = (me, stage);
        return false;
    }

    // The share this node deals to share.To: f(To), or (test builds, dkg-bad-share) a wrong one.
    private static BigInteger Dealt(int me, DkgRound2 share)
    {
#if SEQUENCER_TEST_FAULTS
        if (Sequencer.Core.TestFaults.DkgBadShare is { } bad && bad.From == me && bad.To == share.To)
            return share.Share.Add(BigInteger.One).Mod(Secp256k1.Order);
#endif
        _ = me;
        return share.Share;
    }

    // Test builds (dkg-false-complaint): the member this node accuses of a share that is in fact good.
    private static int? FalselyAccused(int me, IReadOnlyList<int> qualified)
    {
#if SEQUENCER_TEST_FAULTS
        if (Sequencer.Core.TestFaults.DkgFalseComplaint is { } lie && lie.From == me && qualified.Contains(lie.Accused))
            return lie.Accused;
#endif
        _ = (me, qualified);
        return null;
    }

    // The leader starts a rotation once t members voted for the same key epoch and threshold (a new key of the lowest
    // threshold voted for enough, should members disagree), not before the minimum interval, and not while a made key
    // epoch waits for its hand-over.
    private async Task StartVotedRotationAsync(KeyEpochView current, CancellationToken token)
    {
        var state = raft.State;
        if (state.PendingKeyEpoch is not null)
            return;
        var needed = current.Group.Threshold;
        foreach (var (threshold, voters) in state.RotationVotes)
        {
            if (voters.Count < needed)
                continue;
            var start = new DkgStartCommand { Epoch = current.Epoch + 1, Attempt = 1, Threshold = threshold, Members = [.. options.Members.Select(m => m.Id).Order()] };
            if (state.DkgRejection(start) is not null
                || DkgLedger.RotationTooSoon(start, current.Epoch, state.Dkg, state.KeyEpochInForceFor, TimeSpan.FromMilliseconds(options.Limits.MinKeyRotationIntervalMs)) is not null)
                continue;
            await SendOnceAsync($"start-{start.Epoch}-1-{threshold}", start, token).ConfigureAwait(false);
            return;
        }
    }

    private async Task StartIfDueAsync(DkgView? dkg, CancellationToken token)
    {
        int? threshold;
        int attempt;
        ulong epoch = 1;
        if (dkg is null)
        {
            threshold = requestedThreshold ?? options.DkgThreshold;
            attempt = 1;
        }
        else if (dkg.Failure is not null)
        {
            // A failed attempt (of the first key or of a rotation) is followed by the next one.
            threshold = dkg.Threshold;
            attempt = dkg.Attempt + 1;
            epoch = dkg.Epoch;
        }
        else
        {
            return;
        }

        if (threshold is not { } t)
            return;
        if (attempt > DkgLedger.MaxAttempts)
        {
            Report($"key generation gave up after {DkgLedger.MaxAttempts} failed attempts; the last: {dkg?.Failure}");
            return;
        }

        var start = new DkgStartCommand { Epoch = epoch, Attempt = attempt, Threshold = t, Members = [.. options.Members.Select(m => m.Id).Order()] };
        await SendOnceAsync($"start-{epoch}-{attempt}", start, token).ConfigureAwait(false);
    }

    // The evidence: the ECDH point this node shares with the accused (which opens the disputed share) and a DLEQ proof
    // that it is the true one. It reveals only that one share, which the verdict makes worthless either way.
    private Task ComplainAsync(DkgView dkg, DkgSecrets secrets, int accused, string reason, CancellationToken token)
    {
        var key = $"complaint-{dkg.Epoch}-{dkg.Attempt}-{accused}";
        if (!sent.ContainsKey(key))
            LogComplaint(logger, dkg.Epoch, dkg.Attempt, accused, reason);
        var me = options.NodeId;
        var (shared, proof) = Dleq.Prove(secrets.EncryptionSecret, Secp256k1.DeserializeElement(dkg.Round1[accused].EncryptionKey), DkgLedger.ComplaintContext(dkg.Context, me, accused));
        return SendOnceAsync(key, new DkgComplaintCommand
        {
            Epoch = dkg.Epoch,
            Attempt = dkg.Attempt,
            From = me,
            Accused = accused,
            Reason = reason.Length > 200 ? reason[..200] : reason,
            SharedPoint = Secp256k1.SerializeElement(shared),
            Proof = proof,
        }, token);
    }

    // Sends each message at most every few seconds: the loop runs often, and the log may take a moment to apply it.
    private async Task SendOnceAsync(string key, ILogCommand command, CancellationToken token)
    {
        var now = DateTime.UtcNow;
        if (sent.TryGetValue(key, out var last) && now - last < Resend)
            return;
        sent[key] = now;
        if (!await SendAsync(command, token).ConfigureAwait(false))
            sent[key] = now - Resend + TimeSpan.FromMilliseconds(250);
    }

    private async Task<bool> SendAsync(ILogCommand command, CancellationToken token)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
        timeout.CancelAfter(TimeSpan.FromSeconds(5));
        try
        {
            if (identity is not null && command is IDkgMessage message)
                command = identity.SignDkg(message, options.ChainId);
            var delivery = await leader.ProposeAsync(command, timeout.Token).ConfigureAwait(false);
            if (!delivery.Delivered && delivery.Refused)
                Report($"the leader refused {command.GetType().Name}: {delivery.Reason}");
            return delivery.Delivered;
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            return false;
        }
    }

    private void Activate(KeyEpochView epoch)
    {
        if (activatedEpoch >= epoch.Epoch)
            return;
        activatedEpoch = epoch.Epoch;
        DeleteSecrets(epoch.Epoch);
        if (hasKeyFiles && epoch.Epoch <= 1)
            return;
        var directory = KeysDirectoryFor(epoch.Epoch);
        var path = Path.Combine(directory, KeyFiles.ShareFileName(options.NodeId));
        if (!epoch.Group.VerificationShares.ContainsKey(options.NodeId))
        {
            // Disqualified in the DKG: a share it wrote before the verdict belongs to no key in force.
            foreach (var stale in new[] { path, Path.Combine(directory, KeyFiles.GroupFileName) }.Where(File.Exists))
                DurableFiles.Erase(stale);
            LogDisqualified(logger, epoch.Epoch, options.NodeId);
            return;
        }

        if (!File.Exists(path))
        {
            if (epoch.Group.VerificationShares.ContainsKey(options.NodeId))
                LogNoShare(logger, epoch.Epoch, path);
            return;
        }

        var share = KeyFiles.ReadShare(path, epoch.Group);
        activate(share, epoch.Group, epoch.Epoch);
        LogActivated(logger, epoch.Epoch, options.NodeId);
        if (epoch.Epoch > 1)
            EraseSharesBefore(epoch.Epoch);
    }

    private DkgSecrets? LoadOrCreateSecrets(ulong epoch, int attempt, bool create)
    {
        var path = Path.Combine(SecretsDirectory, $"dkg-{epoch}-{attempt}.json");
        if (File.Exists(path))
        {
            var stored = JsonSerializer.Deserialize(File.ReadAllText(path), DkgSecretsJsonContext.Default.DkgSecretsFile)
                ?? throw new InvalidDataException($"{path} is empty");
            return new DkgSecrets(Convert.FromHexString(stored.Seed), new BigInteger(1, Convert.FromHexString(stored.EncryptionSecret)));
        }

        if (!create)
            return null;
        var created = new DkgSecrets(RandomNumberGenerator.GetBytes(32), Secp256k1.RandomScalar());
        var directory = OperatingSystem.IsWindows()
            ? Directory.CreateDirectory(SecretsDirectory)
            : Directory.CreateDirectory(SecretsDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var file = new DkgSecretsFile
        {
            Seed = Convert.ToHexStringLower(created.Seed),
            EncryptionSecret = Convert.ToHexStringLower(Secp256k1.SerializeScalar(created.EncryptionSecret)),
        };
        var temporary = Path.Combine(directory.FullName, $"dkg-{epoch}-{attempt}.json.tmp");
        File.Delete(temporary);
        var streamOptions = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            streamOptions.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var stream = new FileStream(temporary, streamOptions))
        {
            JsonSerializer.Serialize(stream, file, DkgSecretsJsonContext.Default.DkgSecretsFile);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temporary, path);
        DurableFiles.SyncDirectory(directory.FullName);

        // Secrets of any other attempt (one that failed while this node was down) are erased as this one begins.
        foreach (var other in Directory.EnumerateFiles(directory.FullName, "dkg-*.json*"))
        {
            if (!string.Equals(Path.GetFullPath(other), Path.GetFullPath(path), StringComparison.Ordinal))
                DurableFiles.Erase(other);
        }

        return created;
    }

    // Overwritten with zeros and synced before they are deleted: a deleted file's blocks keep its bytes. With an epoch,
    // only the secrets of key generations up to it (a rotation's key generation may be under way for the next one).
    private void DeleteSecrets(ulong? throughEpoch = null)
    {
        if (!Directory.Exists(SecretsDirectory))
            return;
        foreach (var file in Directory.EnumerateFiles(SecretsDirectory, "dkg-*.json*"))
        {
            var parts = Path.GetFileName(file).Split('-', '.');
            if (throughEpoch is { } through && parts.Length > 1 && ulong.TryParse(parts[1], System.Globalization.CultureInfo.InvariantCulture, out var epoch) && epoch > through)
                continue;
            DurableFiles.Erase(file);
        }
    }

    // Once a later key epoch is in force, this node's shares of the earlier ones (made by key generations, under DATA/keys)
    // sign nothing any more: erased, so that stolen old shares cannot sign a forked history under an old key. The
    // public group files stay; an operator's own key files (--key-share) are not touched.
    private void EraseSharesBefore(ulong epoch)
    {
        for (var old = 1UL; old < epoch; old++)
        {
            var share = Path.Combine(KeysDirectoryFor(old), KeyFiles.ShareFileName(options.NodeId));
            if (File.Exists(share))
            {
                DurableFiles.Erase(share);
                LogShareErased(logger, old, epoch);
            }
        }
    }

    private void Report(string message)
    {
        if (message == lastReport)
            return;
        lastReport = message;
        LogReport(logger, message);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        raft.State.DkgChanged -= Wake;
        await stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
            await loop.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stopping.Dispose();
    }

    private sealed record DkgSecrets(byte[] Seed, BigInteger EncryptionSecret)
    {
        public override string ToString() => "DkgSecrets(redacted)";
    }

    [LoggerMessage(EventId = 140, Level = LogLevel.Information, Message = "Key generation for epoch {Epoch} (attempt {Attempt}): this node's share is written to {Directory}")]
    private static partial void LogKeyWritten(ILogger logger, ulong epoch, int attempt, string directory);

    [LoggerMessage(EventId = 141, Level = LogLevel.Warning, Message = "Key generation for epoch {Epoch} (attempt {Attempt}): complaint against member {Accused}: {Reason}")]
    private static partial void LogComplaint(ILogger logger, ulong epoch, int attempt, int accused, string reason);

    [LoggerMessage(EventId = 142, Level = LogLevel.Information, Message = "Key epoch {Epoch} from the DKG: node {Id} signs with its share")]
    private static partial void LogActivated(ILogger logger, ulong epoch, int id);

    [LoggerMessage(EventId = 143, Level = LogLevel.Warning, Message = "Key epoch {Epoch} is in force but this node has no share at {Path}: it verifies only")]
    private static partial void LogNoShare(ILogger logger, ulong epoch, string path);

    [LoggerMessage(EventId = 145, Level = LogLevel.Warning, Message = "Key epoch {Epoch} is in force without node {Id}, which the DKG disqualified: it verifies only")]
    private static partial void LogDisqualified(ILogger logger, ulong epoch, int id);

    [LoggerMessage(EventId = 146, Level = LogLevel.Warning, Message = "Key generation for epoch {Epoch} (attempt {Attempt}): member {Member} has said nothing at {Stage} for {SilenceMs} ms; this node votes it silent")]
    private static partial void LogSilence(ILogger logger, ulong epoch, int attempt, int member, string stage, int silenceMs);

    [LoggerMessage(EventId = 147, Level = LogLevel.Information, Message = "This node's share of key epoch {Old} is erased: key epoch {Epoch} is in force")]
    private static partial void LogShareErased(ILogger logger, ulong old, ulong epoch);

    [LoggerMessage(EventId = 144, Level = LogLevel.Warning, Message = "{Message}")]
    private static partial void LogReport(ILogger logger, string message);
}

/// <summary>A DKG participant's secrets on disk (owner-only): the polynomial seed and the round two decryption key.</summary>
internal sealed class DkgSecretsFile
{
    [JsonPropertyName("seed")] public string Seed { get; init; } = string.Empty;

    [JsonPropertyName("encryptionSecret")] public string EncryptionSecret { get; init; } = string.Empty;

    public override string ToString() => "DkgSecretsFile(redacted)";
}

[JsonSerializable(typeof(DkgSecretsFile))]
internal sealed partial class DkgSecretsJsonContext : JsonSerializerContext;
