-- A node management disabled: the vault mints, refreshes and delegates nothing for it (its
-- tokens are also revoked by an epoch bump when it is disabled).
ALTER TABLE nodes ADD COLUMN disabled_at_ms BIGINT;

-- Each management approval allows one mint, ever: a retried or replayed approval id is refused.
CREATE TABLE approval_mints (
    approval TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    minted_at_ms BIGINT NOT NULL
);
