//! Keymesh Admin's real window, driven through WebDriver (tauri-driver, which starts
//! WebKitWebDriver) under Xvfb, against `keymesh dev` whose mail goes to a real SMTP server on
//! loopback. It signs in with the mailed code, watches a request made by another admin arrive
//! live, approves it and sees it executed, is refused approving its own, revokes a user's
//! tokens and reads the propagation time, verifies the audit chain and reads the services'
//! health; it takes the screenshots under docs/images/ on the way
//! (`KEYMESH_UPDATE_SCREENSHOTS=1` writes them there; otherwise to target/screenshots/).

#[allow(dead_code)] // shared with tests/e2e, which uses every helper
#[path = "../../../../tests/e2e/process.rs"]
mod process;

mod driver;
mod unlock;

use std::{path::PathBuf, time::Duration};

use keymesh_core::smtp_testing::{Smtp, mail_code};
use serde_json::{Value, json};

use driver::{App, Driver};

/// The `keymesh` binary, built beside this package's own.
fn keymesh_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_keymesh-admin")).with_file_name("keymesh");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p keymesh` (scripts/test does)",
        path.display()
    );
    path
}

const START: Duration = Duration::from_secs(60);
const OWNER: &str = "owner@admin-e2e.invalid";
const ADA: &str = "ada@admin-e2e.invalid";
const RESPONDER: &str = "responder@admin-e2e.invalid";

