//! Group vault cryptography: AEAD records, Argon2id KEKs, key wrapping, Shamir, HPKE. Secrets are
//! wiped on drop, `Debug` prints none, and the only non-test panics are OS RNG failures.

use std::fmt;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hpke::{Deserializable, HpkeError, Kem as _, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

type Kem = hpke::kem::X25519HkdfSha256;
type HAead = hpke::aead::ChaCha20Poly1305;
type HKdf = hpke::kdf::HkdfSha256;
type HpkeSecret = <Kem as hpke::Kem>::PrivateKey;
type HpkePublic = <Kem as hpke::Kem>::PublicKey;
type HpkeEnc = <Kem as hpke::Kem>::EncappedKey;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SHARE_LEN: usize = 1 + KEY_LEN;
// Equal-length domain labels prefixed to every AEAD AAD: data, wrapped-key and key-check blobs
// can never be substituted for one another, whatever AAD the caller picks.
const DOMAIN_DATA: &[u8] = b"gvault1:data";
const DOMAIN_WRAP: &[u8] = b"gvault1:wrap";
const DOMAIN_CHECK: &[u8] = b"gvault1:kchk";
// Upper bounds on (stored, possibly tampered) KDF parameters, against memory/CPU exhaustion.
const MAX_M_KIB: u32 = 1 << 20; // 1 GiB
const MAX_T: u32 = 32;
const MAX_P: u32 = 16;

/// Errors; none carries secret material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// AEAD or HPKE open failed.
    #[error("decryption failed")]
    Decrypt,
    /// A key is malformed or unusable (e.g. a low-order HPKE public key).
    #[error("invalid key")]
    InvalidKey,
    /// Combine failed, wrong share count or format, duplicate ids, or bad split parameters.
    #[error("invalid shares")]
    InvalidShares,
    /// Bad KDF parameters.
    #[error("invalid KDF parameters")]
    Params,
    /// Malformed sealed blob.
    #[error("malformed encoding")]
    Encoding,
    /// Sealing failed (only reachable for plaintexts beyond the AEAD size limit).
    #[error("encryption failed")]
    Encrypt,
}
use CryptoError as E;

fn os_random(buf: &mut [u8]) {
    // An OS RNG failure is unrecoverable and not caller-triggerable: the one permitted panic.
    getrandom::fill(buf).expect("OS random number generator failed");
}

/// A 32-byte symmetric key (vault data key or key-encryption key). Zeroized on drop.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// Fresh random key from the OS RNG (panics only if the OS RNG fails).
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        os_random(&mut k[..]);
        Self(k)
    }
    /// Take ownership of key bytes (the argument copy is wiped; the caller's own copy is not).
    pub fn from_bytes(mut b: [u8; KEY_LEN]) -> Self {
        let k = Zeroizing::new(b);
        b.zeroize();
        Self(k)
    }
    /// Borrow the raw key bytes.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    fn from_slice(b: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        (b.len() == KEY_LEN).then(|| {
            k.copy_from_slice(b);
            Self(k)
        })
    }
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into()) // the cipher wipes its key copy on drop
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

fn aead_seal(key: &DataKey, domain: &[u8], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, E> {
    let mut out = vec![0u8; NONCE_LEN];
    os_random(&mut out);
    let nonce = XNonce::try_from(&out[..]).map_err(|_| E::Encrypt)?;
    let aad = &[domain, aad].concat();
    let ct = key.cipher().encrypt(&nonce, Payload { msg, aad });
    out.extend_from_slice(&ct.map_err(|_| E::Encrypt)?);
    Ok(out)
}

fn aead_open(key: &DataKey, domain: &[u8], blob: &[u8], aad: &[u8]) -> Result<Plaintext, E> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(E::Encoding);
    }
    let (nonce, msg) = blob.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| E::Encoding)?;
    let aad = &[domain, aad].concat();
    let pt = key.cipher().decrypt(&nonce, Payload { msg, aad });
    pt.map(Zeroizing::new).map_err(|_| E::Decrypt)
}

