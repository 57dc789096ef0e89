//! The per-user operations, written once for every executor.
//!
//! Each operation is the same three moves: the steps without I/O
//! ([`steps`](crate::steps)), the statements ([`query`](crate::query)) handed to an
//! [`Executor`], and the steps that judge what came back. The blocking
//! [`CredentialStore`](crate::CredentialStore) runs them on an executor whose
//! futures are ready at once; the async store on one that awaits the network.

use crate::backend::{Backend, Execute, Load, Scope};
use crate::crypto::{
    AccountKey, CipherFormat, CredentialKeys, DataKeyCache, FormatVersion, KeyHierarchy,
    KeyProvider, Keyring, SealRequest, StoredDataKey,
};
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::models::{
    AccountScope, CredentialUpdate, NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use crate::query;
use crate::steps::{self, first};
use crate::validation;
use std::future::Future;
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// The operations of a store, over its executor.
#[derive(Debug, Clone)]
pub(crate) struct Core<E> {
    pub exec: E,
    /// The keyring, the key provider that wraps data keys (the keyring unless the
    /// store was given another), the data-key cache and the minimum format.
    pub keys: KeyHierarchy,
    pub format: CipherFormat,
}

/// The constructor and accessors of a store over `Core<$db>`, for both stores.
macro_rules! store_basics {
    ($store:ident, $db:ty) => {
        impl $store {
            /// A store on a (migrated) database, encrypting with `keyring` in the
            /// [sealed](crate::CipherFormat::Sealed) format. The keyring is a
            /// [`Keyring`](crate::Keyring) or an `Arc<Keyring>` shared with other
            /// stores and [`Maintenance`](crate::Maintenance), so keys are parsed once.
            pub fn new(db: $db, keyring: impl Into<std::sync::Arc<crate::Keyring>>) -> Self {
                $store {
                    core: crate::ops::Core::new(db, keyring),
                }
            }

            /// The same store, writing `format`. Use
            /// [`CipherFormat::Fernet`](crate::CipherFormat::Fernet) while the existing
            /// Python system still reads the database. Every format at or above the
            /// [minimum](Self::with_minimum_format) is read.
            #[must_use]
            pub fn with_format(self, format: crate::CipherFormat) -> Self {
                $store {
                    core: self.core.with_format(format),
                }
            }

            /// The same store, wrapping each account's data key with `provider`
            /// (a KMS) instead of the keyring: see
            /// [key providers](crate::crypto#key-providers). Data keys the keyring
            /// wrapped before stay readable (the keyring unwraps them) until
            /// [rotation](crate::Maintenance::rotate_keys) re-wraps them with the
            /// provider.
            #[must_use]
            pub fn with_key_provider(
                self,
                provider: std::sync::Arc<dyn crate::KeyProvider>,
            ) -> Self {
                $store {
                    core: self.core.with_key_provider(provider),
                }
            }

            /// The same store, holding unwrapped data keys in `cache`: give one
            /// cache to every store of a process so that each account's data key
            /// is unwrapped once.
            #[must_use]
            pub fn with_data_key_cache(self, cache: std::sync::Arc<crate::DataKeyCache>) -> Self {
                $store {
                    core: self.core.with_data_key_cache(cache),
                }
            }

            /// The same store, refusing to open a ciphertext older than `minimum`
            /// ([`Error::FormatRefused`](crate::Error::FormatRefused)), even one
            /// pasted into a row from a backup. The default is
            /// [`FormatVersion::Fernet`](crate::FormatVersion::Fernet): every format
            /// is read, as the existing Python system needs. Raise it to
            /// `SealedV3` once [`rotate_keys`](crate::Maintenance::rotate_keys) has
            /// converted every row; a store that writes Fernet under a higher
            /// minimum refuses its own writes.
            #[must_use]
            pub fn with_minimum_format(self, minimum: crate::FormatVersion) -> Self {
                $store {
                    core: self.core.with_minimum_format(minimum),
                }
            }

            /// The oldest ciphertext format the store opens.
            pub fn minimum_format(&self) -> crate::FormatVersion {
                self.core.keys.minimum
            }

            /// The cache of unwrapped data keys, to share with another store.
            pub fn data_key_cache(&self) -> &std::sync::Arc<crate::DataKeyCache> {
                &self.core.keys.cache
            }

            /// The format new ciphertexts are written in.
            pub fn format(&self) -> crate::CipherFormat {
                self.core.format
            }

            /// The database the store runs on.
            pub fn database(&self) -> &$db {
                &self.core.exec
            }

            /// The keyring the store was made with (and its
            /// [maintenance](crate::Maintenance) uses).
            pub fn keyring(&self) -> &crate::Keyring {
                &self.core.keys.keyring
            }
        }
    };
}
pub(crate) use store_basics;

/// The span of one public call: operation, backend, account id, row count.
pub(crate) fn span(
    operation: &'static str,
    backend: Backend,
    account_id: Option<Uuid>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "credential_store",
        operation,
        backend = backend.as_str(),
        account_id = tracing::field::Empty,
        rows = tracing::field::Empty,
    );
    if let Some(id) = account_id {
        span.record("account_id", tracing::field::display(id));
    }
    span
}

