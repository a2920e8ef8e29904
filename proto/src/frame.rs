//! The relay's binary frames, version 1 (`docs/protocol/relay.md` is the reference).
//!
//! One WebSocket binary message carries one frame: `version: u8 = 1`, `type: u8`, then the
//! type's fields in order. Integers are big-endian and fixed width; `bytes` is a `u32` length
//! and that many bytes; `str` is a `u16` length and that many bytes of UTF-8; `id` is 16 raw
//! bytes. A frame must be consumed exactly: trailing bytes are an error. Decoding never
//! panics and never allocates more than the frame holds.

use std::fmt;

/// The WebSocket subprotocol a node asks for and the relay confirms.
pub const SUBPROTOCOL: &str = "keymesh.v1";
/// The frame encoding version.
pub const VERSION: u8 = 1;
/// Longest `str` field (node ids, codes, messages).
pub const MAX_STR: usize = 512;
/// Longest HPKE encapsulated key accepted (X25519 uses 32 bytes).
pub const MAX_ENC: usize = 256;
/// Longest token in a `hello`.
pub const MAX_TOKEN: usize = crate::token::MAX_TOKEN_BYTES;

/// A client's id for a message: retries carry the same id, so a retry is never delivered
/// twice. Also bound into the HPKE associated data.
pub type MessageId = [u8; 16];

/// Why bytes are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Empty, cut short, or a length that runs past the end.
    #[error("the frame is truncated")]
    Truncated,
    /// A version this relay does not speak.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// A type this relay does not know, or one that does not travel in this direction.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// Bytes left over after the last field.
    #[error("the frame has trailing bytes")]
    Trailing,
    /// A string that is not UTF-8 or is too long, or a field over its bound.
    #[error("a field of the frame is malformed or too long")]
    Field,
}

/// Frames a node sends.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Answer to the challenge: the token, a proof of possession over challenge and token,
    /// and where to resume.
    Hello {
        /// The capability token (Biscuit bytes).
        token: Vec<u8>,
        /// Ed25519 signature by the node key (`keymesh-ws-v1`, see `pop`).
        proof: [u8; 64],
        /// The last sequence number this node acknowledged; delivery resumes after it.
        resume_after: u64,
    },
    /// Store and forward a sealed message.
    Send {
        /// The sender's id for the message (idempotency key).
        id: MessageId,
        /// The recipient node.
        to: String,
        /// Seconds to keep it; 0 means the relay's default, more than the maximum is refused.
        ttl_secs: u32,
        /// The HPKE encapsulated key.
        enc: Vec<u8>,
        /// The HPKE ciphertext.
        payload: Vec<u8>,
    },
    /// Everything up to and including `through` in this node's mailbox is handled.
    Ack {
        /// A sequence number of this node's mailbox.
        through: u64,
    },
}

/// Frames the relay sends.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// First frame of every connection.
    Challenge {
        /// Random bytes the node signs.
        nonce: [u8; 32],
        /// The relay's clock, unix milliseconds.
        now_ms: u64,
    },
    /// The handshake succeeded.
    Ready {
        /// The node the token names.
        node: String,
        /// The mailbox epoch: changes when the mailbox was recreated, so sequence numbers
        /// restart.
        epoch: u64,
        /// Delivery resumes after this sequence number.
        resume_after: u64,
        /// The limits in force for this connection.
        limits: Limits,
    },
    /// A message is durable (or was already: `duplicate`).
    Accepted {
        /// The sender's id for it.
        id: MessageId,
        /// True when this id was accepted before (nothing new was stored).
        duplicate: bool,
    },
    /// A message was not accepted; nothing was stored.
    Refused {
        /// The sender's id for it.
        id: MessageId,
        /// A stable error code (`docs/errors.md`).
        code: String,
        /// When retrying may succeed (rate limits, full mailboxes), in milliseconds; 0 when a
        /// retry will not help.
        retry_after_ms: u32,
    },
    /// A message for this node.
    Deliver {
        /// Its position in this node's mailbox.
        seq: u64,
        /// The sender's id for it.
        id: MessageId,
        /// The sending node.
        from: String,
        /// When the relay accepted it, unix milliseconds.
        created_ms: u64,
        /// When the relay will drop it if unacknowledged, unix milliseconds.
        expires_ms: u64,
        /// The HPKE encapsulated key.
        enc: Vec<u8>,
        /// The HPKE ciphertext.
        payload: Vec<u8>,
    },
    /// `count` messages with sequence numbers in `(after, through]` expired before they were
    /// acknowledged and are gone; any others in that range are still delivered as usual.
    Expired {
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        through: u64,
        /// How many messages expired in that range.
        count: u64,
    },
    /// A fatal error; the relay closes the connection after it.
    Error {
        /// A stable error code (`docs/errors.md`).
        code: String,
        /// A human-readable explanation, without internals.
        message: String,
    },
}

