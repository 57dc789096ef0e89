//! SQLite (embedded, through diesel): the file's path, the pragmas every connection
//! gets, write transactions that take the write lock at `BEGIN IMMEDIATE`, and the
//! checkpoints that move removed ciphertexts out of the write-ahead log.

use super::{
    pool_builder, BackendConnection, BackendPool, DatabaseOptions, LoadWritten, Location, Scope,
    Stored,
};
use crate::error::{Error, Result};
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use std::time::Duration;

/// The SQLite migrations, embedded at build time.
pub(crate) const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/sqlite");

/// What SQLite says of a lock another connection holds.
pub(super) const BUSY_MESSAGES: &[&str] = &["database is locked", "database table is locked"];

/// A pool of connections to one SQLite file.
#[derive(Clone)]
pub(crate) struct SqlitePool(Pool<ConnectionManager<SqliteConnection>>);

/// The SQLite path a URL names, made absolute once, so that every pooled
/// connection opens the same file even if the process changes directory later.
fn absolute_path(path: &str) -> Result<String> {
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

impl BackendPool for SqlitePool {
    type Connection = SqliteConnection;

    /// Every connection gets its pragmas ([`SqlitePragmas`]).
    fn open(location: Location<'_>, options: &DatabaseOptions) -> Result<Self> {
        let path = absolute_path(location.text)?;
        let pragmas = SqlitePragmas {
            busy_timeout: options.busy_timeout,
        };
        let mut first = SqliteConnection::establish(&path)?;
        pragmas.apply(&mut first)?;
        Ok(SqlitePool(
            pool_builder(options)
                .connection_customizer(Box::new(pragmas))
                .build_unchecked(ConnectionManager::new(path)),
        ))
    }

    /// A write takes the write lock at `BEGIN IMMEDIATE`, so that it waits for other
    /// writers (busy timeout) instead of failing when it upgrades; a read runs
    /// without a transaction. A write that removes ciphertexts is followed by a
    /// checkpoint ([`erase_freed`]).
    fn run<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.0.get()?;
        if scope.write {
            let done = conn.immediate_transaction(f)?;
            if scope.erases {
                erase_freed(&mut conn);
            }
            Ok(done)
        } else {
            f(&mut conn)
        }
    }

    fn raw<T>(&self, f: impl FnOnce(&mut SqliteConnection) -> Result<T>) -> Result<T> {
        f(&mut *self.0.get()?)
    }

    fn erase_freed(&self) -> Result<()> {
        erase_freed(&mut *self.0.get()?);
        Ok(())
    }

    /// A passive WAL checkpoint (which waits for no reader or writer), so that the
    /// log restarts and the next batch's COMMIT does not cross SQLite's 1000-page
    /// automatic checkpoint, which would run inside that COMMIT. Frames a reader
    /// still needs stay for a later checkpoint; a failure is logged, never returned
    /// (the batch has committed).
    fn checkpoint_between_batches(&self) -> Result<()> {
        if let Err(err) = self
            .0
            .get()?
            .batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
        {
            tracing::warn!(error = %err, "SQLite checkpoint between batches failed");
        }
        Ok(())
    }
}

impl BackendConnection for SqliteConnection {
    const BACKEND: super::Backend = super::Backend::Sqlite;
    const MIGRATIONS: diesel_migrations::EmbeddedMigrations = MIGRATIONS;

    /// One `BEGIN IMMEDIATE` transaction: the database's write lock.
    fn with_migration_lock<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.immediate_transaction(f)
    }

    /// Nothing more: the migration lock's `BEGIN IMMEDIATE` transaction holds the
    /// database's write lock from before the counts until the down migration has run
    /// and it commits, so no other connection commits a row in between.
    fn holding_tables<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        f(self)
    }

    fn load_written<Q: LoadWritten<T>, T: Stored>(
        &mut self,
        statement: Q,
    ) -> diesel::QueryResult<Vec<T>> {
        statement.returning().load(self)
    }
}

/// The pragmas every SQLite connection gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlitePragmas {
    pub busy_timeout: Duration,
}

impl SqlitePragmas {
    pub(crate) fn apply(&self, conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
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
        // free space; `erase_freed` then moves the pages out of the WAL.
        conn.batch_execute(
            "PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = 1073741824;",
        )
    }
}

impl diesel::r2d2::CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        self.apply(conn).map_err(diesel::r2d2::Error::QueryError)
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
fn erase_freed(conn: &mut SqliteConnection) {
    #[derive(diesel::QueryableByName)]
    struct Checkpoint {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        busy: i32,
    }
    let done = diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").get_result::<Checkpoint>(conn);
    match done {
        Ok(Checkpoint { busy: 0 }) => {}
        Ok(_) => tracing::warn!(
            "SQLite checkpoint blocked by a reader: removed ciphertexts stay in the WAL until the next checkpoint"
        ),
        Err(err) => tracing::warn!(error = %err, "SQLite checkpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sqlite_connection_gets_its_pragmas() {
        use diesel::sql_types::{BigInt, Text};
        #[derive(diesel::QueryableByName)]
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
        let options = DatabaseOptions::default().busy_timeout(Duration::from_millis(1234));
        let pool = SqlitePool::open(
            Location::path(dir.path().join("p.db").to_str().unwrap()),
            &options,
        )
        .unwrap();
        // Several connections at once: each one, not only the first, is configured.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.0.get().unwrap();
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
}
