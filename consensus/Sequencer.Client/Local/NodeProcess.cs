using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Sequencer.Client.Local;

/// <summary>How to start one node process.</summary>
/// <param name="Id">The member id.</param>
/// <param name="Raft">The advertised Raft endpoint (host:port).</param>
/// <param name="Api">The API base address.</param>
/// <param name="Internal">The internal listener (https://IP:PORT) with mutual TLS, or null (no certificates).</param>
/// <param name="DataDir">The node's data directory.</param>
/// <param name="RaftListen">Where the Raft listener binds when it differs from <paramref name="Raft"/> (behind a proxy).</param>
public sealed record NodeSpec(int Id, string Raft, string Api, string DataDir, string? RaftListen = null, string? Internal = null);

/// <summary>
/// One real node process (<c>sequencer-node run</c>) started by a test, the benchmark, the chaos harness or
/// <c>make run</c>. Its output goes to <c>NODEDIR.log</c> beside its data directory (and optionally to the console).
/// It is stopped or killed by process id, and it exits by itself when the process that started it dies.
/// </summary>
public sealed class NodeProcess : IAsyncDisposable
{
    private readonly NodeBinary binary;
    private readonly IReadOnlyList<string> arguments;
    private readonly Action<string>? echo;
    private Process? process;
    private StreamWriter? log;

    /// <summary>Prepares (does not start) a node process.</summary>
    public NodeProcess(NodeBinary binary, NodeSpec spec, IReadOnlyList<string> arguments, Action<string>? echo = null)
    {
        ArgumentNullException.ThrowIfNull(binary);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(arguments);
        this.binary = binary;
        this.arguments = arguments;
        this.echo = echo;
        Spec = spec;
        Client = new SequencerClient(new Uri(spec.Api), TimeSpan.FromSeconds(30));
    }

    /// <summary>What the process was started with.</summary>
    public NodeSpec Spec { get; }

    /// <summary>The arguments the node is started with (after the binary).</summary>
    public IReadOnlyList<string> Arguments => arguments;

    /// <summary>A client of this node's API.</summary>
    public SequencerClient Client { get; }

    /// <summary>The OS process id while running, else 0.</summary>
    public int ProcessId => process is { HasExited: false } p ? p.Id : 0;

    /// <summary>True while the process runs (paused counts as running).</summary>
    public bool IsRunning => process is { HasExited: false };

    /// <summary>The exit code of the last run, once it has exited.</summary>
    public int? ExitCode => process is { HasExited: true } p ? p.ExitCode : null;

    /// <summary>
    /// Rewrites the start of the process, for example to run it in a network namespace or under a resource limit;
    /// read at every <see cref="Start"/>.
    /// </summary>
    public Func<ProcessStartInfo, ProcessStartInfo>? Wrapper { get; set; }

    /// <summary>Extra environment variables for the next starts.</summary>
    public Dictionary<string, string> ExtraEnvironment { get; } = [];

    /// <summary>
    /// The node's log file, beside (not inside) its data directory: a fault that fills or wipes the data directory must
    /// not take the log with it.
    /// </summary>
    public string LogPath => Path.GetFullPath(Spec.DataDir).TrimEnd('/') + ".log";

