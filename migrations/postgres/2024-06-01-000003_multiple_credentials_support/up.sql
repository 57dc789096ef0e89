-- Multiple credentials per (account, type), told apart by a nickname.
-- Safe to re-run: every step checks before it changes anything.

DROP INDEX IF EXISTS idx_user_credentials_unique;

ALTER TABLE user_credentials ADD COLUMN IF NOT EXISTS nickname VARCHAR(255);

-- Row-level security is forced on this table, which would hide every row from a
-- migrating role that owns the table but does not bypass RLS: the backfill would
-- silently change nothing. The owner lifts FORCE for this transaction only.
ALTER TABLE user_credentials NO FORCE ROW LEVEL SECURITY;
UPDATE user_credentials SET nickname = credential_type WHERE nickname IS NULL;
ALTER TABLE user_credentials FORCE ROW LEVEL SECURITY;

CREATE INDEX IF NOT EXISTS idx_user_credentials_nickname
    ON user_credentials(user_account_id, nickname);
