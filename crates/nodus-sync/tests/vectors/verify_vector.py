#!/usr/bin/env python3
"""An independent verifier of `.noduspkg` format 1, written from docs/sync.md alone.

Usage: verify_vector.py BUNDLE AGE-SECRET-KEY-1... SENDER_PUBLIC_KEY_HEX TENANT NOW
Needs the `cryptography` package. Checks header, canonical manifest, the DSSE PAE signature,
expiry, tenant and recipient, decrypts the age payload (X25519 stanzas, HMAC, STREAM),
inflates, checks frames, digests and every event's chain link. Prints a summary; exits 1 on
any failure.
"""
import base64
import hashlib
import hmac
import json
import struct
import sys
import zlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PAYLOAD_TYPE = b"application/vnd.nodus.bundle-manifest+json"
TAG = b"nodus.fabric.event.v1\x00"

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_decode(s):
    s = s.lower()
    pos = s.rfind("1")
    hrp, data = s[:pos], [CHARSET.index(c) for c in s[pos + 1:]]
    data = data[:-6]  # checksum not re-verified here
    acc, bits, out = 0, 0, []
    for v in data:
        acc = (acc << 5) | v
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return hrp, bytes(out)


def bech32_encode(hrp, data):
    def polymod(values):
        gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
        chk = 1
        for v in values:
            b = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i in range(5):
                chk ^= gen[i] if ((b >> i) & 1) else 0
        return chk

    acc, bits, five = 0, 0, []
    for b in data:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    hrp_exp = [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]
    pm = polymod(hrp_exp + five + [0] * 6) ^ 1
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in five + checksum)


def b64(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


def hkdf(ikm, salt, info, n=32):
    return HKDF(algorithm=SHA256(), length=n, salt=salt, info=info).derive(ikm)


def fail(msg):
    print("REFUSED:", msg)
    sys.exit(1)


def age_decrypt(data, secret):
    end = data.index(b"\n--- ") + 1
    mac_line_end = data.index(b"\n", end) + 1
    header_lines = data[:end].split(b"\n")[:-1]
    if header_lines[0] != b"age-encryption.org/v1":
        fail("not age v1")
    mac = b64(data[end + 4:mac_line_end - 1].decode())
    mac_input = data[:end + 3]  # up to and including "---"
    sk = X25519PrivateKey.from_private_bytes(secret)
    pk = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    file_key = None
    i = 1
    while i < len(header_lines):
        args = header_lines[i].split(b" ")
        body = header_lines[i + 1]
        i += 2
        if args[1] != b"X25519":
            continue
        share = b64(args[2].decode())
        shared = sk.exchange(X25519PublicKey.from_public_bytes(share))
        key = hkdf(shared, share + pk, b"age-encryption.org/v1/X25519")
        try:
            file_key = ChaCha20Poly1305(key).decrypt(b"\x00" * 12, b64(body.decode()), None)
            break
        except Exception:
            continue
    if file_key is None:
        fail("no stanza for this identity")
    hmac_key = hkdf(file_key, b"", b"header")
    if not hmac.compare_digest(hmac.new(hmac_key, mac_input, hashlib.sha256).digest(), mac):
        fail("age header MAC")
    nonce = data[mac_line_end:mac_line_end + 16]
    payload_key = hkdf(file_key, nonce, b"payload")
    aead = ChaCha20Poly1305(payload_key)
    ct = data[mac_line_end + 16:]
    out, counter, size = [], 0, 64 * 1024 + 16
    while True:
        chunk, ct = ct[:size], ct[size:]
        last = len(ct) == 0
        n = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            out.append(aead.decrypt(n, chunk, None))
        except Exception:
            fail("age payload chunk")
        counter += 1
        if last:
            return b"".join(out)


def main():
    path, identity, sender_pk_hex, tenant, now = sys.argv[1:6]
    now = int(now)
    data = open(path, "rb").read()
    # 1. header
    if data[:8] != b"NODUSPKG" or data[8:10] != b"\x00\x01" or data[10:12] != b"\x00\x00":
        fail("header")
    (m_len,) = struct.unpack(">I", data[12:16])
    manifest_bytes = data[16:16 + m_len]
    sig = data[16 + m_len:80 + m_len]
    payload = data[80 + m_len:]
    manifest = json.loads(manifest_bytes)
    canonical = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if canonical != manifest_bytes:
        fail("manifest not canonical")
    # 2.-3. trust and signature
    if manifest["sender"]["public_key"] != sender_pk_hex:
        fail("untrusted key")
    pae = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE, len(manifest_bytes), manifest_bytes)
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(sender_pk_hex)).verify(sig, pae)
    except Exception:
        fail("bad signature")
    # 4. expiry
    if not now < manifest["expires_at"] or manifest["created_at"] > now + 300:
        fail("expiry")
    # 6. tenant and recipient
    if manifest["tenant"] != tenant:
        fail("wrong tenant")
    hrp, secret = bech32_decode(identity)
    pk = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    recipient = bech32_encode("age", pk)
    if hashlib.sha256(recipient.encode()).hexdigest() not in manifest["recipients"]:
        fail("not a recipient")
    # 7. decrypt, inflate
    d = zlib.decompressobj(-15)
    plain = d.decompress(age_decrypt(payload, secret))
    if not d.eof or d.unused_data:
        fail("deflate stream")
    if len(plain) != manifest["payload_len"]:
        fail("payload length")
    # 8. frames and digests
    kinds = {"events": 1, "crdt": 2, "trust": 3}
    pos, entries = 0, []
    for e in manifest["entries"]:
        kind, n = plain[pos], struct.unpack(">Q", plain[pos + 1:pos + 9])[0]
        if kind != kinds[e["kind"]] or n != e["len"]:
            fail("frame")
        body = plain[pos + 9:pos + 9 + n]
        if hashlib.sha256(body).hexdigest() != e["sha256"]:
            fail("entry digest")
        entries.append(body)
        pos += 9 + n
    if pos != len(plain):
        fail("trailing plaintext")
    # 10. chains (the receiver is assumed empty: prerequisites hold iff from == 1)
    total = 0
    for c in manifest["chains"]:
        if c["from"] != 1:
            fail("missing prerequisite")
        body, prev, seq, p = entries[c["entry"]], bytes.fromhex(c["prereq_hash"]), c["from"], 0
        while p < len(body):
            (n,) = struct.unpack(">I", body[p:p + 4])
            rec = body[p + 4:p + 4 + n]
            p += 4 + n
            if not rec.startswith(TAG):
                fail("event tag")
            r = len(TAG)
            (tl,) = struct.unpack(">I", rec[r:r + 4])
            r += 4
            ev_tenant = rec[r:r + tl].decode()
            r += tl
            node, inc = rec[r:r + 16], rec[r + 16:r + 32]
            r += 32
            ev_seq, _lamport = struct.unpack(">QQ", rec[r:r + 16])
            if ev_tenant != tenant or "k" + node.hex() != c["node_id"] or inc.hex() != c["incarnation"]:
                fail("foreign event")
            if ev_seq != seq or rec[-32:] != prev:
                fail("broken chain")
            prev = hashlib.sha256(rec).digest()
            seq += 1
            total += 1
        if seq != c["to"] + 1 or prev.hex() != c["head_hash"]:
            fail("chain end")
    print("OK bundle", manifest["bundle_id"], "events", total, "entries", len(entries))


if __name__ == "__main__":
    main()
