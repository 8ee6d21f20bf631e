using System.Numerics;

namespace Sequencer.Ethereum;

/// <summary>
/// Sends EIP-1559 transactions from one key: the nonce from the node (pending), gas from eth_estimateGas with a
/// margin, fees from the latest base fee and the node's priority fee, then polls for the receipt. A poster with fee
/// bumps and reorg handling builds on <see cref="SignAsync"/> and <see cref="WaitForReceiptAsync"/>.
/// </summary>
/// <param name="rpc">The endpoint.</param>
/// <param name="key">The funded key that signs.</param>
/// <param name="chainId">The L1's chain id.</param>
public sealed class EthSender(EthRpcClient rpc, EthKey key, ulong chainId)
{
    /// <summary>The sender's address.</summary>
    public Address Address => key.Address;

    /// <summary>Builds and signs a transaction to <paramref name="to"/> (null: a contract creation) at the current nonce and fees.</summary>
    /// <exception cref="EthRpcException">Gas estimation reverts: the call would fail (the revert data says why).</exception>
    public async Task<SignedTransaction> SignAsync(Address? to, byte[] data, BigInteger? value = null, ulong? gasLimit = null, CancellationToken token = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        var nonce = await rpc.GetTransactionCountAsync(key.Address, "pending", token).ConfigureAwait(false);
        var gas = gasLimit ?? await rpc.EstimateGasAsync(new EthCall(to, data, key.Address, value), token).ConfigureAwait(false) * 6 / 5 + 5_000;
        var (priority, maxFee) = await FeesAsync(token).ConfigureAwait(false);
        return new EthTransaction
        {
            Type = TransactionType.DynamicFee, ChainId = chainId, Nonce = nonce, To = to, Data = data, Value = value ?? BigInteger.Zero,
            GasLimit = gas, MaxPriorityFeePerGas = priority, MaxFeePerGas = maxFee,
        }.Sign(key);
    }

    /// <summary>The fees to offer now: the node's priority fee, and twice the latest base fee on top.</summary>
    public async Task<(BigInteger Priority, BigInteger MaxFee)> FeesAsync(CancellationToken token = default)
    {
        var latest = await rpc.GetBlockAsync("latest", token).ConfigureAwait(false) ?? throw new EthRpcException("the node has no latest block");
        var priority = await rpc.MaxPriorityFeePerGasAsync(token).ConfigureAwait(false);
        var baseFee = latest.BaseFeePerGas ?? await rpc.GasPriceAsync(token).ConfigureAwait(false);
        return (priority, baseFee * 2 + priority);
    }

    /// <summary>Signs, sends and waits for the receipt (at most <paramref name="timeout"/>).</summary>
    public async Task<EthReceipt> SendAsync(Address? to, byte[] data, TimeSpan timeout, BigInteger? value = null, ulong? gasLimit = null, CancellationToken token = default)
    {
        var signed = await SignAsync(to, data, value, gasLimit, token).ConfigureAwait(false);
        await rpc.SendRawTransactionAsync(signed.Raw, token).ConfigureAwait(false);
        return await WaitForReceiptAsync(signed.Hash, timeout, token).ConfigureAwait(false);
    }

    /// <summary>Polls for a receipt until <paramref name="timeout"/>.</summary>
    /// <exception cref="TimeoutException">No receipt in time.</exception>
    public async Task<EthReceipt> WaitForReceiptAsync(byte[] hash, TimeSpan timeout, CancellationToken token = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            if (await rpc.GetTransactionReceiptAsync(hash, token).ConfigureAwait(false) is { } receipt)
                return receipt;
            if (DateTime.UtcNow >= deadline)
                throw new TimeoutException($"no receipt for {EthHex.Bytes(hash)} within {timeout.TotalSeconds} s");
            await Task.Delay(delay, token).ConfigureAwait(false);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 500));
        }
    }
}
