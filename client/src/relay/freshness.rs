//! What a recipient remembers so the relay cannot replay a message or deliver one far too late
//! or from the future (docs/decisions/0015-message-freshness.md). The sending time is the
//! sender's, bound in the envelope; message ids and mailbox positions are checked per sender.

use std::collections::{BTreeSet, HashMap};

use keymesh_proto::frame::MessageId;

/// How a delivery compares with what this client has received before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New: hand it out.
    Fresh,
    /// An id already received from this sender: a replay, whatever its mailbox position. (The
    /// relay's honest redelivery after a reconnect never gets here: the connection drops what
    /// it already queued. A new mailbox epoch, which the relay announces, restarts positions,
    /// so a position proves nothing.)
    Replayed {
        /// Where the id was first received.
        first_seq: u64,
    },
    /// Sent too long ago, from the future, or older than what the window still remembers.
    Stale(StaleReason),
}

/// Why a message is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// `sent_ms` is further in the future than the allowed clock skew.
    FromTheFuture,
    /// Older than the longest a message may wait (`max_message_age`).
    TooOld,
    /// Older than the oldest message this client still remembers from the sender: it may be a
    /// replay the window can no longer tell.
    BeforeWindow,
}

impl StaleReason {
    /// A short explanation for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FromTheFuture => "sent in the future (beyond the allowed clock skew)",
            Self::TooOld => "sent longer ago than a message may wait",
            Self::BeforeWindow => "older than the replay window still remembers from its sender",
        }
    }
}

/// The bounds, from `ClientOptions`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_age_ms: u64,
    pub max_skew_ms: u64,
    /// Ids remembered per sender.
    pub per_sender: usize,
    /// Senders remembered.
    pub senders: usize,
}

#[derive(Debug, Default)]
struct Sender {
    /// id → where it was received.
    seen: HashMap<MessageId, u64>,
    /// `(sent_ms, id)`: the oldest by sending time is forgotten first, so the floor stays below
    /// every remembered message (arrival order may differ from sending order).
    order: BTreeSet<(u64, MessageId)>,
    /// The newest `sent_ms` forgotten: an unknown id sent then or before cannot be told apart from
    /// a replay.
    floor_ms: u64,
    /// When this sender was last heard (a counter), to forget the quietest sender first.
    heard: u64,
}

/// Per-sender windows of received message ids, bounded in ids and senders.
#[derive(Debug)]
pub(crate) struct Window {
    limits: Limits,
    senders: HashMap<String, Sender>,
    clock: u64,
}

