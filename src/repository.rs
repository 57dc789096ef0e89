//! The `CredentialRepository` trait and the store that implements it on diesel.

use crate::connection::{on_backend, Database, Scope};
use crate::crypto::{Binding, CipherFormat, CredentialKeys, Keyring, Origin};
use crate::error::{Error, Field, Result};
use crate::models::{
    AccountRow, CredentialChanges, CredentialRow, CredentialUpdate, NewUserAccount,
    NewUserCredential, Patch, UserAccount, UserCredential,
};
use crate::schema::{user_accounts, user_credentials};
use crate::sql_types::{to_stored_precision, LossyText, SqlTime, SqlUuid};
use crate::validation::{self, CredentialType, Nickname};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use secrecy::ExposeSecret;
use serde::Serialize;
use uuid::Uuid;

/// Accounts and their named credentials.
///
/// Every credential method takes the account it acts for, and reads or changes only
/// rows whose `user_account_id` **and** `user_id` are that account's: an account
/// value built by hand with another user's id sees nothing. On PostgreSQL the
/// account's `user_id` is also the row-level-security context of the transaction.
///
/// Inputs are validated before anything is written; a refused input changes nothing.
pub trait CredentialRepository {
    /// Creates an account. [`Error::AccountExists`] if the user already has one.
    fn create_account(&self, new: &NewUserAccount<'_>) -> Result<UserAccount>;

    /// The account with this id, if it belongs to `user_id`.
    fn account(&self, user_id: &str, account_id: Uuid) -> Result<Option<UserAccount>>;

    /// The account of an external user.
    fn account_by_user_id(&self, user_id: &str) -> Result<Option<UserAccount>>;

    /// Stores a credential, its keys encrypted with the keyring's primary key.
    ///
    /// A missing or blank nickname becomes the credential type. `user_id` is copied
    /// from the stored account; [`Error::UnknownAccount`] if there is none with that
    /// id, [`Error::AccountUserMismatch`] if it belongs to another user. (On
    /// PostgreSQL, under a role that row-level security applies to, another user's
    /// account is invisible to the transaction, so that case is `UnknownAccount` too.)
    fn insert_credential(
        &self,
        account: &UserAccount,
        new: &NewUserCredential<'_>,
    ) -> Result<UserCredential>;

    /// Stores several credentials under one account in one transaction: all of them,
    /// or (on any refusal) none. Same rules as
    /// [`insert_credential`](Self::insert_credential); returned in input order.
    /// Written with multi-row `INSERT`s of at most 1000 rows.
    fn insert_credentials(
        &self,
        account: &UserAccount,
        new: &[NewUserCredential<'_>],
    ) -> Result<Vec<UserCredential>>;

    /// One credential of the account.
    fn credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
    ) -> Result<Option<UserCredential>>;

    /// All credentials of the account, newest first.
    fn list_credentials(&self, account: &UserAccount) -> Result<Vec<UserCredential>>;

    /// The account's credentials of one type, newest first.
    fn find_by_type(
        &self,
        account: &UserAccount,
        credential_type: &str,
    ) -> Result<Vec<UserCredential>>;

    /// The account's credentials with this nickname (trimmed and NFC-normalised
    /// before comparing), newest first. Nicknames are not unique.
    fn find_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Vec<UserCredential>>;

    /// The one credential with this nickname: `None` if there is none,
    /// [`Error::AmbiguousNickname`] (with the count) if there are several. It never
    /// picks one for you.
    fn find_one_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Option<UserCredential>>;

    /// Changes a credential and returns it as stored. [`Error::CredentialNotFound`]
    /// if the account has no such credential.
    fn update_credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
        update: &CredentialUpdate,
    ) -> Result<UserCredential>;

    /// Deletes a credential. [`Error::CredentialNotFound`] if the account has no such
    /// credential.
    fn delete_credential(&self, account: &UserAccount, credential_id: Uuid) -> Result<()>;

    /// The decrypted keys of a credential, for use now.
    ///
    /// Refuses an inactive credential ([`Error::CredentialInactive`]) and an expired one
    /// ([`Error::CredentialExpired`]) before decrypting anything. A ciphertext that no
    /// key opens is [`Error::Decryption`], naming the credential and the field.
    fn credential_keys(&self, account: &UserAccount, credential_id: Uuid)
        -> Result<CredentialKeys>;

