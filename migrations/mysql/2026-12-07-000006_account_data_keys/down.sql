DROP TABLE IF EXISTS account_keys;
