//! The HPKE envelope a node sends through the relay: the frame's opaque `enc` and `payload`.
//!
//! - `enc` (49 bytes) = `format u8 = 2 | sender_key_version u32 BE | recipient_key_version u32 BE
//!   | sent_ms u64 BE | HPKE encapsulated key (32)`.
//! - `payload` = the HPKE ciphertext with its tag.
//!
//! HPKE auth mode (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305) with info
//! `keymesh-relay-v1` and AAD `keymesh-msg-v2`, SENDER, RECIPIENT, hex(id),
//! sender_key_version, recipient_key_version, sent_ms joined by single `\n` bytes
//! (docs/protocol/test-vectors/envelope.json): a ciphertext moved to another sender,
//! recipient, message id or key version, or given another sending time, does not open, and only
//! the sender's key can seal it. `sent_ms` is the sender's clock: recipients judge freshness and
//! replays by it (docs/decisions/0015-message-freshness.md). Format 1 (no sending time) is no
//! longer opened.

use crate::{
    crypto::{self, CryptoError, Plaintext},
    frame::{MAX_ENC, MessageId},
    keys::{NodeKeys, parse_node},
};

/// The envelope format byte.
pub const FORMAT: u8 = 2;
/// Length of `enc`.
pub const ENC_LEN: usize = 1 + 4 + 4 + 8 + ENCAPPED_LEN;
/// HPKE `info`.
pub const INFO: &[u8] = b"keymesh-relay-v1";
const ENCAPPED_LEN: usize = 32;
const _: () = assert!(ENC_LEN <= MAX_ENC, "enc must fit the relay frame");

/// Why an envelope cannot be sealed or opened. Open failures say nothing about the plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// `enc` is not 49 bytes.
    #[error("the envelope header is {0} bytes, expected 49")]
    HeaderLength(usize),
    /// `enc` starts with a format byte this version does not read (1: sealed by a client from
    /// before sending times, refused so a relay cannot replay such messages undated).
    #[error("unknown envelope format {0} (this client opens format 2)")]
    UnknownFormat(u8),
    /// A key version of 0 (versions start at 1).
    #[error("key versions start at 1")]
    ZeroVersion,
    /// The recipient no longer holds (or never had) the key version the message was sealed to.
    #[error("no encryption key of version {0} (retired and pruned, or never made)")]
    UnknownKeyVersion(u32),
    /// A sender or recipient id breaks the id rules.
    #[error("node ids are 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidNode,
    /// A public key is not a usable X25519 key.
    #[error("invalid X25519 public key")]
    InvalidKey,
    /// The payload is shorter than an AEAD tag.
    #[error("the envelope payload is truncated")]
    Truncated,
    /// Authentication failed: wrong sender key, altered, or not addressed to this key.
    #[error("the envelope does not open (wrong sender key, altered, or not for this node)")]
    Decrypt,
    /// Sealing failed (plaintext beyond the AEAD limit).
    #[error("sealing the envelope failed")]
    Encrypt,
}

impl EnvelopeError {
    /// Stable code for logs and support answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HeaderLength(_)
            | Self::UnknownFormat(_)
            | Self::ZeroVersion
            | Self::Truncated => "envelope_malformed",
            Self::UnknownKeyVersion(_) => "unknown_key_version",
            Self::InvalidNode => "invalid_node_id",
            Self::InvalidKey => "invalid_enc_key",
            Self::Decrypt => "envelope_decrypt",
            Self::Encrypt => "envelope_encrypt",
        }
    }
}

impl From<CryptoError> for EnvelopeError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::InvalidKey => Self::InvalidKey,
            CryptoError::Encoding => Self::Truncated,
            CryptoError::Encrypt => Self::Encrypt,
            _ => Self::Decrypt,
        }
    }
}

/// The parsed `enc` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The sender's encryption key version (look up its public key by this).
    pub sender_key_version: u32,
    /// The recipient's encryption key version it was sealed to.
    pub recipient_key_version: u32,
    /// When the sender sealed it, unix ms by the sender's clock. Bound in the AAD: once
    /// [`open`] succeeds it is the sender's word, not the relay's.
    pub sent_ms: u64,
    /// The HPKE encapsulated key.
    pub encapped: [u8; 32],
}

