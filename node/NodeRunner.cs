using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using Sequencer.Core;
using Sequencer.Node.Api;
using Sequencer.Node.Configuration;
using Sequencer.Node.Replication;
using Sequencer.Node.Security;
using Sequencer.Node.Signing;
using Sequencer.Node.Telemetry;
using Sequencer.Raft;

namespace Sequencer.Node;

/// <summary>The composition root of the <c>run</c> verb: builds every component of a node and runs it until stopped.</summary>
public static partial class NodeRunner
{
    /// <summary>Exit code of a node that stopped on an unrecoverable fault (a failed invariant, a dead WAL).</summary>
    public const int FatalExitCode = 70;

    /// <summary>Exit code of a node refused at startup by its configuration.</summary>
    public const int ConfigurationExitCode = 2;

    /// <summary>Exit code of a node whose WAL or store is damaged: it stops rather than serve possibly corrupt data.</summary>
    public const int DamagedDataExitCode = 3;

    /// <summary>
    /// How long a node may take to stop once asked (a signal or a fatal fault): HTTP requests drain, Raft stops, the
    /// store takes every applied batch. Past it the node exits with <see cref="FatalExitCode"/> and says what it was
    /// doing, so that something stuck inside never makes a node ignore SIGTERM.
    /// </summary>
    public static readonly TimeSpan ShutdownDeadline = TimeSpan.FromSeconds(8);

    // In-flight HTTP requests get this long to finish at shutdown; then their connections are closed. After a fatal
    // fault they cannot finish (Raft and the store are gone or untrusted), so they get only a moment.
    private static readonly TimeSpan HttpDrain = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan FatalHttpDrain = TimeSpan.FromMilliseconds(200);

    /// <summary>Runs a node until <paramref name="token"/> is canceled or a fatal fault stops it.</summary>
    public static async Task<int> RunAsync(NodeOptions options, CancellationToken token)
    {
        using var watchdog = new ShutdownWatchdog(ShutdownDeadline);
        return await RunCoreAsync(options, watchdog, token).ConfigureAwait(false);
    }

    private static async Task<int> RunCoreAsync(NodeOptions options, ShutdownWatchdog watchdog, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            await Console.Error.WriteLineAsync("invalid configuration:\n  " + string.Join("\n  ", errors)).ConfigureAwait(false);
            return ConfigurationExitCode;
        }

        ClusterIdentity? identity = null;
        if (options.CertificatesDirectory is { } certificates)
        {
            try
            {
                identity = ClusterIdentity.Load(certificates, options.NodeId, options.Members.Select(m => m.Id));
            }
            catch (InvalidDataException e)
            {
                await Console.Error.WriteLineAsync("invalid configuration: " + e.Message).ConfigureAwait(false);
                return ConfigurationExitCode;
            }
        }

        using var identityScope = identity;
        var internalListener = options.Members.First(m => m.Id == options.NodeId).Internal is { } inside ? new Uri(inside) : null;

