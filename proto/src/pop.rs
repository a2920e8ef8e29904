//! Proof of possession: a token is useless without the node's private key.
//!
//! Over HTTP, every request carries `Keymesh-Proof: v1;ts=UNIX;nonce=B64;sig=B64`, an Ed25519
//! signature by the node key (the `node_key` in the token) over
//! `keymesh-pop-v1`, METHOD, PATH[?QUERY], TS, hex(NONCE), hex(SHA256(body)), hex(SHA256(token))
//! joined by single `\n` bytes, nothing else between (docs/protocol/tokens.md; test vectors in
//! docs/protocol/test-vectors/pop.json).
//! The verifier accepts a timestamp within ±60 s and each nonce once (replay cache), so a proof
//! cannot be replayed, moved to another request, another body or another token. Over the
//! WebSocket the node signs the server's challenge the same way (`keymesh-ws-v1`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The header name.
pub const PROOF_HEADER: &str = "keymesh-proof";
/// Accepted clock difference.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Why a proof is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// No proof header.
    #[error("the request carries no proof of possession (Keymesh-Proof header)")]
    Missing,
    /// Unparseable, or the signature does not verify.
    #[error("the proof of possession is invalid for this request, body and token")]
    Invalid,
    /// Timestamp outside the window.
    #[error("the proof of possession is outside the accepted time window")]
    Stale,
    /// Nonce already used.
    #[error("the proof of possession was already used")]
    Replayed,
    /// The replay cache is full: refuse rather than stop remembering.
    #[error("too many proofs in flight")]
    Overloaded,
    /// This node sent more proofs within the window than its share of the replay cache.
    #[error("this node sent too many signed requests within the proof window; slow down")]
    NodeQuota,
}

/// A parsed proof header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    /// Unix seconds.
    pub ts: i64,
    /// Random, unique per request.
    pub nonce: [u8; 16],
    /// Ed25519 signature.
    pub sig: [u8; 64],
}

fn unix(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Proof {
    /// Parse `v1;ts=...;nonce=...;sig=...` (fields in that order).
    pub fn parse(header: &str) -> Result<Self, PopError> {
        let mut parts = header.split(';');
        if parts.next() != Some("v1") {
            return Err(PopError::Invalid);
        }
        let mut field = |name: &str| -> Result<&str, PopError> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .and_then(|p| p.strip_prefix('='))
                .ok_or(PopError::Invalid)
        };
        let ts = field("ts")?.parse().map_err(|_| PopError::Invalid)?;
        let nonce = decode_fixed(field("nonce")?)?;
        let sig = decode_fixed(field("sig")?)?;
        if parts.next().is_some() {
            return Err(PopError::Invalid);
        }
        Ok(Self { ts, nonce, sig })
    }

    /// The header value.
    pub fn encode(&self) -> String {
        format!(
            "v1;ts={};nonce={};sig={}",
            self.ts,
            URL_SAFE_NO_PAD.encode(self.nonce),
            URL_SAFE_NO_PAD.encode(self.sig)
        )
    }
}

fn decode_fixed<const N: usize>(b64: &str) -> Result<[u8; N], PopError> {
    if b64.len() > N * 2 {
        return Err(PopError::Invalid);
    }
    let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| PopError::Invalid)?;
    raw.try_into().map_err(|_| PopError::Invalid)
}

