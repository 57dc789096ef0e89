-- A credential's user_id must be its account's user_id: the database refuses any
-- other row, whoever writes it. SQLite cannot add a composite foreign key to an
-- existing table without rebuilding it, so triggers do what PostgreSQL's
-- (user_account_id, user_id) -> user_accounts (id, user_id) foreign key does:
-- refuse an insert, or an update of user_account_id or user_id, that breaks the
-- rule, and carry a change of an account's user_id over to its credentials
-- (PostgreSQL's ON UPDATE CASCADE).
--
-- A credential whose account does not exist is left to the existing foreign key.

-- Existing rows that break the rule are not repaired here (which user they belong
-- to is a decision for a person): the migration refuses, and its transaction
-- changes nothing. RAISE exists only in triggers, hence the temporary table.
DROP TABLE IF EXISTS temp.credential_owner_check;
CREATE TEMP TABLE credential_owner_check (mismatched INTEGER NOT NULL);
CREATE TEMP TRIGGER credential_owner_check_refuses
BEFORE INSERT ON credential_owner_check
FOR EACH ROW
WHEN NEW.mismatched > 0
BEGIN
    SELECT RAISE(ABORT, 'cannot apply credential_owner_matches_account: credentials carry a user_id other than their account''s user_id; fix or delete them first');
END;
INSERT INTO credential_owner_check (mismatched)
    SELECT COUNT(*) FROM user_credentials c
    JOIN user_accounts a ON a.id = c.user_account_id
    WHERE c.user_id IS NOT a.user_id;
DROP TABLE temp.credential_owner_check;

CREATE TRIGGER IF NOT EXISTS user_credentials_owner_matches_account_insert
BEFORE INSERT ON user_credentials
FOR EACH ROW
WHEN EXISTS (
    SELECT 1 FROM user_accounts
    WHERE id = NEW.user_account_id AND user_id IS NOT NEW.user_id
)
BEGIN
    SELECT RAISE(ABORT, 'user_credentials.user_id must equal its account''s user_id');
END;

CREATE TRIGGER IF NOT EXISTS user_credentials_owner_matches_account_update
BEFORE UPDATE OF user_account_id, user_id ON user_credentials
FOR EACH ROW
WHEN EXISTS (
    SELECT 1 FROM user_accounts
    WHERE id = NEW.user_account_id AND user_id IS NOT NEW.user_id
)
BEGIN
    SELECT RAISE(ABORT, 'user_credentials.user_id must equal its account''s user_id');
END;

CREATE TRIGGER IF NOT EXISTS user_accounts_user_id_cascade
AFTER UPDATE OF user_id ON user_accounts
FOR EACH ROW
WHEN NEW.user_id IS NOT OLD.user_id
BEGIN
    UPDATE user_credentials SET user_id = NEW.user_id WHERE user_account_id = NEW.id;
END;
