//! HTTP routes: the fallback for nodes without a socket (send, fetch after a sequence number,
//! acknowledge) and the key registry (publish, look up). Every call carries the node's token
//! and a proof of possession over the whole request.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{self, AuditEvent, Outcome},
    error::ErrorBody,
    http::node::SignedRequest,
    ident::Ident,
    openapi::{NodeErrors, ServiceErrors},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    frame::{MAX_ENC, MessageId},
    registry::{KeyRow, verify_registration},
    state::{RelayState, SendRequest},
    store::{Write, now_ms},
    ws,
};

/// Every relay route with its documentation: `routes!` takes handlers annotated with
/// `#[utoipa::path]`, so the router and the OpenAPI document are built from this one list.
pub fn api() -> OpenApiRouter<RelayState> {
    OpenApiRouter::default()
        .routes(routes!(ws::upgrade))
        .routes(routes!(send, fetch))
        .routes(routes!(ack))
        .routes(routes!(publish_key))
        .routes(routes!(lookup_keys))
        .routes(routes!(audit_records))
        .routes(routes!(verify_audit))
}

/// The relay's routes (inside the common stack).
pub fn routes(state: RelayState) -> Router {
    Router::from(api()).with_state(state)
}

/// A node's authenticated, living request (the extractor every service uses).
pub type NodeCall = SignedRequest;

fn invalid(message: &'static str) -> ApiError {
    ApiError::with_message(ErrorCode::InvalidRequest, message)
}

fn b64(field: &'static str, value: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD.decode(value).map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidRequest, format!("{field} must be base64"))
    })
}

/// A message to send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// The sender's message id: 16 bytes, hex. Resending the same id stores nothing new.
    id: String,
    /// The recipient: a node of the sender's group that published a key.
    to: String,
    /// Seconds to keep the message; 0 means `RELAY_MESSAGE_TTL_SECS`, more is refused.
    #[serde(default)]
    ttl_secs: u32,
    /// The HPKE encapsulated key, base64 (at most 256 bytes).
    enc: String,
    /// The ciphertext, base64 (at most `RELAY_MAX_MESSAGE_BYTES`).
    payload: String,
}

/// Send a message; answered once it is durable.
///
/// Needs `write` on `relay/<recipient>` (or a covering pattern). Resending the same `id`
/// answers `duplicate: true` and stores nothing.
#[utoipa::path(
    post,
    path = "/v1/relay/messages",
    operation_id = "send_message",
    tag = "messages",
    request_body = SendBody,
    responses(
        (status = 200, body = Accepted),
        (status = 403, body = ErrorBody, description = "`forbidden`: no send right for this recipient."),
        (status = 404, body = ErrorBody, description = "`unknown_recipient`: no node of the sender's group has published a key under this id."),
        (status = 413, body = ErrorBody, description = "`too_large`: the ciphertext is over `RELAY_MAX_MESSAGE_BYTES`."),
        (status = 507, body = ErrorBody, description = "`mailbox_full`: the recipient's mailbox is at its bound; nothing was stored."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
async fn send(State(state): State<RelayState>, call: NodeCall) -> Result<Json<Accepted>, ApiError> {
    let body: SendBody = call.json()?;
    let id: MessageId = hex::decode(&body.id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("id must be 16 bytes of hex"))?;
    let enc = b64("enc", &body.enc)?;
    if enc.len() > MAX_ENC {
        return Err(invalid("enc is at most 256 bytes"));
    }
    let payload = b64("payload", &body.payload)?;
    let verifier = state.verifier()?;
    let message = state.prepare_send(
        &verifier,
        &call.token,
        SendRequest {
            id,
            to: body.to,
            ttl_secs: body.ttl_secs,
            enc,
            payload,
        },
    )?;
    let outcome = state
        .submit(message)
        .await?
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable))?;
    let duplicate = state.outcome(&outcome)?;
    Ok(Json(Accepted {
        accepted: true,
        duplicate,
    }))
}

/// A message stored (durably) for its recipient.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Accepted {
    /// Always `true`: stored before this answer.
    accepted: bool,
    /// The relay had this message id from this sender already (a retry): stored once.
    duplicate: bool,
}

/// A message in the caller's mailbox.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Delivered {
    /// Its sequence number in the mailbox.
    seq: i64,
    /// The sender's message id (16 bytes, hex).
    id: String,
    /// The sender node.
    from: String,
    /// Stored at (unix ms).
    created_ms: i64,
    /// Deleted unacknowledged then (unix ms).
    expires_ms: i64,
    /// The HPKE encapsulated key (base64).
    enc: String,
    /// The ciphertext (base64).
    payload: String,
}

/// Messages that expired unacknowledged.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExpiredRange {
    /// After this sequence number (exclusive)…
    after: i64,
    /// …through this one (inclusive).
    through: i64,
    /// How many.
    count: i64,
}

