//! Starting a vault and talking to it like management, admins and nodes do. Every response
//! [`Vault::send`] receives is checked against `docs/openapi/vault.json` (status documented for
//! the operation, content type, body against its schema; `keymesh_core::openapi::conformance`).

use std::{net::SocketAddr, sync::LazyLock, time::SystemTime};

use axum::{Router, body::Body, extract::ConnectInfo};
use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::SigningKey;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keymesh_core::{
    ServiceContext,
    capability::{pop::sign_http, token::random_key},
    config::{Environment, Source},
    crypto::{self, HpkeKeyPair},
    openapi::conformance::Conformance,
    storage::{Db, testing::TestDb},
};
use keymesh_vault::{VaultConfig, VaultState, auth::TOKEN_B64, routes::vaults};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The published document every response is checked against.
static DOCUMENT: LazyLock<Conformance> = LazyLock::new(|| {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/vault.json");
    Conformance::from_file(&path).unwrap_or_else(|e| panic!("the OpenAPI document: {e}"))
});

pub const MGMT_KEY: &str = "management-key-0123456789abcdef0123456789";
/// Unlock attempts per minute in tests (per group and per client).
pub const UNLOCK_ATTEMPTS: usize = 10;
pub const FEED_KEY: &str = "feed-key-0123456789abcdef0123456789abcdef";

/// A running vault over its own database.
pub struct Vault {
    pub router: Router,
    pub state: VaultState,
    pub db: std::sync::Arc<TestDb>,
    pub master: String,
}

/// A node: its key and current token.
pub struct Node {
    #[allow(dead_code)]
    pub id: String,
    pub key: SigningKey,
    pub token: String,
}

pub async fn vault() -> Vault {
    let db = TestDb::new().await;
    let master = hex::encode(random_key().as_ref());
    start(std::sync::Arc::new(db), master).await
}

/// Start a vault process over an existing database (also used to "restart").
pub async fn start(db: std::sync::Arc<TestDb>, master: String) -> Vault {
    start_with(db, master, &[]).await
}

