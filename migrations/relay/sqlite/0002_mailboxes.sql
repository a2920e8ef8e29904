-- Mailboxes: ciphertext only. A message row holds exactly what the relay needs to route and
-- expire it (docs/threat-model.md lists what that reveals); nothing decrypts it here.

-- One row per recipient node: its mailbox epoch (changes only if the mailbox is recreated, so
-- sequence numbers restart) and its cumulative acknowledgement.
CREATE TABLE relay_mailboxes (
    node TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    acked BIGINT NOT NULL DEFAULT 0
);

-- Accepted, not yet acknowledged messages. Deleted on acknowledgement or expiry.
CREATE TABLE relay_messages (
    recipient TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sender TEXT NOT NULL,
    client_id BLOB NOT NULL,
    enc BLOB NOT NULL,
    payload BLOB NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (recipient, seq)
);
CREATE INDEX relay_messages_expiry ON relay_messages (expires_ms);

-- Idempotency: a (sender, client id) pair accepted once is never stored again while it could
-- still be retried (until the message's own expiry), even after it was acknowledged.
CREATE TABLE relay_accepted (
    sender TEXT NOT NULL,
    client_id BLOB NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (sender, client_id)
);
CREATE INDEX relay_accepted_expiry ON relay_accepted (expires_ms);

-- Messages that expired before they were acknowledged: told to the recipient explicitly on its
-- next connection, forgotten once it acknowledges past them.
CREATE TABLE relay_expiries (
    recipient TEXT NOT NULL,
    after_seq BIGINT NOT NULL,
    through_seq BIGINT NOT NULL,
    count BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (recipient, through_seq)
);
