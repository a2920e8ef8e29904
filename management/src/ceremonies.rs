//! Vault key ceremonies through management. Management opens a ceremony at the vault (init and
//! rekey for groups:manage; unlock only by executing an approved `vault.unlock` request),
//! records it, and relays what the admins' tools seal to the ceremony's key: a passphrase, a
//! share, a new protection. It never sees a passphrase or a share in the clear; it checks who
//! may take part and submits a share only under the caller's own id (the vault's HPKE auth
//! mode proves the sender holds that id's key anyway). See docs/management.md.

use axum::{
    Json,
    extract::{Path, State},
};
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    http::extract::Json as JsonBody,
    ident::Ident,
    storage::StorageError,
    with_pool,
};
use keymesh_proto::api::vaults::{
    Ceremony, CeremonyKind, CeremonyView, Initialized, Rekeyed, SealedShare, ShareAccepted,
    Unlocked, VaultStatus,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    auth::Caller,
    groups::visible_group,
    rbac::Action,
    state::ManagementState,
    store::{Store, now_ms},
};

/// A ceremony as management stores it ([`Ceremony`] is what parties see of it).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CeremonyRow {
    /// Management's handle for the ceremony (what parties and audit records see).
    pub id: String,
    /// The vault's ceremony id: kept inside management, never shown or audited.
    pub vault_id: String,
    /// Its group.
    pub group_id: String,
    /// `init`, `unlock` or `rekey`.
    pub kind: String,
    /// The approval it executes (unlock).
    pub approval_id: Option<String>,
    /// `user:ID` of who opened it.
    pub opened_by: String,
    /// The ceremony's X25519 public key, hex.
    pub public_key: String,
    /// The vault's answer: mode, threshold and the holders' sealed shares (JSON).
    pub info: String,
    /// Opened.
    pub opened_at_ms: i64,
    /// The vault forgets the ceremony then.
    pub expires_at_ms: i64,
    /// Finished (vault created, unlocked or rekeyed).
    pub finished_at_ms: Option<i64>,
}

impl CeremonyRow {
    /// What parties see of it: neither the vault's id nor the sealed shares.
    fn shown(&self) -> Ceremony {
        Ceremony {
            id: self.id.clone(),
            group_id: self.group_id.clone(),
            kind: self.kind.clone(),
            approval_id: self.approval_id.clone(),
            opened_by: self.opened_by.clone(),
            public_key: self.public_key.clone(),
            opened_at_ms: self.opened_at_ms,
            expires_at_ms: self.expires_at_ms,
            finished_at_ms: self.finished_at_ms,
        }
    }
}

impl Store {
    /// Record a ceremony the vault opened.
    pub async fn insert_ceremony(&self, c: &CeremonyRow) -> Result<(), StorageError> {
        const SQL: &str = "INSERT INTO vault_ceremonies (id, vault_id, group_id, kind, approval_id, opened_by, public_key, info, opened_at_ms, expires_at_ms) \
             VALUES ($1, $10, $2, $3, $4, $5, $6, $7, $8, $9)";
        with_pool!(self.db(), pool => sqlx::query(SQL).bind(&c.id).bind(&c.group_id).bind(&c.kind)
            .bind(&c.approval_id).bind(&c.opened_by).bind(&c.public_key).bind(&c.info)
            .bind(c.opened_at_ms).bind(c.expires_at_ms).bind(&c.vault_id).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// An open ceremony: recorded, not finished, not expired.
    pub async fn open_ceremony(&self, id: &str) -> Result<Option<CeremonyRow>, StorageError> {
        const SQL: &str = "SELECT id, vault_id, group_id, kind, approval_id, opened_by, public_key, info, opened_at_ms, expires_at_ms, finished_at_ms \
             FROM vault_ceremonies WHERE id = $1 AND finished_at_ms IS NULL AND expires_at_ms > $2";
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(id).bind(now_ms()).fetch_optional(pool).await)?,
        )
    }

