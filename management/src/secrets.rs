//! One-time tokens, sign-in codes and keyed hashes.
//!
//! Tokens (sign-in links, poll secrets, sessions, enrollment codes) are 32 random bytes, sent base64url behind a
//! `km<kind>_` prefix (decision 0004: scanners and the log redactor recognise them) and stored
//! only as their SHA-256: a database dump gives nothing to replay, and looking a row up by the
//! hash of a 256-bit secret reveals nothing useful about it. Sign-in codes are short (40 bits),
//! so a plain hash could be reversed by trying them all: they are stored as HMAC-SHA256 under
//! `MANAGEMENT_SECRET_KEY`, bound to their request, and compared in constant time.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use keymesh_core::{capability::token::random_key, secret::secret_eq};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A fresh token for the client and the hash to store.
#[derive(Debug)]
pub struct NewToken {
    /// Sent once, never stored.
    pub token: SecretString,
    /// SHA-256 of the token's text.
    pub hash: Vec<u8>,
}

/// What a token is for; its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A session (`kms_`).
    Session,
    /// A sign-in link (`kml_`).
    Link,
    /// A sign-in request's poll secret (`kmp_`).
    Poll,
    /// A node enrollment code (`kme_`).
    Enroll,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Session => "kms_",
            Self::Link => "kml_",
            Self::Poll => "kmp_",
            Self::Enroll => "kme_",
        }
    }
}

impl NewToken {
    /// The prefix, then 32 random bytes base64url without padding (43 characters).
    pub fn generate(kind: Kind) -> Self {
        let token = format!(
            "{}{}",
            kind.prefix(),
            URL_SAFE_NO_PAD.encode(random_key().as_ref())
        );
        Self {
            hash: token_hash(&token),
            token: SecretString::from(token),
        }
    }
}

/// The stored form of a presented token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A presented token has the shape [`NewToken`] makes for `kind`.
pub fn well_formed_token(kind: Kind, token: &str) -> bool {
    token.strip_prefix(kind.prefix()).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Code alphabet: no 0/O or 1/I; 32 symbols, so a random byte masked to 5 bits is uniform.
const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 8;

/// A fresh sign-in code, `XXXX-XXXX` (40 bits).
pub fn new_code() -> SecretString {
    let bytes = random_key();
    let mut code = String::with_capacity(CODE_LEN + 1);
    for (i, b) in bytes.iter().take(CODE_LEN).enumerate() {
        if i == CODE_LEN / 2 {
            code.push('-');
        }
        code.push(char::from(CODE_ALPHABET[usize::from(b & 31)]));
    }
    SecretString::from(code)
}

/// A code as typed: case, spaces and dashes do not matter.
pub fn normalize_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// HMAC-SHA256 under the server's secret key, with a purpose label so one use can never stand
/// in for another.
#[derive(Clone)]
pub struct Keyed {
    key: SecretString,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyed(REDACTED)")
    }
}

impl Keyed {
    /// Over `MANAGEMENT_SECRET_KEY`.
    pub fn new(key: SecretString) -> Self {
        Self { key }
    }

    fn mac(&self, purpose: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        for part in parts {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// Stored form of a sign-in code, bound to its request.
    pub fn code_hash(&self, request_id: &str, code: &str) -> Vec<u8> {
        self.mac(
            "keymesh-login-code-v1",
            &[request_id.as_bytes(), normalize_code(code).as_bytes()],
        )
    }

    /// Does `code` match the stored hash? Constant time.
    pub fn code_matches(&self, request_id: &str, code: &str, stored: &[u8]) -> bool {
        secret_eq(&self.code_hash(request_id, code), stored)
    }

    /// A searchable, unreadable reference to an e-mail address for the audit log:
    /// `email:` + 16 bytes of HMAC, hex.
    pub fn email_ref(&self, email: &str) -> String {
        let mac = self.mac("keymesh-audit-email-v1", &[email.as_bytes()]);
        format!("email:{}", hex::encode(&mac[..16]))
    }

    /// The seed of the Ed25519 key that signs audit checkpoints (derived, so nothing more is
    /// stored; it changes with `MANAGEMENT_SECRET_KEY`).
    pub fn checkpoint_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        let mac = zeroize::Zeroizing::new(self.mac("keymesh-audit-checkpoint-key-v1", &[]));
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&mac[..32]);
        seed
    }

    /// The CSRF token of a cookie session (derived, so nothing more is stored).
    pub fn csrf_token(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("keymesh-csrf-v1", &[session_id.as_bytes()]))
    }

    /// Does the presented CSRF token belong to this session? Constant time.
    pub fn csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        secret_eq(self.csrf_token(session_id).as_bytes(), presented.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let a = NewToken::generate(Kind::Session);
        let b = NewToken::generate(Kind::Session);
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
        assert!(a.token.expose_secret().starts_with("kms_"));
        assert!(well_formed_token(Kind::Session, a.token.expose_secret()));
        assert!(!well_formed_token(Kind::Link, a.token.expose_secret()));
        assert_eq!(a.hash, token_hash(a.token.expose_secret()));
        assert!(!well_formed_token(Kind::Session, "kms_short"));
        assert!(!well_formed_token(
            Kind::Session,
            &format!("kms_{}!", "a".repeat(42))
        ));
        assert!(!well_formed_token(Kind::Session, &"a".repeat(47)));
    }

    #[test]
    fn codes_are_typed_loosely_and_bound_to_their_request() {
        let keyed = Keyed::new(SecretString::from("k".repeat(32)));
        let code = new_code();
        let code = code.expose_secret();
        assert_eq!(code.len(), 9);
        let stored = keyed.code_hash("req-1", code);
        assert!(keyed.code_matches("req-1", &code.to_lowercase().replace('-', " "), &stored));
        assert!(!keyed.code_matches("req-2", code, &stored));
        let other = Keyed::new(SecretString::from("j".repeat(32)));
        assert!(!other.code_matches("req-1", code, &stored));
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let keyed = Keyed::new(SecretString::from("k".repeat(32)));
        let token = keyed.csrf_token("s1");
        assert!(keyed.csrf_matches("s1", &token));
        assert!(!keyed.csrf_matches("s2", &token));
        assert!(!keyed.csrf_matches("s1", ""));
    }
}
