//! `keymesh dev`, one service on the selected backend, `migrate`, and the production guard,
//! through the real binary.

use std::time::Duration;

use keymesh_core::storage::testing::TestDb;

use crate::process::Keymesh;

const START: Duration = Duration::from_secs(30);

fn vault_secrets() -> Vec<(&'static str, String)> {
    vec![
        ("VAULT_MASTER_KEY", "m".repeat(40)),
        ("MANAGEMENT_API_KEY", "k".repeat(40)),
        ("VAULT_FEED_API_KEY", "f".repeat(40)),
    ]
}
const STOP: Duration = Duration::from_secs(15);

fn loopback_ports() -> Vec<(&'static str, String)> {
    ["MANAGEMENT_LISTEN", "VAULT_LISTEN", "RELAY_LISTEN"]
        .into_iter()
        .map(|k| (k, "127.0.0.1:0".to_owned()))
        .collect()
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

#[tokio::test]
async fn dev_serves_every_service_and_exits_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut keymesh = Keymesh::start(dir.path(), &["dev"], &loopback_ports());
    let urls = keymesh.wait_for_urls(3, START);
    assert_eq!(
        urls.keys().map(String::as_str).collect::<Vec<_>>(),
        ["management", "relay", "vault"]
    );
    for (service, url) in &urls {
        keymesh.wait_ready(url).await;
        let (status, body) = get(&format!("{url}/health/ready")).await;
        assert_eq!(status, 200, "{service}: {body}");
        assert!(body.contains(r#""database":"ok""#), "{body}");
        let (status, metrics) = get(&format!("{url}/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            metrics.contains(&format!(
                r#"http_requests_total{{service="{service}",route="/health/ready",status="200"}} 2"#
            )),
            "{service} metrics:\n{metrics}"
        );
    }
    for service in ["management", "vault", "relay"] {
        assert!(dir.path().join(format!(".keymesh/{service}.db")).exists());
    }
    // The bootstrapped admin's one-time link, printed in the banner, opens the confirm page.
    let output = keymesh.output();
    assert!(
        output.contains("Admin admin@localhost: sign in"),
        "{output}"
    );
    let link = output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://") && l.contains("/login/confirm?token="))
        .unwrap_or_else(|| panic!("no sign-in link in the banner:\n{output}"));
    let (status, page) = get(link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<form method=\"post\""), "{page}");
    check_demo(dir.path(), &urls["management"]).await;
    let status = keymesh.signal_and_wait("INT", STOP);
    assert_eq!(status.code(), Some(0), "{}", keymesh.output());
    let output = keymesh.output();
    assert!(output.contains(r#""message":"stopped""#), "{output}");

    // Started again on its data: everyone is signed in anew and the vault unlocked again.
    let mut again = Keymesh::start(dir.path(), &["dev"], &loopback_ports());
    let urls = again.wait_for_urls(3, START);
    check_demo(dir.path(), &urls["management"]).await;
    assert!(again.output().contains("Demo ready"), "{}", again.output());
    let status = again.signal_and_wait("INT", STOP);
    assert_eq!(status.code(), Some(0), "{}", again.output());
}

/// The quickstart's demo as `keymesh dev` left it: `.keymesh/env` (owner-only) names the
/// services and holds three working sessions, and the demo group's vault is unlocked.
async fn check_demo(dir: &std::path::Path, management: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(".keymesh/env");
    let mode = std::fs::metadata(&path)
        .expect(".keymesh/env")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the env file holds sessions: owner-only"
    );
    let env = std::fs::read_to_string(&path).expect(".keymesh/env");
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}='")))
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{name} missing from .keymesh/env:\n{env}"))
            .to_owned()
    };
    assert_eq!(var("KEYMESH_MANAGEMENT_URL"), management);
    let http = reqwest::Client::new();
    let get = |path: &str, token: String| {
        let request = http
            .get(format!("{management}{path}"))
            .bearer_auth(token)
            .send();
        async move {
            let response = request.await.expect("management answers");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("json"),
            )
        }
    };
    for (token, email, role) in [
        ("ADMIN_TOKEN", "admin@localhost", "admin"),
        ("REVIEWER_TOKEN", "reviewer@localhost", "admin"),
        ("RESPONDER_TOKEN", "responder@localhost", "responder"),
    ] {
        let (status, me) = get("/v1/session", var(token)).await;
        assert_eq!(status, 200, "{token}: {me}");
        assert_eq!(
            (me["user"]["email"].as_str(), me["user"]["role"].as_str()),
            (Some(email), Some(role)),
            "{me}"
        );
    }
    let (status, vault) = get("/v1/groups/demo/vault", var("ADMIN_TOKEN")).await;
    assert_eq!(status, 200, "{vault}");
    assert_eq!(
        vault["locked"], false,
        "the demo vault is unlocked: {vault}"
    );
}

