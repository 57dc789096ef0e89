//! Embedded migrations, one folder per backend with the same names in each.
//!
//! | version | PostgreSQL | SQLite | MariaDB/MySQL |
//! |---|---|---|---|
//! | `2024-01-15-000001_create_user_credentials` | the existing system's tables, with the old unique `(user_account_id, credential_type)` index | the same tables in portable types | the same, `utf8mb4_nopad_bin` |
//! | `2024-01-15-000002_row_level_security` | `current_user_id()`, RLS enabled and forced, four policies per table | no-op | no-op (no row security) |
//! | `2024-06-01-000003_multiple_credentials_support` | drop the unique index, add `nickname`, backfill it, index `(user_account_id, nickname)` | the same | the same |
//! | `2026-11-25-000004_not_null_flags_and_timestamps` | repair NULL flags and timestamps, then make them `NOT NULL` | no-op (NOT NULL from the start) | as PostgreSQL |
//! | `2026-11-25-000005_credential_owner_matches_account` | foreign key `(user_account_id, user_id)` → `user_accounts (id, user_id)`: a credential's user is its account's | triggers to the same effect | as PostgreSQL |
//! | `2026-12-07-000006_account_data_keys` | `account_keys`: one wrapped data key per account, foreign key `(account_id, user_id)` → `user_accounts (id, user_id)` with `ON DELETE CASCADE`, row-level security | the same, without row security | as PostgreSQL, without row security |
//!
//! Every PostgreSQL migration is idempotent, so they also run on a database the
//! existing system made without diesel's bookkeeping table, at any step. MySQL
//! commits each DDL statement on its own, so a run cannot be one transaction there:
//! every MySQL migration is written to run again from the start after being cut
//! off after any of its statements (`IF [NOT] EXISTS` throughout), which is what
//! the next run does.

use crate::backend::{on_backend, BackendConnection, Conn};
use crate::connection::Database;
use crate::error::{Error, Result};
use diesel::connection::BoxableConnection;
use diesel::migration::{
    Migration, MigrationMetadata, MigrationName, MigrationSource, MigrationVersion,
};
use diesel_migrations::{EmbeddedMigrations, MigrationError, MigrationHarness};

/// The PostgreSQL migrations, embedded at build time.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = crate::backend::postgres::MIGRATIONS;

/// The SQLite migrations, embedded at build time.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = crate::backend::sqlite::MIGRATIONS;

/// The MariaDB/MySQL migrations, embedded at build time.
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = crate::backend::mysql::MIGRATIONS;

impl Database {
    /// Applies every pending migration and returns the versions applied, oldest first.
    ///
    /// On PostgreSQL and SQLite the whole run is one transaction: it applies every
    /// pending migration or none (MariaDB/MySQL, whose DDL commits as it goes: below).
    /// Safe to call from several processes at once (services starting together): on
    /// PostgreSQL that transaction takes a transaction-scoped advisory lock
    /// (`pg_advisory_xact_lock`), so it also holds through a transaction pooler such
    /// as PgBouncer, where a session-level lock would stay behind on whichever server
    /// connection took it; on SQLite it is one `BEGIN IMMEDIATE` transaction, which
    /// holds the database's write lock (waiting out the busy timeout for it). On
    /// MySQL, where DDL commits as it goes, the run holds the named lock
    /// `GET_LOCK('credential_store.migrations', …)` on its session instead (released
    /// when the run ends, or by the server when the session dies), and each
    /// migration is recorded as it is applied; a run cut off part-way leaves the
    /// earlier migrations applied and repeats the interrupted one, which is written
    /// to be repeated. Every way the pending list is read once the lock is held, so
    /// each migration is applied exactly once.
    ///
    /// On PostgreSQL the role needs to own the tables (or create them); the
    /// migrations lift `FORCE ROW LEVEL SECURITY` inside their own transaction where
    /// they repair data, so an owner that does not bypass RLS still sees every row.
    pub fn run_migrations(&self) -> Result<Vec<String>> {
        self.locked_migrations(|c| {
            let applied = on_backend!(c, c => {
                let migrations = migrations_for(&*c);
                c.run_pending_migrations(migrations)
                    .map_err(Error::migration)?
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            });
            Ok(applied)
        })
    }

