//! Issuing tokens: lifetimes, the rights a token may carry, what a derived token inherits, the
//! audited refusal of anything above a ceiling, and signing under the current root key. The
//! routes in `routes/tokens.rs` parse, call these and answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::{
        Ceiling, Excess, Right,
        token::{Claims, MAX_RIGHTS, Scope},
    },
};
use serde::Serialize;
use serde_json::json;

use crate::{
    auth::TOKEN_B64,
    state::VaultState,
    store::{GrantRow, NodeRow},
};

/// What a new token carries besides its node and grant.
#[derive(Debug)]
pub(crate) struct NewToken {
    pub(crate) lineage: Vec<String>,
    pub(crate) rights: Vec<Right>,
    pub(crate) expires_at: u64,
    pub(crate) inherited: Inherited,
}

/// What a new token inherits from the token it derives from.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    /// Keep these epochs (refresh) instead of the node's current ones.
    pub(crate) epochs: Option<[(Scope, i64); 3]>,
    /// Delegators' node and user epochs.
    pub(crate) ancestors: Vec<(Scope, String, i64)>,
    /// Latest possible expiry.
    pub(crate) expiry_cap: Option<u64>,
}

impl Inherited {
    /// For a token delegated by the holder of `granter`: the granter's own node and user
    /// epochs join its ancestors, and the expiry can never pass the granter's.
    pub(crate) fn delegated_from(granter: &Claims) -> Self {
        let mut ancestors = granter.ancestors.clone();
        ancestors.push((
            Scope::Node,
            granter.node.clone(),
            granter.epoch(Scope::Node),
        ));
        ancestors.push((
            Scope::User,
            granter.user.clone(),
            granter.epoch(Scope::User),
        ));
        Self {
            epochs: None,
            ancestors,
            expiry_cap: Some(
                granter
                    .expiry_cap
                    .map_or(granter.expires_at, |c| c.min(granter.expires_at)),
            ),
        }
    }
}

/// A token as returned to its requester.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// URL-safe base64 token.
    pub(crate) token: String,
    /// The token's own id.
    pub(crate) token_id: String,
    /// The grant it belongs to (what revocation names).
    pub(crate) grant: String,
    /// Unix seconds.
    pub(crate) expires_at: u64,
}

pub(crate) fn check_rights_count(rights: &[Right]) -> Result<(), ApiError> {
    if rights.is_empty() || rights.len() > MAX_RIGHTS {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("a token carries 1 to {MAX_RIGHTS} rights"),
        ));
    }
    Ok(())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn approval_required(operation: &str, excess: &Excess) -> ApiError {
    ApiError::with_message(
        ErrorCode::ApprovalRequired,
        format!("{operation} asks for more than may be granted without approval"),
    )
    .with_details(json!({ "operation": operation, "excess": excess }))
}

/// Nothing in excess, or an audited `approval_required` naming exactly what is.
pub(crate) async fn refuse_excess(
    state: &VaultState,
    actor: String,
    action: &str,
    node_id: &str,
    excess: &Excess,
) -> Result<(), ApiError> {
    if excess.is_empty() {
        return Ok(());
    }
    state
        .audit_quiet(
            AuditEvent::new(actor, action, format!("node:{node_id}"), Outcome::Denied)
                .with_details(json!({ "excess": excess })),
        )
        .await;
    Err(approval_required(action, excess))
}

pub(crate) fn node_ceiling(node: &NodeRow) -> Result<Ceiling, ApiError> {
    node.ceiling
        .parse()
        .map(Ceiling)
        .map_err(|e: String| ApiError::internal(std::io::Error::other(e)))
}

impl VaultState {
    pub(crate) fn lifetime(&self, requested: Option<u64>) -> Result<Duration, ApiError> {
        let ttl = requested.map_or(self.config.token_ttl, Duration::from_secs);
        if ttl.is_zero() || ttl > self.config.token_max_ttl {
            return Err(ApiError::with_message(
                ErrorCode::InvalidRequest,
                format!(
                    "ttl_secs must be between 1 and {}",
                    self.config.token_max_ttl.as_secs()
                ),
            ));
        }
        Ok(ttl)
    }

    /// Issue a token for `node` under `grant`: with the node's current epochs, or (refresh)
    /// with the epochs, ancestors and cap the token being refreshed carried.
    pub(crate) fn issue(
        &self,
        node: &NodeRow,
        grant: &str,
        new: NewToken,
    ) -> Result<IssuedToken, ApiError> {
        let NewToken {
            lineage,
            rights,
            expires_at,
            inherited,
        } = new;
        let current = [
            (
                Scope::Node,
                self.revocations.epoch(Scope::Node, &node.node_id),
            ),
            (
                Scope::User,
                self.revocations.epoch(Scope::User, &node.user_id),
            ),
            (
                Scope::Group,
                self.revocations.epoch(Scope::Group, &node.group_id),
            ),
        ];
        let expires_at = inherited
            .expiry_cap
            .map_or(expires_at, |cap| expires_at.min(cap));
        let key: [u8; 32] = node
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| ApiError::new(ErrorCode::Internal))?;
        let claims = Claims {
            token_id: uuid::Uuid::new_v4().simple().to_string(),
            grant: grant.to_owned(),
            lineage,
            node: node.node_id.clone(),
            group: node.group_id.clone(),
            user: node.user_id.clone(),
            node_key: key,
            rights,
            expires_at,
            epochs: inherited.epochs.unwrap_or(current),
            ancestors: inherited.ancestors,
            expiry_cap: inherited.expiry_cap,
        };
        let bytes = self.ring().mint(&claims).map_err(ApiError::from)?;
        Ok(IssuedToken {
            token: TOKEN_B64.encode(bytes),
            token_id: claims.token_id,
            grant: claims.grant,
            expires_at,
        })
    }

    /// Record a new grant, then issue its first token: a grant is never issued unrecorded.
    pub(crate) async fn grant_and_issue(
        &self,
        node: &NodeRow,
        grant: &str,
        parent: Option<&str>,
        new: NewToken,
    ) -> Result<IssuedToken, ApiError> {
        self.store
            .insert_grant(&GrantRow {
                grant_id: grant.to_owned(),
                parent_grant: parent.map(str::to_owned),
                node_id: node.node_id.clone(),
                lineage: json!(new.lineage).to_string(),
                rights: json!(new.rights).to_string(),
            })
            .await
            .map_err(ApiError::internal)?;
        self.issue(node, grant, new)
    }

    /// A registered node that is not disabled.
    pub(crate) async fn registered(&self, node_id: &str) -> Result<NodeRow, ApiError> {
        let node = self
            .store
            .node(node_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::with_message(
                    ErrorCode::NotFound,
                    format!("node {node_id} is not registered"),
                )
            })?;
        if node.disabled_at_ms.is_some() {
            return Err(ApiError::with_message(
                ErrorCode::Forbidden,
                format!("node {node_id} is disabled"),
            ));
        }
        Ok(node)
    }
}
