//! The audit API: search, verify, and an export that needs an approval and runs once.

use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::harness::{expect, management_with_vault};

#[tokio::test]
async fn auditors_search_and_verify_and_export_once_after_an_approval() {
    let m = management_with_vault().await;
    let (admin_id, admin) = m.signed_in("admin").await;
    let (_, auditor) = m.signed_in("auditor").await;
    let (_, member) = m.signed_in("member").await;
    for id in ["a1", "a2", "a3"] {
        let reply = m
            .bearer(&admin, "POST", "/v1/groups", Some(json!({ "id": id })))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }

    expect(
        &m.bearer(&member, "GET", "/v1/audit", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let uri = format!("/v1/audit?actor=user:{admin_id}&action=group.create&limit=2");
    let page = m.bearer(&auditor, "GET", &uri, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let records = page.body["records"].as_array().expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["target"], "group:a1");
    assert_eq!(
        records[0]["details"]["node_ceiling"], "list",
        "details are JSON"
    );
    let next = page.body["next_after_seq"].as_i64().expect("a next page");
    let rest = m
        .bearer(&auditor, "GET", &format!("{uri}&after_seq={next}"), None)
        .await;
    assert_eq!(
        rest.body["records"][0]["target"], "group:a3",
        "{}",
        rest.body
    );
    assert!(rest.body["next_after_seq"].is_null());
    for bad in ["/v1/audit?limit=0", "/v1/audit?outcome=maybe"] {
        expect(
            &m.bearer(&auditor, "GET", bad, None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    expect(
        &m.bearer(&auditor, "GET", "/v1/audit?colour=red", None)
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    let report = m.bearer(&auditor, "GET", "/v1/audit/verify", None).await;
    assert_eq!(report.status, StatusCode::OK);
    assert!(report.body["first_broken"].is_null(), "{}", report.body);
    assert!(report.body["checked"].as_u64().unwrap_or(0) > 3);

    // Export: requested, approved by an admin (the requester cannot), executed once.
    let reply = m
        .bearer(
            &auditor,
            "POST",
            "/v1/approvals",
            Some(
                json!({ "operation": "audit.export", "reason": "quarterly review",
                "filters": { "action": "group.create" } }),
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let export = format!("/v1/approvals/{id}/export");
    expect(
        &m.bearer(&auditor, "POST", &export, None).await,
        StatusCode::CONFLICT,
        "approval_pending",
    );
    let reply = m
        .bearer(
            &admin,
            "POST",
            &format!("/v1/approvals/{id}/decisions"),
            Some(json!({ "decision": "approve", "reason": "scheduled" })),
        )
        .await;
    assert_eq!(
        reply.body["approval"]["status"], "approved",
        "{}",
        reply.body
    );
    // Only the requester exports it.
    expect(
        &m.bearer(&admin, "POST", &export, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let request = Request::builder()
        .method("POST")
        .uri(&export)
        .header(header::AUTHORIZATION, format!("Bearer {auditor}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = m.raw(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let lines: Vec<Value> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["action"] == "group.create"));
    expect(
        &m.bearer(&auditor, "POST", &export, None).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );
    let audited = m
        .bearer(&auditor, "GET", "/v1/audit?action=audit.export", None)
        .await;
    assert_eq!(
        audited.body["records"].as_array().map(Vec::len),
        Some(1),
        "{}",
        audited.body
    );
}

#[tokio::test]
async fn signed_checkpoints_catch_a_rewrite_that_recomputes_the_chain() {
    let m = management_with_vault().await;
    let (_, admin) = m.signed_in("admin").await;
    for id in ["c1", "c2"] {
        m.bearer(&admin, "POST", "/v1/groups", Some(json!({ "id": id })))
            .await;
    }
    assert!(m.state.checkpoint().await);
    let listed = m.bearer(&admin, "GET", "/v1/audit/checkpoints", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let cp = &listed.body["checkpoints"][0];
    let head = cp["seq"].as_i64().expect("a checkpoint");
    assert_eq!(cp["key_id"], listed.body["key_id"]);
    let report = m.bearer(&admin, "GET", "/v1/audit/verify", None).await;
    assert_eq!(report.body["checkpoints"]["checked"], 1, "{}", report.body);
    assert!(report.body["checkpoints"]["first_bad"].is_null());

    // A checkpoint re-signed with any other key does not verify.
    let db = m.state.store.db();
    let genuine: String = keymesh_core::with_pool!(db, pool => sqlx::query_scalar(
        "SELECT signature FROM audit_checkpoints WHERE seq = $1").bind(head).fetch_one(pool).await)
    .expect("signature");
    let forged = hex::encode([7u8; 64]);
    for signature in [&forged, &genuine] {
        keymesh_core::with_pool!(db, pool => sqlx::query(
            "UPDATE audit_checkpoints SET signature = $1 WHERE seq = $2")
            .bind(signature).bind(head).execute(pool).await.map(drop))
        .expect("set signature");
        let report = m.bearer(&admin, "GET", "/v1/audit/verify", None).await;
        if signature == &forged {
            assert_eq!(
                report.body["checkpoints"]["first_bad"], head,
                "{}",
                report.body
            );
            assert!(
                report.body["checkpoints"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("signature does not verify")),
                "{}",
                report.body
            );
        } else {
            assert!(
                report.body["checkpoints"]["first_bad"].is_null(),
                "{}",
                report.body
            );
        }
    }

    // Rewrite one record's details and recompute every hash from there on, as someone with
    // write access to the database (but not MANAGEMENT_SECRET_KEY) could.
    let target: i64 = keymesh_core::with_pool!(db, pool => sqlx::query_scalar(
        "SELECT seq FROM audit_log WHERE action = 'group.create' ORDER BY seq LIMIT 1").fetch_one(pool).await)
    .expect("record");
    let records: Vec<keymesh_core::audit::AuditRecord> = keymesh_core::with_pool!(db, pool => sqlx::query_as(
        "SELECT seq, at_ms, actor, action, target, outcome, details, prev_hash, hash FROM audit_log WHERE seq >= $1 ORDER BY seq")
        .bind(target - 1).fetch_all(pool).await)
    .expect("records");
    let mut prev = records[0].hash.clone();
    for mut r in records.into_iter().skip(1) {
        if r.seq == target {
            r.details = r#"{"node_ceiling":"share"}"#.to_owned();
        }
        r.prev_hash = prev.clone();
        r.hash = keymesh_core::audit::record_hash(&r);
        keymesh_core::with_pool!(db, pool => sqlx::query(
            "UPDATE audit_log SET details = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&r.details).bind(&r.prev_hash).bind(&r.hash).bind(r.seq).execute(pool).await.map(drop))
        .expect("rewrite");
        prev = r.hash;
    }
    keymesh_core::with_pool!(db, pool => sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev).execute(pool).await.map(drop))
    .expect("head");
    let report = m.bearer(&admin, "GET", "/v1/audit/verify", None).await;
    assert!(
        report.body["first_broken"].is_null(),
        "the chain itself was recomputed: {}",
        report.body
    );
    assert_eq!(
        report.body["checkpoints"]["first_bad"], head,
        "{}",
        report.body
    );
    assert!(
        report.body["checkpoints"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer has the signed hash")),
        "{}",
        report.body
    );
}

#[tokio::test]
async fn the_vaults_events_reach_the_central_log_once_and_in_order() {
    let m = management_with_vault().await;
    let (_, admin) = m.signed_in("admin").await;
    m.enroll(&admin, "v1", "vn1", json!({})).await;
    let copied = keymesh_management::imports::import(&m.state, "vault", &m.state.vault)
        .await
        .expect("import");
    assert!(
        copied >= 2,
        "node.register and token.mint at least: {copied}"
    );
    assert_eq!(
        keymesh_management::imports::import(&m.state, "vault", &m.state.vault)
            .await
            .expect("import again"),
        0,
        "nothing is copied twice"
    );
    let mints = m
        .bearer(&admin, "GET", "/v1/audit?action=token.mint", None)
        .await;
    let record = &mints.body["records"][0];
    assert_eq!(record["details"]["service"], "vault", "{}", mints.body);
    assert_eq!(record["target"], "node:vn1");
    assert!(record["details"]["hash"].is_string());
    let seqs: Vec<i64> = m
        .bearer(&admin, "GET", "/v1/audit?limit=1000", None)
        .await
        .body["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["details"]["service"] == "vault")
        .map(|r| r["details"]["seq"].as_i64().expect("vault seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "in the vault's order"
    );
    let report = keymesh_core::audit::verify(m.state.store.db())
        .await
        .expect("verify");
    assert!(report.first_broken.is_none(), "{report:?}");
}
