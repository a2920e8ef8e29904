//! The node key file, encrypted at rest under a passphrase:
//! `{"format":"keymesh-node-keys-v1","kdf":{"m_kib":…,"t":…,"p":…,"salt":"<hex>"},"sealed":"<hex>"}`
//! where `sealed` is `keymesh_proto::crypto::seal(derive_kek(passphrase, kdf), material, aad)`
//! and the AAD binds the format and every KDF parameter. An optional `"pins"` holds the peers'
//! identity keys this node has pinned (attested by the vault), sealed the same way with the AAD
//! followed by `\npins`: a JSON object `{"node": "<identity key hex>"}`; the keys' AAD then ends
//! with `\nwith-pins`, so removing the pins is detected.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use keymesh_proto::crypto::{self, CryptoError, KdfParams};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::keys::NodeKeys;

/// The `format` of the key file.
pub const FORMAT: &str = "keymesh-node-keys-v1";
/// Largest key file `load` reads (a file holding thousands of retired keys is far smaller).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Argon2id cost for the key file's KEK; a fresh random salt is drawn on every save.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfCost {
    /// 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
}

impl Default for KdfCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the key file cannot be written or read. No variant carries key material, and a wrong
/// passphrase is reported without detail.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// `save` without `overwrite` found a file at the path.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// The file can be read by group or others.
    #[error(
        "{path} has mode {mode:04o}, which gives group or others access to the node keys; run `chmod 600 {path}`",
        path = .path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The passphrase does not open the file (or the file was altered).
    #[error("wrong passphrase, or the key file was modified")]
    WrongPassphrase,
    /// The file is not a key file this version reads.
    #[error("{} is not a valid key file: {reason}", .path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without file contents.
        reason: &'static str,
    },
    /// An empty passphrase was given to `save`.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    /// The KDF cost is out of range.
    #[error("invalid KDF parameters (m_kib >= 8*p, 1 <= t <= 32, 1 <= p <= 16, m_kib <= 1 GiB)")]
    KdfParams,
    /// Sealing failed.
    #[error("encrypting the key file failed")]
    Encrypt,
    /// Reading or writing the file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl KeyFileError {
    /// Stable code for logs and support answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Exists(_) => "keyfile_exists",
            Self::Permissions { .. } => "keyfile_permissions",
            Self::WrongPassphrase => "keyfile_wrong_passphrase",
            Self::Malformed { .. } => "keyfile_malformed",
            Self::EmptyPassphrase => "keyfile_empty_passphrase",
            Self::KdfParams => "keyfile_kdf_params",
            Self::Encrypt => "keyfile_encrypt",
            Self::Io { .. } => "keyfile_io",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    kdf: KdfParams,
    sealed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pins: Option<String>,
}

/// Peers' identity keys, pinned: a relay listing another key for one of them is refused.
pub type Pins = std::collections::BTreeMap<String, [u8; 32]>;

fn pins_aad(kdf: &KdfParams) -> Vec<u8> {
    let mut aad = aad(kdf);
    aad.extend_from_slice(b"\npins");
    aad
}

/// The keys' AAD says whether the file holds pins, so removing `"pins"` is detected rather than
/// silently forgetting them.
fn keys_aad(kdf: &KdfParams, with_pins: bool) -> Vec<u8> {
    let mut aad = aad(kdf);
    if with_pins {
        aad.extend_from_slice(b"\nwith-pins");
    }
    aad
}

