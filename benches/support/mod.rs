//! What the benchmarks and `benches/maintenance_figures.rs` share: the sizes, the
//! datasets (built once per size and reused), the pseudo-random picks, SQLite
//! connections configured as the crate configures them, and rows decoded as the
//! crate decodes them. What the baselines take from the crate itself (its
//! statements, their SQL text, its sealing of keys, its pragmas) comes from
//! `credential_store::internals`; `trace.rs` (which every target including this
//! file includes too) records what each implementation sends.
//!
//! Included with `#[path]` by each target, so not every target uses every item.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use credential_store::internals::{self, StoredCredential};
use credential_store::schema::user_accounts;
use credential_store::{CredentialStore, Database, DatabaseOptions, UserAccount, UserCredential};
use diesel::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use uuid::Uuid;

#[path = "shape.rs"]
mod shape;
pub use shape::*;

// ---------------------------------------------------------------------------
// Configuration

/// The sizes to run, in credentials: `CREDENTIAL_STORE_BENCH_SIZES=10000,100000`
/// restricts them; otherwise 10k, 100k and 1M, and 10M with
/// `CREDENTIAL_STORE_BENCH_10M=1`.
pub fn sizes() -> Vec<usize> {
    if let Ok(list) = std::env::var("CREDENTIAL_STORE_BENCH_SIZES") {
        let sizes: Vec<usize> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.replace('_', "").parse().unwrap_or_else(|_| {
                    panic!("CREDENTIAL_STORE_BENCH_SIZES: `{s}` is not a number")
                })
            })
            .collect();
        assert!(
            sizes
                .iter()
                .all(|&r| r >= CREDENTIALS_PER_ACCOUNT * 10 && r % CREDENTIALS_PER_ACCOUNT == 0),
            "sizes must be multiples of {CREDENTIALS_PER_ACCOUNT}, at least 100"
        );
        return sizes;
    }
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    if std::env::var("CREDENTIAL_STORE_BENCH_10M").as_deref() == Ok("1") {
        sizes.push(10_000_000);
    }
    sizes
}

/// Which backends to run: `CREDENTIAL_STORE_BENCH_BACKENDS=sqlite` or `postgres`;
/// both by default.
pub fn backend_enabled(name: &str) -> bool {
    match std::env::var("CREDENTIAL_STORE_BENCH_BACKENDS") {
        Ok(list) => list.split(',').any(|b| b.trim() == name),
        Err(_) => true,
    }
}

/// The PostgreSQL server, without a database name:
/// `CREDENTIAL_STORE_BENCH_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`
/// (a superuser, as the crate needs for migrations; superusers bypass row-level
/// security).
pub fn pg_server() -> String {
    std::env::var("CREDENTIAL_STORE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The URL of `database`, in plaintext (`sslmode=disable`) for every connection:
/// the baselines connect without TLS (`postgres::NoTls`), and libpq, under the
/// crate, would otherwise negotiate TLS with a server that offers it, so that the
/// comparison would measure TLS on one side only.
pub fn pg_url(database: &str) -> String {
    format!("{}/{database}?sslmode=disable", pg_server())
}

/// Whether the PostgreSQL server answers; prints why not.
pub fn pg_available() -> bool {
    if !backend_enabled("postgres") {
        return false;
    }
    match postgres::Client::connect(&pg_url("postgres"), postgres::NoTls) {
        Ok(_) => true,
        Err(err) => {
            eprintln!(
                "SKIPPED PostgreSQL: cannot connect to {} ({err}); set CREDENTIAL_STORE_BENCH_POSTGRES",
                pg_server()
            );
            false
        }
    }
}

/// `target/bench-data`, where the SQLite datasets live.
pub fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

pub fn sqlite_dataset_path(rows: usize) -> PathBuf {
    data_dir().join(format!("credentials-{rows}.db"))
}

pub fn pg_dataset_name(rows: usize) -> String {
    format!("credential_store_bench_{rows}")
}

// ---------------------------------------------------------------------------
// Pseudo-random picks

/// SplitMix64: cheap, deterministic, the same sequence for every implementation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// SQLite connections as the crate configures them

/// What `Database` sends to set up every SQLite connection (its pragmas, with the
/// default busy timeout), from the crate: one batch per element.
pub fn sqlite_pragmas() -> &'static [String] {
    static PRAGMAS: OnceLock<Vec<String>> = OnceLock::new();
    PRAGMAS.get_or_init(|| {
        internals::sqlite_pragma_sql(DatabaseOptions::default().busy_timeout)
            .expect("the crate's SQLite pragmas")
    })
}

pub fn rusqlite_open(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open SQLite with rusqlite");
    for pragmas in sqlite_pragmas() {
        crate::trace::sent(pragmas);
        conn.execute_batch(pragmas).expect("pragmas");
    }
    conn
}

pub fn diesel_sqlite_open(path: &Path) -> diesel::SqliteConnection {
    let mut conn = diesel::SqliteConnection::establish(path.to_str().expect("UTF-8 path"))
        .expect("open SQLite with diesel");
    internals::apply_sqlite_pragmas(&mut conn, DatabaseOptions::default().busy_timeout)
        .expect("pragmas");
    conn
}

// ---------------------------------------------------------------------------
// Datasets

/// Builds `rows` credentials through the crate itself: `create_account`, then one
/// `insert_credentials` of ten rows per account, in sealed format under [`keyring`],
/// on `threads` threads. Also creates the [`INSERT_ACCOUNTS`].
pub fn fill_through_crate(store: &CredentialStore, rows: usize, threads: usize) {
    let accounts = rows / CREDENTIALS_PER_ACCOUNT;
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let done = &done;
            scope.spawn(move || {
                let mut i = t;
                while i < accounts {
                    write_account(store, i);
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n % 20_000 == 0 {
                        eprintln!(
                            "  {} of {rows} credentials, {:.0?}",
                            n * CREDENTIALS_PER_ACCOUNT,
                            started.elapsed()
                        );
                    }
                    i += threads;
                }
            });
        }
    });
    write_insert_accounts(store);
}

fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn sqlite_dataset_complete(path: &Path, rows: usize) -> bool {
    if !path.exists() {
        return false;
    }
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return false;
    };
    conn.query_row("SELECT rows FROM bench_meta", [], |r| r.get::<_, i64>(0))
        .map(|r| r as usize == rows)
        .unwrap_or(false)
}

/// The SQLite dataset of `rows` credentials, built through the crate if it does not
/// exist yet (`target/bench-data/credentials-<rows>.db`). Migrations are (re)run.
pub fn sqlite_dataset(rows: usize) -> PathBuf {
    let path = sqlite_dataset_path(rows);
    if !sqlite_dataset_complete(&path, rows) {
        remove_sqlite_files(&path);
        eprintln!("building {} through the crate …", path.display());
        let started = Instant::now();
        let db = Database::open_with(
            path.to_str().expect("UTF-8 path"),
            &DatabaseOptions::default().max_connections(4),
        )
        .expect("open dataset");
        db.run_migrations().expect("migrations");
        let store = CredentialStore::new(db, keyring());
        fill_through_crate(&store, rows, 2);
        drop(store);
        let conn = rusqlite_open(&path);
        conn.execute_batch("CREATE TABLE bench_meta (rows INTEGER NOT NULL);")
            .expect("bench_meta");
        conn.execute("INSERT INTO bench_meta (rows) VALUES (?1)", [rows as i64])
            .expect("bench_meta");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("checkpoint");
        eprintln!(
            "built {} ({rows} credentials) in {:.1?}",
            path.display(),
            started.elapsed()
        );
    }
    let db = Database::open(path.to_str().expect("UTF-8 path")).expect("open dataset");
    db.run_migrations().expect("migrations");
    delete_insert_rows_sqlite(&rusqlite_open(&path));
    warm_file(&path);
    path
}

/// Reads a file through once, so that the first implementation measured does not pay
/// for bringing the dataset into the OS page cache.
pub fn warm_file(path: &Path) {
    let mut file = std::fs::File::open(path).expect("open dataset");
    std::io::copy(&mut file, &mut std::io::sink()).expect("read dataset");
}

/// The same for a PostgreSQL dataset: the table and its indexes into the OS page cache
/// (`pg_prewarm` in `read` mode), or a sequential scan where the extension is missing.
pub fn warm_pg(client: &mut postgres::Client) {
    let prewarmed = client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_prewarm;
             SELECT pg_prewarm(c.oid, 'read') FROM pg_class c
             WHERE c.oid = 'user_credentials'::regclass
                OR c.oid IN (SELECT indexrelid FROM pg_index
                             WHERE indrelid = 'user_credentials'::regclass);",
        )
        .is_ok();
    if !prewarmed {
        client
            .batch_execute("SELECT count(*) FROM user_credentials")
            .expect("scan");
    }
}

