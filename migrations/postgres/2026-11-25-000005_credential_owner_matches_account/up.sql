-- A credential's user_id must be its account's user_id: the database refuses any
-- other row, whoever writes it and whatever the crate checks. Row-level security
-- filters on user_credentials.user_id alone, so without this a user could insert a
-- credential under another user's account id (or move one of theirs there) with
-- their own user_id, and the single-column foreign key would accept it.
--
-- A composite foreign key (user_account_id, user_id) -> user_accounts (id, user_id)
-- does it. Foreign-key checks bypass row-level security, so the refusal holds for a
-- role that RLS applies to as well. ON UPDATE CASCADE keeps the copy in step when an
-- account's user_id changes; ON DELETE CASCADE as the existing foreign key does.
--
-- Idempotent: every step checks pg_constraint first, so it also runs again on a
-- database that has it without diesel's bookkeeping table.

-- The composite key the foreign key points at (id alone is already unique).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'user_accounts'::regclass
          AND conname = 'user_accounts_id_user_id_key'
    ) THEN
        ALTER TABLE user_accounts
            ADD CONSTRAINT user_accounts_id_user_id_key UNIQUE (id, user_id);
    END IF;
END
$$;

-- Row-level security is forced on both tables, which would hide every row from a
-- migrating owner that does not bypass RLS: the check below would count nothing,
-- and so would ADD FOREIGN KEY's own validation of the existing rows, which runs as
-- the current role (measured on PostgreSQL 15: under FORCE it accepts violating
-- rows and marks the constraint valid). The owner lifts FORCE for this transaction
-- only.
ALTER TABLE user_accounts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE user_credentials NO FORCE ROW LEVEL SECURITY;

-- Existing rows that break the rule are not repaired here (which user they belong
-- to is a decision for a person): the migration refuses, naming how many, and its
-- transaction changes nothing.
DO $$
DECLARE
    mismatched BIGINT;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'user_credentials'::regclass
          AND conname = 'user_credentials_owner_matches_account_fkey'
    ) THEN
        SELECT COUNT(*) INTO mismatched
        FROM user_credentials c
        JOIN user_accounts a ON a.id = c.user_account_id
        WHERE c.user_id <> a.user_id;
        IF mismatched > 0 THEN
            RAISE EXCEPTION 'cannot apply credential_owner_matches_account: % credential(s) carry a user_id other than their account''s user_id; fix or delete them first', mismatched
                USING HINT = 'SELECT c.id, c.user_id, a.user_id FROM user_credentials c JOIN user_accounts a ON a.id = c.user_account_id WHERE c.user_id <> a.user_id';
        END IF;
        ALTER TABLE user_credentials
            ADD CONSTRAINT user_credentials_owner_matches_account_fkey
            FOREIGN KEY (user_account_id, user_id)
            REFERENCES user_accounts (id, user_id)
            ON DELETE CASCADE ON UPDATE CASCADE;
    END IF;
END
$$;

ALTER TABLE user_accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE user_credentials FORCE ROW LEVEL SECURITY;
