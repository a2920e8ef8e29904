//! Vault lifecycle: init, unlock (passphrase and threshold), secrets, lock, rekey, restart.

use keymesh_core::crypto::HpkeKeyPair;
use serde_json::json;

use crate::harness::{Vault, code, contains, start, vault};

const PASS: &str = "correct horse battery staple";
const MARKER: &str = "SECRET-MARKER-7f3a9c";

async fn writer(v: &Vault, group: &str) -> crate::harness::Node {
    v.node(
        &format!("{group}-writer"),
        group,
        "u1",
        "delete",
        json!([
            { "resource": "*", "op": "read" }, { "resource": "*", "op": "list" },
            { "resource": "*", "op": "write" }, { "resource": "*", "op": "delete" },
        ]),
    )
    .await
}

#[tokio::test]
async fn passphrase_vault_stores_only_ciphertext_and_locks() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let n = writer(&v, "team").await;
    let uri = "/v1/vaults/team/secrets/db/password";
    // A new vault starts locked.
    let reply = v
        .node_call(&n, "PUT", uri, Some(json!({ "value": MARKER })))
        .await;
    assert_eq!(
        (reply.0.as_u16(), code(&reply)),
        (423, "vault_locked"),
        "{reply:?}"
    );

    let wrong = v.unlock_passphrase("team", "wrong passphrase!!").await;
    assert_eq!(
        (wrong.0.as_u16(), code(&wrong)),
        (401, "invalid_passphrase")
    );
    let ok = v.unlock_passphrase("team", PASS).await;
    assert_eq!(ok.0, 200, "{ok:?}");

    let reply = v
        .node_call(
            &n,
            "PUT",
            uri,
            Some(json!({ "value": MARKER, "metadata": { "owner": "db-team" } })),
        )
        .await;
    assert_eq!(
        (reply.0.as_u16(), reply.1["version"].as_i64()),
        (200, Some(1)),
        "{reply:?}"
    );
    let reply = v.node_call(&n, "GET", uri, None).await;
    assert_eq!(reply.1["value"], MARKER, "{reply:?}");
    assert_eq!(reply.1["metadata"]["owner"], "db-team");
    let reply = v
        .node_call(&n, "GET", "/v1/vaults/team/secrets?prefix=db/", None)
        .await;
    assert_eq!(reply.1["secrets"][0]["path"], "db/password", "{reply:?}");

    // The database never holds the value, the metadata, the passphrase or a data key in clear.
    let dump = v.raw_dump().await;
    assert!(
        !contains(&dump, MARKER.as_bytes()),
        "plaintext secret in the database"
    );
    assert!(
        !contains(&dump, b"db-team"),
        "plaintext metadata in the database"
    );
    assert!(
        !contains(&dump, PASS.as_bytes()),
        "passphrase in the database"
    );
    v.state
        .sessions
        .with_key("team", |k| {
            assert!(!contains(&dump, k.expose()), "data key in the database")
        })
        .expect("unlocked");

    let reply = v.mgmt("POST", "/v1/vaults/team/lock", None).await;
    assert_eq!(reply.0, 200);
    let reply = v.node_call(&n, "GET", uri, None).await;
    assert_eq!(code(&reply), "vault_locked");
    let status = v.mgmt("GET", "/v1/vaults/team", None).await;
    assert_eq!(status.1["locked"], true);

    let report = v.mgmt("GET", "/v1/audit/verify", None).await;
    assert_eq!(
        report.1["first_broken"],
        serde_json::Value::Null,
        "{report:?}"
    );
    assert!(report.1["checked"].as_u64().expect("n") >= 6, "{report:?}");
}

#[tokio::test]
async fn wrong_passphrases_are_rate_limited_per_group() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let mut codes = Vec::new();
    for _ in 0..crate::harness::UNLOCK_ATTEMPTS + 2 {
        codes.push(code(&v.unlock_passphrase("team", "not the passphrase").await).to_owned());
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "invalid_passphrase").count(),
        crate::harness::UNLOCK_ATTEMPTS,
        "{codes:?}"
    );
    assert_eq!(
        codes.last().map(String::as_str),
        Some("rate_limited"),
        "{codes:?}"
    );
}

