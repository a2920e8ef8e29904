//! Nodes, tokens (mint, refresh, delegate, revoke, root keys) and the revocation feed.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::{
        Ceiling, Op, Right,
        rights::{above_ceiling, delegation_excess},
        token::{MAX_LINEAGE, Scope},
    },
    error::ErrorBody,
    http::extract::Json as JsonBody,
    openapi::{Errors, NodeErrors, ServiceErrors},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use keymesh_core::{
    capability::follower::{FeedPage, Snapshot},
    identity::IdentityAttestation,
};

use crate::{
    auth::{Follower, Management, NodeCall},
    ident::Ident,
    issuance::{
        Inherited, IssuedToken, NewToken, approval_required, check_rights_count, node_ceiling,
        refuse_excess, unix_now,
    },
    revocation::FeedEntry,
    state::{KeyState, VaultState},
    store::NodeRow,
};

/// A node as management registers it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NodeBody {
    /// The node's group.
    group: Ident,
    /// The user the node belongs to.
    user: Ident,
    /// Ed25519 public key, hex.
    public_key: String,
    /// Highest operation the node may hold; defaults to `list` (agents).
    #[serde(default)]
    ceiling: Option<Op>,
    /// Disabled: nothing is minted, refreshed or delegated for the node, and its tokens die.
    #[serde(default)]
    disabled: bool,
}

fn ed25519_key(hex_key: &str) -> Result<[u8; 32], ApiError> {
    keymesh_core::capability::pop::identity_key(hex_key)
        .map(|k| k.to_bytes())
        .map_err(|reason| ApiError::with_message(ErrorCode::InvalidRequest, reason))
}

/// `PUT /v1/nodes/{node_id}`: the node as registered now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeRegistered {
    /// The node.
    pub node_id: String,
    /// Its ceiling.
    pub ceiling: Op,
    /// Its earlier tokens were revoked (a lower ceiling, or disabled).
    pub tokens_revoked: bool,
}

/// A root public key. Retired keys past their window are not listed: a verifier trusts exactly
/// the listed keys that are not `revoked`, each until its `verify_until_ms`, and refuses tokens
/// of a revoked one as `revoked`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RootKey {
    /// Its key id (in every token it signed).
    pub kid: i64,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// `announced` (verifies; signs from `activates_at_ms`), `current` (signs new tokens),
    /// `retired` (verifies until `verify_until_ms`) or `revoked` (verifies nothing).
    pub state: KeyState,
    /// Whether new tokens are signed with it (`state` is `current`).
    pub current: bool,
    /// It signs from then (unix ms).
    pub activates_at_ms: i64,
    /// It stops (or stopped) signing then (unix ms): for a retired key, and for the current key
    /// once its successor is announced.
    pub retired_at_ms: Option<i64>,
    /// It verifies until then (unix ms): `retired_at_ms` plus `VAULT_TOKEN_MAX_TTL_SECS`.
    pub verify_until_ms: Option<i64>,
    /// Revoked then (unix ms).
    pub revoked_at_ms: Option<i64>,
}

/// `GET /v1/tokens/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RootKeys {
    /// Every key that still verifies.
    pub keys: Vec<RootKey>,
}

