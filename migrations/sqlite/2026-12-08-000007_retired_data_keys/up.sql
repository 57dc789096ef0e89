-- The data keys an account had before its current one (see the PostgreSQL
-- migration of the same name): one row per (account, version), deleted with its
-- account (the crate's connections turn foreign keys on).

CREATE TABLE IF NOT EXISTS retired_account_keys (
    account_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    provider VARCHAR(32) NOT NULL,
    kek_id VARCHAR(255) NOT NULL,
    wrapped_key TEXT NOT NULL,
    retired_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (account_id, version),
    FOREIGN KEY (account_id, user_id) REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_retired_account_keys_retired_at
    ON retired_account_keys (retired_at);