        // No configuration files and no file watchers: the node is configured by NodeOptions alone. The host's default
        // sources (appsettings files with reload on change) put a recursive watcher on the content root, which woke on
        // every WAL, nonce and store write (5 % of the CPU under load): reloading is off before any source is added.
        Directory.CreateDirectory(options.DataDir);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = ["--hostBuilder:reloadConfigOnChange=false"],
            EnvironmentName = Environments.Production,
            ContentRootPath = Path.GetFullPath(options.DataDir),
        });
        builder.Configuration.Sources.Clear();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(console =>
        {
            console.SingleLine = true;
            console.TimestampFormat = "HH:mm:ss.fff ";
            console.UseUtcTimestamp = true;
        });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // Hosting's request log writes only request start and finish (Information), and while it is enabled at any
        // level ASP.NET Core creates an Activity and a log scope for every request (a twentieth of a single submit's
        // allocations); Kestrel's own category still logs unhandled errors.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        // SEQUENCER_DOTNEXT_LOG=Debug shows DotNext's Raft internals when diagnosing a cluster.
        builder.Logging.AddFilter("DotNext", Enum.TryParse<LogLevel>(Environment.GetEnvironmentVariable("SEQUENCER_DOTNEXT_LOG"), out var dotNextLevel) ? dotNextLevel : LogLevel.Warning);
        var api = new Uri(options.Api);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            if (api.Host is "localhost")
                kestrel.ListenLocalhost(api.Port);
            else if (api.Host is "0.0.0.0" or "*" or "+" or "[::]")
                kestrel.ListenAnyIP(api.Port);
            else
                kestrel.Listen(System.Net.IPAddress.Parse(api.Host.Trim('[', ']')), api.Port);
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = options.Limits.MaxRequestBytes;
            kestrel.Limits.MaxConcurrentConnections = 10_000;
            kestrel.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            // A body that trickles in holds its reservation in the request budget: at Kestrel's default 240 B/s one
            // request of 16 MiB could hold it for 19 hours. 16 KiB/s after 10 s still lets a slow link send a maximal
            // body in 17 minutes.
            kestrel.Limits.MinRequestBodyDataRate = new Microsoft.AspNetCore.Server.Kestrel.Core.MinDataRate(16 * 1024, TimeSpan.FromSeconds(10));
            if (identity is not null && internalListener is not null)
            {
                // The internal routes, for members only: mutual TLS with the consortium's certificates.
                kestrel.Listen(System.Net.IPAddress.Parse(internalListener.Host.Trim('[', ']')), internalListener.Port, listen => listen.UseHttps(https =>
                {
                    https.ServerCertificate = identity.Certificate;
                    https.SslProtocols = System.Security.Authentication.SslProtocols.Tls13;
                    https.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate;
                    https.CheckCertificateRevocation = false;
                    https.ClientCertificateValidation = (certificate, _, _) => identity.Identify(certificate, "the internal listener") is not null;
                }));
            }
        });
        builder.Services.AddClientRateLimit(options);
        ConfigureTelemetry(builder.Services, options);

        using var fatalStop = CancellationTokenSource.CreateLinkedTokenSource(token);
        // The countdown starts on the thread that asks for the stop (the signal's, or the fatal fault's), inside
        // Cancel: nothing that runs after it (a continuation that a starved thread pool delays) can hold it back.
        using var armWatchdog = fatalStop.Token.Register(() => watchdog.Arm(options.NodeId));
        var exitCode = 0;
        await using var app = builder.Build();
        var loggerFactory = app.Services.GetRequiredService<ILoggerFactory>();
        var logger = loggerFactory.CreateLogger("Sequencer.Node");
        void Fatal(Exception exception)
        {
            LogFatal(logger, exception);
            exitCode = FatalExitCode;
            fatalStop.Cancel();
        }

        // Lines that outsiders can provoke at will go through a throttled logger: each repeats at most every 5 s, with a count.
        var throttledLogs = new Telemetry.ThrottledLoggerFactory(loggerFactory, TimeProvider.System);
        if (identity is not null)
        {
            var refusals = throttledLogs.CreateLogger("Sequencer.Node.Security");
            identity.Refused = line => LogRefusedPeer(refusals, line);
            identity.Noticed = line => LogRevocationList(logger, line);
            foreach (var warning in identity.Warnings)
                LogRefusedPeer(logger, warning);
        }
        else
            LogNoIdentities(logger, options.NodeId);

        SigningKeys? keys;
        try
        {
            keys = SigningKeys.Load(options);
        }
        catch (InvalidDataException e)
        {
            await Console.Error.WriteLineAsync("invalid configuration: " + e.Message).ConfigureAwait(false);
            return ConfigurationExitCode;
        }

        var time = new AdjustableClock(TimeProvider.System) { SkewMs = options.ClockSkewMs };
        using var metrics = new NodeMetrics();
        var loops = new BackgroundLoops(time);
        loops.Died += (loop, exception) =>
        {
            LogLoopDied(logger, exception, loop.Name, exception?.Message ?? "it returned");
            exitCode = FatalExitCode;
            fatalStop.Cancel();
        };
        RaftHost raft;
        try
        {
            raft = new RaftHost(options, time, loggerFactory, loops, identity, keys?.Bootstrap);
        }
        catch (Sequencer.Core.Storage.DataFormatException e)
        {
            LogIncompatibleData(logger, options.DataDir, e.Message);
            return DamagedDataExitCode;
        }
        catch (Exception e) when (IsDamagedData(e))
        {
            LogDamaged(logger, e, options.DataDir, Describe(e));
            return DamagedDataExitCode;
        }

        await using var raftScope = raft.ConfigureAwait(false);

        // The chain's rules are the log's (its genesis entry), whatever this node is told: a node configured otherwise
        // refuses to run rather than claim rules it does not apply.
        if (raft.State.Validation is { } logged && logged != options.Validation)
        {
            LogValidationMismatch(logger, options.DataDir, Name(logged), Name(options.Validation));
            return ConfigurationExitCode;
        }

        // So is its chain id: every header and commitment is computed for it, and a node configured with another one
        // would compute other commitments for the same batches (seen with a mistyped --chain-id on a restart: the node
        // followed the leader, stored commitments for chain 3, and its L1 watcher found the contract's differing).
        if (raft.State.StoredChainId is { } stored && stored != options.ChainId)
        {
            LogChainMismatch(logger, options.DataDir, stored, options.ChainId);
            return ConfigurationExitCode;
        }

        raft.State.ForeignChain += chainId =>
        {
            LogForeignChain(logger, chainId, options.ChainId);
            Fatal(new InvalidOperationException($"the log is of chain {chainId}, this node is configured with --chain-id {options.ChainId}"));
        };
        raft.State.GenesisApplied += mode =>
        {
            if (mode != options.Validation)
            {
                LogValidationMismatch(logger, options.DataDir, Name(mode), Name(options.Validation));
                Fatal(new InvalidOperationException($"the chain's genesis validates {mode.ToString().ToLowerInvariant()}, this node is configured with --validation {options.Validation.ToString().ToLowerInvariant()}"));
            }
        };
        await using var genesis = new GenesisProposer(raft, options.ChainId, options.Validation, loggerFactory.CreateLogger<GenesisProposer>());
        SignerHost? signerHost = null;
        using var sessionChannel = new SessionChannel(options, () => signerHost?.Current, identity);
        await using var coordinator = new HeadSigningCoordinator(options.NodeId, raft.State, raft, options.Limits, time, metrics,
            loggerFactory.CreateLogger<HeadSigningCoordinator>(), keys?.Bootstrap, sessionChannel);
        await using var submits = new SubmitService(raft, raft.State, options.Limits, time, metrics, loggerFactory.CreateLogger<SubmitService>(), Fatal, loops, coordinator);
        using var forwarder = new LeaderForwarder(options.Limits.MaxForwardedRequests, identity);
        // The read barrier's own: its questions to the leader never wait behind forwarded submits.
        using var barrierForwarder = new LeaderForwarder(2, identity);
        using var intake = new LeaderIntake(raft, TimeSpan.FromMilliseconds(options.Limits.MinKeyRotationIntervalMs));
        using var channel = new LeaderChannel(raft, coordinator, intake, identity);
        await using var signers = new SignerHost(options, raft.State, channel, metrics, loggerFactory, loops);
        signerHost = signers;
        await using var dkg = new DkgService(options, raft, channel, signers.Start, keys is not null, loggerFactory.CreateLogger<DkgService>(), identity);
        L1.L1Service? l1 = null;
        if (options.L1 is { } l1Options)
        {
            try
            {
                l1 = new L1.L1Service(l1Options, raft, metrics, time, loggerFactory.CreateLogger<L1.L1Service>(), L1.L1Service.LoadKey(l1Options));
            }
            catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
            {
                await Console.Error.WriteLineAsync("invalid configuration: " + e.Message).ConfigureAwait(false);
                return ConfigurationExitCode;
            }
        }

        await using var l1Scope = l1 is null ? null : (IAsyncDisposable)l1;
        await using var retention = options.RetainHeights == 0 ? null
            : new Storage.RetentionService(raft, options.RetainHeights, () => l1?.Status.FinalizedHeight, time, loggerFactory.CreateLogger<Storage.RetentionService>());

        // Nothing is ordered before the chain's genesis (its rules); with a key (files or a DKG at boot) nothing before
        // the key epoch either, so that every batch is signed.
        if (keys is not null || options.DkgThreshold is not null)
            submits.ReadyToOrder = () => raft.State.HasGenesis && raft.State.CurrentKeyEpoch is not null;
        else
            submits.ReadyToOrder = () => raft.State.HasGenesis;

        // Signers must apply a batch before they sign its head, and followers serve a signed head once they apply it.
        // The next round of an entry the leader proposes tells the followers the commit index; when none comes soon
        // (FollowerNudge: FollowerNudgeDelayMs, or while entries flow twice their usual gap, at most MaxRiderWaitMs), the
        // leader sends them a round of their own, rather than wait for the next heartbeat.
        raft.State.SessionsStarted += _ => raft.FollowersMustApply();
        raft.State.HeadSigned += signed =>
        {
            raft.FollowersMustApply();
            metrics.HeadsSigned.Add(1);
            if (!raft.IsLeader)
                return;
            // Commit to signed, on the leader: from each covered batch's apply to the verification of its head. This runs
            // on the applier: at most the newest 4,096 covered batches, so that the first head after a
            // long signing outage does not read a million batches back from the store before apply goes on.
            for (var height = Math.Max(signed.CoveredFrom, signed.Head.Height >= 4_096 ? signed.Head.Height - 4_095 : 1); height <= signed.Head.Height; height++)
            {
                if (raft.State.GetBatch(height) is { } batch && signed.Head.SignedAtMs >= batch.OrderedAtMs)
                    metrics.OrderedToSigned.Record(signed.Head.SignedAtMs - batch.OrderedAtMs);
            }

            // The head.sign span: from the head's batch ordered to its signature verified, under that batch's span.
            if (NodeTracing.Source.HasListeners() && raft.State.GetBatch(signed.Head.Height) is { } own
                && NodeTracing.Record("head.sign", raft.State.Traces.Batch(signed.Head.Height), (long)own.OrderedAtMs, (long)signed.Head.SignedAtMs,
                    [new("sequencer.height", (long)signed.Head.Height), new("sequencer.covered_batches", (long)(signed.Head.Height - signed.CoveredFrom + 1)),
                     new("frost.signers", string.Join(',', signed.Head.Signers))]) is { } context)
            {
                raft.State.Traces.SetHead(signed.Head.Height, context);
            }
        };
        var requestBudget = new RequestBudget(options.Limits.MaxInFlightRequestBytes, options.Limits.ClientInFlightRequestBytes,
            ClientRateLimit.PartitionKey);
        long lastFailureLogged = 0, failuresSinceLogged = 0;
        RegisterGauges(metrics, raft, submits, requestBudget);
        raft.LeaderChanged += () => metrics.LeaderChanges.Add(1);

        app.Use(async (context, next) =>
        {
            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (BadHttpRequestException e)
            {
                await ApiResponses.WriteErrorAsync(context, e.StatusCode, e.StatusCode == 413 ? "body_too_large" : "bad_request", e.Message).ConfigureAwait(false);
            }
            catch (InvariantViolationException e)
            {
                Fatal(e);
                await ApiResponses.WriteErrorAsync(context, 500, "internal_error", "the node stopped on a failed invariant").ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
            {
                // The client went away.
            }
            catch (Exception e) when (!context.Response.HasStarted)
            {
                // A defect, never bad input (every decoder answers 4xx): one line, at most once per 5 s, so that a
                // stream of such requests cannot flood the log; the client gets a JSON 500.
                var now = Environment.TickCount64;
                var last = Interlocked.Read(ref lastFailureLogged);
                if ((last == 0 || now - last >= 5_000) && Interlocked.CompareExchange(ref lastFailureLogged, now, last) == last)
                    LogUnexpectedRequestFailure(logger, context.Request.Method, context.Request.Path, e.GetType().Name, e.Message, Interlocked.Exchange(ref failuresSinceLogged, 0));
                else
                    Interlocked.Increment(ref failuresSinceLogged);
                await ApiResponses.WriteErrorAsync(context, 500, "internal_error", "the node failed to handle this request; it is logged").ConfigureAwait(false);
            }
        });
        if (identity is not null && internalListener is not null)
        {
            // Internal routes only on the internal listener (whose TLS handshake already required a member's
            // certificate), and only internal routes there; the member is recorded for the handlers' sender checks.
            var internalPort = internalListener.Port;
            app.Use(async (context, next) =>
            {
                var onInternal = context.Connection.LocalPort == internalPort;
                if (context.Request.Path.StartsWithSegments("/internal", StringComparison.Ordinal) != onInternal)
                {
                    await ApiResponses.WriteErrorAsync(context, 404, "not_found", onInternal
                        ? "the internal listener serves only the /internal routes"
                        : "the /internal routes are served only on the members' internal listener (mutual TLS)").ConfigureAwait(false);
                    return;
                }

                if (onInternal)
                {
                    if (identity.Identify(context.Connection.ClientCertificate, "the internal listener") is not { } member)
                    {
                        await ApiResponses.WriteErrorAsync(context, 403, "not_a_member", "a member's certificate is required").ConfigureAwait(false);
                        return;
                    }

                    InternalCaller.Set(context, member);
                }

                await next(context).ConfigureAwait(false);
            });
        }

        app.UseClientRateLimit(options);
        app.UseStatusCodePages(async context =>
        {
            var response = context.HttpContext.Response;
            var code = response.StatusCode switch { 404 => "not_found", 405 => "method_not_allowed", _ => "http_error" };
            await ApiResponses.WriteErrorAsync(context.HttpContext, response.StatusCode, code,
                $"{context.HttpContext.Request.Method} {context.HttpContext.Request.Path} is not a route of this API (see DESIGN section 10)").ConfigureAwait(false);
        });
        var barrier = new ReadBarrier(options, raft, barrierForwarder);
        barrier.Map(app);
        Replication.FollowerTips.Map(app, () => raft.State);
        new SequencerApi(options, raft, submits, forwarder, metrics, time, loops, barrier, requestBudget, l1).Map(app);
        new AdminApi(options, time, requestBudget).Map(app);
        new SigningApi(options, raft, coordinator, () => signers.Current, dkg, barrier, intake, requestBudget, new RequestBudget(SigningApi.InternalBudgetBytes), throttledLogs.CreateLogger(typeof(SigningApi).FullName!)).Map(app);
        app.MapPrometheusScrapingEndpoint("/metrics");
        new OpenApiDocument(options).Map(app);
        StatusPage.Map(app);
        OpenApiDocument.Check(app, logger);

        try
        {
            await raft.StartAsync(fatalStop.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (IsDamagedData(e))
        {
            LogDamaged(logger, e, options.DataDir, Describe(e));
            return DamagedDataExitCode;
        }

        await app.StartAsync(fatalStop.Token).ConfigureAwait(false);
        // Lifetimes start here, once everything is built and the node has joined: signing, then the signer and the DKG.
        genesis.Start(loops);
        coordinator.Start(loops);
        if (keys?.Share is not null)
            signers.Start(keys.Share, keys.Group, keys.Bootstrap.Epoch);
        dkg.Start(loops);
        l1?.Start(loops);
        retention?.Start(loops);
        if (identity is not null)
            loops.Start("revoked Raft connections", TimeSpan.FromSeconds(30), (self, token) => CloseRevokedAsync(identity, self, logger, token), fatalStop.Token);
        LogListening(logger, options.NodeId, options.Api, options.Raft);

        var logWatch = WatchLogAsync(raft, Fatal, fatalStop.Token);
        try
        {
            await Task.Delay(Timeout.Infinite, fatalStop.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
        finally
        {
            // From here on the node must be gone within the deadline, whatever is stuck (the disposals below included).
            watchdog.Arm(options.NodeId);
            LogStopping(logger, options.NodeId);
            using var drain = new CancellationTokenSource(exitCode == 0 ? HttpDrain : FatalHttpDrain);
            await app.StopAsync(drain.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            await logWatch.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        return exitCode;
    }

    // Once a second: the open Raft connections with a member whose certificate was revoked since are closed (its new
    // ones are refused at the handshake), so a revocation cuts the member off without restarting the others.
    private static async Task CloseRevokedAsync(Security.ClusterIdentity identity, BackgroundLoop self, ILogger logger, CancellationToken token)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        while (!token.IsCancellationRequested)
        {
            try
            {
                await timer.WaitForNextTickAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            self.Beat();
            if (identity.CloseRevokedConnections() is { Count: > 0 } cut)
                LogRevokedConnectionsClosed(logger, string.Join(", ", cut));
        }
    }

    [LoggerMessage(EventId = 44, Level = LogLevel.Warning, Message = "Identity check: closed the open Raft connections with member(s) [{Members}], whose certificate is revoked; their new connections are refused")]
    private static partial void LogRevokedConnectionsClosed(ILogger logger, string members);

    // DotNext's WAL runs its applier and flusher in the background; when one dies (a corrupt entry, a failed
    // invariant, a disk error), WaitForApplyAsync starts to throw. The node must then stop, not linger half-alive.
    private static async Task WatchLogAsync(RaftHost raft, Action<Exception> fatal, CancellationToken token)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(250));
        while (true)
        {
            try
            {
                await timer.WaitForNextTickAsync(token).ConfigureAwait(false);
                await raft.WaitForApplyAsync(0, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                fatal(e);
                return;
            }
        }
    }

    // The WAL (DotNext's IntegrityException is an IOException), the store, or their invariants found damage on disk.
    [LoggerMessage(EventId = 43, Level = LogLevel.Warning, Message = "Identity check: {Line}")]
    private static partial void LogRevocationList(ILogger logger, string line);

    [LoggerMessage(EventId = 41, Level = LogLevel.Critical, Message = "The chain in {DataDir} is chain {Stored} (its genesis entry, or its headers), but this node is configured with --chain-id {Configured}: every commitment it computed would differ from the other members'. Start it with --chain-id {Stored}, or give it a fresh data directory for a new chain")]
    private static partial void LogChainMismatch(ILogger logger, string dataDir, ulong stored, ulong configured);

    [LoggerMessage(EventId = 42, Level = LogLevel.Critical, Message = "The log (its genesis entry, or a snapshot the leader sent) is of chain {Logged}, but this node is configured with --chain-id {Configured}: the node stops rather than compute commitments for another chain. Either this node is misconfigured (start it with --chain-id {Logged}), or the member that proposed the genesis is (the members must agree on the chain id before a chain starts)")]
    private static partial void LogForeignChain(ILogger logger, ulong logged, ulong configured);

    [LoggerMessage(EventId = 40, Level = LogLevel.Critical, Message = "The chain in {DataDir} validates txs as {Logged} (its genesis entry), but this node is configured with --validation {Configured}: it refuses to apply under other rules. Start it with --validation {Logged}, or give it a fresh data directory for a new chain")]
    private static partial void LogValidationMismatch(ILogger logger, string dataDir, string logged, string configured);

    private static string Name(Sequencer.Core.Validation.ValidationMode mode) => mode.ToString().ToLowerInvariant();

    private static bool IsDamagedData(Exception e)
        => e is IOException or InvariantViolationException or LiteDB.LiteException or Sequencer.Core.Encoding.LogFormatException or UnauthorizedAccessException
            || (e.InnerException is { } inner && IsDamagedData(inner));

    private static string Describe(Exception e) => e.InnerException is { } inner && e is not IOException ? $"{e.Message} ({inner.Message})" : e.Message;

    private static void RegisterGauges(NodeMetrics metrics, RaftHost raft, SubmitService submits, RequestBudget requestBudget)
    {
        metrics.ObserveGauge("sequencer.requests.inflight_bytes", "By", "Request-body bytes reserved in the in-flight request budget (MaxInFlightRequestBytes).", () => requestBudget.InUseBytes);
        metrics.ObserveGauge("sequencer.requests.budget_refusals", "{request}", "Requests refused with 429 because the in-flight request budget was spent, since start.", () => requestBudget.Refusals);
        metrics.ObserveGauge("sequencer.raft.term", "{term}", "The current Raft term.", () => raft.Term);
        metrics.ObserveGauge("sequencer.raft.commit_index", "{entry}", "The last committed Raft index.", () => raft.CommitIndex);
        metrics.ObserveGauge("sequencer.raft.applied_index", "{entry}", "The last applied Raft index.", () => raft.State.AppliedIndex);
        metrics.ObserveGauge("sequencer.store.pruned_height", "{batch}", "The highest height whose tx data retention pruned (--retain-heights; 0: none).", () => (long)raft.PrunedHeight);
        metrics.ObserveGauge("sequencer.raft.is_leader", "{bool}", "1 while this node is the leader.", () => raft.IsLeader ? 1 : 0);
        metrics.ObserveGauge("sequencer.height", "{batch}", "The height of the last applied batch.", () => (long)(raft.State.LastHeader?.Height ?? 0));
        metrics.ObserveGauge("sequencer.pending.txs", "{tx}", "Txs queued on the leader for a batch.", () => submits.QueuedTxs);
        metrics.ObserveGauge("sequencer.inflight.entries", "{entry}", "Batch entries proposed and not yet committed.", () => submits.InFlightEntries);
        metrics.ObserveGauge("sequencer.signing.signed_through", "{batch}", "The highest signed head: every height at or below it is covered.", () => (long)raft.State.SignedThrough);
        metrics.ObserveGauge("sequencer.signing.lag", "{batch}", "Applied batches above the highest signed head.", () => (long)((raft.State.LastHeader?.Height ?? 0) - Math.Min(raft.State.LastHeader?.Height ?? 0, raft.State.SignedThrough)));
        metrics.ObserveGauge("sequencer.store.unpersisted_entries", "{entry}", "Applied entries not yet written to the store.", () => raft.State.UnpersistedEntries);
    }

    [LoggerMessage(EventId = 16, Level = LogLevel.Error, Message = "{Method} {Path} failed: {ExceptionType}: {Problem} ({Suppressed} more such failures since the last line)")]
    private static partial void LogUnexpectedRequestFailure(ILogger logger, string method, string path, string exceptionType, string problem, long suppressed);

    [LoggerMessage(EventId = 15, Level = LogLevel.Critical, Message = "The node cannot use the data in {DataDir}: {Problem}")]
    private static partial void LogIncompatibleData(ILogger logger, string dataDir, string problem);

    [LoggerMessage(EventId = 14, Level = LogLevel.Critical, Message = "A background loop ended: {Loop} stopped ({Reason}). The node stops rather than stay half alive; the Raft log and the store keep everything applied, so a restart resumes.")]
    private static partial void LogLoopDied(ILogger logger, Exception? exception, string loop, string reason);

    [LoggerMessage(EventId = 10, Level = LogLevel.Information, Message = "Node {NodeId} serves the API at {Api}, Raft at {Raft}")]
    private static partial void LogListening(ILogger logger, int nodeId, string api, string raft);

    [LoggerMessage(EventId = 17, Level = LogLevel.Warning, Message = "Identity check: {Line}")]
    private static partial void LogRefusedPeer(ILogger logger, string line);

    [LoggerMessage(EventId = 18, Level = LogLevel.Warning, Message = "Node {NodeId} runs without the consortium's certificates (--certs): its Raft port and internal routes are plaintext and accept anyone. Development only; `sequencer-node certs` makes them")]
    private static partial void LogNoIdentities(ILogger logger, int nodeId);

    [LoggerMessage(EventId = 11, Level = LogLevel.Information, Message = "Node {NodeId} is stopping")]
    private static partial void LogStopping(ILogger logger, int nodeId);

    [LoggerMessage(EventId = 13, Level = LogLevel.Critical, Message = "The data in {DataDir} is damaged or unreadable: {Problem}. The node stops rather than serve possibly corrupt data. To rejoin, move {DataDir} away and start the node again: it catches up from its peers.")]
    private static partial void LogDamaged(ILogger logger, Exception exception, string dataDir, string problem);

    [LoggerMessage(EventId = 12, Level = LogLevel.Critical, Message = "Fatal fault; the node stops so that it never serves or replicates wrong data")]
    private static partial void LogFatal(ILogger logger, Exception exception);

    // Metrics: Prometheus at /metrics, and OTLP when an endpoint is configured. Traces (the batch, signing, posting and
    // submit spans of NodeTracing and RaftTracing): OTLP and/or a JSON-lines file, only when configured, so that a node
    // that exports nothing creates no spans at all.
    private static void ConfigureTelemetry(IServiceCollection services, NodeOptions options)
    {
        var telemetry = services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("sequencer-node", serviceInstanceId: $"node{options.NodeId}"));
        telemetry.WithMetrics(metrics =>
        {
            // System.Runtime: the runtime's own meter (GC, heap, thread pool, CPU time, working set, the JIT's compiled
            // methods and compilation time), read at export only.
            metrics.AddMeter(NodeMetrics.MeterName).AddMeter("DotNext.*").AddMeter("System.Runtime").AddPrometheusExporter();
            if (options.OtlpEndpoint is { } endpoint)
                metrics.AddOtlpExporter(otlp => Otlp(otlp, endpoint, "metrics"));
        });
        if (options.OtlpEndpoint is null && options.TraceFile is null)
            return;
        telemetry.WithTracing(tracing =>
        {
            tracing.AddSource(NodeTracing.SourceName, Sequencer.Raft.RaftTracing.SourceName);
            if (options.TraceFile is { } file)
            {
                var path = Path.Combine(options.DataDir, file);
                Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
                tracing.AddProcessor(new OpenTelemetry.BatchActivityExportProcessor(new JsonLinesSpanExporter(path), maxQueueSize: 8192, scheduledDelayMilliseconds: 500));
            }

            if (options.OtlpEndpoint is { } endpoint)
                tracing.AddOtlpExporter(otlp => Otlp(otlp, endpoint, "traces"));
        });

        // gRPC at the endpoint, unless it names an http/protobuf path (…/v1/traces): then …/v1/<signal>.
        static void Otlp(OpenTelemetry.Exporter.OtlpExporterOptions otlp, string endpoint, string signal)
        {
            var uri = new Uri(endpoint);
            if (uri.AbsolutePath.EndsWith("/v1/traces", StringComparison.Ordinal) || uri.AbsolutePath.EndsWith("/v1/metrics", StringComparison.Ordinal))
            {
                otlp.Protocol = OpenTelemetry.Exporter.OtlpExportProtocol.HttpProtobuf;
                var path = uri.AbsolutePath[..uri.AbsolutePath.LastIndexOf("/v1/", StringComparison.Ordinal)];
                otlp.Endpoint = new Uri(uri, $"{path}/v1/{signal}");
            }
            else
            {
                otlp.Protocol = OpenTelemetry.Exporter.OtlpExportProtocol.Grpc;
                otlp.Endpoint = uri;
            }
        }
    }
}

/// <summary>
/// Ends the process when a stop takes longer than its deadline. It runs on a thread of its own, so that a starved
/// thread pool or a deadlock cannot hold it up; disposing it (the stop finished) disarms it.
/// </summary>
internal sealed class ShutdownWatchdog(TimeSpan deadline) : IDisposable
{
    private readonly ManualResetEventSlim finished = new();
    private int armed;

    /// <summary>Starts the countdown (once).</summary>
    public void Arm(int nodeId)
    {
        if (Interlocked.Exchange(ref armed, 1) == 1)
            return;
        var thread = new Thread(() =>
        {
            if (finished.Wait(deadline))
                return;
            // The console logger writes from a queue that may not drain before exit: write the reason directly.
            Console.Error.WriteLine($"fatal: node {nodeId} did not stop within {deadline.TotalSeconds:0} s of being asked to; exiting now. "
                + "Everything applied is in the Raft log, which the next start replays.");
            Console.Error.Flush();
            Environment.Exit(NodeRunner.FatalExitCode);
        })
        {
            IsBackground = true,
            Name = "shutdown watchdog",
        };
        thread.Start();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        // Set, never disposed: the watchdog thread may still be about to wait on it.
        finished.Set();
    }
}

/// <summary>
/// The node's clock: the system clock shifted by a skew that the chaos harness can change at run time
/// (<c>POST /admin/clock-skew</c>). Only wall-clock readings move; timers and timestamps for elapsed time do not.
/// </summary>
public sealed class AdjustableClock(TimeProvider inner) : TimeProvider
{
    private long skewMs;

    /// <summary>The current skew in milliseconds.</summary>
    public long SkewMs
    {
        get => Interlocked.Read(ref skewMs);
        set => Interlocked.Exchange(ref skewMs, value);
    }

    /// <inheritdoc/>
    public override DateTimeOffset GetUtcNow() => inner.GetUtcNow().AddMilliseconds(SkewMs);

    /// <inheritdoc/>
    public override long GetTimestamp() => inner.GetTimestamp();

    /// <inheritdoc/>
    public override long TimestampFrequency => inner.TimestampFrequency;

    /// <inheritdoc/>
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        => inner.CreateTimer(callback, state, dueTime, period);

}
