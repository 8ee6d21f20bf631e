using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Org.BouncyCastle.Math;
using Sequencer.Core;
using Sequencer.Core.Encoding;
using Sequencer.Threshold;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Raft;

/// <summary>A key generation in progress, as the log has decided it so far.</summary>
/// <param name="Epoch">The key epoch it creates.</param>
/// <param name="Attempt">The attempt.</param>
/// <param name="Threshold">t.</param>
/// <param name="Members">The participants, 1..n.</param>
/// <param name="Context">The session context Φ: chain id, epoch and attempt.</param>
/// <param name="Round1">The accepted round one broadcasts, by sender.</param>
/// <param name="Round2">The accepted round two messages, by sender.</param>
/// <param name="Confirmed">The participants that proved they hold their share.</param>
/// <param name="Failure">Why the attempt failed (a complaint), or null.</param>
/// <param name="Group">The group key, once every round one broadcast is in.</param>
public sealed record DkgView(
    ulong Epoch, int Attempt, int Threshold, IReadOnlyList<int> Members, byte[] Context,
    IReadOnlyDictionary<int, DkgRound1Command> Round1, IReadOnlyDictionary<int, DkgRound2Command> Round2,
    IReadOnlySet<int> Confirmed, string? Failure, GroupKey? Group)
{
    /// <summary>Every participant's round one broadcast is in.</summary>
    public bool Round1Complete => Round1.Count == Members.Count;

    /// <summary>Every participant's round two message is in.</summary>
    public bool Round2Complete => Round2.Count == Members.Count;

    /// <summary>The stage, for the API: round1, round2, confirm or failed.</summary>
    public string Stage => Failure is not null ? "failed" : !Round1Complete ? "round1" : !Round2Complete ? "round2" : "confirm";
}

/// <summary>
/// The Pedersen DKG through the log (the FROST paper's KeyGen): round one broadcasts (commitments, proofs of
/// knowledge, encryption keys), round two shares encrypted to their receivers, and confirmations signed with the new
/// shares. The key epoch comes into force when every participant has confirmed; a complaint fails the attempt and the
/// leader starts another with fresh secrets. The log is the broadcast channel, so every node sees the same messages.
/// </summary>
public sealed partial class AppliedState
{
    /// <summary>The most attempts of one key generation (each failed attempt needs a complaint in the log).</summary>
    public const int MaxDkgAttempts = 16;

    /// <summary>The signer-proof domain of a DKG confirmation.</summary>
    public const string DkgConfirmProofDomain = "dkg-confirm";

    private DkgProgress? dkg;

    /// <summary>Raised after an applied entry changed the key generation in progress (or ended it).</summary>
    public event Action? DkgChanged;

    /// <summary>The key generation in progress, or null.</summary>
    public DkgView? Dkg
    {
        get
        {
            lock (gate)
                return dkg?.View();
        }
    }

    /// <summary>The DKG session context Φ: chain id, key epoch and attempt, big-endian.</summary>
    public static byte[] DkgContext(ulong chainId, ulong epoch, int attempt)
    {
        var context = new byte[20];
        BinaryPrimitives.WriteUInt64BigEndian(context, chainId);
        BinaryPrimitives.WriteUInt64BigEndian(context.AsSpan(8), epoch);
        BinaryPrimitives.WriteInt32BigEndian(context.AsSpan(16), attempt);
        return context;
    }

    /// <summary>Why the log would not accept <paramref name="command"/> now, or null when it would (for the leader's intake).</summary>
    public string? DkgRejection(ILogCommand command)
    {
        lock (gate)
            return RejectDkgLocked(command);
    }

    private void LoadDkg(IReadOnlyList<byte[]> entries)
    {
        foreach (var entry in entries)
        {
            var command = LogCommandCodec.Decode(new System.Buffers.ReadOnlySequence<byte>(entry));
            ApplyDkg(command, 0, new SigningEffect());
        }
    }

