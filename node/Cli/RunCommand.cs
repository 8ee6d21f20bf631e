using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Sequencer.Core;
using Sequencer.Node.Configuration;

namespace Sequencer.Node.Cli;

/// <summary><c>run</c>: runs one node from a configuration file and/or flags (flags win).</summary>
public static class RunCommand
{
    private static readonly Option<FileInfo?> ConfigOption = new("--config") { Description = "A JSON configuration file (see docs/configuration.md)." };
    private static readonly Option<int?> IdOption = new("--id") { Description = "This node's member id." };
    private static readonly Option<string?> DataOption = new("--data") { Description = "The data directory (WAL and store)." };
    private static readonly Option<string?> RaftOption = new("--raft") { Description = "The Raft endpoint this node advertises, host:port." };
    private static readonly Option<string?> RaftListenOption = new("--raft-listen") { Description = "Where the Raft listener binds, when behind a proxy." };
    private static readonly Option<string?> ApiOption = new("--api") { Description = "The HTTP API address, e.g. http://127.0.0.1:7101." };
    private static readonly Option<ulong?> ChainIdOption = new("--chain-id") { Description = "The rollup chain id (the same on every node)." };
    private static readonly Option<string[]> MemberOption = new("--member") { Description = "A member as ID=RAFT,API[,INTERNAL] (INTERNAL: https://IP:PORT, with --certs); repeat for every member, this node included.", AllowMultipleArgumentsPerToken = false };
    private static readonly Option<bool> InsecurePlaintextOption = new("--insecure-plaintext") { Description = "Without --certs, run on addresses other than loopback: the Raft port and the internal routes then accept anyone who can reach them. A test network only." };
    private static readonly Option<string?> CertsOption = new("--certs") { Description = "The consortium's certificates directory (from `certs`): mutual TLS on the Raft port and the internal listener, members only." };
    private static readonly Option<string?> ElectionOption = new("--election-timeout") { Description = "Election timeout bounds in ms, LOWER:UPPER (default 300:600)." };
    private static readonly Option<int?> ClockSkewOption = new("--clock-skew-ms") { Description = "Shift this node's clock (a chaos fault)." };
    private static readonly Option<string[]> LimitOption = new("--limit") { Description = "Override a limit, NAME=VALUE (e.g. maxBatchDelayMs=5); repeatable." };
    private static readonly Option<int?> ExitWithParentOption = new("--exit-with-parent") { Description = "Exit when the process with this id exits (used by launchers)." };
    private static readonly Option<long?> RetainedOption = new("--wal-retained-entries") { Description = "Applied entries the WAL keeps behind the store before compaction (default 4096)." };
    private static readonly Option<ulong?> RetainHeightsOption = new("--retain-heights")
    {
        Description = "Prune the tx data (hashes, receive times, tx index) of heights more than this many below the stored height, once signed (and final on the L1); headers, history and signatures stay. 0 keeps everything (default). Ethereum validation only.",
    };

