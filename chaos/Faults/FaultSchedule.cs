using System.Text.Json.Serialization;

namespace Sequencer.Chaos.Faults;

/// <summary>Every fault the harness injects, in Jepsen's and etcd's words (DESIGN section 6).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<FaultKind>))]
public enum FaultKind
{
    /// <summary>SIGKILL the leader; restart it on heal.</summary>
    KillLeader,

    /// <summary>SIGKILL one follower; restart it on heal.</summary>
    KillFollower,

    /// <summary>SIGKILL a minority; restart on heal.</summary>
    KillMinority,

    /// <summary>SIGKILL a majority (ordering stops); restart on heal.</summary>
    KillMajority,

    /// <summary>SIGKILL every node; restart on heal.</summary>
    KillAll,

    /// <summary>SIGSTOP the leader for longer than an election timeout; SIGCONT on heal.</summary>
    PauseLeader,

    /// <summary>SIGSTOP a follower; SIGCONT on heal.</summary>
    PauseFollower,

    /// <summary>Cut a follower off from every other node.</summary>
    IsolateNode,

    /// <summary>Cut the leader off from every other node (host mode).</summary>
    IsolateLeader,

    /// <summary>Split the cluster into a majority and a minority (host mode; with 3 nodes the minority is one follower).</summary>
    SplitMajorityMinority,

    /// <summary>Each node reaches only its two ring neighbours: every node sees a majority, no majority sees the same nodes (host mode, 5 nodes).</summary>
    MajoritiesRing,

    /// <summary>Two halves that reach each other only through one bridge node (host mode, 5 nodes).</summary>
    Bridge,

    /// <summary>Traffic from the leader into one follower is dropped, the other way not (host mode).</summary>
    OneWayLink,

    /// <summary>Delay with jitter on traffic into a node.</summary>
    Delay,

    /// <summary>A share of the traffic into a node is lost and retransmitted late.</summary>
    Loss,

    /// <summary>Every connection into a node is reset (TCP RST).</summary>
    Reset,

    /// <summary>Traffic into a node is held, then flushed on heal.</summary>
    ClogThenFlush,

    /// <summary>On a stopped follower: truncate the tail of its newest WAL chunk.</summary>
    DiskTruncateWalTail,

    /// <summary>On a stopped follower: flip bits in a WAL chunk.</summary>
    DiskFlipBits,

    /// <summary>On a stopped follower: delete a WAL chunk.</summary>
    DiskDeleteChunk,

    /// <summary>Restart a follower with too few file handles.</summary>
    DiskExhaustFileHandles,

    /// <summary>Restart a follower on a nearly full file system (root: a small tmpfs).</summary>
    DiskFull,

    /// <summary>Skew a node's clock by seconds to minutes, either way.</summary>
    ClockSkew,

    /// <summary>Make a node's clock jump back and forth every 100 ms (strobe).</summary>
    ClockStrobe,

    /// <summary>Right after an acknowledged submit, SIGKILL the leader and the follower that acknowledged the entry (probes follower durability).</summary>
    KillLeaderAndAcker,

    /// <summary>A node turns Byzantine signer: every signature share it sends is wrong (properly authenticated, so it is named).</summary>
    ByzantineSigner,

    /// <summary>
    /// An operator rotates the group key (POST /admin/keys/rotate on any node): a DKG for the next key epoch and the
    /// old key's hand-over run among whatever faults follow; INV-ROTATION and LIVE-ROTATE check the outcome.
    /// </summary>
    RotateKey,

    /// <summary>The L1 reorganizes its newest 1 to 3 blocks away (anvil_reorg): posts in them are dropped.</summary>
    L1Reorg,

    /// <summary>The L1 stops answering (its process paused); it resumes on heal.</summary>
    L1Outage,

    /// <summary>The L1's base fee jumps 50 to 150-fold: posts offered at the old fees stay unmined until bumped.</summary>
    L1GasSpike,
}

/// <summary>One scheduled fault: what, when (seconds from the start of the run) and for how long.</summary>
/// <param name="Sequence">Its position in the schedule.</param>
/// <param name="Kind">The fault.</param>
/// <param name="AtSeconds">When it is injected.</param>
/// <param name="ForSeconds">How long before it is healed.</param>
/// <param name="Pick">A random number that picks the concrete target among the candidates at injection time (see <see cref="FaultTargets.Choose"/>).</param>
/// <param name="Magnitude">A random number in [0, 1) that sizes the fault (delay, loss share, skew).</param>
public sealed record ScheduledFault(int Sequence, FaultKind Kind, double AtSeconds, double ForSeconds, int Pick, double Magnitude);

