//! Everything that differs between the backends, in one place: how a URL picks
//! one, the SQLite pragmas, the PostgreSQL row-level-security context, which
//! failures are retryable, the bounds a statement must meet to run on every
//! executor the build has, and how a write returns its rows where MySQL has no
//! `RETURNING`.

use crate::error::{Error, Result};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use std::time::Duration;

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "credential-store needs at least one backend: enable the `sqlite`, `postgres` or `mysql` feature"
);

/// The blocking MariaDB/MySQL connection: diesel-async's pure-Rust
/// `AsyncMysqlConnection` (no C client library), driven by a single-threaded tokio
/// runtime that each connection owns. Called from a task of a multi-threaded tokio
/// runtime, it blocks in place (`tokio::task::block_in_place`); on a current-thread
/// runtime tokio refuses to block: async code uses the async store or
/// `spawn_blocking`.
#[cfg(feature = "mysql")]
pub type MysqlConnection = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
    diesel_async::AsyncMysqlConnection,
    OwnRuntime,
>;

/// The runtime a blocking MySQL connection runs its I/O on: its own, never the
/// caller's (a connection made inside one runtime would die with it).
#[cfg(feature = "mysql")]
pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

/// Shuts the runtime down without waiting, so that a connection may be dropped
/// anywhere, inside async code too (dropping a runtime there would panic).
#[cfg(feature = "mysql")]
impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(feature = "mysql")]
impl diesel_async::async_connection_wrapper::BlockOn for OwnRuntime {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        let runtime = self
            .0
            .as_ref()
            .expect("the runtime lives as long as its connection");
        // Called from a task of a multi-threaded tokio runtime (a blocking call in
        // async code), this worker thread first hands its other tasks off, as
        // `block_in_place` does; a current-thread runtime cannot, and tokio panics.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| runtime.block_on(f))
            }
            _ => runtime.block_on(f),
        }
    }

    fn get_runtime() -> Self {
        OwnRuntime(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a single-threaded tokio runtime for a MySQL connection"),
        ))
    }
}

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

