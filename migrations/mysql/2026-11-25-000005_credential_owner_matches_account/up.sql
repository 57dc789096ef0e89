-- A credential's user_id must be its account's user_id: the database refuses any
-- other row, whoever writes it and whatever the crate checks. MariaDB has no
-- row-level security, so the crate's filters are all that scope a query; without
-- this a credential could be written under another user's account id (or moved
-- there) with its own user_id, and the single-column foreign key would accept it.
--
-- A composite foreign key (user_account_id, user_id) -> user_accounts (id, user_id)
-- does it. ON UPDATE CASCADE keeps the copy in step when an account's user_id
-- changes; ON DELETE CASCADE as the existing foreign key does. InnoDB needs an
-- index on each side: the UNIQUE (id, user_id) key on user_accounts (id alone is
-- already unique) and idx_user_credentials_account_user, named here so that the
-- down migration can drop it (InnoDB would otherwise create one named after the
-- constraint and leave it behind when the constraint is dropped).
--
-- Safe to re-run after a cut-off run: the check only reads, and every clause of
-- the ALTER TABLE statements checks before it changes anything.

-- Existing rows that break the rule are not repaired here (which user they belong
-- to is a decision for a person): the migration refuses, naming how many, before
-- it changes anything. (ADD FOREIGN KEY would refuse them too, with a bare
-- "foreign key constraint fails", and only after the unique key had been added.)
SET @credential_store_mismatched = (
    SELECT COUNT(*)
    FROM user_credentials c
    JOIN user_accounts a ON a.id = c.user_account_id
    WHERE c.user_id <> a.user_id
);
EXECUTE IMMEDIATE IF(@credential_store_mismatched > 0,
    CONCAT('SIGNAL SQLSTATE ''45000'' SET MESSAGE_TEXT = ''cannot apply credential_owner_matches_account: ',
           @credential_store_mismatched,
           ' credential(s) carry a user_id other than the user_id of their account; fix or delete them first'''),
    'DO 0');
SET @credential_store_mismatched = NULL;

-- The composite key the foreign key points at.
ALTER TABLE user_accounts
    ADD UNIQUE KEY IF NOT EXISTS user_accounts_id_user_id_key (id, user_id);

ALTER TABLE user_credentials
    ADD INDEX IF NOT EXISTS idx_user_credentials_account_user (user_account_id, user_id),
    ADD CONSTRAINT user_credentials_owner_matches_account_fkey
        FOREIGN KEY IF NOT EXISTS (user_account_id, user_id)
        REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE;
