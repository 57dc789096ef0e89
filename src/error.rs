//! The crate's one error type.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// A shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Messages name the thing and the rule; they never contain secret material
/// (plaintext keys, Fernet keys or ciphertexts).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input broke a validation rule. Nothing was written.
    #[error("invalid {field}: {rule}")]
    Invalid {
        /// The input that was refused.
        field: Field,
        /// The rule it broke.
        rule: Rule,
    },

    /// No account with this id is visible to the caller.
    #[error("unknown account `{account_id}`")]
    UnknownAccount {
        /// The account id that was asked for.
        account_id: Uuid,
    },

    /// The account exists, but belongs to another user than the one named. The
    /// stores never return it: to a caller who does not own an account, another
    /// user's account is [`Error::UnknownAccount`], so that the answer does not
    /// tell whether the id exists. Kept for callers that match on it.
    #[error("account `{account_id}` does not belong to user `{user_id}`")]
    AccountUserMismatch {
        /// The account id that was asked for.
        account_id: Uuid,
        /// The user the caller named.
        user_id: String,
    },

    /// An account for this external user already exists (`user_id` is unique).
    #[error("an account for user `{user_id}` already exists")]
    AccountExists {
        /// The external user id.
        user_id: String,
    },

    /// The database ties accounts to a user table of its own (the existing system's
    /// `"user"` table, on an adopted database) and that table has no such user.
    #[error("user `{user_id}` is not in the database's user table, which `user_accounts.user_id` references; create the user there first")]
    UnknownUser {
        /// The external user id.
        user_id: String,
    },

    /// No credential with this id under the given account.
    #[error("no credential `{credential_id}` under account `{account_id}`")]
    CredentialNotFound {
        /// The account the lookup was scoped to.
        account_id: Uuid,
        /// The credential id that was asked for.
        credential_id: Uuid,
    },

    /// An insert with a caller-chosen credential id
    /// ([`NewUserCredential::with_id`](crate::NewUserCredential::with_id)) met a stored
    /// credential with that id whose content differs (or that the caller cannot
    /// see). The same id with the same content is not an error: the insert returns
    /// the stored credential, so a write whose outcome is unknown can be retried.
    #[error("credential id `{credential_id}` is already taken by a credential with other content")]
    CredentialIdConflict {
        /// The account the insert was for.
        account_id: Uuid,
        /// The caller-chosen id.
        credential_id: Uuid,
    },

    /// A key provider failed, or answered out of its contract (a result count that
    /// does not match the request). The provider's own errors are its typed errors;
    /// this is for what it cannot express otherwise.
    #[error("key provider `{provider}` failed: {reason}")]
    KeyProvider {
        /// The provider's name ([`KeyProvider::name`](crate::KeyProvider::name)).
        provider: String,
        /// What went wrong, never a key or a ciphertext.
        reason: String,
    },

    /// The key provider could not be reached, or did not answer in time: a data
    /// key it holds could not be wrapped or unwrapped. Nothing was written.
    /// Accounts whose data key the [cache](crate::DataKeyCache) holds keep working;
    /// retry the others.
    #[error("key provider `{provider}` is unavailable: {reason}")]
    KeyProviderUnavailable {
        /// The provider's name.
        provider: String,
        /// What failed (a timeout, a refused connection), never a key.
        reason: String,
    },

    /// An account's stored data key does not unwrap: another key-encryption key
    /// wrapped it, it was copied from another account, or it is damaged; or no
    /// configured provider has the name it was stored with.
    #[error("the data key of account `{account_id}` does not unwrap with provider `{provider}`: {reason}")]
    DataKeyUnreadable {
        /// The account.
        account_id: Uuid,
        /// The provider the data key was stored with.
        provider: String,
        /// Why, never a key.
        reason: String,
    },

    /// A stored ciphertext is in a format older than the store's
    /// [minimum format](crate::CredentialStore::with_minimum_format): refused
    /// before anything is decrypted (`rotate` converts such rows).
    #[error("{field} of credential `{credential_id}` is in format {format}, older than the minimum {minimum}")]
    FormatRefused {
        /// The credential.
        credential_id: Uuid,
        /// `api_key` or `secret_key`.
        field: Field,
        /// The stored value's format.
        format: crate::crypto::FormatVersion,
        /// The oldest format the store reads.
        minimum: crate::crypto::FormatVersion,
    },

    /// A single-match nickname lookup found more than one credential.
    #[error("nickname `{nickname}` is ambiguous: {matches} credentials of account `{account_id}` carry it")]
    AmbiguousNickname {
        /// The account the lookup was scoped to.
        account_id: Uuid,
        /// The (normalised) nickname looked up.
        nickname: String,
        /// How many credentials matched.
        matches: usize,
    },

    /// A single-match lookup by type found more than one credential: code written
    /// for one credential per type must choose by nickname or id.
    #[error("credential type `{credential_type}` is ambiguous: {matches} credentials of account `{account_id}` have it; look up by nickname or id")]
    AmbiguousType {
        /// The account the lookup was scoped to.
        account_id: Uuid,
        /// The credential type looked up.
        credential_type: String,
        /// How many credentials matched.
        matches: usize,
    },

    /// The credential is switched off (`is_active = false`); its keys are not handed out.
    #[error("credential `{credential_id}` is inactive")]
    CredentialInactive {
        /// The credential.
        credential_id: Uuid,
    },

    /// The account is switched off (`user_accounts.is_active = false`); none of its
    /// keys are handed out.
    #[error("account `{account_id}` is inactive")]
    AccountInactive {
        /// The account.
        account_id: Uuid,
    },

    /// The credential's `expires_at` has passed; its keys are not handed out.
    #[error("credential `{credential_id}` expired at {expired_at}")]
    CredentialExpired {
        /// The credential.
        credential_id: Uuid,
        /// When it expired.
        expired_at: DateTime<Utc>,
    },

    /// No encryption key is configured. The crate never writes plaintext instead.
    #[error(
        "no encryption key configured{}",
        variable.as_deref().map(|v| format!(": set {v} to one or more comma-separated keys (32 bytes, URL-safe base64)")).unwrap_or_default()
    )]
    NoKeyConfigured {
        /// The environment variable that was read, if the keys came from one.
        variable: Option<String>,
    },

    /// A configured key is not a Fernet key (32 bytes, URL-safe base64).
    #[error(
        "key #{position} of the keyring is not a valid Fernet key (32 bytes, URL-safe base64)"
    )]
    InvalidKey {
        /// The key's position in the list, from 1.
        position: usize,
    },

    /// A key id was not 1 to 32 of `[A-Za-z0-9_.-]`.
    #[error("key #{position} of the keyring has an invalid id (1 to 32 of A-Z a-z 0-9 _ . -)")]
    InvalidKeyId {
        /// The key's position in the list, from 1.
        position: usize,
    },

    /// Two keys of the keyring have the same id.
    #[error("two keys of the keyring have the id `{key_id}`")]
    DuplicateKeyId {
        /// The id.
        key_id: String,
    },

    /// A stored ciphertext could not be decrypted: a wrong key, a corrupted
    /// ciphertext, or a sealed ciphertext copied from another row or field.
    #[error("cannot decrypt {field} of credential `{credential_id}`: no key of the keyring opens it (wrong key, corrupted, or copied from another row or field)")]
    Decryption {
        /// The credential.
        credential_id: Uuid,
        /// `api_key` or `secret_key`.
        field: Field,
    },

    /// A sealed ciphertext names a key the keyring does not hold.
    #[error("cannot decrypt {field} of credential `{credential_id}`: it was sealed with key `{key_id}`, which is not in the keyring")]
    UnknownKey {
        /// The credential.
        credential_id: Uuid,
        /// `api_key` or `secret_key`.
        field: Field,
        /// The key id the ciphertext names.
        key_id: String,
    },

    /// Key rotation rewrote what it could, but some credentials could not be read
    /// with the keyring. They were left as they are; the rest is done. Add the
    /// missing keys (or repair the rows) and run it again.
    #[error("key rotation rewrote {rewritten} credential(s) but could not read {}: {}", failures.len(), failures.first().map(ToString::to_string).unwrap_or_default())]
    RotationIncomplete {
        /// Credentials rewritten by this run.
        rewritten: u64,
        /// One [`Error::UnknownKey`], [`Error::Decryption`] or
        /// [`Error::FormatRefused`] per unreadable field, and one
        /// [`Error::DataKeyUnreadable`] per account whose data key does not unwrap.
        failures: Vec<Error>,
    },

    /// The operation spans users, and row-level security hides rows from the current role.
    #[error("{operation} needs a role that bypasses row-level security (a superuser or a role with BYPASSRLS); the current role would see no rows")]
    RowSecurityActive {
        /// The operation refused.
        operation: &'static str,
    },

    /// A keys file ([`Keyring::from_file`](crate::Keyring::from_file)) could not be
    /// read. The cause is the error's `source()`.
    #[error("cannot read the keys file `{}`", path.display())]
    KeysFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },

    /// A keys file that its group or others may read or write is refused: its keys
    /// could not be trusted to be secret, or to be the operator's.
    #[error("refusing the keys file `{}`: its mode {mode:04o} lets group or others read or write it; it must be readable by its owner only (chmod 600)", path.display())]
    KeysFileExposed {
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A keys file that is not a regular file owned by the user the process runs as
    /// (a symbolic link, a directory or FIFO, another user's file) is refused: its
    /// keys could not be trusted to be the operator's.
    #[error("refusing the keys file `{}`: {reason}", path.display())]
    KeysFileUntrusted {
        /// The file.
        path: std::path::PathBuf,
        /// Why: what the file is, or who owns it.
        reason: String,
    },

    /// An operator named a migration that is not applied.
    #[error("migration {version} is not applied")]
    MigrationNotApplied {
        /// The version named.
        version: String,
    },

    /// A copy's target already holds rows and the copy was not asked to resume.
    #[error("the target database is not empty ({accounts} account(s), {credentials} credential(s)): copy into an empty database, or resume an interrupted copy")]
    TargetNotEmpty {
        /// Accounts in the target.
        accounts: u64,
        /// Credentials in the target.
        credentials: u64,
    },

    /// The database URL could not be used.
    #[error("unsupported database URL: {reason}")]
    UnsupportedUrl {
        /// Why not.
        reason: String,
    },

    /// Applying or reverting migrations failed; the migration's transaction was rolled
    /// back. The message ends with the cause (the database's primary message).
    #[error("migration failed: {0}")]
    Migration(Box<dyn std::error::Error + Send + Sync>),

    /// A migration revert would lose data, so nothing was changed.
    #[error("cannot revert migration {version}: {conflicts} (account, credential_type) pair(s) hold more than one credential, which the restored unique index cannot hold; delete or merge them first")]
    RevertRefused {
        /// The migration that was to be reverted.
        version: String,
        /// How many `(account, credential_type)` pairs hold more than one credential.
        conflicts: usize,
    },

    /// Reverting the migration would drop the credential tables or the accounts'
    /// data keys, switch off row-level security or drop the owner foreign key (a credential's user is its
    /// account's) while accounts or credentials are stored; nothing was changed.
    #[error("cannot revert migration {version}: it would drop the credential tables, the accounts' data keys, row-level security or the owner foreign key while {accounts} account(s) and {credentials} credential(s) are stored; export and delete them first if that is really meant")]
    RevertWouldExpose {
        /// The migration that was to be reverted.
        version: String,
        /// Accounts stored.
        accounts: u64,
        /// Credentials stored.
        credentials: u64,
    },

    /// Reverting the multiple-credentials migration would drop the `nickname` column
    /// while credentials carry a nickname other than their type; nothing was changed.
    #[error("cannot revert migration {version}: {nicknames} credential(s) carry a nickname other than their type, which the revert would drop")]
    RevertWouldDropNicknames {
        /// The migration that was to be reverted.
        version: String,
        /// Credentials whose nickname differs from their type.
        nicknames: u64,
    },

    /// Could not open a connection.
    #[error("cannot connect to the database: {0}")]
    Connection(diesel::ConnectionError),

    /// Could not get a connection from the pool in time.
    #[error("no database connection available: {0}")]
    Pool(diesel::r2d2::PoolError),

    /// The async pool gave no connection: none became free within
    /// [`DatabaseOptions::connection_timeout`](crate::DatabaseOptions::connection_timeout),
    /// or the pool or the runtime is shutting down.
    #[error("no database connection available: {reason}")]
    PoolUnavailable {
        /// Why not.
        reason: String,
    },

    /// A lock a retry may get: SQLite stayed locked by another writer for longer
    /// than the busy timeout
    /// ([`DatabaseOptions::busy_timeout`](crate::DatabaseOptions::busy_timeout)), or
    /// MariaDB/MySQL (InnoDB) met a deadlock or a lock wait timeout. The transaction
    /// was rolled back; retrying later is safe. (PostgreSQL waits for locks without
    /// a timeout unless the role sets `lock_timeout`; its errors are
    /// [`Database`](Error::Database).)
    #[error("the database is busy: another writer held the lock past the busy timeout ({0})")]
    Busy(diesel::result::Error),

    /// The connection to PostgreSQL or MariaDB/MySQL was lost mid-operation (server
    /// restart, `pg_terminate_backend` or `KILL CONNECTION`, network). The pool
    /// replaces the connection. A read can be retried; a write whose outcome was not
    /// reported may or may not have committed: retry an insert with a caller-chosen
    /// id ([`NewUserCredential::with_id`](crate::NewUserCredential::with_id)). (SQLite
    /// has no connection to lose.)
    #[error("the database connection was lost: {0}")]
    ConnectionLost(diesel::result::Error),

    /// The database refused a statement.
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

/// What kind of failure an [`Error`] is, for callers and tools that branch on it or
/// print it, so that none keeps a table of [`Error`]'s variants of its own.
///
/// Each kind has a stable snake_case name ([`as_str`](Self::as_str), which `Display`
/// and `Serialize` give too); the operator tool prints it as `error.kind`. Most
/// kinds are one variant of [`Error`]; [`ErrorKind::Pool`] is two. New kinds may be
/// added, so a `match` outside this crate needs a `_` arm.
///
/// ```
/// use credential_store::error::{Error, ErrorKind};
///
/// let err = Error::NoKeyConfigured { variable: None };
/// assert_eq!(err.kind(), ErrorKind::NoKeyConfigured);
/// assert_eq!(err.kind().as_str(), "no_key_configured");
/// assert!(!err.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An input broke a validation rule ([`Error::Invalid`]): `invalid_argument`.
    InvalidArgument,
    /// No such account is visible to the caller ([`Error::UnknownAccount`]):
    /// `unknown_account`.
    UnknownAccount,
    /// The account belongs to another user ([`Error::AccountUserMismatch`]):
    /// `account_user_mismatch`.
    AccountUserMismatch,
    /// The user already has an account ([`Error::AccountExists`]): `account_exists`.
    AccountExists,
    /// The database's user table has no such user ([`Error::UnknownUser`]):
    /// `unknown_user`.
    UnknownUser,
    /// No such credential under the account ([`Error::CredentialNotFound`]):
    /// `credential_not_found`.
    CredentialNotFound,
    /// A caller-chosen credential id is taken by a credential with other content
    /// ([`Error::CredentialIdConflict`]): `credential_id_conflict`.
    CredentialIdConflict,
    /// A key provider failed ([`Error::KeyProvider`]): `key_provider`.
    KeyProvider,
    /// The key provider could not be reached in time
    /// ([`Error::KeyProviderUnavailable`]): `key_provider_unavailable`.
    KeyProviderUnavailable,
    /// An account's data key does not unwrap ([`Error::DataKeyUnreadable`]):
    /// `data_key_unreadable`.
    DataKeyUnreadable,
    /// A ciphertext is older than the minimum format ([`Error::FormatRefused`]):
    /// `format_refused`.
    FormatRefused,
    /// A single-match nickname lookup matched several credentials
    /// ([`Error::AmbiguousNickname`]): `ambiguous_nickname`.
    AmbiguousNickname,
    /// A single-match type lookup matched several credentials
    /// ([`Error::AmbiguousType`]): `ambiguous_type`.
    AmbiguousType,
    /// The credential is switched off ([`Error::CredentialInactive`]):
    /// `credential_inactive`.
    CredentialInactive,
    /// The account is switched off ([`Error::AccountInactive`]): `account_inactive`.
    AccountInactive,
    /// The credential has expired ([`Error::CredentialExpired`]): `credential_expired`.
    CredentialExpired,
    /// No encryption key is configured ([`Error::NoKeyConfigured`]):
    /// `no_key_configured`.
    NoKeyConfigured,
    /// A configured key is not a Fernet key ([`Error::InvalidKey`]): `invalid_key`.
    InvalidKey,
    /// A key id breaks the rules for ids ([`Error::InvalidKeyId`]): `invalid_key_id`.
    InvalidKeyId,
    /// Two keys share an id ([`Error::DuplicateKeyId`]): `duplicate_key_id`.
    DuplicateKeyId,
    /// No key of the keyring opens a stored ciphertext ([`Error::Decryption`]):
    /// `decryption`.
    Decryption,
    /// A stored ciphertext names a key the keyring lacks ([`Error::UnknownKey`]):
    /// `unknown_key`.
    UnknownKey,
    /// Key rotation left credentials it could not read ([`Error::RotationIncomplete`]):
    /// `rotation_incomplete`.
    RotationIncomplete,
    /// Row-level security hides rows from the current role
    /// ([`Error::RowSecurityActive`]): `row_security_active`.
    RowSecurityActive,
    /// A keys file could not be read ([`Error::KeysFile`]): `keys_file`.
    KeysFile,
    /// A keys file others may read or write was refused ([`Error::KeysFileExposed`]):
    /// `keys_file_exposed`.
    KeysFileExposed,
    /// A keys file that is a link, not a regular file, or another user's was
    /// refused ([`Error::KeysFileUntrusted`]): `keys_file_untrusted`.
    KeysFileUntrusted,
    /// The migration named is not applied ([`Error::MigrationNotApplied`]):
    /// `migration_not_applied`.
    MigrationNotApplied,
    /// A copy's target already holds rows ([`Error::TargetNotEmpty`]):
    /// `target_not_empty`.
    TargetNotEmpty,
    /// The database URL could not be used ([`Error::UnsupportedUrl`]):
    /// `unsupported_url`.
    UnsupportedUrl,
    /// Applying or reverting a migration failed ([`Error::Migration`]): `migration`.
    Migration,
    /// A revert would break the restored unique index ([`Error::RevertRefused`]):
    /// `revert_refused`.
    RevertRefused,
    /// A revert would drop the tables, row-level security or the owner foreign key
    /// with rows stored ([`Error::RevertWouldExpose`]): `revert_would_expose`.
    RevertWouldExpose,
    /// A revert would drop nicknames ([`Error::RevertWouldDropNicknames`]):
    /// `revert_would_drop_nicknames`.
    RevertWouldDropNicknames,
    /// No connection could be opened ([`Error::Connection`]): `connection`.
    Connection,
    /// No pooled connection was available in time ([`Error::Pool`],
    /// [`Error::PoolUnavailable`]): `pool`.
    Pool,
    /// SQLite stayed locked past the busy timeout, or MariaDB met a deadlock or a
    /// lock wait timeout ([`Error::Busy`]): `busy`.
    Busy,
    /// The connection died mid-operation ([`Error::ConnectionLost`]):
    /// `connection_lost`.
    ConnectionLost,
    /// The database refused a statement ([`Error::Database`]): `database`.
    Database,
}