/// <summary>A named set of faults a run draws from.</summary>
/// <param name="Name">The scenario's name (the --scenario value).</param>
/// <param name="Kinds">The faults it draws from.</param>
/// <param name="Description">What it probes.</param>
/// <param name="Cover">When true, every kind is injected once (in a seeded order) before kinds repeat.</param>
public sealed record Scenario(string Name, IReadOnlyList<FaultKind> Kinds, string Description, bool Cover = false);

/// <summary>The scenarios and the seeded schedule.</summary>
public static class FaultSchedule
{
    /// <summary>Faults that need exact directed partitions (host mode).</summary>
    public static readonly IReadOnlySet<FaultKind> NeedHostMode = new HashSet<FaultKind>
    {
        FaultKind.IsolateLeader, FaultKind.SplitMajorityMinority, FaultKind.MajoritiesRing, FaultKind.Bridge, FaultKind.OneWayLink,
    };

    /// <summary>Faults that need five nodes.</summary>
    public static readonly IReadOnlySet<FaultKind> NeedFiveNodes = new HashSet<FaultKind> { FaultKind.MajoritiesRing, FaultKind.Bridge };

    /// <summary>Faults that need the run's L1 (signing on).</summary>
    public static readonly IReadOnlySet<FaultKind> NeedL1 = new HashSet<FaultKind> { FaultKind.L1Reorg, FaultKind.L1Outage, FaultKind.L1GasSpike };

    /// <summary>Faults that need root (a tmpfs mount).</summary>
    public static readonly IReadOnlySet<FaultKind> NeedRoot = new HashSet<FaultKind> { FaultKind.DiskFull };

    private static readonly FaultKind[] Process = [FaultKind.KillLeader, FaultKind.KillFollower, FaultKind.KillMinority, FaultKind.KillMajority, FaultKind.KillAll, FaultKind.PauseLeader, FaultKind.PauseFollower];
    private static readonly FaultKind[] Partition = [FaultKind.IsolateNode, FaultKind.IsolateLeader, FaultKind.SplitMajorityMinority, FaultKind.MajoritiesRing, FaultKind.Bridge, FaultKind.OneWayLink];
    private static readonly FaultKind[] Link = [FaultKind.Delay, FaultKind.Loss, FaultKind.Reset, FaultKind.ClogThenFlush];
    private static readonly FaultKind[] L1 = [FaultKind.L1Reorg, FaultKind.L1Outage, FaultKind.L1GasSpike];
    private static readonly FaultKind[] Disk = [FaultKind.DiskTruncateWalTail, FaultKind.DiskFlipBits, FaultKind.DiskDeleteChunk, FaultKind.DiskExhaustFileHandles, FaultKind.DiskFull];

    /// <summary>Every named scenario.</summary>
    public static IReadOnlyList<Scenario> Scenarios { get; } =
    [
        new("mixed", [.. Process, .. Partition, .. Link, .. Disk, FaultKind.ClockSkew, FaultKind.ClockStrobe, FaultKind.ByzantineSigner, FaultKind.RotateKey, .. L1], "every fault kind the network mode supports, drawn at random"),
        new("cover", [.. Process, .. Partition, .. Link, .. Disk, FaultKind.ClockSkew, FaultKind.ClockStrobe, FaultKind.KillLeaderAndAcker, FaultKind.ByzantineSigner, FaultKind.RotateKey, .. L1], "every fault kind once, in a seeded order, then at random", Cover: true),
        new("l1", [FaultKind.L1Reorg, FaultKind.L1Outage, FaultKind.L1GasSpike, FaultKind.KillLeader], "L1 reorgs, an L1 outage and a gas spike, and a leader kill mid-post: INV-L1PREFIX and LIVE-POST", Cover: true),
        new("signing", [FaultKind.ByzantineSigner, FaultKind.RotateKey, FaultKind.KillLeader, FaultKind.KillFollower, FaultKind.PauseFollower, FaultKind.IsolateNode, FaultKind.Delay], "a Byzantine signer and key rotations among crashes, pauses, isolation and delay: INV-ONESIG, INV-SIGVALID, INV-NONCE, INV-ROTATION and signing catch-up"),
        new("process", Process, "kills and pauses of the leader, followers, minorities, majorities and all"),
        new("partition", Partition, "network partitions"),
        new("link", Link, "delay with jitter, loss, reset, clog and flush"),
        new("disk", Disk, "disk faults on a stopped follower: the node recovers or fails fast, and never serves corrupt data"),
        new("clock", [FaultKind.ClockSkew, FaultKind.ClockStrobe], "clock skew and strobe of the node TimeProvider"),
        new("kill-leader-and-acker", [FaultKind.KillLeaderAndAcker], "right after an ack, kill the leader and the follower that acknowledged: probes the durability question of DESIGN section 9", Cover: true),
    ];

