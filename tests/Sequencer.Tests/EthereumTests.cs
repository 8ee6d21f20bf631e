using System.Numerics;
using System.Text;
using Sequencer.Ethereum;

namespace Sequencer.Tests;

/// <summary>The Ethereum client library against published vectors: RLP, EIP-155, EIP-1559, EIP-55, ABI, keccak256.</summary>
public sealed class EthereumTests
{
    private static string Hex(byte[] bytes) => "0x" + Convert.ToHexStringLower(bytes);

    private static byte[] Bytes(string hex) => EthHex.ToBytes(hex);

    private const string Lorem55 = "Lorem ipsum dolor sit amet, consectetur adipisicing eli";

    // From ethereum/tests, RLPTests/rlptest.json.
    public static TheoryData<string, string> RlpStrings => new()
    {
        { "", "0x80" },
        { "\u0000", "0x00" },
        { "\u0001", "0x01" },
        { "\u007f", "0x7f" },
        { "dog", "0x83646f67" },
        { Lorem55, "0xb74c6f72656d20697073756d20646f6c6f722073697420616d65742c20636f6e7365637465747572206164697069736963696e6720656c69" },
        { Lorem55 + "t", "0xb8384c6f72656d20697073756d20646f6c6f722073697420616d65742c20636f6e7365637465747572206164697069736963696e6720656c6974" },
    };

    [Theory]
    [MemberData(nameof(RlpStrings))]
    public void RlpStrings_MatchTheEthereumTestsVectors_AndDecodeBack(string text, string expected)
    {
        var encoded = Rlp.Encode(Encoding.ASCII.GetBytes(text));
        Assert.Equal(expected, Hex(encoded));
        Assert.Equal(text, Encoding.ASCII.GetString(Rlp.Decode(encoded).Bytes));
    }

    [Theory]
    [InlineData("0", "0x80")]
    [InlineData("1", "0x01")]
    [InlineData("16", "0x10")]
    [InlineData("79", "0x4f")]
    [InlineData("127", "0x7f")]
    [InlineData("128", "0x8180")]
    [InlineData("1000", "0x8203e8")]
    [InlineData("100000", "0x830186a0")]
    [InlineData("83729609699884896815286331701780722", "0x8f102030405060708090a0b0c0d0e0f2")]
    [InlineData("105315505618206987246253880190783558935785933862974822347068935681", "0x9c0100020003000400050006000700080009000a000b000c000d000e01")]
    public void RlpIntegers_MatchTheEthereumTestsVectors(string value, string expected)
    {
        var number = BigInteger.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(expected, Hex(Rlp.Encode(number)));
        Assert.Equal(number, Rlp.Decode(Bytes(expected)).ToInteger());
    }

    [Fact]
    public void RlpLists_MatchTheEthereumTestsVectors()
    {
        var dog = Rlp.Encode("dog"u8);
        Assert.Equal("0xc0", Hex(Rlp.List()));
        Assert.Equal("0xcc83646f6783676f6483636174", Hex(Rlp.List(dog, Rlp.Encode("god"u8), Rlp.Encode("cat"u8))));
        Assert.Equal("0xc6827a77c10401", Hex(Rlp.List(Rlp.Encode("zw"u8), Rlp.List(Rlp.Encode(4UL)), Rlp.Encode(1UL))));
        Assert.Equal("0xc4c2c0c0c0", Hex(Rlp.List(Rlp.List(Rlp.List(), Rlp.List()), Rlp.List())));
        var setTheoretic = Rlp.List(Rlp.List(), Rlp.List(Rlp.List()), Rlp.List(Rlp.List(), Rlp.List(Rlp.List())));
        Assert.Equal("0xc7c0c1c0c3c0c1c0", Hex(setTheoretic));
        var decoded = Rlp.Decode(setTheoretic);
        Assert.Equal(3, decoded.Items.Count);
        Assert.Equal(2, decoded.Items[2].Items.Count);

        // A list longer than 55 bytes uses the long form.
        var items = Enumerable.Range(0, 20).Select(_ => dog).ToArray();
        var list = Rlp.List(items);
        Assert.Equal(0xf8, list[0]);
        Assert.Equal(80, list[1]);
        Assert.Equal(20, Rlp.Decode(list).Items.Count);
    }

