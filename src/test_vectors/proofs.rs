//! Proof of possession over HTTP and the relay's WebSocket handshake.

use super::*;

// ---------------------------------------------------------------------------------------------
// Proof of possession over HTTP.

/// The documented message (docs/protocol/tokens.md), built independently of `pop.rs`.
fn pop_message(
    method: &str,
    target: &str,
    ts: i64,
    nonce: &[u8; 16],
    body: &[u8],
    token: &[u8],
    separator: &str,
) -> Vec<u8> {
    [
        "keymesh-pop-v1".to_owned(),
        method.to_owned(),
        target.to_owned(),
        ts.to_string(),
        hex::encode(nonce),
        hex::encode(sha256(body)),
        hex::encode(token_hash(token)),
    ]
    .join(separator)
    .into_bytes()
}

fn pop_verify(
    header: &str,
    key: &VerifyingKey,
    method: &str,
    target: &str,
    body: &[u8],
    token: &[u8],
    now: i64,
) -> Result<(), PopError> {
    pop::verify_http(
        Some(header),
        key,
        method,
        target,
        body,
        &token_hash(token),
        &ReplayCache::default(),
        at(now),
    )
}

fn request_json(method: &str, target: &str, body: &[u8]) -> J {
    obj([
        ("method", method.into()),
        ("target", target.into()),
        ("body", message(body)),
        ("body_sha256_hex", hx(sha256(body))),
    ])
}