/// Register or update a node and its ceiling.
///
/// A node's key, group and user are fixed at its first registration: another value for one is
/// refused (409), so the management credential alone cannot move an existing node onto another
/// key. Lowering the ceiling or disabling revokes the node's existing tokens (epoch bump;
/// `tokens_revoked: true`). A disabled node gets nothing minted, refreshed or delegated.
#[utoipa::path(
    put,
    path = "/v1/nodes/{node_id}",
    tag = "nodes",
    params(("node_id" = inline(Ident), Path, description = "The node's id.")),
    request_body = NodeBody,
    responses(
        (status = 200, body = NodeRegistered),
        (status = 409, body = ErrorBody, description = "`conflict`: the node exists with another key, group or user (fixed at registration)."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn put_node(
    State(state): State<VaultState>,
    _: Management,
    Path(node_id): Path<Ident>,
    JsonBody(body): JsonBody<NodeBody>,
) -> Result<Json<NodeRegistered>, ApiError> {
    let key = ed25519_key(&body.public_key)?;
    let ceiling = body.ceiling.unwrap_or(Ceiling::AGENT.0);
    // A new key, group or user, or a lower ceiling, must not leave old tokens working.
    let previous = state
        .store
        .node(&node_id)
        .await
        .map_err(ApiError::internal)?;
    let rebinds = previous.as_ref().is_some_and(|p| {
        p.public_key != key || p.group_id != *body.group || p.user_id != *body.user
    });
    // A node's key, group and user are fixed when it is first registered (issue 23 finding 1):
    // management's credential, stolen, cannot move a node that already holds rights onto a key
    // of its own. A node with a new key enrolls as a new node.
    if rebinds {
        return Err(refuse_rebinding(&state, &node_id).await);
    }
    let invalidates = body.disabled
        || previous
            .as_ref()
            .is_some_and(|p| p.ceiling.parse::<Op>().map_or(true, |old| ceiling < old));
    state
        .audit(
            AuditEvent::new(
                "service:management",
                "node.register",
                format!("node:{node_id}"),
                Outcome::Success,
            )
            .with_details(json!({ "group": body.group, "user": body.user, "ceiling": ceiling, "disabled": body.disabled })),
        )
        .await?;
    let stored = state
        .store
        .upsert_node(&NodeRow {
            node_id: node_id.to_string(),
            group_id: body.group.into(),
            user_id: body.user.into(),
            public_key: key.to_vec(),
            ceiling: ceiling.as_str().to_owned(),
            disabled_at_ms: body.disabled.then(crate::store::now_ms),
        })
        .await
        .map_err(ApiError::internal)?;
    // Another registration of the same id with another key won the race since the read above.
    if !stored {
        return Err(refuse_rebinding(&state, &node_id).await);
    }
    if invalidates {
        let _entry = revoke_entry(
            &state,
            "service:management".into(),
            RevokeBody::Epoch {
                scope: Scope::Node,
                subject: node_id.to_string(),
                reason: "node registration changed".into(),
            },
        )
        .await?;
    }
    Ok(Json(NodeRegistered {
        node_id: node_id.to_string(),
        ceiling,
        tokens_revoked: invalidates,
    }))
}

/// A node's identity, attested by the vault for another node of its group.
///
/// Signed with the root key that signs tokens now, over `keymesh-node-identity-v1`, node, group,
/// hex(identity key) and `issued_ms` (docs/protocol/tokens.md, "Node identities"). A sender
/// checks it against `GET /v1/tokens/keys` and pins the key: a relay that lists another
/// identity for the node is then refused.
#[utoipa::path(
    get,
    path = "/v1/nodes/{node_id}/identity",
    tag = "nodes",
    params(("node_id" = inline(Ident), Path, description = "The node whose identity is asked.")),
    responses(
        (status = 200, body = IdentityAttestation),
        (status = 404, body = ErrorBody, description = "`not_found`: no such enabled node in the caller's group."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn identity(
    State(state): State<VaultState>,
    Path(node_id): Path<Ident>,
    call: NodeCall,
) -> Result<Json<IdentityAttestation>, ApiError> {
    // Another group's nodes, disabled nodes and unknown ids look the same.
    let not_found = || {
        ApiError::with_message(
            ErrorCode::NotFound,
            format!("no enabled node {node_id} in your group"),
        )
    };
    let node = state
        .store
        .node(&node_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|n| n.group_id == call.token.claims.group && n.disabled_at_ms.is_none())
        .ok_or_else(not_found)?;
    let identity: [u8; 32] = node.public_key.as_slice().try_into().map_err(|_| {
        ApiError::internal(std::io::Error::other("a stored node key is not 32 bytes"))
    })?;
    let issued_ms = u64::try_from(crate::store::now_ms()).unwrap_or(0);
    let statement =
        keymesh_core::identity::statement(&node.node_id, &node.group_id, &identity, issued_ms);
    let (kid, signature) = state
        .ring()
        .sign_statement(&statement)
        .map_err(ApiError::internal)?;
    Ok(Json(IdentityAttestation {
        node_id: node.node_id,
        group: node.group_id,
        identity_key: hex::encode(identity),
        issued_ms,
        kid,
        signature: hex::encode(signature),
    }))
}

/// `409 conflict` for a registration that would change a node's key, group or user, audited as
/// denied (when the audit record cannot be written, that error instead).
async fn refuse_rebinding(state: &VaultState, node_id: &Ident) -> ApiError {
    let audited = state
        .audit(
            AuditEvent::new(
                "service:management",
                "node.register",
                format!("node:{node_id}"),
                Outcome::Denied,
            )
            .with_details(json!({ "reason": "key, group or user change refused" })),
        )
        .await;
    match audited {
        Err(e) => e,
        Ok(()) => ApiError::with_message(
            ErrorCode::Conflict,
            format!(
                "node {node_id} is registered with another key, group or user; a node's identity is fixed at registration (enroll a new node)"
            ),
        ),
    }
}

/// Mint request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MintBody {
    /// The registered node the token is for.
    node_id: Ident,
    /// 1 to 32 rights.
    rights: Vec<Right>,
    /// Lifetime; defaults to `VAULT_TOKEN_TTL_SECS`, at most `VAULT_TOKEN_MAX_TTL_SECS`.
    #[serde(default)]
    ttl_secs: Option<u64>,
    /// The management approval request that allows rights above the node's ceiling.
    #[serde(default)]
    approval: Option<Ident>,
}

/// Mint a node's token.
///
/// Rights above the node's ceiling are refused with `approval_required`, never truncated, unless
/// the request names the management approval that allowed them (each approval mints once).
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = MintBody,
    responses(
        (status = 200, body = IssuedToken),
        (status = 403, body = ErrorBody, description = "`approval_required` (`details.excess` lists what is above the ceiling), or `forbidden`: the node is disabled."),
        (status = 404, body = ErrorBody, description = "`not_found`: the node is not registered."),
        (status = 409, body = ErrorBody, description = "`conflict`: this approval was already used for a mint."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn mint(
    State(state): State<VaultState>,
    _: Management,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Json<IssuedToken>, ApiError> {
    check_rights_count(&body.rights)?;
    let node = state.registered(&body.node_id).await?;
    let excess = above_ceiling(&body.rights, node_ceiling(&node)?);
    // Management decides ceilings; above one it mints only what a human approval allowed,
    // and names that approval so both audit logs tie the token to it.
    if body.approval.is_none() {
        refuse_excess(
            &state,
            "service:management".into(),
            "token.mint",
            &node.node_id,
            &excess,
        )
        .await?;
    }
    let ttl = state.lifetime(body.ttl_secs)?;
    let grant = uuid::Uuid::new_v4().simple().to_string();
    let lineage = vec![grant.clone()];
    // One mint per approval, ever: a retried or replayed approval id mints nothing.
    if let Some(approval) = &body.approval
        && !state
            .store
            .use_approval(approval, &grant)
            .await
            .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "this approval was already used for a mint",
        ));
    }
    state
        .audit(
            AuditEvent::new(
                "service:management",
                "token.mint",
                format!("node:{}", node.node_id),
                Outcome::Success,
            )
            .with_details(
                json!({ "grant": grant, "rights": body.rights, "ttl_secs": ttl.as_secs(),
                    "approval": body.approval, "above_ceiling": excess.above_ceiling }),
            ),
        )
        .await?;
    Ok(Json(
        state
            .grant_and_issue(
                &node,
                &grant,
                None,
                NewToken {
                    lineage,
                    rights: body.rights,
                    expires_at: unix_now() + ttl.as_secs(),
                    inherited: Inherited::default(),
                },
            )
            .await?,
    ))
}

/// Refresh and delegate start from the caller's token: alive (the extractor checked it) and
/// exactly as the vault issued it. An attenuated copy's narrower rights live in holder-written
/// checks the vault would have to re-derive; using the authority block instead would hand
/// back wider rights.
fn as_issued(call: &NodeCall, what: &str) -> Result<(), ApiError> {
    if call.token.attenuations() > 0 {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            format!("{what} with the token the vault issued, not an attenuated copy"),
        ));
    }
    Ok(())
}

/// Refresh the caller's token: the same grant and rights, a new expiry.
///
/// Refused for attenuated copies.
#[utoipa::path(
    post,
    path = "/v1/tokens/refresh",
    tag = "tokens",
    responses(
        (status = 200, body = IssuedToken),
        (status = 403, body = ErrorBody, description = "`forbidden`: an attenuated copy, a disabled node or a changed registration; `approval_required`: the rights are now above the node's ceiling."),
        (status = 404, body = ErrorBody, description = "`not_found`: the node is no longer registered."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn refresh(
    State(state): State<VaultState>,
    call: NodeCall,
) -> Result<Json<IssuedToken>, ApiError> {
    let claims = &call.token.claims;
    as_issued(&call, "refresh")?;
    let node = state.registered(&claims.node).await?;
    if node.group_id != claims.group || node.public_key != claims.node_key {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            "the node's registration changed; ask management for a new token",
        ));
    }
    let excess = above_ceiling(&claims.rights, node_ceiling(&node)?);
    if !excess.is_empty() {
        return Err(approval_required("token.refresh", &excess));
    }
    let ttl = state.lifetime(None)?;
    state
        .audit(AuditEvent::new(
            call.actor(),
            "token.refresh",
            format!("grant:{}", claims.grant),
            Outcome::Success,
        ))
        .await?;
    // Same epochs, ancestors and cap as the token refreshed: a revocation that races this
    // refresh still reaches the new token.
    let inherited = Inherited {
        epochs: Some(claims.epochs),
        ancestors: claims.ancestors.clone(),
        expiry_cap: claims.expiry_cap,
    };
    Ok(Json(state.issue(
        &node,
        &claims.grant,
        NewToken {
            lineage: claims.lineage.clone(),
            rights: claims.rights.clone(),
            expires_at: unix_now() + ttl.as_secs(),
            inherited,
        },
    )?))
}

/// Delegation request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DelegateBody {
    /// A node of the caller's group.
    peer_node_id: Ident,
    /// 1 to 32 rights, each held by the caller and shareable by it.
    rights: Vec<Right>,
    /// Lifetime; the token never outlives the caller's.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// Delegate a subset of the caller's rights to a peer in the same group.
///
/// Every right must be held by the caller, shareable (the caller holds `share` on it) and
/// within the peer's ceiling, else `approval_required` lists exactly what is in excess. Expiry
/// never exceeds the caller's.
#[utoipa::path(
    post,
    path = "/v1/tokens/delegate",
    tag = "tokens",
    request_body = DelegateBody,
    responses(
        (status = 200, body = IssuedToken),
        (status = 403, body = ErrorBody, description = "`approval_required` (`details.excess`), or `forbidden`: an attenuated copy, a chain over 8 grants, a peer in another group or disabled."),
        (status = 404, body = ErrorBody, description = "`not_found`: the peer is not registered."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn delegate(
    State(state): State<VaultState>,
    call: NodeCall,
) -> Result<Json<IssuedToken>, ApiError> {
    let body: DelegateBody = call.json()?;
    let claims = &call.token.claims;
    // The caller's token is the most it can give.
    as_issued(&call, "delegate")?;
    check_rights_count(&body.rights)?;
    if claims.lineage.len() >= MAX_LINEAGE {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            format!("delegation chains are at most {MAX_LINEAGE} deep"),
        ));
    }
    let peer = state.registered(&body.peer_node_id).await?;
    if peer.group_id != claims.group {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            "delegation stays inside the group",
        ));
    }
    let excess = delegation_excess(&body.rights, &claims.rights, node_ceiling(&peer)?);
    refuse_excess(
        &state,
        call.actor(),
        "token.delegate",
        &peer.node_id,
        &excess,
    )
    .await?;
    let ttl = state.lifetime(body.ttl_secs)?;
    let expires_at = (unix_now() + ttl.as_secs()).min(claims.expires_at);
    let grant = uuid::Uuid::new_v4().simple().to_string();
    let mut lineage = claims.lineage.clone();
    lineage.push(grant.clone());
    state
        .audit(
            AuditEvent::new(
                call.actor(),
                "token.delegate",
                format!("node:{}", peer.node_id),
                Outcome::Success,
            )
            .with_details(json!({ "grant": grant, "parent": claims.grant, "rights": body.rights })),
        )
        .await?;
    Ok(Json(
        state
            .grant_and_issue(
                &peer,
                &grant,
                Some(&claims.grant),
                NewToken {
                    lineage,
                    rights: body.rights,
                    expires_at,
                    inherited: Inherited::delegated_from(claims),
                },
            )
            .await?,
    ))
}

