//! MariaDB/MySQL for `mysql_lookup.rs`: the server and its URLs, the throwaway
//! databases (dropped when [`Databases`] is dropped, also while a panic unwinds),
//! the dataset built through the crate, the crate's SQL text recorded on a
//! `MysqlConnection`, and the raw `mysql` crate baseline that prepares that text.
//!
//! Every connection, the crate's and the baseline's, goes over TCP: the URLs say
//! `prefer_socket=false`, because both drivers (mysql_async under the crate, `mysql`)
//! otherwise switch a loopback connection to the server's unix socket, and the
//! round-trip counting proxy must see the traffic.

use crate::trace::{self, BEGIN, COMMIT};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use credential_store::internals::{self, InsertRow, MysqlConnection, StoredCredential};
use credential_store::{
    CredentialStore, Database, DatabaseOptions, Keyring, UserAccount, UserCredential,
};
use diesel::connection::InstrumentationEvent;
use diesel::Connection;
use mysql::prelude::Queryable;
use mysql::{Params, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The dataset's shape (as `support/mod.rs` builds the SQLite and PostgreSQL ones)

#[path = "shape.rs"]
mod shape;
pub use shape::*;

/// Rows of the batch insert.
pub const BATCH: usize = 100;
#[path = "inserts.rs"]
mod inserts;
pub use inserts::*;

/// SplitMix64: deterministic picks, the same sequence for every implementation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (((z ^ (z >> 31)) >> 11) % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// Configuration

/// The sizes, in credentials: `CREDENTIAL_STORE_BENCH_SIZES=10000,100000`; 10k by
/// default.
pub fn sizes() -> Vec<usize> {
    let Ok(list) = std::env::var("CREDENTIAL_STORE_BENCH_SIZES") else {
        return vec![10_000];
    };
    let sizes: Vec<usize> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("CREDENTIAL_STORE_BENCH_SIZES: `{s}` is not a number"))
        })
        .collect();
    assert!(
        sizes
            .iter()
            .all(|&r| r >= 10 * CREDENTIALS_PER_ACCOUNT && r % CREDENTIALS_PER_ACCOUNT == 0),
        "sizes must be multiples of {CREDENTIALS_PER_ACCOUNT}, at least 100"
    );
    sizes
}

/// The server, without a database: `CREDENTIAL_STORE_BENCH_MYSQL`, default
/// `mysql://root@127.0.0.1:3306` (a user allowed to create databases).
pub fn server() -> String {
    std::env::var("CREDENTIAL_STORE_BENCH_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The URL of `database` (or of no database) on `server`, over TCP.
pub fn url(server: &str, database: Option<&str>) -> String {
    format!(
        "{server}/{}?prefer_socket=false",
        database.unwrap_or_default()
    )
}

/// `server` with its host and port replaced by `addr` (the counting proxy).
pub fn via(server: &str, addr: std::net::SocketAddr) -> String {
    let (scheme_user, rest) = server.split_once('@').expect("a mysql://user@host URL");
    let tail = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    format!("{scheme_user}@{addr}{tail}")
}

/// The loopback address the server URL names, if it is one (the proxy forwards to
/// loopback only).
pub fn loopback_addr(server: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = server.split_once('@')?.1;
    let host_port = rest.split(['/', '?']).next()?;
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:3306")
    };
    host_port
        .to_socket_addrs()
        .ok()?
        .find(|a| a.ip().is_loopback())
}

/// The session set-up diesel-async's `AsyncMysqlConnection` sends when it connects
/// (`CONNECTION_SETUP_QUERIES`, diesel-async 0.9): the baseline sends the same.
pub const SESSION_SETUP: [&str; 4] = [
    "SET time_zone = '+00:00';",
    "SET character_set_client = 'utf8mb4'",
    "SET character_set_connection = 'utf8mb4'",
    "SET character_set_results = 'utf8mb4'",
];

/// A connection of the `mysql` crate set up as diesel-async sets up the crate's:
/// the same session statements and `CLIENT_FOUND_ROWS`.
pub fn raw_connect(url: &str) -> mysql::Result<mysql::Conn> {
    let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url)?)
        .init(SESSION_SETUP.to_vec())
        .additional_capabilities(mysql::consts::CapabilityFlags::CLIENT_FOUND_ROWS);
    mysql::Conn::new(opts)
}

