-- Restores "one credential per (account, type)". Refuses, changing nothing, when two
-- credentials of one account share a type: the unique index could not hold them.
ALTER TABLE user_credentials NO FORCE ROW LEVEL SECURITY;
DO $$
DECLARE
    conflicts BIGINT;
BEGIN
    SELECT COUNT(*) INTO conflicts FROM (
        SELECT 1 FROM user_credentials
        GROUP BY user_account_id, credential_type
        HAVING COUNT(*) > 1
    ) AS duplicated;
    IF conflicts > 0 THEN
        RAISE EXCEPTION 'cannot revert multiple_credentials_support: % (account, credential_type) pair(s) hold more than one credential; delete or merge them first', conflicts;
    END IF;
END
$$;
ALTER TABLE user_credentials FORCE ROW LEVEL SECURITY;
DROP INDEX IF EXISTS idx_user_credentials_nickname;
ALTER TABLE user_credentials DROP COLUMN IF EXISTS nickname;
CREATE UNIQUE INDEX IF NOT EXISTS idx_user_credentials_unique
    ON user_credentials(user_account_id, credential_type);
