//! Cross-user maintenance: nickname backfill, key rotation and key usage.
//!
//! These walk every account's rows, so on PostgreSQL they need a role that
//! bypasses row-level security (a superuser or `BYPASSRLS`): operators and
//! migration jobs, not the per-user service role. They live apart from the
//! per-user [`CredentialStore`](crate::CredentialStore) so that a service holds
//! only the API it needs.

mod batches;
mod copy;
mod legacy;
mod revert;
mod rows;
mod status;
mod verify;

pub use batches::{BackfillProgress, Outcome};
pub use copy::{CopyOptions, CopyProgress, CopyReport};
pub use legacy::{LegacyReport, LegacyValue};
pub use status::{RowSecurityStatus, StoreStatus, TableRowSecurity};
pub use verify::{UnreadableCredential, VerifyProgress, VerifyReport};

use crate::backend::Scope;
use crate::connection::Database;
use crate::crypto::{CipherFormat, KeyHierarchy, Keyring, StoredDataKey};
use crate::error::Result;
use crate::ops::span;
use crate::query;
use rows::{StoredRow, UsageCounts};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use uuid::Uuid;

/// How far a [`rotate_keys`](Maintenance::rotate_keys) run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct RotationProgress {
    /// Credentials looked at so far.
    pub scanned: u64,
    /// Credentials in the table when the run started.
    pub total: u64,
    /// Credentials re-encrypted so far.
    pub rewritten: u64,
    /// Account data keys re-wrapped under the provider's current KEK so far (the
    /// credentials under them untouched).
    pub data_keys_rewrapped: u64,
    /// Account data keys replaced by new ones so far (a rotation
    /// [replacing data keys](Maintenance::replacing_data_keys)); the credentials
    /// under the old ones are re-encrypted and counted in `rewritten`.
    pub data_keys_replaced: u64,
    /// Retired data keys deleted so far: past the
    /// [grace period](Maintenance::with_retired_key_grace), with no credential
    /// sealed under them.
    pub retired_keys_deleted: u64,
}

impl RotationProgress {
    /// Credentials not looked at yet (rows added during the run may make the last
    /// batches go past `total`).
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.scanned)
    }
}

/// How many credentials one key protects in one format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub struct KeyUsage {
    /// The ciphertext format.
    pub format: CipherFormat,
    /// The version of the sealed format (`Some(1)`, `Some(2)` or `Some(3)`;
    /// rotation converts the older ones to 3); `None` for Fernet tokens and for
    /// ciphertexts no format reads.
    pub version: Option<u8>,
    /// The key: for sealed v1/v2 the keyring key id they name; for sealed v3 the
    /// KEK that wraps the account's data key; for Fernet tokens the id of the
    /// keyring's key that opens them. `None`: no key opens them (or, for v3, the
    /// account has no data key).
    pub key_id: Option<String>,
    /// Whether the store holds that key: the keyring (or, for a KEK, the
    /// configured key provider, whose current KEK it is).
    pub in_keyring: bool,
    /// Who holds the key: `keyring` for keyring keys (Fernet, sealed v1/v2, and
    /// the KEKs of data keys the keyring wraps), the key provider's name for a KEK
    /// it holds; `None` when no key opens the values.
    pub provider: Option<String>,
    /// Credentials with at least one field (`api_key`, `secret_key`) under it.
    pub credentials: u64,
}

/// The cross-user operations, for an operator's role.
///
/// ```
/// use credential_store::{Database, Keyring, Maintenance};
/// use secrecy::ExposeSecret;
///
/// let dir = tempfile::tempdir().unwrap();
/// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
/// db.run_migrations().unwrap();
/// let keyring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
/// let maintenance = Maintenance::new(db, keyring);
/// assert_eq!(maintenance.backfill_nicknames(500).unwrap(), 0);
/// let done = maintenance.rotate_keys(500, &mut |_| {}).unwrap();
/// assert_eq!(done.rewritten, 0);
/// ```
#[derive(Debug, Clone)]
pub struct Maintenance {
    db: Database,
    keys: KeyHierarchy,
    format: CipherFormat,
    /// Replace the data keys made before this time (a data-key rotation).
    replace_data_keys: Option<chrono::DateTime<chrono::Utc>>,
    /// How long a retired data key is kept after its replacement.
    retired_grace: std::time::Duration,
}

