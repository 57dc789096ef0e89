-- One data key (DEK) per account, wrapped by a key-encryption key (KEK) that a key
-- provider holds (the local keyring, or a KMS): credentials in the sealed format
-- v3 are encrypted under their account's data key. `provider` and `kek_id` say
-- which provider and KEK wrapped it; rotation re-wraps the data keys without
-- touching a credential. Deleting an account deletes its data key in the same
-- statement (the foreign key's ON DELETE CASCADE): its credentials, wherever a copy
-- of them survives, no longer decrypt (crypto-shredding).
--
-- The composite foreign key makes the data key's user its account's user, as for
-- credentials (migration 000005), and row-level security filters on user_id as on
-- the other tables. Idempotent.

CREATE TABLE IF NOT EXISTS account_keys (
    account_id UUID PRIMARY KEY,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    provider VARCHAR(32) NOT NULL,
    kek_id VARCHAR(255) NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT account_keys_owner_matches_account_fkey
        FOREIGN KEY (account_id, user_id) REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_account_keys_kek ON account_keys (provider, kek_id);

ALTER TABLE account_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_keys FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS account_keys_select ON account_keys;
CREATE POLICY account_keys_select ON account_keys
    FOR SELECT USING (user_id = current_user_id());
DROP POLICY IF EXISTS account_keys_insert ON account_keys;
CREATE POLICY account_keys_insert ON account_keys
    FOR INSERT WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS account_keys_update ON account_keys;
CREATE POLICY account_keys_update ON account_keys
    FOR UPDATE USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS account_keys_delete ON account_keys;
CREATE POLICY account_keys_delete ON account_keys
    FOR DELETE USING (user_id = current_user_id());
