//! The HTTP stack through the real router, in process.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    routing::{get, post},
};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{
    ServiceContext,
    config::{Environment, ServiceConfig, ServiceName, Source},
    http::extract::Json,
    storage::{Db, testing::TestDb},
    telemetry::{self, capture::Captured},
};

struct Harness {
    router: Router,
    ctx: ServiceContext,
    _db: TestDb,
}

async fn harness(env: &[(&str, &str)]) -> Harness {
    let test_db = TestDb::new().await;
    let mut pairs: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    pairs.push(("VAULT_DATABASE_URL".into(), String::new()));
    let config = ServiceConfig::load(
        ServiceName::Vault,
        &Source::from_env(pairs),
        Environment::Development,
    )
    .expect("config");
    let db = Db::open_for(ServiceName::Vault, test_db.url())
        .await
        .expect("db");
    let ctx = ServiceContext::with_db(config, db, CancellationToken::new());
    let api = Router::new()
        .route("/v1/echo", post(|Json(v): Json<Value>| async move { Json(v) }))
        .route(
            "/v1/careless",
            get(|headers: HeaderMap| async move {
                // A handler that logs what it must not: the stack still keeps it out of logs.
                tracing::info!(authorization = ?headers.get(header::AUTHORIZATION), "careless handler");
                tracing::info!("raw header {:?}", headers.get(header::AUTHORIZATION));
                "ok"
            }),
        )
        .route("/v1/panic", get(panicking_handler))
        .route(
            "/v1/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    Harness {
        router: ctx.router(api),
        ctx,
        _db: test_db,
    }
}

async fn panicking_handler() -> &'static str {
    panic!("boom with secret detail")
}

fn request(method: &str, uri: &str) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

/// `GET uri` from the default client address.
async fn get_uri(router: &Router, uri: &str) -> (StatusCode, HeaderMap, Value) {
    send(
        router,
        request("GET", uri).body(Body::empty()).expect("req"),
    )
    .await
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    send_from(router, req, "198.51.100.10:4000").await
}

