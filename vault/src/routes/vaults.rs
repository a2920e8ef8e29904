//! Group vault lifecycle: status, lock, extend, and the key ceremonies (init, unlock by
//! passphrase or shares, rekey).

use std::time::{Duration, UNIX_EPOCH};

use axum::{
    Json,
    extract::{Path, State},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    crypto::{self, DataKey, KdfParams, Share},
    error::ErrorBody,
    http::{client_ip::ClientIp, extract::Json as JsonBody},
    openapi::ServiceErrors,
};
use keymesh_proto::api::vaults::{
    CeremonyOpened, Extended, Initialized, Rekeyed, SealedShare, ShareAccepted, Unlocked,
    VaultInfo, VaultStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::Management,
    ceremony::{CEREMONY_TTL, CeremonyKind},
    ident::Ident,
    state::VaultState,
    store::{ShareRow, VaultRow},
};

// The ceremony's HPKE labels live in core: the admins' tools seal with them too.
pub use keymesh_core::crypto::ceremony::{
    INFO_PASSPHRASE, INFO_SHARE, INFO_UNLOCK_SHARE, share_aad,
};
const MIN_PASSPHRASE: usize = 12;
const MAX_PASSPHRASE: usize = 1024;

fn wrap_aad(group: &str) -> Vec<u8> {
    format!("keymesh-vault-dk-v1\n{group}").into_bytes()
}

fn crypto_err(e: crypto::CryptoError) -> ApiError {
    ApiError::internal(e)
}

fn b64(field: &'static str, value: &str) -> Result<Vec<u8>, ApiError> {
    if value.len() > 8192 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("{field} is too long"),
        ));
    }
    STANDARD.decode(value).map_err(|_| {
        ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("{field} must be standard base64"),
        )
    })
}

fn expires_at_secs(info: &crate::sessions::SessionInfo) -> u64 {
    info.expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn vault_row(state: &VaultState, group: &str) -> Result<VaultRow, ApiError> {
    state
        .store
        .vault(group)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::with_message(ErrorCode::NotFound, format!("group {group} has no vault"))
        })
}

/// A group vault's state.
///
/// `{group, initialized: false}` when the group has no vault yet; the other fields appear once
/// it has one.
#[utoipa::path(
    get,
    path = "/v1/vaults/{group}",
    tag = "vaults",
    params(("group" = inline(Ident), Path, description = "The group.")),
    responses(
        (status = 200, body = VaultStatus),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn status(
    State(state): State<VaultState>,
    _: Management,
    Path(group): Path<Ident>,
) -> Result<Json<VaultStatus>, ApiError> {
    let Some(row) = state
        .store
        .vault(&group)
        .await
        .map_err(ApiError::internal)?
    else {
        return Ok(Json(VaultStatus {
            group: group.to_string(),
            initialized: false,
            vault: None,
        }));
    };
    let holders: Vec<String> = state
        .store
        .shares(&group)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|s| s.admin_id)
        .collect();
    let session = state.sessions.status(&group);
    Ok(Json(VaultStatus {
        group: group.to_string(),
        initialized: true,
        vault: Some(VaultInfo {
            mode: row.mode,
            threshold: row.threshold,
            holders,
            generation: row.generation,
            locked: session.is_none(),
            expires_at: session.as_ref().map(expires_at_secs),
        }),
    }))
}

/// `POST /v1/vaults/{group}/lock`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Locked {
    /// The group.
    pub group: String,
    /// Always `true`: the data key is not in memory.
    pub locked: bool,
    /// Whether it was unlocked until now.
    pub was_unlocked: bool,
}

