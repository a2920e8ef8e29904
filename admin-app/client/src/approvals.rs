//! An approval request as the inbox shows it: the server's view plus what the app works out
//! for this admin (own request? may decide? counts, e-mail addresses, the unlock ceremony).

use std::collections::{HashMap, HashSet};

use keymesh_proto::api::approvals::{Approval, ApprovalShown, Decision, Operation};
use serde::Serialize;

/// Who is looking.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The signed-in user's id.
    pub user_id: String,
    /// Their actions (from `GET /v1/session`).
    pub actions: Vec<String>,
    /// User id to e-mail address, where known.
    pub emails: HashMap<String, String>,
    /// Ceremonies this admin already sent a share to.
    pub shares_sent: HashSet<String>,
}

impl Viewer {
    fn may(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }

    fn email_of(&self, principal: &str) -> Option<String> {
        principal
            .strip_prefix("user:")
            .and_then(|id| self.emails.get(id))
            .cloned()
    }
}

/// A reviewer's decision with their address, where known.
#[derive(Debug, Clone, Serialize)]
pub struct ShownDecision {
    /// The decision as the server gave it.
    #[serde(flatten)]
    pub decision: Decision,
    /// The reviewer's e-mail address.
    pub reviewer_email: Option<String>,
}

/// One request as the inbox shows it: the server's request and what the app works out for
/// this admin.
#[derive(Debug, Clone, Serialize)]
pub struct InboxItem {
    /// The request as the server gave it.
    #[serde(flatten)]
    pub approval: Approval,
    /// The requester's e-mail address, where known.
    pub requester_email: Option<String>,
    /// Approvals so far.
    pub approvals: usize,
    /// Denials so far.
    pub denials: usize,
    /// The decisions, oldest first.
    pub decisions: Vec<ShownDecision>,
    /// This admin asked for it.
    pub own: bool,
    /// This admin may decide it now (pending, not their own, not voted, approvals:decide).
    pub can_decide: bool,
    /// This admin may execute it now (their own, approved, executed by its requester).
    pub can_execute: bool,
    /// This admin already sent a share to its unlock ceremony.
    pub share_submitted: bool,
    /// The unlock ceremony an executed `vault.unlock` opened.
    pub ceremony: Option<String>,
    /// Shown without its decisions, which could not be read.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub decisions_unavailable: bool,
}

/// The inbox's item from `GET /v1/approvals/{id}`.
pub fn item(detail: &ApprovalShown, viewer: &Viewer) -> InboxItem {
    let a = &detail.approval;
    let decisions: Vec<ShownDecision> = detail
        .decisions
        .iter()
        .map(|d| ShownDecision {
            decision: d.clone(),
            reviewer_email: viewer.email_of(&d.reviewer),
        })
        .collect();
    let count = |kind: &str| {
        decisions
            .iter()
            .filter(|d| d.decision.decision == kind)
            .count()
    };
    let me = format!("user:{}", viewer.user_id);
    let own = a.requester_user == viewer.user_id;
    let voted = decisions.iter().any(|d| d.decision.reviewer == me);
    let status = a.status.as_str();
    let executed_here = a
        .known_operation()
        .is_some_and(Operation::executed_by_requester);
    let ceremony = detail.ceremony.clone();
    InboxItem {
        requester_email: viewer.email_of(&a.requester),
        approvals: count("approve"),
        denials: count("deny"),
        own,
        can_decide: status == "pending" && !own && !voted && viewer.may("approvals:decide"),
        can_execute: status == "approved" && own && executed_here,
        share_submitted: ceremony
            .as_ref()
            .is_some_and(|c| viewer.shares_sent.contains(c)),
        ceremony,
        decisions,
        approval: a.clone(),
        decisions_unavailable: false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn detail(requester_user: &str, status: &str, decisions: Value) -> ApprovalShown {
        serde_json::from_value(json!({
            "approval": {
                "id": "a1", "operation": "vault.unlock", "params": {"group": "g"},
                "reason": "incident 42", "requester": format!("user:{requester_user}"),
                "requester_user": requester_user, "status": status,
                "approvals_needed": 2, "denials_needed": 1, "reviewer_roles": ["admin"],
                "created_at_ms": 1, "expires_at_ms": 2,
                "decided_at_ms": null, "executed_at_ms": null,
            },
            "decisions": decisions,
            "ceremony": null,
        }))
        .expect("the server's shape")
    }

    /// The item as the window receives it.
    fn item(detail: &ApprovalShown, viewer: &Viewer) -> Value {
        serde_json::to_value(super::item(detail, viewer)).expect("json")
    }

    fn admin(id: &str) -> Viewer {
        Viewer {
            user_id: id.into(),
            actions: vec!["approvals:decide".into()],
            emails: HashMap::from([
                ("u1".into(), "one@example.com".into()),
                ("u2".into(), "two@example.com".into()),
            ]),
            shares_sent: HashSet::new(),
        }
    }

    #[test]
    fn someone_elses_pending_request_is_decidable_once() {
        let d = detail("u1", "pending", json!([]));
        let i = item(&d, &admin("u2"));
        assert_eq!(i["own"], false);
        assert_eq!(i["can_decide"], true);
        assert_eq!(i["requester_email"], "one@example.com");
        let voted = detail(
            "u1",
            "pending",
            json!([{"reviewer": "user:u2", "decision": "approve", "reason": "ok", "decided_at_ms": 5}]),
        );
        let i = item(&voted, &admin("u2"));
        assert_eq!(
            (i["approvals"].clone(), i["denials"].clone()),
            (json!(1), json!(0))
        );
        assert_eq!(i["can_decide"], false, "a reviewer votes once");
        assert_eq!(i["decisions"][0]["reviewer_email"], "two@example.com");
    }

    #[test]
    fn ones_own_request_is_never_decidable_but_executable_once_approved() {
        let i = item(&detail("u1", "pending", json!([])), &admin("u1"));
        assert_eq!(
            (i["own"].clone(), i["can_decide"].clone()),
            (json!(true), json!(false))
        );
        let i = item(&detail("u1", "approved", json!([])), &admin("u1"));
        assert_eq!(i["can_execute"], true);
        let i = item(&detail("u1", "approved", json!([])), &admin("u2"));
        assert_eq!(i["can_execute"], false);
        let mut viewer = admin("u2");
        viewer.actions.clear();
        let i = item(&detail("u1", "pending", json!([])), &viewer);
        assert_eq!(i["can_decide"], false, "no approvals:decide, no decision");
    }

    #[test]
    fn an_open_ceremony_and_a_sent_share_are_shown() {
        let mut d = detail("u1", "executed", json!([]));
        d.ceremony = Some("c9".into());
        let mut viewer = admin("u2");
        assert_eq!(item(&d, &viewer)["share_submitted"], false);
        viewer.shares_sent.insert("c9".into());
        let i = item(&d, &viewer);
        assert_eq!(
            (i["ceremony"].clone(), i["share_submitted"].clone()),
            (json!("c9"), json!(true))
        );
    }
}
