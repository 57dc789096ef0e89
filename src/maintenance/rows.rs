//! The steps without I/O that only maintenance takes: reading stored ciphertexts,
//! planning a rotation, counting key usage, and judging legacy values.

use super::KeyUsage;
use crate::crypto::{Binding, CipherFormat, Keyring, Origin};
use crate::error::{Error, Field, Result};
use crate::sql_types::LossyText;
use crate::validation::{CredentialType, Nickname};
use secrecy::SecretString;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A credential's ciphertexts, as maintenance reads them.
pub(crate) struct StoredRow {
    pub id: Uuid,
    pub account_id: Uuid,
    /// The row's `user_id`, which the sealed format (from version 2) binds.
    pub user_id: String,
    pub api_key: String,
    pub secret_key: String,
}

impl From<(Uuid, Uuid, LossyText, LossyText, LossyText)> for StoredRow {
    fn from(
        (id, account_id, user_id, api_key, secret_key): (
            Uuid,
            Uuid,
            LossyText,
            LossyText,
            LossyText,
        ),
    ) -> Self {
        StoredRow {
            id,
            account_id,
            user_id: user_id.0,
            api_key: api_key.0,
            secret_key: secret_key.0,
        }
    }
}

/// What one batch of a key rotation rewrites, and what it cannot read.
pub(crate) struct RotationPlan<'a> {
    /// The row as read, and its new `(api_key, secret_key)` ciphertexts.
    pub rewrites: Vec<(&'a StoredRow, (String, String))>,
    /// One [`Error::UnknownKey`] or [`Error::Decryption`] per unreadable field.
    pub failures: Vec<Error>,
}

/// Decrypts both fields of a stored credential, each bound to its row and field:
/// `(api_key, secret_key)`.
pub(crate) fn open_stored(
    keyring: &Keyring,
    row: &StoredRow,
) -> (Result<SecretString>, Result<SecretString>) {
    let bound = |field| Binding::new(row.id, row.account_id, &row.user_id, field);
    (
        keyring.decrypt(&row.api_key, &bound(Field::ApiKey)),
        keyring.decrypt(&row.secret_key, &bound(Field::SecretKey)),
    )
}

/// Plans the rotation of one batch: every row is decrypted, even one already
/// current, so a ciphertext that does not open is reported, never passed over.
pub(crate) fn plan_rotation<'a>(
    keyring: &Keyring,
    format: CipherFormat,
    batch: &'a [StoredRow],
) -> RotationPlan<'a> {
    let mut plan = RotationPlan {
        rewrites: Vec::new(),
        failures: Vec::new(),
    };
    for row in batch {
        let bound = |field| Binding::new(row.id, row.account_id, &row.user_id, field);
        match open_stored(keyring, row) {
            (Ok(api_key), Ok(secret_key)) => {
                let current = |text: &str| keyring.is_current(format, text);
                if !(current(&row.api_key) && current(&row.secret_key)) {
                    let seal =
                        |key: &SecretString, field| keyring.encrypt(format, key, &bound(field));
                    plan.rewrites.push((
                        row,
                        (
                            seal(&api_key, Field::ApiKey),
                            seal(&secret_key, Field::SecretKey),
                        ),
                    ));
                }
            }
            (api_key, secret_key) => plan
                .failures
                .extend(api_key.err().into_iter().chain(secret_key.err())),
        }
    }
    plan
}

/// Credentials per (format, sealed version, key id), as [`count_key_usage`] adds
/// them up.
pub(crate) type UsageCounts = BTreeMap<(CipherFormat, Option<u8>, Option<String>), u64>;

/// Adds one batch to the key-usage counts: a credential counts once per key that
/// protects one of its fields.
pub(crate) fn count_key_usage(keyring: &Keyring, batch: &[StoredRow], counts: &mut UsageCounts) {
    for row in batch {
        let [api_key, secret_key] =
            [&row.api_key, &row.secret_key].map(|text| match keyring.origin(text) {
                Origin::Sealed { version, key_id } => {
                    (CipherFormat::Sealed, Some(version.number()), Some(key_id))
                }
                Origin::Fernet { key } => (
                    CipherFormat::Fernet,
                    None,
                    key.map(|k| keyring.key_id(k).to_owned()),
                ),
                Origin::Unreadable => (CipherFormat::Sealed, None, None),
            });
        if secret_key != api_key {
            *counts.entry(secret_key).or_default() += 1;
        }
        *counts.entry(api_key).or_default() += 1;
    }
}

/// The key-usage report from the counts.
pub(crate) fn key_usage_report(keyring: &Keyring, counts: UsageCounts) -> Vec<KeyUsage> {
    counts
        .into_iter()
        .map(|((format, version, key_id), credentials)| KeyUsage {
            in_keyring: key_id
                .as_deref()
                .is_some_and(|id| keyring.key_ids().any(|k| k == id)),
            format,
            version,
            key_id,
            credentials,
        })
        .collect()
}

/// What the legacy-row check finds wrong with one value, and what it would become.
pub(crate) struct LegacyFinding {
    pub field: Field,
    /// The rule the stored value breaks.
    pub rule: String,
    /// The conforming value it normalises to, when that needs no decision.
    pub normalized: Option<String>,
}

/// The values of one credential that today's rules refuse: a type outside
/// `[a-z0-9_.-]` (normalised by trimming and lower-casing when that makes it valid),
/// a nickname untrimmed or not in NFC (normalised as on insert), a blank nickname
/// (becomes the type, as on insert). A value no such step makes valid has no
/// normalised form: someone has to decide.
pub(crate) fn legacy_findings(credential_type: &str, nickname: Option<&str>) -> Vec<LegacyFinding> {
    let mut findings = Vec::new();
    let conforming_type = match CredentialType::parse(credential_type) {
        Ok(valid) => Some(valid.as_str().to_owned()),
        Err(err) => {
            let normalized = CredentialType::parse(&credential_type.trim().to_lowercase())
                .ok()
                .map(|t| t.as_str().to_owned());
            findings.push(LegacyFinding {
                field: Field::CredentialType,
                rule: rule_of(&err),
                normalized: normalized.clone(),
            });
            normalized
        }
    };
    if let Some(nickname) = nickname {
        match Nickname::parse(nickname) {
            Ok(valid) if valid.as_str() == nickname => {}
            Ok(valid) => findings.push(LegacyFinding {
                field: Field::Nickname,
                rule: "must be trimmed and in Unicode NFC".into(),
                normalized: Some(valid.as_str().to_owned()),
            }),
            Err(
                err @ Error::Invalid {
                    rule: crate::error::Rule::Empty,
                    ..
                },
            ) => findings.push(LegacyFinding {
                field: Field::Nickname,
                rule: rule_of(&err),
                normalized: conforming_type,
            }),
            Err(err) => findings.push(LegacyFinding {
                field: Field::Nickname,
                rule: rule_of(&err),
                normalized: None,
            }),
        }
    }
    findings
}

fn rule_of(err: &Error) -> String {
    match err {
        Error::Invalid { rule, .. } => rule.to_string(),
        other => other.to_string(),
    }
}
