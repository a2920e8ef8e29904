//! The quickstart's and Keymesh Admin's routes, answered live and checked against
//! `docs/openapi/management.json` (every helper of the harness checks each response; this
//! test walks the whole path a new deployment takes and then asserts that each of those
//! operations was answered and checked). Also: a node learns from its enrollment answer the
//! grant that names its first token, and revokes it at the vault with it.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine;
use http::{Request, StatusCode, header};
use keymesh_core::{
    capability::pop::{PROOF_HEADER, sign_http},
    openapi::conformance::Conformance,
};
use keymesh_vault::auth::TOKEN_B64;
use serde_json::{Value, json};

use crate::harness::{Management, Node, enrollment, link_token, management_with_vault, node_key};

/// Operations the quickstart (README, docs/quickstart.md) and Keymesh Admin
/// (`admin-app/client`) call, each of which this test must see answered as documented.
const WALKED: &[(&str, &str, u16)] = &[
    ("GET", "/health/live", 200),
    ("GET", "/health/ready", 200),
    ("GET", "/metrics", 200),
    ("POST", "/v1/login", 202),
    ("POST", "/v1/login/poll", 200),
    ("POST", "/v1/login/code", 200),
    ("GET", "/login/confirm", 200),
    ("GET", "/login/confirm", 400),
    ("POST", "/login/confirm", 200),
    ("POST", "/login/confirm", 400),
    ("GET", "/v1/session", 200),
    ("POST", "/v1/users", 201),
    ("GET", "/v1/users", 200),
    ("POST", "/v1/groups", 201),
    ("GET", "/v1/groups", 200),
    ("GET", "/v1/groups/{id}", 200),
    ("PUT", "/v1/groups/{id}/members/{user}", 200),
    ("POST", "/v1/groups/{id}/enrollment-codes", 201),
    ("POST", "/v1/enroll", 201),
    ("POST", "/v1/enroll", 401),
    ("GET", "/v1/nodes", 200),
    ("POST", "/v1/token-requests", 200),
    ("POST", "/v1/token-requests", 202),
    ("GET", "/v1/token-requests/{id}", 200),
    ("GET", "/v1/approvals", 200),
    ("GET", "/v1/approvals/{id}", 200),
    ("POST", "/v1/approvals/{id}/decisions", 200),
    ("POST", "/v1/token-requests/{id}/redeem", 200),
    ("POST", "/v1/users/{id}/revoke-tokens", 200),
    ("POST", "/v1/nodes/{id}/revoke-tokens", 200),
    ("POST", "/v1/groups/{id}/revoke-tokens", 200),
    ("POST", "/v1/nodes/{id}/disable", 200),
    ("POST", "/v1/vaults/{group}/lock", 200),
    ("GET", "/v1/audit", 200),
    ("GET", "/v1/audit/verify", 200),
    ("POST", "/v1/logout", 204),
];

fn within_ceiling() -> Value {
    json!({ "rights": [{ "resource": "app/*", "op": "list" }], "reason": "inventory" })
}

