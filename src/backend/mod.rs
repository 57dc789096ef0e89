//! The backends: one file each (`postgres.rs`, `sqlite.rs`, `mysql.rs`), gated by one
//! `#[cfg]` on its `mod` line, holding everything that is that backend's (URL form,
//! connection set-up, user context, migration lock, `RETURNING` or its substitute,
//! checkpoints, replica routing, catalog queries, the messages of its lost-connection
//! and lock errors). This file holds only what is common:
//!
//! - [`Backend`], and which URL names which backend ([`parse_url`]);
//! - the two traits a backend implements: [`BackendPool`] (a pool of its connections
//!   and how a transaction runs on it) and [`BackendConnection`] (what differs on one
//!   connection);
//! - the list of backends ([`backends!`](backends)), from which the connection and
//!   pool enums ([`Conn`], [`AnyPool`]) and their dispatch macros
//!   ([`on_backend!`](on_backend), [`on_pool!`](on_pool)) are generated: a new
//!   backend is a file, a line in the list, a [`Backend`] variant and its scheme;
//! - the bounds a statement meets to run on every executor the build has
//!   ([`Load`], [`Execute`], [`LoadWritten`]);
//! - [`Scope`] (who a transaction acts for) and the classification of failures that a
//!   caller can act on ([`classify`]).
//!
//! Nothing here imports the layers above it (query values, executors, stores,
//! maintenance).

use crate::error::{Error, Result};
use crate::models::{UserAccount, UserCredential};
use std::time::Duration;

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
pub(crate) mod url;

pub(crate) use url::{Location, Redactor};

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "credential-store needs at least one backend: enable the `sqlite`, `postgres` or `mysql` feature"
);

#[cfg(feature = "mysql")]
pub use mysql::MysqlConnection;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// An embedded SQLite file.
    Sqlite,
    /// MariaDB or MySQL.
    Mysql,
}

impl Backend {
    /// The backend's name, as spans and logs give it: `postgres`, `sqlite` or `mysql`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pool and connection settings for [`Database::open_with`](crate::Database::open_with)
/// (and the async `AsyncDatabase::open_with`): the defaults, changed with the
/// setters.
///
/// ```
/// use credential_store::DatabaseOptions;
/// use std::time::Duration;
/// let options = DatabaseOptions::default()
///     .max_connections(4)
///     .connection_timeout(Duration::from_secs(5));
/// assert_eq!(options.max_connections, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

impl DatabaseOptions {
    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout).
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets [`busy_timeout`](Self::busy_timeout).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets [`transaction_pooler`](Self::transaction_pooler).
    #[must_use]
    pub fn transaction_pooler(mut self, transaction_pooler: bool) -> Self {
        self.transaction_pooler = transaction_pooler;
        self
    }
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

/// An r2d2 pool builder with the crate's settings.
pub(crate) fn pool_builder<M: diesel::r2d2::ManageConnection>(
    options: &DatabaseOptions,
) -> diesel::r2d2::Builder<M> {
    diesel::r2d2::Pool::builder()
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

/// An r2d2 connection manager whose connection errors are scrubbed of the URL's
/// credentials ([`Redactor`]): r2d2 keeps the last one for its timeout error, and
/// logs each.
pub(crate) struct Manager<C: diesel::r2d2::R2D2Connection + 'static> {
    inner: diesel::r2d2::ConnectionManager<C>,
    redactor: Redactor,
}

impl<C: diesel::r2d2::R2D2Connection + 'static> Manager<C> {
    pub(crate) fn new(location: &Location<'_>) -> Self {
        Manager {
            inner: diesel::r2d2::ConnectionManager::new(location.text),
            redactor: location.redactor.clone(),
        }
    }
}

impl<C: diesel::r2d2::R2D2Connection + 'static> diesel::r2d2::ManageConnection for Manager<C> {
    type Connection = C;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> std::result::Result<C, diesel::r2d2::Error> {
        self.inner.connect().map_err(|err| match err {
            diesel::r2d2::Error::ConnectionError(err) => {
                diesel::r2d2::Error::ConnectionError(self.redactor.connection(err))
            }
            other => other,
        })
    }

    fn is_valid(&self, conn: &mut C) -> std::result::Result<(), diesel::r2d2::Error> {
        self.inner.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut C) -> bool {
        self.inner.has_broken(conn)
    }
}

