//! The benchmarked operations, once per implementation, shared by the criterion
//! benchmarks (`nickname_queries.rs`) and the interleaved ratios (`paired_ratios.rs`).
//! See `nickname_queries.rs` for what each implementation is.
#![allow(dead_code)]

use crate::support::*;
use credential_store::schema::{user_accounts, user_credentials};
use credential_store::{
    CredentialRepository, CredentialStore, Database, NewUserCredential, UserAccount, UserCredential,
};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sqlite::Sqlite;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::hint::black_box;
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
            Op::InsertBatch => 1000,
            _ => 1,
        }
    }
}

pub const BATCH: usize = 1000;
pub const SEED: u64 = 0x00c0_ffee;

// ---------------------------------------------------------------------------
// diesel without the repository: the crate's queries, once per backend

macro_rules! diesel_queries {
    ($module:ident, $conn:ty) => {
        mod $module {
            use super::*;

            pub fn by_nickname(
                c: &mut $conn,
                a: &UserAccount,
                nickname: &str,
            ) -> QueryResult<Vec<UserCredential>> {
                owned_by(Id(a.id), &a.user_id)
                    .filter(user_credentials::nickname.eq(nickname))
                    .order(newest_first())
                    .select(UserCredential::as_select())
                    .load(c)
            }

            pub fn keys(
                c: &mut $conn,
                a: &UserAccount,
                credential: Uuid,
            ) -> QueryResult<(UserCredential, String, String)> {
                owned_by(Id(a.id), &a.user_id)
                    .filter(user_credentials::id.eq(Id(credential)))
                    .select((
                        UserCredential::as_select(),
                        user_credentials::api_key,
                        user_credentials::secret_key,
                    ))
                    .first(c)
            }

            pub fn by_type(
                c: &mut $conn,
                a: &UserAccount,
                credential_type: &str,
            ) -> QueryResult<Vec<UserCredential>> {
                owned_by(Id(a.id), &a.user_id)
                    .filter(user_credentials::credential_type.eq(credential_type))
                    .order(newest_first())
                    .select(UserCredential::as_select())
                    .load(c)
            }

            pub fn list(c: &mut $conn, a: &UserAccount) -> QueryResult<Vec<UserCredential>> {
                owned_by(Id(a.id), &a.user_id)
                    .order(newest_first())
                    .select(UserCredential::as_select())
                    .load(c)
            }

            pub fn owner(c: &mut $conn, a: &UserAccount) -> QueryResult<Option<String>> {
                user_accounts::table
                    .filter(user_accounts::id.eq(Id(a.id)))
                    .select(user_accounts::user_id)
                    .first(c)
                    .optional()
            }

            pub fn insert(c: &mut $conn, rows: &[Row<'_>]) -> QueryResult<Vec<UserCredential>> {
                diesel::insert_into(user_credentials::table)
                    .values(rows)
                    .returning(UserCredential::as_returning())
                    .get_results(c)
            }
        }
    };
}

diesel_queries!(diesel_sqlite, diesel::SqliteConnection);
diesel_queries!(diesel_pg, diesel::PgConnection);

/// The statements, as SQL text, in one backend's dialect: what the raw drivers run.
pub struct Sql {
    pub by_nickname: String,
    pub keys: String,
    pub by_type: String,
    pub list: String,
    pub owner: String,
    pub insert_one: String,
    pub insert_batch: String,
    pub set_config: String,
}

pub fn dummy_account() -> UserAccount {
    UserAccount {
        id: Uuid::nil(),
        user_id: String::new(),
        account_name: String::new(),
        is_active: true,
        created_at: now(),
        updated_at: now(),
    }
}

pub fn dummy_rows(n: usize) -> Vec<Row<'static>> {
    (0..n)
        .map(|_| Row {
            id: Id(Uuid::nil()),
            user_account_id: Id(Uuid::nil()),
            user_id: "",
            credential_type: "",
            nickname: Some(""),
            api_key: "",
            secret_key: "",
            is_active: true,
            expires_at: None,
            created_at: Time(now()),
            updated_at: Time(now()),
        })
        .collect()
}