/// Records how many rows the current call read or wrote.
pub(crate) fn record_rows(rows: usize) {
    tracing::Span::current().record("rows", rows as u64);
}

/// Runs `operation` inside its span; a failure is logged as an event of the span
/// (error messages never hold key material).
async fn traced<T>(span: tracing::Span, operation: impl Future<Output = Result<T>>) -> Result<T> {
    async move {
        let result = operation.await;
        if let Err(err) = &result {
            tracing::debug!(error = %err, "failed");
        }
        result
    }
    .instrument(span)
    .await
}

impl<E> Core<E> {
    /// A store's operations on `exec`, writing the sealed format.
    pub fn new(exec: E, keyring: impl Into<Arc<Keyring>>) -> Self {
        Core {
            exec,
            keys: KeyHierarchy::new(keyring.into()),
            format: CipherFormat::Sealed,
        }
    }

    /// The same, writing `format`.
    pub fn with_format(mut self, format: CipherFormat) -> Self {
        self.format = format;
        self
    }

    /// The same, wrapping data keys with `provider`.
    pub fn with_key_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.keys.provider = provider;
        self
    }

    /// The same, caching data keys in `cache`.
    pub fn with_data_key_cache(mut self, cache: Arc<DataKeyCache>) -> Self {
        self.keys.cache = cache;
        self
    }

    /// The same, opening nothing older than `minimum`.
    pub fn with_minimum_format(mut self, minimum: FormatVersion) -> Self {
        self.keys.minimum = minimum;
        self
    }
}

impl<E: Executor> Core<E> {
    fn span(&self, operation: &'static str, account_id: Option<Uuid>) -> tracing::Span {
        span(operation, self.exec.backend(), account_id)
    }

    /// Seals every request in the store's format: sealed v3 under the account's
    /// data key (made and stored on the account's first write), or Fernet. No
    /// provider call when the data key is cached.
    async fn seal(
        &self,
        account: &AccountScope,
        requests: &[SealRequest<'_>],
    ) -> Result<Vec<String>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let data_key = match self.format {
            CipherFormat::Sealed => Some(self.write_data_key(account).await?),
            _ => None,
        };
        self.keys.seal(self.format, data_key.as_ref(), requests)
    }

    /// The account's data key for sealing: cached, else read and unwrapped, else
    /// made, wrapped and stored (the first of two concurrent first writes wins;
    /// the other uses its key).
    pub(crate) async fn write_data_key(&self, account: &AccountScope) -> Result<AccountKey> {
        if let Some((key, (version, _))) = self.keys.cache.get(account.id, None) {
            return Ok((key, version));
        }
        if let Some(stored) = self.stored_data_key(account).await? {
            return self
                .keys
                .data_key(account.id, &account.user_id, &stored)
                .await;
        }
        let (key, stored) = self
            .keys
            .new_data_key(account.id, &account.user_id, 1)
            .await?;
        let statement = vec![query::insert_account_key(account, &stored)];
        match self
            .exec
            .execute(Scope::write(&account.user_id), statement)
            .await
        {
            Ok(_) => {
                let key = Arc::new(key);
                self.keys
                    .cache
                    .insert(account.id, stored.fingerprint(), Arc::clone(&key));
                Ok((key, stored.version))
            }
            Err(err) if err.is_unique_violation() => {
                let stored = self
                    .stored_data_key(account)
                    .await?
                    .ok_or(Error::UnknownAccount {
                        account_id: account.id,
                    })?;
                self.keys
                    .data_key(account.id, &account.user_id, &stored)
                    .await
            }
            // No such account of this user (or another user's).
            Err(err) if err.is_owner_violation() => Err(Error::UnknownAccount {
                account_id: account.id,
            }),
            Err(err) => Err(err),
        }
    }

    /// The account's stored data key, if it has one, read where writes go (never a
    /// lagging replica: a key stored by another process must be seen, or a second
    /// one would be made for the account).
    async fn stored_data_key(&self, account: &AccountScope) -> Result<Option<StoredDataKey>> {
        let statement = vec![query::account_key(account)];
        let found = first(
            self.exec
                .load(Scope::write(&account.user_id), statement)
                .await?,
        );
        found
            .map(|columns| StoredDataKey::from_columns(account.id, columns))
            .transpose()
    }

