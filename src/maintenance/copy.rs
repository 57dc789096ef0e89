//! Copying a whole store from one database to another (SQLite to PostgreSQL and
//! back), ciphertexts as they are.

use super::rows::StoredRow;
use super::verify::{check_rows, UnreadableCredential};
use super::Maintenance;
use crate::backend::{Load, Scope};
use crate::connection::Database;
use crate::error::{Error, Result};
use crate::models::{AccountRow, CredentialRow, UserAccount, UserCredential};
use crate::ops::{record_rows, span};
use crate::query::{self, operator};
use crate::sql_types::{LossyText, SqlTime, SqlUuid};
use crate::steps::{self, INSERT_CHUNK_ROWS};
use crate::validation;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use uuid::Uuid;

/// How [`copy_to`](Maintenance::copy_to) runs: the defaults, changed with the
/// setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Rows read, written and verified per batch (1 to 100 000). Default 1000.
    pub batch_size: usize,
    /// Copy into a target that already holds rows, skipping those whose id it has
    /// (an interrupted copy run again). Without it a non-empty target is refused.
    /// Default false.
    pub resume: bool,
}

impl CopyOptions {
    /// Sets [`batch_size`](Self::batch_size).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`resume`](Self::resume).
    #[must_use]
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            batch_size: 1000,
            resume: false,
        }
    }
}

/// How far a [`copy_to`](Maintenance::copy_to) run has got. Accounts are copied
/// first, then credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct CopyProgress {
    /// Accounts and credentials in the source when the run started.
    pub total: u64,
    /// Accounts and credentials looked at so far.
    pub scanned: u64,
    /// Accounts written to the target.
    pub accounts_copied: u64,
    /// Accounts the target already had (same id), left as they are.
    pub accounts_skipped: u64,
    /// Credentials written to the target.
    pub credentials_copied: u64,
    /// Credentials the target already had (same id), left as they are.
    pub credentials_skipped: u64,
    /// Credentials read back from the target, found identical to the source and
    /// decrypted there (both fields).
    pub verified: u64,
}

impl CopyProgress {
    /// Accounts and credentials not looked at yet.
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.scanned)
    }
}

/// What a [`copy_to`](Maintenance::copy_to) run did and found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// The counts (flattened into the report when serialized).
    #[serde(flatten)]
    pub progress: CopyProgress,
    /// The migrations applied to the target before copying.
    pub migrated: Vec<String>,
    /// Credentials of the target that do not decrypt there, by field.
    pub unreadable: Vec<UnreadableCredential>,
    /// Credentials whose target row differs from the source's in any column (a
    /// row the target already had, since deactivated, expired, renamed or re-keyed
    /// on the source; other ciphertexts or another account), or is missing.
    pub mismatched: Vec<Uuid>,
    /// Accounts whose target row differs from the source's in any column, or is
    /// missing.
    pub mismatched_accounts: Vec<Uuid>,
    /// Whether the run went through both tables (false: stopped by its progress
    /// callback; run again with [`CopyOptions::resume`]).
    pub complete: bool,
}

impl CopyReport {
    /// Whether every account and credential copied or skipped is identical on the
    /// target, every column of it, and every credential decrypts there.
    pub fn verified(&self) -> bool {
        self.unreadable.is_empty()
            && self.mismatched.is_empty()
            && self.mismatched_accounts.is_empty()
    }
}

/// The ids of the rows of `source` that `target` lacks or holds otherwise (any
/// column), and of rows `target` holds that `source` lacks, sorted.
fn differing<T: PartialEq>(
    mut source: HashMap<Uuid, T>,
    target: Vec<T>,
    id: impl Fn(&T) -> Uuid,
) -> Vec<Uuid> {
    let mut differ = Vec::new();
    for row in target {
        match source.remove(&id(&row)) {
            Some(expected) if expected == row => {}
            _ => differ.push(id(&row)),
        }
    }
    differ.extend(source.into_keys());
    differ.sort();
    differ
}

/// A credential's account id and ciphertexts, as the target must hold them.
type Expected = (Uuid, String, String);

/// The one number a counting statement returns.
fn count<Q: Load<i64>>(db: &Database, statement: Q) -> Result<u64> {
    let n = steps::first(db.load_now(Scope::maintenance_read(), vec![statement])?);
    Ok(n.unwrap_or(0) as u64)
}

