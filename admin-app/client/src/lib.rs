//! Keymesh Admin without its window.
//!
//! Everything the desktop app does that is not drawing: the HTTP client for management (and
//! the readiness and metrics of the vault and relay), the secret store that keeps the session
//! token and the unlock share key out of the web view, the approvals event stream, and the
//! sealing of unlock shares. The Tauri shell (`admin-app/src-tauri`) only maps its commands
//! onto [`Admin`]; nothing here depends on Tauri.

mod admin;
pub mod api;
mod approvals;
pub mod error;
pub mod health;
pub mod settings;
pub mod share;
pub mod sse;
pub mod store;

pub use admin::{Admin, EventSink, StreamEvent};
pub use error::AppError;
