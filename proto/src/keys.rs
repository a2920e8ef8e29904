//! A node's keys: the Ed25519 identity key (what its capability token names) and its X25519
//! encryption keys by version. Rotation keeps previous versions for a grace window, so messages
//! sealed to them while the relay still published them can be opened.
//!
//! Each encryption key is published in a signed key statement (docs/protocol/relay.md): the
//! relay checks the signature before storing a key, and a sender checks it again before sealing
//! to it, so a relay cannot substitute a key of its own.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::{
    crypto::{CryptoError, HpkeKeyPair},
    ident::Ident,
};

/// What the identity key signs to publish an encryption key:
/// `keymesh-enc-key-v1 \n NODE \n VERSION \n hex(X25519 public key)`.
pub fn key_statement(node: &str, version: u32, enc_key: &[u8; 32]) -> Vec<u8> {
    format!(
        "keymesh-enc-key-v1\n{node}\n{version}\n{}",
        hex::encode(enc_key)
    )
    .into_bytes()
}

/// Why a key registration is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The identity key's signature over the statement does not verify.
    #[error("the signature does not verify with the token's node key over keymesh-enc-key-v1")]
    Signature,
    /// Not a usable X25519 public key.
    #[error("enc_key must be 32 bytes of hex and not all zero")]
    EncKey,
    /// A version at or below the current one, with different contents.
    #[error("version must be higher than the current one (or repeat it exactly)")]
    Version,
}

/// Check a registration: the statement signed by the identity key, a usable X25519 key.
pub fn verify_registration(
    identity: &VerifyingKey,
    node: &str,
    version: u32,
    enc_key: &[u8; 32],
    signature: &[u8; 64],
) -> Result<(), KeyError> {
    if enc_key.iter().all(|&b| b == 0) {
        return Err(KeyError::EncKey);
    }
    identity
        .verify_strict(
            &key_statement(node, version, enc_key),
            &Signature::from_bytes(signature),
        )
        .map_err(|_| KeyError::Signature)
}

/// Why keys cannot be created, rotated or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The node id breaks the id rules.
    #[error("node ids are 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidNode,
    /// The current version is `u32::MAX`; no newer one can be made.
    #[error("the encryption key version cannot go higher")]
    VersionExhausted,
    /// Decoded key material is inconsistent (bad length, duplicate or zero version, bad key).
    #[error("the key material is malformed")]
    Malformed,
}

impl KeysError {
    /// Stable code for logs and support answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidNode => "invalid_node_id",
            Self::VersionExhausted => "key_version_exhausted",
            Self::Malformed => "key_material_malformed",
        }
    }
}

/// A previous encryption key, kept until the grace window after its retirement has passed.
struct RetiredKey {
    version: u32,
    key: HpkeKeyPair,
    retired_at_ms: u64,
}

/// A node's secret keys. Every secret is wiped on drop (`SigningKey` and `HpkeKeyPair` zeroize
/// themselves) and `Debug` shows public keys and versions only.
pub struct NodeKeys {
    node: Ident,
    identity: SigningKey,
    current_version: u32,
    current: HpkeKeyPair,
    /// Oldest first; versions strictly increasing and below `current_version`.
    retired: Vec<RetiredKey>,
}

fn random_seed() -> Zeroizing<[u8; 32]> {
    let mut seed = Zeroizing::new([0u8; 32]);
    // An OS RNG failure is unrecoverable and not caller-triggerable (as in crate::crypto).
    getrandom::fill(&mut seed[..]).expect("OS random number generator failed");
    seed
}

/// Parse a node id by the shared id rules.
pub fn parse_node(node: &str) -> Result<Ident, KeysError> {
    Ident::try_from(node.to_owned()).map_err(|_| KeysError::InvalidNode)
}

impl NodeKeys {
    /// Fresh identity key and encryption key version 1 for `node`.
    pub fn generate(node: &str) -> Result<Self, KeysError> {
        Ok(Self {
            node: parse_node(node)?,
            identity: SigningKey::from_bytes(&random_seed()),
            current_version: 1,
            current: HpkeKeyPair::generate(),
            retired: Vec::new(),
        })
    }

    /// The node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The Ed25519 identity public key (the `node_key` a capability token names).
    pub fn identity_public(&self) -> [u8; 32] {
        self.identity.verifying_key().to_bytes()
    }

