//! Where the session token and the unlock share key live: the OS keyring when there is one,
//! otherwise a file sealed under a passphrase the admin chooses (Argon2id, then
//! XChaCha20-Poly1305, with keymesh-core's primitives). Never the web view's storage.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_proto::crypto::{self, DataKey, KdfParams};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file store has not been unlocked with its passphrase yet.
    #[error("the local store is locked: enter its passphrase")]
    Locked,
    /// The passphrase does not open the file.
    #[error("that passphrase does not open the local store")]
    WrongPassphrase,
    /// A new store's passphrase is too short.
    #[error("choose a passphrase of at least {MIN_PASSPHRASE} characters")]
    WeakPassphrase,
    /// The file is not a store this app wrote.
    #[error("the local store is damaged: {0}")]
    Corrupt(String),
    /// Reading or writing the file.
    #[error("the local store could not be read or written: {0}")]
    Io(#[from] std::io::Error),
    /// The OS keyring refused.
    #[error("the OS keyring refused: {0}")]
    Keyring(String),
}

/// Which kind of store holds the secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The OS keyring (Secret Service, Keychain, Credential Manager).
    Keyring,
    /// The passphrase-sealed file.
    File,
}

/// A place for named secrets.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// Which kind.
    fn kind(&self) -> StoreKind;
    /// True until [`SecretStore::unlock`] succeeded (a keyring is never locked here).
    fn locked(&self) -> bool;
    /// False for a file store whose file does not exist yet.
    fn initialized(&self) -> bool;
    /// Open (or, the first time, create) the store with its passphrase.
    fn unlock(&self, passphrase: &SecretString) -> Result<(), StoreError>;
    /// A secret, if stored.
    fn get(&self, name: &str) -> Result<Option<SecretString>, StoreError>;
    /// Store a secret (replacing any).
    fn set(&self, name: &str, value: &SecretString) -> Result<(), StoreError>;
    /// Forget a secret (no error if absent).
    fn delete(&self, name: &str) -> Result<(), StoreError>;
}

/// Shortest passphrase accepted for a new file store.
pub const MIN_PASSPHRASE: usize = 12;
const MAX_PASSPHRASE: usize = 1024;
const FILE_VERSION: u32 = 1;
const FILE_AAD: &[u8] = b"keymesh-admin-store-v1";

/// Argon2id cost of a new file store: 64 MiB, 3 passes (about a third of a second).
pub const KDF_COST: (u32, u32, u32) = (64 * 1024, 3, 1);

#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    kdf: KdfParams,
    /// base64 of the sealed JSON map of secrets.
    sealed: String,
}

struct Opened {
    kek: DataKey,
    kdf: KdfParams,
    entries: BTreeMap<String, Zeroizing<String>>,
}

/// The passphrase-sealed file.
pub struct FileStore {
    path: PathBuf,
    cost: (u32, u32, u32),
    opened: Mutex<Option<Opened>>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("locked", &self.locked())
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// The store in `path` (not read until unlocked).
    pub fn new(path: PathBuf) -> Self {
        Self::with_cost(path, KDF_COST)
    }

