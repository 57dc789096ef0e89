//! Rows the existing system wrote outside today's rules: found, reported and
//! normalised.

use super::Maintenance;
use crate::backend::Scope;
use crate::error::{Field, Result};
use crate::ops::{record_rows, span};
use crate::{query, validation};
use serde::Serialize;
use uuid::Uuid;

/// One value of a stored credential that today's rules refuse. Carries no value,
/// only where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LegacyValue {
    /// The credential.
    pub credential_id: Uuid,
    /// `credential_type` or `nickname`.
    pub field: &'static str,
    /// The rule the stored value breaks.
    pub rule: String,
    /// Whether [`normalize_legacy_rows`](Maintenance::normalize_legacy_rows) fixes it
    /// by itself; `false` is a conflict someone has to decide.
    pub fixable: bool,
}

/// What a legacy-row check or normalisation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LegacyReport {
    /// Credentials looked at.
    pub scanned: u64,
    /// Every non-conforming value, conflicts first.
    pub values: Vec<LegacyValue>,
    /// Values normalised by this run.
    pub normalized: u64,
}

impl LegacyReport {
    /// The values no rule can normalise: someone has to decide.
    pub fn conflicts(&self) -> impl Iterator<Item = &LegacyValue> {
        self.values.iter().filter(|value| !value.fixable)
    }
}

/// A value to normalise, as read.
struct Fix {
    credential_id: Uuid,
    field: Field,
    old: String,
    new: String,
}

impl Maintenance {
    /// Reports the credentials whose type or nickname breaks today's rules (written
    /// by the existing system: `Alpaca_Paper`, `" Swing "`, a nickname in NFD), by
    /// id, field and rule, conflicts first. Reads the whole table, `batch_size` rows
    /// at a time; changes nothing. Lookups find such rows by the value the existing
    /// system used either way. On PostgreSQL this needs a role that bypasses
    /// row-level security.
    pub fn legacy_rows(&self, batch_size: usize) -> Result<LegacyReport> {
        span("legacy_rows", self.db.backend(), None).in_scope(|| {
            let (report, _) = self.scan_legacy(batch_size)?;
            record_rows(report.values.len());
            Ok(report)
        })
    }

    /// Normalises what [`legacy_rows`](Self::legacy_rows) reports as fixable: types
    /// trimmed and lower-cased, nicknames trimmed and NFC-normalised, blank nicknames
    /// set to the type. Conflicts are reported and left as they are. Each batch of
    /// `batch_size` changes is one short transaction, and a value is replaced only
    /// where it is still the one read, so the run can be stopped at any point and
    /// run again; a second run changes nothing.
    pub fn normalize_legacy_rows(&self, batch_size: usize) -> Result<LegacyReport> {
        span("normalize_legacy_rows", self.db.backend(), None).in_scope(|| {
            let (mut report, fixes) = self.scan_legacy(batch_size)?;
            let limit = validation::batch_size(batch_size)? as usize;
            for batch in fixes.chunks(limit) {
                let (types, nicknames): (Vec<&Fix>, Vec<&Fix>) = batch
                    .iter()
                    .partition(|fix| fix.field == Field::CredentialType);
                let types = types
                    .into_iter()
                    .map(|fix| {
                        query::replace_credential_type(fix.credential_id, &fix.old, fix.new.clone())
                    })
                    .collect();
                let nicknames = nicknames
                    .into_iter()
                    .map(|fix| {
                        query::replace_nickname(fix.credential_id, &fix.old, fix.new.clone())
                    })
                    .collect();
                report.normalized += self.db.execute_now(Scope::maintenance(), types)? as u64;
                report.normalized += self.db.execute_now(Scope::maintenance(), nicknames)? as u64;
            }
            record_rows(report.normalized as usize);
            Ok(report)
        })
    }

    /// Reads every credential's labels and finds what breaks today's rules.
    fn scan_legacy(&self, batch_size: usize) -> Result<(LegacyReport, Vec<Fix>)> {
        let limit = validation::batch_size(batch_size)?;
        self.require_rls_bypass("legacy_rows")?;
        let mut report = LegacyReport::default();
        let mut fixes = Vec::new();
        let mut after = Uuid::nil();
        loop {
            let rows = self.db.load_now(
                Scope::maintenance_read(),
                vec![query::labels_batch(after, limit)],
            )?;
            let Some((last, _, _)) = rows.last() else {
                break;
            };
            after = *last;
            report.scanned += rows.len() as u64;
            for (credential_id, credential_type, nickname) in rows {
                let nickname = nickname.map(|n| n.0);
                for finding in super::rows::legacy_findings(&credential_type.0, nickname.as_deref())
                {
                    report.values.push(LegacyValue {
                        credential_id,
                        field: finding.field.as_str(),
                        rule: finding.rule,
                        fixable: finding.normalized.is_some(),
                    });
                    if let Some(new) = finding.normalized {
                        let old = match finding.field {
                            Field::CredentialType => credential_type.0.clone(),
                            _ => nickname.clone().unwrap_or_default(),
                        };
                        fixes.push(Fix {
                            credential_id,
                            field: finding.field,
                            old,
                            new,
                        });
                    }
                }
            }
        }
        report.values.sort_by_key(|value| value.fixable);
        Ok((report, fixes))
    }
}