    /// <summary>
    /// The scenario named <paramref name="name"/>, or an ad-hoc one from a comma-separated list of fault kinds
    /// (each injected once in a seeded order, then at random).
    /// </summary>
    /// <exception cref="ArgumentException">No such scenario or fault kind.</exception>
    public static Scenario Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (Scenarios.FirstOrDefault(s => s.Name == name) is { } known)
            return known;
        var kinds = new List<FaultKind>();
        foreach (var part in name.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Enum.TryParse<FaultKind>(part, ignoreCase: true, out var kind))
                throw new ArgumentException($"unknown scenario or fault kind \"{part}\"; scenarios: {string.Join(", ", Scenarios.Select(s => s.Name))}; fault kinds: {string.Join(", ", Enum.GetNames<FaultKind>())}");
            kinds.Add(kind);
        }

        return new Scenario(name, kinds, "the listed fault kinds", Cover: true);
    }

    /// <summary>The faults of <paramref name="scenario"/> that this run can inject, and why the others cannot.</summary>
    public static (IReadOnlyList<FaultKind> Usable, IReadOnlyList<string> Skipped) Usable(Scenario scenario, bool hostMode, int nodes, bool root, bool l1 = true)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        var usable = new List<FaultKind>();
        var skipped = new List<string>();
        foreach (var kind in scenario.Kinds)
        {
            if (NeedHostMode.Contains(kind) && !hostMode)
                skipped.Add($"{kind}: needs exact directed partitions (host mode)");
            else if (NeedFiveNodes.Contains(kind) && nodes < 5)
                skipped.Add($"{kind}: needs 5 nodes");
            else if (NeedRoot.Contains(kind) && !root)
                skipped.Add($"{kind}: needs root (a small tmpfs)");
            else if (NeedL1.Contains(kind) && !l1)
                skipped.Add($"{kind}: needs the run's L1 (signing on, --l1)");
            else
                usable.Add(kind);
        }

        return (usable, skipped);
    }

    /// <summary>
    /// The schedule of a run: a pure function of the seed, the usable faults and the duration, so one seed always gives
    /// the same schedule, in every process. Faults do not overlap: each is healed, and a quiet gap follows, before the
    /// next one.
    /// </summary>
    /// <remarks>
    /// <para>What a seed replays, and what it cannot:</para>
    /// <list type="bullet">
    /// <item>The kinds, times, lengths, magnitudes and picks of the faults: drawn here from a <see cref="Random"/> seeded
    /// with the seed itself (a seeded <see cref="Random"/> gives the same sequence in every process).</item>
    /// <item>The target of each fault: <see cref="FaultTargets.Choose"/>, a pure function of the fault (so of the seed and
    /// the fault's index), the set of members and the leader at injection time. The leader is the run's, not the seed's:
    /// if another node leads when a fault is injected in a replay, a leader fault hits that node and a follower fault
    /// picks among the other followers; with the same members and leader, the choice is the same.</item>
    /// <item>The workload's txs (<see cref="Sequencer.Checker.ClientTxs"/>) and the proxies' seeds
    /// (<see cref="Network.FaultProxy.SeedFor"/>): derived with <see cref="Sequencer.Checker.SeedMixer"/> (SplitMix64).
    /// Never derive from the seed with <see cref="HashCode"/>: .NET seeds it randomly per process.</item>
    /// <item>Not replayed: timing (when nodes answer, which chunk a proxy delays), and so who leads when.</item>
    /// </list>
    /// <para><c>sequencer-chaos --print-plan</c> prints all of the replayed part for a fixed leader.</para>
    /// </remarks>
    public static IReadOnlyList<ScheduledFault> Build(int seed, Scenario scenario, IReadOnlyList<FaultKind> usable, double durationSeconds)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        ArgumentNullException.ThrowIfNull(usable);
        var random = new Random(seed);
        var faults = new List<ScheduledFault>();
        if (usable.Count == 0)
            return faults;

        var cover = scenario.Cover ? usable.OrderBy(_ => random.Next()).ToList() : [];
        var time = 3.0;
        const double tail = 4.0;
        while (true)
        {
            var kind = faults.Count < cover.Count ? cover[faults.Count] : usable[random.Next(usable.Count)];
            var length = kind switch
            {
                FaultKind.PauseLeader or FaultKind.PauseFollower => 1.5 + random.NextDouble() * 1.5,
                FaultKind.Reset => 0.5,
                FaultKind.KillLeaderAndAcker => 1.0 + random.NextDouble(),
                FaultKind.DiskFull or FaultKind.DiskExhaustFileHandles => 4.0 + random.NextDouble() * 2.0,
                _ => 2.0 + random.NextDouble() * 3.0,
            };
            if (time + length + tail > durationSeconds)
                break;
            faults.Add(new ScheduledFault(faults.Count + 1, kind, Math.Round(time, 2), Math.Round(length, 2), random.Next(), random.NextDouble()));
            time += length + 2.0 + random.NextDouble() * 2.0;
        }

        return faults;
    }
}
