//! The group vault's lifecycle API (docs/vault.md): a vault's status, extending its session,
//! and the answers of the key ceremonies (open, init, unlock by passphrase or shares, rekey).
//! The vault serializes these; management reads them from the vault and passes the status and
//! the ceremony steps' answers through to admins unchanged.

use serde::{Deserialize, Serialize};

/// What a ceremony is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CeremonyKind {
    /// Create the group vault.
    Init,
    /// Unlock it.
    Unlock,
    /// Change the passphrase or re-share (the current protection is proven first).
    Rekey,
}

impl CeremonyKind {
    /// Wire and audit name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Unlock => "unlock",
            Self::Rekey => "rekey",
        }
    }
}

/// `GET /v1/vaults/{group}` (and management's `GET /v1/groups/{id}/vault`): a group vault's
/// state. A group without a vault is `{group, initialized: false}`; the other fields appear
/// once it has one.
///
/// Its OpenAPI schema is written by hand (below): a derived one would flatten `vault` as
/// "`null` or a whole `VaultInfo`", which no answer without a vault matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultStatus {
    /// The group.
    pub group: String,
    /// Whether the group has a vault.
    pub initialized: bool,
    /// The vault, once initialized.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultInfo>,
}

/// One object: `group` and `initialized` always, `VaultInfo`'s fields besides them (required
/// by nothing, present exactly when `initialized`).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for VaultStatus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{
            RefOr,
            schema::{ObjectBuilder, Schema, Type},
        };
        let mut object = ObjectBuilder::new()
            .description(Some(
                "A group vault's state: `group` and `initialized` always; the other fields exactly when `initialized`.",
            ))
            .property(
                "group",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The group.")),
            )
            .required("group")
            .property(
                "initialized",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("Whether the group has a vault.")),
            )
            .required("initialized")
            .build();
        if let RefOr::T(Schema::Object(info)) = <VaultInfo as utoipa::PartialSchema>::schema() {
            object.properties.extend(info.properties);
        }
        RefOr::T(Schema::Object(object))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for VaultStatus {}

/// An initialized vault's protection and session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VaultInfo {
    /// `passphrase` or `shamir`.
    pub mode: String,
    /// Shares needed to unlock (Shamir vaults; `null` for a passphrase vault).
    pub threshold: Option<i64>,
    /// The share holders' admin ids (Shamir vaults; empty for a passphrase vault).
    pub holders: Vec<String>,
    /// Starts at 1; a rekey adds one.
    pub generation: i64,
    /// Whether the data key is out of memory.
    pub locked: bool,
    /// While unlocked: when the session ends (unix seconds); `null` while locked.
    pub expires_at: Option<u64>,
}

/// `POST /v1/vaults/{group}/extend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Extended {
    /// The group.
    pub group: String,
    /// When the session now ends (unix seconds).
    pub expires_at: u64,
}

/// One holder's share, sealed to the holder's X25519 key by the vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SealedShare {
    /// The holder.
    pub admin_id: String,
    /// The share, sealed to the holder's X25519 key (base64).
    pub sealed_share: String,
}

/// `POST /v1/vaults/{group}/ceremonies`: an open ceremony (the vault's answer to management).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CeremonyOpened {
    /// The ceremony id, for the steps (`kmc_…`).
    pub ceremony_id: String,
    /// The ceremony's X25519 public key, hex: it exists only in this vault process.
    pub public_key: String,
    /// What it is for.
    pub kind: CeremonyKind,
    /// The group.
    pub group: String,
    /// The vault forgets the ceremony after this many seconds.
    pub expires_in_secs: u64,
    /// The existing vault's protection, `passphrase` or `shamir` (`null` for an init).
    pub mode: Option<String>,
    /// The existing vault's threshold (Shamir vaults).
    pub threshold: Option<i64>,
    /// For a Shamir vault, every holder's sealed share.
    pub shares: Vec<SealedShare>,
}

/// A ceremony as management recorded it (`GET /v1/ceremonies/{id}`, and opening one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ceremony {
    /// Management's handle for the ceremony (what parties and audit records see; the vault's
    /// own id never leaves management).
    pub id: String,
    /// Its group.
    pub group_id: String,
    /// `init`, `unlock` or `rekey`.
    pub kind: String,
    /// The approval it executes (unlock).
    pub approval_id: Option<String>,
    /// `user:ID` of who opened it.
    pub opened_by: String,
    /// The ceremony's X25519 public key, hex: what passphrases and shares are sealed to.
    pub public_key: String,
    /// Opened, unix ms.
    pub opened_at_ms: i64,
    /// The vault forgets the ceremony then, unix ms.
    pub expires_at_ms: i64,
    /// Finished (vault created, unlocked or rekeyed), unix ms.
    pub finished_at_ms: Option<i64>,
}

