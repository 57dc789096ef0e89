DROP TABLE IF EXISTS retired_account_keys;
