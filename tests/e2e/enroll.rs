//! `keymesh dev` plus the real `keymeshctl`: the bootstrapped admin signs in through the printed
//! link, creates a group and enrollment codes; two nodes enroll with `keymeshctl enroll` and
//! exchange a message through the relay.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::process::Keymesh;

const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(15);

/// `keymeshctl`, built next to `keymesh` by `cargo test --workspace` (the client package's own
/// tests need it).
fn keymeshctl() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_keymesh")).with_file_name("keymeshctl");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p keymesh-client` (`cargo test --workspace`, which scripts/test runs, builds it)",
        path.display()
    );
    path
}

fn ctl(dir: &Path, node: &str, args: &[&str]) -> Command {
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

async fn run(mut cmd: Command, stdin: &'static [u8]) -> Output {
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

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cookie session of the admin whose one-time link `keymesh dev` printed.
struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Admin {
    async fn sign_in(base: &str, link: &str) -> Self {
        let http = reqwest::Client::new();
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

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
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

    async fn code(&self, group: &str) -> String {
        let (status, body) = self
            .post(&format!("/v1/groups/{group}/enrollment-codes"), json!({}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["code"].as_str().expect("code").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymeshctl_enrolls_two_nodes_with_dev_and_they_exchange_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(&str, String)> = ["MANAGEMENT_LISTEN", "VAULT_LISTEN", "RELAY_LISTEN"]
        .into_iter()
        .map(|k| (k, "127.0.0.1:0".to_owned()))
        .collect();
    let mut keymesh = Keymesh::start(dir.path(), &["dev"], &ports);
    let urls = keymesh.wait_for_urls(3, START);
    for url in urls.values() {
        keymesh.wait_ready(url).await;
    }
    let management = urls["management"].clone();
    let output = keymesh.output();
    let link = output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://") && l.contains("/login/confirm?token="))
        .unwrap_or_else(|| panic!("no sign-in link in the banner:\n{output}"))
        .to_owned();
    let admin = Admin::sign_in(&management, &link).await;
    let (status, body) = admin.post("/v1/groups", json!({ "id": "dev-team" })).await;
    assert_eq!(status, 201, "{body}");

    let nodes = dir.path();
    let mut codes = Vec::new();
    for node in ["n1", "n2"] {
        let code = admin.code("dev-team").await;
        let out = run(
            ctl(
                nodes,
                node,
                &[
                    "--json",
                    "enroll",
                    "--code",
                    &code,
                    "--management",
                    &management,
                    "--node",
                    node,
                ],
            ),
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["node"], node);
        assert_eq!(v["group"], "dev-team");
        assert_eq!(v["published"], true, "{v}");
        assert_eq!(v["relay"].as_str(), Some(urls["relay"].as_str()));
        codes.push(code);
    }
    // A used code: refused with its code and the authentication exit status.
    let out = run(
        ctl(
            nodes,
            "n1",
            &[
                "--json",
                "enroll",
                "--code",
                &codes[0],
                "--management",
                &management,
            ],
        ),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(err["error"]["code"], "enrollment_code_invalid");

    let relay = urls["relay"].clone();
    let listen = tokio::spawn({
        let cmd = ctl(
            nodes,
            "n2",
            &[
                "--relay",
                &relay,
                "listen",
                "--count",
                "1",
                "--timeout-secs",
                "30",
            ],
        );
        run(cmd, b"")
    });
    let out = run(
        ctl(nodes, "n1", &["--relay", &relay, "send", "--to", "n2"]),
        b"hello from n1\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let heard = listen.await.expect("join");
    assert_eq!(heard.status.code(), Some(0), "{}", describe(&heard));
    let text = String::from_utf8_lossy(&heard.stdout);
    assert!(text.contains("--- from n1"), "{text}");
    assert!(text.contains("hello from n1"), "{text}");

    let status = keymesh.signal_and_wait("INT", STOP);
    assert_eq!(status.code(), Some(0), "{}", keymesh.output());
}