/// The backend and location a URL names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Postgres(&'a str),
    Sqlite(&'a str),
    Mysql(&'a str),
}

/// Reads the scheme of a database URL.
pub(crate) fn parse_url(url: &str) -> Result<Target<'_>> {
    let unsupported = |reason: String| Error::UnsupportedUrl { reason };
    let url = url.trim();
    let target = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Target::Postgres(url)
    } else if url.starts_with("mysql://") {
        Target::Mysql(url)
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Target::Sqlite(path)
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(unsupported(format!(
            "scheme `{scheme}` is not supported (use postgres://, mysql://, sqlite:// or a file path)"
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

/// The SQLite path a URL names, made absolute once, so that every pooled
/// connection opens the same file even if the process changes directory later.
pub(crate) fn absolute_sqlite_path(path: &str) -> Result<String> {
    if path.starts_with("file:") {
        return Ok(path.to_owned());
    }
    let absolute = std::path::absolute(path).map_err(|err| Error::UnsupportedUrl {
        reason: format!("cannot resolve the SQLite path: {err}"),
    })?;
    absolute
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::UnsupportedUrl {
            reason: "the SQLite path is not valid UTF-8".into(),
        })
}

/// The error for a URL whose backend this build leaves out.
#[allow(dead_code)]
pub(crate) fn missing_backend(target: &Target<'_>) -> Error {
    Error::UnsupportedUrl {
        reason: format!(
            "this build of credential-store lacks the backend for {}; enable its cargo feature",
            match target {
                Target::Postgres(_) => "PostgreSQL (feature `postgres`)",
                Target::Sqlite(_) => "SQLite (feature `sqlite`)",
                Target::Mysql(_) => "MariaDB/MySQL (feature `mysql`)",
            }
        ),
    }
}

/// Gives the failures a caller can act on (retry) their own variants.
pub(crate) fn classify(err: Error) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match err {
        Error::Database(DieselError::DatabaseError(kind, info)) => {
            let message = info.message().to_ascii_lowercase();
            let lost = matches!(kind, DatabaseErrorKind::ClosedConnection)
                || [
                    "terminating connection",
                    "server closed the connection",
                    "connection closed",
                    // MariaDB/MySQL (mysql_async's I/O and driver errors)
                    "connection to the server is closed",
                    "connection reset",
                    "broken pipe",
                    "server has gone away",
                    "lost connection",
                ]
                .iter()
                .any(|lost| message.contains(lost));
            // SQLite's lock, and MySQL's deadlock and lock-wait timeout (InnoDB rolls
            // the statement or transaction back; a retry can succeed).
            let busy = [
                "database is locked",
                "database table is locked",
                "deadlock found",
                "lock wait timeout exceeded",
            ]
            .iter()
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

/// Whether a failed insert met the owner check (the composite foreign key on
/// PostgreSQL and MySQL, the triggers or the account foreign key on SQLite).
pub(crate) fn is_owner_violation(err: &Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match err {
        Error::Database(DieselError::DatabaseError(kind, info)) => {
            matches!(kind, DatabaseErrorKind::ForeignKeyViolation)
                || info.message().contains("FOREIGN KEY constraint failed")
                || info.message().contains("must equal its account")
        }
        _ => false,
    }
}

/// Whether a failed insert met a unique index.
pub(crate) fn is_unique_violation(err: &Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    matches!(
        err,
        Error::Database(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
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

/// The statement that makes `user` the row-level-security context of the current
/// transaction only: a bound parameter, never spliced into SQL.
#[cfg(feature = "postgres")]
pub(crate) fn user_context(
    user: &str,
) -> diesel::dsl::select<set_config<&'static str, String, bool>> {
    diesel::select(set_config(USER_SETTING, user.to_owned(), true))
}

/// A PostgreSQL pool: one connection is made at once, so that a wrong URL or an
/// unreachable server is reported by `open`. Behind a transaction pooler the
/// connections keep no prepared statements (see
/// [`DatabaseOptions::transaction_pooler`](crate::DatabaseOptions::transaction_pooler)).
#[cfg(feature = "postgres")]
pub(crate) fn pg_pool(
    url: &str,
    builder: diesel::r2d2::Builder<diesel::r2d2::ConnectionManager<PgConnection>>,
    transaction_pooler: bool,
) -> Result<diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<PgConnection>>> {
    use diesel::Connection;
    let mut first = PgConnection::establish(url)?;
    let statements = PgStatements { transaction_pooler };
    diesel::r2d2::CustomizeConnection::on_acquire(&statements, &mut first)
        .map_err(|err| Error::Database(diesel::result::Error::QueryBuilderError(err.into())))?;
    Ok(builder
        .connection_customizer(Box::new(statements))
        .build_unchecked(diesel::r2d2::ConnectionManager::new(url)))
}

/// Whether a PostgreSQL connection caches prepared statements: not behind a
/// transaction pooler, where each statement goes out unnamed with its parameters.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Copy)]
struct PgStatements {
    transaction_pooler: bool,
}

#[cfg(feature = "postgres")]
impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for PgStatements {
    fn on_acquire(&self, conn: &mut PgConnection) -> std::result::Result<(), diesel::r2d2::Error> {
        if self.transaction_pooler {
            diesel::Connection::set_prepared_statement_cache_size(
                conn,
                diesel::connection::CacheSize::Disabled,
            );
        }
        Ok(())
    }
}

/// A streaming replica that per-user reads go to, and how far this handle needs it
/// to have replayed the primary's WAL (read your writes).
#[cfg(feature = "postgres")]
pub(crate) struct Replica {
    pool: diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<PgConnection>>,
    /// The primary's WAL position after this handle's latest committed write.
    written: std::sync::atomic::AtomicI64,
    /// The furthest the replica was seen to have replayed.
    replayed: std::sync::atomic::AtomicI64,
    /// Until when reads skip a replica that could not be reached.
    unreachable_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a read waits for a replica connection before it goes to the primary
/// (the pool's own timeout would hold it for `connection_timeout`).
#[cfg(feature = "postgres")]
const REPLICA_WAIT: Duration = Duration::from_millis(250);

/// How long reads go to the primary after the replica could not be reached.
#[cfg(feature = "postgres")]
const REPLICA_RETRY: Duration = Duration::from_secs(5);

/// `pg_current_wal_lsn()` on the primary, as a byte position.
#[cfg(feature = "postgres")]
fn primary_wal_position(
) -> diesel::dsl::select<diesel::expression::SqlLiteral<diesel::sql_types::BigInt>> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
    ))
}

/// `pg_last_wal_replay_lsn()` on a standby, as a byte position (NULL: not a standby).
#[cfg(feature = "postgres")]
fn replica_replay_position() -> diesel::dsl::select<
    diesel::expression::SqlLiteral<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>,
> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    >("(pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"))
}

/// A write whose WAL position could not be read: no replica is known to hold it.
#[cfg(feature = "postgres")]
const UNKNOWN_POSITION: i64 = i64::MAX;

#[cfg(feature = "postgres")]
type PgPooled = diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<PgConnection>>;

#[cfg(feature = "postgres")]
impl Replica {
    pub(crate) fn new(
        pool: diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<PgConnection>>,
    ) -> Self {
        Replica {
            pool,
            written: std::sync::atomic::AtomicI64::new(0),
            replayed: std::sync::atomic::AtomicI64::new(0),
            unreachable_until: std::sync::Mutex::new(None),
        }
    }

    /// A replica connection within [`REPLICA_WAIT`], unless the replica was
    /// unreachable less than [`REPLICA_RETRY`] ago.
    fn connection(&self) -> Option<PgPooled> {
        let now = std::time::Instant::now();
        let mut until = self
            .unreachable_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if until.is_some_and(|until| now < until) {
            return None;
        }
        *until = None;
        drop(until);
        let conn = self.pool.get_timeout(REPLICA_WAIT).ok();
        // No connection open at all: the replica is unreachable (all of them busy is
        // load, which does not make the next reads skip it).
        if conn.is_none() && self.pool.state().connections == 0 {
            *self
                .unreachable_until
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(now + REPLICA_RETRY);
        }
        conn
    }

    /// A replica connection that has replayed this handle's latest write, or `None`
    /// (the read goes to the primary): the replica is behind or unreachable.
    pub(crate) fn caught_up_connection(&self) -> Option<PgPooled> {
        use diesel::RunQueryDsl;
        use std::sync::atomic::Ordering;
        let mut conn = self.connection()?;
        let written = self.written.load(Ordering::Acquire);
        if written > self.replayed.load(Ordering::Acquire) {
            // NULL: the server is not in recovery, so it is not following the
            // primary (a promoted standby): the read goes to the primary.
            let replayed = replica_replay_position()
                .get_result::<Option<i64>>(&mut conn)
                .ok()??;
            self.replayed.fetch_max(replayed, Ordering::AcqRel);
            if replayed < written {
                return None;
            }
        }
        Some(conn)
    }

    /// Records the primary's WAL position after a committed write. When it cannot
    /// be read, the position is unknown and replica reads go to the primary until a
    /// later write records one (which covers this write too).
    pub(crate) fn record_write(&self, primary: &mut PgConnection) {
        use diesel::RunQueryDsl;
        use std::sync::atomic::Ordering;
        match primary_wal_position().get_result::<i64>(primary) {
            Ok(position) => {
                let _ = self
                    .written
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                        Some(if current == UNKNOWN_POSITION {
                            position
                        } else {
                            current.max(position)
                        })
                    });
            }
            Err(_) => self.written.store(UNKNOWN_POSITION, Ordering::Release),
        }
    }
}

/// Replaces the ciphertexts of a rotation batch in the current transaction and
/// returns how many rows changed: on PostgreSQL one statement for the batch (a
/// round trip per row would dominate), on SQLite one cached UPDATE per row (no
/// network, and a multi-row form would not be cached).
pub(crate) fn replace_ciphertexts(
    mut conn: Conn<'_>,
    rewrites: Vec<crate::query::CiphertextRewrite>,
) -> diesel::QueryResult<usize> {
    use diesel::RunQueryDsl;
    #[cfg(feature = "postgres")]
    #[allow(irrefutable_let_patterns)] // a build with PostgreSQL alone
    if let Conn::Postgres(c) = &mut conn {
        return crate::query::replace_ciphertexts_in_one(rewrites).execute(&mut **c);
    }
    // SQLite and MySQL: one cached UPDATE per row.
    let mut changed = 0;
    for (id, (old_api_key, old_secret_key), new) in rewrites {
        let statement = crate::query::replace_ciphertexts(id, (&old_api_key, &old_secret_key), new);
        changed += on_backend!(conn.reborrow(), c => statement.execute(c))?;
    }
    Ok(changed)
}

/// Runs a write whose rows come back as stored: with `RETURNING` on PostgreSQL and
/// SQLite; on MySQL, which has none, the write and then a read of the rows by the
/// ids the client made, in the same transaction, in the order they were written.
pub(crate) fn load_written<Q: LoadWritten<T>, T: crate::steps::Stored>(
    conn: Conn<'_>,
    statement: Q,
) -> diesel::QueryResult<Vec<T>> {
    use diesel::RunQueryDsl;
    match conn {
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => {
            let (write, read_back, ids) = statement.without_returning();
            write.execute(c)?;
            Ok(crate::steps::in_written_order(&ids, read_back.load(c)?))
        }
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => statement.returning().load(c),
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => statement.returning().load(c),
    }
}

/// Runs `f` holding the lock that serialises migration runs: on PostgreSQL one
/// transaction holding a transaction-scoped advisory lock (safe through a
/// transaction pooler), on SQLite one `BEGIN IMMEDIATE` transaction (the write
/// lock), on MySQL, whose DDL commits as it goes, the session's named lock
/// (`GET_LOCK`, released at the end, or by the server when the session dies).
pub(crate) fn with_migration_lock<T>(
    conn: Conn<'_>,
    f: impl FnOnce(Conn<'_>) -> Result<T>,
) -> Result<T> {
    match conn {
        #[cfg(feature = "postgres")]
        Conn::Postgres(c) => {
            use diesel::Connection;
            c.transaction(|c| {
                use diesel::sql_types::BigInt;
                use diesel::RunQueryDsl;
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
                    .execute(c)?;
                f(Conn::Postgres(c))
            })
        }
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(c) => c.immediate_transaction(|c| f(Conn::Sqlite(c))),
        #[cfg(feature = "mysql")]
        Conn::Mysql(c) => {
            use diesel::sql_types::{Integer, Nullable, Text};
            use diesel::RunQueryDsl;
            let locked: Option<i32> = diesel::select(
                diesel::dsl::sql::<Nullable<Integer>>("GET_LOCK(")
                    .bind::<Text, _>(MYSQL_MIGRATION_LOCK)
                    .sql(", ")
                    .bind::<Integer, _>(MYSQL_MIGRATION_LOCK_WAIT_SECONDS)
                    .sql(")"),
            )
            .get_result(c)?;
            if locked != Some(1) {
                return Err(Error::migration(format!(
                    "another migration run held the lock `{MYSQL_MIGRATION_LOCK}` for \
                     {MYSQL_MIGRATION_LOCK_WAIT_SECONDS} s"
                )));
            }
            let result = f(Conn::Mysql(&mut *c));
            let released = diesel::select(
                diesel::dsl::sql::<Nullable<Integer>>("RELEASE_LOCK(")
                    .bind::<Text, _>(MYSQL_MIGRATION_LOCK)
                    .sql(")"),
            )
            .get_result::<Option<i32>>(c);
            let result = result?;
            released?;
            Ok(result)
        }
    }
}

/// The PostgreSQL advisory lock key that serialises migration runs ("credstor").
#[cfg(feature = "postgres")]
const MIGRATION_LOCK_KEY: i64 = 0x6372_6564_7374_6f72;

/// The MySQL named lock that serialises migration runs.
#[cfg(feature = "mysql")]
const MYSQL_MIGRATION_LOCK: &str = "credential_store.migrations";

/// How long a MySQL migration run waits for another run to finish.
#[cfg(feature = "mysql")]
const MYSQL_MIGRATION_LOCK_WAIT_SECONDS: i32 = 600;

/// Lets the tables' owner see every row for the rest of the current transaction,
/// for the counts a guarded revert makes: on PostgreSQL `FORCE ROW LEVEL SECURITY`
/// is lifted (undone when the transaction rolls back); SQLite has no row security.
pub(crate) trait SeeEveryRow {
    fn see_every_row(&mut self) -> diesel::QueryResult<()>;
}

#[cfg(feature = "postgres")]
impl SeeEveryRow for PgConnection {
    fn see_every_row(&mut self) -> diesel::QueryResult<()> {
        use diesel::connection::SimpleConnection;
        self.batch_execute(
            "ALTER TABLE user_accounts NO FORCE ROW LEVEL SECURITY;
             ALTER TABLE user_credentials NO FORCE ROW LEVEL SECURITY;",
        )
    }
}

#[cfg(feature = "sqlite")]
impl SeeEveryRow for SqliteConnection {
    fn see_every_row(&mut self) -> diesel::QueryResult<()> {
        Ok(())
    }
}

/// MySQL has no row security: the tables' owner sees every row already.
#[cfg(feature = "mysql")]
impl SeeEveryRow for MysqlConnection {
    fn see_every_row(&mut self) -> diesel::QueryResult<()> {
        Ok(())
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
    /// old ciphertexts leave the file (see [`erase_freed_sqlite`]).
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
    #[cfg(all(feature = "async", any(feature = "sqlite", feature = "mysql")))]
    pub fn without_user(self) -> Scope<'static> {
        Scope {
            user: None,
            write: self.write,
            erases: self.erases,
        }
    }
}

/// A borrowed blocking connection of any backend the build has.
pub(crate) enum Conn<'a> {
    #[cfg(feature = "postgres")]
    Postgres(&'a mut PgConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut SqliteConnection),
    #[cfg(feature = "mysql")]
    Mysql(&'a mut MysqlConnection),
}

impl Conn<'_> {
    /// The same connection, borrowed for a shorter time.
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        on_backend!(self, c => Conn::from(&mut **c))
    }
}

#[cfg(feature = "mysql")]
impl<'a> From<&'a mut MysqlConnection> for Conn<'a> {
    fn from(conn: &'a mut MysqlConnection) -> Self {
        Conn::Mysql(conn)
    }
}

