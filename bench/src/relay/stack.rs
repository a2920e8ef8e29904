//! The servers under test, as child processes of this binary (so their CPU and memory are
//! measured apart from the load generator's), and nodes provisioned at the vault.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use keymesh_core::{
    capability::{
        pop::{PROOF_HEADER, sign_http},
        token::random_key,
    },
    http::node::TOKEN_B64,
};
use keymesh_relay::registry::key_statement;
use serde_json::{Value, json};

use super::BoxError;

/// Settings every child gets: quiet logs (unless `LOG_LEVEL` is set), development mode (plain http on loopback), and IP
/// rate limits out of the way (every simulated node connects from 127.0.0.1).
const COMMON_ENV: &[(&str, &str)] = &[
    ("KEYMESH_ENV", "development"),
    ("LOG_LEVEL", "warn"),
    ("RATE_LIMIT_IP_BURST", "1000000"),
    ("RATE_LIMIT_IP_PER_SECOND", "1000000"),
    ("RATE_LIMIT_PRINCIPAL_BURST", "1000000"),
    ("RATE_LIMIT_PRINCIPAL_PER_SECOND", "1000000"),
];

/// A server process this bench started; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Start `PROGRAM ARGS` (the `keymesh` server, or this binary for the bare relay) with
    /// `env`, listening on a free loopback port passed through `listen_var` (or as
    /// `--listen ADDR` when `listen_var` is empty).
    pub fn spawn(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[&str],
        listen_var: &str,
        env: &[(&str, String)],
    ) -> Result<Self, BoxError> {
        let addr = free_port()?;
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(
                COMMON_ENV
                    .iter()
                    .copied()
                    .filter(|(k, _)| *k != "LOG_LEVEL" || std::env::var_os(k).is_none()),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if listen_var.is_empty() {
            command.args(["--listen", &addr.to_string()]);
        } else {
            command.env(listen_var, addr.to_string());
        }
        let child = command.spawn()?;
        Ok(Self { child, addr, log })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id, for /proc.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Wait until `path` answers 200 (or the process has died: its log is in the error).
    pub async fn wait_ready(&mut self, path: &str) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "the server exited ({status}); its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
                .into());
            }
            if let Ok(r) = http.get(format!("{}{path}", self.url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{} was not ready within 30 s", self.url()).into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A vault and a relay following it, each in its own process, over fresh databases.
#[derive(Debug)]
pub struct Stack {
    /// The vault (mints the nodes' tokens).
    pub vault: Server,
    /// The relay under test.
    pub relay: Server,
    /// Management's credential at the vault.
    pub management_key: String,
}

impl Stack {
    /// Start both; the relay stores in `relay_database` (default: SQLite in `dir`).
    pub async fn start(dir: &Path, relay_database: Option<&str>) -> Result<Self, BoxError> {
        let management_key = hex::encode(random_key().as_ref());
        let feed_key = hex::encode(random_key().as_ref());
        let mut vault = Server::spawn(
            dir,
            "vault",
            &crate::keymesh_binary()?,
            &["vault"],
            "VAULT_LISTEN",
            &[
                (
                    "VAULT_DATABASE_URL",
                    format!("sqlite://{}", dir.join("vault.db").display()),
                ),
                ("VAULT_MASTER_KEY", hex::encode(random_key().as_ref())),
                ("MANAGEMENT_API_KEY", management_key.clone()),
                ("VAULT_FEED_API_KEY", feed_key.clone()),
            ],
        )?;
        vault.wait_ready("/health/ready").await?;
        let relay_database = relay_database.map_or_else(
            || format!("sqlite://{}", dir.join("relay.db").display()),
            str::to_owned,
        );
        let mut relay = Server::spawn(
            dir,
            "relay",
            &crate::keymesh_binary()?,
            &["relay"],
            "RELAY_LISTEN",
            &[
                ("RELAY_DATABASE_URL", relay_database),
                ("RELAY_VAULT_URL", vault.url()),
                ("RELAY_FEED_API_KEY", feed_key),
            ],
        )?;
        relay.wait_ready("/health/ready").await?;
        Ok(Self {
            vault,
            relay,
            management_key,
        })
    }
}

/// A node the vault knows, with a token allowing it to send to any node of its group.
#[derive(Clone, Debug)]
pub struct Node {
    /// Node id.
    pub id: String,
    /// Identity key.
    pub key: SigningKey,
    /// Token bytes.
    pub token: Vec<u8>,
}

/// Register `count` nodes named `PREFIX-RUN-i` in group `bench` at the vault and mint their tokens.
pub async fn provision(
    vault_url: &str,
    management_key: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<Node>, BoxError> {
    // A fresh name per run: a relay that outlives the bench (`--relay-url`) may still hold an
    // earlier run's messages for the old names.
    let run = hex::encode(&random_key()[..4]);
    let keys: Vec<(String, SigningKey)> = (0..count)
        .map(|i| {
            (
                format!("{prefix}-{run}-{i}"),
                SigningKey::from_bytes(&random_key()),
            )
        })
        .collect();
    let public: Vec<(String, [u8; 32])> = keys
        .iter()
        .map(|(id, key)| (id.clone(), key.verifying_key().to_bytes()))
        .collect();
    let tokens = register(vault_url, management_key, &public).await?;
    Ok(keys
        .into_iter()
        .zip(tokens)
        .map(|((id, key), token)| Node { id, key, token })
        .collect())
}

/// Register nodes (id, identity public key) in group `bench` at the vault, 32 at a time, and
/// mint each a token allowing it to send to any node of the group; the tokens, in order.
pub async fn register(
    vault_url: &str,
    management_key: &str,
    nodes: &[(String, [u8; 32])],
) -> Result<Vec<Vec<u8>>, BoxError> {
    let http = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(32) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|(id, public)| {
                let (http, vault_url, key, id, public) = (
                    http.clone(),
                    vault_url.to_owned(),
                    management_key.to_owned(),
                    id.clone(),
                    *public,
                );
                tokio::spawn(
                    async move { register_one(&http, &vault_url, &key, &id, public).await },
                )
            })
            .collect();
        for task in tasks {
            tokens.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    Ok(tokens)
}

async fn register_one(
    http: &reqwest::Client,
    vault_url: &str,
    management_key: &str,
    id: &str,
    public: [u8; 32],
) -> Result<Vec<u8>, BoxError> {
    let call = |method: reqwest::Method, path: String, body: Value| {
        http.request(method, format!("{vault_url}{path}"))
            .bearer_auth(management_key)
            .json(&body)
            .send()
    };
    let response = call(
        reqwest::Method::PUT,
        format!("/v1/nodes/{id}"),
        json!({ "group": "bench", "user": "bench-user", "public_key": hex::encode(public) }),
    )
    .await?;
    if !response.status().is_success() {
        return Err(format!("registering {id}: HTTP {}", response.status()).into());
    }
    let response = call(
        reqwest::Method::POST,
        "/v1/tokens".into(),
        json!({ "node_id": id, "rights": [{ "resource": "relay/*", "op": "write" }] }),
    )
    .await?;
    if !response.status().is_success() {
        return Err(format!("minting a token for {id}: HTTP {}", response.status()).into());
    }
    let body: Value = response.json().await?;
    Ok(TOKEN_B64.decode(body["token"].as_str().ok_or("no token in the answer")?)?)
}

/// A counter from a Prometheus text exposition (`NAME_total`), summed over its label sets.
pub async fn counter(base_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let wanted = format!("{name}_total");
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let metric = series.split('{').next().unwrap_or(series);
        if metric == wanted {
            *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    sum
}

/// Publish an encryption key for `node` at the relay (`PUT /v1/relay/keys`): the relay knows
/// a node as a recipient once it has a key. The key is random: the bench's payloads are opaque.
pub async fn publish_key(relay_url: &str, node: &Node) -> Result<(), BoxError> {
    let enc: [u8; 32] = *random_key();
    let signature = node.key.sign(&key_statement(&node.id, 1, &enc));
    let body = json!({
        "version": 1,
        "enc_key": hex::encode(enc),
        "signature": hex::encode(signature.to_bytes()),
    })
    .to_string()
    .into_bytes();
    let proof = sign_http(
        &node.key,
        "PUT",
        "/v1/relay/keys",
        &body,
        &node.token,
        SystemTime::now(),
    );
    let response = reqwest::Client::new()
        .put(format!("{relay_url}/v1/relay/keys"))
        .bearer_auth(TOKEN_B64.encode(&node.token))
        .header(PROOF_HEADER, proof)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!(
            "publishing {}'s key: HTTP {}: {}",
            node.id,
            response.status(),
            response.text().await.unwrap_or_default()
        )
        .into());
    }
    Ok(())
}
