-- Row-level security: a connection sees only the rows of the user named in the
-- transaction-local setting app.current_user_id. No setting, no rows.

CREATE OR REPLACE FUNCTION current_user_id() RETURNS TEXT
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.current_user_id', true), '') $$;

ALTER TABLE user_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE user_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_credentials FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS user_accounts_select ON user_accounts;
CREATE POLICY user_accounts_select ON user_accounts
    FOR SELECT USING (user_id = current_user_id());
DROP POLICY IF EXISTS user_accounts_insert ON user_accounts;
CREATE POLICY user_accounts_insert ON user_accounts
    FOR INSERT WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS user_accounts_update ON user_accounts;
CREATE POLICY user_accounts_update ON user_accounts
    FOR UPDATE USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS user_accounts_delete ON user_accounts;
CREATE POLICY user_accounts_delete ON user_accounts
    FOR DELETE USING (user_id = current_user_id());

DROP POLICY IF EXISTS user_credentials_select ON user_credentials;
CREATE POLICY user_credentials_select ON user_credentials
    FOR SELECT USING (user_id = current_user_id());
DROP POLICY IF EXISTS user_credentials_insert ON user_credentials;
CREATE POLICY user_credentials_insert ON user_credentials
    FOR INSERT WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS user_credentials_update ON user_credentials;
CREATE POLICY user_credentials_update ON user_credentials
    FOR UPDATE USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());
DROP POLICY IF EXISTS user_credentials_delete ON user_credentials;
CREATE POLICY user_credentials_delete ON user_credentials
    FOR DELETE USING (user_id = current_user_id());
