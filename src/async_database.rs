//! The async store's database handle: the pipelined PostgreSQL executor
//! ([`crate::executor::pipelined_pg`]), or, for SQLite and MariaDB/MySQL, the
//! blocking [`Database`] on tokio's blocking pool, one hop per call, so the
//! runtime's worker threads never wait on the file or the server.

#[cfg(feature = "postgres")]
use crate::backend::Target;
use crate::backend::{
    parse_url, Backend, Conn, DatabaseOptions, Execute, Load, LoadWritten, Scope, Stored,
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
    /// SQLite or MySQL: the blocking store on tokio's blocking pool, and the most
    /// connections its pool holds.
    Blocking(Database, u32),
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
                let max_connections = options.max_connections.max(1);
                let db = blocking(move || Database::open_with(&url, &options)).await?;
                AsyncPool::Blocking(db, max_connections)
            }
        };
        Ok(AsyncDatabase { pool })
    }

    /// The backend this database runs on.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(_) => Backend::Postgres,
            AsyncPool::Blocking(db, _) => db.backend(),
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
            AsyncPool::Blocking(db, _) => Ok(db.clone()),
        }
    }

    /// The state of every pooled connection, all checked out at once: whether it
    /// is inside a transaction, and the `app.current_user_id` it carries (empty or
    /// `None` when none). On PostgreSQL, every idle connection of the pool. On
    /// SQLite and MySQL (blocking pool), as many connections as the pool may hold,
    /// waiting for those in use and opening those it lacks; one is inside a
    /// transaction when diesel counts one open on it or the database does (SQLite
    /// refuses a `BEGIN`; MariaDB's `@@in_transaction`, or on MySQL an InnoDB
    /// transaction of the session), and its user is `None` (no row security). For
    /// tests of cancellation.
    #[doc(hidden)]
    pub async fn pooled_connection_states(&self) -> Result<Vec<(bool, Option<String>)>> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => pool.connection_states().await,
            AsyncPool::Blocking(db, max_connections) => {
                let (db, max_connections) = (db.clone(), *max_connections);
                blocking(move || {
                    let mut states = Vec::new();
                    probe_connections(&db, max_connections, &mut states)?;
                    Ok(states)
                })
                .await
            }
        }
    }
}

/// Checks out `remaining` connections of `db`, each held while the next is checked
/// out (so no connection is seen twice), and records whether each is inside a
/// transaction.
fn probe_connections(
    db: &Database,
    remaining: u32,
    states: &mut Vec<(bool, Option<String>)>,
) -> Result<()> {
    if remaining == 0 {
        return Ok(());
    }
    db.raw(|mut conn| {
        states.push((in_transaction(conn.reborrow())?, None));
        probe_connections(db, remaining - 1, states)
    })
}

/// Whether diesel counts a transaction open on `conn`, or the database has one open
/// on it. Leaves the connection as it found it.
fn in_transaction(conn: Conn<'_>) -> Result<bool> {
    use diesel::connection::{Connection, TransactionManager};
    /// Whether diesel counts a transaction open (or its count is broken).
    fn counted<C: Connection>(c: &mut C) -> bool {
        !matches!(
            C::TransactionManager::transaction_manager_status_mut(c).transaction_depth(),
            Ok(None)
        )
    }
    match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => {
            use diesel::connection::SimpleConnection;
            if counted(c) {
                return Ok(true);
            }
            // BEGIN fails inside a transaction, and only there.
            match c.batch_execute("BEGIN") {
                Ok(()) => {
                    c.batch_execute("ROLLBACK")?;
                    Ok(false)
                }
                Err(_) => Ok(true),
            }
        }
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => {
            use diesel::sql_types::BigInt;
            #[derive(diesel::QueryableByName)]
            struct Open {
                #[diesel(sql_type = BigInt)]
                open: i64,
            }
            if counted(c) {
                return Ok(true);
            }
            // MariaDB has `@@in_transaction`; MySQL lists the session's InnoDB
            // transaction once it has begun.
            let open: Open = diesel::RunQueryDsl::get_result(
                diesel::sql_query("SELECT CAST(@@in_transaction AS SIGNED) AS open"),
                c,
            )
            .or_else(|_| {
                diesel::RunQueryDsl::get_result(
                    diesel::sql_query(
                        "SELECT COUNT(*) AS open FROM information_schema.innodb_trx \
                         WHERE trx_mysql_thread_id = CONNECTION_ID()",
                    ),
                    c,
                )
            })?;
            Ok(open.open != 0)
        }
        // The blocking pool is never PostgreSQL when the build has the pipelined
        // executor.
        #[cfg(feature = "postgres")]
        Conn::Postgres(_) => unreachable!("PostgreSQL runs on the pipelined pool"),
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
            AsyncPool::Blocking(db, _) => {
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
            AsyncPool::Blocking(db, _) => {
                let (db, scope) = (db.clone(), scope.without_user());
                blocking(move || db.load_written_now(scope, statements)).await
            }
        }
    }

    async fn execute<Q: Execute>(&self, scope: Scope<'_>, statements: Vec<Q>) -> Result<usize> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AsyncPool::Postgres(pool) => pool.execute(scope.user, statements).await,
            AsyncPool::Blocking(db, _) => {
                let (db, scope) = (db.clone(), scope.without_user());
                blocking(move || db.execute_now(scope, statements)).await
            }
        }
    }
}
