//! Every statement the crate sends, built in one place and executed elsewhere.
//!
//! Each function returns a query value that owns its parameters and runs on every
//! executor the build has: the blocking PostgreSQL, SQLite and MariaDB/MySQL
//! connections and, with the `async` feature, the pipelined async PostgreSQL
//! connection. The stores and
//! the maintenance type only execute these values. Parameters are always bound,
//! never spliced into SQL.
//!
//! A write that hands back its rows is a [`Written`]: `RETURNING` where the backend
//! has it, the write and a read of its rows by id on MySQL.
//!
//! Lookups by a unique key (an id, a user id) are loaded whole rather than with
//! `first`: `first` binds `LIMIT ?`, which measured 2.5 to 4 times slower on SQLite
//! (see BENCHMARKS.md).

pub(crate) mod operator;

use crate::backend::{Execute, Load, LoadReturning, LoadWritten, MysqlExecute, MysqlLoad};
use crate::models::{
    account_columns, credential_columns, AccountColumns, AccountRow, AccountScope,
    CredentialChanges, CredentialColumns, CredentialRow, UserAccount, UserCredential,
};
use crate::schema::{account_keys, retired_account_keys, user_accounts, user_credentials};
use crate::sql_types::{LossyText, SqlUuid};
use diesel::dsl::count_star;
use diesel::prelude::*;
use uuid::Uuid;

/// The credentials of one account of one user: the filter every credential query
/// starts from.
#[diesel::dsl::auto_type]
fn owned_by(account_id: SqlUuid, user_id: String) -> _ {
    user_credentials::table
        .filter(user_credentials::user_account_id.eq(account_id))
        .filter(user_credentials::user_id.eq(user_id))
}

fn owned(account: &AccountScope) -> owned_by {
    owned_by(SqlUuid(account.id), account.user_id.clone())
}

/// One credential of the account.
#[diesel::dsl::auto_type]
fn owned_credential(account_id: SqlUuid, user_id: String, credential_id: SqlUuid) -> _ {
    let base: owned_by = owned_by(account_id, user_id);
    base.filter(user_credentials::id.eq(credential_id))
}

fn one_owned(account: &AccountScope, credential_id: Uuid) -> owned_credential {
    owned_credential(
        SqlUuid(account.id),
        account.user_id.clone(),
        SqlUuid(credential_id),
    )
}

/// Newest first, with the id breaking ties.
#[diesel::dsl::auto_type]
fn newest_first() -> _ {
    (
        user_credentials::created_at.desc(),
        user_credentials::id.desc(),
    )
}

/// A write whose rows come back as stored: the write, the columns `RETURNING`
/// gives back, the read of the same rows for a backend without `RETURNING`
/// (MySQL), and the ids of the rows written, in order. The one place where the
/// backends' ways of returning written rows meet
/// (each backend's `BackendConnection::load_written` runs it).
pub(crate) struct Written<W, C, R> {
    write: W,
    columns: C,
    read_back: R,
    ids: Vec<Uuid>,
}

/// A write that `RETURNING` can be added to.
pub(crate) trait AddReturning<C> {
    /// The write with `RETURNING columns`.
    type Out;
    /// Adds `RETURNING columns`.
    fn add_returning(self, columns: C) -> Self::Out;
}

impl<T: diesel::query_source::QuerySource, U, Op, C> AddReturning<C>
    for diesel::query_builder::InsertStatement<T, U, Op>
where
    diesel::dsl::Returning<Self, C>: diesel::query_builder::Query,
{
    type Out = diesel::dsl::Returning<Self, C>;
    fn add_returning(self, columns: C) -> Self::Out {
        self.returning(columns)
    }
}

impl<T: Table, U, V, C> AddReturning<C> for diesel::query_builder::UpdateStatement<T, U, V>
where
    diesel::dsl::Returning<Self, C>: diesel::query_builder::Query,
{
    type Out = diesel::dsl::Returning<Self, C>;
    fn add_returning(self, columns: C) -> Self::Out {
        self.returning(columns)
    }
}

