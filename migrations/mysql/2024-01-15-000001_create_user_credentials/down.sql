-- Drops both tables, the credentials first (their foreign key points at the
-- accounts). Each statement can be repeated after a cut-off run.
DROP TABLE IF EXISTS user_credentials;
DROP TABLE IF EXISTS user_accounts;
