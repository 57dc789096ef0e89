//! Crash safety: a child process is killed with SIGKILL at a random moment while it
//! runs an operation, on every backend (SQLite, PostgreSQL, and MariaDB with the
//! `mysql` feature), and the database is checked after every kill.
//!
//! | tests | starting point | the child runs |
//! |---|---|---|
//! | `*_migration_survives_kills` | a fresh, empty database | `Database::run_migrations` |
//! | `*_migration_with_data_survives_kills` | a database at migration 000002 holding credentials without a nickname column (made by migrating, reverting every migration after 000002, then inserting set-based): 20k rows, 100k in a long run | `Database::run_migrations` |
//! | `*_backfill_survives_kills` | a migrated database holding 100k credentials, 60% with a NULL nickname, the others with one already set | `backfill_nicknames(500)` |
//! | `*_rotation_survives_kills` | a migrated database holding credentials written by the crate, 10 per `insert_credentials` call, most in the Fernet format under key A, one account in ten already sealed (v3) under a data key that key B wraps | `rotate_keys(100)` with keyring `[B, A]` |
//!
//! After every kill (and after every attempt the child finished before the kill):
//!
//! - the database opens; SQLite's `PRAGMA integrity_check` says `ok` and
//!   `PRAGMA foreign_key_check` finds nothing; PostgreSQL's and MariaDB's tables are
//!   readable, and on MariaDB no credential is without its account;
//! - diesel's bookkeeping agrees with the schema: each migration's effects are
//!   there, whole, exactly when its version is recorded, `pending_migrations` lists
//!   exactly the others, and a re-run applies exactly those (on MariaDB, where DDL
//!   commits as it goes, the one migration that was being applied may be there in
//!   part or whole without being recorded: see `check_bookkeeping`);
//! - no row is lost or altered: the row count and a hash of the ids and
//!   ciphertexts, and of the ids, owners and types (for the rotation, whose
//!   ciphertexts change: each row is either as it was or sealed (v3) under its
//!   account's data key, every data key is wrapped by B, and every
//!   credential decrypts with keyring `[B, A]` to its original plaintext);
//! - no nickname that was already set has changed;
//! - a re-run of the operation completes and does exactly the work that was left;
//!   after it the operation's end state holds (no NULL nickname; every row sealed
//!   (v3) under its account's data key, one per account, wrapped by B, and a second
//!   rotation rewrites nothing).
//!
//! The kill delay is uniform within the operation's duration, measured by one
//! uninterrupted run first: for half the attempts from just before the child opens
//! the database to the end of the operation, for the other half from the moment the
//! database is open (opening a PostgreSQL pool takes most of a migration's time). An
//! attempt the child finished before its kill does not count as a kill, and moves the
//! window halfway towards the duration it took.
//! Every attempt starts from a copy of one template database (a file copy on
//! SQLite, `CREATE DATABASE … TEMPLATE` on PostgreSQL, each table re-created from
//! `SHOW CREATE TABLE` and copied with `INSERT … SELECT` on MariaDB).
//!
//! The children are this test binary itself, running the ignored `crash_child` test.
//!
//! | variable | meaning |
//! |---|---|
//! | `CREDENTIAL_STORE_KILLS` | kills per operation and backend: 5 by default, 100 or more for a long run |
//! | `CREDENTIAL_STORE_CRASH_SEED` | the seed of every test's PRNG (by default taken from the clock; each test prints its own) |
//! | `CREDENTIAL_STORE_CRASH_ROTATION_ROWS` | credentials in the rotation tests: 2000 by default, 10000 when `CREDENTIAL_STORE_KILLS` is 50 or more |

mod common;

#[cfg(feature = "mysql")]
use common::MysqlConnection;
use common::TestDb;
use credential_store::{
    Backend, CipherFormat, CredentialStore, Database, Keyring, NewUserAccount, NewUserCredential,
    UserAccount,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use secrecy::ExposeSecret;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn main() {
    common::trials::run(vec![
        trial!(crash_child, ignored),
        trial!(sqlite_migration_survives_kills),
        trial!(sqlite_migration_with_data_survives_kills),
        trial!(sqlite_backfill_survives_kills),
        trial!(sqlite_rotation_survives_kills),
        trial!(postgres_migration_survives_kills, [Postgres]),
        trial!(postgres_migration_with_data_survives_kills, [Postgres]),
        trial!(postgres_backfill_survives_kills, [Postgres]),
        trial!(postgres_rotation_survives_kills, [Postgres]),
        #[cfg(feature = "mysql")]
        trial!(mysql_migration_survives_kills, [Mysql]),
        #[cfg(feature = "mysql")]
        trial!(mysql_migration_with_data_survives_kills, [Mysql]),
        #[cfg(feature = "mysql")]
        trial!(mysql_backfill_survives_kills, [Mysql]),
        #[cfg(feature = "mysql")]
        trial!(mysql_rotation_survives_kills, [Mysql]),
    ]);
}

const CHILD_OP: &str = "CREDENTIAL_STORE_CRASH_OP";
const CHILD_URL: &str = "CREDENTIAL_STORE_CRASH_URL";
const CHILD_KEYS: &str = "CREDENTIAL_STORE_CRASH_KEYS";

/// Rows per backfill transaction: small, so that a kill lands mid-run.
const BACKFILL_BATCH: usize = 500;
/// Rows per rotation batch.
const ROTATION_BATCH: usize = 100;
/// Accounts and credentials per account of the backfill's 100k rows.
const ACCOUNTS: usize = 10_000;
const PER_ACCOUNT: usize = 10;
/// The key ids of the rotation tests: the old key A and the new primary key B.
const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";
/// What a credential sealed under its account's data key starts with (sealed v3);
/// the rotation tests' data keys are all wrapped by key B (the old store writes
/// Fernet, without data keys).
const SEALED_V3: &str = "sealed:v3:";

fn kills() -> usize {
    std::env::var("CREDENTIAL_STORE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Accounts (of ten credentials) of the migration with data: 100k rows in a long run
/// (50 kills or more), 20k otherwise.
fn legacy_accounts() -> usize {
    if kills() >= 50 {
        ACCOUNTS
    } else {
        ACCOUNTS / 5
    }
}

fn rotation_rows() -> usize {
    std::env::var("CREDENTIAL_STORE_CRASH_ROTATION_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if kills() >= 50 { 10_000 } else { 2_000 })
}

// ---------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------

/// Run by the crash tests: say `START`, open the database, say `OPENED <microseconds>`,
/// run the operation, say `DONE <microseconds> <result>`. The parent kills it
/// somewhere in between.
fn crash_child() {
    let (Ok(op), Ok(url)) = (std::env::var(CHILD_OP), std::env::var(CHILD_URL)) else {
        eprintln!("crash_child is run by the crash-safety tests, not by hand");
        return;
    };
    let mut out = std::io::stdout();
    writeln!(out, "START").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let db = Database::open(&url).expect("open the database");
    writeln!(out, "OPENED {}", started.elapsed().as_micros()).unwrap();
    let result = match op.as_str() {
        "migrate" => db.run_migrations().expect("migrations").len() as u64,
        "backfill" => CredentialStore::new(db, common::test_keyring())
            .maintenance()
            .backfill_nicknames(BACKFILL_BATCH)
            .expect("backfill"),
        "rotate" => {
            let keys = std::env::var(CHILD_KEYS).expect("the keyring");
            let keyring = Keyring::from_fernet_keys(keys.split(',')).expect("keyring");
            CredentialStore::new(db, keyring)
                .maintenance()
                .rotate_keys(ROTATION_BATCH, &mut |_| {})
                .expect("rotation")
                .rewritten
        }
        other => panic!("unknown operation {other}"),
    };
    writeln!(out, "DONE {} {result}", started.elapsed().as_micros()).unwrap();
    out.flush().unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Migrate,
    MigrateLegacy,
    Backfill,
    Rotate,
}

impl Op {
    /// Whether the operation commits in several steps on `backend`, so that a kill can
    /// land between its first and its last commit: the backfill and the rotation
    /// commit batch by batch; SQLite and PostgreSQL apply every pending migration in
    /// one transaction, MariaDB commits each DDL statement and records each migration
    /// on its own.
    fn is_multi_step(self, backend: Backend) -> bool {
        match self {
            Op::Migrate | Op::MigrateLegacy => backend == Backend::Mysql,
            Op::Backfill | Op::Rotate => true,
        }
    }

    fn child_op(self) -> &'static str {
        match self {
            Op::Migrate | Op::MigrateLegacy => "migrate",
            Op::Backfill => "backfill",
            Op::Rotate => "rotate",
        }
    }
}

/// How a child run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// SIGKILL landed while it ran.
    Killed,
    /// It finished first: how long it took, how long opening the database took, and
    /// what the operation returned.
    Completed {
        micros: u64,
        opened: u64,
        result: u64,
    },
}

/// Runs the child on `url`; kills it `kill_after` after it said `START`.
fn run_child(op: Op, url: &str, keys: Option<&str>, kill_after: Option<Duration>) -> Outcome {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_OP, op.child_op())
        .env(CHILD_URL, url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(keys) = keys {
        command.env(CHILD_KEYS, keys);
    }
    let mut child = command.spawn().expect("spawn a child");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("the child ended ({status}) before it started:\n{seen}\n{stderr}");
        }
        seen.push_str(&line);
        // libtest may print `test crash_child ... ` on the same line.
        if line.contains("START") {
            break;
        }
    }
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
        }
    }
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    if status.signal() == Some(9) {
        return Outcome::Killed;
    }
    assert!(
        status.success(),
        "the child failed ({status}):\n{seen}{rest}\n{stderr}"
    );
    let report = |word: &str| -> Vec<u64> {
        rest.lines()
            .find_map(|l| l.split(word).nth(1))
            .unwrap_or_else(|| panic!("the child did not say {word}:\n{seen}{rest}\n{stderr}"))
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (opened, done) = (report("OPENED "), report("DONE "));
    Outcome::Completed {
        micros: done[0],
        opened: opened[0],
        result: done[1],
    }
}

