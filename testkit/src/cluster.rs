//! A real vault and a real relay on loopback TCP ports, each over its own fresh database on the
//! selected backend, and nodes with real tokens.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use zeroize::Zeroizing;

use base64::Engine;
use ed25519_dalek::SigningKey;
use keymesh_core::{
    ServiceContext,
    capability::token::{Claims, KeyRing, Scope, random_key},
    config::{Environment, ServiceName, Source},
    crypto,
    http::node::TOKEN_B64,
    serve,
    storage::{Db, testing::TestDb},
    tls::ServerTls,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use keymesh_relay::{RelayConfig, RelayState};

/// Management's credential at the test vault.
pub const MGMT_KEY: &str = "management-key-0123456789abcdef0123456789";
/// The feed credential the relay presents.
pub const FEED_KEY: &str = "feed-key-0123456789abcdef0123456789abcdef";

/// A vault and a relay following it.
#[derive(Debug)]
pub struct Cluster {
    /// `http://127.0.0.1:PORT` of the vault.
    pub vault_url: String,
    /// `http://127.0.0.1:PORT` of the relay (`https://` when its settings name a certificate).
    pub relay_url: String,
    /// The relay's state (storage, hub, metrics).
    pub relay: RelayState,
    /// The relay's database.
    pub relay_db: Arc<TestDb>,
    vault_db: Arc<TestDb>,
    master: String,
    stop: CancellationToken,
    relay_stop: CancellationToken,
    http: reqwest::Client,
    extra: Vec<(String, String)>,
}

/// A node known to the vault: its identity key and token (URL-safe base64).
#[derive(Debug, Clone)]
pub struct TestNode {
    /// Node id.
    pub id: String,
    /// Group id.
    pub group: String,
    /// Ed25519 identity key.
    pub key: SigningKey,
    /// Token, URL-safe base64.
    pub token: String,
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn limits() -> Vec<(&'static str, String)> {
    vec![
        ("RATE_LIMIT_IP_BURST", "1000000".into()),
        ("RATE_LIMIT_IP_PER_SECOND", "1000000".into()),
        ("RATE_LIMIT_PRINCIPAL_BURST", "1000000".into()),
        ("RATE_LIMIT_PRINCIPAL_PER_SECOND", "1000000".into()),
    ]
}

impl Cluster {
    /// Start both, with extra relay settings (e.g. `("RELAY_WINDOW", "4")`); waits until the
    /// relay has read the root keys and the revocation feed.
    pub async fn start(relay_settings: &[(&str, &str)]) -> Self {
        Self::start_with(&[], relay_settings).await
    }

    /// Start both, with extra vault settings (e.g. `("VAULT_ROOT_KEY_ANNOUNCE_SECS", "2")`) and
    /// extra relay settings.
    pub async fn start_with(
        vault_settings: &[(&str, &str)],
        relay_settings: &[(&str, &str)],
    ) -> Self {
        let vault_db = Arc::new(TestDb::new().await);
        let relay_db = Arc::new(TestDb::new().await);
        let master = hex::encode(random_key().as_ref());
        let stop = CancellationToken::new();
        let (listener, vault_addr) = listen().await;
        let vault_url = format!("http://{vault_addr}");
        let mut env = limits();
        env.extend([
            ("VAULT_DATABASE_URL", vault_db.url_for_process()),
            ("VAULT_MASTER_KEY", master.clone()),
            ("MANAGEMENT_API_KEY", MGMT_KEY.to_owned()),
            ("VAULT_FEED_API_KEY", FEED_KEY.to_owned()),
        ]);
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                vault_settings
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .collect();
        let config = keymesh_vault_config(&Source::from_env(env)).expect("vault config");
        let pool = Db::open_for(ServiceName::Vault, &config.service.database_url)
            .await
            .expect("vault db");
        let ctx = ServiceContext::with_db(config.service.clone(), pool, stop.clone());
        let (router, _) = keymesh_vault::router(ctx, config).await.expect("vault");
        tokio::spawn(serve(
            listener,
            router,
            stop.clone(),
            Duration::from_secs(1),
        ));
        let extra: Vec<(String, String)> = relay_settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (relay_url, relay, relay_stop) = run_relay(&relay_db, &vault_url, &extra).await;
        Self {
            vault_url,
            relay_url,
            relay,
            relay_db,
            vault_db,
            master,
            stop,
            relay_stop,
            http: reqwest::Client::new(),
            extra,
        }
    }

    /// Start the relay again over its database (after [`stop_relay`](Self::stop_relay)).
    pub async fn start_relay(&mut self) {
        let (url, state, stop) = run_relay(&self.relay_db, &self.vault_url, &self.extra).await;
        self.relay_url = url;
        self.relay = state;
        self.relay_stop = stop;
    }

    /// Stop the relay (its connections are told it is shutting down).
    pub async fn stop_relay(&self) {
        self.relay_stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Stop the vault: the relay's copy of the revocation feed ages from then on.
    pub fn stop_vault(&self) {
        self.stop.cancel();
    }

    /// `ws://…/v1/relay/ws`.
    pub fn ws_url(&self) -> String {
        format!("{}/v1/relay/ws", self.relay_url.replacen("http", "ws", 1))
    }

    /// Call the vault as management.
    pub async fn mgmt(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.vault_url))
            .bearer_auth(MGMT_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("vault call");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Register `id` in `group` with the vault and mint a token with `rights`
    /// (e.g. `[{"resource":"relay/*","op":"write"}]`).
    pub async fn node(&self, id: &str, group: &str, rights: Value) -> TestNode {
        let key = SigningKey::from_bytes(&random_key());
        let (status, body) = self
            .mgmt(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{id}"),
                Some(json!({ "group": group, "user": format!("user-{id}"), "public_key": hex::encode(key.verifying_key().to_bytes()) })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let token = self.mint(id, rights).await;
        TestNode {
            id: id.to_owned(),
            group: group.to_owned(),
            key,
            token,
        }
    }

    /// Mint another token for a registered node.
    pub async fn mint(&self, id: &str, rights: Value) -> String {
        let (status, body) = self
            .mgmt(
                reqwest::Method::POST,
                "/v1/tokens",
                Some(json!({ "node_id": id, "rights": rights })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// The vault's database and master key (to restart it in a test).
    pub fn vault_parts(&self) -> (&TestDb, &str) {
        (&self.vault_db, &self.master)
    }

    /// An attack: the private half of the root key that signs now, taken as an attacker holding
    /// the vault's database and `VAULT_MASTER_KEY` would (unsealing the stored row).
    pub async fn steal_signing_root_key(&self) -> Zeroizing<[u8; 32]> {
        let db = Db::open_for(ServiceName::Vault, self.vault_db.url())
            .await
            .expect("vault db");
        let (_, keys) = self
            .mgmt(reqwest::Method::GET, "/v1/tokens/keys", None)
            .await;
        let current = keys["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["current"] == true)
            .and_then(|k| k["kid"].as_i64())
            .expect("a current key");
        let row = keymesh_vault::store::Store::new(db)
            .token_keys()
            .await
            .expect("root key rows")
            .into_iter()
            .find(|r| r.kid == current)
            .expect("the current key's row");
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, self.master.as_bytes());
        let mut seal = [0u8; 32];
        hkdf.expand(b"keymesh-vault-root-key-seal-v1", &mut seal)
            .expect("hkdf");
        let seed = crypto::open(
            &crypto::DataKey::from_bytes(seal),
            &row.sealed_private,
            b"keymesh-vault-root-key-v1",
        )
        .expect("the master key opens the root key");
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&seed);
        out
    }

    /// An attack: a token for `node` with `rights` (JSON, as [`node`](Self::node) takes them),
    /// signed with a stolen root key and valid for `valid_for`: what the vault never mints.
    pub fn forge(
        &self,
        root_seed: &[u8; 32],
        node: &TestNode,
        rights: Value,
        valid_for: Duration,
    ) -> String {
        let ring = KeyRing::new(root_seed, &[]).expect("ring");
        let expires_at = (SystemTime::now() + valid_for)
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let grant = format!("forged-{}", hex::encode(&random_key()[..8]));
        let claims = Claims {
            token_id: hex::encode(&random_key()[..16]),
            grant: grant.clone(),
            lineage: vec![grant],
            node: node.id.clone(),
            group: node.group.clone(),
            user: format!("user-{}", node.id),
            node_key: node.key.verifying_key().to_bytes(),
            rights: serde_json::from_value(rights).expect("rights"),
            expires_at,
            epochs: [(Scope::Node, 0), (Scope::User, 0), (Scope::Group, 0)],
            ancestors: Vec::new(),
            expiry_cap: None,
        };
        TOKEN_B64.encode(ring.mint(&claims).expect("mint"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.relay_stop.cancel();
        self.stop.cancel();
    }
}

fn keymesh_vault_config(
    source: &Source,
) -> Result<keymesh_vault::VaultConfig, keymesh_core::config::ConfigError> {
    keymesh_vault::VaultConfig::load(source, Environment::Development)
}

/// Start a relay over `db` following the vault at `vault_url`; wait until it has synced.
async fn run_relay(
    db: &TestDb,
    vault_url: &str,
    extra: &[(String, String)],
) -> (String, RelayState, CancellationToken) {
    let (listener, addr) = listen().await;
    let mut env: Vec<(String, String)> = limits()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.extend([
        ("RELAY_DATABASE_URL".into(), db.url_for_process()),
        ("RELAY_VAULT_URL".into(), vault_url.to_owned()),
        ("RELAY_FEED_API_KEY".into(), FEED_KEY.into()),
        ("RELAY_LISTEN".into(), addr.to_string()),
    ]);
    env.extend(extra.iter().cloned());
    let config =
        RelayConfig::load(&Source::from_env(env), Environment::Development).expect("relay config");
    let stop = CancellationToken::new();
    let pool = Db::open_for(ServiceName::Relay, &config.service.database_url)
        .await
        .expect("relay db");
    let ctx = ServiceContext::with_db(config.service.clone(), pool, stop.clone());
    // RELAY_TLS_CERT_FILE / _KEY_FILE among the settings: the relay serves https and wss.
    let tls = config.service.tls.as_ref().map(|files| {
        ServerTls::load(files.clone(), &ctx.metrics).expect("the relay's certificate")
    });
    let (router, state) = keymesh_relay::router(ctx, config).await.expect("relay");
    let grace = Duration::from_secs(1);
    let scheme = match tls {
        Some(tls) => {
            tokio::spawn(serve(
                tls.listen(listener, stop.clone()),
                router,
                stop.clone(),
                grace,
            ));
            "https"
        }
        None => {
            tokio::spawn(serve(listener, router, stop.clone(), grace));
            "http"
        }
    };
    for _ in 0..200 {
        if state.followed.fresh() && state.followed.verifier().is_some() {
            return (format!("{scheme}://{addr}"), state, stop);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the relay did not sync with the vault within 4 s");
}
