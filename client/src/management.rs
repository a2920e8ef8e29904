//! A node and the management server: enrollment (a one-time code, the identity key and a
//! signature by it, for the first token) and token requests (within the ceiling at once, above
//! it through a human approval, redeemed once).

use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use keymesh_proto::pop::sign_enrollment;

use crate::{
    keys::NodeKeys,
    service::{CallError, Service},
};

/// What enrollment returns.
#[derive(Debug)]
pub struct Enrolled {
    /// The node id.
    pub node: String,
    /// Its group.
    pub group: String,
    /// Its ceiling.
    pub ceiling: String,
    /// The first token, URL-safe base64 (secret).
    pub token: SecretString,
    /// The token's id.
    pub token_id: String,
    /// The token's grant: what revoking it names at the vault (`POST /v1/tokens/revoke`).
    pub grant: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The relay management suggests, if any.
    pub relay_url: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    node: NodeDoc,
    token: String,
    token_id: String,
    grant: String,
    expires_at: u64,
    relay_url: Option<String>,
}

#[derive(Deserialize)]
struct NodeDoc {
    id: String,
    group_id: String,
    ceiling: String,
}

/// Enroll `keys` with `code` at management (`service`).
pub async fn enroll(service: &Service, code: &str, keys: &NodeKeys) -> Result<Enrolled, CallError> {
    let code = code.trim();
    let signature = sign_enrollment(keys.signing_key(), code, keys.node());
    let body = json!({
        "code": code,
        "node_id": keys.node(),
        "public_key": hex::encode(keys.identity_public()),
        "signature": hex::encode(signature),
    });
    let value = service
        .call(Method::POST, "/v1/enroll", Some(&body))
        .await?;
    let answer: Answer = serde_json::from_value(value)
        .map_err(|_| CallError::Protocol("not an enrollment answer".into()))?;
    if answer.node.id != keys.node() {
        return Err(CallError::Protocol(
            "management enrolled another node id".into(),
        ));
    }
    Ok(Enrolled {
        node: answer.node.id,
        group: answer.node.group_id,
        ceiling: answer.node.ceiling,
        token: SecretString::from(answer.token),
        token_id: answer.token_id,
        grant: answer.grant,
        expires_at: answer.expires_at,
        relay_url: answer.relay_url,
    })
}

/// The answer to a token request.
#[derive(Debug)]
pub enum TokenAnswer {
    /// Within the ceiling: the token document (`token`, `token_id`, `grant`, `expires_at`;
    /// `approval` when a waiver approved it).
    Token(Value),
    /// Above it: the approval request to follow (`id`, `status`, ...).
    Approval(Value),
}

/// Ask management for a token with `rights` (`[{resource, op}]`).
pub async fn request_token(
    service: &Service,
    keys: &NodeKeys,
    token: &str,
    rights: &Value,
    reason: &str,
) -> Result<TokenAnswer, CallError> {
    let body = json!({ "rights": rights, "reason": reason });
    let answer = service
        .node_call(keys, token, Method::POST, "/v1/token-requests", Some(&body))
        .await?;
    match (answer.get("token"), answer.get("approval")) {
        (Some(Value::String(_)), _) => Ok(TokenAnswer::Token(answer)),
        (None, Some(a)) => Ok(TokenAnswer::Approval(a.clone())),
        _ => Err(CallError::Protocol("not a token request answer".into())),
    }
}

/// The approval request `id` as it stands (`{approval, decisions}`).
pub async fn token_request(
    service: &Service,
    keys: &NodeKeys,
    token: &str,
    id: &str,
) -> Result<Value, CallError> {
    service
        .node_call(
            keys,
            token,
            Method::GET,
            &format!("/v1/token-requests/{id}"),
            None,
        )
        .await
}

/// Execute an approved token request (once): the new token document (`token`, `token_id`,
/// `grant`, `expires_at`, and the executed `approval`).
pub async fn redeem(
    service: &Service,
    keys: &NodeKeys,
    token: &str,
    id: &str,
) -> Result<Value, CallError> {
    let answer = service
        .node_call(
            keys,
            token,
            Method::POST,
            &format!("/v1/token-requests/{id}/redeem"),
            None,
        )
        .await?;
    if answer.get("token").is_some_and(Value::is_string) {
        Ok(answer)
    } else {
        Err(CallError::Protocol(
            "a redeem answer without a token".into(),
        ))
    }
}
