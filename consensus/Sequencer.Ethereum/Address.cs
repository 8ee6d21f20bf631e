namespace Sequencer.Ethereum;

/// <summary>A 20-byte Ethereum address.</summary>
public sealed class Address : IEquatable<Address>
{
    private readonly byte[] bytes;

    private Address(byte[] bytes) => this.bytes = bytes;

    /// <summary>The zero address.</summary>
    public static Address Zero { get; } = new(new byte[20]);

    /// <summary>The 20 bytes.</summary>
    public ReadOnlySpan<byte> Bytes => bytes;

    /// <summary>An address from its 20 bytes.</summary>
    /// <exception cref="FormatException">Not 20 bytes.</exception>
    public static Address FromBytes(ReadOnlySpan<byte> value)
        => value.Length == 20 ? new Address(value.ToArray()) : throw new FormatException($"an address is 20 bytes, not {value.Length}");

    /// <summary>Parses 0x-prefixed hex (any case; a mixed-case address must carry a valid EIP-55 checksum).</summary>
    /// <exception cref="FormatException">Not 20 bytes of hex, or a wrong checksum.</exception>
    public static Address Parse(string hex)
    {
        var address = FromBytes(EthHex.ToBytes(hex));
        var digits = hex.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? hex[2..] : hex;
        var mixed = digits.Any(char.IsUpper) && digits.Any(char.IsLower);
        if (mixed && address.ToChecksumString()[2..] != digits)
            throw new FormatException($"{hex} has a wrong EIP-55 checksum");
        return address;
    }

    /// <summary>The address of an uncompressed public key (64 bytes, x || y): the last 20 bytes of its keccak256.</summary>
    public static Address FromPublicKey(ReadOnlySpan<byte> publicKey)
    {
        if (publicKey.Length != 64)
            throw new ArgumentException("an uncompressed public key is 64 bytes, x || y", nameof(publicKey));
        return new Address(Keccak.Hash(publicKey)[12..]);
    }

    /// <summary>The address of the contract that <paramref name="deployer"/> creates with nonce <paramref name="nonce"/>.</summary>
    public static Address ForContract(Address deployer, ulong nonce)
    {
        ArgumentNullException.ThrowIfNull(deployer);
        return new Address(Keccak.Hash(Rlp.List(Rlp.Encode(deployer.Bytes), Rlp.Encode(nonce)))[12..]);
    }

    /// <summary>The EIP-55 mixed-case checksum form.</summary>
    public string ToChecksumString()
    {
        var lower = Convert.ToHexStringLower(bytes);
        var hash = Keccak.Hash(lower);
        var chars = lower.ToCharArray();
        for (var i = 0; i < chars.Length; i++)
        {
            var nibble = (hash[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xf;
            if (chars[i] >= 'a' && nibble >= 8)
                chars[i] = char.ToUpperInvariant(chars[i]);
        }

        return "0x" + new string(chars);
    }

    /// <summary>0x-prefixed lower-case hex.</summary>
    public override string ToString() => EthHex.Bytes(bytes);

    /// <inheritdoc/>
    public bool Equals(Address? other) => other is not null && bytes.AsSpan().SequenceEqual(other.bytes);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Address other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => BitConverter.ToInt32(bytes, 16);
}