/// Limits announced in `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `payload` accepted, bytes.
    pub max_message: u32,
    /// Largest frame accepted, bytes.
    pub max_frame: u32,
    /// Unacknowledged deliveries in flight before delivery pauses.
    pub window: u32,
    /// Sends per second per node.
    pub sends_per_sec: u32,
    /// The relay pings this often, milliseconds.
    pub ping_interval_ms: u32,
    /// A connection silent this long is closed, milliseconds.
    pub idle_timeout_ms: u32,
    /// Longest time to live a message may ask for, seconds.
    pub max_ttl_secs: u32,
}

mod tag {
    pub const HELLO: u8 = 0x01;
    pub const SEND: u8 = 0x02;
    pub const ACK: u8 = 0x03;
    pub const CHALLENGE: u8 = 0x81;
    pub const READY: u8 = 0x82;
    pub const ACCEPTED: u8 = 0x83;
    pub const REFUSED: u8 = 0x84;
    pub const DELIVER: u8 = 0x85;
    pub const EXPIRED: u8 = 0x86;
    pub const ERROR: u8 = 0x87;
}

// Debug never prints tokens, proofs or ciphertext: sizes only.
impl fmt::Debug for ClientFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello {
                token,
                resume_after,
                ..
            } => f
                .debug_struct("Hello")
                .field("token_bytes", &token.len())
                .field("resume_after", resume_after)
                .finish_non_exhaustive(),
            Self::Send {
                id,
                to,
                ttl_secs,
                enc,
                payload,
            } => f
                .debug_struct("Send")
                .field("id", &hex::encode(id))
                .field("to", to)
                .field("ttl_secs", ttl_secs)
                .field("enc_bytes", &enc.len())
                .field("payload_bytes", &payload.len())
                .finish(),
            Self::Ack { through } => f.debug_struct("Ack").field("through", through).finish(),
        }
    }
}

impl fmt::Debug for ServerFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Challenge { now_ms, .. } => f
                .debug_struct("Challenge")
                .field("now_ms", now_ms)
                .finish_non_exhaustive(),
            Self::Ready {
                node,
                epoch,
                resume_after,
                limits,
            } => f
                .debug_struct("Ready")
                .field("node", node)
                .field("epoch", epoch)
                .field("resume_after", resume_after)
                .field("limits", limits)
                .finish(),
            Self::Accepted { id, duplicate } => f
                .debug_struct("Accepted")
                .field("id", &hex::encode(id))
                .field("duplicate", duplicate)
                .finish(),
            Self::Refused {
                id,
                code,
                retry_after_ms,
            } => f
                .debug_struct("Refused")
                .field("id", &hex::encode(id))
                .field("code", code)
                .field("retry_after_ms", retry_after_ms)
                .finish(),
            Self::Deliver {
                seq,
                id,
                from,
                created_ms,
                expires_ms,
                enc,
                payload,
            } => f
                .debug_struct("Deliver")
                .field("seq", seq)
                .field("id", &hex::encode(id))
                .field("from", from)
                .field("created_ms", created_ms)
                .field("expires_ms", expires_ms)
                .field("enc_bytes", &enc.len())
                .field("payload_bytes", &payload.len())
                .finish(),
            Self::Expired {
                after,
                through,
                count,
            } => f
                .debug_struct("Expired")
                .field("after", after)
                .field("through", through)
                .field("count", count)
                .finish(),
            Self::Error { code, message } => f
                .debug_struct("Error")
                .field("code", code)
                .field("message", message)
                .finish(),
        }
    }
}

