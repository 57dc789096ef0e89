//! The benchmarked operations, once per implementation, shared by the criterion
//! benchmarks (`nickname_queries.rs`) and the interleaved ratios (`paired_ratios.rs`).
//! See `nickname_queries.rs` for what each implementation is.
//!
//! Every baseline runs what the crate runs, reached through
//! `credential_store::internals`: diesel runs the crate's own query values, the raw
//! drivers their SQL text, and both seal and open keys with the crate's code. A
//! fixture cannot be opened without two checks: [`check_same_sql_sqlite`] /
//! [`check_same_sql_pg`] run every operation once per implementation and assert that
//! each baseline sent exactly the statements the crate sent (`trace.rs`), then
//! [`check_sqlite`] / [`check_pg`] that they return the same.
#![allow(dead_code)]

use crate::support::*;
use crate::trace::{self, BEGIN, BEGIN_IMMEDIATE, COMMIT};
use credential_store::internals::{
    self, DieselConnection, InsertRow, StatementSql, StoredCredential,
};
use credential_store::{
    CredentialKeys, CredentialStore, Database, Keyring, UserAccount, UserCredential,
};
use diesel::prelude::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    LookupDecrypt,
    FindAll,
    ByType,
    List,
    InsertOne,
    InsertBatch,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Lookup,
        Op::LookupDecrypt,
        Op::FindAll,
        Op::ByType,
        Op::List,
        Op::InsertOne,
        Op::InsertBatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup_by_nickname",
            Op::LookupDecrypt => "lookup_by_nickname_decrypt",
            Op::FindAll => "find_all_by_nickname",
            Op::ByType => "find_by_type",
            Op::List => "list_account",
            Op::InsertOne => "insert_one",
            Op::InsertBatch => "insert_batch_1000",
        }
    }

    pub fn is_insert(self) -> bool {
        matches!(self, Op::InsertOne | Op::InsertBatch)
    }

    pub fn batch(self) -> usize {
        match self {
            Op::InsertBatch => BATCH,
            _ => 1,
        }
    }
}

pub const BATCH: usize = 1000;
pub const SEED: u64 = 0x00c0_ffee;

/// The implementations benchmarked for an operation on a backend; the crate first.
pub fn implementations(backend: &str, op: Op) -> &'static [&'static str] {
    match (backend, op) {
        ("sqlite", _) => &["crate", "diesel", "rusqlite"],
        ("postgres", Op::Lookup) => &[
            "crate",
            "diesel",
            "postgres",
            "diesel_bare",
            "postgres_bare",
        ],
        ("postgres", _) => &["crate", "diesel", "postgres"],
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// What the baselines share

#[path = "inserts.rs"]
mod inserts;
pub use inserts::*;

/// What `keys` does with the row it read, by the crate's code.
pub fn reveal(
    store: &CredentialStore,
    account: &UserAccount,
    credential: Uuid,
    found: Option<StoredCredential>,
) -> CredentialKeys {
    internals::reveal(store, account, credential, found).expect("keys")
}

pub fn pick<'a>(rng: &mut Rng, accounts: &'a [UserAccount]) -> (&'a UserAccount, &'static str) {
    let account = &accounts[rng.below(accounts.len())];
    (account, NICKNAMES[rng.below(UNIQUE_NICKNAMES)])
}

pub fn pick_type(rng: &mut Rng) -> &'static str {
    TYPES[rng.below(TYPES.len())]
}

pub fn single<T>(mut found: Vec<T>) -> Option<T> {
    assert!(found.len() <= 1, "a unique nickname");
    found.pop()
}

// ---------------------------------------------------------------------------
// diesel without the repository: the crate's statements on one connection

/// The crate's lookup statement; the nickname is bound twice (normalised and as
/// given), as the crate binds it, and the dataset's nicknames are normalised.
fn diesel_by_nickname(
    c: &mut impl DieselConnection,
    a: &UserAccount,
    nickname: &str,
) -> QueryResult<Vec<UserCredential>> {
    internals::credentials_by_nickname(c, a, nickname, nickname)
}

/// The crate's insert: one row by the one-row statement, more in one multi-row
/// `INSERT`.
fn diesel_insert(
    c: &mut impl DieselConnection,
    mut rows: Vec<InsertRow>,
) -> QueryResult<Vec<UserCredential>> {
    match rows.len() {
        1 => internals::insert_credential(c, rows.pop().expect("one row")),
        _ => internals::insert_credentials(c, rows),
    }
}

