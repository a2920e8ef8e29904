//! Root key lifecycle attacks and availability, at a relay following a vault (decision 0014):
//! a routine rotation refuses nothing anywhere; a stolen root key dies everywhere within a
//! second of its revocation; a retired key stops verifying when its window ends.

use std::time::{Duration, Instant};

use keymesh_testkit::{Cluster, TestNode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::ws::{node_http, publish, send_all};

async fn keys(cluster: &Cluster) -> Vec<Value> {
    let (status, body) = cluster.mgmt(Method::GET, "/v1/tokens/keys", None).await;
    assert_eq!(status, 200, "{body}");
    body["keys"].as_array().expect("keys").clone()
}

fn current_kid(keys: &[Value]) -> i64 {
    let current: Vec<i64> = keys
        .iter()
        .filter(|k| k["state"] == "current")
        .filter_map(|k| k["kid"].as_i64())
        .collect();
    assert_eq!(current.len(), 1, "exactly one current key: {keys:?}");
    current[0]
}

/// The relay's answer to `node` (with `token`) reading its own published key.
async fn relay_answer(cluster: &Cluster, node: &TestNode, token: &str) -> (u16, Value) {
    let holder = TestNode {
        token: token.to_owned(),
        ..node.clone()
    };
    node_http(
        cluster,
        &holder,
        "GET",
        &format!("/v1/relay/keys/{}", node.id),
        String::new(),
    )
    .await
}

#[tokio::test]
async fn a_routine_rotation_refuses_no_token_anywhere() {
    let cluster = Cluster::start_with(&[("VAULT_ROOT_KEY_ANNOUNCE_SECS", "2")], &[]).await;
    let a = cluster.node("node-a", "g1", send_all()).await;
    publish(&cluster, &a).await;
    let before = current_kid(&keys(&cluster).await);
    let (status, rotated) = cluster
        .mgmt(Method::POST, "/v1/tokens/keys/rotate", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["current_kid"].as_i64(), Some(before));
    let announced = rotated["kid"].as_i64().expect("kid");
    let listed = keys(&cluster).await;
    assert!(
        listed
            .iter()
            .any(|k| k["kid"] == announced && k["state"] == "announced"),
        "the new key is listed as announced: {listed:?}"
    );
    assert_eq!(
        current_kid(&listed),
        before,
        "the old key signs until activation"
    );

    // Through the announcement and past the activation, every token the vault mints works at
    // the relay the moment it is minted (before the fix: 401 invalid_token for up to 30 s).
    let until = Instant::now() + Duration::from_secs(4);
    let mut minted = 0;
    while Instant::now() < until {
        let token = cluster.mint("node-a", send_all()).await;
        let (status, body) = relay_answer(&cluster, &a, &token).await;
        assert_eq!(status, 200, "token {minted} after the rotation: {body}");
        minted += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(minted > 10, "{minted} tokens checked");
    let after = keys(&cluster).await;
    assert_eq!(
        current_kid(&after),
        announced,
        "the announced key signs now"
    );
    let old = after
        .iter()
        .find(|k| k["kid"] == before)
        .expect("the old key is listed while it verifies");
    assert_eq!(old["state"], "retired");
    assert!(old["verify_until_ms"].as_i64().is_some(), "{old}");
    // The token minted before the rotation (old key) still works: it was valid when signed.
    let (status, body) = relay_answer(&cluster, &a, &a.token).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_stolen_root_key_is_revoked_everywhere_within_a_second() {
    let cluster = Cluster::start(&[]).await;
    let a = cluster.node("node-a", "g1", send_all()).await;
    publish(&cluster, &a).await;
    let stolen = cluster.steal_signing_root_key().await;
    let kid = current_kid(&keys(&cluster).await);
    // The attacker mints what the vault never would: a token valid for 30 days.
    let forged = cluster.forge(&stolen, &a, send_all(), Duration::from_secs(30 * 86_400));
    let (status, body) = relay_answer(&cluster, &a, &forged).await;
    assert_eq!(
        status, 200,
        "a forged token verifies while its key is trusted: {body}"
    );

    let started = Instant::now();
    let (status, revoked) = cluster
        .mgmt(
            Method::POST,
            &format!("/v1/tokens/keys/{kid}/revoke"),
            Some(json!({ "reason": "incident: root key copied" })),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    let replacement = revoked["replacement_kid"]
        .as_i64()
        .expect("a replacement signs");
    loop {
        let (status, body) = relay_answer(&cluster, &a, &forged).await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "revoked", "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the relay still accepts a token signed by the revoked root key: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "root key revoke-to-refusal at the relay: {:?}",
        started.elapsed()
    );
    // Every token that key signed, the vault's own included, is dead, and says why (also once
    // the relay has read the keys again).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for token in [&forged, &a.token] {
        let (status, body) = relay_answer(&cluster, &a, token).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &json!("revoked")),
            "{body}"
        );
    }
    // The replacement signs at once, and the relay accepts its tokens within the second too.
    let listed = keys(&cluster).await;
    assert_eq!(current_kid(&listed), replacement);
    assert!(
        listed
            .iter()
            .any(|k| k["kid"] == kid && k["state"] == "revoked" && k["revoked_at_ms"].is_i64()),
        "a revoked key is listed as revoked: {listed:?}"
    );
    let fresh = cluster.mint("node-a", send_all()).await;
    loop {
        let (status, body) = relay_answer(&cluster, &a, &fresh).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the replacement key's token is still refused: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Revoking it again finds nothing to revoke.
    let (status, body) = cluster
        .mgmt(
            Method::POST,
            &format!("/v1/tokens/keys/{kid}/revoke"),
            Some(json!({ "reason": "again" })),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_retired_root_key_stops_verifying_when_its_window_ends() {
    // Tokens live at most 3 s: a key retired at activation verifies 3 s longer.
    let cluster = Cluster::start_with(
        &[
            ("VAULT_ROOT_KEY_ANNOUNCE_SECS", "1"),
            ("VAULT_TOKEN_MAX_TTL_SECS", "3"),
            ("VAULT_TOKEN_TTL_SECS", "3"),
        ],
        &[],
    )
    .await;
    let a = cluster.node("node-a", "g1", send_all()).await;
    publish(&cluster, &a).await;
    let stolen = cluster.steal_signing_root_key().await;
    let old = current_kid(&keys(&cluster).await);
    let (status, body) = cluster
        .mgmt(Method::POST, "/v1/tokens/keys/rotate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // Forged after the rotation with a long expiry: inside the old key's window it verifies
    // (a legitimate token it signed could still be alive), after it never again.
    let forged = cluster.forge(&stolen, &a, send_all(), Duration::from_secs(86_400));
    let (status, body) = relay_answer(&cluster, &a, &forged).await;
    assert_eq!(status, 200, "{body}");
    let listed = keys(&cluster).await;
    let until = listed
        .iter()
        .find(|k| k["kid"] == old)
        .and_then(|k| k["verify_until_ms"].as_i64())
        .expect("the old key's window is announced with the rotation");
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    assert!(
        until > now_ms && until <= now_ms + 5_000,
        "{until} vs {now_ms}"
    );
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(until - now_ms).expect("ahead") + 200,
    ))
    .await;
    // Before the fix, the relay never dropped a retired key: this was 200 for good.
    let (status, body) = relay_answer(&cluster, &a, &forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token", "{body}");
    let listed = keys(&cluster).await;
    assert!(
        listed.iter().all(|k| k["kid"] != old),
        "a key past its window is not listed: {listed:?}"
    );
    // Revoking its successor does not bring it back (it retired when the successor took over).
    let successor = current_kid(&listed);
    let (status, body) = cluster
        .mgmt(
            Method::POST,
            &format!("/v1/tokens/keys/{successor}/revoke"),
            Some(json!({ "reason": "drill" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["replacement_kid"].is_i64(), "{body}");
    let listed = keys(&cluster).await;
    assert!(
        listed.iter().all(|k| k["kid"] != old),
        "a retired key stays gone after its successor is revoked: {listed:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = relay_answer(&cluster, &a, &forged).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("invalid_token")),
        "{body}"
    );
}