impl<W, C, R, T> LoadWritten<T> for Written<W, C, R>
where
    W: AddReturning<C> + MysqlExecute + Send + 'static,
    W::Out: LoadReturning<T>,
    C: Send + 'static,
    R: MysqlLoad<T> + Send + 'static,
{
    type Returning = W::Out;
    type Write = W;
    type ReadBack = R;
    fn returning(self) -> W::Out {
        self.write.add_returning(self.columns)
    }
    fn without_returning(self) -> (W, R, Vec<Uuid>) {
        (self.write, self.read_back, self.ids)
    }
}

/// Inserts an account and returns it as stored.
pub(crate) fn insert_account(row: AccountRow) -> impl LoadWritten<UserAccount> {
    let columns: AccountColumns = account_columns();
    Written {
        ids: vec![row.id.0],
        read_back: account(&row.user_id, row.id.0),
        write: diesel::insert_into(user_accounts::table).values(row),
        columns,
    }
}

/// The account with this id, if it belongs to `user_id`.
pub(crate) fn account(user_id: &str, account_id: Uuid) -> impl Load<UserAccount> {
    user_accounts::table
        .filter(user_accounts::id.eq(SqlUuid(account_id)))
        .filter(user_accounts::user_id.eq(user_id.to_owned()))
        .select(account_columns())
}

/// The account of an external user.
pub(crate) fn account_by_user_id(user_id: &str) -> impl Load<UserAccount> {
    user_accounts::table
        .filter(user_accounts::user_id.eq(user_id.to_owned()))
        .select(account_columns())
}

/// The user an account belongs to, as the caller's role can see it.
pub(crate) fn account_owner(account_id: Uuid) -> impl Load<String> {
    user_accounts::table
        .filter(user_accounts::id.eq(SqlUuid(account_id)))
        .select(user_accounts::user_id)
}

/// Inserts credentials (one multi-row `INSERT`) and returns them as stored.
pub(crate) fn insert_credentials(rows: Vec<CredentialRow>) -> impl LoadWritten<UserCredential> {
    let columns: CredentialColumns = credential_columns();
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id.0).collect();
    Written {
        read_back: credentials_by_id(&ids),
        ids,
        write: diesel::insert_into(user_credentials::table).values(rows),
        columns,
    }
}

/// Inserts one credential and returns it as stored: unlike a multi-row INSERT, a
/// statement of one shape, which the connections cache.
pub(crate) fn insert_credential(row: CredentialRow) -> impl LoadWritten<UserCredential> {
    let columns: CredentialColumns = credential_columns();
    Written {
        // `id = ?`, a statement of one shape that the connection caches (an `IN`
        // list is prepared anew on every call).
        read_back: user_credentials::table
            .filter(user_credentials::id.eq(row.id))
            .select(credential_columns()),
        ids: vec![row.id.0],
        write: diesel::insert_into(user_credentials::table).values(row),
        columns,
    }
}

/// The credentials with these ids (what a write without `RETURNING` reads back).
fn credentials_by_id(ids: &[Uuid]) -> impl Load<UserCredential> {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    user_credentials::table
        .filter(user_credentials::id.eq_any(ids))
        .select(credential_columns())
}

/// One credential of the account.
pub(crate) fn credential(account: &AccountScope, credential_id: Uuid) -> impl Load<UserCredential> {
    one_owned(account, credential_id).select(credential_columns())
}

/// A credential with what revealing its keys needs: whether its account is
/// active, its two ciphertexts, and its account's stored data key (`version`,
/// `provider`, `kek_id`, `wrapped_key`) if it has one.
pub(crate) type WithCiphertexts = (
    UserCredential,
    bool,
    LossyText,
    LossyText,
    Option<(i32, String, String, String)>,
);

/// A stored data key's `(version, provider, kek_id, wrapped_key)`.
pub(crate) type DataKeyColumns = (i32, String, String, String);

