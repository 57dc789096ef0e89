//! Everything that differs between the backends, in one place: how a URL picks
//! one, the SQLite pragmas, the PostgreSQL row-level-security context, which
//! failures are retryable, and the bounds a statement must meet to run on every
//! executor the build has.

use crate::error::{Error, Result};
use std::time::Duration;

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "credential-store needs at least one backend: enable the `sqlite` or `postgres` feature"
);

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// An embedded SQLite file.
    Sqlite,
}

impl Backend {
    /// The backend's name, as spans and logs give it: `postgres` or `sqlite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
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
            }
        ),
    }
}

/// Gives the failures a caller can act on (retry) their own variants.
pub(crate) fn classify(err: Error) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match err {
        Error::Database(DieselError::DatabaseError(kind, info)) => {
            let message = info.message();
            let lost = matches!(kind, DatabaseErrorKind::ClosedConnection)
                || message.contains("terminating connection")
                || message.contains("server closed the connection")
                || message.contains("connection closed");
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

/// Whether a failed insert met the owner check (the composite foreign key on
/// PostgreSQL, the triggers or the account foreign key on SQLite).
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

/// A borrowed blocking connection of either backend.
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
            $crate::backend::Conn::Postgres($c) => $body,
            #[cfg(feature = "sqlite")]
            $crate::backend::Conn::Sqlite($c) => $body,
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

/// A statement that loads rows of `T` on every executor this build has.
pub(crate) trait Load<T>:
    PgLoad<T> + SqliteLoad<T> + AsyncPgLoad<T> + Send + 'static
{
}
impl<Q, T> Load<T> for Q where Q: PgLoad<T> + SqliteLoad<T> + AsyncPgLoad<T> + Send + 'static {}

/// A statement that changes rows on every executor this build has.
pub(crate) trait Execute:
    PgExecute + SqliteExecute + AsyncPgExecute + Send + 'static
{
}
impl<Q> Execute for Q where Q: PgExecute + SqliteExecute + AsyncPgExecute + Send + 'static {}

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
        conn.batch_execute(
            "PRAGMA foreign_keys = ON;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = 268435456;",
        )
    }
}

#[cfg(feature = "sqlite")]
impl diesel::r2d2::CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        self.apply(conn).map_err(diesel::r2d2::Error::QueryError)
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
}
