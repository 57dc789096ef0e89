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
    AccountScope, CredentialUpdate, NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use crate::ops::Core;
use std::future::Future;
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
/// let account = store.create_account(&NewUserAccount::new("auth0|42", "Ada")).await?;
/// store.insert_credential(&account, &NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Swing")).await?;
/// let swing = store.credential_by_nickname(&account, "Swing").await?.expect("stored above");
/// let keys = store.keys(&account, swing.id).await?;
/// assert_eq!(keys.api_key().expose_secret(), "PK1");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncCredentialStore {
    core: Core<AsyncDatabase>,
}

crate::ops::store_basics!(AsyncCredentialStore, AsyncDatabase);

macro_rules! async_trait {
    ($(
        $(#[$doc:meta])*
        fn $op:ident($(@scope $scope:ident)? $(,)? $($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// Accounts and their named credentials, async: what [`AsyncCredentialStore`]
        /// does, as a trait for code that abstracts over it or mocks it. The same
        /// operations, rules and errors as the blocking
        /// [`CredentialRepository`](crate::CredentialRepository); every future is
        /// `Send`. New operations may be added in any 0.x release.
        pub trait AsyncCredentialRepository {
            $(
                $(#[$doc])*
                fn $op(&self $(, $scope: &AccountScope)? $(, $arg: $ty)*)
                    -> impl Future<Output = Result<$ret>> + Send;
            )*
        }

        impl AsyncCredentialRepository for AsyncCredentialStore {
            $(
                fn $op(&self $(, $scope: &AccountScope)? $(, $arg: $ty)*)
                    -> impl Future<Output = Result<$ret>> + Send {
                    self.core.$op($($scope,)? $($arg),*)
                }
            )*
        }

        impl AsyncCredentialStore {
            $(
                $(#[$doc])*
                pub async fn $op(&self $(, $scope: &(impl AsRef<AccountScope> + Sync))? $(, $arg: $ty)*) -> Result<$ret> {
                    self.core.$op($($scope.as_ref(),)? $($arg),*).await
                }
            )*
        }

        /// Every public future of the async store is `Send`: this does not compile
        /// otherwise.
        #[allow(dead_code, unused_variables, clippy::too_many_arguments)]
        fn every_future_is_send(
            store: &AsyncCredentialStore,
            scope: &AccountScope,
            account: &crate::models::UserAccount,
        ) {
            fn send<T: Send>(_: T) {}
            $(
                {
                    #[allow(unused_macros)]
                    macro_rules! arg {
                        ($t:ty) => { unreachable_value::<$t>() };
                    }
                    let _ = || send(store.$op($(  { let $scope = account; $scope } ,)? $( arg!($ty) ),*));
                    let _ = || send(<AsyncCredentialStore as AsyncCredentialRepository>::$op(store $(, { let $scope = scope; $scope })? $(, arg!($ty))*));
                }
            )*
        }
    };
}

/// A value of any type, for a check that only type-checks (never called).
#[allow(dead_code)]
fn unreachable_value<T>() -> T {
    unreachable!("only type-checked")
}

crate::repository::operations!(async_trait);

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
