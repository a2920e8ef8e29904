#!/usr/bin/python3
"""Operator and test helper for Keymesh, used by scripts/lib/prod-stack, scripts/drills and
the runbooks' drills. Standard library plus Debian's python3-cryptography (and
python3-aiosmtpd for `smtp-server`); nothing from PyPI.

What it does, each a subcommand (`--help` on each):

  self-test        check the HPKE, proof-of-possession, key-statement and audit-hash code
                   below against docs/protocol/test-vectors/ (run it before trusting the rest)
  audit-check      check an audit export (JSON lines) with the algorithm of
                   docs/protocol/audit.md; exit status 3 when broken
  smtp-server      a real SMTP server on loopback that REQUIRES STARTTLS (production refuses
                   plain SMTP) and delivers to a Maildir; prints its port
  signin           sign a person in the documented way (POST /v1/login as the app, the code
                   from the mail in the Maildir, POST /v1/login/code); writes the bearer
                   session to a file (mode 0600), never to stdout or argv
  seal-passphrase  seal a vault passphrase to a ceremony key (HPKE base mode, docs/vault.md),
                   as an admin's tool does; the passphrase is read from a file
  node ...         a minimal node: enroll with a code, publish its encryption key, send
                   (opaque random ciphertext: the relay never decrypts), fetch, ack, read a
                   secret; every request signed with a proof of possession (tokens.md)

Secrets (session tokens, node keys, capability tokens, passphrases) live in files with mode
0600 and are passed by path, so they never show in `ps` or in a shell's history.
"""

import argparse
import base64
import email
import email.policy
import hashlib
import hmac
import json
import os
import pathlib
import re
import secrets
import ssl
import struct
import sys
import time
import urllib.error
import urllib.request

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives import serialization
except ImportError:  # pragma: no cover - message for operators
    sys.exit(
        "keymesh_ops.py: the Python module 'cryptography' is missing: "
        "install Debian's python3-cryptography (apt-get install python3-cryptography)"
    )

REPO = pathlib.Path(__file__).resolve().parents[2]


def die(message, code=1):
    print(f"keymesh_ops: {message}", file=sys.stderr)
    sys.exit(code)


