//! The app's state and every command the window may ask for (`admin-app/IPC.md`).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use keymesh_proto::{WireError, ident::Ident};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    api::Api,
    approvals::{self, Viewer},
    error::AppError,
    health::{self, Sample, ServiceHealth},
    settings::Settings,
    share,
    sse::SseParser,
    store::{FileStore, KeyringStore, SecretStore},
};

/// What the Rust side tells the window (and the desktop) without being asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamEvent {
    /// An approval request changed: `type` is `approval.created|vote|decided|executed`.
    Approval {
        /// The server's event name.
        r#type: String,
        /// The inbox item (`IPC.md`, `Approval`).
        approval: Value,
    },
    /// Events were missed: re-read the list.
    Lagged,
    /// The event stream's state: `connected`, `reconnecting` or `stopped`.
    Stream {
        /// The state.
        state: &'static str,
        /// Why, when not connected.
        detail: Option<String>,
    },
    /// The server ended the session.
    SessionEnded,
    /// A new request this admin may decide: worth a desktop notification.
    Notify {
        /// Title.
        title: String,
        /// Body.
        body: String,
    },
}

/// Where [`StreamEvent`]s go (the Tauri shell emits them to the window).
pub trait EventSink: Send + Sync + 'static {
    /// Deliver one event.
    fn emit(&self, event: StreamEvent);
}

#[derive(Debug)]
struct Session {
    token: SecretString,
    info: Value,
    /// Which sign-in this is: a refusal of an older session's request must not end this one.
    generation: u64,
}