    /// Sets `nickname = credential_type` on every credential whose nickname is NULL,
    /// across all accounts, `batch_size` rows per short transaction, and returns how
    /// many rows it changed. Rows with a nickname are never touched; safe to stop at
    /// any point and run again.
    ///
    /// On PostgreSQL this spans users, so it needs a role that bypasses row-level
    /// security (superuser or `BYPASSRLS`); any other role gets
    /// [`Error::RowSecurityActive`] rather than a silent zero.
    fn backfill_nicknames(&self, batch_size: usize) -> Result<u64>;

    /// Re-encrypts every credential whose ciphertext was not made by the keyring's
    /// primary key in the store's [format](CredentialStore::with_format), across all
    /// accounts: Fernet to sealed, sealed to Fernet, old key to new.
    ///
    /// Walks the table by id, `batch_size` rows at a time: each batch is read, re-encrypted
    /// outside any lock, then written in one short transaction, and only where the row
    /// still holds the ciphertext that was read (a concurrent update wins). `progress`
    /// is called after each batch. Every row is readable with the keyring at every
    /// moment, so the rotation can be killed at any point and run again; a second run
    /// rewrites nothing.
    ///
    /// A credential no key opens is never skipped silently: the rest is rotated, then
    /// [`Error::RotationIncomplete`] lists each one ([`Error::UnknownKey`] naming the
    /// missing key id, or [`Error::Decryption`]). On PostgreSQL this needs a role that
    /// bypasses row-level security ([`Error::RowSecurityActive`] otherwise).
    fn rotate_keys(
        &self,
        batch_size: usize,
        progress: &mut dyn FnMut(&RotationProgress),
    ) -> Result<RotationProgress>;

    /// How many credentials each key protects, per format, across all accounts: an
    /// old key may leave the keyring when no row needs it. Reads the whole table. On
    /// PostgreSQL this needs a role that bypasses row-level security.
    fn key_usage(&self) -> Result<Vec<KeyUsage>>;
}

/// How far a [`rotate_keys`](CredentialRepository::rotate_keys) run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RotationProgress {
    /// Credentials looked at so far.
    pub scanned: u64,
    /// Credentials in the table when the run started.
    pub total: u64,
    /// Credentials re-encrypted so far.
    pub rewritten: u64,
}

impl RotationProgress {
    /// Credentials not looked at yet (rows added during the run may make the last
    /// batches go past `total`).
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.scanned)
    }
}

/// How many credentials one key protects in one format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct KeyUsage {
    /// The ciphertext format.
    pub format: CipherFormat,
    /// The key: for sealed ciphertexts the id they name; for Fernet tokens the id of
    /// the keyring's key that opens them. `None`: no key of the keyring opens them.
    pub key_id: Option<String>,
    /// Whether the keyring holds that key.
    pub in_keyring: bool,
    /// Credentials with at least one field (`api_key`, `secret_key`) under it.
    pub credentials: u64,
}

/// The diesel implementation of [`CredentialRepository`], on PostgreSQL or SQLite.
///
/// ```
/// use credential_store::{CredentialRepository, CredentialStore, Database, Keyring,
///     NewUserAccount, NewUserCredential};
/// use secrecy::ExposeSecret;
///
/// let dir = tempfile::tempdir().unwrap();
/// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
/// db.run_migrations().unwrap();
/// let store = CredentialStore::new(db, Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap());
///
/// let account = store.create_account(&NewUserAccount { user_id: "auth0|42", account_name: "Ada" }).unwrap();
/// store.insert_credential(&account, &NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Momentum")).unwrap();
/// store.insert_credential(&account, &NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing")).unwrap();
///
/// let swing = store.find_one_by_nickname(&account, "Swing").unwrap().unwrap();
/// let keys = store.credential_keys(&account, swing.id).unwrap();
/// assert_eq!(keys.api_key().expose_secret(), "PK2");
/// assert_eq!(store.find_by_type(&account, "alpaca_paper").unwrap().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct CredentialStore {
    db: Database,
    keyring: std::sync::Arc<Keyring>,
    format: CipherFormat,
}

