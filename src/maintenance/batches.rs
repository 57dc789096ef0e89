//! The batched runs behind [`backfill_nicknames`](Maintenance::backfill_nicknames)
//! and [`rotate_keys`](Maintenance::rotate_keys), with a progress callback that is
//! called after every committed batch and may ask the run to stop there (an
//! operator's Ctrl-C): what is done stays done, and running again finishes the job.

use super::{Maintenance, RotationProgress};
use crate::backend::{on_backend, Conn, Scope};
use crate::error::{Error, Result};
use crate::ops::{record_rows, span};
use crate::steps;
use crate::{query, validation};
use serde::Serialize;
use std::ops::ControlFlow;
use uuid::Uuid;

/// How a batched maintenance run ended, with how far it got.
///
/// Serialized as `{"outcome": "completed" | "stopped", "progress": {…}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "progress")]
pub enum Outcome<P> {
    /// The run went through the whole table.
    Completed(P),
    /// The progress callback asked the run to stop after a batch. Every batch
    /// before the stop is committed; running again finishes the job.
    Stopped(P),
}

impl<P> Outcome<P> {
    /// How far the run got.
    pub fn progress(&self) -> &P {
        match self {
            Outcome::Completed(p) | Outcome::Stopped(p) => p,
        }
    }

    /// How far the run got, by value.
    pub fn into_progress(self) -> P {
        match self {
            Outcome::Completed(p) | Outcome::Stopped(p) => p,
        }
    }

    /// Whether the run went through the whole table.
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed(_))
    }
}

/// How far a [`backfill_nicknames_with`](Maintenance::backfill_nicknames_with) run
/// has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct BackfillProgress {
    /// Credentials without a nickname looked at so far.
    pub scanned: u64,
    /// Credentials without a nickname when the run started.
    pub total: u64,
    /// Credentials given a nickname so far (one set concurrently is left alone).
    pub changed: u64,
}

impl BackfillProgress {
    /// Credentials without a nickname not looked at yet (rows that lose their
    /// nickname during the run may make the last batches go past `total`).
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.scanned)
    }
}

impl Maintenance {
    /// [`backfill_nicknames`](Self::backfill_nicknames), calling `progress` after
    /// every committed batch; when it returns [`ControlFlow::Break`] the run stops
    /// there and returns [`Outcome::Stopped`]. Running again picks up the rows still
    /// without a nickname.
    ///
    /// ```
    /// use credential_store::{Database, Keyring, Maintenance};
    /// use secrecy::ExposeSecret;
    /// use std::ops::ControlFlow;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
    /// db.run_migrations().unwrap();
    /// let keyring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
    /// let outcome = Maintenance::new(db, keyring)
    ///     .backfill_nicknames_with(500, &mut |p| {
    ///         eprintln!("{} of {}", p.scanned, p.total);
    ///         ControlFlow::Continue(())
    ///     })
    ///     .unwrap();
    /// assert!(outcome.is_completed());
    /// assert_eq!(outcome.progress().changed, 0);
    /// ```
    pub fn backfill_nicknames_with(
        &self,
        batch_size: usize,
        progress: &mut dyn FnMut(&BackfillProgress) -> ControlFlow<()>,
    ) -> Result<Outcome<BackfillProgress>> {
        span("backfill_nicknames", self.db.backend(), None).in_scope(|| {
            let limit = validation::batch_size(batch_size)?;
            self.require_rls_bypass("backfill_nicknames")?;
            let total = steps::first(self.db.load_now(
                Scope::maintenance_read(),
                vec![query::operator::count_null_nicknames()],
            )?)
            .unwrap_or(0);
            let mut state = BackfillProgress {
                total: total as u64,
                ..BackfillProgress::default()
            };
            let mut after = Uuid::nil();
            let outcome = loop {
                // Walk the primary key: each batch starts where the last one ended, so
                // the whole run reads the table once however many rows are already done.
                let (scanned, changed, last) = self.backfill_batch(after, limit)?;
                let Some(last) = last else {
                    break Outcome::Completed(state);
                };
                after = last;
                self.db.checkpoint_between_batches()?;
                state.scanned += scanned;
                state.changed += changed;
                if progress(&state).is_break() {
                    break Outcome::Stopped(state);
                }
            };
            record_rows(state.changed as usize);
            Ok(outcome)
        })
    }

