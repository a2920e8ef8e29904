//! The relay's HTTP routes a node calls: publish its key, look up a peer's keys. Every call
//! carries the token (bearer, URL-safe base64) and a proof of possession over the request.

use std::{
    sync::{PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use base64::Engine;
use ed25519_dalek::VerifyingKey;
use keymesh_proto::{
    WireError,
    pop::{PROOF_HEADER, sign_http},
    token::TOKEN_B64,
};
use reqwest::{Method, StatusCode, Url, header};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{PeerKey, RelayError};
use crate::{
    keys::{NodeKeys, SignedEncKey},
    transport::{Transport, certificate_failure},
};

/// Largest HTTP answer read (a key listing is a few hundred bytes per version).
const MAX_RESPONSE: usize = 1 << 20;

/// A relay base URL, `http(s)://host[:port][/prefix]`, updatable while the client runs.
#[derive(Debug)]
pub(crate) struct BaseUrl(RwLock<Url>);

impl BaseUrl {
    pub(crate) fn parse(url: &str, transport: &Transport) -> Result<Url, RelayError> {
        let parsed = Url::parse(url).map_err(|_| RelayError::InvalidUrl(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || !parsed.username().is_empty()
        {
            return Err(RelayError::InvalidUrl(url.to_owned()));
        }
        transport.check_url(&parsed)?;
        Ok(parsed)
    }

    pub(crate) fn new(url: Url) -> Self {
        Self(RwLock::new(url))
    }

    pub(crate) fn set(&self, url: Url) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = url;
    }

    /// The base as given, without a trailing slash.
    pub(crate) fn get(&self) -> String {
        let url = self.0.read().unwrap_or_else(PoisonError::into_inner);
        url.as_str().trim_end_matches('/').to_owned()
    }

    /// `base + path` as a URL.
    pub(crate) fn join(&self, path: &str) -> Result<Url, RelayError> {
        let full = format!("{}{path}", self.get());
        Url::parse(&full).map_err(|_| RelayError::InvalidUrl(full))
    }

    /// The WebSocket endpoint: `ws(s)://…/v1/relay/ws`.
    pub(crate) fn ws(&self) -> Result<String, RelayError> {
        let base = self.get();
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            return Err(RelayError::InvalidUrl(base));
        };
        Ok(format!("{ws}/v1/relay/ws"))
    }
}

/// Signs and sends node requests.
pub(crate) struct Api {
    http: reqwest::Client,
    token_b64: Zeroizing<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeysDoc {
    node: String,
    keys: Vec<KeyDoc>,
}

#[derive(Deserialize)]
struct KeyDoc {
    node: String,
    version: i64,
    identity_key: String,
    enc_key: String,
    signature: String,
    #[serde(default)]
    retired_ms: Option<i64>,
}

/// A peer's key listing after verification.
#[derive(Debug)]
pub(crate) struct Listing {
    /// Verified keys, newest first.
    pub keys: Vec<PeerKey>,
    /// The version the relay marks current (not retired), if it verified.
    pub current: Option<u32>,
}

/// The relay's coded error in an HTTP body, `{"error":{"code","message"}}`.
pub(crate) fn error_body(bytes: &[u8]) -> Option<RelayError> {
    let e = WireError::parse(bytes)?;
    Some(RelayError::relay(&e.code, &e.message, None))
}

fn fixed<const N: usize>(hex_str: &str) -> Option<[u8; N]> {
    hex::decode(hex_str).ok()?.try_into().ok()
}

impl Api {
    pub(crate) fn new(
        token: &[u8],
        timeout: Duration,
        transport: &Transport,
    ) -> Result<Self, RelayError> {
        let http = transport
            .http_client()?
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| RelayError::Protocol(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            token_b64: Zeroizing::new(TOKEN_B64.encode(token)),
        })
    }

    /// One signed call; the JSON answer, or the relay's coded error.
    async fn call(
        &self,
        base: &BaseUrl,
        keys: &NodeKeys,
        token: &[u8],
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, RelayError> {
        let url = base.join(path)?;
        let mut signed_path = url.path().to_owned();
        if let Some(q) = url.query() {
            signed_path.push('?');
            signed_path.push_str(q);
        }
        let body = body.unwrap_or_default();
        let proof = sign_http(
            keys.signing_key(),
            method.as_str(),
            &signed_path,
            &body,
            token,
            SystemTime::now(),
        );
        let mut request = self
            .http
            .request(method, url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token_b64.as_str()),
            )
            .header(PROOF_HEADER, proof);
        if !body.is_empty() {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let unreachable = |e: reqwest::Error| match certificate_failure(&e) {
            Some(reason) => RelayError::Tls {
                url: base.get(),
                reason,
            },
            None => RelayError::Unreachable {
                url: base.get(),
                reason: without_url(&e),
            },
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(unreachable)?;
        if bytes.len() > MAX_RESPONSE {
            return Err(RelayError::Protocol("an HTTP answer over 1 MiB".into()));
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|_| RelayError::Protocol(format!("a {status} answer that is not JSON")));
        }
        match WireError::parse(&bytes) {
            Some(e) => Err(RelayError::relay(&e.code, &e.message, retry_after)),
            None if status == StatusCode::BAD_GATEWAY || status.is_server_error() => {
                Err(RelayError::Unreachable {
                    url: base.get(),
                    reason: format!("HTTP {status}"),
                })
            }
            None => Err(RelayError::Protocol(format!(
                "HTTP {status} without an error body"
            ))),
        }
    }

    /// `PUT /v1/relay/keys` with the current key (idempotent at the relay).
    pub(crate) async fn publish(
        &self,
        base: &BaseUrl,
        keys: &NodeKeys,
        token: &[u8],
        statement: &SignedEncKey,
    ) -> Result<(), RelayError> {
        let body = json!({
            "version": statement.version,
            "enc_key": hex::encode(statement.enc_public),
            "signature": hex::encode(statement.signature),
        });
        self.call(
            base,
            keys,
            token,
            Method::PUT,
            "/v1/relay/keys",
            Some(body.to_string().into_bytes()),
        )
        .await?;
        Ok(())
    }

    /// `GET /v1/relay/keys/{node}`: every key that verifies under its identity key. Keys that do
    /// not verify are refused; when none does, the first failure is the error.
    pub(crate) async fn lookup(
        &self,
        base: &BaseUrl,
        keys: &NodeKeys,
        token: &[u8],
        node: &str,
    ) -> Result<Listing, RelayError> {
        let value = self
            .call(
                base,
                keys,
                token,
                Method::GET,
                &format!("/v1/relay/keys/{node}"),
                None,
            )
            .await?;
        let doc: KeysDoc = serde_json::from_value(value)
            .map_err(|e| RelayError::Protocol(format!("key listing: {e}")))?;
        if doc.node != node {
            return Err(RelayError::Protocol(format!(
                "asked for {node}'s keys, got {}'s",
                doc.node
            )));
        }
        verify_listing(node, doc.keys)
    }
}

/// Check every listed key against its identity key; the statement is rebuilt with the node
/// asked for, so a key listed for another node does not verify.
fn verify_listing(node: &str, rows: Vec<KeyDoc>) -> Result<Listing, RelayError> {
    let mut out = Listing {
        keys: Vec::with_capacity(rows.len()),
        current: None,
    };
    let mut first_error = None;
    for row in rows {
        let version = u32::try_from(row.version).unwrap_or(0);
        let invalid = RelayError::PeerKeyInvalid {
            node: node.to_owned(),
            version,
        };
        let parsed = (|| {
            let identity = fixed::<32>(&row.identity_key)?;
            let statement = SignedEncKey {
                node: node.to_owned(),
                version,
                enc_public: fixed::<32>(&row.enc_key)?,
                signature: fixed::<64>(&row.signature)?,
            };
            let verifying = VerifyingKey::from_bytes(&identity).ok()?;
            (row.node == node && version > 0 && statement.verify(&verifying)).then_some(PeerKey {
                version,
                enc_public: statement.enc_public,
                identity,
            })
        })();
        match parsed {
            Some(key) => {
                if row.retired_ms.is_none() && out.current.is_none() {
                    out.current = Some(key.version);
                }
                out.keys.push(key);
            }
            None => {
                first_error.get_or_insert(invalid);
            }
        }
    }
    match (out.keys.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(RelayError::NoPeerKey {
            node: node.to_owned(),
            version: None,
        }),
        _ => Ok(out),
    }
}

/// A transport error's text without the URL (which is reported once, separately).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "").replace(" ()", "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(keys: &NodeKeys, version: u32) -> KeyDoc {
        let s = keys.signed_enc_key(version).expect("held");
        KeyDoc {
            node: keys.node().to_owned(),
            version: i64::from(version),
            identity_key: hex::encode(keys.identity_public()),
            enc_key: hex::encode(s.enc_public),
            signature: hex::encode(s.signature),
            retired_ms: None,
        }
    }

    #[test]
    fn listings_keep_only_keys_signed_by_the_listed_identity() {
        let mut bob = NodeKeys::generate("bob").expect("keys");
        bob.rotate(1).expect("rotate");
        let other = NodeKeys::generate("bob").expect("keys");
        let mut v1 = row(&bob, 1);
        v1.retired_ms = Some(1);
        let listing = verify_listing("bob", vec![row(&bob, 2), v1]).expect("valid");
        assert_eq!(listing.current, Some(2));
        assert_eq!(
            listing.keys.iter().map(|k| k.version).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(listing.keys[0].identity, bob.identity_public());
        // another identity's signature, a swapped key, another node, version 0, bad hex
        let mut forged = row(&bob, 2);
        forged.identity_key = hex::encode(other.identity_public());
        let mut swapped = row(&bob, 2);
        swapped.enc_key = hex::encode(other.current_enc_key().public);
        let mut renamed = row(&bob, 2);
        renamed.node = "carol".into();
        let mut zero = row(&bob, 2);
        zero.version = 0;
        let mut short = row(&bob, 2);
        short.signature.truncate(10);
        for bad in [forged, swapped, renamed, zero, short] {
            let e = verify_listing("bob", vec![bad]).expect_err("refused");
            assert_eq!(e.code(), "peer_key_invalid");
        }
        let e = verify_listing("carol", vec![row(&bob, 2)]).expect_err("other node");
        assert_eq!(e.code(), "peer_key_invalid");
        let e = verify_listing("bob", vec![]).expect_err("empty");
        assert_eq!(e.code(), "peer_key_missing");
        // a bad row next to a good one is dropped, the good one kept
        let mut bad = row(&bob, 2);
        bad.signature = hex::encode([0u8; 64]);
        let listing = verify_listing("bob", vec![bad, row(&bob, 1)]).expect("one good");
        assert_eq!(listing.keys.len(), 1);
        assert_eq!(listing.current, Some(1));
    }

    #[test]
    fn base_urls_are_checked_and_map_to_the_websocket() {
        for bad in [
            "ftp://x",
            "relay.example",
            "http://",
            "http://u:p@x",
            "http://x/?a=1",
        ] {
            assert!(BaseUrl::parse(bad, &Transport::default()).is_err(), "{bad}");
        }
        let base = BaseUrl::new(
            BaseUrl::parse("http://127.0.0.1:8080/", &Transport::default()).expect("url"),
        );
        assert_eq!(base.ws().expect("ws"), "ws://127.0.0.1:8080/v1/relay/ws");
        base.set(BaseUrl::parse("https://relay.example/km", &Transport::default()).expect("url"));
        assert_eq!(base.ws().expect("ws"), "wss://relay.example/km/v1/relay/ws");
        assert_eq!(
            base.join("/v1/relay/keys/b").expect("join").path(),
            "/km/v1/relay/keys/b"
        );
    }
}
