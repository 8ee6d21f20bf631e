#!/usr/bin/env python3
"""Verifies a proof bundle (GET /v1/proofs/{tx}) with only Python's standard library: the second-language check of
issue 11. keccak256, RFC 6962 audit paths, the v2 header commitment, and the FROST(secp256k1, SHA-256) signature of
the covering head (RFC 9591: R + c*PK == z*G, c = H2(R || PK || msg)) are written out here.

The route is not hard-coded: it is read from the node's OpenAPI document (GET /openapi.json, the operation
getProofBundle), and the bundle is checked for the fields that document's ProofBundle schema requires.

usage: verify_bundle.py --node http://127.0.0.1:7101 --tx 0xHASH --group-key 0x02..   (or --bundle FILE)
exit 0: the tx is proven at least signed under the group key; 1: a check failed (named on stdout)."""
import argparse, hashlib, json, sys, urllib.request

# --- keccak256 (Keccak-f[1600], rate 1088, padding 0x01 .. 0x80) ---
RC = [0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000, 0x000000000000808B,
      0x0000000080000001, 0x8000000080008081, 0x8000000000008009, 0x000000000000008A, 0x0000000000000088,
      0x0000000080008009, 0x000000008000000A, 0x000000008000808B, 0x800000000000008B, 0x8000000000008089,
      0x8000000000008003, 0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
      0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008]
ROT = [[0, 36, 3, 41, 18], [1, 44, 10, 45, 2], [62, 6, 43, 15, 61], [28, 55, 25, 21, 56], [27, 20, 39, 8, 14]]
M64 = (1 << 64) - 1

def _rol(x, n):
    return ((x << n) | (x >> (64 - n))) & M64 if n else x

def _keccak_f(a):
    for rc in RC:
        c = [a[x][0] ^ a[x][1] ^ a[x][2] ^ a[x][3] ^ a[x][4] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rol(c[(x + 1) % 5], 1) for x in range(5)]
        a = [[a[x][y] ^ d[x] for y in range(5)] for x in range(5)]
        b = [[0] * 5 for _ in range(5)]
        for x in range(5):
            for y in range(5):
                b[y][(2 * x + 3 * y) % 5] = _rol(a[x][y], ROT[x][y])
        a = [[b[x][y] ^ ((~b[(x + 1) % 5][y]) & b[(x + 2) % 5][y]) for y in range(5)] for x in range(5)]
        a[0][0] ^= rc
    return a