// ---------------------------------------------------------------------------
// Databases

/// The databases this run created; each is dropped when this is dropped (at the end,
/// or while a panic unwinds; not on SIGKILL or Ctrl-C).
pub struct Databases {
    server: String,
    token: String,
    names: Vec<String>,
}

impl Databases {
    pub fn new(server: &str) -> Self {
        Databases {
            server: server.to_owned(),
            // The random tail of a UUIDv7.
            token: Uuid::now_v7().simple().to_string()[20..].to_owned(),
            names: Vec::new(),
        }
    }

    /// Creates `credential_store_bench_<random>_<rows>` and returns its name.
    pub fn create(&mut self, rows: usize) -> String {
        let name = format!("credential_store_bench_{}_{rows}", self.token);
        let mut admin = raw_connect(&url(&self.server, None)).expect("connect to MariaDB");
        admin
            .query_drop(format!(
                "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
            ))
            .expect("CREATE DATABASE");
        self.names.push(name.clone());
        name
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        match raw_connect(&url(&self.server, None)) {
            Ok(mut admin) => {
                for name in self.names.drain(..) {
                    match admin.query_drop(format!("DROP DATABASE IF EXISTS {name}")) {
                        Ok(()) => eprintln!("dropped database {name}"),
                        Err(err) => eprintln!("could not drop database {name}: {err}"),
                    }
                }
            }
            Err(err) => eprintln!(
                "could not connect to drop the databases {:?}: {err}",
                self.names
            ),
        }
    }
}

/// Builds the dataset through the crate: migrations, then per account
/// `create_account` and one `insert_credentials` of its ten credentials (sealed under
/// [`keyring`]), on two threads; then the [`INSERT_ACCOUNTS`] and `ANALYZE TABLE`.
pub fn build_dataset(url: &str, rows: usize) {
    let started = Instant::now();
    let db = Database::open_with(url, &DatabaseOptions::default().max_connections(4))
        .expect("open the dataset");
    db.run_migrations().expect("migrations");
    let store = CredentialStore::new(db, keyring());
    let accounts = rows / CREDENTIALS_PER_ACCOUNT;
    let threads = 2;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let store = &store;
            scope.spawn(move || {
                for i in (t..accounts).step_by(threads) {
                    write_account(store, i);
                }
            });
        }
    });
    write_insert_accounts(&store);
    drop(store);
    let mut conn = raw_connect(url).expect("connect");
    conn.query_drop("ANALYZE TABLE user_accounts, user_credentials")
        .expect("ANALYZE TABLE");
    eprintln!(
        "built the MariaDB dataset ({rows} credentials, {accounts} accounts) through the crate in {:.1?}",
        started.elapsed()
    );
}

/// Deletes what the insert benchmarks wrote, so the dataset keeps its size.
pub fn delete_inserted(conn: &mut mysql::Conn) {
    conn.query_drop(
        "DELETE FROM user_credentials WHERE user_account_id IN
            (SELECT id FROM user_accounts WHERE user_id LIKE 'bench-insert-%')",
    )
    .expect("delete inserted rows");
}

/// The dataset's accounts (`bench-user-…`, in order) and the insert accounts.
pub fn load_accounts(conn: &mut mysql::Conn) -> (Vec<UserAccount>, Vec<UserAccount>) {
    // Prepared, so that rows come in the binary protocol `Cols` reads.
    let all: Vec<UserAccount> = conn
        .exec_map(
            "SELECT id, user_id, account_name, is_active, created_at, updated_at
             FROM user_accounts ORDER BY user_id",
            (),
            |row: mysql::Row| {
                let mut c = Cols::new(row);
                let (id, user_id, account_name) = (c.uuid(), c.text(), c.text());
                let (is_active, created_at, updated_at) = (c.flag(), c.time(), c.time());
                internals::user_account(
                    id,
                    user_id,
                    account_name,
                    is_active,
                    created_at,
                    updated_at,
                )
            },
        )
        .expect("accounts");
    all.into_iter()
        .partition(|a| a.user_id().starts_with("bench-user-"))
}

