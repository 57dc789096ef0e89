//! Several processes starting at once all run the migrations: every one succeeds and
//! each migration is applied exactly once, on every backend.
//!
//! The children are this test binary itself, running the ignored `child_migrate` test.
//! Each opens the database and waits at a start line until every child of the round
//! has, then migrates; a round counts as a race when the runs overlapped (every one
//! began before the first one ended), and a round that did not is checked too but run
//! again. `CREDENTIAL_STORE_MIGRATION_RACES` sets the races per backend (default 50).

mod common;

use common::TestDb;
use credential_store::{Backend, Database};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

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
const MIGRATIONS: usize = 7;

fn rounds() -> usize {
    std::env::var("CREDENTIAL_STORE_MIGRATION_RACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Nanoseconds since the Unix epoch: one clock for every process of the machine.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Run by the children: open the database, say `READY`, wait at the start line (a
/// line on stdin, which the parent sends once every child is ready), migrate, and say
/// how many migrations this process applied and when its run began and ended.
fn child_migrate() {
    let url = std::env::var(CHILD_URL).expect("run by the race tests");
    let db = Database::open(&url).expect("open");
    println!("READY");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .expect("the parent's go");
    let began = now_ns();
    let applied = db.run_migrations().expect("migrations");
    let ended = now_ns();
    println!("APPLIED {} BEGAN {began} ENDED {ended}", applied.len());
}

/// One child's report: the migrations it applied, and when its run began and ended.
struct Run {
    applied: usize,
    began: u128,
    ended: u128,
}

/// Starts `processes` children on `db`, lets them all go once each has opened the
/// database, and returns what each reported.
fn start_together(db: &TestDb, processes: usize) -> Vec<Run> {
    let mut children: Vec<_> = (0..processes)
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
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a child")
        })
        .collect();
    let mut outputs: Vec<_> = children
        .iter_mut()
        .map(|child| BufReader::new(child.stdout.take().unwrap()))
        .collect();
    // The start line: every child has opened the database and waits for its go.
    for (child, stdout) in children.iter_mut().zip(&mut outputs) {
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
                panic!(
                    "{:?}: a child ended ({status}) before it was ready:\n{seen}\n{stderr}",
                    db.backend
                );
            }
            seen.push_str(&line);
            // libtest may print `test child_migrate ... ` on the same line.
            if line.contains("READY") {
                break;
            }
        }
    }
    for child in &mut children {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "GO").unwrap();
    }
    children
        .into_iter()
        .zip(outputs)
        .map(|(mut child, mut stdout)| {
            let mut rest = String::new();
            stdout.read_to_string(&mut rest).unwrap();
            let status = child.wait().unwrap();
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            assert!(
                status.success(),
                "{:?}: a child failed ({status}):\n{rest}\n{stderr}",
                db.backend
            );
            let report: Vec<u128> = rest
                .lines()
                .find_map(|l| l.split("APPLIED ").nth(1))
                .map(|r| {
                    r.split_whitespace()
                        .filter_map(|word| word.parse().ok())
                        .collect()
                })
                .filter(|r: &Vec<u128>| r.len() == 3)
                .unwrap_or_else(|| panic!("the child reports its count and times:\n{rest}"));
            Run {
                applied: report[0] as usize,
                began: report[1],
                ended: report[2],
            }
        })
        .collect()
}

/// One race of `processes` children on a fresh database: every migration is applied
/// once. Returns whether the runs overlapped: every one began before the first one
/// ended.
fn race(db: &TestDb, processes: usize) -> bool {
    let runs = start_together(db, processes);
    let applied: usize = runs.iter().map(|r| r.applied).sum();
    assert_eq!(
        applied, MIGRATIONS,
        "{:?}, {processes} processes: each migration applied once",
        db.backend
    );
    assert_eq!(db.count("__diesel_schema_migrations"), MIGRATIONS as i64);
    assert!(db.database().pending_migrations().unwrap().is_empty());
    let last_began = runs.iter().map(|r| r.began).max().unwrap();
    let first_ended = runs.iter().map(|r| r.ended).min().unwrap();
    last_began < first_ended
}

/// `rounds()` races on `backend` whose runs overlapped, with 2 to 8 processes. The
/// children leave the start line together, but a loaded machine may still run one
/// SQLite migration (a few milliseconds) to its end before another child begins: such
/// a round is checked all the same, but does not count as a race.
fn races(backend: Backend) {
    let target = rounds();
    let (mut raced, mut attempts) = (0, 0);
    while raced < target {
        attempts += 1;
        assert!(
            attempts <= 2 * target + 10,
            "{backend:?}: the runs overlapped in only {raced} of {} rounds: the children \
             migrate one after another",
            attempts - 1
        );
        let db = TestDb::for_backend(backend);
        if race(&db, 2 + raced % 7) {
            raced += 1;
        }
    }
    eprintln!(
        "concurrent_migrations: {backend:?}: {raced} races in {attempts} rounds ({} in which \
         the runs did not overlap)",
        attempts - raced
    );
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
