//! Keeping generated documentation in sync with the code that defines it.

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Fail when the committed file at `relative` (from the workspace root) differs from what the
/// code renders. With `KEYMESH_UPDATE_DOCS=1` the file is rewritten instead.
pub fn assert_doc_in_sync(relative: &str, rendered: &str) {
    let path = workspace_root().join(relative);
    if std::env::var_os("KEYMESH_UPDATE_DOCS").is_some() {
        std::fs::write(&path, rendered).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{relative} is out of date with the code. Regenerate it with \
         `KEYMESH_UPDATE_DOCS=1 cargo test` and commit the result."
    );
}
