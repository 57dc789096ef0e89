//! Throughput and latency of the blocking store in three PostgreSQL topologies, for
//! BENCHMARKS.md: straight to the primary, through PgBouncer in transaction pooling
//! mode, and with per-user reads on a streaming replica.
//!
//! ```sh
//! bash .ci/pg-topology                               # primary, replica, PgBouncer
//! cargo bench --features postgres,bundled-postgres --bench topology_figures        # 10 s per measurement, ~80 s in all
//! cargo bench --features postgres,bundled-postgres --bench topology_figures -- 2   # a quick run (~30 s)
//! ```
//!
//! It makes one fresh database with a random name (`credential_store_topology_…`)
//! on the primary, runs the crate's migrations there as the server's superuser
//! (`Database::run_migrations`, directly), and a service role
//! (`cs_topology_svc_…`, `NOSUPERUSER NOBYPASSRLS`, the grants of the README's
//! service role), so that row-level security is in force for every measured call.
//! Through the crate, as that role: 1,000 accounts of 10 credentials each
//! (`insert_credentials`, sealed with a keyring of one fresh key), nicknames
//! `bot-0` … `bot-8` and `spare`. Both the database and the role are dropped at the
//! end, also when the run fails or panics (not when it is killed: then
//! `DROP DATABASE … WITH (FORCE)` and `DROP ROLE …` by hand).
//!
//! The three configurations, with the same number of client threads T = 2 ×
//! PgBouncer's `default_pool_size` (read from its admin console, `SHOW CONFIG`):
//!
//! - **direct**: `Database::open_with(primary, max_connections = T)`;
//! - **pgbouncer**: `Database::open_with(pgbouncer, transaction_pooler: true,
//!   max_connections = T)`, twice as many clients as PgBouncer's server connections;
//! - **replica**: `Database::open(primary)?.with_read_replica(replica)` (default
//!   options: pools of 10), per-user reads on the replica.
//!
//! Each runs two workloads, each for the given number of seconds (default 10) after
//! a 1 s warm-up: **lookups**, `credential_by_nickname` of a random account and one of
//! its nicknames `bot-0` … `bot-8`; and **90/10**, the same lookups with 10 % of the
//! calls `update_credential` renaming a random account's `spare` credential (which no
//! lookup asks for, so every lookup finds its row). Every latency of the measured
//! window is kept and sorted for p50, p99, p99.9 and the maximum (nearest rank).
//!
//! For the replica configuration it also counts where the transactions ran: exactly,
//! from diesel's instrumentation (the depth-1 `BEGIN`s on connections to each
//! server, warm-up included), and from the outside, as the `xact_commit` deltas of
//! the test database in `pg_stat_database` on each server (which also count the
//! crate's WAL-position statements and connection set-up), read when no session of
//! the service role is left (those still open, PgBouncer's server connections, are
//! ended first: a backend flushes its counters as it exits). Each workload of each
//! configuration starts on a handle of its own, with empty pools.
//!
//! Progress goes to stderr; the machine line and the markdown tables to stdout.
//! Exit status: 0, figures printed; 1, refused or failed before any figure (the
//! primary, PgBouncer or the replica unreachable, PgBouncer not pooling
//! transactions, the replica not a standby of the primary); 2, figures printed but
//! some calls failed (listed under the tables).
//!
//! Servers (URLs without a database name; trust authentication, as `.ci/pg-topology`
//! sets up, since the service role has no password):
//!
//! | variable | default |
//! |---|---|
//! | `CREDENTIAL_STORE_BENCH_POSTGRES` | `postgres://postgres@127.0.0.1:5432` (a superuser) |
//! | `CREDENTIAL_STORE_BENCH_PGBOUNCER` | `postgres://postgres@127.0.0.1:6432` (its admin console is database `pgbouncer`) |
//! | `CREDENTIAL_STORE_BENCH_REPLICA` | `postgres://postgres@127.0.0.1:5433` |

use credential_store::{
    CredentialStore, CredentialUpdate, Database, DatabaseOptions, Keyring, NewUserAccount,
    NewUserCredential, UserAccount,
};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Accounts in the dataset.
const ACCOUNTS: usize = 1_000;
/// Nicknames the lookups ask for, `bot-0` … `bot-8`; each account's tenth credential
/// is `spare`, the one the writes rename.
const LOOKUP_NICKNAMES: usize = 9;
/// Before each measured window.
const WARM_UP: Duration = Duration::from_secs(1);
/// Share of writes in the mixed workload, in percent.
const WRITE_PERCENT: u64 = 10;

