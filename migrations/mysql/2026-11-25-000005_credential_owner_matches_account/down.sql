-- Drops the composite foreign key with its index, then the key it pointed at (which
-- InnoDB refuses to drop while the foreign key uses it). Safe to re-run after a
-- cut-off run: every clause checks first.
ALTER TABLE user_credentials
    DROP FOREIGN KEY IF EXISTS user_credentials_owner_matches_account_fkey,
    DROP INDEX IF EXISTS idx_user_credentials_account_user;
ALTER TABLE user_accounts
    DROP INDEX IF EXISTS user_accounts_id_user_id_key;
