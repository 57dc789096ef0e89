-- The flags and timestamps were nullable in the existing system's schema, although
-- it always wrote them. Make them NOT NULL so that every reader can rely on them.
-- A NULL is_active never matched "is_active = TRUE" there: it becomes FALSE.
-- A missing timestamp becomes the other one, or now.

ALTER TABLE user_accounts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE user_credentials NO FORCE ROW LEVEL SECURITY;

UPDATE user_accounts SET is_active = FALSE WHERE is_active IS NULL;
UPDATE user_accounts SET created_at = COALESCE(updated_at, NOW()) WHERE created_at IS NULL;
UPDATE user_accounts SET updated_at = created_at WHERE updated_at IS NULL;
UPDATE user_credentials SET is_active = FALSE WHERE is_active IS NULL;
UPDATE user_credentials SET created_at = COALESCE(updated_at, NOW()) WHERE created_at IS NULL;
UPDATE user_credentials SET updated_at = created_at WHERE updated_at IS NULL;

ALTER TABLE user_accounts
    ALTER COLUMN is_active SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET NOT NULL;
ALTER TABLE user_credentials
    ALTER COLUMN is_active SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET NOT NULL;

ALTER TABLE user_accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE user_credentials FORCE ROW LEVEL SECURITY;