/// The AAD: the format and every KDF parameter, so a file with swapped parameters never opens.
fn aad(kdf: &KdfParams) -> Vec<u8> {
    format!(
        "{FORMAT}\nargon2id-v19\nm_kib={}\nt={}\np={}\nsalt={}",
        kdf.m_kib,
        kdf.t,
        kdf.p,
        hex::encode(kdf.salt)
    )
    .into_bytes()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encrypt `keys` under `passphrase` and write them to `path` atomically: a mode-0600 temporary
/// file in the same directory, fsynced, moved into place, then the directory fsynced. Without
/// `overwrite`, an existing file at `path` is an error (checked atomically at the final step).
pub fn save(
    path: &Path,
    keys: &NodeKeys,
    passphrase: &SecretString,
    cost: KdfCost,
    overwrite: bool,
) -> Result<(), KeyFileError> {
    save_with_pins(path, keys, &Pins::new(), passphrase, cost, overwrite)
}

/// [`save`] with the pinned peer identities.
pub fn save_with_pins(
    path: &Path,
    keys: &NodeKeys,
    pins: &Pins,
    passphrase: &SecretString,
    cost: KdfCost,
    overwrite: bool,
) -> Result<(), KeyFileError> {
    let passphrase = passphrase.expose_secret().as_bytes();
    if passphrase.is_empty() {
        return Err(KeyFileError::EmptyPassphrase);
    }
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(KeyFileError::Exists(path.to_path_buf()));
    }
    let kdf = KdfParams::new_random(cost.m_kib, cost.t, cost.p)
        .map_err(|_: CryptoError| KeyFileError::KdfParams)?;
    let kek = crypto::derive_kek(passphrase, &kdf).map_err(|_| KeyFileError::KdfParams)?;
    let sealed = crypto::seal(
        &kek,
        &keys.to_secret_bytes(),
        &keys_aad(&kdf, !pins.is_empty()),
    )
    .map_err(|_| KeyFileError::Encrypt)?;
    let pins = if pins.is_empty() {
        None
    } else {
        let json: std::collections::BTreeMap<&String, String> =
            pins.iter().map(|(n, k)| (n, hex::encode(k))).collect();
        let json = serde_json::to_vec(&json).map_err(|_| KeyFileError::Encrypt)?;
        let sealed =
            crypto::seal(&kek, &json, &pins_aad(&kdf)).map_err(|_| KeyFileError::Encrypt)?;
        Some(hex::encode(sealed))
    };
    let doc = Document {
        format: FORMAT.to_owned(),
        kdf,
        sealed: hex::encode(sealed),
        pins,
    };
    let mut json = serde_json::to_vec_pretty(&doc).map_err(|_| KeyFileError::Encrypt)?;
    json.push(b'\n');
    write_atomic(path, &json, overwrite)
}

/// Removes the temporary file unless the write completed.
struct TempFile {
    path: PathBuf,
    done: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Write `contents` to a new file readable by its owner only (0600), atomically: a temporary
/// file, synced, then renamed (`overwrite`) or linked (never replacing an existing file).
pub fn write_atomic(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), KeyFileError> {
    let name = path.file_name().ok_or_else(|| KeyFileError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).expect("OS random number generator failed");
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
    let mut tmp = TempFile {
        path: dir.join(tmp_name),
        done: false,
    };
    // create_new is O_EXCL: never follows or reuses an existing path.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp.path)
        .map_err(io_err(&tmp.path))?;
    file.write_all(contents).map_err(io_err(&tmp.path))?;
    file.sync_all().map_err(io_err(&tmp.path))?;
    drop(file);
    if overwrite {
        fs::rename(&tmp.path, path).map_err(io_err(path))?;
    } else {
        // link(2) fails if `path` exists, so a file created since the first check survives.
        fs::hard_link(&tmp.path, path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_path_buf()),
            _ => io_err(path)(e),
        })?;
        fs::remove_file(&tmp.path).map_err(io_err(&tmp.path))?;
    }
    tmp.done = true;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Read and decrypt the key file at `path`. Refuses a file group or others can access, one
/// that is not a key file, and a wrong passphrase.
pub fn load(path: &Path, passphrase: &SecretString) -> Result<NodeKeys, KeyFileError> {
    load_with_pins(path, passphrase).map(|(keys, _, _)| keys)
}

