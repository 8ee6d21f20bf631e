using System.Numerics;
using Sequencer.Core.Validation;

namespace Sequencer.Ethereum;

/// <summary>
/// The <c>ethereum</c> validation mode's rules (issue 13): a tx is a signed Ethereum transaction (legacy with EIP-155,
/// EIP-2930, EIP-1559) for this chain, with a low-s signature (EIP-2) that recovers its sender. Pure and deterministic:
/// every node gets the same answer for the same bytes. Error codes: <c>malformed_tx</c>, <c>unprotected_tx</c> (a
/// legacy tx without EIP-155 replay protection), <c>wrong_chain</c>, <c>high_s</c>, <c>bad_signature</c>,
/// <c>nonce_max</c>.
/// </summary>
/// <param name="chainId">The chain id the txs must name (the cluster's chain id).</param>
public sealed class EthereumTxRules(ulong chainId) : ITxRules
{
    /// <summary>The chain id txs must carry.</summary>
    public ulong ChainId { get; } = chainId;

    /// <inheritdoc/>
    public TxAccount? Identify(ReadOnlySpan<byte> tx, out TxRejection? rejection)
    {
        var decoded = Decode(tx, out rejection);
        return decoded is null ? null : new TxAccount(SenderId.FromBytes(decoded.Sender.Bytes), decoded.Transaction.Nonce);
    }

    /// <summary>Decodes and checks <paramref name="tx"/>: the signed transaction, or null and why it is refused.</summary>
    public SignedTransaction? Decode(ReadOnlySpan<byte> tx, out TxRejection? rejection)
    {
        rejection = null;
        if (tx.IsEmpty)
        {
            rejection = new TxRejection("malformed_tx", "an empty tx");
            return null;
        }

        // The chain id and the signature's s come first: cheap, and a tx for another chain or with a malleable
        // signature is refused before its sender is recovered.
        SignedTransaction decoded;
        try
        {
            decoded = SignedTransaction.Decode(tx, recover: false);
        }
        catch (FormatException e)
        {
            rejection = new TxRejection("malformed_tx", "not a signed Ethereum transaction: " + e.Message);
            return null;
        }
        catch (ArgumentException e)
        {
            rejection = new TxRejection("malformed_tx", "not a signed Ethereum transaction: " + e.Message);
            return null;
        }

        if (decoded.Transaction.ChainId is not { } chain)
        {
            rejection = new TxRejection("unprotected_tx", "a legacy tx without EIP-155 replay protection (v 27/28) is refused");
            return null;
        }

        if (chain != new BigInteger(ChainId))
        {
            rejection = new TxRejection("wrong_chain", $"the tx is for chain {chain}, this chain is {ChainId}");
            return null;
        }

        if (!EthKey.IsLowS(decoded.Signature.S))
        {
            rejection = new TxRejection("high_s", "the signature's s is above n/2 (EIP-2): a malleated signature");
            return null;
        }

        if (decoded.Transaction.Nonce == ulong.MaxValue)
        {
            rejection = new TxRejection("nonce_max", "the nonce 2^64-1 is refused (EIP-2681)");
            return null;
        }

        var sender = EthKey.RecoverAddress(decoded.Transaction.SigningHash(), decoded.Signature);
        if (sender is null)
        {
            rejection = new TxRejection("bad_signature", "the signature recovers no key (an unsigned tx, or r or s out of range)");
            return null;
        }

        return decoded with { Sender = sender };
    }
}
