//! The crate on MariaDB against the raw `mysql` crate (the synchronous pure-Rust
//! driver) running the same SQL, in the same run. BENCHMARKS.md ("MariaDB") has the
//! command, the machine and the results.
//!
//! ```sh
//! cargo bench --features mysql --bench mysql_lookup
//! ```
//!
//! Ids: `<operation>/mysql/<implementation>/<rows>`: operations `lookup_by_nickname`
//! (`credential_by_nickname`), `lookup_by_nickname_decrypt` (`keys_by_nickname`: the
//! lookup and the decryption of both keys), `insert_one` (`insert_credential`) and
//! `insert_batch_100` (`insert_credentials` of 100); implementations:
//!
//! - `crate`: `CredentialStore` on `mysql://…`, as a service uses it (a pool of
//!   diesel-async `AsyncMysqlConnection`s, each driven by its own single-threaded
//!   tokio runtime; validation; the crate's crypto);
//! - `mysql`: the `mysql` crate on one connection, every statement prepared once
//!   from the SQL text of the crate's own statements; rows decoded into the crate's
//!   types; keys sealed (`internals::seal`) and opened (`internals::reveal`) by the
//!   crate's code, so both sides do the same crypto. An insert is what the crate
//!   does on MySQL, which has no `RETURNING`: `BEGIN`, the INSERT, a SELECT of the
//!   rows by id, `COMMIT`.
//!
//! The SQL text comes from running the crate's statements
//! (`credential_store::internals`) on a `MysqlConnection` with diesel's
//! instrumentation. Before a dataset is measured, each operation runs once through a
//! recording `CredentialStore` and once through the baseline: the baseline must send
//! exactly the statements the store sent (transaction statements included) and get
//! the same rows and keys, or the benchmark panics.
//!
//! After criterion, the run prints a summary: the medians (criterion's), crate ÷
//! raw, that ratio again from the two implementations interleaved in short blocks
//! (robust to a machine whose load changes), and round trips per call, counted by a
//! TCP proxy in front of the server (`support/proxy.rs`, no added delay) with the
//! server's `Com_stmt_*`, `Com_begin` and `Com_commit` counters beside them.
//!
//! The dataset: a fresh database `credential_store_bench_<random>_<rows>` per size,
//! built through the crate (`create_account` and one `insert_credentials` of ten
//! credentials per account), dropped at the end, also when a panic unwinds.
//!
//! Environment: `CREDENTIAL_STORE_BENCH_MYSQL=mysql://user@host:port` (default
//! `mysql://root@127.0.0.1:3306`), `CREDENTIAL_STORE_BENCH_SIZES=10000,100000`
//! (default 10000), `CREDENTIAL_STORE_BENCH_PAIRED_SECS=2` (per operation and size;
//! 0 skips the interleaved ratios).

#[path = "support/mysql.rs"]
mod mariadb;
#[allow(dead_code)]
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/trace.rs"]
mod trace;

use credential_store::internals::{self, StoredCredential};
use credential_store::{CredentialStore, Database, NewUserCredential, UserAccount, UserCredential};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use mariadb::*;
use mysql::prelude::Queryable;
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const SEED: u64 = 0x00c0_ffee;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Lookup,
    LookupDecrypt,
    InsertOne,
    InsertBatch,
}

