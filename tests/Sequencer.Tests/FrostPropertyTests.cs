using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto.EC;
using Org.BouncyCastle.Math;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>Properties of the threshold scheme over random keys and signer sets.</summary>
public sealed class FrostPropertyTests
{
    private static (BigInteger Signature, List<NonceCommitment> Commitments, Dictionary<int, BigInteger> Shares) SignWith(
        IReadOnlyList<KeyShare> keyShares, GroupKey group, IReadOnlyList<int> signers, byte[] message)
    {
        var nonces = new Dictionary<int, SigningNonces>();
        var commitments = new List<NonceCommitment>();
        foreach (var id in signers.Order())
        {
            var (n, c) = Frost.Commit(id, keyShares[id - 1].Secret);
            nonces[id] = n;
            commitments.Add(c);
        }

        var shares = signers.ToDictionary(id => id, id => Frost.Sign(id, keyShares[id - 1].Secret, group.PublicKey, nonces[id], message, commitments));
        return (BigInteger.Zero, commitments, shares);
    }

    public static TheoryData<int, int> Shapes => new() { { 2, 3 }, { 3, 5 }, { 4, 7 }, { 1, 2 } };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void AnyTOfNShares_AggregateToAValidSignature(int threshold, int participants)
    {
        var random = new Random(threshold * 100 + participants);
        var (keyShares, group) = TrustedDealer.Generate(threshold, participants);
        for (var round = 0; round < 6; round++)
        {
            var signers = Enumerable.Range(1, participants).OrderBy(_ => random.Next()).Take(threshold).ToList();
            var message = RandomNumberGenerator.GetBytes(32);
            var (_, commitments, shares) = SignWith(keyShares, group, signers, message);
            foreach (var (id, share) in shares)
                Assert.True(Frost.VerifyShare(id, group.VerificationShares[id], share, commitments, group.PublicKey, message));
            var signature = Frost.Aggregate(commitments, message, group.PublicKey, shares.Values);
            Assert.True(Frost.Verify(message, signature, group.PublicKey), $"signers {string.Join(",", signers)}");
            Assert.True(IndependentSchnorrCheck(message, signature.Encode(), Secp256k1.SerializeElement(group.PublicKey)));
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void FewerThanTShares_NeverAggregateToAValidSignature(int threshold, int participants)
    {
        if (threshold < 2)
            return;
        var (keyShares, group) = TrustedDealer.Generate(threshold, participants);
        var signers = Enumerable.Range(1, threshold - 1).ToList();
        var message = RandomNumberGenerator.GetBytes(32);
        var (_, commitments, shares) = SignWith(keyShares, group, signers, message);
        var signature = Frost.Aggregate(commitments, message, group.PublicKey, shares.Values);
        Assert.False(Frost.Verify(message, signature, group.PublicKey));
        Assert.False(IndependentSchnorrCheck(message, signature.Encode(), Secp256k1.SerializeElement(group.PublicKey)));
    }

    [Fact]
    public void CorruptedShare_IsDetectedAndAttributedToItsSigner()
    {
        var (keyShares, group) = TrustedDealer.Generate(3, 5);
        var message = "batch commitment"u8.ToArray();
        var (_, commitments, shares) = SignWith(keyShares, group, [1, 3, 4], message);
        shares[3] = shares[3].Add(BigInteger.One).Mod(Secp256k1.Order);
        var bad = shares.Where(s => !Frost.VerifyShare(s.Key, group.VerificationShares[s.Key], s.Value, commitments, group.PublicKey, message)).Select(s => s.Key).ToList();
        Assert.Equal([3], bad);
        Assert.False(Frost.Verify(message, Frost.Aggregate(commitments, message, group.PublicKey, shares.Values), group.PublicKey));
    }

    [Fact]
    public void Sign_WithNoncesThatDoNotMatchTheCommitmentList_Refuses()
    {
        var (keyShares, group) = TrustedDealer.Generate(2, 3);
        var (n1, c1) = Frost.Commit(1, keyShares[0].Secret);
        var (_, c2) = Frost.Commit(2, keyShares[1].Secret);
        var (other, _) = Frost.Commit(2, keyShares[1].Secret);
        Assert.Throws<ArgumentException>(() => Frost.Sign(2, keyShares[1].Secret, group.PublicKey, other, [1, 2, 3], [c1, c2]));
        Assert.Throws<ArgumentException>(() => Frost.Sign(3, keyShares[2].Secret, group.PublicKey, n1, [1, 2, 3], [c1, c2]));
        Assert.Throws<ArgumentException>(() => Frost.EncodeCommitmentList([c2, c1]));
    }

    [Fact]
    public void Verify_AlteredMessageSignatureOrKey_Fails()
    {
        var secret = Secp256k1.RandomScalar();
        var key = Secp256k1.BaseMultiply(secret);
        var message = Encoding.UTF8.GetBytes("header");
        var signature = Frost.SignSingle(message, secret);
        Assert.True(Frost.Verify(message, signature, key));
        Assert.False(Frost.Verify(Encoding.UTF8.GetBytes("headers"), signature, key));
        Assert.False(Frost.Verify(message, signature with { Z = signature.Z.Add(BigInteger.One).Mod(Secp256k1.Order) }, key));
        Assert.False(Frost.Verify(message, signature, Secp256k1.BaseMultiply(secret.Add(BigInteger.One))));
    }

    [Fact]
    public void Decode_InvalidEncodings_AreRejected()
    {
        var signature = Frost.SignSingle([1], Secp256k1.RandomScalar()).Encode();
        Assert.Throws<FormatException>(() => FrostSignature.Decode(signature.AsSpan(0, 64)));
        var badPoint = (byte[])signature.Clone();
        badPoint[0] = 0x05;
        Assert.Throws<FormatException>(() => FrostSignature.Decode(badPoint));
        var bigScalar = (byte[])signature.Clone();
        Array.Fill(bigScalar, (byte)0xff, 33, 32);
        Assert.Throws<FormatException>(() => FrostSignature.Decode(bigScalar));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void FrostSession_GivesTheSameSharesAndSignatureAsTheStepByStepFunctions(int threshold, int participants)
    {
        var (keyShares, group) = TrustedDealer.Generate(threshold, participants);
        var signers = Enumerable.Range(1, participants).Skip(participants - threshold).ToList();
        var message = RandomNumberGenerator.GetBytes(32);
        var nonces = signers.ToDictionary(id => id, id => Frost.Commit(id, keyShares[id - 1].Secret));
        var commitments = signers.Select(id => nonces[id].Commitment).ToList();
        var session = new FrostSession(group.PublicKey, commitments, message);
        foreach (var id in signers)
        {
            var z = session.Sign(keyShares[id - 1], nonces[id].Nonces);
            Assert.Equal(Frost.Sign(id, keyShares[id - 1].Secret, group.PublicKey, nonces[id].Nonces, message, commitments), z);
            Assert.True(session.VerifyShare(id, group.VerificationShares[id], z));
            Assert.False(session.VerifyShare(id, group.VerificationShares[id], z.Add(BigInteger.One)));
        }

        var shares = signers.Select(id => session.Sign(keyShares[id - 1], nonces[id].Nonces)).ToList();
        var signature = session.Aggregate(shares);
        Assert.Equal(Frost.Aggregate(commitments, message, group.PublicKey, shares).Encode(), signature.Encode());
        Assert.True(IndependentSchnorrCheck(message, signature.Encode(), Secp256k1.SerializeElement(group.PublicKey)));

        // Another signer's nonces are refused.
        if (signers.Count > 1)
            Assert.Throws<ArgumentException>(() => session.Sign(keyShares[signers[0] - 1], nonces[signers[1]].Nonces));
    }

    [Fact]
    public void CheckerSchnorrVerifier_AgreesWithTheImplementation()
    {
        var (keyShares, group) = TrustedDealer.Generate(2, 3);
        var key = Secp256k1.SerializeElement(group.PublicKey);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < 20; i++)
        {
            var message = RandomNumberGenerator.GetBytes(32);
            var (_, commitments, shares) = SignWith(keyShares, group, [1, 3], message);
            var signature = Frost.Aggregate(commitments, message, group.PublicKey, shares.Values).Encode();
            Assert.True(Sequencer.Checker.SchnorrVerifier.Verify(message, signature, key));
            signature[40] ^= 1;
            Assert.False(Sequencer.Checker.SchnorrVerifier.Verify(message, signature, key));
            Assert.False(Sequencer.Checker.SchnorrVerifier.Verify(message, signature[..64], key));
        }

        // Fast enough for a chaos checker over thousands of signatures.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"{watch.Elapsed.TotalMilliseconds / 60:0.0} ms per verification");
    }

    [Fact]
    public void SignerProof_VerifiesOnlyForItsKeyDomainAndPayload()
    {
        var (keyShares, group) = TrustedDealer.Generate(2, 3);
        var proof = SignerProof.Sign("nonce-commitments", [1, 2, 3], keyShares[0].Secret);
        Assert.True(SignerProof.Verify("nonce-commitments", [1, 2, 3], proof, group.VerificationShares[1]));
        Assert.False(SignerProof.Verify("nonce-commitments", [1, 2, 3], proof, group.VerificationShares[2]));
        Assert.False(SignerProof.Verify("signature-shares", [1, 2, 3], proof, group.VerificationShares[1]));
        Assert.False(SignerProof.Verify("nonce-commitments", [1, 2, 4], proof, group.VerificationShares[1]));
        Assert.False(SignerProof.Verify("nonce-commitments", [1, 2, 3], proof.AsSpan(0, 64), group.VerificationShares[1]));

        // Never a valid signature under the verification share over a 32-byte message (such as a batch commitment).
        Assert.False(Frost.Verify(System.Security.Cryptography.SHA256.HashData([1, 2, 3]), FrostSignature.Decode(proof), group.VerificationShares[1]));
    }

    /// <summary>
    /// The Schnorr equation z*G == R + c*PK with c = hash_to_field(R || PK || m), computed here from BouncyCastle and
    /// System.Security.Cryptography alone, without calling the implementation under test.
    /// </summary>
    internal static bool IndependentSchnorrCheck(byte[] message, byte[] signature, byte[] publicKey)
    {
        var curve = CustomNamedCurves.GetByName("secp256k1");
        var r = curve.Curve.DecodePoint(signature[..33]);
        var z = new BigInteger(1, signature[33..]);
        var pk = curve.Curve.DecodePoint(publicKey);
        var dst = Encoding.ASCII.GetBytes("FROST-secp256k1-SHA256-v1chal");
        byte[] dstPrime = [.. dst, (byte)dst.Length];
        byte[] input = [.. signature[..33], .. publicKey, .. message];
        var b0 = SHA256.HashData([.. new byte[64], .. input, 0, 48, 0, .. dstPrime]);
        var b1 = SHA256.HashData([.. b0, 1, .. dstPrime]);
        var b2 = SHA256.HashData([.. b0.Zip(b1, (a, b) => (byte)(a ^ b)), 2, .. dstPrime]);
        var c = new BigInteger(1, [.. b1, .. b2[..16]]).Mod(curve.N);
        var left = curve.G.Multiply(z).Normalize();
        var right = r.Add(pk.Multiply(c)).Normalize();
        return left.Equals(right);
    }

    [Fact]
    public void ASharedSession_IsComputedOncePerInputs_AndEqualsAFreshOne()
    {
        // On the leader the coordinator and its own signer build the same session: one group commitment between them.
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var commitments = new[] { 1, 2 }.Select(id => Frost.Commit(id, shares[id - 1].Secret).Commitment).ToList();
        var message = Encoding.UTF8.GetBytes("head 7");
        var first = FrostSession.Shared(group.PublicKey, commitments, message);
        Assert.Same(first, FrostSession.Shared(group.PublicKey, [.. commitments], [.. message]));
        var fresh = new FrostSession(group.PublicKey, commitments, message);
        Assert.Equal(fresh.GroupCommitment, first.GroupCommitment);
        Assert.Equal(fresh.Challenge, first.Challenge);

        // Any other input is another session: the message, a commitment, the group key.
        var other = FrostSession.Shared(group.PublicKey, commitments, Encoding.UTF8.GetBytes("head 8"));
        Assert.NotEqual(first.Challenge, other.Challenge);
        var third = Frost.Commit(3, shares[2].Secret).Commitment;
        Assert.NotSame(first, FrostSession.Shared(group.PublicKey, [commitments[0], third], message));
        Assert.NotSame(first, FrostSession.Shared(TrustedDealer.Generate(2, 3).Group.PublicKey, commitments, message));
        Assert.Throws<ArgumentException>(() => FrostSession.Shared(group.PublicKey, [commitments[1], commitments[0]], message));
    }

    private static List<(byte[] Message, FrostSignature Signature, Org.BouncyCastle.Math.EC.ECPoint PublicKey)> SignedBatch(int count, int seed)
    {
        // Two keys, interleaved: a batch may span a key rotation.
        var random = new Random(seed);
        var keys = new[] { Secp256k1.RandomScalar(), Secp256k1.RandomScalar() };
        var items = new List<(byte[], FrostSignature, Org.BouncyCastle.Math.EC.ECPoint)>();
        for (var i = 0; i < count; i++)
        {
            var key = keys[random.Next(2)];
            var message = new byte[1 + random.Next(64)];
            random.NextBytes(message);
            items.Add((message, Frost.SignSingle(message, key), Secp256k1.BaseMultiply(key)));
        }

        return items;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(40)]
    public void VerifyBatch_AcceptsValidSignatures_UnderSeveralKeys(int count)
    {
        var items = SignedBatch(count, count);
        Assert.All(items, item => Assert.True(Frost.Verify(item.Message, item.Signature, item.PublicKey)));
        Assert.True(Frost.VerifyBatch(items));
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(9, 0)]
    [InlineData(9, 4)]
    [InlineData(9, 8)]
    [InlineData(40, 17)]
    public void VerifyBatch_RefusesABatchWithAnyOneBadSignature(int count, int bad)
    {
        var items = SignedBatch(count, 100 + count);
        var (message, signature, key) = items[bad];
        var order = Secp256k1.Order;
        var otherKey = Secp256k1.BaseMultiply(Secp256k1.RandomScalar());
        var tampered = new (byte[], FrostSignature, Org.BouncyCastle.Math.EC.ECPoint)[]
        {
            (message, signature with { Z = signature.Z.Add(BigInteger.One).Mod(order) }, key),
            (message, signature with { R = signature.R.Add(Secp256k1.BaseMultiply(BigInteger.One)).Normalize() }, key),
            ([.. message, 0], signature, key),
            (message, signature, otherKey),
            (message, signature with { Z = order }, key),
        };
        foreach (var item in tampered)
        {
            var batch = items.ToList();
            batch[bad] = item;
            Assert.False(Frost.Verify(item.Item1, item.Item2, item.Item3));
            Assert.False(Frost.VerifyBatch(batch));
        }
    }

    [Fact]
    public void VerifyBatch_RefusesTwoBadSignaturesWhoseErrorsCancelInAPlainSum()
    {
        // z_1 + δ and z_2 − δ: the unweighted sum of the equations holds, each equation fails. The coefficients
        // (fixed by the whole batch) keep the errors from cancelling.
        var items = SignedBatch(2, 7);
        var order = Secp256k1.Order;
        var delta = new BigInteger(1, RandomNumberGenerator.GetBytes(32)).Mod(order);
        items[0] = items[0] with { Signature = items[0].Signature with { Z = items[0].Signature.Z.Add(delta).Mod(order) } };
        items[1] = items[1] with { Signature = items[1].Signature with { Z = items[1].Signature.Z.Subtract(delta).Mod(order) } };
        var plainSum = Secp256k1.BaseMultiply(items[0].Signature.Z.Add(items[1].Signature.Z).Mod(order));
        var expected = items[0].Signature.R.Add(items[1].Signature.R)
            .Add(items[0].PublicKey.Multiply(Frost.ComputeChallenge(items[0].Signature.R, items[0].PublicKey, items[0].Message)))
            .Add(items[1].PublicKey.Multiply(Frost.ComputeChallenge(items[1].Signature.R, items[1].PublicKey, items[1].Message)));
        Assert.True(plainSum.Equals(expected.Normalize()));
        Assert.False(Frost.VerifyBatch(items));
    }

    [Fact]
    public void VerifyBatch_RefusesMoreThanItsBound()
    {
        var item = SignedBatch(1, 3)[0];
        Assert.Throws<ArgumentException>(() => Frost.VerifyBatch(Enumerable.Repeat(item, Frost.MaxBatch + 1).ToList()));
        Assert.True(Frost.VerifyBatch(Enumerable.Repeat(item, 3).ToList()));
    }
}
