//! A node and the group vault: its secrets, read and written with the node's token and a
//! proof of possession over each request.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    keys::NodeKeys,
    service::{CallError, Service},
};

/// Read a secret from the vault (`{path, version, value, ...}`).
pub async fn read_secret(
    vault: &Service,
    keys: &NodeKeys,
    token: &str,
    group: &str,
    path: &str,
) -> Result<Value, CallError> {
    vault
        .node_call(
            keys,
            token,
            Method::GET,
            &format!("/v1/vaults/{group}/secrets/{path}"),
            None,
        )
        .await
}

/// Write a secret to the vault.
pub async fn write_secret(
    vault: &Service,
    keys: &NodeKeys,
    token: &str,
    group: &str,
    path: &str,
    value: &str,
) -> Result<Value, CallError> {
    vault
        .node_call(
            keys,
            token,
            Method::PUT,
            &format!("/v1/vaults/{group}/secrets/{path}"),
            Some(&json!({ "value": value })),
        )
        .await
}

/// `node`'s identity key as the vault attests it: the attestation
/// (`GET /v1/nodes/{node}/identity`) verified against the vault's root keys that verify now
/// (`GET /v1/tokens/keys`: neither revoked nor past their window). Pin what it returns
/// ([`crate::relay::RelayClient::pin_identity`]): a relay listing another identity for the node
/// is then refused. An attestation that does not verify is `Protocol` with the code's reason.
pub async fn attested_identity(
    vault: &Service,
    keys: &NodeKeys,
    token: &str,
    node: &str,
) -> Result<[u8; 32], CallError> {
    crate::keys::parse_node(node)
        .map_err(|_| CallError::Protocol(format!("{node:?} is not a node id")))?;
    let answer = vault
        .node_call(
            keys,
            token,
            Method::GET,
            &format!("/v1/nodes/{node}/identity"),
            None,
        )
        .await?;
    let attestation: keymesh_proto::identity::IdentityAttestation = serde_json::from_value(answer)
        .map_err(|_| CallError::Protocol("the vault sent an unreadable attestation".into()))?;
    let listing = vault.call(Method::GET, "/v1/tokens/keys", None).await?;
    let roots: Vec<[u8; 32]> = listing["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["state"] != "revoked")
        .filter_map(|k| k["public_key"].as_str())
        .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
        .collect();
    attestation.verify(node, &roots).map_err(|e| {
        CallError::Protocol(format!("{node}'s identity attestation: {e} ({})", e.code()))
    })
}