    /// The handle of the open ceremony an approval opened, if any.
    pub async fn open_ceremony_of_approval(
        &self,
        approval: &str,
    ) -> Result<Option<String>, StorageError> {
        const SQL: &str = "SELECT id FROM vault_ceremonies WHERE approval_id = $1 AND finished_at_ms IS NULL AND expires_at_ms > $2 \
             ORDER BY opened_at_ms DESC LIMIT 1";
        Ok(
            with_pool!(self.db(), pool => sqlx::query_scalar(SQL).bind(approval).bind(now_ms()).fetch_optional(pool).await)?,
        )
    }

    /// Mark a ceremony finished.
    pub async fn finish_ceremony(&self, id: &str) -> Result<(), StorageError> {
        const SQL: &str = "UPDATE vault_ceremonies SET finished_at_ms = $1 WHERE id = $2 AND finished_at_ms IS NULL";
        with_pool!(self.db(), pool => sqlx::query(SQL).bind(now_ms()).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Set (or replace) a user's X25519 share key (hex).
    pub async fn set_share_key(&self, user: &str, key_hex: &str) -> Result<(), StorageError> {
        const SQL: &str = "UPDATE users SET share_key = $1 WHERE id = $2";
        with_pool!(self.db(), pool => sqlx::query(SQL).bind(key_hex).bind(user).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// A user's share key, if they registered one.
    pub async fn share_key(&self, user: &str) -> Result<Option<String>, StorageError> {
        const SQL: &str = "SELECT share_key FROM users WHERE id = $1 AND disabled_at_ms IS NULL";
        let key: Option<(Option<String>,)> = with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(user).fetch_optional(pool).await)?;
        Ok(key.and_then(|(k,)| k))
    }
}

/// `PUT /v1/me/share-key` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareKeyBody {
    /// X25519 public key, 64 hex characters. Its private half never leaves the admin's tool.
    public_key: String,
}

/// `PUT /v1/me/share-key` (vault:unlock): register the caller's X25519 key, to which a Shamir
/// vault seals the caller's share. Replacing it does not re-seal existing shares: a holder who
/// loses their key needs a rekey.
#[utoipa::path(
    put,
    path = "/v1/me/share-key",
    operation_id = "ceremonies_set_share_key",
    tag = "vault ceremonies",
    request_body = ShareKeyBody,
    responses(
        (status = 200, body = ShareKey),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn set_share_key(
    State(state): State<ManagementState>,
    caller: Caller,
    JsonBody(body): JsonBody<ShareKeyBody>,
) -> Result<Json<ShareKey>, ApiError> {
    caller.require(&state, Action::VaultUnlock)?;
    let replacing = state
        .store
        .share_key(&caller.user.id)
        .await
        .map_err(ApiError::internal)?
        .is_some();
    // Replacing a key redirects future shares: as sensitive as an admin action.
    if replacing && !caller.recently_signed_in(&state) {
        return Err(ApiError::new(ErrorCode::ReauthenticationRequired));
    }
    let key = hex::decode(&body.public_key)
        .ok()
        .filter(|k| k.len() == 32 && k.iter().any(|b| *b != 0))
        .ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::InvalidRequest,
                "public_key is an X25519 public key: 64 hex characters",
            )
        })?;
    let key_hex = hex::encode(key);
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "user.share_key.set",
                caller.actor(),
                Outcome::Success,
            )
            .with_details(json!({ "public_key": key_hex })),
        )
        .await?;
    state
        .store
        .set_share_key(&caller.user.id, &key_hex)
        .await
        .map_err(ApiError::internal)?;
    state.mailer.send_later(crate::mail::Mail {
        to: caller.user.email.clone(),
        subject: "Keymesh: your vault share key was set".into(),
        body: secrecy::SecretString::from(format!(
            "The X25519 key to which vault shares are sealed for you is now {key_hex}.\nIf you did not do this, tell an admin now: shares sealed to it could be read by whoever did.\n"
        )),
    });
    Ok(Json(ShareKey {
        user_id: caller.user.id.clone(),
        public_key: key_hex,
    }))
}