impl CredentialStore {
    /// A store on a (migrated) database, encrypting with `keyring` in the
    /// [sealed](CipherFormat::Sealed) format.
    pub fn new(db: Database, keyring: Keyring) -> Self {
        CredentialStore {
            db,
            keyring: std::sync::Arc::new(keyring),
            format: CipherFormat::Sealed,
        }
    }

    /// The same store, writing `format`. Use [`CipherFormat::Fernet`] while the
    /// existing Python system still reads the database. Both formats are always read.
    pub fn with_format(mut self, format: CipherFormat) -> Self {
        self.format = format;
        self
    }

    /// The format new ciphertexts are written in.
    pub fn format(&self) -> CipherFormat {
        self.format
    }

    /// The database the store runs on.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The keyring the store encrypts with.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn encrypt(&self, plaintext: &secrecy::SecretString, binding: Binding) -> String {
        self.keyring.encrypt(self.format, plaintext, &binding)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<super::CredentialStore>();
        let _: Option<&dyn super::CredentialRepository> = None;
    }
}

/// Where a field of a stored credential belongs.
fn binding(credential: &UserCredential, field: Field) -> Binding {
    Binding {
        credential_id: credential.id,
        account_id: credential.user_account_id,
        field,
    }
}

/// The current time at the precision the databases keep.
fn now() -> DateTime<Utc> {
    to_stored_precision(Utc::now())
}

// Lookups by a unique key (an id, a user id) use `get_result`, not `first`: `first`
// binds `LIMIT ?`, which measured 2.5 to 4 times slower on SQLite (see BENCHMARKS.md).

/// The credentials of one account of one user: the filter every credential query
/// starts from.
#[diesel::dsl::auto_type]
fn owned_by<'a>(account_id: SqlUuid, user_id: &'a str) -> _ {
    user_credentials::table
        .filter(user_credentials::user_account_id.eq(account_id))
        .filter(user_credentials::user_id.eq(user_id))
}

/// Newest first, with the id breaking ties.
#[diesel::dsl::auto_type]
fn newest_first() -> _ {
    (
        user_credentials::created_at.desc(),
        user_credentials::id.desc(),
    )
}