/// `INSERT … VALUES (…), … RETURNING <the UserCredential columns>` for `n` rows.
/// (diesel prints a SQLite multi-row insert only without its RETURNING clause, so
/// the clause is appended; `check_same_sql` compares the result with the crate's.)
macro_rules! insert_sql {
    ($db:ty, $n:expr) => {{
        let select = sql_of::<$db, _>(&user_credentials::table.select(UserCredential::as_select()));
        let columns = select
            .strip_prefix("SELECT ")
            .and_then(|s| s.split_once(" FROM "))
            // SQLite's RETURNING names the columns without their table.
            .map(|(columns, _)| columns.replace("`user_credentials`.", ""))
            .expect("SELECT … FROM");
        format!(
            "{} RETURNING {columns}",
            sql_of::<$db, _>(&diesel::insert_into(user_credentials::table).values(&dummy_rows($n)))
        )
    }};
}

macro_rules! sql_for {
    ($db:ty) => {{
        let a = dummy_account();
        let id = Id(a.id);
        let user = a.user_id.as_str();
        Sql {
            by_nickname: sql_of::<$db, _>(
                &owned_by(id, user)
                    .filter(user_credentials::nickname.eq(""))
                    .order(newest_first())
                    .select(UserCredential::as_select()),
            ),
            keys: sql_of::<$db, _>(
                &owned_by(id, user)
                    .filter(user_credentials::id.eq(id))
                    .select((
                        UserCredential::as_select(),
                        user_credentials::api_key,
                        user_credentials::secret_key,
                    ))
                    .limit(1),
            ),
            by_type: sql_of::<$db, _>(
                &owned_by(id, user)
                    .filter(user_credentials::credential_type.eq(""))
                    .order(newest_first())
                    .select(UserCredential::as_select()),
            ),
            list: sql_of::<$db, _>(
                &owned_by(id, user)
                    .order(newest_first())
                    .select(UserCredential::as_select()),
            ),
            owner: sql_of::<$db, _>(
                &user_accounts::table
                    .filter(user_accounts::id.eq(id))
                    .select(user_accounts::user_id)
                    .limit(1),
            ),
            insert_one: insert_sql!($db, 1),
            insert_batch: insert_sql!($db, BATCH),
            set_config: sql_of::<Pg, _>(&diesel::select(set_config(USER_SETTING, "", true))),
        }
    }};
}

/// Runs the crate's operations once under diesel's instrumentation and checks that
/// every statement a baseline runs is one the crate ran, text for text.
pub fn check_same_sql(backend: &str, url: &str, sql: &Sql) {
    let captured = capture_crate_sql(url, |store| {
        let account = store
            .create_account(&credential_store::NewUserAccount {
                user_id: "bench-sql-probe",
                account_name: "probe",
            })
            .or_else(|_| {
                store
                    .account_by_user_id("bench-sql-probe")
                    .map(|a| a.expect("probe account"))
            })
            .expect("probe account");
        let one = store
            .insert_credential(
                &account,
                &NewUserCredential::new("alpaca_paper", "PKPROBE", "probe").nickname("probe-1"),
            )
            .expect("insert");
        let two = [
            NewUserCredential::new("alpaca_paper", "PKPROBE", "probe").nickname("probe-2"),
            NewUserCredential::new("alpaca_paper", "PKPROBE", "probe").nickname("probe-2"),
        ];
        store
            .insert_credentials(&account, &two)
            .expect("insert two");
        store
            .find_one_by_nickname(&account, "probe-1")
            .expect("lookup");
        store.credential_keys(&account, one.id).expect("keys");
        store
            .find_by_type(&account, "alpaca_paper")
            .expect("by type");
        store.list_credentials(&account).expect("list");
        for c in store.list_credentials(&account).expect("list") {
            store
                .delete_credential(&account, c.id)
                .expect("delete probe row");
        }
    });
    let two_rows = if backend == "sqlite" {
        insert_sql!(Sqlite, 2)
    } else {
        insert_sql!(Pg, 2)
    };
    let mut expected = vec![
        ("lookup", &sql.by_nickname),
        ("keys", &sql.keys),
        ("by type", &sql.by_type),
        ("list", &sql.list),
        ("owner check", &sql.owner),
        ("insert one", &sql.insert_one),
        ("insert two", &two_rows),
    ];
    if backend == "postgres" {
        expected.push(("set_config", &sql.set_config));
    }
    let mut drift = false;
    for (what, text) in expected {
        if !captured.iter().any(|c| c == text) {
            drift = true;
            eprintln!("WARNING: {backend} {what}: the baselines' SQL is not what the crate runs:\n  {text}");
        }
    }
    if drift {
        eprintln!("WARNING: the crate ran:");
        for c in &captured {
            eprintln!("  {c}");
        }
    } else {
        eprintln!(
            "{backend}: the baselines run the crate's SQL, e.g.\n  {}",
            sql.by_nickname
        );
    }
}

