//! Sessions, CSRF, fixation, timeouts, caps, roles and re-authentication, through the real
//! router.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::harness::{address, cookie_value, link_token, management, management_with};

#[tokio::test]
async fn a_cookie_chosen_before_sign_in_is_never_the_session() {
    let m = management().await;
    let email = address("fixation");
    m.user(&email, "member").await;
    let planted = format!("kms_{}", "P".repeat(43));
    let planted_cookie = format!("__Host-keymesh_session={planted}");
    m.json("POST", "/v1/login", Some(json!({ "email": email })), &[])
        .await;
    let token = link_token(&m.smtp.wait_mail(&email, 1).await);
    let reply = m.confirm(&token, &[("cookie", &planted_cookie)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let issued = cookie_value(&reply.headers).expect("a fresh cookie");
    assert_ne!(issued, planted);
    let with_planted = m
        .json("GET", "/v1/session", None, &[("cookie", &planted_cookie)])
        .await;
    assert_eq!(with_planted.status, StatusCode::UNAUTHORIZED);
    let with_issued = m
        .json(
            "GET",
            "/v1/session",
            None,
            &[("cookie", &format!("__Host-keymesh_session={issued}"))],
        )
        .await;
    assert_eq!(with_issued.status, StatusCode::OK);
}

#[tokio::test]
async fn cookie_state_changes_need_the_csrf_token_and_our_origin() {
    let m = management().await;
    let email = address("csrf");
    m.user(&email, "member").await;
    let cookie = format!(
        "__Host-keymesh_session={}",
        m.browser_sign_in(&email, 1).await
    );

    let me = m
        .json("GET", "/v1/session", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(me.status, StatusCode::OK);
    let csrf = me.body["csrf_token"]
        .as_str()
        .expect("csrf token")
        .to_owned();

    let missing = m
        .json("POST", "/v1/logout", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::FORBIDDEN, "csrf_failed")
    );
    let wrong = m
        .json(
            "POST",
            "/v1/logout",
            None,
            &[("cookie", &cookie), ("x-csrf-token", "forged")],
        )
        .await;
    assert_eq!(wrong.code(), "csrf_failed");
    let cross_site = m
        .json(
            "POST",
            "/v1/logout",
            None,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
    assert_eq!(cross_site.code(), "csrf_failed");
    // Still signed in after the refusals.
    assert_eq!(
        m.json("GET", "/v1/session", None, &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::OK
    );

    let ok = m
        .json(
            "POST",
            "/v1/logout",
            None,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", "http://127.0.0.1:7800"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    let cleared = ok.headers["set-cookie"].to_str().expect("cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        m.json("GET", "/v1/session", None, &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_session_token_works_only_the_way_it_was_issued() {
    let m = management().await;
    let email = address("kinds");
    m.user(&email, "member").await;
    let cookie_token = m.browser_sign_in(&email, 1).await;
    let bearer_token = m.sign_in(&email, 2).await;
    assert_eq!(
        m.session_status(&cookie_token).await,
        StatusCode::UNAUTHORIZED
    );
    let as_cookie = format!("__Host-keymesh_session={bearer_token}");
    assert_eq!(
        m.json("GET", "/v1/session", None, &[("cookie", &as_cookie)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for junk in ["", "x", "Bearer", &"é".repeat(30)] {
        let reply = m
            .json(
                "GET",
                "/v1/session",
                None,
                &[("authorization", &format!("Bearer {junk}"))],
            )
            .await;
        assert_eq!(reply.code(), "unauthorized", "{junk}");
    }
}

#[tokio::test]
async fn beyond_the_cap_the_least_recently_used_session_ends() {
    let m = management_with(&[
        ("MANAGEMENT_SESSIONS_PER_USER", "2"),
        ("MANAGEMENT_LOGIN_PER_EMAIL_PER_HOUR", "10"),
    ])
    .await;
    let email = address("cap");
    m.user(&email, "member").await;
    let first = m.sign_in(&email, 1).await;
    let second = m.sign_in(&email, 2).await;
    let third = m.sign_in(&email, 3).await;
    assert_eq!(m.session_status(&first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(m.session_status(&second).await, StatusCode::OK);
    let list = m.bearer(&third, "GET", "/v1/sessions", None).await;
    let sessions = list.body["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["current"], true);
    let evictions: Vec<(String,)> = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT details FROM audit_log WHERE action = 'session.evict'").fetch_all(pool).await)
    .expect("audit");
    assert_eq!(evictions.len(), 1, "{evictions:?}");
    assert!(evictions[0].0.contains(r#""sessions":1"#), "{evictions:?}");
}

#[tokio::test]
async fn an_idle_session_ends_and_one_in_use_does_not() {
    let m = management_with(&[
        ("MANAGEMENT_SESSION_IDLE_SECS", "2"),
        ("MANAGEMENT_LOGIN_PER_EMAIL_PER_HOUR", "10"),
    ])
    .await;
    let email = address("idle");
    m.user(&email, "member").await;
    let idle = m.sign_in(&email, 1).await;
    let busy = m.sign_in(&email, 2).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(m.session_status(&busy).await, StatusCode::OK);
    }
    assert_eq!(m.session_status(&idle).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_list_and_revoke_only_their_own_sessions() {
    let m = management().await;
    let alice = address("alice");
    let bob = address("bob");
    m.user(&alice, "member").await;
    m.user(&bob, "member").await;
    let a1 = m.sign_in(&alice, 1).await;
    let a2 = m.sign_in(&alice, 2).await;
    let b1 = m.sign_in(&bob, 1).await;

    let list = m.bearer(&a1, "GET", "/v1/sessions", None).await;
    let ids: Vec<String> = list.body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let bob_session = m.session_id(&b1).await;
    let not_hers = m
        .bearer(&a1, "DELETE", &format!("/v1/sessions/{bob_session}"), None)
        .await;
    assert_eq!(not_hers.status, StatusCode::NOT_FOUND);
    assert_eq!(m.session_status(&b1).await, StatusCode::OK);

    let a2_id = m.session_id(&a2).await;
    let revoked = m
        .bearer(&a1, "DELETE", &format!("/v1/sessions/{a2_id}"), None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(m.session_status(&a2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(m.session_status(&a1).await, StatusCode::OK);
}

#[tokio::test]
async fn roles_decide_and_admin_actions_need_a_recent_sign_in() {
    let m = management_with(&[("MANAGEMENT_REAUTH_SECS", "3")]).await;
    let admin = address("admin");
    let member = address("member");
    m.user(&admin, "admin").await;
    m.user(&member, "member").await;
    let member_token = m.sign_in(&member, 1).await;
    let admin_token = m.sign_in(&admin, 1).await;
    let invitee = address("new");

    let refused = m
        .bearer(
            &member_token,
            "POST",
            "/v1/users",
            Some(json!({ "email": invitee, "role": "admin" })),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert_eq!(
        m.bearer(&member_token, "GET", "/v1/users", None)
            .await
            .code(),
        "forbidden"
    );

    let created = m
        .bearer(
            &admin_token,
            "POST",
            "/v1/users",
            Some(json!({ "email": invitee, "role": "responder" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["user"]["role"], "responder");
    let again = m
        .bearer(
            &admin_token,
            "POST",
            "/v1/users",
            Some(json!({ "email": invitee, "role": "member" })),
        )
        .await;
    assert_eq!(again.code(), "conflict");
    let bad_role = m
        .bearer(
            &admin_token,
            "POST",
            "/v1/users",
            Some(json!({ "email": address("x"), "role": "root" })),
        )
        .await;
    assert_eq!(bad_role.code(), "invalid_request");

    // The invitation signs the new user in from a browser, with their role.
    let invitation = m.smtp.wait_mail(&invitee, 1).await;
    assert!(invitation.contains("responder"), "{invitation}");
    let page = m.confirm(&link_token(&invitation), &[]).await;
    let cookie = format!(
        "__Host-keymesh_session={}",
        cookie_value(&page.headers).expect("cookie")
    );
    let me = m
        .json("GET", "/v1/session", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(me.body["user"]["role"], "responder");
    assert!(
        me.body["actions"]
            .as_array()
            .expect("actions")
            .contains(&json!("tokens:revoke"))
    );

    // Wait until the admin's sign-in is older than the window.
    let signed_in_ms = m
        .bearer(&admin_token, "GET", "/v1/session", None)
        .await
        .body["session"]["created_at_ms"]
        .as_i64()
        .expect("created");
    let age = keymesh_management::store::now_ms() - signed_in_ms;
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(3100 - age).unwrap_or(0),
    ))
    .await;
    let stale = m
        .bearer(
            &admin_token,
            "POST",
            "/v1/users",
            Some(json!({ "email": address("y"), "role": "member" })),
        )
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::UNAUTHORIZED, "reauthentication_required")
    );
    // Reading needs no fresh sign-in.
    assert_eq!(
        m.bearer(&admin_token, "GET", "/v1/users", None)
            .await
            .status,
        StatusCode::OK
    );
}