    private static readonly Option<long?> RetainedBytesOption = new("--wal-retained-bytes") { Description = "The most entry bytes the WAL keeps behind the store before compaction (default 32 MiB); bounds the WAL's memory." };
    private static readonly Option<string?> AdminTokenOption = new("--admin-token") { Description = "Enables /admin routes for clients that send this bearer token (or set SEQUENCER_ADMIN_TOKEN)." };
#if SEQUENCER_TEST_FAULTS
    private static readonly Option<string[]> TestFaultOption = new("--test-fault") { Description = "TEST BUILD ONLY: break safety on purpose (ack-before-commit, drop-batch=H, follower-ack-before-fsync)." };
#endif
    private static readonly Option<string?> GroupKeyOption = new("--group-key") { Description = "The group key file from keygen: the cluster signs every batch under it." };
    private static readonly Option<string?> KeyShareOption = new("--key-share") { Description = "This node's secret key share file from keygen (mode 0600); the node then signs." };
    private static readonly Option<int?> DkgThresholdOption = new("--dkg-threshold") { Description = "Without key files: run a t-of-n Pedersen DKG among the members when the cluster boots without a key (members 1..n)." };
    private static readonly Option<string?> SignerFaultOption = new("--signer-fault") { Description = "Chaos: start as a Byzantine signer (wrong-shares or silent)." };
    private static readonly Option<string?> L1RpcOption = new("--l1-rpc") { Description = "Post signed heads to the inbox contract on this L1 JSON-RPC endpoint (with --l1-contract)." };
    private static readonly Option<string?> L1ContractOption = new("--l1-contract") { Description = "The inbox contract's address on the L1." };
    private static readonly Option<string?> L1KeyFileOption = new("--l1-key-file") { Description = "The poster's funded L1 key (0x hex, owner-only); or SEQUENCER_L1_KEY. Without one the node only watches the L1." };
    private static readonly Option<int?> L1FinalityOption = new("--l1-finality-depth") { Description = "Blocks below the latest at which a post counts as finalized (default: the L1's finalized tag)." };
    private static readonly Option<ulong?> L1StartBlockOption = new("--l1-start-block") { Description = "The L1 block the contract was deployed in (events are scanned from there)." };
    private static readonly Option<string?> ValidationOption = new("--validation") { Description = "How txs are validated: opaque (any bytes; the default) or ethereum (signed Ethereum transactions for this chain id, one ordered tx per sender and nonce). Fixed in the log at genesis." };
    private static readonly Option<string?> OtlpOption = new("--otlp-endpoint") { Description = "Export traces and metrics to this OTLP collector (gRPC, e.g. http://127.0.0.1:4317; or http/protobuf when the URL ends in /v1/traces)." };
    private static readonly Option<string?> TraceFileOption = new("--trace-file") { Description = "Append every span as a JSON line to this file (relative to the data directory)." };
    private static readonly Option<bool> PrintConfigOption = new("--print-config") { Description = "Print the effective configuration as JSON and exit." };

    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var command = new Command("run", "Run a sequencer node.")
        {
            ConfigOption, IdOption, DataOption, RaftOption, RaftListenOption, ApiOption, ChainIdOption, MemberOption,
            ElectionOption, ClockSkewOption, LimitOption, RetainedOption, RetainedBytesOption, RetainHeightsOption, AdminTokenOption, ExitWithParentOption, PrintConfigOption,
            GroupKeyOption, KeyShareOption, SignerFaultOption, DkgThresholdOption, CertsOption, InsecurePlaintextOption,
            L1RpcOption, L1ContractOption, L1KeyFileOption, L1FinalityOption, L1StartBlockOption, OtlpOption, TraceFileOption, ValidationOption,
        };
#if SEQUENCER_TEST_FAULTS
        command.Options.Add(TestFaultOption);
#endif
        command.SetAction(async (result, token) =>
        {
            NodeOptions options;
            try
            {
                options = Build(result);
            }
            catch (Exception e) when (e is FormatException or InvalidDataException or IOException or ArgumentException or InvalidCastException or OverflowException)
            {
                await Console.Error.WriteLineAsync("invalid configuration: " + e.Message).ConfigureAwait(false);
                return NodeRunner.ConfigurationExitCode;
            }

            if (result.GetValue(PrintConfigOption))
            {
                Console.WriteLine(options.ToJson());
                return 0;
            }

#if SEQUENCER_TEST_FAULTS
            foreach (var fault in result.GetValue(TestFaultOption) ?? [])
                Sequencer.Core.TestFaults.Enable(fault);
#endif
            // Checked before anything else opens files: running out of handles part-way through start-up can make the
            // runtime itself abort (SIGABRT, no message) instead of failing with a clear error.
            if (OpenFileLimit() is { } openFiles && openFiles < MinOpenFiles)
            {
                await Console.Error.WriteLineAsync($"fatal: node {options.NodeId} stops: the open-file limit (RLIMIT_NOFILE) is {openFiles}; a node needs at least {MinOpenFiles} (raise it with ulimit -n or LimitNOFILE=)").ConfigureAwait(false);
                return 74;
            }

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
            if (result.GetValue(ExitWithParentOption) is { } parent)
                _ = WatchParentAsync(parent, stop);
            try
            {
                return await NodeRunner.RunAsync(options, stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
            {
                // The machine failed the node (no file handles, no space, a port taken): stop with a clear message.
                await Console.Error.WriteLineAsync($"fatal: node {options.NodeId} stops: {e.GetType().Name}: {e.Message} {FileHandleDiagnosis()}").ConfigureAwait(false);
                return 74;
            }
        });
        return command;
    }

    private static NodeOptions Build(ParseResult result)
    {
        var options = result.GetValue(ConfigOption) is { } file ? NodeOptions.Load(file.FullName) : new NodeOptions();
        if (result.GetValue(IdOption) is { } id)
            options = options with { NodeId = id };
        if (result.GetValue(DataOption) is { } data)
            options = options with { DataDir = data };
        if (result.GetValue(RaftOption) is { } raft)
            options = options with { Raft = raft };
        if (result.GetValue(RaftListenOption) is { } listen)
            options = options with { RaftListen = listen };
        if (result.GetValue(ApiOption) is { } api)
            options = options with { Api = api };
        if (result.GetValue(ChainIdOption) is { } chainId)
            options = options with { ChainId = chainId };
        if (result.GetValue(ClockSkewOption) is { } skew)
            options = options with { ClockSkewMs = skew };
        if ((result.GetValue(AdminTokenOption) ?? Environment.GetEnvironmentVariable("SEQUENCER_ADMIN_TOKEN")) is { Length: > 0 } adminToken)
            options = options with { AdminToken = adminToken };
        if (result.GetValue(ValidationOption) is { Length: > 0 } validation)
        {
            options = options with
            {
                Validation = validation.ToLowerInvariant() switch
                {
                    "opaque" => Sequencer.Core.Validation.ValidationMode.Opaque,
                    "ethereum" => Sequencer.Core.Validation.ValidationMode.Ethereum,
                    _ => throw new FormatException($"--validation \"{validation}\" is neither opaque nor ethereum"),
                },
            };
        }

        if (result.GetValue(OtlpOption) is { Length: > 0 } otlp)
            options = options with { OtlpEndpoint = otlp };
        if (result.GetValue(TraceFileOption) is { Length: > 0 } traceFile)
            options = options with { TraceFile = traceFile };
        if (result.GetValue(RetainedOption) is { } retained)
            options = options with { WalRetainedEntries = retained };
        if (result.GetValue(RetainedBytesOption) is { } retainedBytes)
            options = options with { WalRetainedBytes = retainedBytes };
        if (result.GetValue(RetainHeightsOption) is { } retainHeights)
            options = options with { RetainHeights = retainHeights };
        if (result.GetValue(GroupKeyOption) is { } groupKey)
            options = options with { GroupKeyFile = groupKey };
        if (result.GetValue(KeyShareOption) is { } keyShare)
            options = options with { KeyShareFile = keyShare };
        if (result.GetValue(DkgThresholdOption) is { } dkgThreshold)
            options = options with { DkgThreshold = dkgThreshold };
        if (result.GetValue(SignerFaultOption) is { } signerFault)
            options = options with { SignerFault = signerFault };
        if (result.GetValue(CertsOption) is { } certs)
            options = options with { CertificatesDirectory = certs };
        if (result.GetValue(InsecurePlaintextOption))
            options = options with { AllowPlaintext = true };
        if (result.GetValue(L1ContractOption) is { } contract)
            options = options with { L1 = (options.L1 ?? new L1Options()) with { Contract = contract } };
        if (result.GetValue(L1RpcOption) is { } rpc)
            options = options with { L1 = (options.L1 ?? new L1Options()) with { Rpc = rpc } };
        if (options.L1 is not null)
        {
            if (result.GetValue(L1KeyFileOption) is { } keyFile)
                options = options with { L1 = options.L1 with { KeyFile = keyFile } };
            if (result.GetValue(L1FinalityOption) is { } depth)
                options = options with { L1 = options.L1 with { FinalityDepth = depth } };
            if (result.GetValue(L1StartBlockOption) is { } startBlock)
                options = options with { L1 = options.L1 with { StartBlock = startBlock } };
        }
        if (result.GetValue(MemberOption) is { Length: > 0 } members)
            options = options with { Members = [.. members.Select(ParseMember)] };
        if (result.GetValue(ElectionOption) is { } election)
        {
            var parts = election.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[0], out var lower) || !int.TryParse(parts[1], out var upper))
                throw new FormatException($"--election-timeout \"{election}\" is not LOWER:UPPER");
            options = options with { RaftTiming = options.RaftTiming with { ElectionTimeoutLowerMs = lower, ElectionTimeoutUpperMs = upper } };
        }