/// The backend and location a URL names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Postgres(Location<'a>),
    Sqlite(Location<'a>),
    Mysql(Location<'a>),
}

/// Reads the scheme of a database URL, and checks its form before any driver sees
/// it. A backend this build leaves out is still recognised, so that its error says
/// which feature to enable. No refusal quotes the URL: it may hold a password.
///
/// A text without a scheme is a SQLite path, unless it holds `=`, whitespace or a
/// control character (a libpq `key=value` connection string is not a path); such
/// a file is named `sqlite://PATH`.
pub(crate) fn parse_url(url: &str) -> Result<Target<'_>> {
    let url = url.trim();
    for (scheme, many_hosts) in [("postgres://", true), ("postgresql://", true)] {
        if url.starts_with(scheme) {
            return self::url::check_server_url(url, scheme.len(), "PostgreSQL", many_hosts)
                .map(Target::Postgres);
        }
    }
    if url.starts_with("mysql://") {
        self::url::check_server_url(url, "mysql://".len(), "MariaDB/MySQL", false)
            .map(Target::Mysql)
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        sqlite_path(path)
    } else if let Some((scheme, _)) = url.split_once("://") {
        let named = !scheme.is_empty()
            && scheme.len() <= 20
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        Err(Error::UnsupportedUrl {
            reason: format!(
                "{} is not supported (use postgres://, mysql://, sqlite:// or a file path)",
                if named {
                    format!("scheme `{scheme}`")
                } else {
                    "the URL's scheme".to_owned()
                }
            ),
        })
    } else if url.contains('=') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(Error::UnsupportedUrl {
            reason: "not a URL: a database URL starts with postgres://, mysql:// or sqlite://, \
                     and a path without a scheme must not hold `=`, whitespace or control \
                     characters (a libpq key=value connection string is not supported; name \
                     such a SQLite file sqlite://PATH)"
                .into(),
        })
    } else {
        sqlite_path(url)
    }
}

/// A SQLite location, refused when it is empty or in memory (each pooled connection
/// would see a database of its own).
fn sqlite_path(path: &str) -> Result<Target<'_>> {
    let unsupported = |reason: &str| {
        Err(Error::UnsupportedUrl {
            reason: reason.into(),
        })
    };
    if path.is_empty() {
        return unsupported("the SQLite path is empty");
    }
    let uri_file = path
        .strip_prefix("file:")
        .map(|uri| uri.split(['?', '#']).next().unwrap_or_default());
    if path.contains(":memory:")
        || path.contains("mode=memory")
        || path.contains("vfs=memdb")
        || uri_file.is_some_and(str::is_empty)
    {
        return unsupported(
            "in-memory SQLite is not supported: each pooled connection would see its own database",
        );
    }
    Ok(Target::Sqlite(Location::path(path)))
}

impl Target<'_> {
    /// The error for a URL whose backend this build leaves out.
    #[cfg(not(all(feature = "sqlite", feature = "postgres", feature = "mysql")))]
    pub(crate) fn missing(&self) -> Error {
        Error::UnsupportedUrl {
            reason: format!(
                "this build of credential-store lacks the backend for {}; enable its cargo feature",
                match self {
                    Target::Postgres(_) => "PostgreSQL (feature `postgres`)",
                    Target::Sqlite(_) => "SQLite (feature `sqlite`)",
                    Target::Mysql(_) => "MariaDB/MySQL (feature `mysql`)",
                }
            ),
        }
    }
}

/// Who a transaction acts for, and whether it writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The external user id; the PostgreSQL row-level-security context.
    pub user: Option<&'a str>,
    /// Whether the transaction writes.
    pub write: bool,
    /// Whether the transaction removes ciphertexts (a deleted credential, replaced
    /// keys): on SQLite the write-ahead log is checkpointed once it commits, so the
    /// old ciphertexts leave the file.
    pub erases: bool,
}

