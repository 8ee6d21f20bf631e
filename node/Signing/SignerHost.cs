using Microsoft.Extensions.Logging;
using Sequencer.Node.Configuration;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;
using Sequencer.Threshold;

namespace Sequencer.Node.Signing;

/// <summary>
/// Holds this node's signer, which starts either at boot (key files) or later, when a DKG has given the node its
/// share; owns the nonce store and disposes both.
/// </summary>
public sealed class SignerHost(NodeOptions options, AppliedState state, ILeaderChannel leader, NodeMetrics metrics, ILoggerFactory loggers, BackgroundLoops loops) : IAsyncDisposable
{
    private readonly Lock gate = new();
    private NonceStore? nonces;
    private SignerService? current;

    /// <summary>The signer, or null while this node holds no share.</summary>
    public SignerService? Current
    {
        get
        {
            lock (gate)
                return current;
        }
    }

    /// <summary>Starts signing with <paramref name="share"/> of key epoch <paramref name="epoch"/>; a second call does nothing.</summary>
    public void Start(KeyShare share, GroupKey group, ulong epoch)
    {
        lock (gate)
        {
            if (current is not null)
                return;
            nonces = new NonceStore(Path.Combine(options.DataDir, "signer"));
            current = new SignerService(share, group, epoch, state, leader, nonces, options.Limits, metrics,
                loggers.CreateLogger<SignerService>(), NodeOptions.ParseSignerFault(options.SignerFault) ?? SignerFault.None);
            current.Start(loops);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        SignerService? signer;
        lock (gate)
        {
            signer = current;
            current = null;
        }

        if (signer is not null)
            await signer.DisposeAsync().ConfigureAwait(false);
        nonces?.Dispose();
    }
}