async fn send_from(
    router: &Router,
    mut req: Request<Body>,
    peer: &str,
) -> (StatusCode, HeaderMap, Value) {
    let peer: SocketAddr = peer.parse().expect("peer");
    req.extensions_mut().insert(ConnectInfo(peer));
    let response = router.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn assert_coded(status: StatusCode, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn unlisted_origin_gets_no_cors_grant() {
    let h = harness(&[("ALLOWED_ORIGINS", "https://admin.example.com")]).await;
    let allowed = request("GET", "/health/live")
        .header(header::ORIGIN, "https://admin.example.com")
        .body(Body::empty())
        .expect("req");
    let (_, headers, _) = send(&h.router, allowed).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://admin.example.com"
    );

    for req in [
        request("GET", "/health/live")
            .header(header::ORIGIN, "https://evil.example.com")
            .body(Body::empty()),
        request("OPTIONS", "/v1/echo")
            .header(header::ORIGIN, "https://evil.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty()),
    ] {
        let (_, headers, _) = send(&h.router, req.expect("req")).await;
        // The grant is Allow-Origin (and Allow-Credentials); without it a browser refuses.
        assert!(
            !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{headers:?}"
        );
        assert!(
            !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn no_configured_origins_means_no_cross_origin_access() {
    let h = harness(&[]).await;
    let preflight = request("OPTIONS", "/v1/echo")
        .header(header::ORIGIN, "https://admin.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .expect("req");
    let (_, headers, _) = send(&h.router, preflight).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn oversized_body_gets_coded_413() {
    let h = harness(&[("HTTP_BODY_LIMIT_BYTES", "1024")]).await;
    let big = format!("{{\"v\":\"{}\"}}", "x".repeat(4096));
    // With a Content-Length header, and streamed without one.
    let declared = request("POST", "/v1/echo")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big.clone()))
        .expect("req");
    let (status, _, body) = send(&h.router, declared).await;
    assert_coded(status, &body, 413, "payload_too_large");

    let chunks = futures_stream(big);
    let streamed = request("POST", "/v1/echo")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(chunks))
        .expect("req");
    let (status, _, body) = send(&h.router, streamed).await;
    assert_coded(status, &body, 413, "payload_too_large");

    // A body within the limit still works.
    let small = request("POST", "/v1/echo")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"v":1}"#))
        .expect("req");
    let (status, _, body) = send(&h.router, small).await;
    assert_eq!(status, 200);
    assert_eq!(body["v"], 1);
}

fn futures_stream(s: String) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        s.into_bytes().chunks(512).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn malformed_and_wrong_type_bodies_are_coded() {
    let h = harness(&[]).await;
    let bad_json = request("POST", "/v1/echo")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("req");
    let (status, _, body) = send(&h.router, bad_json).await;
    assert_coded(status, &body, 400, "malformed_request");

    let no_type = request("POST", "/v1/echo")
        .body(Body::from("{}"))
        .expect("req");
    let (status, _, body) = send(&h.router, no_type).await;
    assert_coded(status, &body, 415, "unsupported_media_type");
}

#[tokio::test]
async fn burst_from_one_ip_gets_429_with_retry_after() {
    let h = harness(&[
        ("RATE_LIMIT_IP_PER_SECOND", "1"),
        ("RATE_LIMIT_IP_BURST", "3"),
    ])
    .await;
    let get = || {
        request("GET", "/v1/careless")
            .body(Body::empty())
            .expect("req")
    };
    for _ in 0..3 {
        let (status, headers, _) = send(&h.router, get()).await;
        assert_eq!(status, 200);
        assert!(headers.contains_key("ratelimit-remaining"));
    }
    let (status, headers, body) = send(&h.router, get()).await;
    assert_coded(status, &body, 429, "rate_limited");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(headers["ratelimit-limit"], "3");
    assert_eq!(headers["ratelimit-remaining"], "0");
    // Another client is unaffected; probes are never limited.
    let (status, _, _) = send_from(&h.router, get(), "198.51.100.11:4000").await;
    assert_eq!(status, 200);
    let (status, _, _) = get_uri(&h.router, "/health/live").await;
    assert_eq!(status, 200);
}

/// One IPv6 host usually holds a whole /64: limited per address, it would get 2^64 budgets by
/// rotating its low bits. Clients share the limit of their /64 (`RATE_LIMIT_IPV6_PREFIX`).
#[tokio::test]
async fn ipv6_clients_share_the_limit_of_their_network() {
    let h = harness(&[
        ("RATE_LIMIT_IP_PER_SECOND", "1"),
        ("RATE_LIMIT_IP_BURST", "2"),
    ])
    .await;
    let get = || {
        request("GET", "/v1/careless")
            .body(Body::empty())
            .expect("req")
    };
    let mut statuses = Vec::new();
    for from in [
        "[2001:db8:0:7::1]:4000",
        "[2001:db8:0:7::2]:4000",
        "[2001:db8:0:7:ffff::3]:4000",
        "[2001:db8:0:8::1]:4000",
        "[::ffff:198.51.100.20]:4000",
        "198.51.100.20:4000",
        "198.51.100.21:4000",
    ] {
        statuses.push(send_from(&h.router, get(), from).await.0.as_u16());
    }
    // The third address of 2001:db8:0:7::/64 is refused; another /64 is not. An IPv4 client
    // is itself, written either way.
    assert_eq!(statuses, [200, 200, 429, 200, 200, 200, 200]);

    // A /128 setting limits each address on its own again.
    let h = harness(&[
        ("RATE_LIMIT_IP_PER_SECOND", "1"),
        ("RATE_LIMIT_IP_BURST", "1"),
        ("RATE_LIMIT_IPV6_PREFIX", "128"),
    ])
    .await;
    for from in ["[2001:db8::1]:1", "[2001:db8::2]:1"] {
        assert_eq!(send_from(&h.router, get(), from).await.0, 200);
    }
}

#[tokio::test]
async fn rate_limit_follows_forwarded_client_only_behind_trusted_proxy() {
    let h = harness(&[
        ("RATE_LIMIT_IP_PER_SECOND", "1"),
        ("RATE_LIMIT_IP_BURST", "1"),
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
    ])
    .await;
    let via_proxy = |client: &str| {
        request("GET", "/v1/careless")
            .header("x-forwarded-for", client)
            .body(Body::empty())
            .expect("req")
    };
    let (s1, _, _) = send_from(&h.router, via_proxy("203.0.113.1"), "10.0.0.5:1").await;
    let (s2, _, _) = send_from(&h.router, via_proxy("203.0.113.2"), "10.0.0.5:1").await;
    let (s3, _, _) = send_from(&h.router, via_proxy("203.0.113.1"), "10.0.0.5:1").await;
    assert_eq!((s1.as_u16(), s2.as_u16(), s3.as_u16()), (200, 200, 429));
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let h = harness(&[]).await;
    let with_id = request("GET", "/health/live")
        .header("x-request-id", "client-id-123")
        .body(Body::empty())
        .expect("req");
    let (_, headers, _) = send(&h.router, with_id).await;
    assert_eq!(headers["x-request-id"], "client-id-123");

    let hostile = request("GET", "/health/live")
        .header("x-request-id", "a\"b<script>")
        .body(Body::empty())
        .expect("req");
    let (_, headers, _) = send(&h.router, hostile).await;
    let generated = headers["x-request-id"].to_str().expect("ascii");
    assert_ne!(generated, "a\"b<script>");
    uuid::Uuid::parse_str(generated).expect("a fresh uuid");

    // Errors carry it too.
    let (_, headers, _) = get_uri(&h.router, "/nope").await;
    assert!(headers.contains_key("x-request-id"));
}

/// One process-wide subscriber for the test binary: scoped subscribers race with parallel tests
/// on tracing's global callsite-interest cache. Every test's logs land in one buffer; a test
/// finds its own lines by request id.
fn global_log_capture() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let subscriber =
            telemetry::subscriber("debug", crate::config::LogFormat::Json, captured.clone())
                .expect("subscriber");
        tracing::subscriber::set_global_default(subscriber).expect("only this test installs one");
        captured
    })
}

