using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sequencer.Core.Security;

namespace Sequencer.Node.Security;

/// <summary>
/// This node's identity in the consortium and the pinned identities of every member (DESIGN section 5): the CA, this
/// node's certificate and identity key, and every member's certificate. It authenticates peers for mutual TLS on the
/// Raft port and the internal listener: a peer is accepted only with a certificate that is currently valid, issued by
/// the consortium's CA, byte for byte the certificate pinned for one of the configured members, and not on the
/// revocation list (<see cref="ConsortiumCertificates.RevokedFile"/> in the certificates directory, reread within a
/// second of a change: every internal request and every new connection is checked against it at once).
/// </summary>
public sealed class ClusterIdentity : IDisposable
{
    private readonly X509Certificate2 ca;
    private readonly Dictionary<string, int> membersByThumbprint;
    private readonly Dictionary<int, string> pinnedThumbprints;
    private readonly TimeProvider time;

    // The revocation list: its path, the thumbprints it names, and what the file looked like when read (so a change is
    // noticed), checked at most once a second.
    private readonly string revokedPath;
    private volatile HashSet<string> revoked = new(StringComparer.Ordinal);
    private (DateTime Written, long Length) revokedSeen;
    private long revokedCheckedAt;
    private readonly Lock revokedGate = new();

    private ClusterIdentity(string directory, int selfId, X509Certificate2 ca, X509Certificate2 certificate, IReadOnlyDictionary<int, X509Certificate2> members, TimeProvider time)
    {
        revokedPath = Path.Combine(directory, ConsortiumCertificates.RevokedFile);
        SelfId = selfId;
        this.ca = ca;
        Certificate = certificate;
        Members = members;
        this.time = time;
        membersByThumbprint = members.ToDictionary(m => Thumbprint(m.Value), m => m.Key, StringComparer.Ordinal);
        pinnedThumbprints = membersByThumbprint.ToDictionary(m => m.Value, m => m.Key);
    }

    /// <summary>This node's member id.</summary>
    public int SelfId { get; }

    /// <summary>This node's certificate, with its identity key.</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>Every member's pinned certificate, this node's included.</summary>
    public IReadOnlyDictionary<int, X509Certificate2> Members { get; }

    /// <summary>Called with a line for every refused peer (give it a throttled logger: a stranger may keep trying).</summary>
    public Action<string>? Refused { get; set; }

    /// <summary>Called with a line when the revocation list changes, or cannot be read (then the previous list stays).</summary>
    public Action<string>? Noticed { get; set; }

    /// <summary>True when member <paramref name="member"/>'s pinned certificate is on the revocation list.</summary>
    public bool IsRevoked(int member)
    {
        RefreshRevoked();
        return pinnedThumbprints.TryGetValue(member, out var thumbprint) && revoked.Contains(thumbprint);
    }

    /// <summary>The members whose pinned certificate is revoked.</summary>
    public IReadOnlyList<int> RevokedMembers
    {
        get
        {
            RefreshRevoked();
            var list = revoked;
            return [.. RevokedMembersOf(list)];
        }
    }

