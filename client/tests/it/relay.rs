//! The relay client against a real relay: offline delivery, zero knowledge, reconnects with
//! idempotent resends, refusals, undecryptable messages and key verification.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use keymesh_client::{
    envelope,
    relay::{ClientOptions, ErrorKind, Incoming, RelayClient, RelayError, StaleReason},
    transport::Transport,
};
use keymesh_core::{capability::token::random_key, storage::Db};
use keymesh_testkit::Cluster;
use reqwest::Method;
use serde_json::json;

use crate::support::{
    Pki, Proxy, client, eventually, node, now_ms, plant, raw_call, register, relay_table_bytes,
    test_options, within,
};

/// Window 4, so five messages need acknowledgements to all arrive.
async fn cluster() -> Cluster {
    Cluster::start(&[("RELAY_WINDOW", "4")]).await
}

async fn held(cluster: &Cluster, node: &str) -> usize {
    cluster
        .relay
        .store
        .fetch(node, 0, 1000)
        .await
        .expect("fetch")
        .len()
}

async fn mailbox_empties(cluster: &Cluster, node: &str) {
    eventually("the acknowledged mailbox empties", || async {
        held(cluster, node).await == 0
    })
    .await;
}

/// Nothing more arrives within 500 ms.
async fn nothing_more(c: &RelayClient) {
    let more = tokio::time::timeout(Duration::from_millis(500), c.recv()).await;
    assert!(more.is_err(), "unexpected: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_receives_five_in_order_and_the_mailbox_empties() {
    let cluster = cluster().await;
    let a = client(&cluster, "A", "g1").await;
    // B publishes its key and goes away: it is offline while A sends.
    let b = client(&cluster, "B", "g1").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let receipt = within("send", a.send("B", format!("message {i}").as_bytes()))
            .await
            .expect("send");
        assert!(!receipt.duplicate);
        ids.push(receipt.id);
    }
    assert_eq!(held(&cluster, "B").await, 5);

    within("connect", b.connect()).await.expect("B connects");
    let mut last_seq = 0;
    for (i, id) in ids.iter().enumerate() {
        let m = within("recv", b.recv()).await.expect("message");
        assert_eq!(&m.plaintext[..], format!("message {i}").as_bytes());
        assert_eq!((m.from.as_str(), &m.id), ("A", id));
        assert!(m.seq > last_seq, "in order");
        last_seq = m.seq;
        b.ack(m.seq).expect("ack");
    }
    mailbox_empties(&cluster, "B").await;
    nothing_more(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_never_holds_plaintext() {
    let cluster = cluster().await;
    let a = client(&cluster, "A", "g1").await;
    let b = client(&cluster, "B", "g1").await;
    let marker = format!("zk-marker-{}", hex::encode(&random_key()[..8]));
    let plaintext = format!("the database password is {marker}");
    let receipt = within("send", a.send("B", plaintext.as_bytes()))
        .await
        .expect("send");
    let scan = |when: &'static str| {
        let db: Db = cluster.relay.store.db().clone();
        let marker = marker.clone();
        async move {
            let cells = relay_table_bytes(&db).await;
            // Control: the scan sees the message row (its id, raw or as hex text).
            let id_hex = hex::encode(receipt.id).into_bytes();
            assert!(
                cells.iter().any(|(t, b)| t.starts_with("relay_messages")
                    && (b == &receipt.id || b.windows(32).any(|w| w == &id_hex[..]))),
                "{when}: the scan sees the stored message"
            );
            let needles = [
                marker.as_bytes().to_vec(),
                hex::encode(&marker).into_bytes(),
            ];
            for (table, bytes) in &cells {
                for needle in &needles {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == &needle[..]),
                        "{when}: {table} holds the plaintext marker"
                    );
                }
            }
        }
    };
    scan("before delivery").await;
    within("connect", b.connect()).await.expect("connect");
    let m = within("recv", b.recv()).await.expect("message");
    assert_eq!(&m.plaintext[..], plaintext.as_bytes());
    // Delivered, not yet acknowledged: still stored, still ciphertext only.
    scan("delivered, before the ack").await;
    b.ack(m.seq).expect("ack");
    mailbox_empties(&cluster, "B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_answer_was_lost_is_resent_with_its_id_and_delivered_once() {
    let cluster = cluster().await;
    let proxy = Proxy::start(&cluster.relay_url).await;
    let (keys, token) = node(&cluster, "A", "g1").await;
    let a = Arc::new(RelayClient::new(keys, token, &proxy.url, test_options()).expect("client"));
    within("publish", a.publish_keys()).await.expect("publish");
    let b = client(&cluster, "B", "g1").await;
    within("lookup", a.lookup("B")).await.expect("B's key");
    within("connect", a.connect()).await.expect("connect");

    // The relay stores the message; its `accepted` never reaches A.
    proxy.mute(true);
    let sender = Arc::clone(&a);
    let send = tokio::spawn(async move { sender.send("B", b"exactly once").await });
    eventually("the relay stores the message", || async {
        held(&cluster, "B").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!send.is_finished(), "the answer was swallowed");
    let stored_id = cluster.relay.store.fetch("B", 0, 10).await.expect("fetch")[0]
        .client_id
        .clone();

    // The socket drops; A reconnects and re-sends the same id.
    proxy.mute(false);
    proxy.cut();
    let receipt = within("resend", send)
        .await
        .expect("task")
        .expect("accepted after the reconnect");
    assert!(receipt.duplicate, "the relay had stored it: {receipt:?}");
    assert_eq!(receipt.id.to_vec(), stored_id);
    assert_eq!(held(&cluster, "B").await, 1, "stored once");

    within("connect", b.connect()).await.expect("connect");
    let m = within("recv", b.recv()).await.expect("message");
    assert_eq!((&m.plaintext[..], m.id), (&b"exactly once"[..], receipt.id));
    b.ack(m.seq).expect("ack");
    nothing_more(&b).await;
    mailbox_empties(&cluster, "B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_ride_out_a_relay_restart_at_a_new_url() {
    let mut cluster = cluster().await;
    let a = Arc::new(client(&cluster, "A", "g1").await);
    let b = client(&cluster, "B", "g1").await;
    within("connect", a.connect()).await.expect("connect");
    within("connect", b.connect()).await.expect("connect");
    within("send", a.send("B", b"before")).await.expect("send");
    let first = within("recv", b.recv()).await.expect("message");
    assert_eq!(&first.plaintext[..], b"before");
    b.ack(first.seq).expect("ack");

    cluster.stop_relay().await;
    // Sent while the relay is down: waits, unanswered.
    let sender = Arc::clone(&a);
    let send = tokio::spawn(async move { sender.send("B", b"during").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!send.is_finished(), "no relay to answer");

    cluster.start_relay().await;
    a.set_relay_url(&cluster.relay_url).expect("url");
    b.set_relay_url(&cluster.relay_url).expect("url");
    let receipt = within("send after restart", send)
        .await
        .expect("task")
        .expect("accepted");
    assert!(!receipt.duplicate);
    // B resumes after what it acknowledged: the first message is not handed out again.
    let second = within("recv", b.recv()).await.expect("message");
    assert_eq!(
        (&second.plaintext[..], second.id),
        (&b"during"[..], receipt.id)
    );
    assert!(second.seq > first.seq);
    b.ack(second.seq).expect("ack");
    nothing_more(&b).await;
    mailbox_empties(&cluster, "B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_sends_are_retried_after_the_relays_delay() {
    let cluster = Cluster::start(&[("RELAY_SENDS_PER_SECOND", "1")]).await;
    let (keys, token) = node(&cluster, "A", "g1").await;
    let impatient = ClientOptions {
        send_retries: 0,
        ..test_options()
    };
    let a = RelayClient::new(keys, token, &cluster.relay_url, impatient).expect("client");
    within("publish", a.publish_keys()).await.expect("publish");
    let b = client(&cluster, "B", "g1").await;
    within("send", a.send("B", b"1")).await.expect("first");
    let e = within("send", a.send("B", b"2"))
        .await
        .expect_err("over the rate");
    assert_eq!((e.code(), e.kind()), ("rate_limited", ErrorKind::Refused));
    assert!(
        matches!(e, RelayError::Relay { retry_after: Some(d), .. } if d > Duration::ZERO && d <= Duration::from_secs(1)),
        "{e:?}"
    );
    drop(a);

    let patient = client(&cluster, "C", "g1").await;
    let started = Instant::now();
    for i in 0..3 {
        within("send", patient.send("B", format!("c{i}").as_bytes()))
            .await
            .expect("retried until accepted");
    }
    assert!(started.elapsed() >= Duration::from_millis(1500), "waited");
    within("connect", b.connect()).await.expect("connect");
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = within("recv", b.recv()).await.expect("message");
        got.push(String::from_utf8_lossy(&m.plaintext).into_owned());
        b.ack(m.seq).expect("ack");
    }
    assert_eq!(got, ["1", "c0", "c1", "c2"]);
}

/// Finding 9 of issue 23 (decision 0015): the relay is not trusted with time or uniqueness. A
/// compromised relay delivers a message it already delivered under a new sequence number, a
/// message its sender really sealed eight days ago, and one sealed an hour in the future. The
/// recipient hands out the real message once and names the others as typed events, each
/// acknowledged so the mailbox empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_replays_or_holds_back_a_message_is_caught() {
    let mut cluster = cluster().await;
    let b = client(&cluster, "B", "g1").await;
    let a = client(&cluster, "A", "g1").await;
    within("send", a.send("B", b"pay 100 to carol"))
        .await
        .expect("send");
    let stored = cluster
        .relay
        .store
        .fetch("B", 0, 10)
        .await
        .expect("fetch")
        .remove(0);
    let db = cluster.relay.store.db();
    // The same row again, under the next sequence number.
    plant(
        db,
        "B",
        "A",
        &stored.client_id,
        (&stored.enc, &stored.payload),
    )
    .await;
    // Messages A really sealed (its keys, its signature of time), but long ago and in the future.
    let to_b = (
        b.keys().current_version(),
        b.keys().current_enc_key().public,
    );
    let hour = 3_600_000;
    for (n, sent_ms) in [(2, now_ms() - 8 * 24 * hour), (3, now_ms() + hour)] {
        let id = [n; 16];
        let sealed = envelope::seal(a.keys(), "B", to_b, id, sent_ms, b"transfer").expect("seal");
        plant(db, "B", "A", &id, (&sealed.enc, &sealed.payload)).await;
    }
    // The relay starts again from its storage, planted rows and all.
    cluster.stop_relay().await;
    cluster.start_relay().await;
    b.set_relay_url(&cluster.relay_url).expect("url");

    within("connect", b.connect()).await.expect("connect");
    let m = within("recv", b.recv()).await.expect("the real message");
    assert_eq!(&m.plaintext[..], b"pay 100 to carol");
    assert!(
        m.sent_ms.abs_diff(now_ms()) < 60_000,
        "sent_ms {}",
        m.sent_ms
    );
    match within("replay", b.next_incoming()).await {
        Ok(Incoming::Replayed { message, first_seq }) => {
            assert_eq!((message.from.as_str(), first_seq), ("A", m.seq));
            assert_eq!(message.seq, m.seq + 1);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    match within("old", b.next_incoming()).await {
        Ok(Incoming::Stale { message, reason }) => {
            assert_eq!((message.id, reason), ([2; 16], StaleReason::TooOld));
        }
        other => panic!("expected a stale message, got {other:?}"),
    }
    // `recv` gives the same as a typed error, with its code.
    match within("future", b.recv()).await {
        Err(
            e @ RelayError::Stale {
                reason: StaleReason::FromTheFuture,
                ..
            },
        ) => {
            assert_eq!((e.code(), e.kind()), ("message_stale", ErrorKind::Other));
        }
        other => panic!("expected a message from the future, got {other:?}"),
    }
    nothing_more(&b).await;
    b.ack(m.seq).expect("ack");
    mailbox_empties(&cluster, "B").await;
}

/// Decision 0016: with `identity_vault`, a peer the vault does not attest is refused both ways.
/// The relay invents node "ghost" in group g1 (a listing and a message of its own making): a
/// send to it is `peer_identity_unattested`, and its message is undecryptable for that reason,
/// acknowledged, while a real peer's message still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_the_vault_does_not_attest_are_refused_both_ways() {
    let mut cluster = cluster().await;
    let (a_keys, a_token) = node(&cluster, "A", "g1").await;
    let (b_keys, b_token) = node(&cluster, "B", "g1").await;
    let vault_url = cluster.vault_url.clone();
    let with_vault = || ClientOptions {
        identity_vault: Some(vault_url.clone()),
        ..test_options()
    };
    let ghost = keymesh_client::keys::NodeKeys::generate("ghost").expect("keys");
    let listed = ghost.signed_enc_key(1).expect("key");
    let b_public = (b_keys.current_version(), b_keys.current_enc_key().public);
    let forged =
        envelope::seal(&ghost, "B", b_public, [3; 16], now_ms(), b"from nobody").expect("seal");
    let db = cluster.relay.store.db().clone();
    const LIST: &str = "INSERT INTO relay_keys \
        (node, version, group_id, identity_key, enc_key, signature, created_ms) \
        VALUES ('ghost', 1, 'g1', $1, $2, $3, $4)";
    keymesh_core::with_pool!(&db, pool => sqlx::query(LIST)
        .bind(&ghost.identity_public()[..])
        .bind(&listed.enc_public[..])
        .bind(&listed.signature[..])
        .bind(i64::try_from(now_ms()).expect("ms"))
        .execute(pool)
        .await
        .map(drop))
    .expect("invent ghost");
    plant(&db, "B", "ghost", &[3; 16], (&forged.enc, &forged.payload)).await;
    cluster.stop_relay().await;
    cluster.start_relay().await;

    let a = RelayClient::new(a_keys, a_token, &cluster.relay_url, with_vault()).expect("a");
    within("publish", a.publish_keys()).await.expect("publish");
    let e = within("send", a.send("ghost", b"hi"))
        .await
        .expect_err("ghost is not attested");
    assert_eq!(e.code(), "peer_identity_unattested", "{e}");
    let b = RelayClient::new(b_keys, b_token, &cluster.relay_url, with_vault()).expect("b");
    within("publish", b.publish_keys()).await.expect("publish");
    within("send", a.send("B", b"real"))
        .await
        .expect("send to B");
    match within("recv", b.recv()).await {
        Err(RelayError::Undecryptable { from, source, .. }) => {
            assert_eq!(
                (from.as_str(), source.code()),
                ("ghost", "peer_identity_unattested")
            );
        }
        other => panic!("expected the ghost's message refused, got {other:?}"),
    }
    let m = within("recv", b.recv()).await.expect("A's message");
    assert_eq!((m.from.as_str(), &m.plaintext[..]), ("A", &b"real"[..]));
    assert!(b.attested_identities().contains_key("A"));
    assert!(!b.attested_identities().contains_key("ghost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_delivery_is_reported_and_acknowledged() {
    let cluster = cluster().await;
    let b = client(&cluster, "B", "g1").await;
    let a = client(&cluster, "A", "g1").await;
    // Mallory has a token but no published key; Eve publishes one and sends garbage.
    let mallory_key = SigningKey::from_bytes(&random_key());
    let mallory = register(
        &cluster,
        "mallory",
        "g1",
        mallory_key.verifying_key().to_bytes(),
    )
    .await;
    let eve = keymesh_client::keys::NodeKeys::generate("eve").expect("keys");
    let eve_key = SigningKey::from_bytes(&random_key());
    let eve_token = register(&cluster, "eve", "g1", eve_key.verifying_key().to_bytes()).await;
    let statement = keymesh_relay::registry::key_statement("eve", 1, &eve.current_enc_key().public);
    use ed25519_dalek::Signer;
    let (status, body) = raw_call(
        &cluster,
        &eve_key,
        &eve_token,
        Method::PUT,
        "/v1/relay/keys",
        json!({
            "version": 1,
            "enc_key": hex::encode(eve.current_enc_key().public),
            "signature": hex::encode(eve_key.sign(&statement).to_bytes()),
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut enc = vec![2, 0, 0, 0, 1, 0, 0, 0, 1];
    enc.extend_from_slice(&now_ms().to_be_bytes());
    enc.extend_from_slice(&[9; 32]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (who, key, token) in [
        ("mallory", &mallory_key, &mallory),
        ("eve", &eve_key, &eve_token),
    ] {
        let (status, body) = raw_call(
            &cluster,
            key,
            token,
            Method::POST,
            "/v1/relay/messages",
            json!({ "id": hex::encode([7u8; 16]), "to": "B", "enc": b64.encode(&enc), "payload": b64.encode([0u8; 40]) }),
        )
        .await;
        assert_eq!(status, 200, "{who}: {body}");
    }
    within("send", a.send("B", b"fine")).await.expect("send");

    within("connect", b.connect()).await.expect("connect");
    for (who, cause) in [
        ("mallory", "unknown_recipient"),
        ("eve", "envelope_decrypt"),
    ] {
        match within("recv", b.recv()).await {
            Err(RelayError::Undecryptable {
                from, source, id, ..
            }) => {
                assert_eq!((from.as_str(), source.code(), id), (who, cause, [7; 16]));
            }
            other => panic!("{who}: expected undecryptable, got {other:?}"),
        }
    }
    let m = within("recv", b.recv())
        .await
        .expect("the next message opens");
    assert_eq!(&m.plaintext[..], b"fine");
    // The two bad ones are acknowledged without the caller; the good one waits for its ack.
    eventually("only the unacknowledged message is left", || async {
        let rows = cluster.relay.store.fetch("B", 0, 10).await.expect("fetch");
        rows.len() == 1 && rows[0].seq == i64::try_from(m.seq).expect("seq")
    })
    .await;
    b.ack(m.seq).expect("ack");
    mailbox_empties(&cluster, "B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_do_not_verify_or_change_identity_are_refused() {
    let cluster = cluster().await;
    let a = client(&cluster, "A", "g1").await;
    let b = client(&cluster, "B", "g1").await;
    let keys = within("lookup", a.lookup("B")).await.expect("B's keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].version, keys[0].enc_public, keys[0].identity),
        (
            1,
            b.keys().current_enc_key().public,
            b.keys().identity_public()
        )
    );
    // Another group's node is unknown; so is a node that never published.
    let _c = client(&cluster, "C", "g2").await;
    let e = within("lookup", a.lookup("C"))
        .await
        .expect_err("other group");
    assert_eq!(
        (e.code(), e.kind()),
        ("unknown_recipient", ErrorKind::Refused)
    );
    let e = within("send", a.send("C", b"x"))
        .await
        .expect_err("other group");
    assert_eq!(e.code(), "unknown_recipient");
    assert_eq!(
        within("lookup", a.lookup("../x"))
            .await
            .expect_err("id")
            .code(),
        "invalid_node_id"
    );

    // An identity pinned for B that the relay does not list.
    let (keys_a2, token_a2) = node(&cluster, "A2", "g1").await;
    let a2 =
        RelayClient::new(keys_a2, token_a2, &cluster.relay_url, test_options()).expect("client");
    a2.pin_identity("B", [5; 32]);
    let e = within("lookup", a2.lookup("B")).await.expect_err("pinned");
    assert_eq!(e.code(), "peer_identity_changed");

    // The relay's row altered behind its back: the signature no longer covers the key.
    let forged = keymesh_client::keys::NodeKeys::generate("B").expect("keys");
    let forged_key = forged.current_enc_key().public.to_vec();
    match cluster.relay.store.db() {
        Db::Sqlite(pool) => sqlx::query("UPDATE relay_keys SET enc_key = $1 WHERE node = $2")
            .bind(forged_key)
            .bind("B")
            .execute(pool)
            .await
            .map(|_| ()),
        Db::Postgres(pool) => sqlx::query("UPDATE relay_keys SET enc_key = $1 WHERE node = $2")
            .bind(forged_key)
            .bind("B")
            .execute(pool)
            .await
            .map(|_| ()),
    }
    .expect("tamper");
    let (keys_a3, token_a3) = node(&cluster, "A3", "g1").await;
    let a3 =
        RelayClient::new(keys_a3, token_a3, &cluster.relay_url, test_options()).expect("client");
    let e = within("lookup", a3.lookup("B")).await.expect_err("forged");
    assert_eq!(e.code(), "peer_key_invalid");
    let e = within("send", a3.send("B", b"x"))
        .await
        .expect_err("forged");
    assert_eq!(e.code(), "peer_key_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_and_an_unreachable_relay_are_typed() {
    let cluster = cluster().await;
    let (keys, token) = node(&cluster, "A", "g1").await;
    drop(token);
    // A garbage token, and a real token whose identity key is not this key file's.
    let garbage = RelayClient::new(
        keys,
        b"garbage".to_vec(),
        &cluster.relay_url,
        test_options(),
    )
    .expect("client");
    let e = within("publish", garbage.publish_keys())
        .await
        .expect_err("garbage");
    assert_eq!((e.code(), e.kind()), ("invalid_token", ErrorKind::Auth));
    let e = within("connect", garbage.connect())
        .await
        .expect_err("garbage");
    assert_eq!((e.code(), e.kind()), ("invalid_token", ErrorKind::Auth));
    let e = within("send", garbage.send("A", b"x"))
        .await
        .expect_err("ended");
    assert_eq!(e.code(), "invalid_token");

    let (_, other_token) = node(&cluster, "B", "g1").await;
    let thief = RelayClient::new(
        keymesh_client::keys::NodeKeys::generate("B").expect("keys"),
        other_token,
        &cluster.relay_url,
        test_options(),
    )
    .expect("client");
    let e = within("publish", thief.publish_keys())
        .await
        .expect_err("no proof");
    assert_eq!((e.code(), e.kind()), ("proof_invalid", ErrorKind::Auth));
    let e = within("connect", thief.connect())
        .await
        .expect_err("no proof");
    assert_eq!((e.code(), e.kind()), ("proof_invalid", ErrorKind::Auth));

    let (keys, token) = node(&cluster, "C", "g1").await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let options = ClientOptions {
        max_reconnect_attempts: Some(1),
        ..test_options()
    };
    let nowhere = RelayClient::new(keys, token, &url, options).expect("client");
    let e = within("publish", nowhere.publish_keys())
        .await
        .expect_err("down");
    assert_eq!(
        (e.code(), e.kind()),
        ("relay_unreachable", ErrorKind::Unreachable)
    );
    let e = within("connect", nowhere.connect())
        .await
        .expect_err("down");
    assert_eq!(
        (e.code(), e.kind()),
        ("relay_unreachable", ErrorKind::Unreachable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_never_pass_a_message_not_yet_handled() {
    let cluster = cluster().await;
    let a = client(&cluster, "A", "g1").await;
    let b = client(&cluster, "B", "g1").await;
    for i in 0..3 {
        within("send", a.send("B", format!("m{i}").as_bytes()))
            .await
            .expect("send");
    }
    within("connect", b.connect()).await.expect("connect");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(within("recv", b.recv()).await.expect("message").seq);
    }
    // Handled out of order: the first is still being worked on, nothing may be deleted.
    b.ack(seqs[2]).expect("ack");
    b.ack(seqs[1]).expect("ack");
    b.ack(9_999).expect("an unknown seq is ignored");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held(&cluster, "B").await, 3);
    b.ack(seqs[0]).expect("ack");
    mailbox_empties(&cluster, "B").await;

    // auto_ack: handled as soon as it is returned.
    let (keys, token) = node(&cluster, "C", "g1").await;
    let options = ClientOptions {
        auto_ack: true,
        ..test_options()
    };
    let c = RelayClient::new(keys, token, &cluster.relay_url, options).expect("client");
    within("publish", c.publish_keys()).await.expect("publish");
    within("send", a.send("C", b"auto")).await.expect("send");
    let m = within("recv", c.recv()).await.expect("message");
    assert_eq!(&m.plaintext[..], b"auto");
    mailbox_empties(&cluster, "C").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_does_not_hand_out_a_message_twice() {
    let cluster = cluster().await;
    let proxy = Proxy::start(&cluster.relay_url).await;
    let a = client(&cluster, "A", "g1").await;
    let (keys, token) = node(&cluster, "B", "g1").await;
    let b = RelayClient::new(keys, token, &proxy.url, test_options()).expect("client");
    within("publish", b.publish_keys()).await.expect("publish");
    within("connect", b.connect()).await.expect("connect");
    for text in ["one", "two"] {
        within("send", a.send("B", text.as_bytes()))
            .await
            .expect("send");
    }
    let one = within("recv", b.recv()).await.expect("message");
    let two = within("recv", b.recv()).await.expect("message");
    b.ack(one.seq).expect("ack");
    // Lost before (or while) the acknowledgement travels; both are redelivered to the client,
    // which hands out neither again and acknowledges the first on the new connection.
    proxy.cut();
    within("send", a.send("B", b"three")).await.expect("send");
    let three = within("recv", b.recv()).await.expect("message");
    assert_eq!(&three.plaintext[..], b"three");
    assert!(three.seq > two.seq);
    eventually("the first is acknowledged", || async {
        let rows = cluster.relay.store.fetch("B", 0, 10).await.expect("fetch");
        rows.first().map(|r| r.seq) == Some(i64::try_from(two.seq).expect("seq"))
    })
    .await;
    b.ack(two.seq).expect("ack");
    b.ack(three.seq).expect("ack");
    mailbox_empties(&cluster, "B").await;
    nothing_more(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_cancelled_while_opening_keeps_the_message() {
    let cluster = cluster().await;
    let proxy = Proxy::start(&cluster.relay_url).await;
    let a = client(&cluster, "A", "g1").await;
    let (keys, token) = node(&cluster, "B", "g1").await;
    let b = RelayClient::new(keys, token, &proxy.url, test_options()).expect("client");
    within("publish", b.publish_keys()).await.expect("publish");
    within("connect", b.connect()).await.expect("connect");
    within("send", a.send("B", b"kept")).await.expect("send");
    eventually("delivered to B", || async {
        cluster.relay.metrics.delivered.get() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // B must look up A's key to open it; the lookup's answer never comes.
    proxy.mute(true);
    let cancelled = tokio::time::timeout(Duration::from_millis(500), b.recv()).await;
    assert!(cancelled.is_err(), "still opening: {cancelled:?}");
    proxy.mute(false);
    proxy.cut();
    let m = within("recv", b.recv()).await.expect("the same message");
    assert_eq!(&m.plaintext[..], b"kept");
    b.ack(m.seq).expect("ack");
    mailbox_empties(&cluster, "B").await;
    nothing_more(&b).await;
}

/// https and wss to a relay a private CA vouches for, trusting exactly that CA; the platform's
/// store (which does not know it) and a self-signed relay are refused as `Tls`, a
/// configuration error that reconnecting would not heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_given_ca_or_the_platform() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let [cert, key] = Pki::relay_settings(&pki.cert, &pki.key);
    let cluster = Cluster::start(&[(cert.0, &cert.1), (key.0, &key.1)]).await;
    assert!(cluster.relay_url.starts_with("https://"));
    let trusted = ClientOptions {
        transport: Transport::with_ca_file(&pki.ca).expect("ca file"),
        ..test_options()
    };
    let (ka, ta) = node(&cluster, "A", "g1").await;
    let (kb, tb) = node(&cluster, "B", "g1").await;
    let a = RelayClient::new(ka, ta, &cluster.relay_url, trusted.clone()).expect("a");
    let b = RelayClient::new(kb, tb, &cluster.relay_url, trusted.clone()).expect("b");
    within("publish", a.publish_keys())
        .await
        .expect("publish over https");
    within("publish", b.publish_keys())
        .await
        .expect("publish over https");
    within("connect", b.connect())
        .await
        .expect("connect over wss");
    within("send", a.send("B", b"over tls"))
        .await
        .expect("send");
    let m = within("recv", b.recv()).await.expect("message");
    assert_eq!(&m.plaintext[..], b"over tls");

    let untrusted = |e: RelayError| {
        assert!(matches!(e, RelayError::Tls { .. }), "{e:?}");
        assert_eq!((e.code(), e.kind()), ("tls_untrusted", ErrorKind::Config));
        assert!(e.to_string().contains("does not verify"), "{e}");
    };
    let (kc, tc) = node(&cluster, "C", "g1").await;
    let platform = RelayClient::new(kc, tc, &cluster.relay_url, test_options()).expect("c");
    untrusted(
        within("publish", platform.publish_keys())
            .await
            .expect_err("https"),
    );
    untrusted(
        within("connect", platform.connect())
            .await
            .expect_err("wss"),
    );

    let [cert, key] = Pki::relay_settings(&pki.self_signed, &pki.self_signed_key);
    let lone = Cluster::start(&[(cert.0, &cert.1), (key.0, &key.1)]).await;
    let (kd, td) = node(&lone, "D", "g1").await;
    let d = RelayClient::new(kd, td, &lone.relay_url, trusted).expect("d");
    untrusted(
        within("publish", d.publish_keys())
            .await
            .expect_err("https"),
    );
    untrusted(within("connect", d.connect()).await.expect_err("wss"));
}
