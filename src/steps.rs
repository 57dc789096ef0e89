//! The steps of each operation that need no database: validating and encrypting
//! what is written, the checks before keys are revealed, single-match rules, error
//! classification and key-rotation planning. The stores and the maintenance type
//! call these around the statements they execute, so each rule exists once.

use crate::crypto::{Binding, CipherFormat, CredentialKeys, Keyring, Origin};
use crate::error::{Error, Field, Result};
use crate::maintenance::KeyUsage;
use crate::models::{
    AccountRow, CredentialChanges, CredentialRow, CredentialUpdate, NewUserAccount,
    NewUserCredential, Patch, UserAccount, UserCredential,
};
use crate::sql_types::{to_stored_precision, LossyText, SqlTime, SqlUuid};
use crate::validation::{self, CredentialType, Nickname};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Rows per multi-row INSERT: 11 bound values each, far under SQLite's 32766 and
/// PostgreSQL's 65535 bind limits.
pub(crate) const INSERT_CHUNK_ROWS: usize = 1000;

/// The current time at the precision the databases keep.
pub(crate) fn now() -> DateTime<Utc> {
    to_stored_precision(Utc::now())
}

/// The first row of a result, if any.
pub(crate) fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// A validated new account, ready to insert.
pub(crate) fn account_row(new: &NewUserAccount<'_>) -> Result<AccountRow> {
    let user_id = validation::user_id(new.user_id)?;
    let account_name = validation::account_name(new.account_name)?;
    let now = SqlTime(now());
    Ok(AccountRow {
        id: SqlUuid(Uuid::now_v7()),
        user_id: user_id.to_owned(),
        account_name,
        is_active: true,
        created_at: now,
        updated_at: now,
    })
}

/// The account an insert returned, or why there is none: a unique violation on
/// `user_id` is [`Error::AccountExists`], a foreign-key violation (a user the
/// database's own user table lacks) [`Error::UnknownUser`].
pub(crate) fn created_account(
    user_id: &str,
    inserted: Result<Vec<UserAccount>>,
) -> Result<UserAccount> {
    match inserted {
        Ok(rows) => first(rows).ok_or_else(|| Error::AccountExists {
            user_id: user_id.to_owned(),
        }),
        Err(err) if crate::backend::is_unique_violation(&err) => Err(Error::AccountExists {
            user_id: user_id.to_owned(),
        }),
        // An adopted database may tie `user_accounts.user_id` to the existing
        // system's own user table.
        Err(err) if crate::backend::is_owner_violation(&err) => Err(Error::UnknownUser {
            user_id: user_id.to_owned(),
        }),
        Err(err) => Err(err),
    }
}

/// Where a field of a credential belongs.
fn binding(credential_id: Uuid, account_id: Uuid, user_id: &str, field: Field) -> Binding<'_> {
    Binding {
        credential_id,
        account_id,
        user_id,
        field,
    }
}

