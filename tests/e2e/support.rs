//! Helpers shared by the end-to-end tests: an admin's cookie session, and `keymeshctl`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::{Value, json};

/// `keymeshctl`, built next to `keymesh` by `cargo test --workspace` (the client package's own
/// tests need it).
pub fn keymeshctl() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_keymesh")).with_file_name("keymeshctl");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p keymesh-client` (`cargo test --workspace`, which scripts/test runs, builds it)",
        path.display()
    );
    path
}

pub fn ctl(dir: &Path, node: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(keymeshctl());
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYMESH_PASSPHRASE", "node passphrase for the e2e test")
        .env("KEYMESH_KEYS", dir.join(format!("{node}.keys.json")))
        .env("KEYMESH_TOKEN_FILE", dir.join(format!("{node}.token")))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub async fn run(mut cmd: Command, stdin: &'static [u8]) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn keymeshctl");
        if let Some(mut input) = child.stdin.take() {
            std::io::Write::write_all(&mut input, stdin).expect("stdin");
        }
        child.wait_with_output().expect("keymeshctl output")
    })
    .await
    .expect("join")
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cookie session of the admin whose one-time link `keymesh dev` printed.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Admin {
    /// Confirm a sign-in link (as its page's button does) and keep the session cookie.
    pub async fn confirm(base: &str, link: &str) -> Self {
        Self::confirm_with(reqwest::Client::new(), base, link).await
    }

    /// [`Admin::confirm`] with a client of the caller's (one that trusts a private CA).
    pub async fn confirm_with(http: reqwest::Client, base: &str, link: &str) -> Self {
        let token = link.split("token=").nth(1).expect("token in link");
        let reply = http
            .post(format!("{base}/login/confirm"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .expect("confirm");
        assert_eq!(reply.status(), 200);
        let cookie = reply
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let session: Value = http
            .get(format!("{base}/v1/session"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        let csrf = session["csrf_token"].as_str().expect("csrf").to_owned();
        Self {
            http,
            base: base.to_owned(),
            cookie,
            csrf,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let reply = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .expect("post");
        (
            reply.status().as_u16(),
            reply.json().await.unwrap_or_default(),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let reply = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("get");
        (
            reply.status().as_u16(),
            reply.json().await.unwrap_or_default(),
        )
    }

    pub async fn code(&self, group: &str) -> String {
        let (status, body) = self
            .post(&format!("/v1/groups/{group}/enrollment-codes"), json!({}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["code"].as_str().expect("code").to_owned()
    }
}
