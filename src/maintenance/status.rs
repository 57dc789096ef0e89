//! What an operator wants to know about a store at a glance.

use super::{KeyUsage, Maintenance};
use crate::backend::{Backend, BackendConnection, Load, Scope};
pub use crate::backend::{RowSecurityStatus, TableRowSecurity};
use crate::connection::Database;
use crate::error::Result;
use crate::{query, steps};
use serde::Serialize;

/// A store's state: its migrations, its rows, its keys and, on PostgreSQL, its
/// row-level security. From [`Database::status`] (without keys) or
/// [`Maintenance::status`] (with key usage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreStatus {
    /// The backend.
    pub backend: Backend,
    /// The applied migrations' versions, oldest first.
    pub applied_migrations: Vec<String>,
    /// The pending migrations' versions, oldest first.
    pub pending_migrations: Vec<String>,
    /// How many accounts there are. `None` while migrations are pending (the
    /// tables may not have their final shape) or when row-level security hides
    /// rows from the current role (a count would be a silent undercount).
    pub accounts: Option<u64>,
    /// How many credentials there are; `None` as for `accounts`.
    pub credentials: Option<u64>,
    /// How many credentials have no nickname (NULL), which
    /// [`backfill_nicknames`](Maintenance::backfill_nicknames) fixes; `None` as for
    /// `accounts`.
    pub null_nicknames: Option<u64>,
    /// Rows per format and key, as [`Maintenance::key_usage`] gives them; `None`
    /// without a keyring, or when the counts are `None`.
    pub key_usage: Option<Vec<KeyUsage>>,
    /// Values the existing system stored outside today's rules (types such as
    /// `Alpaca_Paper`, untrimmed or non-NFC nicknames), as
    /// [`Maintenance::legacy_rows`] counts them; `None` without a keyring, or when the
    /// counts are `None`.
    pub non_conforming_legacy_rows: Option<u64>,
    /// Row-level security on the two tables and the current role; `None` on SQLite.
    pub row_security: Option<RowSecurityStatus>,
    /// How many replaced data keys are kept, retired, until a rotation deletes
    /// them (see [`Maintenance::replacing_data_keys`]); `None` as for `accounts`.
    pub retired_data_keys: Option<u64>,
}

impl Database {
    /// The store's state, without key usage (no keyring needed). Reads only, but
    /// for diesel's bookkeeping table, which reading the migrations creates on a
    /// database that has none (on PostgreSQL the role needs `CREATE` on the schema
    /// for that statement, even when the table exists).
    ///
    /// ```
    /// use credential_store::Database;
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
    /// assert_eq!(db.status().unwrap().accounts, None); // not migrated yet
    /// db.run_migrations().unwrap();
    /// let status = db.status().unwrap();
    /// assert!(status.pending_migrations.is_empty());
    /// assert_eq!((status.accounts, status.credentials, status.null_nicknames), (Some(0), Some(0), Some(0)));
    /// ```
    pub fn status(&self) -> Result<StoreStatus> {
        let applied_migrations = self.applied_migrations()?;
        let pending_migrations = self.pending_migrations()?;
        let row_security =
            self.raw(|conn| crate::backend::on_backend!(conn, c => c.row_security_status()))?;
        let sees_every_row = row_security.as_ref().is_none_or(|rls| rls.bypasses);
        let mut status = StoreStatus {
            backend: self.backend(),
            applied_migrations,
            pending_migrations,
            accounts: None,
            credentials: None,
            null_nicknames: None,
            key_usage: None,
            non_conforming_legacy_rows: None,
            row_security,
            retired_data_keys: None,
        };
        if status.pending_migrations.is_empty() && sees_every_row {
            status.accounts = Some(count(self, query::operator::count_accounts())?);
            status.credentials = Some(count(self, query::count_credentials())?);
            status.null_nicknames = Some(count(self, query::operator::count_null_nicknames())?);
            status.retired_data_keys = Some(count(self, query::operator::count_retired_keys())?);
        }
        Ok(status)
    }
}

/// The one number a counting statement returns.
fn count<Q: Load<i64>>(db: &Database, statement: Q) -> Result<u64> {
    let n = steps::first(db.load_now(Scope::maintenance_read(), vec![statement])?);
    Ok(n.unwrap_or(0) as u64)
}

impl Maintenance {
    /// The store's state, with [key usage](Self::key_usage) when the counts can be
    /// read (no pending migrations, a role that sees every row). Reads only.
    pub fn status(&self) -> Result<StoreStatus> {
        let mut status = self.db.status()?;
        if status.credentials.is_some() {
            status.key_usage = Some(self.key_usage()?);
            status.non_conforming_legacy_rows = Some(self.legacy_rows(1000)?.values.len() as u64);
        }
        Ok(status)
    }
}