/// What to revoke: one grant (and everything derived from it), one block (an attenuated
/// copy), or every token of a node, user or group.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RevokeBody {
    /// A grant id.
    Grant {
        /// The grant id.
        grant: String,
        /// Why (at most 1024 bytes).
        reason: String,
    },
    /// A block revocation id (hex).
    Block {
        /// The block revocation id, hex.
        block: String,
        /// Why (at most 1024 bytes).
        reason: String,
    },
    /// An epoch bump.
    Epoch {
        /// Whose tokens.
        scope: Scope,
        /// The node, user or group id.
        subject: String,
        /// Why (at most 1024 bytes).
        reason: String,
    },
}

async fn revoke_entry(
    state: &VaultState,
    actor: String,
    body: RevokeBody,
) -> Result<Json<FeedEntry>, ApiError> {
    let (kind, scope, subject, reason) = match body {
        RevokeBody::Grant { grant, reason } => ("grant", None, grant, reason),
        RevokeBody::Block { block, reason } => ("block", None, block, reason),
        RevokeBody::Epoch {
            scope,
            subject,
            reason,
        } => ("epoch", Some(scope), subject, reason),
    };
    if subject.is_empty() || subject.len() > 256 || reason.len() > 1024 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "subject is 1 to 256 bytes, reason at most 1024",
        ));
    }
    state
        .audit(
            AuditEvent::new(
                actor,
                "token.revoke",
                format!("{kind}:{subject}"),
                Outcome::Success,
            )
            .with_details(json!({ "scope": scope, "reason": reason })),
        )
        .await?;
    // Append and apply under one lock, so entries reach the in-memory state (and snapshots)
    // in feed order.
    let _order = state.revocation_order.lock().await;
    let entry = state
        .store
        .append_revocation(kind, scope, &subject, &reason)
        .await
        .map_err(ApiError::internal)?;
    state.revocations.apply(&entry);
    Ok(Json(entry))
}

