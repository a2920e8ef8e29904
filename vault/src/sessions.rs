//! Unlocked vaults: data keys in memory only, for a bounded time.
//!
//! A session ends on lock, on expiry (swept every second and checked on every use) and on
//! shutdown; the key is zeroized when its [`DataKey`] is dropped. A restarted vault holds no
//! sessions, so it comes back locked.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant, SystemTime},
};

use keymesh_core::crypto::DataKey;

struct Session {
    key: DataKey,
    expires: Instant,
    cap: Instant,
    expires_wall: SystemTime,
}

/// What a caller may learn about a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// When the session ends unless extended (wall clock).
    pub expires_at: SystemTime,
}

/// All unlock sessions of this vault process.
pub struct Sessions {
    inner: RwLock<HashMap<String, Session>>,
    length: Duration,
    max: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.read().len())
            .finish()
    }
}

impl Sessions {
    /// Sessions of `length`, extendable up to `max` after the unlock.
    pub fn new(length: Duration, max: Duration) -> Self {
        Self {
            inner: RwLock::new(HashMap::new()),
            length,
            max,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Session>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Session>> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Start (or restart) a session holding `key`.
    pub fn unlock(&self, group: &str, key: DataKey) -> SessionInfo {
        let now = Instant::now();
        let session = Session {
            key,
            expires: now + self.length,
            cap: now + self.max,
            expires_wall: SystemTime::now() + self.length,
        };
        let info = SessionInfo {
            expires_at: session.expires_wall,
        };
        self.write().insert(group.to_owned(), session);
        info
    }

    /// Run `f` with the group's key if the vault is unlocked and not expired.
    pub fn with_key<T>(&self, group: &str, f: impl FnOnce(&DataKey) -> T) -> Option<T> {
        let sessions = self.read();
        let session = sessions.get(group)?;
        (session.expires > Instant::now()).then(|| f(&session.key))
    }

    /// The session, if open.
    pub fn status(&self, group: &str) -> Option<SessionInfo> {
        let sessions = self.read();
        let s = sessions.get(group)?;
        (s.expires > Instant::now()).then_some(SessionInfo {
            expires_at: s.expires_wall,
        })
    }

    /// Lock: drop (and so zeroize) the key. Returns whether a session was open.
    pub fn lock(&self, group: &str) -> bool {
        self.write().remove(group).is_some()
    }

    /// Extend by `by`, never past the cap. `None` when locked.
    pub fn extend(&self, group: &str, by: Duration) -> Option<SessionInfo> {
        let mut sessions = self.write();
        let s = sessions.get_mut(group)?;
        let now = Instant::now();
        if s.expires <= now {
            return None;
        }
        let target = (now + by).min(s.cap);
        if target > s.expires {
            s.expires_wall += target - s.expires;
            s.expires = target;
        }
        Some(SessionInfo {
            expires_at: s.expires_wall,
        })
    }

    /// Drop expired sessions; returns the groups that were locked.
    pub fn sweep(&self) -> Vec<String> {
        let now = Instant::now();
        let mut sessions = self.write();
        let expired: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(g, _)| g.clone())
            .collect();
        for g in &expired {
            sessions.remove(g);
        }
        expired
    }

    /// How many vaults are unlocked, and for how long the longest-unlocked one has been.
    pub fn unlocked(&self) -> (usize, Duration) {
        let now = Instant::now();
        let sessions = self.read();
        let open = sessions.values().filter(|s| s.expires > now);
        open.fold((0, Duration::ZERO), |(n, longest), s| {
            // The cap is `max` after the unlock.
            let since = now.saturating_duration_since(s.cap.checked_sub(self.max).unwrap_or(now));
            (n + 1, longest.max(since))
        })
    }

    /// Lock everything (shutdown).
    pub fn lock_all(&self) {
        self.write().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_extend_up_to_the_cap_and_lock() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_millis(120));
        s.unlock("g", DataKey::generate());
        assert!(s.with_key("g", |_| ()).is_some());
        std::thread::sleep(Duration::from_millis(30));
        s.extend("g", Duration::from_secs(60)).expect("open");
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            s.with_key("g", |_| ()).is_some(),
            "extended past the first expiry"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.with_key("g", |_| ()).is_none(), "the cap holds");
        assert_eq!(s.sweep(), vec!["g".to_owned()]);
        s.unlock("h", DataKey::generate());
        assert!(s.lock("h"));
        assert!(s.with_key("h", |_| ()).is_none());
        assert!(!s.lock("h"));
    }
}