/// A bearer session for `email` through the app sign-in and the mailed code (what the app
/// does, done here for the other admin).
async fn bearer(http: &reqwest::Client, smtp: &Smtp, m: &str, email: &str) -> String {
    let n = smtp.mails_to(email).len() + 1;
    let started: Value = http
        .post(format!("{m}/v1/login"))
        .json(&json!({ "email": email, "client": "app" }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    let code = mail_code(&smtp.wait_mail(email, n).await);
    let done: Value = http
        .post(format!("{m}/v1/login/code"))
        .json(&json!({ "request_id": started["request_id"], "poll_secret": started["poll_secret"], "code": code }))
        .send()
        .await
        .expect("code")
        .json()
        .await
        .expect("code answer");
    done["session"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {done}"))
        .to_owned()
}

/// A request with a bearer session that must succeed: its JSON answer.
pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let reply = req.send().await.expect("call");
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

async fn call(http: &reqwest::Client, token: &str, url: String, body: Value) -> Value {
    send(http, reqwest::Method::POST, url, token, Some(body)).await
}

async fn get(http: &reqwest::Client, token: &str, url: String) -> Value {
    send(http, reqwest::Method::GET, url, token, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signs_in_approves_live_revokes_and_verifies_in_the_real_window() {
    let smtp = Smtp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env: Vec<(&str, String)> = vec![
        ("MANAGEMENT_LISTEN", "127.0.0.1:0".into()),
        ("VAULT_LISTEN", "127.0.0.1:0".into()),
        ("RELAY_LISTEN", "127.0.0.1:0".into()),
        ("MANAGEMENT_SMTP_URL", smtp_url),
        ("KEYMESH_DEV_ADMIN_EMAIL", OWNER.into()),
    ];
    let mut keymesh = process::Keymesh::start(dir.path(), &["dev"], &env);
    let urls = keymesh.wait_for_urls(3, START);
    for url in urls.values() {
        keymesh.wait_ready(url).await;
    }
    let (m, v, r) = (&urls["management"], &urls["vault"], &urls["relay"]);

    // The other admin (the bootstrapped owner) prepares: a colleague for the app, a responder
    // to revoke, a group.
    let http = reqwest::Client::new();
    let owner = bearer(&http, &smtp, m, OWNER).await;
    for (email, role) in [(ADA, "admin"), (RESPONDER, "responder")] {
        call(
            &http,
            &owner,
            format!("{m}/v1/users"),
            json!({ "email": email, "role": role }),
        )
        .await;
    }
    call(
        &http,
        &owner,
        format!("{m}/v1/groups"),
        json!({ "id": "payments" }),
    )
    .await;
    let users = get(&http, &owner, format!("{m}/v1/users")).await;
    let responder_id = users["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["email"] == RESPONDER))
        .and_then(|u| u["id"].as_str())
        .expect("responder id")
        .to_owned();

    let app_dir = tempfile::tempdir().expect("app dir");
    let driver = Driver::start(app_dir.path());
    let app = App::open(&driver).await;

    // First run: where the servers are; a passphrase for the local store (no keyring here).
    app.type_into("server-url", m).await;
    app.type_into("vault-url", v).await;
    app.type_into("relay-url", r).await;
    app.click("save-settings").await;
    app.type_into("store-passphrase", "window test store passphrase")
        .await;
    app.type_into("store-passphrase-confirm", "window test store passphrase")
        .await;
    app.click("unlock-store").await;

    // Sign in with the mailed code.
    let n = smtp.mails_to(ADA).len() + 1;
    app.type_into("login-email", ADA).await;
    app.click("login-start").await;
    // The confirm page of the mailed link shows the same code; here the mailed code is used.
    let match_code = app.text("match-code").await;
    assert!(
        match_code.trim().len() == 4 && match_code.trim().bytes().all(|b| b.is_ascii_digit()),
        "match code {match_code:?}"
    );
    let mail = smtp.wait_mail(ADA, n).await;
    app.type_into("login-code-input", &mail_code(&mail)).await;
    app.screenshot("login").await;
    app.click("login-code-submit").await;
    app.wait_text("signed-in-user", ADA).await;
    app.wait_text("stream-state", "Live").await;

    // A request by the other admin appears live (no refresh), with who asked and why.
    let asked = call(
        &http,
        &owner,
        format!("{m}/v1/approvals"),
        json!({ "operation": "group.approvals.disable", "group": "payments", "duration_secs": 3600,
                "reason": "Payments rollout tonight: node tokens above ceiling without review" }),
    )
    .await;
    let id = asked["approval"]["id"].as_str().expect("id").to_owned();
    let card = format!("approval-{id}");
    app.wait_text(&card, OWNER).await;
    app.wait_attr(&card, "data-status", "pending").await;

    // Approve it with a reason; the other admin executes it; the card follows live.
    app.click_in(&card, "approve").await;
    app.type_in(
        &card,
        "decision-reason",
        "Checked with the payments on-call",
    )
    .await;
    app.click_in(&card, "confirm-decision").await;
    app.wait_attr(&card, "data-status", "approved").await;
    call(
        &http,
        &owner,
        format!("{m}/v1/approvals/{id}/execute"),
        json!({}),
    )
    .await;
    app.wait_attr(&card, "data-status", "executed").await;

    // Another open request for the screenshot: an export the owner wants.
    call(
        &http,
        &owner,
        format!("{m}/v1/approvals"),
        json!({ "operation": "audit.export", "filters": { "action": "tokens.revoke" },
                "reason": "Quarterly access review: every revocation this quarter" }),
    )
    .await;

    // Her own request: shown, never approvable; the app's own command is refused too.
    app.select("request-operation", "group.approvals.disable")
        .await;
    app.type_into("request-group", "payments").await;
    app.type_into("request-reason", "Emergency hotfix window for payments")
        .await;
    app.click("request-submit").await;
    let own = app.own_card().await;
    assert!(
        !app.has_in(&own, "approve").await,
        "own request offers approve"
    );
    let refused = app
        .invoke("approval_decide", json!({ "id": own.trim_start_matches("approval-"), "decision": "approve", "reason": "self" }))
        .await;
    assert_eq!(refused["err"]["code"], "self_approval", "{refused}");

    // Threshold unlock: her share key is made in the app, the owner's here; the vault is
    // created 2-of-2; the owner asks to unlock, she approves, he executes; his test-side tool
    // and her app each open their own share and seal it to the ceremony's key.
    app.click("nav-account").await;
    app.click("share-key-create").await;
    app.wait_present("share-public-key").await;
    let owner_key = unlock::register_key(&http, m, &owner).await;
    let ada_id = users["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["email"] == ADA))
        .and_then(|u| u["id"].as_str())
        .expect("ada's id")
        .to_owned();
    let owner_id = unlock::user_id(&http, m, &owner).await;
    unlock::create_vault(&http, m, &owner, &[&owner_id, &ada_id]).await;
    let asked = call(
        &http,
        &owner,
        format!("{m}/v1/approvals"),
        json!({ "operation": "vault.unlock", "group": "payments",
                "reason": "Rotate the payments database password" }),
    )
    .await;
    let unlock_id = asked["approval"]["id"].as_str().expect("id").to_owned();
    let unlock_card = format!("approval-{unlock_id}");
    app.click("nav-approvals").await;
    app.click_in(&unlock_card, "approve").await;
    app.type_in(&unlock_card, "decision-reason", "Rotation ticket checked")
        .await;
    app.click_in(&unlock_card, "confirm-decision").await;
    app.wait_attr(&unlock_card, "data-status", "approved").await;
    let ceremony = call(
        &http,
        &owner,
        format!("{m}/v1/approvals/{unlock_id}/execute"),
        json!({}),
    )
    .await;
    // His share first (1 of 2), then hers from the window, which completes the unlock.
    let first = unlock::submit_share(&http, m, &owner, &owner_key, &owner_id, &ceremony).await;
    assert_eq!(first["unlocked"], false, "{first}");
    app.click_in(&unlock_card, "submit-share").await;
    app.wait_text("share-result", "vault unlocked").await;
    let vault = get(&http, &owner, format!("{m}/v1/groups/payments/vault")).await;
    assert_eq!(vault["locked"], false, "{vault}");
    app.screenshot("approvals").await;

    // Incident response: revoke the responder's tokens, see how fast it reached the feed.
    app.click("nav-incident").await;
    app.type_into("directory-search", "responder").await;
    let row = format!("result-user-{responder_id}");
    app.click_in(&row, "revoke-tokens").await;
    app.type_into("confirm-reason", "Laptop reported stolen")
        .await;
    app.click("confirm-action").await;
    let result = app.wait_text("action-result", "ms").await;
    assert!(result.contains("propagated"), "{result}");
    app.screenshot("incident").await;

    // Audit: the table, then the chain verified.
    app.click("nav-audit").await;
    app.click("audit-search").await;
    app.wait_present("audit-row").await;
    app.click("verify-chain").await;
    app.wait_attr("verify-result", "data-intact", "true").await;
    app.screenshot("audit").await;

    // Health: all three ready, the relay's numbers shown.
    app.click("nav-health").await;
    for service in ["service-management", "service-vault", "service-relay"] {
        app.wait_attr(service, "data-ready", "true").await;
    }
    app.wait_present("relay-connections").await;
    tokio::time::sleep(Duration::from_secs(6)).await; // a second sample: rates shown
    app.screenshot("health").await;

    app.close().await;
    drop(driver);
    let status = keymesh.signal_and_wait("INT", Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", keymesh.output());
}
