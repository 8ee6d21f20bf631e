using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Math;
using ECPoint = Org.BouncyCastle.Math.EC.ECPoint;

namespace Sequencer.Threshold;

/// <summary>A participant's pair of secret nonces (round one). Secret: never logged, used once, then deleted.</summary>
/// <param name="Hiding">The hiding nonce d.</param>
/// <param name="Binding">The binding nonce e.</param>
public sealed record SigningNonces(BigInteger Hiding, BigInteger Binding)
{
    /// <inheritdoc/>
    public override string ToString() => "SigningNonces(redacted)";
}

/// <summary>A participant's public nonce commitments (D, E).</summary>
/// <param name="Identifier">The participant's identifier (1..255 here).</param>
/// <param name="Hiding">D = G * d.</param>
/// <param name="Binding">E = G * e.</param>
public sealed record NonceCommitment(int Identifier, ECPoint Hiding, ECPoint Binding)
{
    /// <summary>The length of <see cref="Encode"/>: the two compressed points.</summary>
    public const int EncodedLength = 2 * Secp256k1.ElementLength;

    /// <summary>D then E, compressed: the form in which commitments are published and stored.</summary>
    public byte[] Encode() => [.. Secp256k1.SerializeElement(Hiding), .. Secp256k1.SerializeElement(Binding)];

    /// <summary>Parses <see cref="Encode"/>'s form for <paramref name="identifier"/>.</summary>
    /// <exception cref="FormatException">Not two valid points of <see cref="EncodedLength"/> bytes.</exception>
    public static NonceCommitment Decode(int identifier, ReadOnlySpan<byte> encoded)
    {
        if (encoded.Length != EncodedLength)
            throw new FormatException($"a nonce commitment is {EncodedLength} bytes");
        return new NonceCommitment(identifier, Secp256k1.DeserializeElement(encoded[..Secp256k1.ElementLength]), Secp256k1.DeserializeElement(encoded[Secp256k1.ElementLength..]));
    }
}

/// <summary>A Schnorr signature (R, z), encoded as 33 + 32 bytes.</summary>
/// <param name="R">The group commitment.</param>
/// <param name="Z">The aggregated response.</param>
public sealed record FrostSignature(ECPoint R, BigInteger Z)
{
    /// <summary>The 65-byte canonical encoding R || z.</summary>
    public byte[] Encode() => [.. Secp256k1.SerializeElement(R), .. Secp256k1.SerializeScalar(Z)];

    /// <summary>Decodes R || z.</summary>
    /// <exception cref="FormatException">Not 65 bytes, R not a valid point, or z not below the order.</exception>
    public static FrostSignature Decode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Secp256k1.ElementLength + Secp256k1.ScalarLength)
            throw new FormatException("a signature is 65 bytes: R (33) then z (32)");
        return new FrostSignature(Secp256k1.DeserializeElement(bytes[..Secp256k1.ElementLength]), Secp256k1.DeserializeScalar(bytes[Secp256k1.ElementLength..]));
    }
}

/// <summary>
/// FROST(secp256k1, SHA-256) as specified by RFC 9591: the hash functions H1 to H5, nonce generation, binding factors,
/// the group commitment, the challenge, signature shares, their verification, aggregation and Schnorr verification.
/// </summary>
/// <remarks>
/// Pure functions of their inputs (randomness is an explicit input to <see cref="GenerateNonce(ReadOnlySpan{byte}, BigInteger)"/>),
/// so that the RFC test vectors can be replayed exactly.
/// </remarks>
public static class Frost
{
    /// <summary>The RFC 9591 context string of this ciphersuite.</summary>
    public const string ContextString = "FROST-secp256k1-SHA256-v1";

    private static readonly byte[] Context = Encoding.ASCII.GetBytes(ContextString);

    /// <summary>H1: hash_to_field with DST = contextString || "rho".</summary>
    public static BigInteger H1(ReadOnlySpan<byte> message) => HashToScalar(message, "rho");

    /// <summary>H2: hash_to_field with DST = contextString || "chal".</summary>
    public static BigInteger H2(ReadOnlySpan<byte> message) => HashToScalar(message, "chal");

    /// <summary>H3: hash_to_field with DST = contextString || "nonce".</summary>
    public static BigInteger H3(ReadOnlySpan<byte> message) => HashToScalar(message, "nonce");

    /// <summary>H4: SHA-256(contextString || "msg" || m).</summary>
    public static byte[] H4(ReadOnlySpan<byte> message) => Sha256(Context, "msg"u8, message);