impl EnvelopeHeader {
    /// Parse `enc`: exactly 49 bytes, format 2, versions from 1. Never panics.
    pub fn parse(enc: &[u8]) -> Result<Self, EnvelopeError> {
        // The format byte first, so an old client's 41-byte format 1 is named as such.
        match enc.first() {
            None => return Err(EnvelopeError::HeaderLength(0)),
            Some(&format) if format != FORMAT => {
                return Err(EnvelopeError::UnknownFormat(format));
            }
            Some(_) => {}
        }
        let Ok(b) = <&[u8; ENC_LEN]>::try_from(enc) else {
            return Err(EnvelopeError::HeaderLength(enc.len()));
        };
        let (_format, rest) = b.split_at(1);
        let (sender, rest) = rest.split_at(4);
        let (recipient, rest) = rest.split_at(4);
        let (sent, encapped) = rest.split_at(8);
        let mut sent_ms = [0u8; 8];
        sent_ms.copy_from_slice(sent);
        let version = |v: &[u8]| {
            let mut b = [0u8; 4];
            b.copy_from_slice(v);
            match u32::from_be_bytes(b) {
                0 => Err(EnvelopeError::ZeroVersion),
                v => Ok(v),
            }
        };
        let mut header = Self {
            sender_key_version: version(sender)?,
            recipient_key_version: version(recipient)?,
            sent_ms: u64::from_be_bytes(sent_ms),
            encapped: [0; 32],
        };
        header.encapped.copy_from_slice(encapped);
        Ok(header)
    }

    /// The 49-byte `enc` encoding.
    pub fn to_bytes(&self) -> [u8; ENC_LEN] {
        let mut out = [0u8; ENC_LEN];
        out[0] = FORMAT;
        out[1..5].copy_from_slice(&self.sender_key_version.to_be_bytes());
        out[5..9].copy_from_slice(&self.recipient_key_version.to_be_bytes());
        out[9..17].copy_from_slice(&self.sent_ms.to_be_bytes());
        out[17..].copy_from_slice(&self.encapped);
        out
    }
}

/// A sealed envelope: the relay frame's `enc` and `payload` (ciphertext only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The 49-byte header.
    pub enc: Vec<u8>,
    /// The HPKE ciphertext and tag.
    pub payload: Vec<u8>,
}

/// The AAD; both ids are checked `Ident`s, so the newline separators are unambiguous.
fn aad(sender: &str, recipient: &str, id: &MessageId, header: &EnvelopeHeader) -> Vec<u8> {
    format!(
        "keymesh-msg-v2\n{sender}\n{recipient}\n{}\n{}\n{}\n{}",
        hex::encode(id),
        header.sender_key_version,
        header.recipient_key_version,
        header.sent_ms
    )
    .into_bytes()
}

/// Seal `plaintext` from `sender` (its current key) to `recipient_node`'s key
/// `recipient_key = (version, X25519 public key)`, as message `id` sent at `sent_ms` (unix ms,
/// the sender's clock: recipients refuse it when too old or from the future).
pub fn seal(
    sender: &NodeKeys,
    recipient_node: &str,
    recipient_key: (u32, [u8; 32]),
    id: MessageId,
    sent_ms: u64,
    plaintext: &[u8],
) -> Result<Sealed, EnvelopeError> {
    let recipient = parse_node(recipient_node).map_err(|_| EnvelopeError::InvalidNode)?;
    let (recipient_v, recipient_public) = recipient_key;
    if recipient_v == 0 {
        return Err(EnvelopeError::ZeroVersion);
    }
    let mut header = EnvelopeHeader {
        sender_key_version: sender.current_version(),
        recipient_key_version: recipient_v,
        sent_ms,
        encapped: [0; 32],
    };
    let aad = aad(sender.node(), &recipient, &id, &header);
    let mut blob = crypto::hpke_seal_auth(
        sender.current_enc_key(),
        &recipient_public,
        INFO,
        &aad,
        plaintext,
    )?;
    // hpke_seal_auth returns encapped(32) || ciphertext.
    let payload = blob.split_off(ENCAPPED_LEN);
    header.encapped.copy_from_slice(&blob);
    Ok(Sealed {
        enc: header.to_bytes().to_vec(),
        payload,
    })
}

