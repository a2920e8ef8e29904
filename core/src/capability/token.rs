//! Capability tokens: Biscuit tokens minted by the vault, checked the same way everywhere.
//!
//! The authority block holds facts only the vault can write:
//! `token_id`, `grant` (the grant a refresh keeps and a revocation names), `lineage` (every
//! grant this one was delegated from, and itself), `node`, `group`, `user`, `node_key` (the
//! node's Ed25519 public key, for proof of possession), `right(pattern, op)`, `expires_at`,
//! `epoch(scope, n)` for node, user and group, and `check if time($t), $t <= expiry`.
//!
//! Holders may append blocks (offline attenuation). Facts in appended blocks are not trusted by
//! the authorizer's policy, so a block can only add checks: it can narrow, never widen. The
//! request is authorized by the real Biscuit authorizer, with the request's `time`,
//! `operation`, `resource` and one `resource_pattern` fact per pattern that covers the resource
//! (`*`, `a/*`, `a/b/*`, `a/b/c`), and the policy
//! `allow if operation($op), resource_pattern($p), right($p, $op)`: an exact join, no string
//! matching on patterns. That is the reference semantics. Tokens with no appended block, or
//! only blocks of the forms [`VerifiedToken::attenuate`] writes (see [`super::narrowing`]), are
//! decided by a direct evaluation property-tested to agree with it; every other token is
//! decided by the authorizer itself.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use biscuit_auth::{
    Algorithm, AuthorizerBuilder, AuthorizerLimits, Biscuit, KeyPair, PrivateKey, PublicKey,
    builder::{Term, fact, string},
    error::{Format, Logic, RunLimit, Token as BiscuitError},
};
use sha2::{Digest, Sha256};

use super::{
    narrowing::{self, Narrowing, Refusal},
    rights::{Op, Right},
};

pub use keymesh_proto::token::{MAX_TOKEN_BYTES, random_key, token_hash};
/// Most appended blocks accepted.
pub const MAX_BLOCKS: usize = 8;
/// A token with a block of a form Keymesh does not write (decided by the Datalog authorizer):
/// at most this many appended blocks…
pub const MAX_FOREIGN_BLOCKS: usize = 2;
/// …and at most this many bytes.
pub const MAX_FOREIGN_TOKEN_BYTES: usize = 4096;
/// Bytes the token cache of one verifier may hold (estimated per entry).
const CACHE_BYTES: usize = 64 << 20;

/// Why a token is refused. Each maps to a stable error code.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token: bad encoding, bad signature, unknown root key, too big.
    #[error("the token is malformed or not signed by a known root key")]
    Invalid,
    /// Past its expiry (or an attenuation's).
    #[error("the token has expired")]
    Expired,
    /// Revoked, directly, through an ancestor, or by an epoch bump.
    #[error("the token has been revoked")]
    Revoked,
    /// Valid, but does not allow this operation on this resource.
    #[error("the token does not allow this operation")]
    Forbidden,
    /// The authorizer hit its time or size limits.
    #[error("the token took too long to evaluate")]
    Timeout,
}

/// Which revocation epoch.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A node's tokens.
    Node,
    /// A user's tokens (all their nodes).
    User,
    /// A group's tokens.
    Group,
}

impl Scope {
    /// All scopes.
    pub const ALL: [Scope; 3] = [Scope::Node, Scope::User, Scope::Group];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::User => "user",
            Scope::Group => "group",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}"))
    }
}

/// What the vault writes into a token's authority block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Unique per issued token.
    pub token_id: String,
    /// The grant: kept by refresh, named by revocation.
    pub grant: String,
    /// Grants this one descends from, oldest first, ending with `grant`.
    pub lineage: Vec<String>,
    /// The node holding it.
    pub node: String,
    /// The node's group.
    pub group: String,
    /// The user the node belongs to.
    pub user: String,
    /// The node's Ed25519 public key.
    pub node_key: [u8; 32],
    /// What it allows.
    pub rights: Vec<Right>,
    /// Unix seconds.
    pub expires_at: u64,
    /// Epochs at mint time, per scope.
    pub epochs: [(Scope, i64); 3],
    /// For delegated tokens: the node and user epochs of every delegator, so revoking a
    /// delegator's node or user also kills what it delegated.
    pub ancestors: Vec<(Scope, String, i64)>,
    /// For delegated tokens: no refresh may extend the expiry past this (unix seconds).
    pub expiry_cap: Option<u64>,
}

impl Claims {
    /// The subject id of a scope (node, user or group id).
    pub fn subject(&self, scope: Scope) -> &str {
        match scope {
            Scope::Node => &self.node,
            Scope::User => &self.user,
            Scope::Group => &self.group,
        }
    }

    /// The epoch recorded for a scope.
    pub fn epoch(&self, scope: Scope) -> i64 {
        self.epochs
            .iter()
            .find(|(s, _)| *s == scope)
            .map_or(i64::MIN, |(_, e)| *e)
    }
}

/// The root signing keys with their ids and the times they start signing (a rotation announces
/// a key before it signs: every verifier learns it first), plus the public keys that verify.
pub struct KeyRing {
    /// Oldest first; the last one whose `from_ms` has passed signs.
    signers: Vec<Signer>,
    verifying: HashMap<u32, VerifyKey>,
}

struct Signer {
    kid: u32,
    pair: KeyPair,
    from_ms: u64,
}

/// One root public key that verifies, until `until_ms` (unix ms) when it is set; a revoked one
/// is kept only to say so (its tokens are `revoked`, not `invalid_token`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct VerifyKey {
    public: PublicKey,
    until_ms: Option<u64>,
    revoked: bool,
}

/// A root public key as the vault lists it (`GET /v1/tokens/keys`).
#[derive(Clone, Copy, Debug)]
pub struct ListedKey {
    /// Raw Ed25519 public key.
    pub public: [u8; 32],
    /// It verifies until then (unix ms): a retired key, or the current one once its successor
    /// is announced.
    pub until_ms: Option<u64>,
    /// Revoked: every token it signed is refused as `revoked`.
    pub revoked: bool,
}

