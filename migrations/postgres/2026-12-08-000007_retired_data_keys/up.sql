-- The data keys an account had before its current one (`rotate --data-keys`
-- replaces an account's data key): a credential sealed under one of them still
-- opens while rotation re-encrypts it under the current key, and so does one that
-- a writer holding the old key in its cache seals after the replacement. Rotation
-- deletes a retired key once no credential is sealed under it and it has been
-- retired longer than the grace period (longer than any service caches a key).
--
-- One row per (account, version), with the same owner foreign key, cascade and
-- row-level security as account_keys. Idempotent.

CREATE TABLE IF NOT EXISTS retired_account_keys (
    account_id UUID NOT NULL,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    provider VARCHAR(32) NOT NULL,
    kek_id VARCHAR(255) NOT NULL,
    wrapped_key TEXT NOT NULL,
    retired_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (account_id, version),
    CONSTRAINT retired_account_keys_owner_matches_account_fkey
        FOREIGN KEY (account_id, user_id) REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_retired_account_keys_retired_at
    ON retired_account_keys (retired_at);

ALTER TABLE retired_account_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE retired_account_keys FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS retired_account_keys_select ON retired_account_keys;
CREATE POLICY retired_account_keys_select ON retired_account_keys
    FOR SELECT USING (user_id = current_user_id());
DROP POLICY IF EXISTS retired_account_keys_insert ON retired_account_keys;
CREATE POLICY retired_account_keys_insert ON retired_account_keys
    FOR INSERT WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS retired_account_keys_update ON retired_account_keys;
CREATE POLICY retired_account_keys_update ON retired_account_keys
    FOR UPDATE USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS retired_account_keys_delete ON retired_account_keys;
CREATE POLICY retired_account_keys_delete ON retired_account_keys
    FOR DELETE USING (user_id = current_user_id());