/// Open an envelope addressed to `recipient`, from `sender_node` whose key of the header's
/// sender version is `sender_key_public` (the caller looks it up after
/// [`EnvelopeHeader::parse`]). The recipient key is picked by the header's version.
pub fn open(
    recipient: &NodeKeys,
    sender_node: &str,
    sender_key_public: &[u8; 32],
    id: MessageId,
    enc: &[u8],
    payload: &[u8],
) -> Result<Plaintext, EnvelopeError> {
    let header = EnvelopeHeader::parse(enc)?;
    let sender = parse_node(sender_node).map_err(|_| EnvelopeError::InvalidNode)?;
    let key =
        recipient
            .enc_key(header.recipient_key_version)
            .ok_or(EnvelopeError::UnknownKeyVersion(
                header.recipient_key_version,
            ))?;
    let aad = aad(&sender, recipient.node(), &id, &header);
    let mut blob = Vec::with_capacity(ENCAPPED_LEN + payload.len());
    blob.extend_from_slice(&header.encapped);
    blob.extend_from_slice(payload);
    Ok(crypto::hpke_open_auth(
        key,
        sender_key_public,
        INFO,
        &aad,
        &blob,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: MessageId = [7; 16];
    const SENT: u64 = 1_800_000_000_000;

    fn seal(
        sender: &NodeKeys,
        recipient_node: &str,
        recipient_key: (u32, [u8; 32]),
        id: MessageId,
        plaintext: &[u8],
    ) -> Result<Sealed, EnvelopeError> {
        super::seal(sender, recipient_node, recipient_key, id, SENT, plaintext)
    }

    fn node(name: &str) -> NodeKeys {
        NodeKeys::generate(name).expect("node")
    }

    fn to(k: &NodeKeys) -> (u32, [u8; 32]) {
        (k.current_version(), k.current_enc_key().public)
    }

    fn pubkey(k: &NodeKeys, v: u32) -> [u8; 32] {
        k.enc_key(v).expect("held").public
    }

    fn open_from(a: &NodeKeys, b: &NodeKeys, s: &Sealed) -> Result<Plaintext, EnvelopeError> {
        let h = EnvelopeHeader::parse(&s.enc)?;
        open(
            b,
            a.node(),
            &pubkey(a, h.sender_key_version),
            ID,
            &s.enc,
            &s.payload,
        )
    }

    #[test]
    fn round_trip_and_byte_layout() {
        let (a, b) = (node("alice"), node("bob"));
        for pt in [&b""[..], b"db password", &[0xAB; 70_000][..]] {
            let s = seal(&a, "bob", to(&b), ID, pt).expect("seal");
            assert_eq!(s.enc.len(), ENC_LEN);
            assert_eq!(s.enc[..9], [2, 0, 0, 0, 1, 0, 0, 0, 1]);
            assert_eq!(s.enc[9..17], SENT.to_be_bytes());
            assert_eq!(s.payload.len(), pt.len() + 16);
            assert_eq!(&open_from(&a, &b, &s).expect("open")[..], pt);
        }
        let h = EnvelopeHeader {
            sender_key_version: 0x0102_0304,
            recipient_key_version: 9,
            sent_ms: 0x0506_0708_090a_0b0c,
            encapped: [5; 32],
        };
        assert_eq!(EnvelopeHeader::parse(&h.to_bytes()), Ok(h));
        // fresh encapsulation every time
        let (s1, s2) = (
            seal(&a, "bob", to(&b), ID, b"m").expect("seal"),
            seal(&a, "bob", to(&b), ID, b"m").expect("seal"),
        );
        assert_ne!(s1.enc, s2.enc);
    }

    #[test]
    fn versions_travel_in_the_header() {
        let (mut a, b) = (node("alice"), node("bob"));
        a.rotate(1).expect("rotate");
        a.rotate(2).expect("rotate");
        let s = seal(&a, "bob", to(&b), ID, b"m").expect("seal");
        let h = EnvelopeHeader::parse(&s.enc).expect("header");
        assert_eq!((h.sender_key_version, h.recipient_key_version), (3, 1));
        assert_eq!(&open_from(&a, &b, &s).expect("open")[..], b"m");
        // the sender's older key does not authenticate it
        let e = open(&b, "alice", &pubkey(&a, 2), ID, &s.enc, &s.payload);
        assert_eq!(e.expect_err("old sender key"), EnvelopeError::Decrypt);
    }

    #[test]
    fn previous_recipient_key_opens_within_grace_not_after_prune() {
        let (a, mut b) = (node("alice"), node("bob"));
        let s = seal(&a, "bob", to(&b), ID, b"sealed to v1").expect("seal");
        b.rotate(10_000).expect("rotate");
        assert_eq!(b.prune(15_000, 10_000), 0);
        assert_eq!(
            &open_from(&a, &b, &s).expect("in grace")[..],
            b"sealed to v1"
        );
        let s2 = seal(&a, "bob", to(&b), ID, b"to v2").expect("seal");
        assert_eq!(
            EnvelopeHeader::parse(&s2.enc)
                .expect("h")
                .recipient_key_version,
            2
        );
        assert_eq!(b.prune(20_000, 10_000), 1);
        let e = open_from(&a, &b, &s).expect_err("pruned");
        assert_eq!(e, EnvelopeError::UnknownKeyVersion(1));
        assert_eq!(e.code(), "unknown_key_version");
        assert_eq!(&open_from(&a, &b, &s2).expect("current")[..], b"to v2");
    }

    #[test]
    fn moving_or_altering_anything_fails() {
        let (a, b, c) = (node("alice"), node("bob"), node("carol"));
        let mut b2 = NodeKeys::from_secret_bytes(&b.to_secret_bytes()).expect("copy");
        b2.rotate(1).expect("rotate"); // bob holding versions 1 and 2
        let s = seal(&a, "bob", to(&b), ID, b"secret").expect("seal");
        let a_pub = pubkey(&a, 1);
        assert!(open(&b2, "alice", &a_pub, ID, &s.enc, &s.payload).is_ok());
        // another sender name, recipient, id
        let e = open(&b, "mallory", &a_pub, ID, &s.enc, &s.payload);
        assert_eq!(e.expect_err("sender"), EnvelopeError::Decrypt);
        let e = open(&c, "alice", &a_pub, ID, &s.enc, &s.payload);
        assert_eq!(e.expect_err("recipient"), EnvelopeError::Decrypt);
        let mut other_id = ID;
        other_id[15] ^= 1;
        let e = open(&b, "alice", &a_pub, other_id, &s.enc, &s.payload);
        assert_eq!(e.expect_err("id"), EnvelopeError::Decrypt);
        // sealed for bob, opened by the same key under another node name
        let mut bytes = b.to_secret_bytes().to_vec();
        bytes[5..8].copy_from_slice(b"rob");
        let rob = NodeKeys::from_secret_bytes(&bytes).expect("rob");
        assert_eq!(rob.node(), "rob");
        let e = open(&rob, "alice", &a_pub, ID, &s.enc, &s.payload);
        assert_eq!(e.expect_err("recipient name"), EnvelopeError::Decrypt);
        // versions: sender version changed, recipient version pointed at bob's other key
        let mut enc = s.enc.clone();
        enc[4] = 2;
        let e = open(&b2, "alice", &a_pub, ID, &enc, &s.payload);
        assert_eq!(e.expect_err("sender version"), EnvelopeError::Decrypt);
        let mut enc = s.enc.clone();
        enc[8] = 2;
        let e = open(&b2, "alice", &a_pub, ID, &enc, &s.payload);
        assert_eq!(e.expect_err("recipient version"), EnvelopeError::Decrypt);
        // the sending time: a relay cannot make an old message look new, or a new one old
        for sent in [SENT + 1, SENT - 86_400_000, 0, u64::MAX] {
            let mut enc = s.enc.clone();
            enc[9..17].copy_from_slice(&sent.to_be_bytes());
            let e = open(&b2, "alice", &a_pub, ID, &enc, &s.payload);
            assert_eq!(e.expect_err("sent_ms"), EnvelopeError::Decrypt);
        }
        // every bit of enc and payload
        for i in 0..s.enc.len() {
            let mut enc = s.enc.clone();
            enc[i] ^= 0x01;
            assert!(
                open(&b2, "alice", &a_pub, ID, &enc, &s.payload).is_err(),
                "enc {i}"
            );
        }
        for i in 0..s.payload.len() {
            let mut p = s.payload.clone();
            p[i] ^= 0x01;
            assert!(
                open(&b2, "alice", &a_pub, ID, &s.enc, &p).is_err(),
                "payload {i}"
            );
        }
        for len in 0..s.payload.len() {
            let e = open(&b, "alice", &a_pub, ID, &s.enc, &s.payload[..len]);
            assert!(matches!(
                e,
                Err(EnvelopeError::Truncated | EnvelopeError::Decrypt)
            ));
        }
        // wrong sender key (auth mode): carol cannot pose as alice
        let forged = seal(&c, "bob", to(&b), ID, b"secret").expect("seal");
        let e = open(&b, "alice", &a_pub, ID, &forged.enc, &forged.payload);
        assert_eq!(e.expect_err("forged"), EnvelopeError::Decrypt);
        let e = open(&b, "alice", &pubkey(&c, 1), ID, &s.enc, &s.payload);
        assert_eq!(e.expect_err("wrong sender key"), EnvelopeError::Decrypt);
    }

    #[test]
    fn bad_inputs_are_coded_errors() {
        let (a, b) = (node("alice"), node("bob"));
        let s = seal(&a, "bob", to(&b), ID, b"m").expect("seal");
        let a_pub = pubkey(&a, 1);
        for (bad, want) in [
            (vec![], EnvelopeError::HeaderLength(0)),
            (s.enc[..48].to_vec(), EnvelopeError::HeaderLength(48)),
            ([&s.enc[..], &[0]].concat(), EnvelopeError::HeaderLength(50)),
            (
                [&[3], &s.enc[1..]].concat(),
                EnvelopeError::UnknownFormat(3),
            ),
            // an older client's format 1 (41 bytes, no sending time) is named, not opened
            (
                [&[1], &s.enc[1..9], &s.enc[17..]].concat(),
                EnvelopeError::UnknownFormat(1),
            ),
            (
                [&[FORMAT, 0, 0, 0, 0], &s.enc[5..]].concat(),
                EnvelopeError::ZeroVersion,
            ),
            (
                [&s.enc[..5], &[0; 4], &s.enc[9..]].concat(),
                EnvelopeError::ZeroVersion,
            ),
        ] {
            assert_eq!(EnvelopeHeader::parse(&bad), Err(want));
            let e = open(&b, "alice", &a_pub, ID, &bad, &s.payload).expect_err("bad enc");
            assert_eq!((e, e.code()), (want, "envelope_malformed"));
        }
        let mut enc = s.enc.clone();
        enc[8] = 3;
        let e = open(&b, "alice", &a_pub, ID, &enc, &s.payload);
        assert_eq!(e.expect_err("v3"), EnvelopeError::UnknownKeyVersion(3));
        for bad in ["", "a\nb", "a b", "../x"] {
            let e = seal(&a, bad, to(&b), ID, b"m").expect_err(bad);
            assert_eq!(e, EnvelopeError::InvalidNode);
            let e = open(&b, bad, &a_pub, ID, &s.enc, &s.payload).expect_err(bad);
            assert_eq!(e, EnvelopeError::InvalidNode);
        }
        let mut one = [0u8; 32];
        one[0] = 1;
        for low_order in [[0u8; 32], one] {
            let e = seal(&a, "bob", (1, low_order), ID, b"m").expect_err("low order");
            assert_eq!(e, EnvelopeError::InvalidKey);
            let e = open(&b, "alice", &low_order, ID, &s.enc, &s.payload).expect_err("low");
            assert!(matches!(
                e,
                EnvelopeError::InvalidKey | EnvelopeError::Decrypt
            ));
        }
        let e = seal(&a, "bob", (0, pubkey(&b, 1)), ID, b"m").expect_err("v0");
        assert_eq!(e, EnvelopeError::ZeroVersion);
    }

    proptest! {
        #[test]
        fn parse_never_panics(enc in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = EnvelopeHeader::parse(&enc);
        }

        #[test]
        fn parse_accepts_exactly_the_encoding(
            s in 1u32.., r in 1u32.., sent_ms in any::<u64>(), encapped in any::<[u8; 32]>()
        ) {
            let h = EnvelopeHeader {
                sender_key_version: s, recipient_key_version: r, sent_ms, encapped,
            };
            prop_assert_eq!(EnvelopeHeader::parse(&h.to_bytes()), Ok(h));
        }

        #[test]
        fn open_never_panics(
            enc in prop::collection::vec(any::<u8>(), 0..64),
            payload in prop::collection::vec(any::<u8>(), 0..128),
            sender_pub in any::<[u8; 32]>(),
            sender in "[a-z\n .]{0,8}",
            id in any::<[u8; 16]>(),
            versions in (0u32..3, 0u32..3),
            encapped in any::<[u8; 32]>(),
        ) {
            let b = node("bob");
            let _ = open(&b, &sender, &sender_pub, id, &enc, &payload);
            // well-formed headers reach HPKE with arbitrary keys and ciphertexts
            let mut well_formed = vec![FORMAT];
            well_formed.extend_from_slice(&versions.0.to_be_bytes());
            well_formed.extend_from_slice(&versions.1.to_be_bytes());
            well_formed.extend_from_slice(&SENT.to_be_bytes());
            well_formed.extend_from_slice(&encapped);
            prop_assert!(open(&b, "alice", &sender_pub, id, &well_formed, &payload).is_err());
        }
    }
}
