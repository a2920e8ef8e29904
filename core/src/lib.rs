//! keymesh-core: the ground every Keymesh service stands on — configuration, error codes,
//! telemetry, the HTTP stack, health and metrics, storage. No service logic lives here.

pub mod audit;
pub mod build;
pub mod capability;
pub mod config;
pub mod context;
pub mod crypto;
#[cfg(any(test, feature = "testing"))]
pub mod docs;
pub mod error;
pub mod health;
pub mod http;
pub mod ident;
pub mod metrics;
pub mod openapi;
pub mod secret;
#[cfg(feature = "testing")]
pub mod smtp_testing;
pub mod storage;
pub mod telemetry;
pub mod tls;

pub use context::{ServiceContext, serve};
pub use error::{ApiError, ErrorCode};
