using Sequencer.Core;
using LiteDB;
using Sequencer.Core.Storage;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>One stored nonce pair: its sequence and its public commitment (D then E, 66 bytes).</summary>
/// <param name="Sequence">The sequence number the signer published it under.</param>
/// <param name="Commitment">D (33 bytes) then E (33 bytes).</param>
public sealed record StoredNonceCommitment(ulong Sequence, byte[] Commitment);

/// <summary>What a nonce pair was used for: one signing session's inputs (all public).</summary>
/// <param name="Height">The batch height.</param>
/// <param name="Attempt">The session's attempt.</param>
/// <param name="Message">The signed message (the commitment this node computed).</param>
/// <param name="Signers">The signer set.</param>
/// <param name="CommitmentListHash">SHA-256 of the session's encoded commitment list.</param>
public sealed record NonceUse(ulong Height, int Attempt, byte[] Message, IReadOnlyList<int> Signers, byte[] CommitmentListHash);

/// <summary>A recorded use of a nonce pair.</summary>
/// <param name="Epoch">The key epoch.</param>
/// <param name="Sequence">The nonce pair's sequence.</param>
/// <param name="Commitment">Its public commitment (D then E).</param>
/// <param name="Use">The session it served.</param>
public sealed record RecordedNonceUse(ulong Epoch, ulong Sequence, byte[] Commitment, NonceUse Use);

/// <summary>
/// A signer's secret FROST nonces (DESIGN section 5, INV-NONCE): made before their commitments are published, and
/// taken (deleted, durably for a real store) before a share computed with them leaves the node, so that a nonce pair
/// serves at most one session, across crashes too.
/// </summary>
/// <remarks>
/// <para>Implementations are thread-safe.</para>
/// <para>Bounded: a store keeps at most <see cref="MaxUncompacted"/> taken nonces waiting for <see cref="Compact"/>
/// (their records are in memory). Past it, <see cref="Take"/> hands out no more nonces until a compaction succeeds:
/// it leaves them out of its result, as it does a nonce it does not hold, and leaves them stored and untouched (no
/// secret read, no tombstone: they served no session, and a later take may hand each out once).</para>
/// </remarks>
public interface INonceStore : IDisposable
{
    /// <summary>
    /// The most taken nonces a store keeps waiting for <see cref="Compact"/>. The signer compacts every 64 takes, so a
    /// working store never holds more than a few hundred; they pile up only while compaction keeps failing (the audit
    /// database's disk is full or failing), where without a bound each take would keep its record in memory for the
    /// whole outage. 32,768 is about 9.5 MB of records (290 bytes each, measured) and 6 MB of used-nonce log on disk,
    /// and several minutes of takes at the measured rates (tens a second per signer); past it the signer answers no
    /// session, and the leader signs with the others.
    /// </summary>
    const int MaxUncompacted = 32_768;

    /// <summary>The stored, untaken nonce pairs.</summary>
    int Count { get; }

    /// <summary>
    /// Nonces taken since the last <see cref="Compact"/>: at most <see cref="MaxUncompacted"/>, unless the store was
    /// opened with more in its used-nonce logs.
    /// </summary>
    int Uncompacted { get; }

    /// <summary>The key epoch the stored nonces belong to (0 when none).</summary>
    ulong Epoch { get; }

    /// <summary>The next sequence this signer has never used for <paramref name="epoch"/>.</summary>
    ulong NextSequence(ulong epoch);

    /// <summary>
    /// Generates <paramref name="count"/> fresh nonce pairs for <paramref name="share"/> at sequences starting at
    /// <paramref name="firstSequence"/> (not below <see cref="NextSequence"/>) and stores them. A new epoch drops every
    /// nonce of the old one.
    /// </summary>
    /// <exception cref="InvalidOperationException">A sequence was generated before.</exception>
    IReadOnlyList<StoredNonceCommitment> Generate(ulong epoch, KeyShare share, ulong firstSequence, int count);

    /// <summary>Stored, untaken commitments at or above <paramref name="fromSequence"/>, ascending, at most <paramref name="limit"/>.</summary>
    IReadOnlyList<StoredNonceCommitment> CommitmentsFrom(ulong fromSequence, int limit);

