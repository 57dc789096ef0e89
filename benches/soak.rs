//! A soak test: 16 threads over a pool of 8 connections, mixing lookups, inserts,
//! updates and deletes while a backfill runs, then checks that no write was lost.
//!
//! ```sh
//! cargo bench --features postgres,bundled-postgres --bench soak -- 60                      # SQLite, 60 s
//! DATABASE_URL=postgres://postgres@127.0.0.1/soak cargo bench --features postgres,bundled-postgres --bench soak -- 60
//! ```
//!
//! On PostgreSQL, half-way through, every other connection to the database is killed
//! with `pg_terminate_backend` (the URL's role must be allowed to): the operations
//! that meet a dead connection fail with `Error::ConnectionLost`, and the pool
//! recovers by itself. On SQLite, with a busy timeout of 100 ms, another connection
//! takes the write lock for 300 ms every second: the writes that wait past the
//! timeout fail with `Error::Busy` (the run fails if none does, so that promise is
//! exercised every time). Exits non-zero on any error a caller could not handle
//! (the backfill's included), or on a broken invariant: an acknowledged insert
//! missing, an unexpected row, or an acknowledged nickname update not what is
//! stored (a cleared nickname may since have been backfilled to the type).

use credential_store::{
    Backend, CredentialStore, CredentialUpdate, Database, DatabaseOptions, Error, Keyring,
    NewUserAccount, NewUserCredential, UserAccount,
};
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const THREADS: usize = 16;
const POOL: u32 = 8;
const ACCOUNTS_PER_THREAD: usize = 4;

#[derive(Default)]
struct Tally {
    ops: BTreeMap<&'static str, u64>,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    unhandled: Vec<String>,
}

