//! Not part of the public API; for the crate's own benchmarks; may change in any
//! release.
//!
//! The benchmarks compare the stores with baselines that do the same work without
//! the repository: diesel on one connection, and the raw drivers (rusqlite, the
//! `postgres` crate, tokio-postgres). A baseline must run exactly what the crate
//! runs, so it reaches everything here instead of keeping copies that drift:
//!
//! - the crate's own query values, run on a caller's diesel connection
//!   ([`credentials_by_nickname`], [`insert_credentials`], [`set_user_context`], …);
//! - the SQL text of those statements on each backend ([`StatementSql`]), for the
//!   raw drivers;
//! - the crate's sealing and opening of a credential's keys ([`seal`], [`reveal`]);
//! - the SQLite pragmas every connection gets ([`apply_sqlite_pragmas`],
//!   [`sqlite_pragma_sql`]) and SQLite's text forms of times;
//! - the row-level-security setting ([`USER_SETTING`]).
//!
//! Every item calls the crate's single definition: nothing here writes SQL, crypto or
//! pragmas of its own. The crate's statements are opaque query values, so their SQL
//! text is what diesel's instrumentation reports when one runs, binds left out, on a
//! scratch connection and inside a transaction that is rolled back.

use crate::backend::{BackendConnection, Load};
use crate::crypto::{Binding, CipherFormat, CredentialKeys, Keyring};
use crate::error::{Error, Field, Result};
use crate::models::{AccountScope, UserAccount, UserCredential};
use crate::sql_types::{LossyText, SqlTime, SqlUuid};
use crate::{query, steps};
use chrono::{DateTime, Utc};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::QueryResult;
use secrecy::SecretString;
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

mod sealed {
    /// Lends a connection as the crate's statements take it.
    pub trait AsConn {
        fn as_conn(&mut self) -> crate::backend::Conn<'_>;
    }

    impl<C> AsConn for C
    where
        for<'a> crate::backend::Conn<'a>: From<&'a mut C>,
    {
        fn as_conn(&mut self) -> crate::backend::Conn<'_> {
            crate::backend::Conn::from(self)
        }
    }
}

/// A blocking diesel connection of a backend this build has: `PgConnection`,
/// `SqliteConnection` or [`MysqlConnection`].
pub trait DieselConnection: sealed::AsConn + diesel::Connection {}

impl<C: sealed::AsConn + diesel::Connection> DieselConnection for C {}

#[cfg(feature = "mysql")]
pub use crate::backend::MysqlConnection;

fn load<T, Q: Load<T>>(conn: &mut impl DieselConnection, statement: Q) -> QueryResult<Vec<T>> {
    crate::backend::on_backend!(conn.as_conn(), c => diesel::RunQueryDsl::load(statement, c))
}

// ---------------------------------------------------------------------------
// The crate's statements, run on a caller's connection

/// A credential with what `keys` reads besides it: whether its account is
/// active, and its two ciphertexts as stored. `Debug` leaves the ciphertexts and
/// the wrapped data key out.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The credential, as the read model has it.
    pub credential: UserCredential,
    /// Whether the credential's account is active.
    pub account_active: bool,
    /// The `api_key` ciphertext.
    pub api_key: String,
    /// The `secret_key` ciphertext.
    pub secret_key: String,
    /// The account's stored data key: `(version, provider, kek_id, wrapped_key)`.
    pub data_key: Option<(i32, String, String, String)>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = format_args!("[REDACTED]");
        f.debug_struct("StoredCredential")
            .field("credential", &self.credential)
            .field("account_active", &self.account_active)
            .field("api_key", &redacted)
            .field("secret_key", &redacted)
            .field(
                "data_key",
                &self
                    .data_key
                    .as_ref()
                    .map(|(version, provider, kek_id, _)| {
                        (version, provider, kek_id, "[REDACTED]")
                    }),
            )
            .finish()
    }
}

/// A row of the crate's `credential_with_ciphertexts` columns.
fn stored(
    (credential, account_active, api_key, secret_key, data_key): crate::query::WithCiphertexts,
) -> StoredCredential {
    StoredCredential {
        credential,
        account_active,
        api_key: api_key.0,
        secret_key: secret_key.0,
        data_key,
    }
}

