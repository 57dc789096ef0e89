//! The blocking database handle: an r2d2 pool of any backend the build has, chosen by the URL.

use crate::backend::{
    classify, on_backend, parse_url, Conn, Execute, Load, LoadWritten, Scope, Target,
};
use crate::error::Result;
use crate::ops::Executor;
use diesel::prelude::*;
use diesel::r2d2::{self, ConnectionManager};
use std::time::Duration;

pub use crate::backend::Backend;

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

/// Pool and connection settings for [`Database::open_with`] (and the async
/// `AsyncDatabase::open_with`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// The most connections the pool keeps open. Default 10.
    pub max_connections: u32,
    /// How long to wait for a free connection before [`Error::Pool`](crate::Error::Pool). Default 30 s.
    pub connection_timeout: Duration,
    /// How long a SQLite statement waits for another writer's lock before it fails
    /// with "database is locked" (`PRAGMA busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
    /// PostgreSQL only: the URL points at a transaction pooler (PgBouncer in
    /// `pool_mode = transaction`, before 1.21), which hands each transaction to
    /// whichever server connection is free, so a statement prepared in one
    /// transaction may be missing in the next. With this set, connections keep no
    /// prepared statements: each statement goes out unnamed with its parameters (the
    /// same one round trip per statement). The async store refuses it
    /// ([`Error::UnsupportedUrl`](crate::Error::UnsupportedUrl)): see the README's
    /// "Behind PgBouncer". Default `false`.
    pub transaction_pooler: bool,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            max_connections: 10,
            connection_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            transaction_pooler: false,
        }
    }
}

/// A pool of connections to one database: PostgreSQL, SQLite or MariaDB/MySQL.
///
/// Opened from a URL and dispatched on its scheme, never by trying each backend:
///
/// | URL | backend |
/// |---|---|
/// | `postgres://…`, `postgresql://…` | PostgreSQL |
/// | `sqlite://path/to/file.db`, `sqlite:///absolute/path.db`, `sqlite:file.db` | SQLite |
/// | `path/to/file.db` (no scheme) | SQLite |
/// | `mysql://user:password@host:3306/db` | MariaDB/MySQL (feature `mysql`) |
///
/// Every SQLite connection gets `foreign_keys = ON`, `journal_mode = WAL`,
/// `synchronous = NORMAL`, a `busy_timeout`, a 64 MiB page cache and 1 GiB of
/// memory-mapped I/O. An in-memory SQLite database is refused: each pooled
/// connection would see a database of its own.
///
/// ```
/// use credential_store::{Backend, Database};
/// let dir = tempfile::tempdir().unwrap();
/// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
/// assert_eq!(db.backend(), Backend::Sqlite);
/// db.run_migrations().unwrap();
/// ```
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    options: DatabaseOptions,
    #[cfg(feature = "postgres")]
    replica: Option<std::sync::Arc<crate::backend::Replica>>,
}