def write_private(path, data):
    """Write `data` to `path` with mode 0600 from the start (no window where it is readable)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def read_secret(path):
    return pathlib.Path(path).read_text().strip()


# --------------------------------------------------------------------------------------------
# HPKE (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, single shot.
# The suite of keymesh_proto::crypto (docs/vault.md, "Ceremony sealing, byte for byte").

KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0003
MODE_BASE, MODE_AUTH = 0x00, 0x02
KEM_SUITE = b"KEM" + struct.pack(">H", KEM_ID)
HPKE_SUITE = b"HPKE" + struct.pack(">HHH", KEM_ID, KDF_ID, AEAD_ID)


def _extract(salt, ikm):
    return hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()


def _expand(prk, info, length):
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite, salt, label, ikm):
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite, prk, label, info, length):
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite + label + info, length)


def _raw_public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _dh(private, public_raw):
    shared = private.exchange(X25519PublicKey.from_public_bytes(public_raw))
    if shared == b"\0" * 32:
        raise ValueError("X25519 produced the all-zero value (small-order key)")
    return shared


def _shared_secret(dh, kem_context):
    prk = _labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    return _labeled_expand(KEM_SUITE, prk, b"shared_secret", kem_context, 32)


def _key_schedule(mode, shared, info):
    psk_id_hash = _labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = bytes([mode]) + psk_id_hash + info_hash
    secret = _labeled_extract(HPKE_SUITE, shared, b"secret", b"")
    key = _labeled_expand(HPKE_SUITE, secret, b"key", context, 32)
    nonce = _labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12)
    return key, nonce


def hpke_seal(recipient_public, info, aad, plaintext, sender_private=None, ephemeral=None):
    """enc || ciphertext; auth mode when `sender_private` (an X25519PrivateKey) is given."""
    eph = ephemeral or X25519PrivateKey.generate()
    enc = _raw_public(eph)
    dh = _dh(eph, recipient_public)
    context = enc + recipient_public
    mode = MODE_BASE
    if sender_private is not None:
        dh += _dh(sender_private, recipient_public)
        context += _raw_public(sender_private)
        mode = MODE_AUTH
    key, nonce = _key_schedule(mode, _shared_secret(dh, context), info)
    return enc + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def hpke_open(recipient_private, info, aad, sealed, sender_public=None):
    enc, ciphertext = sealed[:32], sealed[32:]
    dh = _dh(recipient_private, enc)
    context = enc + _raw_public(recipient_private)
    mode = MODE_BASE
    if sender_public is not None:
        dh += _dh(recipient_private, sender_public)
        context += sender_public
        mode = MODE_AUTH
    key, nonce = _key_schedule(mode, _shared_secret(dh, context), info)
    return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, aad)


INFO_PASSPHRASE = b"keymesh-ceremony-passphrase-v1"


def seal_passphrase(ceremony_key_hex, group, passphrase):
    sealed = hpke_seal(bytes.fromhex(ceremony_key_hex), INFO_PASSPHRASE, group.encode(), passphrase)
    return base64.b64encode(sealed).decode()  # standard base64 with padding (docs/vault.md)


# --------------------------------------------------------------------------------------------
# Node signatures (docs/protocol/tokens.md, relay.md, management.md "Enrolling").


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pop_message(method, target, ts, nonce, body, token):
    return "\n".join(
        [
            "keymesh-pop-v1",
            method,
            target,
            str(ts),
            nonce.hex(),
            hashlib.sha256(body).hexdigest(),
            hashlib.sha256(token).hexdigest(),
        ]
    ).encode()


def pop_header(signing_key, method, target, body, token, ts=None, nonce=None):
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_bytes(16) if nonce is None else nonce
    sig = signing_key.sign(pop_message(method, target, ts, nonce, body, token))
    return f"v1;ts={ts};nonce={b64url(nonce)};sig={b64url(sig)}"


def enrollment_message(code, node_id, public_raw):
    return (
        b"keymesh-enroll-v1\n"
        + node_id.encode()
        + b"\n"
        + public_raw
        + b"\n"
        + hashlib.sha256(code.encode()).digest()
    )


def key_statement(node_id, version, enc_public_raw):
    return f"keymesh-enc-key-v1\n{node_id}\n{version}\n{enc_public_raw.hex()}".encode()


# --------------------------------------------------------------------------------------------
# Audit exports: the standard-library checker of docs/protocol/audit.md ("Exported logs"),
# the same algorithm, so an export can be checked without Keymesh's own code.

AUDIT_GENESIS = "0" * 64


def _stored_details(details):
    if isinstance(details, str):  # the vault's and the relay's GET /v1/audit: the text itself
        return details
    return json.dumps(details, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def audit_record_hash(r):
    h = hashlib.sha256(b"keymesh-audit-v1")
    for field in (
        r["seq"].to_bytes(8, "big", signed=True),
        r["at_ms"].to_bytes(8, "big", signed=True),
        r["actor"].encode(), r["action"].encode(), r["target"].encode(), r["outcome"].encode(),
        _stored_details(r["details"]).encode(),
        r["prev_hash"].encode(),
    ):
        h.update(len(field).to_bytes(8, "big") + field)
    return h.hexdigest()


def audit_check(lines):
    """(first broken (seq, reason) or None, {seq: hash}, [gaps])."""
    prev, hashes, gaps = None, {}, []
    for line in lines:
        r = json.loads(line)
        seq = r["seq"]
        if prev is not None and seq <= prev[0]:
            return (seq, "out of order"), hashes, gaps
        if audit_record_hash(r) != r["hash"]:
            return (seq, "content does not match its hash"), hashes, gaps
        if seq == 1 and r["prev_hash"] != AUDIT_GENESIS:
            return (seq, "the first record does not start from the genesis value"), hashes, gaps
        if prev is not None and seq == prev[0] + 1 and r["prev_hash"] != prev[1]:
            return (seq, "prev_hash does not match the previous record"), hashes, gaps
        if prev is not None and seq > prev[0] + 1:
            gaps.append((prev[0] + 1, seq - 1))
        prev, hashes[seq] = (seq, r["hash"]), r["hash"]
    return None, hashes, gaps


# --------------------------------------------------------------------------------------------
# HTTP


class Http:
    """JSON over HTTP(S); `cacert` is the only CA trusted when given. `source_ip` binds the
    client side to one loopback address (127.0.0.0/8), so drills can play several clients
    whose per-IP rate limits are separate, as many real nodes' are."""

    def __init__(self, cacert=None, timeout=15, source_ip=None):
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=cacert) if cacert else None
        # No proxies from the environment: these calls go to loopback services only.
        handlers = [urllib.request.ProxyHandler({})]
        if self.context and not source_ip:
            handlers.append(urllib.request.HTTPSHandler(context=self.context))
        if source_ip:
            import functools
            import http.client

            source = (source_ip, 0)
            context = self.context

            class SourceHTTP(urllib.request.HTTPHandler):
                def http_open(self, req):
                    return self.do_open(
                        functools.partial(http.client.HTTPConnection, source_address=source), req
                    )

            class SourceHTTPS(urllib.request.HTTPSHandler):
                def https_open(self, req):
                    return self.do_open(
                        functools.partial(http.client.HTTPSConnection, source_address=source),
                        req, context=context,
                    )

            handlers += [SourceHTTP(), SourceHTTPS(context=context)]
        self.opener = urllib.request.build_opener(*handlers)

    def call(self, method, url, body=None, headers=None, raw_body=None):
        data = raw_body if raw_body is not None else (
            json.dumps(body).encode() if body is not None else None
        )
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with self.opener.open(request, timeout=self.timeout) as r:
                text = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            text, status = e.read(), e.code
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = {"raw": text.decode(errors="replace")}
        return status, parsed


