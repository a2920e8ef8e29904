//! Magic-link sign-in, attacked the ways the issue lists.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::harness::{address, cookie_value, link_token, mail_code, management, management_with};

#[tokio::test]
async fn the_answer_is_the_same_whether_or_not_the_address_has_an_account() {
    let m = management().await;
    let known = address("known");
    m.user(&known, "member").await;
    let unknown = address("unknown");
    let disabled = address("disabled");
    m.user(&disabled, "admin").await;
    keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query("UPDATE users SET disabled_at_ms = 1 WHERE email = $1").bind(&disabled).execute(pool).await.map(drop))
    .expect("disable");

    let a = m
        .json("POST", "/v1/login", Some(json!({ "email": known })), &[])
        .await;
    let b = m
        .json("POST", "/v1/login", Some(json!({ "email": unknown })), &[])
        .await;
    let c = m
        .json("POST", "/v1/login", Some(json!({ "email": disabled })), &[])
        .await;
    assert_eq!(
        (c.status, &c.body["message"]),
        (b.status, &b.body["message"])
    );
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(b.status, a.status);
    assert_eq!(a.body["message"], b.body["message"]);
    assert_eq!(a.body["expires_in_secs"], b.body["expires_in_secs"]);
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&a.body), keys(&b.body));
    for reply in [&a, &b] {
        assert_eq!(reply.body["request_id"].as_str().map(str::len), Some(36));
        let secret = reply.body["poll_secret"].as_str().expect("secret");
        assert!(secret.starts_with("kmp_") && secret.len() == 47, "{secret}");
    }
    // Same headers apart from the per-request ones.
    let mut ha: Vec<&str> = a.headers.keys().map(|k| k.as_str()).collect();
    let mut hb: Vec<&str> = b.headers.keys().map(|k| k.as_str()).collect();
    ha.sort_unstable();
    hb.sort_unstable();
    assert_eq!(ha, hb);

    // The unknown address's request polls exactly like a real one nobody confirmed yet.
    let poll = |body: &serde_json::Value| json!({ "request_id": body["request_id"], "poll_secret": body["poll_secret"] });
    let pa = m
        .json("POST", "/v1/login/poll", Some(poll(&a.body)), &[])
        .await;
    let pb = m
        .json("POST", "/v1/login/poll", Some(poll(&b.body)), &[])
        .await;
    assert_eq!(
        (pa.status, &pa.body["status"]),
        (StatusCode::OK, &json!("pending"))
    );
    assert_eq!(
        (pb.status, &pb.body["status"]),
        (pa.status, &pa.body["status"])
    );

    // Only the account gets mail.
    m.smtp.wait_mail(&known, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(m.smtp.mails_to(&unknown).is_empty());
    assert!(m.smtp.mails_to(&disabled).is_empty());

    // Per-address limits apply to both alike (5 per hour by default).
    for who in [&known, &unknown] {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let r = m
                .json("POST", "/v1/login", Some(json!({ "email": who })), &[])
                .await;
            statuses.push(r.status.as_u16());
        }
        assert_eq!(statuses, [202, 202, 202, 202, 429], "{who}");
    }
}

