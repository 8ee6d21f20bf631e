using Sequencer.Checker;

namespace Sequencer.Chaos.Faults;

/// <summary>The nodes one fault hits, chosen by <see cref="FaultTargets.Choose"/>.</summary>
/// <param name="Nodes">
/// The nodes it acts on, in the fault's own order: the killed, paused, skewed or damaged nodes; for a partition the
/// first group; for <see cref="FaultKind.MajoritiesRing"/> the ring; for <see cref="FaultKind.Bridge"/> left half,
/// bridge, right half; for <see cref="FaultKind.OneWayLink"/> [from, to]; for <see cref="FaultKind.KillLeaderAndAcker"/>
/// [leader, acker, bystander].
/// </param>
/// <param name="Groups">For partitions and bridges, the groups that are cut apart; otherwise empty.</param>
/// <param name="Description">How the report names the target (<see cref="FaultRecord.Target"/>), e.g. "n2" or "n1,n3 | n2".</param>
public sealed record FaultTarget(IReadOnlyList<int> Nodes, IReadOnlyList<IReadOnlyList<int>> Groups, string Description)
{
    /// <summary>The single node of a one-node fault.</summary>
    public int Node => Nodes[0];
}

/// <summary>Which nodes a scheduled fault hits.</summary>
public static class FaultTargets
{
    /// <summary>
    /// The target of <paramref name="fault"/>: a pure function of the fault (its kind and its
    /// <see cref="ScheduledFault.Pick"/>, which the schedule draws from the seed at the fault's index), the set of
    /// <paramref name="members"/> and the <paramref name="leader"/> at injection time. Which node leads depends on the run,
    /// so a replayed run can hit another node when another node leads; given the same members and leader, the choice is
    /// the same in every process.
    /// </summary>
    /// <param name="fault">The scheduled fault.</param>
    /// <param name="members">The member ids (any order; the choice depends only on the set).</param>
    /// <param name="leader">The leader at injection time, or null when none is known (then a leader fault picks any member).</param>
    /// <exception cref="ArgumentException">Fewer than two members, or a leader that is not a member.</exception>
    public static FaultTarget Choose(ScheduledFault fault, IReadOnlyCollection<int> members, int? leader)
    {
        ArgumentNullException.ThrowIfNull(fault);
        ArgumentNullException.ThrowIfNull(members);
        List<int> all = [.. members.Distinct().Order()];
        if (all.Count < 2)
            throw new ArgumentException("a fault needs at least two members", nameof(members));
        if (leader is { } known && !all.Contains(known))
            throw new ArgumentException($"the leader n{known} is not a member", nameof(leader));

        var count = all.Count;
        var theLeader = leader ?? Pick(all);
        List<int> followers = [.. all.Where(id => id != theLeader)];

        int Pick(IReadOnlyList<int> candidates) => candidates[(int)((uint)fault.Pick % (uint)candidates.Count)];
        List<int> Shuffled() => [.. all.OrderBy(id => OrderKey(fault.Pick, id)).ThenBy(id => id)];
        List<int> Subset(int size) => [.. Shuffled().Take(size).Order()];
        FaultTarget One(int node, string? description = null) => new([node], [], description ?? $"n{node}");
        FaultTarget Set(IReadOnlyList<int> nodes) => new(nodes, [], Names(nodes));
        FaultTarget Split(IReadOnlyList<int> first, string? description = null)
        {
            List<int> rest = [.. all.Except(first)];
            return new(first, [first, rest], description ?? $"{Names(first)} | {Names(rest)}");
        }

        switch (fault.Kind)
        {
            case FaultKind.KillLeader:
            case FaultKind.PauseLeader:
                return One(theLeader);
            case FaultKind.KillFollower:
            case FaultKind.PauseFollower:
            case FaultKind.DiskTruncateWalTail:
            case FaultKind.DiskFlipBits:
            case FaultKind.DiskDeleteChunk:
            case FaultKind.DiskExhaustFileHandles:
            case FaultKind.DiskFull:
                return One(Pick(followers));
            case FaultKind.KillMinority:
                return Set(Subset((count - 1) / 2));
            case FaultKind.KillMajority:
                return Set(Subset(count / 2 + 1));
            case FaultKind.KillAll:
                return Set(all);
            case FaultKind.IsolateNode:
                return Split([Pick(followers)]);
            case FaultKind.IsolateLeader:
                return Split([theLeader]);
            case FaultKind.SplitMajorityMinority:
                return Split(Subset((count - 1) / 2));
            case FaultKind.MajoritiesRing:
            {
                var ring = Shuffled();
                return new(ring, [], "ring " + string.Join("-", ring.Select(id => $"n{id}")));
            }

            case FaultKind.Bridge:
            {
                var order = Shuffled();
                var half = count / 2;
                List<int> left = [.. order.Take(half)];
                var bridge = order[half];
                List<int> right = [.. order.Skip(half + 1)];
                return new(order, [left, [bridge], right], $"{Names(left)} | n{bridge} | {Names(right)}");
            }

            case FaultKind.OneWayLink:
            {
                var to = Pick(followers);
                return new([theLeader, to], [], $"n{theLeader}->n{to}");
            }

            case FaultKind.Delay:
            case FaultKind.Loss:
            case FaultKind.Reset:
            case FaultKind.ClogThenFlush:
            {
                var target = Pick(all);
                return One(target, $"into n{target}");
            }

            case FaultKind.ClockSkew:
            case FaultKind.ClockStrobe:
            case FaultKind.ByzantineSigner:
            case FaultKind.RotateKey:
                return One(Pick(all));
            case FaultKind.L1Reorg:
            case FaultKind.L1Outage:
            case FaultKind.L1GasSpike:
                return new([], [], "the L1");
            case FaultKind.KillLeaderAndAcker:
            {
                // The bystander is cut off so that the acker is the only follower whose acknowledgements commit.
                var bystander = Pick(followers);
                var acker = followers.First(id => id != bystander);
                return new([theLeader, acker, bystander], [], $"leader n{theLeader}, acker n{acker} (n{bystander} cut off)");
            }

            default:
                throw new NotSupportedException($"no target rule for {fault.Kind}");
        }
    }

    /// <summary>Names nodes the way the report does: "n1,n3".</summary>
    public static string Names(IEnumerable<int> ids) => string.Join(",", ids.Select(id => $"n{id}"));

    /// <summary>A node's place when a fault shuffles the members: SplitMix64 of the fault's pick and the node id (never HashCode).</summary>
    private static ulong OrderKey(int pick, int id) => SeedMixer.Mix(SeedMixer.FromRunSeed(pick), (ulong)SeedStream.FaultTarget, (ulong)(uint)id);
}
