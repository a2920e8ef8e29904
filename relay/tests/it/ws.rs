//! The WebSocket protocol against a real relay following a real vault: the handshake, sends,
//! windowed delivery, acknowledgements, and every break attempt the issue lists. Every HTTP
//! answer the relay gives here is checked against `docs/openapi/relay.json`
//! (`keymesh_core::openapi::conformance`).

use std::{
    sync::LazyLock,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use keymesh_core::{
    capability::{
        pop::{sign_challenge, sign_http},
        token::random_key,
    },
    http::node::TOKEN_B64,
    openapi::conformance::Conformance,
};
use keymesh_relay::{
    frame::{ClientFrame, MessageId, ServerFrame},
    registry::key_statement,
};
use keymesh_testkit::{Cluster, TestNode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The published document every HTTP answer is checked against.
static DOCUMENT: LazyLock<Conformance> = LazyLock::new(|| {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/relay.json");
    Conformance::from_file(&path).unwrap_or_else(|e| panic!("the OpenAPI document: {e}"))
});

/// The status and JSON body of a relay answer, after checking it against [`DOCUMENT`].
pub(crate) async fn checked(method: &str, path: &str, response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("relay answer");
    if let Err(e) = DOCUMENT.check(method, path, status, &headers, &bytes) {
        panic!("the response does not match docs/openapi/relay.json: {e}");
    }
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(crate) fn send_all() -> Value {
    json!([{ "resource": "relay/*", "op": "write" }])
}

/// A raw protocol client.
struct Raw {
    ws: Socket,
}

impl Raw {
    async fn open(cluster: &Cluster) -> (Self, [u8; 32]) {
        let mut request = cluster.ws_url().into_client_request().expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "keymesh.v1".parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        let mut raw = Self { ws };
        match raw.next().await {
            ServerFrame::Challenge { nonce, .. } => (raw, nonce),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Open and send a correct `hello` for `node` (its token, a proof over this challenge).
    async fn hello(cluster: &Cluster, node: &TestNode, resume_after: u64) -> Self {
        let (mut raw, nonce) = Self::open(cluster).await;
        let token = TOKEN_B64.decode(&node.token).expect("token");
        let proof = sign_challenge(&node.key, &nonce, &token);
        raw.frame(&ClientFrame::Hello {
            token,
            proof,
            resume_after,
        })
        .await;
        raw
    }

    /// Open and complete the handshake; the `ready` frame's fields.
    async fn ready(cluster: &Cluster, node: &TestNode, resume_after: u64) -> (Self, ServerFrame) {
        let mut raw = Self::hello(cluster, node, resume_after).await;
        let ready = raw.next().await;
        assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");
        (raw, ready)
    }

    async fn frame(&mut self, frame: &ClientFrame) {
        self.bytes(frame.encode()).await;
    }

    async fn bytes(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// The next frame (control messages skipped), within 5 s.
    async fn next(&mut self) -> ServerFrame {
        self.try_next(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s")
    }

    async fn try_next(&mut self, wait: Duration) -> Option<ServerFrame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match message.ok()? {
                Message::Binary(b) => return Some(ServerFrame::decode(&b).expect("server frame")),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The `error` frame the relay ends with, then the close.
    async fn expect_error(&mut self, code: &str) {
        match self.next().await {
            ServerFrame::Error { code: got, .. } => assert_eq!(got, code),
            other => panic!("expected error {code}, got {other:?}"),
        }
        assert!(
            self.try_next(Duration::from_secs(5)).await.is_none(),
            "the relay closes after an error"
        );
    }

    async fn send(&mut self, id: MessageId, to: &str, payload: &[u8]) {
        self.frame(&ClientFrame::Send {
            id,
            to: to.to_owned(),
            ttl_secs: 0,
            enc: vec![7; 41],
            payload: payload.to_vec(),
        })
        .await;
    }
}

fn id(n: u8) -> MessageId {
    let mut id = [0u8; 16];
    id[0] = n;
    getrandom::fill(&mut id[1..]).expect("rng");
    id
}

/// Publish a (random) encryption key for `node`, so it is a known recipient.
pub(crate) async fn publish(cluster: &Cluster, node: &TestNode) {
    let enc = random_key();
    let signature = node.key.sign(&key_statement(&node.id, 1, &enc));
    let body = json!({
        "version": 1,
        "enc_key": hex::encode(enc.as_ref()),
        "signature": hex::encode(signature.to_bytes()),
    })
    .to_string();
    let (status, reply) = node_http(cluster, node, "PUT", "/v1/relay/keys", body).await;
    assert_eq!(status, 200, "{reply}");
}

pub(crate) async fn node_http(
    cluster: &Cluster,
    node: &TestNode,
    method: &str,
    path: &str,
    body: String,
) -> (u16, Value) {
    let token = TOKEN_B64.decode(&node.token).expect("token");
    let proof = sign_http(
        &node.key,
        method,
        path,
        body.as_bytes(),
        &token,
        SystemTime::now(),
    );
    let response = reqwest::Client::new()
        .request(
            method.parse().expect("method"),
            format!("{}{path}", cluster.relay_url),
        )
        .bearer_auth(&node.token)
        .header("keymesh-proof", proof)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("relay call");
    checked(method, path, response).await
}

pub(crate) async fn pair(cluster: &Cluster) -> (TestNode, TestNode) {
    let a = cluster.node("node-a", "g1", send_all()).await;
    let b = cluster.node("node-b", "g1", send_all()).await;
    publish(cluster, &a).await;
    publish(cluster, &b).await;
    (a, b)
}

#[tokio::test]
async fn offline_messages_arrive_in_order_and_acks_delete_them() {
    let cluster = Cluster::start(&[]).await;
    let (a, b) = pair(&cluster).await;
    let (mut sender, _) = Raw::ready(&cluster, &a, 0).await;
    let ids: Vec<MessageId> = (0..5).map(id).collect();
    for (i, m) in ids.iter().enumerate() {
        sender
            .send(*m, "node-b", format!("ciphertext {i}").as_bytes())
            .await;
    }
    for m in &ids {
        assert_eq!(
            sender.next().await,
            ServerFrame::Accepted {
                id: *m,
                duplicate: false
            }
        );
    }
    // A retry of an accepted id stores nothing.
    sender.send(ids[0], "node-b", b"again").await;
    assert_eq!(
        sender.next().await,
        ServerFrame::Accepted {
            id: ids[0],
            duplicate: true
        }
    );

    let (mut receiver, ready) = Raw::ready(&cluster, &b, 0).await;
    let ServerFrame::Ready { node, limits, .. } = ready else {
        unreachable!()
    };
    assert_eq!(node, "node-b");
    assert_eq!(limits.max_message, 262_144);
    for (i, m) in ids.iter().enumerate() {
        match receiver.next().await {
            ServerFrame::Deliver {
                seq,
                id,
                from,
                payload,
                ..
            } => {
                assert_eq!(seq, i as u64 + 1);
                assert_eq!(id, *m);
                assert_eq!(from, "node-a");
                assert_eq!(payload, format!("ciphertext {i}").into_bytes());
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    receiver.frame(&ClientFrame::Ack { through: 5 }).await;
    // Acks are durable through the writer; poll the table briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster
        .relay
        .store
        .fetch("node-b", 0, 10)
        .await
        .expect("fetch")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "acked messages were not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A live delivery: sent while B is connected.
    let live = id(9);
    sender.send(live, "node-b", b"live").await;
    assert!(matches!(sender.next().await, ServerFrame::Accepted { .. }));
    assert!(matches!(
        receiver.next().await,
        ServerFrame::Deliver { seq: 6, .. }
    ));
}

#[tokio::test]
async fn a_full_window_pauses_delivery_and_drops_nothing() {
    let cluster = Cluster::start(&[("RELAY_WINDOW", "4")]).await;
    let (a, b) = pair(&cluster).await;
    let (mut receiver, _) = Raw::ready(&cluster, &b, 0).await;
    let (mut sender, _) = Raw::ready(&cluster, &a, 0).await;
    for n in 0..20 {
        sender.send(id(n), "node-b", &[n]).await;
    }
    for _ in 0..20 {
        assert!(matches!(sender.next().await, ServerFrame::Accepted { .. }));
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        match receiver.next().await {
            ServerFrame::Deliver { seq, .. } => got.push(seq),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        receiver
            .try_next(Duration::from_millis(300))
            .await
            .is_none(),
        "the window is full: nothing more until an ack"
    );
    while got.len() < 20 {
        let through = *got.last().expect("some");
        receiver.frame(&ClientFrame::Ack { through }).await;
        for _ in 0..4.min(20 - got.len()) {
            match receiver.next().await {
                ServerFrame::Deliver { seq, .. } => got.push(seq),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(got, (1..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn handshake_break_attempts_are_refused_with_codes() {
    let cluster = Cluster::start(&[("RELAY_CONNECTIONS_PER_NODE", "1")]).await;
    let (a, _) = pair(&cluster).await;
    let token = TOKEN_B64.decode(&a.token).expect("token");

    // A token without the node's key: the proof is signed by another key.
    let (mut raw, nonce) = Raw::open(&cluster).await;
    let thief = SigningKey::from_bytes(&random_key());
    raw.frame(&ClientFrame::Hello {
        token: token.clone(),
        proof: sign_challenge(&thief, &nonce, &token),
        resume_after: 0,
    })
    .await;
    raw.expect_error("proof_invalid").await;

    // A replayed handshake: a proof for one connection's challenge on another connection.
    let (_first, nonce) = Raw::open(&cluster).await;
    let proof = sign_challenge(&a.key, &nonce, &token);
    let (mut second, _) = Raw::open(&cluster).await;
    second
        .frame(&ClientFrame::Hello {
            token: token.clone(),
            proof,
            resume_after: 0,
        })
        .await;
    second.expect_error("proof_invalid").await;

    // Garbage instead of a token.
    let (mut raw, nonce) = Raw::open(&cluster).await;
    raw.frame(&ClientFrame::Hello {
        token: b"not a token".to_vec(),
        proof: sign_challenge(&a.key, &nonce, b"not a token"),
        resume_after: 0,
    })
    .await;
    raw.expect_error("invalid_token").await;

    // Something other than hello first.
    let (mut raw, _) = Raw::open(&cluster).await;
    raw.frame(&ClientFrame::Ack { through: 1 }).await;
    raw.expect_error("protocol_error").await;

    // One connection over the per-node cap.
    let (_held, _) = Raw::ready(&cluster, &a, 0).await;
    Raw::hello(&cluster, &a, 0)
        .await
        .expect_error("too_many_connections")
        .await;

    // Without the subprotocol the upgrade itself is refused.
    let plain = tokio_tungstenite::connect_async(cluster.ws_url()).await;
    assert!(plain.is_err(), "an upgrade without keymesh.v1 is refused");
}

#[tokio::test]
async fn frame_break_attempts_are_refused_with_codes() {
    let cluster = Cluster::start(&[("RELAY_MAX_MESSAGE_BYTES", "1024")]).await;
    let (a, _b) = pair(&cluster).await;
    let no_right = cluster
        .node(
            "node-c",
            "g1",
            json!([{ "resource": "relay/node-a", "op": "write" }]),
        )
        .await;
    let other_group = cluster.node("node-x", "g2", send_all()).await;
    publish(&cluster, &other_group).await;

    let (mut raw, _) = Raw::ready(&cluster, &a, 0).await;
    // Per-message refusals keep the connection.
    let big = id(1);
    raw.send(big, "node-b", &[0; 1025]).await;
    assert_eq!(
        raw.next().await,
        ServerFrame::Refused {
            id: big,
            code: "too_large".into(),
            retry_after_ms: 0
        }
    );
    let nobody = id(2);
    raw.send(nobody, "node-nobody", b"x").await;
    assert!(
        matches!(raw.next().await, ServerFrame::Refused { code, .. } if code == "unknown_recipient")
    );
    // A node of another group is as unknown as one that does not exist.
    let elsewhere = id(3);
    raw.send(elsewhere, "node-x", b"x").await;
    assert!(
        matches!(raw.next().await, ServerFrame::Refused { code, .. } if code == "unknown_recipient")
    );
    // Ack of a sequence number never delivered here (another node's numbering).
    raw.frame(&ClientFrame::Ack { through: 1 }).await;
    raw.expect_error("protocol_error").await;

    // Send without the right to the recipient.
    let (mut raw, _) = Raw::ready(&cluster, &no_right, 0).await;
    let denied = id(4);
    raw.send(denied, "node-b", b"x").await;
    assert!(matches!(raw.next().await, ServerFrame::Refused { code, .. } if code == "forbidden"));

    // Malformed, truncated, unknown type, oversized frame, text message: error, then close.
    let good = ClientFrame::Ack { through: 0 }.encode();
    for (bytes, code) in [
        (good[..good.len() - 1].to_vec(), "malformed_frame"),
        (vec![1, 0x7f], "malformed_frame"),
        (vec![9, 0x02], "malformed_frame"),
        ([good.clone(), vec![0]].concat(), "malformed_frame"),
        (vec![0; 1024 + 1024 + 1], "too_large"),
    ] {
        let (mut raw, _) = Raw::ready(&cluster, &a, 0).await;
        raw.bytes(bytes).await;
        raw.expect_error(code).await;
    }
    let (mut raw, _) = Raw::ready(&cluster, &a, 0).await;
    raw.ws
        .send(Message::Text("hello".into()))
        .await
        .expect("send");
    raw.expect_error("protocol_error").await;
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_and_open_sockets_closed() {
    let cluster = Cluster::start(&[]).await;
    let (a, b) = pair(&cluster).await;
    let (mut open, _) = Raw::ready(&cluster, &a, 0).await;
    let started = Instant::now();
    let (status, body) = cluster
        .mgmt(
            reqwest::Method::POST,
            "/v1/revocations",
            Some(
                json!({ "kind": "epoch", "scope": "node", "subject": "node-a", "reason": "test" }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    open.expect_error("revoked").await;
    let revoke_to_close = started.elapsed();
    eprintln!("revoke-to-close: {revoke_to_close:?}");
    assert!(
        revoke_to_close < Duration::from_secs(1),
        "an open socket of a revoked node is closed within 1 s (took {revoke_to_close:?})"
    );
    // A new connection with the revoked token is refused at the handshake.
    Raw::hello(&cluster, &a, 0)
        .await
        .expect_error("revoked")
        .await;

    // An expired token: minted for one second.
    let (status, body) = cluster
        .mgmt(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(json!({ "node_id": "node-b", "rights": send_all(), "ttl_secs": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let short = TOKEN_B64
        .decode(body["token"].as_str().expect("token"))
        .expect("b64");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut raw, nonce) = Raw::open(&cluster).await;
    let key = b.key.clone();
    raw.frame(&ClientFrame::Hello {
        proof: sign_challenge(&key, &nonce, &short),
        token: short,
        resume_after: 0,
    })
    .await;
    raw.expect_error("token_expired").await;
}

#[tokio::test]
async fn http_fallback_sends_fetches_and_acks_only_its_own_mailbox() {
    let cluster = Cluster::start(&[]).await;
    let (a, b) = pair(&cluster).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = json!({
        "id": hex::encode(id(1)), "to": "node-b",
        "enc": b64.encode([1u8; 41]), "payload": b64.encode(b"sealed"),
    })
    .to_string();
    let (status, reply) = node_http(&cluster, &a, "POST", "/v1/relay/messages", body.clone()).await;
    assert_eq!(
        (status, &reply["duplicate"]),
        (200, &json!(false)),
        "{reply}"
    );
    let (status, reply) = node_http(&cluster, &a, "POST", "/v1/relay/messages", body).await;
    assert_eq!(
        (status, &reply["duplicate"]),
        (200, &json!(true)),
        "{reply}"
    );

    let (status, reply) = node_http(
        &cluster,
        &b,
        "GET",
        "/v1/relay/messages?after=0",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let messages = reply["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["from"], "node-a");
    assert_eq!(messages[0]["payload"], b64.encode(b"sealed"));

    // A cannot acknowledge B's mailbox: its ack names its own (empty) mailbox.
    let (status, reply) = node_http(
        &cluster,
        &a,
        "POST",
        "/v1/relay/ack",
        json!({ "through": 1 }).to_string(),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("protocol_error")),
        "{reply}"
    );
    let (status, reply) = node_http(
        &cluster,
        &b,
        "POST",
        "/v1/relay/ack",
        json!({ "through": 1 }).to_string(),
    )
    .await;
    assert_eq!((status, &reply["deleted"]), (200, &json!(1)), "{reply}");

    // Key lookups: same group only.
    let (status, reply) =
        node_http(&cluster, &a, "GET", "/v1/relay/keys/node-b", String::new()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["keys"][0]["version"], 1);
    let x = cluster.node("node-x", "g2", send_all()).await;
    let (status, reply) =
        node_http(&cluster, &x, "GET", "/v1/relay/keys/node-b", String::new()).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("unknown_recipient"))
    );
    // A key signed by another identity is refused.
    let enc = random_key();
    let forged = SigningKey::from_bytes(&random_key()).sign(&key_statement("node-a", 2, &enc));
    let (status, reply) = node_http(&cluster, &a, "PUT", "/v1/relay/keys", json!({
        "version": 2, "enc_key": hex::encode(enc.as_ref()), "signature": hex::encode(forged.to_bytes()),
    }).to_string()).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{reply}"
    );
}

#[tokio::test]
async fn full_mailboxes_rates_and_expiry_are_told_not_hidden() {
    let cluster = Cluster::start(&[
        ("RELAY_MAILBOX_MAX_MESSAGES", "2"),
        ("RELAY_SENDS_PER_SECOND", "4"),
    ])
    .await;
    let (a, b) = pair(&cluster).await;
    let (mut sender, _) = Raw::ready(&cluster, &a, 0).await;
    // Two short-lived messages fill B's mailbox; the third is refused, nothing is stored.
    for n in 0..2 {
        sender
            .frame(&ClientFrame::Send {
                id: id(n),
                to: "node-b".into(),
                ttl_secs: 1,
                enc: vec![1; 41],
                payload: vec![n],
            })
            .await;
        assert!(matches!(sender.next().await, ServerFrame::Accepted { .. }));
    }
    let third = id(2);
    sender.send(third, "node-b", b"third").await;
    match sender.next().await {
        ServerFrame::Refused {
            id,
            code,
            retry_after_ms,
        } => {
            assert_eq!((id, code.as_str()), (third, "mailbox_full"));
            assert!(retry_after_ms > 0);
        }
        other => panic!("{other:?}"),
    }
    // The rate: 4 per second with a burst of 4, three already used.
    let mut codes = Vec::new();
    for n in 10..14 {
        sender.send(id(n), "node-b", b"x").await;
        if let ServerFrame::Refused {
            code,
            retry_after_ms,
            ..
        } = sender.next().await
        {
            if code == "rate_limited" {
                assert!(retry_after_ms > 0, "a rate refusal says when to retry");
            }
            codes.push(code);
        }
    }
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    // Both stored messages expire unacknowledged; B is told on connecting.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (mut receiver, _) = Raw::ready(&cluster, &b, 0).await;
    assert_eq!(
        receiver.next().await,
        ServerFrame::Expired {
            after: 0,
            through: 2,
            count: 2
        }
    );
}

#[tokio::test]
async fn a_stale_revocation_feed_fails_closed_and_the_relay_reports_not_ready() {
    let cluster = Cluster::start(&[("RELAY_FEED_MAX_AGE_SECS", "6")]).await;
    let (a, _) = pair(&cluster).await;
    let ready = || async {
        let response = reqwest::get(format!("{}/health/ready", cluster.relay_url))
            .await
            .expect("readiness answers");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("json"))
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["revocation_feed"], "ok", "{body}");
    let (mut open, _) = Raw::ready(&cluster, &a, 0).await;

    // The vault goes away: once the relay's copy is older than the bound (6 s, the least the
    // relay accepts), nothing is trusted.
    cluster.stop_vault();
    match open.try_next(Duration::from_secs(15)).await {
        Some(ServerFrame::Error { code, .. }) => assert_eq!(code, "revoked"),
        other => panic!("expected error revoked once the feed is stale, got {other:?}"),
    }
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert_eq!(body["checks"]["revocation_feed"], "stale", "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    Raw::hello(&cluster, &a, 0)
        .await
        .expect_error("revoked")
        .await;
}

#[tokio::test]
async fn key_publications_are_audited_and_only_management_reads_the_log() {
    const KEY: &str = "relay-management-key-0123456789abcdef0123";
    let cluster = Cluster::start(&[("RELAY_MANAGEMENT_API_KEY", KEY)]).await;
    let (_, _) = pair(&cluster).await;
    let http = reqwest::Client::new();
    let get = |path: &'static str, key: Option<&'static str>| {
        let mut req = http.get(format!("{}{path}", cluster.relay_url));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        async move {
            let reply = req.send().await.expect("relay call");
            checked("GET", path, reply).await
        }
    };
    for key in [None, Some("not-the-key")] {
        let (status, reply) = get("/v1/audit", key).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let (status, reply) = get("/v1/audit?after_seq=0", Some(KEY)).await;
    assert_eq!(status, 200, "{reply}");
    let records = reply["records"].as_array().expect("records");
    let published: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "relay.key.publish" && r["outcome"] == "success")
        .collect();
    assert_eq!(published.len(), 2, "{reply}");
    assert_eq!(published[0]["actor"], "node:node-a");
    let details: Value =
        serde_json::from_str(published[0]["details"].as_str().expect("details")).expect("json");
    assert_eq!(details["version"], 1);
    assert_eq!(details["enc_key_sha256"].as_str().map(str::len), Some(64));
    let (status, reply) = get("/v1/audit/verify", Some(KEY)).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["first_broken"].is_null(), "{reply}");
    assert_eq!(reply["checked"], 2);
}
