-- The same tables as on PostgreSQL, in MariaDB types. MariaDB 10.6 or later (atomic
-- DDL); these migrations use MariaDB-only syntax (IF [NOT] EXISTS on columns,
-- indexes and foreign keys, EXECUTE IMMEDIATE, utf8mb4_nopad_bin) that MySQL rejects.
--   UUIDs are CHAR(36) ASCII in lowercase hyphenated form, written by the crate;
--   timestamps are DATETIME(6) in UTC (the crate's connections set time_zone
--   '+00:00', which the CURRENT_TIMESTAMP(6) defaults rely on);
--   text compares byte for byte, as on PostgreSQL: utf8mb4_nopad_bin is case- and
--   accent-sensitive like utf8mb4_bin and, unlike it, not PAD SPACE, so 'ada' and
--   'ada ' are two user ids (under utf8mb4_bin they would be equal, and one user
--   could read the other's credentials).
-- Flags and timestamps are nullable as in the existing system's schema; migration
-- 000004 makes them NOT NULL, as on PostgreSQL.
--
-- MariaDB commits each DDL statement on its own, so a run cut off after any
-- statement leaves the earlier ones applied and the next run repeats the whole
-- file: every statement is written to be repeated. Each table is created with its
-- indexes and foreign key in one (atomic) statement.

CREATE TABLE IF NOT EXISTS user_accounts (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    account_name VARCHAR(255) NOT NULL,
    is_active BOOLEAN NULL DEFAULT TRUE,
    created_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    UNIQUE KEY user_accounts_user_id_key (user_id),
    KEY idx_user_accounts_user_id (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS user_credentials (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_account_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    credential_type VARCHAR(50) NOT NULL,
    api_key TEXT NOT NULL,
    secret_key TEXT NOT NULL,
    is_active BOOLEAN NULL DEFAULT TRUE,
    expires_at DATETIME(6) NULL,
    created_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY idx_user_credentials_user_id (user_id),
    KEY idx_user_credentials_account_id (user_account_id),
    CONSTRAINT user_credentials_user_account_id_fkey
        FOREIGN KEY (user_account_id) REFERENCES user_accounts (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

-- The old "one credential per type" rule. A database that already went through the
-- multiple-credentials migration (it has the nickname column) must not get it back:
-- it may hold two credentials of one type under one account. Plain SQL has no IF,
-- so the statement to run is chosen by EXECUTE IMMEDIATE (which takes no subquery,
-- hence the session variable, cleared afterwards).
SET @credential_store_has_nickname = (
    SELECT COUNT(*) FROM information_schema.columns
    WHERE table_schema = DATABASE()
      AND table_name = 'user_credentials'
      AND column_name = 'nickname'
);
EXECUTE IMMEDIATE IF(@credential_store_has_nickname = 0,
    'CREATE UNIQUE INDEX IF NOT EXISTS idx_user_credentials_unique ON user_credentials (user_account_id, credential_type)',
    'DO 0');
SET @credential_store_has_nickname = NULL;
