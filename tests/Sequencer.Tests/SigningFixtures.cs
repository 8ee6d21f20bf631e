using Sequencer.Core.Encoding;
using Sequencer.Signing;
using Sequencer.Threshold;

namespace Sequencer.Tests;

/// <summary>Log entries the signing tests share: a dealer's key epoch 1 of members 1..3, and a signer's signed publication.</summary>
internal static class SigningFixtures
{
    /// <summary>Key epoch 1: <paramref name="group"/>, 2 of members 1, 2 and 3.</summary>
    public static KeyEpochCommand EpochOne(GroupKey group) => new()
    {
        Epoch = 1,
        Threshold = 2,
        GroupKey = Secp256k1.SerializeElement(group.PublicKey),
        Members = [1, 2, 3],
        VerificationShares = [.. new[] { 1, 2, 3 }.Select(id => Secp256k1.SerializeElement(group.VerificationShares[id]))],
    };

    /// <summary>The NonceCommitments entry of <paramref name="share"/>'s signer for key epoch 1, from <paramref name="first"/>, with its proof.</summary>
    public static NonceCommitmentsCommand Publication(KeyShare share, ulong first, IReadOnlyList<byte[]> commitments)
    {
        var unsigned = new NonceCommitmentsCommand { SignerId = share.Identifier, KeyEpoch = 1, FirstSequence = first, Commitments = commitments };
        return new NonceCommitmentsCommand
        {
            SignerId = share.Identifier,
            KeyEpoch = 1,
            FirstSequence = first,
            Commitments = commitments,
            Proof = SignerProof.Sign(SigningLedger.NonceCommitmentsProofDomain, unsigned.ProofPayload(), share.Secret),
        };
    }
}
