//! HTTP to the Keymesh servers: TLS always verified against the platform's roots, no
//! redirects followed (a redirect could carry the bearer token elsewhere or downgrade to
//! plain HTTP), every refusal turned into the server's stable code.

use std::time::Duration;

use keymesh_proto::WireError;
use reqwest::{Method, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::AppError;

/// Longest a plain request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for one server's base URL.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    streaming: reqwest::Client,
    base: String,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keymesh-admin/", env!("CARGO_PKG_VERSION")))
}

impl Api {
    /// A client for `base` (already checked by [`crate::settings::server_url_checked`]).
    pub fn new(base: &str) -> Result<Self, AppError> {
        let build = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| AppError::new("tls_setup_failed", e.to_string()))
        };
        Ok(Self {
            http: build(builder().timeout(REQUEST_TIMEOUT))?,
            // Event streams and exports run for as long as they run; reads still time out.
            streaming: build(builder().read_timeout(Duration::from_secs(60)))?,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
    ) -> reqwest::RequestBuilder {
        let mut req = client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token.expose_secret());
        }
        req
    }

    /// A JSON call: the answer's JSON, or the server's coded refusal.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<Value, AppError> {
        let mut req = self.request(&self.http, method, path, token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = checked(req.send().await?).await?;
        let text = response.text().await?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|_| {
            AppError::new(
                "bad_answer",
                format!("{} answered something that is not JSON", self.base),
            )
        })
    }

    /// A GET whose body is read as it arrives (events, exports).
    pub async fn open_stream(
        &self,
        method: Method,
        path: &str,
        token: &SecretString,
    ) -> Result<Response, AppError> {
        let req = self.request(&self.streaming, method, path, Some(token));
        checked(req.send().await?).await
    }

    /// A plain GET for health and metrics: the status and body, whatever the status.
    pub async fn probe(&self, path: &str) -> Result<(u16, String), AppError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }
}

/// The response if it succeeded; otherwise the server's `{error: {code, message}}`.
async fn checked(response: Response) -> Result<Response, AppError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(refusal(status.as_u16(), &body))
}

/// The error a refusal's body names; a generic one when the body is not Keymesh's shape
/// (a proxy's page, say), never the body itself.
pub fn refusal(status: u16, body: &str) -> AppError {
    match WireError::parse(body.as_bytes()) {
        Some(e) => AppError::server(status, &e.code, &e.message),
        None => AppError::server(
            status,
            &format!("http_{status}"),
            &format!("the server answered HTTP {status}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_servers_code_and_hide_other_bodies() {
        let e = refusal(
            403,
            r#"{"error":{"code":"self_approval","message":"you cannot decide your own request"}}"#,
        );
        assert_eq!((e.code.as_str(), e.status), ("self_approval", Some(403)));
        let e = refusal(502, "<html>nginx stack trace secret</html>");
        assert_eq!(e.code, "http_502");
        assert!(!e.message.contains("secret"));
        assert!(refusal(401, r#"{"error":{"code":"unauthorized","message":"x"}}"#).session_ended());
        for other in ["reauthentication_required", "invalid_passphrase"] {
            let body = format!(r#"{{"error":{{"code":"{other}","message":"x"}}}}"#);
            assert!(!refusal(401, &body).session_ended(), "{other}");
        }
    }

    #[tokio::test]
    async fn a_certificate_the_platform_does_not_vouch_for_is_refused_with_the_reason() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ring = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(ring)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            // The handshake fails on the client's side: nothing is ever read here.
            acceptor.accept(sock).await.is_ok()
        });
        let api = Api::new(&format!("https://localhost:{port}")).unwrap();
        let token = SecretString::from("kms_never_sent");
        let err = api
            .call(Method::GET, "/v1/session", Some(&token), None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "unreachable");
        assert!(
            err.message.to_lowercase().contains("certificate"),
            "{}",
            err.message
        );
        assert!(!server.await.unwrap(), "the handshake must not complete");
    }
}