/// [`start`] with extra settings (e.g. `("VAULT_ROOT_KEY_ANNOUNCE_SECS", "1")`).
pub async fn start_with(
    db: std::sync::Arc<TestDb>,
    master: String,
    settings: &[(&str, &str)],
) -> Vault {
    let mut env: Vec<(String, String)> = vec![
        ("VAULT_DATABASE_URL", db.url_for_process()),
        ("VAULT_MASTER_KEY", master.clone()),
        ("MANAGEMENT_API_KEY", MGMT_KEY.to_owned()),
        ("VAULT_FEED_API_KEY", FEED_KEY.to_owned()),
        ("VAULT_ARGON2_MEMORY_KIB", "256".to_owned()),
        ("VAULT_ARGON2_ITERATIONS", "1".to_owned()),
        (
            "VAULT_UNLOCK_ATTEMPTS_PER_MINUTE",
            UNLOCK_ATTEMPTS.to_string(),
        ),
        ("RATE_LIMIT_IP_BURST", "100000".to_owned()),
        ("RATE_LIMIT_IP_PER_SECOND", "100000".to_owned()),
        ("RATE_LIMIT_PRINCIPAL_BURST", "100000".to_owned()),
        ("RATE_LIMIT_PRINCIPAL_PER_SECOND", "100000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let source = Source::from_env(env);
    let config = VaultConfig::load(&source, Environment::Development).expect("config");
    let pool = Db::open_for(keymesh_core::config::ServiceName::Vault, db.url())
        .await
        .expect("db");
    let ctx = ServiceContext::with_db(config.service.clone(), pool, CancellationToken::new());
    let (router, state) = keymesh_vault::router(ctx, config).await.expect("vault");
    Vault {
        router,
        state,
        db,
        master,
    }
}

/// Response status and JSON body.
pub type Reply = (StatusCode, Value);

pub fn code(reply: &Reply) -> &str {
    reply.1["error"]["code"].as_str().unwrap_or("")
}

impl Vault {
    pub async fn send(&self, mut req: Request<Body>) -> Reply {
        // Ceremony steps come from management, which relays the admins' sealed material.
        if req.uri().path().starts_with("/v1/ceremonies/")
            && !req.headers().contains_key(header::AUTHORIZATION)
        {
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {MGMT_KEY}").parse().expect("header"),
            );
        }
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(
            "192.0.2.1:5000".parse().expect("addr"),
        ));
        let (method, uri) = (req.method().to_string(), req.uri().to_string());
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        if let Err(e) = DOCUMENT.check(&method, &uri, status.as_u16(), &headers, &bytes) {
            panic!("the response does not match docs/openapi/vault.json: {e}");
        }
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn as_service(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        self.send(
            req.body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
                .expect("req"),
        )
        .await
    }

    pub async fn mgmt(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        self.as_service(MGMT_KEY, method, uri, body).await
    }

    /// Call as `node` with a fresh proof of possession over exactly this request.
    pub async fn node_call(
        &self,
        node: &Node,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        // Garbage tokens (in bad-input tests) are signed as the bytes they are.
        let raw = TOKEN_B64
            .decode(&node.token)
            .unwrap_or_else(|_| node.token.as_bytes().to_vec());
        let proof = sign_http(
            &node.key,
            method,
            uri,
            body.as_bytes(),
            &raw,
            SystemTime::now(),
        );
        self.signed_call(&node.token, &proof, method, uri, body)
            .await
    }

    pub async fn signed_call(
        &self,
        token: &str,
        proof: &str,
        method: &str,
        uri: &str,
        body: String,
    ) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("keymesh-proof", proof)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("req");
        self.send(req).await
    }

    /// Register a node with a ceiling and mint it a token.
    pub async fn node(
        &self,
        id: &str,
        group: &str,
        user: &str,
        ceiling: &str,
        rights: Value,
    ) -> Node {
        let key = SigningKey::from_bytes(&random_key());
        let reply = self.mgmt("PUT", &format!("/v1/nodes/{id}"), Some(json!({
            "group": group, "user": user, "public_key": hex::encode(key.verifying_key().to_bytes()), "ceiling": ceiling,
        }))).await;
        assert_eq!(reply.0, 200, "{reply:?}");
        let reply = self
            .mgmt(
                "POST",
                "/v1/tokens",
                Some(json!({ "node_id": id, "rights": rights })),
            )
            .await;
        assert_eq!(reply.0, 200, "{reply:?}");
        Node {
            id: id.to_owned(),
            key,
            token: reply.1["token"].as_str().expect("token").to_owned(),
        }
    }

    pub async fn ceremony(&self, group: &str, kind: &str) -> Value {
        let reply = self
            .mgmt(
                "POST",
                &format!("/v1/vaults/{group}/ceremonies"),
                Some(json!({ "kind": kind })),
            )
            .await;
        assert_eq!(reply.0, 200, "{reply:?}");
        reply.1
    }

    pub async fn init_passphrase(&self, group: &str, passphrase: &str) {
        let c = self.ceremony(group, "init").await;
        let reply = self.send_passphrase(&c, group, passphrase, "init").await;
        assert_eq!(reply.0, 200, "{reply:?}");
    }

    pub async fn send_passphrase(
        &self,
        ceremony: &Value,
        group: &str,
        passphrase: &str,
        action: &str,
    ) -> Reply {
        let public = ceremony_key(ceremony);
        let sealed = crypto::hpke_seal(
            &public,
            vaults::INFO_PASSPHRASE,
            group.as_bytes(),
            passphrase.as_bytes(),
        )
        .expect("seal");
        let id = ceremony["ceremony_id"].as_str().expect("id");
        let (uri, body) = match action {
            "init" | "rekey" => (
                format!("/v1/ceremonies/{id}/{action}"),
                json!({ "mode": "passphrase", "sealed_passphrase": STANDARD.encode(sealed) }),
            ),
            _ => (
                format!("/v1/ceremonies/{id}/passphrase"),
                json!({ "sealed_passphrase": STANDARD.encode(sealed) }),
            ),
        };
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("req");
        self.send(req).await
    }

    /// Rekey a passphrase vault: the current passphrase (if any) and the new one, both sealed to
    /// the ceremony.
    pub async fn rekey_passphrase(&self, group: &str, current: Option<&str>, new: &str) -> Reply {
        let c = self.ceremony(group, "rekey").await;
        let public = ceremony_key(&c);
        let seal = |p: &str| {
            STANDARD.encode(
                crypto::hpke_seal(
                    &public,
                    vaults::INFO_PASSPHRASE,
                    group.as_bytes(),
                    p.as_bytes(),
                )
                .expect("seal"),
            )
        };
        let mut body = json!({ "mode": "passphrase", "sealed_passphrase": seal(new) });
        if let Some(current) = current {
            body["sealed_current_passphrase"] = json!(seal(current));
        }
        let id = c["ceremony_id"].as_str().expect("id");
        let req = Request::builder()
            .method("POST")
            .uri(format!("/v1/ceremonies/{id}/rekey"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("req");
        self.send(req).await
    }

    pub async fn unlock_passphrase(&self, group: &str, passphrase: &str) -> Reply {
        let c = self.ceremony(group, "unlock").await;
        self.send_passphrase(&c, group, passphrase, "unlock").await
    }

    /// Submit `admin`'s share (decrypted with the admin's key, re-sealed to the ceremony).
    pub async fn submit_share(
        &self,
        ceremony: &Value,
        group: &str,
        admin_id: &str,
        admin: &HpkeKeyPair,
    ) -> Reply {
        let sealed_share = sealed_share_of(ceremony, admin_id);
        // Someone without the admin's key cannot open the share: they send a made-up one.
        let share = sealed_share
            .and_then(|sealed| {
                crypto::hpke_open(
                    admin,
                    vaults::INFO_SHARE,
                    &vaults::share_aad(group, admin_id),
                    &sealed,
                )
                .ok()
            })
            .map_or_else(|| vec![1u8; 33], |s| s.to_vec());
        let sealed = crypto::hpke_seal_auth(
            admin,
            &ceremony_key(ceremony),
            vaults::INFO_UNLOCK_SHARE,
            &vaults::share_aad(group, admin_id),
            &share,
        )
        .expect("seal");
        let id = ceremony["ceremony_id"].as_str().expect("id");
        let body = json!({ "admin_id": admin_id, "sealed_share": STANDARD.encode(sealed) });
        let req = Request::builder()
            .method("POST")
            .uri(format!("/v1/ceremonies/{id}/shares"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("req");
        self.send(req).await
    }

    /// Every byte of every row of every vault table, for "never in the clear" checks.
    pub async fn raw_dump(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for table in [
            "token_keys",
            "nodes",
            "grants",
            "epochs",
            "revocations",
            "vaults",
            "vault_shares",
            "secrets",
            "audit_log",
        ] {
            let sql = format!("SELECT * FROM {table}");
            let db = Db::connect(self.db.url()).await.expect("connect");
            keymesh_core::with_pool!(&db, pool => {
                use sqlx::Row;
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.expect("dump");
                for row in rows {
                    for i in 0..row.len() {
                        if let Ok(Some(b)) = row.try_get::<Option<Vec<u8>>, _>(i) { out.extend(b); }
                        else if let Ok(Some(s)) = row.try_get::<Option<String>, _>(i) { out.extend(s.into_bytes()); }
                    }
                }
            });
            db.close().await;
        }
        out
    }
}

/// The sealed share a ceremony lists for `admin_id`.
fn sealed_share_of(ceremony: &Value, admin_id: &str) -> Option<Vec<u8>> {
    ceremony["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .find(|s| s["admin_id"] == admin_id)
        .map(|s| {
            STANDARD
                .decode(s["sealed_share"].as_str().expect("b64"))
                .expect("b64")
        })
}

/// What an admin's tool does: open its own sealed share with its own key.
pub fn own_share(ceremony: &Value, group: &str, admin_id: &str, admin: &HpkeKeyPair) -> Vec<u8> {
    let sealed = sealed_share_of(ceremony, admin_id).expect("admin is a holder");
    crypto::hpke_open(
        admin,
        vaults::INFO_SHARE,
        &vaults::share_aad(group, admin_id),
        &sealed,
    )
    .expect("own share")
    .to_vec()
}

pub fn ceremony_key(ceremony: &Value) -> [u8; 32] {
    hex::decode(ceremony["public_key"].as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