/// How long a replaced data key is kept by default: twelve times the data-key
/// cache's default age, past which no writer still seals under it.
pub const DEFAULT_RETIRED_KEY_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

impl crate::CredentialStore {
    /// The cross-user maintenance operations (backfill, key rotation, key usage) on
    /// the same database, keyring, key provider, data-key cache and minimum
    /// format, for a role that bypasses row-level security.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance {
            db: self.core.exec.clone(),
            keys: self.core.keys.clone(),
            format: self.core.format,
            replace_data_keys: None,
            retired_grace: DEFAULT_RETIRED_KEY_GRACE,
        }
    }
}

impl Maintenance {
    /// Maintenance on a (migrated) database with `keyring`, writing the
    /// [sealed](CipherFormat::Sealed) format when it rotates.
    pub fn new(db: Database, keyring: impl Into<Arc<Keyring>>) -> Self {
        Maintenance {
            db,
            keys: KeyHierarchy::new(keyring.into()),
            format: CipherFormat::Sealed,
            replace_data_keys: None,
            retired_grace: DEFAULT_RETIRED_KEY_GRACE,
        }
    }

    /// The same, rotating to `format`.
    pub fn with_format(mut self, format: CipherFormat) -> Self {
        self.format = format;
        self
    }

    /// The same, wrapping data keys with `provider`: rotation re-wraps every data
    /// key stored under another provider or KEK with it.
    pub fn with_key_provider(mut self, provider: Arc<dyn crate::KeyProvider>) -> Self {
        self.keys.provider = provider;
        self
    }

    /// The same, with the oldest format [`verify`](Self::verify) counts as
    /// readable (rotation reads every format, to convert it).
    pub fn with_minimum_format(mut self, minimum: crate::FormatVersion) -> Self {
        self.keys.minimum = minimum;
        self
    }

    /// The same, and [`rotate_keys`](Self::rotate_keys) also gives every account
    /// whose data key was made before `made_before` a new data key (the next
    /// version) and re-encrypts its credentials under it: what to do when a data
    /// key may have leaked, or to bound how much one key has sealed.
    ///
    /// Each replacement is one short transaction that keeps the old key as
    /// *retired*, so every credential stays readable throughout: rows not yet
    /// re-encrypted, and rows that a service holding the old key in its cache
    /// writes in the meantime (the next run re-encrypts those). A retired key is
    /// deleted by a later rotation once it has been retired longer than the
    /// [grace period](Self::with_retired_key_grace) and no credential is sealed
    /// under it.
    ///
    /// Pass the same `made_before` to resume a stopped run: keys replaced by the
    /// first run were made after it and are left alone. `Utc::now()` starts a new
    /// rotation.
    pub fn replacing_data_keys(mut self, made_before: chrono::DateTime<chrono::Utc>) -> Self {
        self.replace_data_keys = Some(made_before);
        self
    }

    /// The same, keeping a replaced data key for `grace` before a rotation may
    /// delete it ([`DEFAULT_RETIRED_KEY_GRACE`], an hour, by default). Keep it
    /// longer than the [data-key cache](crate::DataKeyCache)'s age in every
    /// service: a service that cached the old key seals under it until its entry
    /// expires.
    pub fn with_retired_key_grace(mut self, grace: std::time::Duration) -> Self {
        self.retired_grace = grace;
        self
    }