impl CredentialRepository for CredentialStore {
    fn create_account(&self, new: &NewUserAccount<'_>) -> Result<UserAccount> {
        let user_id = validation::user_id(new.user_id)?;
        let account_name = validation::account_name(new.account_name)?;
        let now = now();
        let row = AccountRow {
            id: SqlUuid(Uuid::now_v7()),
            user_id,
            account_name: &account_name,
            is_active: true,
            created_at: SqlTime(now),
            updated_at: SqlTime(now),
        };
        self.db
            .run(Scope::write(user_id), |conn| {
                Ok(
                    on_backend!(conn, c => diesel::insert_into(user_accounts::table)
                    .values(&row)
                    .returning(UserAccount::as_returning())
                    .get_result(c)?),
                )
            })
            .map_err(|err| match err {
                Error::Database(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    _,
                )) => Error::AccountExists {
                    user_id: user_id.to_owned(),
                },
                other => other,
            })
    }

    fn account(&self, user_id: &str, account_id: Uuid) -> Result<Option<UserAccount>> {
        let user_id = validation::user_id(user_id)?;
        self.db.run(Scope::read(user_id), |conn| {
            Ok(on_backend!(conn, c => user_accounts::table
                .filter(user_accounts::id.eq(SqlUuid(account_id)))
                .filter(user_accounts::user_id.eq(user_id))
                .select(UserAccount::as_select())
                .get_result(c)
                .optional()?))
        })
    }

    fn account_by_user_id(&self, user_id: &str) -> Result<Option<UserAccount>> {
        let user_id = validation::user_id(user_id)?;
        self.db.run(Scope::read(user_id), |conn| {
            Ok(on_backend!(conn, c => user_accounts::table
                .filter(user_accounts::user_id.eq(user_id))
                .select(UserAccount::as_select())
                .get_result(c)
                .optional()?))
        })
    }

    fn insert_credential(
        &self,
        account: &UserAccount,
        new: &NewUserCredential<'_>,
    ) -> Result<UserCredential> {
        let mut stored = self.insert_credentials(account, std::slice::from_ref(new))?;
        Ok(stored.pop().expect("one row in, one row out"))
    }

    fn insert_credentials(
        &self,
        account: &UserAccount,
        new: &[NewUserCredential<'_>],
    ) -> Result<Vec<UserCredential>> {
        // Validate and encrypt everything before the transaction: a refusal writes
        // nothing, and the write lock is held only for the INSERTs.
        let prepared = new
            .iter()
            .map(|new| PreparedCredential::new(self, account, new))
            .collect::<Result<Vec<_>>>()?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let now = SqlTime(now());
        self.db.run(Scope::write(&account.user_id), |conn| {
            on_backend!(conn, c => {
                let owner: Option<String> = user_accounts::table
                    .filter(user_accounts::id.eq(SqlUuid(account.id)))
                    .select(user_accounts::user_id)
                    .get_result(c)
                    .optional()?;
                match owner {
                    None => return Err(Error::UnknownAccount { account_id: account.id }),
                    Some(owner) if owner != account.user_id => {
                        return Err(Error::AccountUserMismatch {
                            account_id: account.id,
                            user_id: account.user_id.clone(),
                        })
                    }
                    Some(_) => {}
                }
                let mut stored = Vec::with_capacity(prepared.len());
                for chunk in prepared.chunks(INSERT_CHUNK_ROWS) {
                    let rows: Vec<CredentialRow<'_>> =
                        chunk.iter().map(|p| p.row(account, now)).collect();
                    stored.extend(
                        diesel::insert_into(user_credentials::table)
                            .values(&rows)
                            .returning(UserCredential::as_returning())
                            .get_results(c)?,
                    );
                }
                Ok(stored)
            })
        })
    }

    fn credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
    ) -> Result<Option<UserCredential>> {
        self.db.run(Scope::read(&account.user_id), |conn| {
            Ok(
                on_backend!(conn, c => owned_by(SqlUuid(account.id), &account.user_id)
                .filter(user_credentials::id.eq(SqlUuid(credential_id)))
                .select(UserCredential::as_select())
                .get_result(c)
                .optional()?),
            )
        })
    }

    fn list_credentials(&self, account: &UserAccount) -> Result<Vec<UserCredential>> {
        self.db.run(Scope::read(&account.user_id), |conn| {
            Ok(
                on_backend!(conn, c => owned_by(SqlUuid(account.id), &account.user_id)
                .order(newest_first())
                .select(UserCredential::as_select())
                .load(c)?),
            )
        })
    }

    fn find_by_type(
        &self,
        account: &UserAccount,
        credential_type: &str,
    ) -> Result<Vec<UserCredential>> {
        let credential_type = CredentialType::parse(credential_type)?;
        self.db.run(Scope::read(&account.user_id), |conn| {
            Ok(
                on_backend!(conn, c => owned_by(SqlUuid(account.id), &account.user_id)
                .filter(user_credentials::credential_type.eq(credential_type.as_str()))
                .order(newest_first())
                .select(UserCredential::as_select())
                .load(c)?),
            )
        })
    }

    fn find_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Vec<UserCredential>> {
        self.load_by_nickname(account, &Nickname::parse(nickname)?)
    }

    fn find_one_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Option<UserCredential>> {
        let nickname = Nickname::parse(nickname)?;
        let mut found = self.load_by_nickname(account, &nickname)?;
        match found.len() {
            0 | 1 => Ok(found.pop()),
            matches => Err(Error::AmbiguousNickname {
                account_id: account.id,
                nickname: nickname.as_str().to_owned(),
                matches,
            }),
        }
    }

    fn update_credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
        update: &CredentialUpdate,
    ) -> Result<UserCredential> {
        // `None` keeps, `Some(None)` stores NULL.
        let nickname: Option<Option<Nickname>> = match &update.nickname {
            Patch::Keep => None,
            Patch::Set(text) => Some(Some(Nickname::parse(text)?)),
            Patch::Clear => Some(None),
        };
        let encrypt = |field, key: &Option<secrecy::SecretString>| -> Result<Option<String>> {
            key.as_ref()
                .map(|key| {
                    validation::secret(field, key.expose_secret())?;
                    let binding = Binding {
                        credential_id,
                        account_id: account.id,
                        field,
                    };
                    Ok(self.encrypt(key, binding))
                })
                .transpose()
        };
        let api_key = encrypt(Field::ApiKey, &update.api_key)?;
        let secret_key = encrypt(Field::SecretKey, &update.secret_key)?;
        let changes = CredentialChanges {
            nickname: nickname.as_ref().map(|n| n.as_ref().map(Nickname::as_str)),
            api_key: api_key.as_deref(),
            secret_key: secret_key.as_deref(),
            is_active: update.is_active,
            expires_at: update
                .expires_at
                .clone()
                .map(|at| SqlTime(to_stored_precision(at)))
                .into_change(),
            updated_at: SqlTime(now()),
        };
        let updated = self.db.run(Scope::write(&account.user_id), |conn| {
            Ok(on_backend!(conn, c => diesel::update(
                owned_by(SqlUuid(account.id), &account.user_id).filter(user_credentials::id.eq(SqlUuid(credential_id))),
            )
            .set(&changes)
            .returning(UserCredential::as_returning())
            .get_result(c)
            .optional()?))
        })?;
        updated.ok_or(Error::CredentialNotFound {
            account_id: account.id,
            credential_id,
        })
    }

    fn delete_credential(&self, account: &UserAccount, credential_id: Uuid) -> Result<()> {
        let deleted = self.db.run(Scope::write(&account.user_id), |conn| {
            Ok(on_backend!(conn, c => diesel::delete(
                owned_by(SqlUuid(account.id), &account.user_id).filter(user_credentials::id.eq(SqlUuid(credential_id))),
            )
            .execute(c)?))
        })?;
        match deleted {
            0 => Err(Error::CredentialNotFound {
                account_id: account.id,
                credential_id,
            }),
            _ => Ok(()),
        }
    }

    fn credential_keys(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
    ) -> Result<CredentialKeys> {
        let found: Option<(UserCredential, LossyText, LossyText)> =
            self.db.run(Scope::read(&account.user_id), |conn| {
                Ok(
                    on_backend!(conn, c => owned_by(SqlUuid(account.id), &account.user_id)
                    .filter(user_credentials::id.eq(SqlUuid(credential_id)))
                    .select((
                        UserCredential::as_select(),
                        user_credentials::api_key,
                        user_credentials::secret_key,
                    ))
                    .get_result(c)
                    .optional()?),
                )
            })?;
        let (credential, api_key, secret_key) = found.ok_or(Error::CredentialNotFound {
            account_id: account.id,
            credential_id,
        })?;
        if !credential.is_active {
            return Err(Error::CredentialInactive { credential_id });
        }
        if let Some(expired_at) = credential.expires_at.filter(|at| *at <= Utc::now()) {
            return Err(Error::CredentialExpired {
                credential_id,
                expired_at,
            });
        }
        Ok(CredentialKeys::new(
            self.keyring
                .decrypt(&api_key.0, &binding(&credential, Field::ApiKey))?,
            self.keyring
                .decrypt(&secret_key.0, &binding(&credential, Field::SecretKey))?,
        ))
    }

    fn backfill_nicknames(&self, batch_size: usize) -> Result<u64> {
        let limit = validation::batch_size(batch_size)?;
        self.require_rls_bypass("backfill_nicknames")?;
        let mut total = 0u64;
        let mut after = Uuid::nil();
        loop {
            // Walk the primary key: each batch starts where the last one ended, so the
            // whole run reads the table once however many rows are already done.
            let (changed, last) = self.db.run(Scope::maintenance(), |conn| {
                on_backend!(conn, c => {
                    let ids: Vec<Uuid> = user_credentials::table
                        .filter(user_credentials::nickname.is_null())
                        .filter(user_credentials::id.gt(SqlUuid(after)))
                        .order(user_credentials::id)
                        .select(user_credentials::id)
                        .limit(limit)
                        .load(c)?;
                    // `nickname IS NULL` again: a nickname set since the SELECT wins.
                    let changed = diesel::update(
                        user_credentials::table
                            .filter(user_credentials::id.eq_any(ids.iter().copied().map(SqlUuid).collect::<Vec<_>>()))
                            .filter(user_credentials::nickname.is_null()),
                    )
                    .set(user_credentials::nickname.eq(user_credentials::credential_type.nullable()))
                    .execute(c)?;
                    Ok((changed as u64, ids.last().copied()))
                })
            })?;
            total += changed;
            match last {
                Some(last) => after = last,
                None => return Ok(total),
            }
        }
    }

    fn rotate_keys(
        &self,
        batch_size: usize,
        progress: &mut dyn FnMut(&RotationProgress),
    ) -> Result<RotationProgress> {
        let limit = validation::batch_size(batch_size)?;
        self.require_rls_bypass("rotate_keys")?;
        let total: i64 = self.db.run(Scope::maintenance_read(), |conn| {
            Ok(on_backend!(conn, c => user_credentials::table.count().get_result(c)?))
        })?;
        let mut state = RotationProgress {
            scanned: 0,
            total: total as u64,
            rewritten: 0,
        };
        let mut failures = Vec::new();
        let mut after = Uuid::nil();
        while let Some(batch) = self.stored_batch(after, limit)? {
            after = batch.last().map_or(after, |row| row.id);
            let mut rewrites = Vec::new();
            for row in &batch {
                // Every row is decrypted, even one already current: a ciphertext that
                // does not open is reported, never passed over.
                let binding = |field| Binding {
                    credential_id: row.id,
                    account_id: row.account_id,
                    field,
                };
                let api_key = self.keyring.decrypt(&row.api_key, &binding(Field::ApiKey));
                let secret_key = self
                    .keyring
                    .decrypt(&row.secret_key, &binding(Field::SecretKey));
                match (api_key, secret_key) {
                    (Ok(api_key), Ok(secret_key)) => {
                        let current = |text: &str| self.keyring.is_current(self.format, text);
                        if !(current(&row.api_key) && current(&row.secret_key)) {
                            rewrites.push((
                                row,
                                self.encrypt(&api_key, binding(Field::ApiKey)),
                                self.encrypt(&secret_key, binding(Field::SecretKey)),
                            ));
                        }
                    }
                    (api_key, secret_key) => {
                        failures.extend(api_key.err().into_iter().chain(secret_key.err()))
                    }
                }
            }
            if !rewrites.is_empty() {
                let written = self.db.run(Scope::maintenance(), |conn| {
                    on_backend!(conn, c => {
                        let mut written = 0;
                        for (row, api_key, secret_key) in &rewrites {
                            written += diesel::update(
                                user_credentials::table
                                    .filter(user_credentials::id.eq(SqlUuid(row.id)))
                                    .filter(user_credentials::api_key.eq(&row.api_key))
                                    .filter(user_credentials::secret_key.eq(&row.secret_key)),
                            )
                            .set((
                                user_credentials::api_key.eq(api_key),
                                user_credentials::secret_key.eq(secret_key),
                            ))
                            .execute(c)?;
                        }
                        Ok(written)
                    })
                })?;
                state.rewritten += written as u64;
            }
            state.scanned += batch.len() as u64;
            progress(&state);
        }
        if failures.is_empty() {
            Ok(state)
        } else {
            Err(Error::RotationIncomplete {
                rewritten: state.rewritten,
                failures,
            })
        }
    }

    fn key_usage(&self) -> Result<Vec<KeyUsage>> {
        self.require_rls_bypass("key_usage")?;
        let mut counts: std::collections::BTreeMap<(CipherFormat, Option<String>), u64> =
            std::collections::BTreeMap::new();
        let mut after = Uuid::nil();
        while let Some(batch) = self.stored_batch(after, 1000)? {
            after = batch.last().map_or(after, |row| row.id);
            for row in &batch {
                let [api_key, secret_key] =
                    [&row.api_key, &row.secret_key].map(|text| match self.keyring.origin(text) {
                        Origin::Sealed { key_id } => (CipherFormat::Sealed, Some(key_id)),
                        Origin::Fernet { key } => (
                            CipherFormat::Fernet,
                            key.map(|k| self.keyring.key_id(k).to_owned()),
                        ),
                        Origin::Unreadable => (CipherFormat::Sealed, None),
                    });
                if secret_key != api_key {
                    *counts.entry(secret_key).or_default() += 1;
                }
                *counts.entry(api_key).or_default() += 1;
            }
        }
        Ok(counts
            .into_iter()
            .map(|((format, key_id), credentials)| KeyUsage {
                in_keyring: key_id
                    .as_deref()
                    .is_some_and(|id| self.keyring.key_ids().any(|k| k == id)),
                format,
                key_id,
                credentials,
            })
            .collect())
    }
}