/// The statement of `credentials_by_nickname` and `credential_by_nickname`: the account's
/// credentials whose nickname is `nickname` (normalised) or `exact` (the input as
/// given), newest first.
pub fn credentials_by_nickname(
    conn: &mut impl DieselConnection,
    account: &impl AsRef<AccountScope>,
    nickname: &str,
    exact: &str,
) -> QueryResult<Vec<UserCredential>> {
    load(
        conn,
        query::credentials_by_nickname(account.as_ref(), nickname, exact),
    )
}

/// The statement of `keys_by_nickname`: the same credentials with their account's
/// state and their ciphertexts.
pub fn credentials_by_nickname_with_ciphertexts(
    conn: &mut impl DieselConnection,
    account: &impl AsRef<AccountScope>,
    nickname: &str,
    exact: &str,
) -> QueryResult<Vec<StoredCredential>> {
    let rows = load(
        conn,
        query::credentials_by_nickname_with_ciphertexts(account.as_ref(), nickname, exact),
    )?;
    Ok(rows.into_iter().map(stored).collect())
}

/// The statement of `credentials_by_type` and `credential_by_type`: the account's credentials
/// of one type, newest first.
pub fn credentials_by_type(
    conn: &mut impl DieselConnection,
    account: &impl AsRef<AccountScope>,
    credential_type: &str,
) -> QueryResult<Vec<UserCredential>> {
    load(
        conn,
        query::credentials_by_type(account.as_ref(), credential_type),
    )
}

/// The statement of `credentials`: all the account's credentials, newest first.
pub fn credentials(
    conn: &mut impl DieselConnection,
    account: &impl AsRef<AccountScope>,
) -> QueryResult<Vec<UserCredential>> {
    load(conn, query::credentials(account.as_ref()))
}

/// The statement of `keys`: one credential of the account with its
/// account's state and its ciphertexts.
pub fn credential_with_ciphertexts(
    conn: &mut impl DieselConnection,
    account: &impl AsRef<AccountScope>,
    credential_id: Uuid,
) -> QueryResult<Option<StoredCredential>> {
    let rows = load(
        conn,
        query::credential_with_ciphertexts(account.as_ref(), credential_id),
    )?;
    Ok(steps::first(rows).map(stored))
}

/// A credential row as an insert writes it: the crate's row type, with public
/// types. Fields are in the order of the crate's `INSERT` columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertRow {
    /// Primary key (the crate makes UUIDv7s).
    pub id: Uuid,
    /// The owning account.
    pub user_account_id: Uuid,
    /// The owning account's user id.
    pub user_id: String,
    /// The credential type.
    pub credential_type: String,
    /// The nickname.
    pub nickname: Option<String>,
    /// The `api_key` ciphertext.
    pub api_key: String,
    /// The `secret_key` ciphertext.
    pub secret_key: String,
    /// Whether the credential may be used.
    pub is_active: bool,
    /// When the credential stops being usable, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the credential was created.
    pub created_at: DateTime<Utc>,
    /// When the credential last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<InsertRow> for crate::models::CredentialRow {
    fn from(row: InsertRow) -> Self {
        crate::models::CredentialRow {
            id: SqlUuid(row.id),
            user_account_id: SqlUuid(row.user_account_id),
            user_id: row.user_id,
            credential_type: row.credential_type,
            nickname: row.nickname,
            api_key: row.api_key,
            secret_key: row.secret_key,
            is_active: row.is_active,
            expires_at: row.expires_at.map(SqlTime),
            created_at: SqlTime(row.created_at),
            updated_at: SqlTime(row.updated_at),
        }
    }
}

/// The statement of a one-credential `insert_credentials`: one row, returned as
/// stored.
pub fn insert_credential(
    conn: &mut impl DieselConnection,
    row: InsertRow,
) -> QueryResult<Vec<UserCredential>> {
    let statement = query::insert_credential(row.into());
    crate::backend::on_backend!(conn.as_conn(), c => c.load_written(statement))
}