    /// One backfill batch in one write transaction: the ids, then the update.
    /// Returns how many ids it read, how many rows it changed and the last id.
    fn backfill_batch(&self, after: Uuid, limit: i64) -> Result<(u64, u64, Option<Uuid>)> {
        self.db.run(Scope::maintenance(), |conn| {
            on_backend!(conn, c => {
                let ids: Vec<Uuid> = diesel::RunQueryDsl::load(query::null_nickname_ids(after, limit), c)?;
                let changed = diesel::RunQueryDsl::execute(query::backfill_nicknames(&ids), c)?;
                Ok((ids.len() as u64, changed as u64, ids.last().copied()))
            })
        })
    }

    /// [`rotate_keys`](Self::rotate_keys), with a `progress` callback that may stop
    /// the run: when it returns [`ControlFlow::Break`] the rotation stops after the
    /// batch just written and returns [`Outcome::Stopped`]. Every row is readable
    /// with the keyring at that point; running again finishes the job.
    ///
    /// A run that completes and met credentials no key opens is
    /// [`Error::RotationIncomplete`]; a stopped run does not report them (the run
    /// that completes does).
    ///
    /// ```
    /// use credential_store::{Database, Keyring, Maintenance};
    /// use secrecy::ExposeSecret;
    /// use std::ops::ControlFlow;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
    /// db.run_migrations().unwrap();
    /// let keyring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
    /// let outcome = Maintenance::new(db, keyring)
    ///     .rotate_keys_with(500, &mut |_| ControlFlow::Break(()))
    ///     .unwrap();
    /// // An empty table: no batch, so nothing to stop.
    /// assert!(outcome.is_completed());
    /// ```
    pub fn rotate_keys_with(
        &self,
        batch_size: usize,
        progress: &mut dyn FnMut(&RotationProgress) -> ControlFlow<()>,
    ) -> Result<Outcome<RotationProgress>> {
        span("rotate_keys", self.db.backend(), None).in_scope(|| {
            let limit = validation::batch_size(batch_size)?;
            self.require_rls_bypass("rotate_keys")?;
            let total = steps::first(
                self.db
                    .load_now(Scope::maintenance_read(), vec![query::count_credentials()])?,
            )
            .unwrap_or(0);
            let mut state = RotationProgress {
                total: total as u64,
                ..RotationProgress::default()
            };
            // Rotation reads every format, whatever the minimum: it is how old
            // rows are converted.
            let mut reader = self.keys.clone();
            reader.minimum = crate::FormatVersion::Fernet;
            let mut failures = Vec::new();
            let mut outcome = self.rewrap_data_keys(limit, &mut state, &mut failures, progress)?;
            if let (Some(made_before), true) = (self.replace_data_keys, outcome.is_completed()) {
                outcome = self.replace_data_keys(limit, made_before, &mut state, progress)?;
            }
            // Accounts whose data key does not unwrap: reported once, their rows
            // left as they are.
            let mut unreadable_accounts: std::collections::HashSet<Uuid> = failures
                .iter()
                .filter_map(|err| match err {
                    Error::DataKeyUnreadable { account_id, .. } => Some(*account_id),
                    _ => None,
                })
                .collect();
            let mut after = Uuid::nil();
            while outcome.is_completed() {
                let Some(batch) = self.stored_batch(after, limit)? else {
                    break;
                };
                after = batch.last().map_or(after, |row| row.id);
                if self.format == crate::CipherFormat::Sealed {
                    self.create_missing_data_keys(&batch)?;
                }
                let (data_keys, unreadable) = self.unwrap_data_keys(&self.db, &batch)?;
                for (account_id, err) in unreadable {
                    if unreadable_accounts.insert(account_id) {
                        failures.push(err);
                    }
                }
                let readable: Vec<super::rows::StoredRow> = batch
                    .iter()
                    .filter(|row| !unreadable_accounts.contains(&row.account_id))
                    .cloned()
                    .collect();
                let plan = super::rows::plan_rotation(&reader, self.format, &data_keys, &readable);
                failures.extend(plan.failures);
                if !plan.rewrites.is_empty() {
                    let rewrites: Vec<query::CiphertextRewrite> = plan
                        .rewrites
                        .into_iter()
                        .map(|(row, new)| {
                            (row.id, (row.api_key.clone(), row.secret_key.clone()), new)
                        })
                        .collect();
                    let written = self.db.run(Scope::maintenance(), |conn| {
                        replace_ciphertexts(conn, rewrites)
                    })?;
                    state.rewritten += written as u64;
                    self.db.checkpoint_between_batches()?;
                }
                state.scanned += batch.len() as u64;
                if progress(&state).is_break() {
                    outcome = Outcome::Stopped(());
                }
            }
            if outcome.is_completed() {
                self.delete_retired_keys(limit, &mut state)?;
            }
            record_rows(state.rewritten as usize);
            if state.rewritten > 0
                || state.data_keys_rewrapped > 0
                || state.data_keys_replaced > 0
                || state.retired_keys_deleted > 0
            {
                // The old ciphertexts and wrapped keys leave the SQLite file (its
                // WAL) now, not at some later auto-checkpoint; also after a stopped
                // run, for what it rewrote.
                self.db.erase_freed()?;
            }
            match outcome {
                Outcome::Stopped(()) => Ok(Outcome::Stopped(state)),
                Outcome::Completed(()) if failures.is_empty() => Ok(Outcome::Completed(state)),
                Outcome::Completed(()) => Err(Error::RotationIncomplete {
                    rewritten: state.rewritten,
                    failures,
                }),
            }
        })
    }
}