impl<'a> Scope<'a> {
    pub fn read(user: &'a str) -> Self {
        Scope {
            user: Some(user),
            write: false,
            erases: false,
        }
    }
    pub fn write(user: &'a str) -> Self {
        Scope {
            user: Some(user),
            write: true,
            erases: false,
        }
    }
    /// A maintenance read that spans users.
    pub fn maintenance_read() -> Self {
        Scope {
            user: None,
            write: false,
            erases: false,
        }
    }
    /// A maintenance write that spans users.
    pub fn maintenance() -> Self {
        Scope {
            user: None,
            write: true,
            erases: false,
        }
    }
    /// The same write, marked as removing ciphertexts.
    pub fn erasing(self) -> Self {
        Scope {
            erases: true,
            ..self
        }
    }
    /// The same scope without a user, for an executor that has no row-level
    /// security (SQLite, MySQL) and moves the scope to another thread.
    #[cfg(feature = "async")]
    pub fn without_user(self) -> Scope<'static> {
        Scope {
            user: None,
            write: self.write,
            erases: self.erases,
        }
    }
}

/// A pool of one backend's connections, and how a transaction runs on it.
pub(crate) trait BackendPool: Clone + Send + Sync + Sized + 'static {
    /// The backend's blocking connection.
    type Connection: BackendConnection;

    /// Opens a pool on `location` (a checked URL, or a SQLite path), making one
    /// connection at once so that a wrong URL or an unreachable server is reported
    /// by `open`. Connection errors go through the location's [`Redactor`].
    fn open(location: Location<'_>, options: &DatabaseOptions) -> Result<Self>;

    /// Runs `f` in one transaction (or, for a read where the backend allows it, on
    /// its own) on a pooled connection, for `scope`.
    fn run<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(&mut Self::Connection) -> Result<T>,
    ) -> Result<T>;

    /// Runs `f` on a pooled connection outside any transaction the crate opens.
    fn raw<T>(&self, f: impl FnOnce(&mut Self::Connection) -> Result<T>) -> Result<T>;

    /// Makes the ciphertexts that committed transactions removed leave the database
    /// file, where the backend allows it. Nothing by default.
    fn erase_freed(&self) -> Result<()> {
        Ok(())
    }

    /// Between two batches of a maintenance run. Nothing by default.
    fn checkpoint_between_batches(&self) -> Result<()> {
        Ok(())
    }

    /// The same pool, with per-user reads sent to a read replica at `url`. Refused by
    /// default.
    fn with_read_replica(self, url: &str, options: &DatabaseOptions) -> Result<Self> {
        let _ = (url, options);
        Err(Error::UnsupportedUrl {
            reason: "a read replica needs a PostgreSQL primary and a PostgreSQL replica URL".into(),
        })
    }
}

/// What differs between the backends on one connection.
pub(crate) trait BackendConnection: diesel::Connection + Send + 'static {
    /// Which backend this is.
    const BACKEND: Backend;

    /// The backend's migrations, embedded at build time.
    const MIGRATIONS: diesel_migrations::EmbeddedMigrations;

    /// Runs `f` holding the lock that serialises migration runs.
    fn with_migration_lock<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>;

    /// Runs a write whose rows come back as stored: with `RETURNING` where the
    /// backend has it, else the write and a read of the rows by the ids the client
    /// made, in the same transaction, in the order written.
    fn load_written<Q: LoadWritten<T>, T: Stored>(
        &mut self,
        statement: Q,
    ) -> diesel::QueryResult<Vec<T>>;

    /// Runs `f` holding the crate's tables (those that exist) against every other
    /// session's writes, inside [`with_migration_lock`](Self::with_migration_lock):
    /// a guarded revert counts their rows and runs its down migration in `f`, so no
    /// row can be committed between the count and the `DROP` or `ALTER`. A write
    /// that was under way when `f` began is waited for, and counted; one that comes
    /// later waits until the revert is done (and fails if the table is gone).
    /// `f` must not begin a transaction: on MariaDB/MySQL that ends the hold.
    fn holding_tables<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>;

    /// Runs `f`, the counts of a guarded revert, seeing every row of the crate's
    /// tables even as an owner role that row-level security applies to, and undoes
    /// what made them visible before it returns. By default `f` alone (no row
    /// security).
    fn counting_every_row<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> diesel::QueryResult<T>,
    ) -> Result<T> {
        Ok(f(self)?)
    }

    /// Whether row-level security filters `user_credentials` for the current role.
    /// `false` by default (no row security).
    fn row_security_active(&mut self) -> diesel::QueryResult<bool> {
        Ok(false)
    }

    /// Row-level security on the crate's tables, and whether the current role
    /// escapes it. `None` by default (no row security).
    fn row_security_status(&mut self) -> Result<Option<RowSecurityStatus>> {
        Ok(None)
    }
}

