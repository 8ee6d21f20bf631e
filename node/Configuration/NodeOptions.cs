using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Sequencer.Core;

namespace Sequencer.Node.Configuration;

/// <summary>One member of the cluster as every node is configured with it.</summary>
public sealed record MemberOptions
{
    /// <summary>The member's id, 1 to 255; also its FROST signer id later.</summary>
    public int Id { get; init; }

    /// <summary>The Raft endpoint the member advertises (host:port). All nodes must use the same value for it.</summary>
    public string Raft { get; init; } = string.Empty;

    /// <summary>The member's HTTP API base address, used to forward submits to the leader.</summary>
    public string Api { get; init; } = string.Empty;

    /// <summary>
    /// The member's internal listener (https://IP:PORT), for the routes members use among themselves (signature shares,
    /// nonce commitments, DKG messages, read index), mutual TLS with the consortium's certificates. Required with
    /// <see cref="NodeOptions.CertificatesDirectory"/>; without certificates the internal routes are served on the API.
    /// </summary>
    public string? Internal { get; init; }

    /// <summary>Where the member serves its internal routes: its internal listener, or (without certificates) its API.</summary>
    [JsonIgnore]
    public string InternalBase => Internal ?? Api;
}

/// <summary>Raft timing.</summary>
public sealed record RaftTimingOptions
{
    /// <summary>The lower bound of the randomized election timeout.</summary>
    public int ElectionTimeoutLowerMs { get; init; } = 300;

    /// <summary>The upper bound of the randomized election timeout.</summary>
    public int ElectionTimeoutUpperMs { get; init; } = 600;

    /// <summary>
    /// The timeout of one Raft request, snapshot transfers included. DotNext rejects a repeated InstallSnapshot for an
    /// index the follower already committed, so a snapshot whose answer times out is resent until the leader's
    /// snapshot moves on; the timeout must therefore cover a whole snapshot transfer and install, not just a heartbeat.
    /// </summary>
    public int? RequestTimeoutMs { get; init; } = 2000;

    /// <summary>The heartbeat period as a share of the lower election timeout, in (0, 1).</summary>
    public double HeartbeatThreshold { get; init; } = 0.3;
}

/// <summary>
/// The whole configuration of a node: from a JSON file (<c>--config</c>), then overridden by flags. Validated at
/// startup by <see cref="Validate"/>; a node with an invalid configuration refuses to start and says why.
/// </summary>
public sealed record NodeOptions
{
    /// <summary>This node's member id.</summary>
    public int NodeId { get; init; }

    /// <summary>Where the WAL and the store live.</summary>
    public string DataDir { get; init; } = string.Empty;

    /// <summary>The Raft endpoint this node advertises; must equal its entry in <see cref="Members"/>.</summary>
    public string Raft { get; init; } = string.Empty;

    /// <summary>Where the Raft listener binds, when it differs from the advertised endpoint (behind a proxy).</summary>
    public string? RaftListen { get; init; }

    /// <summary>The HTTP API base address to listen on.</summary>
    public string Api { get; init; } = string.Empty;

    /// <summary>The rollup chain id written into every header; the same on every node.</summary>
    public ulong ChainId { get; init; } = 1;

    /// <summary>Every member, this node included.</summary>
    public IReadOnlyList<MemberOptions> Members { get; init; } = [];

    /// <summary>All limits.</summary>
    public SequencerLimits Limits { get; init; } = new();

    /// <summary>Raft timing.</summary>
    public RaftTimingOptions RaftTiming { get; init; } = new();

    /// <summary>
    /// The size of one WAL chunk file for a new log (an existing log keeps the size it was created with): a power of two,
    /// because DotNext 6.12 splits a log address into chunk and offset with a shift and a mask (any other size
    /// corrupts the log at the first chunk boundary). The WAL keeps every chunk from the compaction point to its tail in
    /// process memory, and a chunk below the 2 MiB huge page is discarded when compaction releases it, while DotNext keeps
    /// released huge-page-aligned chunks resident in its pool (docs/design.md, departure 9). An entry may span chunks.
    /// </summary>
    public int WalChunkBytes { get; init; } = 1024 * 1024;

    /// <summary>
    /// How many applied entries the WAL keeps behind the store before it may be compacted, so that a briefly lagging
    /// follower catches up from the log; <see cref="WalRetainedBytes"/> caps them in bytes.
    /// </summary>
    public long WalRetainedEntries { get; init; } = 4096;

