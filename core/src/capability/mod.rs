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
        };
        ApiError::with_message(code, err.to_string())
    }
}

impl From<path::PathError> for ApiError {
    fn from(err: path::PathError) -> Self {
        ApiError::with_message(ErrorCode::InvalidRequest, err.to_string())
    }
}