fn account_row(account: UserAccount) -> AccountRow {
    AccountRow {
        id: SqlUuid(account.scope.id),
        user_id: account.scope.user_id,
        account_name: account.account_name,
        is_active: account.is_active,
        created_at: SqlTime(account.created_at),
        updated_at: SqlTime(account.updated_at),
    }
}

fn credential_row(
    (c, api_key, secret_key): (UserCredential, LossyText, LossyText),
) -> CredentialRow {
    CredentialRow {
        id: SqlUuid(c.id),
        user_account_id: SqlUuid(c.user_account_id),
        user_id: c.user_id,
        credential_type: c.credential_type,
        nickname: c.nickname,
        api_key: api_key.0,
        secret_key: secret_key.0,
        is_active: c.is_active,
        expires_at: c.expires_at.map(SqlTime),
        created_at: SqlTime(c.created_at),
        updated_at: SqlTime(c.updated_at),
    }
}

/// `rows` in pieces of at most [`INSERT_CHUNK_ROWS`].
fn chunks<T>(rows: Vec<T>) -> Vec<Vec<T>> {
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(INSERT_CHUNK_ROWS));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        chunks.push(rows.by_ref().take(INSERT_CHUNK_ROWS).collect());
    }
    chunks
}

/// A credential as the copy reads it: the row and its two ciphertexts.
type CopiedCredential = (UserCredential, LossyText, LossyText);

/// How [`Maintenance::walk`] reads one table: the batch after an id, a row's id,
/// and the ids of a batch the target already holds.
struct Walk<After, Id, Existing> {
    after: After,
    id: Id,
    existing: Existing,
}

impl Maintenance {
    /// Copies every account and credential of this store's database into `target`,
    /// which may be of the other backend, keeping ids, times and ciphertexts exactly
    /// as they are: nothing is decrypted to be re-encrypted, and sealed ciphertexts,
    /// bound to their credential and account ids, stay valid.
    ///
    /// `target` is migrated first. A target that holds any row is refused with
    /// [`Error::TargetNotEmpty`] unless [`CopyOptions::resume`] is set; then rows the
    /// target already has (by id) are not written. Both tables are walked by id,
    /// `batch_size` rows at a time, each batch written in one transaction; every
    /// account and credential of the batch, written or skipped, is then read back
    /// from the target and compared with the source in every column (a skipped one
    /// with the source as it is now, so a credential deactivated, expired or renamed
    /// since an earlier pass is a mismatch), every credential is decrypted there
    /// with this keyring, and the report lists what does not match
    /// ([`CopyReport::mismatched`], [`CopyReport::mismatched_accounts`]) or does not
    /// open. `progress` is called after each batch; when it returns
    /// [`ControlFlow::Break`] the copy stops there (`complete` false) and a run with
    /// `resume` finishes it.
    ///
    /// On PostgreSQL, on either side, this needs a role that bypasses row-level
    /// security ([`Error::RowSecurityActive`] otherwise). The source must be
    /// migrated; it is only read.
    ///
    /// ```
    /// use credential_store::maintenance::CopyOptions;
    /// use credential_store::{CredentialRepository, CredentialStore, Database, Keyring, NewUserAccount, NewUserCredential};
    /// use secrecy::ExposeSecret;
    /// use std::ops::ControlFlow;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let open = |name: &str| Database::open(dir.path().join(name).to_str().unwrap()).unwrap();
    /// let source = open("source.db");
    /// source.run_migrations().unwrap();
    /// let keyring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
    /// let store = CredentialStore::new(source, keyring);
    /// let account = store.create_account(&NewUserAccount::new("u1", "Ada")).unwrap();
    /// store.insert_credential(&account, &NewUserCredential::new("polygon", "PK1", "s1")).unwrap();
    ///
    /// let target = open("target.db");
    /// let report = store.maintenance()
    ///     .copy_to(&target, &CopyOptions::default(), &mut |_| ControlFlow::Continue(()))
    ///     .unwrap();
    /// assert!(report.complete && report.verified());
    /// assert_eq!((report.progress.accounts_copied, report.progress.credentials_copied), (1, 1));
    /// ```
    pub fn copy_to(
        &self,
        target: &Database,
        options: &CopyOptions,
        progress: &mut dyn FnMut(&CopyProgress) -> ControlFlow<()>,
    ) -> Result<CopyReport> {
        span("copy", self.db.backend(), None).in_scope(|| {
            let limit = validation::batch_size(options.batch_size)?;
            self.require_rls_bypass("copy")?;
            let migrated = target.run_migrations()?;
            let target_side = Maintenance {
                db: target.clone(),
                ..self.clone()
            };
            target_side.require_rls_bypass("copy")?;
            let present = (
                count(target, operator::count_accounts())?,
                count(target, query::count_credentials())?,
            );
            if present != (0, 0) && !options.resume {
                return Err(Error::TargetNotEmpty {
                    accounts: present.0,
                    credentials: present.1,
                });
            }
            let mut report = CopyReport {
                progress: CopyProgress {
                    total: count(&self.db, operator::count_accounts())?
                        + count(&self.db, query::count_credentials())?,
                    ..CopyProgress::default()
                },
                migrated,
                complete: true,
                ..CopyReport::default()
            };
            let stopped = self
                .copy_accounts(target, limit, &mut report, progress)?
                .is_break()
                || self
                    .copy_credentials(target, limit, &mut report, progress)?
                    .is_break();
            report.complete = !stopped;
            record_rows(
                (report.progress.accounts_copied + report.progress.credentials_copied) as usize,
            );
            Ok(report)
        })
    }