#[test]
fn pop_vectors() {
    let key = identity("node-a");
    let public = key.verifying_key();
    let token = token_bytes();
    let cases: [(&str, &str, &str, &[u8]); 3] = [
        (
            "read, no query: the bare path is signed",
            "GET",
            "/v1/vaults/payments/secrets/db/password",
            b"",
        ),
        (
            "list, with a query",
            "GET",
            "/v1/vaults/payments/secrets?prefix=db/",
            b"",
        ),
        (
            "write, with a body",
            "PUT",
            "/v1/vaults/payments/secrets/db/password",
            br#"{"value":"correct horse battery staple"}"#,
        ),
    ];
    let mut valid = Vec::new();
    let mut first = None;
    for (i, (name, method, target, body)) in cases.into_iter().enumerate() {
        let ts = TS + i64::try_from(i).expect("small");
        // The first three bytes make base64url use '-' and '_' (standard base64: '+' and '/').
        let mut nonce = [0u8; 16];
        nonce[..3].copy_from_slice(&[0xfb, 0xff, 0xbf]);
        nonce[3..].copy_from_slice(&fixed(&format!("pop nonce {i}"))[..13]);
        let signed = pop_message(method, target, ts, &nonce, body, &token, "\n");
        let sig = key.sign(&signed).to_bytes();
        let proof = Proof { ts, nonce, sig };
        let header = proof.encode();
        assert_eq!(Proof::parse(&header), Ok(proof), "{name}");
        for now in [ts, ts - 60, ts + 60] {
            assert_eq!(
                pop_verify(&header, &public, method, target, body, &token, now),
                Ok(()),
                "{name} at {now}"
            );
        }
        for now in [ts - 61, ts + 61] {
            assert_eq!(
                pop_verify(&header, &public, method, target, body, &token, now),
                Err(PopError::Stale),
                "{name} at {now}"
            );
        }
        let replay = ReplayCache::default();
        let th = token_hash(&token);
        let once = |replay: &ReplayCache| {
            pop::verify_http(
                Some(&header),
                &public,
                method,
                target,
                body,
                &th,
                replay,
                at(ts),
            )
        };
        assert_eq!(once(&replay), Ok(()));
        assert_eq!(once(&replay), Err(PopError::Replayed));
        // The project's signer signs the documented message (its nonce is random: rebuild
        // the message with the nonce it chose).
        let real = Proof::parse(&pop::sign_http(&key, method, target, body, &token, at(ts)))
            .expect("sign_http's header parses");
        assert_eq!(real.ts, ts);
        public
            .verify_strict(
                &pop_message(method, target, ts, &real.nonce, body, &token, "\n"),
                &Signature::from_bytes(&real.sig),
            )
            .expect("sign_http signs the documented message");
        if first.is_none() {
            first = Some((ts, nonce, sig, method, target, body));
        }
        valid.push(obj([
            ("name", name.into()),
            ("request", request_json(method, target, body)),
            ("ts", ts.into()),
            ("nonce_hex", hx(nonce)),
            ("nonce_b64url", URL_SAFE_NO_PAD.encode(nonce).into()),
            ("message", message(&signed)),
            ("signature_hex", hx(sig)),
            ("signature_b64url", URL_SAFE_NO_PAD.encode(sig).into()),
            ("keymesh_proof", header.clone().into()),
            (
                "accepted_at",
                J::Arr(vec![(ts - 60).into(), (ts + 60).into()]),
            ),
            (
                "refused_at",
                J::Arr(vec![(ts - 61).into(), (ts + 61).into()]),
            ),
        ]));
    }
    let (ts, nonce, sig, method, target, body) = first.expect("a case");
    let b64 = URL_SAFE_NO_PAD;
    let good = pop_message(method, target, ts, &nonce, body, &token, "\n");
    // The worked example in tokens.md is this first vector.
    let tokens_md = fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/protocol/tokens.md"),
    )
    .expect("tokens.md");
    let escaped = String::from_utf8(good.clone())
        .expect("text")
        .replace('\n', "\\n");
    for needle in [&Proof { ts, nonce, sig }.encode(), &escaped] {
        assert!(
            tokens_md.contains(needle.as_str()),
            "the worked example in docs/protocol/tokens.md is not pop.json's first vector \
             any more: update it by hand ({needle})"
        );
    }
    let mut invalid = Vec::new();
    // A proof refused for `target`, with the message its signature is over.
    let mut refuse = |name: &str, why: &str, signed: &[u8], header: String, now: i64| {
        let err =
            pop_verify(&header, &public, method, target, body, &token, now).expect_err("refused");
        invalid.push(obj([
            ("name", name.into()),
            ("why", why.into()),
            ("request", request_json(method, target, body)),
            ("signed", message(signed)),
            ("keymesh_proof", header.into()),
            ("verified_at", now.into()),
            ("refused_with", code(err).into()),
        ]));
    };
    let signed_by = |message: &[u8]| {
        Proof {
            ts,
            nonce,
            sig: key.sign(message).to_bytes(),
        }
        .encode()
    };
    let padded_nonce = URL_SAFE.encode(nonce);
    assert!(padded_nonce.ends_with("=="));
    refuse(
        "nonce with padding",
        "nonce and sig are base64url WITHOUT padding; a padded value does not parse",
        &good,
        format!("v1;ts={ts};nonce={padded_nonce};sig={}", b64.encode(sig)),
        ts,
    );
    let padded_sig = URL_SAFE.encode(sig);
    assert!(padded_sig.ends_with("=="));
    refuse(
        "signature with padding",
        "nonce and sig are base64url WITHOUT padding; a padded value does not parse",
        &good,
        format!("v1;ts={ts};nonce={};sig={padded_sig}", b64.encode(nonce)),
        ts,
    );
    let standard_nonce = STANDARD_NO_PAD.encode(nonce);
    assert!(standard_nonce.contains('+') && standard_nonce.contains('/'));
    refuse(
        "nonce in the standard base64 alphabet",
        "base64url uses '-' and '_' where standard base64 uses '+' and '/'",
        &good,
        format!("v1;ts={ts};nonce={standard_nonce};sig={}", b64.encode(sig)),
        ts,
    );
    // The verifier signs the request line's target as the server parsed it: `PATH?` stays
    // `PATH?`, a bare path stays bare.
    for sent in ["/v1/x", "/v1/x?", "/v1/x?a=1"] {
        let uri: axum::http::Uri = sent.parse().expect("uri");
        assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some(sent));
    }
    let question = pop_message(
        method,
        &format!("{target}?"),
        ts,
        &nonce,
        body,
        &token,
        "\n",
    );
    refuse(
        "'PATH?' signed for a request without a query",
        "the signed target is the request target exactly as sent: with no query, the bare path",
        &question,
        signed_by(&question),
        ts,
    );
    let spaced = pop_message(method, target, ts, &nonce, body, &token, " \n ");
    refuse(
        "spaces around the separators",
        "the lines are joined by a single 0x0A, with no spaces",
        &spaced,
        signed_by(&spaced),
        ts,
    );
    let token_text = b64.encode(&token);
    let text_hash = pop_message(
        method,
        target,
        ts,
        &nonce,
        body,
        token_text.as_bytes(),
        "\n",
    );
    refuse(
        "token hashed as its base64 text",
        "the token hash is SHA-256 of the raw token bytes (base64url-decoded), not of the header text",
        &text_hash,
        signed_by(&text_hash),
        ts,
    );
    let upper = format!(
        "keymesh-pop-v1\n{method}\n{target}\n{ts}\n{}\n{}\n{}",
        hex::encode_upper(nonce),
        hex::encode_upper(sha256(body)),
        hex::encode_upper(token_hash(&token))
    )
    .into_bytes();
    refuse(
        "hex in upper case",
        "nonce, body hash and token hash are lowercase hex",
        &upper,
        signed_by(&upper),
        ts,
    );
    refuse(
        "timestamp outside the window",
        "|ts - now| must be at most 60 seconds (refused as proof_invalid)",
        &good,
        Proof { ts, nonce, sig }.encode(),
        ts + 61,
    );
    // verify_strict: a small-order key with the trivial signature (R = identity, S = 0)
    // passes non-strict Ed25519 verification for every message, but not verify_strict.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let weak = VerifyingKey::from_bytes(&identity_point).expect("the identity point decodes");
    let mut trivial = [0u8; 64];
    trivial[..32].copy_from_slice(&identity_point);
    let weak_message = pop_message(method, target, ts, &nonce, body, &token, "\n");
    assert!(
        weak.verify(&weak_message, &Signature::from_bytes(&trivial))
            .is_ok(),
        "non-strict verification accepts the trivial signature"
    );
    let weak_header = Proof {
        ts,
        nonce,
        sig: trivial,
    }
    .encode();
    let err = pop_verify(&weak_header, &weak, method, target, body, &token, ts)
        .expect_err("verify_strict refuses a small-order key");
    invalid.push(obj([
        ("name", "small-order node key with the trivial signature".into()),
        (
            "why",
            "signatures are checked with verify_strict (RFC 8032 with small-order A and R refused); \
             non-strict verification would accept this for any message"
                .into(),
        ),
        ("node_key_hex", hx(identity_point)),
        ("request", request_json(method, target, body)),
        ("signed", message(&weak_message)),
        ("keymesh_proof", weak_header.into()),
        ("verified_at", ts.into()),
        ("refused_with", code(err).into()),
    ]));

    let unpadded = b64.encode(&token);
    let padded = URL_SAFE.encode(&token);
    assert_ne!(unpadded, padded);
    for form in [&unpadded, &padded] {
        assert_eq!(TOKEN_B64.decode(form).expect("tokens accept either"), token);
    }
    let doc = obj([
        (
            "description",
            "HTTP proof of possession (Keymesh-Proof header): Ed25519 over the lines keymesh-pop-v1, \
             METHOD, TARGET, TS, hex(nonce), hex(SHA-256(body)), hex(SHA-256(token bytes)) joined \
             by single 0x0A bytes."
                .into(),
        ),
        ("spec", "docs/protocol/tokens.md".into()),
        (
            "encodings",
            obj([
                ("header", "v1;ts=<decimal unix seconds>;nonce=<base64url, no padding, 16 bytes>;sig=<base64url, no padding, 64 bytes>".into()),
                ("message_fields", "nonce, body hash and token hash in lowercase hex".into()),
                ("authorization", "Bearer <token bytes as base64url; padding optional>".into()),
                ("window_secs", 60i64.into()),
                ("verification", "Ed25519 verify_strict".into()),
            ]),
        ),
        ("node_key", node_key_json("node-a")),
        (
            "token",
            obj([
                ("bytes_hex", hx(&token)),
                ("sha256_hex", hx(token_hash(&token))),
                ("authorization_unpadded", format!("Bearer {unpadded}").into()),
                ("authorization_padded", format!("Bearer {padded}").into()),
            ]),
        ),
        ("valid", valid.into()),
        ("invalid", invalid.into()),
    ]);
    publish("pop.json", &doc);
}

