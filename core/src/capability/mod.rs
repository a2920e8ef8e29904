//! Capabilities: secret paths, rights and the ceiling; capability tokens; proof of possession.
//! Shared by the vault (which mints and checks), the relay and management (which check).

pub mod path;
pub mod rights;
pub mod token;

pub use path::{PathError, SecretPath};
pub use rights::{Ceiling, Excess, Op, ResourcePattern, Right};