/// Lock a group vault now: its data key is wiped from memory.
#[utoipa::path(
    post,
    path = "/v1/vaults/{group}/lock",
    tag = "vaults",
    params(("group" = inline(Ident), Path, description = "The group.")),
    responses(
        (status = 200, body = Locked),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn lock(
    State(state): State<VaultState>,
    _: Management,
    Path(group): Path<Ident>,
) -> Result<Json<Locked>, ApiError> {
    let was_open = state.sessions.lock(&group);
    state
        .audit_quiet(
            AuditEvent::new(
                "service:management",
                "vault.lock",
                format!("vault:{group}"),
                Outcome::Success,
            )
            .with_details(json!({ "was_unlocked": was_open })),
        )
        .await;
    Ok(Json(Locked {
        group: group.to_string(),
        locked: true,
        was_unlocked: was_open,
    }))
}

/// Extension request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExtendBody {
    /// Seconds from now (at most a day); never beyond `VAULT_SESSION_MAX_SECS` after the unlock.
    secs: u64,
}

/// Extend an unlocked vault's session, never past its cap.
#[utoipa::path(
    post,
    path = "/v1/vaults/{group}/extend",
    tag = "vaults",
    params(("group" = inline(Ident), Path, description = "The group.")),
    request_body = ExtendBody,
    responses(
        (status = 200, body = Extended),
        (status = 423, body = ErrorBody, description = "`vault_locked`: there is no session to extend."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn extend(
    State(state): State<VaultState>,
    _: Management,
    Path(group): Path<Ident>,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<Extended>, ApiError> {
    let info = state
        .sessions
        .extend(&group, Duration::from_secs(body.secs.min(86_400)))
        .ok_or_else(|| ApiError::new(ErrorCode::VaultLocked))?;
    state
        .audit(AuditEvent::new(
            "service:management",
            "vault.extend",
            format!("vault:{group}"),
            Outcome::Success,
        ))
        .await?;
    Ok(Json(Extended {
        group: group.to_string(),
        expires_at: expires_at_secs(&info),
    }))
}

/// Ceremony request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OpenCeremony {
    /// What the ceremony is for.
    kind: CeremonyKind,
}

/// Open a key ceremony (init, unlock or rekey), after whatever approval management requires.
///
/// The answer's `ceremony_id` and `public_key` (an X25519 key that exists only in this vault
/// process, for at most ten minutes) go to the admins' tools, which seal passphrases and shares
/// to it. For a Shamir vault it carries every holder's sealed share.
#[utoipa::path(
    post,
    path = "/v1/vaults/{group}/ceremonies",
    tag = "ceremonies",
    params(("group" = inline(Ident), Path, description = "The group.")),
    request_body = OpenCeremony,
    responses(
        (status = 200, body = CeremonyOpened),
        (status = 404, body = ErrorBody, description = "`not_found`: unlock or rekey of a group without a vault."),
        (status = 409, body = ErrorBody, description = "`conflict`: init of a group that has a vault."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn open_ceremony(
    State(state): State<VaultState>,
    _: Management,
    Path(group): Path<Ident>,
    JsonBody(body): JsonBody<OpenCeremony>,
) -> Result<Json<CeremonyOpened>, ApiError> {
    let existing = state
        .store
        .vault(&group)
        .await
        .map_err(ApiError::internal)?;
    match (body.kind, &existing) {
        (CeremonyKind::Init, Some(_)) => {
            return Err(ApiError::with_message(
                ErrorCode::Conflict,
                "this group already has a vault",
            ));
        }
        (CeremonyKind::Unlock | CeremonyKind::Rekey, None) => {
            return Err(ApiError::with_message(
                ErrorCode::NotFound,
                format!("group {group} has no vault"),
            ));
        }
        _ => {}
    }
    let (id, public) = state
        .ceremonies
        .open(body.kind, &group)
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable))?;
    let shares: Vec<SealedShare> = match &existing {
        Some(v) if v.mode == "shamir" => state
            .store
            .shares(&group)
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|s| SealedShare {
                sealed_share: STANDARD.encode(&s.sealed_share),
                admin_id: s.admin_id,
            })
            .collect(),
        _ => Vec::new(),
    };
    state
        .audit(
            AuditEvent::new(
                "service:management",
                "vault.ceremony.open",
                format!("vault:{group}"),
                Outcome::Success,
            )
            .with_details(json!({ "kind": body.kind })),
        )
        .await?;
    Ok(Json(CeremonyOpened {
        ceremony_id: id,
        public_key: hex::encode(public),
        kind: body.kind,
        group: group.to_string(),
        expires_in_secs: CEREMONY_TTL.as_secs(),
        threshold: existing.as_ref().and_then(|v| v.threshold),
        mode: existing.map(|v| v.mode),
        shares,
    }))
}

/// How a vault's data key is protected.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Protection {
    /// Argon2id(passphrase); the passphrase sealed to the ceremony key.
    Passphrase {
        /// `base64(HPKE-Base-Seal(ceremony key, info="keymesh-ceremony-passphrase-v1", aad=group, passphrase))`.
        sealed_passphrase: String,
    },
    /// Shamir shares, one per holder, each sealed to the holder's X25519 key.
    Shamir {
        /// Shares needed to unlock, 2 to the number of holders.
        threshold: u8,
        /// The admins who hold a share.
        holders: Vec<Holder>,
    },
}