#[tokio::test]
async fn a_get_never_uses_the_link_and_a_post_uses_it_once() {
    let m = management().await;
    let email = address("alice");
    m.user(&email, "member").await;
    m.json("POST", "/v1/login", Some(json!({ "email": email })), &[])
        .await;
    let mail = m.smtp.wait_mail(&email, 1).await;
    assert!(
        mail.contains("http://127.0.0.1:7800/login/confirm?token="),
        "{mail}"
    );
    let token = link_token(&mail);

    // A mail scanner following the link (any number of times) signs nobody in.
    for _ in 0..3 {
        let page = m.confirm_page(&token).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.text().contains("<form method=\"post\""),
            "{}",
            page.text()
        );
        assert!(page.headers.get("set-cookie").is_none());
        let csp = page.headers["content-security-policy"]
            .to_str()
            .expect("csp");
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("script"),
            "{csp}"
        );
    }

    let signed_in = m.confirm(&token, &[]).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.text());
    let set_cookie = signed_in.headers["set-cookie"].to_str().expect("cookie");
    for attribute in [
        "__Host-keymesh_session=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");

    let again = m.confirm(&token, &[]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        again.text().contains("login_link_invalid"),
        "{}",
        again.text()
    );
    assert!(again.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn an_expired_link_and_code_are_refused() {
    let m = management_with(&[("MANAGEMENT_LOGIN_TTL_SECS", "1")]).await;
    let email = address("late");
    m.user(&email, "member").await;
    let request = m.app_login(&email).await;
    let mail = m.smtp.wait_mail(&email, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let link = m.confirm(&link_token(&mail), &[]).await;
    assert_eq!(link.status, StatusCode::BAD_REQUEST);
    assert!(link.text().contains("login_link_invalid"));
    assert_eq!(link.headers["keymesh-error-code"], "login_link_invalid");
    // Words for a person, never a setting name.
    assert!(
        link.text()
            .contains("This sign-in link has expired or was already used"),
        "{}",
        link.text()
    );
    assert!(!link.text().contains("MANAGEMENT_"), "{}", link.text());
    let code = m.submit_code(&request, &mail_code(&mail)).await;
    assert_eq!(code.status, StatusCode::GONE);
    assert_eq!(code.code(), "login_request_expired");
    assert_eq!(m.poll(&request).await.code(), "login_request_expired");
}

#[tokio::test]
async fn malformed_and_foreign_links_are_refused_with_a_code() {
    let m = management().await;
    let unknown = format!("kml_{}", "A".repeat(43));
    let session_shaped = format!("kms_{}", "A".repeat(43));
    for token in [
        "",
        "kml_short",
        "<script>alert(1)</script>",
        &session_shaped,
        &unknown,
    ] {
        let uri_token = token.replace('<', "%3C").replace('>', "%3E");
        let page = m.confirm_page(&uri_token).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{token}");
        assert!(page.text().contains("login_link_invalid"));
        assert_eq!(page.headers["keymesh-error-code"], "login_link_invalid");
        assert!(!page.text().contains("<script>"));
        let post = m.confirm(token, &[]).await;
        assert_eq!(post.status, StatusCode::BAD_REQUEST, "{token}");
        assert!(post.text().contains("login_link_invalid"));
    }
    let empty = m.confirm("", &[]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    let bad_json = m
        .send(
            http::Request::post("/v1/login")
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{\"email\":"))
                .expect("request"),
        )
        .await;
    assert_eq!(
        (bad_json.status.as_u16(), bad_json.code()),
        (400, "malformed_request")
    );
    let not_an_address = m
        .json(
            "POST",
            "/v1/login",
            Some(json!({ "email": "not an address" })),
            &[],
        )
        .await;
    assert_eq!(not_an_address.code(), "invalid_request");
    let extra = m
        .json(
            "POST",
            "/v1/login",
            Some(json!({ "email": "a@b.test", "admin": true })),
            &[],
        )
        .await;
    assert_eq!(extra.code(), "malformed_request");
    let long = m
        .json(
            "POST",
            "/v1/login",
            Some(json!({ "email": format!("{}@b.test", "a".repeat(300)) })),
            &[],
        )
        .await;
    assert_eq!(long.code(), "invalid_request");
}

#[tokio::test]
async fn code_guessing_stops_at_the_limit_even_for_the_right_code() {
    let m = management().await;
    let email = address("guess");
    m.user(&email, "member").await;
    let request = m.app_login(&email).await;
    let mail = m.smtp.wait_mail(&email, 1).await;
    let right = mail_code(&mail);
    let wrong = if right.starts_with('A') {
        "BBBB-BBBB"
    } else {
        "AAAA-AAAA"
    };

    for left in [4, 3, 2, 1] {
        let reply = m.submit_code(&request, wrong).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "login_code_invalid")
        );
        assert_eq!(reply.body["error"]["details"]["attempts_left"], left);
    }
    let fifth = m.submit_code(&request, wrong).await;
    assert_eq!(
        (fifth.status, fifth.code()),
        (StatusCode::FORBIDDEN, "login_attempts_exhausted")
    );
    let too_late = m.submit_code(&request, &right).await;
    assert_eq!(too_late.code(), "login_attempts_exhausted");

    // Without the poll secret nobody can even try.
    let stranger = m
        .submit_code(
            &(request.0.clone(), format!("kmp_{}", "x".repeat(43))),
            &right,
        )
        .await;
    assert_eq!(stranger.code(), "unauthorized");
}