/// Revoke a grant, a block or every token of a node, user or group.
///
/// Appended to the revocation feed and applied at once.
#[utoipa::path(
    post,
    path = "/v1/revocations",
    tag = "revocations",
    request_body = RevokeBody,
    responses((status = 200, body = FeedEntry, description = "The feed entry."), ServiceErrors),
    security(("management_key" = [])),
)]
pub async fn revoke(
    State(state): State<VaultState>,
    _: Management,
    JsonBody(body): JsonBody<RevokeBody>,
) -> Result<Json<FeedEntry>, ApiError> {
    revoke_entry(&state, "service:management".into(), body).await
}

/// Node revocation request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NodeRevokeBody {
    /// The caller's own grant or one delegated from it.
    grant: String,
    /// Why (at most 1024 bytes).
    #[serde(default)]
    reason: String,
}

/// Revoke the caller's own grant or one delegated from it.
#[utoipa::path(
    post,
    path = "/v1/tokens/revoke",
    tag = "tokens",
    request_body = NodeRevokeBody,
    responses(
        (status = 200, body = FeedEntry, description = "The feed entry."),
        (status = 403, body = ErrorBody, description = "`forbidden`: neither the caller's grant nor derived from it."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such grant."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn revoke_own(
    State(state): State<VaultState>,
    call: NodeCall,
) -> Result<Json<FeedEntry>, ApiError> {
    let body: NodeRevokeBody = call.json()?;
    let target = state
        .store
        .grant(&body.grant)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let lineage: Vec<String> = serde_json::from_str(&target.lineage).map_err(ApiError::internal)?;
    if !lineage.contains(&call.token.claims.grant) {
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            "a node may revoke only its own grant and grants derived from it",
        ));
    }
    revoke_entry(
        &state,
        call.actor(),
        RevokeBody::Grant {
            grant: body.grant,
            reason: body.reason,
        },
    )
    .await
}

