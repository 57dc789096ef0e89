//! Accounts and credentials as the crate hands them out and takes them in.
//!
//! The read models ([`UserAccount`], [`UserCredential`]) carry no key material: the
//! ciphertext columns are never mapped into a `Serialize` type. Decrypted keys come
//! only from [`CredentialRepository::keys`](crate::CredentialRepository::keys).

use crate::schema::{user_accounts, user_credentials};
use crate::sql_types::{SqlTime, SqlUuid};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// An account: one per external user, as the store hands it out.
///
/// Obtainable only from the store ([`create_account`](crate::CredentialRepository::create_account),
/// [`account`](crate::CredentialRepository::account), …): its fields are read through
/// getters, and it cannot be deserialized, so a value from a client's input can
/// never act as one. It serializes (for output) without anything secret. Every
/// per-user call takes its [`AccountScope`] (`&account` works where a scope is
/// asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserAccount {
    #[serde(flatten)]
    pub(crate) scope: AccountScope,
    pub(crate) account_name: String,
    pub(crate) is_active: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl UserAccount {
    /// Primary key.
    pub fn id(&self) -> Uuid {
        self.scope.id
    }
    /// The external identity (the auth provider's user id).
    pub fn user_id(&self) -> &str {
        &self.scope.user_id
    }
    /// Display name.
    pub fn account_name(&self) -> &str {
        &self.account_name
    }
    /// Whether the account is in use.
    pub fn is_active(&self) -> bool {
        self.is_active
    }
    /// When the account was created (UTC).
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// When the account last changed (UTC).
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// The scope of per-user calls on this account.
    pub fn scope(&self) -> &AccountScope {
        &self.scope
    }
}

impl AsRef<AccountScope> for UserAccount {
    fn as_ref(&self) -> &AccountScope {
        &self.scope
    }
}

/// The columns of an account, in the order [`UserAccount`] is built from.
type AccountSelection = (
    user_accounts::id,
    user_accounts::user_id,
    user_accounts::account_name,
    user_accounts::is_active,
    user_accounts::created_at,
    user_accounts::updated_at,
);

impl<DB: diesel::backend::Backend> Selectable<DB> for UserAccount {
    type SelectExpression = AccountSelection;
    fn construct_selection() -> Self::SelectExpression {
        (
            user_accounts::id,
            user_accounts::user_id,
            user_accounts::account_name,
            user_accounts::is_active,
            user_accounts::created_at,
            user_accounts::updated_at,
        )
    }
}

impl<ST, DB> Queryable<ST, DB> for UserAccount
where
    DB: diesel::backend::Backend,
    (Uuid, String, String, bool, DateTime<Utc>, DateTime<Utc>):
        diesel::deserialize::FromStaticSqlRow<ST, DB>,
{
    type Row = (Uuid, String, String, bool, DateTime<Utc>, DateTime<Utc>);
    fn build(row: Self::Row) -> diesel::deserialize::Result<Self> {
        let (id, user_id, account_name, is_active, created_at, updated_at) = row;
        Ok(UserAccount {
            scope: AccountScope { id, user_id },
            account_name,
            is_active,
            created_at,
            updated_at,
        })
    }
}

/// Who a per-user call acts for: one account of one user. Every statement of the
/// call is filtered by both (and on PostgreSQL the user becomes the
/// row-level-security context), so a scope reaches that account's rows only when
/// the account belongs to that user.
///
/// A service builds one per request **from the user id its authentication
/// established** (a verified token's subject, a session), never from the request's
/// body, path or query, plus the account id the request names: no lookup is needed.
/// A scope whose account belongs to another user finds nothing (and writes are
/// refused as [`UnknownAccount`](crate::Error::UnknownAccount)). A [`UserAccount`]
/// from the store carries its scope, so `&account` works wherever a scope is asked
/// for. Neither can be deserialized.
///
/// ```
/// use credential_store::AccountScope;
/// let scope = AccountScope::new("auth0|42", uuid::Uuid::nil()).unwrap();
/// assert_eq!(scope.user_id(), "auth0|42");
/// assert!(AccountScope::new("", uuid::Uuid::nil()).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AccountScope {
    #[serde(rename = "id")]
    pub(crate) id: Uuid,
    pub(crate) user_id: String,
}

