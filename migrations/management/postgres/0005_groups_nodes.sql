-- Groups, their members, nodes and one-time enrollment codes. A group's node_ceiling is the
-- highest secret operation a node enrolled into it gets without an approval; a node's own
-- ceiling can only be set at or below it (or above it by an admin). Enrollment codes are
-- stored only as SHA-256 of the 32-byte code.
CREATE TABLE node_groups (
    id TEXT PRIMARY KEY,
    node_ceiling TEXT NOT NULL CHECK (node_ceiling IN ('read', 'list', 'write', 'delete', 'admin', 'share')),
    created_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES node_groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE enrollment_codes (
    id TEXT PRIMARY KEY,
    code_hash BYTEA NOT NULL UNIQUE,
    group_id TEXT NOT NULL REFERENCES node_groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ceiling TEXT NOT NULL CHECK (ceiling IN ('read', 'list', 'write', 'delete', 'admin', 'share')),
    rights TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    node_id TEXT
);
CREATE INDEX enrollment_codes_expiry ON enrollment_codes (expires_at_ms);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES node_groups (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    public_key BYTEA NOT NULL,
    ceiling TEXT NOT NULL CHECK (ceiling IN ('read', 'list', 'write', 'delete', 'admin', 'share')),
    enrolled_at_ms BIGINT NOT NULL,
    disabled_at_ms BIGINT
);
CREATE INDEX nodes_group ON nodes (group_id);
CREATE INDEX nodes_user ON nodes (user_id);