/// May the caller take part in `group`'s ceremonies? vault:unlock, and a member of the group
/// or groups:manage. Others get `not_found`, as for a group that does not exist.
pub(crate) async fn party(
    state: &ManagementState,
    caller: &Caller,
    group: &str,
) -> Result<(), ApiError> {
    caller.require(state, Action::VaultUnlock)?;
    if caller.require(state, Action::GroupsManage).is_ok() {
        return state
            .store
            .group(group)
            .await
            .map_err(ApiError::internal)?
            .map(drop)
            .ok_or_else(|| ApiError::with_message(ErrorCode::NotFound, "no such group"));
    }
    let member = state
        .store
        .is_member(group, &caller.user.id)
        .await
        .map_err(ApiError::internal)?;
    if member {
        Ok(())
    } else {
        Err(ApiError::with_message(ErrorCode::NotFound, "no such group"))
    }
}

/// Check a `vault.unlock` request: the caller may take part in the group's ceremonies.
pub(crate) async fn unlock_params(
    state: &ManagementState,
    caller: &Caller,
    group: &Ident,
) -> Result<Value, ApiError> {
    party(state, caller, group).await?;
    Ok(json!({ "group": group }))
}

/// Open a ceremony at the vault and record it.
async fn open(
    state: &ManagementState,
    caller: &Caller,
    group: &str,
    kind: CeremonyKind,
    approval: Option<&str>,
) -> Result<CeremonyRow, ApiError> {
    let answer = state.vault.open_ceremony(group, kind).await?;
    let now = now_ms();
    let ttl_ms = i64::try_from(answer.expires_in_secs)
        .unwrap_or(600)
        .saturating_mul(1000);
    let info = OpenedInfo {
        mode: answer.mode,
        threshold: answer.threshold,
        shares: Some(answer.shares),
    };
    let row = CeremonyRow {
        id: crate::store::new_id(),
        vault_id: answer.ceremony_id,
        group_id: group.to_owned(),
        kind: kind.as_str().to_owned(),
        approval_id: approval.map(str::to_owned),
        opened_by: caller.actor(),
        public_key: answer.public_key,
        info: serde_json::to_string(&info).map_err(ApiError::internal)?,
        opened_at_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
        finished_at_ms: None,
    };
    if row.vault_id.is_empty() || row.public_key.is_empty() {
        return Err(ApiError::internal(std::io::Error::other(
            "the vault opened a ceremony without an id or key",
        )));
    }
    state
        .store
        .insert_ceremony(&row)
        .await
        .map_err(ApiError::internal)?;
    state
        .audit_quiet(
            AuditEvent::new(
                caller.actor(),
                "vault.ceremony.open",
                format!("vault:{group}"),
                Outcome::Success,
            )
            .with_details(
                json!({ "kind": kind.as_str(), "ceremony": row.id, "approval": approval }),
            ),
        )
        .await;
    Ok(row)
}

/// What the vault said of a ceremony when it opened (kept in `CeremonyRow::info`).
#[derive(Debug, Default, Deserialize, Serialize)]
struct OpenedInfo {
    mode: Option<String>,
    threshold: Option<i64>,
    #[serde(default)]
    shares: Option<Vec<SealedShare>>,
}

/// What a party sees of a ceremony: its key and, of the sealed shares, only their own.
fn view(row: &CeremonyRow, caller: &Caller) -> CeremonyView {
    let info: OpenedInfo = serde_json::from_str(&row.info).unwrap_or_default();
    let all = info.shares.unwrap_or_default();
    CeremonyView {
        ceremony: row.shown(),
        mode: info.mode,
        threshold: info.threshold,
        holders: all.iter().map(|s| s.admin_id.clone()).collect(),
        shares: all
            .into_iter()
            .filter(|s| s.admin_id == caller.user.id)
            .collect(),
    }
}

/// `PUT /v1/me/share-key`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareKey {
    /// The caller.
    pub user_id: String,
    /// Their X25519 share key, hex.
    pub public_key: String,
}

