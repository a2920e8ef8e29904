//! The published test vectors (`docs/protocol/test-vectors/`): proof of possession, the relay
//! handshake, key statements, end-to-end envelopes, key-ceremony sealing and the audit chain.
//!
//! Each vector is built from fixed inputs (stated in the file as hex) by the project's own
//! functions, and the documented construction of every signed or hashed message is checked
//! against them, so a change of any format fails here. The committed files must equal what
//! this renders; `KEYMESH_UPDATE_DOCS=1` rewrites them instead.
//!
//! HPKE draws its ephemeral key from the OS and the project's seal functions take no RNG, so a
//! sealed vector cannot be derived again: the committed sealed bytes are kept for as long as
//! the project's open functions open them to the stated plaintext (a failure says the format
//! changed), and a fresh seal by the project's seal functions is checked to open with the
//! stated keys and with the documented construction.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use keymesh_client::{
    envelope::{self, EnvelopeError, EnvelopeHeader},
    keyfile,
    keys::NodeKeys,
};
use keymesh_core::{
    ApiError,
    audit::{self, AuditEvent, AuditLog, AuditQuery, AuditRecord, GENESIS, Outcome},
    capability::{
        pop::{self, PopError, Proof, ReplayCache},
        token::token_hash,
    },
    config::ServiceName,
    crypto::{self, HpkeKeyPair, KdfParams, Share, ceremony},
    http::node::TOKEN_B64,
    storage::{Db, testing::TestDb},
    with_pool,
};
use keymesh_management::{
    checkpoints::{self, CheckpointSigner},
    secrets::Keyed,
};
use keymesh_relay::{
    frame::{ClientFrame, ServerFrame},
    registry::{self, KeyError, KeyRow},
};
use secrecy::SecretString;
use serde::{
    Serialize, Serializer,
    ser::{SerializeMap, SerializeSeq},
};
use serde_json::{Value, json};

const DIR: &str = "docs/protocol/test-vectors";
const REGENERATE: &str = "KEYMESH_UPDATE_DOCS=1 cargo test -p keymesh --bins test_vectors";

/// 2026-01-01T00:00:00Z, the time every vector is made at.
const TS: i64 = 1_767_225_600;

mod audit_chain;
mod ceremonies;
mod proofs;
mod relay;

// ---------------------------------------------------------------------------------------------
// Rendering and the drift check.