impl Op {
    const ALL: [Op; 4] = [
        Op::Lookup,
        Op::LookupDecrypt,
        Op::InsertOne,
        Op::InsertBatch,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup_by_nickname",
            Op::LookupDecrypt => "lookup_by_nickname_decrypt",
            Op::InsertOne => "insert_one",
            Op::InsertBatch => "insert_batch_100",
        }
    }

    fn rows_written(self) -> usize {
        match self {
            Op::InsertOne => 1,
            Op::InsertBatch => BATCH,
            Op::Lookup | Op::LookupDecrypt => 0,
        }
    }

    /// Calls counted through the proxy.
    fn counted_calls(self) -> usize {
        match self {
            Op::Lookup | Op::LookupDecrypt => 200,
            Op::InsertOne => 100,
            Op::InsertBatch => 20,
        }
    }

    /// The length of one block of the interleaved ratios.
    fn block(self) -> Duration {
        Duration::from_millis(match self {
            Op::Lookup | Op::LookupDecrypt => 20,
            Op::InsertOne => 50,
            Op::InsertBatch => 200,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Imp {
    Crate,
    Mysql,
}

impl Imp {
    const ALL: [Imp; 2] = [Imp::Crate, Imp::Mysql];

    fn name(self) -> &'static str {
        match self {
            Imp::Crate => "crate",
            Imp::Mysql => "mysql",
        }
    }
}

// ---------------------------------------------------------------------------
// Fixtures

/// One dataset, the crate's store on it and the baseline's connection.
struct Fixture {
    rows: usize,
    database: String,
    store: CredentialStore,
    raw: Raw,
    sql: MysqlSql,
    accounts: Vec<UserAccount>,
    insert_accounts: Vec<UserAccount>,
    new_one: Vec<NewUserCredential<'static>>,
    new_batch: Vec<NewUserCredential<'static>>,
    keys: InsertKeys,
    inserts: usize,
}

impl Fixture {
    fn open(server: &str, databases: &mut Databases, rows: usize) -> Fixture {
        let database = databases.create(rows);
        let url = url(server, Some(&database));
        build_dataset(&url, rows);
        let mut admin = raw_connect(&url).expect("connect");
        let (accounts, insert_accounts) = load_accounts(&mut admin);
        assert_eq!(accounts.len(), rows / CREDENTIALS_PER_ACCOUNT);
        assert_eq!(insert_accounts.len(), INSERT_ACCOUNTS);
        let sql = MysqlSql::recorded(&url, &insert_accounts[0], &keyring());
        eprintln!("the crate's SQL on MySQL (recorded on a MysqlConnection):");
        for (what, text) in [
            ("lookup", &sql.by_nickname),
            ("decrypted lookup", &sql.keys_by_nickname),
            ("insert one", &sql.insert_one[0]),
            ("  read-back", &sql.insert_one[1]),
            ("insert 100", &sql.insert_batch[0]),
            ("  read-back", &sql.insert_batch[1]),
        ] {
            eprintln!("  {what}: {}", abbreviated(text, 300));
        }
        let mut fx =
            Fixture::with_connections(&url, rows, database, sql, accounts, insert_accounts);
        check(&mut fx, &url);
        fx
    }

    fn with_connections(
        url: &str,
        rows: usize,
        database: String,
        sql: MysqlSql,
        accounts: Vec<UserAccount>,
        insert_accounts: Vec<UserAccount>,
    ) -> Fixture {
        let store = CredentialStore::new(
            Database::open(url).expect("open the crate's store"),
            keyring(),
        );
        let raw = Raw::open(url, &sql);
        Fixture {
            rows,
            database,
            store,
            raw,
            sql,
            accounts,
            insert_accounts,
            new_one: new_credentials(1),
            new_batch: new_credentials(BATCH),
            keys: InsertKeys::new(),
            inserts: 0,
        }
    }

    /// The same dataset with a new store and baseline connection on `url` (the
    /// counting proxy).
    fn reconnected(&self, url: &str) -> Fixture {
        Fixture::with_connections(
            url,
            self.rows,
            self.database.clone(),
            self.sql.clone(),
            self.accounts.clone(),
            self.insert_accounts.clone(),
        )
    }

    fn cleanup(&mut self) {
        delete_inserted(&mut self.raw.conn);
    }

    fn next_insert_account(&mut self) -> usize {
        self.inserts += 1;
        self.inserts % INSERT_ACCOUNTS
    }
}

/// The fixtures, opened on first use; the databases are dropped after them.
struct Fixtures {
    server: String,
    fixtures: BTreeMap<usize, Fixture>,
    databases: Databases,
}

impl Fixtures {
    fn get(&mut self, rows: usize) -> &mut Fixture {
        let Fixtures {
            server,
            fixtures,
            databases,
        } = self;
        fixtures
            .entry(rows)
            .or_insert_with(|| Fixture::open(server, databases, rows))
    }
}

fn pick<'a>(rng: &mut Rng, accounts: &'a [UserAccount]) -> (&'a UserAccount, &'static str) {
    let account = &accounts[rng.below(accounts.len())];
    (account, NICKNAMES[rng.below(UNIQUE_NICKNAMES)])
}

fn single<T>(mut found: Vec<T>) -> Option<T> {
    assert!(found.len() <= 1, "a unique nickname");
    found.pop()
}

/// One call of `op` by `imp`, on a pseudo-randomly picked account (lookups) or the
/// next insert account (inserts).
fn runner<'a>(op: Op, imp: Imp, fx: &'a mut Fixture, rng: &'a mut Rng) -> Box<dyn FnMut() + 'a> {
    match (op, imp) {
        (Op::Lookup, Imp::Crate) => Box::new(move || {
            let (a, nickname) = pick(rng, &fx.accounts);
            black_box(
                fx.store
                    .credential_by_nickname(a, nickname)
                    .expect("lookup")
                    .expect("found"),
            );
        }),
        (Op::Lookup, Imp::Mysql) => Box::new(move || {
            let (a, nickname) = pick(rng, &fx.accounts);
            black_box(single(fx.raw.by_nickname(a, nickname)).expect("found"));
        }),
        (Op::LookupDecrypt, Imp::Crate) => Box::new(move || {
            let (a, nickname) = pick(rng, &fx.accounts);
            black_box(
                fx.store
                    .keys_by_nickname(a, nickname)
                    .expect("lookup")
                    .expect("found"),
            );
        }),
        (Op::LookupDecrypt, Imp::Mysql) => Box::new(move || {
            let (a, nickname) = pick(rng, &fx.accounts);
            let found = single(fx.raw.keys_by_nickname(a, nickname)).expect("found");
            let credential = found.credential.clone();
            let keys = internals::reveal(&fx.store, a, credential.id, Some(found)).expect("keys");
            black_box((credential, keys));
        }),
        (Op::InsertOne, Imp::Crate) => Box::new(move || {
            let k = fx.next_insert_account();
            black_box(
                fx.store
                    .insert_credential(&fx.insert_accounts[k], &fx.new_one[0])
                    .expect("insert"),
            );
        }),
        (Op::InsertBatch, Imp::Crate) => Box::new(move || {
            let k = fx.next_insert_account();
            black_box(
                fx.store
                    .insert_credentials(&fx.insert_accounts[k], &fx.new_batch)
                    .expect("insert"),
            );
        }),
        (Op::InsertOne | Op::InsertBatch, Imp::Mysql) => Box::new(move || {
            let k = fx.next_insert_account();
            let rows = insert_rows(
                fx.store.keyring(),
                &fx.insert_accounts[k],
                &fx.keys,
                op.rows_written(),
            );
            black_box(fx.raw.insert(&rows));
        }),
    }
}

// ---------------------------------------------------------------------------
// The start-up check

/// Each operation once through a recording store and once through the baseline:
/// the same statements, the same rows, the same keys; panics otherwise.
fn check(fx: &mut Fixture, url: &str) {
    let (store, _) = trace::recording_store(url, keyring(), |store| {
        store
            .account_by_user_id(fx.accounts[0].user_id())
            .expect("warm the recording store");
    });
    let a = fx.accounts[0].clone();
    let nickname = NICKNAMES[1];
    let mut compared = 0;
    let mut same = |what: &str, raw: &[String], by_crate: &[String]| {
        trace::assert_same_sql(what, raw, by_crate);
        compared += by_crate.len();
    };

    let (found, by_crate) =
        trace::record(|| store.credential_by_nickname(&a, nickname).expect("lookup"));
    let (raw, sent) = trace::record(|| fx.raw.by_nickname(&a, nickname));
    same("lookup_by_nickname", &sent, &by_crate);
    let found = found.expect("the dataset's credential");
    assert_eq!(Some(&found), single(raw).as_ref(), "the same credential");

    let (keyed, by_crate) =
        trace::record(|| store.keys_by_nickname(&a, nickname).expect("keys lookup"));
    let (raw, sent) = trace::record(|| fx.raw.keys_by_nickname(&a, nickname));
    same("lookup_by_nickname_decrypt", &sent, &by_crate);
    let (credential, keys) = keyed.expect("found");
    let raw: StoredCredential = single(raw).expect("found");
    assert_eq!(raw.credential, credential);
    let raw_keys = internals::reveal(&store, &a, credential.id, Some(raw)).expect("keys");
    for (k, expected) in [
        (&keys, (api_key(0, 1), secret_key(0, 1))),
        (&raw_keys, (api_key(0, 1), secret_key(0, 1))),
    ] {
        assert_eq!(k.api_key().expose_secret(), expected.0);
        assert_eq!(k.secret_key().expose_secret(), expected.1);
    }

    let account = fx.insert_accounts[0].clone();
    for (what, n) in [("insert_one", 1), ("insert_batch_100", BATCH)] {
        let (stored, by_crate) = trace::record(|| {
            if n == 1 {
                vec![store
                    .insert_credential(&account, &fx.new_one[0])
                    .expect("insert")]
            } else {
                store
                    .insert_credentials(&account, &fx.new_batch)
                    .expect("insert")
            }
        });
        let rows = insert_rows(store.keyring(), &account, &fx.keys, n);
        let (raw, sent) = trace::record(|| fx.raw.insert(&rows));
        same(what, &sent, &by_crate);
        assert_eq!(stored.len(), n);
        assert_eq!(raw.len(), n);
        for (row, got) in rows.iter().zip(&raw) {
            let expected = internals::user_credential(
                row.id,
                row.user_account_id,
                row.user_id.clone(),
                row.credential_type.clone(),
                row.nickname.clone(),
                row.is_active,
                row.expires_at,
                row.created_at,
                row.updated_at,
            );
            assert_eq!(got, &expected, "the baseline reads back what it wrote");
        }
        for (by_store, by_raw) in stored.iter().zip(&raw) {
            let like = |c: &UserCredential| {
                (
                    c.user_account_id,
                    c.user_id.clone(),
                    c.credential_type.clone(),
                    c.nickname.clone(),
                    c.is_active,
                    c.expires_at,
                )
            };
            assert_eq!(like(by_store), like(by_raw), "{what}: the same rows");
        }
    }
    fx.cleanup();
    eprintln!(
        "mysql: the baseline sent exactly the crate's statements ({compared} compared) and read the same rows and keys"
    );
}

fn abbreviated(sql: &str, max: usize) -> String {
    if sql.chars().count() <= max {
        return sql.to_owned();
    }
    let head: String = sql.chars().take(max / 2).collect();
    let tail: String = sql.chars().skip(sql.chars().count() - max / 2).collect();
    format!("{head} … ({} characters) … {tail}", sql.chars().count())
}

// ---------------------------------------------------------------------------
// Round trips and statements per call

const COUNTERS: [&str; 6] = [
    "Questions",
    "Com_stmt_prepare",
    "Com_stmt_execute",
    "Com_stmt_close",
    "Com_begin",
    "Com_commit",
];

fn global_status(admin: &mut mysql::Conn) -> HashMap<String, u64> {
    let list = COUNTERS.map(|c| format!("'{c}'")).join(", ");
    admin
        .query_map(
            format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({list})"),
            |(name, value): (String, String)| (name, value.parse().unwrap_or(0)),
        )
        .expect("SHOW GLOBAL STATUS")
        .into_iter()
        .collect()
}

#[derive(Debug, Clone, Default)]
struct Counts {
    /// Round trips per call, counted at the proxy.
    round_trips: f64,
    /// The server's counters per call (global: they include any other client's).
    per_call: BTreeMap<&'static str, f64>,
    /// Questions from other sessions in an idle window as long as the counted calls.
    background: u64,
}

/// Each operation and implementation `op.counted_calls()` times through a proxy
/// with no added delay, after a few calls to warm the statement caches.
fn count_round_trips(server: &str, fx: &Fixture) -> BTreeMap<(Op, Imp), Counts> {
    let mut counts = BTreeMap::new();
    let Some(upstream) = loopback_addr(server) else {
        eprintln!("round trips not counted: the server is not on a loopback address");
        return counts;
    };
    let proxy = proxy::Proxy::start(upstream, Duration::ZERO);
    let mut admin = raw_connect(&url(server, None)).expect("connect");
    let mut proxied = fx.reconnected(&url(&via(server, proxy.addr()), Some(&fx.database)));
    let mut rng = Rng::new(SEED);
    for op in Op::ALL {
        for imp in Imp::ALL {
            let calls = op.counted_calls();
            let mut run = runner(op, imp, &mut proxied, &mut rng);
            for _ in 0..3 {
                run();
            }
            let before = global_status(&mut admin);
            proxy.reset();
            let started = Instant::now();
            for _ in 0..calls {
                run();
            }
            let round_trips = proxy.round_trips();
            let elapsed = started.elapsed();
            let after = global_status(&mut admin);
            std::thread::sleep(elapsed);
            let idle = global_status(&mut admin);
            drop(run);
            let diff = |from: &HashMap<String, u64>, to: &HashMap<String, u64>, name: &str| {
                to.get(name).copied().unwrap_or(0) as f64
                    - from.get(name).copied().unwrap_or(0) as f64
            };
            let per_call = COUNTERS
                .iter()
                .map(|&name| {
                    // The SHOW of `after` is a question of its own.
                    let own = if name == "Questions" { 1.0 } else { 0.0 };
                    (name, (diff(&before, &after, name) - own) / calls as f64)
                })
                .collect();
            counts.insert(
                (op, imp),
                Counts {
                    round_trips: round_trips as f64 / calls as f64,
                    per_call,
                    background: (diff(&after, &idle, "Questions") - 1.0).max(0.0) as u64,
                },
            );
            if op.rows_written() > 0 {
                proxied.cleanup();
            }
        }
    }
    drop(proxied);
    drop(proxy);
    counts
}

// ---------------------------------------------------------------------------
// Interleaved ratios

#[derive(Debug, Clone)]
struct Paired {
    /// Median time per call in a block, per implementation.
    median: [Duration; 2],
    /// CPU time of the calling thread per call, over all blocks, per implementation
    /// (the crate's MySQL connection runs its tokio runtime on the calling thread, so
    /// this is all the client's work); `None` without `/proc/thread-self/schedstat`.
    cpu: [Option<Duration>; 2],
    /// Quartiles and median of the per-round ratio crate ÷ raw.
    ratio: [f64; 3],
    rounds: usize,
}

/// Alternates blocks of `op.block()` of each implementation (which one goes first
/// alternates too) for about `secs` seconds, at least 10 rounds.
fn paired(fx: &mut Fixture, op: Op, secs: f64) -> Paired {
    let block = op.block();
    let rounds = ((secs / (2.0 * block.as_secs_f64())) as usize).max(10);
    let mut per_call: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::with_capacity(rounds);
    let mut cpu_ns = [Some(0u64); 2];
    let mut total_calls = [0u64; 2];
    let mut rngs = [Rng::new(SEED ^ 1), Rng::new(SEED ^ 1)];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut this_round = [0.0; 2];
        for i in order {
            let [crate_rng, raw_rng] = &mut rngs;
            let rng = if i == 0 { crate_rng } else { raw_rng };
            let mut run = runner(op, Imp::ALL[i], fx, rng);
            let cpu_before = thread_cpu_ns();
            let started = Instant::now();
            let mut calls = 0u32;
            while calls == 0 || started.elapsed() < block {
                run();
                calls += 1;
            }
            let each = started.elapsed().as_secs_f64() / f64::from(calls);
            cpu_ns[i] = match (cpu_ns[i], cpu_before, thread_cpu_ns()) {
                (Some(sum), Some(from), Some(to)) => Some(sum + (to - from)),
                _ => None,
            };
            total_calls[i] += u64::from(calls);
            per_call[i].push(each);
            this_round[i] = each;
        }
        ratios.push(this_round[0] / this_round[1]);
        if op.rows_written() > 0 && round % 8 == 7 {
            fx.cleanup();
        }
    }
    if op.rows_written() > 0 {
        fx.cleanup();
    }
    let median = |v: &mut Vec<f64>| quantile(v, 0.5);
    Paired {
        median: [
            Duration::from_secs_f64(median(&mut per_call[0])),
            Duration::from_secs_f64(median(&mut per_call[1])),
        ],
        cpu: [0, 1].map(|i| cpu_ns[i].map(|ns| Duration::from_nanos(ns / total_calls[i]))),
        ratio: [
            quantile(&mut ratios, 0.25),
            quantile(&mut ratios, 0.5),
            quantile(&mut ratios, 0.75),
        ],
        rounds,
    }
}