    [Theory]
    [InlineData("0x", "ends where an item")]
    [InlineData("0x8100", "its own RLP encoding")]
    [InlineData("0xb80100", "long form")]
    [InlineData("0xb90001", "leading zero")]
    [InlineData("0x83646f", "ends inside an item")]
    [InlineData("0x83646f6700", "follow the RLP item")]
    [InlineData("0xc583646f67", "ends inside an item")]
    public void RlpDecoding_RefusesMalformedAndNonCanonicalInput(string hex, string reason)
    {
        var e = Assert.Throws<FormatException>(() => Rlp.Decode(Bytes(hex)));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RlpDecoding_BoundsTheNesting()
    {
        var nested = Rlp.List();
        for (var i = 0; i < Rlp.MaxDepth + 2; i++)
            nested = Rlp.List(nested);
        Assert.Contains("deeper", Assert.Throws<FormatException>(() => Rlp.Decode(nested)).Message, StringComparison.Ordinal);
        Assert.Throws<FormatException>(() => Rlp.Decode(Bytes("0x820001")).ToInteger());
    }

    [Fact]
    public void Keccak256_MatchesKnownDigests()
    {
        Assert.Equal("0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470", Hex(Keccak.Hash([])));
        Assert.Equal("0x4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45", Hex(Keccak.Hash("abc")));
        // The selector of transfer(address,uint256), which every ERC-20 tool knows.
        Assert.Equal("0xa9059cbb", Hex(Abi.Selector("transfer(address,uint256)")));
    }

    [Fact]
    public void Eip155Example_SignsToThePublishedTransaction()
    {
        // EIP-155's own example: the signing data, its hash, v, r, s and the signed transaction.
        var key = EthKey.FromHex("0x4646464646464646464646464646464646464646464646464646464646464646");
        var transaction = new EthTransaction
        {
            Type = TransactionType.Legacy, ChainId = 1, Nonce = 9, GasPrice = 20_000_000_000, GasLimit = 21000,
            To = Address.Parse("0x3535353535353535353535353535353535353535"), Value = BigInteger.Pow(10, 18),
        };
        Assert.Equal("0xdaf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53", Hex(transaction.SigningHash()));
        var signed = transaction.Sign(key);
        Assert.Equal(BigInteger.Parse("18515461264373351373200002665853028612451056578545711640558177340181847433846", System.Globalization.CultureInfo.InvariantCulture), signed.Signature.R);
        Assert.Equal(BigInteger.Parse("46948507304638947509940763649030358759909902576025900602547168820602576006531", System.Globalization.CultureInfo.InvariantCulture), signed.Signature.S);
        Assert.Equal(0, signed.Signature.YParity);
        Assert.Equal("0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83", Hex(signed.Raw));

        var decoded = SignedTransaction.Decode(signed.Raw);
        Assert.Equal(key.Address, decoded.Sender);
        Assert.Equal(new BigInteger(1), decoded.Transaction.ChainId);
        Assert.Equal(9UL, decoded.Transaction.Nonce);
        Assert.Equal(Address.Parse("0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"), key.Address);
    }

    // ethereumjs-monorepo, packages/tx/test/json/eip1559.json (chain 7822; the vectors wrap each transaction in an RLP string).
    public static TheoryData<ulong, ulong, ulong, ulong, ulong, string> Eip1559Vectors => new()
    {
        { 819, 43203529, 35552, 75853, 121212, "0xb87302f870821e8e8203338301284d8301d97c828ae094000000000000000000000000000000000000aaaa8402933bc980c080a0d067f2167008c59219652f91cbf8788dbca5f771f6e91e2b7657e85b78b472e0a01d305af9fe81fdba43f0dfcd400ed24dcace0a7e30d4e85701dcaaf484cd079e" },
        { 353, 61901619, 32593, 38850, 136295, "0xb87202f86f821e8e8201618297c283021467827f5194000000000000000000000000000000000000aaaa8403b08b3380c001a004205678f13fc1d7b10feea6513dfa76e24418b6e08097d95c6f93a3b64e536da01d45ad61bfece43862de2cce7d2575a8c1d08c26c87f3cb5f26d7b0be54a91b2" },
        { 985, 32531825, 68541, 66377, 136097, "0xb87402f871821e8e8203d983010349830213a183010bbd94000000000000000000000000000000000000aaaa8401f0657180c001a0e6d23c5ecc0f388a4d41a9523c3ad171e98083a61288c340b968dfe0903a6741a07319e8d54a4fd8f0c081d3ce093d869f9df598481991c8534bfd8f2c163884b4" },
        { 119, 65456115, 62341, 24721, 107729, "0xb87002f86d821e8e778260918301a4d182f38594000000000000000000000000000000000000aaaa8403e6c7f380c001a0e38e239770801eb995498c821e55ac9c19ae09184bb27b34be105e02fe3b7615a067c64ca6bd6d9107e85fd581ab2e70a14b637eb36505bb40861ef9d6e800cab6" },
    };

    [Theory]
    [MemberData(nameof(Eip1559Vectors))]
    public void Eip1559Vectors_SignToThePublishedBytes_AndDecodeToTheirSender(ulong nonce, ulong value, ulong gasLimit, ulong priorityFee, ulong maxFee, string wrapped)
    {
        var key = EthKey.FromHex("0x8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63");
        var raw = Rlp.Decode(Bytes(wrapped)).Bytes;
        var transaction = new EthTransaction
        {
            Type = TransactionType.DynamicFee, ChainId = 7822, Nonce = nonce, Value = value, GasLimit = gasLimit,
            MaxPriorityFeePerGas = priorityFee, MaxFeePerGas = maxFee, To = Address.Parse("0x000000000000000000000000000000000000aaaa"),
        };
        var signed = transaction.Sign(key);
        Assert.Equal(Hex(raw), Hex(signed.Raw));

        var decoded = SignedTransaction.Decode(raw);
        Assert.Equal(key.Address, decoded.Sender);
        Assert.Equal(transaction, decoded.Transaction with { AccessList = transaction.AccessList, Data = transaction.Data });
        Assert.Equal(Hex(Keccak.Hash(raw)), Hex(decoded.Hash));
    }

    [Fact]
    public void AccessListTransactions_RoundTrip_AndATamperedSignatureRecoversAnotherSenderOrNone()
    {
        var key = EthKey.Generate();
        var transaction = new EthTransaction
        {
            Type = TransactionType.AccessList, ChainId = 31337, Nonce = 3, GasPrice = 7, GasLimit = 50_000, To = key.Address, Data = [1, 2, 3],
            AccessList = [new AccessListEntry(key.Address, [new byte[32]])],
        };
        var signed = transaction.Sign(key);
        var decoded = SignedTransaction.Decode(signed.Raw);
        Assert.Equal(key.Address, decoded.Sender);
        Assert.Single(decoded.Transaction.AccessList);
        Assert.Equal([1, 2, 3], decoded.Transaction.Data);

        var tampered = (byte[])signed.Raw.Clone();
        tampered[^1] ^= 1;
        try
        {
            Assert.NotEqual(key.Address, SignedTransaction.Decode(tampered).Sender);
        }
        catch (FormatException)
        {
            // Or the tampered signature recovers no key at all.
        }

        Assert.Throws<FormatException>(() => SignedTransaction.Decode([0x05, 0xc0]));
        Assert.Throws<FormatException>(() => SignedTransaction.Decode([]));
    }

    [Fact]
    public void SignAndRecover_AgreeOnRandomKeysAndHashes_WithLowS()
    {
        var random = new Random(7);
        for (var i = 0; i < 50; i++)
        {
            var key = EthKey.Generate();
            var hash = new byte[32];
            random.NextBytes(hash);
            var signature = key.Sign(hash);
            Assert.True(EthKey.IsLowS(signature.S));
            Assert.Equal(key.Address, EthKey.RecoverAddress(hash, signature));
            Assert.Equal(signature, key.Sign(hash));
            Assert.NotEqual(key.Address, EthKey.RecoverAddress(hash, signature with { YParity = 1 - signature.YParity }));
        }
    }

    [Theory]
    [InlineData("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
    [InlineData("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")]
    [InlineData("0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB")]
    [InlineData("0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb")]
    public void Eip55Checksums_MatchThePublishedExamples(string address)
    {
        Assert.Equal(address, Address.Parse(address).ToChecksumString());
        Assert.Equal(address, Address.Parse(address.ToLowerInvariant()).ToChecksumString());
        var wrongCase = address[..^1] + (char.IsUpper(address[^1]) ? char.ToLowerInvariant(address[^1]) : char.ToUpperInvariant(address[^1]));
        if (wrongCase != address && char.IsLetter(address[^1]))
            Assert.Throws<FormatException>(() => Address.Parse(wrongCase));
    }

    [Fact]
    public void ContractAddresses_FollowTheDeployersNonce()
    {
        var deployer = Address.Parse("0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0");
        Assert.Equal("0xcd234a471b72ba2f1ccf0a70fcaba648a5eecd8d", Address.ForContract(deployer, 0).ToString());
        Assert.Equal("0x343c43a37d37dff08ae8c4a11544c718abb4fcf8", Address.ForContract(deployer, 1).ToString());
    }

    [Fact]
    public void AbiEncoding_MatchesTheSolidityDocumentationExamples()
    {
        // baz(uint32,bool) with 69 and true.
        Assert.Equal("0xcdcd77c0" + "0000000000000000000000000000000000000000000000000000000000000045" + "0000000000000000000000000000000000000000000000000000000000000001",
            Hex(Abi.Call("baz(uint32,bool)", AbiValue.Uint(69, 32), AbiValue.Of(true))));

        // sam(bytes,bool,uint256[]) with "dave", true and [1, 2, 3].
        Assert.Equal("0xa5643bf2"
            + "0000000000000000000000000000000000000000000000000000000000000060"
            + "0000000000000000000000000000000000000000000000000000000000000001"
            + "00000000000000000000000000000000000000000000000000000000000000a0"
            + "0000000000000000000000000000000000000000000000000000000000000004"
            + "6461766500000000000000000000000000000000000000000000000000000000"
            + "0000000000000000000000000000000000000000000000000000000000000003"
            + "0000000000000000000000000000000000000000000000000000000000000001"
            + "0000000000000000000000000000000000000000000000000000000000000002"
            + "0000000000000000000000000000000000000000000000000000000000000003",
            Hex(Abi.Call("sam(bytes,bool,uint256[])", AbiValue.Bytes("dave"u8), AbiValue.Of(true), AbiValue.Array([AbiValue.Uint(1), AbiValue.Uint(2), AbiValue.Uint(3)]))));

        // f(uint256,uint32[],bytes10,bytes) with 0x123, [0x456, 0x789], "1234567890" and "Hello, world!".
        Assert.Equal("0x8be65246"
            + "0000000000000000000000000000000000000000000000000000000000000123"
            + "0000000000000000000000000000000000000000000000000000000000000080"
            + "3132333435363738393000000000000000000000000000000000000000000000"
            + "00000000000000000000000000000000000000000000000000000000000000e0"
            + "0000000000000000000000000000000000000000000000000000000000000002"
            + "0000000000000000000000000000000000000000000000000000000000000456"
            + "0000000000000000000000000000000000000000000000000000000000000789"
            + "000000000000000000000000000000000000000000000000000000000000000d"
            + "48656c6c6f2c20776f726c642100000000000000000000000000000000000000",
            Hex(Abi.Call("f(uint256,uint32[],bytes10,bytes)", AbiValue.Uint(0x123), AbiValue.Array([AbiValue.Uint(0x456, 32), AbiValue.Uint(0x789, 32)]),
                AbiValue.Bytes32("1234567890"u8), AbiValue.Bytes("Hello, world!"u8))));

        Assert.Throws<ArgumentOutOfRangeException>(() => AbiValue.Uint(1L << 32, 32));
    }

    [Fact]
    public void AbiReader_ReadsWordsAndDynamicBytes_WithBoundsChecked()
    {
        var data = Abi.EncodeTuple([AbiValue.Uint(7), AbiValue.Bytes("dave"u8), AbiValue.Of(Address.Parse("0x000000000000000000000000000000000000aaaa")), AbiValue.Of(true)]);
        var reader = new AbiReader(data);
        Assert.Equal(7UL, reader.UInt64(0));
        Assert.Equal("dave"u8.ToArray(), reader.Bytes(1));
        Assert.Equal("0x000000000000000000000000000000000000aaaa", reader.Address(2).ToString());
        Assert.True(reader.Bool(3));
        Assert.Throws<FormatException>(() => reader.Word(99));
        Assert.Throws<FormatException>(() => new AbiReader(data[..96]).Bytes(1));
        Assert.Throws<FormatException>(() => reader.Bool(0));
    }
}