/// What one thread knows it wrote: per account, the credentials that must exist.
struct Owned {
    account: UserAccount,
    present: HashSet<Uuid>,
    /// Inserts whose outcome is unknown (the connection died before the answer).
    uncertain: usize,
    /// The nickname last acknowledged for each credential.
    nicknames: HashMap<Uuid, Option<String>>,
    /// Credentials whose last write's outcome is unknown.
    unsure: HashSet<Uuid>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find(|arg| arg != "--bench") // what `cargo bench` adds
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(60);
    let dir = tempfile::tempdir()?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| dir.path().join("soak.db").to_string_lossy().into_owned());
    let mut options = DatabaseOptions::default().max_connections(POOL);
    let db = Database::open_with(&url, &options)?;
    db.run_migrations()?;
    let backend = db.backend();
    if backend == Backend::Sqlite {
        options.busy_timeout = BUSY_TIMEOUT;
    }
    let db = Database::open_with(&url, &options)?;
    let key = Keyring::generate_key();
    let store = CredentialStore::new(db, Keyring::from_fernet_keys([key.expose_secret()])?);
    let run = Uuid::now_v7().simple().to_string();
    println!("soak: {backend:?}, {THREADS} threads, pool of {POOL}, {seconds} s");

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for thread in 0..THREADS {
        let store = store.clone();
        let stop = stop.clone();
        let run = run.clone();
        workers.push(std::thread::spawn(move || {
            work(&store, thread, &run, &stop)
        }));
    }
    let backfill = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut passes, mut changed, mut errors, mut unhandled) =
                (0u64, 0u64, BTreeMap::<String, u64>::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match store.maintenance().backfill_nicknames(200) {
                    Ok(n) => changed += n,
                    Err(err) => {
                        *errors.entry(kind(&err)).or_default() += 1;
                        if !handleable(&err) {
                            unhandled.push(format!("backfill: {err}"));
                        }
                    }
                }
                passes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (passes, changed, errors, unhandled)
        })
    };
    let holder = (backend == Backend::Sqlite).then(|| {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || hold_write_lock(&url, &stop))
    });
    let killed = Arc::new(Mutex::new(None));
    if backend == Backend::Postgres {
        let url = url.clone();
        let killed = killed.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds) / 2);
            *killed.lock().unwrap() = Some(terminate_backends(&url));
        });
    }
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = Tally::default();
    let mut owned = Vec::new();
    for worker in workers {
        let (tally, mine) = worker.join().expect("worker panicked");
        for (op, n) in tally.ops {
            *total.ops.entry(op).or_default() += n;
        }
        for (err, n) in tally.errors {
            *total.errors.entry(err).or_default() += n;
        }
        total.latencies.extend(tally.latencies);
        total.unhandled.extend(tally.unhandled);
        owned.extend(mine);
    }
    let (passes, changed, backfill_errors, backfill_unhandled) =
        backfill.join().expect("backfill panicked");
    total.unhandled.extend(backfill_unhandled);
    let holds = holder.map(|h| h.join().expect("lock holder panicked"));

    let ops: u64 = total.ops.values().sum();
    total.latencies.sort();
    let pct = |p: f64| total.latencies[((total.latencies.len() as f64 - 1.0) * p) as usize];
    println!("operations: {ops} ({:.0}/s)", ops as f64 / seconds as f64);
    for (op, n) in &total.ops {
        println!("  {op:<12} {n}");
    }
    println!(
        "latency: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    println!("backfill: {passes} passes, {changed} nicknames set, errors {backfill_errors:?}");
    if let Some(killed) = killed.lock().unwrap().as_ref() {
        println!("pg_terminate_backend: {killed}");
    }
    println!("errors by kind: {:?}", total.errors);
    if let Some(holds) = holds {
        println!("write lock held by another connection {holds} time(s)");
    }

    // Invariants: every acknowledged insert is there unless it was deleted; nothing
    // else is, apart from inserts whose answer was lost with a connection.
    let mut broken = Vec::new();
    if backend == Backend::Sqlite && !total.errors.contains_key("Busy") {
        broken.push(
            "no write met Error::Busy although the lock was held past the busy timeout".into(),
        );
    }
    for Owned {
        account,
        present,
        uncertain,
        nicknames,
        unsure,
    } in &owned
    {
        let listed = store.credentials(account)?;
        for credential in &listed {
            if unsure.contains(&credential.id) {
                continue;
            }
            let Some(expected) = nicknames.get(&credential.id) else {
                continue;
            };
            let backfilled = expected.is_none()
                && credential.nickname.as_deref() == Some(credential.credential_type.as_str());
            if credential.nickname != *expected && !backfilled {
                broken.push(format!(
                    "{}: credential {} has nickname {:?}, acknowledged {:?}",
                    account.user_id(),
                    credential.id,
                    credential.nickname,
                    expected
                ));
            }
        }
        let stored: HashSet<Uuid> = listed.into_iter().map(|c| c.id).collect();
        if !present.is_subset(&stored) {
            broken.push(format!(
                "{}: {} acknowledged credential(s) missing",
                account.user_id(),
                present.difference(&stored).count()
            ));
        }
        if stored.len() > present.len() + uncertain {
            broken.push(format!(
                "{}: {} unexpected credential(s)",
                account.user_id(),
                stored.len() - present.len()
            ));
        }
    }
    // The pool recovered: a plain lookup on every connection works now.
    for owned in owned.iter().take(POOL as usize * 2) {
        store.credentials(&owned.account)?;
    }
    if !total.unhandled.is_empty() || !broken.is_empty() {
        eprintln!(
            "FAILED: unhandled errors {:?}; invariants {:?}",
            total.unhandled, broken
        );
        std::process::exit(1);
    }
    println!(
        "ok: no unhandled error, no lost write ({} accounts checked)",
        owned.len()
    );
    Ok(())
}