/// `BEGIN; set_config(…); <f>; COMMIT` on diesel, as the crate's `Database::run`.
pub fn diesel_in_context<T>(
    c: &mut diesel::PgConnection,
    user: &str,
    f: impl FnOnce(&mut diesel::PgConnection) -> QueryResult<T>,
) -> T {
    c.transaction(|c| {
        internals::set_user_context(c, user)?;
        f(c)
    })
    .expect("transaction")
}

// ---------------------------------------------------------------------------
// rusqlite: the crate's SQL text, prepared and cached

fn rusqlite_query<T>(
    raw: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    trace::sent(sql);
    let mut stmt = raw.prepare_cached(sql).expect("prepare");
    stmt.query_map(params, decode)
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The crate's lookup by nickname (account id, user id, nickname twice).
pub fn rusqlite_by_nickname(
    raw: &rusqlite::Connection,
    sql: &StatementSql,
    a: &UserAccount,
    nickname: &str,
) -> Vec<UserCredential> {
    let mut buf = Uuid::encode_buffer();
    let id: &str = a.id().hyphenated().encode_lower(&mut buf);
    rusqlite_query(
        raw,
        &sql.credentials_by_nickname,
        &[&id, &a.user_id(), &nickname, &nickname],
        credential_from_rusqlite,
    )
}

/// The crate's lookup by type (account id, user id, type).
pub fn rusqlite_by_type(
    raw: &rusqlite::Connection,
    sql: &StatementSql,
    a: &UserAccount,
    credential_type: &str,
) -> Vec<UserCredential> {
    let mut buf = Uuid::encode_buffer();
    let id: &str = a.id().hyphenated().encode_lower(&mut buf);
    rusqlite_query(
        raw,
        &sql.credentials_by_type,
        &[&id, &a.user_id(), &credential_type],
        credential_from_rusqlite,
    )
}

/// The crate's list (account id, user id).
pub fn rusqlite_list(
    raw: &rusqlite::Connection,
    sql: &StatementSql,
    a: &UserAccount,
) -> Vec<UserCredential> {
    let mut buf = Uuid::encode_buffer();
    let id: &str = a.id().hyphenated().encode_lower(&mut buf);
    rusqlite_query(
        raw,
        &sql.credentials,
        &[&id, &a.user_id()],
        credential_from_rusqlite,
    )
}

/// The crate's `keys` read (account id, user id, credential id).
pub fn rusqlite_keys(
    raw: &rusqlite::Connection,
    sql: &StatementSql,
    a: &UserAccount,
    credential: Uuid,
) -> Option<StoredCredential> {
    let mut account_buf = Uuid::encode_buffer();
    let account: &str = a.id().hyphenated().encode_lower(&mut account_buf);
    let mut id_buf = Uuid::encode_buffer();
    let id: &str = credential.hyphenated().encode_lower(&mut id_buf);
    single(rusqlite_query(
        raw,
        &sql.credential_with_ciphertexts,
        &[&account, &a.user_id(), &id],
        stored_from_rusqlite,
    ))
}

/// The crate's insert in a `BEGIN IMMEDIATE` transaction, values bound as the crate
/// binds them on SQLite (ids and times as text).
pub fn rusqlite_insert(
    raw: &rusqlite::Connection,
    sql: &StatementSql,
    rows: &[InsertRow],
) -> Vec<UserCredential> {
    let insert = match rows.len() {
        1 => &sql.insert_credential,
        n => {
            assert_eq!(n, sql.insert_rows, "the prepared multi-row INSERT's size");
            &sql.insert_credentials
        }
    };
    let texts: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                sqlite_id(r.id),
                sqlite_id(r.user_account_id),
                internals::sqlite_timestamp(&r.created_at),
                internals::sqlite_timestamp(&r.updated_at),
            ]
        })
        .collect();
    let expires: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.expires_at.as_ref().map(internals::sqlite_timestamp))
        .collect();
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 11);
    for ((r, [id, account, created, updated]), expires_at) in rows.iter().zip(&texts).zip(&expires)
    {
        // The order of `InsertRow`'s fields, the crate's INSERT columns.
        params.extend_from_slice(&[
            id as &dyn rusqlite::ToSql,
            account,
            &r.user_id,
            &r.credential_type,
            &r.nickname,
            &r.api_key,
            &r.secret_key,
            &r.is_active,
            expires_at,
            created,
            updated,
        ]);
    }
    trace::sent(BEGIN_IMMEDIATE);
    raw.execute_batch(BEGIN_IMMEDIATE).expect("begin immediate");
    let stored = rusqlite_query(raw, insert, &params, credential_from_rusqlite);
    trace::sent(COMMIT);
    raw.execute_batch(COMMIT).expect("commit");
    stored
}

