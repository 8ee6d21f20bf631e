using System.Security.Cryptography.X509Certificates;
using Sequencer.Core.Security;
using Sequencer.Node.Security;

namespace Sequencer.Tests;

/// <summary>Which certificates a node accepts as a member's (issue 9: identities and mutual TLS).</summary>
public sealed class ClusterIdentityTests : IDisposable
{
    private readonly string directory = Path.Combine(Path.GetTempPath(), "sequencer-identity-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public void OnlyCurrentlyValidPinnedCertificatesOfTheConsortiumsCa_AreMembers()
    {
        var now = DateTimeOffset.UtcNow;
        // Members 1 and 2 valid for a year (the CA made 20 days ago); member 3's certificate expired 10 days ago.
        ConsortiumCertificates.Create(directory, [1, 2], ["127.0.0.1"], TimeSpan.FromDays(385), now: now.AddDays(-20));
        ConsortiumCertificates.Create(directory, [3], ["127.0.0.1"], TimeSpan.FromDays(5), now: now.AddDays(-15));
        var foreign = Path.Combine(directory, "foreign");
        ConsortiumCertificates.Create(foreign, [1, 2, 3], ["127.0.0.1"], TimeSpan.FromDays(30));

        // The identity key is owner-only; the CA key stays where it was made.
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(directory, ConsortiumCertificates.KeyFile(1))));

        using var identity = ClusterIdentity.Load(directory, 1, [1, 2, 3]);
        var warning = Assert.Single(identity.Warnings);
        Assert.Contains("member 3", warning, StringComparison.Ordinal);
        var refusals = new List<string>();
        identity.Refused = refusals.Add;

        Assert.Equal(2, identity.Identify(Certificate(directory, 2), "test"));
        Assert.Equal(1, identity.Identify(Certificate(directory, 1), "test"));
        Assert.Null(identity.Identify(Certificate(directory, 3), "test"));
        Assert.Contains(refusals, r => r.Contains("expired", StringComparison.Ordinal));
        Assert.Null(identity.Identify(Certificate(foreign, 2), "test"));
        Assert.Contains(refusals, r => r.Contains("not issued by the consortium's CA", StringComparison.Ordinal));
        Assert.Null(identity.Identify(null, "test"));
        Assert.Contains(refusals, r => r.Contains("no client certificate", StringComparison.Ordinal));

        // A certificate from the right CA that no member is pinned to (a fourth one made later) is refused too.
        ConsortiumCertificates.Create(directory, [4], ["127.0.0.1"], TimeSpan.FromDays(30));
        Assert.Null(identity.Identify(Certificate(directory, 4), "test"));
        Assert.Contains(refusals, r => r.Contains("not pinned", StringComparison.Ordinal));

        // A node whose own certificate expired does not start; nor does one pinned to another CA's certificate.
        var expired = Assert.Throws<InvalidDataException>(() => ClusterIdentity.Load(directory, 3, [1, 2, 3]));
        Assert.Contains("expired", expired.Message, StringComparison.Ordinal);
        File.Copy(Path.Combine(foreign, ConsortiumCertificates.CertificateFile(2)), Path.Combine(directory, ConsortiumCertificates.CertificateFile(2)), overwrite: true);
        var mixed = Assert.Throws<InvalidDataException>(() => ClusterIdentity.Load(directory, 1, [1, 2, 3]));
        Assert.Contains("member 2", mixed.Message, StringComparison.Ordinal);
    }

    private static X509Certificate2 Certificate(string directory, int id)
        => X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(directory, ConsortiumCertificates.CertificateFile(id))));

    public void Dispose()
    {
        if (Directory.Exists(directory))
            Directory.Delete(directory, recursive: true);
    }
}
