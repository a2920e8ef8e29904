//! Management's calls to the vault: register nodes, mint tokens, revoke, lock. Each carries
//! `MANAGEMENT_VAULT_API_KEY` (the vault's `MANAGEMENT_API_KEY`), never a user's session.

use std::time::Duration;

use keymesh_core::capability::revocation::FeedEntry;
use keymesh_core::{ApiError, ErrorCode};
use keymesh_proto::api::vaults::{CeremonyKind, CeremonyOpened, VaultStatus};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::config::VaultLink;

/// How long one vault call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a vault call failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Management has no vault configured.
    #[error("management is not connected to a vault (MANAGEMENT_VAULT_URL)")]
    NotConfigured,
    /// The vault did not answer (connection, timeout, unreadable reply).
    #[error("the vault did not answer: {0}")]
    Unreachable(String),
    /// The vault answered with a coded error.
    #[error("the vault refused: {status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The vault's error code.
        code: String,
        /// Its message.
        message: String,
        /// Its details, if any.
        details: Option<Value>,
    },
}

impl VaultError {
    /// The vault's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<VaultError> for ApiError {
    /// What the caller of management sees: the vault's own refusal for what the caller asked
    /// (e.g. `approval_required` with its details), `unavailable` for everything that is
    /// management's or the vault's problem (the cause goes to the log, not the body).
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Refused {
                code,
                message,
                details,
                ..
            } if PASSED_THROUGH.contains(&code.as_str()) => {
                let code = ErrorCode::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == code)
                    .unwrap_or(ErrorCode::Unavailable);
                let err = ApiError::with_message(code, message);
                match details {
                    Some(d) => err.with_details(d),
                    None => err,
                }
            }
            other => {
                tracing::error!(error = %other, "vault call failed");
                ApiError::with_message(ErrorCode::Unavailable, "the vault is unavailable; retry")
            }
        }
    }
}

/// Vault refusals that are about the caller's request and keep their code.
const PASSED_THROUGH: &[&str] = &[
    "approval_required",
    "invalid_request",
    "vault_locked",
    "not_found",
    "conflict",
    "rate_limited",
    "audit_unavailable",
    "invalid_passphrase",
    "invalid_share",
    "forbidden",
];

/// A token the vault minted, as management hands it on (enrollment, token requests).
#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// The token, URL-safe base64 (secret: shown once).
    pub token: String,
    /// The token's own id.
    pub token_id: String,
    /// The grant it belongs to: what `POST /v1/tokens/revoke` at the vault names to revoke it
    /// (and everything derived from it).
    pub grant: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("grant", &self.grant)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The vault's answer to a registration.
#[derive(Clone, Debug, Deserialize)]
pub struct Registered {
    /// The node's existing tokens were revoked (new key, group or user, lower ceiling, or
    /// disabled).
    pub tokens_revoked: bool,
}

/// The vault's answer to a lock.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Locked {
    /// The group.
    pub group: String,
    /// Always `true`: the data key is not in memory.
    pub locked: bool,
    /// Whether it was unlocked until now.
    pub was_unlocked: bool,
}

/// A node as the vault registers it.
#[derive(Debug)]
pub struct Registration<'a> {
    /// Node id.
    pub node_id: &'a str,
    /// Group.
    pub group: &'a str,
    /// Owning user.
    pub user: &'a str,
    /// Ed25519 identity key, hex.
    pub public_key_hex: &'a str,
    /// Ceiling.
    pub ceiling: &'a str,
    /// Disabled: the vault mints, refreshes and delegates nothing for it.
    pub disabled: bool,
}

impl<'a> Registration<'a> {
    /// The registration of a recorded node, with a ceiling.
    pub fn of(node: &'a crate::directory::NodeRow, key_hex: &'a str, ceiling: &'a str) -> Self {
        Self {
            node_id: &node.id,
            group: &node.group_id,
            user: &node.user_id,
            public_key_hex: key_hex,
            ceiling,
            disabled: node.disabled_at_ms.is_some(),
        }
    }
}

/// A client for one vault.
#[derive(Clone, Debug)]
pub struct VaultClient {
    link: Option<VaultLink>,
    http: reqwest::Client,
}

