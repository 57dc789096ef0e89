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
//!   the transaction; a call cancelled
//!   mid-flight (a dropped future, a timeout, an aborted task) closes its
//!   connection instead of returning it to the pool, so the server rolls the
//!   transaction back and no context or open transaction reaches another call.
//! - **SQLite** and **MariaDB/MySQL**: the blocking store's executor on tokio's
//!   blocking thread pool, one hop per call, so the runtime's worker threads never
//!   wait on the file or the server. A cancelled call's transaction still runs to
//!   its end (commit or rollback) on that thread. (MySQL calls are not pipelined:
//!   a write is `BEGIN`, the statements and `COMMIT`, a round trip each.)
//!
//! The async PostgreSQL connection does not negotiate TLS (tokio-postgres `NoTls`):
//! use it on a trusted network or through a local TLS tunnel, or the blocking store
//! (libpq) where TLS to the server is required.

use crate::backend::{parse_url, Backend, Execute, Load, LoadWritten, Scope, Target};
use crate::connection::{Database, DatabaseOptions};
use crate::crypto::CredentialKeys;
use crate::error::{Error, Result};
use crate::models::{
    CredentialUpdate, NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use crate::ops::{Core, Executor};
#[cfg(feature = "postgres")]
use std::sync::Arc;
use uuid::Uuid;

/// A pool of async connections to one database, PostgreSQL, SQLite or MariaDB, chosen by
/// the URL's scheme as [`Database`] chooses.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), credential_store::Error> {
/// use credential_store::{AsyncDatabase, Backend};
/// let dir = tempfile::tempdir().unwrap();
/// let db = AsyncDatabase::open(dir.path().join("store.db").to_str().unwrap()).await?;
/// assert_eq!(db.backend(), Backend::Sqlite);
/// db.run_migrations().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncDatabase {
    pool: AsyncPool,
}

#[derive(Clone)]
enum AsyncPool {
    #[cfg(feature = "postgres")]
    Postgres(Arc<pg::PgPool>),
    /// SQLite or MySQL: the blocking store on tokio's blocking pool.
    #[cfg(any(feature = "sqlite", feature = "mysql"))]
    Blocking(Database),
}

impl std::fmt::Debug for AsyncDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is never printed.
        f.debug_struct("AsyncDatabase")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Runs blocking work on tokio's blocking pool.
/// Why the async store refuses [`DatabaseOptions::transaction_pooler`].
const TRANSACTION_POOLER_REFUSED: &str = "the async store cannot run through a transaction \
     pooler before PgBouncer 1.21: its PostgreSQL driver (tokio-postgres) prepares named \
     statements, also while connecting, outside any transaction; use the blocking store \
     (Database) with transaction_pooler, session pooling, or PgBouncer 1.21 or later with \
     max_prepared_statements and transaction_pooler off";

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => Err(Error::PoolUnavailable {
            reason: "the runtime is shutting down".into(),
        }),
    }
}

impl AsyncDatabase {
    /// Opens a pool with default [`DatabaseOptions`].
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &DatabaseOptions::default()).await
    }

    /// Opens a pool. One connection is made at once, so that a wrong URL or an
    /// unreachable server is reported here, as [`Error::Connection`].
    pub async fn open_with(url: &str, options: &DatabaseOptions) -> Result<Self> {
        let pool = match parse_url(url)? {
            #[cfg(feature = "postgres")]
            Target::Postgres(_) if options.transaction_pooler => {
                return Err(Error::UnsupportedUrl {
                    reason: TRANSACTION_POOLER_REFUSED.into(),
                })
            }
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => {
                AsyncPool::Postgres(Arc::new(pg::PgPool::open(url, options).await?))
            }
            #[cfg(any(feature = "sqlite", feature = "mysql"))]
            Target::Sqlite(_) | Target::Mysql(_) => {
                let (url, options) = (url.to_owned(), options.clone());
                AsyncPool::Blocking(blocking(move || Database::open_with(&url, &options)).await?)
            }
            #[allow(unreachable_patterns)]
            target => return Err(crate::backend::missing_backend(&target)),
        };
        Ok(AsyncDatabase { pool })
    }

    /// The backend this database runs on.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(_) => Backend::Postgres,
            #[cfg(any(feature = "sqlite", feature = "mysql"))]
            AsyncPool::Blocking(db) => db.backend(),
        }
    }

    /// Applies every pending migration, as [`Database::run_migrations`] does (on a
    /// blocking thread, through one blocking connection on PostgreSQL).
    pub async fn run_migrations(&self) -> Result<Vec<String>> {
        let db = self.blocking_database().await?;
        blocking(move || db.run_migrations()).await
    }

    /// A blocking handle on the same database, for migrations.
    async fn blocking_database(&self) -> Result<Database> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => {
                let url = pool.url().to_owned();
                let options = DatabaseOptions {
                    max_connections: 1,
                    ..DatabaseOptions::default()
                };
                blocking(move || Database::open_with(&url, &options)).await
            }
            #[cfg(any(feature = "sqlite", feature = "mysql"))]
            AsyncPool::Blocking(db) => Ok(db.clone()),
        }
    }

    /// The state of every idle pooled PostgreSQL connection, checked out all at
    /// once: whether it is inside a transaction, and the
    /// `app.current_user_id` it carries (empty or `None` when none). For tests of
    /// cancellation; SQLite and MySQL (blocking pool) give an empty list.
    #[doc(hidden)]
    pub async fn pooled_connection_states(&self) -> Result<Vec<(bool, Option<String>)>> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => pool.connection_states().await,
            #[cfg(any(feature = "sqlite", feature = "mysql"))]
            AsyncPool::Blocking(_) => Ok(Vec::new()),
        }
    }
}

