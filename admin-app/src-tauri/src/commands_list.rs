//! Every command the window may call (admin-app/IPC.md); the build script turns each into an
//! `allow-<name>` permission and capabilities/main.json grants exactly these.

/// The command names.
pub const COMMANDS: &[&str] = &[
    "status",
    "configure",
    "unlock_store",
    "login_start",
    "login_code",
    "login_poll",
    "logout",
    "approvals_list",
    "approval_decide",
    "approval_create",
    "approval_execute",
    "share_key_create",
    "share_submit",
    "directory",
    "revoke_tokens",
    "disable_node",
    "disable_user",
    "lock_vault",
    "audit_search",
    "audit_verify",
    "audit_export",
    "health",
];