impl VaultClient {
    /// Over `link` (or none: every call fails with [`VaultError::NotConfigured`]), trusting
    /// `cas` for HTTPS (the platform's roots when `None`).
    pub fn new(
        link: Option<VaultLink>,
        cas: Option<&keymesh_core::tls::TrustedCas>,
    ) -> Result<Self, reqwest::Error> {
        let http = keymesh_core::tls::client_builder(cas)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { link, http })
    }

    /// Whether a vault is configured.
    pub fn configured(&self) -> bool {
        self.link.is_some()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, VaultError> {
        let link = self.link.as_ref().ok_or(VaultError::NotConfigured)?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", link.url))
            .bearer_auth(link.api_key.expose_secret());
        if let Some(body) = body {
            req = req.json(&body);
        }
        // reqwest's errors name the URL; that is fine in our own log.
        let reply = req
            .send()
            .await
            .map_err(|e| VaultError::Unreachable(e.without_url().to_string()))?;
        let status = reply.status();
        let bytes = reply
            .bytes()
            .await
            .map_err(|e| VaultError::Unreachable(e.without_url().to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        Err(VaultError::Refused {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            message: error["message"].as_str().unwrap_or_default().to_owned(),
            details: error.get("details").cloned(),
        })
    }

    /// A call whose answer has a known shape.
    async fn call_as<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, VaultError> {
        let value = self.call(method, path, body).await?;
        serde_json::from_value(value)
            .map_err(|e| VaultError::Unreachable(format!("an unreadable answer to {path}: {e}")))
    }

    /// `PUT /v1/nodes/{id}`: register or update a node.
    pub async fn put_node(&self, node: &Registration<'_>) -> Result<Registered, VaultError> {
        self.call_as(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{}", node.node_id),
            Some(json!({
                "group": node.group, "user": node.user, "public_key": node.public_key_hex,
                "ceiling": node.ceiling, "disabled": node.disabled,
            })),
        )
        .await
    }

    /// `POST /v1/tokens`: mint a node's token. `approval` names the approval request that
    /// allows rights above the node's ceiling.
    pub async fn mint(
        &self,
        node_id: &str,
        rights: &Value,
        ttl_secs: Option<u64>,
        approval: Option<&str>,
    ) -> Result<IssuedToken, VaultError> {
        let mut body = json!({ "node_id": node_id, "rights": rights });
        if let Some(ttl) = ttl_secs {
            body["ttl_secs"] = json!(ttl);
        }
        if let Some(id) = approval {
            body["approval"] = json!(id);
        }
        self.call_as(reqwest::Method::POST, "/v1/tokens", Some(body))
            .await
    }

    /// `POST /v1/revocations` with an epoch bump: every token of the subject dies.
    pub async fn revoke_epoch(
        &self,
        scope: &str,
        subject: &str,
        reason: &str,
    ) -> Result<FeedEntry, VaultError> {
        self.call_as(
            reqwest::Method::POST,
            "/v1/revocations",
            Some(json!({ "kind": "epoch", "scope": scope, "subject": subject, "reason": reason })),
        )
        .await
    }

    /// `GET /v1/audit?after_seq=&limit=`: the vault's audit records after `after`.
    pub async fn audit_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<keymesh_core::audit::AuditRecords, VaultError> {
        self.call_as(
            reqwest::Method::GET,
            &format!("/v1/audit?after_seq={after}&limit={limit}"),
            None,
        )
        .await
    }

    /// `GET /v1/vaults/{group}`: whether the group has a vault, its mode, whether unlocked.
    pub async fn status(&self, group: &str) -> Result<VaultStatus, VaultError> {
        self.call_as(reqwest::Method::GET, &format!("/v1/vaults/{group}"), None)
            .await
    }

    /// `POST /v1/vaults/{group}/ceremonies`: open a key ceremony of `kind`.
    pub async fn open_ceremony(
        &self,
        group: &str,
        kind: CeremonyKind,
    ) -> Result<CeremonyOpened, VaultError> {
        self.call_as(
            reqwest::Method::POST,
            &format!("/v1/vaults/{group}/ceremonies"),
            Some(json!({ "kind": kind })),
        )
        .await
    }

    /// `POST /v1/ceremonies/{id}/{step}`: relay sealed material (a passphrase or share sealed
    /// to the ceremony key, or a new protection) to an open ceremony; `T` is the step's answer.
    pub async fn ceremony_step<T: DeserializeOwned>(
        &self,
        id: &str,
        step: &str,
        body: Value,
    ) -> Result<T, VaultError> {
        self.call_as(
            reqwest::Method::POST,
            &format!("/v1/ceremonies/{id}/{step}"),
            Some(body),
        )
        .await
    }

    /// `POST /v1/vaults/{group}/lock`: wipe the group's data key now.
    pub async fn lock(&self, group: &str) -> Result<Locked, VaultError> {
        self.call_as(
            reqwest::Method::POST,
            &format!("/v1/vaults/{group}/lock"),
            None,
        )
        .await
    }
}
