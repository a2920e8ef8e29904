//! keymesh-core: the ground every Keymesh service stands on — configuration, error codes,
//! telemetry, the HTTP stack, health and metrics, storage. No service logic lives here.

pub mod audit;
pub mod build;
pub mod capability;
pub mod config;
pub mod context;
#[cfg(any(test, feature = "testing"))]
pub mod docs;
pub mod error;
pub mod health;
pub mod http;
pub mod metrics;
pub mod openapi;
#[cfg(feature = "testing")]
pub mod smtp_testing;
pub mod storage;
pub mod telemetry;
pub mod tls;

pub use context::{ServiceContext, serve};
pub use error::{ApiError, ErrorCode};
/// The wire contract (keymesh-proto), where the services have always found it.
pub use keymesh_proto::{crypto, ident, identity, secret};
