//! What `keymesh dev` prepares for a first trial (docs/quickstart.md): three people signed in
//! (two admins and a responder), a group `demo` whose vault is created and unlocked, and a file
//! of shell variables holding the services' URLs and the people's session tokens.
//!
//! Everything goes through management's real HTTP routes, as a person's tools would: the only
//! shortcut is that the sign-in codes are taken from the request rows this process issues
//! instead of from the mail, and that this process seals the vault's passphrase itself (in
//! production an admin's tool does, docs/vault.md). The vault's unlock is a real `vault.unlock`
//! approval, asked by one admin and approved by the other. Running `keymesh dev` again signs
//! everyone in anew and unlocks the (existing) vault again.

use std::{net::IpAddr, path::Path, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_core::crypto;
use keymesh_management::{
    ManagementState,
    login::issue,
    store::{Client, Purpose},
};
use secrecy::{ExposeSecret, SecretString, zeroize::Zeroizing};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The demo group `keymesh dev` creates.
pub const GROUP: &str = "demo";
/// The second admin, who approves what the first asks.
pub const REVIEWER: &str = "reviewer@localhost";
/// The incident responder.
pub const RESPONDER: &str = "responder@localhost";

/// The services' base URLs.
pub struct Urls {
    /// Management.
    pub management: String,
    /// The vault.
    pub vault: String,
    /// The relay.
    pub relay: String,
    /// Each service's database URL, by service name (only SQLite ones reach `.keymesh/env`).
    pub databases: Vec<(&'static str, String)>,
}

/// What the demo left for the banner.
pub struct Prepared {
    /// The shell file that sets the URLs and session tokens.
    pub env_file: String,
}

/// A signed-in person's bearer session against management.
struct Person {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl Person {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// A management answer: status and JSON body (or the transport error as the body's message).
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    async fn from(sent: reqwest::Result<reqwest::Response>) -> Self {
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.json().await.unwrap_or(Value::Null);
                Self { status, body }
            }
            Err(e) => Self {
                status: 0,
                body: json!({ "error": { "code": "unreachable", "message": e.to_string() } }),
            },
        }
    }

    /// The body when the status is one of `ok`, else an error naming `step`.
    fn expect(self, step: &str, ok: &[u16]) -> Result<Value, BoxError> {
        if ok.contains(&self.status) {
            Ok(self.body)
        } else {
            Err(format!("{step}: management answered {} {}", self.status, self.body).into())
        }
    }
}

/// The string at `pointer` in a management answer.
fn field(body: &Value, pointer: &str) -> Result<String, BoxError> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("management's answer has no {pointer}: {body}").into())
}

/// Sign `email` in through `POST /v1/login/code`, with the code of a request issued here.
async fn sign_in(state: &ManagementState, base: &str, email: &str) -> Result<Person, BoxError> {
    let user = state
        .store
        .user_by_email(email)
        .await?
        .ok_or_else(|| format!("{email} has no account"))?;
    let local = IpAddr::from([127, 0, 0, 1]);
    let issued = issue(state, Some(&user), Purpose::Login, Client::App, local)
        .await
        .map_err(|e| format!("issuing a sign-in for {email}: {e}"))?;
    // Management's own trust for calls between services (TLS_CA_FILE): in a dev run with TLS
    // its certificate comes from that CA.
    let http = keymesh_core::tls::client_builder(state.ctx.config.common.tls_ca.as_ref())
        .timeout(Duration::from_secs(30))
        .build()?;
    let reply = Reply::from(
        http.post(format!("{base}/v1/login/code"))
            .json(&json!({
                "request_id": issued.request_id,
                "poll_secret": issued.poll_secret.expose_secret(),
                "code": issued.code.expose_secret(),
            }))
            .send()
            .await,
    )
    .await;
    let session = reply.expect(&format!("signing {email} in"), &[200])?;
    let token = SecretString::from(field(&session, "/session/token")?);
    Ok(Person {
        http,
        base: base.to_owned(),
        token,
    })
}

/// Prepare the demo: people, group, unlocked vault, and `.keymesh/env`.
pub async fn prepare(
    state: &ManagementState,
    admin_email: &str,
    urls: &Urls,
    dir: &Path,
) -> Result<Prepared, BoxError> {
    let admin = sign_in(state, &urls.management, admin_email).await?;
    for (email, role) in [(REVIEWER, "admin"), (RESPONDER, "responder")] {
        admin
            .post("/v1/users", json!({ "email": email, "role": role }))
            .await
            .expect(&format!("inviting {email}"), &[201, 409])?;
    }
    let reviewer = sign_in(state, &urls.management, REVIEWER).await?;
    let responder = sign_in(state, &urls.management, RESPONDER).await?;
    admin
        .post("/v1/groups", json!({ "id": GROUP }))
        .await
        .expect("creating the demo group", &[201, 409])?;
    let passphrase = vault_passphrase(dir)?;
    unlock_vault(&admin, &reviewer, &passphrase).await?;

    let env_file = dir.join("env");
    // The file's text holds the sessions: one buffer, sized once (no copies left behind by
    // growing), wiped when dropped.
    let mut env = Zeroizing::new(String::with_capacity(8192));
    env.push_str(
        "# Written by `keymesh dev` for this run (docs/quickstart.md): source it in a shell.\n\
         # The three tokens are bearer sessions of the demo's people: development only.\n",
    );
    export(&mut env, "KEYMESH_MANAGEMENT_URL", &urls.management);
    export(&mut env, "KEYMESH_VAULT_URL", &urls.vault);
    export(&mut env, "KEYMESH_RELAY_URL", &urls.relay);
    export(&mut env, "ADMIN_TOKEN", admin.token.expose_secret());
    export(&mut env, "REVIEWER_TOKEN", reviewer.token.expose_secret());
    export(&mut env, "RESPONDER_TOKEN", responder.token.expose_secret());
    // What `keymesh audit verify --service S` needs to check this instance's chains.
    let cwd = std::env::current_dir()?;
    for (name, service) in [
        ("MANAGEMENT_DATABASE_URL", "management"),
        ("VAULT_DATABASE_URL", "vault"),
        ("RELAY_DATABASE_URL", "relay"),
    ] {
        let url = urls.databases.iter().find(|(s, _)| *s == service);
        if let Some(url) = url.and_then(|(_, url)| absolute_sqlite(url, &cwd)) {
            export(&mut env, name, &url);
        }
    }
    let key_file = cwd.join(dir).join("management-secret.key");
    export(
        &mut env,
        "MANAGEMENT_SECRET_KEY_FILE",
        &key_file.display().to_string(),
    );
    // The tools: keymeshctl is built beside this binary (`cargo build --bin keymeshctl`).
    if let Some(bin) = std::env::current_exe()?.parent() {
        env.push_str("export PATH=");
        push_quoted(&mut env, &bin.display().to_string());
        env.push_str(":\"$PATH\"\n");
    }
    write_private(&env_file, env.as_bytes())?;
    Ok(Prepared {
        env_file: env_file.display().to_string(),
    })
}