impl ErrorKind {
    /// Whether an error of this kind is the moment's, not the request's: see
    /// [`Error::is_retryable`].
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Busy
                | ErrorKind::ConnectionLost
                | ErrorKind::Pool
                | ErrorKind::KeyProviderUnavailable
        )
    }

    /// Whether an error of this kind says the thing asked for is not there: see
    /// [`Error::is_not_found`].
    pub fn is_not_found(self) -> bool {
        matches!(
            self,
            ErrorKind::UnknownAccount | ErrorKind::CredentialNotFound
        )
    }

    /// The kind's stable snake_case name, such as `busy` or `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::UnknownAccount => "unknown_account",
            ErrorKind::AccountUserMismatch => "account_user_mismatch",
            ErrorKind::AccountExists => "account_exists",
            ErrorKind::UnknownUser => "unknown_user",
            ErrorKind::CredentialNotFound => "credential_not_found",
            ErrorKind::CredentialIdConflict => "credential_id_conflict",
            ErrorKind::KeyProvider => "key_provider",
            ErrorKind::KeyProviderUnavailable => "key_provider_unavailable",
            ErrorKind::DataKeyUnreadable => "data_key_unreadable",
            ErrorKind::FormatRefused => "format_refused",
            ErrorKind::AmbiguousNickname => "ambiguous_nickname",
            ErrorKind::AmbiguousType => "ambiguous_type",
            ErrorKind::CredentialInactive => "credential_inactive",
            ErrorKind::AccountInactive => "account_inactive",
            ErrorKind::CredentialExpired => "credential_expired",
            ErrorKind::NoKeyConfigured => "no_key_configured",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::InvalidKeyId => "invalid_key_id",
            ErrorKind::DuplicateKeyId => "duplicate_key_id",
            ErrorKind::Decryption => "decryption",
            ErrorKind::UnknownKey => "unknown_key",
            ErrorKind::RotationIncomplete => "rotation_incomplete",
            ErrorKind::RowSecurityActive => "row_security_active",
            ErrorKind::KeysFile => "keys_file",
            ErrorKind::KeysFileExposed => "keys_file_exposed",
            ErrorKind::KeysFileUntrusted => "keys_file_untrusted",
            ErrorKind::MigrationNotApplied => "migration_not_applied",
            ErrorKind::TargetNotEmpty => "target_not_empty",
            ErrorKind::UnsupportedUrl => "unsupported_url",
            ErrorKind::Migration => "migration",
            ErrorKind::RevertRefused => "revert_refused",
            ErrorKind::RevertWouldExpose => "revert_would_expose",
            ErrorKind::RevertWouldDropNicknames => "revert_would_drop_nicknames",
            ErrorKind::Connection => "connection",
            ErrorKind::Pool => "pool",
            ErrorKind::Busy => "busy",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Database => "database",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialized as its name ([`ErrorKind::as_str`]).
impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The inputs that validation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// A credential's nickname.
    Nickname,
    /// A credential's type (`alpaca_paper`, …).
    CredentialType,
    /// An account's display name.
    AccountName,
    /// The external user id.
    UserId,
    /// The API key (plaintext on input, ciphertext at rest).
    ApiKey,
    /// The secret key (plaintext on input, ciphertext at rest).
    SecretKey,
    /// A batch size.
    BatchSize,
    /// The oldest ciphertext format a store reads.
    MinimumFormat,
}

impl Field {
    /// The column or parameter name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Nickname => "nickname",
            Field::CredentialType => "credential_type",
            Field::AccountName => "account_name",
            Field::UserId => "user_id",
            Field::ApiKey => "api_key",
            Field::SecretKey => "secret_key",
            Field::BatchSize => "batch_size",
            Field::MinimumFormat => "minimum_format",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validation rules.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// Empty (after trimming, where the field is trimmed).
    Empty,
    /// Longer than allowed.
    TooLong {
        /// The most allowed.
        max: usize,
        /// What was given.
        actual: usize,
        /// What is counted.
        unit: Unit,
    },
    /// Contains a control character (Unicode category Cc, such as NUL or a newline).
    ControlCharacter {
        /// Its position, in characters from 0.
        position: usize,
    },
    /// Contains a character outside the allowed set.
    InvalidCharacter {
        /// The character.
        character: char,
        /// Its position, in characters from 0.
        position: usize,
        /// The allowed set.
        allowed: &'static str,
    },
    /// Starts with a character that may not start it.
    InvalidStart {
        /// What may start it.
        allowed: &'static str,
    },
    /// Outside the accepted range.
    OutOfRange {
        /// The least accepted.
        min: usize,
        /// The most accepted.
        max: usize,
    },
    /// Not one of the accepted names.
    OneOf(
        /// The accepted names.
        &'static str,
    ),
}