    /// Copies the accounts the target lacks, batch by batch.
    fn copy_accounts(
        &self,
        target: &Database,
        limit: i64,
        report: &mut CopyReport,
        progress: &mut dyn FnMut(&CopyProgress) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let batches = Walk {
            after: operator::accounts_after,
            id: |account: &UserAccount| account.id(),
            existing: operator::existing_account_ids,
        };
        self.walk(
            target,
            limit,
            report,
            progress,
            batches,
            |batch, ids, existing, report| {
                let source: HashMap<Uuid, UserAccount> =
                    batch.iter().map(|a| (a.id(), a.clone())).collect();
                let rows: Vec<AccountRow> = batch
                    .into_iter()
                    .filter(|a| !existing.contains(&a.id()))
                    .map(account_row)
                    .collect();
                let state = &mut report.progress;
                state.accounts_skipped += existing.len() as u64;
                state.accounts_copied += rows.len() as u64;
                if !rows.is_empty() {
                    let statements = chunks(rows)
                        .into_iter()
                        .map(operator::insert_accounts)
                        .collect();
                    target.execute_now(Scope::maintenance(), statements)?;
                }
                // Every account of the batch, written or skipped, is compared
                // column by column with the source's.
                let stored = target.load_now(
                    Scope::maintenance_read(),
                    vec![operator::accounts_by_ids(ids)],
                )?;
                let users: HashMap<Uuid, String> = source
                    .values()
                    .map(|a| (a.id(), a.user_id().to_owned()))
                    .collect();
                report
                    .mismatched_accounts
                    .extend(differing(source, stored, |a: &UserAccount| a.id()));
                self.copy_data_keys(target, ids, &users, report)
            },
        )
    }

    /// Copies the data keys of a batch of accounts that the target lacks, as they
    /// are (still wrapped: the target needs the same key provider), then compares
    /// every one with the source's; an account whose data key differs or is
    /// missing is a mismatched account.
    fn copy_data_keys(
        &self,
        target: &Database,
        ids: &[Uuid],
        users: &HashMap<Uuid, String>,
        report: &mut CopyReport,
    ) -> Result<()> {
        let source: HashMap<Uuid, _> = self
            .db
            .load_now(Scope::maintenance_read(), vec![query::account_keys_of(ids)])?
            .into_iter()
            .collect();
        let present: HashSet<Uuid> = target
            .load_now(Scope::maintenance_read(), vec![query::account_keys_of(ids)])?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut statements = Vec::new();
        for (account_id, columns) in &source {
            let Some(user_id) = users.get(account_id) else {
                continue;
            };
            if present.contains(account_id) {
                continue;
            }
            let stored = crate::crypto::StoredDataKey::from_columns(*account_id, columns.clone())?;
            let scope = crate::AccountScope::new(user_id, *account_id)?;
            statements.push(query::insert_account_key(&scope, &stored));
        }
        if !statements.is_empty() {
            target.execute_now(Scope::maintenance(), statements)?;
        }
        let copied: HashMap<Uuid, _> = target
            .load_now(Scope::maintenance_read(), vec![query::account_keys_of(ids)])?
            .into_iter()
            .collect();
        for (account_id, columns) in source {
            if copied.get(&account_id) != Some(&columns) {
                report.mismatched_accounts.push(account_id);
            }
        }
        self.copy_retired_keys(target, ids, users, report)
    }

