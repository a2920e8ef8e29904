//! Who is connected: every node's open connections, the newest of which receives deliveries,
//! and a bounded queue per connection that the writer fills with freshly committed messages.
//! The queue only saves a database read: when it overflows, the connection is told it lags and
//! reads its mailbox from the database instead (a slow reader is paused, never dropped).

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroU32,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use keymesh_core::{
    ErrorCode,
    capability::token::{TokenError, VerifiedToken},
};
use tokio::sync::Notify;

use crate::store::{Committed, Expiry, StoredMessage};

/// Something for a connection to send.
#[derive(Debug, Clone)]
pub enum Item {
    /// A message just committed to the node's mailbox.
    Message(Arc<StoredMessage>),
    /// A range of the node's mailbox that expired.
    Expired(Expiry),
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Messages were left out (queue full, or delivery moved here): read the database.
    lagging: bool,
    /// Close with this code and message.
    close: Option<(ErrorCode, &'static str)>,
}

/// One open connection, shared between its task and the hub.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    /// The authenticated node.
    pub node: String,
    /// Its token, re-checked when revocations arrive.
    pub token: Arc<VerifiedToken>,
    deliverer: AtomicBool,
    queue: Mutex<Queue>,
    /// Woken when the queue changes.
    pub notify: Notify,
}

impl Conn {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether deliveries go to this connection (the node's newest).
    pub fn is_deliverer(&self) -> bool {
        self.deliverer.load(Ordering::Acquire)
    }

    /// Next queued item, and whether messages were left out since the last call (then the
    /// queue may have a gap: read the database). Both under one lock, so a message dropped
    /// while the connection is delivering can never be skipped.
    pub fn pop(&self) -> (Option<Item>, bool) {
        let mut q = self.queue();
        let lagged = std::mem::take(&mut q.lagging);
        (q.items.pop_front(), lagged)
    }

    /// Put back an item taken too early.
    pub fn unpop(&self, item: Item) {
        self.queue().items.push_front(item);
    }

    /// Why the hub wants this connection closed, if it does.
    pub fn close_reason(&self) -> Option<(ErrorCode, &'static str)> {
        self.queue().close
    }

    /// Ask the connection to close.
    pub fn close(&self, code: ErrorCode, message: &'static str) {
        self.queue().close.get_or_insert((code, message));
        self.notify.notify_one();
    }
}

struct NodeEntry {
    conns: Vec<Arc<Conn>>,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// Limits the hub enforces.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Connections per node.
    pub per_node: usize,
    /// Connections in total.
    pub total: usize,
    /// Queued items per connection before it is told to read the database.
    pub queue: usize,
    /// Sends per node per second (and burst).
    pub sends_per_second: u32,
}

/// Every connection, by node.
pub struct Hub {
    nodes: Mutex<HashMap<String, NodeEntry>>,
    total: AtomicUsize,
    next_id: AtomicU64,
    limits: HubLimits,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connections())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: HubLimits) -> Self {
        Self {
            nodes: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits,
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeEntry>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        let rate = NonZeroU32::new(self.limits.sends_per_second).unwrap_or(NonZeroU32::MIN);
        Arc::new(RateLimiter::direct(Quota::per_second(rate)))
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Register a connection of `node`; it becomes the node's deliverer. Refused over the caps.
    pub fn attach(&self, node: &str, token: Arc<VerifiedToken>) -> Result<Arc<Conn>, ErrorCode> {
        let mut nodes = self.nodes();
        if self.total.load(Ordering::Relaxed) >= self.limits.total {
            return Err(ErrorCode::TooManyConnections);
        }
        let entry = nodes.entry(node.to_owned()).or_insert_with(|| NodeEntry {
            conns: Vec::new(),
            limiter: self.limiter(),
        });
        if entry.conns.len() >= self.limits.per_node {
            return Err(ErrorCode::TooManyConnections);
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node: node.to_owned(),
            token,
            deliverer: AtomicBool::new(true),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
        });
        if let Some(previous) = entry.conns.last() {
            previous.deliverer.store(false, Ordering::Release);
        }
        entry.conns.push(Arc::clone(&conn));
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Forget a closed connection; if it was the deliverer, the next newest takes over and
    /// reads the mailbox from the database.
    pub fn detach(&self, conn: &Conn) {
        let mut nodes = self.nodes();
        let Some(entry) = nodes.get_mut(&conn.node) else {
            return;
        };
        let before = entry.conns.len();
        entry.conns.retain(|c| c.id != conn.id);
        if entry.conns.len() < before {
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(next) = entry.conns.last()
            && !next.deliverer.swap(true, Ordering::AcqRel)
        {
            next.queue().lagging = true;
            next.notify.notify_one();
        }
        if entry.conns.is_empty() {
            nodes.remove(&conn.node);
        }
    }

    /// The send rate limiter of `node` (shared by its connections and its HTTP sends).
    pub fn send_limiter(&self, node: &str) -> Arc<DefaultDirectRateLimiter> {
        let mut nodes = self.nodes();
        match nodes.get(node) {
            Some(entry) => Arc::clone(&entry.limiter),
            // A node that sends over HTTP only keeps a small entry with its limiter (bounded by
            // the registered nodes).
            None => {
                let limiter = self.limiter();
                nodes.insert(
                    node.to_owned(),
                    NodeEntry {
                        conns: Vec::new(),
                        limiter: Arc::clone(&limiter),
                    },
                );
                limiter
            }
        }
    }

    /// Hand freshly committed messages to their recipients' deliverers.
    pub fn push(&self, committed: Vec<Committed>) {
        let nodes = self.nodes();
        let mut woken: Vec<&Arc<Conn>> = Vec::new();
        for c in committed {
            let Some(conn) = nodes.get(&c.recipient).and_then(|e| e.conns.last()) else {
                continue;
            };
            {
                let mut q = conn.queue();
                if q.items.len() < self.limits.queue {
                    q.items.push_back(Item::Message(Arc::new(c.message)));
                } else {
                    q.lagging = true;
                }
            }
            if !woken.iter().any(|w| w.id == conn.id) {
                woken.push(conn);
            }
        }
        for conn in woken {
            conn.notify.notify_one();
        }
    }

    /// Tell a connected node that part of its mailbox expired.
    pub fn expired(&self, recipient: &str, range: Expiry) {
        let nodes = self.nodes();
        if let Some(conn) = nodes.get(recipient).and_then(|e| e.conns.last()) {
            // Tiny and rare: queued even past the bound, so the notice is never lost.
            conn.queue().items.push_back(Item::Expired(range));
            conn.notify.notify_one();
        }
    }

    /// Re-check every connection's token (after revocations arrive, and periodically for
    /// expiry); close those that fail with the matching code. Returns how many were closed.
    pub fn sweep(&self, check: impl Fn(&VerifiedToken) -> Result<(), TokenError>) -> usize {
        let nodes = self.nodes();
        let mut closed = 0;
        for conn in nodes.values().flat_map(|e| &e.conns) {
            match check(&conn.token) {
                Ok(()) => {}
                Err(TokenError::Expired) => {
                    conn.close(ErrorCode::TokenExpired, "the token expired");
                    closed += 1;
                }
                Err(_) => {
                    conn.close(ErrorCode::Revoked, "the token was revoked");
                    closed += 1;
                }
            }
        }
        closed
    }
}
