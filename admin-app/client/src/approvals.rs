//! An approval request as the inbox shows it: the server's view plus what the app works out
//! for this admin (own request? may decide? counts, e-mail addresses, the unlock ceremony).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

/// Operations the requester runs with `POST /v1/approvals/{id}/execute` once approved.
const EXECUTABLE: [&str; 4] = [
    "user.delete",
    "vault.unlock",
    "emergency.access",
    "group.approvals.disable",
];

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

    fn email_of(&self, principal: &str) -> Value {
        principal
            .strip_prefix("user:")
            .and_then(|id| self.emails.get(id))
            .map_or(Value::Null, |e| Value::from(e.as_str()))
    }
}

/// The inbox's item from `{approval, decisions, ceremony?}` (`GET /v1/approvals/{id}`).
pub fn item(detail: &Value, viewer: &Viewer) -> Value {
    let a = &detail["approval"];
    let decisions: Vec<Value> = detail["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    let mut d = d.clone();
                    d["reviewer_email"] = viewer.email_of(d["reviewer"].as_str().unwrap_or(""));
                    d
                })
                .collect()
        })
        .unwrap_or_default();
    let count = |kind: &str| decisions.iter().filter(|d| d["decision"] == kind).count();
    let me = format!("user:{}", viewer.user_id);
    let own = a["requester_user"] == viewer.user_id.as_str();
    let voted = decisions.iter().any(|d| d["reviewer"] == me.as_str());
    let status = a["status"].as_str().unwrap_or("");
    let operation = a["operation"].as_str().unwrap_or("");
    let ceremony = detail["ceremony"].as_str().map(str::to_owned);
    let mut out = a.clone();
    out["requester_email"] = viewer.email_of(a["requester"].as_str().unwrap_or(""));
    out["approvals"] = json!(count("approve"));
    out["denials"] = json!(count("deny"));
    out["decisions"] = Value::Array(decisions);
    out["own"] = json!(own);
    out["can_decide"] =
        json!(status == "pending" && !own && !voted && viewer.may("approvals:decide"));
    out["can_execute"] = json!(status == "approved" && own && EXECUTABLE.contains(&operation));
    out["share_submitted"] = json!(
        ceremony
            .as_ref()
            .is_some_and(|c| viewer.shares_sent.contains(c))
    );
    out["ceremony"] = ceremony.map_or(Value::Null, Value::from);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(requester_user: &str, status: &str, decisions: Value) -> Value {
        json!({
            "approval": {
                "id": "a1", "operation": "vault.unlock", "params": {"group": "g"},
                "reason": "incident 42", "requester": format!("user:{requester_user}"),
                "requester_user": requester_user, "status": status,
                "approvals_needed": 2, "denials_needed": 1,
                "created_at_ms": 1, "expires_at_ms": 2,
            },
            "decisions": decisions,
        })
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
        d["ceremony"] = json!("c9");
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