    /// <summary>
    /// The most payload bytes of applied entries the WAL keeps behind the store: the log is compacted behind the newest
    /// entry that leaves at most this many bytes (plus one entry) after it, even when that is fewer than
    /// <see cref="WalRetainedEntries"/> entries. This bounds the WAL's memory whatever the batch size.
    /// </summary>
    public long WalRetainedBytes { get; init; } = 32L * 1024 * 1024;

    /// <summary>
    /// Retention (0: keep everything, the default): the tx data (hashes, receive times and tx index records) of heights
    /// more than this many below the stored height is pruned once a signed head covers them (and, with L1 posting, a
    /// final L1 post); headers, commitments, history nodes, signed heads and account nonces stay. Ethereum validation
    /// only: an opaque chain's duplicate check needs every ordered tx hash.
    /// </summary>
    public ulong RetainHeights { get; init; }

    /// <summary>
    /// The consortium's certificates (from <c>certs</c>): ca.crt, every member's node-N.crt (pinned) and this node's
    /// node-N.key. With them the Raft port and the internal listener are mutual TLS and accept members only. Without
    /// them (development only) both are plaintext and unauthenticated, and the node says so at start.
    /// </summary>
    public string? CertificatesDirectory { get; init; }

    /// <summary>
    /// Allows running without <see cref="CertificatesDirectory"/> on addresses other than loopback (<c>--insecure-plaintext</c>):
    /// the Raft port and the internal routes then accept anyone who can reach them. For a test network only; without it
    /// a node without certificates refuses every address that is not loopback.
    /// </summary>
    public bool AllowPlaintext { get; init; }

    /// <summary>
    /// How the chain validates txs (issue 13): opaque bytes, or signed Ethereum transactions with one ordered tx per
    /// (sender, nonce). Written into the log at genesis by the first leader; a node configured otherwise refuses to run.
    /// </summary>
    public Sequencer.Core.Validation.ValidationMode Validation { get; init; } = Sequencer.Core.Validation.ValidationMode.Opaque;

    /// <summary>The bearer token of the /admin routes; null disables them.</summary>
    public string? AdminToken { get; init; }

    /// <summary>
    /// An OTLP collector (e.g. http://127.0.0.1:4317 for gRPC, or an http/protobuf URL ending in /v1/traces): the node
    /// exports its traces and metrics there. Null: no OTLP export (Prometheus at /metrics either way).
    /// </summary>
    public string? OtlpEndpoint { get; init; }

    /// <summary>A file the node appends its spans to, one JSON object per line (relative paths are under the data directory); null for none.</summary>
    public string? TraceFile { get; init; }

    /// <summary>A fixed skew added to this node's clock (the chaos harness's clock fault).</summary>
    public int ClockSkewMs { get; init; }

    /// <summary>
    /// The group key file (from <c>keygen</c>): with it, the leader establishes key epoch 1 in the log when the log has
    /// none, and no batch is ordered before it, so every batch carries a key epoch and is signed.
    /// </summary>
    public string? GroupKeyFile { get; init; }

    /// <summary>This node's secret key share file (mode 0600); with it, the node signs. Requires <see cref="GroupKeyFile"/>.</summary>
    public string? KeyShareFile { get; init; }

    /// <summary>
    /// With no key files: the threshold t of a Pedersen DKG that the nodes run among themselves when the cluster boots
    /// without a key (members must be 1..n). Each node keeps its share under <c>DATA/keys</c>; no batch is ordered
    /// before the key epoch is in force.
    /// </summary>
    public int? DkgThreshold { get; init; }

    /// <summary>A Byzantine-signer fault to start with: none, wrong-shares or silent (the chaos harness's fault).</summary>
    public string SignerFault { get; init; } = "none";

    /// <summary>Posting signed heads to an L1 inbox contract, or null for none.</summary>
    public L1Options? L1 { get; init; }

    /// <summary>Returns every problem, each as one sentence; empty when the configuration is usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>(Limits.Validate());
        void Require(bool condition, string message)
        {
            if (!condition)
                errors.Add(message);
        }

