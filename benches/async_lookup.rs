//! The async API (`AsyncCredentialStore`) against the sync store and against
//! tokio-postgres doing the same work, on loopback and through a latency-injecting
//! proxy, plus throughput under concurrency. BENCHMARKS.md ("Async API") has the
//! command, the machine and the results.
//!
//! ```sh
//! cargo bench --all-features --bench async_lookup     # prints markdown tables at the end
//! ```
//!
//! Criterion ids: `<path>/<operation>`. Paths: `pg_loopback` (PostgreSQL on
//! 127.0.0.1 directly), `pg_rtt_0.5ms` and `pg_rtt_2ms` (through [`Proxy`], a TCP
//! proxy inside this process that adds half the round trip to each direction and
//! counts round trips), `sqlite` (a file). Operations, each one lookup of one
//! credential by nickname in one account:
//!
//! - `async_store/credential_by_nickname`: `AsyncCredentialStore`, awaited in a tokio
//!   task (a pool of 8; on PostgreSQL `BEGIN`, `set_config`, the SELECT and `COMMIT`
//!   pipelined; on SQLite the sync code on tokio's blocking pool);
//! - `sync_store/credential_by_nickname`: `CredentialStore`, called on the bench
//!   thread (a pool of 8; on PostgreSQL libpq, one statement after another);
//! - `raw_pipelined` (PostgreSQL): tokio-postgres doing the store's work by hand,
//!   the four statements prepared beforehand and their futures joined so they
//!   pipeline: the floor for the async store's scoped lookup. It sends the crate's
//!   own SQL text (`credential_store::internals::StatementSql`), and at start-up
//!   must have sent exactly the statements both stores send for one lookup, as
//!   diesel's instrumentation records theirs ([`check_sql`]; it panics otherwise);
//! - `bare_select` (PostgreSQL): the prepared SELECT alone, no transaction, no
//!   row-level-security context: one round trip, the floor for any lookup;
//! - `sync_store/spawn_blocking` (SQLite): the sync store's call inside
//!   `tokio::task::spawn_blocking`, awaited in a task, written by hand: what a hop
//!   to the blocking pool costs per call, the floor for the async SQLite store.
//!
//! Round trips per call are the proxy's count over every call of a benchmark
//! (warm-up included) divided by those calls. After the criterion groups, the
//! throughput runs: 64 tokio tasks over the async store's 8 connections against 8
//! OS threads over the sync store's 8, each looking up for a few seconds.
//!
//! Dataset: one PostgreSQL database (`credential_store_bench_async_<random>`,
//! dropped at the end) and one SQLite file in a temporary directory, both migrated
//! and filled through the async store: 1,000 accounts × 3 credentials, nicknames
//! `Momentum`, `Swing` and `alpaca_live`. Lookups pick an account and a nickname
//! with a deterministic PRNG. All setup is outside the timed loops.
//!
//! Environment: `CREDENTIAL_STORE_BENCH_POSTGRES=postgres://user@host:port` (default
//! `postgres://postgres@127.0.0.1:5432`, a superuser: it creates the database;
//! superusers bypass row-level security), `CREDENTIAL_STORE_BENCH_BACKENDS=sqlite`
//! (or `postgres`; both by default), `CREDENTIAL_STORE_BENCH_THROUGHPUT_SECS=3`
//! (seconds per throughput run; 0 skips them).

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/trace.rs"]
mod trace;

use credential_store::internals::{self, StatementSql};
use credential_store::{
    AsyncCredentialStore, AsyncDatabase, CredentialStore, Database, DatabaseOptions, Keyring,
    NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use proxy::Proxy;
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;

const ACCOUNTS: usize = 1_000;
/// Each account's credentials: (type, nickname).
const CREDENTIALS: [(&str, &str); 3] = [
    ("alpaca_paper", "Momentum"),
    ("alpaca_paper", "Swing"),
    ("alpaca_live", "alpaca_live"),
];
/// Connections in each store's pool.
const POOL: u32 = 8;
/// Concurrent tasks on the async store in the throughput runs.
const TASKS: usize = 64;
/// Threads on the sync store in the throughput runs.
const THREADS: usize = 8;
/// The round trips the proxy adds.
const RTTS: [(Path, Duration); 2] = [
    (Path::Rtt500us, Duration::from_micros(500)),
    (Path::Rtt2ms, Duration::from_millis(2)),
];

// ---------------------------------------------------------------------------
// Paths, operations, picks

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    Loopback,
    Rtt500us,
    Rtt2ms,
    Sqlite,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Loopback => "pg_loopback",
            Path::Rtt500us => "pg_rtt_0.5ms",
            Path::Rtt2ms => "pg_rtt_2ms",
            Path::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    AsyncStore,
    SyncStore,
    RawPipelined,
    BareSelect,
    SyncOnBlockingPool,
}