/// A JSON value that keeps its fields in the order written (serde_json's own map sorts them).
#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Int(i) => s.serialize_i64(*i),
            J::Str(t) => s.serialize_str(t),
            J::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            J::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl From<&str> for J {
    fn from(v: &str) -> Self {
        J::Str(v.to_owned())
    }
}
impl From<String> for J {
    fn from(v: String) -> Self {
        J::Str(v)
    }
}
impl From<i64> for J {
    fn from(v: i64) -> Self {
        J::Int(v)
    }
}
impl From<u32> for J {
    fn from(v: u32) -> Self {
        J::Int(v.into())
    }
}
impl From<u64> for J {
    fn from(v: u64) -> Self {
        J::Int(i64::try_from(v).expect("fits i64"))
    }
}
impl From<bool> for J {
    fn from(v: bool) -> Self {
        J::Bool(v)
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> Self {
        J::Arr(v)
    }
}

fn obj<const N: usize>(fields: [(&str, J); N]) -> J {
    J::Obj(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn hx(bytes: impl AsRef<[u8]>) -> J {
    J::Str(hex::encode(bytes))
}

/// Signed or hashed text: `text` is a JSON string that decodes to exactly these bytes (each
/// separator is one 0x0A, which JSON writes as `\n`), `hex` the same bytes.
fn message(bytes: &[u8]) -> J {
    let text = std::str::from_utf8(bytes).expect("a text message");
    obj([("text", text.into()), ("hex", hx(bytes))])
}

/// Binary bytes: `escaped` is Rust's `escape_ascii` rendering (for reading), `hex` the bytes.
fn binary(bytes: &[u8]) -> J {
    obj([
        ("escaped", bytes.escape_ascii().to_string().into()),
        ("hex", hx(bytes)),
    ])
}

/// A serde_json value (objects in serde_json's sorted order).
fn from_value(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(n) => J::Int(n.as_i64().expect("integers only")),
        Value::String(s) => J::Str(s.clone()),
        Value::Array(a) => J::Arr(a.iter().map(from_value).collect()),
        Value::Object(m) => J::Obj(m.iter().map(|(k, v)| (k.clone(), from_value(v))).collect()),
    }
}

fn updating() -> bool {
    std::env::var_os("KEYMESH_UPDATE_DOCS").is_some()
}

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(DIR)
        .join(name)
}

/// The committed vector file, parsed (for the sealed bytes kept across runs).
fn committed(name: &str) -> Option<Value> {
    let text = fs::read_to_string(file(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Write `doc` (when updating) or fail unless the committed file is exactly it.
fn publish(name: &str, doc: &J) {
    let mut rendered = serde_json::to_string_pretty(doc).expect("render");
    rendered.push('\n');
    let path = file(name);
    if updating() {
        fs::create_dir_all(path.parent().expect("a parent")).expect("create the directory");
        fs::write(&path, &rendered).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{DIR}/{name} cannot be read ({e}); generate it with `{REGENERATE}`")
    });
    if committed != rendered {
        let (line, old, new) = committed
            .lines()
            .zip(rendered.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map_or_else(
                || {
                    let n = committed.lines().count().min(rendered.lines().count());
                    (n + 1, "(end of file)", "(end of file)")
                },
                |(i, (a, b))| (i + 1, a, b),
            );
        panic!(
            "{DIR}/{name} differs from what the code produces (first difference at line {line}: \
             committed {old:?}, produced {new:?}). A wire format changed or the file was edited \
             by hand. If the change is intended, regenerate with `{REGENERATE}`, review the diff \
             and update the docs that describe the format."
        );
    }
}

/// Sealed bytes kept from the committed file while `opens` accepts them; a fresh seal only
/// when regenerating.
fn kept_or_fresh<T>(
    name: &str,
    what: &str,
    old: Option<T>,
    opens: impl Fn(&T) -> bool,
    fresh: impl FnOnce() -> T,
) -> T {
    match old {
        Some(old) if opens(&old) => old,
        Some(_) if !updating() => panic!(
            "{DIR}/{name}: the committed {what} no longer opens with the project's open function \
             to the stated plaintext with the stated keys: the sealing format changed, or the \
             file was edited by hand. If a format change is intended, regenerate with \
             `{REGENERATE}` and update the docs."
        ),
        None if !updating() => {
            panic!("{DIR}/{name} has no {what}; generate it with `{REGENERATE}`")
        }
        _ => {
            let new = fresh();
            assert!(opens(&new), "a fresh {what} does not open");
            new
        }
    }
}

fn old_hex(doc: Option<&Value>, pointer: &str) -> Option<Vec<u8>> {
    doc?.pointer(pointer)?
        .as_str()
        .and_then(|h| hex::decode(h).ok())
}

// ---------------------------------------------------------------------------------------------
// Fixed inputs.

/// 32 fixed bytes named by a label (its SHA-256); the vectors state the bytes themselves.
fn fixed(label: &str) -> [u8; 32] {
    sha256(format!("keymesh test vector: {label}").as_bytes())
}

/// SHA-256 (the project's token hash is plain SHA-256 of the bytes).
fn sha256(bytes: &[u8]) -> [u8; 32] {
    token_hash(bytes)
}

fn at(ts: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).expect("after 1970"))
}

fn code(e: impl Into<ApiError>) -> &'static str {
    e.into().code().as_str()
}

/// The opaque token bytes the proofs bind (a Biscuit in real use: only its SHA-256 is signed).
fn token_bytes() -> Vec<u8> {
    fixed("capability token").to_vec()
}

fn identity(node: &str) -> SigningKey {
    SigningKey::from_bytes(&fixed(&format!("{node} identity seed")))
}

fn enc_secret(node: &str, version: u32) -> [u8; 32] {
    fixed(&format!("{node} x25519 v{version}"))
}

fn hpke(secret: [u8; 32]) -> HpkeKeyPair {
    HpkeKeyPair::from_secret(secret).expect("a usable X25519 secret")
}

/// A node's keys with a fixed identity seed and current encryption key `version`, loaded by
/// `keymeshctl`'s own key file reader (`keymesh_client::keyfile::load`): the only public way to
/// hold fixed keys in a `NodeKeys`. The key file format is the one `keyfile.rs` documents.
fn node_keys(node: &str, version: u32) -> NodeKeys {
    let mut material = b"KMK1".to_vec();
    material.push(u8::try_from(node.len()).expect("short id"));
    material.extend_from_slice(node.as_bytes());
    material.extend_from_slice(identity(node).as_bytes());
    material.extend_from_slice(&version.to_be_bytes());
    material.extend_from_slice(&enc_secret(node, version));
    material.extend_from_slice(&0u32.to_be_bytes());
    let kdf = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
        salt: [7; 16],
    };
    let passphrase = "test vectors";
    let kek = crypto::derive_kek(passphrase.as_bytes(), &kdf).expect("kek");
    let aad = format!(
        "{}\nargon2id-v19\nm_kib={}\nt={}\np={}\nsalt={}",
        keyfile::FORMAT,
        kdf.m_kib,
        kdf.t,
        kdf.p,
        hex::encode(kdf.salt)
    );
    let sealed = crypto::seal(&kek, &material, aad.as_bytes()).expect("seal");
    let doc = json!({ "format": keyfile::FORMAT, "kdf": kdf, "sealed": hex::encode(sealed) });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.keys");
    keyfile::write_atomic(&path, doc.to_string().as_bytes(), false).expect("write key file");
    let keys = keyfile::load(&path, &SecretString::from(passphrase)).unwrap_or_else(|e| {
        panic!("fixed node keys through keyfile::load: {e} (did the key file format change?)")
    });
    assert_eq!(
        keys.identity_public(),
        identity(node).verifying_key().to_bytes()
    );
    assert_eq!(
        (keys.current_version(), keys.current_enc_key().public),
        (version, hpke(enc_secret(node, version)).public)
    );
    keys
}