/// Decrypted plaintext, zeroized on drop.
pub type Plaintext = Zeroizing<Vec<u8>>;

/// XChaCha20-Poly1305: output = 24-byte random nonce || ciphertext+tag. AAD binds context.
pub fn seal(key: &DataKey, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    aead_seal(key, DOMAIN_DATA, plaintext, aad)
}

/// Open a blob produced by [`seal`] with the same key and AAD.
pub fn open(key: &DataKey, sealed: &[u8], aad: &[u8]) -> Result<Plaintext, CryptoError> {
    aead_open(key, DOMAIN_DATA, sealed, aad)
}

/// Argon2id (v0x13, fixed) parameters stored next to the wrapped key; the salt serializes as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Number of passes.
    pub t: u32,
    /// Parallelism (lanes).
    pub p: u32,
    /// Random salt (hex string in serialized form).
    #[serde(with = "hex::serde")]
    pub salt: [u8; 16],
}

impl KdfParams {
    /// Random 16-byte salt; refuses m_kib < 8 (and < 8*p), t < 1, p < 1, and absurdly large values.
    pub fn new_random(m_kib: u32, t: u32, p: u32) -> Result<Self, CryptoError> {
        let mut salt = [0u8; 16];
        os_random(&mut salt);
        let k = KdfParams { m_kib, t, p, salt };
        k.argon2_params().map(|_| k)
    }
    fn argon2_params(&self) -> Result<Params, E> {
        let ok = (8..=MAX_M_KIB).contains(&self.m_kib)
            && (1..=MAX_T).contains(&self.t)
            && (1..=MAX_P).contains(&self.p);
        if !ok {
            return Err(E::Params);
        }
        Params::new(self.m_kib, self.t, self.p, Some(KEY_LEN)).map_err(|_| E::Params)
    }
}

/// Derive a key-encryption key from a passphrase (Argon2id v0x13, 32 bytes), wiping the work memory.
pub fn derive_kek(passphrase: &[u8], params: &KdfParams) -> Result<DataKey, CryptoError> {
    let p = params.argon2_params()?;
    // We own the block memory so it is zeroized on drop (argon2's own allocation is not wiped).
    let mut mem = Zeroizing::new(vec![Block::default(); p.block_count()]);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into_with_memory(passphrase, &params.salt, &mut out[..], &mut mem[..])
        .map_err(|_| E::Params)?;
    Ok(DataKey(out))
}

/// Wrap a data key under a KEK (XChaCha20-Poly1305 with the given AAD).
pub fn wrap_key(kek: &DataKey, key: &DataKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    aead_seal(kek, DOMAIN_WRAP, key.expose(), aad)
}

/// Unwrap a data key produced by [`wrap_key`].
pub fn unwrap_key(kek: &DataKey, wrapped: &[u8], aad: &[u8]) -> Result<DataKey, CryptoError> {
    DataKey::from_slice(&aead_open(kek, DOMAIN_WRAP, wrapped, aad)?).ok_or(E::InvalidKey)
}

/// Key check value (40 bytes): AEAD over an empty message with a fixed domain AAD.
pub fn key_check(key: &DataKey) -> Result<Vec<u8>, CryptoError> {
    aead_seal(key, DOMAIN_CHECK, b"", b"")
}

/// True iff `check` came from [`key_check`] under this exact key.
pub fn verify_key_check(key: &DataKey, check: &[u8]) -> bool {
    check.len() == NONCE_LEN + TAG_LEN && aead_open(key, DOMAIN_CHECK, check, b"").is_ok()
}

/// Shamir share over GF(256): 1 identifier byte (1..=n) + 32 bytes, zeroized on drop.
pub struct Share(Zeroizing<Vec<u8>>);

impl Share {
    /// The share identifier (x coordinate, never 0).
    pub fn id(&self) -> u8 {
        self.0[0] // invariant: from_vec guarantees 33 bytes
    }
    /// The 33-byte encoding: id || value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Parse a share: exactly 33 bytes with id != 0.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        Self::from_vec(Zeroizing::new(b.to_vec()))
    }
    fn from_vec(v: Zeroizing<Vec<u8>>) -> Result<Self, E> {
        match v.first() {
            Some(&id) if id != 0 && v.len() == SHARE_LEN => Ok(Self(v)),
            _ => Err(E::InvalidShares),
        }
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share {{ id: {}, value: [redacted] }}", self.id())
    }
}

