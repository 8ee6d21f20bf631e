using System.Globalization;
using Sequencer.Client;

namespace Sequencer.Bench;

/// <summary>One node's Raft term and leader as it reported them, or null fields when it did not answer.</summary>
public sealed record NodeTerm(int NodeId, ulong? Term, int? Leader);

/// <summary>Every member's term and leader at one moment.</summary>
public sealed record TermSnapshot(IReadOnlyList<NodeTerm> Nodes)
{
    /// <summary>The highest term any node reported, or null when none answered.</summary>
    public ulong? Term => Nodes.Max(n => n.Term);

    /// <summary>The leader every answering node agrees on, or null.</summary>
    public int? Leader => Nodes.Select(n => n.Leader).Distinct().ToList() is [{ } only] && Nodes.All(n => n.Term is not null) ? only : null;

    /// <summary>The term for a table cell: the number, or "?" when no node answered.</summary>
    public string TermText => Term?.ToString(CultureInfo.InvariantCulture) ?? "?";

    /// <summary>The leader for a table cell: the id, or "?" when the nodes do not agree or did not answer.</summary>
    public string LeaderText => Leader?.ToString(CultureInfo.InvariantCulture) ?? "?";
}

/// <summary>
/// Reads the Raft term and leader of every member before and after a scenario. Load must show as 429s and latency,
/// never as an election: a scenario during which any node's term moved (or a node did not report one, which
/// hides whether it moved) has failed.
/// </summary>
public sealed class TermProbe : IDisposable
{
    private const int Attempts = 3;
    private readonly List<(int Id, SequencerClient Client)> members;

    private TermProbe(List<(int Id, SequencerClient Client)> members) => this.members = members;

    /// <summary>Finds the members through <paramref name="target"/>'s <c>GET /v1/cluster</c>.</summary>
    public static async Task<TermProbe> CreateAsync(SequencerClient target, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(target);
        var view = await target.GetClusterAsync(token);
        return new TermProbe([.. view.Members.OrderBy(m => m.Id).Select(m => (m.Id, new SequencerClient(new Uri(m.Api), TimeSpan.FromSeconds(5), 4)))]);
    }

    /// <summary>Asks every member at once; a node that does not answer within three tries is reported without a term.</summary>
    public async Task<TermSnapshot> ReadAsync(CancellationToken token)
        => new([.. await Task.WhenAll(members.Select(m => ReadAsync(m.Id, m.Client, token)))]);

    private static async Task<NodeTerm> ReadAsync(int id, SequencerClient client, CancellationToken token)
    {
        for (var attempt = 1; attempt <= Attempts; attempt++)
        {
            try
            {
                var view = await client.GetClusterAsync(token);
                return new NodeTerm(id, ulong.Parse(view.Term, CultureInfo.InvariantCulture), view.Leader);
            }
            catch (SequencerApiException) when (attempt < Attempts)
            {
                await Task.Delay(200 * attempt, token);
            }
            catch (SequencerApiException)
            {
                break;
            }
        }

        return new NodeTerm(id, null, null);
    }

    /// <summary>
    /// Why the scenario between <paramref name="before"/> and <paramref name="after"/> failed the no-election check, or
    /// null when every node reported the same term both times.
    /// </summary>
    public static string? Failure(TermSnapshot before, TermSnapshot after)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(after);
        var problems = new List<string>();
        foreach (var node in before.Nodes)
        {
            var later = after.Nodes.First(n => n.NodeId == node.NodeId);
            if (node.Term is null || later.Term is null)
                problems.Add($"node {node.NodeId} did not report its term {(node.Term is null ? "before" : "after")} the scenario");
            else if (node.Term != later.Term)
                problems.Add($"node {node.NodeId} moved from term {node.Term} to {later.Term}");
        }

        return problems.Count == 0 ? null : string.Join("; ", problems);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var (_, client) in members)
            client.Dispose();
    }
}
