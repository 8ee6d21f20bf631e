namespace Sequencer.Checker;

/// <summary>
/// The txs one workload client submits, in order: a pure function of the run's seed, the client's index and the tx
/// size. Retries resend a tx and draw nothing, so the n-th fresh tx of a client is the same in every replay of a seed,
/// whatever the nodes answered.
/// </summary>
public sealed class ClientTxs
{
    private readonly Random random;
    private readonly int txBytes;

    /// <summary>The tx source of client <paramref name="client"/> of a run with seed <paramref name="seed"/>.</summary>
    public ClientTxs(int seed, int client, int txBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(client);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(txBytes);
        random = SeedMixer.CreateRandom(seed, SeedStream.Workload, (ulong)client);
        this.txBytes = txBytes;
    }

    /// <summary>The client's next fresh tx.</summary>
    public byte[] Next()
    {
        var tx = new byte[txBytes];
        random.NextBytes(tx);
        return tx;
    }
}
