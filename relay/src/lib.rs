//! keymesh-relay: the zero-knowledge relay. Nodes send each other HPKE-sealed messages over a
//! WebSocket (or HTTP); the relay stores and forwards ciphertext only, answers `accepted` only
//! once a message is durable, and says why when it refuses.

pub mod config;
pub use keymesh_core::capability::follower;
pub use keymesh_proto::frame;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod registry;
pub mod state;
pub mod store;
pub mod ws;

pub use config::RelayConfig;
pub use state::RelayState;

use std::{sync::Arc, time::Duration};

use axum::Router;
use keymesh_core::ServiceContext;
use tokio::sync::oneshot;

use crate::store::{Write, now_ms};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often expired messages are deleted, tokens of open connections re-checked and gauges
/// refreshed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Most messages one expiry pass deletes.
const EXPIRE_BATCH: i64 = 10_000;

/// Open the relay over a service context: its full router and state. Starts the writer, the
/// revocation follower (when a vault is configured) and housekeeping, all ending with the
/// context's shutdown.
pub async fn router(
    ctx: ServiceContext,
    config: RelayConfig,
) -> Result<(Router, RelayState), BoxError> {
    let state = RelayState::open(ctx.clone(), config).await?;
    // A relay whose copy of the revocation feed is stale refuses every token: not ready, so a
    // load balancer sends nodes to a relay that can serve them.
    let followed = Arc::clone(&state.followed);
    ctx.ready_checks.add("revocation_feed", move || {
        if followed.verifier().is_none() || followed.age_ms().is_none() {
            Err("not_yet_read")
        } else if followed.fresh() {
            Ok("ok")
        } else {
            Err("stale")
        }
    });
    if let (Some(url), Some(key)) = (&state.config.vault_url, &state.config.feed_api_key) {
        let follower =
            follower::Follower::new(url, key.clone(), ctx.config.common.tls_ca.as_ref())?;
        let hub = Arc::clone(&state.hub);
        let followed = Arc::clone(&state.followed);
        let view = Arc::clone(&state.followed);
        tokio::spawn(follower.run(followed, ctx.shutdown.clone(), move || {
            sweep(&hub, &view);
        }));
    }
    tokio::spawn(housekeeping(state.clone()));
    Ok((ctx.router(http::routes(state.clone())), state))
}

/// Close every connection whose token is now dead.
fn sweep(hub: &hub::Hub, followed: &follower::Followed) {
    let Some(verifier) = followed.verifier() else {
        return;
    };
    let now = std::time::SystemTime::now();
    let closed = hub.sweep(|token| verifier.check_alive(token, followed, now));
    if closed > 0 {
        tracing::info!(
            closed,
            "relay: closed connections whose token is revoked or expired"
        );
    }
}

async fn housekeeping(state: RelayState) {
    let expiry = state.ctx.metrics.task("message_expiry", HOUSEKEEPING);
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_fresh = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.ctx.shutdown.cancelled() => return,
        }
        let mut expired_all = false;
        loop {
            let (done, rx) = oneshot::channel();
            let write = Write::Expire {
                now_ms: now_ms(),
                limit: EXPIRE_BATCH,
                done,
            };
            if !state.writer.submit(write).await {
                return;
            }
            match rx.await {
                Ok(Ok(ranges)) => {
                    let n: i64 = ranges.iter().map(|(_, r)| r.count).sum();
                    state.metrics.expired.inc_by(u64::try_from(n).unwrap_or(0));
                    for (recipient, range) in ranges {
                        state.hub.expired(&recipient, range);
                    }
                    if n < EXPIRE_BATCH {
                        expired_all = true;
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "relay: deleting expired messages failed");
                    break;
                }
                Err(_) => return,
            }
        }
        if expired_all {
            expiry.succeeded();
        }
        sweep(&state.hub, &state.followed);
        state.metrics.mailbox_depth.set(state.writer.held());
        // One line when the relay starts or stops failing closed.
        let fresh = state.followed.fresh();
        if fresh != was_fresh {
            if fresh {
                tracing::info!(
                    head = state.followed.head(),
                    "relay: the revocation view is current; tokens are checked again"
                );
            } else {
                tracing::warn!(age_ms = ?state.followed.age_ms(), "relay: the revocation view is stale; every token is refused until the vault answers");
            }
            was_fresh = fresh;
        }
    }
}

/// The relay's OpenAPI document (`docs/openapi/relay.json`, `keymesh openapi relay`): every
/// route of [`http::api`] plus the health and metrics routes of the common stack.
pub fn openapi() -> utoipa::openapi::OpenApi {
    keymesh_core::openapi::document(
        "Keymesh relay",
        env!("CARGO_PKG_VERSION"),
        "The zero-knowledge relay: durable store-and-forward of end-to-end encrypted messages \
         between the nodes of a group, over a WebSocket or these HTTP routes, and the nodes' \
         encryption keys. Every error uses the coded body of docs/errors.md; \
         docs/protocol/relay.md describes the protocol.",
        &[
            ("websocket", "The relay protocol's WebSocket."),
            ("messages", "The HTTP fallback for nodes without a socket."),
            ("keys", "The key registry: nodes' X25519 encryption keys."),
            (
                "audit",
                "The relay's hash-chained audit log, read by management.",
            ),
        ],
        http::api().into_openapi(),
    )
}