/// Split a key t-of-n (feature `shamir`); refuses threshold < 2 and threshold > n (n > 255 cannot be expressed).
#[cfg(feature = "shamir")]
pub fn split(key: &DataKey, threshold: u8, n: u8) -> Result<Vec<Share>, CryptoError> {
    if threshold < 2 || threshold > n {
        return Err(E::InvalidShares);
    }
    let rng = rand_core::UnwrapErr(getrandom::SysRng); // panics only if the OS RNG fails
    let raw = vsss_rs::Gf256::split_bytes(threshold.into(), n.into(), &key.expose()[..], rng)
        .map_err(|_| E::InvalidShares)?;
    // Wrap every buffer first, so none escapes unwiped if validation fails midway.
    let raw: Vec<Zeroizing<Vec<u8>>> = raw.into_iter().map(Zeroizing::new).collect();
    raw.into_iter().map(Share::from_vec).collect()
}

/// Combine shares into a CANDIDATE key (feature `shamir`): check it with [`verify_key_check`], since t-1 shares
/// silently give a wrong key. Fewer than 2 shares or duplicate ids: `InvalidShares`.
#[cfg(feature = "shamir")]
pub fn combine(shares: &[Share]) -> Result<DataKey, CryptoError> {
    let mut seen = [false; 256];
    for s in shares {
        if std::mem::replace(&mut seen[usize::from(s.id())], true) {
            return Err(E::InvalidShares);
        }
    }
    if shares.len() < 2 {
        return Err(E::InvalidShares);
    }
    let raw = Zeroizing::new(shares.iter().map(|s| s.0.to_vec()).collect::<Vec<_>>());
    let key = vsss_rs::Gf256::combine_bytes(raw.as_slice()).map_err(|_| E::InvalidShares)?;
    DataKey::from_slice(&Zeroizing::new(key)).ok_or(E::InvalidShares)
}

/// X25519 key pair for HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305).
pub struct HpkeKeyPair {
    secret: Zeroizing<[u8; 32]>,
    /// The X25519 public key.
    pub public: [u8; 32],
}

impl HpkeKeyPair {
    /// Fresh key pair from the OS RNG (hpke's `gen_keypair` panics only if the OS RNG fails).
    pub fn generate() -> Self {
        let (sk, pk) = Kem::gen_keypair(); // `sk` wipes itself on drop
        let (mut secret, mut public) = (Zeroizing::new([0u8; 32]), [0u8; 32]);
        sk.write_exact(&mut secret[..]);
        pk.write_exact(&mut public);
        Self { secret, public }
    }
    /// Rebuild from a 32-byte X25519 secret (all-zero refused); the public key is recomputed.
    pub fn from_secret(mut secret: [u8; 32]) -> Result<Self, CryptoError> {
        let s = Zeroizing::new(secret);
        secret.zeroize();
        if s.iter().all(|&b| b == 0) {
            return Err(E::InvalidKey);
        }
        let mut public = [0u8; 32];
        Kem::sk_to_pk(&private_key(&s)?).write_exact(&mut public);
        Ok(Self { secret: s, public })
    }
    /// Borrow the raw secret key bytes.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public = hex::encode(self.public);
        write!(f, "HpkeKeyPair {{ public: {public}, secret: [redacted] }}")
    }
}

fn private_key(secret: &[u8; 32]) -> Result<HpkeSecret, E> {
    HpkeSecret::from_bytes(&secret[..]).map_err(|_| E::InvalidKey) // wipes itself on drop
}

fn public_key(pk: &[u8; 32]) -> Result<HpkePublic, E> {
    HpkePublic::from_bytes(&pk[..]).map_err(|_| E::InvalidKey)
}

