using Sequencer.Client;

namespace Sequencer.Checker;

/// <summary>Reads every node's applied log over the API.</summary>
public static class ChainReader
{
    /// <summary>Reads the chains of the given nodes; a node that does not answer contributes an empty chain and is named in <paramref name="unreachable"/>.</summary>
    public static async Task<IReadOnlyList<NodeChain>> ReadAsync(IReadOnlyList<(int NodeId, SequencerClient Client)> nodes, List<int> unreachable, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentNullException.ThrowIfNull(unreachable);
        var chains = new List<NodeChain>();
        foreach (var (nodeId, client) in nodes)
        {
            try
            {
                chains.Add(new NodeChain(nodeId, await client.GetAllBatchesAsync(token).ConfigureAwait(false)));
            }
            catch (SequencerApiException)
            {
                unreachable.Add(nodeId);
            }
        }

        return chains;
    }
}