// ---------------------------------------------------------------------------------
// A PRNG and a hash, both deterministic
// ---------------------------------------------------------------------------------

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// A 64-bit hash in the manner of FNV-1a that takes eight bytes at a time, so that an
/// unoptimised test build hashes 100k rows in milliseconds. Each step is a bijection
/// of the state, so one changed field always changes the result; each field's length
/// is mixed in, so fields cannot run into each other.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29);
    }

    fn field(mut self, text: &str) -> Fnv {
        let mut chunks = text.as_bytes().chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.mix(u64::from_le_bytes(tail));
        self.mix(text.len() as u64);
        self
    }
}

fn seed_for(name: &str) -> u64 {
    if let Some(seed) = std::env::var("CREDENTIAL_STORE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return seed;
    }
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Rng(clock ^ Fnv::new().field(name).0).next()
}

// ---------------------------------------------------------------------------------
// Raw access to the database, outside the crate (as the superuser on PostgreSQL,
// as root on MariaDB)
// ---------------------------------------------------------------------------------

enum Raw {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
    /// Through `common::mysql_raw`: `||` concatenates, `"…"` quotes identifiers.
    #[cfg(feature = "mysql")]
    Mysql(MysqlConnection),
}

/// A row type every backend of the build can load.
#[cfg(feature = "mysql")]
trait Loadable:
    QueryableByName<diesel::sqlite::Sqlite>
    + QueryableByName<diesel::pg::Pg>
    + QueryableByName<diesel::mysql::Mysql>
    + 'static
{
}

#[cfg(feature = "mysql")]
impl<T> Loadable for T where
    T: QueryableByName<diesel::sqlite::Sqlite>
        + QueryableByName<diesel::pg::Pg>
        + QueryableByName<diesel::mysql::Mysql>
        + 'static
{
}

/// A row type every backend of the build can load.
#[cfg(not(feature = "mysql"))]
trait Loadable:
    QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + 'static
{
}

#[cfg(not(feature = "mysql"))]
impl<T> Loadable for T where
    T: QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + 'static
{
}

#[derive(QueryableByName)]
struct Scalar {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    text: String,
}

impl Raw {
    fn open(db: &TestDb) -> Raw {
        match db.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap())
                    .expect("a SQLite connection");
                // As any program sharing the file should: the first connection after a
                // crash recovers the WAL holding a lock, and a pool connection the
                // checks open may be doing that at the same moment.
                conn.batch_execute("PRAGMA busy_timeout = 10000")
                    .expect("busy_timeout");
                Raw::Sqlite(conn)
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = common::mysql_raw(&db.url);
                // GROUP_CONCAT stops at group_concat_max_len bytes (1 MiB by default)
                // with only a warning; `snapshot` concatenates whole tables.
                conn.batch_execute("SET SESSION group_concat_max_len = 1073741824")
                    .expect("group_concat_max_len");
                Raw::Mysql(conn)
            }
            _ => Raw::Pg(PgConnection::establish(&db.url).expect("a PostgreSQL connection")),
        }
    }

    fn batch(&mut self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c.batch_execute(sql),
            Raw::Pg(c) => c.batch_execute(sql),
            #[cfg(feature = "mysql")]
            Raw::Mysql(c) => c.batch_execute(sql),
        }
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
    }

    fn load<T: Loadable>(&mut self, sql: &str) -> Vec<T> {
        match self {
            Raw::Sqlite(c) => diesel::sql_query(sql).load(c),
            Raw::Pg(c) => diesel::sql_query(sql).load(c),
            #[cfg(feature = "mysql")]
            Raw::Mysql(c) => diesel::sql_query(sql).load(c),
        }
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
    }

    /// The `BIGINT` column `n` of the query's one row.
    fn scalar(&mut self, sql: &str) -> i64 {
        let rows: Vec<Scalar> = self.load(sql);
        assert_eq!(rows.len(), 1, "{sql}");
        rows[0].n
    }

    /// The `TEXT` column `text` of every row.
    fn lines(&mut self, sql: &str) -> Vec<String> {
        self.load::<Line>(sql).into_iter().map(|l| l.text).collect()
    }

    fn backend(&self) -> Backend {
        match self {
            Raw::Sqlite(_) => Backend::Sqlite,
            Raw::Pg(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            Raw::Mysql(_) => Backend::Mysql,
        }
    }

    fn is_sqlite(&self) -> bool {
        self.backend() == Backend::Sqlite
    }

    fn is_mysql(&self) -> bool {
        self.backend() == Backend::Mysql
    }

    fn has_table(&mut self, table: &str) -> bool {
        let sql = match self.backend() {
            Backend::Sqlite => format!(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ),
            Backend::Mysql => format!(
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '{table}'"
            ),
            _ => format!(
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_name = '{table}'"
            ),
        };
        self.scalar(&sql) > 0
    }

    fn has_column(&mut self, table: &str, column: &str) -> bool {
        let sql = match self.backend() {
            Backend::Sqlite => format!(
                "SELECT COUNT(*) AS n FROM pragma_table_info('{table}') WHERE name = '{column}'"
            ),
            Backend::Mysql => format!(
                "SELECT COUNT(*) AS n FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = '{table}' AND column_name = '{column}'"
            ),
            _ => format!(
                "SELECT COUNT(*) AS n FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = '{table}' AND column_name = '{column}'"
            ),
        };
        self.scalar(&sql) > 0
    }

    fn has_index(&mut self, index: &str) -> bool {
        let sql = match self.backend() {
            Backend::Sqlite => format!(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = '{index}'"
            ),
            // One row per column of the index.
            Backend::Mysql => format!(
                "SELECT COUNT(*) AS n FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND index_name = '{index}'"
            ),
            _ => format!(
                "SELECT COUNT(*) AS n FROM pg_indexes WHERE schemaname = 'public' AND indexname = '{index}'"
            ),
        };
        self.scalar(&sql) > 0
    }
}

/// One credential row, every column as text.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    account: String,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    credential_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    nickname: Option<String>,
    #[diesel(sql_type = Text)]
    api_key: String,
    #[diesel(sql_type = Text)]
    secret_key: String,
}

