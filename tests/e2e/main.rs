//! Workspace end-to-end tests: the real `keymesh` binary, started as a process and driven over
//! HTTP. One test binary (links are slow on two cores); each area is a module.

mod cross_service;
mod enroll;
mod process;
mod relay_crash;
mod server;
mod support;
mod tls;

/// The `keymesh` binary under test (`process.rs` is shared with admin-app's window test, which
/// finds the binary beside its own).
fn keymesh_binary() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_keymesh").into()
}