    /// Runs `f` in one transaction holding the migration lock: a PostgreSQL
    /// transaction-scoped advisory lock, or SQLite's write lock.
    fn locked_migrations<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        self.with_migration_lock(f)
    }

    /// The versions of the migrations that are not applied yet, oldest first.
    pub fn pending_migrations(&self) -> Result<Vec<String>> {
        self.raw(|conn| {
            let pending = on_backend!(conn, c => {
                let migrations = migrations_for(&*c);
                c.pending_migrations(migrations)
                    .map_err(Error::migration)?
                    .iter()
                    .map(|m| m.name().version().to_string())
                    .collect()
            });
            Ok(pending)
        })
    }

    /// The versions of the applied migrations, oldest first. A database adopted from
    /// the existing system has none until [`run_migrations`](Self::run_migrations)
    /// records them.
    pub fn applied_migrations(&self) -> Result<Vec<String>> {
        self.raw(|conn| {
            let mut applied: Vec<String> = on_backend!(conn, c => {
                c.applied_migrations()
                    .map_err(Error::migration)?
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            });
            applied.sort();
            Ok(applied)
        })
    }

    /// Reverts the most recently applied migration, in one transaction, and returns its
    /// version. A revert that would lose data or a security control refuses and
    /// changes nothing:
    ///
    /// - undoing the multiple-credentials migration while `(account, credential_type)`
    ///   pairs hold more than one credential is [`Error::RevertRefused`] (its
    ///   `down.sql` checks again), and while credentials carry a nickname other
    ///   than their type (the revert drops the column) it is
    ///   [`Error::RevertWouldDropNicknames`];
    /// - undoing the data keys (`000006`), the owner foreign key (`000005`),
    ///   row-level security or the tables
    ///   themselves while any account or credential is stored is
    ///   [`Error::RevertWouldExpose`], naming the counts.
    ///
    /// The counts see every row even for an owner role that row-level security
    /// applies to (FORCE is lifted inside a savepoint that is rolled back). A guarded
    /// revert holds the tables against other sessions' writes from before it counts
    /// until its down migration has run, so a row written meanwhile is either counted
    /// or refused, never dropped: on PostgreSQL `LOCK TABLE … IN ACCESS EXCLUSIVE
    /// MODE` in the revert's transaction, on MariaDB/MySQL `LOCK TABLES … WRITE` on
    /// its session (its DDL commits as it goes, so no transaction can span it), on
    /// SQLite the write lock of its `BEGIN IMMEDIATE` transaction.
    pub fn revert_last_migration(&self) -> Result<String> {
        self.locked_migrations(|conn| {
            let version = on_backend!(conn, c => {
                let migrations = migrations_for(&*c);
                let last = c
                    .applied_migrations()
                    .map_err(Error::migration)?
                    .iter()
                    .map(ToString::to_string)
                    .max();
                let guard = last.as_deref().map_or(RevertGuard::None, RevertGuard::for_version);
                match last {
                    Some(version) if guard != RevertGuard::None => c.holding_tables(|c| {
                        let counts = revert_counts(Conn::from(&mut *c), guard)?;
                        refuse_unsafe_revert(&version, guard, counts)?;
                        revert_without_transaction(c, migrations, &version)
                    })?,
                    _ => c.revert_last_migration(migrations).map_err(Error::migration)?.to_string(),
                }
            });
            Ok(version)
        })
    }
}

/// Reverts the migration `version` (its `down.sql`, and its bookkeeping row) on
/// `conn` as it is, without a transaction of its own: a guarded revert runs inside
/// [`holding_tables`](BackendConnection::holding_tables), already in the migration
/// lock's transaction on PostgreSQL and SQLite, and on MariaDB/MySQL under table
/// locks that `START TRANSACTION` would release.
fn revert_without_transaction<C, DB>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    version: &str,
) -> Result<String>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let migration = migrations
        .migrations()
        .map_err(Error::migration)?
        .into_iter()
        .find(|m| m.name().version().to_string() == version)
        .ok_or_else(|| {
            Error::migration(MigrationError::UnknownMigrationVersion(
                MigrationVersion::from(version.to_owned()),
            ))
        })?;
    conn.revert_migration(&WithoutTransaction(&*migration))
        .map(|reverted| reverted.to_string())
        .map_err(Error::migration)
}

/// A migration whose `run_in_transaction` is false, so that diesel's harness
/// reverts it on the connection as it is.
struct WithoutTransaction<'a, DB: diesel::backend::Backend>(&'a dyn Migration<DB>);

impl<DB: diesel::backend::Backend> Migration<DB> for WithoutTransaction<'_, DB> {
    fn run(&self, conn: &mut dyn BoxableConnection<DB>) -> diesel::migration::Result<()> {
        self.0.run(conn)
    }

    fn revert(&self, conn: &mut dyn BoxableConnection<DB>) -> diesel::migration::Result<()> {
        self.0.revert(conn)
    }

    fn metadata(&self) -> &dyn MigrationMetadata {
        self
    }

    fn name(&self) -> &dyn MigrationName {
        self.0.name()
    }
}

impl<DB: diesel::backend::Backend> MigrationMetadata for WithoutTransaction<'_, DB> {
    fn run_in_transaction(&self) -> bool {
        false
    }
}