#[derive(Clone)]
enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(r2d2::Pool<ConnectionManager<PgConnection>>),
    #[cfg(feature = "sqlite")]
    Sqlite(r2d2::Pool<ConnectionManager<SqliteConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(r2d2::Pool<ConnectionManager<crate::backend::MysqlConnection>>),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is not kept, and never printed.
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens a pool with default [`DatabaseOptions`].
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &DatabaseOptions::default())
    }

    /// Opens a pool. One connection is made at once, so that a wrong URL or an
    /// unreachable server is reported here, as [`Error::Connection`](crate::Error::Connection).
    pub fn open_with(url: &str, options: &DatabaseOptions) -> Result<Self> {
        let pool = match parse_url(url)? {
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => Pool::Postgres(crate::backend::pg_pool(
                url,
                pool_builder(options),
                options.transaction_pooler,
            )?),
            #[cfg(feature = "sqlite")]
            Target::Sqlite(path) => {
                let path = crate::backend::absolute_sqlite_path(path)?;
                let pragmas = crate::backend::SqlitePragmas {
                    busy_timeout: options.busy_timeout,
                };
                let mut first = SqliteConnection::establish(&path)?;
                pragmas.apply(&mut first)?;
                Pool::Sqlite(
                    pool_builder(options)
                        .connection_customizer(Box::new(pragmas))
                        .build_unchecked(ConnectionManager::new(path)),
                )
            }
            #[cfg(feature = "mysql")]
            Target::Mysql(url) => {
                // One connection at once: a wrong URL or an unreachable server is
                // reported here.
                crate::backend::MysqlConnection::establish(url)?;
                Pool::Mysql(pool_builder(options).build_unchecked(ConnectionManager::new(url)))
            }
            #[allow(unreachable_patterns)]
            target => return Err(crate::backend::missing_backend(&target)),
        };
        Ok(Database {
            pool,
            options: options.clone(),
            #[cfg(feature = "postgres")]
            replica: None,
        })
    }

    /// Sends per-user reads to a streaming replica of this PostgreSQL database
    /// (a hot standby, reached at `url`, with its own pool of the same size); writes,
    /// maintenance and migrations stay on the primary. Row-level security holds on
    /// the replica as on the primary: the policies are part of the replicated
    /// database, and each read sets its user's context the same way.
    ///
    /// **Read your writes.** This handle, and every clone of it, never reads older
    /// than its own writes: after each committed write it records the primary's WAL
    /// position (one more statement), and replica reads first check that the
    /// replica has replayed that far (`pg_last_wal_replay_lsn()`, until it is seen
    /// to have); while it has not, they go to the primary. Writes made through
    /// other handles or processes reach the replica's readers after the replication
    /// lag. A read waits at most 250 ms for a replica connection, then goes to the
    /// primary; a replica that cannot be reached is left alone for 5 s (those reads
    /// go to the primary), then tried again.
    ///
    /// A SQLite database, or a replica URL that is not PostgreSQL, is
    /// [`Error::UnsupportedUrl`](crate::Error::UnsupportedUrl); an unreachable replica
    /// is [`Error::Connection`](crate::Error::Connection) here, like [`open`](Self::open).
    pub fn with_read_replica(self, url: &str) -> Result<Self> {
        #[cfg(feature = "postgres")]
        if let (true, Target::Postgres(url)) =
            (self.backend() == Backend::Postgres, parse_url(url)?)
        {
            let pool = crate::backend::pg_pool(
                url,
                pool_builder(&self.options),
                self.options.transaction_pooler,
            )?;
            return Ok(Database {
                replica: Some(std::sync::Arc::new(crate::backend::Replica::new(pool))),
                ..self
            });
        }
        let _ = url;
        Err(crate::Error::UnsupportedUrl {
            reason: "a read replica needs a PostgreSQL primary and a PostgreSQL replica URL".into(),
        })
    }

    /// The backend this database runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "mysql")]
            Pool::Mysql(_) => Backend::Mysql,
        }
    }

    /// Runs `f` in one transaction on a pooled connection.
    ///
    /// On PostgreSQL, `scope.user` becomes the row-level-security context for this
    /// transaction only (`set_config('app.current_user_id', $1, true)`, a bound
    /// parameter), so it cannot outlive the transaction or reach the pool's next user.
    /// On SQLite a write takes the write lock at `BEGIN IMMEDIATE`, so that it waits
    /// for other writers (busy timeout) instead of failing when it upgrades; a read
    /// runs without a transaction. On MySQL a write is one InnoDB transaction and a
    /// read (one statement) runs on its own; there is no row-level security, so
    /// `scope.user` is not sent (every statement filters by the account's owner).
    pub(crate) fn run<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        self.run_unclassified(scope, f).map_err(classify)
    }

    fn run_unclassified<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let replica = self.replica.as_deref();
                let mut conn = match replica {
                    Some(replica) if !scope.write && scope.user.is_some() => {
                        match replica.caught_up_connection() {
                            Some(conn) => conn,
                            None => pool.get()?,
                        }
                    }
                    _ => pool.get()?,
                };
                let done = conn.transaction(|c| {
                    if let Some(user) = scope.user {
                        crate::backend::user_context(user).execute(c)?;
                    }
                    f(Conn::Postgres(c))
                })?;
                if let (Some(replica), true) = (replica, scope.write) {
                    replica.record_write(&mut conn);
                }
                Ok(done)
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let mut conn = pool.get()?;
                if scope.write {
                    let done = conn.immediate_transaction(|c| f(Conn::Sqlite(c)))?;
                    if scope.erases {
                        crate::backend::erase_freed_sqlite(&mut conn);
                    }
                    Ok(done)
                } else {
                    f(Conn::Sqlite(&mut conn))
                }
            }
            #[cfg(feature = "mysql")]
            Pool::Mysql(pool) => {
                let mut conn = pool.get()?;
                if scope.write {
                    conn.transaction(|c| f(Conn::Mysql(c)))
                } else {
                    f(Conn::Mysql(&mut conn))
                }
            }
        }
    }

    /// Makes the ciphertexts that committed transactions removed leave the database
    /// file, where the backend allows it: on SQLite a WAL checkpoint (see
    /// [`erase_freed_sqlite`](crate::backend::erase_freed_sqlite)); on PostgreSQL
    /// nothing (dead tuples wait for `VACUUM`; see the README's key rotation).
    pub(crate) fn erase_freed(&self) -> Result<()> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Ok(()),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                crate::backend::erase_freed_sqlite(&mut *pool.get()?);
                Ok(())
            }
            #[cfg(feature = "mysql")]
            Pool::Mysql(_) => Ok(()),
        }
    }

    /// Between two batches of a maintenance run: on SQLite a passive WAL checkpoint
    /// (see [`checkpoint_between_batches_sqlite`](crate::backend::checkpoint_between_batches_sqlite)),
    /// so that the next batch's COMMIT does not run SQLite's automatic checkpoint;
    /// on PostgreSQL nothing.
    pub(crate) fn checkpoint_between_batches(&self) -> Result<()> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Ok(()),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                crate::backend::checkpoint_between_batches_sqlite(&mut *pool.get()?);
                Ok(())
            }
            #[cfg(feature = "mysql")]
            Pool::Mysql(_) => Ok(()),
        }
    }

    /// Runs `f` on a pooled connection outside any transaction the crate opens.
    pub(crate) fn raw<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        let result = match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => f(Conn::Postgres(&mut *pool.get()?)),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => f(Conn::Sqlite(&mut *pool.get()?)),
            #[cfg(feature = "mysql")]
            Pool::Mysql(pool) => f(Conn::Mysql(&mut *pool.get()?)),
        };
        result.map_err(classify)
    }
}

