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