#[tokio::test]
async fn one_service_runs_on_the_selected_backend_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = vault_secrets();
    env.extend([
        ("KEYMESH_ENV", "development".to_owned()),
        ("VAULT_LISTEN", "127.0.0.1:0".to_owned()),
        ("VAULT_DATABASE_URL", db.url_for_process()),
    ]);
    let mut keymesh = Keymesh::start(dir.path(), &["vault"], &env);
    let url = keymesh.wait_for_listen(START);
    let (status, body) = get(&format!("{url}/health/ready")).await;
    assert_eq!(status, 200, "{body}");
    let status = keymesh.signal_and_wait("TERM", STOP);
    assert_eq!(status.code(), Some(0), "{}", keymesh.output());
}

#[tokio::test]
async fn migrate_applies_on_the_selected_backend_and_refuses_a_foreign_database() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db.url_for_process();
    let env = vec![("RELAY_DATABASE_URL", url.clone())];
    let mut first = Keymesh::start(dir.path(), &["migrate", "relay"], &env);
    assert_eq!(first.wait(START).code(), Some(0), "{}", first.output());
    // The same database offered to the vault is refused: it belongs to the relay.
    let env = vec![("VAULT_DATABASE_URL", url)];
    let mut second = Keymesh::start(dir.path(), &["migrate", "vault"], &env);
    assert_eq!(second.wait(START).code(), Some(1));
    assert!(
        second.output().contains("belongs to the relay service"),
        "{}",
        second.output()
    );
}

#[tokio::test]
async fn bootstrap_admin_creates_the_admin_and_prints_a_one_time_link() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        ("KEYMESH_ENV", "development".to_owned()),
        ("MANAGEMENT_DATABASE_URL", db.url_for_process()),
        (
            "MANAGEMENT_SECRET_KEY",
            "bootstrap-test-secret-0123456789abcdef".to_owned(),
        ),
    ];
    let run = |email: &str| {
        let mut run = Keymesh::start(
            dir.path(),
            &["management", "bootstrap-admin", "--email", email],
            &env,
        );
        let status = run.wait(START);
        (status.code(), run.output())
    };
    let (code, output) = run("Ops@Example.com");
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("Admin ops@example.com"), "{output}");
    assert!(output.contains(": created"), "{output}");
    let token = output
        .split("token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no link:\n{output}"));
    assert!(token.starts_with("kml_"), "{token}");
    let (code, output) = run("ops@example.com");
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains(": existing"), "{output}");
    let (code, output) = run("not an address");
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("email is not an address"), "{output}");
}

#[test]
fn production_guard_refuses_to_start_and_names_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let production = |extra: &[(&'static str, &str)]| {
        let mut env = vault_secrets();
        env.extend([
            ("VAULT_DATABASE_URL", "sqlite://vault.db".to_owned()),
            ("VAULT_PUBLIC_URL", "https://vault.example.com".to_owned()),
            ("VAULT_LISTEN", "127.0.0.1:0".to_owned()),
        ]);
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            if !v.is_empty() {
                env.push((k, (*v).to_owned()));
            }
        }
        env
    };
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("VAULT_DATABASE_URL", "")], "VAULT_DATABASE_URL"),
        (&[("MANAGEMENT_API_KEY", "short")], "MANAGEMENT_API_KEY"),
        (&[("VAULT_MASTER_KEY", "")], "VAULT_MASTER_KEY"),
        (&[("METRICS_TOKEN", "short")], "METRICS_TOKEN"),
        (&[("ALLOW_INSECURE_HTTP", "true")], "ALLOW_INSECURE_HTTP"),
        (
            &[("VAULT_PUBLIC_URL", "http://vault.example.com")],
            "VAULT_PUBLIC_URL",
        ),
    ];
    for (change, named) in cases {
        let mut keymesh = Keymesh::start(dir.path(), &["vault"], &production(change));
        let status = keymesh.wait(START);
        let output = keymesh.output();
        assert_eq!(status.code(), Some(2), "{named}: {output}");
        assert!(output.contains(named), "error must name {named}: {output}");
        assert!(!output.contains("short\""), "secret echoed: {output}");
    }
    // `keymesh dev` is refused in production outright.
    let env = vec![("KEYMESH_ENV", "production".to_owned())];
    let mut keymesh = Keymesh::start(dir.path(), &["dev"], &env);
    assert_eq!(keymesh.wait(START).code(), Some(2));
    assert!(keymesh.output().contains("KEYMESH_ENV"));
}

#[test]
fn a_feed_bound_the_long_poll_cannot_keep_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (service, setting) in [
        ("relay", "RELAY_FEED_MAX_AGE_SECS"),
        ("management", "MANAGEMENT_FEED_MAX_AGE_SECS"),
    ] {
        let env = vec![
            ("KEYMESH_ENV", "development".to_owned()),
            ("MANAGEMENT_SECRET_KEY", "s".repeat(40)),
            (setting, "5".to_owned()),
        ];
        let mut keymesh = Keymesh::start(dir.path(), &[service], &env);
        let status = keymesh.wait(START);
        let output = keymesh.output();
        assert_eq!(status.code(), Some(2), "{service}: {output}");
        assert!(
            output.contains(setting) && output.contains("long poll"),
            "{service} must name {setting} and why: {output}"
        );
    }
}