/// A `sqlite://` URL made absolute against `cwd`, so the file works from any directory; other
/// URLs (which may hold a password) are not written.
fn absolute_sqlite(url: &str, cwd: &Path) -> Option<String> {
    let path = url.strip_prefix("sqlite://")?;
    Some(format!("sqlite://{}", cwd.join(path).display()))
}

/// `export NAME='value'` and a newline, appended to `env`.
fn export(env: &mut String, name: &str, value: &str) {
    env.push_str("export ");
    env.push_str(name);
    env.push('=');
    push_quoted(env, value);
    env.push('\n');
}

/// `value` as one single-quoted shell word, appended to `out` (no copy of it is made).
fn push_quoted(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
}

/// The demo vault's passphrase, made once and kept (owner-only) beside the databases.
fn vault_passphrase(dir: &Path) -> Result<SecretString, BoxError> {
    let path = dir.join("demo-vault-passphrase");
    if !path.exists() {
        let random = keymesh_core::capability::token::random_key();
        write_private(&path, STANDARD.encode(random).as_bytes())?;
    }
    Ok(SecretString::from(
        std::fs::read_to_string(&path)?.trim().to_owned(),
    ))
}

/// Replace `path` with `bytes`, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(parent)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(path).map(drop).map_err(|e| e.error)
}

/// The passphrase sealed to a ceremony's key, as an admin's tool seals it.
fn sealed_passphrase(ceremony: &Value, passphrase: &SecretString) -> Result<String, BoxError> {
    let key = ceremony
        .pointer("/ceremony/public_key")
        .and_then(Value::as_str)
        .ok_or("the ceremony has no public key")?;
    let public: [u8; 32] = hex::decode(key)?
        .try_into()
        .map_err(|_| "the ceremony key is not 32 bytes")?;
    let sealed = crypto::hpke_seal(
        &public,
        crypto::ceremony::INFO_PASSPHRASE,
        GROUP.as_bytes(),
        passphrase.expose_secret().as_bytes(),
    )?;
    Ok(STANDARD.encode(sealed))
}

/// Create the demo vault if it does not exist, then unlock it through a `vault.unlock`
/// approval: the admin asks, the reviewer approves, the admin executes and seals the
/// passphrase to the unlock ceremony.
async fn unlock_vault(
    admin: &Person,
    reviewer: &Person,
    passphrase: &SecretString,
) -> Result<(), BoxError> {
    let status = admin
        .get(&format!("/v1/groups/{GROUP}/vault"))
        .await
        .expect("reading the demo vault's status", &[200])?;
    if status["initialized"] != true {
        let init = admin
            .post(
                &format!("/v1/groups/{GROUP}/vault/ceremonies"),
                json!({ "kind": "init" }),
            )
            .await
            .expect("opening the demo vault's init ceremony", &[200])?;
        let id = field(&init, "/ceremony/id")?;
        admin
            .post(
                &format!("/v1/ceremonies/{id}/init"),
                json!({ "mode": "passphrase", "sealed_passphrase": sealed_passphrase(&init, passphrase)? }),
            )
            .await
            .expect("creating the demo vault", &[200])?;
    } else if status["locked"] == false {
        return Ok(());
    }
    let asked = admin
        .post(
            "/v1/approvals",
            json!({ "operation": "vault.unlock", "group": GROUP,
                    "reason": "keymesh dev: unlock the demo vault for the quickstart" }),
        )
        .await
        .expect("asking to unlock the demo vault", &[202])?;
    let approval = field(&asked, "/approval/id")?;
    reviewer
        .post(
            &format!("/v1/approvals/{approval}/decisions"),
            json!({ "decision": "approve", "reason": "keymesh dev: the demo vault" }),
        )
        .await
        .expect("approving the demo vault's unlock", &[200])?;
    let unlock = admin
        .post(&format!("/v1/approvals/{approval}/execute"), json!({}))
        .await
        .expect("opening the demo vault's unlock ceremony", &[200])?;
    let id = field(&unlock, "/ceremony/id")?;
    let done = admin
        .post(
            &format!("/v1/ceremonies/{id}/passphrase"),
            json!({ "sealed_passphrase": sealed_passphrase(&unlock, passphrase)? }),
        )
        .await
        .expect("unlocking the demo vault", &[200])?;
    if done["unlocked"] != true {
        return Err(format!("the demo vault did not unlock: {done}").into());
    }
    Ok(())
}
