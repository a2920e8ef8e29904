//! The running management server: shared state and helpers handlers use.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use keymesh_core::{
    ApiError, ServiceContext,
    audit::{AuditEvent, AuditLog},
    capability::{
        follower::{Followed, Follower},
        pop::ReplayCache,
        token::{RevocationView, Verifier},
    },
    http::rate_limit::KeyedLimit,
    storage::StorageError,
};
use tokio::sync::broadcast;

use crate::{
    checkpoints::CheckpointSigner,
    config::ManagementConfig,
    mail::{MailCounters, Mailer},
    metrics::ManagementMetrics,
    secrets::Keyed,
    store::Store,
    vault::VaultClient,
};

/// How long a sensitive operation waits for its audit record before failing.
const AUDIT_BOUND: Duration = Duration::from_secs(2);
/// How often the vault's new audit records are copied into the central chain.
const IMPORT_EVERY: Duration = Duration::from_secs(5);
/// How often expired sign-in requests are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Everything handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ManagementState(pub Arc<Inner>);

/// The shared parts.
#[derive(Debug)]
pub struct Inner {
    /// Common service state (db, metrics, rate limits, shutdown).
    pub ctx: ServiceContext,
    /// Management settings.
    pub config: ManagementConfig,
    /// Tables.
    pub store: Store,
    /// HMACs under `MANAGEMENT_SECRET_KEY`.
    pub keyed: Keyed,
    /// Sign-in mail.
    pub mailer: Mailer,
    /// Central audit chain.
    pub audit: AuditLog,
    /// The vault, as management calls it.
    pub vault: VaultClient,
    /// The relay's audit log, as management reads it (the same client: the endpoint has the
    /// vault's shape).
    pub relay_audit: VaultClient,
    /// Management's copy of the vault's revocation state and root keys (node requests).
    pub followed: Arc<Followed>,
    /// Proofs of possession already seen.
    pub replay: ReplayCache,
    /// Approval events for live streams (this process's subscribers).
    pub events: broadcast::Sender<ApprovalEvent>,
    /// Signs audit checkpoints.
    pub checkpoints: CheckpointSigner,
    /// One copy of other services' audit logs at a time (in this process).
    pub import_lock: tokio::sync::Mutex<()>,
    /// Sign-in requests per address (keyed by the address's HMAC).
    pub login_by_email: KeyedLimit<String>,
    /// Sign-in requests, confirmations, polls and code attempts per client IP.
    pub login_by_ip: KeyedLimit<IpAddr>,
    /// Sign-ins, approvals, event streams, audit imports.
    pub metrics: Arc<ManagementMetrics>,
}