impl Session {
    fn user_id(&self) -> String {
        self.info["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    fn actions(&self) -> Vec<String> {
        self.info["actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct PendingLogin {
    request_id: String,
    poll_secret: SecretString,
}

#[derive(Debug, Default)]
struct State {
    settings: Settings,
    api: Option<Api>,
    /// Clients for the vault's and relay's health (built once per configuration).
    vault_probe: Option<Api>,
    relay_probe: Option<Api>,
    session: Option<Session>,
    login: Option<PendingLogin>,
    restored: bool,
    generation: u64,
    emails: HashMap<String, String>,
    shares_sent: HashSet<String>,
    relay_sample: Option<Sample>,
    stream: Option<tokio::task::JoinHandle<()>>,
}

/// Keymesh Admin's state: settings, secret store, session, event stream.
pub struct Admin {
    dir: PathBuf,
    downloads: PathBuf,
    store: Box<dyn SecretStore>,
    sink: Arc<dyn EventSink>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("dir", &self.dir)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

const MAX_REASON: usize = 500;

fn reason_checked(reason: &str) -> Result<&str, AppError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(AppError::invalid("give a reason of 1 to 500 characters"));
    }
    Ok(reason)
}

/// An id that may go into a URL path.
fn id(raw: &str) -> Result<String, AppError> {
    Ident::try_from(raw.to_owned())
        .map(String::from)
        .map_err(AppError::invalid)
}

impl Admin {
    /// Open the app's state in `dir`: the OS keyring if one answers (unless
    /// `KEYMESH_ADMIN_STORE=file`), otherwise the passphrase-sealed file `dir/secrets.json`.
    pub fn open(
        dir: &Path,
        downloads: &Path,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<Self>, AppError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| AppError::new("store_failed", format!("{}: {e}", dir.display())))?;
        let forced = std::env::var("KEYMESH_ADMIN_STORE").unwrap_or_default();
        let keyring = match forced.as_str() {
            "file" => None,
            _ => KeyringStore::probe("keymesh-admin"),
        };
        if forced == "keyring" && keyring.is_none() {
            return Err(AppError::new(
                "store_failed",
                "KEYMESH_ADMIN_STORE=keyring but no OS keyring answers",
            ));
        }
        let store: Box<dyn SecretStore> = match keyring {
            Some(k) => Box::new(k),
            None => Box::new(FileStore::new(dir.join("secrets.json"))),
        };
        Self::with_store(dir, downloads, store, sink)
    }

    /// With a given store (tests).
    pub fn with_store(
        dir: &Path,
        downloads: &Path,
        store: Box<dyn SecretStore>,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<Self>, AppError> {
        let settings = Settings::load(dir)?;
        let api = settings.server_url.as_deref().map(Api::new).transpose()?;
        let (vault_probe, relay_probe) = probes(&settings)?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            downloads: downloads.to_owned(),
            store,
            sink,
            state: Mutex::new(State {
                settings,
                api,
                vault_probe,
                relay_probe,
                ..State::default()
            }),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session_key(&self) -> Result<String, AppError> {
        let server = self.state().settings.server_url.clone();
        server
            .map(|s| format!("session@{s}"))
            .ok_or_else(|| AppError::new("not_configured", "set the management URL first"))
    }

    /// Named by the user's id (not the server URL's spelling, which can change).
    fn share_key_name(&self, user: &str) -> Result<String, AppError> {
        id(user).map(|user| format!("share-key#{user}"))
    }

    fn api(&self) -> Result<Api, AppError> {
        self.state()
            .api
            .clone()
            .ok_or_else(|| AppError::new("not_configured", "set the management URL first"))
    }

    /// The API and the session's token and user id.
    fn authed(&self) -> Result<(Api, SecretString, String), AppError> {
        let (api, token, user, _) = self.authed_generation()?;
        Ok((api, token, user))
    }

    fn authed_generation(&self) -> Result<(Api, SecretString, String, u64), AppError> {
        let api = self.api()?;
        let state = self.state();
        let session = state.session.as_ref().ok_or_else(AppError::not_signed_in)?;
        Ok((
            api,
            session.token.clone(),
            session.user_id(),
            session.generation,
        ))
    }

    /// A call with the session; a 401 that ends the session signs the app out.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AppError> {
        let (api, token, _, generation) = self.authed_generation()?;
        let answer = api.call(method, path, Some(&token), body).await;
        if let Err(e) = &answer
            && e.session_ended()
        {
            self.end_session(Some(generation), false);
        }
        answer
    }

    /// Forget the session (only `generation`'s, when given) and its stored token.
    fn end_session(&self, generation: Option<u64>, local: bool) {
        let stream = {
            let mut state = self.state();
            let current = state.session.as_ref().map(|s| s.generation);
            if current.is_none() || generation.is_some_and(|g| Some(g) != current) {
                return;
            }
            state.session = None;
            state.shares_sent.clear();
            state.stream.take()
        };
        if let Some(task) = stream {
            task.abort();
        }
        if let Ok(key) = self.session_key()
            && let Err(e) = self.store.delete(&key)
        {
            tracing::warn!(error = %e, "forgetting the session token failed");
        }
        if !local {
            self.sink.emit(StreamEvent::SessionEnded);
        }
    }

    // --- status, settings, store ----------------------------------------------------------

    /// `status`: settings, store, session and share key as the window needs them.
    pub async fn status(self: &Arc<Self>) -> Result<Value, AppError> {
        self.restore().await;
        let (settings, session) = {
            let s = self.state();
            (
                s.settings.clone(),
                s.session.as_ref().map(|s| s.info.clone()),
            )
        };
        let share_key = match session.as_ref().and_then(|s| s["user"]["id"].as_str()) {
            Some(user) if !self.store.locked() => self
                .store
                .get(&self.share_key_name(user)?)?
                .map(|k| share::from_stored(&k))
                .transpose()?
                .map(|k| hex::encode(k.public)),
            _ => None,
        };
        Ok(json!({
            "configured": settings.server_url.is_some(),
            "server_url": settings.server_url,
            "vault_url": settings.vault_url,
            "relay_url": settings.relay_url,
            "store": {
                "kind": self.store.kind(),
                "locked": self.store.locked(),
                "initialized": self.store.initialized(),
            },
            "session": session,
            "share_key": { "present": share_key.is_some(), "public_key": share_key },
        }))
    }

    /// Once per unlocked store: take up the stored session if the server still honours it.
    async fn restore(self: &Arc<Self>) {
        let ready = {
            let s = self.state();
            !s.restored && s.session.is_none() && s.api.is_some()
        };
        if !ready || self.store.locked() {
            return;
        }
        let Ok(key) = self.session_key() else { return };
        match self.store.get(&key) {
            Ok(Some(token)) => match self.begin_session(token).await {
                Ok(_) => self.state().restored = true,
                // Unreachable: tried again at the next status.
                Err(e) if e.code == "unreachable" => {}
                Err(e) => {
                    tracing::info!(code = %e.code, "the stored session was not taken up");
                    self.state().restored = true;
                    if e.session_ended() {
                        let _ = self.store.delete(&key);
                    }
                }
            },
            Ok(None) => self.state().restored = true,
            Err(e) => {
                self.state().restored = true;
                tracing::warn!(error = %e, "reading the stored session failed");
            }
        }
    }

    /// `configure`: the servers' URLs. Changing the management URL signs out.
    pub async fn configure(
        self: &Arc<Self>,
        server_url: &str,
        vault_url: Option<&str>,
        relay_url: Option<&str>,
    ) -> Result<Value, AppError> {
        let settings = Settings::from_form(server_url, vault_url, relay_url)?;
        let api = Api::new(settings.server_url.as_deref().unwrap_or_default())?;
        let (vault_probe, relay_probe) = probes(&settings)?;
        settings.save(&self.dir)?;
        let changed = self.state().settings.server_url != settings.server_url;
        if changed && self.state().session.is_some() {
            // Ended at the old server too, not just forgotten here.
            self.logout().await?;
        }
        {
            let mut state = self.state();
            state.settings = settings;
            state.api = Some(api);
            state.vault_probe = vault_probe;
            state.relay_probe = relay_probe;
            state.relay_sample = None;
            if changed {
                state.restored = false;
                state.login = None;
            }
        }
        self.status().await
    }

    /// `unlock_store`: open (or create) the passphrase-sealed store.
    pub async fn unlock_store(
        self: &Arc<Self>,
        passphrase: SecretString,
    ) -> Result<Value, AppError> {
        let store_passphrase = passphrase.clone();
        // Argon2id takes a third of a second: off the async threads.
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.store.unlock(&store_passphrase))
            .await
            .map_err(|_| AppError::new("store_failed", "unlocking stopped"))??;
        self.status().await
    }

    // --- sign-in --------------------------------------------------------------------------

    /// `login_start`: ask for a sign-in link and code for `email`.
    pub async fn login_start(&self, email: &str) -> Result<Value, AppError> {
        if self.store.locked() {
            return Err(crate::store::StoreError::Locked.into());
        }
        let email = email.trim();
        if email.is_empty() || email.len() > 254 || !email.contains('@') {
            return Err(AppError::invalid("enter your e-mail address"));
        }
        let answer = self
            .api()?
            .call(
                Method::POST,
                "/v1/login",
                None,
                Some(&json!({ "email": email, "client": "app" })),
            )
            .await?;
        let (Some(request_id), Some(poll_secret)) = (
            answer["request_id"].as_str(),
            answer["poll_secret"].as_str(),
        ) else {
            return Err(AppError::new(
                "bad_answer",
                "the sign-in answer is incomplete",
            ));
        };
        self.state().login = Some(PendingLogin {
            request_id: request_id.to_owned(),
            poll_secret: SecretString::from(poll_secret),
        });
        Ok(json!({
            "match_code": answer["match_code"],
            "expires_in_secs": answer["expires_in_secs"],
        }))
    }

    fn pending_login(&self) -> Result<(String, SecretString), AppError> {
        let state = self.state();
        let login = state
            .login
            .as_ref()
            .ok_or_else(|| AppError::new("login_not_started", "enter your e-mail address first"))?;
        Ok((login.request_id.clone(), login.poll_secret.clone()))
    }

    /// `login_code`: finish with the code from the mail.
    pub async fn login_code(self: &Arc<Self>, code: &str) -> Result<Value, AppError> {
        let code = code.trim();
        if code.is_empty() || code.len() > 32 {
            return Err(AppError::invalid(
                "enter the code from the mail (XXXX-XXXX)",
            ));
        }
        let (request_id, poll_secret) = self.pending_login()?;
        let answer = self
            .api()?
            .call(
                Method::POST,
                "/v1/login/code",
                None,
                Some(&json!({ "request_id": request_id, "poll_secret": poll_secret.expose_secret(), "code": code })),
            )
            .await?;
        self.complete_login(&answer).await
    }

    /// `login_poll`: has the link been confirmed in a browser?
    pub async fn login_poll(self: &Arc<Self>) -> Result<Value, AppError> {
        let (request_id, poll_secret) = self.pending_login()?;
        let answer = self
            .api()?
            .call(
                Method::POST,
                "/v1/login/poll",
                None,
                Some(&json!({ "request_id": request_id, "poll_secret": poll_secret.expose_secret() })),
            )
            .await?;
        if answer["status"] == "complete" {
            let session = self.complete_login(&answer).await?;
            return Ok(json!({ "status": "complete", "session": session }));
        }
        Ok(json!({ "status": "pending" }))
    }

    async fn complete_login(self: &Arc<Self>, answer: &Value) -> Result<Value, AppError> {
        let token = answer["session"]["token"]
            .as_str()
            .map(SecretString::from)
            .ok_or_else(|| AppError::new("bad_answer", "the sign-in answer carries no token"))?;
        self.state().login = None;
        // Kept first: a session this app could not keep must not run.
        let key = self.session_key()?;
        self.store.set(&key, &token)?;
        match self.begin_session(token).await {
            Ok(info) => Ok(info),
            Err(e) => {
                let _ = self.store.delete(&key);
                Err(e)
            }
        }
    }

    /// Check the token with `GET /v1/session`, keep it, start the event stream.
    async fn begin_session(self: &Arc<Self>, token: SecretString) -> Result<Value, AppError> {
        let info = self
            .api()?
            .call(Method::GET, "/v1/session", Some(&token), None)
            .await?;
        {
            let mut state = self.state();
            state.generation += 1;
            let generation = state.generation;
            state.session = Some(Session {
                token,
                info: info.clone(),
                generation,
            });
        }
        self.refresh_emails().await;
        self.start_stream();
        Ok(info)
    }

    /// `logout`: end the session at the server and forget the token here.
    pub async fn logout(&self) -> Result<(), AppError> {
        if self.state().session.is_some()
            && let Err(e) = self.call(Method::POST, "/v1/logout", None).await
        {
            tracing::info!(code = %e.code, "the server did not confirm the sign-out");
        }
        self.end_session(None, true);
        Ok(())
    }

    /// Every user, page by page (by address).
    async fn all_users(&self) -> Result<Vec<Value>, AppError> {
        const PAGE: usize = 500;
        let mut users: Vec<Value> = Vec::new();
        loop {
            let after = users.last().and_then(|u| u["email"].as_str()).unwrap_or("");
            let path = format!("/v1/users?limit={PAGE}&after={}", url_encode(after));
            let answer = self.call(Method::GET, &path, None).await?;
            let page = answer["users"].as_array().cloned().unwrap_or_default();
            let full = page.len() == PAGE;
            users.extend(page);
            if !full || users.len() >= 50 * PAGE {
                return Ok(users);
            }
        }
    }

    async fn refresh_emails(&self) {
        if let Ok(users) = self.all_users().await {
            let emails = users
                .iter()
                .filter_map(|u| {
                    Some((
                        u["id"].as_str()?.to_owned(),
                        u["email"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            self.state().emails = emails;
        }
    }

    // --- approvals --------------------------------------------------------------------------

    fn viewer(&self) -> Result<Viewer, AppError> {
        let state = self.state();
        let session = state.session.as_ref().ok_or_else(AppError::not_signed_in)?;
        Ok(Viewer {
            user_id: session.user_id(),
            actions: session.actions(),
            emails: state.emails.clone(),
            shares_sent: state.shares_sent.clone(),
        })
    }

    async fn approval_item(&self, approval_id: &str) -> Result<Value, AppError> {
        let detail = self
            .call(
                Method::GET,
                &format!("/v1/approvals/{}", id(approval_id)?),
                None,
            )
            .await?;
        Ok(approvals::item(&detail, &self.viewer()?))
    }

    /// `approvals_list`: the newest 100 requests with their decisions.
    pub async fn approvals_list(&self) -> Result<Vec<Value>, AppError> {
        self.refresh_emails().await;
        let list = self
            .call(Method::GET, "/v1/approvals?limit=100", None)
            .await?;
        let rows = list["approvals"].as_array().cloned().unwrap_or_default();
        let viewer = self.viewer()?;
        // Four at a time: within the server's per-principal rate limit however long the list.
        let mut out: Vec<Value> = futures_util::stream::iter(rows)
            .map(|row| {
                let viewer = &viewer;
                async move {
                    let id = row["id"].as_str().unwrap_or_default().to_owned();
                    match self.approval_item(&id).await {
                        Ok(item) => item,
                        Err(e) => {
                            // Shown without its decisions rather than not at all.
                            tracing::info!(code = %e.code, "an approval's details could not be read");
                            let mut item = approvals::item(&json!({ "approval": row, "decisions": [] }), viewer);
                            item["decisions_unavailable"] = json!(true);
                            item
                        }
                    }
                }
            })
            .buffered(4)
            .collect()
            .await;
        out.sort_by_key(|a| std::cmp::Reverse(a["created_at_ms"].as_i64().unwrap_or(0)));
        Ok(out)
    }

    /// `approval_decide`.
    pub async fn approval_decide(
        &self,
        approval: &str,
        decision: &str,
        reason: &str,
    ) -> Result<Value, AppError> {
        if !matches!(decision, "approve" | "deny") {
            return Err(AppError::invalid("decide approve or deny"));
        }
        let path = format!("/v1/approvals/{}/decisions", id(approval)?);
        self.call(
            Method::POST,
            &path,
            Some(&json!({ "decision": decision, "reason": reason_checked(reason)? })),
        )
        .await?;
        self.approval_item(approval).await
    }

    /// `approval_create`: ask for an operation (`params` merged into the request).
    pub async fn approval_create(
        &self,
        operation: &str,
        params: &Value,
        reason: &str,
    ) -> Result<Value, AppError> {
        const OPERATIONS: [&str; 5] = [
            "vault.unlock",
            "user.delete",
            "emergency.access",
            "group.approvals.disable",
            "audit.export",
        ];
        if !OPERATIONS.contains(&operation) {
            return Err(AppError::invalid(
                "ask for vault.unlock, user.delete, emergency.access, group.approvals.disable or audit.export (a token is asked for by its node)",
            ));
        }
        let mut body = match params {
            Value::Object(_) => params.clone(),
            Value::Null => json!({}),
            _ => return Err(AppError::invalid("params must be an object")),
        };
        body["operation"] = Value::from(operation);
        body["reason"] = Value::from(reason_checked(reason)?);
        let answer = self
            .call(Method::POST, "/v1/approvals", Some(&body))
            .await?;
        let created = answer["approval"]["id"]
            .as_str()
            .ok_or_else(|| AppError::new("bad_answer", "no approval in the answer"))?;
        self.approval_item(created).await
    }

    /// `approval_execute`: run an approved request of one's own.
    pub async fn approval_execute(&self, approval: &str) -> Result<Value, AppError> {
        let path = format!("/v1/approvals/{}/execute", id(approval)?);
        let result = self.call(Method::POST, &path, None).await?;
        Ok(json!({ "approval": self.approval_item(approval).await?, "result": result }))
    }

    // --- unlock shares -------------------------------------------------------------------

    /// `share_key_create`: a new share key, kept here; its public half registered.
    pub async fn share_key_create(self: &Arc<Self>) -> Result<Value, AppError> {
        let (_, _, user) = self.authed()?;
        let name = self.share_key_name(&user)?;
        // Replacing a key strands every share sealed to the old one (a rekey is needed): not
        // something this button does.
        if self.store.get(&name)?.is_some() {
            return Err(AppError::new(
                "share_key_exists",
                "this app already holds your share key; replacing it needs a rekey of every vault that sealed a share to it",
            ));
        }
        let (key, secret) = share::generate();
        // Kept before the server learns the public half: a registered key whose secret was
        // never stored would lose every share sealed to it. Promoted once registered.
        let staged = format!("{name}.pending");
        self.store.set(&staged, &secret)?;
        self.call(
            Method::PUT,
            "/v1/me/share-key",
            Some(&json!({ "public_key": hex::encode(key.public) })),
        )
        .await?;
        self.store.set(&name, &secret)?;
        self.store.delete(&staged)?;
        self.status().await
    }

    /// `share_submit`: this admin's share, sealed to the unlock ceremony of `approval`.
    pub async fn share_submit(&self, approval: &str) -> Result<Value, AppError> {
        let item = self.approval_item(approval).await?;
        let ceremony_id = item["ceremony"]
            .as_str()
            .ok_or_else(|| {
                AppError::new("not_found", "no unlock ceremony is open for this request")
            })?
            .to_owned();
        let (_, _, user) = self.authed()?;
        let stored = self
            .store
            .get(&self.share_key_name(&user)?)?
            .ok_or_else(|| {
                AppError::new(
                    "share_key_missing",
                    "this app holds no share key for you (Account)",
                )
            })?;
        let key = share::from_stored(&stored)?;
        let path = format!("/v1/ceremonies/{}", id(&ceremony_id)?);
        let ceremony = self.call(Method::GET, &path, None).await?;
        let sealed = share::reseal_for_ceremony(&key, &ceremony, &user)?;
        let answer = self
            .call(
                Method::POST,
                &format!("{path}/shares"),
                Some(&json!({ "sealed_share": sealed })),
            )
            .await?;
        self.state().shares_sent.insert(ceremony_id);
        Ok(answer)
    }

    // --- incident response ---------------------------------------------------------------

    /// `directory`: users, groups and nodes (without their public keys).
    pub async fn directory(&self) -> Result<Value, AppError> {
        let users = self.all_users().await?;
        let groups = self.call(Method::GET, "/v1/groups", None).await?;
        let mut nodes = self.call(Method::GET, "/v1/nodes", None).await?;
        if let Some(list) = nodes["nodes"].as_array_mut() {
            for node in list.iter_mut().filter_map(Value::as_object_mut) {
                node.remove("public_key");
            }
        }
        Ok(json!({ "users": users, "groups": groups["groups"], "nodes": nodes["nodes"] }))
    }

    /// `revoke_tokens`: every token of a user, node or group.
    pub async fn revoke_tokens(
        &self,
        scope: &str,
        subject: &str,
        reason: &str,
    ) -> Result<Value, AppError> {
        let collection = match scope {
            "user" => "users",
            "node" => "nodes",
            "group" => "groups",
            _ => return Err(AppError::invalid("scope is user, node or group")),
        };
        let path = format!("/v1/{collection}/{}/revoke-tokens", id(subject)?);
        self.post_reason(&path, reason).await
    }

    /// An incident-response action: POST `{reason}` (1 to 500 characters) to `path`.
    async fn post_reason(&self, path: &str, reason: &str) -> Result<Value, AppError> {
        let body = json!({ "reason": reason_checked(reason)? });
        self.call(Method::POST, path, Some(&body)).await
    }

    /// `disable_node`.
    pub async fn disable_node(&self, node: &str, reason: &str) -> Result<Value, AppError> {
        let path = format!("/v1/nodes/{}/disable", id(node)?);
        self.post_reason(&path, reason).await
    }

    /// `disable_user`.
    pub async fn disable_user(&self, user: &str, reason: &str) -> Result<Value, AppError> {
        let path = format!("/v1/users/{}/disable", id(user)?);
        self.post_reason(&path, reason).await
    }

    /// `lock_vault`.
    pub async fn lock_vault(&self, group: &str, reason: &str) -> Result<Value, AppError> {
        let path = format!("/v1/vaults/{}/lock", id(group)?);
        self.post_reason(&path, reason).await
    }

    // --- audit -----------------------------------------------------------------------------

    /// `audit_search`: one page of records matching `filters`.
    pub async fn audit_search(
        &self,
        filters: &Value,
        after_seq: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Value, AppError> {
        let mut query: Vec<(String, String)> = Vec::new();
        for key in [
            "actor", "action", "target", "outcome", "since_ms", "until_ms",
        ] {
            match &filters[key] {
                Value::String(s) if !s.trim().is_empty() => {
                    query.push((key.into(), s.trim().into()))
                }
                Value::Number(n) => query.push((key.into(), n.to_string())),
                _ => {}
            }
        }
        if let Some(after) = after_seq {
            query.push(("after_seq".into(), after.to_string()));
        }
        query.push((
            "limit".into(),
            limit.unwrap_or(200).clamp(1, 1000).to_string(),
        ));
        let encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        self.call(
            Method::GET,
            &format!("/v1/audit?{}", encoded.join("&")),
            None,
        )
        .await
    }

    /// `audit_verify`.
    pub async fn audit_verify(&self) -> Result<Value, AppError> {
        self.call(Method::GET, "/v1/audit/verify", None).await
    }

    /// `audit_export`: stream an approved export of one's own into the Downloads folder.
    pub async fn audit_export(&self, approval: &str) -> Result<Value, AppError> {
        let approval = id(approval)?;
        let (api, token, _) = self.authed()?;
        let path = format!("/v1/approvals/{}/export", approval);
        let file = self
            .downloads
            .join(format!("keymesh-audit-{approval}.ndjson"));
        let failed =
            |e: std::io::Error| AppError::new("export_failed", format!("{}: {e}", file.display()));
        // The file is ready before the export is claimed: the server runs an export once.
        let mut partial = crate::store::PrivateFile::create(&file).map_err(failed)?;
        let response = api.open_stream(Method::POST, &path, &token).await?;
        let mut records = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    records += chunk.iter().filter(|&&b| b == b'\n').count();
                    partial.write(&chunk).map_err(failed)?;
                }
                Err(e) => {
                    // The server counts the export as run: keep what arrived, marked partial.
                    let kept = partial.keep_partial().map_err(failed)?;
                    return Err(AppError::new(
                        "export_failed",
                        format!(
                            "the export broke off ({e}); the records that arrived are in {}",
                            kept.display()
                        ),
                    ));
                }
            }
        }
        partial.finish().map_err(failed)?;
        Ok(json!({ "path": file.display().to_string(), "records": records }))
    }

    // --- health ----------------------------------------------------------------------------

    /// `health`: every configured service's readiness and the relay's statistics.
    pub async fn health(&self) -> Result<Value, AppError> {
        let (management, vault, relay_api) = {
            let s = self.state();
            (s.api.clone(), s.vault_probe.clone(), s.relay_probe.clone())
        };
        let services = futures_util::future::join_all([
            readiness("management", management.as_ref()),
            readiness("vault", vault.as_ref()),
            readiness("relay", relay_api.as_ref()),
        ])
        .await;
        let (mut relay, mut relay_error) = (Value::Null, Value::Null);
        if let Some(api) = relay_api {
            match api.probe("/metrics").await {
                Ok((200, text)) => {
                    let previous = self.state().relay_sample.clone();
                    match health::relay_stats(&text, previous.as_ref(), Instant::now()) {
                        Some(sample) => {
                            relay = json!(sample.stats());
                            self.state().relay_sample = Some(sample);
                        }
                        None => relay_error = json!("the relay's metrics carry no relay series"),
                    }
                }
                Ok((status, _)) => {
                    relay_error = json!(format!("the relay's /metrics answered HTTP {status}"))
                }
                Err(e) => relay_error = json!(e.message),
            }
        }
        Ok(json!({
            "services": services,
            "relay": relay,
            "relay_error": relay_error,
            "sampled_at_ms": now_ms(),
        }))
    }

    // --- the event stream --------------------------------------------------------------------

    fn start_stream(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.stream_loop().await });
        if let Some(old) = self.state().stream.replace(task) {
            old.abort();
        }
    }

    async fn stream_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        let generation = self.state().session.as_ref().map(|s| s.generation);
        loop {
            let (connected, outcome) = self.stream_once().await;
            if connected {
                backoff = Duration::from_secs(1);
            }
            match outcome {
                Err(e) if e.session_ended() => {
                    self.sink.emit(StreamEvent::Stream {
                        state: "stopped",
                        detail: Some(e.message.clone()),
                    });
                    self.end_session(generation, false);
                    return;
                }
                Err(e) if e.code == "not_signed_in" => return,
                Err(e) => self.sink.emit(StreamEvent::Stream {
                    state: "reconnecting",
                    detail: Some(e.message),
                }),
                Ok(()) => {
                    self.sink.emit(StreamEvent::Stream {
                        state: "reconnecting",
                        detail: Some("the server closed the stream".into()),
                    });
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            // Whatever happened while away: the window re-reads the list.
            self.sink.emit(StreamEvent::Lagged);
        }
    }

    /// One connection: whether it was established, and how it ended.
    async fn stream_once(&self) -> (bool, Result<(), AppError>) {
        let (api, token, _) = match self.authed() {
            Ok(a) => a,
            Err(e) => return (false, Err(e)),
        };
        let response = match api
            .open_stream(Method::GET, "/v1/approvals/events", &token)
            .await
        {
            Ok(r) => r,
            Err(e) => return (false, Err(e)),
        };
        self.sink.emit(StreamEvent::Stream {
            state: "connected",
            detail: None,
        });
        (true, self.read_events(response).await)
    }

    async fn read_events(&self, response: reqwest::Response) -> Result<(), AppError> {
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let events = parser
                .push(&chunk?)
                .map_err(|e| AppError::new("bad_answer", e.to_string()))?;
            for event in events {
                self.dispatch(&event.event, &event.data).await;
            }
        }
        Ok(())
    }

    async fn dispatch(&self, name: &str, data: &str) {
        if name == "lagged" {
            self.sink.emit(StreamEvent::Lagged);
            return;
        }
        if !name.starts_with("approval.") {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let Some(approval) = data["approval"]["id"].as_str() else {
            return;
        };
        let item = match self.approval_item(approval).await {
            Ok(item) => item,
            Err(e) => {
                tracing::info!(code = %e.code, "an approval event could not be read back");
                return;
            }
        };
        if name == "approval.created" && item["can_decide"] == true {
            let who = item["requester_email"]
                .as_str()
                .or(item["requester"].as_str())
                .unwrap_or("someone");
            self.sink.emit(StreamEvent::Notify {
                title: format!(
                    "Approval requested: {}",
                    item["operation"].as_str().unwrap_or("")
                ),
                body: format!("{who}: {}", item["reason"].as_str().unwrap_or("")),
            });
        }
        self.sink.emit(StreamEvent::Approval {
            r#type: name.to_owned(),
            approval: item,
        });
    }
}

/// Clients for the optional vault and relay URLs.
fn probes(settings: &Settings) -> Result<(Option<Api>, Option<Api>), AppError> {
    Ok((
        settings.vault_url.as_deref().map(Api::new).transpose()?,
        settings.relay_url.as_deref().map(Api::new).transpose()?,
    ))
}

async fn readiness(name: &'static str, api: Option<&Api>) -> ServiceHealth {
    let mut h = ServiceHealth {
        name,
        url: api.map(|a| a.base().to_owned()),
        ready: None,
        status: None,
        latency_ms: None,
        checks: Value::Null,
        error: None,
    };
    let Some(api) = api else { return h };
    let started = Instant::now();
    let answer = api.probe("/health/ready").await;
    h.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match answer {
        Ok((status, raw)) => {
            let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
            h.status = Some(status);
            h.ready = Some(status == 200);
            h.checks = body["checks"].clone();
            if status != 200 {
                h.error = Some(
                    WireError::parse(raw.as_bytes())
                        .map(|e| e.message)
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "not ready".to_owned()),
                );
            }
        }
        Err(e) => {
            h.ready = Some(false);
            h.error = Some(e.message);
        }
    }
    h
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A query value, form-encoded.
fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl EventSink for Nowhere {
        fn emit(&self, _: StreamEvent) {}
    }

    /// An app configured for a server that is never reached, with a locked file store.
    fn offline_app(dir: &Path) -> Arc<Admin> {
        Settings::from_form("https://keymesh.invalid", None, None)
            .unwrap()
            .save(dir)
            .unwrap();
        let store = FileStore::with_cost(dir.join("secrets.json"), (64, 1, 1));
        Admin::with_store(dir, dir, Box::new(store), Arc::new(Nowhere)).unwrap()
    }

    #[tokio::test]
    async fn refused_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let app = offline_app(dir.path());
        // No sign-in while the token would have nowhere to go.
        assert_eq!(
            app.login_start("a@example.com").await.unwrap_err().code,
            "store_locked"
        );
        // A token is asked for by its node, never from here; unknown operations neither.
        for op in ["token.mint", "anything", ""] {
            let e = app
                .approval_create(op, &json!({}), "because")
                .await
                .unwrap_err();
            assert_eq!(e.code, "invalid_input", "{op}");
        }
        // A permitted one gets as far as needing a session.
        let e = app
            .approval_create("vault.unlock", &json!({ "group": "g" }), "because")
            .await;
        assert_eq!(e.unwrap_err().code, "not_signed_in");
        let e = app
            .approval_create("vault.unlock", &json!(["g"]), "because")
            .await;
        assert_eq!(e.unwrap_err().code, "invalid_input");
    }

    #[test]
    fn ids_that_could_leave_their_path_segment_are_refused() {
        for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2F", &"x".repeat(65)] {
            assert_eq!(id(bad).unwrap_err().code, "invalid_input", "{bad}");
        }
        assert!(id("user-1.x_Y").is_ok());
        assert_eq!(url_encode("user:abc def&x=1"), "user%3Aabc+def%26x%3D1");
        assert!(reason_checked("  ").is_err());
        assert!(reason_checked(&"r".repeat(501)).is_err());
        assert_eq!(reason_checked(" incident 7 ").unwrap(), "incident 7");
    }
}