    /// The Ed25519 identity public key as a verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.identity.verifying_key()
    }

    /// The identity signing key, for proofs of possession (HTTP and the relay's challenge).
    pub fn signing_key(&self) -> &SigningKey {
        &self.identity
    }

    /// Sign `message` with the identity key (Ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.identity.sign(message).to_bytes()
    }

    /// The version of the current encryption key.
    pub fn current_version(&self) -> u32 {
        self.current_version
    }

    /// The current encryption key.
    pub fn current_enc_key(&self) -> &HpkeKeyPair {
        &self.current
    }

    /// The encryption key of `version`, current or retired-but-kept.
    pub fn enc_key(&self, version: u32) -> Option<&HpkeKeyPair> {
        if version == self.current_version {
            return Some(&self.current);
        }
        self.retired
            .iter()
            .find(|r| r.version == version)
            .map(|r| &r.key)
    }

    /// The retired versions still kept, oldest first, with when each was retired (unix ms).
    pub fn retired_versions(&self) -> Vec<(u32, u64)> {
        self.retired
            .iter()
            .map(|r| (r.version, r.retired_at_ms))
            .collect()
    }

    /// Make a new current encryption key; the previous one is retired at `now_ms`. Returns the
    /// new version.
    pub fn rotate(&mut self, now_ms: u64) -> Result<u32, KeysError> {
        let version = self
            .current_version
            .checked_add(1)
            .ok_or(KeysError::VersionExhausted)?;
        let previous = std::mem::replace(&mut self.current, HpkeKeyPair::generate());
        self.retired.push(RetiredKey {
            version: self.current_version,
            key: previous,
            retired_at_ms: now_ms,
        });
        self.current_version = version;
        Ok(version)
    }

    /// Drop the retired keys whose grace window has passed: kept while
    /// `now_ms - retired_at_ms < grace_ms` (the relay's rule). Returns how many were dropped.
    pub fn prune(&mut self, now_ms: u64, grace_ms: u64) -> usize {
        let before = self.retired.len();
        self.retired
            .retain(|r| now_ms.saturating_sub(r.retired_at_ms) < grace_ms);
        before - self.retired.len()
    }

    /// The statement for publishing encryption key `version`, signed by the identity key; `None`
    /// when this node no longer holds that version.
    pub fn signed_enc_key(&self, version: u32) -> Option<SignedEncKey> {
        let enc_public = self.enc_key(version)?.public;
        let statement = key_statement(&self.node, version, &enc_public);
        Some(SignedEncKey {
            node: self.node.to_string(),
            version,
            enc_public,
            signature: self.identity.sign(&statement).to_bytes(),
        })
    }
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("node", &&*self.node)
            .field("identity_public", &hex::encode(self.identity_public()))
            .field("current_version", &self.current_version)
            .field("current_enc_public", &hex::encode(self.current.public))
            .field("retired", &self.retired_versions())
            .field("secrets", &"[redacted]")
            .finish()
    }
}

/// An encryption key version published under the node's identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedEncKey {
    /// The node.
    pub node: String,
    /// The key version, from 1.
    pub version: u32,
    /// The X25519 public key.
    pub enc_public: [u8; 32],
    /// Ed25519 signature over [`key_statement`]`(node, version, enc_public)`.
    pub signature: [u8; 64],
}

impl SignedEncKey {
    /// True iff `identity` signed this statement (strict Ed25519) and the key is usable — the
    /// check the relay makes on registration.
    pub fn verify(&self, identity: &VerifyingKey) -> bool {
        verify_registration(
            identity,
            &self.node,
            self.version,
            &self.enc_public,
            &self.signature,
        )
        .is_ok()
    }

    /// The signature as an `ed25519_dalek` value.
    pub fn signature(&self) -> Signature {
        Signature::from_bytes(&self.signature)
    }
}

// Secret material encoding, inside the sealed key file only (big-endian integers):
// MAGIC(4) | node_len u8 | node | identity seed(32) | current_version u32 | current secret(32)
// | retired_count u32 | retired_count × (version u32 | retired_at_ms u64 | secret(32))
const MAGIC: &[u8; 4] = b"KMK1";
const RETIRED_LEN: usize = 4 + 8 + 32;

