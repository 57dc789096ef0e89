//! One database handle for both backends, chosen by the URL's scheme.

use crate::error::{Error, Result};
use diesel::prelude::*;
use diesel::r2d2::{self, ConnectionManager};
use std::time::Duration;

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "credential-store needs at least one backend: enable the `sqlite` or `postgres` feature"
);

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL, through libpq.
    Postgres,
    /// An embedded SQLite file.
    Sqlite,
}

/// Pool and connection settings for [`Database::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// The most connections the pool keeps open. Default 10.
    pub max_connections: u32,
    /// How long to wait for a free connection before [`Error::Pool`]. Default 30 s.
    pub connection_timeout: Duration,
    /// How long a SQLite statement waits for another writer's lock before it fails
    /// with "database is locked" (`PRAGMA busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            max_connections: 10,
            connection_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A pool of connections to one database, PostgreSQL or SQLite.
///
/// Opened from a URL and dispatched on its scheme, never by trying each backend:
///
/// | URL | backend |
/// |---|---|
/// | `postgres://…`, `postgresql://…` | PostgreSQL |
/// | `sqlite://path/to/file.db`, `sqlite:///absolute/path.db`, `sqlite:file.db` | SQLite |
/// | `path/to/file.db` (no scheme) | SQLite |
///
/// Every SQLite connection gets `foreign_keys = ON`, `journal_mode = WAL`,
/// `synchronous = NORMAL`, a `busy_timeout`, a 64 MiB page cache and 256 MiB of
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
}

#[derive(Clone)]
enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(r2d2::Pool<ConnectionManager<PgConnection>>),
    #[cfg(feature = "sqlite")]
    Sqlite(r2d2::Pool<ConnectionManager<SqliteConnection>>),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is not kept, and never printed.
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// The backend and location a URL names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Postgres(&'a str),
    Sqlite(&'a str),
}

/// Reads the scheme of a database URL.
pub(crate) fn parse_url(url: &str) -> Result<Target<'_>> {
    let unsupported = |reason: String| Error::UnsupportedUrl { reason };
    let url = url.trim();
    let target = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Target::Postgres(url)
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Target::Sqlite(path)
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(unsupported(format!(
            "scheme `{scheme}` is not supported (use postgres://, sqlite:// or a file path)"
        )));
    } else {
        Target::Sqlite(url)
    };
    if let Target::Sqlite(path) = target {
        if path.is_empty() {
            return Err(unsupported("the SQLite path is empty".into()));
        }
        let uri_file = path
            .strip_prefix("file:")
            .map(|uri| uri.split(['?', '#']).next().unwrap_or_default());
        if path.contains(":memory:")
            || path.contains("mode=memory")
            || path.contains("vfs=memdb")
            || uri_file.is_some_and(str::is_empty)
        {
            return Err(unsupported(
                "in-memory SQLite is not supported: each pooled connection would see its own database"
                    .into(),
            ));
        }
    }
    Ok(target)
}