    /// The database it runs on.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Sets `nickname = credential_type` on every credential whose nickname is NULL,
    /// across all accounts, `batch_size` rows per short transaction, and returns how
    /// many rows it changed. Rows with a nickname are never touched; safe to stop at
    /// any point and run again.
    ///
    /// On PostgreSQL this needs a role that bypasses row-level security; any other
    /// role gets [`Error::RowSecurityActive`](crate::Error::RowSecurityActive) rather than a silent zero.
    pub fn backfill_nicknames(&self, batch_size: usize) -> Result<u64> {
        let outcome =
            self.backfill_nicknames_with(batch_size, &mut |_| ControlFlow::Continue(()))?;
        Ok(outcome.progress().changed)
    }

    /// Re-encrypts every credential whose ciphertext was not made by the keyring's
    /// primary key in the [format](Self::with_format), across all accounts: Fernet
    /// to sealed, sealed to Fernet, old key to new.
    ///
    /// Walks the table by id, `batch_size` rows at a time: each batch is read,
    /// re-encrypted outside any lock, then written in one short transaction, and only
    /// where the row still holds the ciphertext that was read (a concurrent update
    /// wins). `progress` is called after each batch. Every row is readable with the
    /// keyring at every moment, so the rotation can be killed at any point and run
    /// again; a second run rewrites nothing.
    ///
    /// With [`replacing_data_keys`](Self::replacing_data_keys) it first gives the
    /// accounts new data keys, and every run ends by deleting the retired data
    /// keys past their [grace period](Self::with_retired_key_grace) that no
    /// credential is sealed under any more.
    ///
    /// A credential no key opens is never skipped silently: the rest is rotated, then
    /// [`Error::RotationIncomplete`](crate::Error::RotationIncomplete) lists each one ([`Error::UnknownKey`](crate::Error::UnknownKey) naming the
    /// missing key id, or [`Error::Decryption`](crate::Error::Decryption)). On PostgreSQL this needs a role that
    /// bypasses row-level security ([`Error::RowSecurityActive`](crate::Error::RowSecurityActive) otherwise).
    pub fn rotate_keys(
        &self,
        batch_size: usize,
        progress: &mut dyn FnMut(&RotationProgress),
    ) -> Result<RotationProgress> {
        self.rotate_keys_with(batch_size, &mut |state| {
            progress(state);
            ControlFlow::Continue(())
        })
        .map(Outcome::into_progress)
    }

    /// How many credentials each key protects, per format, across all accounts: an
    /// old key may leave the keyring when no row needs it. Reads the whole table. On
    /// PostgreSQL this needs a role that bypasses row-level security.
    pub fn key_usage(&self) -> Result<Vec<KeyUsage>> {
        span("key_usage", self.db.backend(), None).in_scope(|| {
            self.require_rls_bypass("key_usage")?;
            let mut counts = UsageCounts::new();
            let mut after = Uuid::nil();
            while let Some(batch) = self.stored_batch(after, 1000)? {
                after = batch.last().map_or(after, |row| row.id);
                let stored = stored_data_keys(&self.db, &batch)?;
                rows::count_key_usage(&self.keys.keyring, &stored, &batch, &mut counts);
            }
            Ok(rows::key_usage_report(&self.keys, counts))
        })
    }