/// [`load`], with the pinned peer identities and the file's KDF cost (to save it again alike).
pub fn load_with_pins(
    path: &Path,
    passphrase: &SecretString,
) -> Result<(NodeKeys, Pins, KdfCost), KeyFileError> {
    let malformed = |reason| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(io_err(path))?;
    // Checked on the open handle, so the file read is the file checked.
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(malformed("not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut raw = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_err(path))?;
    if raw.len() as u64 > MAX_FILE_BYTES {
        return Err(malformed("larger than any key file"));
    }
    let doc: Document =
        serde_json::from_slice(&raw).map_err(|_| malformed("not a key file JSON document"))?;
    if doc.format != FORMAT {
        return Err(malformed("unknown format (expected keymesh-node-keys-v1)"));
    }
    let sealed = hex::decode(&doc.sealed).map_err(|_| malformed("sealed is not hex"))?;
    let kek = crypto::derive_kek(passphrase.expose_secret().as_bytes(), &doc.kdf)
        .map_err(|_| malformed("KDF parameters out of range"))?;
    let with_pins = doc.pins.is_some();
    let material = crypto::open(&kek, &sealed, &keys_aad(&doc.kdf, with_pins)).map_err(|e| {
        match e {
            // Sealed as a file with pins, and the pins are gone: say so, not "wrong passphrase".
            CryptoError::Decrypt
                if !with_pins && crypto::open(&kek, &sealed, &keys_aad(&doc.kdf, true)).is_ok() =>
            {
                malformed("its pinned peer identities were removed")
            }
            CryptoError::Decrypt => KeyFileError::WrongPassphrase,
            _ => malformed("sealed is too short"),
        }
    })?;
    let keys = NodeKeys::from_secret_bytes(&material)
        .map_err(|_| malformed("the key material is malformed"))?;
    let mut pins = Pins::new();
    if let Some(sealed) = &doc.pins {
        let sealed = hex::decode(sealed).map_err(|_| malformed("pins is not hex"))?;
        let json = crypto::open(&kek, &sealed, &pins_aad(&doc.kdf))
            .map_err(|_| malformed("the pins do not open under this file's key"))?;
        let listed: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&json).map_err(|_| malformed("the pins are malformed"))?;
        for (node, key) in listed {
            let key: [u8; 32] = hex::decode(&key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| malformed("a pinned key is not 32 bytes of hex"))?;
            pins.insert(node, key);
        }
    }
    let cost = KdfCost {
        m_kib: doc.kdf.m_kib,
        t: doc.kdf.t,
        p: doc.kdf.p,
    };
    Ok((keys, pins, cost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SMALL: KdfCost = KdfCost {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn pass(s: &str) -> SecretString {
        SecretString::from(s)
    }

    fn saved() -> (tempfile::TempDir, PathBuf, NodeKeys) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.keys");
        let mut keys = NodeKeys::generate("node-a").expect("node");
        keys.rotate(42).expect("rotate");
        save(&path, &keys, &pass("correct horse"), SMALL, false).expect("save");
        (dir, path, keys)
    }

    fn edit(path: &Path, f: impl FnOnce(&mut Value)) {
        let mut v: Value = serde_json::from_slice(&fs::read(path).expect("read")).expect("json");
        f(&mut v);
        fs::write(path, serde_json::to_vec(&v).expect("json")).expect("write");
    }

    #[test]
    fn pins_round_trip_sealed_and_tampered_pins_refuse_the_file() {
        let (_dir, path, keys) = saved();
        let (_, none, cost) = load_with_pins(&path, &pass("correct horse")).expect("load");
        assert!(none.is_empty());
        assert_eq!(cost, SMALL);
        let pins = Pins::from([("peer-b".to_owned(), [7u8; 32])]);
        save_with_pins(&path, &keys, &pins, &pass("correct horse"), SMALL, true).expect("save");
        let raw = fs::read_to_string(&path).expect("read");
        assert!(
            !raw.contains(&hex::encode([7u8; 32])),
            "pins are sealed, not plain"
        );
        let (again, loaded, _) = load_with_pins(&path, &pass("correct horse")).expect("load");
        assert_eq!(loaded, pins);
        assert_eq!(again.identity_public(), keys.identity_public());
        // Pins moved from another file, or altered, do not open: the whole file is refused.
        edit(&path, |v| {
            let mut pins = v["pins"].as_str().expect("pins").to_owned();
            let last = if pins.ends_with('0') { "1" } else { "0" };
            pins.replace_range(pins.len() - 1.., last);
            v["pins"] = json!(pins);
        });
        let e = load_with_pins(&path, &pass("correct horse")).expect_err("tampered");
        assert!(matches!(e, KeyFileError::Malformed { .. }), "{e}");
        // Removed altogether: detected too (the keys were sealed as a file with pins).
        save_with_pins(&path, &keys, &pins, &pass("correct horse"), SMALL, true).expect("save");
        edit(&path, |v| {
            v.as_object_mut().expect("object").remove("pins");
        });
        let e = load_with_pins(&path, &pass("correct horse")).expect_err("removed");
        assert!(e.to_string().contains("removed"), "{e}");
    }

    #[test]
    fn round_trip_with_mode_0600_and_no_temp_left() {
        let (dir, path, keys) = saved();
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["node.keys"]);
        let v: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["kdf"]["m_kib"], 64);
        assert_eq!(v.as_object().expect("object").len(), 3);
        let back = load(&path, &pass("correct horse")).expect("load");
        assert_eq!(back.node(), "node-a");
        assert_eq!(back.identity_public(), keys.identity_public());
        assert_eq!(back.current_version(), 2);
        assert_eq!(back.retired_versions(), [(1, 42)]);
        for v in [1, 2] {
            assert_eq!(
                back.enc_key(v).expect("held").secret(),
                keys.enc_key(v).expect("held").secret()
            );
        }
    }

    #[test]
    fn wrong_passphrase_is_refused_without_detail() {
        let (_dir, path, _) = saved();
        for wrong in ["correct horsE", "", "correct horse "] {
            let e = load(&path, &pass(wrong)).expect_err(wrong);
            assert!(matches!(e, KeyFileError::WrongPassphrase), "{e:?}");
            assert_eq!(
                e.to_string(),
                "wrong passphrase, or the key file was modified"
            );
        }
    }

    #[test]
    fn group_or_other_access_is_refused_with_the_fix() {
        let (_dir, path, _) = saved();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let e = load(&path, &pass("correct horse")).expect_err("open mode");
            assert!(matches!(e, KeyFileError::Permissions { mode: m, .. } if m == mode));
            let msg = e.to_string();
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert_eq!(e.code(), "keyfile_permissions");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(load(&path, &pass("correct horse")).is_ok());
    }

    #[test]
    fn overwrite_only_when_asked() {
        let (_dir, path, keys) = saved();
        let before = fs::read(&path).expect("read");
        let other = NodeKeys::generate("node-b").expect("node");
        let e = save(&path, &other, &pass("x"), SMALL, false).expect_err("exists");
        assert!(matches!(e, KeyFileError::Exists(_)), "{e:?}");
        assert_eq!(fs::read(&path).expect("read"), before);
        assert_eq!(
            load(&path, &pass("correct horse"))
                .expect("old")
                .identity_public(),
            keys.identity_public()
        );
        // a loose existing file is replaced by a 0600 one
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        save(&path, &other, &pass("x"), SMALL, true).expect("overwrite");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path, &pass("x")).expect("new").node(), "node-b");
    }

    #[test]
    fn save_refuses_empty_passphrase_and_bad_cost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        let keys = NodeKeys::generate("n").expect("node");
        let e = save(&path, &keys, &pass(""), SMALL, false).expect_err("empty");
        assert!(matches!(e, KeyFileError::EmptyPassphrase));
        let bad = KdfCost { t: 0, ..SMALL };
        let e = save(&path, &keys, &pass("p"), bad, false).expect_err("cost");
        assert!(matches!(e, KeyFileError::KdfParams));
        assert!(fs::read_dir(dir.path()).expect("dir").next().is_none());
    }

    #[test]
    fn tampered_kdf_params_are_refused() {
        let cases: [(&str, Value); 4] = [
            ("m_kib", json!(128)),
            ("t", json!(2)),
            ("p", json!(2)),
            ("salt", json!("00".repeat(16))),
        ];
        for (field, value) in cases {
            let (_dir, path, _) = saved();
            edit(&path, |v| v["kdf"][field] = value);
            let e = load(&path, &pass("correct horse")).expect_err(field);
            assert!(matches!(e, KeyFileError::WrongPassphrase), "{field}: {e:?}");
        }
        // out-of-range params are refused before any work or allocation
        let (_dir, path, _) = saved();
        edit(&path, |v| v["kdf"]["m_kib"] = json!(u32::MAX));
        let e = load(&path, &pass("correct horse")).expect_err("huge");
        assert!(matches!(e, KeyFileError::Malformed { .. }), "{e:?}");
    }

    #[test]
    fn the_aad_binds_the_params_even_under_the_same_kek() {
        let (_dir, path, _) = saved();
        let v: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
        let kdf: KdfParams = serde_json::from_value(v["kdf"].clone()).expect("kdf");
        let sealed = hex::decode(v["sealed"].as_str().expect("hex")).expect("hex");
        let kek = crypto::derive_kek(b"correct horse", &kdf).expect("kek");
        assert!(crypto::open(&kek, &sealed, &aad(&kdf)).is_ok());
        let other = KdfParams {
            t: kdf.t + 1,
            ..kdf
        };
        assert_eq!(
            crypto::open(&kek, &sealed, &aad(&other)).expect_err("bound"),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn malformed_files_are_coded_errors() {
        let (_dir, path, _) = saved();
        let good = fs::read(&path).expect("read");
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"not json".to_vec(),
            b"{}".to_vec(),
            good[..good.len() / 2].to_vec(),
        ];
        let v: Value = serde_json::from_slice(&good).expect("json");
        for (k, val) in [
            ("format", json!("keymesh-node-keys-v2")),
            ("sealed", json!("zz")),
            ("sealed", json!("00")),
            ("extra", json!(1)),
        ] {
            let mut w = v.clone();
            w[k] = val;
            cases.push(serde_json::to_vec(&w).expect("json"));
        }
        for bytes in cases {
            fs::write(&path, &bytes).expect("write");
            let e = load(&path, &pass("correct horse")).expect_err("malformed");
            assert!(
                matches!(e, KeyFileError::Malformed { .. }),
                "{:?}: {e:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(e.code(), "keyfile_malformed");
        }
        // a flipped ciphertext byte is indistinguishable from a wrong passphrase
        let mut w = v.clone();
        let mut sealed = hex::decode(v["sealed"].as_str().expect("hex")).expect("hex");
        sealed[30] ^= 1;
        w["sealed"] = json!(hex::encode(sealed));
        fs::write(&path, serde_json::to_vec(&w).expect("json")).expect("write");
        let e = load(&path, &pass("correct horse")).expect_err("flip");
        assert!(matches!(e, KeyFileError::WrongPassphrase), "{e:?}");
        // missing file and directories are I/O errors
        let e = load(&path.with_extension("missing"), &pass("p")).expect_err("missing");
        assert!(matches!(e, KeyFileError::Io { .. }), "{e:?}");
        let e = load(path.parent().expect("dir"), &pass("p")).expect_err("dir");
        assert!(!matches!(e, KeyFileError::WrongPassphrase), "{e:?}");
    }

    #[test]
    fn nothing_secret_in_the_file_or_errors() {
        let (_dir, path, keys) = saved();
        let text = fs::read_to_string(&path).expect("read");
        let material = keys.to_secret_bytes();
        for secret in [&material[..], keys.enc_key(1).expect("held").secret()] {
            assert!(!text.contains(&hex::encode(secret)));
        }
        assert!(
            !text.contains("node-a"),
            "the node id is inside the sealed part"
        );
        let e = load(&path, &pass("nope")).expect_err("wrong");
        assert!(!format!("{e:?}{e}").contains("nope"));
    }
}
