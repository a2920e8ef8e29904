//! Roles and the actions each may perform: built-in defaults, or an RBAC file that names every
//! role explicitly. A file that cannot be read exactly as meant is refused at start (fail
//! closed): an unknown role or action, a missing role, a key out of place, or a mapping in
//! which no role can manage users (nobody could ever repair it from the API).
//!
//! ```toml
//! # Every role must be listed; "*" grants every action.
//! [roles]
//! admin = ["*"]
//! responder = ["users:read", "tokens:revoke", "nodes:disable", "vault:lock"]
//! auditor = ["audit:read", "audit:export", "approvals:request"]
//! member = ["nodes:enroll", "approvals:request"]
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use serde::Deserialize;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Manages users, groups and policies; decides approvals.
    Admin,
    /// Incident response: revokes tokens, disables nodes, locks vaults.
    Responder,
    /// Reads and exports the audit log.
    Auditor,
    /// Enrolls and runs their own nodes.
    Member,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Self; 4] = [Self::Admin, Self::Responder, Self::Auditor, Self::Member];

    /// The name used in the API, the RBAC file and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Responder => "responder",
            Self::Auditor => "auditor",
            Self::Member => "member",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = RbacError;
    fn from_str(s: &str) -> Result<Self, RbacError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RbacError::UnknownRole(s.to_owned()))
    }
}

/// Something a user may do. Whether it also needs a human approval is the approval
/// policy's business, not this mapping's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Invite, delete and change the role of users.
    UsersManage,
    /// Search users, nodes and groups.
    UsersRead,
    /// Create groups, set their members and per-node ceilings.
    GroupsManage,
    /// Create enrollment codes for nodes.
    NodesEnroll,
    /// Disable a node.
    NodesDisable,
    /// Revoke every token of a user, node or group.
    TokensRevoke,
    /// Lock a group's vault.
    VaultLock,
    /// Take part in a vault unlock (submit a share, request a threshold unlock).
    VaultUnlock,
    /// Ask for an operation that needs approval.
    ApprovalsRequest,
    /// Approve or deny someone else's request.
    ApprovalsDecide,
    /// Read the audit log and verify its chain.
    AuditRead,
    /// Export the audit log.
    AuditExport,
    /// Read every service's health and the relay's statistics.
    HealthRead,
    /// Create emergency access.
    EmergencyAccess,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Self; 14] = [
        Self::UsersManage,
        Self::UsersRead,
        Self::GroupsManage,
        Self::NodesEnroll,
        Self::NodesDisable,
        Self::TokensRevoke,
        Self::VaultLock,
        Self::VaultUnlock,
        Self::ApprovalsRequest,
        Self::ApprovalsDecide,
        Self::AuditRead,
        Self::AuditExport,
        Self::HealthRead,
        Self::EmergencyAccess,
    ];

    /// Admin actions: they need a sign-in younger than the re-authentication window
    /// (`MANAGEMENT_REAUTH_SECS`). Incident response (revoking, disabling, locking) does not:
    /// it only takes access away, and a responder must not be slowed down mid-incident.
    pub fn needs_recent_login(self) -> bool {
        matches!(
            self,
            Self::UsersManage
                | Self::GroupsManage
                | Self::ApprovalsDecide
                | Self::AuditExport
                | Self::EmergencyAccess
        )
    }

    /// The name used in the RBAC file, the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UsersManage => "users:manage",
            Self::UsersRead => "users:read",
            Self::GroupsManage => "groups:manage",
            Self::NodesEnroll => "nodes:enroll",
            Self::NodesDisable => "nodes:disable",
            Self::TokensRevoke => "tokens:revoke",
            Self::VaultLock => "vault:lock",
            Self::VaultUnlock => "vault:unlock",
            Self::ApprovalsRequest => "approvals:request",
            Self::ApprovalsDecide => "approvals:decide",
            Self::AuditRead => "audit:read",
            Self::AuditExport => "audit:export",
            Self::HealthRead => "health:read",
            Self::EmergencyAccess => "emergency:access",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an RBAC file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacError {
    /// Not TOML, or keys other than `[roles]` and the four role names.
    #[error("the RBAC file is not valid: {0}")]
    Syntax(String),
    /// A role name that does not exist.
    #[error("unknown role {0:?}; roles are admin, responder, auditor and member")]
    UnknownRole(String),
    /// An action name that does not exist.
    #[error("role {role}: unknown action {action:?} (see docs/management.md for the list)")]
    UnknownAction {
        /// The role it was granted to.
        role: Role,
        /// The name as written.
        action: String,
    },
    /// A role the file does not list: every role must be stated, so that a forgotten line
    /// cannot silently mean "the defaults" or "nothing".
    #[error("the RBAC file does not list role {0}; list every role (an empty list grants nothing)")]
    MissingRole(Role),
    /// No role holds `users:manage`.
    #[error(
        "no role holds users:manage, so nobody could change a role again; grant it to at least one role"
    )]
    NobodyManagesUsers,
}

/// Which actions each role may perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rbac {
    grants: BTreeMap<Role, BTreeSet<Action>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    roles: BTreeMap<String, Vec<String>>,
}

impl Rbac {
    /// The built-in mapping (docs/management.md lists it).
    pub fn builtin() -> Self {
        use Action::*;
        let grants = [
            (Role::Admin, Action::ALL.to_vec()),
            (
                Role::Responder,
                vec![
                    UsersRead,
                    NodesDisable,
                    TokensRevoke,
                    VaultLock,
                    ApprovalsRequest,
                    AuditRead,
                    HealthRead,
                ],
            ),
            (
                Role::Auditor,
                vec![
                    UsersRead,
                    AuditRead,
                    AuditExport,
                    ApprovalsRequest,
                    HealthRead,
                ],
            ),
            (
                Role::Member,
                vec![NodesEnroll, VaultUnlock, ApprovalsRequest],
            ),
        ];
        Self {
            grants: grants
                .into_iter()
                .map(|(role, actions)| (role, actions.into_iter().collect()))
                .collect(),
        }
    }