/// `GET /v1/relay/messages`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Mailbox {
    /// The caller.
    node: String,
    /// The mailbox's epoch: it changes when the mailbox is recreated (sequence numbers restart).
    epoch: i64,
    /// After `after`, oldest first.
    messages: Vec<Delivered>,
    /// Ranges after `after` that expired unacknowledged.
    expired: Vec<ExpiredRange>,
}

/// `POST /v1/relay/ack`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Acked {
    /// How many messages were deleted.
    deleted: i64,
}

/// `PUT /v1/relay/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Published {
    /// The caller.
    node: String,
    /// The version now current.
    version: u32,
}

/// `GET /v1/relay/keys/{node}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NodeKeys {
    /// The node.
    node: String,
    /// Its current key and those still in their grace window, newest first.
    keys: Vec<crate::registry::KeyRow>,
}

/// `GET /v1/relay/messages` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FetchQuery {
    /// Messages after this sequence number.
    #[serde(default)]
    after: i64,
    /// At most this many messages (at most the relay's window, the default).
    #[serde(default)]
    limit: Option<i64>,
}

/// The caller's own mailbox after a sequence number.
///
/// Also the ranges past it that expired unacknowledged.
#[utoipa::path(
    get,
    path = "/v1/relay/messages",
    operation_id = "fetch_messages",
    tag = "messages",
    params(FetchQuery),
    responses(
        (status = 200, body = Mailbox),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
async fn fetch(
    State(state): State<RelayState>,
    Query(q): Query<FetchQuery>,
    call: NodeCall,
) -> Result<Json<Mailbox>, ApiError> {
    let node = &call.token.claims.node;
    let window = i64::from(state.config.window);
    let limit = q.limit.unwrap_or(window).clamp(1, window);
    let epoch = state
        .store
        .ensure_mailbox(node, now_ms())
        .await
        .map_err(ApiError::internal)?;
    let messages = state
        .store
        .fetch(node, q.after.max(0), limit)
        .await
        .map_err(ApiError::internal)?;
    let expired = state
        .store
        .expiries(node, q.after.max(0))
        .await
        .map_err(ApiError::internal)?;
    state.metrics.delivered.inc_by(messages.len() as u64);
    let messages = messages
        .iter()
        .map(|m| Delivered {
            seq: m.seq,
            id: hex::encode(&m.client_id),
            from: m.sender.clone(),
            created_ms: m.created_ms,
            expires_ms: m.expires_ms,
            enc: STANDARD.encode(&m.enc),
            payload: STANDARD.encode(&m.payload),
        })
        .collect();
    let expired = expired
        .iter()
        .map(|e| ExpiredRange {
            after: e.after_seq,
            through: e.through_seq,
            count: e.count,
        })
        .collect();
    Ok(Json(Mailbox {
        node: node.clone(),
        epoch,
        messages,
        expired,
    }))
}

/// An acknowledgement.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Every message of the caller's mailbox up to this sequence number.
    through: i64,
}

/// Acknowledge (and delete) the caller's own mailbox up to a sequence number.
#[utoipa::path(
    post,
    path = "/v1/relay/ack",
    operation_id = "ack_messages",
    tag = "messages",
    request_body = AckBody,
    responses(
        (status = 200, body = Acked),
        (status = 400, body = ErrorBody, description = "`protocol_error`: past the mailbox's last sequence number."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
async fn ack(State(state): State<RelayState>, call: NodeCall) -> Result<Json<Acked>, ApiError> {
    let body: AckBody = call.json()?;
    if body.through < 0 {
        return Err(invalid("through must not be negative"));
    }
    let node = call.token.claims.node.clone();
    let (_, last_seq) = state
        .store
        .position(&node)
        .await
        .map_err(ApiError::internal)?;
    if body.through > last_seq {
        return Err(ApiError::with_message(
            ErrorCode::ProtocolError,
            format!(
                "through {} is past this mailbox's last sequence number {last_seq}",
                body.through
            ),
        ));
    }
    let (done, rx) = oneshot::channel();
    if !state
        .writer
        .submit(Write::Ack {
            recipient: node,
            through: body.through,
            done,
        })
        .await
    {
        return Err(ApiError::new(ErrorCode::Unavailable));
    }
    let deleted = rx
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable))?
        .map_err(ApiError::internal)?;
    state
        .metrics
        .acked
        .inc_by(u64::try_from(deleted).unwrap_or(0));
    Ok(Json(Acked { deleted }))
}

/// An encryption key to publish.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// From 1; a higher version retires the current one.
    version: u32,
    /// X25519 public key, hex.
    enc_key: String,
    /// Ed25519 signature by the node key over `keymesh-enc-key-v1`, hex.
    signature: String,
}

