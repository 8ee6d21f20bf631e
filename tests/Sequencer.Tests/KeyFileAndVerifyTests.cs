using System.CommandLine;
using System.Text.Json;
using Sequencer.Client;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Node.Cli;
using Sequencer.Threshold;

namespace Sequencer.Tests;

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class KeyFileAndVerifyTests : IDisposable
{
    private readonly string directory = Directory.CreateTempSubdirectory("keys-").FullName;

    [Fact]
    public void ShareFiles_AreOwnerOnly_AndReadBackAgainstTheirGroup()
    {
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var groupFile = GroupKeyFile.From(group, 1, "dealer");
        KeyFiles.WriteGroup(Path.Combine(directory, "group.json"), groupFile);
        var path = Path.Combine(directory, "share-2.json");
        KeyFiles.WriteShare(path, new ShareFile { Epoch = 1, Identifier = 2, Share = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeScalar(shares[1].Secret)), GroupKey = groupFile.GroupKey });

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        var readGroup = KeyFiles.ReadGroup(Path.Combine(directory, "group.json")).ToGroupKey();
        Assert.Equal(group.PublicKey, readGroup.PublicKey);
        Assert.Equal(shares[1].Secret, KeyFiles.ReadShare(path, readGroup).Secret);
        Assert.DoesNotContain(Convert.ToHexStringLower(Secp256k1.SerializeScalar(shares[1].Secret)), new ShareFile { Share = "0x00" }.ToString() + shares[1], StringComparison.Ordinal);

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        Assert.Contains("readable by others", Assert.Throws<InvalidDataException>(() => KeyFiles.ReadShare(path, readGroup)).Message, StringComparison.Ordinal);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var (_, other) = TrustedDealer.Generate(2, 3);
        Assert.Throws<InvalidDataException>(() => KeyFiles.ReadShare(path, other));
        Assert.Throws<IOException>(() => KeyFiles.WriteShare(path, new ShareFile()));
    }

    [Fact]
    public async Task VerifyVerb_AcceptsAValidSignature_AndRejectsAnAlteredHeader()
    {
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var header = new BatchHeader(1, 1, 5, 2, Keccak256.Hash("parent"u8), Keccak256.Hash("history"u8), Keccak256.Hash("root"u8), 3, 1_764_000_000_000);
        var message = header.Commitment.ToArray();
        var signers = new[] { 1, 3 };
        var rounds = signers.ToDictionary(i => i, i => Frost.Commit(i, shares[i - 1].Secret));
        var commitments = signers.Select(i => rounds[i].Commitment).ToList();
        var signature = Frost.Aggregate(commitments, message, group.PublicKey,
            signers.Select(i => Frost.Sign(i, shares[i - 1].Secret, group.PublicKey, rounds[i].Nonces, message, commitments)));
        var key = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(group.PublicKey));
        var sig = "0x" + Convert.ToHexStringLower(signature.Encode());

        Assert.Equal(0, await RunVerifyAsync(key, Json(header), sig));
        var altered = new BatchHeader(1, 1, 5, 2, header.ParentHash, header.HistoryRoot, header.TxRoot, 4, header.TimestampMs);
        Assert.Equal(1, await RunVerifyAsync(key, Json(altered), sig));
        Assert.Equal(1, await RunVerifyAsync(key, Json(header), "0x1234"));
    }

    [Fact]
    public async Task VerifyVerb_Offline_AcceptsAHeightCoveredByASignedHead_AndRejectsABrokenProofOrHead()
    {
        // A chain of 5 headers with their history roots; head 5 signed 2-of-3; height 2's coverage proof.
        var (shares, group) = TrustedDealer.Generate(2, 3);
        var history = new InMemoryHistoryNodes();
        var headers = new List<BatchHeader>();
        for (ulong h = 1; h <= 5; h++)
        {
            var header = new BatchHeader(1, 1, h, 2, headers.Count == 0 ? Hash32.Zero : headers[^1].Commitment, HistoryTree.Root(history, h - 1),
                Keccak256.Hash(BitConverter.GetBytes(h)), 1, 1_764_000_000_000 + h);
            headers.Add(header);
            history.Append(header.Commitment);
        }

        var head = headers[4];
        var signers = new[] { 2, 3 };
        var rounds = signers.ToDictionary(i => i, i => Frost.Commit(i, shares[i - 1].Secret));
        var commitments = signers.Select(i => rounds[i].Commitment).ToList();
        var signature = Frost.Aggregate(commitments, head.Commitment.ToArray(), group.PublicKey,
            signers.Select(i => Frost.Sign(i, shares[i - 1].Secret, group.PublicKey, rounds[i].Nonces, head.Commitment.ToArray(), commitments))).Encode();
        var key = "0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(group.PublicKey));
        string Proof(BatchHeader target, IEnumerable<Hash32> path, BatchHeader? covering = null) => JsonSerializer.Serialize(new CommitmentResponse(
            Dto(target), target.Commitment.ToString(),
            new HeadDto(Dto(covering ?? head), (covering ?? head).Commitment.ToString(),
                new SignatureDto("0x" + Convert.ToHexStringLower(signature.AsSpan(0, 33)), "0x" + Convert.ToHexStringLower(signature.AsSpan(33))), signers, "1"),
            [.. path.Select(p => p.ToString())]), ApiJsonContext.Default.CommitmentResponse);

        var path = HistoryTree.AuditPath(history, 1, 4);
        Assert.Equal(0, await RunVerifyProofAsync(key, Proof(headers[1], path)));
        Assert.Equal(0, await RunVerifyProofAsync(key, Proof(head, [])));
        Assert.Equal(1, await RunVerifyProofAsync(key, Proof(headers[2], path)));
        Assert.Equal(1, await RunVerifyProofAsync(key, Proof(headers[1], path.Take(1))));
        Assert.Equal(1, await RunVerifyProofAsync(key, Proof(headers[1], path, covering: headers[3])));
        var (_, other) = TrustedDealer.Generate(2, 3);
        Assert.Equal(1, await RunVerifyProofAsync("0x" + Convert.ToHexStringLower(Secp256k1.SerializeElement(other.PublicKey)), Proof(headers[1], path)));
        var file = Path.Combine(directory, "proof.json");
        await File.WriteAllTextAsync(file, Proof(headers[0], HistoryTree.AuditPath(history, 0, 4)));
        Assert.Equal(0, await RunVerifyProofAsync(key, file));
    }

    private static Task<int> RunVerifyProofAsync(string key, string proof)
        => KeyCommands.CreateVerify().Parse(["--group-key", key, "--proof", proof]).InvokeAsync();

    private static HeaderDto Dto(BatchHeader h) => JsonSerializer.Deserialize(Json(h), ApiJsonContext.Default.HeaderDto)!;

    private static string Json(BatchHeader h) => JsonSerializer.Serialize(new HeaderDto(h.ChainId.ToString(System.Globalization.CultureInfo.InvariantCulture),
        h.KeyEpoch.ToString(System.Globalization.CultureInfo.InvariantCulture), h.Height.ToString(System.Globalization.CultureInfo.InvariantCulture),
        h.Term.ToString(System.Globalization.CultureInfo.InvariantCulture), h.ParentHash.ToString(), h.HistoryRoot.ToString(), h.TxRoot.ToString(), h.TxCount, (long)h.TimestampMs), ApiJsonContext.Default.HeaderDto);

    private static Task<int> RunVerifyAsync(string key, string header, string signature)
        => KeyCommands.CreateVerify().Parse(["--group-key", key, "--header", header, "--signature", signature]).InvokeAsync();

    public void Dispose() => Directory.Delete(directory, recursive: true);
}
