//! The approvals API (`/v1/approvals`, docs/management.md): the operations that need a human
//! approval, a request as callers see it, and reviewers' decisions. Management serializes these
//! and Keymesh Admin reads them, so neither repeats the other's field names or operation list.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An operation that needs approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// A token with rights above the node's ceiling.
    #[serde(rename = "token.mint")]
    TokenMint,
    /// A group vault threshold unlock.
    #[serde(rename = "vault.unlock")]
    VaultUnlock,
    /// Export of the audit log.
    #[serde(rename = "audit.export")]
    AuditExport,
    /// Deleting a user.
    #[serde(rename = "user.delete")]
    UserDelete,
    /// Creating emergency access.
    #[serde(rename = "emergency.access")]
    EmergencyAccess,
    /// Disabling approvals for a group.
    #[serde(rename = "group.approvals.disable")]
    GroupApprovalsDisable,
}

impl Operation {
    /// Every operation, in documentation order.
    pub const ALL: [Self; 6] = [
        Self::TokenMint,
        Self::VaultUnlock,
        Self::AuditExport,
        Self::UserDelete,
        Self::EmergencyAccess,
        Self::GroupApprovalsDisable,
    ];

    /// Operations the requester runs with `POST /v1/approvals/{id}/execute` once approved (a
    /// token is redeemed by its node, an export streamed from its own endpoint).
    pub const fn executed_by_requester(self) -> bool {
        !matches!(self, Self::TokenMint | Self::AuditExport)
    }

    /// Operations a user asks for with `POST /v1/approvals` (a token is asked for by its node).
    pub const fn requested_by_users(self) -> bool {
        !matches!(self, Self::TokenMint)
    }

    /// Wire and audit name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenMint => "token.mint",
            Self::VaultUnlock => "vault.unlock",
            Self::AuditExport => "audit.export",
            Self::UserDelete => "user.delete",
            Self::EmergencyAccess => "emergency.access",
            Self::GroupApprovalsDisable => "group.approvals.disable",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown operation {s:?}"))
    }
}

/// An approval request as callers see it (`status` already `expired` past its deadline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// Id.
    pub id: String,
    /// Operation name: `token.mint`, `vault.unlock`, `audit.export`, `user.delete`,
    /// `emergency.access` or `group.approvals.disable`.
    pub operation: String,
    /// The operation's parameters (`token.mint`: `node_id`, `group`, `rights`, `ttl_secs`,
    /// `excess`; other operations: docs/management.md).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Value,
    /// Why the requester asks.
    pub reason: String,
    /// `user:ID` or `node:ID`.
    pub requester: String,
    /// The user behind the request (a node's owner for node requests): never a reviewer of it.
    pub requester_user: String,
    /// `pending`, `approved`, `denied`, `executed` or `expired`.
    pub status: String,
    /// Approvals that approve.
    pub approvals_needed: i64,
    /// Denials that deny.
    pub denials_needed: i64,
    /// The roles that may decide it.
    pub reviewer_roles: Vec<String>,
    /// Made, unix ms.
    pub created_at_ms: i64,
    /// Deadline to decide and to execute, unix ms.
    pub expires_at_ms: i64,
    /// When the final decision fell.
    pub decided_at_ms: Option<i64>,
    /// When it was executed.
    pub executed_at_ms: Option<i64>,
}

impl Approval {
    /// The operation, when this build knows it.
    pub fn known_operation(&self) -> Option<Operation> {
        self.operation.parse().ok()
    }
}

/// A reviewer's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    /// `user:ID`.
    pub reviewer: String,
    /// `approve` or `deny`.
    pub decision: String,
    /// Why.
    pub reason: String,
    /// When, unix ms.
    pub decided_at_ms: i64,
}

/// `GET /v1/approvals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalList {
    /// Newest first.
    pub approvals: Vec<Approval>,
}

/// `GET /v1/approvals/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalShown {
    /// The request.
    pub approval: Approval,
    /// Its decisions so far, oldest first.
    pub decisions: Vec<Decision>,
    /// The open unlock ceremony an executed `vault.unlock` request opened, for callers with
    /// vault:unlock (`null` otherwise), so share holders find it.
    pub ceremony: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_their_wire_names() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
            let json = serde_json::to_string(&op).expect("json");
            assert_eq!(json, format!("\"{op}\""));
        }
        assert!("token.burn".parse::<Operation>().is_err());
        let by_requester: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|o| o.executed_by_requester())
            .collect();
        assert_eq!(
            by_requester,
            [
                Operation::VaultUnlock,
                Operation::UserDelete,
                Operation::EmergencyAccess,
                Operation::GroupApprovalsDisable
            ]
        );
    }
}