/// The statement of `insert_credentials` for more than one credential: one
/// multi-row `INSERT` (of at most [`INSERT_CHUNK_ROWS`] rows), returned as stored.
pub fn insert_credentials(
    conn: &mut impl DieselConnection,
    rows: Vec<InsertRow>,
) -> QueryResult<Vec<UserCredential>> {
    let statement = query::insert_credentials(rows.into_iter().map(Into::into).collect());
    crate::backend::on_backend!(conn.as_conn(), c => c.load_written(statement))
}

/// The most rows `insert_credentials` puts in one `INSERT`.
pub const INSERT_CHUNK_ROWS: usize = steps::INSERT_CHUNK_ROWS;

/// The PostgreSQL setting the row-level-security policies read.
#[cfg(feature = "postgres")]
pub const USER_SETTING: &str = crate::backend::postgres::USER_SETTING;

/// Runs the statement that makes `user_id` the row-level-security context of the
/// current transaction, as every per-user call of the PostgreSQL stores does first.
#[cfg(feature = "postgres")]
pub fn set_user_context(conn: &mut PgConnection, user_id: &str) -> QueryResult<()> {
    diesel::RunQueryDsl::execute(crate::backend::postgres::user_context(user_id), conn).map(drop)
}

/// An account as a baseline read it, column by column (the read model is built by
/// the store only).
pub fn user_account(
    id: Uuid,
    user_id: String,
    account_name: String,
    is_active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> UserAccount {
    UserAccount {
        scope: AccountScope { id, user_id },
        account_name,
        is_active,
        created_at,
        updated_at,
    }
}

/// A credential as a baseline read it, column by column (the read model is built
/// by the store only: `#[non_exhaustive]`).
#[allow(clippy::too_many_arguments)]
pub fn user_credential(
    id: Uuid,
    user_account_id: Uuid,
    user_id: String,
    credential_type: String,
    nickname: Option<String>,
    is_active: bool,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> UserCredential {
    UserCredential {
        id,
        user_account_id,
        user_id,
        credential_type,
        nickname,
        is_active,
        expires_at,
        created_at,
        updated_at,
    }
}

// ---------------------------------------------------------------------------
// The steps around the statements

/// The current time at the precision the databases keep, as the crate stamps rows.
pub fn now() -> DateTime<Utc> {
    steps::now()
}

/// Encrypts one key of a credential as an insert does: with the keyring's primary
/// key, in `format` (sealed: the current version), bound to the credential, its
/// account, the account's user and the field.
pub fn seal(
    keyring: &Keyring,
    format: CipherFormat,
    account: &impl AsRef<AccountScope>,
    credential_id: Uuid,
    field: Field,
    plaintext: &SecretString,
) -> String {
    keyring.encrypt(
        format,
        plaintext,
        &Binding {
            credential_id,
            account_id: account.as_ref().id,
            user_id: &account.as_ref().user_id,
            field,
        },
    )
}

/// What `keys` does with the row it read: refuses a missing, inactive or
/// expired credential or an inactive account, then decrypts both keys, each bound to
/// its row and field, with the account's data key from `store`'s cache (unwrapped
/// through its key provider on a miss).
pub fn reveal(
    store: &crate::CredentialStore,
    account: &impl AsRef<AccountScope>,
    credential_id: Uuid,
    found: Option<StoredCredential>,
) -> Result<CredentialKeys> {
    let found = found.map(|row| {
        (
            row.credential,
            row.account_active,
            LossyText(row.api_key),
            LossyText(row.secret_key),
            row.data_key,
        )
    });
    crate::repository::block_on(
        store
            .core
            .reveal_found(account.as_ref(), credential_id, found),
    )
}

// ---------------------------------------------------------------------------
// SQLite

/// Applies the pragmas every SQLite connection of a `Database` gets, with this busy
/// timeout (`DatabaseOptions::busy_timeout`).
#[cfg(feature = "sqlite")]
pub fn apply_sqlite_pragmas(
    conn: &mut SqliteConnection,
    busy_timeout: std::time::Duration,
) -> QueryResult<()> {
    crate::backend::sqlite::SqlitePragmas { busy_timeout }.apply(conn)
}

/// The SQL that [`apply_sqlite_pragmas`] sends, one batch per element, in order:
/// for a connection that is not diesel's. Recorded from a run on an in-memory
/// database.
#[cfg(feature = "sqlite")]
pub fn sqlite_pragma_sql(busy_timeout: std::time::Duration) -> Result<Vec<String>> {
    use diesel::Connection;
    let mut conn = SqliteConnection::establish(":memory:")?;
    let sent = Sent::default();
    conn.set_instrumentation(sent.instrumentation());
    apply_sqlite_pragmas(&mut conn, busy_timeout)?;
    Ok(sent.take())
}

/// A time as SQLite columns store it (fixed-width UTC text, microseconds).
pub fn sqlite_timestamp(time: &DateTime<Utc>) -> String {
    crate::sql_types::sqlite_timestamp(time)
}

/// A SQLite time column read back, as the crate reads it.
pub fn parse_sqlite_timestamp(
    text: &str,
) -> std::result::Result<DateTime<Utc>, chrono::ParseError> {
    crate::sql_types::parse_sqlite_timestamp(text)
}

// ---------------------------------------------------------------------------
// SQL text

/// A statement as diesel's instrumentation prints it (`<sql> -- binds: [...]`),
/// without its bind values.
pub fn without_binds(text: &str) -> &str {
    text.split_once(" -- binds:").map_or(text, |(sql, _)| sql)
}

/// Collects the statements a connection sends, binds left out.
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<String>>>);

impl Sent {
    fn instrumentation(&self) -> impl Instrumentation {
        let sent = self.clone();
        move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                let text = query.to_string();
                sent.lock().push(without_binds(&text).to_owned());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }
}

/// The one statement `run` sends on `conn`, which records into `sent`: run in a
/// transaction that is rolled back, so that nothing it might change stays changed.
fn sql_of<C: DieselConnection>(
    conn: &mut C,
    sent: &Sent,
    what: &str,
    run: impl FnOnce(&mut C),
) -> Result<String> {
    let mut statements = Vec::new();
    let _ = conn.transaction::<(), diesel::result::Error, _>(|c| {
        sent.take();
        run(c);
        statements = sent.take();
        Err(diesel::result::Error::RollbackTransaction)
    });
    match <[String; 1]>::try_from(statements) {
        Ok([sql]) => Ok(sql),
        Err(statements) => Err(Error::Database(diesel::result::Error::QueryBuilderError(
            format!(
                "{what}: expected one statement, diesel's instrumentation saw {}: {statements:?}",
                statements.len()
            )
            .into(),
        ))),
    }
}

/// The SQL text of the statements the crate sends for the benchmarked operations,
/// in one backend's dialect, binds left out: what a raw driver prepares to run
/// exactly what the crate runs. Parameters are in the order of the query values
/// ([`credentials_by_nickname`] and the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementSql {
    /// [`credentials_by_nickname`]: account id, user id, nickname, exact input.
    pub credentials_by_nickname: String,
    /// [`credentials_by_nickname_with_ciphertexts`]: the same parameters.
    pub credentials_by_nickname_with_ciphertexts: String,
    /// [`credentials_by_type`]: account id, user id, type.
    pub credentials_by_type: String,
    /// [`credentials`]: account id, user id.
    pub credentials: String,
    /// [`credential_with_ciphertexts`]: account id, user id, credential id.
    pub credential_with_ciphertexts: String,
    /// [`insert_credential`]: the fields of [`InsertRow`], in order.
    pub insert_credential: String,
    /// [`insert_credentials`] of [`insert_rows`](Self::insert_rows) rows: the
    /// fields of each [`InsertRow`], row after row.
    pub insert_credentials: String,
    /// The rows of [`insert_credentials`](Self::insert_credentials).
    pub insert_rows: usize,
    /// PostgreSQL only, [`set_user_context`]: [`USER_SETTING`], the user id, `true`.
    pub user_context: Option<String>,
}

