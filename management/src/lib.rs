//! keymesh-management: users and roles, magic-link login, sessions, human approvals, node
//! enrollment, responder revocation and the central audit log (issue 5; built in slices, see
//! docs/management.md for what exists so far).

pub mod rbac;

pub use rbac::{Action, Rbac, RbacError, Role};