    /// <summary>
    /// Takes the nonce pairs at the given sequences for good and returns those that were there, each with its stored
    /// commitment, recording what each serves. Only after this returns may a share computed with them be sent. A nonce
    /// that would take <see cref="Uncompacted"/> past <see cref="MaxUncompacted"/> is left out, and left stored.
    /// </summary>
    IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyDictionary<ulong, NonceUse?> sequences);

    /// <summary>The recorded uses, oldest first, from the <paramref name="skip"/>-th, at most <paramref name="limit"/>.</summary>
    IReadOnlyList<RecordedNonceUse> Uses(int skip, int limit);

    /// <summary>Deletes the nonces below <paramref name="belowSequence"/> that <paramref name="keep"/> rejects; returns how many.</summary>
    int Prune(ulong belowSequence, Func<ulong, bool> keep);

    /// <summary>Folds taken nonces into the store's compact form (a no-op for a store without one).</summary>
    void Compact();

    /// <summary>
    /// The sequences (of <see cref="Epoch"/>) that this store dropped when it opened because a crash may have left
    /// them used without a record (they were reserved by a synced record, and a take record after it may not have
    /// reached the disk). Their commitments may still be in the log's pool: the signer replaces the pool when it
    /// offers one of them. Empty for a store that never loses one.
    /// </summary>
    IReadOnlySet<ulong> LostAtOpen { get; }
}

/// <summary>
/// A signer's secret FROST nonces, durable (DESIGN section 5, INV-NONCE). A nonce pair is generated and synced to disk
/// before its commitment is published, and is taken (a durable tombstone) before the share computed with it leaves the
/// node: after a crash a nonce is either unused and still here, or gone, never used twice.
/// </summary>
/// <remarks>
/// <para>The secrets live in <see cref="NonceFile"/>, the project's own file, in a directory of mode 0700: nonces are
/// as secret as the key share. Taking is on the signing hot path: a take is one append to <c>used-N.log</c>, and a
/// nonce in that log is never handed out again. The fsync that makes a take durable is shared by many takes: a take
/// above the store's reservation first appends a reservation record, "every stored nonce below sequence R is used",
/// with R <see cref="DefaultReserveAhead"/> past the take, and syncs it with the take; takes below R append their
/// records without an fsync (a killed process loses nothing the kernel has; a power failure can lose those records,
/// and then the next open drops every stored nonce below R that the log does not name, used or not:
/// <see cref="INonceStore.LostAtOpen"/>). A signer takes its nonces in sequence order (the leader picks each signer's
/// lowest free commitment), so this is one fsync per <see cref="DefaultReserveAhead"/> sessions instead of one per
/// session, on the disk the Raft log's flushes wait for. In the background
/// (<see cref="Compact"/>) the taken nonces are erased in place in the nonce file (overwritten with zeros, fsynced),
/// their public use records are moved to LiteDB (<c>uses.db</c>, an audit only, made durable by <see cref="Storage.LiteDbLog"/>:
/// one fsync per compaction), and only then is the log deleted; so the tombstone of a used nonce is always on disk, in
/// the log or in the erased record itself, and never depends on LiteDB, and a use record is on disk in the log or in
/// LiteDB. After a crash the log is read back (a torn last record was never synced, so its share never left) and
/// compacted.</para>
/// <para>When the audit database fails (a full or failing disk), compaction fails once it has erased the taken nonces,
/// and their records wait in memory and in their logs; takes stop at <see cref="INonceStore.MaxUncompacted"/>. LiteDB
/// stays closed after a failed write, so the records reach it at the next open (a restart), which compacts.</para>
/// <para>A directory from before this format holds the nonces in LiteDB (<c>nonces.db</c>): that file is overwritten
/// with zeros and deleted at open. Its commitments are still in the log's pool; the signer finds it holds none of them
/// and publishes a replacement pool (<see cref="SignerService"/>).</para>
/// </remarks>
public sealed class NonceStore : INonceStore
{
    private readonly Storage.LiteDbLog liteDb;
    private readonly LiteDatabase database;
    private readonly ILiteCollection<BsonDocument> uses;
    private readonly NonceFile file;
    private readonly Lock writer = new();
    private readonly Lock compactor = new();
    private readonly int maxUncompacted;
    private readonly string directory;
    private readonly int reserveAhead;
    private FileStream journal;
    private long journalNumber;
    private bool journalHasTakes;
    private int compactions;

