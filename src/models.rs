//! Accounts and credentials as the crate hands them out and takes them in.
//!
//! The read models ([`UserAccount`], [`UserCredential`]) carry no key material: the
//! ciphertext columns are never mapped into a `Serialize` type. Decrypted keys come
//! only from [`CredentialRepository::credential_keys`](crate::CredentialRepository::credential_keys).

use crate::schema::{user_accounts, user_credentials};
use crate::sql_types::{SqlTime, SqlUuid};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// An account: one per external user.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = user_accounts)]
pub struct UserAccount {
    /// Primary key.
    pub id: Uuid,
    /// The external identity (the auth provider's user id).
    pub user_id: String,
    /// Display name.
    pub account_name: String,
    /// Whether the account is in use.
    pub is_active: bool,
    /// When the account was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When the account last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// A new account.
///
/// `account_name` is trimmed and NFC-normalised, 1 to 255 characters; `user_id` is
/// kept exactly as given, 1 to 255 characters; neither may hold control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewUserAccount<'a> {
    /// The external identity; unique across accounts.
    pub user_id: &'a str,
    /// Display name.
    pub account_name: &'a str,
}

/// A stored credential, without its keys.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
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
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// The caller-chosen id, if any ([`with_id`](Self::with_id)).
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// Sets the nickname.
    pub fn nickname(mut self, nickname: &'a str) -> Self {
        self.nickname = Some(nickname);
        self
    }

    /// Sets the expiry.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets whether the credential is active.
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
/// let update = CredentialUpdate { nickname: Patch::Set("Swing".into()), ..Default::default() };
/// let rotate_keys = CredentialUpdate::default().keys("PKNEW", "new-secret");
/// assert!(!format!("{rotate_keys:?}").contains("new-secret"));
/// # let _ = update;
/// ```
#[derive(Default)]
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
    /// Replaces both keys.
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
