using Sequencer.Core;
using Sequencer.Node.Cli;
using Sequencer.Node.Configuration;

namespace Sequencer.Tests;

public sealed class LimitsTests
{
    [Fact]
    public void Defaults_AreValid()
    {
        Assert.Empty(new SequencerLimits().Validate());
        new SequencerLimits().ThrowIfInvalid();
    }

    [Theory]
    [InlineData("MaxBatchBytes", 1024, "MaxBatchBytes must be at least MaxTxBytes")]
    [InlineData("MaxPendingTxs", 10, "MaxPendingTxs must be at least MaxTxsPerRequest")]
    [InlineData("MaxInFlightEntries", 0, "MaxInFlightEntries")]
    [InlineData("MaxBatchDelayMs", 5000, "MaxBatchDelayMs")]
    [InlineData("SignatureFlushDelayMs", 60, "MaxRiderWaitMs must be in")]
    [InlineData("MaxRiderWaitMs", 5000, "MaxRiderWaitMs must be in")]
    [InlineData("MaxRequestBytes", 100, "MaxRequestBytes")]
    [InlineData("MaxUnpersistedBatches", 1, "MaxUnpersistedBatches")]
    [InlineData("MaxRecentTxs", 19_999, "MaxRecentTxs must be in [2 * MaxBatchTxs")]
    [InlineData("MaxRecentBatchBytes", 500_000, "MaxRecentBatchBytes must be in [two maximal batches")]
    [InlineData("MaxUnpersistedEntryBytes", 1_000_000, "MaxUnpersistedEntryBytes must be at least MaxBatchBytes")]
    [InlineData("MaxRecentTxs", 200_000_000, "MaxRecentTxs must be in")]
    [InlineData("MaxInFlightRequestBytes", 1024 * 1024, "MaxInFlightRequestBytes must be at least MaxRequestBytes")]
    [InlineData("MaxClientInFlightRequestBytes", 1024 * 1024, "MaxClientInFlightRequestBytes must be 0 (a quarter of the budget) or in [MaxRequestBytes")]
    public void Validate_BrokenRelation_IsNamed(string name, int value, string expected)
    {
        var limits = RunCommand.ApplyLimit(new SequencerLimits(), $"{name}={value}");
        var errors = limits.Validate();
        Assert.Contains(errors, e => e.Contains(expected, StringComparison.Ordinal));
        Assert.Throws<ArgumentException>(limits.ThrowIfInvalid);
    }

    [Fact]
    public void ApplyLimit_UnknownNameOrBadValue_Throws()
    {
        Assert.Throws<FormatException>(() => RunCommand.ApplyLimit(new SequencerLimits(), "noSuchLimit=1"));
        Assert.Throws<FormatException>(() => RunCommand.ApplyLimit(new SequencerLimits(), "maxTxBytes"));
        Assert.ThrowsAny<Exception>(() => RunCommand.ApplyLimit(new SequencerLimits(), "maxTxBytes=lots"));
        Assert.Equal(5, RunCommand.ApplyLimit(new SequencerLimits(), "maxBatchDelayMs=5").MaxBatchDelayMs);
    }

    [Fact]
    public void NodeOptions_Valid_HasNoErrors_AndMisconfigurationsAreNamed()
    {
        var members = new[] { 1, 2, 3 }.Select(i => new MemberOptions { Id = i, Raft = $"127.0.0.1:720{i}", Api = $"http://127.0.0.1:710{i}" }).ToList();
        var options = new NodeOptions { NodeId = 1, DataDir = "/tmp/x", Raft = "127.0.0.1:7201", Api = "http://127.0.0.1:7101", Members = members };
        Assert.Empty(options.Validate());
        Assert.Contains(options with { NodeId = 4 } is var o ? o.Validate() : [], e => e.Contains("not among the members", StringComparison.Ordinal));
        Assert.Contains((options with { Raft = "127.0.0.1:9999" }).Validate(), e => e.Contains("advertises", StringComparison.Ordinal));
        Assert.Contains((options with { Api = "ftp://x" }).Validate(), e => e.Contains("API address", StringComparison.Ordinal));
        Assert.Contains((options with { WalChunkBytes = 4096 }).Validate(), e => e.Contains("WAL chunk", StringComparison.Ordinal));
        Assert.Contains((options with { WalRetainedBytes = -1 }).Validate(), e => e.Contains("retained WAL bytes", StringComparison.Ordinal));
        // DotNext 6.12 splits log addresses with a shift and a mask: 4 MiB and a page corrupted the log at the first
        // chunk boundary (found with the bench).
        Assert.Contains((options with { WalChunkBytes = 4 * 1024 * 1024 + 4096 }).Validate(), e => e.Contains("power of two", StringComparison.Ordinal));
        Assert.Contains((options with { RaftTiming = new RaftTimingOptions { ElectionTimeoutLowerMs = 600, ElectionTimeoutUpperMs = 300 } }).Validate(), e => e.Contains("election", StringComparison.Ordinal));
        // Retention needs the nonce rule: an opaque chain's duplicate check reads every ordered hash.
        Assert.Contains((options with { RetainHeights = 100 }).Validate(), e => e.Contains("--retain-heights needs --validation ethereum", StringComparison.Ordinal));
        Assert.Empty((options with { RetainHeights = 100, Validation = Sequencer.Core.Validation.ValidationMode.Ethereum }).Validate());
    }