    /// With another Argon2id cost (tests use a small one).
    pub fn with_cost(path: PathBuf, cost: (u32, u32, u32)) -> Self {
        Self {
            path,
            cost,
            opened: Mutex::new(None),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Option<Opened>> {
        // A panic while holding the lock cannot leave the map half-written: recover it.
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, opened: &Opened) -> Result<(), StoreError> {
        let plain: BTreeMap<&str, &str> = opened
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let json = Zeroizing::new(
            serde_json::to_vec(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        let sealed = crypto::seal(&opened.kek, &json, FILE_AAD)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let file = StoreFile {
            version: FILE_VERSION,
            kdf: opened.kdf,
            sealed: STANDARD.encode(sealed),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        write_private(&self.path, &bytes)?;
        Ok(())
    }

    fn open_existing(&self, passphrase: &[u8], bytes: &[u8]) -> Result<Opened, StoreError> {
        let file: StoreFile = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("not a store file ({e})")))?;
        if file.version != FILE_VERSION {
            return Err(StoreError::Corrupt(format!(
                "version {} is not one this app reads",
                file.version
            )));
        }
        let sealed = STANDARD
            .decode(&file.sealed)
            .map_err(|_| StoreError::Corrupt("the sealed part is not base64".into()))?;
        let kek = crypto::derive_kek(passphrase, &file.kdf)
            .map_err(|e| StoreError::Corrupt(format!("key derivation: {e}")))?;
        let json =
            crypto::open(&kek, &sealed, FILE_AAD).map_err(|_| StoreError::WrongPassphrase)?;
        let plain: BTreeMap<String, String> = serde_json::from_slice(&json)
            .map_err(|_| StoreError::Corrupt("the sealed part is not a map".into()))?;
        Ok(Opened {
            kek,
            kdf: file.kdf,
            entries: plain
                .into_iter()
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect(),
        })
    }
}

impl SecretStore for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn locked(&self) -> bool {
        self.guard().is_none()
    }

    fn initialized(&self) -> bool {
        self.path.exists()
    }

    fn unlock(&self, passphrase: &SecretString) -> Result<(), StoreError> {
        let pass = passphrase.expose_secret().as_bytes();
        if pass.len() > MAX_PASSPHRASE {
            return Err(StoreError::WeakPassphrase);
        }
        let opened = match std::fs::read(&self.path) {
            Ok(bytes) => self.open_existing(pass, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if passphrase.expose_secret().chars().count() < MIN_PASSPHRASE {
                    return Err(StoreError::WeakPassphrase);
                }
                let (m, t, p) = self.cost;
                let kdf = KdfParams::new_random(m, t, p)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let kek = crypto::derive_kek(pass, &kdf)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let opened = Opened {
                    kek,
                    kdf,
                    entries: BTreeMap::new(),
                };
                self.persist(&opened)?;
                opened
            }
            Err(e) => return Err(e.into()),
        };
        *self.guard() = Some(opened);
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Option<SecretString>, StoreError> {
        let guard = self.guard();
        let opened = guard.as_ref().ok_or(StoreError::Locked)?;
        Ok(opened
            .entries
            .get(name)
            .map(|v| SecretString::from(v.as_str())))
    }

    fn set(&self, name: &str, value: &SecretString) -> Result<(), StoreError> {
        let mut guard = self.guard();
        let opened = guard.as_mut().ok_or(StoreError::Locked)?;
        opened.entries.insert(
            name.to_owned(),
            Zeroizing::new(value.expose_secret().to_owned()),
        );
        self.persist(opened)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let mut guard = self.guard();
        let opened = guard.as_mut().ok_or(StoreError::Locked)?;
        if opened.entries.remove(name).is_some() {
            self.persist(opened)?;
        }
        Ok(())
    }
}

/// The OS keyring, one entry per secret under the service name `keymesh-admin`.
#[derive(Debug)]
pub struct KeyringStore {
    service: String,
}

impl KeyringStore {
    /// The keyring, if one answers here (a write, read and delete of a probe entry).
    pub fn probe(service: &str) -> Option<Self> {
        let store = Self {
            service: service.to_owned(),
        };
        let probe = SecretString::from("probe");
        let works = store.set("probe", &probe).is_ok()
            && store.get("probe").ok().flatten().is_some()
            && store.delete("probe").is_ok();
        works.then_some(store)
    }

    fn entry(&self, name: &str) -> Result<keyring::Entry, StoreError> {
        keyring::Entry::new(&self.service, name).map_err(|e| StoreError::Keyring(e.to_string()))
    }
}

impl SecretStore for KeyringStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }
    fn locked(&self) -> bool {
        false
    }
    fn initialized(&self) -> bool {
        true
    }
    fn unlock(&self, _: &SecretString) -> Result<(), StoreError> {
        Ok(())
    }
    fn get(&self, name: &str) -> Result<Option<SecretString>, StoreError> {
        match self.entry(name)?.get_password() {
            Ok(v) => Ok(Some(SecretString::from(v))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(StoreError::Keyring(e.to_string())),
        }
    }
    fn set(&self, name: &str, value: &SecretString) -> Result<(), StoreError> {
        self.entry(name)?
            .set_password(value.expose_secret())
            .map_err(|e| StoreError::Keyring(e.to_string()))
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(StoreError::Keyring(e.to_string())),
        }
    }
}

/// Write `bytes` to `path` readable by the owner only, atomically (a temporary file in the
/// same directory, then a rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = PrivateFile::create(path)?;
    file.write(bytes)?;
    file.finish()
}