/// A share holder.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Holder {
    /// The admin's id.
    admin_id: Ident,
    /// X25519 public key, hex.
    public_key: String,
}

fn ceremony(
    state: &VaultState,
    id: &str,
    kind: CeremonyKind,
) -> Result<(String, crypto::HpkeKeyPair), ApiError> {
    ceremony_of(state, id, &[kind]).map(|(group, key, _)| (group, key))
}

/// An open ceremony of one of `kinds`: its group, a copy of its key, and its kind.
fn ceremony_of(
    state: &VaultState,
    id: &str,
    kinds: &[CeremonyKind],
) -> Result<(String, crypto::HpkeKeyPair, CeremonyKind), ApiError> {
    state
        .ceremonies
        .with(id, |c| {
            kinds.contains(&c.kind).then(|| {
                crypto::HpkeKeyPair::from_secret(*c.keypair.secret())
                    .map(|k| (c.group.clone(), k, c.kind))
            })
        })
        .flatten()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::NotFound,
                "no such open ceremony of this kind (they expire after ten minutes)",
            )
        })
}

async fn derive_with_slot(
    state: &VaultState,
    passphrase: zeroize::Zeroizing<Vec<u8>>,
    params: KdfParams,
) -> Result<DataKey, ApiError> {
    let _slot = state
        .unlock_slots
        .acquire()
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable))?;
    tokio::task::spawn_blocking(move || crypto::derive_kek(&passphrase, &params))
        .await
        .map_err(ApiError::internal)?
        .map_err(crypto_err)
}

