//! Peers' verified keys: cached per (node, version), a node's current version for a while, and
//! its identity key pinned on first use (or up front), so a relay cannot swap it later.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{PeerKey, RelayError, api::Listing};

/// The cache. Never held across an await.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    keys: HashMap<(String, u32), PeerKey>,
    current: HashMap<String, (u32, Instant)>,
    identities: HashMap<String, [u8; 32]>,
}

impl Peers {
    /// Whether an identity is pinned for `node`.
    pub(crate) fn is_pinned(&self, node: &str) -> bool {
        self.identities.contains_key(node)
    }

    /// Trust only `identity` for `node`.
    pub(crate) fn pin(&mut self, node: &str, identity: [u8; 32]) {
        self.identities.insert(node.to_owned(), identity);
    }

    /// Take in a verified listing: keys under another identity than the pinned one are
    /// dropped (none left: [`RelayError::IdentityChanged`]); the rest are cached, newest first.
    pub(crate) fn record(
        &mut self,
        node: &str,
        listing: Listing,
        now: Instant,
    ) -> Result<Vec<PeerKey>, RelayError> {
        let pinned = match (self.identities.get(node), listing.keys.first()) {
            (Some(pinned), _) => *pinned,
            // Pinned on first use: the newest key's identity.
            (None, Some(newest)) => newest.identity,
            (None, None) => {
                return Err(RelayError::NoPeerKey {
                    node: node.to_owned(),
                    version: None,
                });
            }
        };
        let keys: Vec<PeerKey> = listing
            .keys
            .into_iter()
            .filter(|k| k.identity == pinned)
            .collect();
        let Some(newest) = keys.iter().map(|k| k.version).max() else {
            return Err(RelayError::IdentityChanged {
                node: node.to_owned(),
            });
        };
        self.identities.insert(node.to_owned(), pinned);
        for k in &keys {
            self.keys.insert((node.to_owned(), k.version), *k);
        }
        let current = listing
            .current
            .filter(|v| keys.iter().any(|k| k.version == *v))
            .unwrap_or(newest);
        self.current.insert(node.to_owned(), (current, now));
        Ok(keys)
    }

    /// `node`'s current key, if it was looked up less than `ttl` ago.
    pub(crate) fn current(&self, node: &str, ttl: Duration) -> Option<PeerKey> {
        self.current
            .get(node)
            .filter(|(_, at)| at.elapsed() < ttl)
            .and_then(|(v, _)| self.get(node, *v))
    }

    /// `node`'s key of `version`, if cached.
    pub(crate) fn get(&self, node: &str, version: u32) -> Option<PeerKey> {
        self.keys.get(&(node.to_owned(), version)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u32, identity: u8) -> PeerKey {
        PeerKey {
            version,
            enc_public: [version as u8; 32],
            identity: [identity; 32],
        }
    }

    fn listing(keys: Vec<PeerKey>, current: Option<u32>) -> Listing {
        Listing { keys, current }
    }

    #[test]
    fn first_identity_is_pinned_and_others_are_dropped() {
        let mut p = Peers::default();
        let now = Instant::now();
        let got = p
            .record("b", listing(vec![key(2, 1), key(1, 1)], Some(2)), now)
            .expect("first");
        assert_eq!(got.len(), 2);
        assert_eq!(p.current("b", Duration::from_secs(60)), Some(key(2, 1)));
        assert_eq!(p.get("b", 1), Some(key(1, 1)));
        // The relay now lists a newer key under another identity: dropped, the old one kept.
        let got = p
            .record("b", listing(vec![key(3, 9), key(2, 1)], Some(3)), now)
            .expect("pinned key still listed");
        assert_eq!(got, [key(2, 1)]);
        assert_eq!(p.current("b", Duration::from_secs(60)), Some(key(2, 1)));
        assert_eq!(p.get("b", 3), None);
        let e = p
            .record("b", listing(vec![key(3, 9)], Some(3)), now)
            .expect_err("only another identity");
        assert_eq!(e.code(), "peer_identity_changed");
        // Pinned up front.
        p.pin("c", [4; 32]);
        let e = p
            .record("c", listing(vec![key(1, 5)], Some(1)), now)
            .expect_err("not the pinned identity");
        assert_eq!(e.code(), "peer_identity_changed");
        let e = p
            .record("d", listing(vec![], None), now)
            .expect_err("nothing listed");
        assert_eq!(e.code(), "peer_key_missing");
    }

    #[test]
    fn the_current_version_expires_and_falls_back_to_the_newest() {
        let mut p = Peers::default();
        p.record(
            "b",
            listing(vec![key(2, 1), key(1, 1)], None),
            Instant::now(),
        )
        .expect("record");
        assert_eq!(p.current("b", Duration::from_secs(60)), Some(key(2, 1)));
        assert_eq!(p.current("b", Duration::ZERO), None, "stale");
        assert_eq!(p.get("b", 1), Some(key(1, 1)), "versions stay cached");
    }
}
