-- Multiple credentials per (account, type), told apart by a nickname.
-- Safe to re-run after a cut-off run: the one ALTER TABLE is atomic and each of its
-- clauses checks before it changes anything; the backfill only touches NULLs.
-- idx_user_credentials_account_id still serves the account foreign key once the
-- unique index is gone.

ALTER TABLE user_credentials
    DROP INDEX IF EXISTS idx_user_credentials_unique,
    ADD COLUMN IF NOT EXISTS nickname VARCHAR(255) NULL,
    ADD INDEX IF NOT EXISTS idx_user_credentials_nickname (user_account_id, nickname);

UPDATE user_credentials SET nickname = credential_type WHERE nickname IS NULL;