/// Build the stored protection for `key` (a new vault or a rekey).
async fn protect(
    state: &VaultState,
    group: &str,
    ceremony_key: &keymesh_core::crypto::HpkeKeyPair,
    protection: Protection,
    key: &DataKey,
) -> Result<(VaultRow, Vec<ShareRow>), ApiError> {
    let mut row = VaultRow {
        group_id: group.to_owned(),
        mode: String::new(),
        kdf_params: None,
        wrapped_key: None,
        key_check: crypto::key_check(key).map_err(crypto_err)?,
        threshold: None,
        generation: 1,
    };
    let mut shares = Vec::new();
    match protection {
        Protection::Passphrase { sealed_passphrase } => {
            let passphrase = crypto::hpke_open(
                ceremony_key,
                INFO_PASSPHRASE,
                group.as_bytes(),
                &b64("sealed_passphrase", &sealed_passphrase)?,
            )
            .map_err(|_| {
                ApiError::with_message(
                    ErrorCode::InvalidRequest,
                    "sealed_passphrase does not open with this ceremony's key",
                )
            })?;
            if !(MIN_PASSPHRASE..=MAX_PASSPHRASE).contains(&passphrase.len()) {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidRequest,
                    format!("a passphrase is {MIN_PASSPHRASE} to {MAX_PASSPHRASE} bytes"),
                ));
            }
            let params = KdfParams::new_random(
                state.config.argon2_memory_kib,
                state.config.argon2_iterations,
                1,
            )
            .map_err(crypto_err)?;
            let kek = derive_with_slot(state, passphrase, params).await?;
            row.mode = "passphrase".into();
            row.kdf_params = Some(serde_json::to_string(&params).map_err(ApiError::internal)?);
            row.wrapped_key =
                Some(crypto::wrap_key(&kek, key, &wrap_aad(group)).map_err(crypto_err)?);
        }
        Protection::Shamir { threshold, holders } => {
            let n = u8::try_from(holders.len()).map_err(|_| {
                ApiError::with_message(ErrorCode::InvalidRequest, "at most 255 holders")
            })?;
            if threshold < 2 || threshold > n {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidRequest,
                    "threshold must be at least 2 and at most the number of holders",
                ));
            }
            let mut seen = std::collections::HashSet::new();
            let split = crypto::split(key, threshold, n).map_err(crypto_err)?;
            for (holder, share) in holders.iter().zip(split) {
                if holder.admin_id.is_empty()
                    || holder.admin_id.len() > 64
                    || !seen.insert(holder.admin_id.clone())
                {
                    return Err(ApiError::with_message(
                        ErrorCode::InvalidRequest,
                        "admin ids must be unique",
                    ));
                }
                let public: [u8; 32] = hex::decode(&holder.public_key)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        ApiError::with_message(
                            ErrorCode::InvalidRequest,
                            "holder public_key must be 32 bytes of hex",
                        )
                    })?;
                let sealed = crypto::hpke_seal(
                    &public,
                    INFO_SHARE,
                    &share_aad(group, &holder.admin_id),
                    share.as_bytes(),
                )
                .map_err(|_| {
                    ApiError::with_message(
                        ErrorCode::InvalidRequest,
                        "a holder public_key is not a usable X25519 key",
                    )
                })?;
                shares.push(ShareRow {
                    admin_id: holder.admin_id.to_string(),
                    admin_public_key: public.to_vec(),
                    sealed_share: sealed,
                });
            }
            row.mode = "shamir".into();
            row.threshold = Some(i64::from(threshold));
        }
    }
    Ok((row, shares))
}

/// Create the group vault, protected by a passphrase or by Shamir shares. It starts locked.
///
/// Called by management (its credential), which relays what an admin's tool sealed, for the
/// open init ceremony named in the path.
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/init",
    tag = "ceremonies",
    params(("id" = String, Path, description = "The ceremony id, from opening the ceremony.")),
    request_body = Protection,
    responses(
        (status = 200, body = Initialized),
        (status = 404, body = ErrorBody, description = "`not_found`: no open init ceremony with this id (they expire after ten minutes)."),
        (status = 409, body = ErrorBody, description = "`conflict`: the group already has a vault."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn init(
    State(state): State<VaultState>,
    _: Management,
    Path(id): Path<String>,
    JsonBody(protection): JsonBody<Protection>,
) -> Result<Json<Initialized>, ApiError> {
    let (group, keypair) = ceremony(&state, &id, CeremonyKind::Init)?;
    let key = DataKey::generate();
    let (row, shares) = protect(&state, &group, &keypair, protection, &key).await?;
    state.audit(AuditEvent::new("service:management", "vault.init", format!("vault:{group}"), Outcome::Success).with_details(json!({ "mode": row.mode, "threshold": row.threshold, "holders": shares.iter().map(|s| &s.admin_id).collect::<Vec<_>>() }))).await?;
    if !state
        .store
        .create_vault(&row, &shares)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "this group already has a vault",
        ));
    }
    state.ceremonies.close(&id);
    Ok(Json(Initialized {
        group,
        mode: row.mode,
        locked: true,
    }))
}

