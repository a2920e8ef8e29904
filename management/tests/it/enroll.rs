//! Groups, members, enrollment codes and `POST /v1/enroll` against a real vault on loopback.

use base64::Engine;
use http::StatusCode;
use keymesh_vault::auth::TOKEN_B64;
use serde_json::{Value, json};

use crate::harness::{
    Management, Reply, enrollment, expect, management_with, management_with_vault, node_key,
};

async fn group(m: &Management, admin: &str, id: &str, ceiling: Option<&str>) -> Reply {
    let mut body = json!({ "id": id });
    if let Some(c) = ceiling {
        body["node_ceiling"] = json!(c);
    }
    m.bearer(admin, "POST", "/v1/groups", Some(body)).await
}

async fn code(m: &Management, session: &str, group: &str, body: Value) -> Reply {
    m.bearer(
        session,
        "POST",
        &format!("/v1/groups/{group}/enrollment-codes"),
        Some(body),
    )
    .await
}

async fn enroll(m: &Management, body: Value) -> Reply {
    m.json("POST", "/v1/enroll", Some(body), &[]).await
}

/// An admin's group and a fresh code for it: (admin token, code).
async fn group_and_code(m: &Management, group_id: &str) -> (String, String) {
    let (_, admin) = m.signed_in("admin").await;
    assert_eq!(
        group(m, &admin, group_id, None).await.status,
        StatusCode::CREATED
    );
    let reply = code(m, &admin, group_id, json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let code = reply.body["code"].as_str().expect("code").to_owned();
    (admin, code)
}

#[tokio::test]
async fn groups_members_and_codes_follow_roles_and_ceilings() {
    let m = management_with_vault().await;
    let (_, admin) = m.signed_in("admin").await;
    let (member_id, member) = m.signed_in("member").await;
    let (_, auditor) = m.signed_in("auditor").await;

    let reply = group(&m, &admin, "payments", Some("read")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["group"]["node_ceiling"], "read");
    expect(
        &group(&m, &admin, "payments", None).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    expect(
        &group(&m, &member, "mine", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        &group(&m, &admin, "../etc", None).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );

    // Not a member yet: no code, and the group is invisible (same answer as a missing one).
    expect(
        &code(&m, &member, "payments", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let hidden = m.bearer(&member, "GET", "/v1/groups/payments", None).await;
    let missing = m.bearer(&member, "GET", "/v1/groups/nothing", None).await;
    expect(&hidden, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(hidden.body, missing.body);
    // An auditor may not enroll nodes at all.
    expect(
        &code(&m, &auditor, "payments", json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let reply = m
        .bearer(
            &admin,
            "PUT",
            &format!("/v1/groups/payments/members/{member_id}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let listed = m.bearer(&member, "GET", "/v1/groups", None).await;
    assert_eq!(
        listed.body["groups"][0]["id"], "payments",
        "{}",
        listed.body
    );

    let reply = code(&m, &member, "payments", json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert!(
        reply.body["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("kme_"))
    );
    assert_eq!(reply.body["ceiling"], "read");
    assert_eq!(
        reply.body["rights"],
        json!([{ "resource": "relay/*", "op": "write" }])
    );
    // Above the group's ceiling needs groups:manage; rights above the ceiling need an
    // approval (refused, never truncated); lifetimes are bounded.
    expect(
        &code(&m, &member, "payments", json!({ "ceiling": "write" })).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let reply = code(
        &m,
        &member,
        "payments",
        json!({ "rights": [{ "resource": "db/*", "op": "list" }] }),
    )
    .await;
    expect(&reply, StatusCode::FORBIDDEN, "approval_required");
    assert_eq!(
        reply.body["error"]["details"]["excess"]["above_ceiling"][0]["resource"],
        "db/*"
    );
    expect(
        &code(&m, &member, "payments", json!({ "ttl_secs": 100_000 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let reply = code(
        &m,
        &admin,
        "payments",
        json!({ "ceiling": "write", "rights": [{ "resource": "db/*", "op": "write" }] }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    // Membership cannot end while the member has enabled nodes in the group.
    let code_text = code(&m, &member, "payments", json!({})).await.body["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let enrolled = enroll(&m, enrollment(&code_text, "pay-1", &node_key())).await;
    assert_eq!(enrolled.status, StatusCode::CREATED, "{}", enrolled.body);
    let reply = m
        .bearer(
            &admin,
            "DELETE",
            &format!("/v1/groups/payments/members/{member_id}"),
            None,
        )
        .await;
    expect(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(reply.body["error"]["details"]["nodes"], json!(["pay-1"]));
    let mine = m.bearer(&member, "GET", "/v1/nodes", None).await;
    assert_eq!(mine.body["nodes"][0]["id"], "pay-1", "{}", mine.body);
}

#[tokio::test]
async fn a_node_enrolls_once_with_a_signed_request_and_gets_a_working_token() {
    let m = management_with_vault().await;
    let (admin, code) = group_and_code(&m, "build").await;
    let key = node_key();

    // Refusals that use nothing up: malformed code, signature for another id or another
    // key, malformed key.
    expect(
        &enroll(&m, enrollment("kme_short", "ci-1", &key)).await,
        StatusCode::UNAUTHORIZED,
        "enrollment_code_invalid",
    );
    let mut moved = enrollment(&code, "ci-2", &key);
    moved["node_id"] = json!("ci-1");
    expect(
        &enroll(&m, moved).await,
        StatusCode::UNAUTHORIZED,
        "proof_invalid",
    );
    let mut swapped = enrollment(&code, "ci-1", &key);
    swapped["public_key"] = json!(hex::encode(node_key().verifying_key().as_bytes()));
    expect(
        &enroll(&m, swapped).await,
        StatusCode::UNAUTHORIZED,
        "proof_invalid",
    );
    let mut weak = enrollment(&code, "ci-1", &key);
    weak["public_key"] = json!("00".repeat(32));
    expect(
        &enroll(&m, weak).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let mut unknown_field = enrollment(&code, "ci-1", &key);
    unknown_field["ceiling"] = json!("share");
    assert_eq!(
        enroll(&m, unknown_field).await.status.as_u16() / 100,
        4,
        "an enrolling node cannot choose its own ceiling"
    );

    let reply = enroll(&m, enrollment(&code, "ci-1", &key)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["node"]["group_id"], "build");
    assert_eq!(reply.body["relay_url"], "http://127.0.0.1:7802");
    let token = TOKEN_B64
        .decode(reply.body["token"].as_str().expect("token"))
        .expect("base64");
    let vault = m.vault.as_ref().expect("vault");
    let verified = vault
        .state
        .verifier()
        .verify(&token)
        .expect("vault verifies");
    assert_eq!(verified.claims.node, "ci-1");
    assert_eq!(verified.claims.group, "build");
    assert_eq!(verified.claims.node_key, *key.verifying_key().as_bytes());
    assert_eq!(verified.claims.rights.len(), 1);
    assert!(verified.claims.rights[0].is_relay_send());

    // The code worked once.
    expect(
        &enroll(&m, enrollment(&code, "ci-2", &node_key())).await,
        StatusCode::UNAUTHORIZED,
        "enrollment_code_invalid",
    );

    // A taken node id is refused and never replaces the node's key; that code stays usable.
    let second = crate::enroll::fresh_code(&m, &admin, "build").await;
    let thief = node_key();
    expect(
        &enroll(&m, enrollment(&second, "ci-1", &thief)).await,
        StatusCode::CONFLICT,
        "node_exists",
    );
    let node = m.state.store.node("ci-1").await.expect("db").expect("node");
    assert_eq!(node.public_key, key.verifying_key().as_bytes().to_vec());
    let reply = enroll(&m, enrollment(&second, "ci-2", &thief)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    // Expired codes are refused.
    let short = code_with(&m, &admin, "build", json!({ "ttl_secs": 1 })).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    expect(
        &enroll(&m, enrollment(&short, "ci-3", &node_key())).await,
        StatusCode::UNAUTHORIZED,
        "enrollment_code_invalid",
    );

    // Codes never reach the audit log; the chain verifies.
    let rows: Vec<(String, String, String, String)> = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT actor, action, target, details FROM audit_log ORDER BY seq").fetch_all(pool).await)
    .expect("audit rows");
    let everything: String = rows
        .iter()
        .map(|r| format!("{} {} {} {}", r.0, r.1, r.2, r.3))
        .collect();
    for secret in [&code, &second, &short] {
        assert!(
            !everything.contains(secret.as_str()),
            "audit log holds a code"
        );
        assert!(!everything.contains(&secret[4..]), "audit log holds a code");
    }
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    for expected in ["group.create", "enrollment_code.create", "node.enroll"] {
        assert!(actions.contains(&expected), "{actions:?}");
    }
    let report = keymesh_core::audit::verify(m.state.store.db())
        .await
        .expect("verify");
    assert!(report.first_broken.is_none(), "{report:?}");
}

pub async fn fresh_code(m: &Management, session: &str, group_id: &str) -> String {
    code_with(m, session, group_id, json!({})).await
}

async fn code_with(m: &Management, session: &str, group_id: &str, body: Value) -> String {
    let reply = code(m, session, group_id, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["code"].as_str().expect("code").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_enrollments_with_one_code_enroll_exactly_one_node() {
    let m = std::sync::Arc::new(management_with_vault().await);
    let (_, code) = group_and_code(&m, "race").await;
    let attempts = (0..8).map(|i| {
        let m = m.clone();
        let body = enrollment(&code, &format!("racer-{i}"), &node_key());
        tokio::spawn(async move { enroll(&m, body).await })
    });
    let mut created = 0;
    for attempt in attempts {
        let reply = attempt.await.expect("join");
        match reply.status {
            StatusCode::CREATED => created += 1,
            _ => expect(&reply, StatusCode::UNAUTHORIZED, "enrollment_code_invalid"),
        }
    }
    assert_eq!(created, 1);
    let nodes = m.state.store.nodes(Some("race"), None).await.expect("db");
    assert_eq!(nodes.len(), 1);
}

#[tokio::test]
async fn without_a_reachable_vault_enrollment_fails_and_the_code_stays_usable() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let url = format!("http://{closed}");
    let m = management_with(&[
        ("MANAGEMENT_VAULT_URL", &url),
        ("MANAGEMENT_VAULT_API_KEY", crate::harness::VAULT_KEY),
    ])
    .await;
    let (_, code) = group_and_code(&m, "offline").await;
    let reply = enroll(&m, enrollment(&code, "off-1", &node_key())).await;
    expect(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(!reply.body.to_string().contains(&url), "{}", reply.body);
    let hash = keymesh_management::secrets::token_hash(&code);
    assert!(
        m.state.store.live_code(&hash).await.expect("db").is_some(),
        "the code is usable again"
    );
    assert!(m.state.store.node("off-1").await.expect("db").is_none());

    // Without any vault configured: refused before the code is looked at.
    let m = management_with(&[]).await;
    let (_, code) = group_and_code(&m, "novault").await;
    expect(
        &enroll(&m, enrollment(&code, "nv-1", &node_key())).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
}

#[tokio::test]
async fn lowering_a_node_ceiling_reaches_the_vault_and_revokes_its_tokens() {
    let m = management_with_vault().await;
    let (admin, _) = group_and_code(&m, "ops").await;
    let code = code_with(&m, &admin, "ops", json!({ "ceiling": "write" })).await;
    let reply = enroll(&m, enrollment(&code, "ops-1", &node_key())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["node"]["ceiling"], "write");
    let (_, member) = m.signed_in("member").await;
    expect(
        &m.bearer(
            &member,
            "PUT",
            "/v1/nodes/ops-1/ceiling",
            Some(json!({ "ceiling": "read" })),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let reply = m
        .bearer(
            &admin,
            "PUT",
            "/v1/nodes/ops-1/ceiling",
            Some(json!({ "ceiling": "read" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["tokens_revoked"], true);
    let node = m
        .state
        .store
        .node("ops-1")
        .await
        .expect("db")
        .expect("node");
    assert_eq!(node.ceiling, "read");
    expect(
        &m.bearer(
            &admin,
            "PUT",
            "/v1/nodes/none/ceiling",
            Some(json!({ "ceiling": "read" })),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn codes_die_with_their_owners_membership_and_never_rekey_a_node_the_vault_knows() {
    let m = management_with_vault().await;
    let (_, admin) = m.signed_in("admin").await;
    let (member_id, member) = m.signed_in("member").await;
    assert_eq!(
        group(&m, &admin, "team", None).await.status,
        StatusCode::CREATED
    );
    m.bearer(
        &admin,
        "PUT",
        &format!("/v1/groups/team/members/{member_id}"),
        None,
    )
    .await;
    let left = fresh_code(&m, &member, "team").await;
    let reply = m
        .bearer(
            &admin,
            "DELETE",
            &format!("/v1/groups/team/members/{member_id}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    expect(
        &enroll(&m, enrollment(&left, "left-1", &node_key())).await,
        StatusCode::UNAUTHORIZED,
        "enrollment_code_invalid",
    );
    // A non-member gets the same answer for an existing group as for a missing one.
    let existing = code(&m, &member, "team", json!({})).await;
    let missing = code(&m, &member, "no-such-group", json!({})).await;
    expect(&existing, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(existing.body, missing.body);

    // An id the vault already knows with another key (registered there directly) is never
    // re-keyed through enrollment, and the code stays usable.
    let vault = m.vault.as_ref().expect("vault");
    let reply = reqwest::Client::new()
        .put(format!("{}/v1/nodes/known-1", vault.url))
        .bearer_auth(crate::harness::VAULT_KEY)
        .json(&json!({ "group": "team", "user": "someone", "public_key": hex::encode(node_key().verifying_key().as_bytes()) }))
        .send()
        .await
        .expect("register at the vault");
    assert!(reply.status().is_success());
    let usable = fresh_code(&m, &admin, "team").await;
    expect(
        &enroll(&m, enrollment(&usable, "known-1", &node_key())).await,
        StatusCode::CONFLICT,
        "node_exists",
    );
    let reply = enroll(&m, enrollment(&usable, "new-1", &node_key())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}
