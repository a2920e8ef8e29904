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

mod audit;
mod inbox;
mod incident;
mod service_health;
mod session;
mod shares;
mod stream;

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

/// A typed answer from a JSON one: the server's shape, or `bad_answer`.
fn typed<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T, AppError> {
    serde_json::from_value(answer).map_err(|e| {
        AppError::new(
            "bad_answer",
            format!("an answer not in the documented shape: {e}"),
        )
    })
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