/// Rekey request: the new protection, plus proof of the current one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RekeyBody {
    /// For a passphrase vault: the current passphrase, sealed to the ceremony key.
    #[serde(default)]
    sealed_current_passphrase: Option<String>,
    /// The new protection.
    #[serde(flatten)]
    new: Protection,
}

/// A new passphrase or a new share set for the same data key; no secret is re-encrypted.
///
/// Needs proof of the current protection: the current passphrase (`sealed_current_passphrase`),
/// or `t` current shares submitted to this ceremony first. Opening the ceremony alone (the
/// management credential) is not enough.
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/rekey",
    tag = "ceremonies",
    params(("id" = String, Path, description = "The ceremony id, from opening the ceremony.")),
    request_body = RekeyBody,
    responses(
        (status = 200, body = Rekeyed),
        (status = 401, body = ErrorBody, description = "`invalid_passphrase`: the current passphrase is missing or wrong."),
        (status = 403, body = ErrorBody, description = "`invalid_share`: the current shares were not submitted first."),
        (status = 404, body = ErrorBody, description = "`not_found`: no open rekey ceremony with this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: the vault changed meanwhile; open a new ceremony."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn rekey(
    State(state): State<VaultState>,
    _: Management,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RekeyBody>,
) -> Result<Json<Rekeyed>, ApiError> {
    let (group, keypair) = ceremony(&state, &id, CeremonyKind::Rekey)?;
    let current = vault_row(&state, &group).await?;
    let key = if current.mode == "passphrase" {
        let sealed = body.sealed_current_passphrase.as_deref().ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::InvalidPassphrase,
                "rekeying needs the current passphrase (sealed_current_passphrase)",
            )
        })?;
        unlock_limits(&state, &group, ip)?;
        unwrap_with_passphrase(
            &state,
            &group,
            &keypair,
            &current,
            sealed,
            format!("ip:{ip}"),
        )
        .await?
    } else {
        state
            .ceremonies
            .with(&id, |c| c.proven_key.take())
            .flatten()
            .ok_or_else(|| {
                ApiError::with_message(
                    ErrorCode::InvalidShare,
                    "submit the current threshold of shares to this ceremony first",
                )
            })?
    };
    let (mut row, shares) = protect(&state, &group, &keypair, body.new, &key).await?;
    row.generation = current.generation;
    state
        .audit(
            AuditEvent::new(
                format!("ip:{ip}"),
                "vault.rekey",
                format!("vault:{group}"),
                Outcome::Success,
            )
            .with_details(json!({ "mode": row.mode, "threshold": row.threshold })),
        )
        .await?;
    if !state
        .store
        .rewrap_vault(&row, &shares)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "the vault changed meanwhile; open a new ceremony",
        ));
    }
    state.ceremonies.close(&id);
    Ok(Json(Rekeyed {
        group,
        mode: row.mode,
        generation: current.generation + 1,
    }))
}

/// Derive the key from a sealed passphrase and unwrap the data key, auditing a failure.
async fn unwrap_with_passphrase(
    state: &VaultState,
    group: &str,
    keypair: &crypto::HpkeKeyPair,
    row: &VaultRow,
    sealed: &str,
    actor: String,
) -> Result<DataKey, ApiError> {
    let (Some(params), Some(wrapped)) = (row.kdf_params.as_deref(), row.wrapped_key.as_deref())
    else {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "this vault unlocks with shares, not a passphrase",
        ));
    };
    let params: KdfParams = serde_json::from_str(params).map_err(ApiError::internal)?;
    let passphrase = crypto::hpke_open(
        keypair,
        INFO_PASSPHRASE,
        group.as_bytes(),
        &b64("sealed_passphrase", sealed)?,
    )
    .map_err(|_| {
        ApiError::with_message(
            ErrorCode::InvalidRequest,
            "the sealed passphrase does not open with this ceremony's key",
        )
    })?;
    let kek = derive_with_slot(state, passphrase, params).await?;
    match crypto::unwrap_key(&kek, wrapped, &wrap_aad(group)) {
        Ok(key) => Ok(key),
        Err(_) => {
            state
                .audit_quiet(
                    AuditEvent::new(
                        actor,
                        "vault.passphrase",
                        format!("vault:{group}"),
                        Outcome::Denied,
                    )
                    .with_details(json!({ "reason": "wrong passphrase" })),
                )
                .await;
            Err(ApiError::new(ErrorCode::InvalidPassphrase))
        }
    }
}