impl Database {
    /// Opens a pool with default [`DatabaseOptions`].
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &DatabaseOptions::default())
    }

    /// Opens a pool. One connection is made at once, so that a wrong URL or an
    /// unreachable server is reported here, as [`Error::Connection`].
    pub fn open_with(url: &str, options: &DatabaseOptions) -> Result<Self> {
        let pool = match parse_url(url)? {
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => {
                PgConnection::establish(url)?;
                Pool::Postgres(pool_builder(options).build_unchecked(ConnectionManager::new(url)))
            }
            #[cfg(feature = "sqlite")]
            Target::Sqlite(path) => {
                // Resolved once: every pooled connection opens the same file, even if
                // the process changes its current directory later.
                let absolute;
                let path = if path.starts_with("file:") {
                    path
                } else {
                    absolute = std::path::absolute(path).map_err(|err| Error::UnsupportedUrl {
                        reason: format!("cannot resolve the SQLite path: {err}"),
                    })?;
                    absolute.to_str().ok_or_else(|| Error::UnsupportedUrl {
                        reason: "the SQLite path is not valid UTF-8".into(),
                    })?
                };
                let pragmas = SqlitePragmas { busy_timeout: options.busy_timeout };
                let mut first = SqliteConnection::establish(path)?;
                pragmas.apply(&mut first)?;
                Pool::Sqlite(
                    pool_builder(options)
                        .connection_customizer(Box::new(pragmas))
                        .build_unchecked(ConnectionManager::new(path)),
                )
            }
            #[allow(unreachable_patterns)]
            target => {
                return Err(Error::UnsupportedUrl {
                    reason: format!(
                        "this build of credential-store lacks the backend for {}; enable its cargo feature",
                        match target {
                            Target::Postgres(_) => "PostgreSQL (feature `postgres`)",
                            Target::Sqlite(_) => "SQLite (feature `sqlite`)",
                        }
                    ),
                })
            }
        };
        Ok(Database { pool })
    }

    /// The backend this database runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Runs `f` in one transaction on a pooled connection.
    ///
    /// On PostgreSQL, `scope.user` becomes the row-level-security context for this
    /// transaction only (`set_config('app.current_user_id', $1, true)`, a bound
    /// parameter), so it cannot outlive the transaction or reach the pool's next user.
    /// On SQLite a write takes the write lock at `BEGIN IMMEDIATE`, so that it waits
    /// for other writers (busy timeout) instead of failing when it upgrades; a read
    /// runs without a transaction.
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
                let mut conn = pool.get()?;
                conn.transaction(|c| {
                    if let Some(user) = scope.user {
                        diesel::select(set_config(USER_SETTING, user, true)).execute(c)?;
                    }
                    f(Conn::Postgres(c))
                })
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let mut conn = pool.get()?;
                if scope.write {
                    conn.immediate_transaction(|c| f(Conn::Sqlite(c)))
                } else {
                    f(Conn::Sqlite(&mut conn))
                }
            }
        }
    }

    /// Runs `f` on a pooled connection outside any transaction the crate opens.
    pub(crate) fn raw<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        let result = match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => f(Conn::Postgres(&mut *pool.get()?)),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => f(Conn::Sqlite(&mut *pool.get()?)),
        };
        result.map_err(classify)
    }
}

fn pool_builder<C: diesel::r2d2::R2D2Connection + 'static>(
    options: &DatabaseOptions,
) -> r2d2::Builder<ConnectionManager<C>> {
    r2d2::Pool::builder()
        .max_size(options.max_connections.max(1))
        .min_idle(Some(1))
        .connection_timeout(options.connection_timeout)
        // No `SELECT 1` round trip on every checkout: a connection that breaks is
        // reported by the statement that meets it (a typed error), and diesel marks
        // it broken so the pool replaces it.
        .test_on_check_out(false)
}

/// Gives the failures a caller can act on (retry) their own variants.
fn classify(err: Error) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match err {
        Error::Database(DieselError::DatabaseError(kind, info)) => {
            let message = info.message();
            let lost = matches!(kind, DatabaseErrorKind::ClosedConnection)
                || message.contains("terminating connection")
                || message.contains("server closed the connection");
            let busy = message.contains("database is locked")
                || message.contains("database table is locked");
            let err = DieselError::DatabaseError(kind, info);
            if lost {
                Error::ConnectionLost(err)
            } else if busy {
                Error::Busy(err)
            } else {
                Error::Database(err)
            }
        }
        other => other,
    }
}

/// The PostgreSQL setting the row-level-security policies read.
#[cfg(feature = "postgres")]
pub(crate) const USER_SETTING: &str = "app.current_user_id";

#[cfg(feature = "postgres")]
diesel::define_sql_function! {
    /// PostgreSQL's `set_config(setting, value, is_local)`.
    fn set_config(setting: diesel::sql_types::Text, value: diesel::sql_types::Text, is_local: diesel::sql_types::Bool) -> diesel::sql_types::Text;
}

#[cfg(feature = "postgres")]
diesel::define_sql_function! {
    /// PostgreSQL's `row_security_active(table)`: whether RLS filters rows of the table
    /// for the current role.
    fn row_security_active(table: diesel::sql_types::Text) -> diesel::sql_types::Bool;
}

