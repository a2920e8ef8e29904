//! The running relay: shared state and the checks both transports apply to a send.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use keymesh_core::{
    ApiError, ErrorCode, ServiceContext,
    audit::AuditLog,
    capability::{
        Op,
        pop::ReplayCache,
        rights::RELAY_NAMESPACE,
        token::{Request, RevocationView, VerifiedToken, Verifier},
    },
    http::node::NodeGate,
    storage::StorageError,
};
use tokio::sync::oneshot;

use crate::{
    config::RelayConfig,
    follower::Followed,
    frame::{Limits, MessageId},
    hub::{Hub, HubLimits},
    metrics::RelayMetrics,
    registry::Registry,
    store::{Bounds, NewMessage, SendOutcome, Store, Write, Writer, now_ms},
};

/// Everything handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayState(pub Arc<Inner>);

/// The shared parts.
#[derive(Debug)]
pub struct Inner {
    /// Common service state.
    pub ctx: ServiceContext,
    /// Relay settings.
    pub config: RelayConfig,
    /// Tables.
    pub store: Store,
    /// The group-commit writer.
    pub writer: Writer,
    /// Open connections.
    pub hub: Arc<Hub>,
    /// Registered nodes and their keys.
    pub registry: Registry,
    /// Root keys and revocations, followed from the vault.
    pub followed: Arc<Followed>,
    /// Proof-of-possession nonces (HTTP).
    pub replay: ReplayCache,
    /// Relay series.
    pub metrics: RelayMetrics,
    /// The relay's hash-chained audit log (key publications).
    pub audit: AuditLog,
}

impl std::ops::Deref for RelayState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A send the relay refuses: a code and when a retry may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub code: ErrorCode,
    /// When a retry may succeed; zero when it will not.
    pub retry_after: Duration,
}

