//! The running vault: shared state, the root key ring, and helpers handlers use.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use keymesh_core::{
    ApiError, ServiceContext,
    audit::{AuditEvent, AuditLog, Outcome},
    capability::{
        Op,
        pop::ReplayCache,
        token::{KeyRing, ListedKey, Request, VerifiedToken, Verifier, key_id, random_key},
    },
    config::RateLimitConfig,
    crypto::{self, DataKey},
    http::rate_limit::KeyedLimit,
    storage::StorageError,
};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::{
    ceremony::Ceremonies,
    config::VaultConfig,
    metrics::VaultMetrics,
    revocation::{FeedEntry, Revocations},
    sessions::Sessions,
    store::{self, KeyChange, Store, TokenKeyRow, now_ms},
};

/// How long a sensitive operation waits for its audit record before failing.
const AUDIT_BOUND: Duration = Duration::from_secs(2);
/// How often a vault reads revocations other replicas appended.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// Argon2id runs at once (each holds 64 MiB for ~150 ms).
const UNLOCK_CONCURRENCY: usize = 2;

/// Everything handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct VaultState(pub Arc<Inner>);

/// The shared parts.
#[derive(Debug)]
pub struct Inner {
    /// Common service state (db, metrics, rate limits, shutdown).
    pub ctx: ServiceContext,
    /// Vault settings.
    pub config: VaultConfig,
    /// Tables.
    pub store: Store,
    /// Signing keys (replaced on rotation).
    pub keys: RwLock<Arc<KeyRing>>,
    /// Token checker (replaced on rotation).
    pub verifier: RwLock<Arc<Verifier>>,
    /// Revoked grants, blocks and epochs.
    pub revocations: Revocations,
    /// Unlocked vaults.
    pub sessions: Sessions,
    /// Open key ceremonies.
    pub ceremonies: Ceremonies,
    /// Audit chain.
    pub audit: AuditLog,
    /// Operation counters (from audited events).
    pub metrics: VaultMetrics,
    /// Proof-of-possession nonces.
    pub replay: ReplayCache,
    /// Unlock attempts per group.
    pub unlock_by_group: KeyedLimit<String>,
    /// Unlock attempts per client.
    pub unlock_by_ip: KeyedLimit<IpAddr>,
    /// Bounds concurrent Argon2id.
    pub unlock_slots: Semaphore,
    /// Serialises revocation append + apply so memory sees the feed in order.
    pub revocation_order: tokio::sync::Mutex<()>,
    /// A root key change was committed but reading the keys failed: the feed follower retries.
    pub keys_stale: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for VaultState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The key that seals root signing keys: HKDF-SHA256 of `VAULT_MASTER_KEY`.
fn master_seal_key(config: &VaultConfig) -> DataKey {
    let hkdf = hkdf::Hkdf::<Sha256>::new(None, config.master_key.expose_secret().as_bytes());
    let mut okm = [0u8; 32];
    hkdf.expand(b"keymesh-vault-root-key-seal-v1", &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    DataKey::from_bytes(okm)
}

const ROOT_KEY_AAD: &[u8] = b"keymesh-vault-root-key-v1";

impl VaultState {
    /// Open the vault over an opened service context.
    pub async fn open(ctx: ServiceContext, config: VaultConfig) -> Result<Self, StorageError> {
        let store = Store::new(ctx.db.clone());
        if store.token_keys().await?.is_empty() {
            store.first_token_key(&new_root_key(&config, None)?).await?;
        }
        let ring = load_ring(&store, &config).await?;
        let entries = store.feed_after(0, i64::MAX).await?;
        let per_minute = RateLimitConfig {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::new(config.unlock_attempts_per_minute).unwrap_or(NonZeroU32::MIN),
        };
        let sessions = Sessions::new(config.session, config.session_max);
        let audit = AuditLog::spawn(ctx.db.clone(), AUDIT_BOUND);
        audit.register_metrics(&ctx.metrics);
        let metrics = VaultMetrics::register(&ctx.metrics);
        let state = Self(Arc::new(Inner {
            verifier: RwLock::new(Arc::new(Verifier::new(ring.public_keys()))),
            keys: RwLock::new(Arc::new(ring)),
            revocations: Revocations::from_entries(&entries),
            sessions,
            ceremonies: Ceremonies::default(),
            audit,
            metrics,
            replay: ctx.replay_cache(),
            unlock_by_group: KeyedLimit::new_per_minute(per_minute),
            unlock_by_ip: KeyedLimit::new_per_minute(per_minute),
            unlock_slots: Semaphore::new(UNLOCK_CONCURRENCY),
            revocation_order: tokio::sync::Mutex::new(()),
            keys_stale: std::sync::atomic::AtomicBool::new(false),
            store,
            config,
            ctx,
        }));
        state.register_session_gauges();
        state.spawn_janitor();
        state.spawn_feed_follower();
        Ok(state)
    }

    /// `vault_unlocked_vaults`, `vault_unlocked_longest_seconds` and
    /// `vault_session_max_seconds`, read at each scrape.
    fn register_session_gauges(&self) {
        let metrics = &self.ctx.metrics;
        let weak = Arc::downgrade(&self.0);
        metrics.register_fn(
            "vault_unlocked_vaults",
            "Vaults unlocked now (their data key is in memory)",
            move || {
                weak.upgrade()
                    .map_or(0.0, |v| v.sessions.unlocked().0 as f64)
            },
        );
        let weak = Arc::downgrade(&self.0);
        metrics.register_fn(
            "vault_unlocked_longest_seconds",
            "How long the longest-unlocked vault has been unlocked (0 when none is)",
            move || {
                weak.upgrade()
                    .map_or(0.0, |v| v.sessions.unlocked().1.as_secs_f64())
            },
        );
        let max = self.config.session_max.as_secs_f64();
        metrics.register_fn(
            "vault_session_max_seconds",
            "VAULT_SESSION_MAX_SECS: no unlock lasts longer",
            move || max,
        );
    }

    fn spawn_janitor(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(1);
            let clock = state.ctx.metrics.task("session_sweep", every);
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = state.ctx.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        clock.succeeded();
                        for group in state.sessions.sweep() {
                            state.audit_quiet(AuditEvent::new("service:vault", "vault.lock", format!("vault:{group}"), Outcome::Success)
                                .with_details(serde_json::json!({ "reason": "expired" }))).await;
                        }
                        state.ceremonies.sweep();
                    }
                }
            }
            // Shutdown: forget every data key.
            state.sessions.lock_all();
        });
    }

    /// Follow the persisted revocation feed, so revocations made through another vault replica
    /// sharing this database are enforced here within [`FOLLOW_INTERVAL`].
    fn spawn_feed_follower(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            let clock = state.ctx.metrics.task("revocation_follow", FOLLOW_INTERVAL);
            let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
            // Another replica announced or revoked a root key: read the keys, every tick until
            // that works (the entries themselves are applied once).
            let mut keys_changed = false;
            loop {
                tokio::select! {
                    () = state.ctx.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let _order = state.revocation_order.lock().await;
                        match state.store.feed_after(state.revocations.head(), 1000).await {
                            Ok(entries) => {
                                keys_changed |= entries.iter().any(FeedEntry::changes_root_keys)
                                    || state.keys_stale.swap(false, std::sync::atomic::Ordering::Relaxed);
                                // Keys first, as where the change was made: a revoked key's
                                // replacement signs here before its tokens are refused here.
                                if keys_changed {
                                    match state.reload_keys().await {
                                        Ok(()) => keys_changed = false,
                                        Err(err) => tracing::error!(error = %keymesh_core::error::error_chain(&err), "reloading the root keys failed"),
                                    }
                                }
                                entries.iter().for_each(|e| state.revocations.apply(e));
                                if !keys_changed {
                                    clock.succeeded();
                                }
                            }
                            Err(err) => tracing::warn!(error = %keymesh_core::error::error_chain(&err), "following the revocation feed failed"),
                        }
                    }
                }
            }
        });
    }

    /// The current signing ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The current verifier.
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::clone(
            &self
                .verifier
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Read the root keys again (after a rotation or revocation here or at another replica).
    pub async fn reload_keys(&self) -> Result<(), StorageError> {
        let ring = load_ring(&self.store, &self.config).await?;
        *self
            .verifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Verifier::new(ring.public_keys()));
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ring);
        Ok(())
    }

    /// Announce a new root key: it verifies everywhere at once (the feed entry makes every
    /// follower read the keys) and signs from `VAULT_ROOT_KEY_ANNOUNCE_SECS` later, when the
    /// current key retires (it keeps verifying for `VAULT_TOKEN_MAX_TTL_SECS` after that).
    pub async fn rotate_root_key(&self) -> Result<TokenKeyRow, ApiError> {
        let announce = i64::try_from(self.config.root_key_announce.as_millis()).unwrap_or(i64::MAX);
        let row = new_root_key(&self.config, Some(announce)).map_err(ApiError::internal)?;
        self.change_keys(KeyChange::Add(&row), "announced").await?;
        Ok(row)
    }

    /// Revoke root key `kid` now: every token it signed is refused wherever the feed reaches
    /// (within a second). When no key would sign after it (it was the signing key), a new key
    /// signs at once (tokens it signs may be refused until followers have read it, well under a
    /// second when they are in sync). `Ok(None)`: no such unrevoked key; else the replacement,
    /// if one was added, and the feed entry.
    pub async fn revoke_root_key(
        &self,
        kid: u32,
        reason: &str,
    ) -> Result<Option<(Option<TokenKeyRow>, FeedEntry)>, ApiError> {
        // Whether it is needed is decided inside the transaction, from the rows as they are.
        let candidate = new_root_key(&self.config, Some(0)).map_err(ApiError::internal)?;
        let change = KeyChange::Revoke {
            kid: i64::from(kid),
            replacement: &candidate,
        };
        Ok(self
            .change_keys(change, reason)
            .await?
            .map(|(entry, replaced)| (replaced.then_some(candidate), entry)))
    }

    /// Apply a key change with its feed entry; `None` when it found nothing to change, else the
    /// entry and whether a replacement key was added.
    async fn change_keys(
        &self,
        change: KeyChange<'_>,
        reason: &str,
    ) -> Result<Option<(FeedEntry, bool)>, ApiError> {
        let _order = self.revocation_order.lock().await;
        let Some((entry, replaced)) = self
            .store
            .change_token_keys(change, reason)
            .await
            .map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        // Keys first: a revoked key's replacement should sign before its tokens are refused
        // here. The change is committed either way: a failed reload is retried by the feed
        // follower, and the revocation itself still applies now.
        if let Err(err) = self.reload_keys().await {
            tracing::error!(error = %keymesh_core::error::error_chain(&err), "reloading the root keys failed; retrying");
            self.keys_stale
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.revocations.apply(&entry);
        Ok(Some((entry, replaced)))
    }

    /// The root keys as listed: each one that still verifies, with its state.
    pub async fn root_keys(&self) -> Result<Vec<KeyStatus>, StorageError> {
        let rows = self.store.token_keys().await?;
        Ok(schedule(&rows, now_ms(), &self.config))
    }

    /// Check a verified token against a request: expiry, revocation, rights.
    pub fn authorize(&self, token: &VerifiedToken, op: Op, resource: &str) -> Result<(), ApiError> {
        self.verifier()
            .authorize_verified(
                token,
                &Request { op, resource },
                &self.revocations,
                SystemTime::now(),
            )
            .map_err(ApiError::from)
    }

    /// Record an event, failing the operation (closed) if it cannot be recorded in time.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), ApiError> {
        // Counted once the record is durable, i.e. when the operation goes ahead.
        let counter = self.metrics.counter_for(&event);
        self.audit.record_or_refuse(event).await?;
        if let Some(counter) = counter {
            counter.inc();
        }
        Ok(())
    }

    /// Record an event whose operation already happened (e.g. a denial); log if it fails.
    pub async fn audit_quiet(&self, event: AuditEvent) {
        if let Some(counter) = self.metrics.counter_for(&event) {
            counter.inc();
        }
        self.audit.record_quiet(event).await;
    }
}

