using LiteDB;
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
/// A signer's secret FROST nonces, durable (DESIGN section 5, INV-NONCE). A nonce pair is generated and stored
/// before its commitment is published, and is taken (deleted, durably) before the share computed with it leaves the
/// node: after a crash a nonce is either unused and still here, or gone, never used twice.
/// </summary>
/// <remarks>
/// The LiteDB file and its journal live in a directory of mode 0700: nonces are as secret as the key share.
/// LiteDB fsyncs on every commit.
/// </remarks>
public sealed class NonceStore : IDisposable
{
    private const string NonceCollection = "nonces";
    private const string MetaCollection = "meta";

    private readonly LiteDatabase database;
    private readonly ILiteCollection<BsonDocument> nonces;
    private readonly ILiteCollection<BsonDocument> meta;
    private readonly ILiteCollection<BsonDocument> uses;
    private readonly Lock writer = new();
    private long takes;

    /// <summary>Opens (or creates) the store in <paramref name="directory"/>, which is made owner-only.</summary>
    /// <exception cref="IOException">The store cannot be opened.</exception>
    public NonceStore(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var info = Directory.CreateDirectory(directory);
        if (!OperatingSystem.IsWindows())
            info.UnixFileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        database = new LiteDatabase(new ConnectionString { Filename = Path.Combine(info.FullName, "nonces.db"), Connection = ConnectionType.Direct });
        nonces = database.GetCollection(NonceCollection);
        meta = database.GetCollection(MetaCollection);
        uses = database.GetCollection("uses");
    }

    /// <summary>The most use records kept (the oldest are dropped beyond it).</summary>
    public const int MaxUseRecords = 100_000;

    /// <summary>The stored nonce pairs.</summary>
    public int Count
    {
        get
        {
            lock (writer)
                return nonces.Count();
        }
    }

    /// <summary>The key epoch the stored nonces belong to (0 when none).</summary>
    public ulong Epoch
    {
        get
        {
            lock (writer)
                return meta.FindById("epoch") is { } document ? (ulong)document["value"].AsInt64 : 0;
        }
    }

    /// <summary>The next sequence this signer has never used for <paramref name="epoch"/>.</summary>
    public ulong NextSequence(ulong epoch)
    {
        lock (writer)
        {
            if (Epoch != epoch)
                return 1;
            return meta.FindById("next") is { } document ? (ulong)document["value"].AsInt64 : 1;
        }
    }

    /// <summary>
    /// Generates <paramref name="count"/> fresh nonce pairs for <paramref name="share"/> at sequences starting at
    /// <paramref name="firstSequence"/> (not below <see cref="NextSequence"/>) and stores them durably. A new epoch
    /// drops every nonce of the old one.
    /// </summary>
    public IReadOnlyList<StoredNonceCommitment> Generate(ulong epoch, KeyShare share, ulong firstSequence, int count)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var result = new List<StoredNonceCommitment>(count);
        var documents = new List<BsonDocument>(count);
        for (var i = 0; i < count; i++)
        {
            var (pair, commitment) = Frost.Commit(share.Identifier, share.Secret);
            var sequence = firstSequence + (ulong)i;
            byte[] encoded = [.. Secp256k1.SerializeElement(commitment.Hiding), .. Secp256k1.SerializeElement(commitment.Binding)];
            documents.Add(new BsonDocument
            {
                ["_id"] = (long)sequence,
                ["d"] = Secp256k1.SerializeScalar(pair.Hiding),
                ["e"] = Secp256k1.SerializeScalar(pair.Binding),
                ["c"] = encoded,
            });
            result.Add(new StoredNonceCommitment(sequence, encoded));
        }

        lock (writer)
        {
            Transact(() =>
            {
                if (Epoch != epoch)
                {
                    nonces.DeleteAll();
                    meta.Upsert(new BsonDocument { ["_id"] = "epoch", ["value"] = (long)epoch });
                    meta.Upsert(new BsonDocument { ["_id"] = "next", ["value"] = 1L });
                }

                var next = meta.FindById("next") is { } document ? (ulong)document["value"].AsInt64 : 1;
                if (firstSequence < next)
                    throw new InvalidOperationException($"sequence {firstSequence} was already generated (next is {next})");
                nonces.InsertBulk(documents);
                meta.Upsert(new BsonDocument { ["_id"] = "next", ["value"] = (long)(firstSequence + (ulong)count) });
            });
        }

