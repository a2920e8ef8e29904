//! keymesh-proto: the wire contract between Keymesh's services and everything that talks to
//! them: error codes and the error body, ids and secret paths, rights, the cryptography (AEAD,
//! Argon2id key wrapping, Shamir, HPKE), proofs of possession, the relay's frames, signed key
//! statements and the end-to-end envelope.
//!
//! Pure code: no async runtime, no HTTP stack, no database, no token engine. A node, the admin
//! app and the fuzz targets link this and nothing of the servers (decision 0013). The services
//! reach it through `keymesh-core`, which re-exports it where the code used to live.

pub mod api;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod ident;
pub mod identity;
pub mod keys;
pub mod path;
pub mod pop;
pub mod rights;
pub mod secret;
pub mod token;

pub use error::{ErrorCode, WireError};
