//! Embedded migrations, one folder per backend with the same names in each.
//!
//! | version | PostgreSQL | SQLite |
//! |---|---|---|
//! | `2024-01-15-000001_create_user_credentials` | the existing system's tables, with the old unique `(user_account_id, credential_type)` index | the same tables in portable types |
//! | `2024-01-15-000002_row_level_security` | `current_user_id()`, RLS enabled and forced, four policies per table | no-op |
//! | `2024-06-01-000003_multiple_credentials_support` | drop the unique index, add `nickname`, backfill it, index `(user_account_id, nickname)` | the same |
//! | `2026-11-25-000004_not_null_flags_and_timestamps` | repair NULL flags and timestamps, then make them `NOT NULL` | no-op (NOT NULL from the start) |
//! | `2026-11-25-000005_credential_owner_matches_account` | foreign key `(user_account_id, user_id)` → `user_accounts (id, user_id)`: a credential's user is its account's | triggers to the same effect |
//!
//! Every PostgreSQL migration is idempotent, so they also run on a database the
//! existing system made without diesel's bookkeeping table, at any step.

use crate::backend::{on_backend, Conn};
use crate::connection::Database;
use crate::error::{Error, Result};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The PostgreSQL migrations, embedded at build time.
#[cfg(feature = "postgres")]
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The SQLite migrations, embedded at build time.
#[cfg(feature = "sqlite")]
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

impl Database {
    /// Applies every pending migration and returns the versions applied, oldest first.
    ///
    /// Safe to call from several processes at once (services starting together): on
    /// PostgreSQL the run holds a session-level advisory lock, which also covers
    /// migrations that run outside a transaction; on SQLite it runs inside one
    /// `BEGIN IMMEDIATE` transaction, which holds the database's write lock (waiting
    /// out the busy timeout for it). Either way the pending list is read once the lock
    /// is held, so each migration is applied exactly once.
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

    /// Runs `f` holding the migration lock: a PostgreSQL advisory lock, or SQLite's
    /// write lock for one transaction.
    fn locked_migrations<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        self.raw(|conn| match conn {
            #[cfg(feature = "postgres")]
            Conn::Postgres(c) => {
                use diesel::sql_types::BigInt;
                use diesel::RunQueryDsl;
                diesel::sql_query("SELECT pg_advisory_lock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
                    .execute(c)?;
                let result = f(Conn::Postgres(&mut *c));
                let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
                    .execute(c);
                let value = result?;
                unlocked?;
                Ok(value)
            }
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(c) => c.immediate_transaction(|c| f(Conn::Sqlite(c))),
        })
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
    /// version. A revert that would lose data refuses and changes nothing: undoing
    /// the multiple-credentials migration is [`Error::RevertRefused`], naming how many
    /// `(account, credential_type)` pairs hold more than one credential, while any do
    /// (its `down.sql` checks again, inside its own transaction).
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
                if last.as_deref() == Some(MULTIPLE_CREDENTIALS) {
                    let shared: Vec<(uuid::Uuid, String)> =
                        diesel::RunQueryDsl::load(crate::query::shared_type_pairs(), c)?;
                    if !shared.is_empty() {
                        return Err(Error::RevertRefused {
                            version: MULTIPLE_CREDENTIALS.to_owned(),
                            conflicts: shared.len(),
                        });
                    }
                }
                c.revert_last_migration(migrations).map_err(Error::migration)?.to_string()
            });
            Ok(version)
        })
    }
}

/// The multiple-credentials migration, whose revert restores a unique index.
const MULTIPLE_CREDENTIALS: &str = "20240601000003";

/// The PostgreSQL advisory lock key that serialises migration runs ("credstor").
#[cfg(feature = "postgres")]
const MIGRATION_LOCK_KEY: i64 = 0x6372_6564_7374_6f72;

/// Picks the migration set by connection type.
trait MigrationsFor {
    fn migrations(&self) -> EmbeddedMigrations;
}

#[cfg(feature = "postgres")]
impl MigrationsFor for diesel::pg::PgConnection {
    fn migrations(&self) -> EmbeddedMigrations {
        POSTGRES_MIGRATIONS
    }
}

#[cfg(feature = "sqlite")]
impl MigrationsFor for diesel::sqlite::SqliteConnection {
    fn migrations(&self) -> EmbeddedMigrations {
        SQLITE_MIGRATIONS
    }
}

fn migrations_for(conn: &impl MigrationsFor) -> EmbeddedMigrations {
    conn.migrations()
}
