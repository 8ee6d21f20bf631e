namespace Sequencer.Tests;

/// <summary>
/// Runs tests of this assembly again in a child process with some of the CPU's instruction sets turned off
/// (<c>DOTNET_Enable…=0</c>), so that the code paths for CPUs without them are tested on this one too.
/// </summary>
internal static class InstructionSetRuns
{
    /// <summary>Runs the test methods matching <paramref name="methodFilters"/> (xUnit v3's <c>-method</c>, wildcards
    /// allowed) with <paramref name="environment"/> set, and fails unless exactly <paramref name="expectedTests"/> ran
    /// (0: at least one) and all passed.</summary>
    public static async Task RunAsync(IReadOnlyList<string> methodFilters, int expectedTests, params (string Name, string Value)[] environment)
    {
        // The test assembly through the dotnet host, with xUnit v3's own runner arguments.
        var host = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet"
            ? Environment.ProcessPath!
            : Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        var start = new System.Diagnostics.ProcessStartInfo(host)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(typeof(InstructionSetRuns).Assembly.Location);
        foreach (var filter in methodFilters)
        {
            start.ArgumentList.Add("-method");
            start.ArgumentList.Add(filter);
        }

        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        using var child = System.Diagnostics.Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var output = child.StandardOutput.ReadToEndAsync(timeout.Token);
        var errors = child.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await child.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!child.HasExited)
                child.Kill(entireProcessTree: true);
        }

        var text = await output + await errors;
        Assert.True(child.ExitCode == 0, text);
        var totals = System.Text.RegularExpressions.Regex.Match(text, @"Total: (\d+), Errors: 0, Failed: 0");
        Assert.True(totals.Success, text);
        var ran = int.Parse(totals.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(expectedTests > 0 ? ran == expectedTests : ran > 0, $"{ran} tests ran in the child process, expected {(expectedTests > 0 ? expectedTests : "some")}:\n{text}");
    }
}