/// Row-level security as PostgreSQL applies it to the current role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RowSecurityStatus {
    /// The current role (`current_user`).
    pub role: String,
    /// Whether it is a superuser.
    pub superuser: bool,
    /// Whether it has `BYPASSRLS`.
    pub bypass_rls: bool,
    /// Whether row-level security leaves it every row: a superuser or `BYPASSRLS`.
    pub bypasses: bool,
    /// `user_accounts` and `user_credentials`, those that exist.
    pub tables: Vec<TableRowSecurity>,
}

/// Row-level security on one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TableRowSecurity {
    /// The table.
    pub table: String,
    /// `ENABLE ROW LEVEL SECURITY`.
    pub enabled: bool,
    /// `FORCE ROW LEVEL SECURITY` (the owner is subject to it too).
    pub forced: bool,
}

/// A row the database hands back after a write, known by its id.
pub(crate) trait Stored {
    /// The row's primary key.
    fn stored_id(&self) -> uuid::Uuid;
}

impl Stored for UserAccount {
    fn stored_id(&self) -> uuid::Uuid {
        self.id()
    }
}

impl Stored for UserCredential {
    fn stored_id(&self) -> uuid::Uuid {
        self.id
    }
}

/// Generates, from the one list of backends, the borrowed-connection enum [`Conn`],
/// the pool enum [`AnyPool`] and their dispatch macros. `$d` is a `$` token, so that
/// the generated macros can have metavariables of their own.
macro_rules! backends {
    ($d:tt $($feature:literal $variant:ident => $pool:ty, $conn:ty;)+) => {
        /// A borrowed blocking connection of any backend the build has.
        pub enum Conn<'a> {
            $(
                #[doc = concat!("A `", $feature, "` connection.")]
                #[cfg(feature = $feature)]
                $variant(&'a mut $conn),
            )+
        }

        $(
            #[cfg(feature = $feature)]
            impl<'a> From<&'a mut $conn> for Conn<'a> {
                fn from(conn: &'a mut $conn) -> Self {
                    Conn::$variant(conn)
                }
            }
        )+

        /// A pool of any backend the build has.
        #[derive(Clone)]
        pub(crate) enum AnyPool {
            $(
                #[cfg(feature = $feature)]
                $variant($pool),
            )+
        }

        $(
            #[cfg(feature = $feature)]
            impl From<$pool> for AnyPool {
                fn from(pool: $pool) -> Self {
                    AnyPool::$variant(pool)
                }
            }
        )+

        impl AnyPool {
            /// Opens the pool the URL's scheme names.
            pub(crate) fn open(url: &str, options: &DatabaseOptions) -> Result<Self> {
                let target = parse_url(url)?;
                match target {
                    $(
                        #[cfg(feature = $feature)]
                        Target::$variant(location) => {
                            Ok(AnyPool::$variant(<$pool as BackendPool>::open(location, options)?))
                        }
                    )+
                    $(
                        #[cfg(not(feature = $feature))]
                        Target::$variant(_) => Err(target.missing()),
                    )+
                }
            }
        }

        /// Runs one body of diesel code on whichever connection `$conn` holds: the
        /// body is written once and compiled once per backend.
        macro_rules! on_backend {
            ($d conn:expr, $d c:ident => $d body:expr) => {
                match $d conn {
                    $(
                        #[cfg(feature = $feature)]
                        $crate::backend::Conn::$variant($d c) => $d body,
                    )+
                }
            };
        }

        /// Runs one body on whichever pool `$pool` holds.
        macro_rules! on_pool {
            ($d pool:expr, $d p:ident => $d body:expr) => {
                match $d pool {
                    $(
                        #[cfg(feature = $feature)]
                        $crate::backend::AnyPool::$variant($d p) => $d body,
                    )+
                }
            };
        }
    };
}

// The backends, listed once: feature, variant (also its `Target` and `Backend`
// variant), pool, blocking connection (the pool's `BackendPool::Connection`).
backends! { $
    "postgres" Postgres => postgres::PgPools, diesel::pg::PgConnection;
    "sqlite" Sqlite => sqlite::SqlitePool, diesel::sqlite::SqliteConnection;
    "mysql" Mysql => mysql::MysqlPool, mysql::MysqlConnection;
}

// The macros by path (`crate::backend::on_backend!`) for the rest of the crate.
#[allow(clippy::single_component_path_imports)]
pub(crate) use {on_backend, on_pool};

