//! A management server over its own test database, mailing through a real SMTP server
//! (aiosmtpd from Debian's python3-aiosmtpd, on loopback, writing a Maildir), driven through
//! its real router.
//!
//! Every response the helpers receive is checked against `docs/openapi/management.json`
//! (status documented for the operation, content type, body against its schema; see
//! `keymesh_core::openapi::conformance`): a response the document does not describe fails the
//! test that received it, naming the route, the status and what does not match.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo};
use base64::Engine;
use ed25519_dalek::SigningKey;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use keymesh_core::capability::{
    pop::{PROOF_HEADER, sign_enrollment, sign_http},
    token::random_key,
};
pub use keymesh_core::smtp_testing::{Smtp, link_token, mail_code};
use keymesh_core::{
    ServiceContext,
    config::{Environment, ServiceName, Source},
    openapi::conformance::{Conformance, Operation},
    storage::{Db, testing::TestDb},
};
use keymesh_management::{ManagementConfig, ManagementState};
use serde_json::{Value, json};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const PUBLIC_URL: &str = "http://127.0.0.1:7800";

/// The published document every response is checked against.
pub static DOCUMENT: LazyLock<Conformance> = LazyLock::new(|| {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/management.json");
    Conformance::from_file(&path).unwrap_or_else(|e| panic!("the OpenAPI document: {e}"))
});

/// Check a response against [`DOCUMENT`] (body `None`: streamed, not read) and note the
/// operation and status in `seen`.
pub fn conforms(
    seen: &Mutex<BTreeSet<(Operation, u16)>>,
    method: &str,
    uri: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) {
    let checked = match body {
        Some(body) => DOCUMENT.check(method, uri, status.as_u16(), headers, body),
        None => DOCUMENT.check_head(method, uri, status.as_u16(), headers),
    };
    match checked {
        Ok(Some(operation)) => {
            seen.lock()
                .expect("coverage")
                .insert((operation, status.as_u16()));
        }
        Ok(None) => {}
        Err(e) => panic!("the response does not match docs/openapi/management.json: {e}"),
    }
}

/// A running management server.
pub struct Management {
    pub router: Router,
    pub state: ManagementState,
    pub smtp: Smtp,
    #[allow(dead_code)]
    pub db: TestDb,
    /// The vault it calls, when started with one.
    pub vault: Option<VaultServer>,
    /// Every documented operation answered so far, with its status.
    pub seen: Arc<Mutex<BTreeSet<(Operation, u16)>>>,
}

/// The vault's management credential in tests.
pub const VAULT_KEY: &str = "management-key-0123456789abcdef0123456789";

/// A real vault over its own database, serving HTTP on loopback; stopped when dropped.
pub struct VaultServer {
    pub state: keymesh_vault::VaultState,
    pub url: String,
    _db: TestDb,
    stop: CancellationToken,
}

impl Drop for VaultServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl VaultServer {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let source = Source::from_env([
            ("VAULT_DATABASE_URL", db.url_for_process()),
            (
                "VAULT_MASTER_KEY",
                "master-key-0123456789abcdef0123456789abcdef".to_owned(),
            ),
            ("MANAGEMENT_API_KEY", VAULT_KEY.to_owned()),
            (
                "VAULT_FEED_API_KEY",
                "feed-key-0123456789abcdef0123456789abcdef".to_owned(),
            ),
            ("RATE_LIMIT_IP_BURST", "100000".to_owned()),
            ("RATE_LIMIT_IP_PER_SECOND", "100000".to_owned()),
            ("RATE_LIMIT_PRINCIPAL_BURST", "100000".to_owned()),
            ("RATE_LIMIT_PRINCIPAL_PER_SECOND", "100000".to_owned()),
        ]);
        let config = keymesh_vault::VaultConfig::load(&source, Environment::Development)
            .expect("vault config");
        let pool = Db::open_for(ServiceName::Vault, db.url())
            .await
            .expect("vault db");
        let stop = CancellationToken::new();
        let ctx = ServiceContext::with_db(config.service.clone(), pool, stop.clone());
        let (router, state) = keymesh_vault::router(ctx, config).await.expect("vault");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        });
        Self {
            state,
            url,
            _db: db,
            stop,
        }
    }
}

/// Management calling a real vault.
pub async fn management_with_vault() -> Management {
    management_with_vault_and(&[]).await
}

