//! Who is calling: management (service credential), a follower of the revocation feed, or a
//! node (capability token plus proof of possession over the whole request).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
};
use http::request::Parts;
use keymesh_core::{
    ApiError, ErrorCode,
    capability::token::VerifiedToken,
    http::{bearer_token, node::authenticate},
    secret::secret_eq,
};
use secrecy::{ExposeSecret, SecretString};

use crate::state::VaultState;

pub use keymesh_core::http::node::TOKEN_B64;

fn service_credential(parts: &Parts, accepted: &[&SecretString]) -> Result<(), ApiError> {
    let presented =
        bearer_token(&parts.headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
    // Compare against every accepted credential without stopping early.
    let matched = accepted.iter().fold(false, |ok, key| {
        secret_eq(presented.as_bytes(), key.expose_secret().as_bytes()) | ok
    });
    if matched {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Unauthorized))
    }
}

/// The management server, authenticated by `MANAGEMENT_API_KEY`.
#[derive(Debug, Clone, Copy)]
pub struct Management;

impl FromRequestParts<VaultState> for Management {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &VaultState) -> Result<Self, ApiError> {
        service_credential(parts, &[&state.config.management_api_key])?;
        state.ctx.limits.check_principal("service:management")?;
        Ok(Management)
    }
}

/// A relay or replica following the revocation feed (`VAULT_FEED_API_KEY`; management too).
#[derive(Debug, Clone, Copy)]
pub struct Follower;

impl FromRequestParts<VaultState> for Follower {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &VaultState) -> Result<Self, ApiError> {
        service_credential(
            parts,
            &[&state.config.feed_api_key, &state.config.management_api_key],
        )?;
        state.ctx.limits.check_principal("service:follower")?;
        Ok(Follower)
    }
}

/// A node's request: its verified token (signatures checked; rights are checked per resource
/// by the handler) and the body the proof of possession covered.
#[derive(Debug)]
pub struct NodeCall {
    /// The verified token.
    pub token: Arc<VerifiedToken>,
    /// The request body, exactly as signed.
    pub body: Bytes,
}

impl NodeCall {
    /// `node:ID`, for audit records.
    pub fn actor(&self) -> String {
        format!("node:{}", self.token.claims.node)
    }

    /// Parse the body as JSON with a coded error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::with_message(ErrorCode::MalformedRequest, e.to_string()))
    }
}

impl FromRequest<VaultState> for NodeCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &VaultState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let (token, body) = authenticate(
            &parts,
            body,
            &state.verifier(),
            &state.replay,
            state.ctx.config.common.http.body_limit,
        )
        .await?;
        state
            .ctx
            .limits
            .check_principal(&format!("node:{}", token.claims.node))?;
        Ok(NodeCall { token, body })
    }
}