    /// The next `limit` credentials after `after`, by id, across all accounts; `None`
    /// past the end.
    fn stored_batch(&self, after: Uuid, limit: i64) -> Result<Option<Vec<StoredRow>>> {
        let rows = self.db.load_now(
            Scope::maintenance_read(),
            vec![query::ciphertext_batch(after, limit)],
        )?;
        let rows: Vec<StoredRow> = rows.into_iter().map(StoredRow::from).collect();
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// The data keys of the accounts of `rows` on `db`, unwrapped (current keys
    /// through the cache), each account's current key first and then its retired
    /// ones. An account whose current data key does not unwrap is left out, so
    /// its sealed v3 rows are reported as not opening (a retired key that does
    /// not unwrap is left out alone); a provider that cannot be reached fails the
    /// call.
    fn data_keys(&self, db: &Database, rows: &[StoredRow]) -> Result<rows::AccountKeys> {
        self.unwrap_data_keys(db, rows).map(|(keys, _)| keys)
    }

    /// The same, with the error of each account whose data key does not unwrap.
    fn unwrap_data_keys(
        &self,
        db: &Database,
        rows: &[StoredRow],
    ) -> Result<(rows::AccountKeys, Unreadable)> {
        let stored = stored_data_keys(db, rows)?;
        let retired = retired_data_keys(db, rows)?;
        let users: HashMap<Uuid, &str> = rows
            .iter()
            .map(|row| (row.account_id, row.user_id.as_str()))
            .collect();
        let mut keys = HashMap::with_capacity(stored.len());
        let mut unreadable = Vec::new();
        for (account_id, stored) in stored {
            let user_id = users.get(&account_id).copied().unwrap_or_default();
            match crate::repository::block_on(self.keys.data_key(account_id, user_id, &stored)) {
                Ok(key) => {
                    keys.insert(account_id, vec![key]);
                }
                Err(err) if err.is_retryable() => return Err(err),
                Err(err) => unreadable.push((account_id, err)),
            }
        }
        for (account_id, stored) in retired {
            let Some(account_keys) = keys.get_mut(&account_id) else {
                continue;
            };
            let user_id = users.get(&account_id).copied().unwrap_or_default();
            match crate::repository::block_on(
                self.keys.retired_data_key(account_id, user_id, &stored),
            ) {
                Ok(key) => account_keys.push(key),
                Err(err) if err.is_retryable() => return Err(err),
                // Its rows are reported as not opening.
                Err(_) => {}
            }
        }
        Ok((keys, unreadable))
    }

    /// Fails unless the current role sees every row of `user_credentials`.
    fn require_rls_bypass(&self, operation: &'static str) -> Result<()> {
        let active = self.db.raw(|conn| {
            use crate::backend::BackendConnection;
            Ok(crate::backend::on_backend!(conn, c => c.row_security_active())?)
        })?;
        if active {
            return Err(crate::error::Error::RowSecurityActive { operation });
        }
        Ok(())
    }
}

/// The accounts whose data key does not unwrap, each with why.
type Unreadable = Vec<(Uuid, crate::Error)>;

/// The retired data keys of the accounts of `rows` on `db`.
fn retired_data_keys(db: &Database, rows: &[StoredRow]) -> Result<Vec<(Uuid, StoredDataKey)>> {
    data_keys_of(db, rows, query::retired_keys_of)
}

/// The stored data keys of the accounts of `rows` on `db`, by account.
fn stored_data_keys(db: &Database, rows: &[StoredRow]) -> Result<HashMap<Uuid, StoredDataKey>> {
    data_keys_of(db, rows, query::account_keys_of)
}

/// The data keys `statement` reads for the accounts of `rows` on `db`.
fn data_keys_of<Q, C>(
    db: &Database,
    rows: &[StoredRow],
    statement: impl FnOnce(&[Uuid]) -> Q,
) -> Result<C>
where
    Q: crate::backend::Load<(Uuid, query::DataKeyColumns)>,
    C: FromIterator<(Uuid, StoredDataKey)>,
{
    let accounts: BTreeSet<Uuid> = rows.iter().map(|row| row.account_id).collect();
    if accounts.is_empty() {
        return Ok(std::iter::empty().collect());
    }
    let accounts: Vec<Uuid> = accounts.into_iter().collect();
    let found = db.load_now(Scope::maintenance_read(), vec![statement(&accounts)])?;
    found
        .into_iter()
        .map(|(account_id, columns)| {
            Ok((
                account_id,
                StoredDataKey::from_columns(account_id, columns)?,
            ))
        })
        .collect()
}