        Require(NodeId is >= 1 and <= 255, "node id must be in [1, 255]");
        Require(!string.IsNullOrWhiteSpace(DataDir), "a data directory is required (--data)");
        Require(TryParseEndPoint(Raft, out _), $"the Raft endpoint \"{Raft}\" is not host:port");
        Require(RaftListen is null || TryParseEndPoint(RaftListen, out _), $"the Raft listen endpoint \"{RaftListen}\" is not host:port");
        Require(Uri.TryCreate(Api, UriKind.Absolute, out var api) && api.Scheme is "http" && api.Port > 0
            && (api.Host is "localhost" or "0.0.0.0" or "*" or "+" || System.Net.IPAddress.TryParse(api.Host.Trim('[', ']'), out _)),
            $"the API address \"{Api}\" is not http://IP:PORT (or localhost / 0.0.0.0)");
        Require(Members.Count >= 1, "at least one member is required");
        Require(Members.Select(m => m.Id).Distinct().Count() == Members.Count, "member ids are unique");
        Require(Members.Select(m => m.Raft).Distinct(StringComparer.OrdinalIgnoreCase).Count() == Members.Count, "member Raft endpoints are unique");
        foreach (var member in Members)
        {
            Require(member.Id is >= 1 and <= 255, $"member id {member.Id} must be in [1, 255]");
            Require(TryParseEndPoint(member.Raft, out _), $"member {member.Id}: Raft endpoint \"{member.Raft}\" is not host:port");
            Require(Uri.TryCreate(member.Api, UriKind.Absolute, out _), $"member {member.Id}: API address \"{member.Api}\" is not a URL");
            Require(member.Internal is null || (Uri.TryCreate(member.Internal, UriKind.Absolute, out var inside) && inside.Scheme == "https" && inside.Port > 0
                && System.Net.IPAddress.TryParse(inside.Host.Trim('[', ']'), out _)), $"member {member.Id}: internal address \"{member.Internal}\" is not https://IP:PORT");
            Require(CertificatesDirectory is null || member.Internal is not null, $"member {member.Id} has no internal address (ID=RAFT,API,INTERNAL): with certificates the internal routes are mutual TLS on their own listener");
            Require(CertificatesDirectory is not null || member.Internal is null, $"member {member.Id}: an internal listener needs the consortium's certificates (--certs)");
        }

        Require(CertificatesDirectory is null || Directory.Exists(CertificatesDirectory), $"the certificates directory \"{CertificatesDirectory}\" does not exist");
        if (CertificatesDirectory is null && !AllowPlaintext && PlaintextExposure() is { } exposed)
        {
            errors.Add($"without the consortium's certificates (--certs) the Raft port and the internal routes are plaintext and accept anyone, so every address must be loopback, and {exposed} is not: "
                + "make certificates with `sequencer-node certs` and pass --certs DIR (with each member's internal address), or pass --insecure-plaintext on a test network");
        }

