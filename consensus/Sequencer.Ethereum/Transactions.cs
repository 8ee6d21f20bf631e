using System.Numerics;

namespace Sequencer.Ethereum;

/// <summary>The transaction envelopes this client builds and reads.</summary>
public enum TransactionType
{
    /// <summary>Legacy (EIP-155 when it names a chain id).</summary>
    Legacy = 0,

    /// <summary>EIP-2930: access lists.</summary>
    AccessList = 1,

    /// <summary>EIP-1559: a base fee and a priority fee.</summary>
    DynamicFee = 2,
}

/// <summary>One entry of an EIP-2930 access list.</summary>
/// <param name="Address">The account.</param>
/// <param name="StorageKeys">32-byte storage keys.</param>
public sealed record AccessListEntry(Address Address, IReadOnlyList<byte[]> StorageKeys);

/// <summary>An unsigned Ethereum transaction of any envelope this client knows.</summary>
public sealed record EthTransaction
{
    /// <summary>The envelope.</summary>
    public TransactionType Type { get; init; } = TransactionType.DynamicFee;

    /// <summary>The chain id (for a legacy transaction: null for one without EIP-155 replay protection).</summary>
    public BigInteger? ChainId { get; init; }

    /// <summary>The sender's nonce.</summary>
    public ulong Nonce { get; init; }

    /// <summary>Legacy and EIP-2930: the gas price in wei.</summary>
    public BigInteger GasPrice { get; init; }

    /// <summary>EIP-1559: the most the sender pays the block producer per gas.</summary>
    public BigInteger MaxPriorityFeePerGas { get; init; }

    /// <summary>EIP-1559: the most the sender pays in all per gas.</summary>
    public BigInteger MaxFeePerGas { get; init; }

    /// <summary>The gas limit.</summary>
    public ulong GasLimit { get; init; }

    /// <summary>The receiver, or null to create a contract.</summary>
    public Address? To { get; init; }

    /// <summary>The wei sent.</summary>
    public BigInteger Value { get; init; }

    /// <summary>The call data (or the contract's init code).</summary>
    public byte[] Data { get; init; } = [];

    /// <summary>EIP-2930 and EIP-1559: the access list.</summary>
    public IReadOnlyList<AccessListEntry> AccessList { get; init; } = [];

    /// <summary>The hash the sender signs.</summary>
    public byte[] SigningHash() => Keccak.Hash(Type == TransactionType.Legacy
        ? Rlp.List([.. LegacyFields(), .. ChainId is { } chain ? new[] { Rlp.Encode(chain), Rlp.Encode([]), Rlp.Encode([]) } : []])
        : [(byte)Type, .. Rlp.List(TypedFields())]);

    /// <summary>Signs with <paramref name="key"/>: the raw transaction to send, its hash and its sender.</summary>
    public SignedTransaction Sign(EthKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var signature = key.Sign(SigningHash());
        return new SignedTransaction(this, signature, Encode(signature), key.Address);
    }

    internal byte[] Encode(EcdsaSignature signature)
    {
        if (Type == TransactionType.Legacy)
        {
            var v = ChainId is { } chain ? chain * 2 + 35 + signature.YParity : 27 + signature.YParity;
            return Rlp.List([.. LegacyFields(), Rlp.Encode(v), Rlp.Encode(signature.R), Rlp.Encode(signature.S)]);
        }

        return [(byte)Type, .. Rlp.List([.. TypedFields(), Rlp.Encode((ulong)signature.YParity), Rlp.Encode(signature.R), Rlp.Encode(signature.S)])];
    }

    private List<byte[]> LegacyFields()
        => [Rlp.Encode(Nonce), Rlp.Encode(GasPrice), Rlp.Encode(GasLimit), Rlp.Encode(To is null ? [] : To.Bytes), Rlp.Encode(Value), Rlp.Encode(Data)];

    private List<byte[]> TypedFields()
    {
        var chain = ChainId ?? throw new InvalidOperationException("a typed transaction names its chain id");
        var to = Rlp.Encode(To is null ? [] : To.Bytes);
        var accessList = Rlp.List(AccessList.Select(e => Rlp.List(Rlp.Encode(e.Address.Bytes), Rlp.List(e.StorageKeys.Select(k => Rlp.Encode(k))))));
        return Type switch
        {
            TransactionType.AccessList => [Rlp.Encode(chain), Rlp.Encode(Nonce), Rlp.Encode(GasPrice), Rlp.Encode(GasLimit), to, Rlp.Encode(Value), Rlp.Encode(Data), accessList],
            TransactionType.DynamicFee => [Rlp.Encode(chain), Rlp.Encode(Nonce), Rlp.Encode(MaxPriorityFeePerGas), Rlp.Encode(MaxFeePerGas), Rlp.Encode(GasLimit), to, Rlp.Encode(Value), Rlp.Encode(Data), accessList],
            _ => throw new InvalidOperationException($"no typed envelope {Type}"),
        };
    }
}

