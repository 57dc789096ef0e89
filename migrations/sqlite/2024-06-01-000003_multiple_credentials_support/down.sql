-- Restores "one credential per (account, type)". When two credentials of one account
-- share a type, CREATE UNIQUE INDEX fails first and the migration's transaction
-- rolls back, changing nothing.
CREATE UNIQUE INDEX idx_user_credentials_unique
    ON user_credentials(user_account_id, credential_type);
DROP INDEX IF EXISTS idx_user_credentials_nickname;
ALTER TABLE user_credentials DROP COLUMN nickname;