impl AccountScope {
    /// The scope of account `account_id` for `user_id`, the user id the caller's
    /// authentication established. The user id is checked as stored ones are
    /// (1 to 255 characters, no control characters).
    pub fn new(user_id: &str, account_id: Uuid) -> crate::Result<Self> {
        Ok(AccountScope {
            id: account_id,
            user_id: crate::validation::user_id(user_id)?.to_owned(),
        })
    }
    /// The account's id.
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The account's user.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl AsRef<AccountScope> for AccountScope {
    fn as_ref(&self) -> &AccountScope {
        self
    }
}

/// A new account.
///
/// `account_name` is trimmed and NFC-normalised, 1 to 255 characters; `user_id` is
/// kept exactly as given, 1 to 255 characters; neither may hold control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewUserAccount<'a> {
    /// The external identity; unique across accounts.
    pub user_id: &'a str,
    /// Display name.
    pub account_name: &'a str,
}

impl<'a> NewUserAccount<'a> {
    /// A new account of `user_id` (the external identity) named `account_name`.
    pub fn new(user_id: &'a str, account_name: &'a str) -> Self {
        NewUserAccount {
            user_id,
            account_name,
        }
    }
}

/// A stored credential, without its keys. Read-only: built by the store.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[non_exhaustive]
#[diesel(table_name = user_credentials)]
pub struct UserCredential {
    /// Primary key.
    pub id: Uuid,
    /// The owning account.
    pub user_account_id: Uuid,
    /// The owning account's external user id.
    pub user_id: String,
    /// `alpaca_paper`, `alpaca_live`, `polygon`, …
    pub credential_type: String,
    /// User-facing label. Not unique. `None` only on rows written before the
    /// multiple-credentials migration and not yet backfilled, or cleared on purpose.
    pub nickname: Option<String>,
    /// Whether the credential may be used.
    pub is_active: bool,
    /// When the credential stops being usable (UTC), if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the credential was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When the credential last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

impl UserCredential {
    /// Whether the credential may be used at `now`: active and not expired.
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.is_active && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A credential to store. The keys are plaintext here and encrypted before they
/// reach the database.
///
/// ```
/// use credential_store::NewUserCredential;
/// let new = NewUserCredential::new("alpaca_paper", "PKABCDEF1234", "s3cr3t")
///     .nickname("Momentum bot");
/// assert!(format!("{new:?}").contains("[REDACTED]"));
/// assert!(!format!("{new:?}").contains("s3cr3t"));
/// ```
pub struct NewUserCredential<'a> {
    /// `alpaca_paper`, `alpaca_live`, … (1 to 50 of `[a-z0-9_.-]`).
    pub credential_type: &'a str,
    /// The label; `None` or blank stores `credential_type` as the nickname.
    pub nickname: Option<&'a str>,
    /// The API key, in plaintext (1 to 4096 bytes).
    pub api_key: SecretString,
    /// The secret key, in plaintext (1 to 4096 bytes).
    pub secret_key: SecretString,
    /// Whether the credential may be used; `true` by default.
    pub is_active: bool,
    /// When the credential stops being usable, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// The id the caller chose ([`with_id`](Self::with_id)); a new UUIDv7 otherwise.
    id: Option<Uuid>,
}

impl<'a> NewUserCredential<'a> {
    /// An active, non-expiring credential with no nickname.
    pub fn new(
        credential_type: &'a str,
        api_key: impl Into<SecretString>,
        secret_key: impl Into<SecretString>,
    ) -> Self {
        NewUserCredential {
            credential_type,
            nickname: None,
            api_key: api_key.into(),
            secret_key: secret_key.into(),
            is_active: true,
            expires_at: None,
            id: None,
        }
    }

