-- One data key per account, wrapped by a key-encryption key (see the PostgreSQL
-- migration of the same name). The composite foreign key makes the data key's user
-- its account's user; ON DELETE CASCADE deletes it with its account (the crate's
-- connections turn foreign keys on).

CREATE UNIQUE INDEX IF NOT EXISTS idx_user_accounts_id_user_id ON user_accounts (id, user_id);

CREATE TABLE IF NOT EXISTS account_keys (
    account_id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    provider VARCHAR(32) NOT NULL,
    kek_id VARCHAR(255) NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    FOREIGN KEY (account_id, user_id) REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_account_keys_kek ON account_keys (provider, kek_id);