/// Rows per multi-row INSERT: 11 bound values each, far under SQLite's 32766 and
/// PostgreSQL's 65535 bind limits.
const INSERT_CHUNK_ROWS: usize = 1000;

/// A validated, encrypted credential, ready to insert.
struct PreparedCredential {
    id: Uuid,
    credential_type: CredentialType,
    nickname: Nickname,
    api_key: String,
    secret_key: String,
    is_active: bool,
    expires_at: Option<SqlTime>,
}

impl PreparedCredential {
    fn new(
        store: &CredentialStore,
        account: &UserAccount,
        new: &NewUserCredential<'_>,
    ) -> Result<Self> {
        let credential_type = CredentialType::parse(new.credential_type)?;
        let nickname = validation::insert_nickname(new.nickname, &credential_type)?;
        validation::secret(Field::ApiKey, new.api_key.expose_secret())?;
        validation::secret(Field::SecretKey, new.secret_key.expose_secret())?;
        let id = Uuid::now_v7();
        let binding = |field| Binding {
            credential_id: id,
            account_id: account.id,
            field,
        };
        Ok(PreparedCredential {
            id,
            api_key: store.encrypt(&new.api_key, binding(Field::ApiKey)),
            secret_key: store.encrypt(&new.secret_key, binding(Field::SecretKey)),
            credential_type,
            nickname,
            is_active: new.is_active,
            expires_at: new.expires_at.map(|at| SqlTime(to_stored_precision(at))),
        })
    }

