using System.Globalization;
using System.Numerics;
using Org.BouncyCastle.Crypto.EC;
using Sequencer.Core.Hashing;
using Sequencer.Core.Ordering;
using Sequencer.Ethereum;

namespace Sequencer.L1;

/// <summary>A HeadPosted event.</summary>
/// <param name="Height">The head's height.</param>
/// <param name="Commitment">Its commitment.</param>
/// <param name="HistoryRoot">Its history root.</param>
/// <param name="Log">The log it came from (block, transaction, removed by a reorg).</param>
public sealed record HeadPostedEvent(ulong Height, Hash32 Commitment, Hash32 HistoryRoot, EthLog Log);

/// <summary>
/// The inbox contract (<c>contracts/SequencerInbox.sol</c>): its bytecode, the call data of each function, and the
/// names of its custom errors. Pure: no I/O.
/// </summary>
public static class InboxContract
{
    /// <summary>The postHead signature (the header tuple, the signature tuple, the link proof).</summary>
    public const string PostHeadSignature = "postHead((uint64,uint64,uint64,uint64,bytes32,bytes32,bytes32,uint64,uint64),(uint256,uint256,uint256),bytes32[])";

    /// <summary>The rotateKey signature.</summary>
    public const string RotateKeySignature = "rotateKey(uint64,bytes,(uint256,uint256,uint256))";

    /// <summary>The HeadPosted event's topic.</summary>
    public static readonly byte[] HeadPostedTopic = Abi.EventTopic("HeadPosted(uint64,bytes32,bytes32)");

    private static readonly Lazy<byte[]> Code = new(LoadBytecode);

    private static readonly Dictionary<string, string> Errors = new[]
    {
        "WrongChain(uint64,uint64)", "WrongKeyEpoch(uint64,uint64)", "NotHigher(uint64,uint64)", "BadSignature()", "BadLinkProof()", "BadGroupKey()",
    }.ToDictionary(e => Convert.ToHexStringLower(Abi.Selector(e)), e => e);

    /// <summary>The contract's creation bytecode (without constructor arguments).</summary>
    public static byte[] Bytecode => Code.Value;

    /// <summary>The creation transaction's data: the bytecode and the constructor's arguments.</summary>
    public static byte[] Deployment(ulong chainId, ulong keyEpoch, ReadOnlySpan<byte> groupKey)
        => [.. Bytecode, .. Abi.EncodeTuple([AbiValue.Uint(chainId), AbiValue.Uint(keyEpoch), AbiValue.Bytes(groupKey)])];