impl StatementSql {
    /// The statements in SQLite's dialect (recorded on an in-memory database,
    /// where they fail for want of tables), with a multi-row insert of
    /// `insert_rows` rows.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(insert_rows: usize) -> Result<StatementSql> {
        use diesel::Connection;
        let mut conn = SqliteConnection::establish(":memory:")?;
        StatementSql::recorded(&mut conn, insert_rows)
    }

    /// The statements in PostgreSQL's dialect, recorded on a connection to `url`
    /// (each in a transaction that is rolled back), with a multi-row insert of
    /// `insert_rows` rows.
    #[cfg(feature = "postgres")]
    pub fn postgres(url: &str, insert_rows: usize) -> Result<StatementSql> {
        use diesel::Connection;
        let mut conn = PgConnection::establish(url)?;
        let mut sql = StatementSql::recorded(&mut conn, insert_rows)?;
        let sent = Sent::default();
        conn.set_instrumentation(sent.instrumentation());
        sql.user_context = Some(sql_of(&mut conn, &sent, "user context", |c| {
            let _ = set_user_context(c, "");
        })?);
        Ok(sql)
    }

    fn recorded<C: DieselConnection>(conn: &mut C, insert_rows: usize) -> Result<StatementSql> {
        let sent = Sent::default();
        conn.set_instrumentation(sent.instrumentation());
        let nobody = AccountScope {
            id: Uuid::nil(),
            user_id: String::new(),
        };
        let row = InsertRow {
            id: Uuid::nil(),
            user_account_id: Uuid::nil(),
            user_id: String::new(),
            credential_type: String::new(),
            nickname: None,
            api_key: String::new(),
            secret_key: String::new(),
            is_active: false,
            expires_at: None,
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        };
        let a = &nobody;
        Ok(StatementSql {
            credentials_by_nickname: sql_of(conn, &sent, "by nickname", |c| {
                let _ = credentials_by_nickname(c, a, "", "");
            })?,
            credentials_by_nickname_with_ciphertexts: sql_of(
                conn,
                &sent,
                "by nickname with ciphertexts",
                |c| {
                    let _ = credentials_by_nickname_with_ciphertexts(c, a, "", "");
                },
            )?,
            credentials_by_type: sql_of(conn, &sent, "by type", |c| {
                let _ = credentials_by_type(c, a, "");
            })?,
            credentials: sql_of(conn, &sent, "list", |c| {
                let _ = credentials(c, a);
            })?,
            credential_with_ciphertexts: sql_of(conn, &sent, "with ciphertexts", |c| {
                let _ = credential_with_ciphertexts(c, a, Uuid::nil());
            })?,
            insert_credential: sql_of(conn, &sent, "insert one", |c| {
                let _ = insert_credential(c, row.clone());
            })?,
            insert_credentials: sql_of(conn, &sent, "insert many", |c| {
                let _ = insert_credentials(c, vec![row.clone(); insert_rows]);
            })?,
            insert_rows,
            user_context: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_ciphertexts_and_the_wrapped_key_out() {
        let now = Utc::now();
        let stored = StoredCredential {
            credential: user_credential(
                Uuid::from_u128(1),
                Uuid::from_u128(2),
                "auth0|ada".into(),
                "polygon".into(),
                None,
                true,
                None,
                now,
                now,
            ),
            account_active: true,
            api_key: "sealed:v3:1:API-CIPHERTEXT".into(),
            secret_key: "sealed:v3:1:SECRET-CIPHERTEXT".into(),
            data_key: Some((1, "keyring".into(), "kek".into(), "WRAPPED-KEY".into())),
        };
        let debug = format!("{stored:?}");
        for hidden in ["API-CIPHERTEXT", "SECRET-CIPHERTEXT", "WRAPPED-KEY"] {
            assert!(!debug.contains(hidden), "{debug}");
        }
        assert!(
            debug.contains("auth0|ada") && debug.contains("kek"),
            "{debug}"
        );
    }
}
