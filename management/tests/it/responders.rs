//! Incident response: revoke a user's, node's or group's tokens, disable a node, lock a vault.

use http::StatusCode;
use serde_json::json;

use crate::harness::{expect, management_with_vault};

fn within_ceiling() -> serde_json::Value {
    json!({ "rights": [{ "resource": "db/*", "op": "list" }], "reason": "inventory" })
}

#[tokio::test]
async fn a_responder_revokes_a_users_tokens_and_every_node_of_theirs_is_refused() {
    let m = management_with_vault().await;
    let (owner_id, owner) = m.signed_in("admin").await;
    let (_, responder) = m.signed_in("responder").await;
    let (_, member) = m.signed_in("member").await;
    let n1 = m.enroll(&owner, "g", "r1", json!({})).await;
    let n2 = m.enroll(&owner, "g", "r2", json!({})).await;
    m.wait_following().await;
    for node in [&n1, &n2] {
        let reply = m
            .node_call(node, "POST", "/v1/token-requests", Some(within_ceiling()))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let uri = format!("/v1/users/{owner_id}/revoke-tokens");
    let body = json!({ "reason": "laptop stolen" });
    expect(
        &m.bearer(&member, "POST", &uri, Some(body.clone())).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    expect(
        &m.bearer(&responder, "POST", &uri, Some(json!({ "reason": "" })))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let reply = m.bearer(&responder, "POST", &uri, Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["scope"], "user");
    let propagated = reply.body["propagated_ms"].as_u64();
    assert!(
        propagated.is_some(),
        "applied by a follower: {}",
        reply.body
    );
    println!("user revocation reached management's feed copy in {propagated:?} ms");
    for node in [&n1, &n2] {
        expect(
            &m.node_call(node, "POST", "/v1/token-requests", Some(within_ceiling()))
                .await,
            StatusCode::UNAUTHORIZED,
            "revoked",
        );
    }
    expect(
        &m.bearer(
            &responder,
            "POST",
            "/v1/users/nobody/revoke-tokens",
            Some(json!({ "reason": "x" })),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn disabling_a_node_and_locking_a_vault_take_access_away() {
    let m = management_with_vault().await;
    let (owner_id, owner) = m.signed_in("admin").await;
    let (_, responder) = m.signed_in("responder").await;
    let node = m.enroll(&owner, "h", "d1", json!({})).await;
    let keep = m.enroll(&owner, "h", "d2", json!({})).await;
    m.wait_following().await;
    let reply = m
        .bearer(
            &responder,
            "POST",
            "/v1/nodes/d1/disable",
            Some(json!({ "reason": "compromised" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["already_disabled"], false);
    expect(
        &m.node_call(&node, "POST", "/v1/token-requests", Some(within_ceiling()))
            .await,
        StatusCode::UNAUTHORIZED,
        "revoked",
    );
    // The node revocation is scoped: the other node works.
    let reply = m
        .node_call(&keep, "POST", "/v1/token-requests", Some(within_ceiling()))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Group-wide revocation ends the rest.
    let reply = m
        .bearer(
            &responder,
            "POST",
            "/v1/groups/h/revoke-tokens",
            Some(json!({ "reason": "rotate everything" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    expect(
        &m.node_call(&keep, "POST", "/v1/token-requests", Some(within_ceiling()))
            .await,
        StatusCode::UNAUTHORIZED,
        "revoked",
    );
    // Revoked is not disabled: d2 still counts as an enabled node of the member.
    let reply = m
        .bearer(
            &owner,
            "DELETE",
            &format!("/v1/groups/h/members/{owner_id}"),
            None,
        )
        .await;
    expect(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(reply.body["error"]["details"]["nodes"], json!(["d2"]));

    // Locking is idempotent at the vault: it answers whether a key was wiped.
    let reply = m
        .bearer(
            &responder,
            "POST",
            "/v1/vaults/h/lock",
            Some(json!({ "reason": "incident 42" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["vault"]["locked"], true);
    assert_eq!(reply.body["vault"]["was_unlocked"], false);
}
