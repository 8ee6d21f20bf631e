using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Sequencer.ChaosTests;

/// <summary>
/// A seed must replay the same run in another process (DESIGN section 9: <c>HashCode.Combine</c> is seeded per process).
/// The chaos executable prints a seed's plan without starting a node (<c>--print-plan</c>: the schedule, each fault's
/// target for a fixed leader, the proxy seeds and every client's first txs); two separate processes must print the
/// same plan, and another seed another plan.
/// </summary>
public sealed class SeedReplayTests
{
    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData(4242, "cover", 5, "host", 300, 2)]
    [InlineData(4242, "mixed", 3, "proxy", 120, 3)]
    [InlineData(-7, "signing", 3, "proxy", 90, 1)]
    public async Task Plan_SameSeedInTwoProcesses_IsIdentical(int seed, string scenario, int nodes, string mode, int durationSeconds, int leader)
    {
        string[] arguments = PlanArguments(seed, scenario, nodes, mode, durationSeconds, leader);
        var first = await PrintPlanAsync(arguments);
        var second = await PrintPlanAsync(arguments);

        using var a = JsonDocument.Parse(first);
        using var b = JsonDocument.Parse(second);
        var faultsA = a.RootElement.GetProperty("faults").EnumerateArray().ToList();
        var faultsB = b.RootElement.GetProperty("faults").EnumerateArray().ToList();
        Assert.NotEmpty(faultsA);
        Assert.Equal(faultsA.Count, faultsB.Count);
        for (var i = 0; i < faultsA.Count; i++)
        {
            foreach (var field in new[] { "sequence", "kind", "atSeconds", "forSeconds", "pick", "magnitude", "target", "nodes", "groups" })
            {
                var left = faultsA[i].GetProperty(field).GetRawText();
                var right = faultsB[i].GetProperty(field).GetRawText();
                Assert.True(left == right, $"fault #{i + 1} ({faultsA[i].GetProperty("kind")}): {field} is {left} in one process and {right} in the other");
            }
        }

        var clientsA = a.RootElement.GetProperty("clients").EnumerateArray().ToList();
        var clientsB = b.RootElement.GetProperty("clients").EnumerateArray().ToList();
        Assert.Equal(8, clientsA.Count);
        Assert.Equal(clientsA.Count, clientsB.Count);
        for (var i = 0; i < clientsA.Count; i++)
        {
            var left = Txs(clientsA[i]);
            Assert.Equal(3, left.Count);
            Assert.True(left.SequenceEqual(Txs(clientsB[i])), $"client {i}: its first txs differ between the processes");
        }

        Assert.Equal(a.RootElement.GetProperty("proxies").GetRawText(), b.RootElement.GetProperty("proxies").GetRawText());
        Assert.Equal(first, second);

        if (scenario == "cover")
        {
            // The cover schedule injects every kind once: the set, ring and bridge choices are all compared above.
            var kinds = faultsA.Select(f => f.GetProperty("kind").GetString()).ToHashSet();
            Assert.Superset(new HashSet<string?> { "KillMinority", "KillMajority", "SplitMajorityMinority", "MajoritiesRing", "Bridge", "OneWayLink", "KillLeaderAndAcker" }, kinds);
        }
    }

    [Fact]
    public async Task Plan_AnotherSeed_GivesAnotherScheduleTargetsAndTxs()
    {
        using var a = JsonDocument.Parse(await PrintPlanAsync(PlanArguments(4242, "mixed", 5, "host", 300, 1)));
        using var b = JsonDocument.Parse(await PrintPlanAsync(PlanArguments(4243, "mixed", 5, "host", 300, 1)));

        static string Schedule(JsonDocument plan) => string.Join(";", plan.RootElement.GetProperty("faults").EnumerateArray()
            .Select(f => $"{f.GetProperty("kind")}@{f.GetProperty("atSeconds")}->{f.GetProperty("target")}"));
        Assert.NotEqual(Schedule(a), Schedule(b));

        var clientsA = a.RootElement.GetProperty("clients").EnumerateArray().Select(Txs).ToList();
        var clientsB = b.RootElement.GetProperty("clients").EnumerateArray().Select(Txs).ToList();
        Assert.All(clientsA.Zip(clientsB), pair => Assert.NotEqual(pair.First[0], pair.Second[0]));
        Assert.NotEqual(a.RootElement.GetProperty("proxies").GetRawText(), b.RootElement.GetProperty("proxies").GetRawText());
    }

    [Fact]
    public async Task Plan_ClientsOfOneRun_GetDistinctTxs()
    {
        using var plan = JsonDocument.Parse(await PrintPlanAsync(PlanArguments(11, "process", 3, "proxy", 60, 1)));
        var txs = plan.RootElement.GetProperty("clients").EnumerateArray().SelectMany(Txs).ToList();
        Assert.Equal(8 * 3, txs.Count);
        Assert.Equal(txs.Count, txs.Distinct().Count());
    }

    private static string[] PlanArguments(int seed, string scenario, int nodes, string mode, int durationSeconds, int leader) =>
    [
        "--print-plan", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--scenario", scenario,
        "--nodes", nodes.ToString(CultureInfo.InvariantCulture), "--mode", mode,
        "--duration", durationSeconds.ToString(CultureInfo.InvariantCulture), "--plan-leader", leader.ToString(CultureInfo.InvariantCulture),
        "--clients", "8", "--plan-txs", "3",
    ];

    private static List<string> Txs(JsonElement client) => [.. client.GetProperty("txs").EnumerateArray().Select(t => t.GetString()!)];

    /// <summary>Runs the chaos executable in a process of its own and returns what it printed.</summary>
    private static async Task<string> PrintPlanAsync(string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(ChaosDll());
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start dotnet");
        var output = process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var error = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(ProcessTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"sequencer-chaos {string.Join(' ', arguments)} did not exit within {ProcessTimeout.TotalSeconds} s");
        }

        var printed = await output;
        Assert.True(process.ExitCode == 0, $"sequencer-chaos {string.Join(' ', arguments)} exited {process.ExitCode}: {await error}");
        return printed;
    }

    /// <summary>
    /// The built chaos executable: <c>SEQUENCER_CHAOS</c> if set, else the newer of the Release and Debug
    /// <c>sequencer-chaos.dll</c> under <c>chaos/bin</c> of the repository (found by walking up to Cluster.sln).
    /// </summary>
    private static string ChaosDll()
    {
        if (Environment.GetEnvironmentVariable("SEQUENCER_CHAOS") is { Length: > 0 } configured)
            return configured;
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Cluster.sln")))
            directory = directory.Parent;
        if (directory is null)
            throw new FileNotFoundException($"cannot find Cluster.sln above {AppContext.BaseDirectory}; set SEQUENCER_CHAOS");
        var bin = Path.Combine(directory.FullName, "chaos", "bin");
        return new[] { "Release", "Debug" }
            .Select(c => new FileInfo(Path.Combine(bin, c, "net10.0", "sequencer-chaos.dll")))
            .Where(f => f.Exists)
            .OrderByDescending(f => f.LastWriteTimeUtc)
            .FirstOrDefault()?.FullName
            ?? throw new FileNotFoundException($"no sequencer-chaos.dll under {bin}; build it first (dotnet build chaos -c Release)");
    }
}
