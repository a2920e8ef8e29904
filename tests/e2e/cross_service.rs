//! The three services as separate processes, each on its own database of the selected backend
//! (PostgreSQL in CI's second pass), mail through a real SMTP server on loopback:
//!
//! an admin signs in through the mailed link and invites a second admin and a responder; the
//! first admin enrolls nodes with `keymeshctl`; two nodes exchange a message through the relay;
//! a node asks for a secret above its ceiling, its owner cannot approve, the second admin does,
//! the node redeems the approval once and reads the secret; the responder revokes the owner's
//! tokens and the next relay send and vault read are refused within a second; `keymesh audit
//! verify` passes (chain and signed checkpoints), and names the one row altered afterwards.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_client::{
    keyfile,
    relay::{ClientOptions, RelayClient},
    service::{CallError, Service},
    vault,
};
use keymesh_core::{
    crypto,
    smtp_testing::{Smtp, link_token},
    storage::{Db, testing::TestDb},
    with_pool,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::{
    process::Keymesh,
    support::{Admin, ctl, describe, run},
};

const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(15);
const MANAGEMENT_KEY: &str = "e2e-management-key-0123456789abcdef0123456789";
const RELAY_KEY: &str = "e2e-relay-audit-key-0123456789abcdef0123456789";
const FEED_KEY: &str = "e2e-feed-key-0123456789abcdef0123456789abcdef";
const PASSPHRASE: &str = "node passphrase for the e2e test";
const SECRET_KEY: &str = "e2e-secret-key-0123456789abcdef0123456789";
const VAULT_PASSPHRASE: &str = "correct horse battery staple, e2e";

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut all = vec![("KEYMESH_ENV", "development".to_owned())];
    all.extend(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())));
    all
}

