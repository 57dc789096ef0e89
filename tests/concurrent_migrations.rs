//! Several processes starting at once all run the migrations: every one succeeds and
//! each migration is applied exactly once, on every backend.
//!
//! The children are this test binary itself, running the ignored `child_migrate` test.
//! `CREDENTIAL_STORE_MIGRATION_RACES` sets the rounds per backend (default 50).

mod common;

use common::TestDb;
use credential_store::{Backend, Database};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    common::trials::run(vec![
        trial!(child_migrate, ignored),
        trial!(sqlite_migrations_race_safely),
        trial!(postgres_migrations_race_safely, [Postgres]),
        #[cfg(feature = "mysql")]
        trial!(mysql_migrations_race_safely, [Mysql]),
    ]);
}

const CHILD_URL: &str = "CREDENTIAL_STORE_CHILD_URL";
const CHILD_START: &str = "CREDENTIAL_STORE_CHILD_START_MS";
const MIGRATIONS: usize = 7;

fn rounds() -> usize {
    std::env::var("CREDENTIAL_STORE_MIGRATION_RACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Run by the children: wait for the common start, migrate, print how many
/// migrations this process applied.
fn child_migrate() {
    let url = std::env::var(CHILD_URL).expect("run by the race tests");
    let start: u128 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let db = Database::open(&url).expect("open");
    while now_ms() < start {
        std::thread::sleep(Duration::from_millis(1));
    }
    let applied = db.run_migrations().expect("migrations");
    println!("APPLIED {}", applied.len());
}

fn race(db: &TestDb, processes: usize) {
    let start = now_ms() + 300;
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "child_migrate",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_URL, &db.url)
                .env(CHILD_START, start.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a child")
        })
        .collect();
    let mut applied = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{:?}: a child failed:\n{stdout}\n{}",
            db.backend,
            String::from_utf8_lossy(&out.stderr)
        );
        applied += stdout
            .lines()
            .find_map(|l| l.split("APPLIED ").nth(1))
            .and_then(|n| n.split_whitespace().next()?.parse::<usize>().ok())
            .expect("the child reports its count");
    }
    assert_eq!(
        applied, MIGRATIONS,
        "{:?}, {processes} processes: each migration applied once",
        db.backend
    );
    assert_eq!(db.count("__diesel_schema_migrations"), MIGRATIONS as i64);
    assert!(db.database().pending_migrations().unwrap().is_empty());
}

fn races(backend: Backend) {
    for round in 0..rounds() {
        let db = TestDb::for_backend(backend);
        race(&db, 2 + round % 7);
    }
}

fn sqlite_migrations_race_safely() {
    races(Backend::Sqlite);
}

fn postgres_migrations_race_safely() {
    races(Backend::Postgres);
}

/// MariaDB/MySQL: the run holds `GET_LOCK` on its session.
#[cfg(feature = "mysql")]
fn mysql_migrations_race_safely() {
    races(Backend::Mysql);
}