/// The root public keys that verify tokens.
///
/// Public. Retired keys verify until `VAULT_TOKEN_MAX_TTL_SECS` after retirement.
#[utoipa::path(
    get,
    path = "/v1/tokens/keys",
    tag = "tokens",
    responses(
        (status = 200, body = RootKeys),
        Errors,
    ),
)]
pub async fn keys(State(state): State<VaultState>) -> Result<Json<RootKeys>, ApiError> {
    let keys = state
        .root_keys()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|k| RootKey {
            kid: k.row.kid,
            public_key: hex::encode(&k.row.public_key),
            state: k.state,
            current: k.state == KeyState::Current,
            activates_at_ms: k.row.from_ms(),
            retired_at_ms: k.retired_at_ms,
            verify_until_ms: k.verify_until_ms,
            revoked_at_ms: k.row.revoked_at_ms,
        })
        .collect();
    Ok(Json(RootKeys { keys }))
}

/// Announce a new root key, which signs from `VAULT_ROOT_KEY_ANNOUNCE_SECS` later.
///
/// The key verifies everywhere at once (the revocation feed tells every follower to read the
/// keys), so no token it signs is refused anywhere. The current key signs until then and
/// verifies for `VAULT_TOKEN_MAX_TTL_SECS` after.
#[utoipa::path(
    post,
    path = "/v1/tokens/keys/rotate",
    tag = "tokens",
    responses(
        (status = 200, body = RotatedKey, description = "The announced key."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn rotate(
    State(state): State<VaultState>,
    _: Management,
) -> Result<Json<RotatedKey>, ApiError> {
    state
        .audit(AuditEvent::new(
            "service:management",
            "token.rotate_root_key",
            "vault",
            Outcome::Success,
        ))
        .await?;
    let current_kid = state.ring().current_id();
    let row = state.rotate_root_key().await?;
    Ok(Json(RotatedKey {
        kid: row.kid,
        activates_at_ms: row.from_ms(),
        current_kid,
    }))
}

/// `POST /v1/tokens/keys/rotate`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedKey {
    /// The announced key's id.
    kid: i64,
    /// It signs every token from then (unix ms).
    activates_at_ms: i64,
    /// The key that signs until then.
    current_kid: u32,
}

/// `POST /v1/tokens/keys/{kid}/revoke`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyBody {
    /// Why (1 to 1024 bytes), kept in the feed and the audit log.
    reason: String,
}