impl Window {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            senders: HashMap::new(),
            clock: 0,
        }
    }

    /// Judge a delivery that opened (so `from`, `id` and `sent_ms` are the sender's word) and
    /// remember it when it is handed out.
    pub(crate) fn check(
        &mut self,
        from: &str,
        id: MessageId,
        seq: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Verdict {
        if sent_ms > now_ms.saturating_add(self.limits.max_skew_ms) {
            return Verdict::Stale(StaleReason::FromTheFuture);
        }
        if now_ms.saturating_sub(sent_ms) > self.limits.max_age_ms {
            return Verdict::Stale(StaleReason::TooOld);
        }
        self.clock += 1;
        if let Some(sender) = self.senders.get_mut(from) {
            sender.heard = self.clock;
            match sender.seen.get(&id) {
                Some(&first_seq) => return Verdict::Replayed { first_seq },
                None if sent_ms <= sender.floor_ms => {
                    return Verdict::Stale(StaleReason::BeforeWindow);
                }
                None => {}
            }
        } else if self.senders.len() >= self.limits.senders {
            self.forget_quietest();
        }
        let per_sender = self.limits.per_sender.max(1);
        let sender = self.senders.entry(from.to_owned()).or_default();
        sender.heard = self.clock;
        sender.seen.insert(id, seq);
        sender.order.insert((sent_ms, id));
        while sender.order.len() > per_sender {
            if let Some((old_sent, old)) = sender.order.pop_first() {
                sender.seen.remove(&old);
                sender.floor_ms = sender.floor_ms.max(old_sent);
            }
        }
        Verdict::Fresh
    }

    fn forget_quietest(&mut self) {
        if let Some(quietest) = self
            .senders
            .iter()
            .min_by_key(|(_, s)| s.heard)
            .map(|(name, _)| name.clone())
        {
            self.senders.remove(&quietest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn window(per_sender: usize, senders: usize) -> Window {
        Window::new(Limits {
            max_age_ms: 60_000,
            max_skew_ms: 5_000,
            per_sender,
            senders,
        })
    }

    fn id(n: u8) -> MessageId {
        [n; 16]
    }

    #[test]
    fn replays_redeliveries_and_time() {
        let mut w = window(4, 8);
        assert_eq!(w.check("a", id(1), 1, NOW, NOW), Verdict::Fresh);
        // at the same position too: a relay that announces a new mailbox epoch can reuse it
        assert_eq!(
            w.check("a", id(1), 1, NOW, NOW),
            Verdict::Replayed { first_seq: 1 }
        );
        assert_eq!(
            w.check("a", id(1), 7, NOW, NOW),
            Verdict::Replayed { first_seq: 1 }
        );
        // another sender's ids are its own
        assert_eq!(w.check("b", id(1), 2, NOW, NOW), Verdict::Fresh);
        assert_eq!(
            w.check("a", id(2), 3, NOW + 5_001, NOW),
            Verdict::Stale(StaleReason::FromTheFuture)
        );
        assert_eq!(w.check("a", id(2), 3, NOW + 5_000, NOW), Verdict::Fresh);
        assert_eq!(
            w.check("a", id(3), 4, NOW - 60_001, NOW),
            Verdict::Stale(StaleReason::TooOld)
        );
        // a stale message is not remembered: it stays stale, it does not become a replay
        assert_eq!(
            w.check("a", id(3), 4, NOW - 60_001, NOW),
            Verdict::Stale(StaleReason::TooOld)
        );
    }

    #[test]
    fn forgotten_ids_leave_a_floor_and_quiet_senders_go_first() {
        let mut w = window(2, 2);
        for n in 1..=3u8 {
            let sent = NOW - 1_000 + u64::from(n);
            assert_eq!(w.check("a", id(n), u64::from(n), sent, NOW), Verdict::Fresh);
        }
        // id 1 was forgotten: replaying it is caught by the floor
        assert_eq!(
            w.check("a", id(1), 9, NOW - 999, NOW),
            Verdict::Stale(StaleReason::BeforeWindow)
        );
        // a new message sent after the floor is fine
        assert_eq!(w.check("a", id(4), 10, NOW - 990, NOW), Verdict::Fresh);
        assert_eq!(w.check("b", id(1), 1, NOW, NOW), Verdict::Fresh);
        assert_eq!(w.check("a", id(5), 11, NOW, NOW), Verdict::Fresh);
        // sent before a remembered message but after the floor: still fine (out of order)
        let mut w2 = window(2, 2);
        assert_eq!(w2.check("a", id(1), 1, NOW - 10, NOW), Verdict::Fresh);
        assert_eq!(w2.check("a", id(2), 2, NOW - 30, NOW), Verdict::Fresh);
        assert_eq!(w2.check("a", id(3), 3, NOW - 20, NOW), Verdict::Fresh);
        // id 2 (sent first) was forgotten, not id 1: the floor is NOW - 30
        assert_eq!(w2.check("a", id(4), 4, NOW - 25, NOW), Verdict::Fresh);
        assert_eq!(
            w2.check("a", id(1), 5, NOW - 10, NOW),
            Verdict::Replayed { first_seq: 1 }
        );
        // a third sender evicts the quietest (b)
        assert_eq!(w.check("c", id(1), 1, NOW, NOW), Verdict::Fresh);
        assert_eq!(w.senders.len(), 2);
        assert!(!w.senders.contains_key("b"));
    }
}