/// A new root key row; `activate_in_ms` (from now) when it is announced rather than first.
fn new_root_key(
    config: &VaultConfig,
    activate_in_ms: Option<i64>,
) -> Result<TokenKeyRow, StorageError> {
    let seed = random_key();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let sealed_private = crypto::seal(&master_seal_key(config), seed.as_ref(), ROOT_KEY_AAD)
        .map_err(|_| StorageError::Failed("sealing the root key failed".into()))?;
    let created_at_ms = now_ms();
    Ok(TokenKeyRow {
        kid: i64::from(key_id(&public)),
        public_key: public.to_vec(),
        sealed_private,
        created_at_ms,
        retired_at_ms: None,
        activates_at_ms: activate_in_ms.map(|ms| created_at_ms.saturating_add(ms)),
        revoked_at_ms: None,
    })
}

/// Where a root key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Verifies; signs from `activates_at_ms`.
    Announced,
    /// Signs every new token.
    Current,
    /// No longer signs; verifies until `verify_until_ms`.
    Retired,
    /// Revoked: every token it signed is refused as `revoked`.
    Revoked,
}

/// One root key as listed: one that still verifies, or a revoked one.
#[derive(Clone, Debug)]
pub struct KeyStatus {
    /// Its row.
    pub row: TokenKeyRow,
    /// Its state now.
    pub state: KeyState,
    /// Stops (or stopped) signing then (unix ms): for a retired key, and for the current key
    /// once its successor is announced.
    pub retired_at_ms: Option<i64>,
    /// Verifies until then (unix ms): `retired_at_ms` plus `VAULT_TOKEN_MAX_TTL_SECS`.
    pub verify_until_ms: Option<i64>,
}

