//! Who is calling: management (service credential), a follower of the revocation feed, or a
//! node (capability token plus proof of possession over the whole request).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use keymesh_core::{
    ApiError, ErrorCode, ServiceContext,
    capability::{
        pop::ReplayCache,
        token::{RevocationView, Verifier},
    },
    http::{
        bearer_token,
        node::{NodeGate, SignedRequest},
    },
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

/// A node's request (the one extractor every service uses: token, proof, liveness, limits).
pub type NodeCall = SignedRequest;

impl NodeGate for VaultState {
    fn token_verifier(&self) -> Result<Arc<Verifier>, ApiError> {
        Ok(self.verifier())
    }

    fn revocations(&self) -> &dyn RevocationView {
        &self.revocations
    }

    fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    fn context(&self) -> &ServiceContext {
        &self.ctx
    }
}