// ---------------------------------------------------------------------------
// The `postgres` crate: the crate's SQL text, prepared

/// A prepared statement and the text it was prepared from (what is recorded as sent).
pub struct PgStatement {
    pub sql: String,
    pub prepared: postgres::Statement,
}

impl PgStatement {
    fn prepare(client: &mut postgres::Client, sql: &str) -> Self {
        PgStatement {
            sql: sql.to_owned(),
            prepared: client.prepare(sql).expect("prepare"),
        }
    }

    pub fn query(
        &self,
        client: &mut postgres::Client,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Vec<postgres::Row> {
        trace::sent(&self.sql);
        client.query(&self.prepared, params).expect("query")
    }
}

pub struct PgStatements {
    pub user_context: PgStatement,
    pub by_nickname: PgStatement,
    pub keys: PgStatement,
    pub by_type: PgStatement,
    pub list: PgStatement,
    pub insert_one: PgStatement,
    pub insert_batch: PgStatement,
}

impl PgStatements {
    pub fn prepare(client: &mut postgres::Client, sql: &StatementSql) -> Self {
        let mut prepare = |text: &str| PgStatement::prepare(client, text);
        PgStatements {
            user_context: prepare(sql.user_context.as_deref().expect("PostgreSQL SQL")),
            by_nickname: prepare(&sql.credentials_by_nickname),
            keys: prepare(&sql.credential_with_ciphertexts),
            by_type: prepare(&sql.credentials_by_type),
            list: prepare(&sql.credentials),
            insert_one: prepare(&sql.insert_credential),
            insert_batch: prepare(&sql.insert_credentials),
        }
    }
}

/// `BEGIN; SELECT set_config(…); <f>; COMMIT`, as the crate's `Database::run`; the
/// setting, the user and `true` bound, as the crate binds them.
pub fn pg_in_context<T>(
    client: &mut postgres::Client,
    st: &PgStatements,
    user: &str,
    f: impl FnOnce(&mut postgres::Client) -> T,
) -> T {
    trace::sent(BEGIN);
    client.batch_execute(BEGIN).expect("begin");
    trace::sent(&st.user_context.sql);
    client
        .execute(
            &st.user_context.prepared,
            &[&internals::USER_SETTING, &user, &true],
        )
        .expect("set_config");
    let out = f(client);
    trace::sent(COMMIT);
    client.batch_execute(COMMIT).expect("commit");
    out
}

pub fn pg_rows(rows: Vec<postgres::Row>) -> Vec<UserCredential> {
    rows.iter().map(credential_from_pg).collect()
}

pub fn pg_by_nickname(
    client: &mut postgres::Client,
    st: &PgStatements,
    a: &UserAccount,
    nickname: &str,
) -> Vec<UserCredential> {
    pg_rows(
        st.by_nickname
            .query(client, &[&a.id(), &a.user_id(), &nickname, &nickname]),
    )
}

pub fn pg_keys(
    client: &mut postgres::Client,
    st: &PgStatements,
    a: &UserAccount,
    credential: Uuid,
) -> Option<StoredCredential> {
    single(
        st.keys
            .query(client, &[&a.id(), &a.user_id(), &credential])
            .iter()
            .map(stored_from_pg)
            .collect(),
    )
}

/// The crate's insert, values bound in the order of its columns.
pub fn pg_insert(
    client: &mut postgres::Client,
    st: &PgStatements,
    rows: &[InsertRow],
) -> Vec<UserCredential> {
    let insert = if rows.len() == 1 {
        &st.insert_one
    } else {
        &st.insert_batch
    };
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::with_capacity(rows.len() * 11);
    for r in rows {
        // The order of `InsertRow`'s fields, the crate's INSERT columns.
        params.extend_from_slice(&[
            &r.id as &(dyn postgres::types::ToSql + Sync),
            &r.user_account_id,
            &r.user_id,
            &r.credential_type,
            &r.nickname,
            &r.api_key,
            &r.secret_key,
            &r.is_active,
            &r.expires_at,
            &r.created_at,
            &r.updated_at,
        ]);
    }
    pg_rows(insert.query(client, &params))
}

// ---------------------------------------------------------------------------
// Fixtures

pub struct SqliteFixture {
    pub store: CredentialStore,
    pub diesel: diesel::SqliteConnection,
    pub raw: rusqlite::Connection,
    pub accounts: Vec<UserAccount>,
    pub inserters: Vec<UserAccount>,
    pub keyring: Keyring,
    pub sql: StatementSql,
}

impl SqliteFixture {
    /// The dataset of `rows` credentials and every implementation on it, checked.
    pub fn open(rows: usize) -> Self {
        let path = sqlite_dataset(rows);
        let store = CredentialStore::new(
            Database::open(path.to_str().expect("UTF-8 path")).expect("open"),
            keyring(),
        );
        let mut diesel = diesel_sqlite_open(&path);
        let (accounts, inserters) = load_accounts_sqlite(&mut diesel);
        assert_eq!(accounts.len() * CREDENTIALS_PER_ACCOUNT, rows);
        assert_eq!(inserters.len(), INSERT_ACCOUNTS);
        let mut fx = SqliteFixture {
            store,
            diesel,
            raw: rusqlite_open(&path),
            accounts,
            inserters,
            keyring: keyring(),
            sql: StatementSql::sqlite(BATCH).expect("the crate's SQLite statements"),
        };
        check_same_sql_sqlite(&mut fx, &path);
        check_sqlite(&mut fx);
        fx
    }

