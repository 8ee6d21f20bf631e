using System.Diagnostics;
using System.Globalization;
using Sequencer.Core;

namespace Sequencer.IntegrationTests;

/// <summary>
/// INV-NONCE across crashes (issue 9): a signer process killed (SIGKILL) at every step of its nonce store (generate,
/// take, compaction, erase, rewrite), many times over, never offers or takes again a nonce it had taken.
/// </summary>
[Collection("clusters")]
public sealed class NonceCrashTests
{
    [Fact]
    public async Task AKillAtEveryStepOfTheNonceStore_NeverLetsATakenNonceServeAgain()
    {
        var binary = TestCluster.TestFaultsBinary();
        var root = Path.Combine(Path.GetTempPath(), "sequencer-it", $"nonce-crash-{Environment.ProcessId}-{DateTime.UtcNow:HHmmssfff}");
        var store = Path.Combine(root, "signer");
        var list = Path.Combine(root, "taken.txt");
        Directory.CreateDirectory(root);
        var random = new Random(20261202);
        var taken = new HashSet<ulong>();
        var crashedAt = new HashSet<string>();
        try
        {
            for (var round = 0; round < 3; round++)
            {
                foreach (var point in CrashPoints.NonceStorePoints)
                {
                    var (exit, output) = await RunAsync(binary, ["nonce-torture", "--dir", store, "--crash-at", point,
                        "--after", random.Next(1, 4).ToString(CultureInfo.InvariantCulture), "--seed", random.Next().ToString(CultureInfo.InvariantCulture)]);
                    var before = taken.Count;
                    foreach (var line in output.Where(l => l.StartsWith("taken ", StringComparison.Ordinal)))
                        Assert.True(taken.Add(ulong.Parse(line[6..], CultureInfo.InvariantCulture)), $"sequence {line[6..]} was taken twice (crash point {point})");
                    if (exit == 137)
                        crashedAt.Add(point);
                    else
                        Assert.True(exit == 0, $"nonce-torture at {point} exited {exit}:\n{string.Join("\n", output.TakeLast(20))}");

                    // After every crash: nothing taken is offered or taken again.
                    await File.WriteAllLinesAsync(list, taken.Select(s => s.ToString(CultureInfo.InvariantCulture)));
                    var (verified, report) = await RunAsync(binary, ["nonce-torture", "--dir", store, "--verify", list]);
                    Assert.True(verified == 0, $"after a crash at {point} ({taken.Count - before} taken in that run): {string.Join("\n", report)}");
                }
            }

            // Every step was really crashed at, and the runs took many nonces.
            Assert.Equal(CrashPoints.NonceStorePoints.Order(), crashedAt.Order());
            Assert.True(taken.Count > 500, $"only {taken.Count} nonces were taken");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static async Task<(int Exit, List<string> Output)> RunAsync(Sequencer.Client.Local.NodeBinary binary, IReadOnlyList<string> arguments)
    {
        var info = binary.CreateStartInfo(arguments);
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        info.UseShellExecute = false;
        using var process = Process.Start(info) ?? throw new InvalidOperationException("nonce-torture did not start");
        var output = new List<string>();
        var reading = Task.Run(async () =>
        {
            while (await process.StandardOutput.ReadLineAsync() is { } line)
                output.Add(line);
        });
        var errors = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"nonce-torture {string.Join(' ', arguments)} did not end within 120 s");
        }

        await reading;
        var stderr = await errors;
        if (stderr.Length > 0)
            output.Add("stderr: " + stderr);
        return (process.ExitCode, output);
    }
}
