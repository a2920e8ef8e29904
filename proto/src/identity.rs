//! Node-identity attestations: the vault's signed word that a node id, in a group, holds an
//! identity key. A sender that checks a peer's attestation against the vault's root keys, and
//! pins the key, needs nothing from the relay to know whom it seals to (docs/protocol/tokens.md,
//! "Node identities"; issue 23 finding 7).
//!
//! The vault signs, with the root key that signs tokens now (Ed25519), the statement
//! `keymesh-node-identity-v1`, NODE, GROUP, hex(identity key), ISSUED_MS joined by single `\n`
//! bytes. The label keeps it apart from everything else the root key signs (Biscuit blocks are
//! protobuf, never this text).

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The statement's first line.
pub const LABEL: &str = "keymesh-node-identity-v1";

/// What the vault signs.
pub fn statement(node: &str, group: &str, identity: &[u8; 32], issued_ms: u64) -> Vec<u8> {
    format!(
        "{LABEL}\n{node}\n{group}\n{}\n{issued_ms}",
        hex::encode(identity)
    )
    .into_bytes()
}

/// The id of a root public key: the first four bytes of its SHA-256 (as in every token).
pub fn root_key_id(public: &[u8; 32]) -> u32 {
    let digest = Sha256::digest(public);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `GET /v1/nodes/{node_id}/identity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentityAttestation {
    /// The node.
    pub node_id: String,
    /// Its group.
    pub group: String,
    /// Its Ed25519 identity key, hex.
    pub identity_key: String,
    /// When the vault signed this, unix ms.
    pub issued_ms: u64,
    /// The root key that signed it (its id, as in tokens).
    pub kid: u32,
    /// Ed25519 signature over the statement (`keymesh-node-identity-v1`, node, group, hex key,
    /// `issued_ms`), hex.
    pub signature: String,
}

/// Why an attestation is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// It names another node than the one asked about.
    #[error("the attestation names another node")]
    OtherNode,
    /// Signed by a key that is not a trusted, unrevoked root key.
    #[error("the attestation is signed by an unknown or revoked root key")]
    UnknownRoot,
    /// Malformed fields or a signature that does not verify.
    #[error("the attestation's signature does not verify under the vault's root key")]
    Signature,
}

impl AttestationError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "identity_attestation_invalid"
    }
}

impl IdentityAttestation {
    /// Check that it speaks of `node` and that a root key in `roots` (the vault's keys that
    /// verify, neither revoked nor past their window) signed it; the attested identity key.
    pub fn verify(&self, node: &str, roots: &[[u8; 32]]) -> Result<[u8; 32], AttestationError> {
        if self.node_id != node {
            return Err(AttestationError::OtherNode);
        }
        let root = roots
            .iter()
            .find(|r| root_key_id(r) == self.kid)
            .ok_or(AttestationError::UnknownRoot)?;
        let identity: [u8; 32] = hex::decode(&self.identity_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AttestationError::Signature)?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AttestationError::Signature)?;
        let root = VerifyingKey::from_bytes(root).map_err(|_| AttestationError::UnknownRoot)?;
        root.verify_strict(
            &statement(&self.node_id, &self.group, &identity, self.issued_ms),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| AttestationError::Signature)?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn attest(root: &SigningKey, node: &str, identity: [u8; 32]) -> IdentityAttestation {
        let issued_ms = 1_800_000_000_000;
        let sig = root.sign(&statement(node, "g1", &identity, issued_ms));
        IdentityAttestation {
            node_id: node.into(),
            group: "g1".into(),
            identity_key: hex::encode(identity),
            issued_ms,
            kid: root_key_id(&root.verifying_key().to_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    #[test]
    fn only_the_root_signature_over_exactly_the_statement_verifies() {
        let root = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let roots = [root.verifying_key().to_bytes()];
        let a = attest(&root, "n1", [7; 32]);
        assert_eq!(a.verify("n1", &roots), Ok([7; 32]));
        assert_eq!(a.verify("n2", &roots), Err(AttestationError::OtherNode));
        let forged = attest(&other, "n1", [8; 32]);
        assert_eq!(
            forged.verify("n1", &roots),
            Err(AttestationError::UnknownRoot)
        );
        // the right kid, a signature by another key
        let mut wrong = forged.clone();
        wrong.kid = a.kid;
        assert_eq!(wrong.verify("n1", &roots), Err(AttestationError::Signature));
        // any field changed
        for change in [
            |a: &mut IdentityAttestation| a.group = "g2".into(),
            |a: &mut IdentityAttestation| a.identity_key = hex::encode([8; 32]),
            |a: &mut IdentityAttestation| a.issued_ms += 1,
            |a: &mut IdentityAttestation| a.signature = "zz".into(),
        ] {
            let mut changed = a.clone();
            change(&mut changed);
            assert!(changed.verify("n1", &roots).is_err(), "{changed:?}");
        }
    }
}