// ---------------------------------------------------------------------------------------------
// The relay's WebSocket handshake.

fn ws_message(challenge: &[u8], token: &[u8], separator: &str) -> Vec<u8> {
    [
        "keymesh-ws-v1".to_owned(),
        hex::encode(challenge),
        hex::encode(token_hash(token)),
    ]
    .join(separator)
    .into_bytes()
}

#[test]
fn ws_handshake_vectors() {
    let key = identity("node-a");
    let public = key.verifying_key();
    let token = token_bytes();
    let nonce = fixed("ws challenge");
    let now_ms = u64::try_from(TS).expect("positive") * 1000;
    let challenge = ServerFrame::Challenge { nonce, now_ms };
    let challenge_frame = challenge.encode();
    assert!(ServerFrame::decode(&challenge_frame) == Ok(challenge));
    let signed = ws_message(&nonce, &token, "\n");
    let proof = pop::sign_challenge(&key, &nonce, &token);
    assert_eq!(
        proof,
        key.sign(&signed).to_bytes(),
        "sign_challenge signs the documented message"
    );
    pop::verify_challenge(&public, &nonce, &token_hash(&token), &proof).expect("verifies");
    let hello = ClientFrame::Hello {
        token: token.clone(),
        proof,
        resume_after: 0,
    };
    let hello_frame = hello.encode();
    assert!(ClientFrame::decode(&hello_frame, 1 << 20) == Ok(hello));

    let mut invalid = Vec::new();
    let mut refuse = |name: &str, why: &str, challenge: &[u8; 32], signed: &[u8]| {
        let sig = key.sign(signed).to_bytes();
        let err = pop::verify_challenge(&public, challenge, &token_hash(&token), &sig)
            .expect_err("refused");
        invalid.push(obj([
            ("name", name.into()),
            ("why", why.into()),
            ("challenge_hex", hx(challenge)),
            ("signed", message(signed)),
            ("signature_hex", hx(sig)),
            ("refused_with", code(err).into()),
        ]));
    };
    let mut other = nonce;
    other[31] ^= 1;
    refuse(
        "signature over another connection's challenge",
        "every challenge is fresh: a handshake cannot be replayed",
        &nonce,
        &ws_message(&other, &token, "\n"),
    );
    refuse(
        "spaces around the separators",
        "the lines are joined by a single 0x0A, with no spaces",
        &nonce,
        &ws_message(&nonce, &token, " \n "),
    );
    refuse(
        "challenge as base64 instead of hex",
        "the challenge is signed as lowercase hex of its 32 bytes",
        &nonce,
        format!(
            "keymesh-ws-v1\n{}\n{}",
            STANDARD.encode(nonce),
            hex::encode(token_hash(&token))
        )
        .as_bytes(),
    );
    let doc = obj([
        (
            "description",
            "Relay WebSocket handshake: the node signs keymesh-ws-v1, hex(challenge nonce), \
             hex(SHA-256(token bytes)) joined by single 0x0A bytes with its Ed25519 node key, \
             and sends the signature in its hello frame."
                .into(),
        ),
        (
            "spec",
            "docs/protocol/tokens.md, docs/protocol/relay.md".into(),
        ),
        (
            "transport",
            "GET /v1/relay/ws, subprotocol keymesh.v1, one binary frame per message".into(),
        ),
        ("node_key", node_key_json("node-a")),
        (
            "token",
            obj([
                ("bytes_hex", hx(&token)),
                ("sha256_hex", hx(token_hash(&token))),
            ]),
        ),
        (
            "challenge",
            obj([
                ("nonce_hex", hx(nonce)),
                ("now_ms", now_ms.into()),
                ("frame_hex", hx(&challenge_frame)),
            ]),
        ),
        ("message", message(&signed)),
        ("signature_hex", hx(proof)),
        (
            "hello",
            obj([
                ("resume_after", 0i64.into()),
                ("frame_hex", hx(&hello_frame)),
            ]),
        ),
        ("invalid", invalid.into()),
    ]);
    publish("ws-handshake.json", &doc);
}
