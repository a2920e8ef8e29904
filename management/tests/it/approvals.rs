//! Approvals: a node asks for a token above its ceiling; reviewers decide; the node redeems it
//! once. Against a real vault on loopback, mail through the real SMTP server.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keymesh_vault::auth::TOKEN_B64;
use serde_json::{Value, json};

use crate::harness::{
    Management, Node, Reply, expect, management_with_vault, management_with_vault_and,
};

fn above_ceiling() -> Value {
    json!({
        "rights": [{ "resource": "db/password", "op": "read" }, { "resource": "db/password", "op": "write" }],
        "reason": "rotate the database password",
    })
}

/// The owner's (admin) session and their node `n1` in group `g` (ceiling `list`), followed.
async fn owner_and_node(m: &Management) -> (String, String, Node) {
    let (owner_id, owner) = m.signed_in("admin").await;
    let node = m.enroll(&owner, "g", "n1", json!({})).await;
    m.wait_following().await;
    (owner_id, owner, node)
}

async fn ask(m: &Management, node: &Node) -> String {
    let reply = m
        .node_call(node, "POST", "/v1/token-requests", Some(above_ceiling()))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["approval"]["status"], "pending");
    assert_eq!(reply.body["approval"]["operation"], "token.mint");
    reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn decide(m: &Management, session: &str, id: &str, decision: &str) -> Reply {
    m.bearer(
        session,
        "POST",
        &format!("/v1/approvals/{id}/decisions"),
        Some(json!({ "decision": decision, "reason": "checked with the on-call lead" })),
    )
    .await
}

async fn redeem(m: &Management, node: &Node, id: &str) -> Reply {
    m.node_call(
        node,
        "POST",
        &format!("/v1/token-requests/{id}/redeem"),
        None,
    )
    .await
}

/// `token.mint` records at the vault that name `approval`.
async fn vault_mints_for(m: &Management, approval: &str) -> usize {
    let vault = m.vault.as_ref().expect("vault");
    let rows: Vec<(String,)> = keymesh_core::with_pool!(vault.state.store.db(), pool =>
        sqlx::query_as("SELECT details FROM audit_log WHERE action = 'token.mint' AND outcome = 'success'").fetch_all(pool).await)
    .expect("vault audit");
    rows.iter().filter(|(d,)| d.contains(approval)).count()
}

