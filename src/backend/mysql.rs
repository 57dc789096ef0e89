//! MariaDB/MySQL: diesel-async's pure-Rust `AsyncMysqlConnection` (no C client
//! library) driven on a runtime of its own for the blocking store, InnoDB
//! transactions, the `RETURNING` substitute (the write, then a read of its rows by
//! the ids the client made), and the named lock of migration runs. There is no row
//! security: every statement filters by the account's owner.

use super::{
    pool_builder, BackendConnection, BackendPool, DatabaseOptions, LoadWritten, Location, Manager,
    Scope, Stored,
};
use crate::error::{Error, Result};
use diesel::r2d2::Pool;
use diesel::{Connection, RunQueryDsl};
use uuid::Uuid;

/// The MariaDB/MySQL migrations, embedded at build time.
pub(crate) const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql");

/// What a lost connection says (mysql_async's I/O and driver errors).
pub(super) const LOST_MESSAGES: &[&str] = &[
    "connection to the server is closed",
    "connection reset",
    "broken pipe",
    "server has gone away",
    "lost connection",
];

/// InnoDB's deadlock and lock-wait timeout: the statement or transaction is rolled
/// back, and a retry can succeed.
pub(super) const BUSY_MESSAGES: &[&str] = &["deadlock found", "lock wait timeout exceeded"];

/// The blocking MariaDB/MySQL connection: diesel-async's pure-Rust
/// `AsyncMysqlConnection` (no C client library), driven by a single-threaded tokio
/// runtime that each connection owns. Called from a task of a multi-threaded tokio
/// runtime, it blocks in place (`tokio::task::block_in_place`); on a current-thread
/// runtime tokio refuses to block: async code uses the async store or
/// `spawn_blocking`.
pub type MysqlConnection = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
    diesel_async::AsyncMysqlConnection,
    OwnRuntime,
>;

/// The runtime a blocking MySQL connection runs its I/O on: its own, never the
/// caller's (a connection made inside one runtime would die with it).
pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

/// Shuts the runtime down without waiting, so that a connection may be dropped
/// anywhere, inside async code too (dropping a runtime there would panic).
impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

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

/// A pool of blocking MariaDB/MySQL connections.
#[derive(Clone)]
pub(crate) struct MysqlPool(Pool<Manager<MysqlConnection>>);

impl BackendPool for MysqlPool {
    type Connection = MysqlConnection;

    fn open(location: Location<'_>, options: &DatabaseOptions) -> Result<Self> {
        // One connection at once: a wrong URL or an unreachable server is reported
        // here.
        MysqlConnection::establish(location.text)
            .map_err(|err| Error::Connection(location.redactor.connection(err)))?;
        Ok(MysqlPool(
            pool_builder(options).build_unchecked(Manager::new(&location)),
        ))
    }

    /// A write is one InnoDB transaction; a read (one statement) runs on its own.
    /// `scope.user` is not sent: there is no row-level security, and every
    /// statement filters by the account's owner.
    fn run<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(&mut MysqlConnection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.0.get()?;
        if scope.write {
            MysqlConnection::transaction(&mut conn, f)
        } else {
            f(&mut conn)
        }
    }

    fn raw<T>(&self, f: impl FnOnce(&mut MysqlConnection) -> Result<T>) -> Result<T> {
        f(&mut *self.0.get()?)
    }
}

/// The named lock that serialises migration runs.
const MIGRATION_LOCK: &str = "credential_store.migrations";

/// How long a migration run waits for another run to finish.
const MIGRATION_LOCK_WAIT_SECONDS: i32 = 600;

impl BackendConnection for MysqlConnection {
    const BACKEND: super::Backend = super::Backend::Mysql;
    const MIGRATIONS: diesel_migrations::EmbeddedMigrations = MIGRATIONS;