    // The durable reservation: every stored nonce of reservedEpoch below reservedThrough is used or dead after a crash.
    private ulong reservedEpoch;
    private ulong reservedThrough;
    private byte[] reservedBoot = [];
    private readonly byte[] bootId;
    private readonly HashSet<ulong> lostAtOpen = [];
    private readonly Dictionary<ulong, (ulong Epoch, byte[] Commitment, NonceUse? Use)> taken = [];

    /// <summary>Opens (or creates) the store in <paramref name="directory"/>, which is made owner-only.</summary>
    /// <exception cref="IOException">The store cannot be opened.</exception>
    public NonceStore(string directory)
        : this(directory, failAuditWrite: null)
    {
    }

    /// <summary>
    /// How far past a take that needs a new reservation the reservation reaches: 16 takes share one fsync, and a crash
    /// (of the machine, not of the process) can cost a signer the 16 unused nonces above its last take (and any lower
    /// one a leader skipped) and a pool replacement.
    /// </summary>
    public const int DefaultReserveAhead = 16;

    /// <summary>
    /// As <see cref="NonceStore(string)"/>; <paramref name="failAuditWrite"/> (tests) fails the audit database's writes
    /// as a full disk does, <paramref name="maxUncompacted"/> (tests) lowers <see cref="INonceStore.MaxUncompacted"/>,
    /// <paramref name="reserveAhead"/> sets how far a reservation reaches past its take (0: every take syncs), and
    /// <paramref name="bootId"/> (tests) stands for the machine's boot id (another value: the machine rebooted).
    /// </summary>
    internal NonceStore(string directory, Func<bool>? failAuditWrite, int maxUncompacted = INonceStore.MaxUncompacted, int reserveAhead = DefaultReserveAhead, string? bootId = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxUncompacted, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(reserveAhead);
        this.maxUncompacted = maxUncompacted;
        this.reserveAhead = reserveAhead;
        this.bootId = bootId is null ? ReadBootId() : System.Text.Encoding.ASCII.GetBytes(bootId);
        var info = Directory.CreateDirectory(directory);
        if (!OperatingSystem.IsWindows())
            info.UnixFileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        this.directory = info.FullName;

        // The earlier format kept the secret nonces in LiteDB, whose deleted pages keep them: erase it.
        DurableFiles.Erase(Path.Combine(this.directory, "nonces.db"));
        DurableFiles.Erase(Path.Combine(this.directory, "nonces-log.db"));
        file = NonceFile.Open(this.directory);
        try
        {
            liteDb = Storage.LiteDbLog.Open(Path.Combine(this.directory, "uses.db"), failAuditWrite);
            database = liteDb.Database;
            uses = database.GetCollection("uses");
            uses.EnsureIndex("seq");

            // Every used-nonce log left by an earlier run (one per compaction generation), oldest first.
            var logs = Directory.EnumerateFiles(this.directory, "used-*.log")
                .Select(path => (Path: path, Number: long.TryParse(Path.GetFileNameWithoutExtension(path)[5..], out var n) ? n : -1))
                .Where(l => l.Number >= 0).OrderBy(l => l.Number).ToList();
            foreach (var (path, _) in logs)
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
                ReadJournal(stream);
            }

            // A reservation of the current epoch covers nonces whose take records were not synced. Written since this
            // machine booted, every record written after it is still readable (the kernel keeps what a killed process
            // wrote); from an earlier boot (a power failure or a crash of the machine), records after it may be lost, so
            // every stored nonce below it that the log does not name is dropped, as if used: tombstoned in the new log
            // (synced, before a reservation of this boot goes beside them) and erased by the compaction below.
            List<(ulong Sequence, byte[] Commitment)> lost = [];
            if (reservedEpoch == file.Epoch && reservedThrough > 0 && (reservedBoot.Length == 0 || !reservedBoot.AsSpan().SequenceEqual(this.bootId)))
            {
                foreach (var (sequence, entry) in file.Live)
                {
                    if (sequence < reservedThrough && !taken.ContainsKey(sequence))
                        lost.Add((sequence, entry.Commitment));
                }
            }
            else if (reservedEpoch != file.Epoch)
            {
                (reservedEpoch, reservedThrough) = (file.Epoch, 0);
            }

            journalNumber = logs.Count == 0 ? 1 : logs[^1].Number + 1;
            journal = OpenJournal(journalNumber);
            journalHasTakes = lost.Count > 0;
            foreach (var (sequence, commitment) in lost)
            {
                journal.Write(EncodeRecord(file.Epoch, sequence, commitment, null));
                taken[sequence] = (file.Epoch, commitment, null);
                lostAtOpen.Add(sequence);
            }

            WriteReservation();
            DurableFiles.SyncDirectory(this.directory);
            Compact();
        }
        catch
        {
            // Nothing opened here outlives a failed open: a handle left to the finalizer would keep its file locked
            // against the next try in this process (a failing audit database fails the opening compaction).
            journal?.Dispose();
            liteDb?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public IReadOnlySet<ulong> LostAtOpen => lostAtOpen;

    // This boot of the machine (Linux; empty where unknown, and then every reservation counts as from another boot).
    private static byte[] ReadBootId()
    {
        try
        {
            return OperatingSystem.IsLinux() ? System.Text.Encoding.ASCII.GetBytes(File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim()) : [];
        }
        catch (IOException)
        {
            return [];
        }
        catch (UnauthorizedAccessException)
        {
            return [];
        }
    }

    // Appends the current reservation, with this boot's id, to the journal and syncs it: a new journal carries it
    // before the one that held it can be deleted.
    private void WriteReservation()
    {
        if (reservedThrough == 0)
        {
            journal.Flush(flushToDisk: true);
            return;
        }

        journal.Write(EncodeReservation(reservedEpoch, reservedThrough));
        journal.Flush(flushToDisk: true);
    }

    private FileStream OpenJournal(long number)
    {
        var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var stream = new FileStream(Path.Combine(directory, $"used-{number.ToString(System.Globalization.CultureInfo.InvariantCulture)}.log"), options);
        stream.Position = stream.Length;
        return stream;
    }

    /// <summary>Nonces taken since the last <see cref="Compact"/> (marked used by the log, not yet erased).</summary>
    public int Uncompacted
    {
        get
        {
            lock (writer)
                return taken.Count;
        }
    }

    /// <summary>
    /// Erases the taken nonces in the nonce file (synced), stores their use records, then deletes the used-nonce logs
    /// that named them. Idempotent: a crash between the steps leaves records that the next compaction skips.
    /// </summary>
    public void Compact()
    {
        Dictionary<ulong, (ulong Epoch, byte[] Commitment, NonceUse? Use)> batch;
        long through;
        lock (writer)
        {
            if (taken.Count == 0)
                return;
            batch = new Dictionary<ulong, (ulong, byte[], NonceUse?)>(taken);
            if (!journalHasTakes)
            {
                // Every taken nonce is in an older log (an earlier compaction failed after its switch): a retry opens
                // no new log, so a failing audit database leaves one log per batch of takes, not one per attempt.
                through = journalNumber - 1;
            }
            else
            {
                through = journalNumber;

                // Not for the tombstones (the reservation covers the unsynced ones): for the use records, the audit,
                // which a machine crash before the audit database has them would otherwise lose.
                journal.Flush(flushToDisk: true);
                journal.Dispose();
                journal = OpenJournal(++journalNumber);
                journalHasTakes = false;

                // The reservation moves into the new log, synced with its directory entry, before the old logs (which
                // held it) can go.
                if (reservedThrough > 0)
                {
                    WriteReservation();
                    DurableFiles.SyncDirectory(directory);
                }

                CrashPoints.Reach("compact-after-switch");
            }

            // The durable deletion moves from the log to the nonce file itself: erased and synced before the log goes.
            file.Erase(batch.Where(entry => entry.Value.Epoch == file.Epoch).Select(entry => entry.Key));
            CrashPoints.Reach("compact-after-erase");
        }

        lock (compactor)
        {
            Transact(() =>
            {
                foreach (var (sequence, (epoch, commitment, use)) in batch)
                {
                    if (use is null)
                        continue;

                    // Keyed by (epoch, sequence): compacting the same log twice (a crash before it was deleted) writes
                    // the same record again.
                    uses.Upsert(new BsonDocument
                    {
                        ["_id"] = UseId(epoch, sequence),
                        ["epoch"] = unchecked((long)epoch),
                        ["seq"] = (long)sequence,
                        ["c"] = commitment,
                        ["h"] = unchecked((long)use.Height),
                        ["a"] = use.Attempt,
                        ["m"] = use.Message,
                        ["s"] = new BsonArray(use.Signers.Select(id => new BsonValue(id))),
                        ["l"] = use.CommitmentListHash,
                    });
                }
            });
            if (++compactions % 16 == 1)
                TrimUses();
        }

        CrashPoints.Reach("compact-after-uses");

        lock (writer)
        {
            foreach (var sequence in batch.Keys)
                taken.Remove(sequence);
        }

        foreach (var path in Directory.EnumerateFiles(directory, "used-*.log"))
        {
            if (long.TryParse(Path.GetFileNameWithoutExtension(path)[5..], out var number) && number <= through)
            {
                File.Delete(path);
                CrashPoints.Reach("compact-after-delete");
            }
        }
    }

    // Uses sort by key epoch, then sequence: the order a signer used its nonces in.
    private static long UseId(ulong epoch, ulong sequence) => unchecked((long)((epoch << 48) | (sequence & ((1UL << 48) - 1))));

    // One record per taken nonce: length-prefixed, with a SHA-256 prefix as checksum.
    // A reservation of this boot: every stored nonce of the epoch below the bound is used.
    private byte[] EncodeReservation(ulong epoch, ulong through) => EncodeRecord(epoch, through, [], null, bootId);

    // A reservation is a record with no commitment and no use, then the boot id it was written in.
    private static byte[] EncodeRecord(ulong epoch, ulong sequence, byte[] commitment, NonceUse? use, byte[]? reservationBoot = null)
    {
        using var body = new MemoryStream();
        using (var writer = new BinaryWriter(body, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(epoch);
            writer.Write(sequence);
            writer.Write((ushort)commitment.Length);
            writer.Write(commitment);
            writer.Write(use is not null);
            if (use is not null)
            {
                writer.Write(use.Height);
                writer.Write(use.Attempt);
                writer.Write((ushort)use.Message.Length);
                writer.Write(use.Message);
                writer.Write((byte)use.Signers.Count);
                foreach (var id in use.Signers)
                    writer.Write(id);
                writer.Write((ushort)use.CommitmentListHash.Length);
                writer.Write(use.CommitmentListHash);
            }

            if (reservationBoot is not null)
            {
                writer.Write((byte)reservationBoot.Length);
                writer.Write(reservationBoot);
            }
        }

        var payload = body.ToArray();
        var record = new byte[4 + 4 + payload.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(record, payload.Length);
        System.Security.Cryptography.SHA256.HashData(payload).AsSpan(0, 4).CopyTo(record.AsSpan(4));
        payload.CopyTo(record, 8);
        return record;
    }

    // One record of a used-nonce log: a take (a commitment, and the use when recorded) or a reservation (no
    // commitment; its sequence is the bound, with the boot id it was written in).
    private readonly record struct JournalRecord(ulong Epoch, ulong Sequence, byte[] Commitment, NonceUse? Use, byte[] Boot)
    {
        public bool IsReservation => Commitment.Length == 0;
    }

    // Reads a log's whole records in order and returns the length they span (a torn tail after it is not one).
    private static long ReadRecords(Stream log, List<JournalRecord> records)
    {
        log.Position = 0;
        using var reader = new BinaryReader(log, System.Text.Encoding.UTF8, leaveOpen: true);
        long good = 0;
        while (log.Length - log.Position >= 8)
        {
            var length = reader.ReadInt32();
            var check = reader.ReadBytes(4);
            if (length <= 0 || length > 64 * 1024 || log.Length - log.Position < length)
                break;
            var payload = reader.ReadBytes(length);
            if (!System.Security.Cryptography.SHA256.HashData(payload).AsSpan(0, 4).SequenceEqual(check))
                break;
            using var body = new BinaryReader(new MemoryStream(payload));
            var epoch = body.ReadUInt64();
            var sequence = body.ReadUInt64();
            var commitment = body.ReadBytes(body.ReadUInt16());
            NonceUse? use = null;
            if (body.ReadBoolean())
            {
                var height = body.ReadUInt64();
                var attempt = body.ReadInt32();
                var message = body.ReadBytes(body.ReadUInt16());
                var signers = Enumerable.Range(0, body.ReadByte()).Select(_ => body.ReadInt32()).ToList();
                var listHash = body.ReadBytes(body.ReadUInt16());
                use = new NonceUse(height, attempt, message, signers, listHash);
            }

            var boot = commitment.Length == 0 && body.BaseStream.Position < body.BaseStream.Length ? body.ReadBytes(body.ReadByte()) : [];
            records.Add(new JournalRecord(epoch, sequence, commitment, use, boot));
            good = log.Position;
        }

        return good;
    }

    /// <summary>The take records in this store's used-nonce logs, read from the disk (tests: a compacted store's logs hold reservations only).</summary>
    internal int LoggedTakes()
    {
        lock (writer)
        {
            var records = new List<JournalRecord>();
            foreach (var path in Directory.EnumerateFiles(directory, "used-*.log"))
            {
                if (path == journal.Name)
                    continue;
                using var log = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                ReadRecords(log, records);
            }

            // The open log (locked by this store) through its own handle, which then goes back to its end.
            journal.Flush(flushToDisk: false);
            ReadRecords(journal, records);
            journal.Position = journal.Length;

            return records.Count(r => !r.IsReservation);
        }
    }

    private void ReadJournal(FileStream journal)
    {
        var records = new List<JournalRecord>();
        var good = ReadRecords(journal, records);
        foreach (var record in records)
        {
            if (!record.IsReservation)
                taken[record.Sequence] = (record.Epoch, record.Commitment, record.Use);

            // A reservation: every stored nonce of its epoch below its sequence. The latest one counts (they only grow,
            // and a compaction copies the current one into the next log).
            else if (record.Epoch == file.Epoch && (reservedEpoch != record.Epoch || record.Sequence >= reservedThrough))
                (reservedEpoch, reservedThrough, reservedBoot) = (record.Epoch, record.Sequence, record.Boot);
        }

        // A torn tail was never synced: no share made with it left the node.
        journal.SetLength(good);
        journal.Position = good;
    }

    private void TrimUses()
    {
        var excess = uses.Count() - MaxUseRecords;
        if (excess <= 0)
            return;
        var oldest = uses.Find(Query.All(), 0, excess).Select(d => d["_id"]).ToList();
        Transact(() =>
        {
            foreach (var id in oldest)
                uses.Delete(id);
        });
    }

    /// <summary>The most use records kept (the oldest are dropped beyond it).</summary>
    public const int MaxUseRecords = 100_000;

    /// <summary>The stored, untaken nonce pairs.</summary>
    public int Count
    {
        get
        {
            lock (writer)
                return file.Live.Count - taken.Keys.Count(file.Live.ContainsKey);
        }
    }

    /// <summary>The key epoch the stored nonces belong to (0 when none).</summary>
    public ulong Epoch
    {
        get
        {
            lock (writer)
                return file.Epoch;
        }
    }

    /// <summary>The next sequence this signer has never used for <paramref name="epoch"/>.</summary>
    public ulong NextSequence(ulong epoch)
    {
        lock (writer)
            return file.Epoch == epoch ? file.Next : 1;
    }

    /// <summary>
    /// Generates <paramref name="count"/> fresh nonce pairs for <paramref name="share"/> at sequences starting at
    /// <paramref name="firstSequence"/> (not below <see cref="NextSequence"/>) and syncs them to disk. A new epoch
    /// erases every nonce of the old one.
    /// </summary>
    public IReadOnlyList<StoredNonceCommitment> Generate(ulong epoch, KeyShare share, ulong firstSequence, int count)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var result = new List<StoredNonceCommitment>(count);
        var pairs = new List<(byte[] D, byte[] E, byte[] Commitment)>(count);
        for (var i = 0; i < count; i++)
        {
            var (pair, commitment) = Frost.Commit(share.Identifier, share.Secret);
            var encoded = commitment.Encode();
            pairs.Add((Secp256k1.SerializeScalar(pair.Hiding), Secp256k1.SerializeScalar(pair.Binding), encoded));
            result.Add(new StoredNonceCommitment(firstSequence + (ulong)i, encoded));
        }

        try
        {
            if (Epoch != epoch)
                Compact();
            lock (writer)
            {
                if (file.Epoch != epoch)
                    file.Reset(epoch);
                file.Append(firstSequence, pairs);
            }
        }
        finally
        {
            foreach (var (d, e, _) in pairs)
            {
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(d);
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(e);
            }
        }

        return result;
    }

    /// <summary>Stored commitments at or above <paramref name="fromSequence"/>, ascending, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<StoredNonceCommitment> CommitmentsFrom(ulong fromSequence, int limit)
    {
        lock (writer)
        {
            return [.. file.LiveFrom(fromSequence).Where(entry => !taken.ContainsKey(entry.Key)).Take(limit)
                .Select(entry => new StoredNonceCommitment(entry.Key, entry.Value.Commitment))];
        }
    }

    /// <summary>
    /// Takes the nonce pairs at <paramref name="sequences"/> durably and returns those that were there, each with
    /// its stored commitment. Only after this returns may a share computed with them be sent.
    /// </summary>
    public IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyCollection<ulong> sequences)
        => Take(epoch, sequences.ToDictionary(s => s, _ => (NonceUse?)null));

    /// <summary>
    /// As <see cref="Take(ulong, IReadOnlyCollection{ulong})"/>, and records with the tombstone what each taken
    /// nonce is used for (the audit INV-NONCE is checked against; public values only).
    /// </summary>
    public IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyDictionary<ulong, NonceUse?> sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        var result = new Dictionary<ulong, (SigningNonces, byte[])>();
        lock (writer)
        {
            if (file.Epoch != epoch || sequences.Count == 0)
                return result;
            using var records = new MemoryStream();
            ulong highest = 0;
            foreach (var (sequence, use) in sequences)
            {
                if (taken.ContainsKey(sequence) || !file.Live.TryGetValue(sequence, out var entry))
                    continue;

                // Bounded (INonceStore.MaxUncompacted): past it a nonce is refused before its secret is read, and stays
                // stored without a tombstone; it served nothing, and a take after a successful compaction may have it.
                if (taken.Count + result.Count >= maxUncompacted)
                    break;
                var (d, e) = file.ReadSecrets(sequence);
                result[sequence] = (new SigningNonces(Secp256k1.DeserializeScalar(d), Secp256k1.DeserializeScalar(e)), entry.Commitment);
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(d);
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(e);
                records.Write(EncodeRecord(epoch, sequence, entry.Commitment, use));
                highest = Math.Max(highest, sequence);
            }

            if (result.Count == 0)
                return result;

            // The durable tombstone: once this returns, these nonces are used for good, whatever happens next. Below
            // the synced reservation a take's own record need not be synced: a crash that loses it drops the nonce
            // at the next open all the same. Above it, a new reservation goes first, and is synced with the take.
            if (reservedEpoch != epoch)
                (reservedEpoch, reservedThrough) = (epoch, 0);
            var reserve = highest >= reservedThrough;
            var through = highest + 1 + (ulong)reserveAhead;
            if (reserve)
                journal.Write(EncodeReservation(epoch, through));
            journal.Write(records.GetBuffer(), 0, (int)records.Length);
            journalHasTakes = true;
            journal.Flush(flushToDisk: false);
            CrashPoints.Reach("take-before-sync");
            if (reserve)
            {
                journal.Flush(flushToDisk: true);
                reservedThrough = through;
            }

            CrashPoints.Reach("take-after-sync");
            foreach (var (sequence, (_, commitment)) in result)
                taken[sequence] = (epoch, commitment, sequences[sequence]);
        }

        return result;
    }