#[cfg(feature = "postgres")]
impl<'a> From<&'a mut PgConnection> for Conn<'a> {
    fn from(conn: &'a mut PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

#[cfg(feature = "sqlite")]
impl<'a> From<&'a mut SqliteConnection> for Conn<'a> {
    fn from(conn: &'a mut SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

/// Runs one body of diesel code on whichever connection `$conn` holds: the body is
/// written once and compiled once per backend.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            #[cfg(feature = "postgres")]
            $crate::backend::Conn::Postgres($c) => $body,
            #[cfg(feature = "sqlite")]
            $crate::backend::Conn::Sqlite($c) => $body,
            #[cfg(feature = "mysql")]
            $crate::backend::Conn::Mysql($c) => $body,
        }
    };
}
pub(crate) use on_backend;

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
    diesel::RunQueryDsl<PgConnection> + diesel::query_dsl::LoadQuery<'static, PgConnection, T>
);
bound_when!(
    SqliteLoad[T],
    feature = "sqlite",
    diesel::RunQueryDsl<SqliteConnection>
        + diesel::query_dsl::LoadQuery<'static, SqliteConnection, T>
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
    diesel::RunQueryDsl<PgConnection> + diesel::query_dsl::methods::ExecuteDsl<PgConnection>
);
bound_when!(
    SqliteExecute[],
    feature = "sqlite",
    diesel::RunQueryDsl<SqliteConnection>
        + diesel::query_dsl::methods::ExecuteDsl<SqliteConnection>
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
/// [`query::Written`](crate::query::Written), run by [`load_written`]).
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

/// The pragmas every SQLite connection gets.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlitePragmas {
    pub busy_timeout: Duration,
}

