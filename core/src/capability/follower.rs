//! A service's copy of the vault's revocation state: a snapshot, then the ordered feed
//! (long-polled), plus the token root keys. Relays and management follow the vault this way.
//! Fail closed: when the copy is older than its bound (e.g. `RELAY_FEED_MAX_AGE_SECS`), every
//! token is refused as `revoked`.

use std::{
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use super::{
    revocation::{FeedEntry, Revocations},
    token::{ListedKey, RevocationView, Scope, TokenError, VerifiedToken, Verifier, VerifyKeys},
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::ConfigError,
    error::{ApiError, ErrorCode},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long one long poll of the feed waits at the vault when nothing is new.
pub const LONG_POLL_SECS: u64 = 5;
/// Refuse a feed age bound the follower cannot keep: a quiet feed is long-polled for
/// [`LONG_POLL_SECS`], and the copy is as old as the poll's start when the poll returns, so a
/// bound of that or less would go stale on every quiet poll and refuse every token while the
/// vault is healthy.
pub fn check_max_age(setting: &'static str, max_age: Duration) -> Result<(), ConfigError> {
    if max_age.as_secs() <= LONG_POLL_SECS {
        return Err(ConfigError::Invalid {
            setting,
            reason: format!(
                "must be more than {LONG_POLL_SECS} s (the revocation feed's long poll): with a quiet \
                 feed the copy would go stale between polls and every token would be refused"
            ),
        });
    }
    Ok(())
}

/// How often the root keys are read again regardless of the feed (a rotation's feed entry makes
/// the follower read them at once; this bounds how late a follower that missed it learns).
const KEYS_EVERY: Duration = Duration::from_secs(10);

/// The followed state. `synced_ms` is when the vault last confirmed the copy current.
pub struct Followed {
    revocations: RwLock<Arc<Revocations>>,
    verifier: RwLock<Option<Arc<Verifier>>>,
    synced_ms: AtomicI64,
    max_age_ms: i64,
}

impl std::fmt::Debug for Followed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed")
            .field("head", &self.head())
            .field("synced_ms", &self.synced_ms.load(Ordering::Relaxed))
            .finish()
    }
}

impl Followed {
    /// An empty copy: stale (refusing everything) until the first sync.
    pub fn new(max_age: Duration) -> Self {
        Self {
            revocations: RwLock::new(Arc::new(Revocations::from_entries(&[]))),
            verifier: RwLock::new(None),
            synced_ms: AtomicI64::new(i64::MIN),
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The token checker, once the root keys are known.
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        self.verifier
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The token checker, or `unavailable` until the root keys were read from the vault.
    pub fn require_verifier(&self) -> Result<Arc<Verifier>, ApiError> {
        self.verifier().ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::Unavailable,
                "the token root keys have not been read from the vault yet",
            )
        })
    }

    /// Replace the root keys (keeps nothing of the old verifier's cache); the same keys read
    /// again keep the verifier, cache and all.
    pub fn set_keys(&self, keys: VerifyKeys) {
        let mut verifier = self
            .verifier
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if verifier.as_ref().is_some_and(|v| v.keys() == &keys) {
            return;
        }
        *verifier = Some(Arc::new(Verifier::new(keys)));
    }

    fn state(&self) -> Arc<Revocations> {
        Arc::clone(
            &self
                .revocations
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Feed position of the copy.
    pub fn head(&self) -> i64 {
        self.state().head()
    }

    /// Milliseconds since the vault last confirmed the copy; `None` before the first sync.
    pub fn age_ms(&self) -> Option<i64> {
        let synced = self.synced_ms.load(Ordering::Acquire);
        (synced != i64::MIN).then(|| now_ms().saturating_sub(synced))
    }

    /// Export `keymesh_revocation_feed_age_seconds` (-1 before the first sync) and
    /// `keymesh_revocation_feed_max_age_seconds` (the bound past which every token is refused).
    pub fn register_metrics(self: &Arc<Self>, metrics: &crate::metrics::Metrics) {
        let followed = Arc::clone(self);
        metrics.register_fn(
            "keymesh_revocation_feed_age_seconds",
            "Age of this service's copy of the vault's revocation feed (-1 before the first sync)",
            move || followed.age_ms().map_or(-1.0, |ms| ms as f64 / 1000.0),
        );
        let max_age = self.max_age_ms as f64 / 1000.0;
        metrics.register_fn(
            "keymesh_revocation_feed_max_age_seconds",
            "Past this age of the revocation feed copy every token is refused (fail closed)",
            move || max_age,
        );
    }

    /// Whether the copy is recent enough to decide with.
    pub fn fresh(&self) -> bool {
        self.age_ms().is_some_and(|age| age <= self.max_age_ms)
    }

    /// Mark the copy current as of `at_ms` (when the request that confirmed it was sent).
    pub fn confirm(&self, at_ms: i64) {
        self.synced_ms.fetch_max(at_ms, Ordering::AcqRel);
    }

    /// Replace the whole state (a snapshot).
    pub fn load_snapshot(&self, snapshot: Snapshot) {
        let state = Revocations::from_snapshot(
            snapshot.head,
            snapshot.revoked,
            snapshot
                .epochs
                .into_iter()
                .map(|e| (e.scope, e.subject, e.epoch)),
            snapshot.revoked_root_keys,
        );
        *self
            .revocations
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(state);
    }

    /// Apply feed entries in order.
    pub fn apply(&self, entries: &[FeedEntry]) {
        let state = self.state();
        for e in entries {
            state.apply(e);
        }
    }
}

impl RevocationView for Followed {
    fn check(&self, token: &VerifiedToken) -> Result<(), TokenError> {
        if !self.fresh() {
            return Err(TokenError::Revoked);
        }
        self.state().check(token)
    }
}

/// `GET /v1/revocations/snapshot`: the whole revocation state at `head`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// Feed position.
    pub head: i64,
    /// Revoked grant and block ids.
    pub revoked: Vec<String>,
    /// Current epochs.
    pub epochs: Vec<SnapshotEpoch>,
    /// Revoked root keys (ids): every token they signed is dead.
    #[serde(default)]
    pub revoked_root_keys: Vec<u32>,
}