        var self = Members.FirstOrDefault(m => m.Id == NodeId);
        Require(self is not null, $"node {NodeId} is not among the members");
        Require(self is null || string.Equals(self.Raft, Raft, StringComparison.OrdinalIgnoreCase),
            $"node {NodeId} advertises {Raft} but its member entry says {self?.Raft}");
        Require(self?.Internal is null || !Uri.TryCreate(self.Internal, UriKind.Absolute, out var ownInternal) || api is null || ownInternal.Port != api.Port,
            "the internal listener needs a port of its own, not the API's");
        Require(OtlpEndpoint is null || (Uri.TryCreate(OtlpEndpoint, UriKind.Absolute, out var otlp) && otlp.Scheme is "http" or "https"),
            $"the OTLP endpoint \"{OtlpEndpoint}\" is not an http(s) URL");
        Require(RaftTiming.ElectionTimeoutLowerMs >= 50 && RaftTiming.ElectionTimeoutUpperMs > RaftTiming.ElectionTimeoutLowerMs,
            "election timeouts need 50 <= lower < upper");
        Require(RaftTiming.HeartbeatThreshold is > 0 and < 1, "the heartbeat threshold must be in (0, 1)");
        Require(RaftTiming.RequestTimeoutMs is null or > 0, "the Raft request timeout must be positive");
        Require(WalChunkBytes >= 64 * 1024 && WalChunkBytes <= 1024 * 1024 * 1024, "the WAL chunk size must be in [64 KiB, 1 GiB]");
        Require(int.IsPow2(WalChunkBytes), "the WAL chunk size must be a power of two (DotNext splits log addresses with a shift and a mask)");
        Require(WalRetainedEntries >= 0, "the retained WAL entries cannot be negative");
        Require(WalRetainedBytes >= 0, "the retained WAL bytes cannot be negative");
        Require(RetainHeights == 0 || Validation == Sequencer.Core.Validation.ValidationMode.Ethereum,
            "--retain-heights needs --validation ethereum: an opaque chain refuses a tx twice only by its hash, so every node must keep every ordered hash (an ethereum chain refuses it by its sender's nonce)");
        Require(Math.Abs(ClockSkewMs) <= 24 * 3600 * 1000, "the clock skew must be within a day");
        Require(AdminToken is null || AdminToken.Length >= 16, "the admin token must be at least 16 characters");
        Require(KeyShareFile is null || GroupKeyFile is not null, "a key share needs the group key file too (--group-key)");
        Require(GroupKeyFile is null || File.Exists(GroupKeyFile), $"the group key file \"{GroupKeyFile}\" does not exist");
        Require(KeyShareFile is null || File.Exists(KeyShareFile), $"the key share file \"{KeyShareFile}\" does not exist");
        Require(DkgThreshold is null || GroupKeyFile is null, "--dkg-threshold and --group-key exclude each other: the key comes from the DKG or from files");
        Require(DkgThreshold is null || (DkgThreshold >= 1 && DkgThreshold <= Members.Count), $"the DKG threshold {DkgThreshold} must be in [1, {Members.Count}]");
        Require(DkgThreshold is null || Members.Select(m => m.Id).Order().SequenceEqual(Enumerable.Range(1, Members.Count)), "a DKG needs member ids 1..n");
        Require(ParseSignerFault(SignerFault) is not null, $"the signer fault \"{SignerFault}\" is not none, wrong-shares or silent");
        if (L1 is not null)
            errors.AddRange(L1.Validate());
        return errors;
    }

    /// <summary>Parses a signer fault name, or null.</summary>
    public static Signing.SignerFault? ParseSignerFault(string? text) => text switch
    {
        null or "" or "none" => Signing.SignerFault.None,
        "wrong-shares" => Signing.SignerFault.WrongShares,
        "silent" => Signing.SignerFault.Silent,
        _ => null,
    };

    // The first address of this configuration that is not loopback (this node's listeners, and every member's Raft and
    // API address, which this node's plaintext Raft and forwarded requests would cross), or null.
    private string? PlaintextExposure()
    {
        var addresses = new List<(string What, string? Address)> { ("the API address", Api), ("the Raft endpoint", Raft), ("the Raft listen endpoint", RaftListen) };
        foreach (var member in Members)
            addresses.AddRange([($"member {member.Id}'s Raft endpoint", member.Raft), ($"member {member.Id}'s API address", member.Api)]);
        return addresses.FirstOrDefault(a => a.Address is { } text && !Sequencer.Client.Local.ListenPorts.IsLoopbackAddress(text)) is (var what, { } address) ? $"{what} \"{address}\"" : null;
    }

    /// <summary>Parses <c>host:port</c> (IPv4, [IPv6] or a host name resolved to its first address).</summary>
    public static bool TryParseEndPoint(string? text, out IPEndPoint endPoint)
    {
        endPoint = new IPEndPoint(IPAddress.None, 0);
        if (string.IsNullOrWhiteSpace(text))
            return false;
        if (IPEndPoint.TryParse(text, out var parsed) && parsed.Port > 0)
        {
            endPoint = parsed;
            return true;
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), out var port) || port is <= 0 or > 65535)
            return false;
        var host = text[..colon];
        if (host == "localhost")
        {
            endPoint = new IPEndPoint(IPAddress.Loopback, port);
            return true;
        }

        return false;
    }

    /// <summary>Parses <c>host:port</c>.</summary>
    /// <exception cref="FormatException">The text is not an endpoint.</exception>
    public static IPEndPoint ParseEndPoint(string text)
        => TryParseEndPoint(text, out var endPoint) ? endPoint : throw new FormatException($"\"{text}\" is not host:port");

    /// <summary>Reads a JSON configuration file.</summary>
    /// <exception cref="InvalidDataException">The file is not valid JSON of this shape.</exception>
    public static NodeOptions Load(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return JsonSerializer.Deserialize(stream, NodeOptionsJsonContext.Default.NodeOptions)
                ?? throw new InvalidDataException($"{path} is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not a valid node configuration: {e.Message}", e);
        }
    }

    /// <summary>This configuration as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, NodeOptionsJsonContext.Default.NodeOptions);
}

/// <summary>JSON metadata for the configuration file: camelCase, comments and trailing commas allowed, unknown fields refused.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = true,
    ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(NodeOptions))]
internal sealed partial class NodeOptionsJsonContext : JsonSerializerContext;
