//! HTTP calls from a node to management and the vault: JSON in, JSON or a coded error out,
//! signed with the node's token and a proof of possession where the service asks for one.

use std::time::{Duration, SystemTime};

use base64::Engine;
use keymesh_proto::{
    WireError,
    pop::{PROOF_HEADER, sign_http},
    token::TOKEN_B64,
};
use reqwest::{Method, Url, header};
use serde_json::Value;

use crate::{
    keys::NodeKeys,
    transport::{Transport, TransportError, certificate_failure},
};

/// Largest answer read.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a call failed. Never carries a token, code or secret value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The base URL is not `http(s)://host[:port][/prefix]`.
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    /// No answer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The service refused, with its code.
    #[error("{message} ({code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The service's error code.
        code: String,
        /// Its message.
        message: String,
        /// Its details, if any.
        details: Option<Value>,
    },
    /// An answer that is not what the protocol says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The transport refused the URL or cannot be set up (plain HTTP off loopback, a bad CA
    /// file).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server's TLS certificate does not verify.
    #[error("{0}")]
    Tls(String),
}

impl CallError {
    /// A stable code: the service's own when it refused.
    pub fn code(&self) -> &str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::Unreachable(_) => "unreachable",
            Self::Refused { code, .. } => code,
            Self::Protocol(_) => "protocol",
            Self::Transport(e) => e.code(),
            Self::Tls(_) => "tls_untrusted",
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One service's base URL and an HTTP client.
#[derive(Debug, Clone)]
pub struct Service {
    http: reqwest::Client,
    base: String,
}

impl Service {
    /// A client for the service at `base`, trusting the platform's certificates and allowing
    /// plain HTTP to loopback only.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, CallError> {
        Self::with_transport(base, timeout, &Transport::default())
    }

    /// A client for the service at `base` over `transport`.
    pub fn with_transport(
        base: &str,
        timeout: Duration,
        transport: &Transport,
    ) -> Result<Self, CallError> {
        let parsed = Url::parse(base).map_err(|_| CallError::InvalidUrl(base.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || !parsed.username().is_empty()
        {
            return Err(CallError::InvalidUrl(base.to_owned()));
        }
        transport.check_url(&parsed)?;
        let http = transport
            .http_client()?
            .timeout(timeout)
            .build()
            .map_err(|e| CallError::Unreachable(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base: parsed.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// An unsigned JSON call (e.g. enrollment, where the code is the credential).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        self.send(method, path, body.map(Value::to_string), None)
            .await
    }

    /// A node's call: its token (URL-safe base64) and a fresh proof of possession over the
    /// method, path, query and body.
    pub async fn node_call(
        &self,
        keys: &NodeKeys,
        token_b64: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = self.url(path)?;
        let mut signed_path = url.path().to_owned();
        if let Some(q) = url.query() {
            signed_path.push('?');
            signed_path.push_str(q);
        }
        let text = body.map(Value::to_string);
        let raw = TOKEN_B64
            .decode(token_b64.trim())
            .map_err(|_| CallError::Protocol("the token is not URL-safe base64".into()))?;
        let proof = sign_http(
            keys.signing_key(),
            method.as_str(),
            &signed_path,
            text.as_deref().unwrap_or_default().as_bytes(),
            &raw,
            SystemTime::now(),
        );
        self.send(method, path, text, Some((token_b64.trim(), proof)))
            .await
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        let full = format!("{}{path}", self.base);
        Url::parse(&full).map_err(|_| CallError::InvalidUrl(full))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        auth: Option<(&str, String)>,
    ) -> Result<Value, CallError> {
        let mut request = self.http.request(method, self.url(path)?);
        if let Some((token, proof)) = auth {
            request = request
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(PROOF_HEADER, proof);
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let unreachable = |e: reqwest::Error| match certificate_failure(&e) {
            Some(why) => CallError::Tls(why),
            None => CallError::Unreachable(e.without_url().to_string()),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if bytes.len() > MAX_RESPONSE {
            return Err(CallError::Protocol("an answer over 1 MiB".into()));
        }
        if status.is_success() {
            return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
        }
        match WireError::parse(&bytes) {
            Some(error) => Err(CallError::Refused {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                details: error.details,
            }),
            None if status.is_server_error() => {
                Err(CallError::Unreachable(format!("HTTP {status}")))
            }
            None => Err(CallError::Protocol(format!(
                "HTTP {status} without an error body"
            ))),
        }
    }
}