// ---------------------------------------------------------------------------
// Fixtures

pub struct SqliteFixture {
    pub store: CredentialStore,
    pub diesel: diesel::SqliteConnection,
    pub raw: rusqlite::Connection,
    pub accounts: Vec<UserAccount>,
    pub inserters: Vec<UserAccount>,
    pub sealer: Sealer,
    pub sql: Sql,
}

impl SqliteFixture {
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
        SqliteFixture {
            store,
            diesel,
            raw: rusqlite_open(&path),
            accounts,
            inserters,
            sealer: Sealer::bench(),
            sql: sql_for!(Sqlite),
        }
    }

    pub fn cleanup(&self) {
        delete_insert_rows_sqlite(&self.raw);
    }
}

pub struct PgStatements {
    pub set_config: postgres::Statement,
    pub by_nickname: postgres::Statement,
    pub keys: postgres::Statement,
    pub by_type: postgres::Statement,
    pub list: postgres::Statement,
    pub owner: postgres::Statement,
    pub insert_one: postgres::Statement,
    pub insert_batch: postgres::Statement,
}

pub struct PgFixture {
    pub store: CredentialStore,
    pub diesel: diesel::PgConnection,
    pub raw: postgres::Client,
    pub st: PgStatements,
    pub accounts: Vec<UserAccount>,
    pub inserters: Vec<UserAccount>,
    pub sealer: Sealer,
}

impl PgFixture {
    pub fn open(rows: usize) -> Self {
        let url = pg_dataset(rows);
        let store = CredentialStore::new(Database::open(&url).expect("open"), keyring());
        let mut diesel = diesel::PgConnection::establish(&url).expect("connect diesel");
        let (accounts, inserters) = load_accounts_pg(&mut diesel);
        assert_eq!(accounts.len() * CREDENTIALS_PER_ACCOUNT, rows);
        let mut raw = postgres::Client::connect(&url, postgres::NoTls).expect("connect postgres");
        let sql = sql_for!(Pg);
        let mut prepare = |text: &str| raw.prepare(text).expect("prepare");
        let st = PgStatements {
            set_config: prepare(&sql.set_config),
            by_nickname: prepare(&sql.by_nickname),
            keys: prepare(&sql.keys),
            by_type: prepare(&sql.by_type),
            list: prepare(&sql.list),
            owner: prepare(&sql.owner),
            insert_one: prepare(&sql.insert_one),
            insert_batch: prepare(&sql.insert_batch),
        };
        PgFixture {
            store,
            diesel,
            raw,
            st,
            accounts,
            inserters,
            sealer: Sealer::bench(),
        }
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

/// The plaintext of inserted credentials.
pub const INSERT_API_KEY: &str = "PKINSERT000000000001";
pub const INSERT_SECRET: &str = "0123456789abcdef0123456789abcdef01234567";

pub fn pick<'a>(rng: &mut Rng, accounts: &'a [UserAccount]) -> (&'a UserAccount, &'static str) {
    let account = &accounts[rng.below(accounts.len())];
    (account, NICKNAMES[rng.below(UNIQUE_NICKNAMES)])
}

pub fn pick_type(rng: &mut Rng) -> &'static str {
    TYPES[rng.below(TYPES.len())]
}

pub fn single(mut found: Vec<UserCredential>) -> Option<UserCredential> {
    assert!(found.len() <= 1, "a unique nickname");
    found.pop()
}