/// A retired data key's columns, as [`data_key_columns`] gives a current one's.
#[diesel::dsl::auto_type]
fn retired_key_columns() -> _ {
    (
        retired_account_keys::version,
        retired_account_keys::provider,
        retired_account_keys::kek_id,
        retired_account_keys::wrapped_key,
    )
}

/// The stored data key's columns, as a credential lookup joins them.
#[diesel::dsl::auto_type]
fn data_key_columns() -> _ {
    (
        account_keys::version,
        account_keys::provider,
        account_keys::kek_id,
        account_keys::wrapped_key,
    )
}

/// What a reveal selects besides the credential's columns.
#[diesel::dsl::auto_type]
fn reveal_columns() -> _ {
    let data_key: data_key_columns = data_key_columns();
    let credential: CredentialColumns = credential_columns();
    (
        credential,
        user_accounts::is_active,
        user_credentials::api_key,
        user_credentials::secret_key,
        data_key.nullable(),
    )
}

/// The account's data key, joined to a credential by its account.
#[diesel::dsl::auto_type]
fn data_key_of_account() -> _ {
    account_keys::table.on(account_keys::account_id.eq(user_credentials::user_account_id))
}

/// One credential of the account with its two ciphertexts, whether its account
/// is active and its account's data key: a reveal in one statement.
pub(crate) fn credential_with_ciphertexts(
    account: &AccountScope,
    credential_id: Uuid,
) -> impl Load<WithCiphertexts> {
    one_owned(account, credential_id)
        .inner_join(user_accounts::table)
        .left_join(data_key_of_account())
        .select(reveal_columns())
}

/// All credentials of the account, newest first.
pub(crate) fn credentials(account: &AccountScope) -> impl Load<UserCredential> {
    owned(account)
        .order(newest_first())
        .select(credential_columns())
}

/// The account's credentials of one type, newest first.
pub(crate) fn credentials_by_type(
    account: &AccountScope,
    credential_type: &str,
) -> impl Load<UserCredential> {
    owned(account)
        .filter(user_credentials::credential_type.eq(credential_type.to_owned()))
        .order(newest_first())
        .select(credential_columns())
}

/// The account's credentials whose nickname is `nickname` or `exact` (the
/// lookup's input as given, for legacy rows).
#[diesel::dsl::auto_type]
fn nickname_matches(account_id: SqlUuid, user_id: String, nickname: String, exact: String) -> _ {
    let base: owned_by = owned_by(account_id, user_id);
    base.filter(
        user_credentials::nickname
            .eq(nickname)
            .or(user_credentials::nickname.eq(exact)),
    )
}

fn with_nickname(account: &AccountScope, nickname: &str, exact: &str) -> nickname_matches {
    nickname_matches(
        SqlUuid(account.id),
        account.user_id.clone(),
        nickname.to_owned(),
        exact.to_owned(),
    )
}

/// The account's credentials whose nickname is `nickname` or `exact` (the
/// lookup's input as given, for legacy rows), newest first.
pub(crate) fn credentials_by_nickname(
    account: &AccountScope,
    nickname: &str,
    exact: &str,
) -> impl Load<UserCredential> {
    with_nickname(account, nickname, exact)
        .order(newest_first())
        .select(credential_columns())
}

/// The same, with each credential's ciphertexts, whether its account is active and
/// its account's data key: a decrypted lookup in one statement.
pub(crate) fn credentials_by_nickname_with_ciphertexts(
    account: &AccountScope,
    nickname: &str,
    exact: &str,
) -> impl Load<WithCiphertexts> {
    with_nickname(account, nickname, exact)
        .inner_join(user_accounts::table)
        .left_join(data_key_of_account())
        .order(newest_first())
        .select(reveal_columns())
}

