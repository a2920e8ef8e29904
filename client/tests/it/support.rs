//! Test helpers: nodes with real tokens, clients, a cuttable TCP proxy, and a scan of every
//! relay table's bytes.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use base64::Engine;
use ed25519_dalek::SigningKey;
use keymesh_client::{
    keys::NodeKeys,
    relay::{ClientOptions, RelayClient},
};
use keymesh_core::{
    capability::pop::{PROOF_HEADER, sign_http},
    http::node::TOKEN_B64,
    storage::Db,
};
use keymesh_testkit::Cluster;
pub use keymesh_testkit::Pki;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// The right to send to any node.
pub fn send_all() -> Value {
    json!([{ "resource": "relay/*", "op": "write" }])
}

/// `fut`, or a panic naming `what` after 20 s.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out after 20 s"))
}

/// Poll `check` every 20 ms for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s");
}

/// Register `id` in `group` at the vault with `identity` and mint a token that may send to
/// any node; the token's URL-safe base64 text.
pub async fn register(cluster: &Cluster, id: &str, group: &str, identity: [u8; 32]) -> String {
    let (status, body) = cluster
        .mgmt(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{id}"),
            Some(json!({ "group": group, "user": format!("user-{id}"), "public_key": hex::encode(identity) })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    cluster.mint(id, send_all()).await
}

/// Fresh keys for `id` and its raw token.
pub async fn node(cluster: &Cluster, id: &str, group: &str) -> (NodeKeys, Vec<u8>) {
    let keys = NodeKeys::generate(id).expect("keys");
    let token = register(cluster, id, group, keys.identity_public()).await;
    (keys, TOKEN_B64.decode(token).expect("token"))
}

/// Options for tests: quick reconnects, never giving up.
pub fn test_options() -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// A client for a fresh node, its key published.
pub async fn client(cluster: &Cluster, id: &str, group: &str) -> RelayClient {
    let (keys, token) = node(cluster, id, group).await;
    let c = RelayClient::new(keys, token, &cluster.relay_url, test_options()).expect("client");
    within("publish", c.publish_keys()).await.expect("publish");
    c
}

/// A signed HTTP call to the relay as a node whose key the test holds.
pub async fn raw_call(
    cluster: &Cluster,
    key: &SigningKey,
    token_b64: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let token = TOKEN_B64.decode(token_b64).expect("token");
    let bytes = body.to_string().into_bytes();
    let proof = sign_http(
        key,
        method.as_str(),
        path,
        &bytes,
        &token,
        SystemTime::now(),
    );
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", cluster.relay_url))
        .bearer_auth(token_b64)
        .header(PROOF_HEADER, proof)
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .expect("relay call");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every byte of every relay table, one buffer per cell (PostgreSQL: one per row as text).
pub async fn relay_table_bytes(db: &Db) -> Vec<(String, Vec<u8>)> {
    let mut cells = Vec::new();
    match db {
        Db::Sqlite(pool) => {
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .expect("tables");
            for (table,) in tables {
                let columns: Vec<(String,)> =
                    sqlx::query_as("SELECT name FROM pragma_table_info($1)")
                        .bind(&table)
                        .fetch_all(pool)
                        .await
                        .expect("columns");
                for (column,) in columns {
                    let sql = format!("SELECT CAST(\"{column}\" AS BLOB) FROM \"{table}\"");
                    let rows: Vec<(Option<Vec<u8>>,)> =
                        // Names read from the schema itself, quoted.
                        sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .fetch_all(pool)
                            .await
                            .expect("cells");
                    cells.extend(
                        rows.into_iter()
                            .filter_map(|(b,)| b)
                            .map(|b| (format!("{table}.{column}"), b)),
                    );
                }
            }
        }
        Db::Postgres(pool) => {
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(pool)
            .await
            .expect("tables");
            for (table,) in tables {
                let sql = format!("SELECT CAST(t AS TEXT) FROM \"{table}\" t");
                let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await
                    .expect("rows");
                cells.extend(rows.into_iter().map(|(r,)| (table.clone(), r.into_bytes())));
            }
        }
    }
    cells
}

/// A TCP proxy in front of the relay that can swallow the relay's answers and cut every
/// connection, to lose a socket at a chosen moment.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    mute: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("relay address")
}

impl Proxy {
    /// Forward to the relay at `relay_url`.
    pub async fn start(relay_url: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mute = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let target = addr_of(relay_url);
        let proxy = Self {
            url,
            mute: Arc::clone(&mute),
            cut: cut.clone(),
        };
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(pump(inbound, outbound, Arc::clone(&mute), cut.subscribe()));
            }
        });
        proxy
    }

    /// Drop (or again forward) everything the relay sends.
    pub fn mute(&self, on: bool) {
        self.mute.store(on, Ordering::SeqCst);
    }

    /// Close every open connection.
    pub fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

async fn pump(
    client: TcpStream,
    relay: TcpStream,
    mute: Arc<AtomicBool>,
    mut cut: watch::Receiver<u64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut relay_read, mut relay_write) = relay.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if relay_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match relay_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !mute.load(Ordering::SeqCst)
                        && client_write.write_all(&buf[..n]).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = cut.changed() => {}
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// What a compromised relay can do with its own storage: put a message from `sender` into
/// `recipient`'s mailbox at the next position, behind the honest code's back (restart the relay
/// so that it reads its mailboxes again).
pub async fn plant(
    db: &Db,
    recipient: &str,
    sender: &str,
    id: &[u8],
    (enc, payload): (&[u8], &[u8]),
) {
    const SQL: &str = "INSERT INTO relay_messages \
        (recipient, seq, sender, client_id, enc, payload, created_ms, expires_ms) \
        SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7 \
        FROM relay_messages WHERE recipient = $1";
    let now = i64::try_from(now_ms()).expect("ms");
    keymesh_core::with_pool!(db, pool => sqlx::query(SQL)
        .bind(recipient)
        .bind(sender)
        .bind(id)
        .bind(enc)
        .bind(payload)
        .bind(now)
        .bind(now + 3_600_000)
        .execute(pool)
        .await
        .map(drop))
    .expect("plant a message");
}

/// The same relay listing `impostor`'s identity for `node`, with an encryption key (version 1)
/// the impostor signed, in place of the node's own.
pub async fn substitute_listing(db: &Db, node: &str, impostor: &SigningKey, enc: &[u8; 32]) {
    use ed25519_dalek::Signer;
    const SQL: &str =
        "UPDATE relay_keys SET identity_key = $1, enc_key = $2, signature = $3 WHERE node = $4";
    let signature = impostor.sign(&keymesh_relay::registry::key_statement(node, 1, enc));
    let changed = keymesh_core::with_pool!(db, pool => sqlx::query(SQL)
        .bind(&impostor.verifying_key().to_bytes()[..])
        .bind(&enc[..])
        .bind(&signature.to_bytes()[..])
        .bind(node)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .expect("substitute a listing");
    assert_eq!(changed, 1, "{node} had one published key");
}