#[tokio::test]
async fn threshold_unlock_needs_t_distinct_members() {
    let v = vault().await;
    let admins: Vec<(String, HpkeKeyPair)> = (1..=3)
        .map(|i| (format!("admin{i}"), HpkeKeyPair::generate()))
        .collect();
    let c = v.ceremony("ops", "init").await;
    let holders: Vec<_> = admins
        .iter()
        .map(|(id, k)| json!({ "admin_id": id, "public_key": hex::encode(k.public) }))
        .collect();
    let id = c["ceremony_id"].as_str().expect("id");
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/v1/ceremonies/{id}/init"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({ "mode": "shamir", "threshold": 2, "holders": holders }).to_string(),
        ))
        .expect("req");
    let reply = v.send(req).await;
    assert_eq!(reply.0, 200, "{reply:?}");

    let c = v.ceremony("ops", "unlock").await;
    // An outsider, and a share forged with the wrong key for a real member, are refused.
    let outsider = v
        .submit_share(&c, "ops", "mallory", &HpkeKeyPair::generate())
        .await;
    assert_eq!(
        (outsider.0.as_u16(), code(&outsider)),
        (403, "invalid_share")
    );
    let forged = v
        .submit_share(&c, "ops", "admin2", &HpkeKeyPair::generate())
        .await;
    assert_eq!(code(&forged), "invalid_share", "{forged:?}");
    // t-1 shares do not unlock; the same share twice counts once.
    let first = v.submit_share(&c, "ops", "admin1", &admins[0].1).await;
    assert_eq!(
        (first.1["accepted"].as_u64(), first.1["unlocked"].as_bool()),
        (Some(1), Some(false)),
        "{first:?}"
    );
    let again = v.submit_share(&c, "ops", "admin1", &admins[0].1).await;
    assert_eq!(
        (again.1["accepted"].as_u64(), again.1["unlocked"].as_bool()),
        (Some(1), Some(false)),
        "{again:?}"
    );
    assert!(v.state.sessions.status("ops").is_none());
    // The t-th distinct member unlocks.
    let second = v.submit_share(&c, "ops", "admin3", &admins[2].1).await;
    assert_eq!(second.1["unlocked"], true, "{second:?}");
    assert!(v.state.sessions.status("ops").is_some());
    // No share and no data key is ever stored in the clear.
    let dump = v.raw_dump().await;
    v.state
        .sessions
        .with_key("ops", |k| assert!(!contains(&dump, k.expose())))
        .expect("unlocked");
    for (admin_id, key) in &admins {
        let share = crate::harness::own_share(&c, "ops", admin_id, key);
        assert!(
            !contains(&dump, &share[1..]),
            "{admin_id}'s share is in the database"
        );
    }
    // Re-sharing needs the current shares in the rekey ceremony, not just the credential.
    let rekey = v.ceremony("ops", "rekey").await;
    let id = rekey["ceremony_id"].as_str().expect("id").to_owned();
    let try_rekey = || async {
        let public = crate::harness::ceremony_key(&rekey);
        let sealed = keymesh_core::crypto::hpke_seal(
            &public,
            keymesh_vault::routes::vaults::INFO_PASSPHRASE,
            b"ops",
            b"a passphrase now, not shares",
        )
        .expect("seal");
        let body = json!({ "mode": "passphrase", "sealed_passphrase": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sealed) });
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("/v1/ceremonies/{id}/rekey"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("req");
        v.send(req).await
    };
    assert_eq!(code(&try_rekey().await), "invalid_share");
    v.submit_share(&rekey, "ops", "admin2", &admins[1].1).await;
    let proof = v.submit_share(&rekey, "ops", "admin3", &admins[2].1).await;
    assert_eq!(proof.1["proven"], true, "{proof:?}");
    assert_eq!(try_rekey().await.0, 200);
    v.mgmt("POST", "/v1/vaults/ops/lock", None).await;
    assert_eq!(
        v.unlock_passphrase("ops", "a passphrase now, not shares")
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn rekey_needs_the_current_passphrase_and_keeps_secrets() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let n = writer(&v, "team").await;
    assert_eq!(v.unlock_passphrase("team", PASS).await.0, 200);
    v.node_call(
        &n,
        "PUT",
        "/v1/vaults/team/secrets/app/key",
        Some(json!({ "value": "v1" })),
    )
    .await;
    // The management credential alone (opening the ceremony) is not enough.
    assert_eq!(
        code(
            &v.rekey_passphrase("team", None, "an entirely new passphrase")
                .await
        ),
        "invalid_passphrase"
    );
    assert_eq!(
        code(
            &v.rekey_passphrase(
                "team",
                Some("not the passphrase"),
                "an entirely new passphrase"
            )
            .await
        ),
        "invalid_passphrase"
    );
    let reply = v
        .rekey_passphrase("team", Some(PASS), "an entirely new passphrase")
        .await;
    assert_eq!(reply.0, 200, "{reply:?}");
    v.mgmt("POST", "/v1/vaults/team/lock", None).await;
    assert_eq!(
        code(&v.unlock_passphrase("team", PASS).await),
        "invalid_passphrase"
    );
    assert_eq!(
        v.unlock_passphrase("team", "an entirely new passphrase")
            .await
            .0,
        200
    );
    assert_eq!(
        v.node_call(&n, "GET", "/v1/vaults/team/secrets/app/key", None)
            .await
            .1["value"],
        "v1"
    );
}