    fn row<'a>(&'a self, account: &'a UserAccount, now: SqlTime) -> CredentialRow<'a> {
        CredentialRow {
            id: SqlUuid(self.id),
            user_account_id: SqlUuid(account.id),
            user_id: &account.user_id,
            credential_type: self.credential_type.as_str(),
            nickname: Some(self.nickname.as_str()),
            api_key: &self.api_key,
            secret_key: &self.secret_key,
            is_active: self.is_active,
            expires_at: self.expires_at,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A credential's ciphertexts, as maintenance reads them.
struct StoredRow {
    id: Uuid,
    account_id: Uuid,
    api_key: String,
    secret_key: String,
}

impl CredentialStore {
    /// The next `limit` credentials after `after`, by id, across all accounts; `None`
    /// past the end.
    fn stored_batch(&self, after: Uuid, limit: i64) -> Result<Option<Vec<StoredRow>>> {
        let rows: Vec<(Uuid, Uuid, LossyText, LossyText)> =
            self.db.run(Scope::maintenance_read(), |conn| {
                Ok(on_backend!(conn, c => user_credentials::table
                .filter(user_credentials::id.gt(SqlUuid(after)))
                .order(user_credentials::id)
                .select((
                    user_credentials::id,
                    user_credentials::user_account_id,
                    user_credentials::api_key,
                    user_credentials::secret_key,
                ))
                .limit(limit)
                .load(c)?))
            })?;
        let rows: Vec<StoredRow> = rows
            .into_iter()
            .map(
                |(id, account_id, LossyText(api_key), LossyText(secret_key))| StoredRow {
                    id,
                    account_id,
                    api_key,
                    secret_key,
                },
            )
            .collect();
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// The account's credentials with this (validated) nickname, newest first.
    fn load_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &Nickname,
    ) -> Result<Vec<UserCredential>> {
        self.db.run(Scope::read(&account.user_id), |conn| {
            Ok(
                on_backend!(conn, c => owned_by(SqlUuid(account.id), &account.user_id)
                .filter(user_credentials::nickname.eq(nickname.as_str()))
                .order(newest_first())
                .select(UserCredential::as_select())
                .load(c)?),
            )
        })
    }

    /// Fails unless the current role sees every row of `user_credentials`.
    fn require_rls_bypass(&self, operation: &'static str) -> Result<()> {
        #[cfg(feature = "postgres")]
        {
            use crate::connection::row_security_active;
            let active = self.db.raw(|conn| match conn {
                crate::connection::Conn::Postgres(c) => {
                    Ok(diesel::select(row_security_active("user_credentials"))
                        .get_result::<bool>(c)?)
                }
                #[allow(unreachable_patterns)]
                _ => Ok(false),
            })?;
            if active {
                return Err(Error::RowSecurityActive { operation });
            }
        }
        let _ = operation;
        Ok(())
    }
}