impl NodeKeys {
    /// The secret material as bytes, in a buffer sized up front (no reallocation leaves an
    /// unwiped copy) and wiped on drop. Only for sealing into the key file
    /// (`keymesh_client::keyfile`): never store or send these bytes in the clear.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let len = MAGIC.len() + 1 + self.node.len() + 32 + 4 + 32 + 4;
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.retired.len() * RETIRED_LEN));
        out.extend_from_slice(MAGIC);
        // Ident guarantees 1..=64 bytes, so the length fits a u8.
        out.push(u8::try_from(self.node.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(&self.current_version.to_be_bytes());
        out.extend_from_slice(self.current.secret());
        let count = u32::try_from(self.retired.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for r in &self.retired {
            out.extend_from_slice(&r.version.to_be_bytes());
            out.extend_from_slice(&r.retired_at_ms.to_be_bytes());
            out.extend_from_slice(r.key.secret());
        }
        out
    }

    /// Rebuild keys from [`NodeKeys::to_secret_bytes`]; public keys are recomputed.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeysError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(KeysError::Malformed);
        }
        let node_len = usize::from(r.take(1)?[0]);
        let node = std::str::from_utf8(r.take(node_len)?).map_err(|_| KeysError::Malformed)?;
        let node = parse_node(node).map_err(|_| KeysError::Malformed)?;
        let identity = SigningKey::from_bytes(&*r.key()?);
        let current_version = r.u32()?;
        let current = hpke_pair(r.key()?)?;
        let count = r.u32()?;
        // Bound the allocation by what the input actually holds.
        let count = usize::try_from(count).map_err(|_| KeysError::Malformed)?;
        if count > r.0.len() / RETIRED_LEN {
            return Err(KeysError::Malformed);
        }
        let mut retired: Vec<RetiredKey> = Vec::with_capacity(count);
        for _ in 0..count {
            let version = r.u32()?;
            let retired_at_ms = r.u64()?;
            let key = hpke_pair(r.key()?)?;
            let previous = retired.last().map_or(0, |p| p.version);
            if version <= previous || version >= current_version {
                return Err(KeysError::Malformed);
            }
            retired.push(RetiredKey {
                version,
                key,
                retired_at_ms,
            });
        }
        if current_version == 0 || !r.0.is_empty() {
            return Err(KeysError::Malformed);
        }
        Ok(Self {
            node,
            identity,
            current_version,
            current,
            retired,
        })
    }
}

fn hpke_pair(secret: Zeroizing<[u8; 32]>) -> Result<HpkeKeyPair, KeysError> {
    HpkeKeyPair::from_secret(*secret).map_err(|_: CryptoError| KeysError::Malformed)
}