impl Op {
    const POSTGRES: [Op; 4] = [
        Op::AsyncStore,
        Op::SyncStore,
        Op::RawPipelined,
        Op::BareSelect,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::AsyncStore => "async_store/credential_by_nickname",
            Op::SyncStore => "sync_store/credential_by_nickname",
            Op::RawPipelined => "raw_pipelined",
            Op::BareSelect => "bare_select",
            Op::SyncOnBlockingPool => "sync_store/spawn_blocking",
        }
    }
}

/// SplitMix64: cheap and deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }
}

/// A pseudo-random account and one of its nicknames.
fn pick<'a>(rng: &mut Rng, accounts: &'a [UserAccount]) -> (&'a UserAccount, &'static str) {
    let account = &accounts[rng.below(accounts.len())];
    (account, CREDENTIALS[rng.below(CREDENTIALS.len())].1)
}

// ---------------------------------------------------------------------------
// Setup

/// The lookups never decrypt: any key will do.
fn keyring() -> Keyring {
    Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).expect("a valid key")
}

fn options() -> DatabaseOptions {
    DatabaseOptions::default().max_connections(POOL)
}

fn backend_enabled(name: &str) -> bool {
    match std::env::var("CREDENTIAL_STORE_BENCH_BACKENDS") {
        Ok(list) => list.split(',').any(|b| b.trim() == name),
        Err(_) => true,
    }
}

/// The PostgreSQL server the benchmark runs against.
struct Server {
    /// `postgres://[user[:password]@]host[:port]`, no database.
    url: String,
    /// The `user[:password]@` part of the URL, kept as written.
    userinfo: String,
    addr: SocketAddr,
}

impl Server {
    fn from_env() -> Option<Server> {
        let url = std::env::var("CREDENTIAL_STORE_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (format!("{user}@"), hostport),
            None => (String::new(), rest),
        };
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5432")
        };
        let addr = match hostport.to_socket_addrs() {
            Ok(mut addrs) => addrs.next()?,
            Err(err) => {
                eprintln!("SKIPPED PostgreSQL: cannot resolve {hostport}: {err}");
                return None;
            }
        };
        Some(Server {
            url,
            userinfo,
            addr,
        })
    }

    /// In plaintext, like the baselines (see `support::pg_url`).
    fn db_url(&self, database: &str) -> String {
        format!("{}/{database}?sslmode=disable", self.url)
    }

    /// The URL of `database` through a proxy listening on `addr`.
    fn url_via(&self, addr: SocketAddr, database: &str) -> String {
        format!(
            "postgres://{}{addr}/{database}?sslmode=disable",
            self.userinfo
        )
    }

    fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.db_url("postgres"), postgres::NoTls)
    }
}

/// A PostgreSQL database made for this run, dropped with this value (also when the
/// benchmark panics).
struct ScratchDatabase<'a> {
    server: &'a Server,
    name: String,
}

