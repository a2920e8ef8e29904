//! The relay client of one node: publishes its encryption key, looks up and verifies peers'
//! keys, seals and sends messages, receives and opens them.
//!
//! - **Keys.** [`RelayClient::publish_keys`] puts the node's current key (idempotent).
//!   [`RelayClient::lookup`] returns a peer's keys that verify under the identity key the relay
//!   lists for it; keys that do not verify are refused. The identity key is pinned on first use
//!   for the client's lifetime (or up front with [`RelayClient::pin_identity`]). On first
//!   contact it is the vault's attested key when [`ClientOptions::identity_vault`] is set
//!   (decision 0016), else the relay's word. Verified keys are cached per (node, version), a
//!   peer's current version for [`ClientOptions::current_key_ttl`].
//! - **Connection.** One WebSocket (subprotocol `keymesh.v1`), opened on first use or by
//!   [`RelayClient::connect`], re-opened after any loss with capped exponential backoff and
//!   jitter. The hello resumes after what the application has handled; if the relay reports
//!   another mailbox epoch, positions restart from 0. Unanswered sends are re-sent with the
//!   same message ids, which the relay answers `duplicate` when it had stored them. A message
//!   redelivered after a reconnect is not handed out again. A refused credential (`error` frame
//!   `invalid_token`, `revoked`, `token_expired`, `proof_*`…) ends the client: every waiting
//!   call gets that error; build a new client with a fresh token.
//! - **Sending.** [`RelayClient::send`] seals to the recipient's current key under a random
//!   16-byte id and waits until the relay has made it durable. `rate_limited` (and
//!   `unavailable`) refusals are retried after the relay's delay, at most
//!   [`ClientOptions::send_retries`] times; other refusals are [`RelayError::Relay`].
//! - **Receiving.** [`RelayClient::recv`] opens deliveries in order. The caller acknowledges
//!   each with [`RelayClient::ack`] once it has handled it (or sets
//!   [`ClientOptions::auto_ack`]); acknowledgements are cumulative at the relay, so one is sent
//!   only up to the first message not yet handled. A message that cannot be opened (bad
//!   envelope, unknown or unverifiable sender key) is returned as [`RelayError::Undecryptable`]
//!   **and acknowledged**: it will never open, and keeping it would stop every later message at
//!   the delivery window. Failures that say nothing about the message (relay unreachable while
//!   looking up the sender's key) keep it for the next call. Ranges that expired unreceived are
//!   [`Incoming::Expired`] from [`RelayClient::next_incoming`] and [`RelayError::Expired`] from
//!   `recv`.
//! - **Freshness and replays.** Every envelope carries the sender's sending time, bound in its
//!   AAD. A message sent longer ago than [`ClientOptions::max_message_age`], or further in the
//!   future than [`ClientOptions::max_clock_skew`], is `Incoming::Stale`; a message id the
//!   client already received from that sender (at any mailbox position) is
//!   `Incoming::Replayed` (the last [`ClientOptions::replay_window`] ids per sender are
//!   remembered, in memory). Both are acknowledged and never handed out as messages
//!   (docs/decisions/0015-message-freshness.md).
//!
//! Plain `http://` relays use `ws://`. This build has no TLS: `https://` relays fail to connect
//! (terminate TLS in front of the client, or enable a TLS feature of reqwest and
//! tokio-tungstenite).
//!
//! [`RelayClient::publish_keys`]: crate::relay::RelayClient::publish_keys
//! [`RelayClient::lookup`]: crate::relay::RelayClient::lookup
//! [`RelayClient::pin_identity`]: crate::relay::RelayClient::pin_identity
//! [`ClientOptions::current_key_ttl`]: crate::relay::ClientOptions::current_key_ttl
//! [`ClientOptions::identity_vault`]: crate::relay::ClientOptions::identity_vault
//! [`RelayClient::connect`]: crate::relay::RelayClient::connect
//! [`RelayClient::send`]: crate::relay::RelayClient::send
//! [`ClientOptions::send_retries`]: crate::relay::ClientOptions::send_retries
//! [`RelayError::Relay`]: crate::relay::RelayError::Relay
//! [`RelayClient::recv`]: crate::relay::RelayClient::recv
//! [`RelayClient::ack`]: crate::relay::RelayClient::ack
//! [`ClientOptions::auto_ack`]: crate::relay::ClientOptions::auto_ack
//! [`RelayError::Undecryptable`]: crate::relay::RelayError::Undecryptable
//! [`Incoming::Expired`]: crate::relay::Incoming::Expired
//! [`RelayClient::next_incoming`]: crate::relay::RelayClient::next_incoming
//! [`RelayError::Expired`]: crate::relay::RelayError::Expired
//! [`ClientOptions::max_message_age`]: crate::relay::ClientOptions::max_message_age
//! [`ClientOptions::max_clock_skew`]: crate::relay::ClientOptions::max_clock_skew
//! [`ClientOptions::replay_window`]: crate::relay::ClientOptions::replay_window

