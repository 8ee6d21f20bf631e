using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sequencer.Core.Storage;

namespace Sequencer.Core.Security;

/// <summary>
/// The consortium's certificates (DESIGN section 5, "Identities and key generation"): a CA, and for each member a
/// certificate with its long-term identity key (ECDSA P-256, separate from its FROST share). Node-to-node traffic (Raft
/// and the internal routes) is mutual TLS with these certificates, and DKG messages are signed with the identity keys.
/// </summary>
/// <remarks>
/// Layout of a certificates directory: <c>ca.crt</c> (and, where the CA was made, <c>ca.key</c>; a real consortium keeps it
/// offline), <c>node-N.crt</c> for every member (every node pins all of them) and <c>node-N.key</c> for the members whose
/// identity lives on this machine. Keys are PKCS#8 PEM files of mode 0600.
/// </remarks>
public static class ConsortiumCertificates
{
    /// <summary>The CA certificate's file name.</summary>
    public const string CaCertificateFile = "ca.crt";

    /// <summary>The CA key's file name.</summary>
    public const string CaKeyFile = "ca.key";

    /// <summary>
    /// The revocation list beside the pinned certificates (optional): one SHA-256 certificate thumbprint per line (hex,
    /// colons and case ignored; <c>#</c> starts a comment). A node refuses a listed certificate, and rereads the file
    /// when it changes.
    /// </summary>
    public const string RevokedFile = "revoked.txt";

    /// <summary>Member <paramref name="id"/>'s certificate file name.</summary>
    public static string CertificateFile(int id) => $"node-{id.ToString(CultureInfo.InvariantCulture)}.crt";

    /// <summary>Member <paramref name="id"/>'s identity key file name.</summary>
    public static string KeyFile(int id) => $"node-{id.ToString(CultureInfo.InvariantCulture)}.key";

    /// <summary>The subject common name of member <paramref name="id"/>'s certificate.</summary>
    public static string CommonName(int id) => $"sequencer-node-{id.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>
    /// Makes a CA in <paramref name="directory"/> (or uses the one there), and a certificate and identity key for each
    /// member of <paramref name="members"/> that has none yet. Returns the members whose certificates were made.
    /// </summary>
    /// <param name="directory">The certificates directory (created).</param>
    /// <param name="members">Member ids, 1 to 255.</param>
    /// <param name="hosts">Host names and addresses the certificates name (informational: peers are pinned, not named).</param>
    /// <param name="validity">How long the certificates are valid from now.</param>
    /// <param name="consortium">The CA's name.</param>
    /// <param name="now">When the certificates start (default: now); tests make expired ones with a past time.</param>
    public static IReadOnlyList<int> Create(string directory, IEnumerable<int> members, IEnumerable<string> hosts, TimeSpan validity, string consortium = "sequencer consortium",
        DateTimeOffset? now = null)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentNullException.ThrowIfNull(hosts);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(validity, TimeSpan.Zero);
        Directory.CreateDirectory(directory);
        var caPath = Path.Combine(directory, CaCertificateFile);
        var caKeyPath = Path.Combine(directory, CaKeyFile);
        var start = now ?? DateTimeOffset.UtcNow;
        var notBefore = start.AddMinutes(-5);
        var notAfter = start + validity;
        if (!File.Exists(caPath))
        {
            using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest($"CN={consortium} CA", caKey, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            using var created = request.CreateSelfSigned(notBefore, notAfter.AddDays(1));
            WriteSecret(caKeyPath, caKey.ExportPkcs8PrivateKeyPem());
            WritePublic(caPath, created.ExportCertificatePem());
        }

        if (!File.Exists(caKeyPath))
            throw new InvalidOperationException($"{caPath} exists but its key {caKeyPath} is not here: new member certificates need the CA's key");
        using var ca = X509Certificate2.CreateFromPemFile(caPath, caKeyPath);
        var hostList = hosts.Distinct(StringComparer.OrdinalIgnoreCase).ToList();
        var made = new List<int>();
        foreach (var id in members.Distinct().Order())
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(id, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(id, 255);
            var certPath = Path.Combine(directory, CertificateFile(id));
            if (File.Exists(certPath))
                continue;
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest($"CN={CommonName(id)}", key, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
                [new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
            var names = new SubjectAlternativeNameBuilder();
            names.AddDnsName(CommonName(id));
            foreach (var host in hostList)
            {
                if (IPAddress.TryParse(host, out var address))
                    names.AddIpAddress(address);
                else
                    names.AddDnsName(host);
            }

            request.CertificateExtensions.Add(names.Build());
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
            var serial = RandomNumberGenerator.GetBytes(16);
            serial[0] &= 0x7F;
            using var certificate = request.Create(ca, notBefore, notAfter < ca.NotAfter ? notAfter : ca.NotAfter, serial);
            WriteSecret(Path.Combine(directory, KeyFile(id)), key.ExportPkcs8PrivateKeyPem());
            WritePublic(certPath, certificate.ExportCertificatePem());
            made.Add(id);
        }

        return made;
    }

    private static void WritePublic(string path, string pem) => DurableFiles.WriteAllText(path, pem + "\n", secret: false);

    private static void WriteSecret(string path, string pem) => DurableFiles.WriteAllText(path, pem + "\n", secret: true);

    /// <summary>
    /// Reads a revocation list (<see cref="RevokedFile"/>): the thumbprints, upper-case hex without colons.
    /// </summary>
    /// <exception cref="InvalidDataException">A line is neither a comment nor a SHA-256 thumbprint.</exception>
    public static HashSet<string> ParseRevoked(IEnumerable<string> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var revoked = new HashSet<string>(StringComparer.Ordinal);
        var number = 0;
        foreach (var line in lines)
        {
            number++;
            var text = (line.IndexOf('#', StringComparison.Ordinal) is >= 0 and var hash ? line[..hash] : line).Replace(":", string.Empty, StringComparison.Ordinal).Trim();
            if (text.Length == 0)
                continue;
            if (text.Length != 64 || !text.All(Uri.IsHexDigit))
                throw new InvalidDataException($"{RevokedFile} line {number.ToString(CultureInfo.InvariantCulture)} is not a SHA-256 certificate thumbprint (64 hex digits): \"{line.Trim()}\"");
            revoked.Add(text.ToUpperInvariant());
        }

        return revoked;
    }
}