    /// <summary>H5: SHA-256(contextString || "com" || m).</summary>
    public static byte[] H5(ReadOnlySpan<byte> message) => Sha256(Context, "com"u8, message);

    /// <summary>nonce_generate with explicit randomness: H3(random_bytes || SerializeScalar(secret)).</summary>
    public static BigInteger GenerateNonce(ReadOnlySpan<byte> randomBytes, BigInteger secret)
    {
        if (randomBytes.Length != 32)
            throw new ArgumentException("nonce randomness is 32 bytes", nameof(randomBytes));
        var secretBytes = Secp256k1.SerializeScalar(secret);
        try
        {
            return H3([.. randomBytes, .. secretBytes]);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secretBytes);
        }
    }

    /// <summary>nonce_generate with 32 fresh random bytes.</summary>
    public static BigInteger GenerateNonce(BigInteger secret)
    {
        Span<byte> random = stackalloc byte[32];
        RandomNumberGenerator.Fill(random);
        try
        {
            return GenerateNonce(random, secret);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(random);
        }
    }

    /// <summary>Round one, commit: a fresh nonce pair and its commitments.</summary>
    public static (SigningNonces Nonces, NonceCommitment Commitment) Commit(int identifier, BigInteger secretShare)
    {
        var nonces = new SigningNonces(GenerateNonce(secretShare), GenerateNonce(secretShare));
        return (nonces, CommitmentOf(identifier, nonces));
    }

    /// <summary>The commitments (G*d, G*e) of a nonce pair.</summary>
    public static NonceCommitment CommitmentOf(int identifier, SigningNonces nonces)
    {
        ArgumentNullException.ThrowIfNull(nonces);
        return new NonceCommitment(identifier, Secp256k1.BaseMultiply(nonces.Hiding), Secp256k1.BaseMultiply(nonces.Binding));
    }

    /// <summary>encode_group_commitment_list, the list sorted by identifier.</summary>
    public static byte[] EncodeCommitmentList(IReadOnlyList<NonceCommitment> commitments)
    {
        CheckSorted(commitments);
        var encoded = new List<byte>(commitments.Count * (Secp256k1.ScalarLength + 2 * Secp256k1.ElementLength));
        foreach (var commitment in commitments)
        {
            encoded.AddRange(Secp256k1.SerializeScalar(BigInteger.ValueOf(commitment.Identifier)));
            encoded.AddRange(Secp256k1.SerializeElement(commitment.Hiding));
            encoded.AddRange(Secp256k1.SerializeElement(commitment.Binding));
        }

        return [.. encoded];
    }

    /// <summary>The input of H1 for one participant (exposed for the RFC's binding_factor_input vector).</summary>
    public static byte[] BindingFactorInput(ECPoint groupPublicKey, IReadOnlyList<NonceCommitment> commitments, ReadOnlySpan<byte> message, int identifier)
        => [.. Secp256k1.SerializeElement(groupPublicKey), .. H4(message), .. H5(EncodeCommitmentList(commitments)),
            .. Secp256k1.SerializeScalar(BigInteger.ValueOf(identifier))];

    /// <summary>compute_binding_factors: one binding factor per participant, in list order.</summary>
    public static IReadOnlyDictionary<int, BigInteger> ComputeBindingFactors(ECPoint groupPublicKey, IReadOnlyList<NonceCommitment> commitments, ReadOnlySpan<byte> message)
    {
        var prefix = new List<byte>(Secp256k1.ElementLength + 64);
        prefix.AddRange(Secp256k1.SerializeElement(groupPublicKey));
        prefix.AddRange(H4(message));
        prefix.AddRange(H5(EncodeCommitmentList(commitments)));
        var factors = new Dictionary<int, BigInteger>(commitments.Count);
        foreach (var commitment in commitments)
            factors[commitment.Identifier] = H1([.. prefix, .. Secp256k1.SerializeScalar(BigInteger.ValueOf(commitment.Identifier))]);
        return factors;
    }

    /// <summary>compute_group_commitment: R = Σ (D_i + E_i * ρ_i), as one multi-scalar multiplication (public values: variable time).</summary>
    public static ECPoint ComputeGroupCommitment(IReadOnlyList<NonceCommitment> commitments, IReadOnlyDictionary<int, BigInteger> bindingFactors)
    {
        ArgumentNullException.ThrowIfNull(commitments);
        ArgumentNullException.ThrowIfNull(bindingFactors);
        var points = new List<ECPoint>(2 * commitments.Count);
        var scalars = new List<BigInteger>(2 * commitments.Count);
        foreach (var commitment in commitments)
        {
            points.Add(commitment.Hiding);
            scalars.Add(BigInteger.One);
            points.Add(commitment.Binding);
            scalars.Add(bindingFactors[commitment.Identifier]);
        }

        return Secp256k1.SumOfMultiplies(null, points, scalars);
    }

    /// <summary>compute_challenge: c = H2(R || PK || msg).</summary>
    public static BigInteger ComputeChallenge(ECPoint groupCommitment, ECPoint groupPublicKey, ReadOnlySpan<byte> message)
        => H2([.. Secp256k1.SerializeElement(groupCommitment), .. Secp256k1.SerializeElement(groupPublicKey), .. message]);

    /// <summary>derive_interpolating_value: the Lagrange coefficient of <paramref name="identifier"/> at 0 over <paramref name="identifiers"/>.</summary>
    /// <exception cref="ArgumentException">The identifier is not in the list, or the list has repeats or zero.</exception>
    public static BigInteger InterpolatingValue(IReadOnlyList<int> identifiers, int identifier)
    {
        ArgumentNullException.ThrowIfNull(identifiers);
        if (!identifiers.Contains(identifier) || identifiers.Distinct().Count() != identifiers.Count || identifiers.Any(i => i <= 0))
            throw new ArgumentException("invalid parameters: the identifier must be in a list of distinct non-zero identifiers");
        var numerator = BigInteger.One;
        var denominator = BigInteger.One;
        var xi = BigInteger.ValueOf(identifier);
        foreach (var j in identifiers)
        {
            if (j == identifier)
                continue;
            var xj = BigInteger.ValueOf(j);
            numerator = numerator.Multiply(xj).Mod(Secp256k1.Order);
            denominator = denominator.Multiply(xj.Subtract(xi)).Mod(Secp256k1.Order);
        }

        return numerator.Multiply(denominator.ModInverse(Secp256k1.Order)).Mod(Secp256k1.Order);
    }

    /// <summary>Round two, sign: z_i = d_i + e_i * ρ_i + λ_i * s_i * c.</summary>
    /// <exception cref="ArgumentException">This participant's commitment is not in the list, or does not match its nonces.</exception>
    public static BigInteger Sign(int identifier, BigInteger secretShare, ECPoint groupPublicKey, SigningNonces nonces, ReadOnlySpan<byte> message, IReadOnlyList<NonceCommitment> commitments)
    {
        ArgumentNullException.ThrowIfNull(nonces);
        var mine = commitments.FirstOrDefault(c => c.Identifier == identifier)
            ?? throw new ArgumentException($"participant {identifier} is not in the commitment list");
        var expected = CommitmentOf(identifier, nonces);
        if (!mine.Hiding.Equals(expected.Hiding) || !mine.Binding.Equals(expected.Binding))
            throw new ArgumentException($"the commitment list holds other commitments for participant {identifier} than its nonces");

        var factors = ComputeBindingFactors(groupPublicKey, commitments, message);
        var groupCommitment = ComputeGroupCommitment(commitments, factors);
        var lambda = InterpolatingValue([.. commitments.Select(c => c.Identifier)], identifier);
        var challenge = ComputeChallenge(groupCommitment, groupPublicKey, message);
        return nonces.Hiding
            .Add(nonces.Binding.Multiply(factors[identifier]))
            .Add(lambda.Multiply(secretShare).Multiply(challenge))
            .Mod(Secp256k1.Order);
    }

    /// <summary>aggregate: (R, Σ z_i).</summary>
    public static FrostSignature Aggregate(IReadOnlyList<NonceCommitment> commitments, ReadOnlySpan<byte> message, ECPoint groupPublicKey, IEnumerable<BigInteger> shares)
    {
        ArgumentNullException.ThrowIfNull(shares);
        var factors = ComputeBindingFactors(groupPublicKey, commitments, message);
        var groupCommitment = ComputeGroupCommitment(commitments, factors);
        var z = BigInteger.Zero;
        foreach (var share in shares)
            z = z.Add(share);
        return new FrostSignature(groupCommitment, z.Mod(Secp256k1.Order));
    }

    /// <summary>verify_signature_share: G * z_i == D_i + E_i * ρ_i + PK_i * (c * λ_i).</summary>
    public static bool VerifyShare(int identifier, ECPoint publicShare, BigInteger share, IReadOnlyList<NonceCommitment> commitments, ECPoint groupPublicKey, ReadOnlySpan<byte> message)
    {
        ArgumentNullException.ThrowIfNull(publicShare);
        ArgumentNullException.ThrowIfNull(share);
        if (share.SignValue < 0 || share.CompareTo(Secp256k1.Order) >= 0)
            return false;
        var mine = commitments.FirstOrDefault(c => c.Identifier == identifier);
        if (mine is null)
            return false;
        var factors = ComputeBindingFactors(groupPublicKey, commitments, message);
        var groupCommitment = ComputeGroupCommitment(commitments, factors);
        var challenge = ComputeChallenge(groupCommitment, groupPublicKey, message);
        var lambda = InterpolatingValue([.. commitments.Select(c => c.Identifier)], identifier);
        // G * z_i - E_i * ρ_i - PK_i * (c * λ_i) == D_i, as one multi-scalar multiplication (public values).
        var order = Secp256k1.Order;
        return Secp256k1.IsSumOfMultiplies(mine.Hiding, share, [mine.Binding, publicShare],
            [order.Subtract(factors[identifier]).Mod(order), order.Subtract(challenge.Multiply(lambda).Mod(order)).Mod(order)]);
    }

    /// <summary>prime_order_verify: G * z == R + PK * H2(R || PK || msg).</summary>
    public static bool Verify(ReadOnlySpan<byte> message, FrostSignature signature, ECPoint publicKey)
    {
        ArgumentNullException.ThrowIfNull(signature);
        ArgumentNullException.ThrowIfNull(publicKey);
        if (signature.R.IsInfinity || publicKey.IsInfinity || signature.Z.SignValue < 0 || signature.Z.CompareTo(Secp256k1.Order) >= 0)
            return false;
        var challenge = ComputeChallenge(signature.R, publicKey, message);
        // G * z - PK * c == R, with one interleaved double multiplication (Shamir's trick; public values: variable time).
        return Secp256k1.IsSumOfMultiplies(signature.R, signature.Z, [publicKey], [Secp256k1.Order.Subtract(challenge).Mod(Secp256k1.Order)]);
    }

    /// <summary>The most signatures <see cref="VerifyBatch"/> takes at once.</summary>
    public const int MaxBatch = 4096;

    /// <summary>
    /// Whether every signature of <paramref name="items"/> verifies (<see cref="Verify"/>), checked at once: with
    /// coefficients a_i (a_0 = 1, the others 128 bits), G·Σ a_i·z_i − Σ a_i·R_i − Σ_PK PK·Σ a_i·c_i is the identity.
    /// The coefficients are a SHA-256 of every item (message, R, z, key) and the position, so they are fixed only
    /// once the whole batch is, and a batch with an invalid signature passes with probability about 2^-128 (the
    /// deterministic form of the random-coefficient batch check: no randomness is an input, and one batch always has
    /// one answer). True for an empty batch. When it is false, <see cref="Verify"/> on each item finds the culprits.
    /// </summary>
    /// <exception cref="ArgumentException">More than <see cref="MaxBatch"/> items.</exception>
    public static bool VerifyBatch(IReadOnlyList<(byte[] Message, FrostSignature Signature, ECPoint PublicKey)> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (items.Count > MaxBatch)
            throw new ArgumentException($"at most {MaxBatch} signatures per batch", nameof(items));
        if (items.Count == 0)
            return true;

        var order = Secp256k1.Order;
        var challenges = new BigInteger[items.Count];
        using var transcript = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        transcript.AppendData(BatchDomain);
        Span<byte> length = stackalloc byte[4];
        for (var i = 0; i < items.Count; i++)
        {
            var (message, signature, publicKey) = items[i];
            ArgumentNullException.ThrowIfNull(message);
            ArgumentNullException.ThrowIfNull(signature);
            ArgumentNullException.ThrowIfNull(publicKey);
            if (signature.R.IsInfinity || publicKey.IsInfinity || signature.Z.SignValue < 0 || signature.Z.CompareTo(order) >= 0)
                return false;
            challenges[i] = ComputeChallenge(signature.R, publicKey, message);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(length, message.Length);
            transcript.AppendData(length);
            transcript.AppendData(message);
            transcript.AppendData(signature.Encode());
            transcript.AppendData(Secp256k1.SerializeElement(publicKey));
        }

        var seed = transcript.GetHashAndReset();
        var points = new List<ECPoint>(items.Count + 1);
        var scalars = new List<BigInteger>(items.Count + 1);
        var perKey = new Dictionary<ECPoint, BigInteger>();
        var generator = BigInteger.Zero;
        Span<byte> counter = stackalloc byte[seed.Length + 4];
        seed.CopyTo(counter);
        Span<byte> digest = stackalloc byte[32];
        for (var i = 0; i < items.Count; i++)
        {
            BigInteger a;
            if (i == 0)
            {
                a = BigInteger.One;
            }
            else
            {
                System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(counter[seed.Length..], i);
                SHA256.HashData(counter, digest);
                a = new BigInteger(1, digest[..16].ToArray());
                if (a.SignValue == 0)
                    a = BigInteger.One;
            }

            var (_, signature, publicKey) = items[i];
            generator = generator.Add(a.Multiply(signature.Z)).Mod(order);
            points.Add(signature.R);
            scalars.Add(order.Subtract(a));
            var weight = a.Multiply(challenges[i]).Mod(order);
            var key = publicKey.Normalize();
            perKey[key] = perKey.TryGetValue(key, out var sum) ? sum.Add(weight).Mod(order) : weight;
        }

        foreach (var (key, weight) in perKey)
        {
            points.Add(key);
            scalars.Add(order.Subtract(weight).Mod(order));
        }

        return Secp256k1.IsIdentityCombination(generator, points, scalars);
    }

    private static readonly byte[] BatchDomain = Encoding.ASCII.GetBytes("sequencer/frost-secp256k1/batch-verify/v1");

    /// <summary>prime_order_sign with a whole secret key (for tests and single-key tooling).</summary>
    public static FrostSignature SignSingle(ReadOnlySpan<byte> message, BigInteger secretKey)
    {
        var r = Secp256k1.RandomScalar();
        var commitment = Secp256k1.BaseMultiply(r);
        var publicKey = Secp256k1.BaseMultiply(secretKey);
        var challenge = ComputeChallenge(commitment, publicKey, message);
        return new FrostSignature(commitment, r.Add(challenge.Multiply(secretKey)).Mod(Secp256k1.Order));
    }

    private static void CheckSorted(IReadOnlyList<NonceCommitment> commitments)
    {
        ArgumentNullException.ThrowIfNull(commitments);
        for (var i = 1; i < commitments.Count; i++)
        {
            if (commitments[i].Identifier <= commitments[i - 1].Identifier)
                throw new ArgumentException("the commitment list must be sorted by identifier, without repeats");
        }
    }

    private static BigInteger HashToScalar(ReadOnlySpan<byte> message, string tag)
    {
        var dst = Encoding.ASCII.GetBytes(ContextString + tag);
        var uniform = ExpandMessageXmd(message, dst, 48);
        return new BigInteger(1, uniform).Mod(Secp256k1.Order);
    }

    /// <summary>expand_message_xmd with SHA-256 (RFC 9380 section 5.3.1).</summary>
    public static byte[] ExpandMessageXmd(ReadOnlySpan<byte> message, ReadOnlySpan<byte> dst, int length)
    {
        const int hashBytes = 32, blockBytes = 64;
        var ell = (length + hashBytes - 1) / hashBytes;
        if (ell > 255 || length > 65535 || dst.Length > 255)
            throw new ArgumentException("expand_message_xmd: output too long or DST too long");
        byte[] dstPrime = [.. dst, (byte)dst.Length];
        byte[] messagePrime = [.. new byte[blockBytes], .. message, (byte)(length >> 8), (byte)length, 0, .. dstPrime];
        var b0 = SHA256.HashData(messagePrime);
        var output = new byte[ell * hashBytes];
        var previous = SHA256.HashData([.. b0, 1, .. dstPrime]);
        previous.CopyTo(output, 0);
        for (var i = 2; i <= ell; i++)
        {
            var mixed = new byte[hashBytes];
            for (var k = 0; k < hashBytes; k++)
                mixed[k] = (byte)(b0[k] ^ previous[k]);
            previous = SHA256.HashData([.. mixed, (byte)i, .. dstPrime]);
            previous.CopyTo(output, (i - 1) * hashBytes);
        }

        return output[..length];
    }

    private static byte[] Sha256(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, ReadOnlySpan<byte> c)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(a);
        hash.AppendData(b);
        hash.AppendData(c);
        return hash.GetHashAndReset();
    }
}