def error_code(body):
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code", "?")
    return "-"


# --------------------------------------------------------------------------------------------
# Mail: the Maildir the SMTP server writes.


def mails_to(maildir, to):
    found = []
    new = pathlib.Path(maildir) / "new"
    if not new.is_dir():
        return found
    for path in new.iterdir():
        try:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        except OSError:
            continue
        if to.lower() not in str(message.get("To", "")).lower():
            continue
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        found.append((path.stat().st_mtime_ns, str(message.get("Subject", "")), text))
    return sorted(found)


def wait_code(maildir, to, since_ns, timeout):
    """The XXXX-XXXX code of the first sign-in mail to `to` newer than `since_ns`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for mtime, subject, text in mails_to(maildir, to):
            if mtime < since_ns or "sign-in" not in subject:
                continue
            match = re.search(r"^\s*([A-Za-z0-9]{4}-[A-Za-z0-9]{4})\s*$", text, re.M)
            if match:
                return match.group(1)
        time.sleep(0.1)
    die(
        f"no sign-in mail with a code for {to} reached {maildir} within {timeout} s "
        "(is MANAGEMENT_SMTP_URL pointing at this server? see management's log for "
        "'sign-in mail not delivered')"
    )


# --------------------------------------------------------------------------------------------
# Subcommands


def cmd_self_test(args):
    vectors = REPO / "docs" / "protocol" / "test-vectors"
    ceremony = json.loads((vectors / "ceremony.json").read_text())
    ck = X25519PrivateKey.from_private_bytes(
        bytes.fromhex(ceremony["ceremony_key"]["key"]["x25519_secret_hex"])
    )
    holder = ceremony["holder"]["share_key"]
    messages = ceremony["messages"]
    group = ceremony["group"].encode()
    checked = 0
    for name, m in messages.items():
        sealed = bytes.fromhex(m["sealed_hex"])
        info = bytes.fromhex(m["info"]["hex"])
        aad = bytes.fromhex(m["aad"]["hex"])
        plaintext = bytes.fromhex(m["plaintext"]["hex"])
        if m["recipient"] == "ceremony key":
            recipient = ck
        else:
            recipient = X25519PrivateKey.from_private_bytes(
                bytes.fromhex(holder["x25519_secret_hex"])
            )
        sender = None
        if m["mode"].startswith("auth"):
            sender = bytes.fromhex(holder["x25519_public_hex"])
        opened = hpke_open(recipient, info, aad, sealed, sender_public=sender)
        assert opened == plaintext, f"HPKE vector {name} does not open to its plaintext"
        checked += 1
    # What must be refused is refused (a base-mode share does not open in auth mode).
    for bad in ceremony["invalid"]:
        if "base mode" not in bad["name"]:
            continue  # the others are refused by the vault's own checks (ids, encodings)
        try:
            hpke_open(ck, b"keymesh-ceremony-share-v1",
                      group + b"\n" + ceremony["holder"]["admin_id"].encode(),
                      bytes.fromhex(bad["sealed_hex"]),
                      sender_public=bytes.fromhex(holder["x25519_public_hex"]))
        except Exception:  # noqa: BLE001 - any refusal is the expected outcome
            checked += 1
            continue
        raise AssertionError(f"invalid vector opened: {bad['name']}")
    # Our own sealing opens with the vault's algorithm (the vector key plays the vault).
    sealed = base64.b64decode(
        seal_passphrase(ceremony["ceremony_key"]["key"]["x25519_public_hex"], "payments", b"x" * 20)
    )
    assert hpke_open(ck, INFO_PASSPHRASE, group, sealed) == b"x" * 20
    pop = json.loads((vectors / "pop.json").read_text())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(pop["node_key"]["ed25519_seed_hex"]))
    token = bytes.fromhex(pop["token"]["bytes_hex"])
    for v in pop["valid"]:
        body = bytes.fromhex(v["request"]["body"]["hex"])
        message = pop_message(
            v["request"]["method"], v["request"]["target"], v["ts"],
            bytes.fromhex(v["nonce_hex"]), body, token,
        )
        assert message.hex() == v["message"]["hex"], f"PoP message differs: {v['name']}"
        header = pop_header(
            key, v["request"]["method"], v["request"]["target"], body, token,
            ts=v["ts"], nonce=bytes.fromhex(v["nonce_hex"]),
        )
        assert header == v["keymesh_proof"], f"PoP header differs: {v['name']}"
        checked += 1
    statement = json.loads((vectors / "key-statement.json").read_text())
    skey = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(statement["node_key"]["ed25519_seed_hex"])
    )
    text = key_statement(
        statement["node_key"]["node"], statement["version"],
        bytes.fromhex(statement["enc_key"]["x25519_public_hex"]),
    )
    assert text.hex() == statement["statement"]["hex"], "key statement differs"
    assert skey.sign(text).hex() == statement["signature_hex"], "key statement signature differs"
    checked += 1
    chain = json.loads((vectors / "audit-chain.json").read_text())
    for entry in chain["records"]:
        record = entry["record"]
        assert audit_record_hash(record) == record["hash"], f"audit hash differs at {record['seq']}"
        checked += 1
    for bad in chain["invalid"]:
        if "export_lines" in bad:
            broken, _, _ = audit_check(bad["export_lines"])
            if bad["name"] == "tampered record":
                assert broken is not None, "a tampered audit export passed the check"
                checked += 1
    print(f"keymesh_ops self-test: ok ({checked} vectors from {vectors})")


def cmd_audit_check(args):
    with open(args.file, encoding="utf-8") as f:
        broken, hashes, gaps = audit_check(line for line in f if line.strip())
    for first, last in gaps:
        print(f"records {first} to {last} are not in this export (filtered?)")
    if broken:
        print(f"BROKEN at record {broken[0]}: {broken[1]}")
        sys.exit(3)
    if not hashes:
        print("empty export: nothing to check")
        sys.exit(1)
    print(f"intact: {len(hashes)} records")


def cmd_smtp_server(args):
    try:
        import asyncio
        from aiosmtpd.handlers import Mailbox
        from aiosmtpd.smtp import SMTP
    except ImportError:
        die("aiosmtpd is missing: install Debian's python3-aiosmtpd (apt-get install python3-aiosmtpd)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    handler = Mailbox(args.maildir)

    def factory():
        # STARTTLS is required before MAIL FROM: the production setting (`?tls=required`).
        return SMTP(handler, hostname="localhost", tls_context=context, require_starttls=True)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", args.port)
        port = server.sockets[0].getsockname()[1]
        if args.port_file:
            pathlib.Path(args.port_file).write_text(f"{port}\n")
        print(port, flush=True)
        await server.serve_forever()

    asyncio.run(main())


def cmd_signin(args):
    http = Http(args.cacert, source_ip=args.source_ip)
    since = time.time_ns() - 1_000_000_000
    status, body = http.call(
        "POST", f"{args.management}/v1/login", {"email": args.email, "client": "app"}
    )
    if status != 202:
        die(f"POST /v1/login for {args.email}: {status} {body}")
    code = wait_code(args.maildir, args.email, since, args.timeout)
    status, done = http.call(
        "POST", f"{args.management}/v1/login/code",
        {"request_id": body["request_id"], "poll_secret": body["poll_secret"], "code": code},
    )
    if status != 200 or "session" not in done:
        die(f"POST /v1/login/code for {args.email}: {status} {error_code(done)}")
    write_private(args.out, done["session"]["token"] + "\n")
    print(f"signed in {args.email}: session saved to {args.out}")


def cmd_seal_passphrase(args):
    passphrase = pathlib.Path(args.passphrase_file).read_bytes().rstrip(b"\n")
    print(seal_passphrase(args.ceremony_key, args.group, passphrase))


class Node:
    """A node's state directory: identity seed, X25519 key, token (all mode 0600)."""

    def __init__(self, state, cacert=None, clock_offset=0, source_ip=None):
        self.dir = pathlib.Path(state)
        self.http = Http(cacert, source_ip=source_ip)
        self.clock_offset = clock_offset

    def _read(self, name):
        return (self.dir / name).read_text().strip()

    @property
    def node_id(self):
        return self._read("node")

    def identity(self):
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self._read("identity.key")))

    def token(self, name="token"):
        return b64url_decode(self._read(name))

    def signed(self, method, base, target, body=None, token_name="token"):
        raw = json.dumps(body).encode() if body is not None else b""
        token = self.token(token_name)
        header = pop_header(
            self.identity(), method, target, raw, token,
            ts=int(time.time()) + self.clock_offset,
        )
        return self.http.call(
            method, base + target, raw_body=raw if body is not None else None,
            headers={"authorization": f"Bearer {b64url(token)}", "keymesh-proof": header},
        )