#[tokio::test]
async fn logs_never_contain_the_bearer_token() {
    const TOKEN: &str = "kms_9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let captured = global_log_capture();

    let h = harness(&[]).await;
    let req = request("GET", &format!("/v1/careless?token={TOKEN}"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::COOKIE, format!("km_session={TOKEN}"))
        .header("x-request-id", "log-test-1")
        .body(Body::empty())
        .expect("req");
    let (status, _, _) = send(&h.router, req).await;
    assert_eq!(status, 200);

    let logs = captured.text();
    let ours: Vec<&str> = logs.lines().filter(|l| l.contains("log-test-1")).collect();
    assert!(
        ours.iter().any(|l| l.contains("careless handler")),
        "the handler's lines were captured with the request id: {logs}"
    );
    assert!(
        ours.iter().any(|l| l.contains("request finished")),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "token leaked into logs:\n{logs}");
    assert!(
        !logs.contains(&TOKEN[4..]),
        "token body leaked into logs:\n{logs}"
    );
    for line in logs.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

/// A refusal's line names its code: a 401 storm's cause (a stale feed, a bad proof, a revoked
/// token) shows in the logs, not only the status.
#[tokio::test]
async fn the_request_line_of_a_refusal_names_its_error_code() {
    let captured = global_log_capture();
    let h = harness(&[]).await;
    for (path, id, code) in [
        ("/does-not-exist", "log-code-1", "not_found"),
        ("/v1/echo", "log-code-2", "method_not_allowed"),
    ] {
        let req = request("DELETE", path)
            .header("x-request-id", id)
            .body(Body::empty())
            .expect("req");
        send(&h.router, req).await;
        let logs = captured.text();
        let line = logs
            .lines()
            .find(|l| l.contains(id) && l.contains("request finished"))
            .unwrap_or_else(|| panic!("no request line for {id}: {logs}"));
        let line: Value = serde_json::from_str(line).expect("json");
        assert_eq!(line["error_code"], code, "{line}");
    }
}

#[tokio::test]
async fn stack_errors_are_coded_and_hide_internals() {
    let h = harness(&[("HTTP_REQUEST_TIMEOUT_SECS", "1")]).await;
    let (status, _, body) = get_uri(&h.router, "/does-not-exist").await;
    assert_coded(status, &body, 404, "not_found");

    let (status, headers, body) = send(
        &h.router,
        request("DELETE", "/v1/echo")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_coded(status, &body, 405, "method_not_allowed");
    assert!(headers.contains_key(header::ALLOW));

    let (status, _, body) = get_uri(&h.router, "/v1/panic").await;
    assert_coded(status, &body, 500, "internal");
    assert!(!body.to_string().contains("boom"), "{body}");

    let (status, _, body) = get_uri(&h.router, "/v1/slow").await;
    assert_coded(status, &body, 503, "timeout");
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let h = harness(&[]).await;
    for uri in ["/health/live", "/missing"] {
        let (_, headers, _) = get_uri(&h.router, uri).await;
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert!(
            !headers.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "no HSTS without TLS"
        );
    }
}

#[tokio::test]
async fn ready_checks_the_database_and_metrics_show_requests() {
    let h = harness(&[]).await;
    let (status, _, body) = get_uri(&h.router, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");

    let (_, _, metrics) = get_uri(&h.router, "/metrics").await;
    let text = metrics.as_str().expect("text");
    assert!(
        text.contains(
            r#"http_requests_total{service="vault",route="/health/ready",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_request_duration_seconds_count{service="vault",route="/health/ready"}"#
        )
    );

    h.ctx.db.close().await;
    let (status, _, body) = get_uri(&h.router, "/health/ready").await;
    assert_coded(status, &body, 503, "not_ready");
    assert_eq!(body["checks"]["database"], "unreachable");
}

#[tokio::test]
async fn ready_reports_draining_during_shutdown() {
    let h = harness(&[]).await;
    h.ctx.shutdown.cancel();
    let (status, _, body) = get_uri(&h.router, "/health/ready").await;
    assert_coded(status, &body, 503, "not_ready");
}

#[tokio::test]
async fn metrics_token_is_enforced_when_set() {
    let token = "m".repeat(40);
    let h = harness(&[("METRICS_TOKEN", &token)]).await;
    let (status, headers, body) = get_uri(&h.router, "/metrics").await;
    assert_coded(status, &body, 401, "unauthorized");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    let wrong = request("GET", "/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {}", "n".repeat(40)))
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&h.router, wrong).await.0, 401);
    let right = request("GET", "/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&h.router, right).await.0, 200);
}