    private void ApplyDkg(ILogCommand command, long index, SigningEffect effect)
    {
        KeyEpochCommand? complete = null;
        lock (gate)
        {
            if (RejectDkgLocked(command) is { } reason)
            {
                LogIgnored(logger, command.GetType().Name, reason);
                return;
            }

            switch (command)
            {
                case DkgStartCommand start:
                    dkg = new DkgProgress(start, DkgContext(chain.ChainId, start.Epoch, start.Attempt));
                    effect.ClearDkg = true;
                    LogDkgStarted(logger, start.Epoch, start.Attempt, start.Threshold, start.Members.Count);
                    break;
                case DkgRound1Command round1:
                    dkg!.Round1[round1.From] = round1;
                    if (dkg.Round1.Count == dkg.Members.Count)
                        dkg.Group = PedersenDkg.DeriveGroup(dkg.Threshold, dkg.Members.Count, dkg.Members.Select(m => Points(dkg.Round1[m].Commitment)));
                    break;
                case DkgRound2Command round2:
                    dkg!.Round2[round2.From] = round2;
                    break;
                case DkgComplaintCommand complaint:
                    dkg!.Failure = $"member {complaint.From} accuses member {complaint.Accused}: {complaint.Reason}";
                    LogDkgFailed(logger, dkg.Epoch, dkg.Attempt, dkg.Failure);
                    break;
                case DkgConfirmCommand confirm:
                    dkg!.Confirmed.Add(confirm.From);
                    if (dkg.Confirmed.Count == dkg.Members.Count)
                    {
                        var group = dkg.Group!;
                        complete = new KeyEpochCommand
                        {
                            Epoch = dkg.Epoch,
                            Threshold = dkg.Threshold,
                            GroupKey = Secp256k1.SerializeElement(group.PublicKey),
                            Members = dkg.Members,
                            VerificationShares = [.. dkg.Members.Select(m => Secp256k1.SerializeElement(group.VerificationShares[m]))],
                        };
                        dkg = null;
                    }

                    break;
            }

            effect.DkgChanged = true;
            if (complete is null)
                effect.DkgEntry = LogCommandCodec.Encode(command);
        }

        if (complete is not null)
        {
            effect.ClearDkg = true;
            effect.DkgEntry = null;
            ApplyKeyEpoch(complete, index, effect);
        }
    }

    private string? RejectDkgLocked(ILogCommand command)
    {
        var current = CurrentKeyEpochLocked?.Epoch ?? 0;
        if (command is DkgStartCommand start)
        {
            if (start.Epoch != current + 1)
                return $"a DKG for key epoch {start.Epoch}, but the next key epoch is {current + 1}";
            if (current != 0)
                return "key rotation is not supported yet: the cluster already has a key";
            if (start.Attempt < 1 || start.Attempt > MaxDkgAttempts)
                return $"attempt {start.Attempt} is outside 1..{MaxDkgAttempts}";
            if (dkg is not null && dkg.Epoch == start.Epoch && (dkg.Attempt >= start.Attempt || dkg.Failure is null))
                return $"attempt {dkg.Attempt} of this key generation is {(dkg.Failure is null ? "in progress" : "newer")}";
            var n = start.Members.Count;
            if (n < 1 || n > 255 || !start.Members.SequenceEqual(Enumerable.Range(1, n)))
                return "the DKG members must be 1..n";
            if (start.Threshold < 1 || start.Threshold > n)
                return $"threshold {start.Threshold} does not fit {n} members";
            return null;
        }

        var (epoch, attempt, from) = command switch
        {
            DkgRound1Command c => (c.Epoch, c.Attempt, c.From),
            DkgRound2Command c => (c.Epoch, c.Attempt, c.From),
            DkgConfirmCommand c => (c.Epoch, c.Attempt, c.From),
            DkgComplaintCommand c => (c.Epoch, c.Attempt, c.From),
            _ => (0UL, 0, 0),
        };
        if (dkg is null || dkg.Epoch != epoch || dkg.Attempt != attempt)
            return $"no key generation for epoch {epoch} attempt {attempt} is in progress";
        if (!dkg.Members.Contains(from))
            return $"member {from} is not a participant";
        if (dkg.Failure is not null)
            return "this attempt has failed";
        switch (command)
        {
            case DkgRound1Command round1:
                if (dkg.Round1.ContainsKey(from))
                    return $"member {from} already sent round one";
                return CheckRound1(round1, dkg);
            case DkgRound2Command round2:
                if (!dkg.Round1Complete)
                    return "round one is not complete";
                if (dkg.Round2.ContainsKey(from))
                    return $"member {from} already sent round two";
                var receivers = round2.Shares.Select(s => s.To).ToList();
                if (receivers.Count != dkg.Members.Count - 1 || receivers.Distinct().Count() != receivers.Count
                    || receivers.Any(to => to == from || !dkg.Members.Contains(to)) || round2.Shares.Any(s => s.Ciphertext.Length != 32))
                    return "round two must carry one 32-byte encrypted share for every other participant";
                return null;
            case DkgComplaintCommand complaint:
                if (!dkg.Members.Contains(complaint.Accused) || complaint.Accused == from || complaint.Reason.Length > 200)
                    return "a complaint names another participant and a short reason";
                return null;
            case DkgConfirmCommand confirm:
                if (!dkg.Round2Complete)
                    return "round two is not complete";
                if (dkg.Confirmed.Contains(from))
                    return $"member {from} already confirmed";
                if (!confirm.GroupKey.AsSpan().SequenceEqual(Secp256k1.SerializeElement(dkg.Group!.PublicKey)))
                    return $"member {from} derived a different group key";
                if (!SignerProof.Verify(DkgConfirmProofDomain, confirm.ProofPayload(), confirm.Proof, dkg.Group.VerificationShares[from]))
                    return $"member {from}'s confirmation is not signed by its share of the new key";
                return null;
            default:
                return "not a DKG entry";
        }
    }