    pub fn cleanup(&self) {
        delete_insert_rows_sqlite(&self.raw);
    }
}

pub struct PgFixture {
    pub store: CredentialStore,
    pub diesel: diesel::PgConnection,
    pub raw: postgres::Client,
    pub st: PgStatements,
    pub accounts: Vec<UserAccount>,
    pub inserters: Vec<UserAccount>,
    pub keyring: Keyring,
}

impl PgFixture {
    /// The dataset of `rows` credentials and every implementation on it, checked.
    pub fn open(rows: usize) -> Self {
        let url = pg_dataset(rows);
        let store = CredentialStore::new(Database::open(&url).expect("open"), keyring());
        let mut diesel = diesel::PgConnection::establish(&url).expect("connect diesel");
        let (accounts, inserters) = load_accounts_pg(&mut diesel);
        assert_eq!(accounts.len() * CREDENTIALS_PER_ACCOUNT, rows);
        assert_eq!(inserters.len(), INSERT_ACCOUNTS);
        let mut raw = postgres::Client::connect(&url, postgres::NoTls).expect("connect postgres");
        let sql = StatementSql::postgres(&url, BATCH).expect("the crate's PostgreSQL statements");
        let st = PgStatements::prepare(&mut raw, &sql);
        let mut fx = PgFixture {
            store,
            diesel,
            raw,
            st,
            accounts,
            inserters,
            keyring: keyring(),
        };
        check_same_sql_pg(&mut fx, &url);
        check_pg(&mut fx);
        fx
    }

    pub fn cleanup(&mut self) {
        delete_insert_rows_pg(&mut self.raw);
    }
}

#[derive(Default)]
pub struct Fixtures {
    pub sqlite: HashMap<usize, SqliteFixture>,
    pub pg: HashMap<usize, PgFixture>,
}

impl Fixtures {
    pub fn sqlite(&mut self, rows: usize) -> &mut SqliteFixture {
        self.sqlite
            .entry(rows)
            .or_insert_with(|| SqliteFixture::open(rows))
    }