def cmd_node(args):
    node = Node(args.state, args.cacert, args.clock_offset, args.source_ip)
    if args.node_cmd == "enroll":
        node.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = Ed25519PrivateKey.generate()
        public = identity.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        code = read_secret(args.code_file)
        status, body = node.http.call("POST", f"{args.management}/v1/enroll", {
            "code": code, "node_id": args.node, "public_key": public.hex(),
            "signature": identity.sign(enrollment_message(code, args.node, public)).hex(),
        })
        if status != 201:
            die(f"enroll {args.node}: {status} {error_code(body)} {body}", 3)
        write_private(node.dir / "identity.key", identity.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()).hex())
        write_private(node.dir / "node", args.node)
        write_private(node.dir / "token", body["token"])
        print(f"enrolled {args.node} into {body['node']['group_id']} (ceiling {body['node']['ceiling']})")
    elif args.node_cmd == "publish-key":
        enc = X25519PrivateKey.generate()
        enc_public = _raw_public(enc)
        write_private(node.dir / "enc.key", enc.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()).hex())
        statement = key_statement(node.node_id, args.version, enc_public)
        status, body = node.signed("PUT", args.relay, "/v1/relay/keys", {
            "version": args.version, "enc_key": enc_public.hex(),
            "signature": node.identity().sign(statement).hex(),
        })
        print(json.dumps({"status": status, "code": error_code(body)}))
        sys.exit(0 if status in (200, 201, 204) else 3)
    elif args.node_cmd == "send":
        # Opaque random bytes: the relay stores and forwards ciphertext it cannot read, so a
        # load or flood test needs no real envelope (docs/protocol/relay.md).
        tally, interval = {}, (1.0 / args.rate if args.rate else 0)
        for _ in range(args.count):
            started = time.time()
            status, body = node.signed("POST", args.relay, "/v1/relay/messages", {
                "id": secrets.token_hex(16), "to": args.to,
                "enc": base64.b64encode(secrets.token_bytes(32)).decode(),
                "payload": base64.b64encode(secrets.token_bytes(args.size)).decode(),
            })
            key = f"{status} {error_code(body)}"
            tally[key] = tally.get(key, 0) + 1
            if interval:
                time.sleep(max(0.0, interval - (time.time() - started)))
        print(json.dumps(tally, sort_keys=True))
    elif args.node_cmd == "drain":
        # Fetch and acknowledge the node's own mailbox until it is empty.
        total, after = 0, 0
        while True:
            status, body = node.signed("GET", args.relay, f"/v1/relay/messages?after={after}&limit=200")
            if status != 200:
                die(f"fetch: {status} {error_code(body)}", 3)
            messages = body.get("messages", [])
            if not messages:
                break
            after = messages[-1]["seq"]
            status, ack = node.signed("POST", args.relay, "/v1/relay/ack", {"through": after})
            if status != 200:
                die(f"ack: {status} {error_code(ack)}", 3)
            total += len(messages)
        print(json.dumps({"drained": total}))
    elif args.node_cmd == "call":
        body = json.loads(args.body) if args.body else None
        status, answer = node.signed(args.method, args.base, args.target, body, args.token_name)
        print(json.dumps({"status": status, "code": error_code(answer), "body": answer}))
        sys.exit(0 if 200 <= status < 300 else 3)
    elif args.node_cmd == "repeat":
        # The same signed request N times at a rate: a client misbehaving, for alert drills.
        tally, interval = {}, (1.0 / args.rate if args.rate else 0)
        for _ in range(args.count):
            started = time.time()
            status, answer = node.signed(args.method, args.base, args.target, None, args.token_name)
            key = f"{status} {error_code(answer)}"
            tally[key] = tally.get(key, 0) + 1
            if interval:
                time.sleep(max(0.0, interval - (time.time() - started)))
        print(json.dumps(tally, sort_keys=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("self-test", help="check against docs/protocol/test-vectors")

    p = sub.add_parser("audit-check", help="check an audit export (JSON lines); exit 3 if broken")
    p.add_argument("file")

    p = sub.add_parser("smtp-server", help="SMTP with required STARTTLS into a Maildir")
    p.add_argument("--maildir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port", type=int, default=0, help="0: the kernel picks (printed)")
    p.add_argument("--port-file")

    p = sub.add_parser("signin", help="sign in with the mailed code; session to --out")
    p.add_argument("--management", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cacert")
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--source-ip", help="bind to this loopback address (127.0.0.0/8)")

    p = sub.add_parser("seal-passphrase", help="seal a passphrase file to a ceremony key")
    p.add_argument("--ceremony-key", required=True, help="the ceremony's public_key (hex)")
    p.add_argument("--group", required=True)
    p.add_argument("--passphrase-file", required=True)

    p = sub.add_parser("node", help="a minimal node (PoP-signed requests)")
    p.add_argument("--state", required=True, help="the node's directory (keys, token)")
    p.add_argument("--cacert")
    p.add_argument("--clock-offset", type=int, default=0,
                   help="seconds added to this node's clock (a skewed node, for drills)")
    p.add_argument("--source-ip", help="bind to this loopback address (127.0.0.0/8)")
    nsub = p.add_subparsers(dest="node_cmd", required=True)
    q = nsub.add_parser("enroll")
    q.add_argument("--management", required=True)
    q.add_argument("--code-file", required=True)
    q.add_argument("--node", required=True)
    q = nsub.add_parser("publish-key")
    q.add_argument("--relay", required=True)
    q.add_argument("--version", type=int, default=1)
    q = nsub.add_parser("send")
    q.add_argument("--relay", required=True)
    q.add_argument("--to", required=True)
    q.add_argument("--count", type=int, default=1)
    q.add_argument("--rate", type=float, default=0, help="requests per second (0: no pause)")
    q.add_argument("--size", type=int, default=64)
    q = nsub.add_parser("drain")
    q.add_argument("--relay", required=True)
    for name in ("call", "repeat"):
        q = nsub.add_parser(name)
        q.add_argument("--base", required=True)
        q.add_argument("--method", default="GET")
        q.add_argument("--target", required=True, help="path and query, exactly as signed")
        q.add_argument("--token-name", default="token", help="file in --state holding the token")
        if name == "call":
            q.add_argument("--body", help="JSON body")
        else:
            q.add_argument("--count", type=int, default=10)
            q.add_argument("--rate", type=float, default=0)

    args = parser.parse_args()
    {
        "self-test": cmd_self_test,
        "audit-check": cmd_audit_check,
        "smtp-server": cmd_smtp_server,
        "signin": cmd_signin,
        "seal-passphrase": cmd_seal_passphrase,
        "node": cmd_node,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
