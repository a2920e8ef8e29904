//! A batch planned on an overlay of the mailboxes it touches: sequence numbers, bounds and
//! idempotency decided before the commit, applied to the counters only once it committed.

use super::*;

/// A send the batch will store.
pub(super) struct Planned<'a> {
    pub(super) message: &'a NewMessage,
    pub(super) seq: i64,
}

/// A mailbox's counters in the batch's overlay, starting from the committed ones.
pub(super) fn slot<'a>(
    touched: &'a mut HashMap<String, Occupancy>,
    base: &HashMap<String, Occupancy>,
    recipient: &str,
) -> &'a mut Occupancy {
    touched
        .entry(recipient.to_owned())
        .or_insert_with(|| base.get(recipient).copied().unwrap_or_default())
}

pub(super) fn size(m: &NewMessage) -> i64 {
    i64::try_from(m.payload.len() + m.enc.len()).unwrap_or(i64::MAX)
}

/// Where a batch records idempotency keys.
pub(super) trait Keys<'m> {
    type Error;
    /// Record `m`'s key; `false` when it was accepted before or earlier in this batch.
    fn claim(&mut self, m: &'m NewMessage) -> Result<bool, Self::Error>;
    /// Forget a key just claimed, for a send refused after all.
    fn release(&mut self, m: &'m NewMessage) -> Result<(), Self::Error>;
}

/// One mailbox's acknowledgement in a batch: delete its messages in `(after, through]`.
pub(super) struct AckTarget<'a> {
    pub(super) recipient: &'a str,
    /// The acknowledgement before this batch.
    pub(super) after: i64,
    pub(super) through: i64,
    /// Whether expiry records must be forgotten.
    pub(super) forget: bool,
}

/// What one transaction does, planned on an overlay of the mailboxes the batch touches (the
/// counters change only once it has committed).
pub(super) struct Overlay<'b> {
    pub(super) base: &'b HashMap<String, Occupancy>,
    pub(super) touched: &'b mut HashMap<String, Occupancy>,
    pub(super) bounds: Bounds,
}

impl Overlay<'_> {
    /// Each send's fate, in batch order: a duplicate (accepted earlier, or repeated within the
    /// batch: the first is stored), refused over a mailbox bound, or stored at the next
    /// sequence number of its mailbox. Returns the outcomes and the sends to store.
    pub(super) fn plan<'m, K: Keys<'m>>(
        &mut self,
        sends: &[&'m NewMessage],
        keys: &mut K,
    ) -> Result<(Vec<SendOutcome>, Vec<Planned<'m>>), K::Error> {
        let mut outcomes = vec![SendOutcome::Duplicate; sends.len()];
        let mut fresh = Vec::with_capacity(sends.len());
        for (i, m) in sends.iter().enumerate() {
            if !keys.claim(m)? {
                continue;
            }
            let b = slot(self.touched, self.base, &m.recipient);
            if b.count >= self.bounds.max_messages
                || b.bytes.saturating_add(size(m)) > self.bounds.max_bytes
            {
                outcomes[i] = SendOutcome::MailboxFull;
                keys.release(m)?;
                continue;
            }
            b.last_seq += 1;
            b.count += 1;
            b.bytes += size(m);
            outcomes[i] = SendOutcome::Stored(b.last_seq);
            fresh.push(Planned {
                message: m,
                seq: b.last_seq,
            });
        }
        Ok((outcomes, fresh))
    }

    /// Acknowledgements are cumulative: one per mailbox (the highest) is applied. Never past
    /// the highest number assigned: an ack beyond it would hide later messages below the resume
    /// position.
    pub(super) fn ack_targets<'a>(&mut self, acks: &[(&'a str, i64)]) -> Vec<AckTarget<'a>> {
        let mut highest: HashMap<&str, i64> = HashMap::new();
        for (recipient, through) in acks {
            let capped = (*through).min(slot(self.touched, self.base, recipient).last_seq);
            let t = highest.entry(recipient).or_insert(capped);
            *t = (*t).max(capped);
        }
        highest
            .into_iter()
            .map(|(recipient, through)| {
                let b = slot(self.touched, self.base, recipient);
                let forget = b.expired_through > 0;
                if through >= b.expired_through {
                    b.expired_through = 0;
                }
                let after = b.acked;
                b.acked = b.acked.max(through);
                AckTarget {
                    recipient,
                    after,
                    through,
                    forget,
                }
            })
            .collect()
    }

    /// Take what the acknowledgements deleted (per mailbox: messages, bytes) off the counters;
    /// each mailbox's deletions are reported on its last acknowledgement in the batch.
    pub(super) fn settle(
        &mut self,
        acks: &[(&str, i64)],
        mut removed: HashMap<&str, (i64, i64)>,
    ) -> Vec<i64> {
        let mut deleted = vec![0; acks.len()];
        for (i, (recipient, _)) in acks.iter().enumerate().rev() {
            if let Some((n, bytes)) = removed.remove(*recipient) {
                let b = slot(self.touched, self.base, recipient);
                b.count -= n;
                b.bytes -= bytes;
                deleted[i] = n;
            }
        }
        deleted
    }
}