pub fn new_credentials(n: usize) -> Vec<NewUserCredential<'static>> {
    (0..n)
        .map(|_| {
            NewUserCredential::new("alpaca_paper", INSERT_API_KEY, INSERT_SECRET)
                .nickname("inserted")
        })
        .collect()
}

/// Rows as a baseline prepares them: a fresh UUIDv7 and both keys sealed to it.
pub struct Prepared {
    pub id: Uuid,
    pub api_key: String,
    pub secret_key: String,
}

pub fn prepare_rows(sealer: &Sealer, account: &UserAccount, n: usize) -> Vec<Prepared> {
    (0..n)
        .map(|_| {
            let id = Uuid::now_v7();
            Prepared {
                id,
                api_key: sealer.seal(INSERT_API_KEY, id, account.id, "api_key"),
                secret_key: sealer.seal(INSERT_SECRET, id, account.id, "secret_key"),
            }
        })
        .collect()
}

pub fn diesel_rows<'a>(
    prepared: &'a [Prepared],
    account: &'a UserAccount,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<Row<'a>> {
    prepared
        .iter()
        .map(|p| Row {
            id: Id(p.id),
            user_account_id: Id(account.id),
            user_id: &account.user_id,
            credential_type: "alpaca_paper",
            nickname: Some("inserted"),
            api_key: &p.api_key,
            secret_key: &p.secret_key,
            is_active: true,
            expires_at: None,
            created_at: Time(at),
            updated_at: Time(at),
        })
        .collect()
}

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
        sealer,
        sql,
    } = fx;
    match (op, implementation) {
        (Op::Lookup, "crate") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(store.find_one_by_nickname(a, nick).expect("lookup"))
            };
        }),
        (Op::Lookup, "diesel") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(single(
                    diesel_sqlite::by_nickname(diesel, a, nick).expect("lookup"),
                ))
            };
        }),
        (Op::Lookup, "rusqlite") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(single(rusqlite_by(raw, &sql.by_nickname, a, nick)))
            };
        }),
        (Op::LookupDecrypt, "crate") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                let found = store
                    .find_one_by_nickname(a, nick)
                    .expect("lookup")
                    .expect("found");
                black_box(store.credential_keys(a, found.id).expect("keys"))
            };
        }),
        (Op::LookupDecrypt, "diesel") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                let found = single(diesel_sqlite::by_nickname(diesel, a, nick).expect("lookup"))
                    .expect("found");
                let (credential, api, secret) =
                    diesel_sqlite::keys(diesel, a, found.id).expect("keys");
                black_box(open_keys(sealer, &credential, &api, &secret))
            };
        }),
        (Op::LookupDecrypt, "rusqlite") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                let found = single(rusqlite_by(raw, &sql.by_nickname, a, nick)).expect("found");
                let (credential, api, secret) = rusqlite_keys(raw, &sql.keys, a, found.id);
                black_box(open_keys(sealer, &credential, &api, &secret))
            };
        }),
        (Op::FindAll, "crate") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(
                    store
                        .find_by_nickname(a, SHARED_NICKNAME)
                        .expect("find all"),
                )
            };
        }),
        (Op::FindAll, "diesel") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(diesel_sqlite::by_nickname(diesel, a, SHARED_NICKNAME).expect("find all"))
            };
        }),
        (Op::FindAll, "rusqlite") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(rusqlite_by(raw, &sql.by_nickname, a, SHARED_NICKNAME))
            };
        }),
        (Op::ByType, "crate") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(store.find_by_type(a, pick_type(rng)).expect("by type"))
            };
        }),
        (Op::ByType, "diesel") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(diesel_sqlite::by_type(diesel, a, pick_type(rng)).expect("by type"))
            };
        }),
        (Op::ByType, "rusqlite") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(rusqlite_by(raw, &sql.by_type, a, pick_type(rng)))
            };
        }),
        (Op::List, "crate") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(store.list_credentials(a).expect("list"))
            };
        }),
        (Op::List, "diesel") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(diesel_sqlite::list(diesel, a).expect("list"))
            };
        }),
        (Op::List, "rusqlite") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                let mut stmt = raw.prepare_cached(&sql.list).expect("prepare");
                let mut id = Uuid::encode_buffer();
                let id = a.id.hyphenated().encode_lower(&mut id);
                let rows: Vec<UserCredential> = stmt
                    .query_map(rusqlite::params![&*id, a.user_id], credential_from_rusqlite)
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows");
                black_box(rows)
            };
        }),
        (Op::InsertOne | Op::InsertBatch, "crate") => {
            let new = new_credentials(op.batch());
            Box::new(move || {
                let _ = {
                    let a = &inserters[rng.below(inserters.len())];
                    black_box(store.insert_credentials(a, &new).expect("insert"))
                };
            })
        }
        (Op::InsertOne | Op::InsertBatch, "diesel") => Box::new(move || {
            let _ = {
                let a = &inserters[rng.below(inserters.len())];
                let prepared = prepare_rows(sealer, a, op.batch());
                let rows = diesel_rows(&prepared, a, now());
                black_box(
                    diesel
                        .immediate_transaction(|c| {
                            let owner = diesel_sqlite::owner(c, a)?;
                            assert_eq!(owner.as_deref(), Some(a.user_id.as_str()));
                            diesel_sqlite::insert(c, &rows)
                        })
                        .expect("insert"),
                )
            };
        }),
        (Op::InsertOne | Op::InsertBatch, "rusqlite") => {
            let sql: &'a Sql = sql;
            let insert_sql = if op == Op::InsertOne {
                &sql.insert_one
            } else {
                &sql.insert_batch
            };
            Box::new(move || {
                let _ = {
                    let a = &inserters[rng.below(inserters.len())];
                    black_box(rusqlite_insert(raw, sql, insert_sql, sealer, a, op.batch()))
                };
            })
        }
        other => unreachable!("no SQLite benchmark {other:?}"),
    }
}