/// Every credential, by id. Before migration 000003 there is no nickname column.
///
/// The table comes back as one string (fields and rows joined by the ASCII unit and
/// record separators) and is split here: much faster than loading 100k rows field by
/// field in an unoptimised test build. On MariaDB it comes back in 64 pieces, so
/// that no piece comes near `max_allowed_packet` (16 MiB by default), which a
/// result row may not exceed.
fn snapshot(raw: &mut Raw) -> Vec<Row> {
    if !raw.has_table("user_credentials") {
        return Vec::new();
    }
    let nickname = if raw.has_column("user_credentials", "nickname") {
        "COALESCE('=' || nickname, '!')"
    } else {
        "'!'"
    };
    // MariaDB's ids are CHAR(36) text already, and CAST … AS TEXT is not MariaDB's;
    // its CHAR(31) would be a binary string, a literal is not.
    let (id, account, unit) = match raw.backend() {
        Backend::Sqlite => (
            "CAST(id AS TEXT)",
            "CAST(user_account_id AS TEXT)",
            "char(31)",
        ),
        Backend::Mysql => ("id", "user_account_id", "'\x1f'"),
        _ => (
            "CAST(id AS TEXT)",
            "CAST(user_account_id AS TEXT)",
            "chr(31)",
        ),
    };
    let row = [
        id,
        account,
        "user_id",
        "credential_type",
        nickname,
        "api_key",
        "secret_key",
    ]
    .join(&format!(" || {unit} || "));
    let sql = match raw.backend() {
        Backend::Sqlite => format!(
            "SELECT COALESCE(group_concat({row}, char(30)), '') AS text FROM user_credentials"
        ),
        Backend::Mysql => format!(
            "SELECT GROUP_CONCAT({row} SEPARATOR '\x1e') AS text FROM user_credentials \
             GROUP BY CRC32(id) % 64"
        ),
        _ => {
            format!("SELECT COALESCE(string_agg({row}, chr(30)), '') AS text FROM user_credentials")
        }
    };
    let table = raw.lines(&sql);
    let mut records: Vec<&str> = table
        .iter()
        .flat_map(|piece| piece.split('\x1e'))
        .filter(|r| !r.is_empty())
        .collect();
    // By id: each record starts with its id, all of one width.
    records.sort_unstable();
    let rows: Vec<Row> = records
        .into_iter()
        .map(|r| {
            let f: Vec<&str> = r.split('\x1f').collect();
            assert_eq!(f.len(), 7, "a credential row: {r:?}");
            Row {
                id: f[0].to_owned(),
                account: f[1].to_owned(),
                user_id: f[2].to_owned(),
                credential_type: f[3].to_owned(),
                nickname: f[4].strip_prefix('=').map(str::to_owned),
                api_key: f[5].to_owned(),
                secret_key: f[6].to_owned(),
            }
        })
        .collect();
    rows
}

/// A hash of the ids and ciphertexts, in id order.
fn ciphertext_hash(rows: &[Row]) -> u64 {
    rows.iter()
        .fold(Fnv::new(), |h, r| {
            h.field(&r.id).field(&r.api_key).field(&r.secret_key)
        })
        .0
}

/// A hash of the ids and the columns no operation here may change.
fn identity_hash(rows: &[Row]) -> u64 {
    rows.iter()
        .fold(Fnv::new(), |h, r| {
            h.field(&r.id)
                .field(&r.account)
                .field(&r.user_id)
                .field(&r.credential_type)
        })
        .0
}

/// The first row where `before` and `after` differ, for the failure message.
fn first_difference(before: &[Row], after: &[Row]) -> String {
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        if b != a {
            return format!("row {i}: before {b:?}, after {a:?}");
        }
    }
    format!("{} rows before, {} after", before.len(), after.len())
}

/// The rows an operation starts from, and their hashes.
struct Baseline {
    rows: Vec<Row>,
    ciphertexts: u64,
    identities: u64,
}

impl Baseline {
    fn new(rows: Vec<Row>) -> Baseline {
        Baseline {
            ciphertexts: ciphertext_hash(&rows),
            identities: identity_hash(&rows),
            rows,
        }
    }

    /// Every row there, with its id, owner, type and ciphertexts: the count and the
    /// hashes agree.
    fn assert_no_row_lost(&self, ctx: &str, after: &[Row]) {
        assert_eq!(
            (after.len(), ciphertext_hash(after)),
            (self.rows.len(), self.ciphertexts),
            "{ctx}: rows or ciphertexts lost or changed; {}",
            first_difference(&self.rows, after)
        );
        self.assert_same_identities(ctx, after);
    }

    /// The count and the hash of ids, owners and types agree.
    fn assert_same_identities(&self, ctx: &str, after: &[Row]) {
        assert_eq!(
            (after.len(), identity_hash(after)),
            (self.rows.len(), self.identities),
            "{ctx}: rows lost, or ids, owners or types changed; {}",
            first_difference(&self.rows, after)
        );
    }
}

// ---------------------------------------------------------------------------------
// Checks that hold after every kill
// ---------------------------------------------------------------------------------

