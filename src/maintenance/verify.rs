//! Verification: every credential decrypted with the keyring, read-only.

use super::rows::{self, StoredRow};
use super::Maintenance;
use crate::crypto::KeyHierarchy;
use crate::error::{Error, Result};
use crate::ops::{record_rows, span};
use crate::steps;
use crate::validation;
use serde::Serialize;
use std::ops::ControlFlow;
use uuid::Uuid;

/// How far a [`verify`](Maintenance::verify) run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// Credentials looked at so far.
    pub scanned: u64,
    /// Credentials in the table when the run started.
    pub total: u64,
    /// Credentials with at least one field that did not decrypt, so far.
    pub unreadable: u64,
}

impl VerifyProgress {
    /// Credentials not looked at yet.
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.scanned)
    }
}

/// One field of one credential that the keyring does not open. Names the row and
/// the reason, never the ciphertext or anything decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UnreadableCredential {
    /// The credential.
    pub credential_id: Uuid,
    /// Its account.
    pub account_id: Uuid,
    /// `api_key` or `secret_key`.
    pub field: &'static str,
    /// `unknown_key` (a sealed ciphertext names a key the keyring lacks),
    /// `decryption` (no key opens it: wrong key, corrupted, copied from another
    /// row or field, or its account's data key is gone) or `format_refused` (older
    /// than the minimum format).
    pub reason: &'static str,
    /// The missing key's id, for `unknown_key`.
    pub key_id: Option<String>,
    /// The error message, as [`Error`]'s `Display` gives it.
    pub message: String,
}

impl UnreadableCredential {
    /// The entry for a decryption failure of a row of `account_id`.
    fn from_error(account_id: Uuid, err: Error) -> Self {
        let message = err.to_string();
        let (credential_id, field, reason, key_id) = match err {
            Error::UnknownKey {
                credential_id,
                field,
                key_id,
            } => (credential_id, field, "unknown_key", Some(key_id)),
            Error::Decryption {
                credential_id,
                field,
            } => (credential_id, field, "decryption", None),
            Error::FormatRefused {
                credential_id,
                field,
                ..
            } => (credential_id, field, "format_refused", None),
            // Decryption fails with one of the two above and nothing else.
            _ => (Uuid::nil(), crate::Field::ApiKey, "decryption", None),
        };
        UnreadableCredential {
            credential_id,
            account_id,
            field: field.as_str(),
            reason,
            key_id,
            message,
        }
    }
}

/// What a [`verify`](Maintenance::verify) run found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Credentials looked at.
    pub scanned: u64,
    /// Credentials in the table when the run started.
    pub total: u64,
    /// Credentials whose two fields decrypted.
    pub readable: u64,
    /// Each field that did not decrypt, by credential id.
    pub unreadable: Vec<UnreadableCredential>,
    /// Fields per ciphertext format (`fernet`, `sealed-v1`, `sealed-v2`,
    /// `sealed-v3`; `unknown` for a value of no format).
    pub formats: std::collections::BTreeMap<String, u64>,
    /// Whether the run went through the whole table (false: stopped by its
    /// progress callback).
    pub complete: bool,
}

impl VerifyReport {
    /// Whether every credential looked at decrypted.
    pub fn all_readable(&self) -> bool {
        self.unreadable.is_empty()
    }
}

/// Decrypts both fields of each row, adds the failures to `unreadable` and returns
/// how many rows opened entirely. The plaintext is dropped (and zeroed) at once.
pub(super) fn check_rows(
    keys: &KeyHierarchy,
    data_keys: &super::rows::AccountKeys,
    rows: &[StoredRow],
    unreadable: &mut Vec<UnreadableCredential>,
) -> u64 {
    let mut readable = 0;
    for row in rows {
        match rows::open_stored(keys, data_keys, row) {
            (Ok(_), Ok(_)) => readable += 1,
            (api_key, secret_key) => unreadable.extend(
                api_key
                    .err()
                    .into_iter()
                    .chain(secret_key.err())
                    .map(|err| UnreadableCredential::from_error(row.account_id, err)),
            ),
        }
    }
    readable
}

impl Maintenance {
    /// Decrypts every credential with the keyring, `batch_size` rows at a time,
    /// across all accounts, and reports each field that does not open. Writes
    /// nothing; the plaintext never leaves this call.
    ///
    /// `progress` is called after each batch; when it returns
    /// [`ControlFlow::Break`] the run stops there, with
    /// [`complete`](VerifyReport::complete) false. On PostgreSQL this needs a role
    /// that bypasses row-level security ([`Error::RowSecurityActive`] otherwise).
    ///
    /// ```
    /// use credential_store::{CredentialRepository, CredentialStore, Database, Keyring, NewUserAccount, NewUserCredential};
    /// use secrecy::ExposeSecret;
    /// use std::ops::ControlFlow;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
    /// db.run_migrations().unwrap();
    /// let keyring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
    /// let store = CredentialStore::new(db, keyring);
    /// let account = store.create_account(&NewUserAccount::new("u1", "Ada")).unwrap();
    /// store.insert_credential(&account, &NewUserCredential::new("polygon", "PK1", "s1")).unwrap();
    /// let report = store.maintenance().verify(100, &mut |_| ControlFlow::Continue(())).unwrap();
    /// assert_eq!((report.scanned, report.readable, report.complete), (1, 1, true));
    /// assert!(report.all_readable());
    /// ```
    pub fn verify(
        &self,
        batch_size: usize,
        progress: &mut dyn FnMut(&VerifyProgress) -> ControlFlow<()>,
    ) -> Result<VerifyReport> {
        span("verify", self.db.backend(), None).in_scope(|| {
            let limit = validation::batch_size(batch_size)?;
            self.require_rls_bypass("verify")?;
            let total = steps::first(self.db.load_now(
                crate::backend::Scope::maintenance_read(),
                vec![crate::query::count_credentials()],
            )?)
            .unwrap_or(0);
            let mut report = VerifyReport {
                total: total as u64,
                complete: true,
                ..VerifyReport::default()
            };
            let mut after = Uuid::nil();
            while let Some(batch) = self.stored_batch(after, limit)? {
                after = batch.last().map_or(after, |row| row.id);
                let data_keys = self.data_keys(&self.db, &batch)?;
                report.readable +=
                    check_rows(&self.keys, &data_keys, &batch, &mut report.unreadable);
                rows::count_formats(&batch, &mut report.formats);
                report.scanned += batch.len() as u64;
                let state = VerifyProgress {
                    scanned: report.scanned,
                    total: report.total,
                    unreadable: report.scanned - report.readable,
                };
                if progress(&state).is_break() {
                    report.complete = false;
                    break;
                }
            }
            record_rows(report.scanned as usize);
            Ok(report)
        })
    }
}