/// A node's call to the vault over HTTP, checked against `docs/openapi/vault.json`.
async fn vault_call(
    m: &Management,
    node: &Node,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let vault = m.vault.as_ref().expect("vault");
    let body = body.to_string();
    let raw = TOKEN_B64.decode(&node.token).expect("token base64");
    let proof = sign_http(
        &node.key,
        method,
        path,
        body.as_bytes(),
        &raw,
        SystemTime::now(),
    );
    let response = reqwest::Client::new()
        .request(
            method.parse().expect("method"),
            format!("{}{path}", vault.url),
        )
        .bearer_auth(&node.token)
        .header(PROOF_HEADER, proof)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("vault call");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("vault answer");
    let document = Conformance::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/vault.json"),
    )
    .expect("vault document");
    if let Err(e) = document.check(method, path, status, &headers, &bytes) {
        panic!("the vault's response does not match docs/openapi/vault.json: {e}");
    }
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_quickstart_and_admin_routes_answer_as_documented() {
    let m = management_with_vault().await;
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let reply = m.json("GET", path, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }

    // Sign-in: the app flow with the mailed code, polling, and a browser through the link.
    let admin = m.person("admin").await;
    let reviewer = m.person("admin").await;
    let request = m.app_login(&admin.email).await;
    let reply = m.poll(&request).await;
    assert_eq!(reply.body["status"], "pending", "{}", reply.body);
    let reply = m
        .json(
            "POST",
            "/v1/login",
            Some(json!({ "email": admin.email })),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let link = link_token(&m.smtp.wait_mail(&admin.email, 3).await);
    let page = m.confirm_page(&link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let signed_in = m.confirm(&link, &[]).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.text());
    // A used link: the page says so in words a person understands, the header has the code.
    for reply in [m.confirm_page(&link).await, m.confirm(&link, &[]).await] {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.headers["keymesh-error-code"], "login_link_invalid");
        assert!(
            reply
                .text()
                .contains("Ask for a new one from the sign-in page"),
            "{}",
            reply.text()
        );
        assert!(!reply.text().contains("MANAGEMENT_"), "{}", reply.text());
    }
    let reply = m.bearer(&admin.token, "GET", "/v1/session", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Users, a group, a member.
    let member_email = crate::harness::address("member");
    let reply = m
        .bearer(
            &admin.token,
            "POST",
            "/v1/users",
            Some(json!({ "email": member_email, "role": "member" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let member_id = reply.body["user"]["id"].as_str().expect("id").to_owned();
    let reply = m
        .bearer(&admin.token, "GET", "/v1/users?limit=10", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = m
        .bearer(
            &admin.token,
            "POST",
            "/v1/groups",
            Some(json!({ "id": "quick" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    for path in ["/v1/groups", "/v1/groups/quick"] {
        let reply = m.bearer(&admin.token, "GET", path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let reply = m
        .bearer(
            &admin.token,
            "PUT",
            &format!("/v1/groups/quick/members/{member_id}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Enrollment: the answer names the grant of the node's first token.
    let code = m.new_code(&admin.token, "quick", json!({})).await;
    let key = node_key();
    let reply = m
        .json(
            "POST",
            "/v1/enroll",
            Some(enrollment(&code, "q1", &key)),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let first = Node {
        id: "q1".into(),
        key,
        token: reply.body["token"].as_str().expect("token").to_owned(),
    };
    let first_grant = reply.body["grant"].as_str().expect("grant").to_owned();
    assert_eq!(reply.body["node"]["group_id"], "quick");
    let reply = m
        .json(
            "POST",
            "/v1/enroll",
            Some(enrollment(&code, "q9", &node_key())),
            &[],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "a used code: {}",
        reply.body
    );
    let node = m.enroll(&admin.token, "quick", "q2", json!({})).await;
    m.wait_following().await;
    let reply = m
        .bearer(&admin.token, "GET", "/v1/nodes?group=quick", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Token requests: within the ceiling at once (the flat token document), above it through
    // an approval that another admin decides and the node redeems.
    let reply = m
        .node_call(&node, "POST", "/v1/token-requests", Some(within_ceiling()))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for field in ["token", "token_id", "grant"] {
        assert!(reply.body[field].is_string(), "{field}: {}", reply.body);
    }
    let above = json!({
        "rights": [{ "resource": "app/db", "op": "write" }],
        "reason": "rotate the password",
    });
    let reply = m
        .node_call(&node, "POST", "/v1/token-requests", Some(above))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let reply = m
        .node_call(&node, "GET", &format!("/v1/token-requests/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for path in [
        "/v1/approvals?status=pending".to_owned(),
        format!("/v1/approvals/{id}"),
    ] {
        let reply = m.bearer(&reviewer.token, "GET", &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let reply = m
        .bearer(
            &reviewer.token,
            "POST",
            &format!("/v1/approvals/{id}/decisions"),
            Some(json!({ "decision": "approve", "reason": "checked with the owner" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = m
        .node_call(
            &node,
            "POST",
            &format!("/v1/token-requests/{id}/redeem"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body["token"].is_string(), "{}", reply.body);
    assert_eq!(reply.body["approval"]["status"], "executed");

    // The first node revokes its own first token at the vault, by the enrollment's grant;
    // management then refuses that token too (it follows the vault's feed).
    let (status, body) = vault_call(
        &m,
        &first,
        "POST",
        "/v1/tokens/revoke",
        json!({ "grant": first_grant, "reason": "rotating" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], first_grant.as_str());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = m
            .node_call(&first, "POST", "/v1/token-requests", Some(within_ceiling()))
            .await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_eq!(reply.code(), "revoked", "{}", reply.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked token still works: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Incident response.
    let reason = || Some(json!({ "reason": "quickstart drill" }));
    for path in [
        "/v1/nodes/q2/revoke-tokens".to_owned(),
        format!("/v1/users/{member_id}/revoke-tokens"),
        "/v1/groups/quick/revoke-tokens".to_owned(),
        "/v1/nodes/q2/disable".to_owned(),
        "/v1/vaults/quick/lock".to_owned(),
    ] {
        let reply = m.bearer(&admin.token, "POST", &path, reason()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }

    // The audit log, then sign out.
    for path in ["/v1/audit?limit=50", "/v1/audit/verify"] {
        let reply = m.bearer(&admin.token, "GET", path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let reply = m.bearer(&admin.token, "POST", "/v1/logout", None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);

    let seen: BTreeSet<(String, u16)> = m
        .seen
        .lock()
        .expect("seen")
        .iter()
        .map(|(operation, status)| (operation.to_string(), *status))
        .collect();
    let missing: Vec<String> = WALKED
        .iter()
        .map(|(method, path, status)| (format!("{method} {path}"), *status))
        .filter(|walked| !seen.contains(walked))
        .map(|(operation, status)| format!("{operation} {status}"))
        .collect();
    assert!(missing.is_empty(), "not answered and checked: {missing:?}");
    let documented = crate::harness::DOCUMENT.operations();
    for (method, path, _) in WALKED {
        assert!(
            documented
                .iter()
                .any(|o| o.method == *method && o.path == *path),
            "{method} {path} is not in the document"
        );
    }
}

#[tokio::test]
async fn a_response_the_document_does_not_describe_fails_the_check() {
    // The checker itself, on a live answer: the enrollment answer checked against a document
    // whose schema lacks `grant` (as the document did before) is refused, naming the field.
    let m = management_with_vault().await;
    let admin = m.person("admin").await;
    let code = m.new_code(&admin.token, "strict", json!({})).await;
    let request = Request::builder()
        .method("POST")
        .uri("/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            enrollment(&code, "s1", &node_key()).to_string(),
        ))
        .expect("request");
    let response = m.raw(request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let mut document: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/management.json"),
        )
        .expect("document"),
    )
    .expect("json");
    let enrolled = &mut document["components"]["schemas"]["Enrolled"];
    enrolled["properties"]
        .as_object_mut()
        .expect("properties")
        .remove("grant");
    enrolled["required"]
        .as_array_mut()
        .expect("required")
        .retain(|f| f != "grant");
    let err = Conformance::new(document)
        .check("POST", "/v1/enroll", status, &headers, &bytes)
        .expect_err("an undocumented field");
    assert!(
        err.contains("POST /v1/enroll") && err.contains("status 201") && err.contains("\"grant\""),
        "{err}"
    );
}