        return result;
    }

    /// <summary>Stored commitments at or above <paramref name="fromSequence"/>, ascending, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<StoredNonceCommitment> CommitmentsFrom(ulong fromSequence, int limit)
    {
        lock (writer)
        {
            return [.. nonces.Find(Query.GTE("_id", (long)fromSequence), 0, limit)
                .Select(d => new StoredNonceCommitment((ulong)d["_id"].AsInt64, d["c"].AsBinary))];
        }
    }

    /// <summary>
    /// Removes the nonce pairs at <paramref name="sequences"/> durably and returns those that were there, each with
    /// its stored commitment. Only after this returns may a share computed with them be sent.
    /// </summary>
    public IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyCollection<ulong> sequences)
        => Take(epoch, sequences.ToDictionary(s => s, _ => (NonceUse?)null));

    /// <summary>
    /// As <see cref="Take(ulong, IReadOnlyCollection{ulong})"/>, and records in the same transaction what each taken
    /// nonce is used for (the audit INV-NONCE is checked against; public values only).
    /// </summary>
    public IReadOnlyDictionary<ulong, (SigningNonces Nonces, byte[] Commitment)> Take(ulong epoch, IReadOnlyDictionary<ulong, NonceUse?> sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        var taken = new Dictionary<ulong, (SigningNonces, byte[])>();
        lock (writer)
        {
            if (Epoch != epoch || sequences.Count == 0)
                return taken;
            Transact(() =>
            {
                foreach (var (sequence, use) in sequences)
                {
                    var document = nonces.FindById((long)sequence);
                    if (document is null)
                        continue;
                    taken[sequence] = (new SigningNonces(Secp256k1.DeserializeScalar(document["d"].AsBinary), Secp256k1.DeserializeScalar(document["e"].AsBinary)),
                        document["c"].AsBinary);
                    nonces.Delete((long)sequence);
                    if (use is not null)
                    {
                        uses.Insert(new BsonDocument
                        {
                            ["epoch"] = unchecked((long)epoch),
                            ["seq"] = (long)sequence,
                            ["c"] = document["c"].AsBinary,
                            ["h"] = unchecked((long)use.Height),
                            ["a"] = use.Attempt,
                            ["m"] = use.Message,
                            ["s"] = new BsonArray(use.Signers.Select(id => new BsonValue(id))),
                            ["l"] = use.CommitmentListHash,
                        });
                    }
                }
            });
            var excess = ++takes % 1024 == 0 ? uses.Count() - MaxUseRecords : 0;
            if (excess > 0)
            {
                var oldest = uses.Find(Query.All(), 0, excess).Select(d => d["_id"]).ToList();
                Transact(() =>
                {
                    foreach (var id in oldest)
                        uses.Delete(id);
                });
            }
        }

        return taken;
    }

    /// <summary>The recorded uses, oldest first, from the <paramref name="skip"/>-th, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<RecordedNonceUse> Uses(int skip, int limit)
    {
        lock (writer)
        {
            return [.. uses.Find(Query.All(), skip, limit).Select(d => new RecordedNonceUse(
                unchecked((ulong)d["epoch"].AsInt64), (ulong)d["seq"].AsInt64, d["c"].AsBinary,
                new NonceUse(unchecked((ulong)d["h"].AsInt64), d["a"].AsInt32, d["m"].AsBinary, [.. d["s"].AsArray.Select(v => v.AsInt32)], d["l"].AsBinary)))];
        }
    }

    /// <summary>Deletes the nonces below <paramref name="belowSequence"/> that <paramref name="keep"/> rejects (those the log no longer offers).</summary>
    public int Prune(ulong belowSequence, Func<ulong, bool> keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        var removed = 0;
        lock (writer)
        {
            var stale = nonces.Find(Query.LT("_id", (long)belowSequence)).Select(d => (ulong)d["_id"].AsInt64).Where(s => !keep(s)).ToList();
            if (stale.Count == 0)
                return 0;
            Transact(() =>
            {
                foreach (var sequence in stale)
                {
                    if (nonces.Delete((long)sequence))
                        removed++;
                }
            });
        }

        return removed;
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
    }

    /// <inheritdoc/>
    public void Dispose() => database.Dispose();
}
