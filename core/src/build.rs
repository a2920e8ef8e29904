//! Which build is running: the version (the workspace's) and the commit (given by the binary,
//! whose build script reads it from git or `KEYMESH_COMMIT`). Reported by `GET /version` and
//! `keymesh_build_info`.

use std::sync::OnceLock;

/// The Keymesh version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

static COMMIT: OnceLock<&'static str> = OnceLock::new();

/// Record the commit this binary was built from (once, at start, before any service).
pub fn set_commit(commit: &'static str) {
    let _ = COMMIT.set(commit);
}

/// The commit, or `unknown` (a build outside git, or a library test).
pub fn commit() -> &'static str {
    COMMIT.get().copied().unwrap_or("unknown")
}
