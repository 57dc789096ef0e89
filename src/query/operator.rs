//! The statements of the operator commands (status, verify, copy): whole-table
//! counts and batches walked by id, across all accounts.
//!
//! Built like the rest of [`query`](super): each function returns a query value that
//! owns its parameters and runs on every executor, parameters always bound.

use crate::backend::{Execute, Load};
use crate::models::{account_columns, credential_columns, AccountRow, UserAccount, UserCredential};
use crate::schema::{user_accounts, user_credentials};
use crate::sql_types::{LossyText, SqlUuid};
use diesel::dsl::count_star;
use diesel::prelude::*;
use uuid::Uuid;

/// How many accounts there are.
pub(crate) fn count_accounts() -> impl Load<i64> {
    user_accounts::table.select(count_star())
}

/// How many retired data keys are stored.
pub(crate) fn count_retired_keys() -> impl Load<i64> {
    crate::schema::retired_account_keys::table.select(count_star())
}

/// How many credentials have no nickname (NULL).
pub(crate) fn count_null_nicknames() -> impl Load<i64> {
    user_credentials::table
        .filter(user_credentials::nickname.is_null())
        .select(count_star())
}

/// The next `limit` accounts after `after`, by id.
pub(crate) fn accounts_after(after: Uuid, limit: i64) -> impl Load<UserAccount> {
    user_accounts::table
        .filter(user_accounts::id.gt(SqlUuid(after)))
        .order(user_accounts::id)
        .select(account_columns())
        .limit(limit)
}

/// The next `limit` credentials after `after`, by id, whole: the read model and its
/// two ciphertexts as stored.
pub(crate) fn credentials_after(
    after: Uuid,
    limit: i64,
) -> impl Load<(UserCredential, LossyText, LossyText)> {
    user_credentials::table
        .filter(user_credentials::id.gt(SqlUuid(after)))
        .order(user_credentials::id)
        .select((
            credential_columns(),
            user_credentials::api_key,
            user_credentials::secret_key,
        ))
        .limit(limit)
}

/// These accounts, whole (a copy compares every column with the source's).
pub(crate) fn accounts_by_ids(ids: &[Uuid]) -> impl Load<UserAccount> {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    user_accounts::table
        .filter(user_accounts::id.eq_any(ids))
        .select(account_columns())
}

/// These credentials' read models, whole (a copy compares every column with the
/// source's).
pub(crate) fn credentials_by_ids(ids: &[Uuid]) -> impl Load<UserCredential> {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    user_credentials::table
        .filter(user_credentials::id.eq_any(ids))
        .select(credential_columns())
}

/// Which of these account ids exist.
pub(crate) fn existing_account_ids(ids: &[Uuid]) -> impl Load<Uuid> {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    user_accounts::table
        .filter(user_accounts::id.eq_any(ids))
        .select(user_accounts::id)
}

/// Which of these credential ids exist.
pub(crate) fn existing_credential_ids(ids: &[Uuid]) -> impl Load<Uuid> {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    user_credentials::table
        .filter(user_credentials::id.eq_any(ids))
        .select(user_credentials::id)
}

/// The ids, account ids, user ids and ciphertexts of the credentials with these ids.
pub(crate) fn ciphertexts_by_ids(
    ids: &[Uuid],
) -> impl Load<(Uuid, Uuid, LossyText, LossyText, LossyText)> {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    user_credentials::table
        .filter(user_credentials::id.eq_any(ids))
        .order(user_credentials::id)
        .select(super::ciphertext_columns())
}

/// Inserts accounts as they are, ids and times included (one multi-row `INSERT`).
pub(crate) fn insert_accounts(rows: Vec<AccountRow>) -> impl Execute {
    diesel::insert_into(user_accounts::table).values(rows)
}