/// `POST /v1/tokens/keys/{kid}/revoke`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedKey {
    /// The revoked key.
    kid: u32,
    /// The feed entry that revokes it everywhere.
    entry: FeedEntry,
    /// When the revoked key was the signing key: its replacement, which signs at once.
    replacement_kid: Option<i64>,
}

/// Revoke a root key now (its private half may be exposed).
///
/// Every token it signed is refused wherever the revocation feed reaches, within a second. When
/// it is the signing key a new key replaces it at once, unannounced: tokens the new key signs
/// may be refused until followers have read it (well under a second for a follower in sync).
#[utoipa::path(
    post,
    path = "/v1/tokens/keys/{kid}/revoke",
    tag = "tokens",
    params(("kid" = u32, Path, description = "The key's id.")),
    request_body = RevokeKeyBody,
    responses(
        (status = 200, body = RevokedKey),
        (status = 404, body = ErrorBody, description = "`not_found`: no unrevoked key has this id."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn revoke_key(
    State(state): State<VaultState>,
    _: Management,
    Path(kid): Path<u32>,
    JsonBody(body): JsonBody<RevokeKeyBody>,
) -> Result<Json<RevokedKey>, ApiError> {
    if body.reason.is_empty() || body.reason.len() > 1024 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "reason is 1 to 1024 bytes",
        ));
    }
    // Known and not yet revoked: checked before the audit record, so an unknown id is not
    // recorded as a revocation (the transaction checks again).
    let known = state
        .root_keys()
        .await
        .map_err(ApiError::internal)?
        .iter()
        .any(|k| k.row.kid == i64::from(kid) && k.state != KeyState::Revoked);
    if !known {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no unrevoked root key has this id",
        ));
    }
    state
        .audit(
            AuditEvent::new(
                "service:management",
                "token.revoke_root_key",
                format!("root_key:{kid}"),
                Outcome::Success,
            )
            .with_details(json!({ "reason": body.reason })),
        )
        .await?;
    let Some((replacement, entry)) = state.revoke_root_key(kid, &body.reason).await? else {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no unrevoked root key has this id",
        ));
    };
    Ok(Json(RevokedKey {
        kid,
        entry,
        replacement_kid: replacement.map(|r| r.kid),
    }))
}