impl Maintenance {
    /// Re-wraps every stored data key that another provider or KEK wrapped with
    /// the current one, `limit` accounts per batch: the same data key, so no
    /// credential changes, and each row only where it still holds what was read.
    fn rewrap_data_keys(
        &self,
        limit: i64,
        state: &mut RotationProgress,
        failures: &mut Vec<Error>,
        progress: &mut dyn FnMut(&RotationProgress) -> ControlFlow<()>,
    ) -> Result<Outcome<()>> {
        let mut after = Uuid::nil();
        loop {
            let batch = self.db.load_now(
                Scope::maintenance_read(),
                vec![query::account_keys_batch(after, limit)],
            )?;
            let Some((last, ..)) = batch.last() else {
                return Ok(Outcome::Completed(()));
            };
            after = *last;
            let mut statements = Vec::new();
            for (account_id, user_id, columns) in batch {
                let stored = crate::crypto::StoredDataKey::from_columns(account_id, columns)?;
                if self.keys.is_current(&stored) {
                    continue;
                }
                let rewrapped = match crate::repository::block_on(
                    self.keys.rewrap(account_id, &user_id.0, &stored),
                ) {
                    Ok(rewrapped) => rewrapped,
                    // A data key no configured key opens is reported at the end, as
                    // an unreadable credential is; an unreachable provider stops the
                    // run (running again resumes it).
                    Err(err) if !err.is_retryable() => {
                        failures.push(err);
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                statements.push(query::replace_wrapped_key(
                    account_id,
                    &stored.wrapped,
                    &rewrapped,
                ));
            }
            if statements.is_empty() {
                continue;
            }
            state.data_keys_rewrapped +=
                self.db.execute_now(Scope::maintenance(), statements)? as u64;
            if progress(state).is_break() {
                return Ok(Outcome::Stopped(()));
            }
        }
    }

    /// Gives every account whose data key was made before `made_before` a new one
    /// (the next version), `limit` accounts per batch; each in one short
    /// transaction that replaces the key only where it is still the one read and
    /// keeps the old one as retired. The credentials are re-encrypted by the pass
    /// that follows (they are not sealed under the current key any more).
    fn replace_data_keys(
        &self,
        limit: i64,
        made_before: chrono::DateTime<chrono::Utc>,
        state: &mut RotationProgress,
        progress: &mut dyn FnMut(&RotationProgress) -> ControlFlow<()>,
    ) -> Result<Outcome<()>> {
        use diesel::RunQueryDsl;
        let mut after = Uuid::nil();
        loop {
            let batch = self.db.load_now(
                Scope::maintenance_read(),
                vec![query::account_keys_made_before(after, made_before, limit)],
            )?;
            let Some((last, ..)) = batch.last() else {
                return Ok(Outcome::Completed(()));
            };
            after = *last;
            let mut replacements = Vec::with_capacity(batch.len());
            for (account_id, user_id, columns) in batch {
                let old = crate::crypto::StoredDataKey::from_columns(account_id, columns)?;
                let (key, new) = crate::repository::block_on(self.keys.new_data_key(
                    account_id,
                    &user_id.0,
                    old.version + 1,
                ))?;
                replacements.push((account_id, user_id.0, old, key, new));
            }
            let replaced = self.db.run(Scope::maintenance(), |mut conn| {
                let mut replaced = Vec::new();
                for (account_id, user_id, old, _, new) in &replacements {
                    let changed = on_backend!(conn.reborrow(), c => {
                        let changed = query::replace_data_key(*account_id, old, new).execute(c)?;
                        if changed == 1 {
                            query::retire_data_key(*account_id, user_id, old).execute(c)?;
                        }
                        changed
                    });
                    if changed == 1 {
                        replaced.push(*account_id);
                    }
                }
                Ok(replaced)
            })?;
            // This process seals under the new keys from now on.
            for (account_id, _, _, key, new) in replacements {
                if replaced.contains(&account_id) {
                    self.keys
                        .cache
                        .insert(account_id, new.fingerprint(), std::sync::Arc::new(key));
                }
            }
            state.data_keys_replaced += replaced.len() as u64;
            self.db.checkpoint_between_batches()?;
            if progress(state).is_break() {
                return Ok(Outcome::Stopped(()));
            }
        }
    }

    /// Deletes every retired data key retired longer than the grace period ago
    /// under which no credential is sealed any more, `limit` per statement batch;
    /// each delete checks that in the same statement.
    fn delete_retired_keys(&self, limit: i64, state: &mut RotationProgress) -> Result<()> {
        let grace = chrono::Duration::from_std(self.retired_grace).unwrap_or(chrono::Duration::MAX);
        let cutoff = crate::steps::now()
            .checked_sub_signed(grace)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut after = (Uuid::nil(), 0);
        loop {
            let batch = self.db.load_now(
                Scope::maintenance_read(),
                vec![query::retired_keys_before(after, cutoff, limit)],
            )?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = *last;
            let statements = batch
                .into_iter()
                .map(|(account_id, version)| query::delete_unused_retired_key(account_id, version))
                .collect();
            state.retired_keys_deleted +=
                self.db.execute_now(Scope::maintenance(), statements)? as u64;
        }
    }

    /// Makes and stores a data key for every account of the batch that has none
    /// (accounts from before data keys, or whose rows the existing system wrote).
    fn create_missing_data_keys(&self, batch: &[super::rows::StoredRow]) -> Result<()> {
        let core = crate::ops::Core {
            exec: self.db.clone(),
            keys: self.keys.clone(),
            format: self.format,
        };
        let stored = super::stored_data_keys(&self.db, batch)?;
        let mut seen = std::collections::HashSet::new();
        for row in batch {
            if !stored.contains_key(&row.account_id) && seen.insert(row.account_id) {
                let scope = crate::AccountScope::new(&row.user_id, row.account_id)?;
                crate::repository::block_on(core.write_data_key(&scope))?;
            }
        }
        Ok(())
    }
}

/// Replaces the ciphertexts of a rotation batch in the current transaction and
/// returns how many rows changed: on PostgreSQL one statement for the batch
/// (`query::replace_ciphertexts_in_one`, PostgreSQL's arrays; a round trip per row
/// would dominate), elsewhere one cached UPDATE per row (no network on SQLite, and a
/// multi-row form would not be cached).
fn replace_ciphertexts(
    mut conn: Conn<'_>,
    rewrites: Vec<query::CiphertextRewrite>,
) -> Result<usize> {
    use diesel::RunQueryDsl;
    #[cfg(feature = "postgres")]
    #[allow(irrefutable_let_patterns)] // a build with PostgreSQL alone
    if let Conn::Postgres(c) = &mut conn {
        return Ok(query::replace_ciphertexts_in_one(rewrites).execute(&mut **c)?);
    }
    let mut changed = 0;
    for (id, (old_api_key, old_secret_key), new) in rewrites {
        let statement = query::replace_ciphertexts(id, (&old_api_key, &old_secret_key), new);
        changed += on_backend!(conn.reborrow(), c => statement.execute(c))?;
    }
    Ok(changed)
}