    pub fn pg(&mut self, rows: usize) -> &mut PgFixture {
        self.pg.entry(rows).or_insert_with(|| PgFixture::open(rows))
    }
}

// ---------------------------------------------------------------------------
// What one iteration does

/// One iteration of `op` by `implementation`: picks its account (and nickname or
/// type) from `rng`, runs, and hands the result to `black_box`.
pub fn sqlite_op<'a>(
    op: Op,
    implementation: &str,
    fx: &'a mut SqliteFixture,
    rng: &'a mut Rng,
) -> Box<dyn FnMut() + 'a> {
    let SqliteFixture {
        store,
        diesel,
        raw,
        accounts,
        inserters,
        keyring,
        sql,
    } = fx;
    let (raw, sql, keyring): (&'a _, &'a _, &'a _) = (raw, sql, keyring);
    match (op, implementation) {
        (Op::Lookup, "crate") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(store.credential_by_nickname(a, nick).expect("lookup"));
        }),
        (Op::Lookup, "diesel") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(single(diesel_by_nickname(diesel, a, nick).expect("lookup")));
        }),
        (Op::Lookup, "rusqlite") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(single(rusqlite_by_nickname(raw, sql, a, nick)));
        }),
        (Op::LookupDecrypt, "crate") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            let found = store
                .credential_by_nickname(a, nick)
                .expect("lookup")
                .expect("found");
            black_box(store.keys(a, found.id).expect("keys"));
        }),
        (Op::LookupDecrypt, "diesel") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            let found =
                single(diesel_by_nickname(diesel, a, nick).expect("lookup")).expect("found");
            let stored = internals::credential_with_ciphertexts(diesel, a, found.id).expect("keys");
            black_box(reveal(store, a, found.id, stored));
        }),
        (Op::LookupDecrypt, "rusqlite") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            let found = single(rusqlite_by_nickname(raw, sql, a, nick)).expect("found");
            let stored = rusqlite_keys(raw, sql, a, found.id);
            black_box(reveal(store, a, found.id, stored));
        }),
        (Op::FindAll, "crate") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(
                store
                    .credentials_by_nickname(a, SHARED_NICKNAME)
                    .expect("find all"),
            );
        }),
        (Op::FindAll, "diesel") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(diesel_by_nickname(diesel, a, SHARED_NICKNAME).expect("find all"));
        }),
        (Op::FindAll, "rusqlite") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(rusqlite_by_nickname(raw, sql, a, SHARED_NICKNAME));
        }),
        (Op::ByType, "crate") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(
                store
                    .credentials_by_type(a, pick_type(rng))
                    .expect("by type"),
            );
        }),
        (Op::ByType, "diesel") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(internals::credentials_by_type(diesel, a, pick_type(rng)).expect("by type"));
        }),
        (Op::ByType, "rusqlite") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(rusqlite_by_type(raw, sql, a, pick_type(rng)));
        }),
        (Op::List, "crate") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(store.credentials(a).expect("list"));
        }),
        (Op::List, "diesel") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(internals::credentials(diesel, a).expect("list"));
        }),
        (Op::List, "rusqlite") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(rusqlite_list(raw, sql, a));
        }),
        (Op::InsertOne | Op::InsertBatch, "crate") => {
            let new = new_credentials(op.batch());
            Box::new(move || {
                let a = &inserters[rng.below(inserters.len())];
                black_box(store.insert_credentials(a, &new).expect("insert"));
            })
        }
        (Op::InsertOne | Op::InsertBatch, "diesel") => {
            let keys = InsertKeys::new();
            Box::new(move || {
                let a = &inserters[rng.below(inserters.len())];
                let rows = insert_rows(keyring, a, &keys, op.batch());
                black_box(
                    diesel
                        .immediate_transaction(|c| diesel_insert(c, rows))
                        .expect("insert"),
                );
            })
        }
        (Op::InsertOne | Op::InsertBatch, "rusqlite") => {
            let keys = InsertKeys::new();
            Box::new(move || {
                let a = &inserters[rng.below(inserters.len())];
                let rows = insert_rows(keyring, a, &keys, op.batch());
                black_box(rusqlite_insert(raw, sql, &rows));
            })
        }
        other => unreachable!("no SQLite benchmark {other:?}"),
    }
}