/// What a length limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unit {
    /// Unicode scalar values.
    Characters,
    /// UTF-8 bytes.
    Bytes,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("must not be empty"),
            Rule::TooLong { max, actual, unit } => {
                let unit = match unit {
                    Unit::Characters => "characters",
                    Unit::Bytes => "bytes",
                };
                write!(f, "must be at most {max} {unit} (got {actual})")
            }
            Rule::ControlCharacter { position } => {
                write!(
                    f,
                    "must not contain control characters (one at position {position})"
                )
            }
            Rule::InvalidCharacter {
                character,
                position,
                allowed,
            } => write!(
                f,
                "character {character:?} at position {position} is not allowed (allowed: {allowed})"
            ),
            Rule::InvalidStart { allowed } => write!(f, "must start with {allowed}"),
            Rule::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Rule::OneOf(names) => write!(f, "must be one of {names}"),
        }
    }
}

// The cause is in each message (the server's primary message, never its DETAIL,
// which can hold values), so it is not also a `source()`.
impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Error::Database(err)
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(err: diesel::ConnectionError) -> Self {
        Error::Connection(err)
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(err: diesel::r2d2::PoolError) -> Self {
        Error::Pool(err)
    }
}

impl Error {
    /// Whether a failed insert met the owner check (the composite foreign key on
    /// PostgreSQL and MySQL, the triggers or the account foreign key on SQLite).
    pub(crate) fn is_owner_violation(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        match self {
            Error::Database(DieselError::DatabaseError(kind, info)) => {
                matches!(kind, DatabaseErrorKind::ForeignKeyViolation)
                    || info.message().contains("FOREIGN KEY constraint failed")
                    || info.message().contains("must equal its account")
            }
            _ => false,
        }
    }