    /// <summary>The recorded uses, oldest first, from the <paramref name="skip"/>-th, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<RecordedNonceUse> Uses(int skip, int limit)
    {
        Compact();
        lock (compactor)
        {
            return [.. uses.Find(Query.All(), skip, limit).Select(d => new RecordedNonceUse(
                unchecked((ulong)d["epoch"].AsInt64), (ulong)d["seq"].AsInt64, d["c"].AsBinary,
                new NonceUse(unchecked((ulong)d["h"].AsInt64), d["a"].AsInt32, d["m"].AsBinary, [.. d["s"].AsArray.Select(v => v.AsInt32)], d["l"].AsBinary)))];
        }
    }

    /// <summary>Erases the nonces below <paramref name="belowSequence"/> that <paramref name="keep"/> rejects (those the log no longer offers).</summary>
    public int Prune(ulong belowSequence, Func<ulong, bool> keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        lock (writer)
        {
            var stale = file.Live.Keys.Where(s => s < belowSequence && !taken.ContainsKey(s) && !keep(s)).ToList();
            return stale.Count == 0 ? 0 : file.Erase(stale);
        }
    }

    private void Transact(Action body)
    {
        if (!database.BeginTrans())
            throw new InvalidOperationException("a nonce store transaction is already open on this thread");
        try
        {
            body();
            if (!database.Commit())
                throw new IOException("the nonce store did not commit");
        }
        catch
        {
            database.Rollback();
            throw;
        }

        // Durable before the used-nonce log that held these records is deleted.
        liteDb.Sync();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        journal.Dispose();
        file.Dispose();
        liteDb.Dispose();
    }
}