impl Conn<'_> {
    /// The same connection, borrowed for a shorter time.
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        on_backend!(self, c => Conn::from(&mut **c))
    }
}

impl AnyPool {
    /// The backend of this pool.
    pub(crate) fn backend(&self) -> Backend {
        fn of<P: BackendPool>(_: &P) -> Backend {
            <P::Connection as BackendConnection>::BACKEND
        }
        on_pool!(self, p => of(p))
    }
}

/// Gives the failures a caller can act on (retry) their own variants: a lost
/// connection ([`Error::ConnectionLost`]) and a lock that a retry may get
/// ([`Error::Busy`]), by the messages each backend's driver gives them.
pub(crate) fn classify(err: Error) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match err {
        Error::Database(DieselError::DatabaseError(kind, info)) => {
            let message = info.message().to_ascii_lowercase();
            let lost = matches!(kind, DatabaseErrorKind::ClosedConnection)
                || LOST_MESSAGES
                    .iter()
                    .flat_map(|messages| messages.iter())
                    .any(|lost| message.contains(lost));
            let busy = BUSY_MESSAGES
                .iter()
                .flat_map(|messages| messages.iter())
                .any(|busy| message.contains(busy));
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

/// The messages of a lost connection, of every backend the build has.
const LOST_MESSAGES: &[&[&str]] = &[
    #[cfg(feature = "postgres")]
    postgres::LOST_MESSAGES,
    #[cfg(feature = "mysql")]
    mysql::LOST_MESSAGES,
];

/// The messages of a lock a retry may get, of every backend the build has.
const BUSY_MESSAGES: &[&[&str]] = &[
    #[cfg(feature = "sqlite")]
    sqlite::BUSY_MESSAGES,
    #[cfg(feature = "mysql")]
    mysql::BUSY_MESSAGES,
];

/// Declares a bound that holds for a statement when a backend is built, and for
/// every type when it is not, so one list of bounds fits every feature set.
macro_rules! bound_when {
    ($name:ident [$($g:ident),*], $feature:meta, $($bound:tt)+) => {
        #[cfg($feature)]
        pub(crate) trait $name<$($g),*>: $($bound)+ {}
        #[cfg($feature)]
        impl<Q, $($g),*> $name<$($g),*> for Q where Q: $($bound)+ {}
        #[cfg(not($feature))]
        pub(crate) trait $name<$($g),*> {}
        #[cfg(not($feature))]
        impl<Q, $($g),*> $name<$($g),*> for Q {}
    };
}

bound_when!(
    PgLoad[T],
    feature = "postgres",
    diesel::RunQueryDsl<diesel::pg::PgConnection>
        + diesel::query_dsl::LoadQuery<'static, diesel::pg::PgConnection, T>
);
bound_when!(
    SqliteLoad[T],
    feature = "sqlite",
    diesel::RunQueryDsl<diesel::sqlite::SqliteConnection>
        + diesel::query_dsl::LoadQuery<'static, diesel::sqlite::SqliteConnection, T>
);
bound_when!(
    AsyncPgLoad[T],
    all(feature = "async", feature = "postgres"),
    for<'c> diesel_async::methods::LoadQuery<'static, &'c diesel_async::AsyncPgConnection, T>
        + diesel::query_builder::QueryId
        + diesel::query_builder::QueryFragment<diesel::pg::Pg>
);
bound_when!(
    PgExecute[],
    feature = "postgres",
    diesel::RunQueryDsl<diesel::pg::PgConnection>
        + diesel::query_dsl::methods::ExecuteDsl<diesel::pg::PgConnection>
);
bound_when!(
    SqliteExecute[],
    feature = "sqlite",
    diesel::RunQueryDsl<diesel::sqlite::SqliteConnection>
        + diesel::query_dsl::methods::ExecuteDsl<diesel::sqlite::SqliteConnection>
);
bound_when!(
    AsyncPgExecute[],
    all(feature = "async", feature = "postgres"),
    for<'c> diesel_async::methods::ExecuteDsl<&'c diesel_async::AsyncPgConnection>
        + diesel::query_builder::QueryId
        + diesel::query_builder::QueryFragment<diesel::pg::Pg>
);
bound_when!(
    MysqlLoad[T],
    feature = "mysql",
    diesel::RunQueryDsl<MysqlConnection>
        + diesel::query_dsl::LoadQuery<'static, MysqlConnection, T>
);
bound_when!(
    MysqlExecute[],
    feature = "mysql",
    diesel::RunQueryDsl<MysqlConnection> + diesel::query_dsl::methods::ExecuteDsl<MysqlConnection>
);

/// A statement that loads rows of `T` on every executor this build has that
/// supports `RETURNING` (all but MySQL).
pub(crate) trait LoadReturning<T>:
    PgLoad<T> + SqliteLoad<T> + AsyncPgLoad<T> + Send + 'static
{
}
impl<Q, T> LoadReturning<T> for Q where
    Q: PgLoad<T> + SqliteLoad<T> + AsyncPgLoad<T> + Send + 'static
{
}

/// A statement that loads rows of `T` on every executor this build has.
pub(crate) trait Load<T>: LoadReturning<T> + MysqlLoad<T> {}
impl<Q, T> Load<T> for Q where Q: LoadReturning<T> + MysqlLoad<T> {}

/// A statement that changes rows on every executor this build has.
pub(crate) trait Execute:
    PgExecute + SqliteExecute + AsyncPgExecute + MysqlExecute + Send + 'static
{
}
impl<Q> Execute for Q where
    Q: PgExecute + SqliteExecute + AsyncPgExecute + MysqlExecute + Send + 'static
{
}

/// A write whose rows come back as stored, on every executor this build has: the
/// write with `RETURNING` where the backend has it, else the write alone, a read of
/// the rows by the ids the client made, and those ids (built by
/// `query::Written`, run by [`BackendConnection::load_written`]).
pub(crate) trait LoadWritten<T>: Send + 'static {
    /// The write with `RETURNING`.
    type Returning: LoadReturning<T>;
    /// The write alone.
    type Write: MysqlExecute + Send + 'static;
    /// The read of the written rows.
    type ReadBack: MysqlLoad<T> + Send + 'static;
    /// The write with `RETURNING`.
    fn returning(self) -> Self::Returning;
    /// The write alone, the read of its rows, and their ids in the order written.
    fn without_returning(self) -> (Self::Write, Self::ReadBack, Vec<uuid::Uuid>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_dispatched_by_scheme() {
        let path = Location::path;
        assert_eq!(
            parse_url("postgres://u@h/db").unwrap(),
            Target::Postgres(path("postgres://u@h/db"))
        );
        assert_eq!(
            parse_url("postgresql://u@h/db").unwrap(),
            Target::Postgres(path("postgresql://u@h/db"))
        );
        assert_eq!(
            parse_url("sqlite://data/x.db").unwrap(),
            Target::Sqlite(path("data/x.db"))
        );
        assert_eq!(
            parse_url("sqlite:///abs/x.db").unwrap(),
            Target::Sqlite(path("/abs/x.db"))
        );
        assert_eq!(
            parse_url("sqlite:x.db").unwrap(),
            Target::Sqlite(path("x.db"))
        );
        assert_eq!(
            parse_url("mysql://u@h:3306/db").unwrap(),
            Target::Mysql(path("mysql://u@h:3306/db"))
        );
        assert_eq!(parse_url("x.db").unwrap(), Target::Sqlite(path("x.db")));
        assert_eq!(
            parse_url("/var/lib/x.db").unwrap(),
            Target::Sqlite(path("/var/lib/x.db"))
        );
        // An explicit scheme allows what a bare path may not hold.
        assert_eq!(
            parse_url("sqlite://dir/a=b c.db").unwrap(),
            Target::Sqlite(path("dir/a=b c.db"))
        );
    }

    #[test]
    fn key_value_connection_strings_are_not_sqlite_files() {
        for url in [
            "host=db.internal user=svc password=Zq9secret dbname=app",
            "dbname=app",
            "password=Zq9secret",
            "my file.db",
            "file\tname.db",
        ] {
            match parse_url(url) {
                Err(Error::UnsupportedUrl { reason }) => {
                    assert!(
                        !reason.contains("Zq9") && !reason.contains("app"),
                        "{reason}"
                    )
                }
                other => panic!("{url:?} gave {other:?}"),
            }
        }
        match parse_url("pass=Zq9secret://x") {
            Err(Error::UnsupportedUrl { reason }) => assert!(!reason.contains("Zq9"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusable_urls_are_refused_with_a_reason() {
        for url in [
            "redis://localhost/0",
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
}
