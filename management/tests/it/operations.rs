//! The operations behind approvals that act on their own: a threshold vault unlock
//! (management counts approvals and relays sealed shares), emergency access (a temporary role)
//! and disabling token approvals for a group. Against a real vault on loopback.

use base64::{Engine, engine::general_purpose::STANDARD};
use http::StatusCode;
use keymesh_core::crypto::{self, HpkeKeyPair};
use keymesh_vault::routes::vaults::{INFO_SHARE, INFO_UNLOCK_SHARE, share_aad};
use serde_json::{Value, json};

use crate::harness::{
    Management, Person, Reply, expect, management_with_vault, management_with_vault_and,
};

async fn request(m: &Management, who: &Person, body: Value) -> Reply {
    m.bearer(&who.token, "POST", "/v1/approvals", Some(body))
        .await
}

/// A pending request's id.
async fn requested(m: &Management, who: &Person, body: Value) -> String {
    let reply = request(m, who, body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    reply.body["approval"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn approve(m: &Management, who: &Person, id: &str) -> Reply {
    m.bearer(
        &who.token,
        "POST",
        &format!("/v1/approvals/{id}/decisions"),
        Some(json!({ "decision": "approve", "reason": "confirmed on the incident call" })),
    )
    .await
}

async fn execute(m: &Management, who: &Person, id: &str) -> Reply {
    m.bearer(
        &who.token,
        "POST",
        &format!("/v1/approvals/{id}/execute"),
        None,
    )
    .await
}

/// Register a fresh share key for `who`.
async fn share_key(m: &Management, who: &Person) -> HpkeKeyPair {
    let key = HpkeKeyPair::generate();
    let reply = m
        .bearer(
            &who.token,
            "PUT",
            "/v1/me/share-key",
            Some(json!({ "public_key": hex::encode(key.public) })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    key
}

/// `who` opens their own sealed share of `ceremony` and submits it sealed to the ceremony key.
async fn submit_share(m: &Management, who: &Person, key: &HpkeKeyPair, ceremony: &Value) -> Reply {
    let id = ceremony["ceremony"]["id"].as_str().expect("ceremony id");
    let aad = share_aad("g", &who.id);
    let share = ceremony["shares"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["sealed_share"].as_str())
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|sealed| crypto::hpke_open(key, INFO_SHARE, &aad, &sealed).ok())
        .map_or_else(|| vec![7u8; 33], |s| s.to_vec());
    let ceremony_key: [u8; 32] =
        hex::decode(ceremony["ceremony"]["public_key"].as_str().expect("key"))
            .expect("hex")
            .try_into()
            .expect("32 bytes");
    let sealed =
        crypto::hpke_seal_auth(key, &ceremony_key, INFO_UNLOCK_SHARE, &aad, &share).expect("seal");
    m.bearer(
        &who.token,
        "POST",
        &format!("/v1/ceremonies/{id}/shares"),
        Some(json!({ "sealed_share": STANDARD.encode(sealed) })),
    )
    .await
}

#[tokio::test]
async fn a_shamir_vault_is_created_then_unlocked_only_after_an_approval_with_shares_relayed_sealed()
{
    let m = management_with_vault().await;
    let (a1, a2, outsider) = (
        m.person("admin").await,
        m.person("admin").await,
        m.person("admin").await,
    );
    let (k1, k2, k3) = (
        share_key(&m, &a1).await,
        share_key(&m, &a2).await,
        share_key(&m, &outsider).await,
    );
    let reply = m
        .bearer(&a1.token, "POST", "/v1/groups", Some(json!({ "id": "g" })))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    // Init: a 2-of-2 share set held by a1 and a2 (their registered keys).
    let reply = m
        .bearer(
            &a1.token,
            "POST",
            "/v1/groups/g/vault/ceremonies",
            Some(json!({ "kind": "init" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let init = reply.body["ceremony"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let reply = m
        .bearer(
            &a1.token,
            "POST",
            &format!("/v1/ceremonies/{init}/init"),
            Some(json!({ "mode": "shamir", "threshold": 2, "holders": ["nobody"] })),
        )
        .await;
    expect(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let reply = m
        .bearer(
            &a1.token,
            "POST",
            &format!("/v1/ceremonies/{init}/init"),
            Some(json!({ "mode": "shamir", "threshold": 2, "holders": [a1.id, a2.id] })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["locked"], true);

    // No unlock ceremony without an approval.
    let reply = m
        .bearer(
            &a1.token,
            "POST",
            "/v1/groups/g/vault/ceremonies",
            Some(json!({ "kind": "unlock" })),
        )
        .await;
    expect(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    let id = requested(
        &m,
        &a1,
        json!({ "operation": "vault.unlock", "group": "g", "reason": "deploy needs the db password" }),
    )
    .await;
    expect(
        &approve(&m, &a1, &id).await,
        StatusCode::FORBIDDEN,
        "self_approval",
    );
    expect(
        &execute(&m, &a1, &id).await,
        StatusCode::CONFLICT,
        "approval_pending",
    );
    assert_eq!(approve(&m, &a2, &id).await.status, StatusCode::OK);
    // Only the requester executes it, once.
    expect(
        &execute(&m, &a2, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let reply = execute(&m, &a1, &id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["approval"]["status"], "executed");
    let ceremony = reply.body.clone();
    let ceremony_id = ceremony["ceremony"]["id"].as_str().expect("id").to_owned();
    assert_eq!(ceremony["threshold"], 2);
    assert_eq!(ceremony["holders"].as_array().map(Vec::len), Some(2));
    // Each party sees only their own sealed share.
    assert_eq!(ceremony["shares"].as_array().map(Vec::len), Some(1));
    assert_eq!(ceremony["shares"][0]["admin_id"], a1.id.as_str());
    expect(
        &execute(&m, &a1, &id).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );

    // The other holder finds the ceremony from the request (what the admin app reads).
    let shown = m
        .bearer(&a2.token, "GET", &format!("/v1/approvals/{id}"), None)
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.body["ceremony"], ceremony_id.as_str());

    let reply = submit_share(&m, &a1, &k1, &ceremony).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["unlocked"], false);
    // An admin outside the share set cannot count: the vault refuses what does not open.
    let theirs = m
        .bearer(
            &outsider.token,
            "GET",
            &format!("/v1/ceremonies/{ceremony_id}"),
            None,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert_eq!(theirs.body["shares"].as_array().map(Vec::len), Some(0));
    expect(
        &submit_share(&m, &outsider, &k3, &theirs.body).await,
        StatusCode::FORBIDDEN,
        "invalid_share",
    );
    // Without vault:unlock nobody takes part.
    let (_, auditor) = m.signed_in("auditor").await;
    let reply = m
        .bearer(
            &auditor,
            "GET",
            &format!("/v1/ceremonies/{ceremony_id}"),
            None,
        )
        .await;
    expect(&reply, StatusCode::FORBIDDEN, "forbidden");

    let second = m
        .bearer(
            &a2.token,
            "GET",
            &format!("/v1/ceremonies/{ceremony_id}"),
            None,
        )
        .await;
    assert_eq!(second.body["shares"][0]["admin_id"], a2.id.as_str());
    let reply = submit_share(&m, &a2, &k2, &second.body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["unlocked"], true);

    let status = m.bearer(&a1.token, "GET", "/v1/groups/g/vault", None).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["locked"], false, "{}", status.body);
    // The ceremony is over.
    let reply = m
        .bearer(
            &a2.token,
            "GET",
            &format!("/v1/ceremonies/{ceremony_id}"),
            None,
        )
        .await;
    expect(&reply, StatusCode::NOT_FOUND, "not_found");

    // Management's log records the steps, never sealed material, and the vault's ceremony ids
    // (what the vault would accept steps for) never leave management.
    let details: Vec<(String, String)> = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT action, details FROM audit_log").fetch_all(pool).await)
    .expect("audit");
    assert!(details.iter().any(|(a, _)| a == "vault.ceremony.submit"));
    let vault_ids: Vec<(String,)> = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT vault_id FROM vault_ceremonies").fetch_all(pool).await)
    .expect("ceremonies");
    assert_eq!(vault_ids.len(), 2);
    let sealed_share = ceremony["shares"][0]["sealed_share"]
        .as_str()
        .expect("share");
    for (_, d) in &details {
        assert!(!d.contains("sealed") && !d.contains(sealed_share), "{d}");
        for (vault_id,) in &vault_ids {
            assert!(!d.contains(vault_id.as_str()), "{d}");
        }
    }
    for (vault_id,) in &vault_ids {
        assert!(!ceremony.to_string().contains(vault_id.as_str()));
        assert!(!second.body.to_string().contains(vault_id.as_str()));
    }
}

#[tokio::test]
async fn emergency_access_is_a_temporary_role_that_neither_requester_nor_beneficiary_decides() {
    let m = management_with_vault().await;
    let (requester, reviewer) = (m.person("admin").await, m.person("admin").await);
    let responder = m.person("responder").await;
    let invite = |who: &Person| {
        let token = who.token.clone();
        let m = &m;
        async move {
            m.bearer(
                &token,
                "POST",
                "/v1/users",
                Some(json!({ "email": crate::harness::address("new"), "role": "admin" })),
            )
            .await
        }
    };
    let new_group = |who: &Person, id: &'static str| {
        let token = who.token.clone();
        let m = &m;
        async move {
            m.bearer(&token, "POST", "/v1/groups", Some(json!({ "id": id })))
                .await
        }
    };
    expect(
        &new_group(&responder, "before").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // Too long, unknown role, unknown user; a member cannot ask.
    for body in [
        json!({ "operation": "emergency.access", "user_id": responder.id, "role": "admin", "duration_secs": 14_401, "reason": "x" }),
        json!({ "operation": "emergency.access", "user_id": responder.id, "role": "root", "reason": "x" }),
        json!({ "operation": "emergency.access", "user_id": "nobody", "role": "admin", "reason": "x" }),
    ] {
        let reply = request(&m, &requester, body).await;
        assert!(reply.status.is_client_error(), "{}", reply.body);
    }
    let member = m.person("member").await;
    let reply = request(
        &m,
        &member,
        json!({ "operation": "emergency.access", "role": "admin", "reason": "let me in" }),
    )
    .await;
    expect(&reply, StatusCode::FORBIDDEN, "forbidden");

    let id = requested(
        &m,
        &requester,
        json!({
            "operation": "emergency.access", "user_id": responder.id, "role": "admin",
            "duration_secs": 600, "reason": "on-call responder must manage users during the outage",
        }),
    )
    .await;
    // An admin beneficiary of another request may not decide their own grant either.
    let other = requested(
        &m,
        &requester,
        json!({ "operation": "emergency.access", "user_id": reviewer.id, "role": "auditor", "reason": "audit drill" }),
    )
    .await;
    expect(
        &approve(&m, &reviewer, &other).await,
        StatusCode::FORBIDDEN,
        "self_approval",
    );

    assert_eq!(approve(&m, &reviewer, &id).await.status, StatusCode::OK);
    let reply = execute(&m, &requester, &id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let grant = reply.body["grant"]["id"]
        .as_str()
        .expect("grant")
        .to_owned();
    // Someone without tokens:revoke or emergency:access cannot end it.
    let bystander = m.person("auditor").await;
    let reply = m
        .bearer(
            &bystander.token,
            "POST",
            &format!("/v1/emergency-grants/{grant}/end"),
            None,
        )
        .await;
    expect(&reply, StatusCode::FORBIDDEN, "forbidden");
    expect(
        &execute(&m, &requester, &id).await,
        StatusCode::CONFLICT,
        "approval_decided",
    );

    let session = m.bearer(&responder.token, "GET", "/v1/session", None).await;
    assert_eq!(
        session.body["emergency"]["role"], "admin",
        "{}",
        session.body
    );
    let actions = session.body["actions"].as_array().expect("actions").clone();
    assert!(actions.iter().any(|x| x == "groups:manage"), "{actions:?}");
    // A grant never confers what would let it outlive itself or decide what it bypasses.
    for never in ["users:manage", "approvals:decide", "emergency:access"] {
        assert!(!actions.iter().any(|x| x == never), "{never}: {actions:?}");
    }
    assert_eq!(
        new_group(&responder, "during").await.status,
        StatusCode::CREATED
    );
    expect(
        &invite(&responder).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let third = requested(
        &m,
        &requester,
        json!({ "operation": "user.delete", "user_id": reviewer.id, "reason": "x" }),
    )
    .await;
    expect(
        &approve(&m, &responder, &third).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // The beneficiary ends it early; the extra role is gone at once.
    let reply = m
        .bearer(
            &responder.token,
            "POST",
            &format!("/v1/emergency-grants/{grant}/end"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    expect(
        &new_group(&responder, "after").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let reply = m
        .bearer(&reviewer.token, "GET", "/v1/emergency-grants", None)
        .await;
    assert_eq!(reply.body["grants"][0]["active"], false, "{}", reply.body);
    assert_eq!(
        reply.body["grants"][0]["ended_by"],
        format!("user:{}", responder.id)
    );
}

#[tokio::test]
async fn disabling_token_approvals_for_a_group_needs_an_approval_and_is_undone_without_one() {
    let m = management_with_vault().await;
    let owner = m.person("admin").await;
    let reviewer = m.person("admin").await;
    let node = m.enroll(&owner.token, "g", "n1", json!({})).await;
    m.wait_following().await;
    let ask = || {
        m.node_call(
            &node,
            "POST",
            "/v1/token-requests",
            Some(json!({
                "rights": [{ "resource": "db/password", "op": "write" }],
                "reason": "rotate the database password",
            })),
        )
    };
    assert_eq!(ask().await.status, StatusCode::ACCEPTED);

    let reply = request(
        &m,
        &owner,
        json!({ "operation": "group.approvals.disable", "group": "g", "duration_secs": 604_801, "reason": "x" }),
    )
    .await;
    expect(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let id = requested(
        &m,
        &owner,
        json!({
            "operation": "group.approvals.disable", "group": "g", "duration_secs": 600,
            "reason": "load test environment: tokens are minted without review for ten minutes",
        }),
    )
    .await;
    assert_eq!(approve(&m, &reviewer, &id).await.status, StatusCode::OK);
    let reply = execute(&m, &owner, &id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Above the ceiling, minted at once, recorded as approved by the waiver.
    let reply = ask().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body["token"].is_string(), "{}", reply.body);
    assert_eq!(reply.body["approval"]["status"], "executed");
    let waived = reply.body["approval"]["id"].as_str().expect("id");
    let shown = m
        .bearer(
            &reviewer.token,
            "GET",
            &format!("/v1/approvals/{waived}"),
            None,
        )
        .await;
    assert_eq!(
        shown.body["decisions"][0]["reviewer"],
        format!("waiver:{id}"),
        "{}",
        shown.body
    );
    // Other operations still need reviewers.
    let reply = request(
        &m,
        &owner,
        json!({ "operation": "vault.unlock", "group": "g", "reason": "still reviewed" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    // Turning approvals back on needs no approval and holds at once.
    let reply = m
        .bearer(&owner.token, "POST", "/v1/groups/g/approvals/enable", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(ask().await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_grant_and_spares_the_last_admin() {
    let m = management_with_vault().await;
    let admin = m.person("admin").await;
    let member = m.person("member").await;
    let call = |who: &Person, path: String| {
        let token = who.token.clone();
        let m = &m;
        async move {
            m.bearer(
                &token,
                "POST",
                &path,
                Some(json!({ "reason": "laptop reported stolen" })),
            )
            .await
        }
    };
    // The only admin cannot lock everyone out.
    expect(
        &call(&admin, format!("/v1/users/{}/disable", admin.id)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    expect(
        &call(&member, format!("/v1/users/{}/disable", admin.id)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let reply = call(&admin, format!("/v1/users/{}/disable", member.id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["sessions_ended"], 1, "{}", reply.body);
    let session = m.bearer(&member.token, "GET", "/v1/session", None).await;
    expect(&session, StatusCode::UNAUTHORIZED, "unauthorized");
    expect(
        &call(&admin, format!("/v1/users/{}/disable", member.id)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let reply = call(&admin, format!("/v1/users/{}/enable", member.id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["disabled"], false);
    expect(
        &call(&admin, format!("/v1/users/{}/enable", member.id)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn share_keys_are_checked_announced_and_replaced_only_after_a_recent_sign_in() {
    let m = management_with_vault_and(&[("MANAGEMENT_REAUTH_SECS", "1")]).await;
    let member = m.person("member").await;
    share_key(&m, &member).await;
    // The holder is told each time their key is set.
    let mail = m.smtp.wait_mail(&member.email, 2).await;
    assert!(mail.contains("share key"), "{mail}");
    for bad in ["zz", "00", &"00".repeat(32)] {
        let reply = m
            .bearer(
                &member.token,
                "PUT",
                "/v1/me/share-key",
                Some(json!({ "public_key": bad })),
            )
            .await;
        expect(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = m
        .bearer(
            &member.token,
            "PUT",
            "/v1/me/share-key",
            Some(json!({ "public_key": hex::encode(HpkeKeyPair::generate().public) })),
        )
        .await;
    expect(
        &reply,
        StatusCode::UNAUTHORIZED,
        "reauthentication_required",
    );
}

#[tokio::test]
async fn shamir_holders_must_be_in_the_group() {
    let m = management_with_vault().await;
    let admin = m.person("admin").await;
    let member = m.person("member").await;
    share_key(&m, &admin).await;
    share_key(&m, &member).await;
    // A member of another group (or of none) cannot hold a share of this group's vault.
    let reply = m
        .bearer(
            &admin.token,
            "POST",
            "/v1/groups",
            Some(json!({ "id": "g" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let open = || async {
        let reply = m
            .bearer(
                &admin.token,
                "POST",
                "/v1/groups/g/vault/ceremonies",
                Some(json!({ "kind": "init" })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["ceremony"]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let init = |id: String| {
        let body = json!({ "mode": "shamir", "threshold": 2, "holders": [admin.id, member.id] });
        let token = admin.token.clone();
        let m = &m;
        async move {
            m.bearer(
                &token,
                "POST",
                &format!("/v1/ceremonies/{id}/init"),
                Some(body),
            )
            .await
        }
    };
    let id = open().await;
    expect(
        &init(id.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let reply = m
        .bearer(
            &admin.token,
            "PUT",
            &format!("/v1/groups/g/members/{}", member.id),
            None,
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let reply = init(id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
