//! Backfill and key-rotation figures for BENCHMARKS.md, on SQLite and PostgreSQL.
//!
//! ```sh
//! cargo bench --features bench-internals,postgres,bundled-postgres --bench maintenance_figures
//! ```
//!
//! For each backend and size (`CREDENTIAL_STORE_FIGURES_SIZES`, default
//! `100000,1000000`; backends as the benchmarks, `CREDENTIAL_STORE_BENCH_BACKENDS`):
//!
//! - **backfill**: every credential's nickname set to NULL (legacy rows), then
//!   `backfill_nicknames(1000)` through the crate, against one raw
//!   `UPDATE user_credentials SET nickname = credential_type WHERE nickname IS NULL`
//!   (rusqlite / the `postgres` crate) on an identical copy;
//! - **rotation**: `rotate_keys(1000, …)` with a keyring whose new primary key
//!   re-encrypts every credential (sealed to sealed);
//! - **live lookups**: `credential_by_nickname` from another thread and pooled
//!   connection, paced at one per millisecond, first on an idle database, then while
//!   `backfill_nicknames(1000)` runs: p50, p99 and the slowest.
//!
//! Each measurement runs in a child process of its own, on a fresh copy of the
//! legacy data, so that its peak memory (VmHWM) is its own. The longest transaction
//! is taken from diesel's instrumentation: from the BEGIN event to the end of the
//! COMMIT statement, on the maintenance thread only.
//!
//! Datasets are the benchmarks' (`benches/support/mod.rs`); the legacy copies live in
//! `target/bench-data/legacy-<rows>.db` and the PostgreSQL database
//! `credential_store_bench_legacy_<rows>`, the working copies in `work-*.db` and
//! `credential_store_bench_work`.

#[path = "support/mod.rs"]
mod support;
#[path = "support/trace.rs"]
mod trace;

use credential_store::{CredentialStore, Database, Keyring};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

const BATCH: usize = 1000;
const WORK_DB: &str = "credential_store_bench_work";

// ---------------------------------------------------------------------------
// Transaction timing with diesel's instrumentation

thread_local! {
    /// Whether this thread's transactions are measured (the maintenance thread).
    static MEASURED: Cell<bool> = const { Cell::new(false) };
}

/// Durations of the measured thread's transactions, in order.
static TXN_NS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

#[derive(Default)]
struct TxnTimer {
    started: Option<Instant>,
    committing: bool,
}

impl diesel::connection::Instrumentation for TxnTimer {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::connection::InstrumentationEvent as E;
        if !MEASURED.with(Cell::get) {
            return;
        }
        match event {
            E::BeginTransaction { depth, .. } if depth.get() == 1 => {
                self.started = Some(Instant::now());
                self.committing = false;
            }
            E::CommitTransaction { depth, .. } | E::RollbackTransaction { depth, .. }
                if depth.get() == 1 =>
            {
                self.committing = true;
            }
            // The COMMIT (or ROLLBACK) statement itself has run.
            E::FinishQuery { .. } if self.committing => {
                if let Some(started) = self.started.take() {
                    let ns = started.elapsed().as_nanos() as u64;
                    TXN_NS.lock().expect("lock").push(ns);
                }
                self.committing = false;
            }
            _ => {}
        }
    }
}

fn install_timer() {
    diesel::connection::set_default_instrumentation(|| Some(Box::<TxnTimer>::default()))
        .expect("install instrumentation");
}