fn pool_builder<C: diesel::r2d2::R2D2Connection + 'static>(
    options: &DatabaseOptions,
) -> r2d2::Builder<ConnectionManager<C>> {
    r2d2::Pool::builder()
        .max_size(options.max_connections.max(1))
        // No connection is opened in the background: a short program that exits while
        // r2d2 was opening a spare TLS connection crashed in OpenSSL's exit handler.
        .min_idle(Some(0))
        .connection_timeout(options.connection_timeout)
        // No `SELECT 1` round trip on every checkout: a connection that breaks is
        // reported by the statement that meets it (a typed error), and diesel marks
        // it broken so the pool replaces it.
        .test_on_check_out(false)
}

impl Database {
    /// Runs `statements` in order in one transaction and returns their rows.
    pub(crate) fn load_now<Q: Load<T>, T>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> Result<Vec<T>> {
        self.run(scope, |conn| {
            on_backend!(conn, c => {
                let mut rows = Vec::new();
                for statement in statements {
                    rows.extend(diesel::RunQueryDsl::load(statement, c)?);
                }
                Ok(rows)
            })
        })
    }

    /// Runs writes in order in one transaction and returns their rows as stored.
    pub(crate) fn load_written_now<Q: LoadWritten<T>, T: crate::steps::Stored>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> Result<Vec<T>> {
        self.run(scope, |mut conn| {
            let mut rows = Vec::new();
            for statement in statements {
                rows.extend(crate::backend::load_written(conn.reborrow(), statement)?);
            }
            Ok(rows)
        })
    }

    /// Runs `statements` in order in one transaction and returns how many rows they
    /// changed.
    pub(crate) fn execute_now<Q: Execute>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> Result<usize> {
        self.run(scope, |conn| {
            on_backend!(conn, c => {
                let mut changed = 0;
                for statement in statements {
                    changed += diesel::RunQueryDsl::execute(statement, c)?;
                }
                Ok(changed)
            })
        })
    }
}

/// The blocking executor: its futures are ready when they are made.
impl Executor for Database {
    fn backend(&self) -> Backend {
        Database::backend(self)
    }

    fn load<Q: Load<T>, T: Send + 'static>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + Send {
        std::future::ready(self.load_now(scope, statements))
    }

    fn load_written<Q: LoadWritten<T>, T: crate::steps::Stored + Send + 'static>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + Send {
        std::future::ready(self.load_written_now(scope, statements))
    }

    fn execute<Q: Execute>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> impl std::future::Future<Output = Result<usize>> + Send {
        std::future::ready(self.execute_now(scope, statements))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sqlite_connection_gets_its_pragmas() {
        use diesel::sql_types::{BigInt, Text};
        #[derive(QueryableByName)]
        struct Pragmas {
            #[diesel(sql_type = Text)]
            journal_mode: String,
            #[diesel(sql_type = BigInt)]
            foreign_keys: i64,
            #[diesel(sql_type = BigInt)]
            synchronous: i64,
            #[diesel(sql_type = BigInt)]
            busy_timeout: i64,
            #[diesel(sql_type = BigInt)]
            secure_delete: i64,
        }
        let dir = tempfile::tempdir().unwrap();
        let options = DatabaseOptions {
            busy_timeout: Duration::from_millis(1234),
            ..Default::default()
        };
        let db = Database::open_with(dir.path().join("p.db").to_str().unwrap(), &options).unwrap();
        // Several connections at once: each one, not only the first, is configured.
        let Pool::Sqlite(pool) = &db.pool else {
            unreachable!()
        };
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.get().unwrap();
            let p: Pragmas = diesel::sql_query(
                "SELECT (SELECT journal_mode FROM pragma_journal_mode) AS journal_mode,
                        (SELECT foreign_keys FROM pragma_foreign_keys) AS foreign_keys,
                        (SELECT synchronous FROM pragma_synchronous) AS synchronous,
                        (SELECT timeout FROM pragma_busy_timeout) AS busy_timeout,
                        (SELECT secure_delete FROM pragma_secure_delete) AS secure_delete",
            )
            .get_result(&mut *conn)
            .unwrap();
            assert_eq!(p.journal_mode, "wal");
            assert_eq!(p.foreign_keys, 1);
            assert_eq!(p.synchronous, 1, "NORMAL");
            assert_eq!(p.busy_timeout, 1234);
            assert_eq!(p.secure_delete, 1, "deleted ciphertexts are zeroed");
            held.push(conn);
        }
    }

    #[test]
    fn debug_never_shows_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-name.db");
        let db = Database::open(path.to_str().unwrap()).unwrap();
        assert!(!format!("{db:?}").contains("secret-name"));
    }
}