    /// Stores the credential under an id the caller chose (a UUID, ideally v7 for
    /// index locality), which makes the insert **idempotent on it**: inserting again
    /// with the same id and the same content (type, nickname, keys, `is_active`,
    /// `expires_at`) returns the stored credential instead of a second one, and the
    /// same id with other content, or an id taken in another account, is
    /// [`Error::CredentialIdConflict`](crate::Error::CredentialIdConflict), changing
    /// nothing. A write whose outcome is unknown (a timeout, a lost connection, a
    /// cancelled async call whose `COMMIT` may have reached the server) can so be
    /// retried safely. In a batch, every credential needs its own id for a retry to
    /// be recognised.
    ///
    /// ```
    /// use credential_store::NewUserCredential;
    /// let id = uuid::Uuid::now_v7();
    /// let new = NewUserCredential::new("alpaca_paper", "PK1", "s1").with_id(id);
    /// assert_eq!(new.id(), Some(id));
    /// ```
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// The caller-chosen id, if any ([`with_id`](Self::with_id)).
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// Sets the nickname.
    #[must_use]
    pub fn nickname(mut self, nickname: &'a str) -> Self {
        self.nickname = Some(nickname);
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets whether the credential is active.
    #[must_use]
    pub fn active(mut self, is_active: bool) -> Self {
        self.is_active = is_active;
        self
    }
}

impl fmt::Debug for NewUserCredential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUserCredential")
            .field("credential_type", &self.credential_type)
            .field("nickname", &self.nickname)
            .field("api_key", &format_args!("[REDACTED]"))
            .field("secret_key", &format_args!("[REDACTED]"))
            .field("is_active", &self.is_active)
            .field("expires_at", &self.expires_at)
            .field("id", &self.id)
            .finish()
    }
}

/// What to do with one field in an update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Set it to this value.
    Set(T),
    /// Set it to NULL.
    Clear,
}

impl<T> Patch<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Set(value) => Patch::Set(f(value)),
            Patch::Clear => Patch::Clear,
        }
    }

    /// The diesel changeset form: `None` keeps, `Some(None)` clears.
    pub(crate) fn into_change(self) -> Option<Option<T>> {
        match self {
            Patch::Keep => None,
            Patch::Set(value) => Some(Some(value)),
            Patch::Clear => Some(None),
        }
    }
}

/// Changes to a credential. Every field defaults to "keep".
///
/// A nickname that is set follows the nickname rules (trimmed, NFC, 1 to 255
/// characters, no control characters); [`Patch::Clear`] stores NULL, which the
/// nickname lookups do not match and [`backfill_nicknames`] later sets to the type.
/// New keys are encrypted with the keyring's primary key.
///
/// [`backfill_nicknames`]: crate::Maintenance::backfill_nicknames
///
/// ```
/// use credential_store::{CredentialUpdate, Patch};
/// let update = CredentialUpdate::default().nickname("Swing").active(false);
/// assert_eq!(update.nickname, Patch::Set("Swing".into()));
/// let rotate_keys = CredentialUpdate::default().keys("PKNEW", "new-secret");
/// assert!(!format!("{rotate_keys:?}").contains("new-secret"));
/// ```
#[derive(Default)]
#[non_exhaustive]
pub struct CredentialUpdate {
    /// New nickname, or NULL.
    pub nickname: Patch<String>,
    /// New API key, in plaintext.
    pub api_key: Option<SecretString>,
    /// New secret key, in plaintext.
    pub secret_key: Option<SecretString>,
    /// Switch the credential on or off.
    pub is_active: Option<bool>,
    /// New expiry, or none.
    pub expires_at: Patch<DateTime<Utc>>,
}

impl CredentialUpdate {
    /// Sets a new nickname.
    #[must_use]
    pub fn nickname(mut self, nickname: impl Into<String>) -> Self {
        self.nickname = Patch::Set(nickname.into());
        self
    }

