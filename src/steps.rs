//! The steps of each operation that need no database: validating what is written
//! and the requests that seal its keys, the checks before keys are revealed and the
//! requests that open them, single-match rules, error classification and
//! key-rotation planning. The stores and the maintenance type call these around the
//! statements they execute (the stores around their key provider's calls too), so
//! each rule exists once.

use crate::crypto::{Binding, CredentialKeys, OpenRequest, SealRequest, StoredDataKey};
use crate::error::{Error, Field, Result};
use crate::models::{
    AccountRow, AccountScope, CredentialChanges, CredentialRow, CredentialUpdate, NewUserAccount,
    NewUserCredential, Patch, UserAccount, UserCredential,
};
use crate::query::WithCiphertexts;
use crate::sql_types::{to_stored_precision, LossyText, SqlTime, SqlUuid};
use crate::validation::{self, CredentialType, Nickname};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
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
        Err(err) if err.is_unique_violation() => Err(Error::AccountExists {
            user_id: user_id.to_owned(),
        }),
        // An adopted database may tie `user_accounts.user_id` to the existing
        // system's own user table.
        Err(err) if err.is_owner_violation() => Err(Error::UnknownUser {
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
    /// Per new credential, whether its id is the caller's (inserts only).
    caller_chosen: Vec<bool>,
}

/// Validated credentials with their new ids, to insert under `account` once their
/// keys are sealed. Nothing is returned (and so nothing sealed or written) unless
/// every credential passes.
pub(crate) fn new_credentials<'a>(
    account: &'a AccountScope,
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
            let id = new.id().unwrap_or_else(Uuid::now_v7);
            for (field, key) in [
                (Field::ApiKey, &new.api_key),
                (Field::SecretKey, &new.secret_key),
            ] {
                let bound = binding(id, account.id, &account.user_id, field);
                requests.push(SealRequest {
                    plaintext: key,
                    binding: bound,
                });
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
        caller_chosen: new.iter().map(|new| new.id().is_some()).collect(),
    })
}

/// What an insert stores of one credential besides its keys, to recognise it when a
/// caller-chosen id is already taken.
pub(crate) struct ExpectedCredential {
    pub id: Uuid,
    /// The id came from the caller ([`NewUserCredential::with_id`]).
    pub caller_chosen: bool,
    credential_type: String,
    nickname: Option<String>,
    is_active: bool,
    expires_at: Option<DateTime<Utc>>,
}

impl ExpectedCredential {
    /// Whether `stored` holds what this insert would have stored (keys aside).
    pub(crate) fn matches(&self, stored: &UserCredential) -> bool {
        stored.credential_type == self.credential_type
            && stored.nickname == self.nickname
            && stored.is_active == self.is_active
            && stored.expires_at == self.expires_at
    }
}

/// Whether `keys` are the keys `new` would store.
pub(crate) fn same_keys(new: &NewUserCredential<'_>, keys: &CredentialKeys) -> bool {
    use subtle_eq as eq;
    eq(new.api_key.expose_secret(), keys.api_key().expose_secret())
        & eq(
            new.secret_key.expose_secret(),
            keys.secret_key().expose_secret(),
        )
}

/// Compares two secrets without stopping at the first differing byte.
fn subtle_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl ToSeal<'_, Vec<CredentialRow>> {
    /// What each credential would store besides its keys, in order.
    pub(crate) fn expected(&self) -> Vec<ExpectedCredential> {
        self.unsealed
            .iter()
            .zip(&self.caller_chosen)
            .map(|(row, caller_chosen)| ExpectedCredential {
                id: row.id.0,
                caller_chosen: *caller_chosen,
                credential_type: row.credential_type.clone(),
                nickname: row.nickname.clone(),
                is_active: row.is_active,
                expires_at: row.expires_at.map(|at| at.0),
            })
            .collect()
    }

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
/// An account that is missing and one that belongs to another user get the same
/// answer, [`Error::UnknownAccount`], on every backend.
pub(crate) fn owner_error(account: &AccountScope, owner: Option<String>, err: Error) -> Error {
    match owner {
        Some(owner) if owner == account.user_id => err,
        // Another user's account is answered as a missing one: a caller who does
        // not own an id learns nothing of whether it exists.
        _ => Error::UnknownAccount {
            account_id: account.id,
        },
    }
}

/// The columns an update sets, validated, and the requests that seal its new keys
/// (the API key's first).
pub(crate) fn credential_changes<'a>(
    account: &'a AccountScope,
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
                requests.push(SealRequest {
                    plaintext: key,
                    binding: bound,
                });
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
        caller_chosen: Vec::new(),
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
pub(crate) fn not_found(account: &AccountScope, credential_id: Uuid) -> Error {
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

/// A stored credential whose keys may be revealed, with its ciphertexts and its
/// account's stored data key.
pub(crate) struct Revealable {
    pub credential: UserCredential,
    api_key: LossyText,
    secret_key: LossyText,
    data_key: Option<(i32, String, String, String)>,
}

impl Revealable {
    /// A stored credential's keys to open, without the checks of [`revealable`]:
    /// for comparing what is stored, never for handing keys out.
    pub(crate) fn stored(found: WithCiphertexts) -> Self {
        let (credential, _, api_key, secret_key, data_key) = found;
        Revealable {
            credential,
            api_key,
            secret_key,
            data_key,
        }
    }

    /// The requests that open its keys, API key first, each bound to its row and
    /// field.
    pub(crate) fn open_requests(&self) -> [OpenRequest<'_>; 2] {
        let credential = &self.credential;
        [
            (&self.api_key, Field::ApiKey),
            (&self.secret_key, Field::SecretKey),
        ]
        .map(|(text, field)| OpenRequest {
            ciphertext: &text.0,
            binding: binding(
                credential.id,
                credential.user_account_id,
                &credential.user_id,
                field,
            ),
        })
    }

    /// Its account's stored data key, if the account has one.
    pub(crate) fn data_key(&self) -> Result<Option<StoredDataKey>> {
        self.data_key
            .clone()
            .map(|columns| StoredDataKey::from_columns(self.credential.user_account_id, columns))
            .transpose()
    }
}

/// The checks before a credential's keys are revealed: refused when it is missing,
/// inactive or expired, or its account is inactive, before anything is decrypted.
pub(crate) fn revealable(
    account: &AccountScope,
    credential_id: Uuid,
    found: Option<WithCiphertexts>,
) -> Result<Revealable> {
    let (credential, account_active, api_key, secret_key, data_key) =
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
        data_key,
    })
}