/// Execute an approved `vault.unlock` request (its requester): open the unlock ceremony.
pub(crate) async fn execute_unlock(
    state: &ManagementState,
    caller: &Caller,
    approval: &str,
    params: &Value,
) -> Result<CeremonyView, ApiError> {
    let group = params["group"].as_str().unwrap_or_default();
    let row = open(state, caller, group, CeremonyKind::Unlock, Some(approval)).await?;
    Ok(view(&row, caller))
}

/// `POST /v1/groups/{id}/vault/ceremonies` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenBody {
    /// `init` or `rekey` (an unlock ceremony is opened by executing a `vault.unlock` approval).
    kind: String,
}

/// `POST /v1/groups/{id}/vault/ceremonies` (groups:manage): open an init or rekey ceremony.
/// Rekeying still needs proof of the current protection at the vault.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/vault/ceremonies",
    operation_id = "ceremonies_open_ceremony",
    tag = "vault ceremonies",
    params(("id" = inline(Ident), Path, description = "The group's id.")),
    request_body = OpenBody,
    responses(
        (status = 200, body = CeremonyView),
        (status = 404, body = ErrorBody, description = "`not_found`: no such group."),
        (status = 409, body = ErrorBody, description = "`conflict`: init of a group that has a vault."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn open_ceremony(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(group): Path<Ident>,
    JsonBody(body): JsonBody<OpenBody>,
) -> Result<Json<CeremonyView>, ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    let kind = match body.kind.as_str() {
        "init" => CeremonyKind::Init,
        "rekey" => CeremonyKind::Rekey,
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidRequest,
                "kind is init or rekey (an unlock needs an approved vault.unlock request)",
            ));
        }
    };
    visible_group(&state, &caller, &group).await?;
    let row = open(&state, &caller, &group, kind, None).await?;
    Ok(Json(view(&row, &caller)))
}