/// PostgreSQL and MariaDB: waits until the killed child's sessions are gone, so that
/// nothing it sent can still commit behind the checks. (A MariaDB session finishes
/// the statement it is running before it notices that its client is gone, and an
/// ALTER TABLE or an autocommitted UPDATE then commits.)
fn wait_for_sessions_to_end(db: &TestDb) {
    let sql = match db.backend {
        Backend::Sqlite => return,
        Backend::Mysql => {
            "SELECT COUNT(*) AS n FROM information_schema.processlist
             WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        }
        _ => {
            "SELECT COUNT(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()"
        }
    };
    let mut raw = Raw::open(db);
    #[cfg(feature = "mysql")]
    if db.backend == Backend::Mysql {
        // MariaDB finishes a multi-statement request whose client is gone, so a
        // SIGKILL alone never leaves a migration file half-run. Ending the dead
        // child's sessions on the server too (as a server crash or an operator's
        // KILL would) stops the request between, or inside, its statements.
        let ids: Vec<i64> = raw
            .load::<Scalar>(
                "SELECT id AS n FROM information_schema.processlist
                 WHERE db = DATABASE() AND id <> CONNECTION_ID()",
            )
            .into_iter()
            .map(|row| row.n)
            .collect();
        for id in ids {
            // The session may have ended by itself meanwhile.
            if let Raw::Mysql(conn) = &mut raw {
                let _ = conn.batch_execute(&format!("KILL CONNECTION {id}"));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let others = raw.scalar(sql);
        if others == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{others} session(s) of the killed child still open after 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The database opens, and is intact (SQLite) or readable (PostgreSQL, MariaDB; on
/// MariaDB, whose copies are made with foreign key checks off, no credential is
/// without its account either).
fn check_storage(ctx: &str, db: &TestDb, raw: &mut Raw) {
    Database::open(&db.url).unwrap_or_else(|e| panic!("{ctx}: the database does not open: {e}"));
    if raw.is_sqlite() {
        let integrity = raw.lines("SELECT integrity_check AS text FROM pragma_integrity_check");
        assert_eq!(integrity, ["ok"], "{ctx}: PRAGMA integrity_check");
        let dangling = raw.scalar("SELECT COUNT(*) AS n FROM pragma_foreign_key_check");
        assert_eq!(dangling, 0, "{ctx}: PRAGMA foreign_key_check");
    }
    let mut both = true;
    for table in ["user_accounts", "user_credentials"] {
        if raw.has_table(table) {
            raw.scalar(&format!("SELECT COUNT(*) AS n FROM {table}"));
        } else {
            both = false;
        }
    }
    if raw.is_mysql() && both {
        let orphans = raw.scalar(
            "SELECT COUNT(*) AS n FROM user_credentials c
             LEFT JOIN user_accounts a ON a.id = c.user_account_id WHERE a.id IS NULL",
        );
        assert_eq!(orphans, 0, "{ctx}: credentials without their account");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Effect {
    Present,
    Absent,
    Partial(String),
}

/// A part of a migration's effect: its name, whether it is as the migration leaves
/// it, and whether it is as it was before.
type Part = (&'static str, bool, bool);

fn effect(parts: &[Part]) -> Effect {
    if parts.iter().all(|p| p.1) {
        Effect::Present
    } else if parts.iter().all(|p| p.2) {
        Effect::Absent
    } else {
        let done: Vec<_> = parts.iter().filter(|p| p.1).map(|p| p.0).collect();
        let undone: Vec<_> = parts.iter().filter(|p| !p.1).map(|p| p.0).collect();
        Effect::Partial(format!("done: {done:?}; not done: {undone:?}"))
    }
}

/// What migration `number` has visibly done: `None` for a no-op (SQLite's 000002
/// and 000004, MariaDB's 000002) or a migration this test does not know.
fn migration_effect(raw: &mut Raw, number: u32) -> Option<Effect> {
    let sqlite = raw.is_sqlite();
    let mysql = raw.is_mysql();
    let tables = raw.has_table("user_credentials");
    let parts: Vec<Part> = match number {
        1 => {
            let mut parts = Vec::new();
            if mysql {
                // MariaDB's 000001 creates the old unique index in a statement of its
                // own after the tables, so a run cut off between them leaves the
                // tables without it: it is a part of 000001 there (until 000003,
                // which adds the nickname column, drops it again).
                let unique = raw.has_index("idx_user_credentials_unique");
                let nickname = tables && raw.has_column("user_credentials", "nickname");
                parts.push((
                    "idx_user_credentials_unique (until 000003)",
                    unique || nickname,
                    !unique,
                ));
            }
            for (name, present) in [
                ("user_accounts", raw.has_table("user_accounts")),
                ("user_credentials", tables),
                (
                    "idx_user_accounts_user_id",
                    raw.has_index("idx_user_accounts_user_id"),
                ),
                (
                    "idx_user_credentials_user_id",
                    raw.has_index("idx_user_credentials_user_id"),
                ),
                (
                    "idx_user_credentials_account_id",
                    raw.has_index("idx_user_credentials_account_id"),
                ),
            ] {
                parts.push((name, present, !present));
            }
            parts
        }
        2 if sqlite || mysql => return None,
        2 => {
            let function = raw
                .scalar("SELECT COUNT(*) AS n FROM pg_proc WHERE proname = 'current_user_id'")
                > 0;
            let forced = raw.scalar(
                "SELECT COUNT(*) AS n FROM pg_class
                 WHERE relnamespace = 'public'::regnamespace
                   AND relname IN ('user_accounts', 'user_credentials')
                   AND relrowsecurity AND relforcerowsecurity",
            );
            let enabled = raw.scalar(
                "SELECT COUNT(*) AS n FROM pg_class
                 WHERE relnamespace = 'public'::regnamespace
                   AND relname IN ('user_accounts', 'user_credentials') AND relrowsecurity",
            );
            let policies = raw.scalar(
                "SELECT COUNT(*) AS n FROM pg_policies
                 WHERE schemaname = 'public' AND tablename IN ('user_accounts', 'user_credentials')",
            );
            vec![
                ("current_user_id()", function, !function),
                ("RLS enabled and forced", forced == 2, enabled == 0),
                ("8 policies", policies == 8, policies == 0),
            ]
        }
        3 => {
            let nickname = tables && raw.has_column("user_credentials", "nickname");
            let index = raw.has_index("idx_user_credentials_nickname");
            let unique = raw.has_index("idx_user_credentials_unique");
            // Before 000003 the unique index is there, or (on MariaDB, where 000001
            // may have been cut off before creating it) 000001 is not done: then
            // 000001 is Partial, and a unique index gone without the nickname column
            // is reported there.
            let unique_before = if mysql {
                unique || !nickname
            } else {
                unique || !tables
            };
            vec![
                ("nickname column", nickname, !nickname),
                ("idx_user_credentials_nickname", index, !index),
                (
                    "idx_user_credentials_unique dropped",
                    !unique,
                    unique_before,
                ),
            ]
        }
        4 if sqlite => return None,
        4 => {
            let schema = if mysql { "DATABASE()" } else { "'public'" };
            let not_null = raw.scalar(&format!(
                "SELECT COUNT(*) AS n FROM information_schema.columns
                 WHERE table_schema = {schema}
                   AND table_name IN ('user_accounts', 'user_credentials')
                   AND column_name IN ('is_active', 'created_at', 'updated_at')
                   AND is_nullable = 'NO'"
            ));
            vec![("6 NOT NULL flags and times", not_null == 6, not_null == 0)]
        }
        5 if sqlite => {
            let triggers = raw.scalar(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'trigger' AND name IN (
                     'user_credentials_owner_matches_account_insert',
                     'user_credentials_owner_matches_account_update',
                     'user_accounts_user_id_cascade')",
            );
            vec![("3 owner triggers", triggers == 3, triggers == 0)]
        }
        5 if mysql => {
            let constraints = raw.scalar(
                "SELECT COUNT(*) AS n FROM information_schema.table_constraints
                 WHERE constraint_schema = DATABASE() AND constraint_name IN (
                     'user_accounts_id_user_id_key',
                     'user_credentials_owner_matches_account_fkey')",
            );
            let index = raw.has_index("idx_user_credentials_account_user");
            vec![
                (
                    "owner key and foreign key",
                    constraints == 2,
                    constraints == 0,
                ),
                ("idx_user_credentials_account_user", index, !index),
            ]
        }
        5 => {
            let constraints = raw.scalar(
                "SELECT COUNT(*) AS n FROM pg_constraint WHERE conname IN (
                     'user_accounts_id_user_id_key',
                     'user_credentials_owner_matches_account_fkey')",
            );
            vec![(
                "owner key and foreign key",
                constraints == 2,
                constraints == 0,
            )]
        }
        _ => return None,
    };
    Some(effect(&parts))
}

fn migration_number(version: &str) -> u32 {
    version[version.len().saturating_sub(6)..]
        .parse()
        .unwrap_or(0)
}

fn recorded_versions(raw: &mut Raw) -> Vec<String> {
    if !raw.has_table("__diesel_schema_migrations") {
        return Vec::new();
    }
    let mut versions = raw.lines("SELECT version AS text FROM __diesel_schema_migrations");
    versions.sort();
    versions
}

/// Every migration's effects are there exactly when it is recorded; `pending_migrations`
/// lists the others, and a re-run applies exactly those. Returns how many were
/// recorded before the re-run.
///
/// MariaDB commits each DDL statement on its own, so a migration run there cannot
/// be one transaction: the crate holds a named lock instead, and diesel records each
/// migration (an INSERT into `__diesel_schema_migrations` after the migration's last
/// statement) as it applies it. A kill therefore leaves the migrations before the
/// one being applied whole and recorded; that one absent, partly there (cut off
/// after any of its statements), or all there but not recorded (cut off before the
/// INSERT); and the ones after it untouched. Every MariaDB migration is written to
/// be repeated from the start, which is what the re-run does. So on MariaDB the
/// recorded versions are the first ones, the first migration not recorded may be in
/// any state, every later one is Absent, and after the re-run everything is Present
/// and recorded, as on the other backends.
fn check_bookkeeping(ctx: &str, db: &TestDb, raw: &mut Raw, all: &[String]) -> usize {
    let recorded = recorded_versions(raw);
    for version in &recorded {
        assert!(
            all.contains(version),
            "{ctx}: unknown version {version} recorded"
        );
    }
    let mysql = raw.is_mysql();
    if mysql {
        assert_eq!(
            recorded,
            all[..recorded.len()],
            "{ctx}: the recorded versions are not the first ones"
        );
    }
    let check = |raw: &mut Raw, recorded: &[String], when: &str| {
        // MariaDB: the migration that was being applied when the child died.
        let interrupted = all.iter().find(|v| !recorded.contains(v)).filter(|_| mysql);
        for version in all {
            let Some(effect) = migration_effect(raw, migration_number(version)) else {
                continue;
            };
            if Some(version) == interrupted {
                if effect != Effect::Absent {
                    eprintln!(
                        "crash_safety: {ctx}, {when}: migration {version}, not recorded, \
                         was being applied: {effect:?}"
                    );
                }
                continue;
            }
            let expected = if recorded.contains(version) {
                Effect::Present
            } else {
                Effect::Absent
            };
            assert_eq!(
                effect,
                expected,
                "{ctx}, {when}: migration {version} is {} but its effects are {effect:?} \
                 (recorded: {recorded:?})",
                if recorded.contains(version) {
                    "recorded"
                } else {
                    "not recorded"
                }
            );
        }
    };
    check(raw, &recorded, "after the kill");
    let database = Database::open(&db.url).unwrap();
    let pending = database
        .pending_migrations()
        .unwrap_or_else(|e| panic!("{ctx}: pending_migrations: {e}"));
    let expected: Vec<String> = all
        .iter()
        .filter(|v| !recorded.contains(v))
        .cloned()
        .collect();
    assert_eq!(pending, expected, "{ctx}: pending_migrations");
    let applied = database
        .run_migrations()
        .unwrap_or_else(|e| panic!("{ctx}: re-running the migrations: {e}"));
    assert_eq!(applied, expected, "{ctx}: the re-run applied");
    let now = recorded_versions(raw);
    assert_eq!(now, all, "{ctx}: recorded after the re-run");
    check(raw, all, "after the re-run");
    assert_eq!(
        database.pending_migrations().unwrap(),
        Vec::<String>::new(),
        "{ctx}: pending after the re-run"
    );
    recorded.len()
}

// ---------------------------------------------------------------------------------
// Templates: each attempt starts from a copy
// ---------------------------------------------------------------------------------

/// The name of a MariaDB test database: the last segment of its URL's path.
fn database_name(url: &str) -> &str {
    let path = url.split('?').next().unwrap();
    path.rsplit('/').next().unwrap()
}

/// The first `Create Table` column of `SHOW CREATE TABLE`.
#[derive(QueryableByName)]
struct CreateTable {
    #[diesel(sql_type = Text, column_name = "Create Table")]
    sql: String,
}

/// A copy of `template` (which nothing may be connected to).
fn copy_of(template: &TestDb) -> TestDb {
    let copy = TestDb::for_backend(template.backend);
    match template.backend {
        Backend::Mysql => {
            // MariaDB has no template databases: each table is made again in the
            // copy from the template's `SHOW CREATE TABLE` (which, unlike CREATE
            // TABLE … LIKE, keeps the foreign keys; its REFERENCES name no database,
            // so they point into the copy), then filled with INSERT … SELECT. With
            // foreign key checks off the order does not matter; by name it is the
            // bookkeeping table, the accounts, then the credentials anyway.
            let from = database_name(&template.url);
            let mut raw = Raw::open(&copy);
            raw.batch("SET SESSION FOREIGN_KEY_CHECKS = 0");
            let tables = raw.lines(&format!(
                "SELECT table_name AS text FROM information_schema.tables
                 WHERE table_schema = '{from}' AND table_type = 'BASE TABLE'
                 ORDER BY table_name"
            ));
            for table in &tables {
                let create: Vec<CreateTable> =
                    raw.load(&format!("SHOW CREATE TABLE \"{from}\".\"{table}\""));
                assert_eq!(create.len(), 1, "SHOW CREATE TABLE {table}");
                raw.batch(&create[0].sql);
                raw.batch(&format!(
                    "INSERT INTO \"{table}\" SELECT * FROM \"{from}\".\"{table}\""
                ));
            }
            raw.batch("SET SESSION FOREIGN_KEY_CHECKS = 1");
        }
        Backend::Sqlite => {
            let from = template.sqlite_path();
            let to = copy.sqlite_path();
            std::fs::copy(&from, &to).expect("copy the template");
            let wal = |p: &std::path::Path| {
                let mut p = p.as_os_str().to_owned();
                p.push("-wal");
                std::path::PathBuf::from(p)
            };
            if wal(&from).exists() {
                std::fs::copy(wal(&from), wal(&to)).expect("copy the template's WAL");
            }
        }
        _ => {
            let (admin, name) = copy.pg_admin().unwrap();
            let (_, template_name) = template.pg_admin().unwrap();
            let mut conn = PgConnection::establish(admin).unwrap();
            // A transaction pooler (CREDENTIAL_STORE_TEST_ROUTE=pgbouncer) keeps idle
            // server connections to the template, which a copy may not have.
            conn.batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{template_name}' AND pid <> pg_backend_pid()"
            ))
            .unwrap_or_else(|e| panic!("close the template's idle connections: {e}"));
            conn.batch_execute(&format!("DROP DATABASE {name}"))
                .unwrap_or_else(|e| panic!("drop the empty database: {e}"));
            conn.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template_name}"))
                .unwrap_or_else(|e| panic!("copy the template database: {e}"));
        }
    }
    copy
}

/// Leaves a SQLite template as one self-contained file. (PostgreSQL and MariaDB
/// templates are copied through the server: nothing to do.)
fn settle(template: &TestDb) {
    if template.backend == Backend::Sqlite {
        Raw::open(template).batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }
}

/// `accounts` accounts of `PER_ACCOUNT` credentials each, set-based; types
/// `type_0` … `type_9` (distinct per account, as the old unique index wants).
/// With `nicknames`, some nickname a NULL and the others a set one, in a pattern
/// drawn from `rng`; without, the table has no nickname column yet.
fn populate(raw: &mut Raw, rng: &mut Rng, accounts: usize, nicknames: bool) {
    // Multipliers prime to 10, so that every residue comes up equally often.
    let mut unit = || 10 * rng.below(10) + [1, 3, 7, 9][rng.below(4) as usize];
    let (a, b) = (unit(), unit());
    let c = rng.below(10);
    let nickname_column = if nicknames { ", nickname" } else { "" };
    // 60% NULL; the rest set: equal to the type, another type, text with accents, a bot name.
    let nickname_value = if nicknames {
        format!(
            ", CASE WHEN (i * {a} + j * {b} + {c}) % 10 < 6 THEN NULL
                    WHEN (i * {a} + j * {b} + {c}) % 10 = 6 THEN 'type_' || j
                    WHEN (i * {a} + j * {b} + {c}) % 10 = 7 THEN 'type_' || ((j + 1) % 10)
                    WHEN (i * {a} + j * {b} + {c}) % 10 = 8 THEN 'Momentum Ünïcode ' || i
                    ELSE 'bot-' || j END"
        )
    } else {
        String::new()
    };
    let (last, per) = (accounts - 1, PER_ACCOUNT - 1);
    let sql = if raw.is_mysql() {
        // The SEQUENCE engine's seq_0_to_N tables count; `||` concatenates on a
        // `mysql_raw` connection. Ids in the crate's form (lowercase, hyphenated), and
        // times in UTC, as the crate's connections write them (CURRENT_TIMESTAMP
        // would be in this session's time zone).
        format!(
            "INSERT INTO user_accounts (id, user_id, account_name, created_at, updated_at)
             SELECT '00000000-0000-7000-8000-' || LPAD(seq, 12, '0'), 'user-' || seq, 'legacy',
                    UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
             FROM seq_0_to_{last};
             INSERT INTO user_credentials
                 (id, user_account_id, user_id, credential_type{nickname_column}, api_key, secret_key,
                  created_at, updated_at)
             SELECT LPAD(j, 8, '0') || '-0000-7000-8000-' || LPAD(i, 12, '0'),
                    '00000000-0000-7000-8000-' || LPAD(i, 12, '0'),
                    'user-' || i, 'type_' || j{nickname_value},
                    'api-' || i || '-' || j, 'secret-' || i || '-' || j,
                    UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
             FROM (SELECT seq AS i FROM seq_0_to_{last}) AS n,
                  (SELECT seq AS j FROM seq_0_to_{per}) AS m;
             ANALYZE TABLE user_accounts, user_credentials;"
        )
    } else if raw.is_sqlite() {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})
             INSERT INTO user_accounts (id, user_id, account_name)
             SELECT printf('00000000-0000-7000-8000-%012d', i), 'user-' || i, 'legacy' FROM n;
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}),
                            m(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM m WHERE j < {per})
             INSERT INTO user_credentials
                 (id, user_account_id, user_id, credential_type{nickname_column}, api_key, secret_key)
             SELECT printf('%08d-0000-7000-8000-%012d', j, i), printf('00000000-0000-7000-8000-%012d', i),
                    'user-' || i, 'type_' || j{nickname_value},
                    'api-' || i || '-' || j, 'secret-' || i || '-' || j
             FROM n, m;
             ANALYZE;"
        )
    } else {
        format!(
            "INSERT INTO user_accounts (id, user_id, account_name)
             SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 'user-' || i, 'legacy'
             FROM generate_series(0, {last}) AS i;
             INSERT INTO user_credentials
                 (id, user_account_id, user_id, credential_type{nickname_column}, api_key, secret_key)
             SELECT (lpad(j::text, 8, '0') || '-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid,
                    ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid,
                    'user-' || i, 'type_' || j{nickname_value},
                    'api-' || i || '-' || j, 'secret-' || i || '-' || j
             FROM generate_series(0, {last}) AS i, generate_series(0, {per}) AS j"
        )
    };
    raw.batch(&sql);
    if raw.backend() == Backend::Postgres {
        raw.batch("VACUUM ANALYZE");
    }
}