/// One of the crate's filtered, ordered selects: account, user, then one text value.
pub fn rusqlite_by(
    raw: &rusqlite::Connection,
    sql: &str,
    a: &UserAccount,
    value: &str,
) -> Vec<UserCredential> {
    let mut stmt = raw.prepare_cached(sql).expect("prepare");
    let mut id = Uuid::encode_buffer();
    let id = a.id.hyphenated().encode_lower(&mut id);
    stmt.query_map(
        rusqlite::params![&*id, a.user_id, value],
        credential_from_rusqlite,
    )
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

pub fn rusqlite_keys(
    raw: &rusqlite::Connection,
    sql: &str,
    a: &UserAccount,
    credential: Uuid,
) -> (UserCredential, String, String) {
    let mut stmt = raw.prepare_cached(sql).expect("prepare");
    let mut account_buf = Uuid::encode_buffer();
    let account = a.id.hyphenated().encode_lower(&mut account_buf);
    let mut id_buf = Uuid::encode_buffer();
    let id = credential.hyphenated().encode_lower(&mut id_buf);
    stmt.query_row(rusqlite::params![&*account, a.user_id, &*id, 1i64], |row| {
        Ok((
            credential_from_rusqlite(row)?,
            row.get::<_, String>(9)?,
            row.get::<_, String>(10)?,
        ))
    })
    .expect("keys")
}

pub fn rusqlite_insert(
    raw: &mut rusqlite::Connection,
    sql: &Sql,
    insert_sql: &str,
    sealer: &Sealer,
    a: &UserAccount,
    n: usize,
) -> Vec<UserCredential> {
    let prepared = prepare_rows(sealer, a, n);
    let ids: Vec<String> = prepared.iter().map(|p| p.id.to_string()).collect();
    let account = a.id.to_string();
    let at = now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let nickname: Option<&str> = Some("inserted");
    let expires: Option<&str> = None;
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(n * 11);
    for (p, id) in prepared.iter().zip(&ids) {
        params.extend_from_slice(&[
            id as &dyn rusqlite::ToSql,
            &account,
            &a.user_id,
            &"alpaca_paper",
            &nickname,
            &p.api_key,
            &p.secret_key,
            &true,
            &expires,
            &at,
            &at,
        ]);
    }
    let tx = raw
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin immediate");
    let stored = {
        let owner: Option<String> = tx
            .prepare_cached(&sql.owner)
            .expect("prepare")
            .query_row(rusqlite::params![account, 1i64], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .expect("owner");
        assert_eq!(owner.as_deref(), Some(a.user_id.as_str()));
        let mut stmt = tx.prepare_cached(insert_sql).expect("prepare insert");
        let rows: Vec<UserCredential> = stmt
            .query_map(&params[..], credential_from_rusqlite)
            .expect("insert")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows
    };
    tx.commit().expect("commit");
    stored
}

/// `BEGIN; SELECT set_config(…); <f>; COMMIT` on diesel, as the crate's `Database::run`.
pub fn diesel_in_context<T>(
    c: &mut diesel::PgConnection,
    user: &str,
    f: impl FnOnce(&mut diesel::PgConnection) -> QueryResult<T>,
) -> T {
    c.transaction(|c| {
        diesel::select(set_config(USER_SETTING, user, true)).execute(c)?;
        f(c)
    })
    .expect("transaction")
}

/// The same on the `postgres` crate.
pub fn pg_in_context<T>(
    client: &mut postgres::Client,
    set: &postgres::Statement,
    user: &str,
    f: impl FnOnce(&mut postgres::Transaction<'_>) -> T,
) -> T {
    let mut tx = client.transaction().expect("begin");
    tx.execute(set, &[&USER_SETTING, &user, &true])
        .expect("set_config");
    let out = f(&mut tx);
    tx.commit().expect("commit");
    out
}

pub fn pg_rows(rows: Vec<postgres::Row>) -> Vec<UserCredential> {
    rows.iter().map(credential_from_pg).collect()
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
        sealer,
    } = fx;
    match (op, implementation) {
        (Op::Lookup, "crate") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(store.find_one_by_nickname(a, nick).expect("lookup"))
            };
        }),
        (Op::Lookup, "diesel") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(single(diesel_in_context(diesel, &a.user_id, |c| {
                    diesel_pg::by_nickname(c, a, nick)
                })))
            };
        }),
        (Op::Lookup, "diesel_bare") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(single(
                    diesel_pg::by_nickname(diesel, a, nick).expect("lookup"),
                ))
            };
        }),
        (Op::Lookup, "postgres") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(single(pg_in_context(
                    raw,
                    &st.set_config,
                    &a.user_id,
                    |tx| {
                        pg_rows(
                            tx.query(&st.by_nickname, &[&a.id, &a.user_id, &nick])
                                .expect("lookup"),
                        )
                    },
                )))
            };
        }),
        (Op::Lookup, "postgres_bare") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                black_box(single(pg_rows(
                    raw.query(&st.by_nickname, &[&a.id, &a.user_id, &nick])
                        .expect("lookup"),
                )))
            };
        }),
        (Op::LookupDecrypt, "crate") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                let found = store
                    .find_one_by_nickname(a, nick)
                    .expect("lookup")
                    .expect("found");
                black_box(store.credential_keys(a, found.id).expect("keys"))
            };
        }),
        (Op::LookupDecrypt, "diesel") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                let found = single(diesel_in_context(diesel, &a.user_id, |c| {
                    diesel_pg::by_nickname(c, a, nick)
                }))
                .expect("found");
                let (credential, api, secret) =
                    diesel_in_context(diesel, &a.user_id, |c| diesel_pg::keys(c, a, found.id));
                black_box(open_keys(sealer, &credential, &api, &secret))
            };
        }),
        (Op::LookupDecrypt, "postgres") => Box::new(move || {
            let _ = {
                let (a, nick) = pick(rng, accounts);
                let found = single(pg_in_context(raw, &st.set_config, &a.user_id, |tx| {
                    pg_rows(
                        tx.query(&st.by_nickname, &[&a.id, &a.user_id, &nick])
                            .expect("lookup"),
                    )
                }))
                .expect("found");
                let (credential, api, secret) =
                    pg_in_context(raw, &st.set_config, &a.user_id, |tx| {
                        let row = tx
                            .query_one(&st.keys, &[&a.id, &a.user_id, &found.id, &1i64])
                            .expect("keys");
                        (
                            credential_from_pg(&row),
                            row.get::<_, String>(9),
                            row.get::<_, String>(10),
                        )
                    });
                black_box(open_keys(sealer, &credential, &api, &secret))
            };
        }),
        (Op::FindAll, "crate") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(
                    store
                        .find_by_nickname(a, SHARED_NICKNAME)
                        .expect("find all"),
                )
            };
        }),
        (Op::FindAll, "diesel") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(diesel_in_context(diesel, &a.user_id, |c| {
                    diesel_pg::by_nickname(c, a, SHARED_NICKNAME)
                }))
            };
        }),
        (Op::FindAll, "postgres") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(pg_in_context(raw, &st.set_config, &a.user_id, |tx| {
                    pg_rows(
                        tx.query(&st.by_nickname, &[&a.id, &a.user_id, &SHARED_NICKNAME])
                            .expect("find all"),
                    )
                }))
            };
        }),
        (Op::ByType, "crate") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(store.find_by_type(a, pick_type(rng)).expect("by type"))
            };
        }),
        (Op::ByType, "diesel") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                let t = pick_type(rng);
                black_box(diesel_in_context(diesel, &a.user_id, |c| {
                    diesel_pg::by_type(c, a, t)
                }))
            };
        }),
        (Op::ByType, "postgres") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                let t = pick_type(rng);
                black_box(pg_in_context(raw, &st.set_config, &a.user_id, |tx| {
                    pg_rows(
                        tx.query(&st.by_type, &[&a.id, &a.user_id, &t])
                            .expect("by type"),
                    )
                }))
            };
        }),
        (Op::List, "crate") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(store.list_credentials(a).expect("list"))
            };
        }),
        (Op::List, "diesel") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(diesel_in_context(diesel, &a.user_id, |c| {
                    diesel_pg::list(c, a)
                }))
            };
        }),
        (Op::List, "postgres") => Box::new(move || {
            let _ = {
                let a = &accounts[rng.below(accounts.len())];
                black_box(pg_in_context(raw, &st.set_config, &a.user_id, |tx| {
                    pg_rows(tx.query(&st.list, &[&a.id, &a.user_id]).expect("list"))
                }))
            };
        }),
        (Op::InsertOne | Op::InsertBatch, "crate") => {
            let new = new_credentials(op.batch());
            Box::new(move || {
                let _ = {
                    let a = &inserters[rng.below(inserters.len())];
                    black_box(store.insert_credentials(a, &new).expect("insert"))
                };
            })
        }
        (Op::InsertOne | Op::InsertBatch, "diesel") => Box::new(move || {
            let _ = {
                let a = &inserters[rng.below(inserters.len())];
                let prepared = prepare_rows(sealer, a, op.batch());
                let rows = diesel_rows(&prepared, a, now());
                black_box(diesel_in_context(diesel, &a.user_id, |c| {
                    let owner = diesel_pg::owner(c, a)?;
                    assert_eq!(owner.as_deref(), Some(a.user_id.as_str()));
                    diesel_pg::insert(c, &rows)
                }))
            };
        }),
        (Op::InsertOne | Op::InsertBatch, "postgres") => {
            let insert = if op == Op::InsertOne {
                st.insert_one.clone()
            } else {
                st.insert_batch.clone()
            };
            Box::new(move || {
                let _ = {
                    let a = &inserters[rng.below(inserters.len())];
                    let prepared = prepare_rows(sealer, a, op.batch());
                    let at = now();
                    let nickname: Option<&str> = Some("inserted");
                    let expires: Option<chrono::DateTime<chrono::Utc>> = None;
                    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        Vec::with_capacity(op.batch() * 11);
                    for p in &prepared {
                        params.extend_from_slice(&[
                            &p.id as &(dyn postgres::types::ToSql + Sync),
                            &a.id,
                            &a.user_id,
                            &"alpaca_paper",
                            &nickname,
                            &p.api_key,
                            &p.secret_key,
                            &true,
                            &expires,
                            &at,
                            &at,
                        ]);
                    }
                    black_box(pg_in_context(raw, &st.set_config, &a.user_id, |tx| {
                        let owner: Option<String> = tx
                            .query_opt(&st.owner, &[&a.id, &1i64])
                            .expect("owner")
                            .map(|r| r.get(0));
                        assert_eq!(owner.as_deref(), Some(a.user_id.as_str()));
                        pg_rows(tx.query(&insert, &params).expect("insert"))
                    }))
                };
            })
        }
        other => unreachable!("no PostgreSQL benchmark {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Checks before timing: every implementation returns the same thing

pub fn check_sqlite(fx: &mut SqliteFixture) {
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let (a, nick) = pick(&mut rng, &fx.accounts);
        let by_crate = fx.store.find_one_by_nickname(a, nick).expect("lookup");
        let by_diesel =
            single(diesel_sqlite::by_nickname(&mut fx.diesel, a, nick).expect("lookup"));
        let by_raw = single(rusqlite_by(&fx.raw, &fx.sql.by_nickname, a, nick));
        assert!(by_crate.is_some());
        assert_eq!(by_crate, by_diesel);
        assert_eq!(by_crate, by_raw);
        let c = by_crate.expect("found");
        let keys = fx.store.credential_keys(a, c.id).expect("keys");
        let (credential, api, secret) = rusqlite_keys(&fx.raw, &fx.sql.keys, a, c.id);
        let raw_keys = open_keys(&fx.sealer, &credential, &api, &secret);
        assert_eq!(
            keys.api_key().expose_secret(),
            raw_keys.api_key.expose_secret()
        );
        assert_eq!(
            keys.secret_key().expose_secret(),
            raw_keys.secret_key.expose_secret()
        );
        assert_eq!(
            fx.store.list_credentials(a).expect("list"),
            diesel_sqlite::list(&mut fx.diesel, a).expect("list")
        );
        assert_eq!(
            fx.store.find_by_type(a, "polygon").expect("type"),
            rusqlite_by(&fx.raw, &fx.sql.by_type, a, "polygon")
        );
        assert_eq!(
            fx.store
                .find_by_nickname(a, SHARED_NICKNAME)
                .expect("all")
                .len(),
            2
        );
    }
    // What the baselines insert, the crate reads and decrypts.
    let a = fx.inserters[0].clone();
    let stored = rusqlite_insert(&mut fx.raw, &fx.sql, &fx.sql.insert_one, &fx.sealer, &a, 1);
    let keys = fx.store.credential_keys(&a, stored[0].id).expect("keys");
    assert_eq!(keys.secret_key().expose_secret(), INSERT_SECRET);
    fx.cleanup();
}

