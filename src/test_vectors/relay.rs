//! The relay's key statements and the end-to-end envelope.

use super::*;

// ---------------------------------------------------------------------------------------------
// Key statements: a node's X25519 key published under its Ed25519 key.

#[test]
fn key_statement_vectors() {
    let node = "node-a";
    let version = 2;
    let keys = node_keys(node, version);
    let public = identity(node).verifying_key();
    let enc = keys.current_enc_key().public;
    let statement = registry::key_statement(node, version, &enc);
    assert_eq!(
        statement,
        format!(
            "keymesh-enc-key-v1\n{node}\n{version}\n{}",
            hex::encode(enc)
        )
        .into_bytes(),
        "the documented statement"
    );
    let signed = keys.signed_enc_key(version).expect("held");
    assert_eq!(signed.signature, identity(node).sign(&statement).to_bytes());
    assert!(signed.verify(&public));
    registry::verify_registration(&public, node, version, &enc, &signed.signature)
        .expect("the relay accepts it");
    let body = obj([
        ("version", version.into()),
        ("enc_key", hx(enc)),
        ("signature", hx(signed.signature)),
    ]);
    let listed = KeyRow {
        node: node.to_owned(),
        version: version.into(),
        group_id: "payments".to_owned(),
        identity_key: public.to_bytes().to_vec(),
        enc_key: enc.to_vec(),
        signature: signed.signature.to_vec(),
        created_ms: TS * 1000,
        retired_ms: None,
    };
    let mut invalid = Vec::new();
    let mut refuse =
        |name: &str, why: &str, node: &str, version: u32, enc: [u8; 32], want: KeyError| {
            assert_eq!(
                registry::verify_registration(&public, node, version, &enc, &signed.signature),
                Err(want),
                "{name}"
            );
            invalid.push(obj([
                ("name", name.into()),
                ("why", why.into()),
                ("node", node.into()),
                ("version", version.into()),
                ("enc_key_hex", hx(enc)),
                ("signature_hex", hx(signed.signature)),
                ("refused_with", "invalid_request".into()),
            ]));
        };
    refuse(
        "another version",
        "the version is part of the statement",
        node,
        version + 1,
        enc,
        KeyError::Signature,
    );
    refuse(
        "another node",
        "the node id (the token's node) is part of the statement",
        "node-b",
        version,
        enc,
        KeyError::Signature,
    );
    refuse(
        "all-zero key",
        "an all-zero X25519 key is refused before the signature is checked",
        node,
        version,
        [0; 32],
        KeyError::EncKey,
    );
    let doc = obj([
        (
            "description",
            "Key statement: the node's Ed25519 key signs keymesh-enc-key-v1, NODE, VERSION, \
             hex(X25519 public key) joined by single 0x0A bytes; PUT /v1/relay/keys carries \
             version, key and signature, the relay takes NODE from the token."
                .into(),
        ),
        ("spec", "docs/protocol/relay.md".into()),
        ("node_key", node_key_json(node)),
        ("version", version.into()),
        ("enc_key", x25519_json(enc_secret(node, version))),
        ("statement", message(&statement)),
        ("signature_hex", hx(signed.signature)),
        ("verification", "Ed25519 verify_strict".into()),
        ("put_body", body),
        (
            "listed_as",
            from_value(&serde_json::to_value(&listed).expect("row")),
        ),
        ("invalid", invalid.into()),
    ]);
    publish("key-statement.json", &doc);
}

// ---------------------------------------------------------------------------------------------
// End-to-end envelopes.

fn envelope_aad(
    sender: &str,
    recipient: &str,
    id: &[u8; 16],
    (sv, rv): (u32, u32),
    sent_ms: u64,
) -> Vec<u8> {
    format!(
        "keymesh-msg-v2\n{sender}\n{recipient}\n{}\n{sv}\n{rv}\n{sent_ms}",
        hex::encode(id)
    )
    .into_bytes()
}