#[cfg(feature = "sqlite")]
impl SqlitePragmas {
    pub(crate) fn apply(&self, conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
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
        // `secure_delete`: deleted and overwritten content (an old ciphertext after a
        // rotation, a deleted credential) is zeroed in its page instead of left in
        // free space; `erase_freed_sqlite` then moves the pages out of the WAL.
        conn.batch_execute(
            "PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = 1073741824;",
        )
    }
}

/// Makes what a committed transaction removed leave the SQLite file: copies every
/// page of the write-ahead log into the database and truncates the log to zero
/// bytes (`PRAGMA wal_checkpoint(TRUNCATE)`). With `secure_delete` on, the freed
/// and overwritten space in those pages is already zeroed, so afterwards no old
/// ciphertext is left in the database file, its `-wal` or its `-shm`.
///
/// The checkpoint waits (up to the busy timeout) for readers of older snapshots; if
/// one is still reading then, the log is not truncated this time: a warning is
/// logged and the next checkpoint (this one's next call, or SQLite's own
/// auto-checkpoint) finishes the job. It never fails the transaction, which has
/// committed.
#[cfg(feature = "sqlite")]
pub(crate) fn erase_freed_sqlite(conn: &mut SqliteConnection) {
    #[derive(diesel::QueryableByName)]
    struct Checkpoint {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        busy: i32,
    }
    let done = diesel::RunQueryDsl::get_result::<Checkpoint>(
        diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)"),
        conn,
    );
    match done {
        Ok(Checkpoint { busy: 0 }) => {}
        Ok(_) => tracing::warn!(
            "SQLite checkpoint blocked by a reader: removed ciphertexts stay in the WAL until the next checkpoint"
        ),
        Err(err) => tracing::warn!(error = %err, "SQLite checkpoint failed"),
    }
}

