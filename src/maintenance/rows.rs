//! The steps without I/O that only maintenance takes: reading stored ciphertexts,
//! planning a rotation, counting key usage, and judging legacy values.

use super::KeyUsage;
use crate::crypto::{
    AccountKey, Binding, CipherFormat, KeyHierarchy, Keyring, OpenRequest, Origin, SealRequest,
    StoredDataKey,
};
use crate::error::{Error, Field, Result};
use crate::sql_types::LossyText;
use crate::validation::{CredentialType, Nickname};
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// A credential's ciphertexts, as maintenance reads them.
#[derive(Clone)]
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

/// The unwrapped data keys of each account of a batch: its current key first,
/// then its retired ones.
pub(crate) type AccountKeys = HashMap<Uuid, Vec<AccountKey>>;

/// Decrypts both fields of a stored credential, each bound to its row and field,
/// with its account's data keys if it has them: `(api_key, secret_key)`.
pub(crate) fn open_stored(
    keys: &KeyHierarchy,
    data_keys: &AccountKeys,
    row: &StoredRow,
) -> (Result<SecretString>, Result<SecretString>) {
    let data_keys = data_keys
        .get(&row.account_id)
        .map_or(&[][..], Vec::as_slice);
    let open = |ciphertext: &str, field| {
        let binding = Binding::new(row.id, row.account_id, &row.user_id, field);
        keys.open(
            data_keys,
            &OpenRequest {
                ciphertext,
                binding,
            },
        )
    };
    (
        open(&row.api_key, Field::ApiKey),
        open(&row.secret_key, Field::SecretKey),
    )
}

/// Plans the rotation of one batch: every row is decrypted (in any format: `keys`
/// reads them all), even one already current, so a ciphertext that does not open
/// is reported, never passed over. A row is rewritten unless both fields are in
/// `format` already: sealed v3 under its account's data key (which `data_keys`
/// holds for every account of the batch when `format` is sealed), or Fernet
/// under the keyring's primary key.
pub(crate) fn plan_rotation<'a>(
    keys: &KeyHierarchy,
    format: CipherFormat,
    data_keys: &AccountKeys,
    batch: &'a [StoredRow],
) -> RotationPlan<'a> {
    let mut plan = RotationPlan {
        rewrites: Vec::new(),
        failures: Vec::new(),
    };
    for row in batch {
        // The account's current data key: what rows are sealed under.
        let data_key = data_keys.get(&row.account_id).and_then(|keys| keys.first());
        match open_stored(keys, data_keys, row) {
            (Ok(api_key), Ok(secret_key)) => {
                let version = data_key.map_or(0, |(_, version)| *version);
                let current = |text: &str| keys.keyring.is_current(format, version, text);
                if current(&row.api_key) && current(&row.secret_key) {
                    continue;
                }
                let bound = |field| Binding::new(row.id, row.account_id, &row.user_id, field);
                let requests = [
                    SealRequest {
                        plaintext: &api_key,
                        binding: bound(Field::ApiKey),
                    },
                    SealRequest {
                        plaintext: &secret_key,
                        binding: bound(Field::SecretKey),
                    },
                ];
                match keys
                    .seal(format, data_key, &requests)
                    .map(<[String; 2]>::try_from)
                {
                    Ok(Ok([api_key, secret_key])) => {
                        plan.rewrites.push((row, (api_key, secret_key)))
                    }
                    Ok(Err(_)) => {}
                    Err(err) => plan.failures.push(err),
                }
            }
            (api_key, secret_key) => plan
                .failures
                .extend(api_key.err().into_iter().chain(secret_key.err())),
        }
    }
    plan
}

/// Adds the formats of a batch's fields to `counts`, by format name.
pub(crate) fn count_formats(batch: &[StoredRow], counts: &mut BTreeMap<String, u64>) {
    for text in batch.iter().flat_map(|row| [&row.api_key, &row.secret_key]) {
        let name = crate::FormatVersion::of(text).map_or("unknown", |f| f.as_str());
        *counts.entry(name.to_owned()).or_default() += 1;
    }
}

/// Credentials per (format, sealed version, key holder, key id), as
/// [`count_key_usage`] adds them up.
pub(crate) type UsageCounts =
    BTreeMap<(CipherFormat, Option<u8>, Option<String>, Option<String>), u64>;

/// Adds one batch to the key-usage counts: a credential counts once per key that
/// protects one of its fields (for sealed v3, the KEK of its account's data key).
pub(crate) fn count_key_usage(
    keyring: &Keyring,
    data_keys: &HashMap<Uuid, StoredDataKey>,
    batch: &[StoredRow],
    counts: &mut UsageCounts,
) {
    for row in batch {
        let keyring_key = |key_id: Option<String>| {
            let holder = key_id
                .as_ref()
                .map(|_| crate::crypto::KEYRING_PROVIDER.to_owned());
            (holder, key_id)
        };
        let [api_key, secret_key] =
            [&row.api_key, &row.secret_key].map(|text| match keyring.origin(text) {
                Origin::Sealed { version, key_id } => {
                    let (holder, key_id) = keyring_key(Some(key_id));
                    (CipherFormat::Sealed, Some(version.number()), holder, key_id)
                }
                Origin::DataKey { .. } => {
                    let stored = data_keys.get(&row.account_id);
                    (
                        CipherFormat::Sealed,
                        Some(3),
                        stored.map(|stored| stored.provider.clone()),
                        stored.map(|stored| stored.kek_id.clone()),
                    )
                }
                Origin::Fernet { key } => {
                    let (holder, key_id) = keyring_key(key.map(|k| keyring.key_id(k).to_owned()));
                    (CipherFormat::Fernet, None, holder, key_id)
                }
                Origin::Unreadable => (CipherFormat::Sealed, None, None, None),
            });
        if secret_key != api_key {
            *counts.entry(secret_key).or_default() += 1;
        }
        *counts.entry(api_key).or_default() += 1;
    }
}

/// The key-usage report from the counts: a key is held when it is in the keyring,
/// or is the configured provider's current KEK.
pub(crate) fn key_usage_report(keys: &KeyHierarchy, counts: UsageCounts) -> Vec<KeyUsage> {
    let keyring = &keys.keyring;
    let held = |provider: &str, key_id: &str| {
        if provider == crate::crypto::KEYRING_PROVIDER {
            keyring.key_ids().any(|k| k == key_id)
        } else {
            provider == keys.provider.name() && key_id == keys.provider.key_id()
        }
    };
    counts
        .into_iter()
        .map(
            |((format, version, provider, key_id), credentials)| KeyUsage {
                in_keyring: provider
                    .as_deref()
                    .zip(key_id.as_deref())
                    .is_some_and(|(provider, key_id)| held(provider, key_id)),
                format,
                version,
                key_id,
                provider,
                credentials,
            },
        )
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
