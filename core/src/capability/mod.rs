//! Capabilities: secret paths, rights and the ceiling; capability tokens; proof of possession.
//! Shared by the vault (which mints and checks), the relay and management (which check).

pub mod follower;
pub mod narrowing;
pub mod revocation;
pub mod token;

pub use keymesh_proto::{path, pop, rights};

pub use path::{PathError, SecretPath};
pub use rights::{Ceiling, Excess, Op, ResourcePattern, Right};

use crate::error::{ApiError, ErrorCode};

impl From<token::TokenError> for ApiError {
    fn from(err: token::TokenError) -> Self {
        use token::TokenError as E;
        let code = match err {
            E::Invalid => ErrorCode::InvalidToken,
            E::Expired => ErrorCode::TokenExpired,
            E::Revoked => ErrorCode::Revoked,
            E::Forbidden => ErrorCode::Forbidden,
            E::Timeout => ErrorCode::Timeout,
        };
        ApiError::new(code)
    }
}

impl From<pop::PopError> for ApiError {
    fn from(err: pop::PopError) -> Self {
        use pop::PopError as E;
        let code = match err {
            E::Missing => ErrorCode::ProofRequired,
            E::Invalid | E::Stale => ErrorCode::ProofInvalid,
            E::Replayed => ErrorCode::ProofReplayed,
            E::Overloaded => ErrorCode::Unavailable,
            E::NodeQuota => ErrorCode::RateLimited,
        };
        let refusal = ApiError::with_message(code, err.to_string());
        match err {
            // Room comes back as this node's oldest proofs leave the window.
            E::NodeQuota => refusal.retry_after(pop::WINDOW),
            _ => refusal,
        }
    }
}

impl From<path::PathError> for ApiError {
    fn from(err: path::PathError) -> Self {
        ApiError::with_message(ErrorCode::InvalidRequest, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    /// A node over its share of the replay cache is told to slow down, and when: not the
    /// `503` every node got when one filled the cache.
    #[test]
    fn a_node_over_its_proof_quota_is_rate_limited_with_retry_after() {
        let refusal = ApiError::from(pop::PopError::NodeQuota);
        assert_eq!(refusal.code(), ErrorCode::RateLimited);
        let response = refusal.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "60");
        assert_eq!(
            ApiError::from(pop::PopError::Overloaded).code(),
            ErrorCode::Unavailable
        );
    }
}
