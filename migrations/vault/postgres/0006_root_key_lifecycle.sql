-- Root keys are announced before they sign and can be revoked at once (decision 0014).
-- activates_at_ms: signs from then (NULL: from created_at_ms); revoked_at_ms: verifies nothing.
ALTER TABLE token_keys ADD COLUMN activates_at_ms BIGINT;
ALTER TABLE token_keys ADD COLUMN revoked_at_ms BIGINT;

-- The feed also carries root key changes, so every follower reads the keys again at once:
-- 'root_key' (revoked) and 'root_key_added' (announced).
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('grant', 'block', 'epoch', 'root_key', 'root_key_added'));
