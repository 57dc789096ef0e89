//! The async API for tokio services (cargo feature `async`).
//!
//! [`AsyncCredentialStore`] offers every operation of
//! [`CredentialRepository`](crate::CredentialRepository) as an `async fn`, with the
//! same validation, errors, spans and account scoping: both stores run the one body
//! of each operation, only the executor differs.
//!
//! - **PostgreSQL**: diesel-async's `AsyncPgConnection` (tokio-postgres) in a
//!   deadpool pool. A call's `BEGIN`, `set_config('app.current_user_id', $1, true)`
//!   (a bound parameter), statement and `COMMIT` are sent without waiting for each
//!   other: one network round trip. The pool prepares every per-user read and the
//!   delete when it opens a connection (in a transaction it rolls back), so this
//!   holds from a connection's first call; a one-row insert is prepared by its first
//!   use. A statement the connection has not prepared (and those whose SQL diesel
//!   does not cache: multi-row INSERTs, changeset UPDATEs) is sent
//!   with the others and `COMMIT` follows once it has run, so that `COMMIT` cannot
//!   overtake its preparation: two or three round trips. The context is local to
//!   the transaction; a call cancelled mid-flight (a dropped future, a timeout, an
//!   aborted task) closes its connection instead of returning it to the pool, so
//!   no context or open transaction reaches another call. **A cancelled write's
//!   outcome is unknown**: the call sends its `COMMIT` with its statements, so the
//!   server may have committed it before the connection closed (otherwise the
//!   server rolls it back). Retry such a write with a caller-chosen id
//!   ([`NewUserCredential::with_id`](crate::NewUserCredential::with_id)): the insert
//!   is idempotent on it.
//! - **SQLite** and **MariaDB/MySQL**: the blocking store's executor on tokio's
//!   blocking thread pool, one hop per call, so the runtime's worker threads never
//!   wait on the file or the server. A cancelled call's transaction still runs to
//!   its end (commit or rollback) on that thread. (MySQL calls are not pipelined:
//!   a write is `BEGIN`, the statements and `COMMIT`, a round trip each.)
//!
//! The async PostgreSQL connection does not negotiate TLS (tokio-postgres `NoTls`):
//! use it on a trusted network or through a local TLS tunnel, or the blocking store
//! (libpq) where TLS to the server is required.

pub use crate::async_database::AsyncDatabase;
use crate::crypto::CredentialKeys;
use crate::error::Result;
use crate::models::{
    CredentialUpdate, NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use crate::ops::Core;
use uuid::Uuid;

/// The async store: every operation of
/// [`CredentialRepository`](crate::CredentialRepository) as an `async fn`, with the
/// same validation, errors and account scoping. Cross-user maintenance stays with
/// the blocking [`Maintenance`](crate::Maintenance).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), credential_store::Error> {
/// use credential_store::{AsyncCredentialStore, AsyncDatabase, Keyring, NewUserAccount,
///     NewUserCredential};
/// use secrecy::ExposeSecret;
///
/// let dir = tempfile::tempdir().unwrap();
/// let db = AsyncDatabase::open(dir.path().join("store.db").to_str().unwrap()).await?;
/// db.run_migrations().await?;
/// let keyring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()])?;
/// let store = AsyncCredentialStore::new(db, keyring);
///
/// let account = store.create_account(&NewUserAccount { user_id: "auth0|42", account_name: "Ada" }).await?;
/// store.insert_credential(&account, &NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Swing")).await?;
/// let swing = store.find_one_by_nickname(&account, "Swing").await?.expect("stored above");
/// let keys = store.credential_keys(&account, swing.id).await?;
/// assert_eq!(keys.api_key().expose_secret(), "PK1");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncCredentialStore {
    core: Core<AsyncDatabase>,
}

crate::ops::store_basics!(AsyncCredentialStore, AsyncDatabase);

impl AsyncCredentialStore {
    /// See [`CredentialRepository::create_account`](crate::CredentialRepository::create_account).
    pub async fn create_account(&self, new: &NewUserAccount<'_>) -> Result<UserAccount> {
        self.core.create_account(new).await
    }