/// What a revert must not destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevertGuard {
    None,
    /// Removes the tables, row-level security or the owner foreign key: refused
    /// while any row is stored.
    Rows,
    /// Restores the one-credential-per-type index and drops `nickname`.
    Nicknames,
    /// Drops the retired data keys: refused while any is stored (a credential may
    /// still be sealed under it).
    RetiredKeys,
}

impl RevertGuard {
    fn for_version(version: &str) -> Self {
        match version {
            CREATE_TABLES | ROW_LEVEL_SECURITY | OWNER_MATCHES_ACCOUNT | DATA_KEYS => {
                RevertGuard::Rows
            }
            MULTIPLE_CREDENTIALS => RevertGuard::Nicknames,
            RETIRED_DATA_KEYS => RevertGuard::RetiredKeys,
            _ => RevertGuard::None,
        }
    }
}

/// What a guarded revert counts, over every row.
#[derive(Debug, Default)]
struct RevertCounts {
    accounts: i64,
    credentials: i64,
    shared_type_pairs: usize,
    renamed_nicknames: i64,
    retired_keys: i64,
}

fn revert_counts(conn: Conn<'_>, guard: RevertGuard) -> Result<RevertCounts> {
    use crate::query;
    use diesel::RunQueryDsl;
    let first = |rows: Vec<i64>| rows.into_iter().next().unwrap_or(0);
    on_backend!(conn, c => c.counting_every_row(|c| {
        let mut counts = RevertCounts::default();
        match guard {
            RevertGuard::Rows => {
                counts.accounts = first(RunQueryDsl::load(query::operator::count_accounts(), c)?);
                counts.credentials = first(RunQueryDsl::load(query::count_credentials(), c)?);
            }
            RevertGuard::Nicknames => {
                let pairs: Vec<(uuid::Uuid, String)> =
                    RunQueryDsl::load(query::shared_type_pairs(), c)?;
                counts.shared_type_pairs = pairs.len();
                counts.renamed_nicknames =
                    first(RunQueryDsl::load(query::count_renamed_nicknames(), c)?);
            }
            RevertGuard::RetiredKeys => {
                counts.retired_keys = first(RunQueryDsl::load(query::operator::count_retired_keys(), c)?);
                if counts.retired_keys > 0 {
                    counts.accounts = first(RunQueryDsl::load(query::operator::count_accounts(), c)?);
                    counts.credentials = first(RunQueryDsl::load(query::count_credentials(), c)?);
                }
            }
            RevertGuard::None => {}
        }
        Ok(counts)
    }))
}

/// Refuses a revert that would lose data or a security control.
fn refuse_unsafe_revert(version: &str, guard: RevertGuard, counts: RevertCounts) -> Result<()> {
    match guard {
        RevertGuard::Rows if counts.accounts + counts.credentials > 0 => {
            Err(Error::RevertWouldExpose {
                version: version.to_owned(),
                accounts: counts.accounts as u64,
                credentials: counts.credentials as u64,
            })
        }
        RevertGuard::RetiredKeys if counts.retired_keys > 0 => Err(Error::RevertWouldExpose {
            version: version.to_owned(),
            accounts: counts.accounts as u64,
            credentials: counts.credentials as u64,
        }),
        RevertGuard::Nicknames if counts.shared_type_pairs > 0 => Err(Error::RevertRefused {
            version: version.to_owned(),
            conflicts: counts.shared_type_pairs,
        }),
        RevertGuard::Nicknames if counts.renamed_nicknames > 0 => {
            Err(Error::RevertWouldDropNicknames {
                version: version.to_owned(),
                nicknames: counts.renamed_nicknames as u64,
            })
        }
        _ => Ok(()),
    }
}

/// The migration that creates the tables.
const CREATE_TABLES: &str = "20240115000001";

/// The migration that enables and forces row-level security.
const ROW_LEVEL_SECURITY: &str = "20240115000002";

/// The multiple-credentials migration, whose revert restores a unique index.
const MULTIPLE_CREDENTIALS: &str = "20240601000003";

/// The migration whose composite foreign key makes a credential's user its
/// account's (on MariaDB/MySQL the only owner check the database enforces).
const OWNER_MATCHES_ACCOUNT: &str = "20261125000005";

/// The migration that adds the per-account data keys: reverting it while rows
/// are stored would destroy the keys their sealed-v3 credentials need.
const DATA_KEYS: &str = "20261207000006";

/// The migration that keeps the data keys an account had before its current
/// one: reverting it while one is stored would destroy a key a credential may
/// still be sealed under.
const RETIRED_DATA_KEYS: &str = "20261208000007";

/// The migration set of a connection's backend.
fn migrations_for<C: BackendConnection>(_: &C) -> EmbeddedMigrations {
    C::MIGRATIONS
}