    /// <summary>
    /// Without the consortium's certificates the Raft port and the internal routes accept anyone: a node refuses to run so
    /// on any address that is not loopback (its own listeners, or a member's address its plaintext traffic would
    /// cross), unless told it is a test network (<c>--insecure-plaintext</c>).
    /// </summary>
    [Fact]
    public void NodeOptions_WithoutCertificates_RefuseAddressesOtherThanLoopback_UnlessPlaintextIsAllowed()
    {
        var members = new[] { 1, 2, 3 }.Select(i => new MemberOptions { Id = i, Raft = $"127.0.0.1:720{i}", Api = $"http://127.0.0.1:710{i}" }).ToList();
        var options = new NodeOptions { NodeId = 1, DataDir = "/tmp/x", Raft = "127.0.0.1:7201", Api = "http://127.0.0.1:7101", Members = members };
        Assert.Empty(options.Validate());
        Assert.Empty((options with { Api = "http://localhost:7101" }).Validate());

        static void Refused(NodeOptions options, string named)
        {
            var error = Assert.Single(options.Validate());
            Assert.Contains("--certs", error, StringComparison.Ordinal);
            Assert.Contains("--insecure-plaintext", error, StringComparison.Ordinal);
            Assert.Contains(named, error, StringComparison.Ordinal);
            Assert.Empty((options with { AllowPlaintext = true }).Validate());
        }

        Refused(options with { Api = "http://0.0.0.0:7101" }, "the API address \"http://0.0.0.0:7101\"");
        Refused(options with { RaftListen = "0.0.0.0:7201" }, "the Raft listen endpoint");
        var remote = members.Select(m => m.Id == 3 ? m with { Raft = "10.0.0.3:7203" } : m).ToList();
        Refused(options with { Members = remote }, "member 3's Raft endpoint \"10.0.0.3:7203\"");
        remote = members.Select(m => m.Id == 2 ? m with { Api = "http://[2001:db8::2]:7102" } : m).ToList();
        Refused(options with { Members = remote }, "member 2's API address");
    }

    [Fact]
    public void ParseMember_ReadsIdRaftAndApi()
    {
        var member = RunCommand.ParseMember("2=127.0.0.1:7202,http://127.0.0.1:7102");
        Assert.Equal(2, member.Id);
        Assert.Equal("127.0.0.1:7202", member.Raft);
        Assert.Equal("http://127.0.0.1:7102", member.Api);
        Assert.Throws<FormatException>(() => RunCommand.ParseMember("x=1,2"));
    }
}

public sealed class NodeOptionsFileTests : IDisposable
{
    private readonly string path = Path.Combine(Path.GetTempPath(), $"node-{Guid.NewGuid():N}.json");

    [Fact]
    public void Load_FileWrittenByToJson_RoundTrips()
    {
        var options = new NodeOptions
        {
            NodeId = 2, DataDir = "/data/n2", Raft = "127.0.0.1:7202", Api = "http://127.0.0.1:7102", ChainId = 99,
            Members = [new MemberOptions { Id = 2, Raft = "127.0.0.1:7202", Api = "http://127.0.0.1:7102" }],
            Limits = new Sequencer.Core.SequencerLimits { MaxBatchDelayMs = 5 },
        };
        File.WriteAllText(path, options.ToJson());
        var loaded = NodeOptions.Load(path);
        Assert.Equal(options.ToJson(), loaded.ToJson());
        Assert.Equal(5, loaded.Limits.MaxBatchDelayMs);
        Assert.Equal(99UL, loaded.ChainId);
    }

    [Fact]
    public void Load_UnknownFieldOrBadJson_IsRejectedWithTheFileName()
    {
        File.WriteAllText(path, "{\"nodeId\": 1, \"nodeID\": 2, \"typo\": true}");
        var error = Assert.Throws<InvalidDataException>(() => NodeOptions.Load(path));
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
        File.WriteAllText(path, "{ nope");
        Assert.Throws<InvalidDataException>(() => NodeOptions.Load(path));
    }

    public void Dispose() => File.Delete(path);
}
