//! keymesh-management: users and roles, magic-link login, sessions, human approvals, node
//! enrollment, responder revocation and the central audit log (issue 5; built in slices, see
//! docs/management.md for what exists so far).

pub mod approval_store;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod ceremonies;
pub mod checkpoints;
pub mod config;
pub mod directory;
pub mod emergency;
pub mod enroll;
pub mod groups;
pub mod imports;
pub mod login;
pub mod mail;
pub mod metrics;
/// The operations that need an approval, one implementation each.
mod operations;
pub mod pages;
pub mod policy;
pub mod rbac;
pub mod responders;
pub mod secrets;
pub mod sessions;
pub mod state;
pub mod store;
pub mod users;
pub mod vault;
pub mod waivers;

pub use config::ManagementConfig;
pub use rbac::{Action, Rbac, RbacError, Role};
pub use state::{ManagementState, StartError};

use axum::Router;
use keymesh_core::ServiceContext;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Every management route with its documentation: `routes!` takes handlers annotated with
/// `#[utoipa::path]`, so the router and the OpenAPI document are built from this one list.
pub fn api() -> OpenApiRouter<ManagementState> {
    OpenApiRouter::default()
        .routes(routes!(login::request_login))
        .routes(routes!(login::poll))
        .routes(routes!(login::code))
        .routes(routes!(login::confirm_page, login::confirm))
        .routes(routes!(sessions::current))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::revoke))
        .routes(routes!(sessions::logout))
        .routes(routes!(users::list, users::invite))
        .routes(routes!(users::disable))
        .routes(routes!(users::enable))
        .routes(routes!(groups::list, groups::create))
        .routes(routes!(groups::show))
        .routes(routes!(groups::add_member, groups::remove_member))
        .routes(routes!(groups::create_code))
        .routes(routes!(ceremonies::vault_status))
        .routes(routes!(ceremonies::open_ceremony))
        .routes(routes!(waivers::enable))
        .routes(routes!(ceremonies::set_share_key))
        .routes(routes!(ceremonies::show))
        .routes(routes!(ceremonies::init))
        .routes(routes!(ceremonies::rekey))
        .routes(routes!(ceremonies::passphrase))
        .routes(routes!(ceremonies::share))
        .routes(routes!(emergency::list))
        .routes(routes!(emergency::end))
        .routes(routes!(groups::nodes))
        .routes(routes!(groups::set_ceiling))
        .routes(routes!(enroll::enroll))
        .routes(routes!(approvals::list, operations::user_request))
        .routes(routes!(approvals::events))
        .routes(routes!(approvals::show))
        .routes(routes!(approvals::decide))
        .routes(routes!(audit::export))
        .routes(routes!(operations::execute))
        .routes(routes!(audit::search))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::checkpoints))
        .routes(routes!(responders::revoke_user))
        .routes(routes!(responders::revoke_node))
        .routes(routes!(responders::revoke_group))
        .routes(routes!(responders::disable_node))
        .routes(routes!(responders::lock_vault))
        .routes(routes!(approvals::node_token_request))
        .routes(routes!(approvals::node_show))
        .routes(routes!(approvals::node_redeem))
}

/// Every management route (the common stack adds health, metrics and the layers).
pub fn routes(state: ManagementState) -> Router {
    Router::from(api()).with_state(state)
}

/// Management's OpenAPI document (`docs/openapi/management.json`, `keymesh openapi
/// management`): every route of [`api`] plus the health and metrics routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    keymesh_core::openapi::document(
        "Keymesh management",
        env!("CARGO_PKG_VERSION"),
        "Users and roles, magic-link sign-in, sessions, groups and node enrollment, human \
         approvals, vault key ceremonies (relayed sealed), emergency access, incident response \
         and the central audit log. Every error uses the coded body of docs/errors.md; \
         docs/management.md describes the service.",
        &[
            (
                "sign-in",
                "Magic-link sign-in for browsers and the desktop app.",
            ),
            ("sessions", "The caller's sessions."),
            ("users", "Users and their roles."),
            ("groups", "Groups and their members."),
            ("enrollment", "One-time codes and node enrollment."),
            ("nodes", "Nodes and their ceilings."),
            (
                "approvals",
                "Human approvals: requests, decisions, execution, events.",
            ),
            (
                "vault ceremonies",
                "Vault init, unlock and rekey, relayed sealed to the vault.",
            ),
            (
                "emergency access",
                "Temporary roles granted through an approval.",
            ),
            (
                "incident response",
                "Revoke tokens, disable nodes, lock vaults.",
            ),
            ("audit", "The central hash-chained audit log."),
        ],
        api().into_openapi(),
    )
}

/// Start management over a service context and return its full router.
pub fn router(
    ctx: ServiceContext,
    config: ManagementConfig,
) -> Result<(Router, ManagementState), StartError> {
    let state = ManagementState::open(ctx.clone(), config)?;
    Ok((ctx.router(routes(state.clone())), state))
}