    /// <summary>Starts the process (again, after a kill or stop).</summary>
    /// <exception cref="InvalidOperationException">It is already running.</exception>
    public void Start()
    {
        if (IsRunning)
            throw new InvalidOperationException($"node {Spec.Id} is already running");
        Directory.CreateDirectory(Spec.DataDir);
        log?.Dispose();
        log = new StreamWriter(new FileStream(LogPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        var info = binary.CreateStartInfo(arguments);
        foreach (var (key, value) in ExtraEnvironment)
            info.Environment[key] = value;
        if (Wrapper is { } wrap)
            info = wrap(info);
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        info.UseShellExecute = false;
        info.Environment["DOTNET_gcServer"] = "0";
        info.Environment["DOTNET_TieredPGO"] = "1";
        process = new Process { StartInfo = info, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => Write(e.Data);
        process.ErrorDataReceived += (_, e) => Write(e.Data);
        if (!process.Start())
            throw new InvalidOperationException($"node {Spec.Id} did not start");
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    private void Write(string? line)
    {
        if (line is null)
            return;
        try
        {
            log?.WriteLine(line);
        }
        catch (Exception e) when (e is ObjectDisposedException or IOException)
        {
            // The log's disk failed; the node's fate is judged from its exit and its API, not from this file.
        }

        echo?.Invoke($"[node{Spec.Id}] {line}");
    }

    /// <summary>Kills the process with SIGKILL (<c>kill -9</c>) and waits for it to be gone.</summary>
    public async Task KillAsync()
    {
        if (process is { HasExited: false } running)
        {
            Signal(running.Id, SigKill);
            await running.WaitForExitAsync().ConfigureAwait(false);
        }
        else if (process is not null)
        {
            await process.WaitForExitAsync().ConfigureAwait(false);
        }

        CloseLog();
    }

    // Let go of the log once the process is gone.
    private void CloseLog()
    {
        var current = log;
        log = null;
        current?.Dispose();
    }

    /// <summary>
    /// Asks the process to stop (SIGTERM, or SIGINT as Ctrl-C sends it) and kills it if it has not exited within
    /// <paramref name="grace"/>.
    /// </summary>
    public async Task StopAsync(TimeSpan grace, bool interrupt = false)
    {
        if (process is not { HasExited: false } running)
            return;
        Signal(running.Id, interrupt ? SigInt : SigTerm);
        using var timeout = new CancellationTokenSource(grace);
        try
        {
            await running.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            await running.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            CloseLog();
        }
        catch (OperationCanceledException)
        {
            await KillAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Suspends the process (SIGSTOP).</summary>
    public void Pause()
    {
        if (process is { HasExited: false } running)
            Signal(running.Id, SigStop);
    }

    /// <summary>Resumes a suspended process (SIGCONT).</summary>
    public void Resume()
    {
        if (process is { HasExited: false } running)
            Signal(running.Id, SigCont);
    }

    /// <summary>The last <paramref name="lines"/> lines of the node's log.</summary>
    public string Tail(int lines = 40)
    {
        try
        {
            using var stream = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            var all = reader.ReadToEnd().Split('\n');
            return string.Join('\n', all.TakeLast(lines));
        }
        catch (IOException)
        {
            return string.Empty;
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (process is { HasExited: false } running)
        {
            Signal(running.Id, SigCont);
            await KillAsync().ConfigureAwait(false);
        }

        process?.Dispose();
        log?.Dispose();
        Client.Dispose();
    }

    private const int SigKill = 9;
    private const int SigTerm = 15;
    private const int SigInt = 2;
    private const int SigStop = 19;
    private const int SigCont = 18;

    private static void Signal(int pid, int signal)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("node processes are signalled with POSIX signals on Linux");
        if (NativeMethods.kill(pid, signal) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            // ESRCH: the process is already gone, which is what the caller wanted.
            if (errno != 3)
                throw new InvalidOperationException($"kill({pid}, {signal}) failed with errno {errno}");
        }
    }

    private static partial class NativeMethods
    {
        [DllImport("libc", SetLastError = true)]
#pragma warning disable CA5392, SYSLIB1054 // libc is a system library; a plain DllImport keeps this file free of source generators.
        internal static extern int kill(int pid, int sig);
#pragma warning restore CA5392, SYSLIB1054
    }
}

/// <summary>Where the node executable is and how to start it.</summary>
public sealed class NodeBinary
{
    private NodeBinary(string path) => Path = path;

    /// <summary>The <c>sequencer-node.dll</c> (run with <c>dotnet</c>) or apphost path.</summary>
    public string Path { get; }

    /// <summary>Uses the given path.</summary>
    public static NodeBinary At(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"the node binary {path} does not exist; build it first (make build)", path);
        return new NodeBinary(System.IO.Path.GetFullPath(path));
    }

    /// <summary>
    /// Finds the built node: <c>SEQUENCER_NODE</c> if set, else the newer of the Release and Debug
    /// <c>sequencer-node.dll</c> under <c>node/bin</c> of the repository that contains
    /// <paramref name="start"/> (never a TestFaults build), or the given <paramref name="configuration"/>.
    /// </summary>
    public static NodeBinary Locate(string? start = null, string? configuration = null)
    {
        if (Environment.GetEnvironmentVariable("SEQUENCER_NODE") is { Length: > 0 } configured)
            return At(configured);
        var directory = new DirectoryInfo(start ?? AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(System.IO.Path.Combine(directory.FullName, "Cluster.sln")))
            directory = directory.Parent;
        if (directory is null)
            throw new FileNotFoundException("cannot find Cluster.sln above " + (start ?? AppContext.BaseDirectory) + "; set SEQUENCER_NODE");
        var bin = System.IO.Path.Combine(directory.FullName, "node", "bin");
        var candidate = (configuration is null ? ["Release", "Debug"] : new[] { configuration })
            .Select(c => new FileInfo(System.IO.Path.Combine(bin, c, "net10.0", "sequencer-node.dll")))
            .Where(f => f.Exists)
            .OrderByDescending(f => f.LastWriteTimeUtc)
            .FirstOrDefault();
        return candidate is null
            ? throw new FileNotFoundException($"no sequencer-node.dll under {bin}; build it first (make build)")
            : new NodeBinary(candidate.FullName);
    }

    /// <summary>The start info for <paramref name="arguments"/>.</summary>
    public ProcessStartInfo CreateStartInfo(IReadOnlyList<string> arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var info = Path.EndsWith(".dll", StringComparison.OrdinalIgnoreCase)
            ? new ProcessStartInfo("dotnet") { ArgumentList = { Path } }
            : new ProcessStartInfo(Path);
        foreach (var argument in arguments)
            info.ArgumentList.Add(argument);
        return info;
    }
}
