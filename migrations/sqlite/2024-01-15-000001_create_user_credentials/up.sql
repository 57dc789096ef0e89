-- The same tables as on PostgreSQL, in portable types:
--   UUIDs are TEXT in lowercase hyphenated form (36 characters);
--   timestamps are TEXT in UTC, one fixed-width format, "YYYY-MM-DDTHH:MM:SS.ffffffZ",
--   so that text order is time order.
-- Flags and timestamps are NOT NULL from the start (PostgreSQL gets there in
-- migration 000004, after repairing what the existing system left NULL).

CREATE TABLE IF NOT EXISTS user_accounts (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL UNIQUE,
    account_name VARCHAR(255) NOT NULL,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);

CREATE TABLE IF NOT EXISTS user_credentials (
    id TEXT PRIMARY KEY NOT NULL,
    user_account_id TEXT NOT NULL REFERENCES user_accounts(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    credential_type VARCHAR(50) NOT NULL,
    api_key TEXT NOT NULL,
    secret_key TEXT NOT NULL,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    expires_at TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);

CREATE INDEX IF NOT EXISTS idx_user_accounts_user_id ON user_accounts(user_id);
CREATE INDEX IF NOT EXISTS idx_user_credentials_user_id ON user_credentials(user_id);
CREATE INDEX IF NOT EXISTS idx_user_credentials_account_id ON user_credentials(user_account_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_user_credentials_unique
    ON user_credentials(user_account_id, credential_type);