/// The CPU time the calling thread has used (ns), from the scheduler's statistics.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = (q * (values.len() - 1) as f64).round() as usize;
    values[at]
}

// ---------------------------------------------------------------------------
// Criterion's medians

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion")
}

/// The median criterion wrote for `full_id` in this run (ns), if it measured it.
fn criterion_median(group: &str, full_id: &str, since: SystemTime) -> Option<f64> {
    let mut dirs = vec![criterion_dir().join(group)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let bench = std::fs::read_to_string(path.join("benchmark.json")).ok();
                let bench: Option<serde_json::Value> =
                    bench.and_then(|b| serde_json::from_str(&b).ok());
                if bench.as_ref().and_then(|b| b["full_id"].as_str()) != Some(full_id) {
                    continue;
                }
                let estimates = path.join("estimates.json");
                let fresh = std::fs::metadata(&estimates)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since);
                if !fresh {
                    return None;
                }
                let estimates: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(estimates).ok()?).ok()?;
                return estimates["median"]["point_estimate"].as_f64();
            }
            dirs.push(path);
        }
    }
    None
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------

fn main() {
    let started = SystemTime::now();
    let load_at_start = load_average();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();

    let server = server();
    let version = match raw_connect(&url(&server, None)) {
        Ok(mut conn) => conn
            .query_first::<String, _>("SELECT VERSION()")
            .ok()
            .flatten()
            .unwrap_or_default(),
        Err(err) => {
            eprintln!(
                "SKIPPED MariaDB/MySQL: cannot connect to {server} ({err}); set CREDENTIAL_STORE_BENCH_MYSQL"
            );
            criterion.final_summary();
            return;
        }
    };
    let sizes = sizes();
    let mut fixtures = Fixtures {
        server: server.clone(),
        fixtures: BTreeMap::new(),
        databases: Databases::new(&server),
    };

    for op in Op::ALL {
        let mut group = criterion.benchmark_group(op.name());
        if op.rows_written() > 0 {
            group.throughput(Throughput::Elements(op.rows_written() as u64));
        }
        if op == Op::InsertBatch {
            group.sampling_mode(SamplingMode::Flat);
        }
        for &rows in &sizes {
            for imp in Imp::ALL {
                let mut rng = Rng::new(SEED ^ rows as u64);
                let id = BenchmarkId::new(format!("mysql/{}", imp.name()), rows);
                group.bench_function(id, |b| {
                    let mut run = runner(op, imp, fixtures.get(rows), &mut rng);
                    b.iter(&mut run)
                });
                if op.rows_written() > 0 {
                    if let Some(fx) = fixtures.fixtures.get_mut(&rows) {
                        fx.cleanup();
                    }
                }
            }
        }
        group.finish();
    }
    criterion.final_summary();

    if fixtures.fixtures.is_empty() {
        return;
    }
    let paired_secs: f64 = std::env::var("CREDENTIAL_STORE_BENCH_PAIRED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let mut report = Vec::new();
    for (&rows, fx) in &mut fixtures.fixtures {
        eprintln!("counting round trips ({rows} credentials) …");
        let counts = count_round_trips(&server, fx);
        let mut pairs = BTreeMap::new();
        if paired_secs > 0.0 {
            eprintln!("interleaved ratios ({rows} credentials) …");
            for op in Op::ALL {
                pairs.insert(op, paired(fx, op, paired_secs));
            }
        }
        report.push((rows, counts, pairs));
    }

    println!();
    println!(
        "MariaDB {version}, {} CPUs, load average {load_at_start} at the start, {} at the end",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!();
    println!("| operation | rows | crate median | mysql median | crate ÷ mysql | interleaved: crate, mysql, crate ÷ mysql (IQR) | client CPU per call: crate, mysql | round trips per call: crate, mysql |");
    println!("|---|---:|---:|---:|---:|---|---|---|");
    for (rows, counts, pairs) in &report {
        for op in Op::ALL {
            let median = |imp: Imp| {
                criterion_median(
                    op.name(),
                    &format!("{}/mysql/{}/{rows}", op.name(), imp.name()),
                    started,
                )
            };
            let (c, m) = (median(Imp::Crate), median(Imp::Mysql));
            let cell = |v: Option<f64>| v.map_or("–".to_owned(), fmt_ns);
            let ratio = match (c, m) {
                (Some(c), Some(m)) => format!("{:.2}×", c / m),
                _ => "–".to_owned(),
            };
            let paired = pairs.get(&op).map_or("–".to_owned(), |p| {
                format!(
                    "{}, {}, {:.2}× ({:.2}–{:.2}, {} rounds)",
                    fmt_ns(p.median[0].as_nanos() as f64),
                    fmt_ns(p.median[1].as_nanos() as f64),
                    p.ratio[1],
                    p.ratio[0],
                    p.ratio[2],
                    p.rounds
                )
            });
            let cpu = pairs.get(&op).map_or("–".to_owned(), |p| {
                let f = |d: Option<Duration>| {
                    d.map_or("–".to_owned(), |d| fmt_ns(d.as_nanos() as f64))
                };
                format!("{}, {}", f(p.cpu[0]), f(p.cpu[1]))
            });
            let trips = |imp: Imp| {
                counts
                    .get(&(op, imp))
                    .map_or("–".to_owned(), |c| format!("{:.2}", c.round_trips))
            };
            println!(
                "| {} | {rows} | {} | {} | {ratio} | {paired} | {cpu} | {}, {} |",
                op.name(),
                cell(c),
                cell(m),
                trips(Imp::Crate),
                trips(Imp::Mysql)
            );
        }
    }
    println!();
    println!("Server counters per call (global `SHOW GLOBAL STATUS` differences; they include other clients' statements, see `background`):");
    println!();
    println!("| operation | rows | implementation | round trips | Questions | Com_stmt_prepare | Com_stmt_execute | Com_stmt_close | Com_begin | Com_commit | background questions |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (rows, counts, _) in &report {
        for ((op, imp), c) in counts {
            let v = |name: &str| format!("{:.2}", c.per_call.get(name).copied().unwrap_or(0.0));
            println!(
                "| {} | {rows} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                op.name(),
                imp.name(),
                c.round_trips,
                v("Questions"),
                v("Com_stmt_prepare"),
                v("Com_stmt_execute"),
                v("Com_stmt_close"),
                v("Com_begin"),
                v("Com_commit"),
                c.background
            );
        }
    }
}
