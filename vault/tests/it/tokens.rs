//! Tokens: ceiling, delegation, attenuation, revocation and the feed; bad credentials.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use keymesh_core::capability::{
    Op,
    pop::sign_http,
    token::{KeyRing, VerifyKeys, attenuate_bytes, random_key},
};
use keymesh_vault::auth::TOKEN_B64;
use serde_json::json;

use crate::harness::{FEED_KEY, Node, Vault, code, start_with, vault};

const PASS: &str = "correct horse battery staple";

pub fn grant_of(v: &Vault, node: &Node) -> String {
    let raw = TOKEN_B64.decode(&node.token).expect("b64");
    v.state
        .verifier()
        .verify(&raw)
        .expect("verify")
        .claims
        .grant
        .clone()
}

fn root_keys(v: &Vault) -> VerifyKeys {
    v.state.ring().public_keys()
}

/// A node `granter` (user u1) holding `read` and `share` on `db/*`, and a registered node `peer`
/// (user u2, ceiling `read, list`) with its signing key.
async fn granter_and_peer(v: &Vault) -> (Node, ed25519_dalek::SigningKey) {
    let granter = v
        .node(
            "granter",
            "team",
            "u1",
            "share",
            json!([{ "resource": "db/*", "op": "read" }, { "resource": "db/*", "op": "share" }]),
        )
        .await;
    let key = ed25519_dalek::SigningKey::from_bytes(&random_key());
    let peer = json!({ "group": "team", "user": "u2", "public_key": hex::encode(key.verifying_key().to_bytes()) });
    v.mgmt("PUT", "/v1/nodes/peer", Some(peer)).await;
    (granter, key)
}

async fn seeded(v: &Vault) -> Node {
    v.init_passphrase("team", PASS).await;
    assert_eq!(v.unlock_passphrase("team", PASS).await.0, 200);
    let admin = v
        .node(
            "seeder",
            "team",
            "admin",
            "share",
            json!([{ "resource": "*", "op": "write" }]),
        )
        .await;
    for path in ["db/a", "db/b", "app/c"] {
        let reply = v
            .node_call(
                &admin,
                "PUT",
                &format!("/v1/vaults/team/secrets/{path}"),
                Some(json!({ "value": path })),
            )
            .await;
        assert_eq!(reply.0, 200, "{reply:?}");
    }
    admin
}

