ALTER TABLE user_credentials
    DROP CONSTRAINT IF EXISTS user_credentials_owner_matches_account_fkey;
ALTER TABLE user_accounts
    DROP CONSTRAINT IF EXISTS user_accounts_id_user_id_key;