#[tokio::test]
async fn a_restarted_vault_is_locked_but_tokens_and_revocations_survive() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let n = writer(&v, "team").await;
    let doomed = v
        .node(
            "doomed",
            "team",
            "u2",
            "list",
            json!([{ "resource": "*", "op": "read" }]),
        )
        .await;
    let grant = crate::tokens::grant_of(&v, &doomed);
    assert_eq!(
        v.mgmt(
            "POST",
            "/v1/revocations",
            Some(json!({ "kind": "grant", "grant": grant, "reason": "test" }))
        )
        .await
        .0,
        200
    );
    assert_eq!(v.unlock_passphrase("team", PASS).await.0, 200);
    v.node_call(
        &n,
        "PUT",
        "/v1/vaults/team/secrets/x",
        Some(json!({ "value": "kept" })),
    )
    .await;

    v.state.ctx.shutdown.cancel();
    let (db, master) = (v.db, v.master);
    let v2 = start(db, master).await;
    assert_eq!(
        code(
            &v2.node_call(&n, "GET", "/v1/vaults/team/secrets/x", None)
                .await
        ),
        "vault_locked"
    );
    assert_eq!(v2.unlock_passphrase("team", PASS).await.0, 200);
    assert_eq!(
        v2.node_call(&n, "GET", "/v1/vaults/team/secrets/x", None)
            .await
            .1["value"],
        "kept"
    );
    assert_eq!(
        code(
            &v2.node_call(&doomed, "GET", "/v1/vaults/team/secrets/x", None)
                .await
        ),
        "revoked"
    );
}