def keccak256(data: bytes) -> bytes:
    rate = 136
    padded = bytearray(data) + b"\x01" + b"\x00" * ((rate - (len(data) + 1) % rate) % rate)
    padded[-1] |= 0x80
    a = [[0] * 5 for _ in range(5)]
    for off in range(0, len(padded), rate):
        block = padded[off:off + rate]
        for i in range(rate // 8):
            a[i % 5][i // 5] ^= int.from_bytes(block[8 * i:8 * i + 8], "little")
        a = _keccak_f(a)
    return b"".join(a[i % 5][i // 5].to_bytes(8, "little") for i in range(4))

assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"

# --- RFC 6962 / 9162 with keccak256 ---
def leaf(h): return keccak256(b"\x00" + h)
def node(l, r): return keccak256(b"\x01" + l + r)

def included(index, size, leaf_value, path, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf(leaf_value)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn and not fn & 1:
                fn >>= 1; sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1; sn >>= 1
    return sn == 0 and r == root

# --- the v2 commitment (DESIGN section 5) ---
TAG = keccak256(b"sequencer-cluster/commitment/v2")

def commitment(h):
    word = lambda v: int(v).to_bytes(32, "big")
    hx = lambda v: bytes.fromhex(v[2:])
    return keccak256(TAG + word(h["chainId"]) + word(h["keyEpoch"]) + word(h["height"]) + word(h["term"]) + hx(h["parentHash"])
                     + hx(h["historyRoot"]) + hx(h["txRoot"]) + word(h["txCount"]) + word(h["timestampMs"]))

# --- secp256k1 and FROST(secp256k1, SHA-256) verification ---
P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798, 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)

def add(p, q):
    if p is None: return q
    if q is None: return p
    if p[0] == q[0] and (p[1] + q[1]) % P == 0: return None
    lam = (3 * p[0] * p[0] * pow(2 * p[1], -1, P)) % P if p == q else ((q[1] - p[1]) * pow(q[0] - p[0], -1, P)) % P
    x = (lam * lam - p[0] - q[0]) % P
    return (x, (lam * (p[0] - x) - p[1]) % P)

def mul(k, p):
    r = None
    while k:
        if k & 1: r = add(r, p)
        p = add(p, p); k >>= 1
    return r

def decompress(b):
    if len(b) != 33 or b[0] not in (2, 3): raise ValueError("not a compressed point")
    x = int.from_bytes(b[1:], "big"); y = pow((x ** 3 + 7) % P, (P + 1) // 4, P)
    if (y * y - x ** 3 - 7) % P: raise ValueError("not on the curve")
    return (x, y if y % 2 == b[0] - 2 else P - y)

def compress(p): return bytes([2 + p[1] % 2]) + p[0].to_bytes(32, "big")

def h2(msg):  # hash_to_field with expand_message_xmd(SHA-256), DST = contextString || "chal", 48 bytes
    dst = b"FROST-secp256k1-SHA256-v1chal"; dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha256(b"\x00" * 64 + msg + (48).to_bytes(2, "big") + b"\x00" + dst_prime).digest()
    b1 = hashlib.sha256(b0 + b"\x01" + dst_prime).digest()
    b2 = hashlib.sha256(bytes(x ^ y for x, y in zip(b0, b1)) + b"\x02" + dst_prime).digest()
    return int.from_bytes((b1 + b2)[:48], "big") % N

def frost_verify(msg, r_bytes, z_bytes, pk_bytes):
    r, pk, z = decompress(r_bytes), decompress(pk_bytes), int.from_bytes(z_bytes, "big")
    c = h2(compress(r) + compress(pk) + msg)
    return z < N and mul(z, G) == add(r, mul(c, pk))

# --- key rotations (DESIGN section 5): key epoch e+1 is trusted only with key epoch e's signature over this message ---
ROTATION_TAG = keccak256(b"sequencer-cluster/key-rotation/v1")

def rotation_message(chain_id, epoch, new_epoch, new_key):
    word = lambda v: int(v).to_bytes(32, "big")
    return keccak256(ROTATION_TAG + word(chain_id) + word(epoch) + word(new_epoch) + keccak256(new_key))

def trusted_key(pinned_key, pinned_epoch, epoch, chain_id, keys):
    """The key of `epoch`, reached from the pinned one through hand-overs in `keys` (GET /v1/keys); None if none reaches it."""
    hx = lambda v: bytes.fromhex(v[2:])
    key, at = pinned_key, pinned_epoch
    listed = {int(k["epoch"]): k for k in keys}
    while at < epoch:
        nxt = listed.get(at + 1)
        rot = nxt and nxt.get("rotation")
        if not rot or int(rot["fromEpoch"]) != at:
            return None
        new_key = hx(nxt["groupKey"])
        if not frost_verify(rotation_message(chain_id, at, at + 1, new_key), hx(rot["signature"]["R"]), hx(rot["signature"]["z"]), key):
            return None
        key, at = new_key, at + 1
    return key if at == epoch else None

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node"); ap.add_argument("--tx", required=True); ap.add_argument("--group-key", required=True); ap.add_argument("--bundle")
    ap.add_argument("--key-epoch", type=int, default=1, help="the pinned key's epoch; heads of later epochs need hand-overs from --node's /v1/keys (or --keys FILE)")
    ap.add_argument("--keys", help="a saved GET /v1/keys answer (with --bundle, for offline checks across key rotations)")
    args = ap.parse_args()
    if args.bundle:
        bundle = json.load(open(args.bundle))
    else:
        api = json.load(urllib.request.urlopen(f"{args.node}/openapi.json", timeout=10))
        route = next(path for path, ops in api["paths"].items() for op in ops.values() if op.get("operationId") == "getProofBundle")
        bundle = json.load(urllib.request.urlopen(args.node + route.replace("{hash}", args.tx), timeout=10))
        missing = [f for f in api["components"]["schemas"]["ProofBundle"]["required"] if f not in bundle]
        if missing:
            print(f"FAIL bundle-format: missing {missing}"); return 1
        print(f"ok   bundle-format (GET {route} per /openapi.json)")
    hx = lambda v: bytes.fromhex(v[2:])
    header, tx = bundle["header"], bundle["tx"]
    checks = [("tx-proof", tx["hash"] == args.tx and included(tx["index"], header["txCount"], hx(tx["hash"]), [hx(p) for p in tx["proof"]], hx(header["txRoot"]))),
              ("header-commitment", commitment(header) == hx(bundle["commitment"]))]
    head = bundle.get("head")
    if head:
        hh = head["header"]; h, hd = int(header["height"]), int(hh["height"])
        checks.append(("head-commitment", commitment(hh) == hx(head["commitment"])))
        checks.append(("history-proof", (hd == h and not bundle["historyProof"] and head["commitment"] == bundle["commitment"])
                       or (hd > h and included(h - 1, hd - 1, hx(bundle["commitment"]), [hx(p) for p in bundle["historyProof"]], hx(hh["historyRoot"])))))
        key, epoch = hx(args.group_key), int(hh["keyEpoch"])
        if epoch != args.key_epoch:
            keys = json.load(open(args.keys)) if args.keys else (json.load(urllib.request.urlopen(f"{args.node}/v1/keys", timeout=10)) if args.node else [])
            key = trusted_key(key, args.key_epoch, epoch, int(hh["chainId"]), keys) if epoch > args.key_epoch else None
            checks.append(("key-rotation", key is not None))
        if key is not None:
            checks.append(("head-signature", frost_verify(hx(head["commitment"]), hx(head["signature"]["R"]), hx(head["signature"]["z"]), key)))
    level = "signed" if head else "ordered"
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        if not ok:
            print(f"proven: nothing beyond the failed check {name}"); return 1
    print(f"proven: {level} (the node claims {bundle['level']})")
    return 0

if __name__ == "__main__":
    sys.exit(main())