mod api;
mod driver;
mod error;
mod freshness;
mod peers;

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use keymesh_proto::{
    crypto::Plaintext,
    frame::{ClientFrame, MessageId},
};
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot, watch};
use zeroize::Zeroizing;

pub use error::{ErrorKind, RelayError};
pub use freshness::StaleReason;

use self::{
    api::{Api, BaseUrl},
    driver::{Command, Delivery, Driver, Event, PendingSend, Status},
    freshness::{Verdict, Window},
    peers::Peers,
};
use crate::{
    envelope::{self, EnvelopeHeader},
    keys::{NodeKeys, parse_node},
    service::{CallError, Service},
    transport::Transport,
};

/// How the client behaves; `Default` suits a long-running node.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Acknowledge each message as soon as `recv` returns it (default: the caller calls `ack`).
    pub auto_ack: bool,
    /// Seconds the relay keeps a message sent by this client (0: the relay's default).
    pub ttl_secs: u32,
    /// First reconnect delay (doubled per consecutive failure, jittered).
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Consecutive failed connection attempts before giving up with
    /// [`RelayError::Unreachable`]; `None` retries forever.
    pub max_reconnect_attempts: Option<u32>,
    /// Time to open the socket, and then to complete the handshake.
    pub connect_timeout: Duration,
    /// Time for one HTTP call.
    pub request_timeout: Duration,
    /// Automatic retries of a send refused `rate_limited` or `unavailable`.
    pub send_retries: u32,
    /// Longest wait before such a retry, whatever the relay asks.
    pub max_retry_delay: Duration,
    /// How long a peer's current key version is used before it is looked up again.
    pub current_key_ttl: Duration,
    /// TLS trust and the plain-HTTP rule (default: the platform's trust, plain HTTP to
    /// loopback only).
    pub transport: Transport,
    /// The oldest a received message may be, by its sender's sending time (default: 7 days and
    /// 5 minutes, the relay's longest message TTL plus the clock skew). Older ones are
    /// [`Incoming::Stale`].
    pub max_message_age: Duration,
    /// How far in the future a sending time may be (the senders' clocks against this one's;
    /// default 5 minutes).
    pub max_clock_skew: Duration,
    /// Message ids remembered per sender to recognise replays (default 1,024).
    pub replay_window: usize,
    /// Senders whose ids are remembered; the one heard from least recently is forgotten first
    /// (default 4,096). Memory, estimated from the entry sizes (one hash-map and one B-tree entry
    /// per id), is at most about 70 bytes × `replay_window` × `replay_senders`
    /// (about 290 MB at the defaults, reached only with that many senders each sending that
    /// many messages; with `identity_vault`, only attested nodes count as senders).
    pub replay_senders: usize,
    /// The vault's base URL: a peer's identity key, on first contact (sending to it or opening
    /// its message), is the one the vault attests (`GET /v1/nodes/{id}/identity`), never the
    /// relay's word; a peer the vault does not attest is refused (`peer_identity_unattested`).
    /// `None` (the default): trust the relay's listing on first contact.
    pub identity_vault: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            auto_ack: false,
            ttl_secs: 0,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_reconnect_attempts: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            send_retries: 5,
            max_retry_delay: Duration::from_secs(10),
            current_key_ttl: Duration::from_secs(60),
            transport: Transport::default(),
            max_message_age: Duration::from_secs(7 * 24 * 3600 + 300),
            max_clock_skew: Duration::from_secs(300),
            replay_window: 1024,
            replay_senders: 4096,
            identity_vault: None,
        }
    }
}