/// The account's stored data key: `(version, provider, kek_id, wrapped_key)`.
pub(crate) fn account_key(account: &AccountScope) -> impl Load<(i32, String, String, String)> {
    account_keys::table
        .filter(account_keys::account_id.eq(SqlUuid(account.id)))
        .filter(account_keys::user_id.eq(account.user_id.clone()))
        .select(data_key_columns())
}

/// Stores an account's first data key (a unique violation: another call stored
/// one first).
pub(crate) fn insert_account_key(
    account: &AccountScope,
    stored: &crate::crypto::StoredDataKey,
) -> impl Execute {
    let now = crate::sql_types::SqlTime(crate::steps::now());
    diesel::insert_into(account_keys::table).values((
        account_keys::account_id.eq(SqlUuid(account.id)),
        account_keys::user_id.eq(account.user_id.clone()),
        account_keys::version.eq(stored.version as i32),
        account_keys::provider.eq(stored.provider.clone()),
        account_keys::kek_id.eq(stored.kek_id.clone()),
        account_keys::wrapped_key.eq(stored.wrapped.clone()),
        account_keys::created_at.eq(now),
        account_keys::updated_at.eq(now),
    ))
}

/// Deletes an account of the user: its credentials and its data key go with it
/// (the foreign keys' `ON DELETE CASCADE`), in the same statement.
pub(crate) fn delete_account(account: &AccountScope) -> impl Execute {
    diesel::delete(
        user_accounts::table
            .filter(user_accounts::id.eq(SqlUuid(account.id)))
            .filter(user_accounts::user_id.eq(account.user_id.clone())),
    )
}

/// The next `limit` stored data keys after account `after`, by account id, across
/// all accounts: `(account_id, user_id, (version, provider, kek_id, wrapped_key))`.
pub(crate) fn account_keys_batch(
    after: Uuid,
    limit: i64,
) -> impl Load<(Uuid, LossyText, (i32, String, String, String))> {
    account_keys::table
        .filter(account_keys::account_id.gt(SqlUuid(after)))
        .order(account_keys::account_id)
        .select((
            account_keys::account_id,
            account_keys::user_id,
            data_key_columns(),
        ))
        .limit(limit)
}

/// The stored data keys of these accounts:
/// `(account_id, (version, provider, kek_id, wrapped_key))`.
pub(crate) fn account_keys_of(
    account_ids: &[Uuid],
) -> impl Load<(Uuid, (i32, String, String, String))> {
    let ids: Vec<SqlUuid> = account_ids.iter().copied().map(SqlUuid).collect();
    account_keys::table
        .filter(account_keys::account_id.eq_any(ids))
        .select((account_keys::account_id, data_key_columns()))
}

/// One of the account's retired data keys: `(version, provider, kek_id,
/// wrapped_key)`.
pub(crate) fn retired_account_key(
    account_id: Uuid,
    user_id: &str,
    version: u32,
) -> impl Load<(i32, String, String, String)> {
    retired_account_keys::table
        .filter(retired_account_keys::account_id.eq(SqlUuid(account_id)))
        .filter(retired_account_keys::user_id.eq(user_id.to_owned()))
        .filter(retired_account_keys::version.eq(version as i32))
        .select(retired_key_columns())
}

/// The retired data keys of these accounts:
/// `(account_id, (version, provider, kek_id, wrapped_key))`.
pub(crate) fn retired_keys_of(
    account_ids: &[Uuid],
) -> impl Load<(Uuid, (i32, String, String, String))> {
    let ids: Vec<SqlUuid> = account_ids.iter().copied().map(SqlUuid).collect();
    retired_account_keys::table
        .filter(retired_account_keys::account_id.eq_any(ids))
        .select((retired_account_keys::account_id, retired_key_columns()))
}