        foreach (var limit in result.GetValue(LimitOption) ?? [])
            options = options with { Limits = ApplyLimit(options.Limits, limit) };
        return options;
    }

    /// <summary>Parses <c>ID=RAFT,API[,INTERNAL]</c>.</summary>
    public static MemberOptions ParseMember(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var equals = text.IndexOf('=', StringComparison.Ordinal);
        var parts = equals > 0 ? text[(equals + 1)..].Split(',') : [];
        if (equals <= 0 || parts.Length is < 2 or > 3 || parts.Any(p => p.Length == 0)
            || !int.TryParse(text.AsSpan(0, equals), NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            throw new FormatException($"--member \"{text}\" is not ID=RAFT,API or ID=RAFT,API,INTERNAL");
        return new MemberOptions { Id = id, Raft = parts[0], Api = parts[1], Internal = parts.Length == 3 ? parts[2] : null };
    }

    /// <summary>Applies <c>NAME=VALUE</c> to a copy of <paramref name="limits"/> (names as in the JSON file, camelCase).</summary>
    public static SequencerLimits ApplyLimit(SequencerLimits limits, string assignment)
    {
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentNullException.ThrowIfNull(assignment);
        var equals = assignment.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0)
            throw new FormatException($"--limit \"{assignment}\" is not NAME=VALUE");
        var name = assignment[..equals];
        var property = typeof(SequencerLimits).GetProperty(name, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase)
            ?? throw new FormatException($"--limit: there is no limit named \"{name}\"");
        var copy = limits with { };
        var value = Convert.ChangeType(assignment[(equals + 1)..], property.PropertyType, CultureInfo.InvariantCulture);
        property.SetValue(copy, value);
        return copy;
    }

    /// <summary>The fewest file handles a node starts with: WAL chunks, stores, sockets to peers and clients.</summary>
    public const int MinOpenFiles = 256;

    // The soft RLIMIT_NOFILE (the .NET runtime raises it to the hard limit at start-up), or null where /proc is not there.
    private static long? OpenFileLimit()
    {
        try
        {
            var line = File.ReadLines("/proc/self/limits").FirstOrDefault(l => l.StartsWith("Max open files", StringComparison.Ordinal));
            var soft = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries)[3];
            return long.TryParse(soft, NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    // A failure to open a file or load an assembly often means the process ran out of file handles: say so.
    private static string FileHandleDiagnosis()
    {
        try
        {
            var open = Directory.GetFiles("/proc/self/fd").Length;
            var limit = File.ReadAllLines("/proc/self/limits").FirstOrDefault(l => l.StartsWith("Max open files", StringComparison.Ordinal))?
                .Split(' ', StringSplitOptions.RemoveEmptyEntries)[3];
            return $"({open} file handles open, limit {limit})";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "(could not count open file handles: probably none are left; check ulimit -n)";
        }
    }

    private static async Task WatchParentAsync(int parentId, CancellationTokenSource stop)
    {
        Process parent;
        try
        {
            parent = Process.GetProcessById(parentId);
        }
        catch (ArgumentException)
        {
            await stop.CancelAsync().ConfigureAwait(false);
            return;
        }

        using (parent)
        {
            await parent.WaitForExitAsync(stop.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        await stop.CancelAsync().ConfigureAwait(false);
    }
}