/// A peer's encryption key, verified under its identity key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerKey {
    /// The key version.
    pub version: u32,
    /// The X25519 public key.
    pub enc_public: [u8; 32],
    /// The Ed25519 identity key that signed it.
    pub identity: [u8; 32],
}

/// The relay's answer to a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// The message id (the idempotency key; retries carry it).
    pub id: MessageId,
    /// The relay had already stored this id: nothing new was stored.
    pub duplicate: bool,
}

/// A message received and opened.
pub struct Received {
    /// Its position in this node's mailbox: pass it to [`RelayClient::ack`].
    pub seq: u64,
    /// The sender (authenticated by the envelope: only its key could seal it).
    pub from: String,
    /// The sender's message id.
    pub id: MessageId,
    /// The plaintext, wiped on drop.
    pub plaintext: Plaintext,
    /// When the sender sealed it, unix ms by the sender's clock (authenticated: bound in the
    /// envelope).
    pub sent_ms: u64,
    /// When the relay accepted it, unix ms (the relay's word).
    pub created_ms: u64,
    /// When the relay would have dropped it, unix ms.
    pub expires_ms: u64,
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("seq", &self.seq)
            .field("from", &self.from)
            .field("id", &hex::encode(self.id))
            .field("plaintext_bytes", &self.plaintext.len())
            .field("sent_ms", &self.sent_ms)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// Messages that expired at the relay before this node received them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiredRange {
    /// Exclusive lower bound.
    pub after: u64,
    /// Inclusive upper bound.
    pub through: u64,
    /// How many messages in that range are gone.
    pub count: u64,
}

/// A delivery that opened but is not handed out: a replay or a stale message. It was
/// acknowledged (the relay deletes it); its plaintext was wiped unread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Its position in this node's mailbox.
    pub seq: u64,
    /// The sender (authenticated by the envelope).
    pub from: String,
    /// The sender's message id.
    pub id: MessageId,
    /// When the sender sealed it, unix ms by the sender's clock.
    pub sent_ms: u64,
}

/// What [`RelayClient::next_incoming`] yields.
#[derive(Debug)]
pub enum Incoming {
    /// A message, opened.
    Message(Received),
    /// Messages lost to expiry.
    Expired(ExpiredRange),
    /// A message already received from this sender (at any mailbox position): the relay (or
    /// something in front of it) delivered it again.
    Replayed {
        /// The replayed copy.
        message: Refused,
        /// Where the message was first received.
        first_seq: u64,
    },
    /// A message sent too long ago, from the future, or older than the replay window
    /// remembers for its sender.
    Stale {
        /// The message.
        message: Refused,
        /// Which.
        reason: StaleReason,
    },
}

impl Incoming {
    /// The message, or what came instead as an error ([`RelayError::Expired`],
    /// [`RelayError::Replayed`], [`RelayError::Stale`]).
    pub fn into_message(self) -> Result<Received, RelayError> {
        match self {
            Self::Message(m) => Ok(m),
            Self::Expired(e) => Err(RelayError::Expired {
                after: e.after,
                through: e.through,
                count: e.count,
            }),
            Self::Replayed { message, first_seq } => Err(RelayError::Replayed {
                seq: message.seq,
                first_seq,
                from: message.from,
                id: message.id,
            }),
            Self::Stale { message, reason } => Err(RelayError::Stale {
                seq: message.seq,
                from: message.from,
                id: message.id,
                sent_ms: message.sent_ms,
                reason,
            }),
        }
    }
}