#[tokio::test]
async fn above_its_ceiling_a_node_waits_for_another_admin_then_redeems_once() {
    let m = management_with_vault().await;
    let (_, owner, node) = owner_and_node(&m).await;
    let reviewer_person = m.person("admin").await;
    let reviewer = reviewer_person.token.clone();
    let (_, member) = m.signed_in("member").await;

    // Within the ceiling: a token at once, no approval.
    let reply = m
        .node_call(
            &node,
            "POST",
            "/v1/token-requests",
            Some(
                json!({ "rights": [{ "resource": "db/*", "op": "list" }], "reason": "inventory" }),
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body["token"].is_string(), "{}", reply.body);
    assert!(reply.body["grant"].is_string(), "{}", reply.body);

    let id = ask(&m, &node).await;
    // The reviewer's second mail (the first was their sign-in).
    let reviewer_mail = m.smtp.wait_mail(&reviewer_person.email, 2).await;
    assert!(reviewer_mail.contains("token.mint"), "{reviewer_mail}");
    assert!(reviewer_mail.contains("rotate the database password"));

    expect(
        &redeem(&m, &node, &id).await,
        StatusCode::CONFLICT,
        "approval_pending",
    );
    // Without approvals:decide; then the requester (the node's owner) themself.
    expect(
        &decide(&m, &member, &id, "approve").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        &decide(&m, &owner, &id, "approve").await,
        StatusCode::FORBIDDEN,
        "self_approval",
    );
    expect(
        &decide(&m, &reviewer, &id, "maybe").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );

    let reply = decide(&m, &reviewer, &id, "approve").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["approval"]["status"], "approved");
    assert_eq!(reply.body["decisions"][0]["decision"], "approve");
    assert_eq!(
        reply.body["decisions"][0]["reason"],
        "checked with the on-call lead"
    );
    // Final: no second decision, not even a denial.
    expect(
        &decide(&m, &reviewer, &id, "deny").await,
        StatusCode::CONFLICT,
        "approval_decided",
    );

    let reply = redeem(&m, &node, &id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let token = TOKEN_B64
        .decode(reply.body["token"].as_str().expect("token"))
        .expect("b64");
    let verified = m
        .vault
        .as_ref()
        .expect("vault")
        .state
        .verifier()
        .verify(&token)
        .expect("verifies");
    assert_eq!(verified.claims.node, "n1");
    assert_eq!(verified.claims.rights.len(), 2);
    expect(
        &redeem(&m, &node, &id).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );
    assert_eq!(vault_mints_for(&m, &id).await, 1);

    // Another node cannot see or redeem it.
    let other = m.enroll(&owner, "g", "n2", json!({})).await;
    expect(
        &m.node_call(&other, "GET", &format!("/v1/token-requests/{id}"), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let shown = m
        .node_call(&node, "GET", &format!("/v1/token-requests/{id}"), None)
        .await;
    assert_eq!(
        shown.body["approval"]["status"], "executed",
        "{}",
        shown.body
    );

    // Every step is in the audit log; the chain verifies.
    let actions: Vec<(String,)> = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT action FROM audit_log ORDER BY seq").fetch_all(pool).await)
    .expect("audit");
    let actions: Vec<&str> = actions.iter().map(|(a,)| a.as_str()).collect();
    for expected in ["approval.request", "approval.decide", "approval.execute"] {
        assert!(actions.contains(&expected), "{actions:?}");
    }
    let report = keymesh_core::audit::verify(m.state.store.db())
        .await
        .expect("verify");
    assert!(report.first_broken.is_none(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_approvals_decide_once_and_simultaneous_redeems_execute_once() {
    let m = Arc::new(management_with_vault().await);
    let (_, _, node) = owner_and_node(&m).await;
    let node = Arc::new(node);
    let mut reviewers = Vec::new();
    for _ in 0..4 {
        reviewers.push(m.signed_in("admin").await.1);
    }
    let id = ask(&m, &node).await;
    let votes = reviewers.iter().map(|r| {
        let (m, r, id) = (m.clone(), r.clone(), id.clone());
        tokio::spawn(async move { decide(&m, &r, &id, "approve").await })
    });
    let mut counted = 0;
    for vote in votes {
        let reply = vote.await.expect("join");
        match reply.status {
            StatusCode::OK => counted += 1,
            _ => expect(&reply, StatusCode::CONFLICT, "approval_decided"),
        }
    }
    assert_eq!(counted, 1, "one vote decides a one-approval policy");
    let redeems = (0..6).map(|_| {
        let (m, node, id) = (m.clone(), node.clone(), id.clone());
        tokio::spawn(async move { redeem(&m, &node, &id).await })
    });
    let mut minted = 0;
    for r in redeems {
        let reply = r.await.expect("join");
        match reply.status {
            StatusCode::OK => minted += 1,
            _ => expect(&reply, StatusCode::CONFLICT, "approval_decided"),
        }
    }
    assert_eq!(minted, 1);
    assert_eq!(vault_mints_for(&m, &id).await, 1, "executed exactly once");
}

#[tokio::test]
async fn thresholds_reviewer_roles_denials_and_expiry_follow_the_policy() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[operations.\"token.mint\"]\napprovals = 2\ndenials = 1\nreviewers = [\"admin\"]\nmax_ttl_secs = 600\n",
    )
    .expect("policy");
    let m = management_with_vault_and(&[(
        "MANAGEMENT_APPROVAL_POLICY_FILE",
        path.to_str().expect("utf-8"),
    )])
    .await;
    let (_, _, node) = owner_and_node(&m).await;
    let (_, a) = m.signed_in("admin").await;
    let (_, b) = m.signed_in("admin").await;
    let (_, responder) = m.signed_in("responder").await;

    // Two approvals decide; the first leaves it pending; one reviewer votes once.
    let id = ask(&m, &node).await;
    let reply = decide(&m, &a, &id, "approve").await;
    assert_eq!(
        reply.body["approval"]["status"], "pending",
        "{}",
        reply.body
    );
    expect(
        &decide(&m, &a, &id, "approve").await,
        StatusCode::CONFLICT,
        "approval_decided",
    );
    let reply = decide(&m, &b, &id, "approve").await;
    assert_eq!(
        reply.body["approval"]["status"], "approved",
        "{}",
        reply.body
    );

    // A responder is not a reviewer of token.mint (and lacks approvals:decide).
    let id = ask(&m, &node).await;
    expect(
        &decide(&m, &responder, &id, "approve").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // One denial denies; a denied request is never executed.
    let reply = decide(&m, &a, &id, "deny").await;
    assert_eq!(reply.body["approval"]["status"], "denied", "{}", reply.body);
    let reply = redeem(&m, &node, &id).await;
    expect(&reply, StatusCode::CONFLICT, "approval_pending");
    assert_eq!(reply.body["error"]["details"]["status"], "denied");

    // Lifetimes: bounded by the policy; after expiry nobody can approve or redeem.
    let mut body = above_ceiling();
    body["approval_ttl_secs"] = json!(601);
    expect(
        &m.node_call(&node, "POST", "/v1/token-requests", Some(body))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let mut body = above_ceiling();
    body["approval_ttl_secs"] = json!(1);
    let reply = m
        .node_call(&node, "POST", "/v1/token-requests", Some(body))
        .await;
    let id = reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect(
        &decide(&m, &a, &id, "approve").await,
        StatusCode::GONE,
        "approval_expired",
    );
    let shown = m
        .bearer(&a, "GET", &format!("/v1/approvals/{id}"), None)
        .await;
    assert_eq!(
        shown.body["approval"]["status"], "expired",
        "{}",
        shown.body
    );
}

#[tokio::test]
async fn reviewers_see_requests_live_and_requesters_only_their_own() {
    let m = management_with_vault().await;
    let (_, owner, node) = owner_and_node(&m).await;
    let (_, reviewer) = m.signed_in("admin").await;
    let (_, member) = m.signed_in("member").await;

    let request = Request::builder()
        .uri("/v1/approvals/events")
        .header(header::AUTHORIZATION, format!("Bearer {reviewer}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = m.raw(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let id = ask(&m, &node).await;
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = body.frame().await.expect("a frame").expect("body");
            if let Some(data) = frame.data_ref() {
                let text = String::from_utf8_lossy(data).into_owned();
                if text.contains("approval.created") {
                    return text;
                }
            }
        }
    })
    .await
    .expect("an event within 5 s");
    assert!(frame.contains(&id), "{frame}");

    // Lists: reviewers see it; the owner sees their own; another member sees nothing.
    let listed = m
        .bearer(&reviewer, "GET", "/v1/approvals?status=pending", None)
        .await;
    assert_eq!(
        listed.body["approvals"][0]["id"],
        id.as_str(),
        "{}",
        listed.body
    );
    let own = m.bearer(&owner, "GET", "/v1/approvals", None).await;
    assert_eq!(own.body["approvals"][0]["id"], id.as_str(), "{}", own.body);
    let other = m.bearer(&member, "GET", "/v1/approvals", None).await;
    assert_eq!(other.body["approvals"], json!([]), "{}", other.body);
    expect(
        &m.bearer(&member, "GET", &format!("/v1/approvals/{id}"), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Signing out ends the open stream at its next event.
    let reply = m.bearer(&reviewer, "POST", "/v1/logout", None).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    ask(&m, &node).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                None | Some(Err(_)) => return true,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let text = String::from_utf8_lossy(data).into_owned();
                        assert!(
                            !text.contains("approval.created"),
                            "delivered after sign-out: {text}"
                        );
                    }
                }
            }
        }
    })
    .await
    .expect("the stream ends within 5 s");
    assert!(ended);
}

#[tokio::test]
async fn node_calls_need_a_live_token_its_proof_and_an_enabled_node() {
    let m = management_with_vault().await;
    let (_, owner, node) = owner_and_node(&m).await;
    let body = above_ceiling().to_string();
    let bearer = format!("Bearer {}", node.token);
    let no_proof = m
        .json(
            "POST",
            "/v1/token-requests",
            Some(above_ceiling()),
            &[("authorization", &bearer)],
        )
        .await;
    expect(&no_proof, StatusCode::UNAUTHORIZED, "proof_required");
    let garbage = m
        .json(
            "POST",
            "/v1/token-requests",
            Some(above_ceiling()),
            &[("authorization", "Bearer not-a-token")],
        )
        .await;
    expect(&garbage, StatusCode::UNAUTHORIZED, "invalid_token");
    // A user's session is not a node token.
    let session = m
        .bearer(&owner, "POST", "/v1/token-requests", Some(above_ceiling()))
        .await;
    expect(&session, StatusCode::UNAUTHORIZED, "invalid_token");
    // The same proof twice.
    let raw = TOKEN_B64.decode(&node.token).expect("b64");
    let proof = keymesh_core::capability::pop::sign_http(
        &node.key,
        "POST",
        "/v1/token-requests",
        body.as_bytes(),
        &raw,
        std::time::SystemTime::now(),
    );
    let mut replies = Vec::new();
    for _ in 0..2 {
        replies.push(
            m.json(
                "POST",
                "/v1/token-requests",
                Some(above_ceiling()),
                &[("authorization", &bearer), ("keymesh-proof", &proof)],
            )
            .await,
        );
    }
    assert_eq!(
        replies[0].status,
        StatusCode::ACCEPTED,
        "{}",
        replies[0].body
    );
    expect(&replies[1], StatusCode::UNAUTHORIZED, "proof_replayed");
    // A node management disabled is refused even with a valid token.
    assert!(m.state.store.disable_node("n1").await.expect("db"));
    expect(
        &m.node_call(&node, "POST", "/v1/token-requests", Some(above_ceiling()))
            .await,
        StatusCode::UNAUTHORIZED,
        "revoked",
    );
}

#[tokio::test]
async fn an_owner_asks_for_their_node_which_redeems_and_nobody_redeems_after_expiry() {
    let m = management_with_vault().await;
    let (_, owner, node) = owner_and_node(&m).await;
    let (_, reviewer) = m.signed_in("admin").await;
    let mut body = above_ceiling();
    body["operation"] = json!("token.mint");
    body["node_id"] = json!("n1");
    let reply = m
        .bearer(&owner, "POST", "/v1/approvals", Some(body.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    expect(
        &decide(&m, &owner, &id, "approve").await,
        StatusCode::FORBIDDEN,
        "self_approval",
    );
    assert_eq!(
        decide(&m, &reviewer, &id, "approve").await.status,
        StatusCode::OK
    );
    let reply = redeem(&m, &node, &id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Another user's node is not theirs to ask for.
    let (_, stranger) = m.signed_in("admin").await;
    expect(
        &m.bearer(&stranger, "POST", "/v1/approvals", Some(body.clone()))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    body["operation"] = json!("user.delete");
    expect(
        &m.bearer(&owner, "POST", "/v1/approvals", Some(body)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );

    // Approved, then expired before it was used: nothing runs.
    let mut short = above_ceiling();
    short["approval_ttl_secs"] = json!(1);
    let reply = m
        .node_call(&node, "POST", "/v1/token-requests", Some(short))
        .await;
    let id = reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        decide(&m, &reviewer, &id, "approve").await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect(
        &redeem(&m, &node, &id).await,
        StatusCode::GONE,
        "approval_expired",
    );
    assert_eq!(vault_mints_for(&m, &id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_come_from_the_policy_and_concurrent_votes_never_overcount() {
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[operations.\"token.mint\"]\napprovals = 2\nreviewers = [\"responder\"]\n",
    )
    .expect("policy");
    let rbac = dir.path().join("rbac.toml");
    std::fs::write(
        &rbac,
        "[roles]\nadmin = [\"*\"]\nresponder = [\"users:read\", \"approvals:decide\"]\nauditor = []\nmember = [\"nodes:enroll\"]\n",
    )
    .expect("rbac");
    let m = Arc::new(
        management_with_vault_and(&[
            (
                "MANAGEMENT_APPROVAL_POLICY_FILE",
                policy.to_str().expect("utf-8"),
            ),
            ("MANAGEMENT_RBAC_FILE", rbac.to_str().expect("utf-8")),
        ])
        .await,
    );
    let (_, _, node) = owner_and_node(&m).await;
    let (_, admin) = m.signed_in("admin").await;
    let id = ask(&m, &node).await;
    // An admin holds approvals:decide but is not a reviewer of this policy.
    expect(
        &decide(&m, &admin, &id, "approve").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let mut responders = Vec::new();
    for _ in 0..4 {
        responders.push(m.signed_in("responder").await.1);
    }
    let votes = responders.iter().map(|r| {
        let (m, r, id) = (m.clone(), r.clone(), id.clone());
        tokio::spawn(async move { decide(&m, &r, &id, "approve").await })
    });
    let mut counted = 0;
    for vote in votes {
        let reply = vote.await.expect("join");
        match reply.status {
            StatusCode::OK => counted += 1,
            _ => expect(&reply, StatusCode::CONFLICT, "approval_decided"),
        }
    }
    assert_eq!(counted, 2, "two votes decide; later ones find it decided");
    let shown = m
        .bearer(&responders[0], "GET", &format!("/v1/approvals/{id}"), None)
        .await;
    assert_eq!(
        shown.body["approval"]["status"], "approved",
        "{}",
        shown.body
    );
    assert_eq!(
        shown.body["decisions"].as_array().map(Vec::len),
        Some(2),
        "{}",
        shown.body
    );
}

#[tokio::test]
async fn deleting_a_user_needs_another_admin_and_ends_everything_of_theirs_once() {
    let m = management_with_vault().await;
    let (_, admin) = m.signed_in("admin").await;
    let (_, second) = m.signed_in("admin").await;
    let leaver = m.person("admin").await;
    let node = m.enroll(&leaver.token, "del", "gone-1", json!({})).await;
    m.wait_following().await;
    let ask =
        json!({ "operation": "user.delete", "user_id": leaver.id, "reason": "left the company" });
    let reply = m.bearer(&admin, "POST", "/v1/approvals", Some(ask)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let execute = format!("/v1/approvals/{id}/execute");
    expect(
        &m.bearer(&admin, "POST", &execute, None).await,
        StatusCode::CONFLICT,
        "approval_pending",
    );
    expect(
        &decide(&m, &admin, &id, "approve").await,
        StatusCode::FORBIDDEN,
        "self_approval",
    );
    assert_eq!(
        decide(&m, &second, &id, "approve").await.status,
        StatusCode::OK
    );
    // Only the requester executes it.
    expect(
        &m.bearer(&second, "POST", &execute, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let reply = m.bearer(&admin, "POST", &execute, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["nodes_disabled"], json!(["gone-1"]));
    expect(
        &m.bearer(&admin, "POST", &execute, None).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );
    // Their session, their node and their address are gone; the address can be invited again.
    assert_eq!(
        m.session_status(&leaver.token).await,
        StatusCode::UNAUTHORIZED
    );
    expect(
        &m.node_call(&node, "POST", "/v1/token-requests", Some(above_ceiling()))
            .await,
        StatusCode::UNAUTHORIZED,
        "revoked",
    );
    let reply = m
        .bearer(
            &admin,
            "POST",
            "/v1/users",
            Some(json!({ "email": leaver.email, "role": "member" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted() {
    let m = crate::harness::management().await;
    let (only, token) = m.signed_in("admin").await;
    let reply = m
        .bearer(
            &token,
            "POST",
            "/v1/approvals",
            Some(json!({ "operation": "user.delete", "user_id": only, "reason": "testing" })),
        )
        .await;
    expect(&reply, StatusCode::CONFLICT, "conflict");
}
