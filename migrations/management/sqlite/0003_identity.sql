-- People, their one-time sign-in requests and their sessions. Every token, code and poll
-- secret is stored only as a hash: SHA-256 for 32-byte random tokens, HMAC-SHA256 under
-- MANAGEMENT_SECRET_KEY for the short codes (a plain hash of 40 bits could be reversed).
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'responder', 'auditor', 'member')),
    created_at_ms INTEGER NOT NULL,
    disabled_at_ms INTEGER
);

-- One row per sign-in request, whether or not the address has an account (user_id NULL then),
-- so both answers cost the same work.
CREATE TABLE login_requests (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('login', 'invite')),
    client TEXT NOT NULL CHECK (client IN ('browser', 'app')),
    token_hash BLOB NOT NULL UNIQUE,
    code_hash BLOB NOT NULL,
    poll_hash BLOB NOT NULL,
    code_attempts INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    confirmed_at_ms INTEGER,
    consumed_at_ms INTEGER
);
CREATE INDEX login_requests_expiry ON login_requests (expires_at_ms);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('cookie', 'bearer')),
    created_at_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id, created_at_ms);