    /// <summary>
    /// Loads the identities from a certificates directory (<see cref="ConsortiumCertificates"/>): the CA, this node's
    /// certificate and key, and the certificate of each of <paramref name="members"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">A file is missing or invalid, a certificate is expired or not issued by the CA, or the key does not match.</exception>
    public static ClusterIdentity Load(string directory, int selfId, IEnumerable<int> members, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(members);
        time ??= TimeProvider.System;
        string Need(string file)
        {
            var path = Path.Combine(directory, file);
            return File.Exists(path) ? path : throw new InvalidDataException($"{path} is missing (make the consortium's certificates with `sequencer-node certs`)");
        }

        var keyPath = Need(ConsortiumCertificates.KeyFile(selfId));
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(keyPath) & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite)) != 0)
            throw new InvalidDataException($"{keyPath} is readable by others: an identity key must be owner-only (chmod 600)");
        X509Certificate2 ca;
        X509Certificate2 own;
        var pinned = new Dictionary<int, X509Certificate2>();
        try
        {
            ca = X509Certificate2.CreateFromPem(File.ReadAllText(Need(ConsortiumCertificates.CaCertificateFile)));
            own = X509Certificate2.CreateFromPemFile(Need(ConsortiumCertificates.CertificateFile(selfId)), keyPath);
            foreach (var id in members.Distinct())
                pinned[id] = X509Certificate2.CreateFromPem(File.ReadAllText(Need(ConsortiumCertificates.CertificateFile(id))));
        }
        catch (CryptographicException e)
        {
            throw new InvalidDataException($"a certificate or key under {directory} cannot be read: {e.Message}", e);
        }

        if (!pinned.TryGetValue(selfId, out var ownPinned))
            throw new InvalidDataException($"node {selfId} is not among the members");
        if (!own.RawDataMemory.Span.SequenceEqual(ownPinned.RawDataMemory.Span))
            throw new InvalidDataException($"node {selfId}'s certificate differs from the one pinned for it");
        var identity = new ClusterIdentity(directory, selfId, ca, own, pinned, time);
        // A revocation list that cannot be read stops the node at start (later, a bad edit keeps the list it had).
        identity.ReadRevoked(strict: true);
        identity.revokedCheckedAt = time.GetTimestamp();
        foreach (var id in identity.RevokedMembers.Where(id => id != selfId))
            identity.warnings.Add($"member {id}'s certificate is on the revocation list ({ConsortiumCertificates.RevokedFile}): it is refused");

        var now = time.GetUtcNow().UtcDateTime;
        foreach (var (id, certificate) in pinned)
        {
            // Another member's expired (or not yet valid) certificate is that member's problem: it is refused when it
            // connects, and this node starts with a warning. Its own, or one the CA did not issue, is a configuration error.
            // So is another member's revoked certificate (its own stops the node: every member with the list refuses it).
            var outsideValidity = now < certificate.NotBefore.ToUniversalTime() || now > certificate.NotAfter.ToUniversalTime();
            var revoked = identity.revoked.Contains(Thumbprint(certificate));
            var problem = (outsideValidity || revoked) && id != selfId
                ? identity.CheckIssuer(certificate, outsideValidity ? certificate.NotAfter.ToUniversalTime().AddSeconds(-1) : now)
                : identity.Check(certificate);
            if (problem is not null)
                throw new InvalidDataException($"member {id}'s certificate ({ConsortiumCertificates.CertificateFile(id)}): {problem}");
            if (outsideValidity)
                identity.warnings.Add($"member {id}'s certificate is valid only from {certificate.NotBefore.ToUniversalTime():u} to {certificate.NotAfter.ToUniversalTime():u}: that member is refused until it has a new one (make it with `certs` and pin it on every node)");
        }

        return identity;
    }

    private readonly List<string> warnings = [];

    /// <summary>What is wrong but does not stop this node (another member's certificate outside its validity).</summary>
    public IReadOnlyList<string> Warnings => warnings;

    /// <summary>The member a peer's certificate identifies, or null (and a line to <see cref="Refused"/>) when it is refused.</summary>
    public int? Identify(X509Certificate? presented, string where)
    {
        if (presented is null)
        {
            NoteRefusal(where, "no client certificate");
            return null;
        }

        using var owned = presented as X509Certificate2 is null ? new X509Certificate2(presented) : null;
        var certificate = owned ?? (X509Certificate2)presented;
        var thumbprint = Thumbprint(certificate);
        var now = time.GetUtcNow();
        RefreshRevoked();

        // A member's certificate, once checked, is trusted for a minute (and never past its expiry): the internal
        // listener checks every request, and building the chain each time would cost more than the request.
        // The list is read again on a hit: a check that ran against the previous list can put an entry back just after a
        // change emptied the cache.
        if (accepted.TryGetValue(thumbprint, out var known) && now < known.Until && !revoked.Contains(thumbprint))
            return known.Member;
        if (Check(certificate) is { } problem)
        {
            NoteRefusal(where, $"{problem} (subject {certificate.Subject})");
            return null;
        }

        var member = membersByThumbprint[thumbprint];
        var until = now.AddMinutes(1);
        accepted[thumbprint] = (member, until < certificate.NotAfter.ToUniversalTime() ? until : certificate.NotAfter.ToUniversalTime());
        return member;
    }

    private readonly ConcurrentDictionary<string, (int Member, DateTimeOffset Until)> accepted = new(StringComparer.Ordinal);

    /// <summary>Why <paramref name="certificate"/> is not a member's, or null when it is.</summary>
    public string? Check(X509Certificate2 certificate)
    {
        var now = time.GetUtcNow().UtcDateTime;
        if (now < certificate.NotBefore.ToUniversalTime())
            return "the certificate is not valid yet";
        if (now > certificate.NotAfter.ToUniversalTime())
            return $"the certificate expired on {certificate.NotAfter.ToUniversalTime():u}";
        var thumbprint = Thumbprint(certificate);
        if (revoked.Contains(thumbprint))
            return $"the certificate is revoked ({ConsortiumCertificates.RevokedFile}, thumbprint {thumbprint})";
        return CheckIssuer(certificate, now) ?? (membersByThumbprint.ContainsKey(thumbprint) ? null : "the certificate is not pinned for any member");
    }

    // Rereads the revocation list when the file changed (checked at most once a second); a changed list empties the
    // cache of accepted certificates, so a revoked member is refused at its next request.
    private void RefreshRevoked()
    {
        var now = time.GetTimestamp();
        if (time.GetElapsedTime(Interlocked.Read(ref revokedCheckedAt), now) < TimeSpan.FromSeconds(1))
            return;
        lock (revokedGate)
        {
            Interlocked.Exchange(ref revokedCheckedAt, now);
            ReadRevoked(strict: false);
        }
    }

    private void ReadRevoked(bool strict)
    {
        (DateTime, long) seen;
        HashSet<string> list;
        try
        {
            var file = new FileInfo(revokedPath);
            seen = file.Exists ? (file.LastWriteTimeUtc, file.Length) : default;
            if (seen == revokedSeen && !strict)
                return;
            list = file.Exists ? ConsortiumCertificates.ParseRevoked(File.ReadAllLines(revokedPath)) : new HashSet<string>(StringComparer.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            if (strict)
                throw new InvalidDataException($"{revokedPath}: {e.Message}", e);
            Noticed?.Invoke($"the revocation list {revokedPath} cannot be read ({e.Message}): the previous list ({revoked.Count} certificates) stays in force");
            return;
        }

        var changed = !list.SetEquals(revoked);
        revokedSeen = seen;
        revoked = list;
        if (changed)
        {
            accepted.Clear();
            if (!strict)
                Noticed?.Invoke($"the revocation list {revokedPath} now names {list.Count} certificates; revoked members: [{string.Join(", ", RevokedMembersOf(list))}]");
        }
    }

    private IEnumerable<int> RevokedMembersOf(HashSet<string> list) => membersByThumbprint.Where(m => list.Contains(m.Key)).Select(m => m.Value).Order();

    // Why the CA did not issue the certificate (as of the time given), or null.
    private string? CheckIssuer(X509Certificate2 certificate, DateTime at)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationTime = at;
        chain.ChainPolicy.VerificationTimeIgnored = false;
        return chain.Build(certificate) ? null
            : "the certificate is not issued by the consortium's CA (" + string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct()) + ")";
    }

    private void NoteRefusal(string where, string reason) => Refused?.Invoke($"refused a peer on {where}: {reason}");

    /// <summary>
    /// Mutual TLS for the Raft transport: both sides present their certificate and accept only a member's; a
    /// connection to a member's Raft address accepts only the certificate pinned for that member
    /// (<paramref name="memberAt"/> names the member configured at an address), so one member cannot answer, and
    /// acknowledge entries, in another's name.
    /// </summary>
    public DotNext.Net.Security.SslOptions RaftSslOptions(Func<IPEndPoint, int?> memberAt)
    {
        ArgumentNullException.ThrowIfNull(memberAt);
        var options = new DotNext.Net.Security.SslOptions();
        options.ServerOptions.ServerCertificate = Certificate;
        options.ServerOptions.ClientCertificateRequired = true;
        options.ServerOptions.EnabledSslProtocols = SslProtocols.Tls13;
        options.ServerOptions.CertificateRevocationCheckMode = X509RevocationMode.NoCheck;
        options.ServerOptions.RemoteCertificateValidationCallback = (sender, certificate, _, _) =>
        {
            if (Identify(certificate, "the Raft port") is not { } peer)
                return false;
            if (peer == SelfId)
            {
                // A Raft node never calls itself: its own certificate from outside is its key in someone else's hands,
                // and a connection made with it would not be closed when the certificate is revoked (that closes other
                // members' connections only).
                NoteRefusal("the Raft port", $"it presented this node's own certificate (member {SelfId})");
                return false;
            }

            Track(sender, peer);
            return true;
        };
        options.ClientOptions.TargetHost = ConsortiumCertificates.CommonName(SelfId);
        options.ClientOptions.ClientCertificates = [Certificate];
        options.ClientOptions.EnabledSslProtocols = SslProtocols.Tls13;
        options.ClientOptions.CertificateRevocationCheckMode = X509RevocationMode.NoCheck;
        options.ClientOptions.RemoteCertificateValidationCallback = (sender, certificate, _, _) =>
        {
            if (RemoteEndPoint(sender) is not { } called || memberAt(called) is not { } member)
            {
                NoteRefusal("a Raft connection", $"it goes to {RemoteEndPoint(sender)?.ToString() ?? "an address this node cannot read"}, no member's Raft address");
                return false;
            }

            if (member == SelfId)
            {
                NoteRefusal("a Raft connection", $"it goes to this node's own Raft address ({called})");
                return false;
            }

            if (!IsMember(certificate, member, "a Raft connection to member " + member.ToString(System.Globalization.CultureInfo.InvariantCulture)))
                return false;
            Track(sender, member);
            return true;
        };
        return options;
    }

    // Every Raft connection accepted, in either direction, with the member at its other end: the transport keeps a
    // connection open for as long as it works, and its certificate was checked only when it was made. Weak keys: a
    // connection the transport dropped leaves by itself.
    private readonly ConditionalWeakTable<object, StrongBox<int>> raftConnections = [];

    private void Track(object? connection, int member)
    {
        if (connection is not null)
            raftConnections.AddOrUpdate(connection, new StrongBox<int>(member));
    }

    /// <summary>Raft connections (either direction) with <paramref name="member"/> tracked and not closed here.</summary>
    internal int RaftConnectionsWith(int member) => raftConnections.Count(c => c.Value.Value == member);

    /// <summary>
    /// Rereads the revocation list (when it changed) and closes every open Raft connection, in either direction, with a
    /// member whose certificate it names: a connection's certificate was checked once, when it was made, and the
    /// transport keeps it for as long as it works, so without this a revoked member would stay in the cluster until the
    /// others restarted. Its next connection is refused at the handshake. Returns the members cut off.
    /// </summary>
    public IReadOnlyList<int> CloseRevokedConnections()
    {
        RefreshRevoked();
        var list = revoked;
        if (list.Count == 0)
            return [];
        var cut = new SortedSet<int>();
        var revokedConnections = raftConnections.Where(c => c.Value.Value != SelfId && pinnedThumbprints.TryGetValue(c.Value.Value, out var thumbprint) && list.Contains(thumbprint)).ToList();
        foreach (var (connection, peer) in revokedConnections)
        {
            raftConnections.Remove(connection);
            if (Close(connection))
                cut.Add(peer.Value);
        }

        return [.. cut];
    }

    // Shuts the socket under a TLS connection down (the transport's reads and writes on it fail, and it drops the
    // connection and disposes the socket); true when it was open. Nothing else is touched: the transport still owns the
    // stream (a runtime without the reflected property fails the test that connects through it).
    private static bool Close(object connection)
    {
        try
        {
            if (NetworkOf(connection) is not { } network || !network.Socket.Connected)
                return false;
            network.Socket.Shutdown(SocketShutdown.Both);
            return true;
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException or System.Reflection.TargetInvocationException)
        {
            return false;
        }
    }

    // The TLS callback gets only the SslStream; DotNext's transport under it is a NetworkStream, whose socket says
    // which address the connection went to. AuthenticatedStream.InnerStream is protected, hence the reflection (a test
    // connects through it, so a runtime that renamed it fails there, and fails closed in production).
    private static readonly System.Reflection.PropertyInfo? InnerStream =
        typeof(AuthenticatedStream).GetProperty("InnerStream", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic);

    // The NetworkStream under a TLS connection, or null (an ObjectDisposedException or TargetInvocationException escapes).
    private static NetworkStream? NetworkOf(object? connection) => connection is AuthenticatedStream tls ? InnerStream?.GetValue(tls) as NetworkStream : null;

    /// <summary>The address a TLS connection goes to (IPv4-mapped addresses as IPv4), or null when it cannot be read.</summary>
    internal static IPEndPoint? RemoteEndPoint(object? sender)
    {
        try
        {
            if (NetworkOf(sender)?.Socket.RemoteEndPoint is not IPEndPoint remote)
                return null;
            return remote.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(remote.Address.MapToIPv4(), remote.Port) : remote;
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException or System.Reflection.TargetInvocationException)
        {
            return null;
        }
    }

    /// <summary>
    /// <paramref name="handler"/>, set up for requests to member <paramref name="member"/>'s internal listener when
    /// there are identities: this node's certificate, and only the certificate pinned for that member accepted (another
    /// member's certificate answering on its address is refused, so one member cannot stand in for another); unchanged
    /// without identities (plain http).
    /// </summary>
    public static SocketsHttpHandler Handler(ClusterIdentity? identity, SocketsHttpHandler handler, int member)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (identity is null)
            return handler;
        handler.SslOptions = new SslClientAuthenticationOptions
        {
            ClientCertificates = [identity.Certificate],
            EnabledSslProtocols = SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, certificate, _, _) => identity.IsMember(certificate, member, "a request to member " + member.ToString(System.Globalization.CultureInfo.InvariantCulture) + "'s internal listener"),
        };
        return handler;
    }

    /// <summary>True when <paramref name="presented"/> is member <paramref name="member"/>'s certificate (else a line to <see cref="Refused"/>).</summary>
    public bool IsMember(X509Certificate? presented, int member, string where)
    {
        if (Identify(presented, where) is not { } identified)
            return false;
        if (identified == member)
            return true;
        NoteRefusal(where, $"member {identified.ToString(System.Globalization.CultureInfo.InvariantCulture)}'s certificate answered");
        return false;
    }

    /// <summary><paramref name="message"/> signed with this node's identity key (DKG messages, <see cref="Sequencer.Signing.DkgIdentity"/>).</summary>
    public Sequencer.Core.Encoding.IDkgMessage SignDkg(Sequencer.Core.Encoding.IDkgMessage message, ulong chainId)
    {
        using var key = Certificate.GetECDsaPrivateKey() ?? throw new InvalidOperationException("this node's certificate has no ECDSA private key");
        return Sequencer.Signing.DkgIdentity.Sign(message, chainId, key);
    }

    private static string Thumbprint(X509Certificate2 certificate) => certificate.GetCertHashString(HashAlgorithmName.SHA256);

    /// <inheritdoc/>
    public void Dispose()
    {
        ca.Dispose();
        Certificate.Dispose();
        foreach (var member in Members.Values)
            member.Dispose();
    }
}