fn seal_mode(
    mode: &OpModeS<Kem>,
    to: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>, E> {
    let to = public_key(to)?;
    let (enc, ct) = match hpke::single_shot_seal::<HAead, HKdf, Kem>(mode, &to, info, pt, aad) {
        Ok(v) => v,
        Err(HpkeError::EncapError) => return Err(E::InvalidKey), // low-order recipient key
        Err(_) => return Err(E::Encrypt),
    };
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_mode(
    mode: &OpModeR<Kem>,
    me: &HpkeKeyPair,
    info: &[u8],
    aad: &[u8],
    blob: &[u8],
) -> Result<Plaintext, E> {
    if blob.len() < 32 + TAG_LEN {
        return Err(E::Encoding);
    }
    let (enc, ct) = blob.split_at(32);
    let enc = HpkeEnc::from_bytes(enc).map_err(|_| E::Encoding)?;
    let sk = private_key(&me.secret)?;
    let pt = hpke::single_shot_open::<HAead, HKdf, Kem>(mode, &sk, &enc, info, ct, aad);
    pt.map(Zeroizing::new).map_err(|_| E::Decrypt)
}

/// Base mode: encrypt to a recipient public key. Output = 32-byte encapsulated key || ciphertext.
pub fn hpke_seal(
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_mode(&OpModeS::Base, recipient, info, aad, plaintext)
}

/// Base mode open.
pub fn hpke_open(
    recipient: &HpkeKeyPair,
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Plaintext, CryptoError> {
    open_mode(&OpModeR::Base, recipient, info, aad, sealed)
}

/// Auth mode: the recipient learns the sender's static key is the author.
pub fn hpke_seal_auth(
    sender: &HpkeKeyPair,
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let sk = private_key(&sender.secret)?;
    let pk = Kem::sk_to_pk(&sk); // recomputed: `public` is a pub field and could be stale
    seal_mode(&OpModeS::Auth((sk, pk)), recipient, info, aad, plaintext)
}

/// Auth mode open: fails unless `sender` is the static key that sealed.
pub fn hpke_open_auth(
    recipient: &HpkeKeyPair,
    sender: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Plaintext, CryptoError> {
    let mode = OpModeR::Auth(public_key(sender)?);
    open_mode(&mode, recipient, info, aad, sealed)
}

/// The labels of the vault's key ceremonies, shared by the vault and the admins' tools.
pub mod ceremony {
    /// HPKE `info` for a passphrase sealed to a ceremony key.
    pub const INFO_PASSPHRASE: &[u8] = b"keymesh-ceremony-passphrase-v1";
    /// HPKE `info` for a share sealed by the vault to its holder.
    pub const INFO_SHARE: &[u8] = b"keymesh-vault-share-v1";
    /// HPKE `info` for a share sealed by its holder to a ceremony key.
    pub const INFO_UNLOCK_SHARE: &[u8] = b"keymesh-ceremony-share-v1";

    /// The AAD binding a share to its group and holder.
    pub fn share_aad(group: &str, admin_id: &str) -> Vec<u8> {
        format!("{group}\n{admin_id}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PARAMS: (u32, u32, u32) = (64, 1, 1);

    fn small() -> KdfParams {
        KdfParams::new_random(PARAMS.0, PARAMS.1, PARAMS.2).unwrap()
    }

    #[test]
    fn seal_open_round_trip() {
        let k = DataKey::generate();
        for pt in [&b""[..], b"hunter2", &[0xAB; 5000][..]] {
            let s = seal(&k, pt, b"g1/db/pw/v3").unwrap();
            assert_eq!(s.len(), NONCE_LEN + pt.len() + TAG_LEN);
            assert_eq!(&open(&k, &s, b"g1/db/pw/v3").unwrap()[..], pt);
        }
        // random nonces: two seals of the same input differ
        assert_ne!(seal(&k, b"x", b"").unwrap(), seal(&k, b"x", b"").unwrap());
    }

    #[test]
    fn open_rejects_wrong_key_aad_tampering_truncation() {
        let k = DataKey::generate();
        let s = seal(&k, b"secret value", b"aad").unwrap();
        assert_eq!(
            open(&DataKey::generate(), &s, b"aad").unwrap_err(),
            E::Decrypt
        );
        assert_eq!(open(&k, &s, b"aae").unwrap_err(), E::Decrypt);
        assert_eq!(open(&k, &s, b"").unwrap_err(), E::Decrypt);
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert_eq!(open(&k, &t, b"aad").unwrap_err(), E::Decrypt, "flip at {i}");
        }
        for len in 0..s.len() {
            let e = open(&k, &s[..len], b"aad").unwrap_err();
            assert!(matches!(e, E::Decrypt | E::Encoding), "len {len}");
            if len < NONCE_LEN + TAG_LEN {
                assert_eq!(e, E::Encoding);
            }
        }
        let mut longer = s.clone();
        longer.push(0);
        assert_eq!(open(&k, &longer, b"aad").unwrap_err(), E::Decrypt);
    }

    #[test]
    fn derive_kek_deterministic_and_input_sensitive() {
        let p = small();
        let a = derive_kek(b"correct horse", &p).unwrap();
        assert_eq!(
            a.expose(),
            derive_kek(b"correct horse", &p).unwrap().expose()
        );
        let mut other_salt = p;
        other_salt.salt[0] ^= 1;
        assert_ne!(
            a.expose(),
            derive_kek(b"correct horse", &other_salt).unwrap().expose()
        );
        assert_ne!(
            a.expose(),
            derive_kek(b"correct horsf", &p).unwrap().expose()
        );
        assert_ne!(
            a.expose(),
            derive_kek(b"correct horse", &KdfParams { t: 2, ..p })
                .unwrap()
                .expose()
        );
        assert_ne!(
            a.expose(),
            derive_kek(b"correct horse", &KdfParams { m_kib: 72, ..p })
                .unwrap()
                .expose()
        );
        assert_ne!(small().salt, small().salt);
    }

    #[test]
    fn derive_kek_with_default_params() {
        let p = KdfParams::new_random(65536, 3, 1).unwrap();
        let a = derive_kek(b"passphrase", &p).unwrap();
        assert_eq!(a.expose(), derive_kek(b"passphrase", &p).unwrap().expose());
    }

    #[test]
    fn kdf_params_refuse_bad_values() {
        for (m, t, p) in [
            (7, 1, 1),
            (0, 1, 1),
            (64, 0, 1),
            (64, 1, 0),
            (8, 1, 2),
            (MAX_M_KIB + 1, 1, 1),
            (64, MAX_T + 1, 1),
            (1024, 1, MAX_P + 1),
        ] {
            assert_eq!(
                KdfParams::new_random(m, t, p).unwrap_err(),
                E::Params,
                "{m},{t},{p}"
            );
            let bad = KdfParams {
                m_kib: m,
                t,
                p,
                salt: [7; 16],
            };
            assert_eq!(
                derive_kek(b"pw", &bad).unwrap_err(),
                E::Params,
                "{m},{t},{p}"
            );
        }
        assert!(KdfParams::new_random(8, 1, 1).is_ok());
    }

    #[test]
    fn kdf_params_serde_round_trip_and_validation() {
        let p = small();
        let json = serde_json::to_string(&p).unwrap();
        let want = format!(
            r#"{{"m_kib":64,"t":1,"p":1,"salt":"{}"}}"#,
            hex::encode(p.salt)
        );
        assert_eq!(json, want);
        assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), p);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for bad in [
            json!("abcd"),
            json!("zz".repeat(16)),
            json!("00".repeat(17)),
            json!([1, 2]),
        ] {
            let mut w = v.clone();
            w["salt"] = bad;
            assert!(serde_json::from_value::<KdfParams>(w).is_err());
        }
        // tampered stored params are refused at use, before any allocation
        let mut w = v.clone();
        w["m_kib"] = json!(u32::MAX);
        let huge: KdfParams = serde_json::from_value(w).unwrap();
        assert_eq!(derive_kek(b"pw", &huge).unwrap_err(), E::Params);
    }

    #[test]
    fn wrap_unwrap_round_trip_and_failures() {
        let kek = derive_kek(b"pw", &small()).unwrap();
        let dk = DataKey::generate();
        let w = wrap_key(&kek, &dk, b"group=g1;v=1").unwrap();
        assert_eq!(
            unwrap_key(&kek, &w, b"group=g1;v=1").unwrap().expose(),
            dk.expose()
        );
        assert_eq!(
            unwrap_key(&DataKey::generate(), &w, b"group=g1;v=1").unwrap_err(),
            E::Decrypt
        );
        assert_eq!(
            unwrap_key(&kek, &w, b"group=g1;v=2").unwrap_err(),
            E::Decrypt
        );
        assert_eq!(
            unwrap_key(&kek, &w[..10], b"group=g1;v=1").unwrap_err(),
            E::Encoding
        );
        // domain separation: a data record is never accepted as a wrapped key, and vice versa
        let rec = seal(&kek, dk.expose(), b"group=g1;v=1").unwrap();
        assert_eq!(
            unwrap_key(&kek, &rec, b"group=g1;v=1").unwrap_err(),
            E::Decrypt
        );
        assert_eq!(open(&kek, &w, b"group=g1;v=1").unwrap_err(), E::Decrypt);
    }

    #[test]
    fn key_check_accepts_only_the_key() {
        let k = DataKey::generate();
        let c = key_check(&k).unwrap();
        assert_eq!(c.len(), 40);
        assert!(verify_key_check(&k, &c));
        assert!(!verify_key_check(&DataKey::generate(), &c));
        assert!(!verify_key_check(&k, &c[..39]) && !verify_key_check(&k, &[]));
        for i in 0..c.len() {
            let mut t = c.clone();
            t[i] ^= 0x80;
            assert!(!verify_key_check(&k, &t));
        }
        // an ordinary sealed empty record is not a key check
        assert!(!verify_key_check(&k, &seal(&k, b"", b"").unwrap()));
    }

    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|m| m.count_ones() as usize == k)
            .map(|m| (0..n).filter(|i| m >> i & 1 == 1).collect())
            .collect()
    }

    fn pick(shares: &[Share], idx: &[usize]) -> Vec<Share> {
        idx.iter()
            .map(|&i| Share::from_bytes(shares[i].as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn shamir_3_of_5_any_3_or_more_recover() {
        let k = DataKey::generate();
        let check = key_check(&k).unwrap();
        let shares = split(&k, 3, 5).unwrap();
        assert_eq!(
            shares.iter().map(Share::id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(shares.iter().all(|s| s.as_bytes().len() == SHARE_LEN));
        for size in 3..=5 {
            for idx in subsets(5, size) {
                let mut sub = pick(&shares, &idx);
                sub.reverse(); // order must not matter
                let rec = combine(&sub).unwrap();
                assert!(verify_key_check(&rec, &check), "{idx:?}");
                assert_eq!(rec.expose(), k.expose());
            }
        }
    }

    #[test]
    fn shamir_too_few_or_corrupted_shares_fail_check() {
        let k = DataKey::generate();
        let check = key_check(&k).unwrap();
        let shares = split(&k, 3, 5).unwrap();
        for idx in subsets(5, 2) {
            let rec = combine(&pick(&shares, &idx)).unwrap(); // silently wrong
            assert!(!verify_key_check(&rec, &check), "{idx:?}");
        }
        for pos in 1..SHARE_LEN {
            let mut b = shares[2].as_bytes().to_vec();
            b[pos] ^= 0x01;
            let mut sub = pick(&shares, &[0, 1]);
            sub.push(Share::from_bytes(&b).unwrap());
            assert!(
                !verify_key_check(&combine(&sub).unwrap(), &check),
                "pos {pos}"
            );
        }
        let mut b = shares[2].as_bytes().to_vec();
        b[0] = 9; // wrong (but unused) identifier
        let mut sub = pick(&shares, &[0, 1]);
        sub.push(Share::from_bytes(&b).unwrap());
        assert!(!verify_key_check(&combine(&sub).unwrap(), &check));
    }

    #[test]
    fn shamir_rejects_duplicates_and_too_few() {
        let shares = split(&DataKey::generate(), 3, 5).unwrap();
        let dup = pick(&shares, &[0, 0, 1]);
        assert_eq!(combine(&dup).unwrap_err(), E::InvalidShares);
        let dup = pick(&shares, &[0, 1, 2, 3, 1]);
        assert_eq!(combine(&dup).unwrap_err(), E::InvalidShares);
        // same id, different value (e.g. shares from two different splits)
        let other = split(&DataKey::generate(), 3, 5).unwrap();
        let mut mixed = pick(&shares, &[0, 1]);
        mixed.extend(pick(&other, &[0]));
        assert_eq!(combine(&mixed).unwrap_err(), E::InvalidShares);
        assert_eq!(combine(&[]).unwrap_err(), E::InvalidShares);
        assert_eq!(combine(&pick(&shares, &[0])).unwrap_err(), E::InvalidShares);
    }

    #[test]
    fn split_refuses_bad_threshold() {
        let k = DataKey::generate();
        for (t, n) in [(0, 5), (1, 5), (4, 3), (6, 5), (2, 0), (0, 0), (255, 254)] {
            assert_eq!(split(&k, t, n).unwrap_err(), E::InvalidShares, "{t}/{n}");
        }
        let check = key_check(&k).unwrap();
        for (t, n) in [(2, 2), (2, 255)] {
            let s = split(&k, t, n).unwrap();
            assert_eq!(s.len(), usize::from(n));
            assert!(verify_key_check(
                &combine(&s[s.len() - 2..]).unwrap(),
                &check
            ));
        }
        let s = split(&k, 255, 255).unwrap();
        assert!(verify_key_check(&combine(&s).unwrap(), &check));
        assert!(!verify_key_check(&combine(&s[1..]).unwrap(), &check));
    }

    #[test]
    fn share_from_bytes_validates() {
        for len in [0, 1, 2, 32, 34, 64] {
            assert_eq!(
                Share::from_bytes(&vec![1u8; len]).unwrap_err(),
                E::InvalidShares,
                "len {len}"
            );
        }
        let mut b = [5u8; SHARE_LEN];
        b[0] = 0;
        assert_eq!(Share::from_bytes(&b).unwrap_err(), E::InvalidShares);
        b[0] = 200;
        let s = Share::from_bytes(&b).unwrap();
        assert_eq!((s.id(), s.as_bytes()), (200, &b[..]));
    }

    #[test]
    fn hpke_base_and_auth_round_trip() {
        let (alice, bob) = (HpkeKeyPair::generate(), HpkeKeyPair::generate());
        let s = hpke_seal(&bob.public, b"info", b"aad", b"share bytes").unwrap();
        assert_eq!(s.len(), 32 + 11 + TAG_LEN);
        assert_eq!(
            &hpke_open(&bob, b"info", b"aad", &s).unwrap()[..],
            b"share bytes"
        );
        let s = hpke_seal_auth(&alice, &bob.public, b"info", b"aad", b"").unwrap();
        assert!(
            hpke_open_auth(&bob, &alice.public, b"info", b"aad", &s)
                .unwrap()
                .is_empty()
        );
        // a pair rebuilt from its secret is the same key
        let bob2 = HpkeKeyPair::from_secret(*bob.secret()).unwrap();
        assert_eq!(bob2.public, bob.public);
        assert_eq!(
            &hpke_open_auth(&bob2, &alice.public, b"info", b"aad", &s).unwrap()[..],
            b""
        );
        // a stale/forged `public` field on the sender does not change who is authenticated
        let mut alice_bad = HpkeKeyPair::from_secret(*alice.secret()).unwrap();
        alice_bad.public = bob.public;
        let s = hpke_seal_auth(&alice_bad, &bob.public, b"i", b"a", b"m").unwrap();
        assert!(hpke_open_auth(&bob, &alice.public, b"i", b"a", &s).is_ok());
    }

    #[test]
    fn hpke_rejects_wrong_sender_mode_info_aad_recipient_tampering() {
        let (alice, bob, eve) = (
            HpkeKeyPair::generate(),
            HpkeKeyPair::generate(),
            HpkeKeyPair::generate(),
        );
        let auth = hpke_seal_auth(&alice, &bob.public, b"info", b"aad", b"m").unwrap();
        assert_eq!(
            hpke_open_auth(&bob, &eve.public, b"info", b"aad", &auth).unwrap_err(),
            E::Decrypt
        );
        assert_eq!(
            hpke_open(&bob, b"info", b"aad", &auth).unwrap_err(),
            E::Decrypt
        );
        let base = hpke_seal(&bob.public, b"info", b"aad", b"m").unwrap();
        assert_eq!(
            hpke_open_auth(&bob, &alice.public, b"info", b"aad", &base).unwrap_err(),
            E::Decrypt
        );
        let open_as = |auth_mode: bool, r: &HpkeKeyPair, i: &[u8], a: &[u8], s: &[u8]| {
            if auth_mode {
                hpke_open_auth(r, &alice.public, i, a, s)
            } else {
                hpke_open(r, i, a, s)
            }
        };
        for (auth_mode, s) in [(true, &auth), (false, &base)] {
            let open_any =
                |r: &HpkeKeyPair, i: &[u8], a: &[u8], s: &[u8]| open_as(auth_mode, r, i, a, s);
            assert!(open_any(&bob, b"info", b"aad", s).is_ok());
            assert_eq!(open_any(&bob, b"infx", b"aad", s).unwrap_err(), E::Decrypt);
            assert_eq!(open_any(&bob, b"info", b"aax", s).unwrap_err(), E::Decrypt);
            assert_eq!(open_any(&eve, b"info", b"aad", s).unwrap_err(), E::Decrypt);
            for i in 0..s.len() {
                let mut t = s.to_vec();
                t[i] ^= 0x04;
                assert!(open_any(&bob, b"info", b"aad", &t).is_err(), "flip {i}");
            }
            for len in 0..s.len() {
                let e = open_any(&bob, b"info", b"aad", &s[..len]).unwrap_err();
                assert!(matches!(e, E::Encoding | E::Decrypt), "len {len}");
            }
        }
        // all-zero encapsulated key (low-order point) fails cleanly
        let mut z = base.clone();
        z[..32].fill(0);
        assert_eq!(
            hpke_open(&bob, b"info", b"aad", &z).unwrap_err(),
            E::Decrypt
        );
    }

    #[test]
    fn hpke_refuses_low_order_and_zero_keys() {
        let alice = HpkeKeyPair::generate();
        let mut one = [0u8; 32];
        one[0] = 1;
        for bad in [[0u8; 32], one] {
            assert_eq!(
                hpke_seal(&bad, b"i", b"a", b"m").unwrap_err(),
                E::InvalidKey
            );
            assert_eq!(
                hpke_seal_auth(&alice, &bad, b"i", b"a", b"m").unwrap_err(),
                E::InvalidKey
            );
        }
        assert_eq!(
            HpkeKeyPair::from_secret([0; 32]).unwrap_err(),
            E::InvalidKey
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let k = DataKey::generate();
        let share = split(&k, 2, 3).unwrap().remove(0);
        let kp = HpkeKeyPair::generate();
        let cases: [(String, &[u8]); 3] = [
            (format!("{k:?}{k:#?}"), k.expose()),
            (format!("{share:?}{share:#?}"), &share.as_bytes()[1..]),
            (format!("{kp:?}{kp:#?}"), kp.secret()),
        ];
        for (dbg, secret) in cases {
            assert!(dbg.contains("redacted"), "{dbg}");
            for needle in [
                hex::encode(secret),
                hex::encode_upper(secret),
                format!("{secret:?}"),
                format!("{:?}", &secret[..4]),
            ] {
                assert!(!dbg.contains(&needle), "{dbg} leaks {needle}");
            }
        }
        assert_eq!(format!("{k:?}"), "DataKey([redacted])");
        assert!(format!("{kp:?}").contains(&hex::encode(kp.public)));
        assert!(!format!("{:?}", E::Decrypt).is_empty());
    }
}