/// Validated, encrypted credentials, ready to insert under `account`, in
/// multi-row INSERTs of at most [`INSERT_CHUNK_ROWS`]. Nothing is returned (and so
/// nothing written) unless every credential passes.
pub(crate) fn credential_rows(
    keyring: &Keyring,
    format: CipherFormat,
    account: &UserAccount,
    new: &[NewUserCredential<'_>],
) -> Result<Vec<Vec<CredentialRow>>> {
    let now = SqlTime(now());
    let rows = new
        .iter()
        .map(|new| {
            let credential_type = CredentialType::parse(new.credential_type)?;
            let nickname = validation::insert_nickname(new.nickname, &credential_type)?;
            validation::secret(Field::ApiKey, new.api_key.expose_secret())?;
            validation::secret(Field::SecretKey, new.secret_key.expose_secret())?;
            let id = Uuid::now_v7();
            let seal = |field, key: &SecretString| {
                keyring.encrypt(
                    format,
                    key,
                    &binding(id, account.id, &account.user_id, field),
                )
            };
            Ok(CredentialRow {
                id: SqlUuid(id),
                user_account_id: SqlUuid(account.id),
                user_id: account.user_id.clone(),
                credential_type: credential_type.as_str().to_owned(),
                nickname: Some(nickname.as_str().to_owned()),
                api_key: seal(Field::ApiKey, &new.api_key),
                secret_key: seal(Field::SecretKey, &new.secret_key),
                is_active: new.is_active,
                expires_at: new.expires_at.map(|at| SqlTime(to_stored_precision(at))),
                created_at: now,
                updated_at: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(INSERT_CHUNK_ROWS));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        chunks.push(rows.by_ref().take(INSERT_CHUNK_ROWS).collect());
    }
    Ok(chunks)
}

/// The one row of a one-row insert, or the chunks as they are.
pub(crate) fn single_row(
    mut chunks: Vec<Vec<CredentialRow>>,
) -> std::result::Result<CredentialRow, Vec<Vec<CredentialRow>>> {
    match chunks.as_mut_slice() {
        [chunk] if chunk.len() == 1 => chunk.pop().ok_or(chunks),
        _ => Err(chunks),
    }
}

/// Why an insert under `account` met the owner check, from the account's owner as
/// the caller's role sees it; `err` when the owner is the account's user after all.
pub(crate) fn owner_error(account: &UserAccount, owner: Option<String>, err: Error) -> Error {
    match owner {
        None => Error::UnknownAccount {
            account_id: account.id,
        },
        Some(owner) if owner != account.user_id => Error::AccountUserMismatch {
            account_id: account.id,
            user_id: account.user_id.clone(),
        },
        Some(_) => err,
    }
}

/// The columns an update sets, validated and with new keys encrypted.
pub(crate) fn credential_changes(
    keyring: &Keyring,
    format: CipherFormat,
    account: &UserAccount,
    credential_id: Uuid,
    update: &CredentialUpdate,
) -> Result<CredentialChanges> {
    // `None` keeps, `Some(None)` stores NULL.
    let nickname = match &update.nickname {
        Patch::Keep => None,
        Patch::Set(text) => Some(Some(Nickname::parse(text)?.as_str().to_owned())),
        Patch::Clear => Some(None),
    };
    let seal = |field, key: &Option<SecretString>| -> Result<Option<String>> {
        key.as_ref()
            .map(|key| {
                validation::secret(field, key.expose_secret())?;
                Ok(keyring.encrypt(
                    format,
                    key,
                    &binding(credential_id, account.id, &account.user_id, field),
                ))
            })
            .transpose()
    };
    Ok(CredentialChanges {
        nickname,
        api_key: seal(Field::ApiKey, &update.api_key)?,
        secret_key: seal(Field::SecretKey, &update.secret_key)?,
        is_active: update.is_active,
        expires_at: update
            .expires_at
            .clone()
            .map(|at| SqlTime(to_stored_precision(at)))
            .into_change(),
        updated_at: SqlTime(now()),
    })
}

/// The error for a credential the account does not have.
pub(crate) fn not_found(account: &UserAccount, credential_id: Uuid) -> Error {
    Error::CredentialNotFound {
        account_id: account.id,
        credential_id,
    }
}

/// The one credential of a single-match lookup: never one of several. `ambiguous`
/// makes the error from the number of matches.
pub(crate) fn single_match<T>(
    found: Vec<T>,
    ambiguous: impl FnOnce(usize) -> Error,
) -> Result<Option<T>> {
    match found.len() {
        0 | 1 => Ok(first(found)),
        matches => Err(ambiguous(matches)),
    }
}

/// The keys of a stored credential: refused when it is missing, inactive or expired,
/// or its account is inactive (checked before anything is decrypted), decrypted with its row and field bound.
pub(crate) fn reveal(
    keyring: &Keyring,
    account: &UserAccount,
    credential_id: Uuid,
    found: Option<(UserCredential, bool, LossyText, LossyText)>,
) -> Result<CredentialKeys> {
    let (credential, account_active, api_key, secret_key) =
        found.ok_or_else(|| not_found(account, credential_id))?;
    if !account_active {
        return Err(Error::AccountInactive {
            account_id: account.id,
        });
    }
    if !credential.is_active {
        return Err(Error::CredentialInactive { credential_id });
    }
    if let Some(expired_at) = credential.expires_at.filter(|at| *at <= Utc::now()) {
        return Err(Error::CredentialExpired {
            credential_id,
            expired_at,
        });
    }
    let open = |text: &LossyText, field| {
        keyring.decrypt(
            &text.0,
            &binding(
                credential.id,
                credential.user_account_id,
                &credential.user_id,
                field,
            ),
        )
    };
    Ok(CredentialKeys::new(
        open(&api_key, Field::ApiKey)?,
        open(&secret_key, Field::SecretKey)?,
    ))
}

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
    let bound = |field| binding(row.id, row.account_id, &row.user_id, field);
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
        let bound = |field| binding(row.id, row.account_id, &row.user_id, field);
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