impl Executor for AsyncDatabase {
    fn backend(&self) -> Backend {
        AsyncDatabase::backend(self)
    }

    async fn load<Q: Load<T>, T: Send + 'static>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> Result<Vec<T>> {
        {
            match &self.pool {
                #[cfg(feature = "postgres")]
                AsyncPool::Postgres(pool) => pool.load(scope.user, statements).await,
                #[cfg(any(feature = "sqlite", feature = "mysql"))]
                AsyncPool::Blocking(db) => {
                    let (db, scope) = (db.clone(), scope.without_user());
                    blocking(move || db.load_now(scope, statements)).await
                }
            }
        }
    }

    async fn load_written<Q: LoadWritten<T>, T: crate::steps::Stored + Send + 'static>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> Result<Vec<T>> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => {
                let statements = statements.into_iter().map(LoadWritten::returning).collect();
                pool.load(scope.user, statements).await
            }
            #[cfg(any(feature = "sqlite", feature = "mysql"))]
            AsyncPool::Blocking(db) => {
                let (db, scope) = (db.clone(), scope.without_user());
                blocking(move || db.load_written_now(scope, statements)).await
            }
        }
    }

    async fn execute<Q: Execute>(&self, scope: Scope<'_>, statements: Vec<Q>) -> Result<usize> {
        {
            match &self.pool {
                #[cfg(feature = "postgres")]
                AsyncPool::Postgres(pool) => pool.execute(scope.user, statements).await,
                #[cfg(any(feature = "sqlite", feature = "mysql"))]
                AsyncPool::Blocking(db) => {
                    let (db, scope) = (db.clone(), scope.without_user());
                    blocking(move || db.execute_now(scope, statements)).await
                }
            }
        }
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use crate::backend::{user_context, LoadReturning};
    use crate::query;
    use deadpool::managed::{Metrics, Object, Pool, RecycleError, RecycleResult};
    use diesel::pg::Pg;
    use diesel::query_builder::{QueryFragment, QueryId};
    use diesel::QueryResult;
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    use futures_util::future::{join_all, BoxFuture};
    use std::any::TypeId;
    use std::collections::HashSet;

    /// One pooled connection and what the crate knows of it.
    pub(super) struct PgSession {
        conn: AsyncPgConnection,
        /// Statements this connection has prepared (diesel-async keeps them).
        prepared: HashSet<TypeId>,
        /// Outside any transaction the crate opened.
        clean: bool,
    }

    impl PgSession {
        /// Prepares the statements of every per-user read (and the delete) once, when the connection
        /// is made, inside a transaction that is rolled back (no user context: they
        /// see no rows), so that even a connection's first call sends BEGIN, the
        /// context, the statement and COMMIT in one round trip. A statement the role
        /// may not run is left to be prepared on first use.
        async fn prepare_hot_statements(&mut self) -> QueryResult<()> {
            let nobody = UserAccount {
                id: Uuid::nil(),
                user_id: String::new(),
                account_name: String::new(),
                is_active: false,
                created_at: chrono::DateTime::UNIX_EPOCH,
                updated_at: chrono::DateTime::UNIX_EPOCH,
            };
            let (id, user) = (Uuid::nil(), "");
            let statements = [
                hot::<_, String>(user_context(user)),
                hot(query::account(user, id)),
                hot(query::account_by_user_id(user)),
                hot(query::credential(&nobody, id)),
                hot(query::credentials(&nobody)),
                hot(query::credentials_by_type(&nobody, user)),
                hot(query::credentials_by_nickname(&nobody, user, user)),
                hot(query::credentials_by_nickname_with_ciphertexts(
                    &nobody, user, user,
                )),
                hot(query::credential_with_ciphertexts(&nobody, id)),
                hot_write(query::delete_credential(&nobody, id)),
            ];
            self.conn.batch_execute("BEGIN").await?;
            for (key, run) in statements {
                let Some(key) = key else { continue };
                // In a savepoint, so that a refusal leaves the transaction usable.
                self.conn.batch_execute("SAVEPOINT cs_prepare").await?;
                let ran = run(&self.conn).await.is_ok();
                let undo = if ran { "RELEASE" } else { "ROLLBACK TO" };
                self.conn
                    .batch_execute(&format!("{undo} SAVEPOINT cs_prepare"))
                    .await?;
                if ran {
                    self.prepared.insert(key);
                }
            }
            self.conn.batch_execute("ROLLBACK").await
        }
    }

    /// A statement to prepare: its cache key, and a run of it.
    type HotStatement = (
        Option<TypeId>,
        Box<dyn for<'c> FnOnce(&'c AsyncPgConnection) -> BoxFuture<'c, QueryResult<()>> + Send>,
    );

    fn hot_write<Q: Execute>(statement: Q) -> HotStatement {
        let key = statement_key(&statement);
        (
            key,
            Box::new(move |conn| {
                Box::pin(async move {
                    let mut conn = conn;
                    diesel_async::RunQueryDsl::execute(statement, &mut conn)
                        .await
                        .map(drop)
                })
            }),
        )
    }

    fn hot<Q: Load<T>, T: Send + 'static>(statement: Q) -> HotStatement {
        let key = statement_key(&statement);
        (
            key,
            Box::new(move |conn| {
                Box::pin(async move {
                    let mut conn = conn;
                    diesel_async::RunQueryDsl::load::<T>(statement, &mut conn)
                        .await
                        .map(drop)
                })
            }),
        )
    }

    pub(super) struct PgManager {
        url: String,
    }

    impl deadpool::managed::Manager for PgManager {
        type Type = PgSession;
        type Error = diesel::ConnectionError;

        async fn create(&self) -> Result<PgSession, diesel::ConnectionError> {
            let mut session = PgSession {
                conn: AsyncPgConnection::establish(&self.url).await?,
                prepared: HashSet::new(),
                clean: true,
            };
            session
                .prepare_hot_statements()
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(session)
        }

        async fn recycle(
            &self,
            session: &mut PgSession,
            _: &Metrics,
        ) -> RecycleResult<diesel::ConnectionError> {
            // No round trip on checkout: a connection left inside a transaction is
            // never reused (the checkout closes it first; this is a second guard).
            if session.clean {
                Ok(())
            } else {
                Err(RecycleError::message("left inside a transaction"))
            }
        }
    }

    /// Returns the connection to the pool when the call closed its transaction, and
    /// closes it otherwise (a cancelled call, a failed `BEGIN` or `COMMIT`, a lost
    /// connection): the server then rolls the transaction back.
    struct Checkout(Option<Object<PgManager>>);

    impl Drop for Checkout {
        fn drop(&mut self) {
            if let Some(object) = self.0.take() {
                if !object.clean {
                    drop(Object::take(object));
                }
            }
        }
    }

    pub(super) struct PgPool {
        pool: Pool<PgManager>,
    }

    /// The key diesel-async caches a prepared statement under, when it caches it.
    fn statement_key<Q: QueryId + QueryFragment<Pg>>(statement: &Q) -> Option<TypeId> {
        match statement.is_safe_to_cache_prepared(&Pg) {
            Ok(true) => Q::query_id(),
            _ => None,
        }
    }

    fn pool_error(err: deadpool::managed::PoolError<diesel::ConnectionError>) -> Error {
        use deadpool::managed::PoolError;
        match err {
            PoolError::Backend(err) => Error::Connection(err),
            other => Error::PoolUnavailable {
                reason: other.to_string(),
            },
        }
    }

    impl PgPool {
        pub(super) async fn open(url: &str, options: &DatabaseOptions) -> Result<Self> {
            let pool = Pool::builder(PgManager {
                url: url.to_owned(),
            })
            .max_size(options.max_connections.max(1) as usize)
            .wait_timeout(Some(options.connection_timeout))
            .create_timeout(Some(options.connection_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|err| Error::PoolUnavailable {
                reason: err.to_string(),
            })?;
            drop(pool.get().await.map_err(pool_error)?);
            Ok(PgPool { pool })
        }

        pub(super) fn url(&self) -> &str {
            &self.pool.manager().url
        }

        pub(super) async fn load<Q: LoadReturning<T>, T: Send + 'static>(
            &self,
            user: Option<&str>,
            statements: Vec<Q>,
        ) -> Result<Vec<T>> {
            let keys = statements.iter().map(statement_key).collect();
            let rows = self
                .pipelined(user, keys, |conn| {
                    Box::pin(async move {
                        let loads =
                            statements.into_iter().map(|statement| {
                                let mut conn = conn;
                                async move {
                                    diesel_async::RunQueryDsl::load(statement, &mut conn).await
                                }
                            });
                        join_all(loads)
                            .await
                            .into_iter()
                            .collect::<QueryResult<Vec<Vec<T>>>>()
                    })
                })
                .await?;
            Ok(rows.into_iter().flatten().collect())
        }

        pub(super) async fn execute<Q: Execute>(
            &self,
            user: Option<&str>,
            statements: Vec<Q>,
        ) -> Result<usize> {
            let keys = statements.iter().map(statement_key).collect();
            self.pipelined(user, keys, |conn| {
                Box::pin(async move {
                    let runs = statements.into_iter().map(|statement| {
                        let mut conn = conn;
                        async move { diesel_async::RunQueryDsl::execute(statement, &mut conn).await }
                    });
                    join_all(runs).await.into_iter().sum::<QueryResult<usize>>()
                })
            })
            .await
        }

        /// Runs `body` in one transaction with `user` as its row-level-security
        /// context. When the connection has prepared every statement, `BEGIN`, the
        /// context, the body and `COMMIT` go out together: one round trip. Otherwise
        /// `COMMIT` waits for the body, so that it cannot overtake a statement still
        /// being prepared.
        async fn pipelined<R: Send>(
            &self,
            user: Option<&str>,
            keys: Vec<Option<TypeId>>,
            body: impl for<'c> FnOnce(&'c AsyncPgConnection) -> BoxFuture<'c, QueryResult<R>>,
        ) -> Result<R> {
            let mut checkout = Checkout(Some(self.pool.get().await.map_err(pool_error)?));
            let Some(session) = checkout.0.as_deref_mut() else {
                unreachable!("a checkout holds its connection until dropped")
            };
            let context_key = user.map(|user| statement_key(&user_context(user)));
            let warm = keys
                .iter()
                .chain(context_key.iter())
                .all(|key| key.is_some_and(|key| session.prepared.contains(&key)));
            session.clean = false;
            let conn = &session.conn;
            let (mut begin_conn, mut context_conn, mut commit_conn) = (conn, conn, conn);
            let begin = begin_conn.batch_execute("BEGIN");
            let context = async {
                match user {
                    Some(user) => {
                        diesel_async::RunQueryDsl::execute(user_context(user), &mut context_conn)
                            .await
                            .map(drop)
                    }
                    None => Ok(()),
                }
            };
            let body = body(conn);
            let (begun, context, result, committed) = if warm {
                tokio::join!(begin, context, body, commit_conn.batch_execute("COMMIT"))
            } else {
                let (begun, context, result) = tokio::join!(begin, context, body);
                (
                    begun,
                    context,
                    result,
                    commit_conn.batch_execute("COMMIT").await,
                )
            };
            let outcome = match (begun, committed) {
                (Ok(()), Ok(())) => {
                    // The transaction is closed: committed, or rolled back by the
                    // server when a statement failed.
                    session.clean = true;
                    context.and(result)
                }
                (begun, committed) => Err(begun
                    .and(committed)
                    .err()
                    .unwrap_or(diesel::result::Error::RollbackTransaction)),
            };
            if outcome.is_ok() {
                session
                    .prepared
                    .extend(keys.into_iter().chain(context_key).flatten());
            }
            let outcome = outcome.map_err(|err| crate::backend::classify(Error::Database(err)));
            if matches!(outcome, Err(Error::ConnectionLost(_))) {
                session.clean = false;
            }
            outcome
        }

        pub(super) async fn connection_states(&self) -> Result<Vec<(bool, Option<String>)>> {
            use diesel::sql_types::{Nullable, Text};
            #[derive(diesel::QueryableByName)]
            struct Setting {
                #[diesel(sql_type = Nullable<Text>)]
                user_id: Option<String>,
            }
            let idle = self.pool.status().available;
            let mut held = Vec::new();
            for _ in 0..idle {
                held.push(self.pool.get().await.map_err(pool_error)?);
            }
            let mut states = Vec::new();
            for session in &mut held {
                // SAVEPOINT fails outside a transaction block, and only there.
                let in_transaction = session
                    .conn
                    .batch_execute("SAVEPOINT cs_probe")
                    .await
                    .is_ok();
                let setting: Setting = diesel_async::RunQueryDsl::get_result(
                    diesel::sql_query(
                        "SELECT current_setting('app.current_user_id', true) AS user_id",
                    ),
                    &mut session.conn,
                )
                .await?;
                if in_transaction {
                    session.clean = false;
                }
                states.push((in_transaction, setting.user_id));
            }
            Ok(states)
        }
    }
}

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