/// Publish the caller's X25519 encryption key.
///
/// Signed by the node key over `keymesh-enc-key-v1 \n NODE \n VERSION \n hex(key)`. A higher
/// version retires the current one, which stays listed for `RELAY_KEY_GRACE_SECS`; repeating
/// the current version with the same key is a no-op.
#[utoipa::path(
    put,
    path = "/v1/relay/keys",
    operation_id = "publish_key",
    tag = "keys",
    request_body = KeyBody,
    responses(
        (status = 200, body = Published),
        (status = 409, body = ErrorBody, description = "`conflict`: a version at or below the current one, with another key."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
async fn publish_key(
    State(state): State<RelayState>,
    call: NodeCall,
) -> Result<Json<Published>, ApiError> {
    let body: KeyBody = call.json()?;
    if body.version == 0 {
        return Err(invalid("version starts at 1"));
    }
    let enc_key: [u8; 32] = hex::decode(&body.enc_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("enc_key must be 32 bytes of hex"))?;
    let signature: [u8; 64] = hex::decode(&body.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("signature must be 64 bytes of hex"))?;
    let claims = &call.token.claims;
    verify_registration(
        &call.token.node_key,
        &claims.node,
        body.version,
        &enc_key,
        &signature,
    )
    .map_err(|e| ApiError::with_message(ErrorCode::InvalidRequest, e.to_string()))?;
    let now = now_ms();
    let row = KeyRow {
        node: claims.node.clone(),
        version: i64::from(body.version),
        group_id: claims.group.clone(),
        identity_key: call.token.node_key.to_bytes().to_vec(),
        enc_key: enc_key.to_vec(),
        signature: signature.to_vec(),
        created_ms: now,
        retired_ms: None,
    };
    state
        .store
        .ensure_mailbox(&claims.node, now)
        .await
        .map_err(ApiError::internal)?;
    // Audited first (fail closed): who may decrypt what is sent to this node changes here.
    let event = |outcome| {
        AuditEvent::new(
            format!("node:{}", claims.node),
            "relay.key.publish",
            format!("node:{}", claims.node),
            outcome,
        )
        .with_details(json!({
            "group": claims.group, "version": body.version,
            "enc_key_sha256": hex::encode(Sha256::digest(enc_key)),
        }))
    };
    state
        .audit
        .record_or_refuse(event(Outcome::Success))
        .await?;
    let registered = state
        .registry
        .register(&row, now)
        .await
        .map_err(ApiError::internal)?;
    if let Err(e) = registered {
        state.audit.record_quiet(event(Outcome::Failure)).await;
        return Err(ApiError::with_message(ErrorCode::Conflict, e.to_string()));
    }
    tracing::info!(node = %claims.node, version = body.version, "relay: encryption key published");
    Ok(Json(Published {
        node: claims.node.clone(),
        version: body.version,
    }))
}

/// A node's current encryption key and those still within the grace window, newest first.
///
/// Only nodes of the caller's own group. Readers verify every listed signature against the
/// identity key listed with it.
#[utoipa::path(
    get,
    path = "/v1/relay/keys/{node}",
    operation_id = "lookup_keys",
    tag = "keys",
    params(("node" = inline(Ident), Path, description = "A node of the caller's group.")),
    responses(
        (status = 200, body = NodeKeys),
        (status = 404, body = ErrorBody, description = "`unknown_recipient`: no such node in the caller's group."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
async fn lookup_keys(
    State(state): State<RelayState>,
    Path(node): Path<Ident>,
    call: NodeCall,
) -> Result<Json<NodeKeys>, ApiError> {
    if state.registry.group_of(&node).as_deref() != Some(call.token.claims.group.as_str()) {
        return Err(ApiError::new(ErrorCode::UnknownRecipient));
    }
    let grace = i64::try_from(state.config.key_grace.as_millis()).unwrap_or(i64::MAX);
    let keys = state
        .registry
        .keys(&node, now_ms(), grace)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(NodeKeys {
        node: node.to_string(),
        keys,
    }))
}

/// Management, authenticated by `RELAY_MANAGEMENT_API_KEY` (refused when it is unset).
#[derive(Debug, Clone, Copy)]
pub struct Management;

impl axum::extract::FromRequestParts<RelayState> for Management {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &RelayState,
    ) -> Result<Self, ApiError> {
        use secrecy::ExposeSecret;
        let presented = keymesh_core::http::bearer_token(&parts.headers)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
        let expected = state
            .config
            .management_api_key
            .as_ref()
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
        if !keymesh_core::secret::secret_eq(
            presented.as_bytes(),
            expected.expose_secret().as_bytes(),
        ) {
            return Err(ApiError::new(ErrorCode::Unauthorized));
        }
        state.ctx.limits.check_principal("service:management")?;
        Ok(Management)
    }
}

/// The relay's audit records after a sequence number, oldest first (management copies them
/// into the central log).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(audit::AuditPage),
    responses(
        (status = 200, body = audit::AuditRecords),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
async fn audit_records(
    State(state): State<RelayState>,
    _: Management,
    Query(q): Query<audit::AuditPage>,
) -> Result<Json<audit::AuditRecords>, ApiError> {
    audit::page(&state.ctx.db, &q).await.map(Json)
}

/// Walk the relay's audit chain.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    responses(
        (status = 200, body = audit::VerifyReport),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
async fn verify_audit(
    State(state): State<RelayState>,
    _: Management,
) -> Result<Json<audit::VerifyReport>, ApiError> {
    audit::verify(&state.ctx.db)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}
