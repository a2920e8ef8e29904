-- People, their one-time sign-in requests and their sessions. Every token, code and poll
-- secret is stored only as a hash: SHA-256 for 32-byte random tokens, HMAC-SHA256 under
-- MANAGEMENT_SECRET_KEY for the short codes (a plain hash of 40 bits could be reversed).
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'responder', 'auditor', 'member')),
    created_at_ms BIGINT NOT NULL,
    disabled_at_ms BIGINT
);

-- One row per sign-in request, whether or not the address has an account (user_id NULL then),
-- so both answers cost the same work.
CREATE TABLE login_requests (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('login', 'invite')),
    client TEXT NOT NULL CHECK (client IN ('browser', 'app')),
    token_hash BYTEA NOT NULL UNIQUE,
    code_hash BYTEA NOT NULL,
    poll_hash BYTEA NOT NULL,
    code_attempts BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    confirmed_at_ms BIGINT,
    consumed_at_ms BIGINT
);
CREATE INDEX login_requests_expiry ON login_requests (expires_at_ms);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('cookie', 'bearer')),
    created_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id, created_at_ms);
