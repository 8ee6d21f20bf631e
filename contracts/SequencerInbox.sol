// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title SequencerInbox
/// @notice Holds the newest head of a sequencer cluster's chain that the consortium's t-of-n group key signed
///         (FROST(secp256k1, SHA-256), RFC 9591), and checks that every head it accepts extends the last: the last
///         posted head's commitment must be a leaf of the new head's history root (an RFC 6962 audit path, keccak256).
///         One post makes every batch up to the head posted, whatever the batch rate. Anyone may post: the
///         signature, not the sender, is what is trusted.
contract SequencerInbox {
    /// @notice A batch header (header v2): every field is one ABI word, as in the commitment.
    struct Header {
        uint64 chainId;
        uint64 keyEpoch;
        uint64 height;
        uint64 term;
        bytes32 parentHash;
        bytes32 historyRoot;
        bytes32 txRoot;
        uint64 txCount;
        uint64 timestampMs;
    }

    /// @notice A FROST signature: the commitment R (affine; the signer's compressed R is its x and y parity) and z.
    struct Signature {
        uint256 rx;
        uint256 ry;
        uint256 z;
    }

    /// @notice keccak256("sequencer-cluster/commitment/v2"), the first word of every commitment.
    bytes32 public constant DOMAIN_TAG = keccak256("sequencer-cluster/commitment/v2");

    /// @notice The tag of a key rotation message.
    bytes32 public constant ROTATION_TAG = keccak256("sequencer-cluster/key-rotation/v1");

    uint256 private constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    uint256 private constant P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F;
    // 2^128 mod N: the 48-byte challenge is b1 * 2^128 + (b2 >> 128).
    uint256 private constant TWO_128 = 0x100000000000000000000000000000000;
    // expand_message_xmd's DST_prime for H2: "FROST-secp256k1-SHA256-v1chal" and its length (29).
    bytes private constant DST_PRIME = "FROST-secp256k1-SHA256-v1chal\x1d";

    /// @notice The rollup chain the cluster sequences.
    uint64 public immutable chainId;

    /// @notice The key epoch in force.
    uint64 public keyEpoch;

    /// @notice The height of the last posted head (0: none yet).
    uint64 public lastHeight;

    /// @notice The commitment of the last posted head.
    bytes32 public lastHash;

    uint256 private keyX;
    uint256 private keyY;

    /// @notice A head was posted.
    event HeadPosted(uint64 indexed height, bytes32 commitment, bytes32 historyRoot);

    /// @notice The group key changed, signed by the previous one.
    event KeyRotated(uint64 indexed keyEpoch, bytes groupKey);

    error WrongChain(uint64 expected, uint64 actual);
    error WrongKeyEpoch(uint64 expected, uint64 actual);
    error NotHigher(uint64 lastHeight, uint64 height);
    error BadSignature();
    error BadLinkProof();
    error BadGroupKey();

    /// @param chainId_ The rollup chain id.
    /// @param keyEpoch_ The key epoch of groupKey_.
    /// @param groupKey_ The group public key, 33-byte compressed SEC1.
    constructor(uint64 chainId_, uint64 keyEpoch_, bytes memory groupKey_) {
        chainId = chainId_;
        keyEpoch = keyEpoch_;
        (keyX, keyY) = decompress(groupKey_);
    }

    /// @notice The group key in force, 33-byte compressed.
    function groupKey() external view returns (bytes memory) {
        return abi.encodePacked(bytes1(uint8(2 + (keyY & 1))), keyX);
    }

    /// @notice Posts a signed head. The link proof is the audit path of the last posted head's commitment (leaf
    ///         lastHeight - 1) in the new head's history (a tree of height - 1 leaves); empty for the first head.
    function postHead(Header calldata header, Signature calldata signature, bytes32[] calldata linkProof) external {
        if (header.chainId != chainId) revert WrongChain(chainId, header.chainId);
        if (header.keyEpoch != keyEpoch) revert WrongKeyEpoch(keyEpoch, header.keyEpoch);
        uint64 last = lastHeight;
        if (header.height <= last) revert NotHigher(last, header.height);
        bytes32 commitment = keccak256(abi.encode(DOMAIN_TAG, header));
        if (!verify(commitment, signature)) revert BadSignature();
        if (last != 0 && !included(keccak256(abi.encodePacked(bytes1(0x00), lastHash)), last - 1, header.height - 1, linkProof, header.historyRoot))
            revert BadLinkProof();
        lastHeight = header.height;
        lastHash = commitment;
        emit HeadPosted(header.height, commitment, header.historyRoot);
    }

    /// @notice Replaces the group key; the current key must sign
    ///         keccak256(abi.encode(ROTATION_TAG, chainId, keyEpoch, newKeyEpoch, newGroupKey)).
    function rotateKey(uint64 newKeyEpoch, bytes calldata newGroupKey, Signature calldata signature) external {
        if (newKeyEpoch != keyEpoch + 1) revert WrongKeyEpoch(keyEpoch + 1, newKeyEpoch);
        bytes32 message = keccak256(abi.encode(ROTATION_TAG, chainId, keyEpoch, newKeyEpoch, keccak256(newGroupKey)));
        if (!verify(message, signature)) revert BadSignature();
        (keyX, keyY) = decompress(newGroupKey);
        keyEpoch = newKeyEpoch;
        emit KeyRotated(newKeyEpoch, newGroupKey);
    }

    /// @notice True when signature is a FROST(secp256k1, SHA-256) signature of message under the key in force.
    function verify(bytes32 message, Signature calldata signature) public view returns (bool) {
        uint256 z = signature.z;
        if (z == 0 || z >= N || signature.rx >= P || signature.ry >= P) return false;
        uint256 px = keyX;
        uint256 c = challenge(signature.rx, signature.ry, px, keyY, message);
        if (c == 0) return false;
        // ecrecover(h, v, r, s) is the address of r^-1 (s X - h G), X the point of x r and parity v. With r = the key's
        // x, X = the key, s = -c r and h = -z r, that is z G - c PK: it must be R (compared by address).
        address recovered = ecrecover(
            bytes32(N - mulmod(z, px, N)), uint8(27 + (keyY & 1)), bytes32(px), bytes32(N - mulmod(c, px, N)));
        return recovered != address(0) && recovered == address(uint160(uint256(keccak256(abi.encodePacked(signature.rx, signature.ry)))));
    }

    // RFC 9591's challenge H2(R || PK || message): hash_to_field with expand_message_xmd(SHA-256), 48 bytes, mod N.
    function challenge(uint256 rx, uint256 ry, uint256 px, uint256 py, bytes32 message) private pure returns (uint256) {
        bytes memory input = abi.encodePacked(
            bytes32(0), bytes32(0), // Z_pad: 64 zero bytes
            bytes1(uint8(2 + (ry & 1))), rx, bytes1(uint8(2 + (py & 1))), px, message,
            hex"003000", DST_PRIME); // l_i_b_str = 48, then I2OSP(0, 1)
        bytes32 b0 = sha256(input);
        bytes32 b1 = sha256(abi.encodePacked(b0, hex"01", DST_PRIME));
        bytes32 b2 = sha256(abi.encodePacked(b0 ^ b1, hex"02", DST_PRIME));
        return addmod(mulmod(uint256(b1), TWO_128, N), uint256(b2) >> 128, N);
    }

    // RFC 9162 section 2.1.3.2: verifies an RFC 6962 audit path (keccak256, leaves 0x00, nodes 0x01).
    function included(bytes32 leaf, uint256 index, uint256 size, bytes32[] calldata path, bytes32 root) private pure returns (bool) {
        if (index >= size) return false;
        uint256 fn = index;
        uint256 sn = size - 1;
        bytes32 r = leaf;
        for (uint256 i = 0; i < path.length; i++) {
            if (sn == 0) return false;
            if (fn & 1 == 1 || fn == sn) {
                r = keccak256(abi.encodePacked(bytes1(0x01), path[i], r));
                while (fn & 1 == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                r = keccak256(abi.encodePacked(bytes1(0x01), r, path[i]));
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && r == root;
    }

    // A compressed SEC1 point to affine (x, y): y = (x^3 + 7)^((P + 1) / 4) through the modexp precompile.
    function decompress(bytes memory point) private view returns (uint256 x, uint256 y) {
        if (point.length != 33 || (point[0] != 0x02 && point[0] != 0x03)) revert BadGroupKey();
        assembly { x := mload(add(point, 33)) }
        // x must be below N as well: ecrecover takes it as r.
        if (x == 0 || x >= N) revert BadGroupKey();
        uint256 rhs = addmod(mulmod(mulmod(x, x, P), x, P), 7, P);
        (bool ok, bytes memory result) = address(0x05).staticcall(abi.encode(32, 32, 32, rhs, (P + 1) / 4, P));
        if (!ok) revert BadGroupKey();
        y = abi.decode(result, (uint256));
        if (mulmod(y, y, P) != rhs) revert BadGroupKey();
        if (y & 1 != uint8(point[0]) - 2) y = P - y;
    }
}
