//! Reverting migrations down to a named one, for operators.

use crate::connection::Database;
use crate::error::{Error, Result};

/// A migration version as the bookkeeping keeps it, from what an operator may type:
/// `20240601000003`, `2024-06-01-000003` or the folder name
/// `2024-06-01-000003_multiple_credentials_support`.
fn bookkeeping_version(version: &str) -> String {
    let version = version.trim();
    let version = version.split_once('_').map_or(version, |(v, _)| v);
    version.replace('-', "")
}

impl Database {
    /// Reverts the most recently applied migrations, one at a time, each in its own
    /// transaction and guarded as [`revert_last_migration`](Self::revert_last_migration)
    /// guards it, until `version` itself has been reverted; returns the versions
    /// reverted, newest first. `on_reverted` is called after each one.
    ///
    /// `version` may be given as the bookkeeping keeps it (`20240601000003`) or as
    /// the migration's folder name (`2024-06-01-000003_multiple_credentials_support`).
    /// A version that is not applied is [`Error::MigrationNotApplied`] and changes
    /// nothing. The first revert that fails or refuses (such as
    /// [`Error::RevertRefused`]) stops the run with that error; the migrations
    /// reverted before it (reported through `on_reverted`) stay reverted.
    ///
    /// ```
    /// use credential_store::Database;
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
    /// db.run_migrations().unwrap();
    /// let reverted = db.revert_through("2024-06-01-000003_multiple_credentials_support", &mut |_| {}).unwrap();
    /// assert_eq!(
    ///     reverted,
    ///     [
    ///         "20261208000007",
    ///         "20261207000006",
    ///         "20261125000005",
    ///         "20261125000004",
    ///         "20240601000003"
    ///     ]
    /// );
    /// assert_eq!(db.pending_migrations().unwrap().len(), 5);
    /// ```
    pub fn revert_through(
        &self,
        version: &str,
        on_reverted: &mut dyn FnMut(&str),
    ) -> Result<Vec<String>> {
        let wanted = bookkeeping_version(version);
        if !self.applied_migrations()?.contains(&wanted) {
            return Err(Error::MigrationNotApplied {
                version: version.trim().to_owned(),
            });
        }
        let mut reverted = Vec::new();
        loop {
            let done = self.revert_last_migration()?;
            on_reverted(&done);
            let finished = done == wanted;
            reverted.push(done);
            if finished {
                return Ok(reverted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bookkeeping_version;

    #[test]
    fn versions_are_read_in_every_spelling() {
        for spelling in [
            "20240601000003",
            "2024-06-01-000003",
            "2024-06-01-000003_multiple_credentials_support",
            " 2024-06-01-000003 ",
        ] {
            assert_eq!(bookkeeping_version(spelling), "20240601000003");
        }
    }
}