/// `GET /v1/groups/{id}/vault`: the vault's status (initialised, mode, threshold, holders,
/// locked, session expiry) for those who may see the group.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/vault",
    operation_id = "ceremonies_vault_status",
    tag = "vault ceremonies",
    params(("id" = inline(Ident), Path, description = "The group's id.")),
    responses(
        (status = 200, body = VaultStatus, description = "The vault's answer."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such group."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn vault_status(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(group): Path<Ident>,
) -> Result<Json<VaultStatus>, ApiError> {
    visible_group(&state, &caller, &group).await?;
    Ok(Json(state.vault.status(&group).await?))
}

/// An open ceremony the caller may take part in.
async fn participation(
    state: &ManagementState,
    caller: &Caller,
    id: &str,
) -> Result<CeremonyRow, ApiError> {
    // First, so that whether a ceremony exists is no answer to those who may not take part.
    caller.require(state, Action::VaultUnlock)?;
    let row = state
        .store
        .open_ceremony(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(no_such_ceremony)?;
    party(state, caller, &row.group_id)
        .await
        .map_err(|e| match e.code() {
            ErrorCode::NotFound => no_such_ceremony(),
            _ => e,
        })?;
    Ok(row)
}

fn no_such_ceremony() -> ApiError {
    ApiError::with_message(
        ErrorCode::NotFound,
        "no such open ceremony (they end when done and expire after ten minutes)",
    )
}

/// `GET /v1/ceremonies/{id}`: an open ceremony, for those who may take part.
#[utoipa::path(
    get,
    path = "/v1/ceremonies/{id}",
    operation_id = "ceremonies_show",
    tag = "vault ceremonies",
    params(("id" = String, Path, description = "The ceremony's handle (management's own: the vault's id never leaves management).")),
    responses(
        (status = 200, body = CeremonyView, description = "Only the caller's own sealed share."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such open ceremony for the caller."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn show(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CeremonyView>, ApiError> {
    let row = participation(&state, &caller, &id).await?;
    Ok(Json(view(&row, &caller)))
}

/// Relay one step to the vault, audited first (the audit record never holds sealed material),
/// and close the ceremony when the vault's answer `T` says it is `done`.
async fn relay<T: DeserializeOwned>(
    state: &ManagementState,
    caller: &Caller,
    row: &CeremonyRow,
    step: &str,
    body: Value,
    done: impl FnOnce(&T) -> bool,
) -> Result<Json<T>, ApiError> {
    let event = |outcome| {
        AuditEvent::new(
            caller.actor(),
            "vault.ceremony.submit",
            format!("vault:{}", row.group_id),
            outcome,
        )
        .with_details(json!({ "ceremony": row.id, "kind": row.kind, "step": step }))
    };
    state.audit(event(Outcome::Success)).await?;
    match state.vault.ceremony_step(&row.vault_id, step, body).await {
        Ok(answer) => {
            // The vault has acted: its answer goes back whatever happens to our bookkeeping
            // (an unfinished row only lingers until the ceremony's expiry).
            if done(&answer)
                && let Err(e) = state.store.finish_ceremony(&row.id).await
            {
                tracing::error!(error = %keymesh_core::error::error_chain(&e), ceremony = %row.id, "recording a finished ceremony failed");
            }
            Ok(Json(answer))
        }
        Err(e) => {
            state.audit_quiet(event(Outcome::Failure)).await;
            Err(e.into())
        }
    }
}

/// `POST /v1/ceremonies/{id}/passphrase` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassphraseBody {
    /// The passphrase sealed to the ceremony key (base64).
    sealed_passphrase: String,
}

/// `POST /v1/ceremonies/{id}/passphrase` (a party, unlock ceremony): unlock a passphrase vault.
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/passphrase",
    operation_id = "ceremonies_passphrase",
    tag = "vault ceremonies",
    params(("id" = String, Path, description = "The ceremony's handle (management's own: the vault's id never leaves management).")),
    request_body = PassphraseBody,
    responses(
        (status = 200, body = Unlocked, description = "The vault's answer."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such open ceremony."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn passphrase(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PassphraseBody>,
) -> Result<Json<Unlocked>, ApiError> {
    let row = participation(&state, &caller, &id).await?;
    if row.kind != "unlock" {
        return Err(wrong_step(
            "a passphrase unlocks only in an unlock ceremony",
        ));
    }
    relay(
        &state,
        &caller,
        &row,
        "passphrase",
        json!({ "sealed_passphrase": body.sealed_passphrase }),
        |_: &Unlocked| true,
    )
    .await
}

/// `POST /v1/ceremonies/{id}/shares` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    /// The caller's share sealed (HPKE auth mode, from the caller's share key) to the ceremony
    /// key (base64).
    sealed_share: String,
}

/// `POST /v1/ceremonies/{id}/shares` (a party, unlock or rekey ceremony): submit the caller's
/// own share; management names the caller as its holder.
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/shares",
    operation_id = "ceremonies_share",
    tag = "vault ceremonies",
    params(("id" = String, Path, description = "The ceremony's handle (management's own: the vault's id never leaves management).")),
    request_body = ShareBody,
    responses(
        (status = 200, body = ShareAccepted, description = "The vault's answer."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such open ceremony."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn share(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ShareBody>,
) -> Result<Json<ShareAccepted>, ApiError> {
    let row = participation(&state, &caller, &id).await?;
    if row.kind == "init" {
        return Err(wrong_step(
            "shares are submitted to unlock or rekey ceremonies",
        ));
    }
    relay(
        &state,
        &caller,
        &row,
        "shares",
        json!({ "admin_id": caller.user.id, "sealed_share": body.sealed_share }),
        |answer: &ShareAccepted| answer.unlocked,
    )
    .await
}

fn wrong_step(message: &str) -> ApiError {
    ApiError::with_message(ErrorCode::InvalidRequest, message.to_owned())
}

/// `POST /v1/ceremonies/{id}/init` and `/rekey` body: the new protection.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectionBody {
    /// `passphrase` or `shamir`.
    mode: String,
    /// Passphrase mode: the new passphrase sealed to the ceremony key (base64).
    #[serde(default)]
    sealed_passphrase: Option<String>,
    /// Shamir mode: how many shares unlock.
    #[serde(default)]
    threshold: Option<u8>,
    /// Shamir mode: the holders, by user id; each needs vault:unlock and a registered share key.
    #[serde(default)]
    holders: Option<Vec<Ident>>,
    /// Rekey of a passphrase vault: the current passphrase sealed to the ceremony key.
    #[serde(default)]
    sealed_current_passphrase: Option<String>,
}

/// The vault's form of a new protection: holders named by user id get their registered keys.
async fn protection(
    state: &ManagementState,
    group: &str,
    body: ProtectionBody,
) -> Result<Value, ApiError> {
    let mut out = match body.mode.as_str() {
        "passphrase" => json!({
            "mode": "passphrase",
            "sealed_passphrase": body.sealed_passphrase.ok_or_else(|| wrong_step("sealed_passphrase is required"))?,
        }),
        "shamir" => {
            let mut holders = Vec::new();
            for user in body.holders.unwrap_or_default() {
                let role: Option<crate::rbac::Role> = state
                    .store
                    .user(&user)
                    .await
                    .map_err(ApiError::internal)?
                    .filter(|u| u.disabled_at_ms.is_none())
                    .and_then(|u| u.role.parse().ok());
                let allows = |action| role.is_some_and(|r| state.config.rbac.allows(r, action));
                // A holder must be able to submit their share through management later.
                let allowed = allows(Action::VaultUnlock)
                    && (allows(Action::GroupsManage)
                        || state
                            .store
                            .is_member(group, &user)
                            .await
                            .map_err(ApiError::internal)?);
                let key = state
                    .store
                    .share_key(&user)
                    .await
                    .map_err(ApiError::internal)?
                    .filter(|_| allowed)
                    .ok_or_else(|| {
                        wrong_step(&format!(
                            "holder {user} is not an enabled user with vault:unlock, in the group (or with groups:manage), with a registered share key (PUT /v1/me/share-key)"
                        ))
                    })?;
                holders.push(json!({ "admin_id": user, "public_key": key }));
            }
            json!({
                "mode": "shamir",
                "threshold": body.threshold.ok_or_else(|| wrong_step("threshold is required"))?,
                "holders": holders,
            })
        }
        _ => return Err(wrong_step("mode is passphrase or shamir")),
    };
    if let Some(current) = body.sealed_current_passphrase {
        out["sealed_current_passphrase"] = json!(current);
    }
    Ok(out)
}

/// `POST /v1/ceremonies/{id}/init` and `/rekey` (groups:manage, the admin who opened it).
async fn protect<T: DeserializeOwned>(
    state: ManagementState,
    caller: Caller,
    id: String,
    body: ProtectionBody,
    step: &str,
) -> Result<Json<T>, ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    let row = state
        .store
        .open_ceremony(&id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| r.opened_by == caller.actor() && r.kind == step)
        .ok_or_else(no_such_ceremony)?;
    let vault_body = protection(&state, &row.group_id, body).await?;
    relay(&state, &caller, &row, step, vault_body, |_| true).await
}

/// `POST /v1/ceremonies/{id}/init`: create the group's vault (it starts locked).
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/init",
    operation_id = "ceremonies_init",
    tag = "vault ceremonies",
    params(("id" = String, Path, description = "The ceremony's handle (management's own: the vault's id never leaves management).")),
    request_body = ProtectionBody,
    responses(
        (status = 200, body = Initialized, description = "The vault's answer."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such open init ceremony of the caller."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn init(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProtectionBody>,
) -> Result<Json<Initialized>, ApiError> {
    protect(state, caller, id, body, "init").await
}

/// `POST /v1/ceremonies/{id}/rekey`: a new passphrase or share set for the same data key.
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/rekey",
    operation_id = "ceremonies_rekey",
    tag = "vault ceremonies",
    params(("id" = String, Path, description = "The ceremony's handle (management's own: the vault's id never leaves management).")),
    request_body = ProtectionBody,
    responses(
        (status = 200, body = Rekeyed, description = "The vault's answer."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such open rekey ceremony of the caller."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn rekey(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProtectionBody>,
) -> Result<Json<Rekeyed>, ApiError> {
    protect(state, caller, id, body, "rekey").await
}