/// A cursor over secret bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeysError> {
        if self.0.len() < n {
            return Err(KeysError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn key(&mut self) -> Result<Zeroizing<[u8; 32]>, KeysError> {
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(self.take(32)?);
        Ok(k)
    }
    fn u32(&mut self) -> Result<u32, KeysError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, KeysError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> NodeKeys {
        NodeKeys::generate("node-a").expect("valid node id")
    }

    #[test]
    fn generate_validates_node_and_starts_at_version_1() {
        let k = keys();
        assert_eq!((k.node(), k.current_version()), ("node-a", 1));
        assert!(k.enc_key(1).is_some() && k.enc_key(0).is_none() && k.enc_key(2).is_none());
        assert_eq!(k.verifying_key().to_bytes(), k.identity_public());
        for bad in ["", "..", "a b", "a\nb", "é", &"x".repeat(65)] {
            assert_eq!(
                NodeKeys::generate(bad).expect_err(bad),
                KeysError::InvalidNode
            );
        }
        let other = keys();
        assert_ne!(k.identity_public(), other.identity_public());
        assert_ne!(k.current_enc_key().public, other.current_enc_key().public);
    }

    #[test]
    fn rotate_keeps_previous_until_grace_passes() {
        let mut k = keys();
        let v1 = k.current_enc_key().public;
        assert_eq!(k.rotate(1_000).expect("rotate"), 2);
        assert_eq!(k.current_version(), 2);
        assert_ne!(k.current_enc_key().public, v1);
        assert_eq!(k.enc_key(1).expect("kept").public, v1);
        assert_eq!(k.rotate(5_000).expect("rotate"), 3);
        assert_eq!(k.retired_versions(), [(1, 1_000), (2, 5_000)]);
        assert_eq!(k.prune(1_999, 1_000), 0); // age 999 < grace
        assert_eq!(k.prune(2_000, 1_000), 1); // age 1000: gone
        assert!(k.enc_key(1).is_none() && k.enc_key(2).is_some());
        assert_eq!(k.prune(u64::MAX, 0), 1);
        assert_eq!(k.retired_versions(), []);
        assert!(k.enc_key(3).is_some(), "the current key is never pruned");
        // a retirement time in the future (clock skew) counts as age 0
        k.rotate(10_000).expect("rotate");
        assert_eq!(k.prune(0, 1), 0);
    }

    #[test]
    fn rotate_refuses_to_wrap_the_version() {
        let mut k = keys();
        k.current_version = u32::MAX;
        assert_eq!(k.rotate(0).expect_err("max"), KeysError::VersionExhausted);
        assert_eq!(k.current_version(), u32::MAX);
        assert!(k.retired_versions().is_empty());
    }

    #[test]
    fn signed_enc_key_verifies_with_the_identity_only() {
        let mut k = keys();
        k.rotate(1).expect("rotate");
        for v in [1, 2] {
            let s = k.signed_enc_key(v).expect("held");
            assert_eq!((s.node.as_str(), s.version), ("node-a", v));
            assert_eq!(s.enc_public, k.enc_key(v).expect("held").public);
            assert!(s.verify(&k.verifying_key()));
            assert!(
                k.verifying_key()
                    .verify_strict(&key_statement("node-a", v, &s.enc_public), &s.signature())
                    .is_ok()
            );
            assert!(!s.verify(&keys().verifying_key()));
            let tampered = [
                SignedEncKey {
                    node: "node-b".into(),
                    ..s.clone()
                },
                SignedEncKey {
                    version: v + 1,
                    ..s.clone()
                },
                SignedEncKey {
                    enc_public: keys().current_enc_key().public,
                    ..s.clone()
                },
            ];
            for t in tampered {
                assert!(!t.verify(&k.verifying_key()), "{t:?}");
            }
            for i in 0..64 {
                let mut t = s.clone();
                t.signature[i] ^= 1;
                assert!(!t.verify(&k.verifying_key()), "flip {i}");
            }
        }
        assert!(k.signed_enc_key(3).is_none());
    }

    #[test]
    fn secret_bytes_round_trip_and_reject_malformed() {
        let mut k = keys();
        k.rotate(7).expect("rotate");
        k.rotate(9).expect("rotate");
        let bytes = k.to_secret_bytes();
        assert_eq!(bytes.len(), bytes.capacity(), "sized up front");
        let back = NodeKeys::from_secret_bytes(&bytes).expect("round trip");
        assert_eq!(back.node(), k.node());
        assert_eq!(back.identity_public(), k.identity_public());
        assert_eq!(back.current_version(), 3);
        assert_eq!(back.retired_versions(), [(1, 7), (2, 9)]);
        for v in 1..=3 {
            assert_eq!(
                back.enc_key(v).expect("held").secret(),
                k.enc_key(v).expect("held").secret()
            );
        }
        for len in 0..bytes.len() {
            assert!(NodeKeys::from_secret_bytes(&bytes[..len]).is_err(), "{len}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(NodeKeys::from_secret_bytes(&long).is_err());
        // retired version not below the current one
        let pos = bytes.len() - RETIRED_LEN;
        let mut bad = bytes.to_vec();
        bad[pos..pos + 4].copy_from_slice(&3u32.to_be_bytes());
        assert!(NodeKeys::from_secret_bytes(&bad).is_err());
        // a huge retired count does not allocate
        let count_at = bytes.len() - 2 * RETIRED_LEN - 4;
        let mut bad = bytes[..count_at + 4].to_vec();
        bad[count_at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(NodeKeys::from_secret_bytes(&bad).is_err());
    }

    #[test]
    fn debug_redacts_every_secret() {
        let mut k = keys();
        k.rotate(1).expect("rotate");
        let dbg = format!("{k:?}{k:#?}");
        assert!(dbg.contains("redacted") && dbg.contains("node-a"), "{dbg}");
        assert!(dbg.contains(&hex::encode(k.identity_public())));
        let secrets: [&[u8]; 3] = [
            k.identity.as_bytes(),
            k.enc_key(1).expect("held").secret(),
            k.enc_key(2).expect("held").secret(),
        ];
        for s in secrets {
            for needle in [
                hex::encode(s),
                hex::encode_upper(s),
                format!("{s:?}"),
                format!("{:?}", &s[..4]),
            ] {
                assert!(!dbg.contains(&needle), "{dbg} leaks {needle}");
            }
        }
    }
}