fn unlock_limits(state: &VaultState, group: &str, ip: std::net::IpAddr) -> Result<(), ApiError> {
    state.unlock_by_group.check(&group.to_owned())?;
    state.unlock_by_ip.check(&state.ctx.limits.client_key(ip))?;
    Ok(())
}

/// Passphrase submission.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PassphraseBody {
    /// The passphrase sealed to the ceremony key, as for init.
    sealed_passphrase: String,
}

/// Unlock a passphrase vault.
///
/// Attempts are limited per group and per client IP (`VAULT_UNLOCK_ATTEMPTS_PER_MINUTE`).
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/passphrase",
    tag = "ceremonies",
    params(("id" = String, Path, description = "The ceremony id, from opening the ceremony.")),
    request_body = PassphraseBody,
    responses(
        (status = 200, body = Unlocked),
        (status = 401, body = ErrorBody, description = "`invalid_passphrase`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no open unlock ceremony with this id."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn unlock_passphrase(
    State(state): State<VaultState>,
    _: Management,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PassphraseBody>,
) -> Result<Json<Unlocked>, ApiError> {
    let (group, keypair) = ceremony(&state, &id, CeremonyKind::Unlock)?;
    unlock_limits(&state, &group, ip)?;
    let row = vault_row(&state, &group).await?;
    let key = unwrap_with_passphrase(
        &state,
        &group,
        &keypair,
        &row,
        &body.sealed_passphrase,
        format!("ip:{ip}"),
    )
    .await?;
    state
        .audit(
            AuditEvent::new(
                format!("ip:{ip}"),
                "vault.unlock",
                format!("vault:{group}"),
                Outcome::Success,
            )
            .with_details(json!({ "mode": "passphrase" })),
        )
        .await?;
    let info = state.sessions.unlock(&group, key);
    state.ceremonies.close(&id);
    Ok(Json(Unlocked {
        group,
        unlocked: true,
        expires_at: expires_at_secs(&info),
    }))
}

/// Share submission.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ShareBody {
    /// The holder submitting its share.
    admin_id: Ident,
    /// The share sealed (HPKE auth mode) from the admin's X25519 key to the ceremony key.
    sealed_share: String,
}

/// Submit one share to an unlock or rekey ceremony.
///
/// A share counts once per admin; only members of the vault's share set are accepted; at the
/// threshold the key is reconstructed, checked and the vault unlocked (or, in a rekey ceremony,
/// the current key proven: `proven: true`). Attempts are limited like passphrases.
#[utoipa::path(
    post,
    path = "/v1/ceremonies/{id}/shares",
    tag = "ceremonies",
    params(("id" = String, Path, description = "The ceremony id, from opening the ceremony.")),
    request_body = ShareBody,
    responses(
        (status = 200, body = ShareAccepted),
        (status = 403, body = ErrorBody, description = "`invalid_share`: not a member of the share set, a share that does not open, or shares that do not reconstruct the key."),
        (status = 404, body = ErrorBody, description = "`not_found`: no open unlock or rekey ceremony with this id."),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
pub async fn unlock_share(
    State(state): State<VaultState>,
    _: Management,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ShareBody>,
) -> Result<Json<ShareAccepted>, ApiError> {
    let (group, keypair, kind) =
        ceremony_of(&state, &id, &[CeremonyKind::Unlock, CeremonyKind::Rekey])?;
    unlock_limits(&state, &group, ip)?;
    let row = vault_row(&state, &group).await?;
    let threshold = usize::try_from(row.threshold.unwrap_or(0)).unwrap_or(0);
    if row.mode != "shamir" || threshold < 2 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "this vault unlocks with a passphrase, not shares",
        ));
    }
    let target = format!("vault:{group}");
    let actor = format!("admin:{}", body.admin_id);
    let holders = state
        .store
        .shares(&group)
        .await
        .map_err(ApiError::internal)?;
    let refuse = |reason: &'static str| {
        let event = AuditEvent::new(
            actor.clone(),
            "vault.unlock.share",
            target.clone(),
            Outcome::Denied,
        )
        .with_details(json!({ "reason": reason }));
        (
            event,
            ApiError::with_message(ErrorCode::InvalidShare, reason),
        )
    };
    let Some(holder) = holders.iter().find(|h| h.admin_id == *body.admin_id) else {
        let (event, err) = refuse("not a member of this vault's share set");
        state.audit_quiet(event).await;
        return Err(err);
    };
    let sender: [u8; 32] = holder
        .admin_public_key
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::new(ErrorCode::Internal))?;
    let opened = b64("sealed_share", &body.sealed_share).and_then(|sealed| {
        crypto::hpke_open_auth(
            &keypair,
            &sender,
            INFO_UNLOCK_SHARE,
            &share_aad(&group, &body.admin_id),
            &sealed,
        )
        .ok()
        .and_then(|plain| Share::from_bytes(&plain).ok())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidShare))
    });
    let share = match opened {
        Ok(share) => share,
        Err(_) => {
            let (event, err) = refuse("the share does not open as this admin's share");
            state.audit_quiet(event).await;
            return Err(err);
        }
    };
    let collected = state
        .ceremonies
        .with(&id, |c| {
            c.shares.insert(body.admin_id.to_string(), share);
            if c.shares.len() < threshold {
                return Ok(c.shares.len());
            }
            let shares: Vec<Share> = std::mem::take(&mut c.shares).into_values().collect();
            Err(crypto::combine(&shares))
        })
        .ok_or_else(|| ApiError::with_message(ErrorCode::NotFound, "the ceremony expired"))?;
    state
        .audit_quiet(AuditEvent::new(
            actor.clone(),
            "vault.unlock.share",
            target.clone(),
            Outcome::Success,
        ))
        .await;
    let answer = |accepted: usize| ShareAccepted {
        group: group.clone(),
        accepted: accepted as u64,
        threshold: threshold as u64,
        unlocked: false,
        expires_at: None,
        proven: None,
    };
    match collected {
        Ok(count) => Ok(Json(answer(count))),
        Err(Ok(key)) if crypto::verify_key_check(&key, &row.key_check) => {
            if kind == CeremonyKind::Rekey {
                // Proves the current key for a rekey; does not unlock anything.
                state.ceremonies.with(&id, |c| c.proven_key = Some(key));
                state
                    .audit(AuditEvent::new(
                        actor,
                        "vault.rekey.proof",
                        target,
                        Outcome::Success,
                    ))
                    .await?;
                return Ok(Json(ShareAccepted {
                    proven: Some(true),
                    ..answer(threshold)
                }));
            }
            state
                .audit(
                    AuditEvent::new(actor, "vault.unlock", target, Outcome::Success)
                        .with_details(json!({ "mode": "shamir" })),
                )
                .await?;
            let info = state.sessions.unlock(&group, key);
            state.ceremonies.close(&id);
            Ok(Json(ShareAccepted {
                unlocked: true,
                expires_at: Some(expires_at_secs(&info)),
                ..answer(threshold)
            }))
        }
        Err(_) => {
            state
                .audit_quiet(
                    AuditEvent::new(actor, "vault.unlock", target, Outcome::Denied)
                        .with_details(json!({ "reason": "shares do not reconstruct the key" })),
                )
                .await;
            Err(ApiError::with_message(
                ErrorCode::InvalidShare,
                "the submitted shares do not reconstruct this vault's key; submit them again",
            ))
        }
    }
}