    /// See [`CredentialRepository::account`](crate::CredentialRepository::account).
    pub async fn account(&self, user_id: &str, account_id: Uuid) -> Result<Option<UserAccount>> {
        self.core.account(user_id, account_id).await
    }

    /// See [`CredentialRepository::account_by_user_id`](crate::CredentialRepository::account_by_user_id).
    pub async fn account_by_user_id(&self, user_id: &str) -> Result<Option<UserAccount>> {
        self.core.account_by_user_id(user_id).await
    }

    /// See [`CredentialRepository::insert_credential`](crate::CredentialRepository::insert_credential).
    pub async fn insert_credential(
        &self,
        account: &UserAccount,
        new: &NewUserCredential<'_>,
    ) -> Result<UserCredential> {
        let stored = self
            .core
            .insert_credentials(account, std::slice::from_ref(new))
            .await?;
        Ok(stored.into_iter().next().expect("one row in, one row out"))
    }

    /// See [`CredentialRepository::insert_credentials`](crate::CredentialRepository::insert_credentials).
    pub async fn insert_credentials(
        &self,
        account: &UserAccount,
        new: &[NewUserCredential<'_>],
    ) -> Result<Vec<UserCredential>> {
        self.core.insert_credentials(account, new).await
    }

    /// See [`CredentialRepository::credential`](crate::CredentialRepository::credential).
    pub async fn credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
    ) -> Result<Option<UserCredential>> {
        self.core.credential(account, credential_id).await
    }

    /// See [`CredentialRepository::list_credentials`](crate::CredentialRepository::list_credentials).
    pub async fn list_credentials(&self, account: &UserAccount) -> Result<Vec<UserCredential>> {
        self.core.list_credentials(account).await
    }

    /// See [`CredentialRepository::find_by_type`](crate::CredentialRepository::find_by_type).
    pub async fn find_by_type(
        &self,
        account: &UserAccount,
        credential_type: &str,
    ) -> Result<Vec<UserCredential>> {
        self.core.find_by_type(account, credential_type).await
    }

    /// See [`CredentialRepository::keys_by_nickname`](crate::CredentialRepository::keys_by_nickname).
    pub async fn keys_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Option<(UserCredential, CredentialKeys)>> {
        self.core.keys_by_nickname(account, nickname).await
    }

    /// See [`CredentialRepository::find_one_by_type`](crate::CredentialRepository::find_one_by_type).
    pub async fn find_one_by_type(
        &self,
        account: &UserAccount,
        credential_type: &str,
    ) -> Result<Option<UserCredential>> {
        self.core.find_one_by_type(account, credential_type).await
    }

    /// See [`CredentialRepository::find_by_nickname`](crate::CredentialRepository::find_by_nickname).
    pub async fn find_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Vec<UserCredential>> {
        self.core.find_by_nickname(account, nickname).await
    }

    /// See [`CredentialRepository::find_one_by_nickname`](crate::CredentialRepository::find_one_by_nickname).
    pub async fn find_one_by_nickname(
        &self,
        account: &UserAccount,
        nickname: &str,
    ) -> Result<Option<UserCredential>> {
        self.core.find_one_by_nickname(account, nickname).await
    }

    /// See [`CredentialRepository::update_credential`](crate::CredentialRepository::update_credential).
    pub async fn update_credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
        update: &CredentialUpdate,
    ) -> Result<UserCredential> {
        self.core
            .update_credential(account, credential_id, update)
            .await
    }

    /// See [`CredentialRepository::delete_credential`](crate::CredentialRepository::delete_credential).
    pub async fn delete_credential(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
    ) -> Result<()> {
        self.core.delete_credential(account, credential_id).await
    }

    /// See [`CredentialRepository::credential_keys`](crate::CredentialRepository::credential_keys).
    pub async fn credential_keys(
        &self,
        account: &UserAccount,
        credential_id: Uuid,
    ) -> Result<CredentialKeys> {
        self.core.credential_keys(account, credential_id).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_and_its_futures_can_cross_threads() {
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<super::AsyncCredentialStore>();
        fn send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("s.db");
        let open = super::AsyncDatabase::open(url.to_str().unwrap());
        send(&open);
    }
}
