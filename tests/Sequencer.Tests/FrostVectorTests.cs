using System.Globalization;
using Org.BouncyCastle.Math;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>RFC 9591 appendix E.5, FROST(secp256k1, SHA-256), read from the RFC's own text layout.</summary>
public sealed class FrostVectorTests
{
    private static readonly Dictionary<string, string> V = Parse(File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Vectors", "rfc9591-e5-secp256k1.txt")));

    // "key: value" lines; a line without ": " that is pure hex continues the previous value.
    private static Dictionary<string, string> Parse(string[] lines)
    {
        var values = new Dictionary<string, string>();
        string? last = null;
        foreach (var raw in lines)
        {
            var line = raw.Trim();
            var colon = line.IndexOf(": ", StringComparison.Ordinal);
            if (colon > 0 && !line.StartsWith("//", StringComparison.Ordinal))
            {
                last = line[..colon];
                values[last] = line[(colon + 2)..];
            }
            else if (last is not null && line.Length > 0 && line.All(Uri.IsHexDigit))
            {
                values[last] += line;
            }
            else
            {
                last = null;
            }
        }

        return values;
    }

    private static byte[] Bytes(string key) => Convert.FromHexString(V[key]);

    private static BigInteger Scalar(string key) => Secp256k1.DeserializeScalar(Bytes(key));

    private static string Hex(byte[] bytes) => Convert.ToHexStringLower(bytes);

    private static KeyShare Share(int i) => new(i, Scalar($"P{i} participant_share"));

    [Fact]
    public void Vectors_AreTheFinalRfcOnes()
    {
        Assert.StartsWith("024c1ad4e0318726", V["sig"], StringComparison.Ordinal);
        Assert.Equal("FROST-secp256k1-SHA256-v1", Frost.ContextString);
    }

    [Fact]
    public void TrustedDealer_FromTheVectorSecretAndCoefficient_GivesTheVectorShares()
    {
        var (shares, group) = TrustedDealer.Generate(Scalar("group_secret_key"), [Scalar("share_polynomial_coefficients[1]")], 3);
        Assert.Equal(V["group_public_key"], Hex(Secp256k1.SerializeElement(group.PublicKey)));
        for (var i = 1; i <= 3; i++)
        {
            Assert.Equal(V[$"P{i} participant_share"], Hex(Secp256k1.SerializeScalar(shares[i - 1].Secret)));
            Assert.True(TrustedDealer.VerifyShare(shares[i - 1], group.VssCommitment));
            Assert.Equal(Secp256k1.BaseMultiply(shares[i - 1].Secret), group.VerificationShares[i]);
        }

        Assert.Equal(Scalar("group_secret_key"), TrustedDealer.Combine([shares[0], shares[2]]));
    }

    [Fact]
    public void RoundOne_NoncesAndCommitments_MatchFromTheGivenRandomness()
    {
        foreach (var i in new[] { 1, 3 })
        {
            var hiding = Frost.GenerateNonce(Bytes($"P{i} hiding_nonce_randomness"), Share(i).Secret);
            var binding = Frost.GenerateNonce(Bytes($"P{i} binding_nonce_randomness"), Share(i).Secret);
            Assert.Equal(V[$"P{i} hiding_nonce"], Hex(Secp256k1.SerializeScalar(hiding)));
            Assert.Equal(V[$"P{i} binding_nonce"], Hex(Secp256k1.SerializeScalar(binding)));
            var commitment = Frost.CommitmentOf(i, new SigningNonces(hiding, binding));
            Assert.Equal(V[$"P{i} hiding_nonce_commitment"], Hex(Secp256k1.SerializeElement(commitment.Hiding)));
            Assert.Equal(V[$"P{i} binding_nonce_commitment"], Hex(Secp256k1.SerializeElement(commitment.Binding)));
        }
    }

    [Fact]
    public void RoundTwo_BindingFactorsSharesAndSignature_Match()
    {
        var groupKey = Secp256k1.DeserializeElement(Bytes("group_public_key"));
        var message = Bytes("message");
        var nonces = new Dictionary<int, SigningNonces>
        {
            [1] = new(Scalar("P1 hiding_nonce"), Scalar("P1 binding_nonce")),
            [3] = new(Scalar("P3 hiding_nonce"), Scalar("P3 binding_nonce")),
        };
        var commitments = new[] { 1, 3 }.Select(i => Frost.CommitmentOf(i, nonces[i])).ToList();
        var factors = Frost.ComputeBindingFactors(groupKey, commitments, message);
        Assert.Equal(V["P1 binding_factor"], Hex(Secp256k1.SerializeScalar(factors[1])));
        Assert.Equal(V["P3 binding_factor"], Hex(Secp256k1.SerializeScalar(factors[3])));

        var shares = new Dictionary<int, BigInteger>();
        foreach (var i in new[] { 1, 3 })
        {
            shares[i] = Frost.Sign(i, Share(i).Secret, groupKey, nonces[i], message, commitments);
            Assert.Equal(V[$"P{i} sig_share"], Hex(Secp256k1.SerializeScalar(shares[i])));
            Assert.True(Frost.VerifyShare(i, Secp256k1.BaseMultiply(Share(i).Secret), shares[i], commitments, groupKey, message));
        }

        var signature = Frost.Aggregate(commitments, message, groupKey, shares.Values);
        Assert.Equal(V["sig"], Hex(signature.Encode()));
        Assert.True(Frost.Verify(message, signature, groupKey));
        Assert.Equal(signature, FrostSignature.Decode(signature.Encode()));
    }

    [Fact]
    public void ParticipantList_IsOneAndThree()
        => Assert.Equal([1, 3], V["participant_list"].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)));
}