impl<'a> ScratchDatabase<'a> {
    fn create(server: &'a Server) -> ScratchDatabase<'a> {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        hasher.write_u32(std::process::id());
        let name = format!("credential_store_bench_async_{:016x}", hasher.finish());
        server
            .admin()
            .expect("connect to the server")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the benchmark database");
        eprintln!("created database {name}");
        ScratchDatabase { server, name }
    }
}

impl Drop for ScratchDatabase<'_> {
    fn drop(&mut self) {
        let dropped = self.server.admin().and_then(|mut admin| {
            admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        // `writeln!`, not `eprintln!`: a closed stderr must not panic in a drop.
        use std::io::Write;
        let _ = match dropped {
            Ok(()) => writeln!(std::io::stderr(), "dropped database {}", self.name),
            Err(err) => writeln!(
                std::io::stderr(),
                "WARNING: could not drop database {}: {err}",
                self.name
            ),
        };
    }
}

/// Creates the accounts and their credentials through the async store, a few at a
/// time; returns the accounts in order.
async fn fill(store: &AsyncCredentialStore) -> Vec<UserAccount> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let started = Instant::now();
    let accounts: Vec<UserAccount> = stream::iter(0..ACCOUNTS)
        .map(|i| {
            let store = store.clone();
            async move {
                let user_id = format!("bench-async-{i:05}");
                let account = store
                    .create_account(&NewUserAccount::new(&user_id, "bench"))
                    .await?;
                let keys: Vec<(String, String)> = (0..CREDENTIALS.len())
                    .map(|n| {
                        (
                            format!("PK{:018}", i * 3 + n),
                            format!("{:040x}", (i as u128) << 8 | n as u128),
                        )
                    })
                    .collect();
                let new: Vec<NewUserCredential<'_>> = CREDENTIALS
                    .iter()
                    .zip(&keys)
                    .map(|((kind, nickname), (api, secret))| {
                        NewUserCredential::new(kind, api.as_str(), secret.as_str())
                            .nickname(nickname)
                    })
                    .collect();
                store.insert_credentials(&account, &new).await?;
                Ok::<_, credential_store::Error>(account)
            }
        })
        .buffered(4)
        .try_collect()
        .await
        .expect("fill the dataset");
    eprintln!(
        "  {} accounts × {} credentials in {:.1?}",
        accounts.len(),
        CREDENTIALS.len(),
        started.elapsed()
    );
    accounts
}

// ---------------------------------------------------------------------------
// tokio-postgres doing the same work

/// tokio-postgres with the crate's statements prepared: `BEGIN` and `COMMIT` (what
/// the stores send around a call), the row-level-security context and the lookup
/// (their SQL text from `credential_store::internals`).
struct Raw {
    client: tokio_postgres::Client,
    begin: tokio_postgres::Statement,
    set_config: tokio_postgres::Statement,
    lookup: tokio_postgres::Statement,
    commit: tokio_postgres::Statement,
    /// The texts `set_config` and `lookup` were prepared from, recorded as sent.
    set_config_sql: String,
    lookup_sql: String,
}

impl Raw {
    async fn connect(url: &str, sql: &StatementSql) -> Raw {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect with tokio-postgres");
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("tokio-postgres connection: {err}");
            }
        });
        let set_config_sql = sql.user_context.clone().expect("PostgreSQL statements");
        let lookup_sql = sql.credentials_by_nickname.clone();
        let (begin, set_config, lookup, commit) = tokio::try_join!(
            client.prepare(trace::BEGIN),
            client.prepare(&set_config_sql),
            client.prepare(&lookup_sql),
            client.prepare(trace::COMMIT),
        )
        .expect("prepare");
        Raw {
            client,
            begin,
            set_config,
            lookup,
            commit,
            set_config_sql,
            lookup_sql,
        }
    }

    /// Records the four statements of a scoped lookup, in the order they are sent.
    fn sent_scoped(&self) {
        trace::sent(trace::BEGIN);
        trace::sent(&self.set_config_sql);
        trace::sent(&self.lookup_sql);
        trace::sent(trace::COMMIT);
    }

    /// `BEGIN; set_config; SELECT; COMMIT`, the four futures joined: one round trip.
    /// The context binds the setting, the user and `true`, and the lookup the
    /// nickname twice (normalised and as given), as the stores bind them.
    async fn pipelined(&self, account: &UserAccount, nickname: &str) -> Option<UserCredential> {
        let context: [&(dyn ToSql + Sync); 3] =
            [&internals::USER_SETTING, &account.user_id(), &true];
        let lookup: [&(dyn ToSql + Sync); 4] =
            [&account.id(), &account.user_id(), &nickname, &nickname];
        self.sent_scoped();
        let (begin, context, rows, commit) = tokio::join!(
            self.client.execute(&self.begin, &[]),
            self.client.execute(&self.set_config, &context),
            self.client.query(&self.lookup, &lookup),
            self.client.execute(&self.commit, &[]),
        );
        begin.expect("BEGIN");
        context.expect("set_config");
        commit.expect("COMMIT");
        one(rows.expect("lookup"))
    }

    /// The same four statements, each awaited before the next: four round trips.
    async fn sequential(&self, account: &UserAccount, nickname: &str) -> Option<UserCredential> {
        let context: [&(dyn ToSql + Sync); 3] =
            [&internals::USER_SETTING, &account.user_id(), &true];
        let lookup: [&(dyn ToSql + Sync); 4] =
            [&account.id(), &account.user_id(), &nickname, &nickname];
        self.sent_scoped();
        self.client.execute(&self.begin, &[]).await.expect("BEGIN");
        self.client
            .execute(&self.set_config, &context)
            .await
            .expect("set_config");
        let rows = self.client.query(&self.lookup, &lookup).await;
        self.client
            .execute(&self.commit, &[])
            .await
            .expect("COMMIT");
        one(rows.expect("lookup"))
    }

    /// The SELECT alone.
    async fn bare(&self, account: &UserAccount, nickname: &str) -> Option<UserCredential> {
        let lookup: [&(dyn ToSql + Sync); 4] =
            [&account.id(), &account.user_id(), &nickname, &nickname];
        trace::sent(&self.lookup_sql);
        one(self
            .client
            .query(&self.lookup, &lookup)
            .await
            .expect("lookup"))
    }
}

/// Zero or one row, decoded as the crate decodes it; more is the crate's
/// `AmbiguousNickname`, which the dataset never has.
fn one(rows: Vec<tokio_postgres::Row>) -> Option<UserCredential> {
    assert!(rows.len() <= 1, "ambiguous nickname");
    rows.first().map(|row| {
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
    })
}

// ---------------------------------------------------------------------------
// What each operation runs

/// An async implementation, cheap to clone into a task.
#[derive(Clone)]
enum AsyncLookup {
    Store(AsyncCredentialStore),
    RawPipelined(Arc<Raw>),
    BareSelect(Arc<Raw>),
    /// The sync store's call on tokio's blocking pool, by hand: what any
    /// blocking-pool design pays per call.
    SyncOnBlockingPool(CredentialStore),
}

