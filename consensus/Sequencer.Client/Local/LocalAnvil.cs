using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sequencer.Client.Local;

/// <summary>
/// A local L1: anvil (npm <c>@foundry-rs/anvil</c>, installed under <c>contracts/node_modules</c> by the project's own
/// files) on a loopback port, for <c>make run</c>, tests and the bench. It is killed by process id; its output goes
/// to a log file.
/// </summary>
public sealed class LocalAnvil : IAsyncDisposable
{
    /// <summary>anvil's first default account (funded with 10,000 ether in every anvil): for local use only.</summary>
    public const string DefaultKey = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    /// <summary>
    /// anvil's second default account, which deploys the inbox in local runs: its first creation (nonce 0) fixes the
    /// contract's address before it exists, so the nodes can be told it at start. Local use only.
    /// </summary>
    public const string DeployerKey = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    private readonly Process process;
    private readonly StreamWriter log;

    private LocalAnvil(Process process, StreamWriter log, Uri rpc, ulong chainId)
    {
        this.process = process;
        this.log = log;
        Rpc = rpc;
        ChainId = chainId;
    }

    /// <summary>The JSON-RPC endpoint.</summary>
    public Uri Rpc { get; }

    /// <summary>The L1 chain id.</summary>
    public ulong ChainId { get; }

    /// <summary>The process id while running, else 0.</summary>
    public int ProcessId => process.HasExited ? 0 : process.Id;

    /// <summary>The anvil executable of this checkout (or <c>SEQUENCER_ANVIL</c>).</summary>
    /// <exception cref="FileNotFoundException">Not installed: <c>make</c> (or <c>npm ci</c> in contracts/) installs it.</exception>
    public static string Locate(string? start = null)
    {
        if (Environment.GetEnvironmentVariable("SEQUENCER_ANVIL") is { Length: > 0 } configured)
            return configured;
        var directory = new DirectoryInfo(start ?? AppContext.BaseDirectory);
        while (directory is not null)
        {
            // The platform package's binary itself (the npm wrapper would only spawn it), else the wrapper.
            var modules = Path.Combine(directory.FullName, "contracts", "node_modules");
            var scope = Path.Combine(modules, "@foundry-rs");
            if (Directory.Exists(scope) && Directory.EnumerateDirectories(scope, "anvil-*").Select(d => Path.Combine(d, "bin", "anvil")).FirstOrDefault(File.Exists) is { } binary)
                return binary;
            var wrapper = Path.Combine(modules, ".bin", "anvil");
            if (File.Exists(wrapper))
                return wrapper;
            directory = directory.Parent;
        }

        throw new FileNotFoundException("anvil is not installed: run `make` (or `npm ci` in contracts/), or set SEQUENCER_ANVIL");
    }

    /// <summary>Starts anvil on <paramref name="port"/> (0: a free one) and waits until it answers.</summary>
    /// <param name="logPath">Where its output goes.</param>
    /// <param name="port">The port on 127.0.0.1.</param>
    /// <param name="chainId">The L1 chain id.</param>
    /// <param name="blockTimeSeconds">Seconds between blocks (0: a block per transaction, anvil's automine).</param>
    /// <param name="token">Cancels the wait.</param>
    /// <param name="host">The address it listens on (default 127.0.0.1).</param>
    public static async Task<LocalAnvil> StartAsync(string logPath, int port = 0, ulong chainId = 31337, int blockTimeSeconds = 0, string host = "127.0.0.1", CancellationToken token = default)
    {
        if (port == 0)
            port = ListenPorts.Take(host, 1)[0];

        var info = new ProcessStartInfo(Locate())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "--host", host, "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--chain-id", chainId.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            info.ArgumentList.Add(argument);
        if (blockTimeSeconds > 0)
        {
            info.ArgumentList.Add("--block-time");
            info.ArgumentList.Add(blockTimeSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(logPath))!);
        var log = new StreamWriter(new FileStream(logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        var process = Process.Start(info) ?? throw new InvalidOperationException("anvil did not start");
        process.OutputDataReceived += (_, e) => Write(log, e.Data);
        process.ErrorDataReceived += (_, e) => Write(log, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var anvil = new LocalAnvil(process, log, new Uri($"http://{host}:{port}"), chainId);
        try
        {
            await anvil.WaitReadyAsync(TimeSpan.FromSeconds(30), token).ConfigureAwait(false);
        }
        catch
        {
            await anvil.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return anvil;
    }

    private static void Write(StreamWriter log, string? line)
    {
        if (line is null)
            return;
        lock (log)
        {
            try
            {
                log.WriteLine(line);
            }
            catch (ObjectDisposedException)
            {
                // The process outlived its log by a line.
            }
        }
    }

    private async Task WaitReadyAsync(TimeSpan timeout, CancellationToken token)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (process.HasExited)
                throw new InvalidOperationException($"anvil exited with code {process.ExitCode} before it answered (see its log)");
            try
            {
                using var content = new StringContent("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}", Encoding.UTF8, "application/json");
                using var response = await http.PostAsync(Rpc, content, token).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                    return;
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (TaskCanceledException) when (!token.IsCancellationRequested)
            {
                // A slow first answer.
            }

            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"anvil did not answer at {Rpc} within {timeout.TotalSeconds} s");
            await Task.Delay(50, token).ConfigureAwait(false);
        }
    }

    /// <summary>Kills anvil (by process id) and waits for it to exit.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync().ConfigureAwait(false);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }

        process.Dispose();
        lock (log)
            log.Dispose();
    }
}
