//! The first admin: `keymesh management bootstrap-admin --email E`, and `keymesh dev` at start.

use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
};
use serde_json::json;

use crate::{
    login::{Issued, issue, normalize_email},
    rbac::Role,
    state::ManagementState,
    store::{Client, Purpose, UserRow},
};

/// What bootstrapping did.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The admin.
    pub user: UserRow,
    /// `created`, `promoted` (the address had another role), `re-enabled` (the account was
    /// disabled) or `existing`.
    pub change: &'static str,
    /// A one-time sign-in link for them (browser).
    pub login: Issued,
}

/// Make `email` an enabled admin (creating the account if needed) and issue a sign-in link.
/// Whoever runs this can already write the database, so it grants nothing new; it is audited.
pub async fn bootstrap_admin(
    state: &ManagementState,
    email: &str,
) -> Result<Bootstrapped, ApiError> {
    let email = normalize_email(email)?;
    let existing = state
        .store
        .user_by_email(&email)
        .await
        .map_err(ApiError::internal)?;
    let change = match &existing {
        None => "created",
        Some(u) if u.disabled_at_ms.is_some() => "re-enabled",
        Some(u) if u.role == Role::Admin.as_str() => "existing",
        Some(_) => "promoted",
    };
    state
        .audit(
            AuditEvent::new(
                "operator:bootstrap-admin",
                "user.bootstrap_admin",
                state.keyed.email_ref(&email),
                Outcome::Success,
            )
            .with_details(json!({ "change": change })),
        )
        .await?;
    let user = match existing {
        None => state
            .store
            .insert_user(&email, Role::Admin.as_str())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorCode::Conflict))?,
        Some(mut user) => {
            if change != "existing" {
                state
                    .store
                    .set_admin_enabled(&user.id, Role::Admin.as_str())
                    .await
                    .map_err(ApiError::internal)?;
                Role::Admin.as_str().clone_into(&mut user.role);
                user.disabled_at_ms = None;
            }
            user
        }
    };
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let login = issue(state, Some(&user), Purpose::Login, Client::Browser, local).await?;
    Ok(Bootstrapped {
        user,
        change,
        login,
    })
}