pub fn check_pg(fx: &mut PgFixture) {
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let (a, nick) = pick(&mut rng, &fx.accounts);
        let by_crate = fx.store.find_one_by_nickname(a, nick).expect("lookup");
        let by_diesel = single(diesel_in_context(&mut fx.diesel, &a.user_id, |c| {
            diesel_pg::by_nickname(c, a, nick)
        }));
        let by_raw = single(pg_rows(
            fx.raw
                .query(&fx.st.by_nickname, &[&a.id, &a.user_id, &nick])
                .expect("lookup"),
        ));
        assert!(by_crate.is_some());
        assert_eq!(by_crate, by_diesel);
        assert_eq!(by_crate, by_raw);
        let c = by_crate.expect("found");
        let keys = fx.store.credential_keys(a, c.id).expect("keys");
        let (credential, api, secret) = diesel_in_context(&mut fx.diesel, &a.user_id, |conn| {
            diesel_pg::keys(conn, a, c.id)
        });
        let raw_keys = open_keys(&fx.sealer, &credential, &api, &secret);
        assert_eq!(
            keys.api_key().expose_secret(),
            raw_keys.api_key.expose_secret()
        );
        assert_eq!(
            fx.store.list_credentials(a).expect("list"),
            diesel_in_context(&mut fx.diesel, &a.user_id, |conn| diesel_pg::list(conn, a))
        );
    }
    fx.cleanup();
}

/// The implementations benchmarked for an operation on a backend.
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

/// The statements in SQLite's dialect.
pub fn sqlite_sql() -> Sql {
    sql_for!(Sqlite)
}

/// The statements in PostgreSQL's dialect.
pub fn pg_sql() -> Sql {
    sql_for!(Pg)
}