// ---------------------------------------------------------------------------------
// The kill loop
// ---------------------------------------------------------------------------------

/// The fraction of the operation done when the child died, for the summary.
type Progress = f64;

/// The checks after the child ended, and the re-run: given what to call the attempt
/// in messages, the database and how the child ended; returns the progress at the kill.
type Verify<'a> = Box<dyn FnMut(&str, &TestDb, Outcome) -> Progress + 'a>;

struct Scenario<'a> {
    op: Op,
    backend: Backend,
    /// A new database in the operation's starting state.
    fresh: Box<dyn FnMut() -> TestDb + 'a>,
    /// The keyring the child gets, as `CREDENTIAL_STORE_KEYS` would hold it.
    child_keys: Option<String>,
    /// The checks after the child ended, and the re-run.
    verify: Verify<'a>,
}

fn all_versions() -> Vec<String> {
    TestDb::sqlite().database().pending_migrations().unwrap()
}

/// Runs the scenario's checks, and names the attempt if one fails.
fn verify(scenario: &mut Scenario<'_>, ctx: &str, db: &TestDb, outcome: Outcome) -> Progress {
    catch_unwind(AssertUnwindSafe(|| (scenario.verify)(ctx, db, outcome))).unwrap_or_else(|panic| {
        eprintln!("crash_safety: FAILED at {ctx}");
        resume_unwind(panic)
    })
}

