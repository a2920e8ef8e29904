-- Signed checkpoints of the audit chain: every so often the head (seq, hash) is signed with
-- an Ed25519 key derived from MANAGEMENT_SECRET_KEY. Someone who can write the database but
-- does not hold that key can recompute the hash chain after a rewrite, but not these.
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
