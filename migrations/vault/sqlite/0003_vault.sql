-- Root signing keys for capability tokens; private halves sealed under VAULT_MASTER_KEY.
CREATE TABLE token_keys (
    kid INTEGER PRIMARY KEY,
    public_key BLOB NOT NULL,
    sealed_private BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
);

-- Nodes the vault may mint for, with their capability ceiling.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    public_key BLOB NOT NULL,
    ceiling TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Issued grants: refresh keeps the grant, delegation creates a child grant.
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    parent_grant TEXT,
    node_id TEXT NOT NULL,
    lineage TEXT NOT NULL,
    rights TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- Revocation epochs: a token minted under an older epoch of its node, user or group is dead.
CREATE TABLE epochs (
    scope TEXT NOT NULL CHECK (scope IN ('node', 'user', 'group')),
    subject TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (scope, subject)
);

-- The ordered revocation feed. Sequence numbers are assigned under the head row's lock, so
-- commit order equals sequence order and a follower never skips an entry.
CREATE TABLE revocations (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'block', 'epoch')),
    scope TEXT,
    subject TEXT NOT NULL,
    epoch INTEGER,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE revocation_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);

-- Group vaults: the data key wrapped by a passphrase-derived key, or split into shares.
CREATE TABLE vaults (
    group_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL CHECK (mode IN ('passphrase', 'shamir')),
    kdf_params TEXT,
    wrapped_key BLOB,
    key_check BLOB NOT NULL,
    threshold INTEGER,
    generation INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE vault_shares (
    group_id TEXT NOT NULL REFERENCES vaults (group_id) ON DELETE CASCADE,
    admin_id TEXT NOT NULL,
    admin_public_key BLOB NOT NULL,
    sealed_share BLOB NOT NULL,
    PRIMARY KEY (group_id, admin_id)
);

-- Secret values and metadata, sealed under the vault's data key; the AAD binds group, path and
-- version so rows cannot be swapped.
CREATE TABLE secrets (
    group_id TEXT NOT NULL REFERENCES vaults (group_id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    sealed_value BLOB NOT NULL,
    sealed_metadata BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (group_id, path)
);