/// The service role of the README (and `tests/common/mod.rs`): row-level security
/// applies to it. `{role}` and `{database}` are filled in.
const SERVICE_ROLE: &str = "
CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS;
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON user_accounts, user_credentials TO {role};
GRANT EXECUTE ON FUNCTION current_user_id() TO {role};";

/// What can fail: refusals (text), the crate's and the drivers' errors.
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("topology_figures: {}", chain(&*err));
            ExitCode::FAILURE
        }
    }
}

/// Checks, sets up, measures, cleans up, prints; the exit status.
fn run() -> Res<ExitCode> {
    // `cargo bench` adds `--bench`.
    let seconds: f64 = match std::env::args().skip(1).find(|arg| arg != "--bench") {
        None => 10.0,
        Some(arg) => match arg.parse::<f64>() {
            Ok(s) if s > 0.0 && s <= 3600.0 => s,
            _ => {
                return Err(format!(
                    "usage: topology_figures [seconds per measurement, 0 < s <= 3600], not {arg:?}"
                )
                .into())
            }
        },
    };
    let measure = Duration::from_secs_f64(seconds);
    let load_start = load_average();
    let servers = Servers::from_env();

    // Refuse before anything is created.
    let pre = preflight(&servers)?;
    let threads = 2 * pre.pool_size;
    eprintln!(
        "PostgreSQL {}, {}, default_pool_size {}: {threads} client threads, {seconds} s per \
         measurement after {} s of warm-up",
        pre.server_version,
        pre.bouncer_version,
        pre.pool_size,
        WARM_UP.as_secs_f64()
    );
    diesel::connection::set_default_instrumentation(|| Some(Box::<Routing>::default()))
        .map_err(|e| format!("installing diesel's instrumentation: {e}"))?;
    let _ = SERVERS
        .set([&servers.primary, &servers.pgbouncer, &servers.replica].map(|url| authority(url)));

    let scratch = Scratch::create(&servers)?;
    let outcome = measure_all(&servers, &scratch, threads, measure);
    drop(scratch);
    let results = outcome?;

    // Everything is measured and cleaned up: print.
    println!(
        "machine: nproc {}, CPU {} ({}), load average {} at start, {} at end",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        cpu_mhz(),
        load_start,
        load_average()
    );
    println!(
        "PostgreSQL {}, {} (pool_mode transaction, default_pool_size {}); {} accounts × 10 \
         credentials (sealed), row-level security in force (service role); {threads} client \
         threads; {seconds} s per measurement after {} s of warm-up; dataset built in {:.1} s",
        pre.server_version,
        pre.bouncer_version,
        pre.pool_size,
        ACCOUNTS,
        WARM_UP.as_secs_f64(),
        results.setup.as_secs_f64()
    );
    println!();
    print_tables(&results, &pre, threads, seconds);

    let failed: u64 = results
        .configs
        .iter()
        .flat_map(|c| [&c.lookups, &c.mixed])
        .map(|p| p.errors.values().sum::<u64>())
        .sum();
    if failed > 0 {
        println!();
        println!("**Failed calls** ({failed}):");
        println!();
        for config in &results.configs {
            for (workload, phase) in [("lookups", &config.lookups), ("90/10", &config.mixed)] {
                for (message, n) in &phase.errors {
                    println!("- {} / {workload}: {n} × {message}", config.name);
                }
            }
        }
        eprintln!("topology_figures: {failed} calls failed (listed above)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// Servers, and the refusals

/// The three servers, as URLs without a database name.
struct Servers {
    /// The primary, where the scratch database is made and writes go.
    primary: String,
    /// PgBouncer in transaction pooling mode, in front of the primary.
    pgbouncer: String,
    /// A streaming replica (hot standby) of the primary.
    replica: String,
}

impl Servers {
    /// From the `CREDENTIAL_STORE_BENCH_*` variables, or the `.ci/pg-topology` defaults.
    fn from_env() -> Servers {
        let get = |var: &str, default: &str| {
            server_only(&std::env::var(var).unwrap_or_else(|_| default.to_owned()))
        };
        Servers {
            primary: get(
                "CREDENTIAL_STORE_BENCH_POSTGRES",
                "postgres://postgres@127.0.0.1:5432",
            ),
            pgbouncer: get(
                "CREDENTIAL_STORE_BENCH_PGBOUNCER",
                "postgres://postgres@127.0.0.1:6432",
            ),
            replica: get(
                "CREDENTIAL_STORE_BENCH_REPLICA",
                "postgres://postgres@127.0.0.1:5433",
            ),
        }
    }
}

/// `url` without its database name and parameters: `scheme://[user@]host[:port]`.
fn server_only(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    match url[scheme_end..].find(['/', '?']) {
        Some(end) => url[..scheme_end + end].to_owned(),
        None => url.to_owned(),
    }
}

/// `host[:port]` of a URL (what follows the user, up to the database name).
fn authority(url: &str) -> String {
    let rest = &server_only(url)[url.find("://").map_or(0, |i| i + 3)..];
    rest.rsplit_once('@')
        .map_or(rest, |(_, host)| host)
        .to_owned()
}

/// Database `database` on `server`, as `user` (no password: the servers trust).
fn url_as(server: &str, user: &str, database: &str) -> String {
    let scheme_end = server.find("://").map_or(0, |i| i + 3);
    format!(
        "{}{user}@{}/{database}",
        &server[..scheme_end],
        authority(server)
    )
}

/// Database `database` on `server` as the server URL's own user.
fn url_on(server: &str, database: &str) -> String {
    format!("{server}/{database}")
}

/// A plain client (the `postgres` crate), for set-up and readings outside the crate.
fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(url, postgres::NoTls)
}

/// An error with its causes (`postgres::Error` alone says only "db error").
fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// What the checks found.
struct Preflight {
    /// The primary's `server_version`.
    server_version: String,
    /// PgBouncer's `SHOW VERSION`.
    bouncer_version: String,
    /// PgBouncer's `default_pool_size`: server connections per database and user.
    pool_size: usize,
}

/// Refuses unless the primary is a primary, PgBouncer pools transactions, and the
/// replica is a standby of that primary (same system identifier).
fn preflight(servers: &Servers) -> Res<Preflight> {
    const HINT: &str = "`bash .ci/pg-topology` starts the primary, the replica and PgBouncer";
    let mut primary = connect(&url_on(&servers.primary, "postgres")).map_err(|e| {
        format!(
            "cannot connect to the primary at {}: {}; {HINT}",
            servers.primary,
            chain(&e)
        )
    })?;
    let row = primary.query_one(
        "SELECT current_setting('server_version'), pg_is_in_recovery(), \
         (SELECT system_identifier FROM pg_control_system())",
        &[],
    )?;
    let (server_version, in_recovery, primary_system): (String, bool, i64) =
        (row.get(0), row.get(1), row.get(2));
    if in_recovery {
        return Err(format!("{} is a standby, not a primary", servers.primary).into());
    }

    let mut admin = connect(&url_on(&servers.pgbouncer, "pgbouncer")).map_err(|e| {
        format!(
            "PgBouncer is unreachable: cannot connect to its admin console at {}/pgbouncer: \
             {}; {HINT}",
            servers.pgbouncer,
            chain(&e)
        )
    })?;
    let config = simple_rows(&mut admin, "SHOW CONFIG")?;
    let setting = |key: &str| {
        config
            .iter()
            .find(|row| row.get("key").map(String::as_str) == Some(key))
            .and_then(|row| row.get("value").cloned())
            .ok_or_else(|| format!("PgBouncer's SHOW CONFIG has no {key}"))
    };
    let pool_mode = setting("pool_mode")?;
    if pool_mode != "transaction" {
        return Err(format!(
            "PgBouncer at {} pools in mode {pool_mode:?}, not \"transaction\"; {HINT}",
            servers.pgbouncer
        )
        .into());
    }
    let pool_size: usize = setting("default_pool_size")?
        .parse()
        .map_err(|e| format!("PgBouncer's default_pool_size: {e}"))?;
    if pool_size == 0 {
        return Err("PgBouncer's default_pool_size is 0".into());
    }
    let bouncer_version = simple_rows(&mut admin, "SHOW VERSION")?
        .first()
        .and_then(|row| row.values().next().cloned())
        .unwrap_or_else(|| "PgBouncer (version unknown)".into());

    let mut replica = connect(&url_on(&servers.replica, "postgres")).map_err(|e| {
        format!(
            "the replica is unreachable: cannot connect to {}: {}; {HINT}",
            servers.replica,
            chain(&e)
        )
    })?;
    let row = replica.query_one(
        "SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system())",
        &[],
    )?;
    let (standby, replica_system): (bool, i64) = (row.get(0), row.get(1));
    if !standby || replica_system != primary_system {
        return Err(format!(
            "{} is not a streaming replica of {} (in recovery: {standby}, system identifier \
             {replica_system} against the primary's {primary_system}); {HINT}",
            servers.replica, servers.primary
        )
        .into());
    }
    Ok(Preflight {
        server_version,
        bouncer_version,
        pool_size,
    })
}

/// The rows of a simple-protocol query, as column → value (PgBouncer's admin console
/// speaks nothing else).
fn simple_rows(client: &mut postgres::Client, sql: &str) -> Res<Vec<BTreeMap<String, String>>> {
    Ok(client
        .simple_query(sql)?
        .into_iter()
        .filter_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        (
                            column.name().to_owned(),
                            row.get(i).unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

// ---------------------------------------------------------------------------
// The scratch database and role

/// The database and the service role made for this run, dropped with this value.
struct Scratch {
    /// The primary's server URL (the superuser's).
    primary: String,
    /// `credential_store_topology_<uuid>`.
    database: String,
    /// `cs_topology_svc_<uuid>`: the service role, under row-level security.
    role: String,
}

impl Scratch {
    /// Creates the database, migrates it (as the superuser) and creates the service
    /// role. The value exists before anything is created, so a failure half-way
    /// still drops what was made.
    fn create(servers: &Servers) -> Res<Scratch> {
        let id = Uuid::now_v7().simple().to_string();
        let scratch = Scratch {
            primary: servers.primary.clone(),
            database: format!("credential_store_topology_{id}"),
            role: format!("cs_topology_svc_{id}"),
        };
        let mut admin = connect(&url_on(&servers.primary, "postgres"))?;
        admin.batch_execute(&format!("CREATE DATABASE {}", scratch.database))?;
        eprintln!(
            "created database {} and role {}",
            scratch.database, scratch.role
        );
        Database::open(&url_on(&servers.primary, &scratch.database))?.run_migrations()?;
        let mut db = connect(&url_on(&servers.primary, &scratch.database))?;
        db.batch_execute(
            &SERVICE_ROLE
                .replace("{role}", &scratch.role)
                .replace("{database}", &scratch.database),
        )?;
        Ok(scratch)
    }

    /// The scratch database on `server`, as the service role.
    fn service_url(&self, server: &str) -> String {
        url_as(server, &self.role, &self.database)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let dropped = connect(&url_on(&self.primary, "postgres")).and_then(|mut admin| {
            // FORCE ends the sessions still in it: PgBouncer's server connections.
            admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))?;
            admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.role))
        });
        match dropped {
            Ok(()) => eprintln!("dropped database {} and role {}", self.database, self.role),
            Err(err) => eprintln!(
                "WARNING: could not drop database {} or role {}: {}; drop them by hand",
                self.database,
                self.role,
                chain(&err)
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Where transactions run: diesel's instrumentation

/// `host[:port]` of the primary, PgBouncer and the replica, in that order.
static SERVERS: OnceLock<[String; 3]> = OnceLock::new();
/// Index of the primary in [`SERVERS`] and [`BEGINS`].
const PRIMARY: usize = 0;
/// Index of the replica in [`SERVERS`] and [`BEGINS`].
const REPLICA: usize = 2;
/// Depth-1 `BEGIN`s on connections to each server of [`SERVERS`].
static BEGINS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// One per diesel connection: which server it reached, and its transactions.
#[derive(Default)]
struct Routing {
    /// Index into [`SERVERS`]; `None`: another server.
    server: Option<usize>,
}

impl diesel::connection::Instrumentation for Routing {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::connection::InstrumentationEvent as E;
        match event {
            E::StartEstablishConnection { url, .. } => {
                let host = authority(url);
                self.server = SERVERS
                    .get()
                    .and_then(|servers| servers.iter().position(|s| *s == host));
            }
            E::BeginTransaction { depth, .. } if depth.get() == 1 => {
                if let Some(server) = self.server {
                    BEGINS[server].fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// The [`BEGINS`] counters now.
fn begins() -> [u64; 3] {
    [0, 1, 2].map(|i| BEGINS[i].load(Ordering::Relaxed))
}

/// `xact_commit` of the scratch database in `pg_stat_database` on the primary and
/// on the replica (in that order), once no session of the service role is left on
/// either: the ones still open (PgBouncer keeps its server connections after the
/// pgbouncer configuration) are ended first. A backend flushes its counters as it
/// exits, while an idle one that flushed less than a second earlier holds the rest
/// for up to 10 s: the pgbouncer configuration's last second of transactions
/// reached the primary's counters in the middle of the next measurement before this
/// was done.
fn xact_commits(servers: &Servers, scratch: &Scratch) -> Res<[i64; 2]> {
    let mut counts = [0; 2];
    for (i, server) in [&servers.primary, &servers.replica].into_iter().enumerate() {
        let mut client = connect(&url_on(server, "postgres"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let open = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    &[&scratch.role],
                )?
                .len();
            if open == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{server} still has {open} sessions of the service role after 10 s"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        counts[i] = client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
                &[&scratch.database],
            )?
            .get(0);
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------
// The dataset

/// The accounts the clients act for, and what they ask for.
struct Dataset {
    /// Made by the service role, in creation order.
    accounts: Vec<UserAccount>,
    /// Each account's `spare` credential, the one the writes rename.
    spare: Vec<Uuid>,
    /// `bot-0` … `bot-8`, the nicknames the lookups ask for.
    nicknames: Vec<String>,
}

/// 1,000 accounts of 10 credentials through the crate, as the service role, on
/// as many threads as the machine has cores.
fn build_dataset(store: &CredentialStore) -> Res<Dataset> {
    let nicknames: Vec<String> = (0..LOOKUP_NICKNAMES).map(|i| format!("bot-{i}")).collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let built: Vec<Res<Vec<(usize, UserAccount, Uuid)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (next, nicknames) = (&next, &nicknames);
                scope.spawn(move || -> Res<Vec<(usize, UserAccount, Uuid)>> {
                    let mut made = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= ACCOUNTS {
                            return Ok(made);
                        }
                        let user = format!("topology|{n:04}");
                        let account = store
                            .create_account(&NewUserAccount::new(&user, &format!("Account {n}")))?;
                        let types = ["alpaca_paper", "alpaca_live", "polygon"];
                        let new: Vec<NewUserCredential<'_>> = (0..=LOOKUP_NICKNAMES)
                            .map(|i| {
                                let nickname = nicknames.get(i).map_or("spare", String::as_str);
                                NewUserCredential::new(
                                    types[i % types.len()],
                                    format!("PK{n:06}{i:012}"),
                                    format!("SK{n:06}{i:032}"),
                                )
                                .nickname(nickname)
                            })
                            .collect();
                        let stored = store.insert_credentials(&account, &new)?;
                        let spare = stored
                            .iter()
                            .find(|c| c.nickname.as_deref() == Some("spare"))
                            .ok_or("no spare credential came back")?
                            .id;
                        made.push((n, account, spare));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("dataset thread panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(ACCOUNTS);
    for part in built {
        all.extend(part?);
    }
    all.sort_by_key(|(n, _, _)| *n);
    let (accounts, spare) = all.into_iter().map(|(_, a, s)| (a, s)).unzip();
    Ok(Dataset {
        accounts,
        spare,
        nicknames,
    })
}

/// Waits (up to 60 s) until the replica has the scratch database and has replayed
/// everything the primary wrote so far.
fn wait_for_replica(servers: &Servers, scratch: &Scratch) -> Res<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut primary = connect(&url_on(&servers.primary, "postgres"))?;
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])?
        .get(0);
    loop {
        let caught_up = connect(&url_on(&servers.replica, &scratch.database)).and_then(|mut c| {
            c.query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .map(|row| row.get::<_, bool>(0))
        });
        match caught_up {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(false) => return Err("the replica did not replay the dataset within 60 s".into()),
            Err(err) => {
                return Err(format!("the replica never showed the scratch database: {err}").into())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Measuring

/// One workload on one configuration.
#[derive(Default)]
struct Phase {
    /// Latencies of the lookups in the measured window, nanoseconds, sorted.
    lookups: Vec<u64>,
    /// The same for the updates.
    writes: Vec<u64>,
    /// Lookups made, warm-up included.
    lookups_total: u64,
    /// Updates made, warm-up included.
    writes_total: u64,
    /// Failed calls by message (warm-up included).
    errors: BTreeMap<String, u64>,
    /// Depth-1 `BEGIN`s per server during the phase, warm-up included.
    begins: [u64; 3],
    /// `xact_commit` deltas on the primary and the replica (replica configuration only).
    xact_commits: Option<[i64; 2]>,
}

/// Both workloads of one configuration.
struct ConfigResult {
    /// `direct`, `pgbouncer` or `replica`.
    name: &'static str,
    /// How its pools reach the servers, in words.
    connections: String,
    /// The lookups-only workload.
    lookups: Phase,
    /// The 90/10 workload.
    mixed: Phase,
}

/// Everything printed.
struct Results {
    /// Building the dataset (and `VACUUM ANALYZE`).
    setup: Duration,
    /// In the order measured: direct, pgbouncer, replica.
    configs: Vec<ConfigResult>,
}

/// A small, fast generator (SplitMix64): no dependency for picking accounts.
struct Rng(u64);

impl Rng {
    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` small: the modulo bias is negligible).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `threads` clients calling `store` for a warm-up and then `measure`: lookups, and
/// `write_percent` % nickname updates.
fn run_phase(
    store: &CredentialStore,
    data: &Dataset,
    threads: usize,
    write_percent: u64,
    measure: Duration,
) -> Phase {
    let before = begins();
    let start = Instant::now();
    let (window, end) = (start + WARM_UP, start + WARM_UP + measure);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64);
    let parts: Vec<Phase> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = Rng(seed ^ ((t as u64 + 1) << 32));
                    let mut mine = Phase::default();
                    let mut renames = 0u64;
                    loop {
                        let began = Instant::now();
                        if began >= end {
                            return mine;
                        }
                        let a = rng.below(data.accounts.len());
                        let account = &data.accounts[a];
                        let write = rng.next() % 100 < write_percent;
                        let outcome = if write {
                            renames += 1;
                            let nickname = format!("spare-{t}-{renames}");
                            let update = CredentialUpdate::default().nickname(nickname.clone());
                            mine.writes_total += 1;
                            match store.update_credential(account, data.spare[a], &update) {
                                Ok(c) if c.nickname.as_deref() == Some(&nickname) => Ok(()),
                                Ok(_) => Err("the update returned another nickname".to_owned()),
                                Err(err) => Err(format!("update_credential: {err}")),
                            }
                        } else {
                            let nickname = &data.nicknames[rng.below(data.nicknames.len())];
                            mine.lookups_total += 1;
                            match store.credential_by_nickname(account, nickname) {
                                Ok(Some(c)) if c.user_account_id == account.id() => Ok(()),
                                Ok(Some(_)) => Err("a lookup found another account's row".into()),
                                Ok(None) => Err("a lookup found nothing".into()),
                                Err(err) => Err(format!("credential_by_nickname: {err}")),
                            }
                        };
                        let done = Instant::now();
                        match outcome {
                            Ok(()) if began >= window && done <= end => {
                                let ns = (done - began).as_nanos() as u64;
                                if write {
                                    mine.writes.push(ns);
                                } else {
                                    mine.lookups.push(ns);
                                }
                            }
                            Ok(()) => {}
                            Err(message) => *mine.errors.entry(message).or_default() += 1,
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect()
    });
    let after = begins();
    let mut phase = Phase::default();
    for part in parts {
        phase.lookups.extend(part.lookups);
        phase.writes.extend(part.writes);
        phase.lookups_total += part.lookups_total;
        phase.writes_total += part.writes_total;
        for (message, n) in part.errors {
            *phase.errors.entry(message).or_default() += n;
        }
    }
    phase.lookups.sort_unstable();
    phase.writes.sort_unstable();
    phase.begins = [0, 1, 2].map(|i| after[i] - before[i]);
    phase
}

/// A keyring of the run's one key.
fn keyring(key: &SecretString) -> Res<Keyring> {
    Ok(Keyring::from_fernet_keys([key.expose_secret()])?)
}

/// What every configuration runs: the same clients on the same data.
#[derive(Clone, Copy)]
struct Workload<'a> {
    /// The one key of the run's keyring (a `Keyring` is not `Clone`).
    key: &'a SecretString,
    /// The accounts and nicknames.
    data: &'a Dataset,
    /// Client threads, T.
    threads: usize,
    /// The measured window, after [`WARM_UP`].
    measure: Duration,
}

/// Lookups, then 90/10, on one configuration, each on a handle `open` makes for it
/// and drops after it (so each phase starts with empty pools, and the servers' own
/// counters are complete when the phase's connections have closed); for the
/// replica, with the `pg_stat_database` readings around each.
fn run_config(
    name: &'static str,
    connections: String,
    open: &dyn Fn() -> Res<Database>,
    work: &Workload<'_>,
    stats: Option<(&Servers, &Scratch)>,
) -> Res<ConfigResult> {
    let Workload {
        key,
        data,
        threads,
        measure,
    } = *work;
    let one = |workload: &str, write_percent: u64| -> Res<Phase> {
        eprintln!(
            "{name}: {workload}, {} s",
            (WARM_UP + measure).as_secs_f64()
        );
        let before = stats.map(|(s, x)| xact_commits(s, x)).transpose()?;
        let store = CredentialStore::new(open()?, keyring(key)?);
        let mut phase = run_phase(&store, data, threads, write_percent, measure);
        drop(store);
        if let (Some(before), Some((s, x))) = (before, stats) {
            let after = xact_commits(s, x)?;
            phase.xact_commits = Some([after[0] - before[0], after[1] - before[1]]);
        }
        Ok(phase)
    };
    let lookups = one("lookups", 0)?;
    let mixed = one("90/10 lookups/updates", WRITE_PERCENT)?;
    Ok(ConfigResult {
        name,
        connections,
        lookups,
        mixed,
    })
}

/// Builds the dataset, then runs the three configurations in turn.
fn measure_all(
    servers: &Servers,
    scratch: &Scratch,
    threads: usize,
    measure: Duration,
) -> Res<Results> {
    let key = Keyring::generate_key();
    let primary = scratch.service_url(&servers.primary);
    let replica = scratch.service_url(&servers.replica);
    let pgbouncer = scratch.service_url(&servers.pgbouncer);

    let started = Instant::now();
    let data = build_dataset(&CredentialStore::new(
        Database::open(&primary)?,
        keyring(&key)?,
    ))?;
    connect(&url_on(&servers.primary, &scratch.database))?
        .batch_execute("VACUUM ANALYZE user_accounts, user_credentials")?;
    let setup = started.elapsed();
    eprintln!(
        "dataset: {} accounts × 10 credentials in {:.1} s",
        data.accounts.len(),
        setup.as_secs_f64()
    );
    let lag = wait_for_replica(servers, scratch)?;
    eprintln!(
        "the replica has replayed the dataset ({:.2} s later)",
        lag.as_secs_f64()
    );

    let open_direct = || -> Res<Database> {
        let options = DatabaseOptions::default().max_connections(threads as u32);
        Ok(Database::open_with(&primary, &options)?)
    };
    let open_bouncer = || -> Res<Database> {
        let options = DatabaseOptions::default()
            .transaction_pooler(true)
            .max_connections(threads as u32);
        Database::open_with(&pgbouncer, &options)
            .map_err(|e| format!("cannot reach the scratch database through PgBouncer: {e}").into())
    };
    let open_replicated = || -> Res<Database> {
        Database::open(&primary)?
            .with_read_replica(&replica)
            .map_err(|e| format!("cannot reach the scratch database on the replica: {e}").into())
    };
    // All three answer before anything is measured.
    for open in [
        &open_direct as &dyn Fn() -> Res<Database>,
        &open_bouncer,
        &open_replicated,
    ] {
        drop(open()?);
    }
    let pool = DatabaseOptions::default().max_connections;
    let work = Workload {
        key: &key,
        data: &data,
        threads,
        measure,
    };

    let configs = vec![
        run_config(
            "direct",
            format!("pool of {threads} to the primary"),
            &open_direct,
            &work,
            None,
        )?,
        run_config(
            "pgbouncer",
            format!(
                "pool of {threads} to PgBouncer, {} server connections",
                threads / 2
            ),
            &open_bouncer,
            &work,
            None,
        )?,
        run_config(
            "replica",
            format!("pools of {pool} to the primary and {pool} to the replica"),
            &open_replicated,
            &work,
            Some((servers, scratch)),
        )?,
    ];
    Ok(Results { setup, configs })
}

// ---------------------------------------------------------------------------
// Reporting

/// Nearest-rank percentile of sorted nanoseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `| ops/s | p50 | p99 | p99.9 | max |` of one set of latencies.
fn latency_cells(sorted: &[u64], seconds: f64) -> String {
    format!(
        "{} | {:.3} | {:.3} | {:.3} | {:.3}",
        thousands((sorted.len() as f64 / seconds).round() as u64),
        percentile_ms(sorted, 0.50),
        percentile_ms(sorted, 0.99),
        percentile_ms(sorted, 0.999),
        percentile_ms(sorted, 1.0),
    )
}

/// The markdown tables, on stdout.
fn print_tables(results: &Results, pre: &Preflight, threads: usize, seconds: f64) {
    println!("#### Lookups (`credential_by_nickname`), {threads} client threads, {seconds} s each");
    println!();
    println!(
        "| configuration | connections | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for config in &results.configs {
        println!(
            "| {} | {} | {} | {} |",
            config.name,
            config.connections,
            latency_cells(&config.lookups.lookups, seconds),
            config.lookups.errors.values().sum::<u64>()
        );
    }
    println!();
    println!(
        "#### 90 % lookups, {WRITE_PERCENT} % `update_credential` (nickname), {threads} client \
         threads, {seconds} s each"
    );
    println!();
    println!("| configuration | calls | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for config in &results.configs {
        let phase = &config.mixed;
        let mut all: Vec<u64> = phase.lookups.iter().chain(&phase.writes).copied().collect();
        all.sort_unstable();
        let errors = phase.errors.values().sum::<u64>();
        println!(
            "| {} | all | {} | {errors} |",
            config.name,
            latency_cells(&all, seconds)
        );
        println!(
            "| {} | lookups | {} | |",
            config.name,
            latency_cells(&phase.lookups, seconds)
        );
        println!(
            "| {} | updates | {} | |",
            config.name,
            latency_cells(&phase.writes, seconds)
        );
    }
    println!();
    println!(
        "pgbouncer: {threads} clients share PgBouncer's {} server connections \
         (`default_pool_size`); each call is one transaction, so it waits in PgBouncer for a \
         free one.",
        pre.pool_size
    );

    let Some(replica) = results.configs.iter().find(|c| c.name == "replica") else {
        return;
    };
    println!();
    println!("#### Where the replica configuration's transactions ran (warm-up included)");
    println!();
    println!(
        "| workload | lookups | updates | transactions on replica connections | on primary \
         connections | lookups on the primary | `xact_commit` Δ replica | `xact_commit` Δ primary |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (workload, phase) in [("lookups", &replica.lookups), ("90/10", &replica.mixed)] {
        let on_primary = phase.begins[PRIMARY].saturating_sub(phase.writes_total);
        let [xp, xr] = phase
            .xact_commits
            .map_or([String::new(), String::new()], |d| {
                d.map(|n| thousands(n.max(0) as u64))
            });
        println!(
            "| {workload} | {} | {} | {} | {} | {} ({:.1} %) | {xr} | {xp} |",
            thousands(phase.lookups_total),
            thousands(phase.writes_total),
            thousands(phase.begins[REPLICA]),
            thousands(phase.begins[PRIMARY]),
            thousands(on_primary),
            100.0 * on_primary as f64 / phase.lookups_total.max(1) as f64,
        )
    }
    println!();
    println!(
        "Transactions counted from diesel's instrumentation (depth-1 `BEGIN`s per server); a \
         lookup on the primary is one the read-your-writes rule sent there because the replica \
         had not yet replayed this handle's latest write. `xact_commit` deltas are the \
         servers' own counts for the test database (read when no session of the service role \
         is left): they also count the crate's WAL-position statements (one per update on the \
         primary, one per replay check on the replica) and each new connection's set-up."
    );
}

// ---------------------------------------------------------------------------
// The machine

/// The first `name: value` line of `/proc/cpuinfo`.
fn cpu_field(name: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// The CPU as `/proc/cpuinfo` names it.
fn cpu_model() -> String {
    cpu_field("model name").map_or_else(|| "unknown CPU".into(), |m| format!("`{m}`"))
}

/// The first core's current clock, from `/proc/cpuinfo`.
fn cpu_mhz() -> String {
    cpu_field("cpu MHz").map_or_else(|| "MHz unknown".into(), |m| format!("{m} MHz"))
}

/// The 1, 5 and 15-minute load averages, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}
