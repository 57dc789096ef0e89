-- The data keys an account had before its current one (see the PostgreSQL
-- migration of the same name): one row per (account, version), deleted with its
-- account.

CREATE TABLE IF NOT EXISTS retired_account_keys (
    account_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    version INT NOT NULL,
    provider VARCHAR(32) NOT NULL,
    kek_id VARCHAR(255) NOT NULL,
    wrapped_key TEXT NOT NULL,
    retired_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (account_id, version),
    KEY idx_retired_account_keys_owner (account_id, user_id),
    KEY idx_retired_account_keys_retired_at (retired_at),
    CONSTRAINT retired_account_keys_version_positive CHECK (version >= 1),
    CONSTRAINT retired_account_keys_owner_matches_account_fkey
        FOREIGN KEY (account_id, user_id) REFERENCES user_accounts (id, user_id)
        ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