async fn start(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (Keymesh, String) {
    let mut process = Keymesh::start(dir, args, env);
    let url = process.wait_for_listen(START);
    process.wait_ready(&url).await;
    (process, url)
}

/// Sign in through the `n`th mail to `email` (a sign-in or invitation link).
async fn through_mail(smtp: &Smtp, management: &str, email: &str, n: usize) -> Admin {
    let mail = smtp.wait_mail(email, n).await;
    let token = link_token(&mail);
    Admin::confirm(
        management,
        &format!("{management}/login/confirm?token={token}"),
    )
    .await
}

/// The passphrase sealed to a ceremony's key, as an admin's tool does it (management relays
/// it and never sees the passphrase).
fn sealed_passphrase(ceremony: &Value, group: &str) -> String {
    let public: [u8; 32] = hex::decode(ceremony["ceremony"]["public_key"].as_str().expect("key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let sealed = crypto::hpke_seal(
        &public,
        keymesh_vault::routes::vaults::INFO_PASSPHRASE,
        group.as_bytes(),
        VAULT_PASSPHRASE.as_bytes(),
    )
    .expect("seal");
    STANDARD.encode(sealed)
}

/// Create the group's vault (a passphrase vault) and unlock it, through management: the owner
/// opens the init ceremony, asks for `vault.unlock`, the reviewer approves, the owner executes
/// it and submits the sealed passphrase to the unlock ceremony.
async fn init_and_unlock_vault(owner: &Admin, reviewer: &Admin, group: &str) {
    let (status, init) = owner
        .post(
            &format!("/v1/groups/{group}/vault/ceremonies"),
            json!({ "kind": "init" }),
        )
        .await;
    assert_eq!(status, 200, "{init}");
    let id = init["ceremony"]["id"].as_str().expect("id");
    let (status, body) = owner
        .post(
            &format!("/v1/ceremonies/{id}/init"),
            json!({ "mode": "passphrase", "sealed_passphrase": sealed_passphrase(&init, group) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = owner
        .post(
            "/v1/approvals",
            json!({ "operation": "vault.unlock", "group": group, "reason": "e2e needs the secrets" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let approval = body["approval"]["id"].as_str().expect("approval id");
    let (status, body) = reviewer
        .post(
            &format!("/v1/approvals/{approval}/decisions"),
            json!({ "decision": "approve", "reason": "planned test run" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, unlock) = owner
        .post(&format!("/v1/approvals/{approval}/execute"), json!({}))
        .await;
    assert_eq!(status, 200, "{unlock}");
    let id = unlock["ceremony"]["id"].as_str().expect("id");
    let (status, body) = owner
        .post(
            &format!("/v1/ceremonies/{id}/passphrase"),
            json!({ "sealed_passphrase": sealed_passphrase(&unlock, group) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unlocked"], true, "{body}");
}

/// A node's keys and token, as `keymeshctl enroll` left them in `dir`.
fn node_files(dir: &Path, node: &str) -> (keymesh_client::keys::NodeKeys, String) {
    let keys = keyfile::load(
        &dir.join(format!("{node}.keys.json")),
        &SecretString::from(PASSPHRASE),
    )
    .expect("key file");
    let token = std::fs::read_to_string(dir.join(format!("{node}.token"))).expect("token file");
    (keys, token.trim().to_owned())
}

async fn enroll(dir: &Path, management: &str, node: &str, code: &str) {
    let out = run(
        ctl(
            dir,
            node,
            &[
                "--json",
                "enroll",
                "--code",
                code,
                "--management",
                management,
                "--node",
                node,
            ],
        ),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_enroll_message_approve_revoke_and_audit() {
    let smtp = Smtp::start();
    let (mdb, vdb, rdb) = (
        TestDb::new().await,
        TestDb::new().await,
        TestDb::new().await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = dir.path();

    let (vault, v) = start(
        nodes,
        &["vault"],
        &env(&[
            ("VAULT_LISTEN", "127.0.0.1:0"),
            ("VAULT_DATABASE_URL", &vdb.url_for_process()),
            (
                "VAULT_MASTER_KEY",
                "e2e-master-key-0123456789abcdef0123456789",
            ),
            ("MANAGEMENT_API_KEY", MANAGEMENT_KEY),
            ("VAULT_FEED_API_KEY", FEED_KEY),
            ("VAULT_ARGON2_MEMORY_KIB", "8192"),
            ("VAULT_ARGON2_ITERATIONS", "1"),
        ]),
    )
    .await;
    let (relay, r) = start(
        nodes,
        &["relay"],
        &env(&[
            ("RELAY_LISTEN", "127.0.0.1:0"),
            ("RELAY_DATABASE_URL", &rdb.url_for_process()),
            ("RELAY_VAULT_URL", &v),
            ("RELAY_FEED_API_KEY", FEED_KEY),
            ("RELAY_MANAGEMENT_API_KEY", RELAY_KEY),
        ]),
    )
    .await;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let mgmt_db = mdb.url_for_process();
    let management_env = env(&[
        ("MANAGEMENT_LISTEN", "127.0.0.1:0"),
        ("MANAGEMENT_DATABASE_URL", &mgmt_db),
        ("MANAGEMENT_SECRET_KEY", SECRET_KEY),
        ("MANAGEMENT_SMTP_URL", &smtp_url),
        ("MANAGEMENT_MAIL_FROM", "Keymesh <keymesh@e2e.invalid>"),
        ("MANAGEMENT_VAULT_URL", &v),
        ("MANAGEMENT_VAULT_API_KEY", MANAGEMENT_KEY),
        ("MANAGEMENT_RELAY_URL", &r),
        ("MANAGEMENT_RELAY_API_KEY", RELAY_KEY),
        ("MANAGEMENT_AUDIT_CHECKPOINT_SECS", "1"),
    ]);
    let owner_email = "owner@e2e.invalid";
    let mut bootstrap = Keymesh::start(
        nodes,
        &["management", "bootstrap-admin", "--email", owner_email],
        &management_env,
    );
    assert_eq!(
        bootstrap.wait(START).code(),
        Some(0),
        "{}",
        bootstrap.output()
    );
    let (mgmt, m) = start(nodes, &["management"], &management_env).await;

    // The first admin signs in through the mailed link and invites the others.
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{m}/v1/login"))
        .json(&json!({ "email": owner_email }))
        .send()
        .await
        .expect("login");
    assert_eq!(reply.status(), 202);
    let owner = through_mail(&smtp, &m, owner_email, 1).await;
    let (_, me) = owner.get("/v1/session").await;
    let owner_id = me["user"]["id"].as_str().expect("id").to_owned();
    let mut people = Vec::new();
    for (email, role) in [
        ("reviewer@e2e.invalid", "admin"),
        ("responder@e2e.invalid", "responder"),
    ] {
        let (status, body) = owner
            .post("/v1/users", json!({ "email": email, "role": role }))
            .await;
        assert_eq!(status, 201, "{body}");
        people.push(through_mail(&smtp, &m, email, 1).await);
    }
    let (reviewer, responder) = (&people[0], &people[1]);

    // A group with a vault; three nodes enrolled with keymeshctl: two agents (ceiling `list`,
    // send rights only) and a seeder allowed to write `db/*`.
    let (status, body) = owner.post("/v1/groups", json!({ "id": "e2e" })).await;
    assert_eq!(status, 201, "{body}");
    init_and_unlock_vault(&owner, reviewer, "e2e").await;
    for node in ["n1", "n2"] {
        let code = owner.code("e2e").await;
        enroll(nodes, &m, node, &code).await;
    }
    let (status, body) = owner
        .post(
            "/v1/groups/e2e/enrollment-codes",
            json!({ "ceiling": "write", "rights": [{ "resource": "db/*", "op": "write" }] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    enroll(nodes, &m, "seeder", body["code"].as_str().expect("code")).await;
    let vault_api = Service::new(&v, Duration::from_secs(10)).expect("vault url");
    let (seeder_keys, seeder_token) = node_files(nodes, "seeder");
    vault::write_secret(
        &vault_api,
        &seeder_keys,
        &seeder_token,
        "e2e",
        "db/password",
        "s3cret-value",
    )
    .await
    .expect("seed the secret");

    // The relay's events reach the central log: keymeshctl published each node's key there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = owner.get("/v1/audit?action=relay.key.publish").await;
        assert_eq!(status, 200, "{body}");
        let from_relay = body["records"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|rec| rec["details"]["service"] == "relay")
                    .count()
            })
            .unwrap_or(0);
        if from_relay >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay's key publications did not reach the central log: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // n1 → n2 through the relay, end to end encrypted.
    let listen = tokio::spawn(run(
        ctl(
            nodes,
            "n2",
            &[
                "--relay",
                &r,
                "listen",
                "--count",
                "1",
                "--timeout-secs",
                "30",
            ],
        ),
        b"",
    ));
    let out = run(
        ctl(nodes, "n1", &["--relay", &r, "send", "--to", "n2"]),
        b"hello from n1\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let heard = listen.await.expect("join");
    assert_eq!(heard.status.code(), Some(0), "{}", describe(&heard));
    assert!(String::from_utf8_lossy(&heard.stdout).contains("hello from n1"));

    // Above its ceiling (keymeshctl): an approval request; the owner cannot approve, the
    // reviewer does; the node redeems it once and reads the secret with the new token.
    let (n1_keys, n1_token) = node_files(nodes, "n1");
    let approved = nodes.join("n1.approved-token");
    let approved_file = approved.to_str().expect("utf-8 path");
    let out = run(
        ctl(
            nodes,
            "n1",
            &[
                "--json",
                "token",
                "request",
                "--management",
                &m,
                "--right",
                "db/password:read",
                "--right",
                "db/password:write",
                "--reason",
                "rotate the database password",
                "--out",
                approved_file,
            ],
        ),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = answer["approval"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("granted without approval: {answer}"))
        .to_owned();
    assert!(!approved.exists(), "no token before the approval");
    let decision = json!({ "decision": "approve", "reason": "change ticket 1234" });
    let path = format!("/v1/approvals/{id}/decisions");
    let (status, body) = owner.post(&path, decision.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("self_approval")),
        "{body}"
    );
    let (status, body) = reviewer.post(&path, decision).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval"]["status"], "approved");
    let redeem = || {
        run(
            ctl(
                nodes,
                "n1",
                &[
                    "--json",
                    "token",
                    "redeem",
                    &id,
                    "--management",
                    &m,
                    "--out",
                    approved_file,
                ],
            ),
            b"",
        )
    };
    let out = redeem().await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mut read = ctl(
        nodes,
        "n1",
        &[
            "secret",
            "get",
            "db/password",
            "--group",
            "e2e",
            "--vault",
            &v,
        ],
    );
    read.env("KEYMESH_TOKEN_FILE", &approved);
    let out = run(read, b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s3cret-value");
    let again = redeem().await;
    assert_ne!(again.status.code(), Some(0), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("approval_decided"),
        "{}",
        describe(&again)
    );
    let approved_token = std::fs::read_to_string(&approved)
        .expect("approved token")
        .trim()
        .to_owned();

    // The responder revokes the owner's tokens: the next send and read are refused within 1 s.
    // The relay client is made (nothing contacted) before, so the key file's KDF is not timed.
    let (relay_keys, _) = node_files(nodes, "n1");
    let relay_token = keymesh_core::http::node::TOKEN_B64
        .decode(&n1_token)
        .expect("token");
    let sender = RelayClient::new(
        relay_keys,
        relay_token,
        &r,
        ClientOptions {
            max_reconnect_attempts: Some(1),
            send_retries: 0,
            ..ClientOptions::default()
        },
    )
    .expect("relay client");
    let revoked_at = Instant::now();
    let (status, body) = responder
        .post(
            &format!("/v1/users/{owner_id}/revoke-tokens"),
            json!({ "reason": "owner's laptop stolen" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut send_refused = None;
    let mut read_refused = None;
    while (send_refused.is_none() || read_refused.is_none())
        && revoked_at.elapsed() < Duration::from_secs(5)
    {
        if send_refused.is_none() {
            match sender.send("n2", b"after revocation").await {
                Err(e) if e.code() == "revoked" => send_refused = Some(revoked_at.elapsed()),
                other => assert!(other.is_ok(), "{other:?}"),
            }
        }
        if read_refused.is_none() {
            match vault::read_secret(&vault_api, &n1_keys, &approved_token, "e2e", "db/password")
                .await
            {
                Err(CallError::Refused { code, .. }) if code == "revoked" => {
                    read_refused = Some(revoked_at.elapsed());
                }
                other => assert!(other.is_ok(), "{other:?}"),
            }
        }
    }
    sender.close().await;
    // And keymeshctl says so with its documented exit status.
    let out = run(
        ctl(
            nodes,
            "n1",
            &["--json", "--relay", &r, "send", "--to", "n2"],
        ),
        b"after revocation\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(err["error"]["code"], "revoked", "{}", describe(&out));
    let send_refused = send_refused.expect("the relay refused the revoked token");
    let read_refused = read_refused.expect("the vault refused the revoked token");
    println!(
        "revocation: propagated_ms {} at management; relay send refused after {send_refused:?}, vault read after {read_refused:?}",
        body["propagated_ms"]
    );
    assert!(send_refused < Duration::from_secs(1), "{send_refused:?}");
    assert!(read_refused < Duration::from_secs(1), "{read_refused:?}");

    // The central audit chain verifies; altering one row makes verify name it.
    let verify = |nodes: &Path| {
        let mut v = Keymesh::start(
            nodes,
            &["audit", "verify", "--service", "management"],
            &env(&[
                ("MANAGEMENT_DATABASE_URL", &mgmt_db),
                ("MANAGEMENT_SECRET_KEY", SECRET_KEY),
            ]),
        );
        let status = v.wait(START);
        (status.code(), v.output())
    };
    let (code, output) = verify(nodes);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("intact"), "{output}");
    assert!(output.contains("signed checkpoints hold"), "{output}");
    let db = Db::connect(mdb.url()).await.expect("management db");
    let seq: i64 = with_pool!(&db, pool => sqlx::query_scalar("SELECT seq FROM audit_log WHERE action = 'approval.decide' ORDER BY seq LIMIT 1").fetch_one(pool).await)
        .expect("a decision record");
    with_pool!(&db, pool => sqlx::query("UPDATE audit_log SET details = '{\"reason\":\"rewritten\"}' WHERE seq = $1").bind(seq).execute(pool).await.map(drop))
        .expect("tamper");
    db.close().await;
    let (code, output) = verify(nodes);
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains(&format!("record {seq}")), "{output}");

    for (name, mut process) in [("management", mgmt), ("relay", relay), ("vault", vault)] {
        let status = process.signal_and_wait("TERM", STOP);
        assert_eq!(status.code(), Some(0), "{name}: {}", process.output());
    }
}