    /// Copies the retired data keys of the accounts `ids` that the target lacks
    /// (their grace period starts again on the target), then compares them.
    fn copy_retired_keys(
        &self,
        target: &Database,
        ids: &[Uuid],
        users: &HashMap<Uuid, String>,
        report: &mut CopyReport,
    ) -> Result<()> {
        let retired = |db: &Database| -> Result<HashSet<(Uuid, query::DataKeyColumns)>> {
            Ok(db
                .load_now(Scope::maintenance_read(), vec![query::retired_keys_of(ids)])?
                .into_iter()
                .collect())
        };
        let source = retired(&self.db)?;
        let present: HashSet<(Uuid, i32)> = retired(target)?
            .into_iter()
            .map(|(id, (version, ..))| (id, version))
            .collect();
        let mut statements = Vec::new();
        for (account_id, columns) in &source {
            let Some(user_id) = users.get(account_id) else {
                continue;
            };
            if present.contains(&(*account_id, columns.0)) {
                continue;
            }
            let stored = crate::crypto::StoredDataKey::from_columns(*account_id, columns.clone())?;
            statements.push(query::retire_data_key(*account_id, user_id, &stored));
        }
        if !statements.is_empty() {
            target.execute_now(Scope::maintenance(), statements)?;
        }
        let copied = retired(target)?;
        let mut mismatched: Vec<Uuid> = source
            .difference(&copied)
            .map(|(account_id, _)| *account_id)
            .filter(|id| !report.mismatched_accounts.contains(id))
            .collect();
        mismatched.sort_unstable();
        mismatched.dedup();
        report.mismatched_accounts.extend(mismatched);
        Ok(())
    }

    /// Copies the credentials the target lacks, batch by batch, then reads each
    /// batch back from the target and checks it.
    fn copy_credentials(
        &self,
        target: &Database,
        limit: i64,
        report: &mut CopyReport,
        progress: &mut dyn FnMut(&CopyProgress) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let batches = Walk {
            after: operator::credentials_after,
            id: |(credential, ..): &CopiedCredential| credential.id,
            existing: operator::existing_credential_ids,
        };
        self.walk(
            target,
            limit,
            report,
            progress,
            batches,
            |batch, ids, existing, report| {
                let models: Vec<UserCredential> = batch.iter().map(|(c, ..)| c.clone()).collect();
                let rows: Vec<CredentialRow> = batch
                    .into_iter()
                    .filter(|(c, ..)| !existing.contains(&c.id))
                    .map(credential_row)
                    .collect();
                // What the target must hold afterwards: the source's ciphertexts, by id.
                let mut expected: HashMap<Uuid, Expected> = HashMap::with_capacity(ids.len());
                let state = &mut report.progress;
                state.credentials_skipped += existing.len() as u64;
                state.credentials_copied += rows.len() as u64;
                let statements: Vec<_> = chunks(rows)
                    .into_iter()
                    .map(|chunk| {
                        for row in &chunk {
                            expected.insert(
                                row.id.0,
                                (
                                    row.user_account_id.0,
                                    row.api_key.clone(),
                                    row.secret_key.clone(),
                                ),
                            );
                        }
                        query::insert_credentials(chunk)
                    })
                    .collect();
                if !statements.is_empty() {
                    target.load_written_now(Scope::maintenance(), statements)?;
                }
                self.check_copied(target, ids, &existing, expected, models, report)
            },
        )
    }

