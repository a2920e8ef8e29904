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

use axum::{
    Router,
    routing::{delete, get, post, put},
};
use keymesh_core::ServiceContext;

/// Every management route (the common stack adds health, metrics and the layers).
pub fn routes(state: ManagementState) -> Router {
    Router::new()
        .route("/v1/login", post(login::request_login))
        .route("/v1/login/poll", post(login::poll))
        .route("/v1/login/code", post(login::code))
        .route(
            "/login/confirm",
            get(login::confirm_page).post(login::confirm),
        )
        .route("/v1/session", get(sessions::current))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/{id}", delete(sessions::revoke))
        .route("/v1/logout", post(sessions::logout))
        .route("/v1/users", get(users::list).post(users::invite))
        .route("/v1/groups", get(groups::list).post(groups::create))
        .route("/v1/groups/{id}", get(groups::show))
        .route(
            "/v1/groups/{id}/members/{user}",
            put(groups::add_member).delete(groups::remove_member),
        )
        .route(
            "/v1/groups/{id}/enrollment-codes",
            post(groups::create_code),
        )
        .route("/v1/groups/{id}/vault", get(ceremonies::vault_status))
        .route(
            "/v1/groups/{id}/vault/ceremonies",
            post(ceremonies::open_ceremony),
        )
        .route("/v1/groups/{id}/approvals/enable", post(waivers::enable))
        .route("/v1/me/share-key", put(ceremonies::set_share_key))
        .route("/v1/ceremonies/{id}", get(ceremonies::show))
        .route("/v1/ceremonies/{id}/init", post(ceremonies::init))
        .route("/v1/ceremonies/{id}/rekey", post(ceremonies::rekey))
        .route(
            "/v1/ceremonies/{id}/passphrase",
            post(ceremonies::passphrase),
        )
        .route("/v1/ceremonies/{id}/shares", post(ceremonies::share))
        .route("/v1/emergency-grants", get(emergency::list))
        .route("/v1/emergency-grants/{id}/end", post(emergency::end))
        .route("/v1/nodes", get(groups::nodes))
        .route("/v1/nodes/{id}/ceiling", put(groups::set_ceiling))
        .route("/v1/enroll", post(enroll::enroll))
        .route(
            "/v1/approvals",
            get(approvals::list).post(approvals::user_request),
        )
        .route("/v1/approvals/events", get(approvals::events))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/decisions", post(approvals::decide))
        .route("/v1/approvals/{id}/export", post(audit::export))
        .route("/v1/approvals/{id}/execute", post(approvals::execute))
        .route("/v1/audit", get(audit::search))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/audit/checkpoints", get(audit::checkpoints))
        .route(
            "/v1/users/{id}/revoke-tokens",
            post(responders::revoke_user),
        )
        .route(
            "/v1/nodes/{id}/revoke-tokens",
            post(responders::revoke_node),
        )
        .route(
            "/v1/groups/{id}/revoke-tokens",
            post(responders::revoke_group),
        )
        .route("/v1/nodes/{id}/disable", post(responders::disable_node))
        .route("/v1/vaults/{group}/lock", post(responders::lock_vault))
        .route("/v1/token-requests", post(approvals::node_token_request))
        .route("/v1/token-requests/{id}", get(approvals::node_show))
        .route(
            "/v1/token-requests/{id}/redeem",
            post(approvals::node_redeem),
        )
        .with_state(state)
}

/// Start management over a service context and return its full router.
pub fn router(
    ctx: ServiceContext,
    config: ManagementConfig,
) -> Result<(Router, ManagementState), StartError> {
    let state = ManagementState::open(ctx.clone(), config)?;
    Ok((ctx.router(routes(state.clone())), state))
}
