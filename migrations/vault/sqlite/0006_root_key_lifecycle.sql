-- Root keys are announced before they sign and can be revoked at once (decision 0014).
-- activates_at_ms: signs from then (NULL: from created_at_ms); revoked_at_ms: verifies nothing.
ALTER TABLE token_keys ADD COLUMN activates_at_ms INTEGER;
ALTER TABLE token_keys ADD COLUMN revoked_at_ms INTEGER;

-- The feed also carries root key changes, so every follower reads the keys again at once:
-- 'root_key' (revoked) and 'root_key_added' (announced). SQLite cannot alter a CHECK constraint:
-- the table is rebuilt with the same rows.
CREATE TABLE revocations_new (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'block', 'epoch', 'root_key', 'root_key_added')),
    scope TEXT,
    subject TEXT NOT NULL,
    epoch INTEGER,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
INSERT INTO revocations_new (seq, kind, scope, subject, epoch, reason, at_ms)
    SELECT seq, kind, scope, subject, epoch, reason, at_ms FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