/// Appends fields to a frame being encoded.
struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(2 + capacity);
        out.extend_from_slice(&[VERSION, tag]);
        Self(out)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// Lengths are bounded by the types' own limits long before `u32::MAX`; saturate rather
    /// than wrap so an impossible input cannot encode a misleading length.
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.raw(v);
    }
    fn str(&mut self, v: &str) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.raw(v.as_bytes());
    }
}

/// Reads fields from a frame being decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        self.take(N)?.try_into().map_err(|_| FrameError::Truncated)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bool(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Field),
        }
    }
    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, FrameError> {
        let len = usize::try_from(self.u32()?).map_err(|_| FrameError::Field)?;
        if len > max {
            return Err(FrameError::Field);
        }
        Ok(self.take(len)?.to_vec())
    }
    fn str(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.u16()?);
        if len > MAX_STR {
            return Err(FrameError::Field);
        }
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| FrameError::Field)
    }
    fn finish(self) -> Result<(), FrameError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing)
        }
    }
}

/// Split off the version and type.
fn header(bytes: &[u8]) -> Result<(u8, Reader<'_>), FrameError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    Ok((r.u8()?, r))
}

impl ClientFrame {
    /// Encode for the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Hello {
                token,
                proof,
                resume_after,
            } => {
                let mut w = Writer::new(tag::HELLO, token.len() + 80);
                w.bytes(token);
                w.raw(proof);
                w.u64(*resume_after);
                w.0
            }
            Self::Send {
                id,
                to,
                ttl_secs,
                enc,
                payload,
            } => {
                let mut w = Writer::new(tag::SEND, 32 + to.len() + enc.len() + payload.len());
                w.raw(id);
                w.str(to);
                w.u32(*ttl_secs);
                w.bytes(enc);
                w.bytes(payload);
                w.0
            }
            Self::Ack { through } => {
                let mut w = Writer::new(tag::ACK, 8);
                w.u64(*through);
                w.0
            }
        }
    }

    /// Decode one frame; `max_payload` bounds a `send`'s ciphertext (the frame size bound
    /// applies before this, at the WebSocket layer).
    pub fn decode(bytes: &[u8], max_payload: usize) -> Result<Self, FrameError> {
        let (kind, mut r) = header(bytes)?;
        let frame = match kind {
            tag::HELLO => Self::Hello {
                token: r.bytes(MAX_TOKEN)?,
                proof: r.array()?,
                resume_after: r.u64()?,
            },
            tag::SEND => Self::Send {
                id: r.array()?,
                to: r.str()?,
                ttl_secs: r.u32()?,
                enc: r.bytes(MAX_ENC)?,
                payload: r.bytes(max_payload)?,
            },
            tag::ACK => Self::Ack { through: r.u64()? },
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

/// A `deliver` frame's fields, borrowed (the relay encodes stored messages without copying
/// them into a [`ServerFrame`] first).
#[derive(Clone, Copy)]
pub struct DeliverRef<'a> {
    /// Position in the mailbox.
    pub seq: u64,
    /// The sender's id.
    pub id: &'a [u8; 16],
    /// The sender.
    pub from: &'a str,
    /// Accepted at.
    pub created_ms: u64,
    /// Dropped at.
    pub expires_ms: u64,
    /// Encapsulated key.
    pub enc: &'a [u8],
    /// Ciphertext.
    pub payload: &'a [u8],
}

impl fmt::Debug for DeliverRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliverRef")
            .field("seq", &self.seq)
            .field("from", &self.from)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Encode a `deliver` frame.
pub fn encode_deliver(d: &DeliverRef<'_>) -> Vec<u8> {
    let mut w = Writer::new(
        tag::DELIVER,
        56 + d.from.len() + d.enc.len() + d.payload.len(),
    );
    w.u64(d.seq);
    w.raw(d.id);
    w.str(d.from);
    w.u64(d.created_ms);
    w.u64(d.expires_ms);
    w.bytes(d.enc);
    w.bytes(d.payload);
    w.0
}

impl ServerFrame {
    /// Encode for the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Challenge { nonce, now_ms } => {
                let mut w = Writer::new(tag::CHALLENGE, 40);
                w.raw(nonce);
                w.u64(*now_ms);
                w.0
            }
            Self::Ready {
                node,
                epoch,
                resume_after,
                limits,
            } => {
                let mut w = Writer::new(tag::READY, 48 + node.len());
                w.str(node);
                w.u64(*epoch);
                w.u64(*resume_after);
                for v in [
                    limits.max_message,
                    limits.max_frame,
                    limits.window,
                    limits.sends_per_sec,
                    limits.ping_interval_ms,
                    limits.idle_timeout_ms,
                    limits.max_ttl_secs,
                ] {
                    w.u32(v);
                }
                w.0
            }
            Self::Accepted { id, duplicate } => {
                let mut w = Writer::new(tag::ACCEPTED, 17);
                w.raw(id);
                w.u8(u8::from(*duplicate));
                w.0
            }
            Self::Refused {
                id,
                code,
                retry_after_ms,
            } => {
                let mut w = Writer::new(tag::REFUSED, 24 + code.len());
                w.raw(id);
                w.str(code);
                w.u32(*retry_after_ms);
                w.0
            }
            Self::Deliver {
                seq,
                id,
                from,
                created_ms,
                expires_ms,
                enc,
                payload,
            } => encode_deliver(&DeliverRef {
                seq: *seq,
                id,
                from,
                created_ms: *created_ms,
                expires_ms: *expires_ms,
                enc,
                payload,
            }),
            Self::Expired {
                after,
                through,
                count,
            } => {
                let mut w = Writer::new(tag::EXPIRED, 24);
                w.u64(*after);
                w.u64(*through);
                w.u64(*count);
                w.0
            }
            Self::Error { code, message } => {
                let mut w = Writer::new(tag::ERROR, 4 + code.len() + message.len());
                w.str(code);
                w.str(message);
                w.0
            }
        }
    }

    /// Decode one frame (the client side).
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (kind, mut r) = header(bytes)?;
        let frame = match kind {
            tag::CHALLENGE => Self::Challenge {
                nonce: r.array()?,
                now_ms: r.u64()?,
            },
            tag::READY => Self::Ready {
                node: r.str()?,
                epoch: r.u64()?,
                resume_after: r.u64()?,
                limits: Limits {
                    max_message: r.u32()?,
                    max_frame: r.u32()?,
                    window: r.u32()?,
                    sends_per_sec: r.u32()?,
                    ping_interval_ms: r.u32()?,
                    idle_timeout_ms: r.u32()?,
                    max_ttl_secs: r.u32()?,
                },
            },
            tag::ACCEPTED => Self::Accepted {
                id: r.array()?,
                duplicate: r.bool()?,
            },
            tag::REFUSED => Self::Refused {
                id: r.array()?,
                code: r.str()?,
                retry_after_ms: r.u32()?,
            },
            tag::DELIVER => Self::Deliver {
                seq: r.u64()?,
                id: r.array()?,
                from: r.str()?,
                created_ms: r.u64()?,
                expires_ms: r.u64()?,
                enc: r.bytes(MAX_ENC)?,
                payload: r.bytes(usize::MAX)?,
            },
            tag::EXPIRED => Self::Expired {
                after: r.u64()?,
                through: r.u64()?,
                count: r.u64()?,
            },
            tag::ERROR => Self::Error {
                code: r.str()?,
                message: r.str()?,
            },
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id() -> impl Strategy<Value = MessageId> {
        any::<[u8; 16]>()
    }

    fn client() -> impl Strategy<Value = ClientFrame> {
        prop_oneof![
            (prop::collection::vec(any::<u8>(), 0..600), any::<u64>()).prop_map(|(token, r)| {
                ClientFrame::Hello {
                    token,
                    proof: [7; 64],
                    resume_after: r,
                }
            }),
            (
                id(),
                "[a-z0-9.-]{0,64}",
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(any::<u8>(), 0..2048)
            )
                .prop_map(|(id, to, ttl_secs, enc, payload)| ClientFrame::Send {
                    id,
                    to,
                    ttl_secs,
                    enc,
                    payload
                }),
            any::<u64>().prop_map(|through| ClientFrame::Ack { through }),
        ]
    }

    fn server() -> impl Strategy<Value = ServerFrame> {
        prop_oneof![
            (any::<[u8; 32]>(), any::<u64>())
                .prop_map(|(nonce, now_ms)| ServerFrame::Challenge { nonce, now_ms }),
            (
                "[a-z0-9]{1,64}",
                any::<u64>(),
                any::<u64>(),
                any::<[u32; 7]>()
            )
                .prop_map(|(node, epoch, resume_after, l)| ServerFrame::Ready {
                    node,
                    epoch,
                    resume_after,
                    limits: Limits {
                        max_message: l[0],
                        max_frame: l[1],
                        window: l[2],
                        sends_per_sec: l[3],
                        ping_interval_ms: l[4],
                        idle_timeout_ms: l[5],
                        max_ttl_secs: l[6],
                    },
                }),
            (id(), any::<bool>())
                .prop_map(|(id, duplicate)| ServerFrame::Accepted { id, duplicate }),
            (id(), "[a-z_]{1,40}", any::<u32>()).prop_map(|(id, code, retry_after_ms)| {
                ServerFrame::Refused {
                    id,
                    code,
                    retry_after_ms,
                }
            }),
            (
                any::<u64>(),
                id(),
                "[a-z0-9]{1,64}",
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(any::<u8>(), 0..2048)
            )
                .prop_map(|(seq, id, from, created_ms, expires_ms, enc, payload)| {
                    ServerFrame::Deliver {
                        seq,
                        id,
                        from,
                        created_ms,
                        expires_ms,
                        enc,
                        payload,
                    }
                }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(after, through, count)| {
                ServerFrame::Expired {
                    after,
                    through,
                    count,
                }
            }),
            ("[a-z_]{1,40}", ".{0,100}")
                .prop_map(|(code, message)| ServerFrame::Error { code, message }),
        ]
    }

    proptest! {
        #[test]
        fn client_frames_round_trip(frame in client()) {
            prop_assert_eq!(ClientFrame::decode(&frame.encode(), 4096), Ok(frame));
        }

        #[test]
        fn server_frames_round_trip(frame in server()) {
            prop_assert_eq!(ServerFrame::decode(&frame.encode()), Ok(frame));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = ClientFrame::decode(&bytes, 4096);
            let _ = ServerFrame::decode(&bytes);
        }

        #[test]
        fn every_strict_prefix_of_a_frame_is_truncated(frame in client()) {
            let bytes = frame.encode();
            for cut in 0..bytes.len() {
                prop_assert_eq!(ClientFrame::decode(&bytes[..cut], 4096), Err(FrameError::Truncated));
            }
        }
    }

    #[test]
    fn bad_headers_lengths_and_trailing_bytes_are_coded() {
        let ack = ClientFrame::Ack { through: 9 }.encode();
        let mut v2 = ack.clone();
        v2[0] = 2;
        assert_eq!(ClientFrame::decode(&v2, 10), Err(FrameError::Version(2)));
        let mut unknown = ack.clone();
        unknown[1] = 0x7f;
        assert_eq!(
            ClientFrame::decode(&unknown, 10),
            Err(FrameError::UnknownType(0x7f))
        );
        // A server frame type is not a client frame.
        let mut wrong_way = ack.clone();
        wrong_way[1] = 0x85;
        assert_eq!(
            ClientFrame::decode(&wrong_way, 10),
            Err(FrameError::UnknownType(0x85))
        );
        let mut trailing = ack;
        trailing.push(0);
        assert_eq!(
            ClientFrame::decode(&trailing, 10),
            Err(FrameError::Trailing)
        );
        let send = ClientFrame::Send {
            id: [1; 16],
            to: "b".into(),
            ttl_secs: 0,
            enc: vec![0; 32],
            payload: vec![0; 11],
        };
        assert_eq!(
            ClientFrame::decode(&send.encode(), 10),
            Err(FrameError::Field)
        );
        // A length field claiming 4 GiB is refused without allocating it.
        let mut huge = vec![VERSION, 0x01];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(ClientFrame::decode(&huge, 10), Err(FrameError::Field));
        // Invalid UTF-8 in a string field.
        let mut bad = vec![VERSION, 0x02];
        bad.extend_from_slice(&[0; 16]);
        bad.extend_from_slice(&[0, 1, 0xff]);
        bad.extend_from_slice(&[0; 12]);
        assert_eq!(ClientFrame::decode(&bad, 10), Err(FrameError::Field));
    }
}