/// Every key that verifies at `now`, then every revoked key, each group newest first. The key
/// that signs is [`store::signer`]; each key retires when the next key that took over after it
/// activated ([`store::retirement`]) and verifies `VAULT_TOKEN_MAX_TTL_SECS` longer.
pub fn schedule(rows: &[TokenKeyRow], now: i64, config: &VaultConfig) -> Vec<KeyStatus> {
    let max_ttl = i64::try_from(config.token_max_ttl.as_millis()).unwrap_or(i64::MAX);
    let current = store::signer(rows, now).map(|r| r.kid);
    let mut live: Vec<KeyStatus> = rows
        .iter()
        .filter(|r| r.revoked_at_ms.is_none())
        .filter_map(|r| {
            let retired_at_ms = store::retirement(rows, r);
            let state = if r.from_ms() > now {
                KeyState::Announced
            } else if current == Some(r.kid) {
                KeyState::Current
            } else {
                KeyState::Retired
            };
            let retired_at_ms = match state {
                KeyState::Announced => None,
                // Active but not signing: it was superseded (always so, short of a clock
                // change); without a recorded time it retires now.
                KeyState::Retired => Some(retired_at_ms.unwrap_or(now)),
                _ => retired_at_ms,
            };
            let verify_until_ms = retired_at_ms.map(|t| t.saturating_add(max_ttl));
            if verify_until_ms.is_some_and(|until| until <= now) {
                return None;
            }
            Some(KeyStatus {
                row: r.clone(),
                state,
                retired_at_ms,
                verify_until_ms,
            })
        })
        .collect();
    live.sort_by_key(|k| std::cmp::Reverse((k.row.from_ms(), k.row.created_at_ms)));
    let mut revoked: Vec<&TokenKeyRow> =
        rows.iter().filter(|r| r.revoked_at_ms.is_some()).collect();
    revoked.sort_by_key(|r| std::cmp::Reverse(r.revoked_at_ms));
    live.extend(revoked.into_iter().map(|r| KeyStatus {
        row: r.clone(),
        state: KeyState::Revoked,
        retired_at_ms: None,
        verify_until_ms: None,
    }));
    live
}