impl AsyncLookup {
    async fn lookup(&self, account: &UserAccount, nickname: &str) -> Option<UserCredential> {
        match self {
            AsyncLookup::Store(store) => store
                .credential_by_nickname(account, nickname)
                .await
                .expect("lookup"),
            AsyncLookup::RawPipelined(raw) => raw.pipelined(account, nickname).await,
            AsyncLookup::BareSelect(raw) => raw.bare(account, nickname).await,
            AsyncLookup::SyncOnBlockingPool(store) => {
                let (store, account, nickname) =
                    (store.clone(), account.clone(), nickname.to_owned());
                tokio::task::spawn_blocking(move || {
                    store.credential_by_nickname(&account, &nickname)
                })
                .await
                .expect("blocking task")
                .expect("lookup")
            }
        }
    }
}

/// `iters` lookups in one tokio task (as a service awaits them), timed inside it.
fn run_async(
    rt: &Runtime,
    target: &AsyncLookup,
    accounts: &Arc<Vec<UserAccount>>,
    seed: u64,
    iters: u64,
) -> Duration {
    let (target, accounts) = (target.clone(), Arc::clone(accounts));
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let started = Instant::now();
            for _ in 0..iters {
                let (account, nickname) = pick(&mut rng, &accounts);
                black_box(target.lookup(account, nickname).await);
            }
            started.elapsed()
        })
        .await
        .expect("benchmark task")
    })
}

/// `iters` lookups on the calling thread.
fn run_sync(store: &CredentialStore, accounts: &[UserAccount], seed: u64, iters: u64) -> Duration {
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    for _ in 0..iters {
        let (account, nickname) = pick(&mut rng, accounts);
        black_box(
            store
                .credential_by_nickname(account, nickname)
                .expect("lookup"),
        );
    }
    started.elapsed()
}

/// One path's implementations.
struct Fixture {
    path: Path,
    accounts: Arc<Vec<UserAccount>>,
    async_store: AsyncCredentialStore,
    sync_store: CredentialStore,
    raw: Option<Arc<Raw>>,
    /// Last, so dropped last: the connections through it close first.
    proxy: Option<Proxy>,
}

impl Fixture {
    fn open(
        rt: &Runtime,
        path: Path,
        url: &str,
        proxy: Option<Proxy>,
        accounts: &Arc<Vec<UserAccount>>,
        sql: Option<&StatementSql>,
    ) -> Fixture {
        let async_store = rt.block_on(async {
            let db = AsyncDatabase::open_with(url, &options())
                .await
                .expect("open the async store");
            AsyncCredentialStore::new(db, keyring())
        });
        let sync_store = CredentialStore::new(
            Database::open_with(url, &options()).expect("open"),
            keyring(),
        );
        let raw = sql.map(|sql| Arc::new(rt.block_on(Raw::connect(url, sql))));
        let fixture = Fixture {
            path,
            proxy,
            accounts: Arc::clone(accounts),
            async_store,
            sync_store,
            raw,
        };
        fixture.warm(rt);
        fixture
    }

