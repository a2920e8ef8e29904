//! The relay client's errors. Each has a stable [`code`](RelayError::code) (the relay's own
//! code when the relay refused something) and a [`kind`](RelayError::kind) saying how a
//! program should react (keymeshctl maps kinds to exit codes).

use std::time::Duration;

use keymesh_proto::ErrorCode;
use keymesh_proto::frame::MessageId;

use crate::{envelope::EnvelopeError, transport::TransportError};

/// How a caller should react to a [`RelayError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The token or its proof of possession was refused: the credential needs fixing.
    Auth,
    /// The relay refused the message: too large, mailbox full, unknown recipient, rate limited.
    Refused,
    /// The relay cannot be reached or cannot serve right now.
    Unreachable,
    /// The client's own configuration is inconsistent (URL, token for another node).
    Config,
    /// Anything else: a message that does not open, an untrusted peer key, a protocol fault.
    Other,
}

/// Why a relay operation failed. Never carries plaintext or key material.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RelayError {
    /// No connection to the relay (refused, timed out, reset), after the configured retries.
    #[error("the relay at {url} cannot be reached: {reason}")]
    Unreachable {
        /// The relay base URL.
        url: String,
        /// What failed, without secrets.
        reason: String,
    },
    /// The relay's TLS certificate does not verify (an unknown CA, a wrong name, expired).
    #[error("the relay at {url} is not trusted: {reason}")]
    Tls {
        /// The relay base URL.
        url: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The transport refused the URL or cannot be set up (plain HTTP off loopback, a bad CA
    /// file).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The relay answered with a coded error (an HTTP error body, a `refused` or `error`
    /// frame).
    #[error("the relay refused: {code}: {message}")]
    Relay {
        /// The relay's stable code (`docs/errors.md`).
        code: String,
        /// Its explanation.
        message: String,
        /// When a retry may succeed, if the relay said so.
        retry_after: Option<Duration>,
    },
    /// The relay sent something this client does not understand.
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
    /// The relay URL is not an `http(s)://` URL.
    #[error("invalid relay URL {0:?}: expected http://host[:port] or https://host[:port]")]
    InvalidUrl(String),
    /// A node id breaks the id rules.
    #[error("node ids are 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidNode,
    /// The relay accepted the token for another node than the key file's.
    #[error("the token is for node {token_node}, the keys are node {key_node}'s")]
    TokenNodeMismatch {
        /// The node the token names (from `ready`).
        token_node: String,
        /// The node of the key file.
        key_node: String,
    },
    /// The node has no published encryption key (of this version, when given).
    #[error("{node} has no published encryption key{}", .version.map(|v| format!(" of version {v}")).unwrap_or_default())]
    NoPeerKey {
        /// The node.
        node: String,
        /// The version looked for, if one was.
        version: Option<u32>,
    },
    /// A published key's signature does not verify under the node's identity key: refused.
    #[error("{node}'s encryption key version {version} is not signed by its identity key")]
    PeerKeyInvalid {
        /// The node.
        node: String,
        /// The key version.
        version: u32,
    },
    /// The relay returned another identity key for a node than the one pinned for it.
    #[error("{node}'s identity key differs from the one this client pinned for it")]
    IdentityChanged {
        /// The node.
        node: String,
    },
    /// The identity vault does not attest this node (unknown to it, another group, disabled),
    /// or its attestation does not verify: nothing is sealed to it or opened from it.
    #[error("{node}'s identity is not attested by the vault: {reason}")]
    IdentityUnattested {
        /// The node.
        node: String,
        /// The vault's answer.
        reason: String,
    },
    /// Sealing failed (e.g. the recipient's key is unusable).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A delivered message could not be opened. It was acknowledged anyway, so one bad
    /// message cannot block the mailbox; `source` says why it did not open.
    #[error("message {} (seq {seq}) from {from} cannot be opened and was acknowledged: {source}", hex::encode(.id))]
    Undecryptable {
        /// Its position in the mailbox.
        seq: u64,
        /// The sender the relay named.
        from: String,
        /// The sender's message id.
        id: MessageId,
        /// Why it did not open.
        source: Box<RelayError>,
    },
    /// Messages expired at the relay before this node received them: they are gone.
    #[error("{count} message(s) with sequence numbers in ({after}, {through}] expired unreceived")]
    Expired {
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        through: u64,
        /// How many.
        count: u64,
    },
    /// A message already received from its sender (at any mailbox position) was delivered
    /// again. It was acknowledged and not handed out.
    #[error("message {} from {from} at seq {seq} replays the one received at seq {first_seq}; acknowledged, not handed out", hex::encode(.id))]
    Replayed {
        /// The copy's position in the mailbox.
        seq: u64,
        /// Where it was first received.
        first_seq: u64,
        /// The sender.
        from: String,
        /// The sender's message id.
        id: MessageId,
    },
    /// A message sent too long ago or from the future (by its sender's sealed sending time),
    /// or older than the replay window remembers. Acknowledged, not handed out.
    #[error("message {} from {from} at seq {seq} was {}; acknowledged, not handed out", hex::encode(.id), .reason.as_str())]
    Stale {
        /// Its position in the mailbox.
        seq: u64,
        /// The sender.
        from: String,
        /// The sender's message id.
        id: MessageId,
        /// When the sender sealed it, unix ms.
        sent_ms: u64,
        /// Why it is stale.
        reason: crate::relay::StaleReason,
    },
    /// The client was closed (or its connection task ended).
    #[error("the relay client is closed")]
    Closed,
}

/// Codes the relay uses for a credential it does not accept.
const AUTH_CODES: &[&str] = &[
    "unauthorized",
    "invalid_token",
    "token_expired",
    "revoked",
    "forbidden",
    "proof_required",
    "proof_invalid",
    "proof_replayed",
];
/// Codes for a message the relay will not take.
const REFUSED_CODES: &[&str] = &[
    "too_large",
    "mailbox_full",
    "unknown_recipient",
    "rate_limited",
];
/// Codes for a relay that cannot serve right now.
const UNAVAILABLE_CODES: &[&str] = &["unavailable", "not_ready", "timeout"];
/// Fatal `error` frame codes after which reconnecting may succeed.
const RECONNECT_CODES: &[&str] = &[
    "unavailable",
    "not_ready",
    "timeout",
    "idle_timeout",
    "too_many_connections",
    "internal",
    "rate_limited",
];

impl RelayError {
    /// Stable code for logs, support answers and `--json` output.
    pub fn code(&self) -> &str {
        match self {
            Self::Unreachable { .. } => "relay_unreachable",
            Self::Tls { .. } => "tls_untrusted",
            Self::Transport(e) => e.code(),
            Self::Relay { code, .. } => code,
            Self::Protocol(_) => "relay_protocol",
            Self::InvalidUrl(_) => "invalid_relay_url",
            Self::InvalidNode => "invalid_node_id",
            Self::TokenNodeMismatch { .. } => "token_node_mismatch",
            Self::NoPeerKey { .. } => "peer_key_missing",
            Self::PeerKeyInvalid { .. } => "peer_key_invalid",
            Self::IdentityChanged { .. } => "peer_identity_changed",
            Self::IdentityUnattested { .. } => "peer_identity_unattested",
            Self::Envelope(e) => e.code(),
            Self::Undecryptable { .. } => "message_undecryptable",
            Self::Expired { .. } => "messages_expired",
            Self::Replayed { .. } => "message_replayed",
            Self::Stale { .. } => "message_stale",
            Self::Closed => "client_closed",
        }
    }

    /// How to react.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreachable { .. } => ErrorKind::Unreachable,
            Self::Relay { code, .. } if AUTH_CODES.contains(&code.as_str()) => ErrorKind::Auth,
            Self::Relay { code, .. } if REFUSED_CODES.contains(&code.as_str()) => {
                ErrorKind::Refused
            }
            Self::Relay { code, .. } if UNAVAILABLE_CODES.contains(&code.as_str()) => {
                ErrorKind::Unreachable
            }
            Self::InvalidUrl(_)
            | Self::TokenNodeMismatch { .. }
            | Self::Tls { .. }
            | Self::Transport(_) => ErrorKind::Config,
            _ => ErrorKind::Other,
        }
    }

    /// The relay's code as a known [`ErrorCode`], when it is one.
    pub fn relay_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Relay { code, .. } => code.parse().ok(),
            _ => None,
        }
    }

    /// A coded refusal from the relay, with the code's documented description when the relay
    /// gave no message (frames carry only the code).
    pub(crate) fn relay(code: &str, message: &str, retry_after: Option<Duration>) -> Self {
        let message = if message.is_empty() {
            code.parse::<ErrorCode>().map_or("", ErrorCode::description)
        } else {
            message
        };
        Self::Relay {
            code: code.to_owned(),
            message: message.to_owned(),
            retry_after,
        }
    }

    /// Whether a send refused with this error is retried automatically after `retry_after`.
    pub(crate) fn retry_send_after(&self) -> Option<Duration> {
        match self {
            Self::Relay {
                code, retry_after, ..
            } if code == "rate_limited" || code == "unavailable" => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        }
    }

    /// Whether an `error` frame with this code ends the client (credential, protocol) rather
    /// than one connection (shutdown, idle, overload).
    pub(crate) fn ends_client(code: &str) -> bool {
        !RECONNECT_CODES.contains(&code)
    }

    /// Whether failing to open a message for this reason says nothing about the message (the
    /// relay was unreachable, the token needs refreshing): the message is kept, not
    /// acknowledged, and opened again on the next receive.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Closed => true,
            Self::Relay { code, .. } => code != "unknown_recipient" && code != "not_found",
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_relay_codes() {
        for (code, kind) in [
            ("invalid_token", ErrorKind::Auth),
            ("proof_invalid", ErrorKind::Auth),
            ("forbidden", ErrorKind::Auth),
            ("revoked", ErrorKind::Auth),
            ("too_large", ErrorKind::Refused),
            ("mailbox_full", ErrorKind::Refused),
            ("unknown_recipient", ErrorKind::Refused),
            ("rate_limited", ErrorKind::Refused),
            ("unavailable", ErrorKind::Unreachable),
            ("conflict", ErrorKind::Other),
        ] {
            let e = RelayError::relay(code, "", None);
            assert_eq!((e.code(), e.kind()), (code, kind));
        }
        let e = RelayError::relay("rate_limited", "", Some(Duration::from_millis(5)));
        assert!(e.to_string().contains("Too many requests"), "{e}");
        assert_eq!(e.retry_send_after(), Some(Duration::from_millis(5)));
        assert_eq!(e.relay_code(), Some(ErrorCode::RateLimited));
        assert_eq!(RelayError::relay("x_y", "m", None).relay_code(), None);
        assert!(RelayError::ends_client("revoked") && !RelayError::ends_client("unavailable"));
        let e = RelayError::Undecryptable {
            seq: 3,
            from: "a".into(),
            id: [0xab; 16],
            source: Box::new(EnvelopeError::Decrypt.into()),
        };
        assert_eq!(e.code(), "message_undecryptable");
        assert!(e.to_string().contains(&"ab".repeat(16)), "{e}");
    }
}
