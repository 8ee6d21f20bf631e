using System.CommandLine;
using System.Globalization;
using Sequencer.Core.Security;

namespace Sequencer.Node.Cli;

/// <summary><c>certs</c>: the consortium's CA, and a certificate and identity key for each member.</summary>
public static class CertsCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "The certificates directory.", DefaultValueFactory = _ => "certs" };
        var members = new Option<int>("--members") { Description = "n: certificates for members 1..n.", DefaultValueFactory = _ => 3 };
        var hosts = new Option<string[]>("--host") { Description = "A host name or IP address the certificates name (repeatable; peers are pinned by certificate, so this is informational).", DefaultValueFactory = _ => ["127.0.0.1", "localhost"] };
        var days = new Option<int>("--days") { Description = "Validity in days.", DefaultValueFactory = _ => 365 };
        var name = new Option<string>("--consortium") { Description = "The CA's name.", DefaultValueFactory = _ => "sequencer consortium" };
        var command = new Command("certs", "Make the consortium's CA (ca.crt, ca.key) and, for each member without one, a certificate (node-N.crt) and a long-term identity key (node-N.key, mode 0600), separate from its FROST share. Every node is started with --certs DIR holding ca.crt, every member's node-N.crt and its own node-N.key; keep ca.key offline.")
        {
            output, members, hosts, days, name,
        };
        command.SetAction(result =>
        {
            var n = result.GetValue(members);
            var validity = result.GetValue(days);
            if (n is < 1 or > 255)
                return Fail($"--members must be in [1, 255], not {n}");
            if (validity is < 1 or > 36_500)
                return Fail($"--days must be in [1, 36500], not {validity}");
            var directory = Path.GetFullPath(result.GetValue(output)!);
            try
            {
                var made = ConsortiumCertificates.Create(directory, Enumerable.Range(1, n), result.GetValue(hosts) ?? [], TimeSpan.FromDays(validity), result.GetValue(name)!);
                Console.WriteLine(made.Count == 0
                    ? $"certs: every member 1..{n} already has a certificate in {directory}; nothing made"
                    : $"certs: made certificates and identity keys for members {string.Join(", ", made.Select(m => m.ToString(CultureInfo.InvariantCulture)))} in {directory} (CA: {ConsortiumCertificates.CaCertificateFile}; keep {ConsortiumCertificates.CaKeyFile} offline)");
                return 0;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or System.Security.Cryptography.CryptographicException)
            {
                return Fail(e.Message);
            }
        });
        command.Subcommands.Add(CreateRevoke());
        return command;
    }

    // certs revoke: puts a member's certificate on the revocation list of a certificates directory.
    private static Command CreateRevoke()
    {
        var directory = new Option<string>("--out") { Description = "The certificates directory.", DefaultValueFactory = _ => "certs" };
        var member = new Option<int>("--member") { Description = "The member whose certificate (node-N.crt in the directory) is revoked.", Required = true };
        var command = new Command("revoke", $"Put a member's certificate on the revocation list ({ConsortiumCertificates.RevokedFile}) of a certificates directory. Copy the file into every node's certificates directory: each node rereads it within a second and refuses the certificate on every internal request and every new connection (restart a node to cut its open Raft connections at once). The member needs a new certificate (certs --members, after moving its old files away) pinned on every node to rejoin.")
        {
            directory, member,
        };
        command.SetAction(result =>
        {
            var id = result.GetValue(member);
            var path = Path.GetFullPath(result.GetValue(directory)!);
            var certificateFile = Path.Combine(path, ConsortiumCertificates.CertificateFile(id));
            if (!File.Exists(certificateFile))
                return Fail($"{certificateFile} does not exist");
            try
            {
                using var certificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(certificateFile));
                var thumbprint = certificate.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256);
                var listFile = Path.Combine(path, ConsortiumCertificates.RevokedFile);
                var lines = File.Exists(listFile) ? File.ReadAllLines(listFile).ToList() : [];
                if (ConsortiumCertificates.ParseRevoked(lines).Contains(thumbprint))
                {
                    Console.WriteLine($"certs: member {id}'s certificate ({thumbprint}) is on {listFile} already");
                    return 0;
                }

                lines.Add($"{thumbprint}  # member {id.ToString(CultureInfo.InvariantCulture)} ({certificate.Subject}), revoked {DateTimeOffset.UtcNow:yyyy-MM-ddTHH:mm:ssZ}");
                Sequencer.Core.Storage.DurableFiles.WriteAllText(listFile, string.Join('\n', lines) + "\n", secret: false);
                Console.WriteLine($"certs: member {id}'s certificate ({thumbprint}) is on {listFile}; copy it into every node's certificates directory (each rereads it within a second)");
                return 0;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or System.Security.Cryptography.CryptographicException)
            {
                return Fail(e.Message);
            }
        });
        return command;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("certs: " + message);
        return 2;
    }
}