/// What the client and its connection task share.
pub(crate) struct Shared {
    keys: NodeKeys,
    token: Zeroizing<Vec<u8>>,
    base: BaseUrl,
    options: ClientOptions,
}

/// The started connection task.
struct Connection {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
}

/// What `recv` reads.
struct Inbox {
    events: Option<mpsc::UnboundedReceiver<Event>>,
    /// A delivery whose opening failed for a transient reason: opened again first.
    held: Option<Delivery>,
}

/// A node's relay client. Methods take `&self`: share it in an `Arc` to send from several
/// tasks. Dropping it closes the connection.
pub struct RelayClient {
    shared: Arc<Shared>,
    api: Api,
    peers: Mutex<Peers>,
    connection: Mutex<Option<Connection>>,
    inbox: AsyncMutex<Inbox>,
    window: Mutex<Window>,
    /// The vault that attests identities, when configured.
    vault: Option<Service>,
    /// Identities the vault attested to this client (to keep, e.g. in the key file).
    attested: Mutex<std::collections::BTreeMap<String, [u8; 32]>>,
}

impl fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayClient")
            .field("node", &self.shared.keys.node())
            .field("relay", &self.shared.base.get())
            .field("token", &"[redacted]")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// A client for the node `keys` with its capability token (raw bytes) and the relay's base
    /// URL (`http://host:port`). Nothing is contacted yet.
    pub fn new(
        keys: NodeKeys,
        token: Vec<u8>,
        relay_url: &str,
        options: ClientOptions,
    ) -> Result<Self, RelayError> {
        let base = BaseUrl::new(BaseUrl::parse(relay_url, &options.transport)?);
        let api = Api::new(&token, options.request_timeout, &options.transport)?;
        let vault = options
            .identity_vault
            .as_deref()
            .map(|url| Service::with_transport(url, options.request_timeout, &options.transport))
            .transpose()
            .map_err(|e| RelayError::InvalidUrl(format!("identity_vault: {e}")))?;
        let window = Window::new(freshness::Limits {
            max_age_ms: millis(options.max_message_age),
            max_skew_ms: millis(options.max_clock_skew),
            per_sender: options.replay_window,
            senders: options.replay_senders,
        });
        Ok(Self {
            shared: Arc::new(Shared {
                keys,
                token: Zeroizing::new(token),
                base,
                options,
            }),
            api,
            peers: Mutex::new(Peers::default()),
            connection: Mutex::new(None),
            inbox: AsyncMutex::new(Inbox {
                events: None,
                held: None,
            }),
            window: Mutex::new(window),
            vault,
            attested: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// The node's keys.
    pub fn keys(&self) -> &NodeKeys {
        &self.shared.keys
    }

    /// The relay base URL in use.
    pub fn relay_url(&self) -> String {
        self.shared.base.get()
    }

    /// Point the client at another relay URL (a moved relay); the connection is re-opened
    /// there at once, unanswered sends are re-sent with their ids.
    pub fn set_relay_url(&self, relay_url: &str) -> Result<(), RelayError> {
        self.shared
            .base
            .set(BaseUrl::parse(relay_url, &self.shared.options.transport)?);
        if let Some(c) = &*self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            let _ = c.commands.send(Command::Reconnect);
        }
        Ok(())
    }

    /// Publish the node's current encryption key (`PUT /v1/relay/keys`); repeating it is a
    /// no-op at the relay.
    pub async fn publish_keys(&self) -> Result<(), RelayError> {
        let keys = &self.shared.keys;
        let statement =
            keys.signed_enc_key(keys.current_version())
                .ok_or(RelayError::NoPeerKey {
                    node: keys.node().to_owned(),
                    version: Some(keys.current_version()),
                })?;
        self.api
            .publish(&self.shared.base, keys, &self.shared.token, &statement)
            .await
    }

    /// Trust `identity` as `node`'s identity key: a listing under another identity is refused.
    pub fn pin_identity(&self, node: &str, identity: [u8; 32]) {
        self.peers().pin(node, identity);
    }

    /// The identities the vault attested to this client so far ([`ClientOptions::identity_vault`]):
    /// keep them (`keymeshctl` seals them into the key file) and pin them next time.
    pub fn attested_identities(&self) -> std::collections::BTreeMap<String, [u8; 32]> {
        self.attested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `node`'s published keys that verify under its identity key, newest first (and cache
    /// them). The identity is pinned on first use: keys under another identity are dropped, and
    /// if none is left the answer is [`RelayError::IdentityChanged`].
    pub async fn lookup(&self, node: &str) -> Result<Vec<PeerKey>, RelayError> {
        parse_node(node).map_err(|_| RelayError::InvalidNode)?;
        if let Some(vault) = &self.vault
            && !self.peers().is_pinned(node)
        {
            let token = zeroize::Zeroizing::new(base64::Engine::encode(
                &keymesh_proto::token::TOKEN_B64,
                &*self.shared.token,
            ));
            let identity = crate::vault::attested_identity(vault, &self.shared.keys, &token, node)
                .await
                .map_err(|e| unattested(node, e))?;
            self.peers().pin(node, identity);
            self.attested
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(node.to_owned(), identity);
        }
        let listing = self
            .api
            .lookup(
                &self.shared.base,
                &self.shared.keys,
                &self.shared.token,
                node,
            )
            .await?;
        self.peers().record(node, listing, Instant::now())
    }

    /// `node`'s current key, from the cache while fresh.
    async fn current_key(&self, node: &str) -> Result<PeerKey, RelayError> {
        let ttl = self.shared.options.current_key_ttl;
        if let Some(key) = self.peers().current(node, ttl) {
            return Ok(key);
        }
        self.lookup(node).await?;
        self.peers()
            .current(node, Duration::MAX)
            .ok_or(RelayError::NoPeerKey {
                node: node.to_owned(),
                version: None,
            })
    }

    /// `node`'s key of `version`, from the cache or looked up.
    async fn key_version(&self, node: &str, version: u32) -> Result<PeerKey, RelayError> {
        if let Some(key) = self.peers().get(node, version) {
            return Ok(key);
        }
        self.lookup(node).await?;
        self.peers()
            .get(node, version)
            .ok_or(RelayError::NoPeerKey {
                node: node.to_owned(),
                version: Some(version),
            })
    }

    /// The connection task's command channel, starting the task on first use; the error it
    /// ended with, if it did.
    fn commands(&self) -> Result<mpsc::UnboundedSender<Command>, RelayError> {
        let commands = self.start();
        match self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.status.borrow().clone())
        {
            Some(Status::Failed(e)) => Err(e),
            _ => Ok(commands),
        }
    }

    /// Start the connection task unless it was started.
    fn start(&self) -> mpsc::UnboundedSender<Command> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = &*connection {
            return c.commands.clone();
        }
        let (commands, commands_rx) = mpsc::unbounded_channel();
        // The relay's delivery window bounds what this holds.
        let (events, events_rx) = mpsc::unbounded_channel();
        let (status, status_rx) = watch::channel(Status::Connecting);
        let driver = Driver::new(Arc::clone(&self.shared), commands_rx, events, status);
        tokio::spawn(driver.run());
        // Uncontended: the inbox is filled once, here, before anyone can read it.
        if let Ok(mut inbox) = self.inbox.try_lock() {
            inbox.events = Some(events_rx);
        }
        *connection = Some(Connection {
            commands: commands.clone(),
            status: status_rx,
        });
        commands
    }

    /// The error the connection task ended with.
    fn ended(&self) -> RelayError {
        match &*self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(c) => match &*c.status.borrow() {
                Status::Failed(e) => e.clone(),
                _ => RelayError::Closed,
            },
            None => RelayError::Closed,
        }
    }

    /// Open the connection and wait for the relay's `ready` (or the error that ends it:
    /// refused credentials, or unreachable after the configured attempts).
    pub async fn connect(&self) -> Result<(), RelayError> {
        self.commands()?;
        let mut status = match &*self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(c) => c.status.clone(),
            None => return Err(RelayError::Closed),
        };
        let outcome = status
            .wait_for(|s| !matches!(s, Status::Connecting))
            .await
            .map(|s| s.clone());
        match outcome {
            Ok(Status::Failed(e)) => Err(e),
            Ok(_) => Ok(()),
            Err(_) => Err(self.ended()),
        }
    }

    /// Close the connection politely (pending acknowledgements are written first).
    pub async fn close(&self) {
        let commands = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.commands.clone());
        if let Some(commands) = commands {
            let (done, rx) = oneshot::channel();
            if commands.send(Command::Close(done)).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// Seal `plaintext` to `to`'s current key under a fresh random id and send it; returns once
    /// the relay has stored it.
    pub async fn send(&self, to: &str, plaintext: &[u8]) -> Result<SendReceipt, RelayError> {
        let mut id: MessageId = [0; 16];
        getrandom::fill(&mut id).expect("OS random number generator failed");
        self.send_with_id(to, id, plaintext).await
    }

    /// [`send`](Self::send) with a chosen id: to retry a send whose outcome is unknown (after
    /// a crash, say) without it being delivered twice — the relay answers `duplicate`.
    /// Dropping the future does not withdraw a message already queued for the relay.
    pub async fn send_with_id(
        &self,
        to: &str,
        id: MessageId,
        plaintext: &[u8],
    ) -> Result<SendReceipt, RelayError> {
        parse_node(to).map_err(|_| RelayError::InvalidNode)?;
        let key = self.current_key(to).await?;
        let sealed = envelope::seal(
            &self.shared.keys,
            to,
            (key.version, key.enc_public),
            id,
            now_ms(),
            plaintext,
        )?;
        let frame = ClientFrame::Send {
            id,
            to: to.to_owned(),
            ttl_secs: self.shared.options.ttl_secs,
            enc: sealed.enc,
            payload: sealed.payload,
        }
        .encode();
        let options = &self.shared.options;
        let mut retries = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            let pending = PendingSend {
                id,
                frame: frame.clone(),
                reply,
                on_wire: false,
            };
            self.commands()?
                .send(Command::Send(pending))
                .map_err(|_| self.ended())?;
            match answer.await {
                Ok(Ok(duplicate)) => return Ok(SendReceipt { id, duplicate }),
                Ok(Err(e)) => match e.retry_send_after() {
                    Some(delay) if retries < options.send_retries => {
                        retries += 1;
                        tokio::time::sleep(delay.min(options.max_retry_delay)).await;
                    }
                    _ => return Err(e),
                },
                Err(_) => return Err(self.ended()),
            }
        }
    }

    /// Mark message `seq` handled: the relay may delete it, and everything before it once that
    /// is handled too (acknowledgements are cumulative). A sequence number this client did not
    /// hand out (or from before a mailbox epoch change) is ignored.
    pub fn ack(&self, seq: u64) -> Result<(), RelayError> {
        self.commands()?
            .send(Command::Handled(seq))
            .map_err(|_| self.ended())
    }

    /// The next message, opened. Expired ranges come as [`RelayError::Expired`], replays and
    /// stale messages as [`RelayError::Replayed`] and [`RelayError::Stale`] (the client keeps
    /// working); use [`next_incoming`](Self::next_incoming) to get them as values.
    pub async fn recv(&self) -> Result<Received, RelayError> {
        self.next_incoming().await?.into_message()
    }

    /// The next message or expiry notice, in mailbox order. Cancel-safe: a message being
    /// opened when the future is dropped is returned by the next call.
    pub async fn next_incoming(&self) -> Result<Incoming, RelayError> {
        // Messages delivered before a failure are still handed out; the failure comes last.
        self.start();
        let mut inbox = self.inbox.lock().await;
        let delivery = match inbox.held.take() {
            Some(d) => d,
            None => {
                let Some(events) = inbox.events.as_mut() else {
                    return Err(RelayError::Closed);
                };
                match events.recv().await {
                    Some(Event::Message(d)) => d,
                    Some(Event::Expired(e)) => return Ok(Incoming::Expired(e)),
                    Some(Event::Failed(e)) => return Err(e),
                    None => return Err(self.ended()),
                }
            }
        };
        // Held while it is opened: if the caller drops this future (a timeout), the next call
        // opens it again instead of losing it.
        let delivery = &*inbox.held.insert(delivery);
        let opened = self.open(delivery).await;
        match opened {
            Err(e) if e.is_transient() => Err(e),
            Ok((plaintext, sent_ms)) => {
                let verdict = self
                    .window
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .check(&delivery.from, delivery.id, delivery.seq, sent_ms, now_ms());
                let d = inbox.held.take().ok_or(RelayError::Closed)?;
                let refused = |d: Delivery| Refused {
                    seq: d.seq,
                    from: d.from,
                    id: d.id,
                    sent_ms,
                };
                match verdict {
                    Verdict::Fresh => {
                        if self.shared.options.auto_ack {
                            // Best effort: a connection that ended cannot acknowledge anything.
                            let _ = self.ack(d.seq);
                        }
                        Ok(Incoming::Message(Received {
                            seq: d.seq,
                            from: d.from,
                            id: d.id,
                            plaintext,
                            sent_ms,
                            created_ms: d.created_ms,
                            expires_ms: d.expires_ms,
                        }))
                    }
                    // Never handed out, and acknowledged so the mailbox moves on; the
                    // plaintext is wiped here.
                    Verdict::Replayed { first_seq } => {
                        let _ = self.ack(d.seq);
                        Ok(Incoming::Replayed {
                            message: refused(d),
                            first_seq,
                        })
                    }
                    Verdict::Stale(reason) => {
                        let _ = self.ack(d.seq);
                        Ok(Incoming::Stale {
                            message: refused(d),
                            reason,
                        })
                    }
                }
            }
            Err(e) => {
                let d = inbox.held.take().ok_or(RelayError::Closed)?;
                let _ = self.ack(d.seq);
                Err(RelayError::Undecryptable {
                    seq: d.seq,
                    from: d.from,
                    id: d.id,
                    source: Box::new(e),
                })
            }
        }
    }

    /// The plaintext and the sender's sending time (authenticated once it opens).
    async fn open(&self, d: &Delivery) -> Result<(Plaintext, u64), RelayError> {
        let header = EnvelopeHeader::parse(&d.enc)?;
        parse_node(&d.from).map_err(|_| RelayError::InvalidNode)?;
        let sender = self.key_version(&d.from, header.sender_key_version).await?;
        let plaintext = envelope::open(
            &self.shared.keys,
            &d.from,
            &sender.enc_public,
            d.id,
            &d.enc,
            &d.payload,
        )?;
        Ok((plaintext, header.sent_ms))
    }
}

/// A vault that cannot be reached is transient (the message is kept, the send retried by the
/// caller); a vault that refuses or whose attestation does not verify names the peer unattested.
fn unattested(node: &str, e: CallError) -> RelayError {
    match e {
        CallError::Unreachable(reason) | CallError::Tls(reason) => RelayError::Unreachable {
            url: "the identity vault".into(),
            reason,
        },
        other => RelayError::IdentityUnattested {
            node: node.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}