/// The error's variant, for the report.
fn kind(err: &Error) -> String {
    format!("{err:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Errors a caller can handle: retry later.
fn handleable(err: &Error) -> bool {
    matches!(
        err,
        Error::Busy(_) | Error::ConnectionLost(_) | Error::Pool(_)
    )
}

fn work(
    store: &CredentialStore,
    thread: usize,
    run: &str,
    stop: &AtomicBool,
) -> (Tally, Vec<Owned>) {
    let mut tally = Tally::default();
    let mut owned: Vec<Owned> = Vec::new();
    for n in 0..ACCOUNTS_PER_THREAD {
        let user_id = format!("soak-{run}-{thread}-{n}");
        loop {
            match store.create_account(&NewUserAccount::new(&user_id, "soak")) {
                Ok(account) => {
                    break owned.push(Owned {
                        account,
                        present: HashSet::new(),
                        uncertain: 0,
                        nicknames: HashMap::new(),
                        unsure: HashSet::new(),
                    })
                }
                Err(Error::AccountExists { .. }) => {
                    let account = store
                        .account_by_user_id(&user_id)
                        .ok()
                        .flatten()
                        .expect("account");
                    break owned.push(Owned {
                        account,
                        present: HashSet::new(),
                        uncertain: 0,
                        nicknames: HashMap::new(),
                        unsure: HashSet::new(),
                    });
                }
                Err(err) if handleable(&err) => continue,
                Err(err) => panic!("cannot create an account: {err}"),
            }
        }
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (thread as u64 + 1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    const NICKNAMES: [&str; 4] = ["Momentum", "Swing", "Scalper", "Hedge"];
    while !stop.load(Ordering::Relaxed) {
        let roll = next();
        let slot = (roll >> 8) as usize % owned.len();
        let nickname = NICKNAMES[(roll >> 16) as usize % NICKNAMES.len()];
        let target = owned[slot]
            .present
            .iter()
            .nth((roll >> 24) as usize % owned[slot].present.len().max(1))
            .copied();
        let account = owned[slot].account.clone();
        let started = Instant::now();
        let (op, result): (&'static str, Result<(), Error>) = match roll % 100 {
            0..=44 => (
                "lookup",
                store.credentials_by_nickname(&account, nickname).map(drop),
            ),
            45..=54 => ("list", store.credentials(&account).map(drop)),
            55..=74 => {
                let new =
                    NewUserCredential::new("alpaca_paper", "PKSOAK", "secret").nickname(nickname);
                let result = store.insert_credential(&account, &new);
                match &result {
                    Ok(credential) => {
                        owned[slot].present.insert(credential.id);
                        owned[slot]
                            .nicknames
                            .insert(credential.id, Some(nickname.to_owned()));
                    }
                    Err(Error::ConnectionLost(_)) => owned[slot].uncertain += 1,
                    Err(_) => {}
                }
                ("insert", result.map(drop))
            }
            75..=89 => match target {
                Some(id) => {
                    let wanted = (roll % 2 == 1).then(|| nickname.to_owned());
                    let update = match &wanted {
                        Some(nickname) => CredentialUpdate::default().nickname(nickname.clone()),
                        None => CredentialUpdate::default().clear_nickname(),
                    };
                    let result = store.update_credential(&account, id, &update);
                    match &result {
                        Ok(stored) if stored.nickname != wanted => {
                            tally.unhandled.push(format!(
                                "update of {id} returned nickname {:?}, asked {wanted:?}",
                                stored.nickname
                            ));
                        }
                        Ok(_) => {
                            owned[slot].nicknames.insert(id, wanted);
                            owned[slot].unsure.remove(&id);
                        }
                        Err(Error::ConnectionLost(_)) => {
                            owned[slot].unsure.insert(id);
                        }
                        Err(_) => {}
                    }
                    ("update", result.map(drop))
                }
                None => continue,
            },
            _ => match target {
                Some(id) => {
                    let result = store.delete_credential(&account, id);
                    match &result {
                        Ok(()) => {
                            owned[slot].present.remove(&id);
                        }
                        // The delete may have committed before the connection died.
                        Err(Error::ConnectionLost(_)) => {
                            owned[slot].present.remove(&id);
                            owned[slot].uncertain += 1;
                        }
                        Err(_) => {}
                    }
                    ("delete", result)
                }
                None => continue,
            },
        };
        tally.latencies.push(started.elapsed());
        match result {
            Ok(()) => *tally.ops.entry(op).or_default() += 1,
            Err(err) => {
                *tally.errors.entry(kind(&err)).or_default() += 1;
                if !handleable(&err) {
                    tally.unhandled.push(format!("{op}: {err}"));
                }
            }
        }
    }
    (tally, owned)
}

/// The busy timeout of the SQLite run: short, so that held locks outlast it.
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Takes SQLite's write lock from a connection of its own for 300 ms every second,
/// until `stop`; returns how many times it held it.
fn hold_write_lock(path: &str, stop: &AtomicBool) -> u64 {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    let path = path
        .strip_prefix("sqlite://")
        .or_else(|| path.strip_prefix("sqlite:"))
        .unwrap_or(path);
    let mut conn = SqliteConnection::establish(path).expect("a second SQLite connection");
    conn.batch_execute("PRAGMA busy_timeout = 5000;")
        .expect("busy timeout");
    let mut holds = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(700));
        if conn.batch_execute("BEGIN IMMEDIATE;").is_ok() {
            std::thread::sleep(BUSY_TIMEOUT * 3);
            conn.batch_execute("COMMIT;").expect("commit");
            holds += 1;
        }
    }
    holds
}

/// Kills every other connection to the database; returns a line for the report.
fn terminate_backends(url: &str) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Killed {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let result = PgConnection::establish(url)
        .map_err(|e| e.to_string())
        .and_then(|mut conn| {
            diesel::sql_query(
                "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .get_result::<Killed>(&mut conn)
            .map_err(|e| e.to_string())
        });
    match result {
        Ok(killed) => format!("{} connection(s) killed", killed.n),
        Err(err) => format!("could not kill connections: {err}"),
    }
}