impl Refusal {
    fn now(code: ErrorCode) -> Self {
        Self {
            code,
            retry_after: Duration::ZERO,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let e = ApiError::new(r.code);
        if r.retry_after.is_zero() {
            e
        } else {
            e.retry_after(r.retry_after)
        }
    }
}

/// What a send asks for, as either transport received it.
#[derive(Debug)]
pub struct SendRequest {
    /// The sender's id.
    pub id: MessageId,
    /// The recipient node.
    pub to: String,
    /// Seconds to keep it (0 = default).
    pub ttl_secs: u32,
    /// Encapsulated key.
    pub enc: Vec<u8>,
    /// Ciphertext.
    pub payload: Vec<u8>,
}

/// How long an audited operation waits for its record before failing.
const AUDIT_BOUND: Duration = Duration::from_secs(2);

impl NodeGate for RelayState {
    fn token_verifier(&self) -> Result<Arc<Verifier>, ApiError> {
        self.verifier()
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

impl RelayState {
    /// Open storage, the registry and the writer; the hub receives every commit.
    pub async fn open(ctx: ServiceContext, config: RelayConfig) -> Result<Self, StorageError> {
        let store = Store::new(ctx.db.clone());
        let metrics = RelayMetrics::register(&ctx.metrics);
        let hub = Arc::new(Hub::new(HubLimits {
            per_node: config.connections_per_node,
            total: config.max_connections,
            queue: usize::try_from(config.window)
                .unwrap_or(usize::MAX)
                .saturating_mul(2),
            sends_per_second: config.sends_per_second,
        }));
        let to_hub = Arc::clone(&hub);
        let writer = Writer::spawn(
            store.clone(),
            Bounds {
                max_messages: i64::try_from(config.mailbox_max_messages).unwrap_or(i64::MAX),
                max_bytes: i64::try_from(config.mailbox_max_bytes).unwrap_or(i64::MAX),
            },
            Box::new(move |committed| to_hub.push(committed)),
        )
        .await?;
        let registry = Registry::load(ctx.db.clone()).await?;
        let audit = AuditLog::spawn(ctx.db.clone(), AUDIT_BOUND);
        audit.register_metrics(&ctx.metrics);
        let followed = Arc::new(Followed::new(config.feed_max_age));
        followed.register_metrics(&ctx.metrics);
        Ok(Self(Arc::new(Inner {
            audit,
            followed,
            replay: ctx.replay_cache(),
            ctx,
            config,
            store,
            writer,
            hub,
            registry,
            metrics,
        })))
    }

    /// The token checker; `unavailable` until the root keys were read from the vault.
    pub fn verifier(&self) -> Result<Arc<Verifier>, ApiError> {
        self.followed.require_verifier()
    }

    /// The limits a `ready` frame announces.
    pub fn limits(&self) -> Limits {
        let c = &self.config;
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let sat = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Limits {
            max_message: sat(c.max_message),
            max_frame: sat(c.max_frame()),
            window: c.window,
            sends_per_sec: c.sends_per_second,
            ping_interval_ms: ms(c.ping),
            idle_timeout_ms: ms(c.idle_timeout),
            max_ttl_secs: u32::try_from(c.message_ttl.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// Expiry and revocation of a token (fail closed on a stale revocation view).
    pub fn check_alive(&self, token: &VerifiedToken) -> Result<(), ApiError> {
        self.verifier()?
            .check_alive(token, &*self.followed, SystemTime::now())
            .map_err(ApiError::from)
    }

    /// Every check of a send, in order: token alive, size, time to live, rate, recipient,
    /// right. The message to store, or why not.
    pub fn prepare_send(
        &self,
        verifier: &Verifier,
        token: &VerifiedToken,
        send: SendRequest,
    ) -> Result<NewMessage, Refusal> {
        let refuse = |code: ErrorCode| {
            self.metrics.refuse(code);
            Refusal::now(code)
        };
        let now = SystemTime::now();
        verifier
            .check_alive(token, &*self.followed, now)
            .map_err(|e| refuse(ApiError::from(e).code()))?;
        if send.payload.len() > self.config.max_message {
            return Err(refuse(ErrorCode::TooLarge));
        }
        let max_ttl = self.config.message_ttl.as_secs();
        let ttl = match u64::from(send.ttl_secs) {
            0 => max_ttl,
            t if t <= max_ttl => t,
            _ => return Err(refuse(ErrorCode::InvalidRequest)),
        };
        if let Err(not_until) = self.hub.send_limiter(&token.claims.node).check() {
            self.metrics.refuse(ErrorCode::RateLimited);
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                retry_after: wait.max(Duration::from_millis(1)),
            });
        }
        // Same group only: a node of another group is as unknown as one that does not exist.
        if self.registry.group_of(&send.to).as_deref() != Some(token.claims.group.as_str()) {
            return Err(refuse(ErrorCode::UnknownRecipient));
        }
        let resource = format!("{RELAY_NAMESPACE}/{}", send.to);
        // Alive was checked first, above.
        verifier
            .check_request(
                token,
                &Request {
                    op: Op::Write,
                    resource: &resource,
                },
                now,
            )
            .map_err(|e| refuse(ApiError::from(e).code()))?;
        let created_ms = now_ms();
        let ttl_ms = i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX);
        Ok(NewMessage {
            recipient: send.to,
            sender: token.claims.node.clone(),
            client_id: send.id,
            enc: send.enc,
            payload: send.payload,
            created_ms,
            expires_ms: created_ms.saturating_add(ttl_ms),
        })
    }

    /// Queue a prepared message with the writer; the receiver answers once it is durable.
    pub async fn submit(
        &self,
        message: NewMessage,
    ) -> Result<oneshot::Receiver<Result<SendOutcome, StorageError>>, ApiError> {
        let (done, rx) = oneshot::channel();
        if self.writer.submit(Write::Send { message, done }).await {
            Ok(rx)
        } else {
            Err(ApiError::new(ErrorCode::Unavailable))
        }
    }

    /// Count a send's outcome; the refusal to give the sender, if any.
    pub fn outcome(&self, outcome: &Result<SendOutcome, StorageError>) -> Result<bool, Refusal> {
        match outcome {
            Ok(SendOutcome::Stored(_)) => {
                self.metrics.accepted.inc();
                Ok(false)
            }
            Ok(SendOutcome::Duplicate) => {
                self.metrics.duplicates.inc();
                Ok(true)
            }
            Ok(SendOutcome::MailboxFull) => {
                self.metrics.refuse(ErrorCode::MailboxFull);
                Err(Refusal {
                    code: ErrorCode::MailboxFull,
                    retry_after: Duration::from_secs(1),
                })
            }
            Err(_) => {
                self.metrics.refuse(ErrorCode::Unavailable);
                Err(Refusal {
                    code: ErrorCode::Unavailable,
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }
}