/// A ceremony as a party sees it: its key and, of the sealed shares, only their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CeremonyView {
    /// The ceremony (its `public_key` is what passphrases and shares are sealed to).
    pub ceremony: Ceremony,
    /// The vault's protection: `passphrase` or `shamir` (`null` before init).
    pub mode: Option<String>,
    /// Shares needed to unlock (Shamir vaults).
    pub threshold: Option<i64>,
    /// Every share holder's id (Shamir vaults).
    pub holders: Vec<String>,
    /// The caller's own sealed share, if they hold one.
    pub shares: Vec<SealedShare>,
}

/// `POST /v1/ceremonies/{id}/init`: the vault exists, locked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Initialized {
    /// The group.
    pub group: String,
    /// `passphrase` or `shamir`.
    pub mode: String,
    /// Always `true`: a new vault starts locked.
    pub locked: bool,
}

/// `POST /v1/ceremonies/{id}/rekey`: the data key has its new protection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rekeyed {
    /// The group.
    pub group: String,
    /// The new protection, `passphrase` or `shamir`.
    pub mode: String,
    /// The new generation.
    pub generation: i64,
}

/// `POST /v1/ceremonies/{id}/passphrase`: the vault is unlocked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unlocked {
    /// The group.
    pub group: String,
    /// Always `true`.
    pub unlocked: bool,
    /// When the session ends (unix seconds).
    pub expires_at: u64,
}

/// `POST /v1/ceremonies/{id}/shares`: the share counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareAccepted {
    /// The group.
    pub group: String,
    /// Shares collected (the threshold once the key was reconstructed).
    pub accepted: u64,
    /// Shares needed.
    pub threshold: u64,
    /// Whether the vault is now unlocked (an unlock ceremony at its threshold).
    pub unlocked: bool,
    /// Once unlocked: when the session ends (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// A rekey ceremony at its threshold: the current key is proven (`true`); nothing unlocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_status_keeps_its_two_shapes() {
        let new = VaultStatus {
            group: "g".into(),
            initialized: false,
            vault: None,
        };
        let value = serde_json::to_value(&new).unwrap();
        assert_eq!(value, json!({ "group": "g", "initialized": false }));
        assert_eq!(serde_json::from_value::<VaultStatus>(value).unwrap(), new);

        let locked = VaultStatus {
            group: "g".into(),
            initialized: true,
            vault: Some(VaultInfo {
                mode: "passphrase".into(),
                threshold: None,
                holders: vec![],
                generation: 1,
                locked: true,
                expires_at: None,
            }),
        };
        let value = serde_json::to_value(&locked).unwrap();
        // The nulls are part of the answer, as they always were.
        assert_eq!(
            value,
            json!({ "group": "g", "initialized": true, "mode": "passphrase", "threshold": null,
                    "holders": [], "generation": 1, "locked": true, "expires_at": null })
        );
        assert_eq!(
            serde_json::from_value::<VaultStatus>(value).unwrap(),
            locked
        );
    }

    /// The published schema takes both shapes and nothing else (the conformance checker closes
    /// objects the same way).
    #[test]
    fn the_status_schema_takes_both_shapes() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(VaultStatus::schema()).unwrap();
        let mut properties: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        properties.sort_unstable();
        assert_eq!(
            properties,
            [
                "expires_at",
                "generation",
                "group",
                "holders",
                "initialized",
                "locked",
                "mode",
                "threshold"
            ]
        );
        assert_eq!(schema["required"], json!(["group", "initialized"]));
        assert_eq!(schema["type"], "object");
    }

    #[test]
    fn a_share_answer_names_only_what_happened() {
        let counted = ShareAccepted {
            group: "g".into(),
            accepted: 1,
            threshold: 2,
            unlocked: false,
            expires_at: None,
            proven: None,
        };
        assert_eq!(
            serde_json::to_value(&counted).unwrap(),
            json!({ "group": "g", "accepted": 1, "threshold": 2, "unlocked": false })
        );
    }
}
