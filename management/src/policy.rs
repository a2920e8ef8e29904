//! Approval policies: which operations need a human approval, how many approvals or denials
//! decide, who may review, and how long a request may live.
//!
//! ```toml
//! # MANAGEMENT_APPROVAL_POLICY_FILE: every key optional; unlisted operations keep the defaults.
//! [operations."token.mint"]
//! approvals = 2          # approvals that approve (default 1)
//! denials = 1            # denials that deny (default 1)
//! reviewers = ["admin"]  # roles that may decide (they also need approvals:decide)
//! max_ttl_secs = 86400   # longest a request may ask to live (default 1 day)
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::rbac::Role;

pub use keymesh_proto::api::approvals::Operation;

/// How one operation's requests are decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Approvals that approve.
    pub approvals: u32,
    /// Denials that deny.
    pub denials: u32,
    /// Roles whose holders may decide (with `approvals:decide`).
    pub reviewers: Vec<Role>,
    /// Longest lifetime a request may ask for.
    pub max_ttl_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            approvals: 1,
            denials: 1,
            reviewers: vec![Role::Admin],
            max_ttl_secs: 86_400,
        }
    }
}

/// Every operation's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies(BTreeMap<Operation, Policy>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    operations: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    approvals: Option<u32>,
    denials: Option<u32>,
    reviewers: Option<Vec<String>>,
    max_ttl_secs: Option<u64>,
}

impl Policies {
    /// The built-in policies: one admin approves or denies, requests live at most a day.
    pub fn builtin() -> Self {
        Self(
            Operation::ALL
                .into_iter()
                .map(|o| (o, Policy::default()))
                .collect(),
        )
    }

    /// Parse a policy file over the built-in policies.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut policies = Self::builtin();
        for (name, entry) in file.operations {
            let op: Operation = name.parse()?;
            let policy = policies.0.entry(op).or_default();
            if let Some(n) = entry.approvals {
                policy.approvals = n;
            }
            if let Some(n) = entry.denials {
                policy.denials = n;
            }
            if let Some(n) = entry.max_ttl_secs {
                policy.max_ttl_secs = n;
            }
            if let Some(roles) = entry.reviewers {
                policy.reviewers = roles
                    .iter()
                    .map(|r| r.parse::<Role>().map_err(|e| format!("{op}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            if policy.approvals == 0 || policy.denials == 0 {
                return Err(format!(
                    "{op}: approvals and denials must be at least 1 (an approval always needs a human)"
                ));
            }
            if policy.reviewers.is_empty() {
                return Err(format!("{op}: name at least one reviewer role"));
            }
            if policy.max_ttl_secs == 0 {
                return Err(format!("{op}: max_ttl_secs must be at least 1"));
            }
        }
        Ok(policies)
    }

    /// The policy of `op`.
    pub fn of(&self, op: Operation) -> Policy {
        self.0.get(&op).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policies_need_one_admin() {
        let p = Policies::builtin().of(Operation::TokenMint);
        assert_eq!((p.approvals, p.denials), (1, 1));
        assert_eq!(p.reviewers, vec![Role::Admin]);
    }

    #[test]
    fn a_file_overrides_only_what_it_names_and_refuses_nonsense() {
        let p = Policies::parse(
            "[operations.\"token.mint\"]\napprovals = 2\nreviewers = [\"admin\", \"responder\"]\n",
        )
        .expect("parse");
        let mint = p.of(Operation::TokenMint);
        assert_eq!(
            (mint.approvals, mint.denials, mint.reviewers.len()),
            (2, 1, 2)
        );
        assert_eq!(p.of(Operation::UserDelete), Policy::default());
        for bad in [
            "[operations.\"token.mint\"]\napprovals = 0\n",
            "[operations.\"token.mint\"]\nreviewers = []\n",
            "[operations.\"token.mint\"]\nreviewers = [\"root\"]\n",
            "[operations.\"nope\"]\napprovals = 1\n",
            "[operations.\"token.mint\"]\nthreshold = 1\n",
        ] {
            assert!(Policies::parse(bad).is_err(), "{bad}");
        }
    }
}