/// The same on PostgreSQL.
pub fn pg_op<'a>(
    op: Op,
    implementation: &str,
    fx: &'a mut PgFixture,
    rng: &'a mut Rng,
) -> Box<dyn FnMut() + 'a> {
    let PgFixture {
        store,
        diesel,
        raw,
        st,
        accounts,
        inserters,
        keyring,
    } = fx;
    let (st, keyring): (&'a _, &'a _) = (st, keyring);
    match (op, implementation) {
        (Op::Lookup, "crate") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(store.credential_by_nickname(a, nick).expect("lookup"));
        }),
        (Op::Lookup, "diesel") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(single(diesel_in_context(diesel, a.user_id(), |c| {
                diesel_by_nickname(c, a, nick)
            })));
        }),
        (Op::Lookup, "diesel_bare") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(single(diesel_by_nickname(diesel, a, nick).expect("lookup")));
        }),
        (Op::Lookup, "postgres") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(single(pg_in_context(raw, st, a.user_id(), |c| {
                pg_by_nickname(c, st, a, nick)
            })));
        }),
        (Op::Lookup, "postgres_bare") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            black_box(single(pg_by_nickname(raw, st, a, nick)));
        }),
        (Op::LookupDecrypt, "crate") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            let found = store
                .credential_by_nickname(a, nick)
                .expect("lookup")
                .expect("found");
            black_box(store.keys(a, found.id).expect("keys"));
        }),
        (Op::LookupDecrypt, "diesel") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            let found = single(diesel_in_context(diesel, a.user_id(), |c| {
                diesel_by_nickname(c, a, nick)
            }))
            .expect("found");
            let stored = diesel_in_context(diesel, a.user_id(), |c| {
                internals::credential_with_ciphertexts(c, a, found.id)
            });
            black_box(reveal(store, a, found.id, stored));
        }),
        (Op::LookupDecrypt, "postgres") => Box::new(move || {
            let (a, nick) = pick(rng, accounts);
            let found = single(pg_in_context(raw, st, a.user_id(), |c| {
                pg_by_nickname(c, st, a, nick)
            }))
            .expect("found");
            let stored = pg_in_context(raw, st, a.user_id(), |c| pg_keys(c, st, a, found.id));
            black_box(reveal(store, a, found.id, stored));
        }),
        (Op::FindAll, "crate") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(
                store
                    .credentials_by_nickname(a, SHARED_NICKNAME)
                    .expect("find all"),
            );
        }),
        (Op::FindAll, "diesel") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(diesel_in_context(diesel, a.user_id(), |c| {
                diesel_by_nickname(c, a, SHARED_NICKNAME)
            }));
        }),
        (Op::FindAll, "postgres") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(pg_in_context(raw, st, a.user_id(), |c| {
                pg_by_nickname(c, st, a, SHARED_NICKNAME)
            }));
        }),
        (Op::ByType, "crate") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(
                store
                    .credentials_by_type(a, pick_type(rng))
                    .expect("by type"),
            );
        }),
        (Op::ByType, "diesel") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            let t = pick_type(rng);
            black_box(diesel_in_context(diesel, a.user_id(), |c| {
                internals::credentials_by_type(c, a, t)
            }));
        }),
        (Op::ByType, "postgres") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            let t = pick_type(rng);
            black_box(pg_in_context(raw, st, a.user_id(), |c| {
                pg_rows(st.by_type.query(c, &[&a.id(), &a.user_id(), &t]))
            }));
        }),
        (Op::List, "crate") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(store.credentials(a).expect("list"));
        }),
        (Op::List, "diesel") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(diesel_in_context(diesel, a.user_id(), |c| {
                internals::credentials(c, a)
            }));
        }),
        (Op::List, "postgres") => Box::new(move || {
            let a = &accounts[rng.below(accounts.len())];
            black_box(pg_in_context(raw, st, a.user_id(), |c| {
                pg_rows(st.list.query(c, &[&a.id(), &a.user_id()]))
            }));
        }),
        (Op::InsertOne | Op::InsertBatch, "crate") => {
            let new = new_credentials(op.batch());
            Box::new(move || {
                let a = &inserters[rng.below(inserters.len())];
                black_box(store.insert_credentials(a, &new).expect("insert"));
            })
        }
        (Op::InsertOne | Op::InsertBatch, "diesel") => {
            let keys = InsertKeys::new();
            Box::new(move || {
                let a = &inserters[rng.below(inserters.len())];
                let rows = insert_rows(keyring, a, &keys, op.batch());
                black_box(diesel_in_context(diesel, a.user_id(), |c| {
                    diesel_insert(c, rows)
                }));
            })
        }
        (Op::InsertOne | Op::InsertBatch, "postgres") => {
            let keys = InsertKeys::new();
            Box::new(move || {
                let a = &inserters[rng.below(inserters.len())];
                let rows = insert_rows(keyring, a, &keys, op.batch());
                black_box(pg_in_context(raw, st, a.user_id(), |c| {
                    pg_insert(c, st, &rows)
                }));
            })
        }
        other => unreachable!("no PostgreSQL benchmark {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Checks before timing: every baseline sends the crate's SQL

/// Runs every operation once per implementation on `fx` and asserts that each
/// baseline sent exactly what the crate sent: the same statements, text for text
/// (binds aside), in the same order, transaction statements included. The crate's
/// statements are recorded on a store of its own on the same data, with diesel's
/// instrumentation, and so are raw diesel's on a connection of its own; the raw
/// drivers record what they send. Also checks that every implementation's SQLite
/// connection is set up with the crate's pragmas. Panics naming both texts.
pub fn check_same_sql_sqlite(fx: &mut SqliteFixture, path: &Path) {
    let url = path.to_str().expect("UTF-8 path");
    let account = fx.accounts[0].clone();
    let (mut store, opened) = recording_store(url, &account);
    let by_rusqlite = trace::statements(|| drop(rusqlite_open(path)));
    let (mut diesel, by_diesel) =
        trace::record(|| trace::with_recording(|| diesel_sqlite_open(path)));
    trace::assert_same_sql("SQLite connection set-up/rusqlite", &by_rusqlite, &opened);
    trace::assert_same_sql("SQLite connection set-up/diesel", &by_diesel, &opened);

    std::mem::swap(&mut fx.store, &mut store);
    std::mem::swap(&mut fx.diesel, &mut diesel);
    let mut compared = opened.len() * 2;
    for op in Op::ALL {
        let by_crate = trace::statements(|| sqlite_op(op, "crate", fx, &mut Rng::new(SEED))());
        for &implementation in &implementations("sqlite", op)[1..] {
            let sent =
                trace::statements(|| sqlite_op(op, implementation, fx, &mut Rng::new(SEED))());
            trace::assert_same_sql(
                &format!("{}/sqlite/{implementation}", op.name()),
                &sent,
                &by_crate,
            );
            compared += sent.len();
        }
        fx.cleanup();
    }
    std::mem::swap(&mut fx.store, &mut store);
    std::mem::swap(&mut fx.diesel, &mut diesel);
    eprintln!(
        "sqlite: every baseline sent exactly the crate's statements ({compared} compared), e.g. the lookup:\n  {}",
        fx.sql.credentials_by_nickname
    );
}

/// The same on PostgreSQL. The `_bare` baselines send the lookup alone: they are
/// compared with the crate's statements without the transaction and its context.
pub fn check_same_sql_pg(fx: &mut PgFixture, url: &str) {
    let account = fx.accounts[0].clone();
    let (mut store, _) = recording_store(url, &account);
    let mut diesel =
        trace::with_recording(|| diesel::PgConnection::establish(url).expect("connect diesel"));
    std::mem::swap(&mut fx.store, &mut store);
    std::mem::swap(&mut fx.diesel, &mut diesel);
    let mut compared = 0;
    for op in Op::ALL {
        let by_crate = trace::statements(|| pg_op(op, "crate", fx, &mut Rng::new(SEED))());
        let bare: Vec<String> = by_crate
            .iter()
            .filter(|sql| ![BEGIN, COMMIT, fx.st.user_context.sql.as_str()].contains(&sql.as_str()))
            .cloned()
            .collect();
        for &implementation in &implementations("postgres", op)[1..] {
            let sent = trace::statements(|| pg_op(op, implementation, fx, &mut Rng::new(SEED))());
            let expected = if implementation.ends_with("_bare") {
                &bare
            } else {
                &by_crate
            };
            trace::assert_same_sql(
                &format!("{}/postgres/{implementation}", op.name()),
                &sent,
                expected,
            );
            compared += sent.len();
        }
        fx.cleanup();
    }
    std::mem::swap(&mut fx.store, &mut store);
    std::mem::swap(&mut fx.diesel, &mut diesel);
    eprintln!(
        "postgres: every baseline sent exactly the crate's statements ({compared} compared), e.g. the lookup:\n  {}",
        fx.st.by_nickname.sql
    );
}

/// A store of the crate on `url` whose connection records, made by a first call.
fn recording_store(url: &str, account: &UserAccount) -> (CredentialStore, Vec<String>) {
    trace::recording_store(url, keyring(), |store| {
        store.credentials(account).expect("first call");
    })
}

// ---------------------------------------------------------------------------
// Checks before timing: every implementation returns the same thing

pub fn check_sqlite(fx: &mut SqliteFixture) {
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let (a, nick) = pick(&mut rng, &fx.accounts);
        let by_crate = fx.store.credential_by_nickname(a, nick).expect("lookup");
        let by_diesel = single(diesel_by_nickname(&mut fx.diesel, a, nick).expect("lookup"));
        let by_raw = single(rusqlite_by_nickname(&fx.raw, &fx.sql, a, nick));
        assert!(by_crate.is_some());
        assert_eq!(by_crate, by_diesel);
        assert_eq!(by_crate, by_raw);
        let c = by_crate.expect("found");
        let keys = fx.store.keys(a, c.id).expect("keys");
        for stored in [
            rusqlite_keys(&fx.raw, &fx.sql, a, c.id),
            internals::credential_with_ciphertexts(&mut fx.diesel, a, c.id).expect("keys"),
        ] {
            let raw_keys = reveal(&fx.store, a, c.id, stored);
            assert_eq!(
                keys.api_key().expose_secret(),
                raw_keys.api_key().expose_secret()
            );
            assert_eq!(
                keys.secret_key().expose_secret(),
                raw_keys.secret_key().expose_secret()
            );
        }
        let listed = fx.store.credentials(a).expect("list");
        assert_eq!(
            listed,
            internals::credentials(&mut fx.diesel, a).expect("list")
        );
        assert_eq!(listed, rusqlite_list(&fx.raw, &fx.sql, a));
        let polygon = fx.store.credentials_by_type(a, "polygon").expect("type");
        assert_eq!(polygon, rusqlite_by_type(&fx.raw, &fx.sql, a, "polygon"));
        let shared = fx
            .store
            .credentials_by_nickname(a, SHARED_NICKNAME)
            .expect("all");
        assert_eq!(shared.len(), 2);
        assert_eq!(
            shared,
            rusqlite_by_nickname(&fx.raw, &fx.sql, a, SHARED_NICKNAME)
        );
    }
    // What the baselines insert, the crate reads and decrypts.
    let a = fx.inserters[0].clone();
    let keys = InsertKeys::new();
    for n in [1, BATCH] {
        let stored = rusqlite_insert(&fx.raw, &fx.sql, &insert_rows(&fx.keyring, &a, &keys, n));
        assert_eq!(stored.len(), n);
        let read = fx.store.keys(&a, stored[n - 1].id).expect("keys");
        assert_eq!(read.api_key().expose_secret(), INSERT_API_KEY);
        assert_eq!(read.secret_key().expose_secret(), INSERT_SECRET);
    }
    fx.cleanup();
}