/// Copies the write-ahead log into the SQLite file between maintenance batches
/// (`PRAGMA wal_checkpoint(PASSIVE)`, which waits for no reader or writer), so that
/// the log restarts and no batch's COMMIT crosses SQLite's 1000-page automatic
/// checkpoint, which would run inside that COMMIT. Frames a reader still needs stay
/// for a later checkpoint; a failure is logged, never returned (the batch has
/// committed).
#[cfg(feature = "sqlite")]
pub(crate) fn checkpoint_between_batches_sqlite(conn: &mut SqliteConnection) {
    use diesel::connection::SimpleConnection;
    if let Err(err) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
        tracing::warn!(error = %err, "SQLite checkpoint between batches failed");
    }
}

#[cfg(feature = "sqlite")]
impl diesel::r2d2::CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        self.apply(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Row-level security on the crate's two tables (those that exist), and whether the
/// current role escapes it (a superuser or `BYPASSRLS`): PostgreSQL's catalogs.
#[cfg(feature = "postgres")]
pub(crate) fn row_security_status(
    conn: &mut PgConnection,
) -> Result<crate::maintenance::RowSecurityStatus> {
    use crate::maintenance::{RowSecurityStatus, TableRowSecurity};
    use diesel::sql_types::{Bool, Text};
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Table {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Bool)]
        enabled: bool,
        #[diesel(sql_type = Bool)]
        forced: bool,
    }
    #[derive(diesel::QueryableByName)]
    struct Role {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Bool)]
        superuser: bool,
        #[diesel(sql_type = Bool)]
        bypass_rls: bool,
    }
    let tables: Vec<Table> = diesel::sql_query(
        "SELECT c.relname::text AS name, c.relrowsecurity AS enabled, \
                c.relforcerowsecurity AS forced \
         FROM pg_catalog.pg_class c \
         WHERE c.oid IN (to_regclass('user_accounts'), to_regclass('user_credentials')) \
         ORDER BY c.relname",
    )
    .load(conn)?;
    let role: Role = diesel::sql_query(
        "SELECT current_user::text AS name, r.rolsuper AS superuser, \
                r.rolbypassrls AS bypass_rls \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    .get_result(conn)?;
    Ok(RowSecurityStatus {
        bypasses: role.superuser || role.bypass_rls,
        role: role.name,
        superuser: role.superuser,
        bypass_rls: role.bypass_rls,
        tables: tables
            .into_iter()
            .map(|t| TableRowSecurity {
                table: t.name,
                enabled: t.enabled,
                forced: t.forced,
            })
            .collect(),
    })
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
        assert_eq!(
            parse_url("mysql://u@h:3306/db").unwrap(),
            Target::Mysql("mysql://u@h:3306/db")
        );
        assert_eq!(parse_url("x.db").unwrap(), Target::Sqlite("x.db"));
        assert_eq!(
            parse_url("/var/lib/x.db").unwrap(),
            Target::Sqlite("/var/lib/x.db")
        );
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