#[test]
fn envelope_vectors() {
    const NAME: &str = "envelope.json";
    let (sv, rv) = (2, 1);
    // 2026-12-07T00:00:00Z, the sender's clock.
    let sent_ms: u64 = 1_796_601_600_000;
    let sender = node_keys("node-a", sv);
    let recipient = node_keys("node-b", rv);
    let sender_public = sender.current_enc_key().public;
    let recipient_public = recipient.current_enc_key().public;
    let mut id = [0u8; 16];
    id.copy_from_slice(&fixed("message id")[..16]);
    let plaintext = b"hello node-b, this is node-a";
    let aad = envelope_aad("node-a", "node-b", &id, (sv, rv), sent_ms);
    let real_open = |enc: &[u8], payload: &[u8]| {
        envelope::open(&recipient, "node-a", &sender_public, id, enc, payload)
    };
    // The documented construction: enc = 0x02 | sender version | recipient version | sent_ms
    // | encapped, opened with plain HPKE auth mode and the documented info and AAD.
    let documented_open = |enc: &[u8], payload: &[u8]| {
        enc.len() == 49
            && enc[..17]
                == [
                    [2u8].as_slice(),
                    &sv.to_be_bytes(),
                    &rv.to_be_bytes(),
                    &sent_ms.to_be_bytes(),
                ]
                .concat()
            && crypto::hpke_open_auth(
                recipient.current_enc_key(),
                &sender_public,
                b"keymesh-relay-v1",
                &aad,
                &[&enc[17..], payload].concat(),
            )
            .is_ok_and(|p| p[..] == plaintext[..])
    };
    let opens = |(enc, payload): &(Vec<u8>, Vec<u8>)| {
        real_open(enc, payload).is_ok_and(|p| p[..] == plaintext[..])
            && documented_open(enc, payload)
    };
    let committed = committed(NAME);
    let old = old_hex(committed.as_ref(), "/sealed/enc_hex")
        .zip(old_hex(committed.as_ref(), "/sealed/payload_hex"));
    let seal = || {
        envelope::seal(
            &sender,
            "node-b",
            (rv, recipient_public),
            id,
            sent_ms,
            plaintext,
        )
        .expect("seal")
    };
    let (enc, payload) = kept_or_fresh(NAME, "envelope", old, opens, || {
        let s = seal();
        (s.enc, s.payload)
    });
    // A fresh seal by the project opens with the stated keys, by the project and as documented.
    let fresh = seal();
    assert!(opens(&(fresh.enc, fresh.payload)));
    let header = EnvelopeHeader::parse(&enc).expect("header");

    let mut invalid = Vec::new();
    let mut refuse = |name: &str, why: &str, claimed_sender: &str, id: [u8; 16], enc: Vec<u8>| {
        let err = envelope::open(
            &recipient,
            claimed_sender,
            &sender_public,
            id,
            &enc,
            &payload,
        )
        .expect_err("refused");
        invalid.push(obj([
            ("name", name.into()),
            ("why", why.into()),
            ("sender", claimed_sender.into()),
            ("id_hex", hx(id)),
            ("enc_hex", hx(&enc)),
            ("refused_with", err.code().into()),
        ]));
        err
    };
    let mut other_id = id;
    other_id[15] ^= 1;
    refuse(
        "another message id",
        "the message id is in the AAD",
        "node-a",
        other_id,
        enc.clone(),
    );
    refuse(
        "another claimed sender",
        "the sender id is in the AAD (and its key is the HPKE auth key)",
        "node-c",
        id,
        enc.clone(),
    );
    let mut bumped = enc.clone();
    bumped[4] = 3;
    refuse(
        "sender key version changed",
        "both key versions are in the AAD",
        "node-a",
        id,
        bumped,
    );
    let mut unknown = enc.clone();
    unknown[8] = 9;
    assert_eq!(
        refuse(
            "recipient key version the recipient does not hold",
            "the recipient picks its key by the header's version",
            "node-a",
            id,
            unknown,
        ),
        EnvelopeError::UnknownKeyVersion(9)
    );
    let mut later = enc.clone();
    later[9..17].copy_from_slice(&(sent_ms + 86_400_000).to_be_bytes());
    refuse(
        "sending time changed",
        "sent_ms is in the AAD: a relay cannot make a message look newer or older",
        "node-a",
        id,
        later,
    );
    let mut format = enc.clone();
    format[0] = 3;
    refuse(
        "unknown format byte",
        "enc starts with format 2",
        "node-a",
        id,
        format,
    );
    let format_1 = [&[1u8][..], &enc[1..9], &enc[17..]].concat();
    assert_eq!(
        refuse(
            "format 1 (an older client: no sending time)",
            "format 1 is no longer opened, so a relay cannot replay undated messages",
            "node-a",
            id,
            format_1,
        ),
        EnvelopeError::UnknownFormat(1)
    );
    let frame = ClientFrame::Send {
        id,
        to: "node-b".to_owned(),
        ttl_secs: 0,
        enc: enc.clone(),
        payload: payload.clone(),
    }
    .encode();
    let doc = obj([
        (
            "description",
            "End-to-end envelope: HPKE (RFC 9180) auth mode, DHKEM(X25519, HKDF-SHA256), \
             HKDF-SHA256, ChaCha20-Poly1305, single shot; info keymesh-relay-v1; AAD binds sender, \
             recipient, message id, both key versions and the sender's sending time. The relay \
             carries enc and payload only."
                .into(),
        ),
        ("spec", "docs/protocol/relay.md".into()),
        (
            "suite",
            obj([
                ("mode", "auth (0x02)".into()),
                ("kem", "DHKEM(X25519, HKDF-SHA256) (0x0020)".into()),
                ("kdf", "HKDF-SHA256 (0x0001)".into()),
                ("aead", "ChaCha20Poly1305 (0x0003)".into()),
            ]),
        ),
        (
            "sender",
            obj([
                ("node", "node-a".into()),
                ("key_version", sv.into()),
                ("key", x25519_json(enc_secret("node-a", sv))),
            ]),
        ),
        (
            "recipient",
            obj([
                ("node", "node-b".into()),
                ("key_version", rv.into()),
                ("key", x25519_json(enc_secret("node-b", rv))),
            ]),
        ),
        ("id_hex", hx(id)),
        ("sent_ms", sent_ms.into()),
        ("plaintext", message(plaintext)),
        ("info", message(envelope::INFO)),
        ("aad", message(&aad)),
        (
            "sealed",
            obj([
                ("enc_hex", hx(&enc)),
                (
                    "enc_layout",
                    obj([
                        ("format", hx([enc[0]])),
                        (
                            "sender_key_version_u32be",
                            hx(header.sender_key_version.to_be_bytes()),
                        ),
                        (
                            "recipient_key_version_u32be",
                            hx(header.recipient_key_version.to_be_bytes()),
                        ),
                        ("sent_ms_u64be", hx(header.sent_ms.to_be_bytes())),
                        ("hpke_encapsulated_key", hx(header.encapped)),
                    ]),
                ),
                ("payload_hex", hx(&payload)),
            ]),
        ),
        (
            "carried_as",
            obj([
                (
                    "http_body",
                    obj([
                        ("id", hx(id)),
                        ("to", "node-b".into()),
                        ("enc", STANDARD.encode(&enc).into()),
                        ("payload", STANDARD.encode(&payload).into()),
                    ]),
                ),
                ("send_frame_hex", hx(&frame)),
            ]),
        ),
        ("invalid", invalid.into()),
    ]);
    publish(NAME, &doc);
}
