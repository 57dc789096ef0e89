//! PostgreSQL (libpq through diesel): the pool and its statement cache, the
//! row-level-security context of a transaction, routing of per-user reads to a
//! streaming replica, the advisory lock of migration runs, and the catalog queries
//! of `status`.

use super::{
    pool_builder, BackendConnection, BackendPool, DatabaseOptions, LoadWritten, Location, Manager,
    RowSecurityStatus, Scope, Stored, TableRowSecurity,
};
use crate::error::{Error, Result};
use diesel::pg::PgConnection;
use diesel::r2d2::{Pool, PooledConnection};
use diesel::{Connection, RunQueryDsl};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The PostgreSQL migrations, embedded at build time.
pub(crate) const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/postgres");

/// The PostgreSQL setting the row-level-security policies read.
pub(crate) const USER_SETTING: &str = "app.current_user_id";

/// What a lost connection says (libpq, and tokio-postgres for the async store).
pub(super) const LOST_MESSAGES: &[&str] = &[
    "terminating connection",
    "server closed the connection",
    "connection closed",
];

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(setting, value, is_local)`.
    fn set_config(setting: diesel::sql_types::Text, value: diesel::sql_types::Text, is_local: diesel::sql_types::Bool) -> diesel::sql_types::Text;
}

diesel::define_sql_function! {
    /// PostgreSQL's `row_security_active(table)`: whether RLS filters rows of the table
    /// for the current role.
    fn row_security_active(table: diesel::sql_types::Text) -> diesel::sql_types::Bool;
}

/// The statement that makes `user` the row-level-security context of the current
/// transaction only: a bound parameter, never spliced into SQL.
pub(crate) fn user_context(
    user: &str,
) -> diesel::dsl::select<set_config<&'static str, String, bool>> {
    diesel::select(set_config(USER_SETTING, user.to_owned(), true))
}

type PgPool = Pool<Manager<PgConnection>>;
type PgPooled = PooledConnection<Manager<PgConnection>>;

/// The primary's pool, and the replica that per-user reads go to, if any.
#[derive(Clone)]
pub(crate) struct PgPools {
    primary: PgPool,
    replica: Option<Arc<Replica>>,
}

/// A PostgreSQL pool: one connection is made at once, so that a wrong URL or an
/// unreachable server is reported by `open`. Behind a transaction pooler the
/// connections keep no prepared statements (see
/// [`DatabaseOptions::transaction_pooler`]).
fn pool(location: &Location<'_>, options: &DatabaseOptions) -> Result<PgPool> {
    let mut first = PgConnection::establish(location.text)
        .map_err(|err| Error::Connection(location.redactor.connection(err)))?;
    let statements = PgStatements {
        transaction_pooler: options.transaction_pooler,
    };
    diesel::r2d2::CustomizeConnection::on_acquire(&statements, &mut first)
        .map_err(|err| Error::Database(diesel::result::Error::QueryBuilderError(err.into())))?;
    Ok(pool_builder(options)
        .connection_customizer(Box::new(statements))
        .build_unchecked(Manager::new(location)))
}

/// Whether a PostgreSQL connection caches prepared statements: not behind a
/// transaction pooler, where each statement goes out unnamed with its parameters.
#[derive(Debug, Clone, Copy)]
struct PgStatements {
    transaction_pooler: bool,
}

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for PgStatements {
    fn on_acquire(&self, conn: &mut PgConnection) -> std::result::Result<(), diesel::r2d2::Error> {
        if self.transaction_pooler {
            conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        }
        Ok(())
    }
}

impl BackendPool for PgPools {
    type Connection = PgConnection;

    fn open(location: Location<'_>, options: &DatabaseOptions) -> Result<Self> {
        Ok(PgPools {
            primary: pool(&location, options)?,
            replica: None,
        })
    }

    /// On PostgreSQL, `scope.user` becomes the row-level-security context for this
    /// transaction only (`set_config('app.current_user_id', $1, true)`, a bound
    /// parameter), so it cannot outlive the transaction or reach the pool's next
    /// user. A per-user read goes to the replica when it has caught up.
    fn run<T>(
        &self,
        scope: Scope<'_>,
        f: impl FnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let replica = self.replica.as_deref();
        let mut conn = match replica {
            Some(replica) if !scope.write && scope.user.is_some() => {
                match replica.caught_up_connection() {
                    Some(conn) => conn,
                    None => self.primary.get()?,
                }
            }
            _ => self.primary.get()?,
        };
        let done = conn.transaction(|c| {
            if let Some(user) = scope.user {
                user_context(user).execute(c)?;
            }
            f(c)
        })?;
        if let (Some(replica), true) = (replica, scope.write) {
            replica.record_write(&mut conn);
        }
        Ok(done)
    }

    fn raw<T>(&self, f: impl FnOnce(&mut PgConnection) -> Result<T>) -> Result<T> {
        f(&mut *self.primary.get()?)
    }

    fn with_read_replica(self, url: &str, options: &DatabaseOptions) -> Result<Self> {
        match super::parse_url(url)? {
            super::Target::Postgres(location) => Ok(PgPools {
                replica: Some(Arc::new(Replica::new(pool(&location, options)?))),
                ..self
            }),
            _ => Err(Error::UnsupportedUrl {
                reason: "a read replica needs a PostgreSQL primary and a PostgreSQL replica URL"
                    .into(),
            }),
        }
    }
}

/// The PostgreSQL advisory lock key that serialises migration runs ("credstor").
const MIGRATION_LOCK_KEY: i64 = 0x6372_6564_7374_6f72;

impl BackendConnection for PgConnection {
    const BACKEND: super::Backend = super::Backend::Postgres;
    const MIGRATIONS: diesel_migrations::EmbeddedMigrations = MIGRATIONS;

    /// One transaction holding a transaction-scoped advisory lock (safe through a
    /// transaction pooler, where a session lock would stay on whichever server
    /// connection took it).
    fn with_migration_lock<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.transaction(|c| {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
                .execute(c)?;
            f(c)
        })
    }

    fn load_written<Q: LoadWritten<T>, T: Stored>(
        &mut self,
        statement: Q,
    ) -> diesel::QueryResult<Vec<T>> {
        statement.returning().load(self)
    }

    /// `LOCK TABLE user_accounts, user_credentials IN ACCESS EXCLUSIVE MODE` (those
    /// that exist, by `to_regclass`) in the migration lock's transaction, which holds
    /// it until it ends, after the down migration. An insert under way is waited for
    /// and then counted; one sent later waits for the revert's transaction and fails
    /// if the table is gone. ACCESS EXCLUSIVE is what the down migrations take anyway
    /// (`DROP TABLE`, `ALTER TABLE`, `DROP POLICY`), taken here before the counts
    /// instead of after them.
    fn holding_tables<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        use diesel::connection::SimpleConnection;
        use diesel::sql_types::Bool;
        #[derive(diesel::QueryableByName)]
        struct Existing {
            #[diesel(sql_type = Bool)]
            accounts: bool,
            #[diesel(sql_type = Bool)]
            credentials: bool,
        }
        let existing: Existing = diesel::sql_query(
            "SELECT to_regclass('user_accounts') IS NOT NULL AS accounts, \
                    to_regclass('user_credentials') IS NOT NULL AS credentials",
        )
        .get_result(self)?;
        let tables: Vec<&str> = [
            (existing.accounts, "user_accounts"),
            (existing.credentials, "user_credentials"),
        ]
        .into_iter()
        .filter_map(|(exists, table)| exists.then_some(table))
        .collect();
        if !tables.is_empty() {
            self.batch_execute(&format!(
                "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                tables.join(", ")
            ))?;
        }
        f(self)
    }

    /// `FORCE ROW LEVEL SECURITY` is lifted in a savepoint that is always rolled
    /// back, so FORCE is back before the down migration runs. Rolling the savepoint
    /// back releases only the locks taken inside it: [`holding_tables`]'s belong to
    /// the enclosing transaction and stay.
    ///
    /// [`holding_tables`]: BackendConnection::holding_tables
    fn counting_every_row<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> diesel::QueryResult<T>,
    ) -> Result<T> {
        use diesel::connection::SimpleConnection;
        /// Carries the counts out of a savepoint that is always rolled back.
        enum Counted<T> {
            Done(T),
            Failed(diesel::result::Error),
        }
        impl<T> From<diesel::result::Error> for Counted<T> {
            fn from(err: diesel::result::Error) -> Self {
                Counted::Failed(err)
            }
        }
        let counted = self.transaction::<std::convert::Infallible, Counted<T>, _>(|c| {
            c.batch_execute(
                "ALTER TABLE user_accounts NO FORCE ROW LEVEL SECURITY;
                 ALTER TABLE user_credentials NO FORCE ROW LEVEL SECURITY;",
            )?;
            Err(Counted::Done(f(c)?))
        });
        match counted {
            Ok(never) => match never {},
            Err(Counted::Done(counts)) => Ok(counts),
            Err(Counted::Failed(err)) => Err(err.into()),
        }
    }

    fn row_security_active(&mut self) -> diesel::QueryResult<bool> {
        diesel::select(row_security_active("user_credentials")).get_result(self)
    }

    /// PostgreSQL's catalogs: RLS on the crate's two tables (those that exist), and
    /// whether the current role escapes it (a superuser or `BYPASSRLS`).
    fn row_security_status(&mut self) -> Result<Option<RowSecurityStatus>> {
        use diesel::sql_types::{Bool, Text};

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
             WHERE c.oid IN (to_regclass('user_accounts'), to_regclass('user_credentials'), \
                             to_regclass('account_keys'), to_regclass('retired_account_keys')) \
             ORDER BY c.relname",
        )
        .load(self)?;
        let role: Role = diesel::sql_query(
            "SELECT current_user::text AS name, r.rolsuper AS superuser, \
                    r.rolbypassrls AS bypass_rls \
             FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
        )
        .get_result(self)?;
        Ok(Some(RowSecurityStatus {
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
        }))
    }
}

/// A streaming replica that per-user reads go to, and how far this handle needs it
/// to have replayed the primary's WAL (read your writes).
struct Replica {
    pool: PgPool,
    /// The primary's WAL position after this handle's latest committed write.
    written: AtomicI64,
    /// The furthest the replica was seen to have replayed.
    replayed: AtomicI64,
    /// Until when reads skip a replica that could not be reached.
    unreachable_until: Mutex<Option<Instant>>,
}

/// How long a read waits for a replica connection before it goes to the primary
/// (the pool's own timeout would hold it for `connection_timeout`).
const REPLICA_WAIT: Duration = Duration::from_millis(250);

/// How long reads go to the primary after the replica could not be reached.
const REPLICA_RETRY: Duration = Duration::from_secs(5);

/// A write whose WAL position could not be read: no replica is known to hold it.
const UNKNOWN_POSITION: i64 = i64::MAX;

/// `pg_current_wal_lsn()` on the primary, as a byte position.
fn primary_wal_position(
) -> diesel::dsl::select<diesel::expression::SqlLiteral<diesel::sql_types::BigInt>> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
    ))
}

/// `pg_last_wal_replay_lsn()` on a standby, as a byte position (NULL: not a standby).
fn replica_replay_position() -> diesel::dsl::select<
    diesel::expression::SqlLiteral<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>,
> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    >("(pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"))
}

impl Replica {
    fn new(pool: PgPool) -> Self {
        Replica {
            pool,
            written: AtomicI64::new(0),
            replayed: AtomicI64::new(0),
            unreachable_until: Mutex::new(None),
        }
    }

    /// A replica connection within [`REPLICA_WAIT`], unless the replica was
    /// unreachable less than [`REPLICA_RETRY`] ago.
    fn connection(&self) -> Option<PgPooled> {
        let now = Instant::now();
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
    fn caught_up_connection(&self) -> Option<PgPooled> {
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
    fn record_write(&self, primary: &mut PgConnection) {
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