impl ListedKey {
    /// A key that verifies with no end.
    pub fn trusted(public: [u8; 32]) -> Self {
        Self {
            public,
            until_ms: None,
            revoked: false,
        }
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "signers",
                &self
                    .signers
                    .iter()
                    .map(|s| (s.kid, s.from_ms))
                    .collect::<Vec<_>>(),
            )
            .field("verifying", &self.verifying.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The id of a root public key: the first four bytes of its SHA-256.
pub fn key_id(public: &[u8]) -> u32 {
    let digest = Sha256::digest(public);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn public_key(raw: &[u8; 32]) -> Result<PublicKey, TokenError> {
    PublicKey::from_bytes(raw, Algorithm::Ed25519).map_err(|_| TokenError::Invalid)
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl KeyRing {
    /// A ring signing with `private` (32-byte Ed25519 seed), also verifying `older` keys.
    pub fn new(private: &[u8], older: &[[u8; 32]]) -> Result<Self, TokenError> {
        let older: Vec<ListedKey> = older.iter().map(|k| ListedKey::trusted(*k)).collect();
        Self::scheduled(&[(private, 0, None)], &older)
    }

    /// A ring whose `signers` (seed, unix ms from which it signs, unix ms until which it
    /// verifies once a successor is announced) take over from one another in time; the `older`
    /// keys verify as listed (each until its time, revoked ones never). Every signer verifies
    /// from the start, so a key announced for later is trusted before it signs.
    pub fn scheduled(
        signers: &[(&[u8], u64, Option<u64>)],
        older: &[ListedKey],
    ) -> Result<Self, TokenError> {
        let VerifyKeys(mut verifying) = VerifyKeys::listed(older)?;
        let mut ring = Vec::with_capacity(signers.len());
        for (private, from_ms, until_ms) in signers {
            let key = PrivateKey::from_bytes(private, Algorithm::Ed25519)
                .map_err(|_| TokenError::Invalid)?;
            let pair = KeyPair::from(&key);
            let public = pair.public();
            let kid = key_id(&public.to_bytes());
            verifying.insert(
                kid,
                VerifyKey {
                    public,
                    until_ms: *until_ms,
                    revoked: false,
                },
            );
            ring.push(Signer {
                kid,
                pair,
                from_ms: *from_ms,
            });
        }
        if ring.is_empty() {
            return Err(TokenError::Invalid);
        }
        ring.sort_by_key(|s| s.from_ms);
        Ok(Self {
            signers: ring,
            verifying,
        })
    }

    fn signer_at(&self, now_ms: u64) -> &Signer {
        self.signers
            .iter()
            .rev()
            .find(|s| s.from_ms <= now_ms)
            .or(self.signers.first())
            .expect("a ring has at least one signer (checked at construction)")
    }

    /// The id of the key that signs now.
    pub fn current_id(&self) -> u32 {
        self.signer_at(unix_ms(SystemTime::now())).kid
    }

    /// Sign `statement` with the key that signs tokens now: `(its id, the Ed25519 signature)`.
    /// Only for labelled statements that cannot be mistaken for a Biscuit block (node-identity
    /// attestations, `keymesh_proto::identity`).
    pub fn sign_statement(&self, statement: &[u8]) -> Result<(u32, [u8; 64]), TokenError> {
        let signer = self.signer_at(unix_ms(SystemTime::now()));
        let signature = signer
            .pair
            .sign(statement)
            .map_err(|_| TokenError::Invalid)?;
        let bytes: [u8; 64] = signature
            .to_bytes()
            .try_into()
            .map_err(|_| TokenError::Invalid)?;
        Ok((signer.kid, bytes))
    }

    /// Public keys that verify, by id.
    pub fn public_keys(&self) -> VerifyKeys {
        VerifyKeys(self.verifying.clone())
    }

    /// Mint a token for `claims` (1 to [`MAX_RIGHTS`] rights, at most [`MAX_LINEAGE`] grants).
    pub fn mint(&self, claims: &Claims) -> Result<Vec<u8>, TokenError> {
        if claims.rights.is_empty()
            || claims.rights.len() > MAX_RIGHTS
            || claims.lineage.is_empty()
            || claims.lineage.len() > MAX_LINEAGE
            || claims.ancestors.len() > 2 * MAX_LINEAGE
        {
            return Err(TokenError::Invalid);
        }
        let signer = self.signer_at(unix_ms(SystemTime::now()));
        let build = || -> Result<Vec<u8>, BiscuitError> {
            let expiry = UNIX_EPOCH + Duration::from_secs(claims.expires_at);
            let params = HashMap::from([("exp".to_owned(), Term::from(expiry))]);
            let mut builder = Biscuit::builder()
                .root_key_id(signer.kid)
                .code_with_params("check if time($t), $t <= {exp};", params, HashMap::new())?
                .fact(fact("token_id", &[string(&claims.token_id)]))?
                .fact(fact("grant", &[string(&claims.grant)]))?
                .fact(fact("node", &[string(&claims.node)]))?
                .fact(fact("group", &[string(&claims.group)]))?
                .fact(fact("user", &[string(&claims.user)]))?
                .fact(fact("node_key", &[Term::from(claims.node_key.to_vec())]))?
                .fact(fact("expires_at", &[Term::from(claims.expires_at as i64)]))?;
            for ancestor in &claims.lineage {
                builder = builder.fact(fact("lineage", &[string(ancestor)]))?;
            }
            for right in &claims.rights {
                builder = builder.fact(fact(
                    "right",
                    &[string(right.resource.as_str()), string(right.op.as_str())],
                ))?;
            }
            for (scope, subject, epoch) in &claims.ancestors {
                builder = builder.fact(fact(
                    "ancestor_epoch",
                    &[string(scope.as_str()), string(subject), Term::from(*epoch)],
                ))?;
            }
            if let Some(cap) = claims.expiry_cap {
                builder = builder.fact(fact("expiry_cap", &[Term::from(cap as i64)]))?;
            }
            for (scope, epoch) in &claims.epochs {
                builder =
                    builder.fact(fact("epoch", &[string(scope.as_str()), Term::from(*epoch)]))?;
            }
            builder.build(&signer.pair)?.to_vec()
        };
        build().map_err(|e| {
            tracing::error!(error = %e, "minting a token failed");
            TokenError::Invalid
        })
    }
}

/// Public root keys by id, each with the time it stops verifying when it has one: what every
/// checker needs.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyKeys(HashMap<u32, VerifyKey>);

impl VerifyKeys {
    /// Keys from raw 32-byte Ed25519 public keys, each under its [`key_id`], verifying with no
    /// end.
    pub fn from_public(keys: &[[u8; 32]]) -> Result<Self, TokenError> {
        let keys: Vec<ListedKey> = keys.iter().map(|k| ListedKey::trusted(*k)).collect();
        Self::listed(&keys)
    }

    /// Keys as `GET /v1/tokens/keys` lists them.
    pub fn listed(keys: &[ListedKey]) -> Result<Self, TokenError> {
        keys.iter()
            .map(|k| {
                public_key(&k.public).map(|public| {
                    (
                        key_id(&k.public),
                        VerifyKey {
                            public,
                            until_ms: k.until_ms,
                            revoked: k.revoked,
                        },
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The key `kid` if it verifies at `now_ms`: `Revoked` for a revoked key, `Invalid` for an
    /// unknown one or one past its window.
    fn usable(&self, kid: u32, now_ms: u64) -> Result<PublicKey, TokenError> {
        match self.0.get(&kid) {
            Some(k) if k.revoked => Err(TokenError::Revoked),
            Some(k) if k.until_ms.is_none_or(|until| now_ms < until) => Ok(k.public),
            _ => Err(TokenError::Invalid),
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A token whose signatures have been checked, with its authority claims extracted.
pub struct VerifiedToken {
    /// The authority claims.
    pub claims: Claims,
    /// Revocation ids of every block (hex), authority first.
    pub block_ids: Vec<String>,
    /// SHA-256 of the token bytes.
    pub hash: [u8; 32],
    /// The node key, decompressed once (weak keys refused at verification).
    pub node_key: ed25519_dalek::VerifyingKey,
    /// Every block's checks (the authority's expiry check included) when all of them are
    /// forms Keymesh writes (checked directly); `None` when any is not (checked by the Biscuit
    /// authorizer).
    narrowing: Option<Vec<Narrowing>>,
    /// The parsed token, kept only when the Biscuit authorizer decides its requests (a parsed
    /// `Biscuit` is about 6 KiB, and this is held per cached token and per open connection);
    /// otherwise it is parsed again from `bytes` in the rare calls that need it.
    biscuit: Option<Box<Biscuit>>,
    /// The token's bytes.
    bytes: Box<[u8]>,
    /// The root key its signatures verified under, and its id.
    root: PublicKey,
    /// The id of [`root`](Self::root) (revocable on the feed, and bounded in time).
    pub root_kid: u32,
    /// Blocks, authority included.
    blocks: usize,
}

impl std::fmt::Debug for VerifiedToken {
    /// The token's bytes (a credential, if one bound to its node key) are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("claims", &self.claims)
            .field("block_ids", &self.block_ids)
            .field("hash", &hex::encode(self.hash))
            .field("checked_directly", &self.narrowing.is_some())
            .field("blocks", &self.blocks)
            .field("bytes", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    /// Roughly what this token holds in memory: the struct, its bytes, its claims and block
    /// ids, and the parsed token when kept (about 6 KiB).
    fn footprint(&self) -> usize {
        let claims: usize = self
            .claims
            .rights
            .iter()
            .map(|r| r.resource.as_str().len() + 32)
            .sum::<usize>()
            + self.claims.node.len()
            + self.claims.grant.len()
            + 256;
        std::mem::size_of::<Self>()
            + self.bytes.len()
            + claims
            + self.block_ids.len() * 96
            + self.narrowing.as_ref().map_or(0, |n| n.len() * 128)
            + if self.biscuit.is_some() { 8192 } else { 0 }
    }

    /// Number of appended (attenuation) blocks.
    pub fn attenuations(&self) -> usize {
        self.blocks.saturating_sub(1)
    }

    /// The parsed token: the kept one, or parsed again (signatures verified again) from its
    /// bytes under the root key that verified it before.
    fn biscuit(&self) -> Result<std::borrow::Cow<'_, Biscuit>, TokenError> {
        match &self.biscuit {
            Some(b) => Ok(std::borrow::Cow::Borrowed(&**b)),
            None => Biscuit::from(&self.bytes, self.root)
                .map(std::borrow::Cow::Owned)
                .map_err(|_| TokenError::Invalid),
        }
    }

    /// Whether every check is evaluated without Datalog (no appended block, or only blocks of
    /// the forms [`VerifiedToken::attenuate`] writes).
    pub fn checked_directly(&self) -> bool {
        self.narrowing.is_some()
    }

    /// Append an attenuation block restricting operations, resources and expiry (what a holder
    /// does offline). Returns the new token bytes.
    pub fn attenuate(
        &self,
        ops: Option<&[Op]>,
        prefix: Option<&str>,
        expires_at: Option<u64>,
    ) -> Result<Vec<u8>, TokenError> {
        let biscuit = self.biscuit()?;
        attenuate(&biscuit, ops, prefix, expires_at)
    }
}

/// Append a narrowing block to token bytes without verifying them (holders do this offline;
/// the verifier checks everything).
pub fn attenuate_bytes(
    token: &[u8],
    root: &VerifyKeys,
    ops: Option<&[Op]>,
    prefix: Option<&str>,
    expires_at: Option<u64>,
) -> Result<Vec<u8>, TokenError> {
    let biscuit = parse(token, root)?;
    attenuate(&biscuit, ops, prefix, expires_at)
}

fn attenuate(
    biscuit: &Biscuit,
    ops: Option<&[Op]>,
    prefix: Option<&str>,
    expires_at: Option<u64>,
) -> Result<Vec<u8>, TokenError> {
    let build = || -> Result<Vec<u8>, BiscuitError> {
        let mut block = biscuit_auth::BlockBuilder::new();
        if let Some(ops) = ops {
            let set: std::collections::BTreeSet<Term> =
                ops.iter().map(|op| string(op.as_str())).collect();
            block = block.code_with_params(
                "check if operation($op), {ops}.contains($op);",
                HashMap::from([("ops".to_owned(), Term::Set(set))]),
                HashMap::new(),
            )?;
        }
        if let Some(prefix) = prefix {
            block = block.code_with_params(
                "check if resource($r), $r.starts_with({prefix});",
                HashMap::from([("prefix".to_owned(), Term::from(prefix))]),
                HashMap::new(),
            )?;
        }
        if let Some(exp) = expires_at {
            let expiry = UNIX_EPOCH + Duration::from_secs(exp);
            block = block.code_with_params(
                "check if time($t), $t <= {exp};",
                HashMap::from([("exp".to_owned(), Term::from(expiry))]),
                HashMap::new(),
            )?;
        }
        biscuit.append(block)?.to_vec()
    };
    build().map_err(|_| TokenError::Invalid)
}

fn parse(token: &[u8], keys: &VerifyKeys) -> Result<Biscuit, TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid);
    }
    let now_ms = unix_ms(SystemTime::now());
    // A revoked root key is named as such rather than as an unknown one.
    let refused = std::cell::Cell::new(TokenError::Invalid);
    let provider = |id: Option<u32>| -> Result<PublicKey, Format> {
        let id = id.ok_or(Format::UnknownPublicKey)?;
        keys.usable(id, now_ms).map_err(|e| {
            refused.set(e);
            Format::UnknownPublicKey
        })
    };
    let biscuit = Biscuit::from(token, provider).map_err(|_| refused.get())?;
    if biscuit.block_count() > MAX_BLOCKS + 1 {
        return Err(TokenError::Invalid);
    }
    Ok(biscuit)
}

/// What a verifier asks of its revocation state.
pub trait RevocationView: Send + Sync {
    /// `Err(Revoked)` when any of the token's grants or blocks is revoked or an epoch is stale;
    /// also `Err(Revoked)` when the view is too old to trust (fail closed).
    fn check(&self, token: &VerifiedToken) -> Result<(), TokenError>;
}

/// The resource and operation a request wants.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Operation.
    pub op: Op,
    /// A secret path, or for `list` a prefix ending in `/` (or empty for everything).
    pub resource: &'a str,
}

/// Every pattern that covers `resource`: `*`, `a/*`, `a/b/*`, and `a/b/c` itself. For a list
/// prefix `a/b/`, the exact form is omitted (a prefix is not a path).
pub fn covering_patterns(resource: &str) -> Vec<String> {
    let mut patterns = vec!["*".to_owned()];
    let mut end = 0;
    while let Some(i) = resource[end..].find('/') {
        end += i + 1;
        patterns.push(format!("{}*", &resource[..end]));
    }
    if !resource.is_empty() && !resource.ends_with('/') {
        patterns.push(resource.to_owned());
    }
    patterns
}

/// Checks tokens: parses and verifies signatures once per distinct token, then checks expiry,
/// revocation and the request on every use. A token enters the cache (by hash, bounded by bytes)
/// only once its holder proved possession ([`Verifier::remember`]): a captured token attenuated
/// offline into endless distinct valid tokens costs a signature check each, and no memory.
pub struct Verifier {
    keys: VerifyKeys,
    cache: RwLock<TokenCache>,
    cache_bytes: usize,
    limits: AuthorizerLimits,
}

#[derive(Default)]
struct TokenCache {
    tokens: HashMap<[u8; 32], Arc<VerifiedToken>>,
    bytes: usize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.0.len())
            .finish()
    }
}

impl Verifier {
    /// A verifier for tokens signed by `keys`.
    pub fn new(keys: VerifyKeys) -> Self {
        Self {
            keys,
            cache: RwLock::new(TokenCache::default()),
            cache_bytes: CACHE_BYTES,
            // Explicit: the default 1 ms was exceeded by scheduling alone on busy machines.
            limits: AuthorizerLimits {
                max_facts: 1000,
                max_iterations: 100,
                max_time: Duration::from_millis(50),
            },
        }
    }

    /// The root keys it trusts.
    pub fn keys(&self) -> &VerifyKeys {
        &self.keys
    }

    /// What the cache holds: entries and their estimated bytes.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (cache.tokens.len(), cache.bytes)
    }

    fn cached_token(&self, hash: &[u8; 32]) -> Option<Arc<VerifiedToken>> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tokens
            .get(hash)
            .cloned()
    }

    /// Cache a token whose holder proved possession (or that needs no proof), so its next use
    /// skips the signature checks. A full cache (by estimated bytes) starts over.
    pub fn remember(&self, verified: &Arc<VerifiedToken>) {
        // The common case, a token served from the cache: no write lock.
        if self.cached_token(&verified.hash).is_some() {
            return;
        }
        let size = verified.footprint();
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.tokens.contains_key(&verified.hash) {
            return;
        }
        if cache.bytes + size > self.cache_bytes {
            cache.tokens.clear();
            cache.bytes = 0;
        }
        cache.tokens.insert(verified.hash, Arc::clone(verified));
        cache.bytes += size;
    }

    /// Parse, verify signatures and read the claims and checks: from the cache when this token
    /// was [remembered](Self::remember), else verified now (and not cached).
    pub fn verify(&self, token: &[u8]) -> Result<Arc<VerifiedToken>, TokenError> {
        let hash = token_hash(token);
        if let Some(hit) = self.cached_token(&hash) {
            return Ok(hit);
        }
        let biscuit = parse(token, &self.keys)?;
        // Signatures are verified: read the same bytes' blocks directly (see `narrowing`).
        let layout = narrowing::read(token).ok_or(TokenError::Invalid)?;
        if layout.checks.is_none() {
            // Each such token costs an authorizer per request: keep them small and shallow.
            if token.len() > MAX_FOREIGN_TOKEN_BYTES
                || biscuit.block_count() > MAX_FOREIGN_BLOCKS + 1
            {
                return Err(TokenError::Invalid);
            }
            // A block of a form Keymesh does not write: it must load into an authorizer, which
            // is what will decide every request for it.
            AuthorizerBuilder::new()
                .set_limits(self.limits.clone())
                .build(&biscuit)
                .map_err(|_| TokenError::Invalid)?;
        }
        let claims = claims_from_facts(layout.authority_facts)?;
        let node_key = ed25519_dalek::VerifyingKey::from_bytes(&claims.node_key)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or(TokenError::Invalid)?;
        let root_kid = biscuit.root_key_id().ok_or(TokenError::Invalid)?;
        let root = self.keys.usable(root_kid, unix_ms(SystemTime::now()))?;
        let verified = Arc::new(VerifiedToken {
            node_key,
            claims,
            block_ids: biscuit
                .revocation_identifiers()
                .iter()
                .map(hex::encode)
                .collect(),
            hash,
            bytes: token.into(),
            root,
            root_kid,
            blocks: biscuit.block_count(),
            biscuit: layout.checks.is_none().then(|| Box::new(biscuit)),
            narrowing: layout.checks,
        });
        Ok(verified)
    }

    /// The whole check for one request that needs no proof of possession: signatures (cached
    /// once allowed), expiry, revocation, rights.
    pub fn authorize(
        &self,
        token: &[u8],
        request: &Request<'_>,
        revocation: &dyn RevocationView,
        now: SystemTime,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let verified = self.verify(token)?;
        self.authorize_verified(&verified, request, revocation, now)?;
        self.remember(&verified);
        Ok(verified)
    }

    /// Expiry and revocation only: is this token alive at all?
    pub fn check_alive(
        &self,
        verified: &VerifiedToken,
        revocation: &dyn RevocationView,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now_secs > verified.claims.expires_at {
            return Err(TokenError::Expired);
        }
        // A cached token outlives neither its root key's verifying window nor a reload of the
        // keys that dropped it.
        self.keys.usable(verified.root_kid, unix_ms(now))?;
        revocation.check(verified)
    }

    /// Expiry, revocation and the request, for an already verified token.
    pub fn authorize_verified(
        &self,
        verified: &VerifiedToken,
        request: &Request<'_>,
        revocation: &dyn RevocationView,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        self.check_alive(verified, revocation, now)?;
        self.check_request(verified, request, now)
    }

    /// The request against the token's rights and its blocks' checks, for a token already
    /// known to be alive ([`Verifier::check_alive`]).
    pub fn check_request(
        &self,
        verified: &VerifiedToken,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        let Some(checks) = &verified.narrowing else {
            return self.authorize_datalog(verified, request, now);
        };
        // The authority block's rights and every block's recognised checks (the authority's
        // expiry among them) are evaluated directly. This is exactly what the authorizer decides,
        // down to the error (property-tested against it), without building an authorizer per
        // request. As there, no matching allow policy is `Forbidden` whatever else failed.
        if !authority_allows(&verified.claims.rights, request) {
            return Err(TokenError::Forbidden);
        }
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        narrowing::evaluate(checks, request.op, request.resource, now_secs).map_err(|r| match r {
            Refusal::Expired => TokenError::Expired,
            Refusal::Forbidden => TokenError::Forbidden,
        })
    }

    /// The Biscuit authorizer over the request: the reference semantics, and the path of every
    /// token with an appended block of a form Keymesh does not write.
    pub fn authorize_datalog(
        &self,
        verified: &VerifiedToken,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        let biscuit = verified.biscuit()?;
        decision(
            self.request_authorizer(&biscuit, request, now)
                .and_then(|mut a| a.authorize()),
        )
    }

    fn request_authorizer(
        &self,
        biscuit: &Biscuit,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<biscuit_auth::Authorizer, BiscuitError> {
        let mut builder = AuthorizerBuilder::new()
            .set_limits(self.limits.clone())
            .fact(fact("time", &[Term::from(now)]))?
            .fact(fact("operation", &[string(request.op.as_str())]))?
            .fact(fact("resource", &[string(request.resource)]))?;
        for pattern in covering_patterns(request.resource) {
            builder = builder.fact(fact("resource_pattern", &[string(&pattern)]))?;
        }
        builder
            .policy("allow if operation($op), resource_pattern($p), right($p, $op)")?
            .build(biscuit)
    }
}

/// Map an authorizer outcome to a token error.
fn decision(result: Result<usize, BiscuitError>) -> Result<(), TokenError> {
    match result {
        Ok(_) => Ok(()),
        Err(BiscuitError::RunLimit(RunLimit::Timeout)) => Err(TokenError::Timeout),
        Err(BiscuitError::RunLimit(_)) => Err(TokenError::Forbidden),
        Err(BiscuitError::FailedLogic(Logic::Unauthorized { checks, .. }))
            if checks_mention_time(&checks) =>
        {
            Err(TokenError::Expired)
        }
        Err(_) => Err(TokenError::Forbidden),
    }
}

/// Whether authority rights allow the request: some right with the request's operation whose
/// pattern is one of the request's covering patterns (`*`, an ancestor `a/*`, or the path).
fn authority_allows(rights: &[Right], request: &Request<'_>) -> bool {
    let resource = request.resource;
    rights.iter().filter(|r| r.op == request.op).any(|r| {
        let pattern = r.resource.as_str();
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                prefix.is_empty() || (prefix.ends_with('/') && resource.starts_with(prefix))
            }
            None => pattern == resource && !resource.ends_with('/'),
        }
    })
}

fn checks_mention_time(checks: &[biscuit_auth::error::FailedCheck]) -> bool {
    checks.iter().any(|c| format!("{c:?}").contains("time($t)"))
}

/// Rights from `(pattern, op)` strings; anything that does not parse makes the token invalid.
fn parse_rights(raw: impl IntoIterator<Item = (String, String)>) -> Result<Vec<Right>, TokenError> {
    raw.into_iter()
        .map(|(resource, op)| {
            Ok(Right {
                resource: resource.parse().map_err(|_| TokenError::Invalid)?,
                op: op.parse().map_err(|_| TokenError::Invalid)?,
            })
        })
        .collect()
}

/// The node, user and group epochs; each must be present.
fn scope_epochs(epochs: &HashMap<String, i64>) -> Result<[(Scope, i64); 3], TokenError> {
    let epoch = |scope: Scope| {
        epochs
            .get(scope.as_str())
            .copied()
            .ok_or(TokenError::Invalid)
    };
    Ok([
        (Scope::Node, epoch(Scope::Node)?),
        (Scope::User, epoch(Scope::User)?),
        (Scope::Group, epoch(Scope::Group)?),
    ])
}

/// Read the claims from the authority block's facts. Unknown or duplicated facts make the
/// token invalid.
fn claims_from_facts(facts: Vec<biscuit_auth::builder::Fact>) -> Result<Claims, TokenError> {
    fn put<T>(slot: &mut Option<T>, value: T) -> Result<(), TokenError> {
        if slot.replace(value).is_some() {
            Err(TokenError::Invalid)
        } else {
            Ok(())
        }
    }
    let (mut token_id, mut grant, mut node, mut group, mut user) = (None, None, None, None, None);
    let (mut node_key, mut expires_at) = (None, None);
    let mut lineage = std::collections::BTreeSet::new();
    let mut rights = std::collections::BTreeSet::new();
    let mut epochs: HashMap<String, i64> = HashMap::new();
    let mut ancestors = std::collections::BTreeSet::new();
    let mut expiry_cap = None;
    for fact in facts {
        let p = fact.predicate;
        match (p.name.as_str(), p.terms.as_slice()) {
            ("token_id", [Term::Str(v)]) => put(&mut token_id, v.clone())?,
            ("grant", [Term::Str(v)]) => put(&mut grant, v.clone())?,
            ("node", [Term::Str(v)]) => put(&mut node, v.clone())?,
            ("group", [Term::Str(v)]) => put(&mut group, v.clone())?,
            ("user", [Term::Str(v)]) => put(&mut user, v.clone())?,
            ("node_key", [Term::Bytes(v)]) => {
                put(
                    &mut node_key,
                    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| TokenError::Invalid)?,
                )?;
            }
            ("expires_at", [Term::Integer(v)]) => {
                put(
                    &mut expires_at,
                    u64::try_from(*v).map_err(|_| TokenError::Invalid)?,
                )?;
            }
            ("lineage", [Term::Str(v)]) => {
                lineage.insert(v.clone());
            }
            ("right", [Term::Str(r), Term::Str(o)]) => {
                rights.insert((r.clone(), o.clone()));
            }
            ("ancestor_epoch", [Term::Str(scope), Term::Str(subject), Term::Integer(e)]) => {
                let scope: Scope = scope.parse().map_err(|_| TokenError::Invalid)?;
                ancestors.insert((scope, subject.clone(), *e));
            }
            ("expiry_cap", [Term::Integer(v)]) => {
                put(
                    &mut expiry_cap,
                    u64::try_from(*v).map_err(|_| TokenError::Invalid)?,
                )?;
            }
            ("epoch", [Term::Str(scope), Term::Integer(e)]) => {
                if epochs.insert(scope.clone(), *e).is_some() {
                    return Err(TokenError::Invalid);
                }
            }
            _ => return Err(TokenError::Invalid),
        }
    }
    if rights.is_empty()
        || rights.len() > MAX_RIGHTS
        || lineage.is_empty()
        || lineage.len() > MAX_LINEAGE
    {
        return Err(TokenError::Invalid);
    }
    let missing = TokenError::Invalid;
    Ok(Claims {
        token_id: token_id.ok_or(missing)?,
        grant: grant.ok_or(missing)?,
        lineage: lineage.into_iter().collect(),
        node: node.ok_or(missing)?,
        group: group.ok_or(missing)?,
        user: user.ok_or(missing)?,
        node_key: node_key.ok_or(missing)?,
        rights: parse_rights(rights)?,
        ancestors: ancestors.into_iter().collect(),
        expiry_cap,
        expires_at: expires_at.ok_or(missing)?,
        epochs: scope_epochs(&epochs)?,
    })
}

/// Most rights a token may carry.
pub const MAX_RIGHTS: usize = 32;
/// Deepest delegation chain (grants in the lineage).
pub const MAX_LINEAGE: usize = 8;

/// The reference reading of the claims, through the authorizer (tests hold the direct reading
/// to it): one query joining the single-valued facts with every right, lineage grant and epoch
/// (bounded by [`MAX_RIGHTS`] × [`MAX_LINEAGE`] × 3 rows). A single-valued fact present twice
/// shows up as rows that disagree, which is refused.
#[cfg(test)]
fn extract_claims(authorizer: &mut biscuit_auth::Authorizer) -> Result<Claims, TokenError> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        Vec<u8>,
        i64,
        String,
        String,
        String,
        String,
        i64,
    );
    let rows: Vec<Row> = authorizer
        .query(
            "data($id, $grant, $node, $group, $user, $key, $exp, $res, $op, $lin, $scope, $epoch) <- \
             token_id($id), grant($grant), node($node), group($group), user($user), node_key($key), \
             expires_at($exp), right($res, $op), lineage($lin), epoch($scope, $epoch)",
        )
        .map_err(|_| TokenError::Invalid)?;
    let first = rows.first().ok_or(TokenError::Invalid)?;
    let singletons = |r: &Row| {
        (
            r.0.clone(),
            r.1.clone(),
            r.2.clone(),
            r.3.clone(),
            r.4.clone(),
            r.5.clone(),
            r.6,
        )
    };
    let single = singletons(first);
    let mut rights = std::collections::BTreeSet::new();
    let mut lineage = std::collections::BTreeSet::new();
    let mut epochs: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        if singletons(row) != single {
            return Err(TokenError::Invalid);
        }
        rights.insert((row.7.clone(), row.8.clone()));
        lineage.insert(row.9.clone());
        if *epochs.entry(row.10.clone()).or_insert(row.11) != row.11 {
            return Err(TokenError::Invalid);
        }
    }
    if rights.len() > MAX_RIGHTS || lineage.len() > MAX_LINEAGE || epochs.len() != 3 {
        return Err(TokenError::Invalid);
    }
    let (token_id, grant, node, group, user, key, expiry) = single;
    // Optional facts (delegated tokens only) cannot join the query above: zero rows.
    let raw_ancestors: Vec<(String, String, i64)> = authorizer
        .query("data($s, $n, $e) <- ancestor_epoch($s, $n, $e)")
        .map_err(|_| TokenError::Invalid)?;
    let mut ancestors = Vec::with_capacity(raw_ancestors.len());
    for (scope, subject, e) in raw_ancestors {
        ancestors.push((
            scope.parse::<Scope>().map_err(|_| TokenError::Invalid)?,
            subject,
            e,
        ));
    }
    ancestors.sort();
    let caps: Vec<(i64,)> = authorizer
        .query("data($c) <- expiry_cap($c)")
        .map_err(|_| TokenError::Invalid)?;
    let expiry_cap = match caps.as_slice() {
        [] => None,
        [(c,)] => Some(u64::try_from(*c).map_err(|_| TokenError::Invalid)?),
        _ => return Err(TokenError::Invalid),
    };
    Ok(Claims {
        ancestors,
        expiry_cap,
        token_id,
        grant,
        lineage: lineage.into_iter().collect(),
        node,
        group,
        user,
        node_key: key.as_slice().try_into().map_err(|_| TokenError::Invalid)?,
        rights: parse_rights(rights)?,
        expires_at: u64::try_from(expiry).map_err(|_| TokenError::Invalid)?,
        epochs: scope_epochs(&epochs)?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    struct NoRevocations;
    impl RevocationView for NoRevocations {
        fn check(&self, _: &VerifiedToken) -> Result<(), TokenError> {
            Ok(())
        }
    }

    struct RevokedGrant(&'static str);
    impl RevocationView for RevokedGrant {
        fn check(&self, t: &VerifiedToken) -> Result<(), TokenError> {
            if t.claims.lineage.iter().any(|g| g == self.0) {
                Err(TokenError::Revoked)
            } else {
                Ok(())
            }
        }
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn claims(rights: &[(&str, Op)]) -> Claims {
        Claims {
            token_id: "t1".into(),
            grant: "g1".into(),
            lineage: vec!["g1".into()],
            node: "n1".into(),
            group: "team".into(),
            user: "u1".into(),
            node_key: ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes(),
            rights: rights
                .iter()
                .map(|(r, op)| Right {
                    resource: r.parse().expect("pattern"),
                    op: *op,
                })
                .collect(),
            expires_at: now_secs() + 3600,
            epochs: [(Scope::Node, 1), (Scope::User, 2), (Scope::Group, 3)],
            ancestors: Vec::new(),
            expiry_cap: None,
        }
    }

    fn ring() -> KeyRing {
        KeyRing::new(random_key().as_ref(), &[]).expect("ring")
    }

    fn check(v: &Verifier, token: &[u8], op: Op, resource: &str) -> Result<(), TokenError> {
        v.authorize(
            token,
            &Request { op, resource },
            &NoRevocations,
            SystemTime::now(),
        )
        .map(drop)
    }

    #[test]
    fn a_directly_checked_token_does_not_keep_its_parsed_biscuit_but_still_attenuates() {
        let ring = ring();
        let token = ring.mint(&claims(&[("db/*", Op::Read)])).expect("mint");
        let v = Verifier::new(ring.public_keys());
        let verified = v.verify(&token).expect("verify");
        assert!(verified.checked_directly());
        assert!(verified.biscuit.is_none(), "~6 KiB per cached token saved");
        let shown = format!("{verified:?}");
        assert!(shown.contains("[redacted]") && !shown.contains(&format!("{:?}", &token[..8])));
        let narrowed = verified
            .attenuate(Some(&[Op::Read]), Some("db/a"), None)
            .expect("attenuate from the bytes");
        let narrowed = v.verify(&narrowed).expect("verify the attenuated token");
        assert_eq!(narrowed.attenuations(), 1);
        assert!(narrowed.biscuit.is_none());
        // The reference authorizer still decides it, parsing the bytes again.
        let request = Request {
            op: Op::Read,
            resource: "db/b",
        };
        assert_eq!(
            v.authorize_datalog(&narrowed, &request, SystemTime::now()),
            Err(TokenError::Forbidden)
        );
    }

    #[test]
    fn mint_verify_and_extract_claims_round_trip() {
        let ring = ring();
        let c = claims(&[("db/*", Op::Read), ("app/config", Op::Write)]);
        let token = ring.mint(&c).expect("mint");
        let v = Verifier::new(ring.public_keys());
        let verified = v.verify(&token).expect("verify");
        let mut expected = c.clone();
        expected.rights.sort();
        let mut got = verified.claims.clone();
        got.rights.sort();
        assert_eq!(got, expected);
        assert_eq!(verified.attenuations(), 0);
    }

    #[test]
    fn rights_match_exactly_with_no_prefix_confusion() {
        let ring = ring();
        let token = ring
            .mint(&claims(&[("db/*", Op::Read), ("app/config", Op::Write)]))
            .expect("mint");
        let v = Verifier::new(ring.public_keys());
        check(&v, &token, Op::Read, "db/password").expect("prefix right");
        check(&v, &token, Op::Read, "db/replica/password").expect("nested");
        check(&v, &token, Op::Write, "app/config").expect("exact right");
        for (op, resource) in [
            (Op::Read, "dbx/password"),
            (Op::Read, "db"),
            (Op::Write, "db/password"),
            (Op::Read, "app/config"),
            (Op::Write, "app/config2"),
            (Op::Write, "app/config/x"),
        ] {
            assert_eq!(
                check(&v, &token, op, resource),
                Err(TokenError::Forbidden),
                "{op} {resource}"
            );
        }
        // Listing: the prefix must be covered by a wildcard right.
        let lister = ring.mint(&claims(&[("db/*", Op::List)])).expect("mint");
        check(&v, &lister, Op::List, "db/").expect("list under db/");
        check(&v, &lister, Op::List, "db/replica/").expect("list deeper");
        assert_eq!(check(&v, &lister, Op::List, ""), Err(TokenError::Forbidden));
    }

    #[test]
    fn attenuation_narrows_and_appended_facts_cannot_widen() {
        let ring = ring();
        let token = ring
            .mint(&claims(&[("*", Op::Read), ("*", Op::Write)]))
            .expect("mint");
        let v = Verifier::new(ring.public_keys());
        let narrowed = v
            .verify(&token)
            .expect("verify")
            .attenuate(Some(&[Op::Read]), Some("db/"), None)
            .expect("attenuate");
        check(&v, &narrowed, Op::Read, "db/password").expect("still allowed");
        assert_eq!(
            check(&v, &narrowed, Op::Write, "db/password"),
            Err(TokenError::Forbidden)
        );
        assert_eq!(
            check(&v, &narrowed, Op::Read, "app/x"),
            Err(TokenError::Forbidden)
        );

        // A holder appends facts claiming more: they are not trusted.
        let small = ring.mint(&claims(&[("db/a", Op::Read)])).expect("mint");
        let biscuit = parse(&small, &ring.public_keys()).expect("parse");
        let forged = biscuit
            .append(
                biscuit_auth::BlockBuilder::new()
                    .code(r#"right("*", "admin"); right("*", "read"); resource_pattern("*"); operation("read"); node("n2");"#)
                    .expect("code"),
            )
            .expect("append")
            .to_vec()
            .expect("bytes");
        assert_eq!(
            check(&v, &forged, Op::Read, "db/b"),
            Err(TokenError::Forbidden)
        );
        assert_eq!(
            check(&v, &forged, Op::Admin, "db/a"),
            Err(TokenError::Forbidden)
        );
        assert_eq!(
            v.verify(&forged).expect("verify").claims.node,
            "n1",
            "claims come from the authority block only"
        );
    }

    #[test]
    fn expiry_from_the_token_or_an_attenuation_is_enforced() {
        let ring = ring();
        let v = Verifier::new(ring.public_keys());
        let mut c = claims(&[("*", Op::Read)]);
        c.expires_at = now_secs() - 1;
        let expired = ring.mint(&c).expect("mint");
        assert_eq!(check(&v, &expired, Op::Read, "a"), Err(TokenError::Expired));

        let token = ring.mint(&claims(&[("*", Op::Read)])).expect("mint");
        let short = v
            .verify(&token)
            .expect("verify")
            .attenuate(None, None, Some(now_secs() + 60))
            .expect("attenuate");
        check(&v, &short, Op::Read, "a").expect("valid now");
        let later = SystemTime::now() + Duration::from_secs(120);
        let r = v.authorize(
            &short,
            &Request {
                op: Op::Read,
                resource: "a",
            },
            &NoRevocations,
            later,
        );
        assert_eq!(r.map(drop), Err(TokenError::Expired));
    }

    #[test]
    fn other_root_keys_malformed_bytes_and_oversize_are_invalid() {
        let ring = ring();
        let other = self::ring();
        let v = Verifier::new(ring.public_keys());
        let foreign = other.mint(&claims(&[("*", Op::Read)])).expect("mint");
        assert_eq!(v.verify(&foreign).map(drop), Err(TokenError::Invalid));
        let token = ring.mint(&claims(&[("*", Op::Read)])).expect("mint");
        for bad in [
            Vec::new(),
            b"not a token".to_vec(),
            token[..token.len() / 2].to_vec(),
            vec![0u8; MAX_TOKEN_BYTES + 1],
        ] {
            assert_eq!(v.verify(&bad).map(drop), Err(TokenError::Invalid));
        }
        let mut flipped = token.clone();
        let mid = flipped.len() / 3;
        flipped[mid] ^= 0x01;
        assert_eq!(v.verify(&flipped).map(drop), Err(TokenError::Invalid));
    }

    #[test]
    fn cold_checks_of_attenuated_tokens_decide_like_warm_ones() {
        let ring = ring();
        let token = ring
            .mint(&claims(&[("db/*", Op::Read), ("*", Op::List)]))
            .expect("mint");
        let narrowed = Verifier::new(ring.public_keys())
            .verify(&token)
            .expect("verify")
            .attenuate(Some(&[Op::Read]), None, None)
            .expect("attenuate");
        for (op, resource, allowed) in [
            (Op::Read, "db/a", true),
            (Op::List, "db/", false),
            (Op::Read, "x", false),
        ] {
            let cold = Verifier::new(ring.public_keys());
            assert_eq!(
                check(&cold, &narrowed, op, resource).is_ok(),
                allowed,
                "cold {op} {resource}"
            );
            assert_eq!(
                check(&cold, &narrowed, op, resource).is_ok(),
                allowed,
                "warm {op} {resource}"
            );
        }
        // Mint refuses empty and oversized right sets and over-deep lineages.
        assert_eq!(ring.mint(&claims(&[])).map(drop), Err(TokenError::Invalid));
        let mut deep = claims(&[("*", Op::Read)]);
        deep.lineage = (0..=MAX_LINEAGE).map(|i| format!("g{i}")).collect();
        assert_eq!(ring.mint(&deep).map(drop), Err(TokenError::Invalid));
    }

    #[test]
    fn both_claim_extractors_agree() {
        let ring = ring();
        for rights in [
            vec![("*", Op::Read)],
            vec![("db/*", Op::Read), ("a/b", Op::Write), ("*", Op::List)],
        ] {
            let mut c = claims(&rights);
            c.lineage = vec!["g0".into(), "g1".into(), "g2".into()];
            c.ancestors = vec![
                (Scope::Node, "a".into(), 3),
                (Scope::User, "alice".into(), 1),
            ];
            c.expiry_cap = Some(now_secs() + 60);
            let token = ring.mint(&c).expect("mint");
            let biscuit = parse(&token, &ring.public_keys()).expect("parse");
            let mut authorizer = AuthorizerBuilder::new()
                .build(&biscuit)
                .expect("authorizer");
            let layout = narrowing::read(&token).expect("layout");
            assert_eq!(layout.checks, Some(vec![Narrowing::NotAfter(c.expires_at)]));
            let by_bytes = claims_from_facts(layout.authority_facts).expect("facts");
            let by_query = extract_claims(&mut authorizer).expect("query");
            assert_eq!(by_bytes, by_query);
        }
    }

    /// An authority block signed by the root key but holding more than Keymesh writes (a rule
    /// that would derive rights, an unknown fact) is refused, not read past.
    #[test]
    fn an_authority_block_with_rules_or_unknown_facts_is_invalid() {
        let ring = ring();
        let v = Verifier::new(ring.public_keys());
        let c = claims(&[("db/a", Op::Read)]);
        let authority = |extra: &str| {
            let code = format!(
                r#"token_id("t1"); grant("g1"); lineage("g1"); node("n1"); group("team"); user("u1");
                node_key(hex:{key}); expires_at({exp}); right("db/a", "read");
                epoch("node", 1); epoch("user", 2); epoch("group", 3);
                check if time($t), $t <= 2100-01-01T00:00:00Z;
                {extra}"#,
                key = hex::encode(c.node_key),
                exp = c.expires_at,
            );
            let signer = &ring.signers[0];
            Biscuit::builder()
                .root_key_id(signer.kid)
                .code(code.as_str())
                .and_then(|b| b.build(&signer.pair))
                .and_then(|b| b.to_vec())
                .expect("token")
        };
        // The same facts alone make a valid token, checked directly.
        let plain = v.verify(&authority("")).expect("plain authority");
        assert!(plain.checked_directly());
        assert_eq!(check(&v, &authority(""), Op::Read, "db/a"), Ok(()));
        for extra in [
            r#"right($r, "admin") <- right($r, "read");"#,
            r#"right("*", "share") <- node($n);"#,
            "extra(1);",
        ] {
            assert_eq!(
                v.verify(&authority(extra)).map(drop),
                Err(TokenError::Invalid),
                "{extra}"
            );
        }
    }

    #[test]
    fn a_token_naming_a_weak_or_invalid_node_key_is_invalid() {
        let ring = ring();
        let v = Verifier::new(ring.public_keys());
        let mut c = claims(&[("*", Op::Read)]);
        c.node_key = [0; 32]; // a small-order point: anyone could "prove" possession
        assert_eq!(
            v.verify(&ring.mint(&c).expect("mint")).map(drop),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn rotated_root_keys_keep_verifying_old_tokens() {
        let old_seed = random_key();
        let old = KeyRing::new(old_seed.as_ref(), &[]).expect("ring");
        let old_token = old.mint(&claims(&[("*", Op::Read)])).expect("mint");
        let old_public: [u8; 32] = ed25519_dalek::SigningKey::from_bytes(&old_seed)
            .verifying_key()
            .to_bytes();
        let new = KeyRing::new(random_key().as_ref(), &[old_public]).expect("ring");
        assert_ne!(new.current_id(), old.current_id());
        let v = Verifier::new(new.public_keys());
        check(&v, &old_token, Op::Read, "a").expect("old token still verifies");
        let new_token = new.mint(&claims(&[("*", Op::Read)])).expect("mint");
        check(&v, &new_token, Op::Read, "a").expect("new token");
    }

    #[test]
    fn revocation_view_is_consulted_on_every_check() {
        let ring = ring();
        let v = Verifier::new(ring.public_keys());
        let token = ring.mint(&claims(&[("*", Op::Read)])).expect("mint");
        check(&v, &token, Op::Read, "a").expect("cached and allowed");
        let r = v.authorize(
            &token,
            &Request {
                op: Op::Read,
                resource: "a",
            },
            &RevokedGrant("g1"),
            SystemTime::now(),
        );
        assert_eq!(r.map(drop), Err(TokenError::Revoked));
    }

    fn append_code(token: &[u8], ring: &KeyRing, code: &str) -> Vec<u8> {
        parse(token, &ring.public_keys())
            .expect("parse")
            .append(biscuit_auth::BlockBuilder::new().code(code).expect("code"))
            .expect("append")
            .to_vec()
            .expect("bytes")
    }

    /// Tokens the Datalog authorizer must decide are kept small and shallow; Keymesh's own
    /// narrowing forms may go to `MAX_BLOCKS`.
    #[test]
    fn deep_or_large_foreign_tokens_are_refused() {
        let ring = ring();
        let v = Verifier::new(ring.public_keys());
        let token = ring.mint(&claims(&[("*", Op::Read)])).expect("mint");
        let foreign = r#"check if operation($op), $op == "read""#;
        let mut t = token.clone();
        for _ in 0..MAX_FOREIGN_BLOCKS {
            t = append_code(&t, &ring, foreign);
        }
        assert!(!v.verify(&t).expect("two foreign blocks").checked_directly());
        let deeper = append_code(&t, &ring, foreign);
        assert_eq!(v.verify(&deeper).map(drop), Err(TokenError::Invalid));
        let padding = format!("check if resource($r), $r != \"{}\"", "x".repeat(4096));
        let large = append_code(&token, &ring, &padding);
        assert_eq!(v.verify(&large).map(drop), Err(TokenError::Invalid));
        // Keymesh's own forms, as deep as MAX_BLOCKS.
        let mut own = token;
        for _ in 0..MAX_BLOCKS {
            own = v
                .verify(&own)
                .expect("verify")
                .attenuate(Some(&[Op::Read]), None, None)
                .expect("attenuate");
        }
        assert!(v.verify(&own).expect("own forms").checked_directly());
    }

    /// The cache holds what was remembered, bounded by estimated bytes: full, it starts over.
    #[test]
    fn the_token_cache_is_bounded_by_bytes() {
        let ring = ring();
        let mut v = Verifier::new(ring.public_keys());
        let one = v
            .verify(&ring.mint(&claims(&[("*", Op::Read)])).expect("mint"))
            .expect("verify");
        assert_eq!(v.cached(), (0, 0), "verifying alone caches nothing");
        v.cache_bytes = one.footprint() * 3;
        for i in 0..7 {
            let mut c = claims(&[("*", Op::Read)]);
            c.grant = format!("g{i}");
            let t = v.verify(&ring.mint(&c).expect("mint")).expect("verify");
            v.remember(&t);
            let (entries, bytes) = v.cached();
            assert!(entries <= 3 && bytes <= v.cache_bytes, "{entries} {bytes}");
        }
        v.remember(&one);
        v.remember(&one);
        assert!(v.cached().0 >= 1);
    }

    #[test]
    fn only_the_forms_keymesh_writes_are_checked_without_datalog() {
        let ring = ring();
        let v = Verifier::new(ring.public_keys());
        let token = ring
            .mint(&claims(&[("*", Op::Read), ("*", Op::Write)]))
            .expect("mint");
        // The canonical forms, however they were written, are recognised.
        for code in [
            r#"check if operation($op), {"read"}.contains($op)"#,
            r#"check if resource($x), $x.starts_with("db/"); check if time($t), $t <= 2100-01-01T00:00:00Z"#,
        ] {
            let t = append_code(&token, &ring, code);
            assert!(v.verify(&t).expect("verify").checked_directly(), "{code}");
        }
        let requests = [(Op::Read, "db/a"), (Op::Write, "db/a"), (Op::Read, "x/a")];
        // Anything else goes to the authorizer, and is decided exactly as it decides.
        for code in [
            r#"operation("read"); check if operation($op), {"read"}.contains($op)"#,
            r#"check if operation($op), $op == "read""#,
            r#"check all operation($op), {"read"}.contains($op)"#,
            r#"reject if operation($op), {"write"}.contains($op)"#,
            r#"check if operation($op), {"read"}.contains($op) trusting previous"#,
            r#"check if resource($r), $r.starts_with("db/") or operation($op), {"write"}.contains($op)"#,
            r#"check if resource($r), $r.ends_with("a")"#,
            r#"check if resource($r), "db/a/b".starts_with($r)"#,
            r#"check if resource($r), $r.starts_with("db/"), $r.length() > 2"#,
            r#"check if time($t), $t < 2100-01-01T00:00:00Z"#,
            r#"check if operation($op), resource($r), {"read"}.contains($op)"#,
            r#"check if operation($op), {"read", "root"}.contains($op)"#,
            r#"r($x) <- resource($x); check if r($x), $x.starts_with("db/")"#,
        ] {
            let t = append_code(&token, &ring, code);
            let verified = v.verify(&t).expect("verify");
            assert!(!verified.checked_directly(), "{code}");
            for (op, resource) in requests {
                let request = Request { op, resource };
                let now = SystemTime::now();
                assert_eq!(
                    v.authorize_verified(&verified, &request, &NoRevocations, now),
                    v.authorize_datalog(&verified, &request, now),
                    "{code}: {op} {resource}"
                );
            }
        }
        // The fact-carrying block above cannot widen: write is refused only by the narrowing
        // the holder wrote badly, never granted beyond the authority's rights.
        let t = append_code(
            &token,
            &ring,
            r#"operation("admin"); check if operation($op), {"admin"}.contains($op)"#,
        );
        assert_eq!(check(&v, &t, Op::Admin, "db/a"), Err(TokenError::Forbidden));
    }

    proptest::proptest! {
        /// For attenuation chains of the forms Keymesh writes, the direct check decides exactly
        /// as the Biscuit authorizer does, down to expired versus forbidden.
        #[test]
        fn direct_attenuated_check_equals_the_authorizer(
            rights in proptest::collection::vec(
                (proptest::sample::select(vec!["*", "a/*", "a/b/*", "a/b", "b/*"]),
                 proptest::sample::select(Op::ALL.to_vec())), 1..4),
            chain in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(proptest::sample::select(Op::ALL.to_vec()), 1..3)),
                 proptest::option::of(proptest::sample::select(vec!["a/", "a/b", "a/b/", "b/", "", "a/bc"])),
                 proptest::option::of(proptest::sample::select(vec![-30i64, 0, 30]))), 1..4),
            op in proptest::sample::select(Op::ALL.to_vec()),
            resource in proptest::sample::select(vec!["", "a/", "a/b", "a/b/c", "a/bc", "a/x", "b/", "b/y", "c"]),
            skew in proptest::sample::select(vec![-31i64, -1, 0, 1, 31]),
        ) {
            let ring = KeyRing::new(&[9u8; 32], &[]).expect("ring");
            let rights: Vec<(&str, Op)> = rights;
            let mut token = ring.mint(&claims(&rights)).expect("mint");
            let v = Verifier::new(ring.public_keys());
            let base = now_secs();
            for (ops, prefix, expiry) in chain {
                let expiry = expiry.map(|d| base.saturating_add_signed(d));
                token = v.verify(&token).expect("verify").attenuate(ops.as_deref(), prefix, expiry).expect("attenuate");
            }
            let verified = v.verify(&token).expect("verify");
            proptest::prop_assert!(verified.checked_directly());
            let now = UNIX_EPOCH + Duration::from_secs(base.saturating_add_signed(skew));
            let request = Request { op, resource };
            proptest::prop_assert_eq!(
                v.authorize_verified(&verified, &request, &NoRevocations, now),
                v.authorize_datalog(&verified, &request, now),
                "{} {:?} at {:+}", op, resource, skew
            );
        }

        /// The direct check for unattenuated tokens agrees with the Biscuit authorizer on every
        /// combination of rights and requests (paths, list prefixes, near-miss prefixes).
        #[test]
        fn direct_authority_check_equals_the_authorizer(
            rights in proptest::collection::vec(
                (proptest::sample::select(vec!["*", "a/*", "a/b/*", "a/b", "ab/*", "a/bc", "b"]),
                 proptest::sample::select(Op::ALL.to_vec())), 1..5),
            op in proptest::sample::select(Op::ALL.to_vec()),
            resource in proptest::sample::select(vec!["", "a", "a/", "a/b", "a/b/", "a/b/c", "ab/c", "a/bc", "b", "b/"]),
        ) {
            let ring = KeyRing::new(&[9u8; 32], &[]).expect("ring");
            let rights: Vec<(&str, Op)> = rights;
            let token = ring.mint(&claims(&rights)).expect("mint");
            let v = Verifier::new(ring.public_keys());
            let verified = v.verify(&token).expect("verify");
            let request = Request { op, resource };
            let direct = authority_allows(&verified.claims.rights, &request);
            let datalog = v.authorize_datalog(&verified, &request, SystemTime::now()).is_ok();
            proptest::prop_assert_eq!(direct, datalog, "rights {:?} request {} {:?}", rights, op, resource);
        }

        /// Attenuation chains never allow what the original token does not.
        #[test]
        fn attenuation_chains_only_narrow(
            rights in proptest::collection::vec(
                (proptest::sample::select(vec!["*", "a/*", "a/b/*", "a/b", "b/*"]),
                 proptest::sample::select(Op::ALL.to_vec())), 1..4),
            chain in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(proptest::sample::select(Op::ALL.to_vec()), 1..3)),
                 proptest::option::of(proptest::sample::select(vec!["a/", "a/b/", "b/", ""]))), 1..4),
            op in proptest::sample::select(Op::ALL.to_vec()),
            resource in proptest::sample::select(vec!["a/b", "a/b/c", "a/x", "b/y", "c"]),
        ) {
            let ring = KeyRing::new(&[9u8; 32], &[]).expect("ring");
            let rights: Vec<(&str, Op)> = rights;
            let mut token = ring.mint(&claims(&rights)).expect("mint");
            let v = Verifier::new(ring.public_keys());
            let original = check(&v, &token, op, resource).is_ok();
            for (ops, prefix) in chain {
                token = v.verify(&token).expect("verify").attenuate(ops.as_deref(), prefix, None).expect("attenuate");
                if check(&v, &token, op, resource).is_ok() {
                    proptest::prop_assert!(original, "attenuated token allowed {} {} that the original refused", op, resource);
                    if let Some(ops) = &ops { proptest::prop_assert!(ops.contains(&op)); }
                    if let Some(p) = prefix { proptest::prop_assert!(resource.starts_with(p)); }
                }
            }
        }
    }

    #[test]
    fn covering_patterns_list_every_ancestor_wildcard() {
        assert_eq!(covering_patterns("a/b/c"), ["*", "a/*", "a/b/*", "a/b/c"]);
        assert_eq!(covering_patterns("a/b/"), ["*", "a/*", "a/b/*"]);
        assert_eq!(covering_patterns(""), ["*"]);
    }
}