    /// Walks the source by id, `limit` rows at a time: for each batch, the ids the
    /// target already holds, then `copy`; stops at the end or when `progress` says so.
    fn walk<R, Q, E>(
        &self,
        target: &Database,
        limit: i64,
        report: &mut CopyReport,
        progress: &mut dyn FnMut(&CopyProgress) -> ControlFlow<()>,
        batches: Walk<impl Fn(Uuid, i64) -> Q, impl Fn(&R) -> Uuid, impl Fn(&[Uuid]) -> E>,
        mut copy: impl FnMut(Vec<R>, &[Uuid], HashSet<Uuid>, &mut CopyReport) -> Result<()>,
    ) -> Result<ControlFlow<()>>
    where
        Q: Load<R>,
        E: Load<Uuid>,
        R: Send + 'static,
    {
        let mut after = Uuid::nil();
        loop {
            let batch = self.db.load_now(
                Scope::maintenance_read(),
                vec![(batches.after)(after, limit)],
            )?;
            let Some(last) = batch.last() else {
                return Ok(ControlFlow::Continue(()));
            };
            after = (batches.id)(last);
            let ids: Vec<Uuid> = batch.iter().map(&batches.id).collect();
            let existing: HashSet<Uuid> = target
                .load_now(Scope::maintenance_read(), vec![(batches.existing)(&ids)])?
                .into_iter()
                .collect();
            copy(batch, &ids, existing, report)?;
            report.progress.scanned += ids.len() as u64;
            if progress(&report.progress).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }

    /// Reads a batch back from the target: rows written now must be what was
    /// written, rows skipped must equal the source's, and every one must decrypt.
    fn check_copied(
        &self,
        target: &Database,
        ids: &[Uuid],
        skipped: &HashSet<Uuid>,
        mut expected: HashMap<Uuid, Expected>,
        models: Vec<UserCredential>,
        report: &mut CopyReport,
    ) -> Result<()> {
        // Every column besides the ciphertexts (type, nickname, is_active,
        // expires_at, owner, times): a skipped row as the source holds it now, a
        // written one as it was read.
        let mut source: HashMap<Uuid, UserCredential> =
            models.into_iter().map(|c| (c.id, c)).collect();
        if !skipped.is_empty() {
            let skipped: Vec<Uuid> = skipped.iter().copied().collect();
            let now = self.db.load_now(
                Scope::maintenance_read(),
                vec![operator::credentials_by_ids(&skipped)],
            )?;
            for id in &skipped {
                source.remove(id);
            }
            source.extend(now.into_iter().map(|c| (c.id, c)));
        }
        let target_models = target.load_now(
            Scope::maintenance_read(),
            vec![operator::credentials_by_ids(ids)],
        )?;
        let differ: HashSet<Uuid> = differing(source, target_models, |c: &UserCredential| c.id)
            .into_iter()
            .collect();
        if !skipped.is_empty() {
            // A skipped row is compared with the source as it is now.
            let skipped: Vec<Uuid> = skipped.iter().copied().collect();
            let source = self.db.load_now(
                Scope::maintenance_read(),
                vec![operator::ciphertexts_by_ids(&skipped)],
            )?;
            expected.extend(source.into_iter().map(|row| {
                let row = StoredRow::from(row);
                (row.id, (row.account_id, row.api_key, row.secret_key))
            }));
        }
        let stored = target.load_now(
            Scope::maintenance_read(),
            vec![operator::ciphertexts_by_ids(ids)],
        )?;
        let mut same = Vec::with_capacity(stored.len());
        for row in stored.into_iter().map(StoredRow::from) {
            match expected.remove(&row.id) {
                Some((account_id, api_key, secret_key))
                    if !differ.contains(&row.id)
                        && account_id == row.account_id
                        && api_key == row.api_key
                        && secret_key == row.secret_key =>
                {
                    same.push(row)
                }
                _ => report.mismatched.push(row.id),
            }
        }
        // Rows the source had that the target does not (deleted meanwhile).
        let mut missing: Vec<Uuid> = expected.into_keys().collect();
        missing.sort();
        report.mismatched.extend(missing);
        let data_keys = self.data_keys(target, &same)?;
        report.progress.verified +=
            check_rows(&self.keys, &data_keys, &same, &mut report.unreadable);
        Ok(())
    }
}