/// Management calling a real vault, with extra settings.
pub async fn management_with_vault_and(extra: &[(&'static str, &str)]) -> Management {
    let vault = VaultServer::start().await;
    let mut env = vec![
        ("MANAGEMENT_VAULT_URL", vault.url.as_str()),
        ("MANAGEMENT_VAULT_API_KEY", VAULT_KEY),
        ("MANAGEMENT_RELAY_URL", "http://127.0.0.1:7802"),
    ];
    env.extend_from_slice(extra);
    let mut m = management_with(&env).await;
    m.vault = Some(vault);
    m
}

/// A signed-in user.
pub struct Person {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// An enrolled node: its id, identity key and current token.
pub struct Node {
    #[allow(dead_code)]
    pub id: String,
    pub key: SigningKey,
    pub token: String,
}

pub fn node_key() -> SigningKey {
    SigningKey::from_bytes(&random_key())
}

/// A signed enrollment request body.
pub fn enrollment(code: &str, node: &str, key: &SigningKey) -> Value {
    json!({
        "code": code,
        "node_id": node,
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "signature": hex::encode(sign_enrollment(key, code, node)),
    })
}

/// Response status, headers and body (JSON, or the text under `"text"`).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The reply is the coded error `code` with `status`.
pub fn expect(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(
        (reply.status, reply.code()),
        (status, code),
        "{}",
        reply.body
    );
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or("")
    }
}

pub async fn management() -> Management {
    management_with(&[]).await
}

pub async fn management_with(extra: &[(&'static str, &str)]) -> Management {
    let smtp = Smtp::start();
    let db = TestDb::new().await;
    let mut env: Vec<(&'static str, String)> = vec![
        ("MANAGEMENT_DATABASE_URL", db.url_for_process()),
        ("MANAGEMENT_PUBLIC_URL", PUBLIC_URL.to_owned()),
        (
            "MANAGEMENT_SECRET_KEY",
            "test-secret-key-0123456789abcdef0123".to_owned(),
        ),
        (
            "MANAGEMENT_SMTP_URL",
            format!("smtp://127.0.0.1:{}", smtp.port),
        ),
        (
            "MANAGEMENT_MAIL_FROM",
            "Keymesh <keymesh@test.invalid>".to_owned(),
        ),
        ("MANAGEMENT_LOGIN_PER_IP_PER_MINUTE", "1000".to_owned()),
        ("RATE_LIMIT_IP_BURST", "100000".to_owned()),
        ("RATE_LIMIT_IP_PER_SECOND", "100000".to_owned()),
        ("RATE_LIMIT_PRINCIPAL_BURST", "100000".to_owned()),
        ("RATE_LIMIT_PRINCIPAL_PER_SECOND", "100000".to_owned()),
    ];
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k, (*v).to_owned()));
    }
    let config =
        ManagementConfig::load(&Source::from_env(env), Environment::Development).expect("config");
    let pool = Db::open_for(ServiceName::Management, db.url())
        .await
        .expect("db");
    let ctx = ServiceContext::with_db(config.service.clone(), pool, CancellationToken::new());
    let (router, state) = keymesh_management::router(ctx, config).expect("management");
    Management {
        router,
        state,
        smtp,
        db,
        vault: None,
        seen: Arc::default(),
    }
}

/// A unique address for one test.
pub fn address(who: &str) -> String {
    format!("{who}-{}@example.test", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

impl Management {
    /// A signed-in user of `role`: (user id, bearer token).
    pub async fn signed_in(&self, role: &str) -> (String, String) {
        let p = self.person(role).await;
        (p.id, p.token)
    }

    /// A signed-in user of `role`, with their address.
    pub async fn person(&self, role: &str) -> Person {
        let email = address(role);
        let id = self.user(&email, role).await;
        let token = self.sign_in(&email, 1).await;
        Person { id, email, token }
    }

    /// A new enrollment code for `group` (created when missing), made by `session` with the
    /// code body `body` (e.g. a ceiling).
    pub async fn new_code(&self, session: &str, group: &str, body: Value) -> String {
        let reply = self
            .bearer(session, "POST", "/v1/groups", Some(json!({ "id": group })))
            .await;
        assert!(
            matches!(reply.status, StatusCode::CREATED | StatusCode::CONFLICT),
            "{}",
            reply.body
        );
        let reply = self
            .bearer(
                session,
                "POST",
                &format!("/v1/groups/{group}/enrollment-codes"),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["code"].as_str().expect("code").to_owned()
    }

    /// Enroll `node_id` into `group` (created when missing) with a code made by `session`
    /// (code body `code`, e.g. a ceiling).
    pub async fn enroll(&self, session: &str, group: &str, node_id: &str, code: Value) -> Node {
        let code = self.new_code(session, group, code).await;
        let key = node_key();
        let reply = self
            .json(
                "POST",
                "/v1/enroll",
                Some(enrollment(&code, node_id, &key)),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        Node {
            id: node_id.to_owned(),
            key,
            token: reply.body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Wait until management follows the vault's revocation feed (node calls need it).
    pub async fn wait_following(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(self.state.followed.fresh() && self.state.followed.verifier().is_some()) {
            assert!(
                Instant::now() < deadline,
                "management did not follow the vault within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A node's request: its token and a fresh proof of possession.
    pub async fn node_call(
        &self,
        node: &Node,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let raw = keymesh_vault::auth::TOKEN_B64
            .decode(&node.token)
            .expect("token base64");
        let proof = sign_http(
            &node.key,
            method,
            uri,
            body.as_bytes(),
            &raw,
            SystemTime::now(),
        );
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", node.token))
            .header(PROOF_HEADER, proof)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }

    /// The response itself (for streamed bodies), from a fixed client address; its status,
    /// content type and headers are checked against the document.
    pub async fn raw(&self, req: Request<Body>) -> axum::response::Response {
        let (method, uri) = (req.method().to_string(), req.uri().to_string());
        let response = self.unchecked(req).await;
        conforms(
            &self.seen,
            &method,
            &uri,
            response.status(),
            response.headers(),
            None,
        );
        response
    }

    async fn unchecked(&self, mut req: Request<Body>) -> axum::response::Response {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(
            "192.0.2.1:5000".parse().expect("addr"),
        ));
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let (method, uri) = (req.method().to_string(), req.uri().to_string());
        let response = self.unchecked(req).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        conforms(&self.seen, &method, &uri, status, &headers, Some(&bytes));
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({ "text": String::from_utf8_lossy(&bytes).into_owned() }));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A JSON request with optional extra headers.
    pub async fn json(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    /// A request with a bearer token.
    pub async fn bearer(&self, token: &str, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {token}");
        self.json(method, uri, body, &[("authorization", &auth)])
            .await
    }

    /// The status of `GET /v1/session` with a bearer token: is the session alive?
    pub async fn session_status(&self, token: &str) -> StatusCode {
        self.bearer(token, "GET", "/v1/session", None).await.status
    }

    /// The id of the session behind a bearer token.
    pub async fn session_id(&self, token: &str) -> String {
        self.bearer(token, "GET", "/v1/session", None).await.body["session"]["id"]
            .as_str()
            .expect("session id")
            .to_owned()
    }

    /// GET the confirm page of a link.
    pub async fn confirm_page(&self, token: &str) -> Reply {
        self.json("GET", &format!("/login/confirm?token={token}"), None, &[])
            .await
    }

    /// POST the confirm form, as the page's button does.
    pub async fn confirm(&self, token: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method("POST")
            .uri("/login/confirm")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(
            req.body(Body::from(format!("token={token}")))
                .expect("request"),
        )
        .await
    }

    /// Create a user directly in the database.
    pub async fn user(&self, email: &str, role: &str) -> String {
        self.state
            .store
            .insert_user(email, role)
            .await
            .expect("insert")
            .expect("new address")
            .id
    }

    /// Ask for a sign-in as the desktop app: (request id, poll secret).
    pub async fn app_login(&self, email: &str) -> (String, String) {
        let reply = self
            .json(
                "POST",
                "/v1/login",
                Some(json!({ "email": email, "client": "app" })),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        (
            reply.body["request_id"].as_str().expect("id").to_owned(),
            reply.body["poll_secret"]
                .as_str()
                .expect("secret")
                .to_owned(),
        )
    }

    pub async fn submit_code(&self, request: &(String, String), code: &str) -> Reply {
        self.json(
            "POST",
            "/v1/login/code",
            Some(json!({ "request_id": request.0, "poll_secret": request.1, "code": code })),
            &[],
        )
        .await
    }

    pub async fn poll(&self, request: &(String, String)) -> Reply {
        self.json(
            "POST",
            "/v1/login/poll",
            Some(json!({ "request_id": request.0, "poll_secret": request.1 })),
            &[],
        )
        .await
    }

    /// Sign in through the app flow with the mailed code (the `n`th mail to `email`):
    /// the bearer token.
    pub async fn sign_in(&self, email: &str, n: usize) -> String {
        let request = self.app_login(email).await;
        let mail = self.smtp.wait_mail(email, n).await;
        let reply = self.submit_code(&request, &mail_code(&mail)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["session"]["token"]
            .as_str()
            .expect("bearer token")
            .to_owned()
    }

    /// Sign in with a browser through the emailed link: the session cookie's value.
    pub async fn browser_sign_in(&self, email: &str, n: usize) -> String {
        let reply = self
            .json("POST", "/v1/login", Some(json!({ "email": email })), &[])
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        let mail = self.smtp.wait_mail(email, n).await;
        let reply = self.confirm(&link_token(&mail), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        cookie_value(&reply.headers).expect("a session cookie")
    }
}

/// The session cookie a response sets.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    let set = headers.get(header::SET_COOKIE)?.to_str().ok()?;
    let rest = set.strip_prefix("__Host-keymesh_session=")?;
    Some(rest.split(';').next().unwrap_or_default().to_owned())
}