/// Feed query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    after: i64,
    /// Long-poll up to this many seconds (max 30) when nothing is new.
    #[serde(default)]
    wait_secs: u64,
}

/// Revocation feed entries after a sequence number, oldest first, without gaps.
///
/// At most 1000 a page. Long-polls up to `wait_secs` (at most 30) when nothing is new.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    tag = "revocations",
    params(FeedQuery),
    responses(
        (status = 200, body = FeedPage, description = "`head` is the feed's last sequence number."),
        ServiceErrors,
    ),
    security(("feed_key" = []), ("management_key" = [])),
)]
pub async fn feed(
    State(state): State<VaultState>,
    _: Follower,
    Query(q): Query<FeedQuery>,
) -> Result<Json<FeedPage>, ApiError> {
    const PAGE: i64 = 1000;
    if state.revocations.head() <= q.after && q.wait_secs > 0 {
        let mut rx = state.revocations.subscribe();
        let wait = Duration::from_secs(q.wait_secs.min(30));
        let _ = tokio::time::timeout(wait, rx.wait_for(|head| *head > q.after)).await;
    }
    let entries = state
        .store
        .feed_after(q.after, PAGE)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(FeedPage {
        head: state.revocations.head(),
        entries,
    }))
}

/// Every revoked id and current epoch, as of `head`.
///
/// A fresh follower loads it, then follows the feed after `head`.
#[utoipa::path(
    get,
    path = "/v1/revocations/snapshot",
    tag = "revocations",
    responses(
        (status = 200, body = Snapshot, description = "Every revoked grant and block id, and every current epoch."),
        ServiceErrors,
    ),
    security(("feed_key" = []), ("management_key" = [])),
)]
pub async fn snapshot(State(state): State<VaultState>, _: Follower) -> Json<Snapshot> {
    Json(state.revocations.snapshot())
}