#[tokio::test]
async fn bad_paths_and_sizes_are_refused_with_codes() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let n = writer(&v, "team").await;
    assert_eq!(v.unlock_passphrase("team", PASS).await.0, 200);
    for bad in [
        "../etc/passwd",
        "a/../b",
        "a//b",
        "a/%2e%2e/b",
        "a/b%00",
        "a/./b",
    ] {
        let reply = v
            .node_call(&n, "GET", &format!("/v1/vaults/team/secrets/{bad}"), None)
            .await;
        assert!(
            matches!(reply.0.as_u16(), 400 | 404 | 422),
            "{bad}: {reply:?}"
        );
        assert!(
            !code(&reply).is_empty(),
            "{bad}: coded error expected, got {reply:?}"
        );
    }
    let big = "x".repeat(65_537);
    let reply = v
        .node_call(
            &n,
            "PUT",
            "/v1/vaults/team/secrets/big",
            Some(json!({ "value": big })),
        )
        .await;
    assert_eq!(code(&reply), "payload_too_large");
    let reply = v
        .node_call(
            &n,
            "PUT",
            "/v1/vaults/team/secrets/ok",
            Some(json!({ "value": "v", "metadata": { "m": "y".repeat(5000) } })),
        )
        .await;
    assert_eq!(code(&reply), "payload_too_large");
    let reply = v
        .node_call(
            &n,
            "PUT",
            "/v1/vaults/team/secrets/ok",
            Some(json!({ "nope": 1 })),
        )
        .await;
    assert_eq!(code(&reply), "malformed_request");
    // Another group's vault is out of reach whatever the token's patterns say.
    v.init_passphrase("other", PASS).await;
    let reply = v
        .node_call(&n, "GET", "/v1/vaults/other/secrets/x", None)
        .await;
    assert_eq!(code(&reply), "forbidden");
}

#[tokio::test]
async fn no_audit_record_no_secret() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let n = writer(&v, "team").await;
    assert_eq!(v.unlock_passphrase("team", PASS).await.0, 200);
    let uri = "/v1/vaults/team/secrets/db/password";
    v.node_call(&n, "PUT", uri, Some(json!({ "value": MARKER })))
        .await;
    assert_eq!(v.node_call(&n, "GET", uri, None).await.1["value"], MARKER);
    // The database goes away: the audit record cannot be written, so the value must not leave.
    v.state.store.db().close().await;
    let reply = v.node_call(&n, "GET", uri, None).await;
    assert!(reply.0.is_server_error(), "{reply:?}");
    assert!(
        !reply.1.to_string().contains(MARKER),
        "secret served without an audit record"
    );
    if matches!(v.state.store.db(), keymesh_core::storage::Db::Sqlite(_)) {
        // The sealed row came from the cache; the audit append is what failed.
        assert_eq!(code(&reply), "audit_unavailable", "{reply:?}");
    }
}

#[tokio::test]
async fn the_relay_namespace_is_not_a_secret_path() {
    let v = vault().await;
    v.init_passphrase("team", PASS).await;
    let n = writer(&v, "team").await;
    assert_eq!(v.unlock_passphrase("team", PASS).await.0, 200);
    for path in ["relay", "relay/node-b", "relay/x/y"] {
        let reply = v
            .node_call(
                &n,
                "PUT",
                &format!("/v1/vaults/team/secrets/{path}"),
                Some(json!({ "value": "v" })),
            )
            .await;
        assert_eq!(
            (reply.0.as_u16(), code(&reply)),
            (422, "invalid_request"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn ceremony_steps_need_the_management_credential_not_just_the_ceremony_id() {
    let v = vault().await;
    let c = v.ceremony("ops", "init").await;
    let id = c["ceremony_id"].as_str().expect("id");
    let holders = [
        json!({ "admin_id": "a", "public_key": hex::encode(HpkeKeyPair::generate().public) }),
        json!({ "admin_id": "b", "public_key": hex::encode(HpkeKeyPair::generate().public) }),
    ];
    let body = json!({ "mode": "shamir", "threshold": 2, "holders": holders }).to_string();
    for (step, credential) in [
        ("init", "Bearer not-the-key"),
        ("shares", "Bearer x"),
        ("passphrase", "Basic eA=="),
    ] {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("/v1/ceremonies/{id}/{step}"))
            .header("content-type", "application/json")
            .header("authorization", credential)
            .body(axum::body::Body::from(body.clone()))
            .expect("req");
        let reply = v.send(req).await;
        assert_eq!(
            (reply.0.as_u16(), code(&reply)),
            (401, "unauthorized"),
            "{step}: {reply:?}"
        );
    }
    // The ceremony is still open for management.
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/v1/ceremonies/{id}/init"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .expect("req");
    assert_eq!(v.send(req).await.0, 200);
}