    /// Every connection of the async pool opened and its statements prepared (64
    /// concurrent lookups), then a few sequential lookups on each implementation.
    fn warm(&self, rt: &Runtime) {
        let store = AsyncLookup::Store(self.async_store.clone());
        rt.block_on(async {
            let tasks: Vec<_> = (0..TASKS as u64)
                .map(|t| {
                    let (store, accounts) = (store.clone(), Arc::clone(&self.accounts));
                    tokio::spawn(async move {
                        let mut rng = Rng::new(t);
                        for _ in 0..4 {
                            let (account, nickname) = pick(&mut rng, &accounts);
                            store.lookup(account, nickname).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("warm-up task");
            }
        });
        for target in self.async_lookups() {
            run_async(rt, &target, &self.accounts, 7, 20);
        }
        std::thread::scope(|scope| {
            for t in 0..THREADS as u64 {
                scope.spawn(move || run_sync(&self.sync_store, &self.accounts, t, 4));
            }
        });
        run_sync(&self.sync_store, &self.accounts, 7, 20);
    }

    fn async_lookups(&self) -> Vec<AsyncLookup> {
        let mut targets = vec![AsyncLookup::Store(self.async_store.clone())];
        if let Some(raw) = &self.raw {
            targets.push(AsyncLookup::RawPipelined(Arc::clone(raw)));
            targets.push(AsyncLookup::BareSelect(Arc::clone(raw)));
        }
        targets
    }

    /// Every implementation returns the same credential for the same picks.
    fn check_same_results(&self, rt: &Runtime) {
        let mut rng = Rng::new(99);
        for _ in 0..20 {
            let (account, nickname) = pick(&mut rng, &self.accounts);
            let by_sync = self
                .sync_store
                .credential_by_nickname(account, nickname)
                .expect("lookup")
                .expect("a credential");
            assert_eq!(by_sync.nickname.as_deref(), Some(nickname));
            for target in self.async_lookups() {
                let found = rt.block_on(target.lookup(account, nickname));
                assert_eq!(found.as_ref(), Some(&by_sync), "{}", self.path.name());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The SQL the stores send

/// One lookup through each store, on connections that record (diesel's
/// instrumentation), against what tokio-postgres sends for the same lookup: the
/// pipelined and the awaited-in-turn baselines must send exactly the statements each
/// store sends, in order, and the bare SELECT exactly the stores' lookup statement.
/// Panics naming both texts otherwise; prints what the stores send.
fn check_sql(rt: &Runtime, url: &str, account: &UserAccount, sql: &StatementSql) {
    let one = DatabaseOptions::default().max_connections(1);
    let nickname = CREDENTIALS[1].1;
    // The async pool opens its connection (and prepares its statements) in `open`;
    // a first lookup, then the one recorded.
    let async_store = trace::with_recording(|| {
        rt.block_on(async {
            let db = AsyncDatabase::open_with(url, &one).await.expect("open");
            let store = AsyncCredentialStore::new(db, keyring());
            store
                .credential_by_nickname(account, nickname)
                .await
                .expect("lookup");
            store
        })
    });
    let by_async = trace::statements(|| {
        rt.block_on(async_store.credential_by_nickname(account, nickname))
            .expect("lookup");
    });
    let (sync_store, _) = trace::recording_store(url, keyring(), |store| {
        store
            .credential_by_nickname(account, nickname)
            .expect("lookup");
    });
    let by_sync = trace::statements(|| {
        sync_store
            .credential_by_nickname(account, nickname)
            .expect("lookup");
    });
    let raw = rt.block_on(Raw::connect(url, sql));
    let pipelined = trace::statements(|| {
        rt.block_on(raw.pipelined(account, nickname));
    });
    let sequential = trace::statements(|| {
        rt.block_on(raw.sequential(account, nickname));
    });
    let bare = trace::statements(|| {
        rt.block_on(raw.bare(account, nickname));
    });
    let context = raw.set_config_sql.as_str();
    let lookup_alone: Vec<String> = by_sync
        .iter()
        .filter(|sql| ![trace::BEGIN, trace::COMMIT, context].contains(&sql.as_str()))
        .cloned()
        .collect();
    for (store, by_store) in [("sync store", &by_sync), ("async store", &by_async)] {
        trace::assert_same_sql(
            &format!("raw_pipelined against the {store}"),
            &pipelined,
            by_store,
        );
        trace::assert_same_sql(
            &format!("tokio-postgres, awaited in turn, against the {store}"),
            &sequential,
            by_store,
        );
    }
    trace::assert_same_sql("bare_select", &bare, &lookup_alone);
    eprintln!("both stores send for one lookup exactly what raw_pipelined sends:");
    for sql in &by_async {
        eprintln!("  {sql}");
    }
}

// ---------------------------------------------------------------------------
// The proxy, checked with tokio-postgres

struct ProxyCheck {
    path: Path,
    rtt: Duration,
    overshoot: Duration,
    bare: f64,
    sequential: f64,
    pipelined: f64,
    /// Time per bare SELECT through the proxy.
    bare_time: Duration,
}

/// Through a proxy: a bare prepared SELECT must be 1 round trip, the four statements
/// awaited one by one 4, and pipelined 1.
fn check_proxy(
    rt: &Runtime,
    path: Path,
    proxy: &Proxy,
    raw: &Raw,
    accounts: &[UserAccount],
) -> ProxyCheck {
    const N: u64 = 20;
    let mut rng = Rng::new(5);
    let mut per_call = |f: &dyn Fn(&UserAccount, &'static str) -> Option<UserCredential>| {
        proxy.reset();
        let started = Instant::now();
        for _ in 0..N {
            let (account, nickname) = pick(&mut rng, accounts);
            assert!(f(account, nickname).is_some());
        }
        (
            proxy.round_trips() as f64 / N as f64,
            started.elapsed() / N as u32,
        )
    };
    let (bare, bare_time) = per_call(&|a, n| rt.block_on(raw.bare(a, n)));
    let (sequential, _) = per_call(&|a, n| rt.block_on(raw.sequential(a, n)));
    let (pipelined, _) = per_call(&|a, n| rt.block_on(raw.pipelined(a, n)));
    assert_eq!(bare, 1.0, "proxy: a bare prepared SELECT is one round trip");
    assert_eq!(
        sequential, 4.0,
        "proxy: four sequential statements are four"
    );
    ProxyCheck {
        path,
        rtt: proxy.rtt(),
        overshoot: proxy.sleep_overshoot(),
        bare,
        sequential,
        pipelined,
        bare_time,
    }
}

// ---------------------------------------------------------------------------
// Criterion

#[derive(Default)]
struct Results {
    /// Median time per call, ns.
    median: BTreeMap<(Path, Op), f64>,
    /// Round trips per call, where counted.
    round_trips: BTreeMap<(Path, Op), f64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One criterion benchmark; records its median (over criterion's measurement
/// samples, as criterion computes it) and the proxy's round trips per call.
fn bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    sample_size: usize,
    fixture: &Fixture,
    op: Op,
    results: &mut Results,
    mut run: impl FnMut(u64, u64) -> Duration,
) {
    let mut samples: Vec<(u64, Duration)> = Vec::new();
    if let Some(proxy) = &fixture.proxy {
        proxy.reset();
    }
    group.bench_function(op.name(), |b| {
        b.iter_custom(|iters| {
            let elapsed = run(iters, 0x5eed ^ samples.len() as u64);
            samples.push((iters, elapsed));
            elapsed
        })
    });
    let calls: u64 = samples.iter().map(|(iters, _)| iters).sum();
    if calls == 0 {
        return; // filtered out
    }
    // Criterion's measurement samples are the last `sample_size` calls (the ones
    // before are its warm-up).
    let measured = &samples[samples.len().saturating_sub(sample_size)..];
    let mut per_call: Vec<f64> = measured
        .iter()
        .map(|(iters, elapsed)| elapsed.as_nanos() as f64 / *iters as f64)
        .collect();
    let key = (fixture.path, op);
    results.median.insert(key, median(&mut per_call));
    if let Some(proxy) = &fixture.proxy {
        results
            .round_trips
            .insert(key, proxy.round_trips() as f64 / calls as f64);
    }
}

fn bench_path(c: &mut Criterion, rt: &Runtime, fixture: &Fixture, results: &mut Results) {
    let mut group = c.benchmark_group(fixture.path.name());
    let mut sample_size = 30;
    if fixture.proxy.is_some() {
        // A sync lookup through the 2 ms proxy takes about 9 ms: few, flat samples.
        sample_size = 15;
        group
            .sample_size(sample_size)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    } else {
        group.sample_size(sample_size);
    }
    let ops: &[Op] = if fixture.path == Path::Sqlite {
        &[Op::AsyncStore, Op::SyncStore, Op::SyncOnBlockingPool]
    } else {
        &Op::POSTGRES
    };
    for &op in ops {
        let accounts = &fixture.accounts;
        match op {
            Op::SyncStore => bench(
                &mut group,
                sample_size,
                fixture,
                op,
                results,
                |iters, seed| run_sync(&fixture.sync_store, accounts, seed, iters),
            ),
            _ => {
                let raw = fixture.raw.clone();
                let target = match op {
                    Op::AsyncStore => AsyncLookup::Store(fixture.async_store.clone()),
                    Op::RawPipelined => AsyncLookup::RawPipelined(raw.expect("tokio-postgres")),
                    Op::BareSelect => AsyncLookup::BareSelect(raw.expect("tokio-postgres")),
                    Op::SyncOnBlockingPool => {
                        AsyncLookup::SyncOnBlockingPool(fixture.sync_store.clone())
                    }
                    Op::SyncStore => unreachable!(),
                };
                bench(
                    &mut group,
                    sample_size,
                    fixture,
                    op,
                    results,
                    |iters, seed| run_async(rt, &target, accounts, seed, iters),
                )
            }
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// Throughput

struct Throughput {
    path: Path,
    store: &'static str,
    workers: String,
    calls: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Throughput {
    fn new(
        path: Path,
        store: &'static str,
        workers: String,
        run: (Vec<Duration>, Duration),
    ) -> Self {
        let (mut latencies, elapsed) = run;
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Throughput {
            path,
            store,
            workers,
            calls: latencies.len(),
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// [`TASKS`] tasks looking up until `duration` has passed: every call's latency,
/// and the time until the last task finished.
fn async_load(
    rt: &Runtime,
    store: &AsyncCredentialStore,
    accounts: &Arc<Vec<UserAccount>>,
    duration: Duration,
) -> (Vec<Duration>, Duration) {
    rt.block_on(async {
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = (0..TASKS as u64)
            .map(|t| {
                let (store, accounts) = (store.clone(), Arc::clone(accounts));
                tokio::spawn(async move {
                    let mut rng = Rng::new(1000 + t);
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let (account, nickname) = pick(&mut rng, &accounts);
                        let call = Instant::now();
                        black_box(
                            store
                                .credential_by_nickname(account, nickname)
                                .await
                                .expect("lookup"),
                        );
                        latencies.push(call.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("load task"));
        }
        (all, started.elapsed())
    })
}

/// [`THREADS`] threads doing the same on the sync store.
fn sync_load(
    store: &CredentialStore,
    accounts: &[UserAccount],
    duration: Duration,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let all = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = Rng::new(1000 + t);
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let (account, nickname) = pick(&mut rng, accounts);
                        let call = Instant::now();
                        black_box(
                            store
                                .credential_by_nickname(account, nickname)
                                .expect("lookup"),
                        );
                        latencies.push(call.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect::<Vec<_>>()
    });
    (all, started.elapsed())
}

fn throughput(rt: &Runtime, fixture: &Fixture, duration: Duration) -> [Throughput; 2] {
    let warm = (duration / 6).max(Duration::from_millis(100));
    async_load(rt, &fixture.async_store, &fixture.accounts, warm);
    let by_async = Throughput::new(
        fixture.path,
        "async_store",
        format!("{TASKS} tasks / {POOL} conns"),
        async_load(rt, &fixture.async_store, &fixture.accounts, duration),
    );
    sync_load(&fixture.sync_store, &fixture.accounts, warm);
    let by_sync = Throughput::new(
        fixture.path,
        "sync_store",
        format!("{THREADS} threads / {POOL} conns"),
        sync_load(&fixture.sync_store, &fixture.accounts, duration),
    );
    eprintln!(
        "throughput {}: async {:.0}/s, sync {:.0}/s",
        fixture.path.name(),
        by_async.per_second,
        by_sync.per_second
    );
    [by_async, by_sync]
}

// ---------------------------------------------------------------------------
// Report

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} µs", ns / 1e3)
    }
}

fn fmt_duration(d: Duration) -> String {
    fmt_ns(d.as_nanos() as f64)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn ratio(results: &Results, a: (Path, Op), b: (Path, Op)) -> Option<f64> {
    Some(results.median.get(&a)? / results.median.get(&b)?)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

fn report(
    results: &Results,
    checks: &[ProxyCheck],
    throughputs: &[Throughput],
    load: (&str, &str),
) {
    println!("\n## async_lookup results\n");
    println!(
        "Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        load.0, load.1
    );
    if !checks.is_empty() {
        println!("Proxy check (tokio-postgres, 20 calls each; round trips per call counted at the proxy):\n");
        println!("| RTT asked | bare SELECT | 4 statements awaited in turn | 4 statements pipelined | bare SELECT, time per call | added RTT (bare_select median − loopback's) | sleep overshoot compensated |");
        println!("|---|---|---|---|---|---|---|");
        for check in checks {
            let added = match (
                results.median.get(&(check.path, Op::BareSelect)),
                results.median.get(&(Path::Loopback, Op::BareSelect)),
            ) {
                (Some(proxied), Some(direct)) => fmt_ns(proxied - direct),
                _ => "–".to_owned(),
            };
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {} | {added} | {} |",
                fmt_duration(check.rtt),
                check.bare,
                check.sequential,
                check.pipelined,
                fmt_duration(check.bare_time),
                fmt_duration(check.overshoot),
            );
        }
        println!();
    }

    let pg_paths = [Path::Loopback, Path::Rtt500us, Path::Rtt2ms];
    if pg_paths.iter().any(|&p| {
        Op::POSTGRES
            .iter()
            .any(|&o| results.median.contains_key(&(p, o)))
    }) {
        println!("PostgreSQL, one lookup by nickname (median per call):\n");
        println!("| operation | path | median per call | round trips per call | ÷ bare_select | ÷ raw_pipelined |");
        println!("|---|---|---|---|---|---|");
        for path in pg_paths {
            for op in Op::POSTGRES {
                let Some(&ns) = results.median.get(&(path, op)) else {
                    continue;
                };
                let round_trips = results
                    .round_trips
                    .get(&(path, op))
                    .map_or_else(|| "– (no proxy)".to_owned(), |r| format!("{r:.2}"));
                println!(
                    "| {} | {} | {} | {round_trips} | {} | {} |",
                    op.name(),
                    path.name(),
                    fmt_ns(ns),
                    fmt_ratio(ratio(results, (path, op), (path, Op::BareSelect))),
                    fmt_ratio(ratio(results, (path, op), (path, Op::RawPipelined))),
                );
            }
        }
        println!();
    }

    if results.median.keys().any(|(p, _)| *p == Path::Sqlite) {
        println!("SQLite, one lookup by nickname (median per call):\n");
        println!("| operation | median per call | ÷ sync_store | ÷ sync_store/spawn_blocking |");
        println!("|---|---|---|---|");
        for op in [Op::AsyncStore, Op::SyncStore, Op::SyncOnBlockingPool] {
            if let Some(&ns) = results.median.get(&(Path::Sqlite, op)) {
                let to = |base| fmt_ratio(ratio(results, (Path::Sqlite, op), (Path::Sqlite, base)));
                println!(
                    "| {} | {} | {} | {} |",
                    op.name(),
                    fmt_ns(ns),
                    to(Op::SyncStore),
                    to(Op::SyncOnBlockingPool),
                );
            }
        }
        println!();
    }

    println!("Targets (ratios of medians within this run):\n");
    println!("| target | measured | limit | |");
    println!("|---|---|---|---|");
    let targets = [
        (
            "async store ÷ bare SELECT, proxy 0.5 ms",
            (Path::Rtt500us, Op::AsyncStore),
            (Path::Rtt500us, Op::BareSelect),
            1.3,
        ),
        (
            "async store ÷ bare SELECT, proxy 2 ms",
            (Path::Rtt2ms, Op::AsyncStore),
            (Path::Rtt2ms, Op::BareSelect),
            1.3,
        ),
        (
            "async store ÷ raw_pipelined, loopback",
            (Path::Loopback, Op::AsyncStore),
            (Path::Loopback, Op::RawPipelined),
            1.2,
        ),
        (
            "SQLite async ÷ sync",
            (Path::Sqlite, Op::AsyncStore),
            (Path::Sqlite, Op::SyncStore),
            1.5,
        ),
    ];
    for (what, a, b, limit) in targets {
        let Some(r) = ratio(results, a, b) else {
            continue;
        };
        let verdict = if r <= limit {
            "met".to_owned()
        } else {
            format!("missed by {:.0} %", (r / limit - 1.0) * 100.0)
        };
        println!("| {what} | {r:.2}× | ≤ {limit}× | {verdict} |");
    }
    println!();

    if !throughputs.is_empty() {
        println!("Throughput (one lookup per call; latency per call):\n");
        println!("| path | store | concurrency | calls | calls/s | p50 | p99 |");
        println!("|---|---|---|---|---|---|---|");
        for t in throughputs {
            println!(
                "| {} | {} | {} | {} | {:.0} | {} | {} |",
                t.path.name(),
                t.store,
                t.workers,
                t.calls,
                t.per_second,
                fmt_duration(t.p50),
                fmt_duration(t.p99),
            );
        }
        println!();
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // Without `--bench` (`cargo test --benches`), criterion runs each benchmark
    // once; the throughput runs are cut short the same way.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let throughput_time = match std::env::var("CREDENTIAL_STORE_BENCH_THROUGHPUT_SECS") {
        Ok(secs) => Duration::from_secs_f64(secs.trim().parse().expect("a number of seconds")),
        Err(_) if bench_mode => Duration::from_secs(3),
        Err(_) => Duration::from_millis(200),
    };
    let load_start = load_average();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut results = Results::default();
    let mut checks = Vec::new();
    let mut throughputs = Vec::new();

    // PostgreSQL
    let server = if backend_enabled("postgres") {
        Server::from_env().filter(|server| match server.admin() {
            Ok(_) => true,
            Err(err) => {
                eprintln!(
                    "SKIPPED PostgreSQL: cannot connect to {} ({err}); set CREDENTIAL_STORE_BENCH_POSTGRES",
                    server.url
                );
                false
            }
        })
    } else {
        None
    };
    if let Some(server) = &server {
        let database = ScratchDatabase::create(server);
        let url = server.db_url(&database.name);
        eprintln!("filling {} …", database.name);
        let accounts = rt.block_on(async {
            let db = AsyncDatabase::open_with(&url, &options())
                .await
                .expect("open");
            db.run_migrations().await.expect("migrations");
            fill(&AsyncCredentialStore::new(db, keyring())).await
        });
        postgres::Client::connect(&url, postgres::NoTls)
            .and_then(|mut client| {
                client.batch_execute("VACUUM ANALYZE user_accounts")?;
                client.batch_execute("VACUUM ANALYZE user_credentials")
            })
            .expect("vacuum");
        let sql = StatementSql::postgres(&url, 1).expect("the crate's PostgreSQL statements");
        check_sql(&rt, &url, &accounts[0], &sql);
        let accounts = Arc::new(accounts);

        let mut fixtures = vec![Fixture::open(
            &rt,
            Path::Loopback,
            &url,
            None,
            &accounts,
            Some(&sql),
        )];
        if server.addr.ip().is_loopback() {
            for (path, rtt) in RTTS {
                let proxy = Proxy::start(server.addr, rtt);
                let via = server.url_via(proxy.addr(), &database.name);
                fixtures.push(Fixture::open(
                    &rt,
                    path,
                    &via,
                    Some(proxy),
                    &accounts,
                    Some(&sql),
                ));
            }
        } else {
            eprintln!("SKIPPED the proxied runs: the server is not on a loopback address");
        }
        for fixture in &fixtures {
            fixture.check_same_results(&rt);
            if let (Some(proxy), Some(raw)) = (&fixture.proxy, &fixture.raw) {
                checks.push(check_proxy(&rt, fixture.path, proxy, raw, &accounts));
            }
        }
        for fixture in &fixtures {
            bench_path(&mut criterion, &rt, fixture, &mut results);
        }
        if !throughput_time.is_zero() {
            for fixture in &fixtures {
                throughputs.extend(throughput(&rt, fixture, throughput_time));
            }
        }
        drop(fixtures);
        drop(database);
    }

    // SQLite
    if backend_enabled("sqlite") {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("async_lookup.db");
        let url = path.to_str().expect("UTF-8 path").to_owned();
        eprintln!("filling {url} …");
        let accounts = rt.block_on(async {
            let db = AsyncDatabase::open_with(&url, &options())
                .await
                .expect("open");
            db.run_migrations().await.expect("migrations");
            fill(&AsyncCredentialStore::new(db, keyring())).await
        });
        let accounts = Arc::new(accounts);
        let fixture = Fixture::open(&rt, Path::Sqlite, &url, None, &accounts, None);
        fixture.check_same_results(&rt);
        bench_path(&mut criterion, &rt, &fixture, &mut results);
        if !throughput_time.is_zero() {
            throughputs.extend(throughput(&rt, &fixture, throughput_time));
        }
    }

    criterion.final_summary();
    report(
        &results,
        &checks,
        &throughputs,
        (&load_start, &load_average()),
    );
}