/// At most this many more attempts, after `kills()` kills landed, for a kill between
/// the first and the last commit of a multi-step operation.
const INSIDE_ATTEMPTS: usize = 10;

/// Calibrates on one uninterrupted run, then kills until `kills()` kills landed and,
/// for a multi-step operation, one of them between its first and its last commit.
fn kill_loop(mut scenario: Scenario<'_>, rng: &mut Rng, seed: u64) {
    let started = Instant::now();
    let name = format!("{:?} on {:?}", scenario.op, scenario.backend);
    let target = kills();
    let keys = scenario.child_keys.clone();

    let db = (scenario.fresh)();
    let calibration = run_child(scenario.op, &db.url, keys.as_deref(), None);
    let Outcome::Completed { micros, opened, .. } = calibration else {
        panic!("{name}: the uninterrupted run was killed by someone else")
    };
    verify(
        &mut scenario,
        &format!("{name}, uninterrupted run"),
        &db,
        calibration,
    );
    drop(db);
    let calibrated = micros.max(1);
    let (mut window, mut open) = (calibrated, opened.min(calibrated - 1));

    let multi_step = scenario.op.is_multi_step(scenario.backend);
    let (mut landed, mut attempts, mut finished_first) = (0, 0, 0);
    let mut delays = Vec::new();
    let mut progress = Vec::new();
    // The longest delay after which nothing was done, and the shortest after which
    // everything was (or the child finished first): a kill inside lies between.
    let (mut early, mut late) = (0, window);
    let mut inside_attempts = 0;
    let inside = |progress: &[Progress]| progress.iter().any(|p| *p > 0.0 && *p < 1.0);
    loop {
        let retry = landed >= target;
        if retry && (!multi_step || inside(&progress) || inside_attempts == INSIDE_ATTEMPTS) {
            break;
        }
        attempts += 1;
        assert!(
            retry || attempts <= 4 * target + 10,
            "{name}: {attempts} attempts for {landed} kills: the operation finishes before the \
             kill too often (window {window} µs)"
        );
        let delay = if retry {
            // No kill has landed inside yet: halfway between the latest kill that
            // found nothing done and the earliest that found everything done.
            inside_attempts += 1;
            if late > early + 1 {
                early + (late - early) / 2
            } else {
                open + rng.below(window - open)
            }
        } else if rng.below(2) == 0 {
            // Half the kills anywhere in the run, half once the database is open:
            // opening a PostgreSQL pool takes most of a migration's time.
            rng.below(window)
        } else {
            open + rng.below(window - open)
        };
        let db = (scenario.fresh)();
        let outcome = run_child(
            scenario.op,
            &db.url,
            keys.as_deref(),
            Some(Duration::from_micros(delay)),
        );
        let ctx = format!(
            "{name}, attempt {attempts} (kill {}), kill after {:.1} ms, seed {seed}",
            landed + 1,
            delay as f64 / 1000.0
        );
        wait_for_sessions_to_end(&db);
        let done = verify(&mut scenario, &ctx, &db, outcome);
        match outcome {
            Outcome::Killed => {
                landed += 1;
                delays.push(delay);
                progress.push(done);
                if done <= 0.0 {
                    early = early.max(delay);
                } else if done >= 1.0 {
                    late = late.min(delay);
                }
            }
            Outcome::Completed { micros, opened, .. } => {
                late = late.min(delay);
                // Faster than the window: move it halfway towards this run.
                finished_first += 1;
                window = (window + micros).div_ceil(2).max(1);
                open = (open + opened).div_ceil(2).min(window - 1);
            }
        }
    }
    let buckets = [
        progress.iter().filter(|p| **p <= 0.0).count(),
        progress.iter().filter(|p| **p > 0.0 && **p < 0.5).count(),
        progress.iter().filter(|p| **p >= 0.5 && **p < 1.0).count(),
        progress.iter().filter(|p| **p >= 1.0).count(),
    ];
    eprintln!(
        "crash_safety: {name}: {landed} kills in {attempts} attempts ({finished_first} finished \
         before the kill); uninterrupted run {:.1} ms; kill delays {:.1}..{:.1} ms; state at \
         the kill: nothing done {}, under half {}, half or more {}, all done {}; seed {seed}; \
         {:.1} s in all",
        calibrated as f64 / 1000.0,
        delays.iter().min().copied().unwrap_or(0) as f64 / 1000.0,
        delays.iter().max().copied().unwrap_or(0) as f64 / 1000.0,
        buckets[0],
        buckets[1],
        buckets[2],
        buckets[3],
        started.elapsed().as_secs_f64()
    );
    if multi_step {
        assert!(
            buckets[1] + buckets[2] >= 1,
            "{name}: no kill landed between the first and the last commit in {attempts} \
             attempts ({landed} kills; the last {inside_attempts} attempts aimed there): the \
             kills tested only the states before and after the operation; seed {seed}"
        );
    }
}