impl std::ops::Deref for ManagementState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Database.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Mail transport.
    #[error("the mail transport cannot be set up")]
    Mail(#[from] crate::mail::MailError),
    /// The revocation feed client.
    #[error("the vault's revocation feed cannot be followed: {0}")]
    Follower(String),
    /// The HTTP client for calls to the vault and the relay (its TLS setup).
    #[error("the HTTP client for the vault and the relay cannot be set up: {0}")]
    Client(#[from] reqwest::Error),
}

/// Events a live stream's subscriber may see.
#[derive(Clone, Debug)]
pub struct ApprovalEvent {
    /// The user behind the request (sees its own requests' events).
    pub requester_user: String,
    /// The event, as sent.
    pub body: serde_json::Value,
}

/// Events kept for slow subscribers before they miss some (they are told and can re-read).
const EVENT_BACKLOG: usize = 256;

impl keymesh_core::http::node::NodeGate for ManagementState {
    fn token_verifier(&self) -> Result<Arc<Verifier>, ApiError> {
        self.followed.require_verifier()
    }

    fn revocations(&self) -> &dyn RevocationView {
        &*self.followed
    }

    fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    fn context(&self) -> &ServiceContext {
        &self.ctx
    }
}

impl ManagementState {
    /// Start over an opened service context.
    pub fn open(ctx: ServiceContext, config: ManagementConfig) -> Result<Self, StartError> {
        let counters = MailCounters::default();
        ctx.metrics.register(
            "management_mail_sent",
            "Sign-in and invitation mails accepted by the mail server (or printed in development)",
            counters.sent.clone(),
        );
        ctx.metrics.register(
            "management_mail_failed",
            "Sign-in and invitation mails that could not be delivered (see the error log)",
            counters.failed.clone(),
        );
        let mailer = Mailer::new(&config.mail, &config.mail_from)?.with_metrics(counters);
        let keyed = Keyed::new(config.secret_key.clone());
        let events = broadcast::channel(EVENT_BACKLOG).0;
        let streams = events.clone();
        let metrics = ManagementMetrics::register(&ctx.metrics, move || streams.receiver_count());
        let audit = AuditLog::spawn(ctx.db.clone(), AUDIT_BOUND);
        audit.register_metrics(&ctx.metrics);
        let followed = Arc::new(Followed::new(config.feed_max_age));
        followed.register_metrics(&ctx.metrics);
        let state = Self(Arc::new(Inner {
            store: Store::new(ctx.db.clone()),
            checkpoints: CheckpointSigner::new(&keyed),
            import_lock: tokio::sync::Mutex::new(()),
            keyed,
            audit,
            vault: VaultClient::new(config.vault.clone(), ctx.config.common.tls_ca.as_ref())?,
            relay_audit: VaultClient::new(
                config.relay_audit.clone(),
                ctx.config.common.tls_ca.as_ref(),
            )?,
            followed,
            replay: ctx.replay_cache(),
            events,
            metrics,
            login_by_email: KeyedLimit::per_period(
                config.login_per_email_per_hour,
                Duration::from_secs(3600),
            ),
            login_by_ip: KeyedLimit::per_period(
                config.login_per_ip_per_minute,
                Duration::from_secs(60),
            ),
            mailer,
            config,
            ctx,
        }));
        state.spawn_janitor();
        if let Some(vault) = &state.config.vault {
            let follower = Follower::new(
                &vault.url,
                vault.api_key.clone(),
                state.ctx.config.common.tls_ca.as_ref(),
            )
            .map_err(|e| StartError::Follower(e.to_string()))?;
            tokio::spawn(follower.run(
                Arc::clone(&state.followed),
                state.ctx.shutdown.clone(),
                || {},
            ));
        }
        Ok(state)
    }

    /// A recorded node, or `not_found`.
    pub async fn known_node(&self, id: &str) -> Result<crate::directory::NodeRow, ApiError> {
        self.store
            .node(id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::with_message(keymesh_core::ErrorCode::NotFound, "no such node")
            })
    }

    /// A sign-in rate limit's verdict, counted as `rate_limited` when it refuses.
    pub fn sign_in_limit<T>(&self, verdict: Result<T, ApiError>) -> Result<T, ApiError> {
        if verdict.is_err() {
            self.metrics.sign_in(crate::metrics::SignIn::RateLimited);
        }
        verdict
    }

    /// Tell live streams; nobody listening is fine.
    pub fn publish(&self, event: ApprovalEvent) {
        let _ = self.events.send(event);
    }

    fn spawn_janitor(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            let jobs = &state.ctx.metrics;
            let purged = jobs.task("login_purge", PURGE_EVERY);
            let checkpointed = jobs.task("audit_checkpoint", state.config.checkpoint_every);
            let imported = jobs.task("audit_import", IMPORT_EVERY);
            // When each service's audit log was last copied (from the start: not yet lagging).
            let mut last_copy = [("vault", Instant::now()), ("relay", Instant::now())];
            let mut tick = tokio::time::interval(PURGE_EVERY);
            let mut checkpoint = tokio::time::interval(state.config.checkpoint_every);
            checkpoint.tick().await;
            let mut import = tokio::time::interval(IMPORT_EVERY);
            loop {
                tokio::select! {
                    () = state.ctx.shutdown.cancelled() => break,
                    _ = checkpoint.tick() => if state.checkpoint().await {
                        checkpointed.succeeded();
                    },
                    _ = import.tick() => {
                        let mut all = true;
                        for ((service, copied), client) in last_copy.iter_mut().zip([&state.vault, &state.relay_audit]) {
                            if !client.configured() {
                                continue;
                            }
                            match crate::imports::import(&state, service, client).await {
                                Ok(_) => *copied = Instant::now(),
                                Err(e) => {
                                    all = false;
                                    tracing::warn!(error = %e, service = *service, "copying a service's audit log failed; retrying");
                                }
                            }
                            let lag = i64::try_from(copied.elapsed().as_secs()).unwrap_or(i64::MAX);
                            state.metrics.import_lag(service, lag);
                        }
                        if all {
                            imported.succeeded();
                        }
                        match state.store.pending_approvals_by_operation().await {
                            Ok(counts) => state.metrics.set_pending(&counts),
                            Err(e) => tracing::warn!(error = %keymesh_core::error::error_chain(&e), "counting pending approvals failed"),
                        }
                    }
                    _ = tick.tick() => {
                        state.login_by_email.prune();
                        state.login_by_ip.prune();
                        match state.store.purge_login_requests().await {
                            Ok(_) => purged.succeeded(),
                            Err(e) => tracing::warn!(error = %keymesh_core::error::error_chain(&e), "purging expired sign-in requests failed"),
                        }
                    }
                }
            }
        });
    }

    /// Sign the audit chain's head if it grew, and log the checkpoint (a copy outside the
    /// database).
    pub async fn checkpoint(&self) -> bool {
        match self.checkpoints.checkpoint(self.store.db()).await {
            Ok(Some(cp)) => {
                tracing::info!(
                    seq = cp.seq,
                    hash = %cp.hash,
                    key_id = %cp.key_id,
                    signature = %cp.signature,
                    "audit checkpoint"
                );
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %keymesh_core::error::error_chain(&e), "signing an audit checkpoint failed");
                false
            }
        }
    }

    /// Record an event before the operation it describes takes effect; fail closed.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), ApiError> {
        self.audit.record_or_refuse(event).await
    }

    /// Record an event whose operation already happened (e.g. a denial); log if it fails.
    pub async fn audit_quiet(&self, event: AuditEvent) {
        self.audit.record_quiet(event).await;
    }
}

/// A page size from a query: `limit` (default 100) between 1 and `max`, else `invalid_request`.
pub fn page_limit(limit: Option<i64>, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::with_message(
            keymesh_core::ErrorCode::InvalidRequest,
            format!("limit must be between 1 and {max}"),
        ))
    }
}
