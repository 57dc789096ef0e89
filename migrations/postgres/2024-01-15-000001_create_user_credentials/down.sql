DROP TABLE IF EXISTS user_credentials;
DROP TABLE IF EXISTS user_accounts;