// ---------------------------------------------------------------------------
// The crate's SQL text, recorded on a `MysqlConnection`

/// The statements the crate sends for the benchmarked operations on MySQL, binds
/// left out, as diesel's instrumentation reports them when the crate's own
/// statements (`credential_store::internals`) run on a `MysqlConnection`.
#[derive(Debug, Clone)]
pub struct MysqlSql {
    /// `credentials_by_nickname` / `credential_by_nickname`: account id, user id, nickname,
    /// exact input.
    pub by_nickname: String,
    /// `keys_by_nickname`: the same parameters.
    pub keys_by_nickname: String,
    /// A one-row `insert_credentials`: the INSERT, then the read-back by id.
    pub insert_one: [String; 2],
    /// A [`BATCH`]-row `insert_credentials`: the INSERT, then the read-back by ids.
    pub insert_batch: [String; 2],
}

impl MysqlSql {
    /// Runs each statement once on a new connection to `url`, in a transaction that
    /// is rolled back; the inserts write (and roll back) rows under `account`, which
    /// must exist, so that the read-back after the INSERT runs too.
    pub fn recorded(url: &str, account: &UserAccount, keyring: &Keyring) -> Self {
        let mut conn = MysqlConnection::establish(url).expect("a MysqlConnection");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&log);
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                let text = query.to_string();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(internals::without_binds(&text).to_owned());
            }
        });
        let mut sql_of = |what: &str, run: &mut dyn FnMut(&mut MysqlConnection)| -> Vec<String> {
            let take = || std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
            let mut statements = Vec::new();
            let _ = conn.transaction::<(), diesel::result::Error, _>(|c| {
                take();
                run(c);
                statements = take();
                Err(diesel::result::Error::RollbackTransaction)
            });
            assert!(
                !statements.is_empty(),
                "{what}: diesel's instrumentation recorded nothing"
            );
            statements
        };
        let one = |statements: Vec<String>, what: &str| -> String {
            match <[String; 1]>::try_from(statements) {
                Ok([sql]) => sql,
                Err(s) => panic!("{what}: expected one statement, recorded {s:?}"),
            }
        };
        let two = |statements: Vec<String>, what: &str| -> [String; 2] {
            <[String; 2]>::try_from(statements).unwrap_or_else(|s| {
                panic!("{what}: expected an INSERT and a read-back, recorded {s:?}")
            })
        };
        let keys = InsertKeys::new();
        let by_nickname = one(
            sql_of("by nickname", &mut |c| {
                internals::credentials_by_nickname(c, account, "x", "x").expect("by nickname");
            }),
            "by nickname",
        );
        let keys_by_nickname = one(
            sql_of("keys by nickname", &mut |c| {
                internals::credentials_by_nickname_with_ciphertexts(c, account, "x", "x")
                    .expect("keys by nickname");
            }),
            "keys by nickname",
        );
        let insert_one = two(
            sql_of("insert one", &mut |c| {
                let rows = insert_rows(keyring, account, &keys, 1);
                let stored = internals::insert_credential(c, rows[0].clone()).expect("insert one");
                assert_eq!(stored.len(), 1);
            }),
            "insert one",
        );
        let insert_batch = two(
            sql_of("insert batch", &mut |c| {
                let rows = insert_rows(keyring, account, &keys, BATCH);
                let stored = internals::insert_credentials(c, rows).expect("insert batch");
                assert_eq!(stored.len(), BATCH);
            }),
            "insert batch",
        );
        MysqlSql {
            by_nickname,
            keys_by_nickname,
            insert_one,
            insert_batch,
        }
    }
}

// ---------------------------------------------------------------------------
// Rows as a baseline writes them

// ---------------------------------------------------------------------------
// Values of the `mysql` crate, as the crate's MySQL types encode them

