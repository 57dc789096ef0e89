//! The tables, as diesel sees them on every backend.
//!
//! Written by hand rather than by `diesel print-schema`: the id and time columns use
//! the crate's portable SQL types ([`DbUuid`](crate::sql_types::DbUuid),
//! [`DbTimestamp`](crate::sql_types::DbTimestamp)), which are `UUID` and `TIMESTAMPTZ`
//! on PostgreSQL and `TEXT` on SQLite. Columns are listed in the design's order
//! (`nickname` after `credential_type`); the crate selects columns by name, so the
//! physical order in a database (where `ALTER TABLE … ADD COLUMN` put `nickname` last)
//! does not matter.
//!
//! Not covered by semver (hidden from the docs): a migration may change these
//! tables in any release.

diesel::table! {
    use diesel::sql_types::*;
    use crate::sql_types::{DbTimestamp, DbUuid};

    /// One account per external user.
    user_accounts (id) {
        /// Primary key.
        id -> DbUuid,
        /// The external identity (the auth provider's user id); unique.
        user_id -> Text,
        /// Display name.
        #[max_length = 255]
        account_name -> Varchar,
        /// Whether the account is in use.
        is_active -> Bool,
        /// When the account was created.
        created_at -> DbTimestamp,
        /// When the account last changed.
        updated_at -> DbTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::sql_types::{DbTimestamp, DbUuid};

    /// Named, encrypted API credentials; several per account.
    user_credentials (id) {
        /// Primary key.
        id -> DbUuid,
        /// The owning account.
        user_account_id -> DbUuid,
        /// Copy of the account's `user_id`, for row-level security without a join.
        user_id -> Text,
        /// `alpaca_paper`, `alpaca_live`, `polygon`, …
        #[max_length = 50]
        credential_type -> Varchar,
        /// User-facing label; not unique.
        #[max_length = 255]
        nickname -> Nullable<Varchar>,
        /// Ciphertext of the API key.
        api_key -> Text,
        /// Ciphertext of the secret key.
        secret_key -> Text,
        /// Whether the credential may be used.
        is_active -> Bool,
        /// When the credential stops being usable, if ever.
        expires_at -> Nullable<DbTimestamp>,
        /// When the credential was created.
        created_at -> DbTimestamp,
        /// When the credential last changed.
        updated_at -> DbTimestamp,
    }
}

diesel::joinable!(user_credentials -> user_accounts (user_account_id));

diesel::table! {
    use diesel::sql_types::*;
    use crate::sql_types::{DbTimestamp, DbUuid};

    /// One data key per account, wrapped by a key-encryption key.
    account_keys (account_id) {
        /// The account (primary key).
        account_id -> DbUuid,
        /// The account's `user_id`, for row-level security without a join.
        user_id -> Text,
        /// The data key's version: 1 for an account's first.
        version -> Integer,
        /// The key provider that wrapped it (`keyring`, `aws-kms`).
        #[max_length = 32]
        provider -> Varchar,
        /// The key-encryption key that wrapped it.
        #[max_length = 255]
        kek_id -> Varchar,
        /// The wrapped data key, as the provider wrote it.
        wrapped_key -> Text,
        /// When the data key was made.
        created_at -> DbTimestamp,
        /// When it was last re-wrapped.
        updated_at -> DbTimestamp,
    }
}

diesel::joinable!(account_keys -> user_accounts (account_id));

diesel::table! {
    use diesel::sql_types::*;
    use crate::sql_types::{DbTimestamp, DbUuid};

    /// The data keys an account had before its current one, kept while a
    /// credential may still be sealed under them.
    retired_account_keys (account_id, version) {
        /// The account.
        account_id -> DbUuid,
        /// The account's `user_id`, for row-level security without a join.
        user_id -> Text,
        /// The retired data key's version.
        version -> Integer,
        /// The key provider that wrapped it.
        #[max_length = 32]
        provider -> Varchar,
        /// The key-encryption key that wrapped it.
        #[max_length = 255]
        kek_id -> Varchar,
        /// The wrapped data key.
        wrapped_key -> Text,
        /// When a newer data key replaced it.
        retired_at -> DbTimestamp,
    }
}

diesel::joinable!(retired_account_keys -> user_accounts (account_id));
diesel::allow_tables_to_appear_in_same_query!(
    user_accounts,
    user_credentials,
    account_keys,
    retired_account_keys
);