/// Build the ring from the keys that still verify: the current key and every announced one
/// sign (each from its activation), retired ones verify until their window ends.
async fn load_ring(store: &Store, config: &VaultConfig) -> Result<KeyRing, StorageError> {
    let rows = store.token_keys().await?;
    let keys = schedule(&rows, now_ms(), config);
    let seal_key = master_seal_key(config);
    let mut seeds = Vec::new();
    let mut older = Vec::new();
    for k in &keys {
        let public: [u8; 32] =
            k.row.public_key.as_slice().try_into().map_err(|_| {
                StorageError::Failed("a stored root public key is not 32 bytes".into())
            })?;
        let until_ms = k.verify_until_ms.and_then(|t| u64::try_from(t).ok());
        if matches!(k.state, KeyState::Retired | KeyState::Revoked) {
            older.push(ListedKey {
                public,
                until_ms,
                revoked: k.state == KeyState::Revoked,
            });
            continue;
        }
        let seed = crypto::open(&seal_key, &k.row.sealed_private, ROOT_KEY_AAD).map_err(|_| {
            tracing::error!("VAULT_MASTER_KEY does not open the stored root signing key");
            StorageError::Failed("root key cannot be unsealed: wrong VAULT_MASTER_KEY".into())
        })?;
        seeds.push((seed, u64::try_from(k.row.from_ms()).unwrap_or(0), until_ms));
    }
    if seeds.is_empty() {
        return Err(StorageError::Failed(
            "no current root signing key is stored".into(),
        ));
    }
    let signers: Vec<(&[u8], u64, Option<u64>)> = seeds
        .iter()
        .map(|(s, from, until)| (s.as_ref(), *from, *until))
        .collect();
    KeyRing::scheduled(&signers, &older)
        .map_err(|_| StorageError::Failed("root key is corrupt".into()))
}