fn uuid_value(id: Uuid) -> Value {
    Value::Bytes(id.hyphenated().to_string().into_bytes())
}

fn time_value(t: DateTime<Utc>) -> Value {
    Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.timestamp_subsec_micros(),
    )
}

fn text_value(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

/// The columns of one row of the binary protocol, read in order.
struct Cols(std::vec::IntoIter<Value>);

impl Cols {
    fn new(row: mysql::Row) -> Self {
        Cols(row.unwrap().into_iter())
    }

    fn next(&mut self) -> Value {
        self.0.next().expect("a column")
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        match self.next() {
            Value::NULL => None,
            Value::Bytes(b) => Some(b),
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::try_parse_ascii(&self.bytes().expect("an id")).expect("a UUID")
    }

    fn text(&mut self) -> String {
        String::from_utf8(self.bytes().expect("text")).expect("UTF-8")
    }

    fn opt_text(&mut self) -> Option<String> {
        self.bytes().map(|b| String::from_utf8(b).expect("UTF-8"))
    }

    /// A ciphertext, read as the crate reads it (bytes that are not UTF-8 become
    /// U+FFFD).
    fn lossy(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes().expect("text")).into_owned()
    }

    /// The account's data-key columns of a left join: all NULL, or the four.
    fn data_key(&mut self) -> Option<(i32, String, String, String)> {
        let version = match self.next() {
            Value::NULL => None,
            Value::Int(i) => Some(i as i32),
            Value::UInt(i) => Some(i as i32),
            Value::Bytes(b) => Some(
                String::from_utf8(b)
                    .expect("UTF-8")
                    .parse()
                    .expect("a version"),
            ),
            other => panic!("expected a version, got {other:?}"),
        };
        let rest = (self.opt_text(), self.opt_text(), self.opt_text());
        match (version, rest) {
            (Some(v), (Some(p), Some(k), Some(w))) => Some((v, p, k, w)),
            _ => None,
        }
    }

    fn flag(&mut self) -> bool {
        match self.next() {
            Value::Int(i) => i != 0,
            Value::UInt(i) => i != 0,
            other => panic!("expected a flag, got {other:?}"),
        }
    }

    fn opt_time(&mut self) -> Option<DateTime<Utc>> {
        match self.next() {
            Value::NULL => None,
            Value::Date(y, mo, d, h, mi, s, us) => Some(
                NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                    .and_then(|date| date.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
                    .expect("a valid DATETIME")
                    .and_utc(),
            ),
            other => panic!("expected a DATETIME, got {other:?}"),
        }
    }

    fn time(&mut self) -> DateTime<Utc> {
        self.opt_time().expect("a time")
    }

    /// The crate's credential columns, in the order it selects them.
    fn credential(&mut self) -> UserCredential {
        internals::user_credential(
            self.uuid(),
            self.uuid(),
            self.text(),
            self.text(),
            self.opt_text(),
            self.flag(),
            self.opt_time(),
            self.time(),
            self.time(),
        )
    }
}

// ---------------------------------------------------------------------------
// The baseline: the `mysql` crate, the crate's SQL text prepared once

/// A prepared statement and the text it was prepared from (recorded as sent).
pub struct RawStatement {
    pub sql: String,
    prepared: mysql::Statement,
}

impl RawStatement {
    fn prepare(conn: &mut mysql::Conn, sql: &str) -> Self {
        RawStatement {
            sql: sql.to_owned(),
            prepared: conn
                .prep(sql)
                .unwrap_or_else(|err| panic!("prepare {sql}: {err}")),
        }
    }
}

/// The `mysql` crate on one connection, every statement prepared up front from the
/// crate's SQL text; each call records the text it sends (`trace::sent`).
pub struct Raw {
    pub conn: mysql::Conn,
    by_nickname: RawStatement,
    keys_by_nickname: RawStatement,
    insert_one: [RawStatement; 2],
    insert_batch: [RawStatement; 2],
}

impl Raw {
    pub fn open(url: &str, sql: &MysqlSql) -> Self {
        let mut conn = raw_connect(url).expect("connect with the mysql crate");
        let mut prepare = |text: &str| RawStatement::prepare(&mut conn, text);
        let by_nickname = prepare(&sql.by_nickname);
        let keys_by_nickname = prepare(&sql.keys_by_nickname);
        let insert_one = [prepare(&sql.insert_one[0]), prepare(&sql.insert_one[1])];
        let insert_batch = [prepare(&sql.insert_batch[0]), prepare(&sql.insert_batch[1])];
        Raw {
            conn,
            by_nickname,
            keys_by_nickname,
            insert_one,
            insert_batch,
        }
    }

    /// The crate's lookup by nickname; the nickname bound twice (normalised and as
    /// given), as the crate binds it (the dataset's nicknames are normalised).
    pub fn by_nickname(&mut self, a: &UserAccount, nickname: &str) -> Vec<UserCredential> {
        let st = &self.by_nickname;
        trace::sent(&st.sql);
        self.conn
            .exec_map(
                &st.prepared,
                Params::Positional(vec![
                    uuid_value(a.id()),
                    text_value(a.user_id()),
                    text_value(nickname),
                    text_value(nickname),
                ]),
                |row: mysql::Row| Cols::new(row).credential(),
            )
            .expect("lookup by nickname")
    }

    /// The crate's decrypted lookup's statement: credentials with their account's
    /// state and their ciphertexts.
    pub fn keys_by_nickname(&mut self, a: &UserAccount, nickname: &str) -> Vec<StoredCredential> {
        let st = &self.keys_by_nickname;
        trace::sent(&st.sql);
        self.conn
            .exec_map(
                &st.prepared,
                Params::Positional(vec![
                    uuid_value(a.id()),
                    text_value(a.user_id()),
                    text_value(nickname),
                    text_value(nickname),
                ]),
                |row: mysql::Row| {
                    let mut c = Cols::new(row);
                    StoredCredential {
                        credential: c.credential(),
                        account_active: c.flag(),
                        api_key: c.lossy(),
                        secret_key: c.lossy(),
                        data_key: c.data_key(),
                    }
                },
            )
            .expect("keys by nickname")
    }

    /// What the crate does for an insert on MySQL: `BEGIN`, the INSERT (values
    /// bound in the order of its columns), the read-back of the rows by id, `COMMIT`;
    /// the rows returned in the order written.
    pub fn insert(&mut self, rows: &[InsertRow]) -> Vec<UserCredential> {
        let [insert, read_back] = match rows.len() {
            1 => &self.insert_one,
            BATCH => &self.insert_batch,
            n => panic!("no statement prepared for {n} rows"),
        };
        let mut params = Vec::with_capacity(rows.len() * 11);
        for r in rows {
            params.extend([
                uuid_value(r.id),
                uuid_value(r.user_account_id),
                text_value(&r.user_id),
                text_value(&r.credential_type),
                r.nickname.as_deref().map_or(Value::NULL, text_value),
                text_value(&r.api_key),
                text_value(&r.secret_key),
                Value::Int(r.is_active.into()),
                r.expires_at.map_or(Value::NULL, time_value),
                time_value(r.created_at),
                time_value(r.updated_at),
            ]);
        }
        trace::sent(BEGIN);
        self.conn.query_drop(BEGIN).expect("BEGIN");
        trace::sent(&insert.sql);
        self.conn
            .exec_drop(&insert.prepared, Params::Positional(params))
            .expect("INSERT");
        trace::sent(&read_back.sql);
        let mut stored = self
            .conn
            .exec_map(
                &read_back.prepared,
                Params::Positional(rows.iter().map(|r| uuid_value(r.id)).collect()),
                |row: mysql::Row| Cols::new(row).credential(),
            )
            .expect("read back");
        trace::sent(COMMIT);
        self.conn.query_drop(COMMIT).expect("COMMIT");
        let position: HashMap<Uuid, usize> =
            rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        stored.sort_by_key(|c| position.get(&c.id).copied().unwrap_or(usize::MAX));
        stored
    }
}