/// A file written in pieces under a temporary name (owner-only: `tempfile` creates it 0600),
/// renamed to its final name only when complete; dropped unfinished, it is removed.
#[derive(Debug)]
pub struct PrivateFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl PrivateFile {
    /// Start writing `target` (its folder is created if missing).
    pub fn create(target: &Path) -> std::io::Result<Self> {
        let dir = target.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            tmp: tempfile::NamedTempFile::new_in(dir)?,
            target: target.to_owned(),
        })
    }

    /// Append bytes.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tmp.as_file_mut().write_all(bytes)
    }

    /// Flush to disk and move into place (and make the rename itself durable).
    pub fn finish(self) -> std::io::Result<()> {
        let target = self.target.clone();
        self.persist(&target)?;
        if let Some(dir) = target.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Give up but keep what was written, as `<target>.partial`.
    pub fn keep_partial(self) -> std::io::Result<PathBuf> {
        let mut name = self.target.clone().into_os_string();
        name.push(".partial");
        let kept = PathBuf::from(name);
        self.persist(&kept)?;
        Ok(kept)
    }

    fn persist(self, to: &Path) -> std::io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(to).map(drop).map_err(|e| e.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_COST: (u32, u32, u32) = (64, 1, 1);

    fn pass(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn a_file_store_is_created_sealed_and_reopened_only_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let store = FileStore::with_cost(path.clone(), TEST_COST);
        assert!(store.locked() && !store.initialized());
        assert!(matches!(store.get("x"), Err(StoreError::Locked)));
        assert!(matches!(
            store.unlock(&pass("short")),
            Err(StoreError::WeakPassphrase)
        ));
        store.unlock(&pass("correct horse battery")).unwrap();
        store
            .set("session", &pass("kms_secret_token_value"))
            .unwrap();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(!on_disk.contains("kms_secret_token_value"), "{on_disk}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let again = FileStore::with_cost(path.clone(), TEST_COST);
        assert!(again.initialized() && again.locked());
        assert!(matches!(
            again.unlock(&pass("wrong horse battery")),
            Err(StoreError::WrongPassphrase)
        ));
        // An existing store opens whatever its passphrase's length; only new ones are checked.
        again.unlock(&pass("correct horse battery")).unwrap();
        assert_eq!(
            again.get("session").unwrap().unwrap().expose_secret(),
            "kms_secret_token_value"
        );
        again.delete("session").unwrap();
        again.delete("session").unwrap();
        assert!(again.get("session").unwrap().is_none());
    }

    #[test]
    fn a_tampered_or_foreign_file_is_refused_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let store = FileStore::with_cost(path.clone(), TEST_COST);
        store.unlock(&pass("correct horse battery")).unwrap();
        store.set("k", &pass("v")).unwrap();
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut sealed = STANDARD.decode(file["sealed"].as_str().unwrap()).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        file["sealed"] = STANDARD.encode(&sealed).into();
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let reopened = FileStore::with_cost(path.clone(), TEST_COST);
        assert!(matches!(
            reopened.unlock(&pass("correct horse battery")),
            Err(StoreError::WrongPassphrase)
        ));
        for junk in [&b"not json"[..], br#"{"version":9,"kdf":{},"sealed":""}"#] {
            std::fs::write(&path, junk).unwrap();
            let r = FileStore::with_cost(path.clone(), TEST_COST);
            assert!(matches!(
                r.unlock(&pass("correct horse battery")),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn a_private_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("export.ndjson");
        let mut f = PrivateFile::create(&target).unwrap();
        f.write(b"{\"seq\":1}\n").unwrap();
        assert!(
            !target.exists(),
            "nothing under the final name before it is complete"
        );
        f.finish().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"seq\":1}\n");
        // Abandoned: nothing left behind; kept partial: under its own name.
        let mut f = PrivateFile::create(&dir.path().join("other")).unwrap();
        f.write(b"x").unwrap();
        drop(f);
        let mut f = PrivateFile::create(&dir.path().join("broken")).unwrap();
        f.write(b"half").unwrap();
        let kept = f.keep_partial().unwrap();
        assert!(kept.ends_with("broken.partial"));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["broken.partial", "export.ndjson"]);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::with_cost(dir.path().join("s.json"), TEST_COST);
        store.unlock(&pass("correct horse battery")).unwrap();
        store.set("session", &pass("kms_do_not_print")).unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("kms_do_not_print"), "{shown}");
    }
}