/// The next `limit` stored data keys made before `made_before`, after account
/// `after`, by account id: those a data-key rotation replaces.
pub(crate) fn account_keys_made_before(
    after: Uuid,
    made_before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> impl Load<(Uuid, LossyText, (i32, String, String, String))> {
    account_keys::table
        .filter(account_keys::account_id.gt(SqlUuid(after)))
        .filter(account_keys::created_at.lt(crate::sql_types::SqlTime(made_before)))
        .order(account_keys::account_id)
        .select((
            account_keys::account_id,
            account_keys::user_id,
            data_key_columns(),
        ))
        .limit(limit)
}

/// Replaces an account's data key with a new one, only where the stored key is
/// still `old` (a concurrent rotation or re-wrap wins).
pub(crate) fn replace_data_key(
    account_id: Uuid,
    old: &crate::crypto::StoredDataKey,
    new: &crate::crypto::StoredDataKey,
) -> impl Execute {
    let now = crate::sql_types::SqlTime(crate::steps::now());
    diesel::update(
        account_keys::table
            .filter(account_keys::account_id.eq(SqlUuid(account_id)))
            .filter(account_keys::version.eq(old.version as i32))
            .filter(account_keys::wrapped_key.eq(old.wrapped.clone())),
    )
    .set((
        account_keys::version.eq(new.version as i32),
        account_keys::provider.eq(new.provider.clone()),
        account_keys::kek_id.eq(new.kek_id.clone()),
        account_keys::wrapped_key.eq(new.wrapped.clone()),
        account_keys::created_at.eq(now),
        account_keys::updated_at.eq(now),
    ))
}

/// Keeps a replaced data key as retired.
pub(crate) fn retire_data_key(
    account_id: Uuid,
    user_id: &str,
    old: &crate::crypto::StoredDataKey,
) -> impl Execute {
    diesel::insert_into(retired_account_keys::table).values((
        retired_account_keys::account_id.eq(SqlUuid(account_id)),
        retired_account_keys::user_id.eq(user_id.to_owned()),
        retired_account_keys::version.eq(old.version as i32),
        retired_account_keys::provider.eq(old.provider.clone()),
        retired_account_keys::kek_id.eq(old.kek_id.clone()),
        retired_account_keys::wrapped_key.eq(old.wrapped.clone()),
        retired_account_keys::retired_at.eq(crate::sql_types::SqlTime(crate::steps::now())),
    ))
}

/// The next `limit` retired data keys retired before `cutoff`, after `(account,
/// version)`: `(account_id, version)`.
pub(crate) fn retired_keys_before(
    (after_account, after_version): (Uuid, i32),
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> impl Load<(Uuid, i32)> {
    retired_account_keys::table
        .filter(
            retired_account_keys::account_id
                .gt(SqlUuid(after_account))
                .or(retired_account_keys::account_id
                    .eq(SqlUuid(after_account))
                    .and(retired_account_keys::version.gt(after_version))),
        )
        .filter(retired_account_keys::retired_at.lt(crate::sql_types::SqlTime(cutoff)))
        .order((
            retired_account_keys::account_id,
            retired_account_keys::version,
        ))
        .select((
            retired_account_keys::account_id,
            retired_account_keys::version,
        ))
        .limit(limit)
}

/// Deletes a retired data key, only where no credential of its account holds a
/// ciphertext sealed under it.
pub(crate) fn delete_unused_retired_key(account_id: Uuid, version: i32) -> impl Execute {
    let sealed_under = format!("sealed:v3:{version}:%");
    diesel::delete(
        retired_account_keys::table
            .filter(retired_account_keys::account_id.eq(SqlUuid(account_id)))
            .filter(retired_account_keys::version.eq(version))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                user_credentials::table
                    .filter(user_credentials::user_account_id.eq(SqlUuid(account_id)))
                    .filter(
                        user_credentials::api_key
                            .like(sealed_under.clone())
                            .or(user_credentials::secret_key.like(sealed_under)),
                    ),
            ))),
    )
}

