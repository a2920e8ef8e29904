//! Typed HTTP contracts, route group by route group: what a service answers and a client reads,
//! defined once. The services serialize these types (their OpenAPI schemas come from them under
//! feature `openapi`) and the clients deserialize them.

pub mod approvals;
pub mod vaults;
