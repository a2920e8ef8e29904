//! Tells the binary which commit it is built from (`GET /version`, `keymesh_build_info`):
//! `KEYMESH_COMMIT` when set (a build outside git, or a reproducible one), else git's HEAD,
//! else `unknown`. Only this crate is rebuilt when HEAD moves.

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=KEYMESH_COMMIT");
    let commit = std::env::var("KEYMESH_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KEYMESH_COMMIT={commit}");
}

fn git_head() -> Option<String> {
    // Rerun when HEAD moves: a checkout changes .git/HEAD, a commit the branch's ref.
    let git = Path::new(".git");
    if git.is_dir() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        println!("cargo:rerun-if-changed=.git/packed-refs");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed=.git/{reference}");
        }
    }
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(commit)
}