/// Replaces an account's wrapped data key, only where it is still the one read
/// (the same data key, wrapped by another KEK).
pub(crate) fn replace_wrapped_key(
    account_id: Uuid,
    old_wrapped: &str,
    new: &crate::crypto::StoredDataKey,
) -> impl Execute {
    diesel::update(
        account_keys::table
            .filter(account_keys::account_id.eq(SqlUuid(account_id)))
            .filter(account_keys::wrapped_key.eq(old_wrapped.to_owned())),
    )
    .set((
        account_keys::provider.eq(new.provider.clone()),
        account_keys::kek_id.eq(new.kek_id.clone()),
        account_keys::wrapped_key.eq(new.wrapped.clone()),
        account_keys::updated_at.eq(crate::sql_types::SqlTime(crate::steps::now())),
    ))
}

/// Changes one credential of the account and returns it as stored (no row: not
/// the account's).
pub(crate) fn update_credential(
    account: &AccountScope,
    credential_id: Uuid,
    changes: CredentialChanges,
) -> impl LoadWritten<UserCredential> {
    let columns: CredentialColumns = credential_columns();
    Written {
        write: diesel::update(one_owned(account, credential_id)).set(changes),
        columns,
        read_back: credential(account, credential_id),
        ids: vec![credential_id],
    }
}

/// Deletes one credential of the account.
pub(crate) fn delete_credential(account: &AccountScope, credential_id: Uuid) -> impl Execute {
    diesel::delete(one_owned(account, credential_id))
}

/// The next `limit` ids of credentials without a nickname after `after`, by id.
pub(crate) fn null_nickname_ids(after: Uuid, limit: i64) -> impl Load<Uuid> {
    user_credentials::table
        .filter(user_credentials::nickname.is_null())
        .filter(user_credentials::id.gt(SqlUuid(after)))
        .order(user_credentials::id)
        .select(user_credentials::id)
        .limit(limit)
}

/// Sets `nickname = credential_type` on these credentials where it is still NULL
/// (a nickname set since they were read wins).
pub(crate) fn backfill_nicknames(ids: &[Uuid]) -> impl Execute {
    let ids: Vec<SqlUuid> = ids.iter().copied().map(SqlUuid).collect();
    diesel::update(
        user_credentials::table
            .filter(user_credentials::id.eq_any(ids))
            .filter(user_credentials::nickname.is_null()),
    )
    .set(user_credentials::nickname.eq(user_credentials::credential_type.nullable()))
}

/// How many credentials there are, across all accounts.
pub(crate) fn count_credentials() -> impl Load<i64> {
    user_credentials::table.select(count_star())
}

/// What a ciphertext is bound to, and the ciphertexts: id, account id, user id,
/// `api_key`, `secret_key`.
#[diesel::dsl::auto_type]
pub(crate) fn ciphertext_columns() -> _ {
    (
        user_credentials::id,
        user_credentials::user_account_id,
        user_credentials::user_id,
        user_credentials::api_key,
        user_credentials::secret_key,
    )
}

/// The next `limit` credentials' ids, account ids, user ids and ciphertexts after
/// `after`, by id, across all accounts.
pub(crate) fn ciphertext_batch(
    after: Uuid,
    limit: i64,
) -> impl Load<(Uuid, Uuid, LossyText, LossyText, LossyText)> {
    user_credentials::table
        .filter(user_credentials::id.gt(SqlUuid(after)))
        .order(user_credentials::id)
        .select(ciphertext_columns())
        .limit(limit)
}

/// Replaces a credential's ciphertexts, only where they are still the ones read
/// (a concurrent update wins).
pub(crate) fn replace_ciphertexts(
    id: Uuid,
    (old_api_key, old_secret_key): (&str, &str),
    (api_key, secret_key): (String, String),
) -> impl Execute {
    diesel::update(
        user_credentials::table
            .filter(user_credentials::id.eq(SqlUuid(id)))
            .filter(user_credentials::api_key.eq(old_api_key.to_owned()))
            .filter(user_credentials::secret_key.eq(old_secret_key.to_owned())),
    )
    .set((
        user_credentials::api_key.eq(api_key),
        user_credentials::secret_key.eq(secret_key),
    ))
}

