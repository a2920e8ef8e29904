//! A node's HTTP request: its capability token (bearer, URL-safe base64) and a proof of
//! possession over the whole request. One extractor, [`SignedRequest`], for every service
//! that nodes call: each service says where its keys, revocations and replay cache are
//! ([`NodeGate`]) and gets the same checks in the same order.

use std::{sync::Arc, time::SystemTime};

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
};
use base64::Engine;
use http::request::Parts;

use super::bearer_token;
use crate::{
    capability::{
        pop::{PROOF_HEADER, ReplayCache, verify_http},
        token::{MAX_TOKEN_BYTES, RevocationView, VerifiedToken, Verifier},
    },
    context::ServiceContext,
    error::{ApiError, ErrorCode},
};

pub use keymesh_proto::token::TOKEN_B64;

/// What a service lends the node-request extractor.
pub trait NodeGate: Send + Sync {
    /// The token checker, or `unavailable` while the root keys are not known yet.
    fn token_verifier(&self) -> Result<Arc<Verifier>, ApiError>;
    /// The revocations liveness is checked against (a stale copy refuses everything).
    fn revocations(&self) -> &dyn RevocationView;
    /// Proofs of possession already seen.
    fn replay_cache(&self) -> &ReplayCache;
    /// Limits and the body bound.
    fn context(&self) -> &ServiceContext;
}

/// A node's signed request, checked in this order: the token's signatures, the proof of
/// possession over method, path, query, body and token (each proof once), the token alive (not
/// expired, not revoked, the revocation view fresh: fail closed), then the node's principal
/// rate limit. Rights are the handler's to check: they depend on what is asked.
#[derive(Debug)]
pub struct SignedRequest {
    /// The verified, living token.
    pub token: Arc<VerifiedToken>,
    /// The request body, exactly as signed.
    pub body: Bytes,
}

impl SignedRequest {
    /// `node:ID`, for audit records and rate limits.
    pub fn actor(&self) -> String {
        format!("node:{}", self.token.claims.node)
    }

    /// Parse the body as JSON with a coded error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::with_message(ErrorCode::MalformedRequest, e.to_string()))
    }
}

impl<S: NodeGate> FromRequest<S> for SignedRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let verifier = state.token_verifier()?;
        let context = state.context();
        let (token, body) = authenticate(
            &parts,
            body,
            &verifier,
            state.replay_cache(),
            context.config.common.http.body_limit,
        )
        .await?;
        verifier.check_alive(&token, state.revocations(), SystemTime::now())?;
        let signed = Self { token, body };
        context.limits.check_principal(&signed.actor())?;
        Ok(signed)
    }
}

/// Verify the token's signatures and the proof of possession over method, path, query and
/// body; return the verified token and the body exactly as signed.
async fn authenticate(
    parts: &Parts,
    body: Body,
    verifier: &Verifier,
    replay: &ReplayCache,
    body_limit: usize,
) -> Result<(Arc<VerifiedToken>, Bytes), ApiError> {
    let encoded =
        bearer_token(&parts.headers).ok_or_else(|| ApiError::new(ErrorCode::InvalidToken))?;
    if encoded.len() > MAX_TOKEN_BYTES * 2 {
        return Err(ApiError::new(ErrorCode::InvalidToken));
    }
    let raw = TOKEN_B64
        .decode(encoded)
        .map_err(|_| ApiError::new(ErrorCode::InvalidToken))?;
    let token = verifier.verify(&raw)?;
    // The body limit layer already bounds the body; a read error here means it was exceeded
    // or the client went away.
    let body = axum::body::to_bytes(body, body_limit)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge))?;
    let proof = parts
        .headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok());
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    verify_http(
        proof,
        &token.node_key,
        parts.method.as_str(),
        path_and_query,
        &body,
        &token.hash,
        replay,
        SystemTime::now(),
    )?;
    // Only now, with possession proven, may the token take room in the cache.
    verifier.remember(&token);
    Ok((token, body))
}
