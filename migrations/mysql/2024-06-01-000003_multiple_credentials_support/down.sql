-- Restores "one credential per (account, type)". Refuses, changing nothing, when two
-- credentials of one account share a type: the unique index could not hold them.
-- The check comes first; the one ALTER TABLE after it is atomic (were the check
-- skipped, the unique index would fail with a duplicate-key error and the ALTER
-- change nothing either). Safe to re-run: every clause checks first.

SET @credential_store_conflicts = (
    SELECT COUNT(*) FROM (
        SELECT 1 FROM user_credentials
        GROUP BY user_account_id, credential_type
        HAVING COUNT(*) > 1
    ) AS duplicated
);
EXECUTE IMMEDIATE IF(@credential_store_conflicts > 0,
    CONCAT('SIGNAL SQLSTATE ''45000'' SET MESSAGE_TEXT = ''cannot revert multiple_credentials_support: ',
           @credential_store_conflicts,
           ' (account, credential_type) pair(s) hold more than one credential; delete or merge them first'''),
    'DO 0');
SET @credential_store_conflicts = NULL;

ALTER TABLE user_credentials
    ADD UNIQUE INDEX IF NOT EXISTS idx_user_credentials_unique (user_account_id, credential_type),
    DROP INDEX IF EXISTS idx_user_credentials_nickname,
    DROP COLUMN IF EXISTS nickname;