/// One epoch of a snapshot.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotEpoch {
    /// Node, user or group.
    pub scope: Scope,
    /// Its id.
    pub subject: String,
    /// Current epoch.
    pub epoch: i64,
}

/// `GET /v1/revocations`: the entries after a position, in order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedPage {
    /// The feed's last sequence number.
    pub head: i64,
    /// Entries after the asked position, at most 1000, in order.
    pub entries: Vec<FeedEntry>,
}

#[derive(Debug, Deserialize)]
struct KeyList {
    keys: Vec<KeyItem>,
}

#[derive(Debug, Deserialize)]
struct KeyItem {
    public_key: String,
    /// A retired key verifies until then (unix ms); absent for an announced or current key.
    #[serde(default)]
    verify_until_ms: Option<u64>,
    /// `announced`, `current`, `retired` or `revoked`.
    #[serde(default)]
    state: String,
}

/// Follows one vault.
#[derive(Debug, Clone)]
pub struct Follower {
    http: reqwest::Client,
    base: String,
    credential: Arc<SecretString>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Follower {
    /// A follower of the vault at `base` presenting `credential`, trusting `cas` for HTTPS
    /// (the platform's roots when `None`).
    pub fn new(
        base: &str,
        credential: SecretString,
        cas: Option<&crate::tls::TrustedCas>,
    ) -> Result<Self, BoxError> {
        let http = crate::tls::client_builder(cas)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(LONG_POLL_SECS + 10))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credential: Arc::new(credential),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, BoxError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.credential.expose_secret())
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the vault answered {status} to {path}").into());
        }
        Ok(response.json().await?)
    }

    /// Read the root keys.
    pub async fn keys(&self) -> Result<VerifyKeys, BoxError> {
        let list: KeyList = self.get("/v1/tokens/keys").await?;
        let raw = list
            .keys
            .iter()
            .map(|k| {
                hex::decode(&k.public_key)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .map(|public| ListedKey {
                        public,
                        until_ms: k.verify_until_ms,
                        revoked: k.state == "revoked",
                    })
                    .ok_or("a root key is not 32 bytes of hex")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VerifyKeys::listed(&raw)?)
    }

    /// Keep `followed` current until `stop`: snapshot, then long polls. `on_change` runs after
    /// every batch of entries is applied (the hub closes revoked sockets).
    pub async fn run(
        self,
        followed: Arc<Followed>,
        stop: CancellationToken,
        on_change: impl Fn() + Send + 'static,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut keys_read: Option<tokio::time::Instant> = None;
        let mut synced = false;
        while !stop.is_cancelled() {
            let step = async {
                if keys_read.is_none_or(|t| t.elapsed() >= KEYS_EVERY) {
                    followed.set_keys(self.keys().await?);
                    keys_read = Some(tokio::time::Instant::now());
                }
                let sent_ms = now_ms();
                if !synced {
                    let snapshot: Snapshot = self.get("/v1/revocations/snapshot").await?;
                    followed.load_snapshot(snapshot);
                    synced = true;
                    followed.confirm(sent_ms);
                    on_change();
                    return Ok::<_, BoxError>(());
                }
                let after = followed.head();
                let page: FeedPage = self
                    .get(&format!(
                        "/v1/revocations?after={after}&wait_secs={LONG_POLL_SECS}"
                    ))
                    .await?;
                if page.entries.first().is_some_and(|e| e.seq != after + 1) {
                    // A gap (the vault's feed restarted or was restored): start over, keys
                    // included (a root key change may be among what was missed).
                    synced = false;
                    keys_read = None;
                    return Err("the revocation feed has a gap; reloading the snapshot".into());
                }
                if !page.entries.is_empty() {
                    followed.apply(&page.entries);
                    if page.entries.iter().any(FeedEntry::changes_root_keys) {
                        // Announced keys verify before they sign; a revoked key's replacement
                        // signs at once: read them now, before confirming the copy current
                        // (a failure retries, keys first).
                        keys_read = None;
                        followed.set_keys(self.keys().await?);
                        keys_read = Some(tokio::time::Instant::now());
                    }
                    on_change();
                }
                // The vault answered with everything up to its head as of `sent_ms` or later.
                if followed.head() >= page.head {
                    followed.confirm(sent_ms);
                }
                Ok(())
            };
            let result = tokio::select! {
                r = step => r,
                () = stop.cancelled() => return,
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, vault = %self.base, age_ms = ?followed.age_ms(), "revocation feed: retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::Followed;
    use crate::capability::token::{KeyRing, ListedKey, VerifyKeys, random_key};

    /// A vault whose feed jumps (restarted or restored) while a root key changed: the follower
    /// reloads the snapshot **and the keys** at once, not at the next periodic read
    /// (`KEYS_EVERY`, 10 s) — the gap may have swallowed the `root_key_added` entry.
    #[tokio::test]
    async fn a_gap_in_the_feed_reloads_the_snapshot_and_the_keys_at_once() {
        use std::sync::{
            Mutex,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        };

        use axum::{Json, Router, extract::State, routing::get};
        use serde_json::{Value, json};

        #[derive(Default)]
        struct Fake {
            key: Mutex<[u8; 32]>,
            key_reads: AtomicUsize,
            snapshots: AtomicUsize,
            jumped: AtomicBool,
        }
        let public = |seed: [u8; 32]| {
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes()
        };
        let fake = Arc::new(Fake {
            key: Mutex::new(public([1; 32])),
            ..Fake::default()
        });
        let head = |f: &Fake| {
            if f.jumped.load(Ordering::SeqCst) {
                5
            } else {
                1
            }
        };
        let app = Router::new()
            .route(
                "/v1/tokens/keys",
                get(|State(f): State<Arc<Fake>>| async move {
                    f.key_reads.fetch_add(1, Ordering::SeqCst);
                    let key = *f.key.lock().expect("key");
                    Json(
                        json!({ "keys": [{ "public_key": hex::encode(key), "state": "current" }] }),
                    )
                }),
            )
            .route(
                "/v1/revocations/snapshot",
                get(move |State(f): State<Arc<Fake>>| async move {
                    f.snapshots.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "head": head(&f), "revoked": [], "epochs": [] }))
                }),
            )
            .route(
                "/v1/revocations",
                get(move |State(f): State<Arc<Fake>>| async move {
                    if !f.jumped.load(Ordering::SeqCst) {
                        // Long enough for the test to see the first keys in use.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        f.jumped.store(true, Ordering::SeqCst);
                        // Restored elsewhere with a new root key: the next entry is 5, not 2.
                        *f.key.lock().expect("key") = public([2; 32]);
                        let entry = json!({ "seq": 5, "kind": "grant", "scope": null,
                            "subject": "g1", "epoch": null, "reason": "r", "at_ms": 1 });
                        return Json(json!({ "head": 5, "entries": [entry] }));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Json::<Value>(json!({ "head": head(&f), "entries": [] }))
                }),
            )
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let followed = Arc::new(Followed::new(Duration::from_secs(60)));
        let stop = tokio_util::sync::CancellationToken::new();
        let follower = super::Follower::new(&base, "feed".to_owned().into(), None).expect("new");
        tokio::spawn(follower.run(Arc::clone(&followed), stop.clone(), || {}));
        let started = std::time::Instant::now();
        let mut first = None;
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no reload within 5 s: snapshots {}, key reads {}",
                fake.snapshots.load(Ordering::SeqCst),
                fake.key_reads.load(Ordering::SeqCst)
            );
            if first.is_none() {
                first = followed.verifier();
            }
            if fake.snapshots.load(Ordering::SeqCst) >= 2 && followed.head() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        assert!(fake.key_reads.load(Ordering::SeqCst) >= 2);
        let now = followed.verifier().expect("verifier");
        assert!(
            !Arc::ptr_eq(&first.expect("first verifier"), &now),
            "the keys after the gap replaced the verifier"
        );
    }

    #[test]
    fn reading_the_same_keys_again_keeps_the_verifier_and_its_cache() {
        let followed = Followed::new(Duration::from_secs(60));
        let seed = random_key();
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let ring = KeyRing::new(seed.as_ref(), &[]).expect("ring");
        followed.set_keys(ring.public_keys());
        let first = followed.verifier().expect("verifier");
        followed.set_keys(ring.public_keys());
        assert!(Arc::ptr_eq(&first, &followed.verifier().expect("verifier")));
        // Different keys (here: the same key, now revoked) replace it.
        let revoked = ListedKey {
            public,
            until_ms: None,
            revoked: true,
        };
        followed.set_keys(VerifyKeys::listed(&[revoked]).expect("keys"));
        assert!(!Arc::ptr_eq(
            &first,
            &followed.verifier().expect("verifier")
        ));
    }
}
