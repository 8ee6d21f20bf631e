using System.Diagnostics;
using System.Globalization;

namespace Sequencer.Chaos;

/// <summary>Runs the system commands the harness needs (ip, iptables, mount, du) and reports their failures.</summary>
internal static class Shell
{
    /// <summary>Runs a command; throws with its output when it fails, unless <paramref name="allowFailure"/>.</summary>
    /// <exception cref="InvalidOperationException">The command failed.</exception>
    public static async Task RunAsync(bool allowFailure, params string[] command)
    {
        var (code, output) = await ExecuteAsync(command).ConfigureAwait(false);
        if (code != 0 && !allowFailure)
            throw new InvalidOperationException($"`{string.Join(' ', command)}` failed ({code.ToString(CultureInfo.InvariantCulture)}): {output.Trim()}");
    }

    /// <summary>Runs a command that must succeed.</summary>
    public static Task RunAsync(params string[] command) => RunAsync(false, command);

    /// <summary>Runs a command and returns what it printed (stdout and stderr).</summary>
    public static async Task<string> CaptureAsync(params string[] command) => (await ExecuteAsync(command).ConfigureAwait(false)).Output;

    private static async Task<(int Code, string Output)> ExecuteAsync(string[] command)
    {
        var start = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in command.Skip(1))
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {command[0]}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().ConfigureAwait(false);
        return (process.ExitCode, await output.ConfigureAwait(false) + await error.ConfigureAwait(false));
    }
}
