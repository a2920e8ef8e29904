//! Enrollment with the management server: the node presents a one-time code, its identity key
//! and a signature by that key, and receives its first capability token.

use std::time::Duration;

use keymesh_core::capability::pop::sign_enrollment;
use reqwest::Url;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::keys::NodeKeys;

/// Largest answer read.
const MAX_RESPONSE: usize = 1 << 20;

/// Why an enrollment failed. Never carries the code or the token.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The management URL is not `http(s)://host[:port][/prefix]`.
    #[error("invalid management URL {0:?}")]
    InvalidUrl(String),
    /// No answer.
    #[error("management is unreachable: {0}")]
    Unreachable(String),
    /// Management refused, with its code.
    #[error("management refused the enrollment: {message} ({code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Management's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// An answer that is not what the protocol says.
    #[error("unexpected answer from management: {0}")]
    Protocol(String),
}

impl EnrollError {
    /// A stable code: management's own when it refused.
    pub fn code(&self) -> &str {
        match self {
            Self::InvalidUrl(_) => "invalid_management_url",
            Self::Unreachable(_) => "management_unreachable",
            Self::Refused { code, .. } => code,
            Self::Protocol(_) => "management_protocol",
        }
    }
}

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
    expires_at: u64,
    relay_url: Option<String>,
}

#[derive(Deserialize)]
struct NodeDoc {
    id: String,
    group_id: String,
    ceiling: String,
}

fn base(url: &str) -> Result<Url, EnrollError> {
    let parsed = Url::parse(url).map_err(|_| EnrollError::InvalidUrl(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.query().is_some()
        || !parsed.username().is_empty()
    {
        return Err(EnrollError::InvalidUrl(url.to_owned()));
    }
    let full = format!("{}/v1/enroll", parsed.as_str().trim_end_matches('/'));
    Url::parse(&full).map_err(|_| EnrollError::InvalidUrl(full))
}

/// Enroll `keys` with `code` at the management server at `management_url`.
pub async fn enroll(
    management_url: &str,
    code: &str,
    keys: &NodeKeys,
    timeout: Duration,
) -> Result<Enrolled, EnrollError> {
    let url = base(management_url)?;
    let signature = sign_enrollment(keys.signing_key(), code.trim(), keys.node());
    let body = json!({
        "code": code.trim(),
        "node_id": keys.node(),
        "public_key": hex::encode(keys.identity_public()),
        "signature": hex::encode(signature),
    });
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| EnrollError::Unreachable(e.without_url().to_string()))?;
    let reply = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| EnrollError::Unreachable(e.without_url().to_string()))?;
    let status = reply.status();
    let bytes = reply
        .bytes()
        .await
        .map_err(|e| EnrollError::Unreachable(e.without_url().to_string()))?;
    if bytes.len() > MAX_RESPONSE {
        return Err(EnrollError::Protocol("answer too large".into()));
    }
    if !status.is_success() {
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(EnrollError::Refused {
            status: status.as_u16(),
            code: value["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: value["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned(),
        });
    }
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|_| EnrollError::Protocol("not an enrollment answer".into()))?;
    if answer.node.id != keys.node() {
        return Err(EnrollError::Protocol(
            "management enrolled another node id".into(),
        ));
    }
    Ok(Enrolled {
        node: answer.node.id,
        group: answer.node.group_id,
        ceiling: answer.node.ceiling,
        token: SecretString::from(answer.token),
        token_id: answer.token_id,
        expires_at: answer.expires_at,
        relay_url: answer.relay_url,
    })
}
