//! Crash safety of the relay: the real `keymesh vault` and `keymesh relay` processes on the
//! selected backend, the relay killed with SIGKILL between accepting messages and delivering
//! them, and again after acknowledgements were stored.

use std::{net::TcpListener, path::Path, time::Duration};

use base64::Engine;
use keymesh_client::{
    keyfile::{self, KdfCost},
    keys::NodeKeys,
    relay::{ClientOptions, RelayClient},
};
use keymesh_core::{
    capability::token::random_key, http::node::TOKEN_B64, storage::testing::TestDb,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::process::Keymesh;

const MANAGEMENT_KEY: &str = "management-key-for-the-crash-test-0123456789";
const FEED_KEY: &str = "feed-key-for-the-crash-test-0123456789abcdef";

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

fn start_relay(dir: &Path, addr: &str, db: &TestDb, vault_url: &str) -> Keymesh {
    Keymesh::start(
        dir,
        &["relay"],
        &[
            ("KEYMESH_ENV", "development".into()),
            ("RELAY_LISTEN", addr.to_owned()),
            ("RELAY_DATABASE_URL", db.url_for_process()),
            ("RELAY_VAULT_URL", vault_url.to_owned()),
            ("RELAY_FEED_API_KEY", FEED_KEY.into()),
        ],
    )
}

/// Register `id` at the vault and mint it a token that may send to its group.
async fn node(vault_url: &str, id: &str) -> (NodeKeys, Vec<u8>) {
    let keys = NodeKeys::generate(id).expect("keys");
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{vault_url}{path}"))
            .bearer_auth(MANAGEMENT_KEY)
            .json(&body)
            .send()
    };
    let r = call(
        reqwest::Method::PUT,
        &format!("/v1/nodes/{id}"),
        json!({ "group": "crash", "user": "crash-user", "public_key": hex::encode(keys.identity_public()) }),
    )
    .await
    .expect("register");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    let r = call(
        reqwest::Method::POST,
        "/v1/tokens",
        json!({ "node_id": id, "rights": [{ "resource": "relay/*", "op": "write" }] }),
    )
    .await
    .expect("mint");
    let body: Value = r.json().await.expect("token body");
    let token = TOKEN_B64
        .decode(body["token"].as_str().expect("token"))
        .expect("token bytes");
    (keys, token)
}

fn client(keys: NodeKeys, token: Vec<u8>, relay_url: &str) -> RelayClient {
    let options = ClientOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        max_reconnect_attempts: Some(100),
        ..ClientOptions::default()
    };
    RelayClient::new(keys, token, relay_url, options).expect("client")
}

/// Messages held by the relay, as of its last commit (`relay_mailbox_depth`).
async fn held(relay_url: &str) -> Option<u64> {
    let text = reqwest::get(format!("{relay_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("relay_mailbox_depth"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Receive `count` messages; their texts in order. The first `ack_through` are marked handled
/// (the client acknowledges cumulatively up to the first unhandled one).
async fn receive(b: &RelayClient, count: usize, ack_through: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for i in 1..=count {
        let m = tokio::time::timeout(Duration::from_secs(20), b.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {count} did not arrive in 20 s"))
            .expect("receive");
        assert_eq!(m.from, "crash-a");
        texts.push(String::from_utf8(m.plaintext.to_vec()).expect("utf-8"));
        if i <= ack_through {
            b.ack(m.seq).expect("ack");
        }
    }
    texts
}

#[tokio::test]
async fn sigkill_between_accept_and_delivery_loses_nothing_and_redelivers_nothing_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault_db, relay_db) = (TestDb::new().await, TestDb::new().await);
    let vault_addr = free_addr();
    let vault_url = format!("http://{vault_addr}");
    let mut vault = Keymesh::start(
        dir.path(),
        &["vault"],
        &[
            ("KEYMESH_ENV", "development".into()),
            ("VAULT_LISTEN", vault_addr.clone()),
            ("VAULT_DATABASE_URL", vault_db.url_for_process()),
            ("VAULT_MASTER_KEY", hex::encode(random_key().as_ref())),
            ("MANAGEMENT_API_KEY", MANAGEMENT_KEY.into()),
            ("VAULT_FEED_API_KEY", FEED_KEY.into()),
        ],
    );
    vault.wait_ready(&vault_url).await;
    let relay_addr = free_addr();
    let relay_url = format!("http://{relay_addr}");
    let mut relay = start_relay(dir.path(), &relay_addr, &relay_db, &vault_url);
    relay.wait_ready(&relay_url).await;

    let (a_keys, a_token) = node(&vault_url, "crash-a").await;
    let (b_keys, b_token) = node(&vault_url, "crash-b").await;
    let a = client(a_keys, a_token, &relay_url);
    // B's keys live in a key file, as a node's do: each B below is a fresh client process would
    // be, remembering nothing of earlier deliveries.
    let b_file = dir.path().join("b.key");
    let passphrase = SecretString::from("crash-test passphrase");
    let cheap = KdfCost {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    keyfile::save(&b_file, &b_keys, &passphrase, cheap, false).expect("save B's keys");
    let b_client = || {
        let keys = keyfile::load(&b_file, &passphrase).expect("load B's keys");
        client(keys, b_token.clone(), &relay_url)
    };
    // B publishes its key (over HTTP) and stays offline.
    b_client().publish_keys().await.expect("publish B");
    a.publish_keys().await.expect("publish A");
    const N: usize = 40;
    let sent: Vec<String> = (1..=N).map(|i| format!("crash message {i}")).collect();
    for text in &sent {
        // `send` returns once the relay answered `accepted`: the message is durable.
        a.send("crash-b", text.as_bytes()).await.expect("accepted");
    }
    a.close().await;

    // Killed after accepting, before any delivery (B was never connected).
    relay.kill_hard();
    let mut relay = start_relay(dir.path(), &relay_addr, &relay_db, &vault_url);
    relay.wait_ready(&relay_url).await;

    let b = b_client();
    let got = receive(&b, N, 25).await;
    assert_eq!(
        got, sent,
        "every accepted message, in order, after the crash"
    );
    b.close().await;
    // Wait until the acknowledgement is committed (the depth gauge reads committed state).
    let mut depth = None;
    for _ in 0..100 {
        depth = held(&relay_url).await;
        if depth == Some((N - 25) as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(depth, Some((N - 25) as u64), "{}", relay.output());

    // Killed again after the acknowledgement was stored: only the unacknowledged come back.
    relay.kill_hard();
    let mut relay = start_relay(dir.path(), &relay_addr, &relay_db, &vault_url);
    relay.wait_ready(&relay_url).await;
    let b = b_client();
    let again = receive(&b, N - 25, N - 25).await;
    assert_eq!(again, sent[25..], "nothing acknowledged is delivered again");
    // And nothing else is waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), b.recv())
            .await
            .is_err(),
        "no further message"
    );
    b.close().await;
    drop(relay);
    drop(vault);
}