    /// Read an RBAC file's text.
    pub fn parse(text: &str) -> Result<Self, RbacError> {
        let file: File = toml::from_str(text).map_err(|e| RbacError::Syntax(e.to_string()))?;
        let mut grants = BTreeMap::new();
        for (name, actions) in file.roles {
            let role: Role = name.parse()?;
            let mut granted = BTreeSet::new();
            for action in actions {
                if action == "*" {
                    granted.extend(Action::ALL);
                    continue;
                }
                let found = Action::ALL
                    .into_iter()
                    .find(|a| a.as_str() == action)
                    .ok_or(RbacError::UnknownAction { role, action })?;
                granted.insert(found);
            }
            grants.insert(role, granted);
        }
        if let Some(missing) = Role::ALL.into_iter().find(|r| !grants.contains_key(r)) {
            return Err(RbacError::MissingRole(missing));
        }
        let rbac = Self { grants };
        if !Role::ALL
            .into_iter()
            .any(|r| rbac.allows(r, Action::UsersManage))
        {
            return Err(RbacError::NobodyManagesUsers);
        }
        Ok(rbac)
    }

    /// Whether `role` may perform `action`.
    pub fn allows(&self, role: Role, action: Action) -> bool {
        self.grants.get(&role).is_some_and(|a| a.contains(&action))
    }

    /// The actions `role` may perform, in documentation order.
    pub fn actions(&self, role: Role) -> impl Iterator<Item = Action> + '_ {
        self.grants.get(&role).into_iter().flatten().copied()
    }
}

impl Default for Rbac {
    fn default() -> Self {
        Self::builtin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[roles]
admin = ["*"]
responder = ["tokens:revoke"]
auditor = ["audit:read", "audit:read"]
member = []
"#;

    #[test]
    fn the_builtin_mapping_gives_admins_everything_and_members_only_their_own_nodes() {
        let rbac = Rbac::builtin();
        for action in Action::ALL {
            assert!(rbac.allows(Role::Admin, action), "{action}");
        }
        assert!(rbac.allows(Role::Responder, Action::TokensRevoke));
        assert!(!rbac.allows(Role::Responder, Action::ApprovalsDecide));
        assert!(!rbac.allows(Role::Responder, Action::UsersManage));
        assert!(rbac.allows(Role::Auditor, Action::AuditExport));
        assert!(!rbac.allows(Role::Auditor, Action::TokensRevoke));
        assert_eq!(
            rbac.actions(Role::Member).collect::<Vec<_>>(),
            [
                Action::NodesEnroll,
                Action::VaultUnlock,
                Action::ApprovalsRequest
            ]
        );
    }

    #[test]
    fn a_file_that_lists_every_role_replaces_the_builtin_mapping() {
        let rbac = Rbac::parse(FULL).expect("valid");
        assert!(rbac.allows(Role::Admin, Action::EmergencyAccess));
        assert_eq!(
            rbac.actions(Role::Responder).collect::<Vec<_>>(),
            [Action::TokensRevoke]
        );
        assert_eq!(
            rbac.actions(Role::Auditor).collect::<Vec<_>>(),
            [Action::AuditRead]
        );
        assert_eq!(rbac.actions(Role::Member).count(), 0);
        assert!(!rbac.allows(Role::Member, Action::NodesEnroll));
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let names: BTreeSet<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len(), "action names are distinct");
    }

    #[test]
    fn a_file_not_read_exactly_as_meant_is_refused() {
        let cases: [(&str, RbacError); 5] = [
            (
                "[roles]\nadmin = [\"*\"]\nresponder = []\nauditor = []\nmember = []\nowner = []\n",
                RbacError::UnknownRole("owner".into()),
            ),
            (
                "[roles]\nadmin = [\"*\"]\nresponder = [\"tokens:revoke-all\"]\nauditor = []\nmember = []\n",
                RbacError::UnknownAction {
                    role: Role::Responder,
                    action: "tokens:revoke-all".into(),
                },
            ),
            (
                "[roles]\nadmin = [\"*\"]\nresponder = []\nmember = []\n",
                RbacError::MissingRole(Role::Auditor),
            ),
            (
                "[roles]\nadmin = [\"audit:read\"]\nresponder = []\nauditor = []\nmember = []\n",
                RbacError::NobodyManagesUsers,
            ),
            (
                // Matching is exact: no case folding, no surrounding spaces.
                "[roles]\nadmin = [\"*\"]\nresponder = [\"Tokens:Revoke\"]\nauditor = []\nmember = []\n",
                RbacError::UnknownAction {
                    role: Role::Responder,
                    action: "Tokens:Revoke".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Rbac::parse(text), Err(expected), "{text}");
        }
        for text in [
            "",
            "roles = 1",
            "[roles]\nadmin = \"*\"\n",
            "[roles]\nadmin = [1]\n",
            "[rolez]\nadmin = [\"*\"]\n",
            "[roles]\nadmin = [\"*\"]\nresponder = []\nauditor = []\nmember = []\n[extra]\n",
            "\u{0}",
        ] {
            assert!(
                matches!(Rbac::parse(text), Err(RbacError::Syntax(_))),
                "{text:?} must be a syntax error, got {:?}",
                Rbac::parse(text)
            );
        }
    }
}
