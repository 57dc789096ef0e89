-- One data key per account, wrapped by a key-encryption key (see the PostgreSQL
-- migration of the same name). The composite foreign key makes the data key's user
-- its account's user; ON DELETE CASCADE deletes it with its account.

CREATE TABLE IF NOT EXISTS account_keys (
    account_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    version INT NOT NULL DEFAULT 1,
    provider VARCHAR(32) NOT NULL,
    kek_id VARCHAR(255) NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (account_id),
    KEY idx_account_keys_owner (account_id, user_id),
    KEY idx_account_keys_kek (provider, kek_id),
    CONSTRAINT account_keys_version_positive CHECK (version >= 1),
    CONSTRAINT account_keys_owner_matches_account_fkey
        FOREIGN KEY (account_id, user_id) REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
