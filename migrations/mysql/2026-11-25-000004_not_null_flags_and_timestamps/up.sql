-- The flags and timestamps were nullable in the existing system's schema, although
-- it always wrote them. Make them NOT NULL so that every reader can rely on them.
-- A NULL is_active never matched "is_active = TRUE" there: it becomes FALSE.
-- A missing timestamp becomes the other one, or now (UTC_TIMESTAMP: UTC whatever
-- the session's time zone).
--
-- Safe to re-run after a cut-off run: the repairs only touch NULLs, and MODIFY
-- COLUMN states the whole column definition, so repeating it changes nothing.

UPDATE user_accounts SET is_active = FALSE WHERE is_active IS NULL;
UPDATE user_accounts SET created_at = COALESCE(updated_at, UTC_TIMESTAMP(6)) WHERE created_at IS NULL;
UPDATE user_accounts SET updated_at = created_at WHERE updated_at IS NULL;
UPDATE user_credentials SET is_active = FALSE WHERE is_active IS NULL;
UPDATE user_credentials SET created_at = COALESCE(updated_at, UTC_TIMESTAMP(6)) WHERE created_at IS NULL;
UPDATE user_credentials SET updated_at = created_at WHERE updated_at IS NULL;

ALTER TABLE user_accounts
    MODIFY COLUMN is_active BOOLEAN NOT NULL DEFAULT TRUE,
    MODIFY COLUMN created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY COLUMN updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6);
ALTER TABLE user_credentials
    MODIFY COLUMN is_active BOOLEAN NOT NULL DEFAULT TRUE,
    MODIFY COLUMN created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY COLUMN updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6);
