//! Revocation state: revoked grants and blocks, and the current epoch per node, user and group.
//! Held in memory for the per-request check. The vault persists it (its `store`) and publishes
//! it as an ordered feed; relays and vault replicas rebuild it from that feed.

use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
};

use super::token::{RevocationView, Scope, TokenError, VerifiedToken};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One feed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FeedEntry {
    /// Position in the feed, from 1, without gaps.
    pub seq: i64,
    /// `grant`, `block` or `epoch`; `root_key` (a root key revoked: every token it signed is
    /// dead) or `root_key_added` (a root key announced: followers read the keys again).
    pub kind: String,
    /// For `epoch`: `node`, `user` or `group`.
    pub scope: Option<String>,
    /// The grant id, block revocation id (hex), the node/user/group id, or a root key's id
    /// (`kid`, decimal).
    pub subject: String,
    /// For `epoch`: tokens with an older epoch are dead.
    pub epoch: Option<i64>,
    /// Why, as given by the revoker.
    pub reason: String,
    /// Unix milliseconds.
    pub at_ms: i64,
}

#[derive(Default)]
struct Inner {
    revoked: HashSet<String>,
    epochs: HashMap<(Scope, String), i64>,
    revoked_root_keys: HashSet<u32>,
}

/// Feed entry kind: a root key revoked.
pub const ROOT_KEY_REVOKED: &str = "root_key";
/// Feed entry kind: a root key announced (it verifies now and signs from a later time).
pub const ROOT_KEY_ADDED: &str = "root_key_added";

impl FeedEntry {
    /// Whether this entry changes the root keys (followers read them again).
    pub fn changes_root_keys(&self) -> bool {
        self.kind == ROOT_KEY_REVOKED || self.kind == ROOT_KEY_ADDED
    }
}

/// The vault's view: authoritative, so never stale.
pub struct Revocations {
    inner: RwLock<Inner>,
    head: watch::Sender<i64>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("head", &*self.head.borrow())
            .finish()
    }
}

impl Revocations {
    /// Build from every persisted entry, in order.
    pub fn from_entries(entries: &[FeedEntry]) -> Self {
        let state = Self {
            inner: RwLock::new(Inner::default()),
            head: watch::channel(0).0,
        };
        for e in entries {
            state.apply(e);
        }
        state
    }

    /// Rebuild a follower's copy from a [`snapshot`](Self::snapshot): revoked ids and current
    /// epochs at feed position `head`.
    pub fn from_snapshot(
        head: i64,
        revoked: impl IntoIterator<Item = String>,
        epochs: impl IntoIterator<Item = (Scope, String, i64)>,
        revoked_root_keys: impl IntoIterator<Item = u32>,
    ) -> Self {
        let inner = Inner {
            revoked: revoked.into_iter().collect(),
            revoked_root_keys: revoked_root_keys.into_iter().collect(),
            epochs: epochs
                .into_iter()
                .map(|(scope, subject, epoch)| ((scope, subject), epoch))
                .collect(),
        };
        Self {
            inner: RwLock::new(inner),
            head: watch::channel(head).0,
        }
    }

    /// Apply one entry (after it is durable).
    pub fn apply(&self, entry: &FeedEntry) {
        {
            let mut inner = self
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match (
                entry.kind.as_str(),
                entry.scope.as_deref().map(str::parse::<Scope>),
                entry.epoch,
            ) {
                ("epoch", Some(Ok(scope)), Some(epoch)) => {
                    let slot = inner
                        .epochs
                        .entry((scope, entry.subject.clone()))
                        .or_insert(0);
                    *slot = (*slot).max(epoch);
                }
                (ROOT_KEY_REVOKED, _, _) => {
                    // A subject that is not a key id revokes nothing (the vault writes only ids).
                    if let Ok(kid) = entry.subject.parse::<u32>() {
                        inner.revoked_root_keys.insert(kid);
                    }
                }
                (ROOT_KEY_ADDED, _, _) => {}
                _ => {
                    inner.revoked.insert(entry.subject.clone());
                }
            }
        }
        self.head.send_if_modified(|head| {
            let advanced = entry.seq > *head;
            *head = (*head).max(entry.seq);
            advanced
        });
    }

    /// The current epoch of a subject (0 when never bumped).
    pub fn epoch(&self, scope: Scope, subject: &str) -> i64 {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .epochs
            .get(&(scope, subject.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The feed head.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// The whole state at one head position, for a fresh follower: then follow the feed from
    /// `head`.
    pub fn snapshot(&self) -> super::follower::Snapshot {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read under the state lock: `apply` updates the state before the head, so this head
        // never claims more than the state holds.
        let head = *self.head.borrow();
        let mut revoked: Vec<String> = inner.revoked.iter().cloned().collect();
        revoked.sort();
        let mut epochs: Vec<super::follower::SnapshotEpoch> = inner
            .epochs
            .iter()
            .map(|((scope, subject), epoch)| super::follower::SnapshotEpoch {
                scope: *scope,
                subject: subject.clone(),
                epoch: *epoch,
            })
            .collect();
        epochs.sort_by(|a, b| (a.scope.as_str(), &a.subject).cmp(&(b.scope.as_str(), &b.subject)));
        let mut revoked_root_keys: Vec<u32> = inner.revoked_root_keys.iter().copied().collect();
        revoked_root_keys.sort_unstable();
        super::follower::Snapshot {
            head,
            revoked,
            epochs,
            revoked_root_keys,
        }
    }

    /// Wait (bounded by the caller) until the head passes `after`.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }
}

impl RevocationView for Revocations {
    fn check(&self, token: &VerifiedToken) -> Result<(), TokenError> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.revoked_root_keys.contains(&token.root_kid) {
            return Err(TokenError::Revoked);
        }
        let c = &token.claims;
        let revoked = c
            .lineage
            .iter()
            .chain([&c.grant])
            .chain(&token.block_ids)
            .any(|id| inner.revoked.contains(id));
        if revoked {
            return Err(TokenError::Revoked);
        }
        for (scope, subject, epoch) in &c.ancestors {
            let current = inner
                .epochs
                .get(&(*scope, subject.clone()))
                .copied()
                .unwrap_or(0);
            if *epoch < current {
                return Err(TokenError::Revoked);
            }
        }
        for scope in Scope::ALL {
            let current = inner
                .epochs
                .get(&(scope, c.subject(scope).to_owned()))
                .copied()
                .unwrap_or(0);
            if c.epoch(scope) < current {
                return Err(TokenError::Revoked);
            }
        }
        Ok(())
    }
}
