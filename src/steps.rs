//! The steps of each operation that need no database: validating what is written
//! and the requests that seal its keys, the checks before keys are revealed and the
//! requests that open them, single-match rules, error classification and
//! key-rotation planning. The stores and the maintenance type call these around the
//! statements they execute (the stores around their key provider's calls too), so
//! each rule exists once.

use crate::crypto::{
    Binding, CipherFormat, CredentialKeys, Keyring, OpenRequest, Origin, SealRequest,
};
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

/// What a write stores once its keys are sealed: the values (their ciphertext
/// columns empty), and the requests that seal those columns, in the order they are
/// filled. The core hands all of `requests` to the key provider in one call.
pub(crate) struct ToSeal<'a, T> {
    pub requests: Vec<SealRequest<'a>>,
    unsealed: T,
}

/// Validated credentials with their new ids, to insert under `account` once their
/// keys are sealed. Nothing is returned (and so nothing sealed or written) unless
/// every credential passes.
pub(crate) fn new_credentials<'a>(
    account: &'a UserAccount,
    new: &'a [NewUserCredential<'_>],
) -> Result<ToSeal<'a, Vec<CredentialRow>>> {
    let now = SqlTime(now());
    let mut requests = Vec::with_capacity(2 * new.len());
    let rows = new
        .iter()
        .map(|new| {
            let credential_type = CredentialType::parse(new.credential_type)?;
            let nickname = validation::insert_nickname(new.nickname, &credential_type)?;
            validation::secret(Field::ApiKey, new.api_key.expose_secret())?;
            validation::secret(Field::SecretKey, new.secret_key.expose_secret())?;
            let id = Uuid::now_v7();
            for (field, key) in [
                (Field::ApiKey, &new.api_key),
                (Field::SecretKey, &new.secret_key),
            ] {
                let bound = binding(id, account.id, &account.user_id, field);
                requests.push(SealRequest::new(key, bound));
            }
            Ok(CredentialRow {
                id: SqlUuid(id),
                user_account_id: SqlUuid(account.id),
                user_id: account.user_id.clone(),
                credential_type: credential_type.as_str().to_owned(),
                nickname: Some(nickname.as_str().to_owned()),
                api_key: String::new(),
                secret_key: String::new(),
                is_active: new.is_active,
                expires_at: new.expires_at.map(|at| SqlTime(to_stored_precision(at))),
                created_at: now,
                updated_at: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ToSeal {
        requests,
        unsealed: rows,
    })
}

impl ToSeal<'_, Vec<CredentialRow>> {
    /// The rows with their keys' ciphertexts (one per request, in request order), in
    /// multi-row INSERTs of at most [`INSERT_CHUNK_ROWS`].
    pub(crate) fn into_chunks(self, sealed: Vec<String>) -> Vec<Vec<CredentialRow>> {
        let mut rows = self.unsealed;
        let slots = rows
            .iter_mut()
            .flat_map(|row| [&mut row.api_key, &mut row.secret_key]);
        for (slot, ciphertext) in slots.zip(sealed) {
            *slot = ciphertext;
        }
        let mut chunks = Vec::with_capacity(rows.len().div_ceil(INSERT_CHUNK_ROWS));
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            chunks.push(rows.by_ref().take(INSERT_CHUNK_ROWS).collect());
        }
        chunks
    }
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

/// The columns an update sets, validated, and the requests that seal its new keys
/// (the API key's first).
pub(crate) fn credential_changes<'a>(
    account: &'a UserAccount,
    credential_id: Uuid,
    update: &'a CredentialUpdate,
) -> Result<ToSeal<'a, CredentialChanges>> {
    // `None` keeps, `Some(None)` stores NULL.
    let nickname = match &update.nickname {
        Patch::Keep => None,
        Patch::Set(text) => Some(Some(Nickname::parse(text)?.as_str().to_owned())),
        Patch::Clear => Some(None),
    };
    let mut requests = Vec::with_capacity(2);
    // An empty ciphertext where a new key goes, filled once it is sealed.
    let mut seal = |field, key: &'a Option<SecretString>| -> Result<Option<String>> {
        key.as_ref()
            .map(|key| {
                validation::secret(field, key.expose_secret())?;
                let bound = binding(credential_id, account.id, &account.user_id, field);
                requests.push(SealRequest::new(key, bound));
                Ok(String::new())
            })
            .transpose()
    };
    let changes = CredentialChanges {
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
    };
    Ok(ToSeal {
        requests,
        unsealed: changes,
    })
}

impl ToSeal<'_, CredentialChanges> {
    /// The changes with the new keys' ciphertexts (one per request, in request order).
    pub(crate) fn into_changes(self, sealed: Vec<String>) -> CredentialChanges {
        let mut changes = self.unsealed;
        let slots = [&mut changes.api_key, &mut changes.secret_key]
            .into_iter()
            .flatten();
        for (slot, ciphertext) in slots.zip(sealed) {
            *slot = ciphertext;
        }
        changes
    }
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

/// A stored credential whose keys may be revealed, with its ciphertexts.
pub(crate) struct Revealable {
    pub credential: UserCredential,
    api_key: LossyText,
    secret_key: LossyText,
}

impl Revealable {
    /// The requests that open its keys, API key first, each bound to its row and
    /// field.
    pub(crate) fn open_requests(&self) -> [OpenRequest<'_>; 2] {
        let credential = &self.credential;
        [
            (&self.api_key, Field::ApiKey),
            (&self.secret_key, Field::SecretKey),
        ]
        .map(|(text, field)| {
            let bound = binding(
                credential.id,
                credential.user_account_id,
                &credential.user_id,
                field,
            );
            OpenRequest::new(&text.0, bound)
        })
    }
}

/// The checks before a credential's keys are revealed: refused when it is missing,
/// inactive or expired, or its account is inactive, before anything is decrypted.
pub(crate) fn revealable(
    account: &UserAccount,
    credential_id: Uuid,
    found: Option<(UserCredential, bool, LossyText, LossyText)>,
) -> Result<Revealable> {
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
    Ok(Revealable {
        credential,
        api_key,
        secret_key,
    })
}

/// The keys of a stored credential, decrypted with the keyring at once: the checks
/// of [`revealable`], then both keys opened, each bound to its row and field. For
/// the benchmarks' baselines ([`internals::reveal`](crate::internals::reveal)); the
/// stores open through their key provider.
pub(crate) fn reveal(
    keyring: &Keyring,
    account: &UserAccount,
    credential_id: Uuid,
    found: Option<(UserCredential, bool, LossyText, LossyText)>,
) -> Result<CredentialKeys> {
    let revealable = revealable(account, credential_id, found)?;
    let [api_key, secret_key] = revealable
        .open_requests()
        .map(|request| keyring.decrypt(request.ciphertext(), request.binding()));
    Ok(CredentialKeys::new(api_key?, secret_key?))
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