pub fn check_pg(fx: &mut PgFixture) {
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let (a, nick) = pick(&mut rng, &fx.accounts);
        let by_crate = fx.store.credential_by_nickname(a, nick).expect("lookup");
        let by_diesel = single(diesel_in_context(&mut fx.diesel, a.user_id(), |c| {
            diesel_by_nickname(c, a, nick)
        }));
        let by_raw = single(pg_in_context(&mut fx.raw, &fx.st, a.user_id(), |c| {
            pg_by_nickname(c, &fx.st, a, nick)
        }));
        assert!(by_crate.is_some());
        assert_eq!(by_crate, by_diesel);
        assert_eq!(by_crate, by_raw);
        let c = by_crate.expect("found");
        let keys = fx.store.keys(a, c.id).expect("keys");
        for stored in [
            diesel_in_context(&mut fx.diesel, a.user_id(), |conn| {
                internals::credential_with_ciphertexts(conn, a, c.id)
            }),
            pg_in_context(&mut fx.raw, &fx.st, a.user_id(), |conn| {
                pg_keys(conn, &fx.st, a, c.id)
            }),
        ] {
            let raw_keys = reveal(&fx.store, a, c.id, stored);
            assert_eq!(
                keys.api_key().expose_secret(),
                raw_keys.api_key().expose_secret()
            );
            assert_eq!(
                keys.secret_key().expose_secret(),
                raw_keys.secret_key().expose_secret()
            );
        }
        assert_eq!(
            fx.store.credentials(a).expect("list"),
            diesel_in_context(&mut fx.diesel, a.user_id(), |conn| internals::credentials(
                conn, a
            ))
        );
    }
    // What the baselines insert, the crate reads and decrypts.
    let a = fx.inserters[0].clone();
    let keys = InsertKeys::new();
    for n in [1, BATCH] {
        let rows = insert_rows(&fx.keyring, &a, &keys, n);
        let stored = pg_in_context(&mut fx.raw, &fx.st, a.user_id(), |c| {
            pg_insert(c, &fx.st, &rows)
        });
        assert_eq!(stored.len(), n);
        let read = fx.store.keys(&a, stored[n - 1].id).expect("keys");
        assert_eq!(read.secret_key().expose_secret(), INSERT_SECRET);
    }
    fx.cleanup();
}
