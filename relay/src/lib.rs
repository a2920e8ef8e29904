//! keymesh-relay: the zero-knowledge relay. Nodes send each other HPKE-sealed messages over a
//! WebSocket (or HTTP); the relay stores and forwards ciphertext only, answers `accepted` only
//! once a message is durable, and says why when it refuses.

pub mod config;
pub mod frame;
pub mod store;

pub use config::RelayConfig;