    /// Stores NULL as the nickname.
    #[must_use]
    pub fn clear_nickname(mut self) -> Self {
        self.nickname = Patch::Clear;
        self
    }

    /// Switches the credential on or off.
    #[must_use]
    pub fn active(mut self, is_active: bool) -> Self {
        self.is_active = Some(is_active);
        self
    }

    /// Sets a new expiry.
    #[must_use]
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Patch::Set(at);
        self
    }

    /// Removes the expiry.
    #[must_use]
    pub fn clear_expiry(mut self) -> Self {
        self.expires_at = Patch::Clear;
        self
    }

    /// Replaces the API key.
    #[must_use]
    pub fn api_key(mut self, api_key: impl Into<SecretString>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Replaces the secret key.
    #[must_use]
    pub fn secret_key(mut self, secret_key: impl Into<SecretString>) -> Self {
        self.secret_key = Some(secret_key.into());
        self
    }

    /// Replaces both keys.
    #[must_use]
    pub fn keys(
        mut self,
        api_key: impl Into<SecretString>,
        secret_key: impl Into<SecretString>,
    ) -> Self {
        self.api_key = Some(api_key.into());
        self.secret_key = Some(secret_key.into());
        self
    }
}

impl fmt::Debug for CredentialUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |key: &Option<SecretString>| key.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("CredentialUpdate")
            .field("nickname", &self.nickname)
            .field("api_key", &redact(&self.api_key))
            .field("secret_key", &redact(&self.secret_key))
            .field("is_active", &self.is_active)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The backend whose `Selectable` impls name the columns: the column list is the
/// same on every backend, so one query value serves them all.
#[cfg(feature = "sqlite")]
type AnyBackend = diesel::sqlite::Sqlite;
#[cfg(all(not(feature = "sqlite"), feature = "postgres"))]
type AnyBackend = diesel::pg::Pg;
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
type AnyBackend = diesel::mysql::Mysql;

/// The columns of [`UserAccount`], in field order.
pub(crate) type AccountColumns = <UserAccount as Selectable<AnyBackend>>::SelectExpression;
/// The columns of [`UserCredential`], in field order.
pub(crate) type CredentialColumns = <UserCredential as Selectable<AnyBackend>>::SelectExpression;

/// Selects a [`UserAccount`] on any backend.
pub(crate) fn account_columns() -> AccountColumns {
    <UserAccount as Selectable<AnyBackend>>::construct_selection()
}

/// Selects a [`UserCredential`] on any backend.
pub(crate) fn credential_columns() -> CredentialColumns {
    <UserCredential as Selectable<AnyBackend>>::construct_selection()
}

/// The row written on insert: ciphertext only.
#[derive(Insertable)]
#[diesel(table_name = user_credentials)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct CredentialRow {
    pub id: SqlUuid,
    pub user_account_id: SqlUuid,
    pub user_id: String,
    pub credential_type: String,
    pub nickname: Option<String>,
    pub api_key: String,
    pub secret_key: String,
    pub is_active: bool,
    pub expires_at: Option<SqlTime>,
    pub created_at: SqlTime,
    pub updated_at: SqlTime,
}

/// The row written on account creation.
#[derive(Insertable)]
#[diesel(table_name = user_accounts)]
pub(crate) struct AccountRow {
    pub id: SqlUuid,
    pub user_id: String,
    pub account_name: String,
    pub is_active: bool,
    pub created_at: SqlTime,
    pub updated_at: SqlTime,
}

/// The columns an update sets: `None` keeps, `Some(None)` stores NULL.
#[derive(AsChangeset)]
#[diesel(table_name = user_credentials)]
pub(crate) struct CredentialChanges {
    pub nickname: Option<Option<String>>,
    pub api_key: Option<String>,
    pub secret_key: Option<String>,
    pub is_active: Option<bool>,
    pub expires_at: Option<Option<SqlTime>>,
    pub updated_at: SqlTime,
}