#[tokio::test]
async fn the_app_signs_in_with_the_code_or_by_polling_after_the_link_once() {
    let m = management().await;
    let email = address("app");
    m.user(&email, "admin").await;

    // The code, typed loosely.
    let request = m.app_login(&email).await;
    let mail = m.smtp.wait_mail(&email, 1).await;
    let typed = mail_code(&mail).to_lowercase().replace('-', " ");
    let reply = m.submit_code(&request, &typed).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let token = reply.body["session"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let me = m.bearer(&token, "GET", "/v1/session", None).await;
    assert_eq!(me.body["user"]["email"], email.as_str());
    assert!(
        me.body.get("csrf_token").is_none(),
        "bearer sessions need no CSRF token"
    );
    // Used up: neither the code, the link nor the poll gives a second session.
    assert_eq!(
        m.submit_code(&request, &typed).await.code(),
        "login_request_expired"
    );
    assert_eq!(
        m.confirm(&link_token(&mail), &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(m.poll(&request).await.code(), "login_request_expired");

    // The link, confirmed in a browser, completes the app's request: no cookie there. The page
    // first says it approves an app sign-in, from where, with the app's match code.
    let started = m
        .json(
            "POST",
            "/v1/login",
            Some(json!({ "email": email, "client": "app" })),
            &[],
        )
        .await;
    let request = (
        started.body["request_id"].as_str().expect("id").to_owned(),
        started.body["poll_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    );
    let match_code = started.body["match_code"].as_str().expect("match code");
    assert_eq!(match_code.len(), 4);
    assert_eq!(m.poll(&request).await.body["status"], "pending");
    let mail = m.smtp.wait_mail(&email, 2).await;
    let approval = m.confirm_page(&link_token(&mail)).await;
    assert_eq!(approval.status, StatusCode::OK);
    for shown in ["Keymesh Admin", "192.0.2.1", match_code] {
        assert!(
            approval.text().contains(shown),
            "{shown}: {}",
            approval.text()
        );
    }
    let page = m.confirm(&link_token(&mail), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Keymesh Admin"), "{}", page.text());
    assert!(cookie_value(&page.headers).is_none());
    let done = m.poll(&request).await;
    assert_eq!(done.body["status"], "complete", "{}", done.body);
    let token = done.body["session"]["token"].as_str().expect("token");
    assert_eq!(m.session_status(token).await, StatusCode::OK);
    assert_eq!(m.poll(&request).await.code(), "login_request_expired");
    // The right request id with a wrong secret is nobody's.
    let wrong = m
        .poll(&(request.0.clone(), format!("kmp_{}", "y".repeat(43))))
        .await;
    assert_eq!(wrong.code(), "unauthorized");
}

#[tokio::test]
async fn another_site_cannot_sign_a_visitor_in() {
    let m = management().await;
    let email = address("csrf-login");
    m.user(&email, "member").await;
    m.json("POST", "/v1/login", Some(json!({ "email": email })), &[])
        .await;
    let token = link_token(&m.smtp.wait_mail(&email, 1).await);
    // Each signal alone is enough to refuse.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
    ] {
        let forged = m.confirm(&token, &headers).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(forged.text().contains("csrf_failed"));
    }
    // The link survives the refused attempt and works from our own page.
    let ok = m
        .confirm(
            &token,
            &[
                ("origin", "http://127.0.0.1:7800"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

#[tokio::test]
async fn no_token_code_or_address_reaches_the_audit_log() {
    let m = management().await;
    let email = address("audited");
    m.user(&email, "admin").await;
    let request = m.app_login(&email).await;
    let mail = m.smtp.wait_mail(&email, 1).await;
    let wrong = m.submit_code(&request, "ZZZZ-ZZZZ").await;
    assert_eq!(wrong.code(), "login_code_invalid");
    let reply = m.submit_code(&request, &mail_code(&mail)).await;
    let session = reply.body["session"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    // A browser sign-in, an invitation (and its conflict), a bootstrap, a logout.
    let cookie = m.browser_sign_in(&email, 2).await;
    let invitee = address("invitee");
    for _ in 0..2 {
        m.bearer(
            &session,
            "POST",
            "/v1/users",
            Some(json!({ "email": invitee, "role": "member" })),
        )
        .await;
    }
    let invitation = m.smtp.wait_mail(&invitee, 1).await;
    let bootstrapped = keymesh_management::bootstrap::bootstrap_admin(&m.state, &address("boot"))
        .await
        .expect("bootstrap");
    m.bearer(&session, "POST", "/v1/logout", None).await;

    let rows: Vec<(String, String, String, String)> = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT actor, action, target, details FROM audit_log ORDER BY seq").fetch_all(pool).await)
    .expect("audit rows");
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    for expected in [
        "login.request",
        "login.code",
        "login.confirm",
        "session.create",
        "session.revoke",
        "user.create",
        "user.bootstrap_admin",
    ] {
        assert!(actions.contains(&expected), "{actions:?}");
    }
    let everything: String = rows
        .iter()
        .map(|r| format!("{} {} {} {}", r.0, r.1, r.2, r.3))
        .collect();
    let code = mail_code(&mail);
    for secret in [
        link_token(&mail),
        code.clone(),
        code.replace('-', ""),
        request.1.clone(),
        session,
        cookie,
        link_token(&invitation),
        link_token(&bootstrapped.login.link(&m.state)),
        email.clone(),
        invitee.clone(),
    ] {
        assert!(!everything.contains(&secret), "audit log holds {secret}");
    }
    assert!(everything.contains(&m.state.keyed.email_ref(&email)));
    let report = keymesh_core::audit::verify(m.state.store.db())
        .await
        .expect("verify");
    assert!(report.first_broken.is_none(), "{report:?}");
}

#[tokio::test]
async fn sign_in_fails_closed_when_its_audit_record_cannot_be_written() {
    let m = management().await;
    let email = address("closed");
    m.user(&email, "member").await;
    let request = m.app_login(&email).await;
    let mail = m.smtp.wait_mail(&email, 1).await;
    keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query("DROP TABLE audit_log").execute(pool).await.map(drop))
    .expect("break the audit log");
    let started = std::time::Instant::now();
    let reply = m.submit_code(&request, &mail_code(&mail)).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
        "{}",
        reply.body
    );
    assert!(started.elapsed() < Duration::from_secs(5), "bounded wait");
    let (sessions,): (i64,) = keymesh_core::with_pool!(m.state.store.db(), pool =>
        sqlx::query_as("SELECT COUNT(*) FROM sessions").fetch_one(pool).await)
    .expect("count");
    assert_eq!(sessions, 0, "no session without its audit record");

    // Nor is a new code mailed: asking to sign in is refused the same way, account or not.
    for who in [email.as_str(), &address("nobody")] {
        let reply = m
            .json(
                "POST",
                "/v1/login",
                Some(json!({ "email": who, "client": "app" })),
                &[],
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            "{}",
            reply.body
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.smtp.mails_to(&email).len(), 1, "no second mail");
}

#[tokio::test]
async fn per_ip_limits_answer_429_with_retry_after_on_the_api_and_the_page() {
    let m = management_with(&[("MANAGEMENT_LOGIN_PER_IP_PER_MINUTE", "2")]).await;
    for expected in [202, 202, 429] {
        let reply = m
            .json(
                "POST",
                "/v1/login",
                Some(json!({ "email": address("ip") })),
                &[],
            )
            .await;
        assert_eq!(reply.status.as_u16(), expected, "{}", reply.body);
        if expected == 429 {
            assert_eq!(reply.code(), "rate_limited");
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    let page = m.confirm(&format!("kml_{}", "A".repeat(43)), &[]).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(page.headers["keymesh-error-code"], "rate_limited");
    assert!(page.headers.contains_key("retry-after"));
    assert!(page.text().contains("rate_limited"), "{}", page.text());
}