    /// The keys of a credential that passed the checks before a reveal: formats
    /// below the minimum refused first, then, if a field is sealed v3, the
    /// account's data key unwrapped (or taken from the cache), and any retired
    /// key a field is still sealed under read and unwrapped (a row a data-key
    /// rotation has not reached yet); then both fields opened.
    async fn reveal(&self, revealable: &steps::Revealable) -> Result<CredentialKeys> {
        let requests = revealable.open_requests();
        let mut data_keys = Vec::new();
        if self.keys.check_formats(&requests)? {
            let credential = &revealable.credential;
            let (account_id, user_id) = (credential.user_account_id, &credential.user_id);
            if let Some(stored) = revealable.data_key()? {
                data_keys.push(self.keys.data_key(account_id, user_id, &stored).await?);
            }
            for version in KeyHierarchy::missing_versions(&requests, &data_keys) {
                let statement = vec![query::retired_account_key(account_id, user_id, version)];
                let found = first(self.exec.load(Scope::read(user_id), statement).await?);
                if let Some(columns) = found {
                    let stored = StoredDataKey::from_columns(account_id, columns)?;
                    data_keys.push(
                        self.keys
                            .retired_data_key(account_id, user_id, &stored)
                            .await?,
                    );
                }
            }
        }
        let [api_key, secret_key] = requests.map(|r| self.keys.open(&data_keys, &r));
        Ok(CredentialKeys::new(api_key?, secret_key?))
    }

