DROP TABLE IF EXISTS account_keys;
DROP INDEX IF EXISTS idx_user_accounts_id_user_id;
