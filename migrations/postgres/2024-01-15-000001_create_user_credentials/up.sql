-- The existing system's starting point: one credential per (account, type).
-- Idempotent, so it also runs on a database that the existing system created
-- without diesel's bookkeeping table.

CREATE TABLE IF NOT EXISTS user_accounts (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id TEXT NOT NULL UNIQUE,
    account_name VARCHAR(255) NOT NULL,
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS user_credentials (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_account_id UUID NOT NULL REFERENCES user_accounts(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    credential_type VARCHAR(50) NOT NULL,
    api_key TEXT NOT NULL,
    secret_key TEXT NOT NULL,
    is_active BOOLEAN DEFAULT TRUE,
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_user_accounts_user_id ON user_accounts(user_id);
CREATE INDEX IF NOT EXISTS idx_user_credentials_user_id ON user_credentials(user_id);
CREATE INDEX IF NOT EXISTS idx_user_credentials_account_id ON user_credentials(user_account_id);

-- The old "one credential per type" rule. A database that already went through the
-- multiple-credentials migration (it has the nickname column) must not get it back:
-- it may hold two credentials of one type under one account.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema()
          AND table_name = 'user_credentials'
          AND column_name = 'nickname'
    ) THEN
        CREATE UNIQUE INDEX IF NOT EXISTS idx_user_credentials_unique
            ON user_credentials(user_account_id, credential_type);
    END IF;
END
$$;