    /// Whether a failed insert met a unique index.
    pub(crate) fn is_unique_violation(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        matches!(
            self,
            Error::Database(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

impl Error {
    /// What kind of failure this is. Every variant has exactly one kind, so code
    /// that branches on failures (or prints them) can match on the kind instead
    /// of on the variants.
    pub fn kind(&self) -> ErrorKind {
        // One arm per variant and no `_`: a new variant does not compile until it
        // is classified.
        match self {
            Error::Invalid { .. } => ErrorKind::InvalidArgument,
            Error::UnknownAccount { .. } => ErrorKind::UnknownAccount,
            Error::AccountUserMismatch { .. } => ErrorKind::AccountUserMismatch,
            Error::AccountExists { .. } => ErrorKind::AccountExists,
            Error::UnknownUser { .. } => ErrorKind::UnknownUser,
            Error::CredentialNotFound { .. } => ErrorKind::CredentialNotFound,
            Error::CredentialIdConflict { .. } => ErrorKind::CredentialIdConflict,
            Error::KeyProvider { .. } => ErrorKind::KeyProvider,
            Error::KeyProviderUnavailable { .. } => ErrorKind::KeyProviderUnavailable,
            Error::DataKeyUnreadable { .. } => ErrorKind::DataKeyUnreadable,
            Error::FormatRefused { .. } => ErrorKind::FormatRefused,
            Error::AmbiguousNickname { .. } => ErrorKind::AmbiguousNickname,
            Error::AmbiguousType { .. } => ErrorKind::AmbiguousType,
            Error::CredentialInactive { .. } => ErrorKind::CredentialInactive,
            Error::AccountInactive { .. } => ErrorKind::AccountInactive,
            Error::CredentialExpired { .. } => ErrorKind::CredentialExpired,
            Error::NoKeyConfigured { .. } => ErrorKind::NoKeyConfigured,
            Error::InvalidKey { .. } => ErrorKind::InvalidKey,
            Error::InvalidKeyId { .. } => ErrorKind::InvalidKeyId,
            Error::DuplicateKeyId { .. } => ErrorKind::DuplicateKeyId,
            Error::Decryption { .. } => ErrorKind::Decryption,
            Error::UnknownKey { .. } => ErrorKind::UnknownKey,
            Error::RotationIncomplete { .. } => ErrorKind::RotationIncomplete,
            Error::RowSecurityActive { .. } => ErrorKind::RowSecurityActive,
            Error::KeysFile { .. } => ErrorKind::KeysFile,
            Error::KeysFileExposed { .. } => ErrorKind::KeysFileExposed,
            Error::KeysFileUntrusted { .. } => ErrorKind::KeysFileUntrusted,
            Error::MigrationNotApplied { .. } => ErrorKind::MigrationNotApplied,
            Error::TargetNotEmpty { .. } => ErrorKind::TargetNotEmpty,
            Error::UnsupportedUrl { .. } => ErrorKind::UnsupportedUrl,
            Error::Migration(_) => ErrorKind::Migration,
            Error::RevertRefused { .. } => ErrorKind::RevertRefused,
            Error::RevertWouldExpose { .. } => ErrorKind::RevertWouldExpose,
            Error::RevertWouldDropNicknames { .. } => ErrorKind::RevertWouldDropNicknames,
            Error::Connection(_) => ErrorKind::Connection,
            Error::Pool(_) | Error::PoolUnavailable { .. } => ErrorKind::Pool,
            Error::Busy(_) => ErrorKind::Busy,
            Error::ConnectionLost(_) => ErrorKind::ConnectionLost,
            Error::Database(_) => ErrorKind::Database,
        }
    }

    /// Whether the same call, made again a little later, can succeed with nothing
    /// changed: the failure was the moment's, not the request's or the setup's.
    ///
    /// That is the kinds [`KeyProviderUnavailable`](ErrorKind::KeyProviderUnavailable), [`Busy`](ErrorKind::Busy) (a lock held past the timeout, a
    /// deadlock; the transaction was rolled back), [`ConnectionLost`](ErrorKind::ConnectionLost)
    /// (the pool replaces the connection) and [`Pool`](ErrorKind::Pool) (no pooled
    /// connection free in time). Everything else fails the same way until something
    /// is changed: the input, the keys, the configuration or the data; a connection
    /// that cannot be opened at all ([`Connection`](ErrorKind::Connection)) usually
    /// means a wrong URL, host or password. A write that failed with
    /// `ConnectionLost` may have committed: retry it only if it is idempotent.
    ///
    /// ```
    /// use credential_store::Error;
    ///
    /// let busy = Error::Busy(diesel::result::Error::RollbackTransaction);
    /// assert!(busy.is_retryable());
    /// assert!(!Error::UnsupportedUrl { reason: "no scheme".into() }.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether the account or credential asked for does not exist, or is not
    /// visible to the caller: the kinds [`UnknownAccount`](ErrorKind::UnknownAccount)
    /// and [`CredentialNotFound`](ErrorKind::CredentialNotFound) (a service answers
    /// these with "not found").
    ///
    /// ```
    /// use credential_store::Error;
    ///
    /// let missing = Error::UnknownAccount { account_id: uuid::Uuid::nil() };
    /// assert!(missing.is_not_found());
    /// ```
    pub fn is_not_found(&self) -> bool {
        self.kind().is_not_found()
    }

    pub(crate) fn invalid(field: Field, rule: Rule) -> Self {
        Error::Invalid { field, rule }
    }

    pub(crate) fn migration(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Migration(err.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every kind, once.
    const ALL: &[ErrorKind] = &[
        ErrorKind::InvalidArgument,
        ErrorKind::UnknownAccount,
        ErrorKind::AccountUserMismatch,
        ErrorKind::AccountExists,
        ErrorKind::UnknownUser,
        ErrorKind::CredentialNotFound,
        ErrorKind::CredentialIdConflict,
        ErrorKind::KeyProvider,
        ErrorKind::KeyProviderUnavailable,
        ErrorKind::DataKeyUnreadable,
        ErrorKind::FormatRefused,
        ErrorKind::AmbiguousNickname,
        ErrorKind::AmbiguousType,
        ErrorKind::CredentialInactive,
        ErrorKind::AccountInactive,
        ErrorKind::CredentialExpired,
        ErrorKind::NoKeyConfigured,
        ErrorKind::InvalidKey,
        ErrorKind::InvalidKeyId,
        ErrorKind::DuplicateKeyId,
        ErrorKind::Decryption,
        ErrorKind::UnknownKey,
        ErrorKind::RotationIncomplete,
        ErrorKind::RowSecurityActive,
        ErrorKind::KeysFile,
        ErrorKind::KeysFileExposed,
        ErrorKind::KeysFileUntrusted,
        ErrorKind::MigrationNotApplied,
        ErrorKind::TargetNotEmpty,
        ErrorKind::UnsupportedUrl,
        ErrorKind::Migration,
        ErrorKind::RevertRefused,
        ErrorKind::RevertWouldExpose,
        ErrorKind::RevertWouldDropNicknames,
        ErrorKind::Connection,
        ErrorKind::Pool,
        ErrorKind::Busy,
        ErrorKind::ConnectionLost,
        ErrorKind::Database,
    ];

    /// Does not compile when a kind is added: list the new kind in `ALL` too.
    #[allow(dead_code)]
    fn listed_in_all(kind: ErrorKind) {
        match kind {
            ErrorKind::InvalidArgument
            | ErrorKind::UnknownAccount
            | ErrorKind::AccountUserMismatch
            | ErrorKind::AccountExists
            | ErrorKind::UnknownUser
            | ErrorKind::CredentialNotFound
            | ErrorKind::CredentialIdConflict
            | ErrorKind::KeyProvider
            | ErrorKind::KeyProviderUnavailable
            | ErrorKind::DataKeyUnreadable
            | ErrorKind::FormatRefused
            | ErrorKind::AmbiguousNickname
            | ErrorKind::AmbiguousType
            | ErrorKind::CredentialInactive
            | ErrorKind::AccountInactive
            | ErrorKind::CredentialExpired
            | ErrorKind::NoKeyConfigured
            | ErrorKind::InvalidKey
            | ErrorKind::InvalidKeyId
            | ErrorKind::DuplicateKeyId
            | ErrorKind::Decryption
            | ErrorKind::UnknownKey
            | ErrorKind::RotationIncomplete
            | ErrorKind::RowSecurityActive
            | ErrorKind::KeysFile
            | ErrorKind::KeysFileExposed
            | ErrorKind::KeysFileUntrusted
            | ErrorKind::MigrationNotApplied
            | ErrorKind::TargetNotEmpty
            | ErrorKind::UnsupportedUrl
            | ErrorKind::Migration
            | ErrorKind::RevertRefused
            | ErrorKind::RevertWouldExpose
            | ErrorKind::RevertWouldDropNicknames
            | ErrorKind::Connection
            | ErrorKind::Pool
            | ErrorKind::Busy
            | ErrorKind::ConnectionLost
            | ErrorKind::Database => {}
        }
    }

    fn diesel_error() -> diesel::result::Error {
        diesel::result::Error::RollbackTransaction
    }

    #[test]
    fn every_kind_has_a_unique_snake_case_name() {
        let mut seen = HashSet::new();
        for kind in ALL {
            let name = kind.as_str();
            assert!(seen.insert(name), "two kinds are named `{name}`");
            assert!(!name.is_empty(), "{kind:?} has no name");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "`{name}` is not snake_case"
            );
            assert!(
                !name.starts_with('_') && !name.ends_with('_') && !name.contains("__"),
                "`{name}` is not snake_case"
            );
            assert_eq!(kind.to_string(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
        assert_eq!(seen.len(), ALL.len());
    }

    #[test]
    fn errors_map_to_their_kind() {
        let cases = [
            (
                Error::invalid(Field::Nickname, Rule::Empty),
                ErrorKind::InvalidArgument,
                "invalid_argument",
            ),
            (
                Error::UnknownAccount {
                    account_id: Uuid::nil(),
                },
                ErrorKind::UnknownAccount,
                "unknown_account",
            ),
            (
                Error::CredentialNotFound {
                    account_id: Uuid::nil(),
                    credential_id: Uuid::nil(),
                },
                ErrorKind::CredentialNotFound,
                "credential_not_found",
            ),
            (
                Error::NoKeyConfigured { variable: None },
                ErrorKind::NoKeyConfigured,
                "no_key_configured",
            ),
            (
                Error::KeysFile {
                    path: "keys".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                ErrorKind::KeysFile,
                "keys_file",
            ),
            (
                Error::RevertRefused {
                    version: "20240601000003".into(),
                    conflicts: 2,
                },
                ErrorKind::RevertRefused,
                "revert_refused",
            ),
            (
                Error::RotationIncomplete {
                    rewritten: 1,
                    failures: vec![Error::UnknownKey {
                        credential_id: Uuid::nil(),
                        field: Field::ApiKey,
                        key_id: "old".into(),
                    }],
                },
                ErrorKind::RotationIncomplete,
                "rotation_incomplete",
            ),
            (Error::migration("boom"), ErrorKind::Migration, "migration"),
            (
                Error::Connection(diesel::ConnectionError::BadConnection("refused".into())),
                ErrorKind::Connection,
                "connection",
            ),
            (
                Error::PoolUnavailable {
                    reason: "timed out".into(),
                },
                ErrorKind::Pool,
                "pool",
            ),
            (Error::Busy(diesel_error()), ErrorKind::Busy, "busy"),
            (
                Error::ConnectionLost(diesel_error()),
                ErrorKind::ConnectionLost,
                "connection_lost",
            ),
            (
                Error::Database(diesel_error()),
                ErrorKind::Database,
                "database",
            ),
        ];
        for (err, kind, name) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.kind().as_str(), name, "{err}");
        }
    }

    #[test]
    fn retryable_errors_are_the_moments_failures() {
        for err in [
            Error::Busy(diesel_error()),
            Error::ConnectionLost(diesel_error()),
            Error::PoolUnavailable {
                reason: "timed out".into(),
            },
        ] {
            assert!(err.is_retryable(), "{err}");
            assert!(!err.is_not_found(), "{err}");
        }
        for err in [
            Error::invalid(Field::BatchSize, Rule::OutOfRange { min: 1, max: 10 }),
            Error::Database(diesel_error()),
            Error::Connection(diesel::ConnectionError::BadConnection("refused".into())),
            Error::NoKeyConfigured { variable: None },
            Error::UnknownAccount {
                account_id: Uuid::nil(),
            },
            Error::Decryption {
                credential_id: Uuid::nil(),
                field: Field::SecretKey,
            },
            Error::TargetNotEmpty {
                accounts: 1,
                credentials: 2,
            },
        ] {
            assert!(!err.is_retryable(), "{err}");
        }
    }

    #[test]
    fn not_found_is_an_unknown_account_or_credential() {
        for err in [
            Error::UnknownAccount {
                account_id: Uuid::nil(),
            },
            Error::CredentialNotFound {
                account_id: Uuid::nil(),
                credential_id: Uuid::nil(),
            },
        ] {
            assert!(err.is_not_found(), "{err}");
            assert!(!err.is_retryable(), "{err}");
        }
        for err in [
            Error::AccountUserMismatch {
                account_id: Uuid::nil(),
                user_id: "u".into(),
            },
            Error::UnknownUser {
                user_id: "u".into(),
            },
            Error::MigrationNotApplied {
                version: "20240601000003".into(),
            },
            Error::Database(diesel_error()),
            Error::Busy(diesel_error()),
        ] {
            assert!(!err.is_not_found(), "{err}");
        }
    }

    /// The documented table of error kinds (docs/guarantees.md) lists every kind
    /// once, with its retry and not-found answers as the code gives them.
    #[test]
    fn the_documented_error_table_matches_the_enum() {
        let doc = include_str!("../docs/guarantees.md");
        let table = doc
            .split("<!-- error kinds: checked against ErrorKind by a test in src/error.rs -->")
            .nth(1)
            .expect("docs/guarantees.md has the table of error kinds");
        let rows: Vec<(String, bool, bool)> = table
            .lines()
            .skip(3)
            .take_while(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_owned(),
                    cells[3] == "yes",
                    cells[4] == "yes",
                )
            })
            .collect();
        let expected: Vec<(String, bool, bool)> = ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), k.is_retryable(), k.is_not_found()))
            .collect();
        assert_eq!(rows, expected);
    }
}