/// <summary>A signed transaction: what it says, its signature, its raw bytes and its sender.</summary>
/// <param name="Transaction">The transaction.</param>
/// <param name="Signature">The signature.</param>
/// <param name="Raw">The bytes eth_sendRawTransaction takes.</param>
/// <param name="Sender">The recovered sender.</param>
public sealed record SignedTransaction(EthTransaction Transaction, EcdsaSignature Signature, byte[] Raw, Address Sender)
{
    /// <summary>The most bytes <see cref="Decode"/> reads (a transaction in a block is far smaller).</summary>
    public const int MaxRawBytes = 128 * 1024;

    /// <summary>The transaction hash: keccak256 of the raw bytes.</summary>
    public byte[] Hash => Keccak.Hash(Raw);

    /// <summary>
    /// Decodes a raw signed transaction (legacy with or without EIP-155, EIP-2930, EIP-1559) and recovers its sender.
    /// </summary>
    /// <exception cref="FormatException">Malformed, of an unknown type, non-canonical, or with a signature that recovers no key.</exception>
    public static SignedTransaction Decode(ReadOnlySpan<byte> raw) => Decode(raw, recover: true);

    /// <summary>Decodes a raw signed transaction; with <paramref name="recover"/> false the sender is left as the zero address (recover it later).</summary>
    /// <exception cref="FormatException">Malformed, of an unknown type, non-canonical, or (when recovering) with a signature that recovers no key.</exception>
    public static SignedTransaction Decode(ReadOnlySpan<byte> raw, bool recover)
    {
        if (raw.IsEmpty || raw.Length > MaxRawBytes)
            throw new FormatException($"a raw transaction is 1 to {MaxRawBytes} bytes");
        EthTransaction transaction;
        EcdsaSignature signature;
        if (raw[0] >= 0xc0)
        {
            var fields = Fields(Rlp.Decode(raw), 9, "legacy");
            var v = fields[6].ToInteger();
            BigInteger? chainId = null;
            int parity;
            if (v == 27 || v == 28)
            {
                parity = (int)(v - 27);
            }
            else if (v >= 37)
            {
                chainId = (v - 35) / 2;
                parity = (int)((v - 35) % 2);
            }
            else
            {
                throw new FormatException($"legacy v {v} is neither 27/28 nor EIP-155's 2 chainId + 35/36");
            }

            transaction = new EthTransaction
            {
                Type = TransactionType.Legacy, ChainId = chainId, Nonce = fields[0].ToUInt64(), GasPrice = fields[1].ToInteger(), GasLimit = fields[2].ToUInt64(),
                To = ToAddress(fields[3]), Value = fields[4].ToInteger(), Data = fields[5].Bytes,
            };
            signature = new EcdsaSignature(fields[7].ToInteger(), fields[8].ToInteger(), parity);
        }
        else if (raw[0] is 1 or 2)
        {
            var type = (TransactionType)raw[0];
            var dynamic = type == TransactionType.DynamicFee;
            var fields = Fields(Rlp.Decode(raw[1..]), dynamic ? 12 : 11, dynamic ? "EIP-1559" : "EIP-2930");
            var i = dynamic ? 1 : 0;
            transaction = new EthTransaction
            {
                Type = type, ChainId = fields[0].ToInteger(), Nonce = fields[1].ToUInt64(),
                GasPrice = dynamic ? BigInteger.Zero : fields[2].ToInteger(),
                MaxPriorityFeePerGas = dynamic ? fields[2].ToInteger() : BigInteger.Zero,
                MaxFeePerGas = dynamic ? fields[3].ToInteger() : BigInteger.Zero,
                GasLimit = fields[3 + i].ToUInt64(), To = ToAddress(fields[4 + i]), Value = fields[5 + i].ToInteger(), Data = fields[6 + i].Bytes,
                AccessList = AccessListOf(fields[7 + i]),
            };
            var parity = fields[8 + i].ToInteger(1);
            if (parity > 1)
                throw new FormatException($"y parity {parity} is not 0 or 1");
            signature = new EcdsaSignature(fields[9 + i].ToInteger(), fields[10 + i].ToInteger(), (int)parity);
        }
        else
        {
            throw new FormatException($"unknown transaction type 0x{raw[0]:x2}");
        }

        var sender = !recover ? Address.FromBytes(new byte[20])
            : EthKey.RecoverAddress(transaction.SigningHash(), signature) ?? throw new FormatException("the signature recovers no key");
        return new SignedTransaction(transaction, signature, raw.ToArray(), sender);
    }

    private static IReadOnlyList<RlpItem> Fields(RlpItem item, int count, string kind)
    {
        var fields = item.Items;
        return fields.Count == count ? fields : throw new FormatException($"a signed {kind} transaction has {count} fields, not {fields.Count}");
    }

    private static Address? ToAddress(RlpItem item)
    {
        var bytes = item.Bytes;
        return bytes.Length == 0 ? null : Address.FromBytes(bytes);
    }

    private static List<AccessListEntry> AccessListOf(RlpItem item)
        => [.. item.Items.Select(entry => entry.Items is [var address, var keys]
            ? new AccessListEntry(Address.FromBytes(address.Bytes), [.. keys.Items.Select(k => k.Bytes.Length == 32 ? k.Bytes : throw new FormatException("a storage key is 32 bytes"))])
            : throw new FormatException("an access list entry is [address, storageKeys]"))];
}