/// Runs `body` with its seeded PRNG, and names the seed if it fails.
fn seeded(name: &str, body: impl FnOnce(&mut Rng, u64)) {
    let seed = seed_for(name);
    let mut rng = Rng(seed);
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&mut rng, seed))) {
        eprintln!(
            "crash_safety: {name} FAILED with seed {seed}; CREDENTIAL_STORE_CRASH_SEED={seed} \
             draws the same data and kill delays"
        );
        resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------
// The operations
// ---------------------------------------------------------------------------------

/// Migrating a fresh, empty database.
fn migrate(backend: Backend) {
    seeded(&format!("migrate/{backend:?}"), |rng, seed| {
        let all = all_versions();
        let verify = |ctx: &str, db: &TestDb, outcome: Outcome| {
            let mut raw = Raw::open(db);
            check_storage(ctx, db, &mut raw);
            let recorded = check_bookkeeping(ctx, db, &mut raw, &all);
            if let Outcome::Completed { result, .. } = outcome {
                assert_eq!(result as usize, all.len(), "{ctx}: migrations applied");
            }
            check_storage(&format!("{ctx}, after the re-run"), db, &mut raw);
            recorded as f64 / all.len() as f64
        };
        kill_loop(
            Scenario {
                op: Op::Migrate,
                backend,
                fresh: Box::new(|| TestDb::for_backend(backend)),
                child_keys: None,
                verify: Box::new(verify),
            },
            rng,
            seed,
        );
    });
}

/// Migrating a database at 000002 that holds 100k credentials: 000003 adds and
/// fills the nickname column, 000004 and 000005 check every row.
fn migrate_legacy(backend: Backend) {
    let template = TestDb::for_backend(backend);
    seeded(&format!("migrate_legacy/{backend:?}"), |rng, seed| {
        let all = all_versions();
        {
            let database = template.database();
            database.run_migrations().unwrap();
            for _ in 0..all.len() - 2 {
                database.revert_last_migration().unwrap();
            }
            assert_eq!(database.pending_migrations().unwrap(), all[2..]);
        }
        let before = {
            let mut raw = Raw::open(&template);
            populate(&mut raw, rng, legacy_accounts(), false);
            Baseline::new(snapshot(&mut raw))
        };
        assert_eq!(before.rows.len(), legacy_accounts() * PER_ACCOUNT);
        settle(&template);
        let verify = |ctx: &str, db: &TestDb, _outcome: Outcome| {
            let mut raw = Raw::open(db);
            check_storage(ctx, db, &mut raw);
            let after_kill = snapshot(&mut raw);
            before.assert_no_row_lost(ctx, &after_kill);
            // Migration 000003 fills the nickname column in the transaction that adds it.
            let with_column = raw.has_column("user_credentials", "nickname");
            let filling = raw.is_mysql()
                && with_column
                && !recorded_versions(&mut raw)
                    .iter()
                    .any(|v| migration_number(v) == 3);
            if filling {
                // Except on MariaDB: its ALTER TABLE that adds the column commits on
                // its own, and the UPDATE that fills it is a statement after it, so a
                // kill between the two leaves the column there and NULL. That UPDATE
                // is one InnoDB statement: it filled every row or none.
                let filled = after_kill
                    .iter()
                    .filter(|r| r.nickname.as_ref() == Some(&r.credential_type))
                    .count();
                let empty = after_kill.iter().filter(|r| r.nickname.is_none()).count();
                assert!(
                    filled == after_kill.len() || empty == after_kill.len(),
                    "{ctx}: 000003 not recorded and its nickname column there: {filled} rows \
                     filled, {empty} NULL, of {}",
                    after_kill.len()
                );
            } else {
                for row in &after_kill {
                    let expected = with_column.then_some(&row.credential_type);
                    assert_eq!(
                        row.nickname.as_ref(),
                        expected,
                        "{ctx}: nickname after the kill"
                    );
                }
            }
            let recorded = check_bookkeeping(ctx, db, &mut raw, &all);
            check_storage(&format!("{ctx}, after the re-run"), db, &mut raw);
            let after = snapshot(&mut raw);
            before.assert_no_row_lost(&format!("{ctx}, after the re-run"), &after);
            for row in &after {
                assert_eq!(
                    row.nickname.as_ref(),
                    Some(&row.credential_type),
                    "{ctx}: nickname after the re-run"
                );
            }
            (recorded - 2) as f64 / (all.len() - 2) as f64
        };
        kill_loop(
            Scenario {
                op: Op::MigrateLegacy,
                backend,
                fresh: Box::new(|| copy_of(&template)),
                child_keys: None,
                verify: Box::new(verify),
            },
            rng,
            seed,
        );
    });
}

/// A nickname backfill over 100k credentials, 60% of them with a NULL nickname.
fn backfill(backend: Backend) {
    let template = TestDb::for_backend(backend);
    seeded(&format!("backfill/{backend:?}"), |rng, seed| {
        let all = all_versions();
        template.database().run_migrations().unwrap();
        let before = {
            let mut raw = Raw::open(&template);
            populate(&mut raw, rng, ACCOUNTS, true);
            Baseline::new(snapshot(&mut raw))
        };
        assert_eq!(before.rows.len(), ACCOUNTS * PER_ACCOUNT);
        let nulls = before.rows.iter().filter(|r| r.nickname.is_none()).count();
        assert!(nulls > before.rows.len() / 2 && nulls < before.rows.len() * 7 / 10);
        settle(&template);
        let verify = |ctx: &str, db: &TestDb, outcome: Outcome| {
            let mut raw = Raw::open(db);
            check_storage(ctx, db, &mut raw);
            check_bookkeeping(ctx, db, &mut raw, &all);
            let after_kill = snapshot(&mut raw);
            before.assert_no_row_lost(ctx, &after_kill);
            let mut left = 0;
            for (b, a) in before.rows.iter().zip(&after_kill) {
                match (&b.nickname, &a.nickname) {
                    (Some(set), now) => assert_eq!(
                        now.as_ref(),
                        Some(set),
                        "{ctx}: a nickname that was set changed, credential {}",
                        b.id
                    ),
                    (None, None) => left += 1,
                    (None, Some(now)) => assert_eq!(
                        now, &b.credential_type,
                        "{ctx}: a backfilled nickname, credential {}",
                        b.id
                    ),
                }
            }
            if let Outcome::Completed { result, .. } = outcome {
                assert_eq!(result as usize, nulls, "{ctx}: the child's count");
                assert_eq!(left, 0, "{ctx}: NULL nicknames after a complete run");
            }
            let store = CredentialStore::new(db.database(), common::test_keyring());
            let changed = store
                .maintenance()
                .backfill_nicknames(BACKFILL_BATCH)
                .unwrap_or_else(|e| panic!("{ctx}: re-running the backfill: {e}"));
            assert_eq!(changed as usize, left, "{ctx}: rows the re-run changed");
            check_storage(&format!("{ctx}, after the re-run"), db, &mut raw);
            let after = snapshot(&mut raw);
            before.assert_no_row_lost(&format!("{ctx}, after the re-run"), &after);
            for (b, a) in before.rows.iter().zip(&after) {
                let expected = b.nickname.as_ref().unwrap_or(&b.credential_type);
                assert_eq!(
                    a.nickname.as_ref(),
                    Some(expected),
                    "{ctx}: nickname after the re-run, credential {}",
                    b.id
                );
            }
            1.0 - left as f64 / nulls as f64
        };
        kill_loop(
            Scenario {
                op: Op::Backfill,
                backend,
                fresh: Box::new(|| copy_of(&template)),
                child_keys: None,
                verify: Box::new(verify),
            },
            rng,
            seed,
        );
    });
}

/// A credential the rotation tests wrote, and its plaintext.
struct Written {
    account: usize,
    id: Uuid,
    api_key: String,
    secret_key: String,
}

/// Key rotation from Fernet under key A to sealed (v3, under a data key that key B
/// wraps), over credentials the crate wrote (10 per `insert_credentials` call);
/// one account in ten was written sealed under B already.
fn rotate(backend: Backend) {
    let template = TestDb::for_backend(backend);
    seeded(&format!("rotate/{backend:?}"), |rng, seed| {
        let all = all_versions();
        let key = |id: &str| format!("{id}:{}", Keyring::generate_key().expose_secret());
        let (a, b) = (key(KEY_A), key(KEY_B));
        let new_keys = format!("{b},{a}");
        let ring = |keys: &str| Keyring::from_fernet_keys(keys.split(',')).unwrap();

        let (accounts, written) = {
            let database = template.database();
            database.run_migrations().unwrap();
            let old =
                CredentialStore::new(database.clone(), ring(&a)).with_format(CipherFormat::Fernet);
            let new = CredentialStore::new(database, ring(&new_keys));
            let types = ["alpaca_paper", "alpaca_live", "polygon"];
            let mut accounts: Vec<UserAccount> = Vec::new();
            let mut written = Vec::new();
            for n in 0..rotation_rows().div_ceil(10) {
                let store = if rng.below(10) == 0 { &new } else { &old };
                let user_id = format!("auth0|crash-{n}");
                let account = store
                    .create_account(&NewUserAccount::new(&user_id, "crash"))
                    .unwrap();
                let plain: Vec<(String, String)> = (0..10)
                    .map(|j| {
                        let salt = rng.next();
                        (
                            format!("PK{n}-{j}-{salt:x}"),
                            format!("sk/{n}/{j}/{salt:x}"),
                        )
                    })
                    .collect();
                let nickname = format!("bot {n}");
                let new_credentials: Vec<NewUserCredential<'_>> = plain
                    .iter()
                    .enumerate()
                    .map(|(j, (api_key, secret_key))| {
                        let credential = NewUserCredential::new(
                            types[j % 3],
                            api_key.as_str(),
                            secret_key.as_str(),
                        );
                        if j % 2 == 0 {
                            credential.nickname(&nickname)
                        } else {
                            credential
                        }
                    })
                    .collect();
                let stored = store
                    .insert_credentials(&account, &new_credentials)
                    .unwrap();
                for (credential, (api_key, secret_key)) in stored.iter().zip(plain) {
                    written.push(Written {
                        account: accounts.len(),
                        id: credential.id,
                        api_key,
                        secret_key,
                    });
                }
                accounts.push(account);
            }
            (accounts, written)
        };
        let before = Baseline::new(snapshot(&mut Raw::open(&template)));
        assert_eq!(before.rows.len(), written.len());
        let is_new =
            |r: &Row| r.api_key.starts_with(SEALED_V3) && r.secret_key.starts_with(SEALED_V3);
        // Every data key, made before the run or by it, is wrapped by B.
        let data_keys_under_b = |ctx: &str, db: &TestDb| {
            assert_eq!(
                db.scalar(&format!(
                    "SELECT COUNT(*) AS n FROM account_keys \
                     WHERE provider <> 'keyring' OR kek_id <> '{KEY_B}'"
                )),
                0,
                "{ctx}: a data key not wrapped by {KEY_B}"
            );
        };
        data_keys_under_b("before the run", &template);
        let old_rows = before.rows.iter().filter(|r| !is_new(r)).count();
        assert!(old_rows > 0 && old_rows < before.rows.len());
        settle(&template);

        // Every credential (or only those in `only`) decrypts to its plaintext.
        let assert_readable = |ctx: &str, store: &CredentialStore, only: Option<&HashSet<Uuid>>| {
            for w in written
                .iter()
                .filter(|w| only.is_none_or(|o| o.contains(&w.id)))
            {
                let keys = store
                    .keys(&accounts[w.account], w.id)
                    .unwrap_or_else(|e| panic!("{ctx}: credential {} unreadable: {e}", w.id));
                assert_eq!(
                    (
                        keys.api_key().expose_secret(),
                        keys.secret_key().expose_secret()
                    ),
                    (w.api_key.as_str(), w.secret_key.as_str()),
                    "{ctx}: credential {} decrypts to other plaintext",
                    w.id
                );
            }
        };
        let verify = |ctx: &str, db: &TestDb, outcome: Outcome| {
            let mut raw = Raw::open(db);
            check_storage(ctx, db, &mut raw);
            check_bookkeeping(ctx, db, &mut raw, &all);
            let after_kill = snapshot(&mut raw);
            before.assert_same_identities(ctx, &after_kill);
            let mut stale = HashSet::new();
            for (b, a) in before.rows.iter().zip(&after_kill) {
                assert_eq!(a.nickname, b.nickname, "{ctx}: nickname of {}", b.id);
                let unchanged = (&a.api_key, &a.secret_key) == (&b.api_key, &b.secret_key);
                assert!(
                    unchanged || (is_new(a) && !is_new(b)),
                    "{ctx}: credential {} is neither as it was nor sealed (v3) under {KEY_B}: {a:?}",
                    b.id
                );
                if !is_new(a) {
                    stale.insert(Uuid::parse_str(&a.id).unwrap());
                }
            }
            let left = stale.len();
            data_keys_under_b(ctx, db);
            let store = CredentialStore::new(db.database(), ring(&new_keys));
            assert_readable(ctx, &store, None);
            if let Outcome::Completed { result, .. } = outcome {
                assert_eq!(result as usize, old_rows, "{ctx}: the child's count");
                assert_eq!(left, 0, "{ctx}: old rows after a complete run");
            }
            let rerun = store
                .maintenance()
                .rotate_keys(ROTATION_BATCH, &mut |_| {})
                .unwrap_or_else(|e| panic!("{ctx}: re-running the rotation: {e}"));
            assert_eq!(
                (rerun.rewritten as usize, rerun.scanned as usize),
                (left, before.rows.len()),
                "{ctx}: rows the re-run rewrote and scanned"
            );
            check_storage(&format!("{ctx}, after the re-run"), db, &mut raw);
            let after = snapshot(&mut raw);
            before.assert_same_identities(&format!("{ctx}, after the re-run"), &after);
            for ((b, k), a) in before.rows.iter().zip(&after_kill).zip(&after) {
                assert_eq!(a.nickname, b.nickname, "{ctx}: nickname of {}", b.id);
                assert!(
                    is_new(a),
                    "{ctx}: credential {} not sealed (v3) under {KEY_B} after the re-run",
                    a.id
                );
                // What was done before the kill stays as it was: only the stale rows
                // are new, and only they need decrypting again.
                if !stale.contains(&Uuid::parse_str(&a.id).unwrap()) {
                    assert_eq!(
                        (&a.api_key, &a.secret_key),
                        (&k.api_key, &k.secret_key),
                        "{ctx}: the re-run rewrote credential {}, rotated before the kill",
                        a.id
                    );
                }
            }
            assert_readable(&format!("{ctx}, after the re-run"), &store, Some(&stale));
            data_keys_under_b(&format!("{ctx}, after the re-run"), db);
            assert_eq!(
                db.count("account_keys"),
                accounts.len() as i64,
                "{ctx}: one data key per account after the re-run"
            );
            let again = store
                .maintenance()
                .rotate_keys(ROTATION_BATCH, &mut |_| {})
                .unwrap();
            assert_eq!(
                again.rewritten, 0,
                "{ctx}: a finished rotation rewrote rows"
            );
            1.0 - left as f64 / old_rows as f64
        };
        kill_loop(
            Scenario {
                op: Op::Rotate,
                backend,
                fresh: Box::new(|| copy_of(&template)),
                child_keys: Some(new_keys.clone()),
                verify: Box::new(verify),
            },
            rng,
            seed,
        );
    });
}

fn sqlite_migration_survives_kills() {
    migrate(Backend::Sqlite);
}

fn postgres_migration_survives_kills() {
    migrate(Backend::Postgres);
}

fn sqlite_migration_with_data_survives_kills() {
    migrate_legacy(Backend::Sqlite);
}

fn postgres_migration_with_data_survives_kills() {
    migrate_legacy(Backend::Postgres);
}

fn sqlite_backfill_survives_kills() {
    backfill(Backend::Sqlite);
}

fn postgres_backfill_survives_kills() {
    backfill(Backend::Postgres);
}

fn sqlite_rotation_survives_kills() {
    rotate(Backend::Sqlite);
}

fn postgres_rotation_survives_kills() {
    rotate(Backend::Postgres);
}

#[cfg(feature = "mysql")]
fn mysql_migration_survives_kills() {
    migrate(Backend::Mysql);
}

#[cfg(feature = "mysql")]
fn mysql_migration_with_data_survives_kills() {
    migrate_legacy(Backend::Mysql);
}

#[cfg(feature = "mysql")]
fn mysql_backfill_survives_kills() {
    backfill(Backend::Mysql);
}

#[cfg(feature = "mysql")]
fn mysql_rotation_survives_kills() {
    rotate(Backend::Mysql);
}