// ---------------------------------------------------------------------------
// What a child reports

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figures {
    backend: String,
    rows: usize,
    task: String,
    seconds: f64,
    changed: u64,
    longest_txn_ms: Option<f64>,
    p50_txn_ms: Option<f64>,
    p99_txn_ms: Option<f64>,
    /// Transactions longer than the issue's limit (50 ms SQLite, 200 ms PostgreSQL).
    over_limit: u64,
    /// The slowest transactions: (position in the run, ms).
    slowest: Vec<(usize, f64)>,
    transactions: u64,
    /// VmHWM: peak resident memory, including the pages of the SQLite file that
    /// the connections map (`mmap_size`).
    peak_rss_mb: f64,
    /// Peak anonymous memory (heap, stacks, SQLite's page caches), sampled every 5 ms.
    peak_anon_mb: f64,
    idle: Option<Latency>,
    during: Option<Latency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latency {
    count: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e6
        };
        Latency {
            count: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

// ---------------------------------------------------------------------------
// Working copies

fn legacy_sqlite(rows: usize) -> PathBuf {
    let path = data_dir().join(format!("legacy-{rows}.db"));
    let marker = data_dir().join(format!("legacy-{rows}.ok"));
    if !marker.exists() {
        let source = sqlite_dataset(rows);
        rusqlite_open(&source)
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("checkpoint");
        remove_sqlite(&path);
        std::fs::copy(&source, &path).expect("copy dataset");
        let conn = rusqlite_open(&path);
        conn.execute_batch(
            "UPDATE user_credentials SET nickname = NULL;
             VACUUM;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("make legacy rows");
        std::fs::write(&marker, b"ok").expect("marker");
    }
    path
}

fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A fresh copy of the legacy SQLite data; returns its path.
fn sqlite_work_copy(rows: usize) -> PathBuf {
    let legacy = legacy_sqlite(rows);
    let work = data_dir().join(format!("work-{rows}.db"));
    remove_sqlite(&work);
    std::fs::copy(&legacy, &work).expect("copy legacy data");
    work
}

fn legacy_pg(rows: usize) -> String {
    let name = format!("credential_store_bench_legacy_{rows}");
    let mut admin =
        postgres::Client::connect(&pg_url("postgres"), postgres::NoTls).expect("connect");
    let ready = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1 AND datallowconn",
            &[&name],
        )
        .expect("pg_database")
        .is_some()
        && postgres::Client::connect(&pg_url(&name), postgres::NoTls)
            .ok()
            .and_then(|mut c| c.query_opt("SELECT 1 FROM legacy_ready", &[]).ok())
            .flatten()
            .is_some();
    if !ready {
        let source = pg_dataset(rows);
        drop(source);
        pg_recreate_database(&name, Some(&pg_dataset_name(rows)));
        let mut client =
            postgres::Client::connect(&pg_url(&name), postgres::NoTls).expect("connect");
        for statement in [
            "UPDATE user_credentials SET nickname = NULL",
            "VACUUM FULL ANALYZE user_credentials",
            "CREATE TABLE legacy_ready ()",
            "INSERT INTO legacy_ready DEFAULT VALUES",
        ] {
            client.batch_execute(statement).expect("make legacy rows");
        }
    }
    name
}

/// A fresh copy of the legacy PostgreSQL data; returns its URL.
fn pg_work_copy(rows: usize) -> String {
    let legacy = legacy_pg(rows);
    pg_recreate_database(WORK_DB, Some(&legacy));
    pg_url(WORK_DB)
}

// ---------------------------------------------------------------------------
// The child: one measurement

static PEAK_ANON_KB: AtomicU64 = AtomicU64::new(0);

fn rss_anon_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the anonymous resident memory every 5 ms, for the life of the process.
fn start_anon_sampler() {
    std::thread::spawn(|| loop {
        if let Some(kb) = rss_anon_kb() {
            PEAK_ANON_KB.fetch_max(kb, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5));
    });
}

fn child(backend: &str, rows: usize, task: &str, target: &str) -> Figures {
    install_timer();
    start_anon_sampler();
    let mut figures = Figures {
        backend: backend.to_owned(),
        rows,
        task: task.to_owned(),
        seconds: 0.0,
        changed: 0,
        longest_txn_ms: None,
        p50_txn_ms: None,
        p99_txn_ms: None,
        over_limit: 0,
        slowest: Vec::new(),
        transactions: 0,
        peak_rss_mb: 0.0,
        peak_anon_mb: 0.0,
        idle: None,
        during: None,
    };
    let open_store = |keyring: Keyring| {
        let db = Database::open(target).expect("open");
        db.run_migrations().expect("migrations");
        CredentialStore::new(db, keyring)
    };
    match task {
        "backfill-crate" => {
            let store = open_store(keyring());
            MEASURED.with(|m| m.set(true));
            let started = Instant::now();
            figures.changed = store
                .maintenance()
                .backfill_nicknames(BATCH)
                .expect("backfill");
            figures.seconds = started.elapsed().as_secs_f64();
        }
        "backfill-raw" => {
            let sql =
                "UPDATE user_credentials SET nickname = credential_type WHERE nickname IS NULL";
            let (changed, seconds) = if backend == "sqlite" {
                let conn = rusqlite_open(std::path::Path::new(target));
                let started = Instant::now();
                let changed = conn.execute(sql, []).expect("update") as u64;
                (changed, started.elapsed().as_secs_f64())
            } else {
                let mut client =
                    postgres::Client::connect(target, postgres::NoTls).expect("connect");
                let started = Instant::now();
                let changed = client.execute(sql, &[]).expect("update");
                (changed, started.elapsed().as_secs_f64())
            };
            figures.changed = changed;
            figures.seconds = seconds;
            // One statement, one (implicit) transaction.
            figures.longest_txn_ms = Some(figures.seconds * 1e3);
            figures.p50_txn_ms = figures.longest_txn_ms;
            figures.p99_txn_ms = figures.longest_txn_ms;
            figures.transactions = 1;
            let limit = if backend == "sqlite" { 50.0 } else { 200.0 };
            figures.over_limit = u64::from(figures.seconds * 1e3 > limit);
        }
        "rotate-crate" => {
            let keyring = Keyring::from_fernet_keys([
                format!("rotated:{}", rotated_key_text(1)),
                format!("{KEY_ID}:{}", key_text()),
            ])
            .expect("keyring");
            let store = open_store(keyring);
            MEASURED.with(|m| m.set(true));
            let started = Instant::now();
            let done = store
                .maintenance()
                .rotate_keys(BATCH, &mut |_| {})
                .expect("rotate");
            figures.seconds = started.elapsed().as_secs_f64();
            figures.changed = done.rewritten;
        }
        "backfill-lookups" => {
            let store = open_store(keyring());
            let accounts = {
                let (accounts, _) = if backend == "sqlite" {
                    load_accounts_sqlite(&mut diesel_sqlite_open(std::path::Path::new(target)))
                } else {
                    use diesel::Connection;
                    load_accounts_pg(&mut diesel::PgConnection::establish(target).expect("connect"))
                };
                accounts
            };
            let lookups = |stop: &AtomicBool, limit: Duration| {
                let mut rng = Rng::new(7);
                let mut samples = Vec::new();
                let started = Instant::now();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                    let account = &accounts[rng.below(accounts.len())];
                    let nickname = NICKNAMES[rng.below(UNIQUE_NICKNAMES)];
                    let t = Instant::now();
                    let found = store
                        .credential_by_nickname(account, nickname)
                        .expect("lookup");
                    samples.push(t.elapsed());
                    std::hint::black_box(found);
                    next += Duration::from_millis(1);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    } else {
                        next = Instant::now();
                    }
                }
                samples
            };
            let never = AtomicBool::new(false);
            figures.idle = Some(Latency::of(lookups(&never, Duration::from_secs(5))));
            let stop = AtomicBool::new(false);
            let during = std::thread::scope(|scope| {
                let reader = scope.spawn(|| lookups(&stop, Duration::from_secs(3600)));
                MEASURED.with(|m| m.set(true));
                let started = Instant::now();
                figures.changed = store
                    .maintenance()
                    .backfill_nicknames(BATCH)
                    .expect("backfill");
                figures.seconds = started.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                reader.join().expect("reader")
            });
            figures.during = Some(Latency::of(during));
        }
        other => panic!("unknown task {other}"),
    }
    if figures.longest_txn_ms.is_none() {
        let times: Vec<f64> = TXN_NS
            .lock()
            .expect("lock")
            .iter()
            .map(|&ns| ns as f64 / 1e6)
            .collect();
        let limit = if backend == "sqlite" { 50.0 } else { 200.0 };
        figures.over_limit = times.iter().filter(|&&t| t > limit).count() as u64;
        let mut slowest: Vec<(usize, f64)> = times.iter().copied().enumerate().collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        slowest.truncate(5);
        figures.slowest = slowest;
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        if !sorted.is_empty() {
            figures.longest_txn_ms = Some(at(1.0));
            figures.p50_txn_ms = Some(at(0.5));
            figures.p99_txn_ms = Some(at(0.99));
        }
        figures.transactions = times.len() as u64;
    }
    figures.peak_rss_mb = vm_hwm_kb().unwrap_or(0) as f64 / 1024.0;
    figures.peak_anon_mb = PEAK_ANON_KB.load(Ordering::Relaxed) as f64 / 1024.0;
    figures
}

