-- Multiple credentials per (account, type), told apart by a nickname.
-- SQLite's ADD COLUMN has no IF NOT EXISTS; SQLite databases are only ever made by
-- this crate, whose bookkeeping runs each migration once.

DROP INDEX IF EXISTS idx_user_credentials_unique;

ALTER TABLE user_credentials ADD COLUMN nickname VARCHAR(255);

UPDATE user_credentials SET nickname = credential_type WHERE nickname IS NULL;

CREATE INDEX IF NOT EXISTS idx_user_credentials_nickname
    ON user_credentials(user_account_id, nickname);