    /// DDL commits as it goes, so the run holds the session's named lock
    /// (`GET_LOCK`), released at the end, or by the server when the session dies.
    fn with_migration_lock<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        use diesel::sql_types::{Integer, Nullable, Text};
        let locked: Option<i32> = diesel::select(
            diesel::dsl::sql::<Nullable<Integer>>("GET_LOCK(")
                .bind::<Text, _>(MIGRATION_LOCK)
                .sql(", ")
                .bind::<Integer, _>(MIGRATION_LOCK_WAIT_SECONDS)
                .sql(")"),
        )
        .get_result(self)?;
        if locked != Some(1) {
            return Err(Error::migration(format!(
                "another migration run held the lock `{MIGRATION_LOCK}` for \
                 {MIGRATION_LOCK_WAIT_SECONDS} s"
            )));
        }
        let result = f(self);
        let released = diesel::select(
            diesel::dsl::sql::<Nullable<Integer>>("RELEASE_LOCK(")
                .bind::<Text, _>(MIGRATION_LOCK)
                .sql(")"),
        )
        .get_result::<Option<i32>>(self);
        let result = result?;
        released?;
        Ok(result)
    }

    /// `LOCK TABLES user_accounts WRITE, user_credentials WRITE, account_keys WRITE,
    /// retired_account_keys WRITE, __diesel_schema_migrations WRITE` (those that exist) on the migrating session,
    /// and `UNLOCK TABLES` once `f` returns, whether it succeeded or failed (the
    /// server releases them if the session dies).
    ///
    /// MariaDB commits each DDL statement on its own, so no transaction can span the
    /// counts and the down migration's `DROP` or `ALTER`: an open transaction's locks
    /// end at the first DDL statement. A table lock does span them: the session that
    /// holds a WRITE lock may still `ALTER` and `DROP` the table (MariaDB 10.11; a
    /// dropped table leaves the locked set, the others stay locked), while every
    /// other session's reads and writes of it wait. `LOCK TABLES` first waits for the
    /// metadata locks of the transactions under way, so an uncommitted insert is
    /// committed, and counted, or rolled back before the counts. What else was tried,
    /// and why it does not hold:
    ///
    /// - READ locks, and `FLUSH TABLES … WITH READ LOCK`, refuse the session's own
    ///   `DROP`/`ALTER` ("was locked with a READ lock and can't be updated");
    /// - a named lock (`GET_LOCK`) binds only the sessions that take it, and the
    ///   writers are other services too.
    ///
    /// A session holding table locks may use no other table, hence diesel's
    /// bookkeeping table in the list (the revert reads and deletes its row). And
    /// `START TRANSACTION` (diesel's `BEGIN`) releases table locks, so `f` runs the
    /// down migration without a transaction of its own (it would gain nothing here:
    /// its DDL commits anyway).
    fn holding_tables<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        use diesel::connection::SimpleConnection;
        #[derive(diesel::QueryableByName)]
        struct Table {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        const HELD: [&str; 5] = [
            "user_accounts",
            "user_credentials",
            "account_keys",
            "retired_account_keys",
            "__diesel_schema_migrations",
        ];
        let existing: Vec<Table> = diesel::sql_query(
            "SELECT table_name AS name FROM information_schema.tables \
             WHERE table_schema = DATABASE() \
               AND table_name IN ('user_accounts', 'user_credentials', 'account_keys', \
                                  'retired_account_keys', '__diesel_schema_migrations')",
        )
        .load(self)?;
        let locks: Vec<String> = HELD
            .iter()
            .filter(|table| existing.iter().any(|e| e.name == **table))
            .map(|table| format!("{table} WRITE"))
            .collect();
        if locks.is_empty() {
            return f(self);
        }
        self.batch_execute(&format!("LOCK TABLES {}", locks.join(", ")))?;
        let result = f(self);
        let unlocked = self.batch_execute("UNLOCK TABLES");
        let result = result?;
        unlocked?;
        Ok(result)
    }

    /// No `RETURNING`: the write, then a read of the rows by the ids the client
    /// made, in the same transaction, put back in the order written.
    fn load_written<Q: LoadWritten<T>, T: Stored>(
        &mut self,
        statement: Q,
    ) -> diesel::QueryResult<Vec<T>> {
        let (write, read_back, ids) = statement.without_returning();
        write.execute(self)?;
        Ok(in_written_order(&ids, read_back.load(self)?))
    }
}

/// Rows read back after a write, in the order of the ids written (what `RETURNING`
/// gives): the read-back's own order is not the write's.
fn in_written_order<T: Stored>(ids: &[Uuid], rows: Vec<T>) -> Vec<T> {
    let position: std::collections::HashMap<Uuid, usize> =
        ids.iter().enumerate().map(|(at, id)| (*id, at)).collect();
    let mut rows = rows;
    rows.sort_by_key(|row| {
        position
            .get(&row.stored_id())
            .copied()
            .unwrap_or(usize::MAX)
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::UserAccount;

    #[test]
    fn rows_read_back_come_in_the_order_written() {
        let now = chrono::Utc::now();
        let account = |id: Uuid| UserAccount {
            scope: crate::models::AccountScope {
                id,
                user_id: "auth0|a".into(),
            },
            account_name: "A".into(),
            is_active: true,
            created_at: now,
            updated_at: now,
        };
        // Written newest id first: a read-back by primary key returns the reverse.
        let mut ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        ids.reverse();
        let mut read_back: Vec<UserAccount> = ids.iter().copied().map(account).collect();
        read_back.sort_by_key(|row| row.id());
        assert_ne!(read_back.iter().map(|r| r.id()).collect::<Vec<_>>(), ids);
        let ordered = in_written_order(&ids, read_back);
        assert_eq!(ordered.iter().map(|r| r.id()).collect::<Vec<_>>(), ids);
    }
}