// ---------------------------------------------------------------------------
// The parent: prepare copies, run children, print tables

fn run_child(backend: &str, rows: usize, task: &str) -> Figures {
    let target = match backend {
        "sqlite" => sqlite_work_copy(rows).to_str().expect("UTF-8").to_owned(),
        _ => pg_work_copy(rows),
    };
    eprintln!("  {backend} {rows} {task} …");
    let output = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--child", backend, &rows.to_string(), task, &target])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run child");
    assert!(output.status.success(), "{backend} {rows} {task} failed");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FIGURES "))
        .expect("figures line");
    serde_json::from_str(line).expect("figures")
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// `--roundtrips <variant> <n>`: `n` PostgreSQL lookups of one variant on the 10k
/// dataset, for counting the client's socket writes with
/// `strace -f -c -e trace=sendto,write,writev,sendmsg` (a round trip is one write
/// and its answer). Run with `n = 0` too and subtract: the difference over `n` is
/// the round trips per lookup. Variants as in the benchmarks: the baselines run the
/// crate's statements (`credential_store::internals`), and before anything is
/// counted each must have sent exactly the statements the crate sent for one lookup.
fn roundtrips(variant: &str, n: usize) {
    use credential_store::internals::{self, StatementSql};
    use credential_store::{UserAccount, UserCredential};
    use diesel::prelude::*;
    let url = pg_url(&pg_dataset_name(10_000));
    let store = CredentialStore::new(Database::open(&url).expect("open"), keyring());
    let mut conn = diesel::PgConnection::establish(&url).expect("connect");
    let (accounts, _) = load_accounts_pg(&mut conn);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let sql = StatementSql::postgres(&url, 1).expect("the crate's statements");
    let context_sql = sql.user_context.clone().expect("PostgreSQL");
    let set = client.prepare(&context_sql).expect("prepare");
    let lookup = client
        .prepare(&sql.credentials_by_nickname)
        .expect("prepare");
    let diesel_lookup = |c: &mut diesel::PgConnection, a: &UserAccount, nick: &str| {
        internals::credentials_by_nickname(c, a, nick, nick).expect("lookup")
    };
    let mut one = |variant: &str,
                   store: &CredentialStore,
                   conn: &mut diesel::PgConnection,
                   a: &UserAccount,
                   nick: &str|
     -> Vec<UserCredential> {
        match variant {
            "crate" => store
                .credential_by_nickname(a, nick)
                .expect("lookup")
                .into_iter()
                .collect(),
            "diesel" => conn
                .transaction(|c| {
                    internals::set_user_context(c, a.user_id())?;
                    Ok::<_, diesel::result::Error>(diesel_lookup(c, a, nick))
                })
                .expect("transaction"),
            "diesel_bare" => diesel_lookup(conn, a, nick),
            "postgres" => {
                trace::sent(trace::BEGIN);
                client.batch_execute(trace::BEGIN).expect("begin");
                trace::sent(&context_sql);
                client
                    .execute(&set, &[&internals::USER_SETTING, &a.user_id(), &true])
                    .expect("set_config");
                trace::sent(&sql.credentials_by_nickname);
                let rows = client
                    .query(&lookup, &[&a.id(), &a.user_id(), &nick, &nick])
                    .expect("lookup");
                trace::sent(trace::COMMIT);
                client.batch_execute(trace::COMMIT).expect("commit");
                rows.iter().map(credential_from_pg).collect()
            }
            "postgres_bare" => {
                trace::sent(&sql.credentials_by_nickname);
                client
                    .query(&lookup, &[&a.id(), &a.user_id(), &nick, &nick])
                    .expect("lookup")
                    .iter()
                    .map(credential_from_pg)
                    .collect()
            }
            other => panic!("unknown variant {other}"),
        }
    };
    // The variant's statements against the crate's, on a store and a connection that
    // record (those counted below do not).
    {
        let a = &accounts[0];
        let (probe, _) = trace::recording_store(&url, keyring(), |s| {
            s.credentials(a).expect("first call");
        });
        let mut probe_conn =
            trace::with_recording(|| diesel::PgConnection::establish(&url).expect("connect"));
        let by_crate = trace::statements(|| {
            one("crate", &probe, &mut probe_conn, a, NICKNAMES[0]);
        });
        let sent = trace::statements(|| {
            one(variant, &probe, &mut probe_conn, a, NICKNAMES[0]);
        });
        let expected: Vec<String> = if variant.ends_with("_bare") {
            by_crate
                .iter()
                .filter(|s| {
                    ![trace::BEGIN, trace::COMMIT, context_sql.as_str()].contains(&s.as_str())
                })
                .cloned()
                .collect()
        } else {
            by_crate
        };
        trace::assert_same_sql(&format!("roundtrips/{variant}"), &sent, &expected);
    }
    // Everything is connected and prepared: from here on, only the lookups write.
    eprintln!("ready");
    let mut rng = Rng::new(3);
    for _ in 0..n {
        let a = &accounts[rng.below(accounts.len())];
        let nick = NICKNAMES[rng.below(UNIQUE_NICKNAMES)];
        let found = one(variant, &store, &mut conn, a, nick);
        assert_eq!(found.len(), 1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--roundtrips") {
        roundtrips(&args[2], args[3].parse().expect("count"));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--child") {
        let rows: usize = args[3].parse().expect("rows");
        let figures = child(&args[2], rows, &args[4], &args[5]);
        println!("FIGURES {}", serde_json::to_string(&figures).expect("json"));
        return;
    }
    let sizes: Vec<usize> = std::env::var("CREDENTIAL_STORE_FIGURES_SIZES")
        .unwrap_or_else(|_| "100000,1000000".to_owned())
        .split(',')
        .map(|s| s.trim().replace('_', "").parse().expect("size"))
        .collect();
    let mut backends = Vec::new();
    if backend_enabled("sqlite") {
        backends.push("sqlite");
    }
    if pg_available() {
        backends.push("postgres");
    }
    eprintln!("machine: {}", machine_line());
    let mut all = Vec::new();
    for &backend in &backends {
        for &rows in &sizes {
            for task in [
                "backfill-crate",
                "backfill-raw",
                "rotate-crate",
                "backfill-lookups",
            ] {
                all.push(run_child(backend, rows, task));
            }
        }
    }
    if backends.contains(&"postgres") {
        pg_drop_database(WORK_DB);
    }
    for rows in &sizes {
        remove_sqlite(&data_dir().join(format!("work-{rows}.db")));
    }

    println!("\n### Backfill and rotation ({} rows per batch)\n", BATCH);
    println!("| backend | rows | what | total | rows/s | transactions | p50 / p99 / longest transaction | over the limit | peak RSS (VmHWM) | peak anonymous RSS |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in all.iter().filter(|f| f.task != "backfill-lookups") {
        let what = match f.task.as_str() {
            "backfill-crate" => "`backfill_nicknames(1000)`",
            "backfill-raw" => "one raw `UPDATE … WHERE nickname IS NULL`",
            "rotate-crate" => "`rotate_keys(1000)`, sealed → sealed, new key",
            other => other,
        };
        println!(
            "| {} | {} | {} | {:.2} s | {:.0} | {} | {:.1} / {:.1} / {:.1} ms | {} | {:.0} MiB | {:.0} MiB |",
            f.backend,
            f.rows,
            what,
            f.seconds,
            f.changed as f64 / f.seconds,
            f.transactions,
            f.p50_txn_ms.unwrap_or(0.0),
            f.p99_txn_ms.unwrap_or(0.0),
            f.longest_txn_ms.unwrap_or(0.0),
            f.over_limit,
            f.peak_rss_mb,
            f.peak_anon_mb,
        );
    }
    println!("\nThe five slowest transactions of each run (position in the run: ms):\n");
    for f in all.iter().filter(|f| f.transactions > 1) {
        let slowest: Vec<String> = f
            .slowest
            .iter()
            .map(|(i, ms)| format!("#{i}: {ms:.0}"))
            .collect();
        println!(
            "- {} {} {}: {}",
            f.backend,
            f.rows,
            f.task,
            slowest.join(", ")
        );
    }
    println!("\n### Backfill against its raw UPDATE\n");
    println!("| backend | rows | crate / raw UPDATE |");
    println!("|---|---:|---:|");
    for &backend in &backends {
        for &rows in &sizes {
            let find = |task: &str| {
                all.iter()
                    .find(|f| f.backend == backend && f.rows == rows && f.task == task)
            };
            if let (Some(c), Some(r)) = (find("backfill-crate"), find("backfill-raw")) {
                println!("| {backend} | {rows} | {:.2}× |", c.seconds / r.seconds);
            }
        }
    }
    println!("\n### `credential_by_nickname` from another thread, one per millisecond\n");
    println!("| backend | rows | when | lookups | p50 | p99 | slowest | backfill took |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    for f in all.iter().filter(|f| f.task == "backfill-lookups") {
        for (when, l) in [("idle", &f.idle), ("during backfill", &f.during)] {
            if let Some(l) = l {
                println!(
                    "| {} | {} | {when} | {} | {:.0} µs | {:.0} µs | {:.1} ms | {} |",
                    f.backend,
                    f.rows,
                    l.count,
                    l.p50_us,
                    l.p99_us,
                    l.max_us / 1e3,
                    if when == "idle" {
                        String::from("–")
                    } else {
                        format!("{:.2} s", f.seconds)
                    }
                );
            }
        }
    }
}
