-- Vault key ceremonies opened through management (management only relays sealed material:
-- the ceremony's public key and the holders' sealed shares, never a passphrase or a share in
-- the clear); users' X25519 share keys (public halves only); emergency access grants; and a
-- group's waiver of token approvals, itself granted by an approval.
ALTER TABLE users ADD COLUMN share_key TEXT;

-- `id` is management's own handle; `vault_id`, the vault's ceremony id, never leaves management.
CREATE TABLE vault_ceremonies (
    id TEXT PRIMARY KEY,
    vault_id TEXT NOT NULL UNIQUE,
    group_id TEXT NOT NULL REFERENCES node_groups (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('init', 'unlock', 'rekey')),
    approval_id TEXT UNIQUE,
    opened_by TEXT NOT NULL,
    public_key TEXT NOT NULL,
    info TEXT NOT NULL,
    opened_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT
);
CREATE INDEX vault_ceremonies_group ON vault_ceremonies (group_id, opened_at_ms);

CREATE TABLE emergency_grants (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'responder', 'auditor', 'member')),
    approval_id TEXT NOT NULL UNIQUE,
    granted_by TEXT NOT NULL,
    starts_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    ended_by TEXT
);
CREATE INDEX emergency_grants_user ON emergency_grants (user_id, expires_at_ms);

ALTER TABLE node_groups ADD COLUMN approvals_waived_until_ms BIGINT;
ALTER TABLE node_groups ADD COLUMN approvals_waived_by TEXT;
