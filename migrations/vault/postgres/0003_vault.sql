-- Root signing keys for capability tokens; private halves sealed under VAULT_MASTER_KEY.
CREATE TABLE token_keys (
    kid BIGINT PRIMARY KEY,
    public_key BYTEA NOT NULL,
    sealed_private BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    retired_at_ms BIGINT
);

-- Nodes the vault may mint for, with their capability ceiling.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    public_key BYTEA NOT NULL,
    ceiling TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Issued grants: refresh keeps the grant, delegation creates a child grant.
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    parent_grant TEXT,
    node_id TEXT NOT NULL,
    lineage TEXT NOT NULL,
    rights TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Revocation epochs: a token minted under an older epoch of its node, user or group is dead.
CREATE TABLE epochs (
    scope TEXT NOT NULL CHECK (scope IN ('node', 'user', 'group')),
    subject TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (scope, subject)
);

-- The ordered revocation feed. Sequence numbers are assigned under the head row's lock, so
-- commit order equals sequence order and a follower never skips an entry.
CREATE TABLE revocations (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'block', 'epoch')),
    scope TEXT,
    subject TEXT NOT NULL,
    epoch BIGINT,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE TABLE revocation_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);

-- Group vaults: the data key wrapped by a passphrase-derived key, or split into shares.
CREATE TABLE vaults (
    group_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL CHECK (mode IN ('passphrase', 'shamir')),
    kdf_params TEXT,
    wrapped_key BYTEA,
    key_check BYTEA NOT NULL,
    threshold BIGINT,
    generation BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE vault_shares (
    group_id TEXT NOT NULL REFERENCES vaults (group_id) ON DELETE CASCADE,
    admin_id TEXT NOT NULL,
    admin_public_key BYTEA NOT NULL,
    sealed_share BYTEA NOT NULL,
    PRIMARY KEY (group_id, admin_id)
);

-- Secret values and metadata, sealed under the vault's data key; the AAD binds group, path and
-- version so rows cannot be swapped.
CREATE TABLE secrets (
    group_id TEXT NOT NULL REFERENCES vaults (group_id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    version BIGINT NOT NULL,
    sealed_value BYTEA NOT NULL,
    sealed_metadata BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (group_id, path)
);
