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

    /// <summary>
    /// Starts signing with <paramref name="share"/> of key epoch <paramref name="epoch"/>. A later epoch (a rotation)
    /// replaces the signer of an earlier one, which stops; a call for the same or an earlier epoch does nothing.
    /// </summary>
    public void Start(KeyShare share, GroupKey group, ulong epoch)
    {
        SignerService? replaced;
        lock (gate)
        {
            if (current is not null && current.Epoch >= epoch)
                return;
            replaced = current;
            nonces ??= new NonceStore(Path.Combine(options.DataDir, "signer"));
            var fault = replaced?.Fault ?? NodeOptions.ParseSignerFault(options.SignerFault) ?? SignerFault.None;
            current = new SignerService(share, group, epoch, state, leader, nonces, options.Limits, metrics, loggers.CreateLogger<SignerService>(), fault);
            current.Start(loops);
        }

        // The old epoch's signer answers nothing any more (its epoch is not the log's): it stops in the background.
        if (replaced is not null)
            _ = replaced.DisposeAsync().AsTask();
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
