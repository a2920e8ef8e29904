//! Key ceremonies: how a passphrase or unlock shares reach the vault without any other service
//! seeing them.
//!
//! Management (after the approvals it requires) opens a ceremony for a group and receives a
//! random single-use id (`kmc_...`) and a fresh X25519 public key held only by this vault
//! process. The admin's tool seals the passphrase (HPKE base mode) or the admin's share (HPKE
//! auth mode, from the admin's own key, so the vault knows which share-holder sent it) to that
//! key and submits it with the id. Ceremonies live in memory only and expire after ten minutes.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use keymesh_core::crypto::{HpkeKeyPair, Share};
use sha2::{Digest, Sha256};

/// How long a ceremony stays open.
pub const CEREMONY_TTL: Duration = Duration::from_secs(600);
/// Most ceremonies open at once.
const MAX_OPEN: usize = 1000;

pub use keymesh_proto::api::vaults::CeremonyKind;

/// One open ceremony.
pub struct Ceremony {
    /// Purpose.
    pub kind: CeremonyKind,
    /// Group.
    pub group: String,
    /// The vault's key for this ceremony.
    pub keypair: HpkeKeyPair,
    /// Shares received so far, one per admin.
    pub shares: BTreeMap<String, Share>,
    /// In a rekey ceremony: the current data key, once `t` current shares proved it.
    pub proven_key: Option<keymesh_core::crypto::DataKey>,
    expires: Instant,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("kind", &self.kind)
            .field("group", &self.group)
            .field("shares", &self.shares.len())
            .finish_non_exhaustive()
    }
}

/// All open ceremonies.
#[derive(Default)]
pub struct Ceremonies {
    open: Mutex<HashMap<[u8; 32], Ceremony>>,
}

impl std::fmt::Debug for Ceremonies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremonies").finish_non_exhaustive()
    }
}

fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Ceremonies {
    /// Open a ceremony; returns its id and public key, or `None` when too many are open.
    pub fn open(&self, kind: CeremonyKind, group: &str) -> Option<(String, [u8; 32])> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS random number generator failed");
        let id = format!("kmc_{}", URL_SAFE_NO_PAD.encode(raw));
        let keypair = HpkeKeyPair::generate();
        let public = keypair.public;
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.len() >= MAX_OPEN {
            let now = Instant::now();
            open.retain(|_, c| c.expires > now);
            if open.len() >= MAX_OPEN {
                return None;
            }
        }
        open.insert(
            id_hash(&id),
            Ceremony {
                kind,
                group: group.to_owned(),
                keypair,
                shares: BTreeMap::new(),
                proven_key: None,
                expires: Instant::now() + CEREMONY_TTL,
            },
        );
        Some((id, public))
    }

    /// Run `f` on an open, unexpired ceremony.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&mut Ceremony) -> T) -> Option<T> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ceremony = open
            .get_mut(&id_hash(id))
            .filter(|c| c.expires > Instant::now())?;
        Some(f(ceremony))
    }

    /// Close a ceremony (it is single use).
    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id_hash(id));
    }

    /// Forget expired ceremonies (and their keys and shares).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, c| c.expires > now);
    }
}