    /// <summary>postHead's call data: the head, its FROST signature (R compressed, z) and the link proof.</summary>
    public static byte[] PostHead(BatchHeader header, ReadOnlySpan<byte> signatureR, ReadOnlySpan<byte> signatureZ, IEnumerable<Hash32> linkProof)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(linkProof);
        var words = header.EncodeAbi()[32..];
        var headerTuple = AbiValue.Tuple(Enumerable.Range(0, 9).Select(i => AbiValue.Bytes32(words.AsSpan(i * 32, 32))));
        return Abi.Call(PostHeadSignature, headerTuple, Signature(signatureR, signatureZ), AbiValue.Array(linkProof.Select(h => AbiValue.Bytes32(h.ToArray()))));
    }

    /// <summary>What the current key signs to rotate to <paramref name="newGroupKey"/>.</summary>
    public static byte[] RotationMessage(ulong chainId, ulong keyEpoch, ulong newKeyEpoch, ReadOnlySpan<byte> newGroupKey)
        => Keccak.Hash(Abi.EncodeTuple([
            AbiValue.Bytes32(Keccak.Hash("sequencer-cluster/key-rotation/v1")), AbiValue.Uint(chainId), AbiValue.Uint(keyEpoch), AbiValue.Uint(newKeyEpoch),
            AbiValue.Bytes32(Keccak.Hash(newGroupKey)),
        ]));

    /// <summary>rotateKey's call data.</summary>
    public static byte[] RotateKey(ulong newKeyEpoch, ReadOnlySpan<byte> newGroupKey, ReadOnlySpan<byte> signatureR, ReadOnlySpan<byte> signatureZ)
        => Abi.Call(RotateKeySignature, AbiValue.Uint(newKeyEpoch), AbiValue.Bytes(newGroupKey), Signature(signatureR, signatureZ));

    /// <summary>The call data of a view without arguments (lastHeight, lastHash, keyEpoch, groupKey, chainId).</summary>
    public static byte[] View(string name) => Abi.Call(name + "()");

    /// <summary>A revert's data as the contract's error with its arguments, or the Error(string) reason; null when none.</summary>
    public static string? DescribeRevert(byte[]? data)
    {
        if (data is null || data.Length < 4)
            return null;
        var selector = Convert.ToHexStringLower(data.AsSpan(0, 4));
        var arguments = new AbiReader(data[4..]);
        if (selector == "08c379a0")
            return "Error(\"" + System.Text.Encoding.UTF8.GetString(arguments.Bytes(0)) + "\")";
        if (!Errors.TryGetValue(selector, out var error))
            return "0x" + Convert.ToHexStringLower(data);
        var name = error[..error.IndexOf('(', StringComparison.Ordinal)];
        var count = error.Count(ch => ch == ',') + (error.EndsWith("()", StringComparison.Ordinal) ? 0 : 1);
        return name + "(" + string.Join(", ", Enumerable.Range(0, count).Select(i => arguments.Uint(i).ToString(CultureInfo.InvariantCulture))) + ")";
    }

    /// <summary>Reads a HeadPosted log; null when the log is another event.</summary>
    public static HeadPostedEvent? ReadHeadPosted(EthLog log)
    {
        ArgumentNullException.ThrowIfNull(log);
        if (log.Topics.Count != 2 || !log.Topics[0].AsSpan().SequenceEqual(HeadPostedTopic))
            return null;
        var data = new AbiReader(log.Data);
        return new HeadPostedEvent(new AbiReader(log.Topics[1]).UInt64(0), new Hash32(data.Bytes32(0)), new Hash32(data.Bytes32(1)), log);
    }

    // The signature as the contract takes it: R affine (decompressed here), z.
    private static AbiValue Signature(ReadOnlySpan<byte> r, ReadOnlySpan<byte> z)
    {
        if (r.Length != 33 || z.Length != 32)
            throw new ArgumentException("a FROST signature is R (33 bytes, compressed) and z (32 bytes)");
        var point = CustomNamedCurves.GetByName("secp256k1").Curve.DecodePoint(r.ToArray()).Normalize();
        return AbiValue.Tuple(AbiValue.Bytes32(point.AffineXCoord.GetEncoded()), AbiValue.Bytes32(point.AffineYCoord.GetEncoded()), AbiValue.Bytes32(z));
    }

    private static byte[] LoadBytecode()
    {
        using var stream = typeof(InboxContract).Assembly.GetManifestResourceStream("SequencerInbox.bin")
            ?? throw new InvalidOperationException("the inbox contract's bytecode is not embedded: build with contracts/ compiled (npm run build there)");
        using var reader = new StreamReader(stream);
        return EthHex.ToBytes(reader.ReadToEnd().Trim());
    }
}

/// <summary>Reads the inbox contract's state through JSON-RPC.</summary>
/// <param name="rpc">The L1 endpoint.</param>
/// <param name="contract">The contract's address.</param>
public sealed class InboxReader(EthRpcClient rpc, Address contract)
{
    /// <summary>The contract.</summary>
    public Address Contract => contract;

    /// <summary>The last posted head's height (0: none) at <paramref name="tag"/>.</summary>
    public async Task<ulong> LastHeightAsync(string tag = "latest", CancellationToken token = default) => new AbiReader(await CallAsync("lastHeight", tag, token).ConfigureAwait(false)).UInt64(0);

    /// <summary>The last posted head's commitment at <paramref name="tag"/>.</summary>
    public async Task<Hash32> LastHashAsync(string tag = "latest", CancellationToken token = default) => new(new AbiReader(await CallAsync("lastHash", tag, token).ConfigureAwait(false)).Bytes32(0));

    /// <summary>The key epoch in force.</summary>
    public async Task<ulong> KeyEpochAsync(string tag = "latest", CancellationToken token = default) => new AbiReader(await CallAsync("keyEpoch", tag, token).ConfigureAwait(false)).UInt64(0);

    /// <summary>The chain id the contract was made for.</summary>
    public async Task<ulong> ChainIdAsync(CancellationToken token = default) => new AbiReader(await CallAsync("chainId", "latest", token).ConfigureAwait(false)).UInt64(0);

    /// <summary>The group key in force, 33-byte compressed.</summary>
    public async Task<byte[]> GroupKeyAsync(string tag = "latest", CancellationToken token = default) => new AbiReader(await CallAsync("groupKey", tag, token).ConfigureAwait(false)).Bytes(0);

    /// <summary>The HeadPosted events in [<paramref name="fromBlock"/>, <paramref name="toBlock"/>].</summary>
    public async Task<IReadOnlyList<HeadPostedEvent>> HeadsPostedAsync(ulong fromBlock, ulong toBlock, CancellationToken token = default)
        => [.. (await rpc.GetLogsAsync(contract, fromBlock, toBlock, InboxContract.HeadPostedTopic, token).ConfigureAwait(false)).Select(InboxContract.ReadHeadPosted).OfType<HeadPostedEvent>()];

    private Task<byte[]> CallAsync(string view, string tag, CancellationToken token) => rpc.CallAsync(new EthCall(contract, InboxContract.View(view)), tag, token);
}