    /// After an insert met a unique index: the credentials as stored when every new
    /// one carries a caller-chosen id and is stored under the account with the same
    /// content (a retried write whose first attempt committed), else
    /// [`Error::CredentialIdConflict`] for the first id that does not match.
    async fn replayed_insert(
        &self,
        account: &AccountScope,
        new: &[NewUserCredential<'_>],
        expected: &[steps::ExpectedCredential],
    ) -> Result<Vec<UserCredential>> {
        let mut stored = Vec::with_capacity(expected.len());
        for (new, expected) in new.iter().zip(expected) {
            let conflict = || Error::CredentialIdConflict {
                account_id: account.id,
                credential_id: expected.id,
            };
            if !expected.caller_chosen {
                return Err(conflict());
            }
            let statement = vec![query::credential_with_ciphertexts(account, expected.id)];
            let found = first(
                self.exec
                    .load(Scope::read(&account.user_id), statement)
                    .await?,
            );
            let Some(found) = found else {
                return Err(conflict());
            };
            let credential = found.0.clone();
            if !expected.matches(&credential) {
                return Err(conflict());
            }
            let keys = self.reveal(&steps::Revealable::stored(found)).await?;
            if !steps::same_keys(new, &keys) {
                return Err(conflict());
            }
            stored.push(credential);
        }
        Ok(stored)
    }

    pub async fn create_account(&self, new: &NewUserAccount<'_>) -> Result<UserAccount> {
        traced(self.span("create_account", None), async {
            let row = steps::account_row(new)?;
            let user_id = row.user_id.clone();
            let statement = vec![query::insert_account(row)];
            let inserted = self
                .exec
                .load_written(Scope::write(&user_id), statement)
                .await;
            let account = steps::created_account(&user_id, inserted)?;
            tracing::Span::current().record("account_id", tracing::field::display(account.id()));
            record_rows(1);
            Ok(account)
        })
        .await
    }

    pub async fn account(&self, user_id: &str, account_id: Uuid) -> Result<Option<UserAccount>> {
        traced(self.span("account", Some(account_id)), async {
            let user_id = validation::user_id(user_id)?;
            let statement = vec![query::account(user_id, account_id)];
            let found = first(self.exec.load(Scope::read(user_id), statement).await?);
            record_rows(found.iter().len());
            Ok(found)
        })
        .await
    }

    pub async fn account_by_user_id(&self, user_id: &str) -> Result<Option<UserAccount>> {
        traced(self.span("account_by_user_id", None), async {
            let user_id = validation::user_id(user_id)?;
            let statement = vec![query::account_by_user_id(user_id)];
            let found = first(self.exec.load(Scope::read(user_id), statement).await?);
            if let Some(account) = &found {
                tracing::Span::current()
                    .record("account_id", tracing::field::display(account.id()));
            }
            record_rows(found.iter().len());
            Ok(found)
        })
        .await
    }

    pub async fn insert_credential(
        &self,
        account: &AccountScope,
        new: &NewUserCredential<'_>,
    ) -> Result<UserCredential> {
        let stored = self
            .insert_credentials(account, std::slice::from_ref(new))
            .await?;
        // One row in, one row out: an INSERT that reported success returned it.
        first(stored).ok_or(Error::Database(diesel::result::Error::NotFound))
    }

    pub async fn insert_credentials(
        &self,
        account: &AccountScope,
        new: &[NewUserCredential<'_>],
    ) -> Result<Vec<UserCredential>> {
        traced(self.span("insert_credentials", Some(account.id)), async {
            // Validate and encrypt everything before the transaction: a refusal writes
            // nothing, and the write lock is held only for the INSERTs.
            let rows = steps::new_credentials(account, new)?;
            let expected = rows.expected();
            let sealed = self.seal(account, &rows.requests).await?;
            let chunks = rows.into_chunks(sealed);
            if chunks.is_empty() {
                return Ok(Vec::new());
            }
            let scope = Scope::write(&account.user_id);
            let inserted = match steps::single_row(chunks) {
                Ok(row) => {
                    self.exec
                        .load_written(scope, vec![query::insert_credential(row)])
                        .await
                }
                Err(chunks) => {
                    let statements = chunks.into_iter().map(query::insert_credentials).collect();
                    self.exec.load_written(scope, statements).await
                }
            };
            let stored = match inserted {
                Err(err) if err.is_owner_violation() => {
                    let owner = vec![query::account_owner(account.id)];
                    let owner = first(self.exec.load(Scope::read(&account.user_id), owner).await?);
                    return Err(steps::owner_error(account, owner, err));
                }
                // A caller-chosen id already stored: a retry of a committed write
                // returns what it stored; anything else is a conflict.
                Err(err) if err.is_unique_violation() => {
                    self.replayed_insert(account, new, &expected).await?
                }
                other => other?,
            };
            record_rows(stored.len());
            Ok(stored)
        })
        .await
    }

    pub async fn credential(
        &self,
        account: &AccountScope,
        id: Uuid,
    ) -> Result<Option<UserCredential>> {
        self.load_credentials("credential", account, || Ok(query::credential(account, id)))
            .await
            .map(first)
    }

    pub async fn credentials(&self, account: &AccountScope) -> Result<Vec<UserCredential>> {
        self.load_credentials("credentials", account, || Ok(query::credentials(account)))
            .await
    }

    pub async fn credentials_by_type(
        &self,
        account: &AccountScope,
        credential_type: &str,
    ) -> Result<Vec<UserCredential>> {
        self.load_credentials("credentials_by_type", account, || {
            let credential_type = validation::lookup_type(credential_type)?;
            Ok(query::credentials_by_type(account, credential_type))
        })
        .await
    }

    pub async fn credentials_by_nickname(
        &self,
        account: &AccountScope,
        nickname: &str,
    ) -> Result<Vec<UserCredential>> {
        self.load_credentials("credentials_by_nickname", account, || {
            let (nickname, exact) = validation::lookup_nicknames(nickname)?;
            Ok(query::credentials_by_nickname(
                account,
                nickname.as_str(),
                &exact,
            ))
        })
        .await
    }

    pub async fn credential_by_nickname(
        &self,
        account: &AccountScope,
        nickname: &str,
    ) -> Result<Option<UserCredential>> {
        traced(
            self.span("credential_by_nickname", Some(account.id)),
            self.one_by_nickname(account, nickname, |nickname, exact| {
                query::credentials_by_nickname(account, nickname, exact)
            }),
        )
        .await
    }

    pub async fn keys_by_nickname(
        &self,
        account: &AccountScope,
        nickname: &str,
    ) -> Result<Option<(UserCredential, CredentialKeys)>> {
        traced(self.span("keys_by_nickname", Some(account.id)), async {
            let found = self
                .one_by_nickname(account, nickname, |nickname, exact| {
                    query::credentials_by_nickname_with_ciphertexts(account, nickname, exact)
                })
                .await?;
            let Some(row) = found else { return Ok(None) };
            let revealable = steps::revealable(account, row.0.id, Some(row))?;
            let keys = self.reveal(&revealable).await?;
            Ok(Some((revealable.credential, keys)))
        })
        .await
    }

    /// The one row a nickname lookup finds, never one of several.
    async fn one_by_nickname<T: Send + 'static, Q: Load<T>>(
        &self,
        account: &AccountScope,
        nickname: &str,
        statement: impl FnOnce(&str, &str) -> Q,
    ) -> Result<Option<T>> {
        let (nickname, exact) = validation::lookup_nicknames(nickname)?;
        let statement = vec![statement(nickname.as_str(), &exact)];
        let found = self
            .exec
            .load(Scope::read(&account.user_id), statement)
            .await?;
        record_rows(found.len());
        steps::single_match(found, |matches| Error::AmbiguousNickname {
            account_id: account.id,
            nickname: nickname.as_str().to_owned(),
            matches,
        })
    }

    pub async fn credential_by_type(
        &self,
        account: &AccountScope,
        credential_type: &str,
    ) -> Result<Option<UserCredential>> {
        traced(self.span("credential_by_type", Some(account.id)), async {
            let credential_type = validation::lookup_type(credential_type)?;
            let statement = vec![query::credentials_by_type(account, credential_type)];
            let found = self
                .exec
                .load(Scope::read(&account.user_id), statement)
                .await?;
            record_rows(found.len());
            steps::single_match(found, |matches| Error::AmbiguousType {
                account_id: account.id,
                credential_type: credential_type.to_owned(),
                matches,
            })
        })
        .await
    }

    /// Loads credentials of the account with one statement, in a span of its own.
    async fn load_credentials<Q: Load<UserCredential>>(
        &self,
        operation: &'static str,
        account: &AccountScope,
        statement: impl FnOnce() -> Result<Q>,
    ) -> Result<Vec<UserCredential>> {
        traced(self.span(operation, Some(account.id)), async {
            let statement = statement()?;
            let found = self
                .exec
                .load(Scope::read(&account.user_id), vec![statement])
                .await?;
            record_rows(found.len());
            Ok(found)
        })
        .await
    }

    pub async fn update_credential(
        &self,
        account: &AccountScope,
        credential_id: Uuid,
        update: &CredentialUpdate,
    ) -> Result<UserCredential> {
        traced(self.span("update_credential", Some(account.id)), async {
            let changes = steps::credential_changes(account, credential_id, update)?;
            let sealed = self.seal(account, &changes.requests).await?;
            let changes = changes.into_changes(sealed);
            // New keys replace ciphertexts: the old ones must leave the file too.
            let mut scope = Scope::write(&account.user_id);
            if changes.api_key.is_some() || changes.secret_key.is_some() {
                scope = scope.erasing();
            }
            let statement = vec![query::update_credential(account, credential_id, changes)];
            let updated = self.exec.load_written(scope, statement).await?;
            record_rows(updated.len());
            first(updated).ok_or_else(|| steps::not_found(account, credential_id))
        })
        .await
    }

    pub async fn delete_credential(
        &self,
        account: &AccountScope,
        credential_id: Uuid,
    ) -> Result<()> {
        traced(
            self.span("delete_credential", Some(account.id)),
            self.delete(
                account,
                query::delete_credential(account, credential_id),
                || steps::not_found(account, credential_id),
            ),
        )
        .await
    }

    pub async fn delete_account(&self, account: &AccountScope) -> Result<()> {
        traced(self.span("delete_account", Some(account.id)), async {
            self.delete(account, query::delete_account(account), || {
                Error::UnknownAccount {
                    account_id: account.id,
                }
            })
            .await?;
            // Its data key is gone from the database; gone from memory too.
            self.keys.cache.evict(account.id);
            Ok(())
        })
        .await
    }

    /// Runs one delete of the account's rows, erasing what it removed; `missing`
    /// when it deleted nothing.
    async fn delete<Q: Execute>(
        &self,
        account: &AccountScope,
        statement: Q,
        missing: impl FnOnce() -> Error,
    ) -> Result<()> {
        let deleted = self
            .exec
            .execute(Scope::write(&account.user_id).erasing(), vec![statement])
            .await?;
        record_rows(deleted);
        match deleted {
            0 => Err(missing()),
            _ => Ok(()),
        }
    }

    pub async fn keys(
        &self,
        account: &AccountScope,
        credential_id: Uuid,
    ) -> Result<CredentialKeys> {
        traced(self.span("keys", Some(account.id)), async {
            let statement = vec![query::credential_with_ciphertexts(account, credential_id)];
            let found = first(
                self.exec
                    .load(Scope::read(&account.user_id), statement)
                    .await?,
            );
            record_rows(found.iter().len());
            self.reveal_found(account, credential_id, found).await
        })
        .await
    }

    /// The checks before a reveal on a row as read, then the reveal.
    pub(crate) async fn reveal_found(
        &self,
        account: &AccountScope,
        credential_id: Uuid,
        found: Option<query::WithCiphertexts>,
    ) -> Result<CredentialKeys> {
        let revealable = steps::revealable(account, credential_id, found)?;
        self.reveal(&revealable).await
    }
}
