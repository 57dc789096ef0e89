-- Makes the flags and timestamps nullable again, with the same defaults. The
-- repaired values stay. MODIFY COLUMN can be repeated after a cut-off run.
ALTER TABLE user_credentials
    MODIFY COLUMN is_active BOOLEAN NULL DEFAULT TRUE,
    MODIFY COLUMN created_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY COLUMN updated_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6);
ALTER TABLE user_accounts
    MODIFY COLUMN is_active BOOLEAN NULL DEFAULT TRUE,
    MODIFY COLUMN created_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY COLUMN updated_at DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6);