/// The next `limit` credentials' ids, types and nicknames after `after`, by id,
/// across all accounts: what the legacy-row check reads.
pub(crate) fn labels_batch(
    after: Uuid,
    limit: i64,
) -> impl Load<(Uuid, LossyText, Option<LossyText>)> {
    user_credentials::table
        .filter(user_credentials::id.gt(SqlUuid(after)))
        .order(user_credentials::id)
        .select((
            user_credentials::id,
            user_credentials::credential_type,
            user_credentials::nickname,
        ))
        .limit(limit)
}

/// Replaces a credential's type, only where it is still the one read.
pub(crate) fn replace_credential_type(id: Uuid, old: &str, new: String) -> impl Execute {
    diesel::update(
        user_credentials::table
            .filter(user_credentials::id.eq(SqlUuid(id)))
            .filter(user_credentials::credential_type.eq(old.to_owned())),
    )
    .set(user_credentials::credential_type.eq(new))
}

/// Replaces a credential's nickname, only where it is still the one read.
pub(crate) fn replace_nickname(id: Uuid, old: &str, new: String) -> impl Execute {
    diesel::update(
        user_credentials::table
            .filter(user_credentials::id.eq(SqlUuid(id)))
            .filter(user_credentials::nickname.eq(old.to_owned())),
    )
    .set(user_credentials::nickname.eq(new))
}

/// How many credentials carry a nickname other than their type: what reverting the
/// nickname migration would drop.
pub(crate) fn count_renamed_nicknames() -> impl Load<i64> {
    user_credentials::table
        .filter(user_credentials::nickname.is_not_null())
        .filter(user_credentials::nickname.ne(user_credentials::credential_type.nullable()))
        .select(count_star())
}

/// A credential's ciphertexts to replace: its id, the `(api_key, secret_key)` read,
/// and the new pair.
pub(crate) type CiphertextRewrite = (Uuid, (String, String), (String, String));

/// PostgreSQL: a whole batch of ciphertext replacements in one `UPDATE … FROM
/// unnest(…)`, each row only where it still holds the ciphertexts that were read.
#[cfg(feature = "postgres")]
pub(crate) fn replace_ciphertexts_in_one(
    rewrites: Vec<CiphertextRewrite>,
) -> diesel::query_builder::BoxedSqlQuery<'static, diesel::pg::Pg, diesel::query_builder::SqlQuery>
{
    use diesel::sql_types::{Array, Text};
    let mut ids = Vec::with_capacity(rewrites.len());
    let (mut old_api, mut old_secret, mut api, mut secret) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, (old_api_key, old_secret_key), (api_key, secret_key)) in rewrites {
        ids.push(id);
        old_api.push(old_api_key);
        old_secret.push(old_secret_key);
        api.push(api_key);
        secret.push(secret_key);
    }
    diesel::sql_query(
        "UPDATE user_credentials AS c \
         SET api_key = n.api_key, secret_key = n.secret_key \
         FROM unnest($1, $2, $3, $4, $5) AS n(id, old_api_key, old_secret_key, api_key, secret_key) \
         WHERE c.id = n.id AND c.api_key = n.old_api_key AND c.secret_key = n.old_secret_key",
    )
    .into_boxed()
    .bind::<Array<crate::sql_types::DbUuid>, _>(ids)
    .bind::<Array<Text>, _>(old_api)
    .bind::<Array<Text>, _>(old_secret)
    .bind::<Array<Text>, _>(api)
    .bind::<Array<Text>, _>(secret)
}

/// The `(account, credential_type)` pairs that hold more than one credential: what
/// the old unique index would refuse.
pub(crate) fn shared_type_pairs() -> impl Load<(Uuid, String)> {
    user_credentials::table
        .group_by((
            user_credentials::user_account_id,
            user_credentials::credential_type,
        ))
        .having(count_star().gt(1))
        .select((
            user_credentials::user_account_id,
            user_credentials::credential_type,
        ))
}
