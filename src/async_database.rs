//! The async store's database handle: the pipelined PostgreSQL executor
//! ([`crate::executor::pipelined_pg`]), or, for SQLite and MariaDB/MySQL, the
//! blocking [`Database`] on tokio's blocking pool, one hop per call, so the
//! runtime's worker threads never wait on the file or the server.

#[cfg(feature = "postgres")]
use crate::backend::Target;
use crate::backend::{
    parse_url, Backend, DatabaseOptions, Execute, Load, LoadWritten, Scope, Stored,
};
use crate::connection::Database;
use crate::error::{Error, Result};
#[cfg(feature = "postgres")]
use crate::executor::pipelined_pg::PgPool;
use crate::executor::Executor;
#[cfg(feature = "postgres")]
use std::sync::Arc;

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
    Postgres(Arc<PgPool>),
    /// SQLite or MySQL: the blocking store on tokio's blocking pool.
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

/// Why the async store refuses [`DatabaseOptions::transaction_pooler`].
const TRANSACTION_POOLER_REFUSED: &str = "the async store cannot run through a transaction \
     pooler before PgBouncer 1.21: its PostgreSQL driver (tokio-postgres) prepares named \
     statements, also while connecting, outside any transaction; use the blocking store \
     (Database) with transaction_pooler, session pooling, or PgBouncer 1.21 or later with \
     max_prepared_statements and transaction_pooler off";

/// Runs blocking work on tokio's blocking pool.
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
            Target::Postgres(location) => {
                AsyncPool::Postgres(Arc::new(PgPool::open(location, options).await?))
            }
            // Every other backend (and one this build lacks, which `Database`
            // refuses by name): the blocking store on tokio's blocking pool.
            _ => {
                let (url, options) = (url.to_owned(), options.clone());
                AsyncPool::Blocking(blocking(move || Database::open_with(&url, &options)).await?)
            }
        };
        Ok(AsyncDatabase { pool })
    }

    /// The backend this database runs on.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(_) => Backend::Postgres,
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
                let options = DatabaseOptions::default().max_connections(1);
                blocking(move || Database::open_with(&url, &options)).await
            }
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
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => pool.load(scope.user, statements).await,
            AsyncPool::Blocking(db) => {
                let (db, scope) = (db.clone(), scope.without_user());
                blocking(move || db.load_now(scope, statements)).await
            }
        }
    }

    async fn load_written<Q: LoadWritten<T>, T: Stored + Send + 'static>(
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
            AsyncPool::Blocking(db) => {
                let (db, scope) = (db.clone(), scope.without_user());
                blocking(move || db.load_written_now(scope, statements)).await
            }
        }
    }

    async fn execute<Q: Execute>(&self, scope: Scope<'_>, statements: Vec<Q>) -> Result<usize> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => pool.execute(scope.user, statements).await,
            AsyncPool::Blocking(db) => {
                let (db, scope) = (db.clone(), scope.without_user());
                blocking(move || db.execute_now(scope, statements)).await
            }
        }
    }
}
