-- MariaDB/MySQL have no row-level security. This migration keeps the version
-- history the same as PostgreSQL's; the crate scopes every query by account and
-- user itself, and the composite foreign key of migration 000005
-- (user_account_id, user_id) -> user_accounts (id, user_id) makes the database
-- refuse a credential whose user is not its account's user.
DO 0;