pub fn delete_insert_rows_sqlite(conn: &rusqlite::Connection) {
    conn.execute(
        "DELETE FROM user_credentials WHERE user_account_id IN
            (SELECT id FROM user_accounts WHERE user_id LIKE 'bench-insert-%')",
        [],
    )
    .expect("delete inserted rows");
}

pub fn delete_insert_rows_pg(client: &mut postgres::Client) {
    client
        .execute(
            "DELETE FROM user_credentials WHERE user_account_id IN
                (SELECT id FROM user_accounts WHERE user_id LIKE 'bench-insert-%')",
            &[],
        )
        .expect("delete inserted rows");
}

fn pg_dataset_complete(name: &str, rows: usize) -> bool {
    let Ok(mut admin) = postgres::Client::connect(&pg_url("postgres"), postgres::NoTls) else {
        return false;
    };
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .expect("pg_database")
        .is_some();
    if !exists {
        return false;
    }
    let mut client = postgres::Client::connect(&pg_url(name), postgres::NoTls).expect("connect");
    client
        .query_opt("SELECT rows FROM bench_meta", &[])
        .ok()
        .flatten()
        .is_some_and(|r| r.get::<_, i64>(0) as usize == rows)
}

/// Recreates an empty database `name` (dropping connections to it).
pub fn pg_recreate_database(name: &str, template: Option<&str>) {
    let mut admin =
        postgres::Client::connect(&pg_url("postgres"), postgres::NoTls).expect("connect");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop database");
    let template = template
        .map(|t| format!(" TEMPLATE {t} STRATEGY FILE_COPY"))
        .unwrap_or_default();
    // A template must have no other connection: a pool just dropped may take a
    // moment to close its own.
    let mut tries = 0;
    while let Err(err) = admin.batch_execute(&format!("CREATE DATABASE {name}{template}")) {
        tries += 1;
        assert!(tries < 20, "create database {name}: {err}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub fn pg_drop_database(name: &str) {
    let mut admin =
        postgres::Client::connect(&pg_url("postgres"), postgres::NoTls).expect("connect");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop database");
}

/// The PostgreSQL dataset of `rows` credentials (database
/// `credential_store_bench_<rows>`), built if missing: the crate's migrations, then
/// the rows of the SQLite dataset of the same size copied with `COPY` (the sealed
/// ciphertexts are bound to the credential and account ids, which are kept, so they
/// decrypt exactly as if the crate had written them here). Returns its URL.
pub fn pg_dataset(rows: usize) -> String {
    let name = pg_dataset_name(rows);
    let url = pg_url(&name);
    if !pg_dataset_complete(&name, rows) {
        let source = sqlite_dataset(rows);
        eprintln!(
            "building PostgreSQL database {name} from {} …",
            source.display()
        );
        let started = Instant::now();
        pg_recreate_database(&name, None);
        Database::open(&url)
            .expect("open")
            .run_migrations()
            .expect("migrations");
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        copy_sqlite_to_pg(&rusqlite_open(&source), &mut client);
        // One statement per call: VACUUM cannot run in the implicit transaction of
        // a multi-statement query.
        for statement in [
            "VACUUM ANALYZE user_accounts".to_owned(),
            "VACUUM ANALYZE user_credentials".to_owned(),
            "CREATE TABLE bench_meta (rows BIGINT NOT NULL)".to_owned(),
            format!("INSERT INTO bench_meta (rows) VALUES ({rows})"),
        ] {
            client.batch_execute(&statement).expect("finish dataset");
        }
        eprintln!("built {name} in {:.1?}", started.elapsed());
    }
    Database::open(&url)
        .expect("open")
        .run_migrations()
        .expect("migrations");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    delete_insert_rows_pg(&mut client);
    // The insert benchmarks of an earlier run leave dead rows behind: every run
    // starts from a vacuumed table.
    client
        .batch_execute("VACUUM ANALYZE user_credentials")
        .expect("vacuum");
    warm_pg(&mut client);
    url
}

fn copy_escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_table(
    from: &rusqlite::Connection,
    to: &mut postgres::Client,
    table: &str,
    columns: &[&str],
) {
    use std::io::Write;
    let list = columns.join(", ");
    let mut stmt = from
        .prepare(&format!("SELECT {list} FROM {table} ORDER BY id"))
        .expect("select");
    let mut writer = to
        .copy_in(&format!("COPY {table} ({list}) FROM STDIN"))
        .expect("copy in");
    let mut rows = stmt.query([]).expect("query");
    let mut line = String::new();
    while let Some(row) = rows.next().expect("row") {
        line.clear();
        for i in 0..columns.len() {
            if i > 0 {
                line.push('\t');
            }
            match row.get_ref(i).expect("value") {
                rusqlite::types::ValueRef::Null => line.push_str("\\N"),
                rusqlite::types::ValueRef::Integer(v) => {
                    line.push_str(if v != 0 { "t" } else { "f" })
                }
                rusqlite::types::ValueRef::Text(t) => {
                    copy_escape(&mut line, std::str::from_utf8(t).expect("UTF-8"))
                }
                other => panic!("unexpected value {other:?} in {table}"),
            }
        }
        line.push('\n');
        writer.write_all(line.as_bytes()).expect("copy write");
    }
    writer.finish().expect("copy finish");
}

/// Copies both tables, rows and ids unchanged.
pub fn copy_sqlite_to_pg(from: &rusqlite::Connection, to: &mut postgres::Client) {
    copy_table(
        from,
        to,
        "user_accounts",
        &[
            "id",
            "user_id",
            "account_name",
            "is_active",
            "created_at",
            "updated_at",
        ],
    );
    copy_table(
        from,
        to,
        "user_credentials",
        &[
            "id",
            "user_account_id",
            "user_id",
            "credential_type",
            "nickname",
            "api_key",
            "secret_key",
            "is_active",
            "expires_at",
            "created_at",
            "updated_at",
        ],
    );
}

macro_rules! load_accounts_fn {
    ($name:ident, $conn:ty) => {
        /// The dataset's accounts that the read benchmarks pick from (ordered by user
        /// id, the same on both backends), and the insert accounts.
        pub fn $name(conn: &mut $conn) -> (Vec<UserAccount>, Vec<UserAccount>) {
            let all: Vec<UserAccount> = user_accounts::table
                .select(UserAccount::as_select())
                .order(user_accounts::user_id)
                .load(conn)
                .expect("load accounts");
            all.into_iter()
                .partition(|a| a.user_id().starts_with("bench-user-"))
        }
    };
}
load_accounts_fn!(load_accounts_sqlite, diesel::SqliteConnection);
load_accounts_fn!(load_accounts_pg, diesel::PgConnection);

// ---------------------------------------------------------------------------
// Decoding rows as the crate decodes them

/// A SQLite row of the crate's `UserCredential` columns, in `as_select` order: ids
/// parsed from their text, times with the crate's own parser.
pub fn credential_from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserCredential> {
    fn failed(i: usize, err: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(err))
    }
    fn uuid(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
        Uuid::parse_str(row.get_ref(i)?.as_str()?).map_err(|e| failed(i, e))
    }
    fn time(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
        internals::parse_sqlite_timestamp(row.get_ref(i)?.as_str()?).map_err(|e| failed(i, e))
    }
    let expires_at = match row.get_ref(6)? {
        rusqlite::types::ValueRef::Null => None,
        _ => Some(time(row, 6)?),
    };
    Ok(internals::user_credential(
        uuid(row, 0)?,
        uuid(row, 1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        expires_at,
        time(row, 7)?,
        time(row, 8)?,
    ))
}

/// A SQLite row of the crate's `credential_with_ciphertexts` columns: the
/// credential, its account's `is_active`, the two ciphertexts.
pub fn stored_from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCredential> {
    Ok(StoredCredential {
        credential: credential_from_rusqlite(row)?,
        account_active: row.get(9)?,
        api_key: row.get(10)?,
        secret_key: row.get(11)?,
        data_key: match row.get::<_, Option<i32>>(12)? {
            Some(version) => Some((version, row.get(13)?, row.get(14)?, row.get(15)?)),
            None => None,
        },
    })
}

/// A SQLite id bound as the crate binds it: the lowercase hyphenated text.
pub fn sqlite_id(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// A PostgreSQL row of the crate's `UserCredential` columns, in `as_select` order.
pub fn credential_from_pg(row: &postgres::Row) -> UserCredential {
    internals::user_credential(
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
    )
}

/// A PostgreSQL row of the crate's `credential_with_ciphertexts` columns.
pub fn stored_from_pg(row: &postgres::Row) -> StoredCredential {
    StoredCredential {
        credential: credential_from_pg(row),
        account_active: row.get(9),
        api_key: row.get(10),
        secret_key: row.get(11),
        data_key: row
            .get::<_, Option<i32>>(12)
            .map(|version| (version, row.get(13), row.get(14), row.get(15))),
    }
}

/// Shares a value between threads in the figures example.
pub type Shared<T> = Arc<Mutex<T>>;

/// Peak resident memory of this process, from `/proc/self/status` (kB).
pub fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
