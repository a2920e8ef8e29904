//! A node's HTTP request: its capability token (bearer, URL-safe base64) and a proof of
//! possession over the whole request. Shared by every service that nodes call.

use std::{sync::Arc, time::SystemTime};

use axum::body::{Body, Bytes};
use base64::Engine;
use http::request::Parts;

use super::bearer_token;
use crate::{
    capability::{
        pop::{PROOF_HEADER, ReplayCache, verify_http},
        token::{MAX_TOKEN_BYTES, VerifiedToken, Verifier},
    },
    error::{ApiError, ErrorCode},
};

pub use keymesh_proto::token::TOKEN_B64;

/// Verify the token's signatures and the proof of possession over method, path, query and
/// body; return the verified token and the body exactly as signed. Expiry, revocation and
/// rights are the caller's to check (they depend on what is asked).
pub async fn authenticate(
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
    Ok((token, body))
}
