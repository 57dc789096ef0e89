//! The blocking database handle: an r2d2 pool of any backend the build has, chosen
//! by the URL, and the blocking executor of the per-user operations.

use crate::backend::{
    classify, on_backend, on_pool, AnyPool, BackendConnection, BackendPool, Conn, Execute, Load,
    LoadWritten, Scope, Stored,
};
use crate::error::Result;
use crate::executor::Executor;

/// The blocking MariaDB/MySQL connection the crate uses (diesel-async's
/// `AsyncMysqlConnection` on a runtime of its own), for raw SQL beside the crate.
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use crate::backend::MysqlConnection;
pub use crate::backend::{Backend, DatabaseOptions};

/// A pool of connections to one database: PostgreSQL, SQLite or MariaDB/MySQL.
///
/// Opened from a URL and dispatched on its scheme, never by trying each backend:
///
/// | URL | backend |
/// |---|---|
/// | `postgres://…`, `postgresql://…` | PostgreSQL |
/// | `sqlite://path/to/file.db`, `sqlite:///absolute/path.db`, `sqlite:file.db` | SQLite |
/// | `path/to/file.db` (no scheme, and no `=`, whitespace or control character) | SQLite |
/// | `mysql://user:password@host:3306/db` | MariaDB/MySQL (feature `mysql`) |
///
/// Anything else is [`Error::UnsupportedUrl`](crate::Error::UnsupportedUrl), whose
/// reason never quotes the URL: a libpq `key=value` connection string
/// (`host=… password=…`) is refused rather than taken for a file name (a SQLite
/// file whose name holds `=` or spaces is named `sqlite://PATH`). The form of a
/// server URL is checked before its driver sees it: a password's `%`, `/`, `@`,
/// `?`, `#`, `&`, `=`, spaces and other reserved characters must be
/// percent-encoded, ports numeric, each query parameter one `key=value`. A
/// driver's connection error that repeats any three characters in a row of the
/// password (as written or decoded, or of a `password=` parameter) is replaced by
/// one that names the host and the database only, and the user name by `[user]`.
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
    pool: AnyPool,
    options: DatabaseOptions,
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
        Ok(Database {
            pool: AnyPool::open(url, options)?,
            options: options.clone(),
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
        let options = self.options;
        let pool = on_pool!(self.pool, p => AnyPool::from(p.with_read_replica(url, &options)?));
        Ok(Database { pool, options })
    }

    /// The backend this database runs on.
    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// Runs `f` in one transaction on a pooled connection, as the backend runs one
    /// ([`BackendPool::run`]): on PostgreSQL with `scope.user` as the
    /// row-level-security context of this transaction only; on SQLite a write takes
    /// the write lock at `BEGIN IMMEDIATE` and a read runs without a transaction; on
    /// MySQL a write is one InnoDB transaction and a read (one statement) runs on
    /// its own.
    pub(crate) fn run<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        on_pool!(&self.pool, p => p.run(scope, |c| f(Conn::from(c)))).map_err(classify)
    }

    /// Makes the ciphertexts that committed transactions removed leave the database
    /// file, where the backend allows it: on SQLite a WAL checkpoint; on PostgreSQL
    /// nothing (dead tuples wait for `VACUUM`; see the README's key rotation).
    pub(crate) fn erase_freed(&self) -> Result<()> {
        on_pool!(&self.pool, p => p.erase_freed())
    }

    /// Between two batches of a maintenance run: on SQLite a passive WAL checkpoint,
    /// so that the next batch's COMMIT does not run SQLite's automatic checkpoint;
    /// elsewhere nothing.
    pub(crate) fn checkpoint_between_batches(&self) -> Result<()> {
        on_pool!(&self.pool, p => p.checkpoint_between_batches())
    }

    /// Runs `f` on a pooled connection outside any transaction the crate opens.
    pub(crate) fn raw<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        on_pool!(&self.pool, p => p.raw(|c| f(Conn::from(c)))).map_err(classify)
    }

    /// Runs `f` on a pooled connection holding the backend's migration lock
    /// ([`BackendConnection::with_migration_lock`]).
    pub(crate) fn with_migration_lock<T>(
        &self,
        f: impl FnOnce(Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        self.raw(|conn| on_backend!(conn, c => c.with_migration_lock(|c| f(Conn::from(c)))))
    }
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
    pub(crate) fn load_written_now<Q: LoadWritten<T>, T: Stored>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> Result<Vec<T>> {
        self.run(scope, |conn| {
            on_backend!(conn, c => {
                let mut rows = Vec::new();
                for statement in statements {
                    rows.extend(c.load_written(statement)?);
                }
                Ok(rows)
            })
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

    fn load_written<Q: LoadWritten<T>, T: Stored + Send + 'static>(
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
    fn debug_never_shows_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-name.db");
        let db = Database::open(path.to_str().unwrap()).unwrap();
        assert!(!format!("{db:?}").contains("secret-name"));
    }
}
