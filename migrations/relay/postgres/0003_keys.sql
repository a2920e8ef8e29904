-- Node encryption keys: an X25519 public key per version, signed by the node's Ed25519
-- identity key (the one its token names). Public material only. A rotated-out version keeps
-- working for RELAY_KEY_GRACE_SECS after retired_ms.
CREATE TABLE relay_keys (
    node TEXT NOT NULL,
    version BIGINT NOT NULL,
    group_id TEXT NOT NULL,
    identity_key BYTEA NOT NULL,
    enc_key BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    retired_ms BIGINT,
    PRIMARY KEY (node, version)
);