fn node_key_json(node: &str) -> J {
    let key = identity(node);
    obj([
        ("node", node.into()),
        ("ed25519_seed_hex", hx(key.as_bytes())),
        ("ed25519_public_hex", hx(key.verifying_key().as_bytes())),
    ])
}

fn x25519_json(secret: [u8; 32]) -> J {
    obj([
        ("x25519_secret_hex", hx(secret)),
        ("x25519_public_hex", hx(hpke(secret).public)),
    ])
}

/// The pages that describe these formats name the labels the code uses (a renamed label fails
/// here as well as in the vector files).
#[test]
fn docs_name_the_labels() {
    let doc = |page: &str| {
        fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"))
    };
    let label = |bytes: &[u8]| std::str::from_utf8(bytes).expect("ASCII").to_owned();
    let pages = [
        (
            "docs/vault.md",
            vec![
                label(ceremony::INFO_PASSPHRASE),
                label(ceremony::INFO_SHARE),
                label(ceremony::INFO_UNLOCK_SHARE),
            ],
        ),
        (
            "docs/protocol/relay.md",
            vec![
                label(envelope::INFO),
                "keymesh-msg-v2".into(),
                "keymesh-enc-key-v1".into(),
            ],
        ),
        (
            "docs/protocol/tokens.md",
            vec!["keymesh-pop-v1".into(), "keymesh-ws-v1".into()],
        ),
        (
            "docs/protocol/audit.md",
            vec![
                "keymesh-audit-v1".into(),
                "keymesh-audit-checkpoint-v1".into(),
                GENESIS.into(),
            ],
        ),
    ];
    for (page, labels) in pages {
        let text = doc(page);
        for label in labels {
            assert!(text.contains(&label), "{page} does not name {label}");
        }
    }
}