#[tokio::test]
async fn mint_above_the_ceiling_asks_for_approval_and_never_truncates() {
    let v = vault().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&random_key());
    v.mgmt("PUT", "/v1/nodes/agent", Some(json!({ "group": "team", "user": "u", "public_key": hex::encode(key.verifying_key().to_bytes()) }))).await;
    let reply = v
        .mgmt(
            "POST",
            "/v1/tokens",
            Some(json!({ "node_id": "agent", "rights": [
        { "resource": "db/*", "op": "read" }, { "resource": "db/*", "op": "write" } ] })),
        )
        .await;
    assert_eq!(
        (reply.0.as_u16(), code(&reply)),
        (403, "approval_required"),
        "{reply:?}"
    );
    let excess = &reply.1["error"]["details"]["excess"]["above_ceiling"];
    assert_eq!(
        excess,
        &json!([{ "resource": "db/*", "op": "write" }]),
        "{reply:?}"
    );
    assert!(reply.1.get("token").is_none());

    // Management names the approval that allowed the excess: minted, and both tied together
    // in the vault's audit record.
    let reply = v
        .mgmt(
            "POST",
            "/v1/tokens",
            Some(json!({ "node_id": "agent", "approval": "apr-1", "rights": [
        { "resource": "db/*", "op": "read" }, { "resource": "db/*", "op": "write" } ] })),
        )
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let details: Vec<(String,)> = keymesh_core::with_pool!(v.state.store.db(), pool =>
        sqlx::query_as("SELECT details FROM audit_log WHERE action = 'token.mint' AND outcome = 'success'").fetch_all(pool).await)
    .expect("audit");
    assert!(
        details
            .iter()
            .any(|(d,)| d.contains("apr-1") && d.contains("\"write\"")),
        "{details:?}"
    );
    // One mint per approval, ever.
    let reply = v
        .mgmt(
            "POST",
            "/v1/tokens",
            Some(json!({ "node_id": "agent", "approval": "apr-1", "rights": [
        { "resource": "db/*", "op": "read" } ] })),
        )
        .await;
    assert_eq!(
        (reply.0.as_u16(), code(&reply)),
        (409, "conflict"),
        "{reply:?}"
    );

    // A node's key is fixed at registration: another key for a known id is refused, the same
    // registration again is fine.
    let other = ed25519_dalek::SigningKey::from_bytes(&random_key());
    let reply = v.mgmt("PUT", "/v1/nodes/agent", Some(json!({ "group": "team", "user": "u", "public_key": hex::encode(other.verifying_key().to_bytes()) }))).await;
    assert_eq!(
        (reply.0.as_u16(), code(&reply)),
        (409, "conflict"),
        "{reply:?}"
    );
    let reply = v.mgmt("PUT", "/v1/nodes/agent", Some(json!({ "group": "team", "user": "u", "public_key": hex::encode(key.verifying_key().to_bytes()) }))).await;
    assert_eq!(reply.0, 200, "{reply:?}");

    // A disabled node gets nothing minted.
    let reply = v.mgmt("PUT", "/v1/nodes/agent", Some(json!({ "group": "team", "user": "u", "disabled": true, "public_key": hex::encode(key.verifying_key().to_bytes()) }))).await;
    assert_eq!(reply.1["tokens_revoked"], true, "{reply:?}");
    let reply = v
        .mgmt(
            "POST",
            "/v1/tokens",
            Some(json!({ "node_id": "agent", "rights": [{ "resource": "db/*", "op": "read" }] })),
        )
        .await;
    assert_eq!(
        (reply.0.as_u16(), code(&reply)),
        (403, "forbidden"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn delegation_is_a_checked_subset_and_dies_with_its_parent() {
    let v = vault().await;
    seeded(&v).await;
    let (granter, key) = granter_and_peer(&v).await;

    // Wider than the granter, above the peer's ceiling, or not shareable: approval_required.
    for rights in [
        json!([{ "resource": "*", "op": "read" }]),
        json!([{ "resource": "db/a", "op": "share" }]),
        json!([{ "resource": "app/c", "op": "read" }]),
    ] {
        let reply = v
            .node_call(
                &granter,
                "POST",
                "/v1/tokens/delegate",
                Some(json!({ "peer_node_id": "peer", "rights": rights })),
            )
            .await;
        assert_eq!(code(&reply), "approval_required", "{rights}: {reply:?}");
    }
    let reply = v
        .node_call(
            &granter,
            "POST",
            "/v1/tokens/delegate",
            Some(
                json!({ "peer_node_id": "peer", "rights": [{ "resource": "db/a", "op": "read" }] }),
            ),
        )
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let peer = Node {
        id: "peer".into(),
        key,
        token: reply.1["token"].as_str().expect("token").into(),
    };
    assert_eq!(
        v.node_call(&peer, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await
            .1["value"],
        "db/a"
    );
    assert_eq!(
        code(
            &v.node_call(&peer, "GET", "/v1/vaults/team/secrets/db/b", None)
                .await
        ),
        "forbidden"
    );
    // The granter's token in the peer's hands is useless without the granter's key.
    let stolen = Node {
        id: "peer".into(),
        key: peer.key.clone(),
        token: granter.token.clone(),
    };
    assert_eq!(
        code(
            &v.node_call(&stolen, "GET", "/v1/vaults/team/secrets/db/a", None)
                .await
        ),
        "proof_invalid"
    );

    // Revoking the granter's grant kills the delegated token too, at once, and it is in the feed.
    let grant = grant_of(&v, &granter);
    let reply = v
        .mgmt(
            "POST",
            "/v1/revocations",
            Some(json!({ "kind": "grant", "grant": grant, "reason": "compromised" })),
        )
        .await;
    let seq = reply.1["seq"].as_i64().expect("seq");
    assert_eq!(
        code(
            &v.node_call(&peer, "GET", "/v1/vaults/team/secrets/db/a", None)
                .await
        ),
        "revoked"
    );
    assert_eq!(
        code(
            &v.node_call(&granter, "GET", "/v1/vaults/team/secrets/db/a", None)
                .await
        ),
        "revoked"
    );
    let feed = v
        .as_service(
            FEED_KEY,
            "GET",
            &format!("/v1/revocations?after={}", seq - 1),
            None,
        )
        .await;
    assert_eq!(feed.1["entries"][0]["subject"], grant, "{feed:?}");
    assert_eq!(feed.1["head"], seq);
}

#[tokio::test]
async fn an_epoch_bump_kills_every_older_token_of_that_node_user_or_group() {
    let v = vault().await;
    seeded(&v).await;
    let read = json!([{ "resource": "*", "op": "read" }]);
    let a = v.node("a", "team", "alice", "list", read.clone()).await;
    let b = v.node("b", "team", "alice", "list", read.clone()).await;
    let c = v.node("c", "team", "bob", "list", read.clone()).await;
    let get = |n| v.node_call(n, "GET", "/v1/vaults/team/secrets/db/a", None);
    assert_eq!(get(&a).await.0, 200);
    let reply = v.mgmt("POST", "/v1/revocations", Some(json!({ "kind": "epoch", "scope": "user", "subject": "alice", "reason": "offboarded" }))).await;
    assert_eq!(reply.1["epoch"], 1, "{reply:?}");
    assert_eq!(code(&get(&a).await), "revoked");
    assert_eq!(code(&get(&b).await), "revoked");
    assert_eq!(get(&c).await.0, 200, "another user's node is untouched");
    // A token minted after the bump works.
    let fresh = v
        .mgmt(
            "POST",
            "/v1/tokens",
            Some(json!({ "node_id": "a", "rights": read })),
        )
        .await;
    let a2 = Node {
        id: "a".into(),
        key: a.key.clone(),
        token: fresh.1["token"].as_str().expect("token").into(),
    };
    assert_eq!(get(&a2).await.0, 200);
    // A group bump reaches everyone.
    v.mgmt(
        "POST",
        "/v1/revocations",
        Some(json!({ "kind": "epoch", "scope": "group", "subject": "team", "reason": "incident" })),
    )
    .await;
    assert_eq!(code(&get(&c).await), "revoked");
    assert_eq!(code(&get(&a2).await), "revoked");
}

#[tokio::test]
async fn offline_attenuation_narrows_and_cannot_be_refreshed_back_open() {
    let v = vault().await;
    seeded(&v).await;
    let n = v
        .node(
            "n",
            "team",
            "u",
            "write",
            json!([{ "resource": "*", "op": "read" }, { "resource": "*", "op": "write" }]),
        )
        .await;
    let raw = TOKEN_B64.decode(&n.token).expect("b64");
    let narrowed = attenuate_bytes(&raw, &root_keys(&v), Some(&[Op::Read]), Some("db/"), None)
        .expect("attenuate");
    let small = Node {
        id: "n".into(),
        key: n.key.clone(),
        token: TOKEN_B64.encode(narrowed),
    };
    assert_eq!(
        v.node_call(&small, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await
            .0,
        200
    );
    assert_eq!(
        code(
            &v.node_call(&small, "GET", "/v1/vaults/team/secrets/app/c", None)
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &v.node_call(
                &small,
                "PUT",
                "/v1/vaults/team/secrets/db/a",
                Some(json!({ "value": "x" }))
            )
            .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &v.node_call(&small, "POST", "/v1/tokens/refresh", None)
                .await
        ),
        "forbidden"
    );
    let reply = v
        .node_call(
            &small,
            "POST",
            "/v1/tokens/delegate",
            Some(json!({ "peer_node_id": "n", "rights": [{ "resource": "db/a", "op": "read" }] })),
        )
        .await;
    assert_eq!(
        code(&reply),
        "forbidden",
        "an attenuated copy must not delegate: {reply:?}"
    );
    // The holder of the full token can refresh it: same grant, new expiry.
    let reply = v.node_call(&n, "POST", "/v1/tokens/refresh", None).await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let grant = grant_of(&v, &n);
    assert_eq!(reply.1["grant"], grant);
    let refreshed = Node {
        id: "n".into(),
        key: n.key.clone(),
        token: reply.1["token"].as_str().expect("token").into(),
    };
    // Revoking the grant kills the original, its refresh and its attenuated copy alike.
    v.mgmt(
        "POST",
        "/v1/revocations",
        Some(json!({ "kind": "grant", "grant": grant, "reason": "test" })),
    )
    .await;
    for node in [&n, &refreshed, &small] {
        assert_eq!(
            code(
                &v.node_call(node, "GET", "/v1/vaults/team/secrets/db/a", None)
                    .await
            ),
            "revoked"
        );
    }
}

#[tokio::test]
async fn root_keys_are_announced_then_signed_with_and_every_replica_follows() {
    // Two vault replicas over one database (decision 0014). Before the fix the second one never
    // read the keys again: it neither verified nor signed with a rotated key until restarted.
    let settings = [("VAULT_ROOT_KEY_ANNOUNCE_SECS", "1")];
    let first = vault().await;
    let v = start_with(Arc::clone(&first.db), first.master.clone(), &settings).await;
    let replica = start_with(Arc::clone(&first.db), first.master.clone(), &settings).await;
    seeded(&v).await;
    // Unlocked vaults are per replica (memory only).
    assert_eq!(replica.unlock_passphrase("team", PASS).await.0, 200);
    let read = json!([{ "resource": "*", "op": "read" }]);
    let old = v.node("old", "team", "u", "list", read.clone()).await;
    let before = v.state.ring().current_id();
    let reply = v.mgmt("POST", "/v1/tokens/keys/rotate", None).await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let announced = reply.1["kid"].as_i64().expect("kid");
    assert_eq!(reply.1["current_kid"].as_i64(), Some(i64::from(before)));
    let listed = v.mgmt("GET", "/v1/tokens/keys", None).await.1;
    let states: Vec<(i64, String)> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["kid"].as_i64().expect("kid"),
                k["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&(announced, "announced".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&(i64::from(before), "current".into())),
        "{states:?}"
    );
    // Announced: still signed with the old key, here and at the replica.
    let during = v.node("during", "team", "u", "list", read.clone()).await;
    assert_eq!(kid(&during), Some(before));

    // Past the activation, both replicas sign with the new key, and each verifies what the
    // other minted, old tokens included.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(i64::from(v.state.ring().current_id()), announced);
    assert_eq!(
        i64::from(replica.state.ring().current_id()),
        announced,
        "the replica read the announced key from the feed"
    );
    let new = replica.node("new", "team", "u", "list", read.clone()).await;
    assert_eq!(kid(&new).map(i64::from), Some(announced));
    for node in [&old, &during, &new] {
        for at in [&v, &replica] {
            let reply = at
                .node_call(node, "GET", "/v1/vaults/team/secrets/db/a", None)
                .await;
            assert_eq!(reply.0, 200, "{reply:?}");
        }
    }

    // A revocation at one replica: the other refuses that key's tokens within a second and
    // signs with the replacement.
    let started = std::time::Instant::now();
    let revoked = v
        .mgmt(
            "POST",
            &format!("/v1/tokens/keys/{announced}/revoke"),
            Some(json!({ "reason": "drill" })),
        )
        .await;
    assert_eq!(revoked.0, 200, "{revoked:?}");
    let replacement = revoked.1["replacement_kid"].as_i64().expect("replacement");
    loop {
        let reply = replica
            .node_call(&new, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await;
        if reply.0 == 401 {
            assert_eq!(code(&reply), "revoked", "{reply:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(i64::from(replica.state.ring().current_id()), replacement);
    // The old key was not revoked: what it signed still verifies (until its window ends).
    let reply = replica
        .node_call(&old, "GET", "/v1/vaults/team/secrets/db/a", None)
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    // Bad input: an unknown key, a missing or oversized reason.
    assert_eq!(
        v.mgmt(
            "POST",
            "/v1/tokens/keys/12345/revoke",
            Some(json!({ "reason": "x" }))
        )
        .await
        .0,
        404
    );
    let bad = [
        (json!({}), 400, "malformed_request"),
        (
            json!({ "reason": "x", "extra": 1 }),
            400,
            "malformed_request",
        ),
        (json!({ "reason": "" }), 422, "invalid_request"),
        (
            json!({ "reason": "r".repeat(1025) }),
            422,
            "invalid_request",
        ),
    ];
    for (body, status, error) in bad {
        let reply = v
            .mgmt(
                "POST",
                &format!("/v1/tokens/keys/{replacement}/revoke"),
                Some(body),
            )
            .await;
        assert_eq!(
            (reply.0.as_u16(), code(&reply)),
            (status, error),
            "{reply:?}"
        );
    }
    let reply = v
        .mgmt(
            "POST",
            "/v1/tokens/keys/not-a-kid/revoke",
            Some(json!({ "reason": "x" })),
        )
        .await;
    assert_eq!(reply.0, 400, "{reply:?}");
    // Nothing above revoked the replacement.
    assert_eq!(i64::from(v.state.ring().current_id()), replacement);
}

/// The root key id a node's token was signed with.
fn kid(n: &Node) -> Option<u32> {
    let raw = TOKEN_B64.decode(&n.token).expect("b64");
    biscuit_auth::UnverifiedBiscuit::from(&raw)
        .expect("parse")
        .root_key_id()
}

#[tokio::test]
async fn a_fresh_follower_starts_from_the_snapshot() {
    let v = vault().await;
    v.mgmt(
        "POST",
        "/v1/revocations",
        Some(json!({ "kind": "grant", "grant": "g-9", "reason": "x" })),
    )
    .await;
    v.mgmt(
        "POST",
        "/v1/revocations",
        Some(json!({ "kind": "epoch", "scope": "node", "subject": "n-1", "reason": "x" })),
    )
    .await;
    let snap = v
        .as_service(FEED_KEY, "GET", "/v1/revocations/snapshot", None)
        .await;
    assert_eq!(snap.1["head"], 2, "{snap:?}");
    assert_eq!(snap.1["revoked"], json!(["g-9"]));
    assert_eq!(
        snap.1["epochs"],
        json!([{ "scope": "node", "subject": "n-1", "epoch": 1 }])
    );
    assert_eq!(
        code(
            &v.mgmt("GET", "/v1/revocations/snapshot", Some(json!({})))
                .await
        ),
        ""
    );
}

#[tokio::test]
async fn bad_credentials_are_refused_with_their_codes() {
    let v = vault().await;
    seeded(&v).await;
    let n = v
        .node(
            "n",
            "team",
            "u",
            "list",
            json!([{ "resource": "*", "op": "read" }]),
        )
        .await;
    let uri = "/v1/vaults/team/secrets/db/a";
    let raw = TOKEN_B64.decode(&n.token).expect("b64");
    let now = SystemTime::now();

    // Missing proof; proof over another body; replayed proof; stale proof.
    let reply = v.signed_call(&n.token, "", "GET", uri, String::new()).await;
    assert_eq!(code(&reply), "proof_invalid", "{reply:?}");
    let req = http::Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {}", n.token))
        .body(axum::body::Body::empty())
        .expect("req");
    assert_eq!(code(&v.send(req).await), "proof_required");
    let proof = sign_http(
        &n.key,
        "PUT",
        "/v1/vaults/team/secrets/db/a",
        br#"{"value":"a"}"#,
        &raw,
        now,
    );
    assert_eq!(
        code(
            &v.signed_call(
                &n.token,
                &proof,
                "PUT",
                "/v1/vaults/team/secrets/db/a",
                r#"{"value":"b"}"#.into()
            )
            .await
        ),
        "proof_invalid"
    );
    let proof = sign_http(&n.key, "GET", uri, b"", &raw, now);
    assert_eq!(
        v.signed_call(&n.token, &proof, "GET", uri, String::new())
            .await
            .0,
        200
    );
    assert_eq!(
        code(
            &v.signed_call(&n.token, &proof, "GET", uri, String::new())
                .await
        ),
        "proof_replayed"
    );
    let old = sign_http(
        &n.key,
        "GET",
        uri,
        b"",
        &raw,
        now - Duration::from_secs(120),
    );
    assert_eq!(
        code(
            &v.signed_call(&n.token, &old, "GET", uri, String::new())
                .await
        ),
        "proof_invalid"
    );

    // Malformed token bytes; a token signed by another root key; an expired token.
    for token in ["", "!!!", "AAAA", &TOKEN_B64.encode(&raw[..raw.len() / 2])] {
        let bad = Node {
            id: "n".into(),
            key: n.key.clone(),
            token: token.to_owned(),
        };
        let reply = v.node_call(&bad, "GET", uri, None).await;
        assert!(
            matches!(code(&reply), "invalid_token"),
            "{token:?}: {reply:?}"
        );
    }
    let foreign_ring = KeyRing::new(random_key().as_ref(), &[]).expect("ring");
    let mut claims = v
        .state
        .verifier()
        .verify(&raw)
        .expect("verify")
        .claims
        .clone();
    let foreign = Node {
        id: "n".into(),
        key: n.key.clone(),
        token: TOKEN_B64.encode(foreign_ring.mint(&claims).expect("mint")),
    };
    assert_eq!(
        code(&v.node_call(&foreign, "GET", uri, None).await),
        "invalid_token"
    );
    claims.expires_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 5;
    let expired = Node {
        id: "n".into(),
        key: n.key.clone(),
        token: TOKEN_B64.encode(v.state.ring().mint(&claims).expect("mint")),
    };
    assert_eq!(
        code(&v.node_call(&expired, "GET", uri, None).await),
        "token_expired"
    );

    // Management-only routes refuse nodes and wrong keys; the feed refuses anonymous callers.
    assert_eq!(
        code(
            &v.as_service("wrong", "POST", "/v1/tokens", Some(json!({})))
                .await
        ),
        "unauthorized"
    );
    assert_eq!(
        code(&v.as_service(&n.token, "GET", "/v1/revocations", None).await),
        "unauthorized"
    );
}

#[tokio::test]
async fn the_feed_long_polls_until_a_revocation_arrives() {
    let v = vault().await;
    let head = v
        .as_service(FEED_KEY, "GET", "/v1/revocations", None)
        .await
        .1["head"]
        .as_i64()
        .expect("head");
    let waiter = async {
        v.as_service(
            FEED_KEY,
            "GET",
            &format!("/v1/revocations?after={head}&wait_secs=10"),
            None,
        )
        .await
    };
    let revoker = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        v.mgmt(
            "POST",
            "/v1/revocations",
            Some(json!({ "kind": "grant", "grant": "g-1", "reason": "test" })),
        )
        .await
    };
    let started = std::time::Instant::now();
    let (feed, _) = tokio::join!(waiter, revoker);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke on the revocation, not the timeout"
    );
    assert_eq!(feed.1["entries"][0]["subject"], "g-1", "{feed:?}");
}

#[tokio::test]
async fn revoking_a_delegators_node_kills_what_it_delegated_and_refresh_keeps_the_cap() {
    let v = vault().await;
    seeded(&v).await;
    let (granter, key) = granter_and_peer(&v).await;
    let reply = v
        .node_call(
            &granter,
            "POST",
            "/v1/tokens/delegate",
            Some(
                json!({ "peer_node_id": "peer", "rights": [{ "resource": "db/a", "op": "read" }] }),
            ),
        )
        .await;
    let peer = Node {
        id: "peer".into(),
        key,
        token: reply.1["token"].as_str().expect("token").into(),
    };
    // Refreshing the delegated token never passes the granter's expiry.
    let granter_expiry = v
        .state
        .verifier()
        .verify(&TOKEN_B64.decode(&granter.token).expect("b64"))
        .expect("verify")
        .claims
        .expires_at;
    let refreshed = v.node_call(&peer, "POST", "/v1/tokens/refresh", None).await;
    assert_eq!(refreshed.0, 200, "{refreshed:?}");
    assert!(refreshed.1["expires_at"].as_u64().expect("exp") <= granter_expiry);
    let refreshed = Node {
        id: "peer".into(),
        key: peer.key.clone(),
        token: refreshed.1["token"].as_str().expect("token").into(),
    };
    // Revoking the granter's node (not its grant) kills the delegated token and its refresh.
    v.mgmt("POST", "/v1/revocations", Some(json!({ "kind": "epoch", "scope": "node", "subject": "granter", "reason": "compromised" }))).await;
    for n in [&peer, &refreshed] {
        assert_eq!(
            code(
                &v.node_call(n, "GET", "/v1/vaults/team/secrets/db/a", None)
                    .await
            ),
            "revoked"
        );
    }
    // A revoked node cannot revoke what it delegated either.
    let grant = grant_of(&v, &peer);
    assert_eq!(
        code(
            &v.node_call(
                &granter,
                "POST",
                "/v1/tokens/revoke",
                Some(json!({ "grant": grant }))
            )
            .await
        ),
        "revoked"
    );
}

#[tokio::test]
async fn odd_group_ids_are_refused_before_anything_is_audited() {
    let v = vault().await;
    seeded(&v).await;
    let n = v
        .node(
            "n",
            "team",
            "u",
            "list",
            json!([{ "resource": "*", "op": "read" }]),
        )
        .await;
    for group in ["%00", "a%20b", "..", "x%2Fy"] {
        let reply = v
            .node_call(&n, "GET", &format!("/v1/vaults/{group}/secrets/a"), None)
            .await;
        assert!(reply.0.is_client_error(), "{group}: {reply:?}");
    }
    // The audit chain is intact and still accepts records.
    assert_eq!(
        v.node_call(&n, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await
            .0,
        200
    );
    assert_eq!(
        v.mgmt("GET", "/v1/audit/verify", None).await.1["first_broken"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_revocation_through_one_replica_is_enforced_by_another_within_a_second() {
    let a = vault().await;
    seeded(&a).await;
    let n = a
        .node(
            "n",
            "team",
            "u",
            "list",
            json!([{ "resource": "*", "op": "read" }]),
        )
        .await;
    let b = crate::harness::start(a.db.clone(), a.master.clone()).await;
    assert_eq!(b.unlock_passphrase("team", PASS).await.0, 200);
    assert_eq!(
        b.node_call(&n, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await
            .0,
        200
    );
    a.mgmt(
        "POST",
        "/v1/revocations",
        Some(json!({ "kind": "epoch", "scope": "node", "subject": "n", "reason": "incident" })),
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        let reply = b
            .node_call(&n, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await;
        if code(&reply) == "revoked" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "replica b still serves after 1 s: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A captured token without its node's key: offline attenuation makes endless distinct valid
/// tokens, each of which passes the signature check. None of them may take room in the token
/// cache before its proof of possession verifies (the cache was filled first, up to 100 000
/// entries of several KiB each, then the request was refused).
#[tokio::test]
async fn tokens_without_a_valid_proof_never_enter_the_cache() {
    let v = vault().await;
    seeded(&v).await;
    let n = v
        .node(
            "victim",
            "team",
            "u",
            "read",
            json!([{ "resource": "*", "op": "read" }]),
        )
        .await;
    let raw = TOKEN_B64.decode(&n.token).expect("b64");
    let thief = ed25519_dalek::SigningKey::from_bytes(&random_key());
    let before = v.state.verifier().cached();
    for i in 0..20u64 {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3600
            + i;
        let forged = attenuate_bytes(&raw, &root_keys(&v), None, None, Some(expiry))
            .expect("anyone can attenuate");
        let stolen = Node {
            id: "victim".into(),
            key: thief.clone(),
            token: TOKEN_B64.encode(&forged),
        };
        let reply = v
            .node_call(&stolen, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await;
        assert_eq!(code(&reply), "proof_invalid", "{reply:?}");
    }
    assert_eq!(
        v.state.verifier().cached(),
        before,
        "refused tokens took room in the cache"
    );
    // The node's own requests are cached as before.
    assert_eq!(
        v.node_call(&n, "GET", "/v1/vaults/team/secrets/db/a", None)
            .await
            .0,
        200
    );
    assert_eq!(v.state.verifier().cached().0, before.0 + 1);
}

/// Node identities (issue 23 finding 7): a node asks the vault for a peer's identity and gets
/// it signed by the root key of `GET /v1/tokens/keys`. Another group's nodes, disabled nodes and
/// unknown ids are all `404`, and management's key is not a node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_its_group_peers_identity_signed_by_the_root_key() {
    let v = vault().await;
    let read = json!([{ "resource": "*", "op": "read" }]);
    let a = v.node("a", "team", "u1", "read", read.clone()).await;
    let b = v.node("b", "team", "u2", "read", read.clone()).await;
    let _other = v.node("x", "other", "u3", "read", read.clone()).await;
    let reply = v.node_call(&a, "GET", "/v1/nodes/b/identity", None).await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let attestation: keymesh_core::identity::IdentityAttestation =
        serde_json::from_value(reply.1).expect("attestation");
    let listing = v.mgmt("GET", "/v1/tokens/keys", None).await.1;
    let roots: Vec<[u8; 32]> = listing["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            hex::decode(k["public_key"].as_str().expect("hex"))
                .expect("hex")
                .try_into()
                .expect("32")
        })
        .collect();
    assert_eq!(
        attestation.verify("b", &roots),
        Ok(b.key.verifying_key().to_bytes())
    );
    assert_eq!(attestation.group, "team");
    for missing in ["x", "nobody"] {
        let reply = v
            .node_call(&a, "GET", &format!("/v1/nodes/{missing}/identity"), None)
            .await;
        assert_eq!(
            (reply.0.as_u16(), code(&reply)),
            (404, "not_found"),
            "{missing}"
        );
    }
    let reply = v
        .mgmt(
            "PUT",
            "/v1/nodes/b",
            Some(json!({ "group": "team", "user": "u2", "disabled": true,
                "public_key": hex::encode(b.key.verifying_key().to_bytes()) })),
        )
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let reply = v.node_call(&a, "GET", "/v1/nodes/b/identity", None).await;
    assert_eq!((reply.0.as_u16(), code(&reply)), (404, "not_found"));
    let reply = v.mgmt("GET", "/v1/nodes/a/identity", None).await;
    assert_eq!(reply.0, 401, "{reply:?}");
}

/// Issue 23 finding 1 (the part closed here): with only management's credential, an attacker
/// tries to move the seeding node, which can write every secret, onto a key of its own (and to
/// another group or user), then mints a token for it and reads. Every change of key, group or
/// user is refused and audited as denied; a token minted for the node is still bound to the
/// node's real key, so the attacker's proofs fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_management_credential_cannot_move_a_node_onto_its_key() {
    let v = vault().await;
    let seeder = seeded(&v).await;
    let real = hex::encode(seeder.key.verifying_key().to_bytes());
    let thief = ed25519_dalek::SigningKey::from_bytes(&random_key());
    let stolen = hex::encode(thief.verifying_key().to_bytes());
    for body in [
        json!({ "group": "team", "user": "admin", "ceiling": "share", "public_key": stolen }),
        json!({ "group": "other", "user": "admin", "ceiling": "share", "public_key": real }),
        json!({ "group": "team", "user": "thief", "ceiling": "share", "public_key": real }),
    ] {
        let reply = v.mgmt("PUT", "/v1/nodes/seeder", Some(body.clone())).await;
        assert_eq!(
            (reply.0.as_u16(), code(&reply)),
            (409, "conflict"),
            "{body}: {reply:?}"
        );
    }
    let denied: Vec<(String,)> = keymesh_core::with_pool!(v.state.store.db(), pool =>
        sqlx::query_as("SELECT outcome FROM audit_log WHERE action = 'node.register' AND target = 'node:seeder' AND outcome = 'denied'").fetch_all(pool).await)
    .expect("audit");
    assert_eq!(denied.len(), 3);
    let reply = v
        .mgmt(
            "POST",
            "/v1/tokens",
            Some(json!({ "node_id": "seeder", "rights": [{ "resource": "*", "op": "read" }] })),
        )
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let as_thief = Node {
        id: "seeder".into(),
        key: thief,
        token: reply.1["token"].as_str().expect("token").to_owned(),
    };
    let reply = v
        .node_call(&as_thief, "GET", "/v1/vaults/team/secrets/db/a", None)
        .await;
    assert_eq!(reply.0, 401, "{reply:?}");
    // The node itself, with its own key, reads with that token; its earlier token lives on.
    let reply = v
        .node_call(
            &Node {
                key: seeder.key.clone(),
                ..as_thief
            },
            "GET",
            "/v1/vaults/team/secrets/db/a",
            None,
        )
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let reply = v
        .node_call(
            &seeder,
            "PUT",
            "/v1/vaults/team/secrets/db/a",
            Some(json!({ "value": "still mine" })),
        )
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
}

/// Two first registrations of one id with different keys, at once: exactly one wins, and the
/// other never overwrites it (the key check is in the write itself, not only in the read before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_registrations_of_one_node_never_rebind_it() {
    let v = vault().await;
    for round in 0..10 {
        let id = format!("racer-{round}");
        let keys: Vec<String> = (0..2)
            .map(|_| {
                hex::encode(
                    ed25519_dalek::SigningKey::from_bytes(&random_key())
                        .verifying_key()
                        .to_bytes(),
                )
            })
            .collect();
        let uri = format!("/v1/nodes/{id}");
        let (a, b) = tokio::join!(
            v.mgmt(
                "PUT",
                &uri,
                Some(json!({ "group": "team", "user": "u", "public_key": keys[0] }))
            ),
            v.mgmt(
                "PUT",
                &uri,
                Some(json!({ "group": "team", "user": "u", "public_key": keys[1] }))
            ),
        );
        let mut statuses = [a.0.as_u16(), b.0.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        let winner = if a.0 == 200 { &keys[0] } else { &keys[1] };
        let stored = v.state.store.node(&id).await.expect("read").expect("node");
        assert_eq!(&hex::encode(stored.public_key), winner);
    }
}