    private static string? CheckRound1(DkgRound1Command round1, DkgProgress progress)
    {
        if (round1.Commitment.Count != progress.Threshold)
            return $"the commitment has {round1.Commitment.Count} points, not {progress.Threshold}";
        try
        {
            var commitment = Points(round1.Commitment);
            var encryptionKey = Secp256k1.DeserializeElement(round1.EncryptionKey);
            if (encryptionKey.IsInfinity || commitment.Any(p => p.IsInfinity))
                return "a point is the identity";
            var message = new DkgRound1(round1.From, commitment, Secp256k1.DeserializeElement(round1.ProofR), Secp256k1.DeserializeScalar(round1.ProofMu));
            return PedersenDkg.VerifyProof(message, progress.Context) ? null : "the proof of knowledge does not verify";
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            return "a point or scalar does not decode: " + e.Message;
        }
    }

    private static List<ECPoint> Points(IReadOnlyList<byte[]> encoded) => [.. encoded.Select(p => Secp256k1.DeserializeElement(p))];

    private sealed class DkgProgress(DkgStartCommand start, byte[] context)
    {
        public ulong Epoch { get; } = start.Epoch;

        public int Attempt { get; } = start.Attempt;

        public int Threshold { get; } = start.Threshold;

        public IReadOnlyList<int> Members { get; } = [.. start.Members];

        public byte[] Context { get; } = context;

        public Dictionary<int, DkgRound1Command> Round1 { get; } = [];

        public Dictionary<int, DkgRound2Command> Round2 { get; } = [];

        public HashSet<int> Confirmed { get; } = [];

        public string? Failure { get; set; }

        public GroupKey? Group { get; set; }

        public bool Round1Complete => Round1.Count == Members.Count;

        public bool Round2Complete => Round2.Count == Members.Count;

        public DkgView View() => new(Epoch, Attempt, Threshold, Members, Context, new Dictionary<int, DkgRound1Command>(Round1),
            new Dictionary<int, DkgRound2Command>(Round2), new HashSet<int>(Confirmed), Failure, Group);
    }

    [LoggerMessage(EventId = 112, Level = LogLevel.Information, Message = "Key generation for epoch {Epoch} started (attempt {Attempt}): {Threshold} of {Members} members")]
    private static partial void LogDkgStarted(ILogger logger, ulong epoch, int attempt, int threshold, int members);

    [LoggerMessage(EventId = 113, Level = LogLevel.Warning, Message = "Key generation for epoch {Epoch} attempt {Attempt} failed: {Reason}")]
    private static partial void LogDkgFailed(ILogger logger, ulong epoch, int attempt, string reason);
}