fn http_message(
    method: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &[u8; 16],
    body: &[u8],
    token_hash: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(200 + path_and_query.len());
    m.extend_from_slice(b"keymesh-pop-v1\n");
    m.extend_from_slice(method.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(ts.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(hex::encode(nonce).as_bytes());
    m.push(b'\n');
    m.extend_from_slice(hex::encode(Sha256::digest(body)).as_bytes());
    m.push(b'\n');
    m.extend_from_slice(hex::encode(token_hash).as_bytes());
    m
}

/// Sign a request (what the node client does).
pub fn sign_http(
    key: &SigningKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    token: &[u8],
    now: SystemTime,
) -> String {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the OS random number generator failed");
    let ts = unix(now);
    let message = http_message(
        method,
        path_and_query,
        ts,
        &nonce,
        body,
        &crate::token::token_hash(token),
    );
    Proof {
        ts,
        nonce,
        sig: key.sign(&message).to_bytes(),
    }
    .encode()
}

fn verify_signature(
    node_key: &VerifyingKey,
    message: &[u8],
    sig: &[u8; 64],
) -> Result<(), PopError> {
    node_key
        .verify_strict(message, &Signature::from_bytes(sig))
        .map_err(|_| PopError::Invalid)
}

/// Check a request's proof: window, signature, then the nonce (so only valid proofs take room
/// in the replay cache).
#[allow(clippy::too_many_arguments)]
pub fn verify_http(
    header: Option<&str>,
    node_key: &VerifyingKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    token_hash: &[u8; 32],
    replay: &ReplayCache,
    now: SystemTime,
) -> Result<(), PopError> {
    let proof = Proof::parse(header.ok_or(PopError::Missing)?)?;
    let now = unix(now);
    if proof.ts.abs_diff(now) > WINDOW.as_secs() {
        return Err(PopError::Stale);
    }
    let message = http_message(
        method,
        path_and_query,
        proof.ts,
        &proof.nonce,
        body,
        token_hash,
    );
    verify_signature(node_key, &message, &proof.sig)?;
    replay.use_once(node_key.as_bytes(), &proof.nonce, now)
}

fn challenge_message(challenge: &[u8], token_hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"keymesh-ws-v1\n".to_vec();
    m.extend_from_slice(hex::encode(challenge).as_bytes());
    m.push(b'\n');
    m.extend_from_slice(hex::encode(token_hash).as_bytes());
    m
}

/// Sign a WebSocket handshake challenge.
pub fn sign_challenge(key: &SigningKey, challenge: &[u8], token: &[u8]) -> [u8; 64] {
    key.sign(&challenge_message(
        challenge,
        &crate::token::token_hash(token),
    ))
    .to_bytes()
}

/// Verify a WebSocket handshake signature.
pub fn verify_challenge(
    node_key: &VerifyingKey,
    challenge: &[u8],
    token_hash: &[u8; 32],
    sig: &[u8; 64],
) -> Result<(), PopError> {
    verify_signature(node_key, &challenge_message(challenge, token_hash), sig)
}

/// What a node signs to enroll: the code it presents (as its SHA-256), its id and its identity
/// key, so the key's holder, and only it, can enroll that key with that code.
fn enrollment_message(code: &str, node_id: &str, node_key: &[u8; 32]) -> Vec<u8> {
    let mut m = b"keymesh-enroll-v1\n".to_vec();
    m.extend_from_slice(node_id.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(node_key);
    m.push(b'\n');
    m.extend_from_slice(&Sha256::digest(code.as_bytes()));
    m
}

/// Sign an enrollment request.
pub fn sign_enrollment(key: &SigningKey, code: &str, node_id: &str) -> [u8; 64] {
    key.sign(&enrollment_message(
        code,
        node_id,
        key.verifying_key().as_bytes(),
    ))
    .to_bytes()
}

/// Verify an enrollment request's signature by the key it enrolls.
pub fn verify_enrollment(
    node_key: &VerifyingKey,
    code: &str,
    node_id: &str,
    sig: &[u8; 64],
) -> Result<(), PopError> {
    verify_signature(
        node_key,
        &enrollment_message(code, node_id, node_key.as_bytes()),
        sig,
    )
}

/// A node's Ed25519 identity key from hex, refusing malformed and weak (small-order) keys.
pub fn identity_key(hex_key: &str) -> Result<VerifyingKey, &'static str> {
    let raw: [u8; 32] = hex::decode(hex_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("public_key must be 32 bytes of hex")?;
    let key =
        VerifyingKey::from_bytes(&raw).map_err(|_| "public_key is not a valid Ed25519 key")?;
    if key.is_weak() {
        return Err("public_key is a weak Ed25519 key");
    }
    Ok(key)
}

/// How long a nonce is remembered after it was first seen: a proof passes the window check
/// while its timestamp is within [`WINDOW`] of now, and its timestamp was within [`WINDOW`] of
/// its arrival.
const REMEMBER: i64 = 2 * WINDOW.as_secs() as i64;

/// Nonces of the proofs seen within the window, per node (by the key that signed them): each
/// node's nonces are its own, a node that sends more than its quota within the window is
/// refused alone (`NodeQuota`), and forgetting is first-in first-out per node, never a scan.
/// Bounded in all: with `total` live nonces it refuses new proofs (fail closed, `Overloaded`)
/// instead of forgetting live ones.
#[derive(Debug)]
pub struct ReplayCache {
    nodes: Mutex<Nodes>,
    per_node: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Nodes {
    by_key: HashMap<[u8; 32], NodeNonces>,
    live: usize,
}

#[derive(Debug, Default)]
struct NodeNonces {
    /// `(forget at, nonce)`, in arrival order.
    order: VecDeque<(i64, [u8; 16])>,
    seen: HashSet<[u8; 16]>,
}

impl NodeNonces {
    /// Forget what is past the window; how many were forgotten.
    fn expire(&mut self, now: i64) -> usize {
        let mut forgot = 0;
        while let Some(&(at, nonce)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
            forgot += 1;
        }
        forgot
    }
}

/// Live nonces the cache holds in all (about 100 MB at worst).
const TOTAL: usize = 1_000_000;

impl Default for ReplayCache {
    /// Sized for the default principal rate limit: 50 a second, bursts of 100.
    fn default() -> Self {
        Self::for_rate(50, 100)
    }
}

impl ReplayCache {
    /// A cache whose per-node quota is what a node may send within the window at the principal
    /// rate limit (`per_second` sustained plus a `burst`), so a node within its rate never meets
    /// it; a million nonces in all.
    pub fn for_rate(per_second: u32, burst: u32) -> Self {
        let in_window = u64::from(per_second)
            .saturating_mul(REMEMBER.unsigned_abs())
            .saturating_add(u64::from(burst));
        let per_node = usize::try_from(in_window).map_or(TOTAL, |n| n.min(TOTAL));
        Self::with_limits(per_node, TOTAL)
    }

    /// A cache holding at most `per_node` live nonces of one node and `total` in all.
    pub fn with_limits(per_node: usize, total: usize) -> Self {
        Self {
            nodes: Mutex::new(Nodes::default()),
            per_node,
            total,
        }
    }

    /// Record a nonce of the node whose key is `node`: `Err(Replayed)` if that node used it
    /// within the window, `Err(NodeQuota)` if the node has its quota of live nonces.
    pub fn use_once(&self, node: &[u8; 32], nonce: &[u8; 16], now: i64) -> Result<(), PopError> {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Nodes { by_key, live } = &mut *nodes;
        if let Some(mine) = by_key.get_mut(node) {
            *live -= mine.expire(now);
            if mine.seen.contains(nonce) {
                return Err(PopError::Replayed);
            }
            if mine.order.len() >= self.per_node {
                return Err(PopError::NodeQuota);
            }
        }
        if *live >= self.total {
            // Rare: sweep every node once, dropping the idle ones.
            by_key.retain(|_, n| {
                *live -= n.expire(now);
                !n.order.is_empty()
            });
            if *live >= self.total {
                return Err(PopError::Overloaded);
            }
        }
        let mine = by_key.entry(*node).or_default();
        mine.order.push_back((now.saturating_add(REMEMBER), *nonce));
        mine.seen.insert(*nonce);
        *live += 1;
        Ok(())
    }

    /// Live nonces in all.
    pub fn len(&self) -> usize {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .live
    }

    /// Whether no nonce is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{random_key, token_hash};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&random_key())
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let k = key();
        let token = b"token-bytes";
        let now = SystemTime::now();
        let header = sign_http(&k, "POST", "/v1/x?a=1", b"{}", token, now);
        let replay = ReplayCache::default();
        let pk = k.verifying_key();
        let th = token_hash(token);
        verify_http(
            Some(&header),
            &pk,
            "POST",
            "/v1/x?a=1",
            b"{}",
            &th,
            &replay,
            now,
        )
        .expect("valid");
        assert_eq!(
            verify_http(
                Some(&header),
                &pk,
                "POST",
                "/v1/x?a=1",
                b"{}",
                &th,
                &replay,
                now
            ),
            Err(PopError::Replayed)
        );
    }

    #[test]
    fn any_change_breaks_the_proof() {
        let k = key();
        let now = SystemTime::now();
        let token = b"token-bytes";
        let header = sign_http(&k, "POST", "/v1/x", b"body", token, now);
        let pk = k.verifying_key();
        let th = token_hash(token);
        let other_key = key().verifying_key();
        let other_token = token_hash(b"other token");
        type Case<'a> = (&'a VerifyingKey, &'a str, &'a str, &'a [u8], &'a [u8; 32]);
        let cases: [Case<'_>; 5] = [
            (&pk, "PUT", "/v1/x", b"body", &th),
            (&pk, "POST", "/v1/y", b"body", &th),
            (&pk, "POST", "/v1/x", b"bodz", &th),
            (&pk, "POST", "/v1/x", b"body", &other_token),
            (&other_key, "POST", "/v1/x", b"body", &th),
        ];
        for (key, method, path, body, token_hash) in cases {
            let replay = ReplayCache::default();
            assert_eq!(
                verify_http(
                    Some(&header),
                    key,
                    method,
                    path,
                    body,
                    token_hash,
                    &replay,
                    now
                ),
                Err(PopError::Invalid),
                "{method} {path}"
            );
        }
        let replay = ReplayCache::default();
        assert_eq!(
            verify_http(None, &pk, "POST", "/v1/x", b"body", &th, &replay, now),
            Err(PopError::Missing)
        );
        let late = now + Duration::from_secs(61);
        assert_eq!(
            verify_http(
                Some(&header),
                &pk,
                "POST",
                "/v1/x",
                b"body",
                &th,
                &replay,
                late
            ),
            Err(PopError::Stale)
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_panics() {
        let k = key();
        let replay = ReplayCache::default();
        for ts in [i64::MIN, i64::MAX, -1] {
            let header = Proof {
                ts,
                nonce: [1; 16],
                sig: [0; 64],
            }
            .encode();
            let r = verify_http(
                Some(&header),
                &k.verifying_key(),
                "GET",
                "/",
                b"",
                &[0; 32],
                &replay,
                SystemTime::now(),
            );
            assert_eq!(r, Err(PopError::Stale), "{ts}");
        }
    }

    #[test]
    fn malformed_headers_are_invalid_not_panics() {
        for bad in [
            "",
            "v2;ts=1;nonce=a;sig=b",
            "v1",
            "v1;ts=x;nonce=a;sig=b",
            "v1;ts=1;nonce=;sig=",
            "v1;nonce=AAAA;ts=1;sig=AAAA",
            "v1;ts=1;nonce=AAAAAAAAAAAAAAAAAAAAAA;sig=AA;x=1",
            &format!("v1;ts=1;nonce={};sig=A", "A".repeat(10_000)),
        ] {
            assert_eq!(Proof::parse(bad), Err(PopError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn replay_cache_forgets_only_expired_nonces_and_fails_closed_when_full() {
        let (a, b, c) = ([0xa; 32], [0xb; 32], [0xc; 32]);
        let cache = ReplayCache::with_limits(10, 2);
        cache.use_once(&a, &[1; 16], 1000).expect("first");
        cache.use_once(&b, &[2; 16], 1000).expect("second");
        assert_eq!(
            cache.use_once(&c, &[3; 16], 1000),
            Err(PopError::Overloaded)
        );
        // Still remembered one second before the end of twice the window; then forgotten.
        assert_eq!(
            cache.use_once(&a, &[1; 16], 1000 + REMEMBER - 1),
            Err(PopError::Replayed)
        );
        cache
            .use_once(&c, &[3; 16], 1000 + REMEMBER)
            .expect("after expiry");
        assert_eq!(cache.len(), 1);
    }

    /// One node flooding signed requests fills only its own share: other nodes go on, and a
    /// nonce is one node's (another node may send the same bytes). On the cache keyed by nonce
    /// alone, the flood refused every node (`Overloaded`, 503).
    #[test]
    fn the_quota_follows_the_principal_rate() {
        let cache = ReplayCache::default();
        assert_eq!((cache.per_node, cache.total), (50 * 120 + 100, TOTAL));
        assert_eq!(ReplayCache::for_rate(1_000_000, 1_000_000).per_node, TOTAL);
    }

    #[test]
    fn a_noisy_node_is_refused_alone() {
        let (noisy, quiet) = ([1; 32], [2; 32]);
        let cache = ReplayCache::with_limits(100, 1_000);
        for n in 0..100u8 {
            cache
                .use_once(&noisy, &[n; 16], 1000)
                .expect("within quota");
        }
        assert_eq!(
            cache.use_once(&noisy, &[200; 16], 1000),
            Err(PopError::NodeQuota)
        );
        for n in 0..100u8 {
            cache
                .use_once(&quiet, &[n; 16], 1000)
                .expect("another node");
        }
        assert_eq!(
            cache.use_once(&quiet, &[7; 16], 1001),
            Err(PopError::Replayed)
        );
        // Its old nonces expire one by one, in order: room for the noisy node again.
        cache
            .use_once(&noisy, &[200; 16], 1000 + REMEMBER)
            .expect("after expiry");
    }

    #[test]
    fn challenge_signatures_bind_the_token() {
        let k = key();
        let sig = sign_challenge(&k, b"challenge", b"token");
        let pk = k.verifying_key();
        verify_challenge(&pk, b"challenge", &token_hash(b"token"), &sig).expect("valid");
        assert!(verify_challenge(&pk, b"challenge", &token_hash(b"other"), &sig).is_err());
        assert!(verify_challenge(&pk, b"challengf", &token_hash(b"token"), &sig).is_err());
    }
}