/// Who a transaction acts for, and whether it writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The external user id; the PostgreSQL row-level-security context.
    pub user: Option<&'a str>,
    /// Whether the transaction writes.
    pub write: bool,
}

impl<'a> Scope<'a> {
    pub fn read(user: &'a str) -> Self {
        Scope {
            user: Some(user),
            write: false,
        }
    }
    pub fn write(user: &'a str) -> Self {
        Scope {
            user: Some(user),
            write: true,
        }
    }
    /// A maintenance read that spans users.
    pub fn maintenance_read() -> Self {
        Scope {
            user: None,
            write: false,
        }
    }
    /// A maintenance write that spans users.
    pub fn maintenance() -> Self {
        Scope {
            user: None,
            write: true,
        }
    }
}

/// A borrowed connection of either backend.
pub(crate) enum Conn<'a> {
    #[cfg(feature = "postgres")]
    Postgres(&'a mut PgConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut SqliteConnection),
}

/// Runs one body of diesel code on whichever connection `$conn` holds: the body is
/// written once and compiled once per backend.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            #[cfg(feature = "postgres")]
            $crate::connection::Conn::Postgres($c) => $body,
            #[cfg(feature = "sqlite")]
            $crate::connection::Conn::Sqlite($c) => $body,
        }
    };
}
pub(crate) use on_backend;

#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Copy)]
struct SqlitePragmas {
    busy_timeout: Duration,
}

#[cfg(feature = "sqlite")]
impl SqlitePragmas {
    fn apply(&self, conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {};",
            self.busy_timeout.as_millis()
        ))?;
        // Switching a new file to WAL needs a lock that SQLite does not wait for with
        // the busy handler: when processes open one new file at once, retry within the
        // busy timeout.
        let deadline = std::time::Instant::now() + self.busy_timeout;
        loop {
            match conn.batch_execute("PRAGMA journal_mode = WAL;") {
                Err(diesel::result::Error::DatabaseError(_, info))
                    if info.message().contains("locked")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => break other?,
            }
        }
        conn.batch_execute(
            "PRAGMA foreign_keys = ON;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = 268435456;",
        )
    }
}

#[cfg(feature = "sqlite")]
impl r2d2::CustomizeConnection<SqliteConnection, r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), r2d2::Error> {
        self.apply(conn).map_err(r2d2::Error::QueryError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_dispatched_by_scheme() {
        assert_eq!(
            parse_url("postgres://u@h/db").unwrap(),
            Target::Postgres("postgres://u@h/db")
        );
        assert_eq!(
            parse_url("postgresql://u@h/db").unwrap(),
            Target::Postgres("postgresql://u@h/db")
        );
        assert_eq!(
            parse_url("sqlite://data/x.db").unwrap(),
            Target::Sqlite("data/x.db")
        );
        assert_eq!(
            parse_url("sqlite:///abs/x.db").unwrap(),
            Target::Sqlite("/abs/x.db")
        );
        assert_eq!(parse_url("sqlite:x.db").unwrap(), Target::Sqlite("x.db"));
        assert_eq!(parse_url("x.db").unwrap(), Target::Sqlite("x.db"));
        assert_eq!(
            parse_url("/var/lib/x.db").unwrap(),
            Target::Sqlite("/var/lib/x.db")
        );
    }

    #[test]
    fn unusable_urls_are_refused_with_a_reason() {
        for url in [
            "mysql://root@localhost/db",
            "",
            "sqlite://",
            ":memory:",
            "sqlite::memory:",
        ] {
            match parse_url(url) {
                Err(Error::UnsupportedUrl { reason }) => assert!(!reason.is_empty()),
                other => panic!("{url:?} gave {other:?}"),
            }
        }
    }

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
                        (SELECT timeout FROM pragma_busy_timeout) AS busy_timeout",
            )
            .get_result(&mut *conn)
            .unwrap();
            assert_eq!(p.journal_mode, "wal");
            assert_eq!(p.foreign_keys, 1);
            assert_eq!(p.synchronous, 1, "NORMAL");
            assert_eq!(p.busy_timeout, 1234);
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
