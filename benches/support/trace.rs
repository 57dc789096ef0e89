//! The SQL each implementation sends, recorded to check at start-up that every
//! baseline sends exactly the statements the crate sends for the same operation,
//! text for text and in order (transaction statements included).
//!
//! - The crate, and diesel used directly: diesel's instrumentation, on a store or a
//!   connection opened for the check ([`recording_store`], [`recording`]); the
//!   benchmarked stores and connections run without it.
//! - The raw drivers (rusqlite, `postgres`, tokio-postgres): each statement is
//!   recorded by the code that sends it, with the text it sends ([`sent`]).
//!
//! Nothing is recorded outside [`record`].
//!
//! Included with `#[path]` by each target, so not every target uses every item.
#![allow(dead_code)]

use credential_store::internals::without_binds;
use credential_store::{CredentialStore, Database, DatabaseOptions, Keyring};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What the raw drivers send to open and close a transaction: the statements
/// diesel's transaction manager sends for the crate (`BEGIN`, `COMMIT`; on SQLite a
/// write opens with `BEGIN IMMEDIATE`), compared with them like every other
/// statement.
pub const BEGIN: &str = "BEGIN";
pub const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
pub const COMMIT: &str = "COMMIT";

static RECORDING: AtomicBool = AtomicBool::new(false);
static RECORDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn log() -> std::sync::MutexGuard<'static, Vec<String>> {
    RECORDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records `sql` as sent, while [`record`] runs: called by the raw baselines with the
/// very text they hand to their driver. Outside [`record`] it costs one relaxed load.
#[inline]
pub fn sent(sql: &str) {
    if RECORDING.load(Ordering::Relaxed) {
        log().push(sql.to_owned());
    }
}

/// Runs `f` and returns the statements sent meanwhile (by the raw drivers, and by
/// every diesel connection that has [`recording`] instrumentation).
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    log().clear();
    RECORDING.store(true, Ordering::SeqCst);
    let out = f();
    RECORDING.store(false, Ordering::SeqCst);
    (out, std::mem::take(&mut *log()))
}

/// The same, for a closure that returns nothing of interest.
pub fn statements(f: impl FnOnce()) -> Vec<String> {
    record(f).1
}

/// diesel instrumentation that records every statement a connection starts (its
/// text without the bind values), while [`record`] runs.
pub fn recording() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            if RECORDING.load(Ordering::Relaxed) {
                sent(without_binds(&query.to_string()));
            }
        }
    }))
}

/// Runs `open` with [`recording`] as diesel's default instrumentation: every
/// connection made meanwhile records; those made later do not.
pub fn with_recording<T>(open: impl FnOnce() -> T) -> T {
    diesel::connection::set_default_instrumentation(recording).expect("install instrumentation");
    let out = open();
    diesel::connection::set_default_instrumentation(|| None).expect("uninstall instrumentation");
    out
}

/// A store on `url` with one pooled connection, which records: for taking the
/// crate's statements. Its pool makes that connection on first use, so `warm` must
/// use the store. Returns the store and what opening it sent (on SQLite, the
/// pragmas of the connection `Database::open_with` makes at once).
pub fn recording_store(
    url: &str,
    keyring: Keyring,
    warm: impl FnOnce(&CredentialStore),
) -> (CredentialStore, Vec<String>) {
    with_recording(|| {
        let (db, opened) = record(|| {
            Database::open_with(url, &DatabaseOptions::default().max_connections(1))
                .expect("open the recording store")
        });
        let store = CredentialStore::new(db, keyring);
        warm(&store);
        (store, opened)
    })
}

/// A statement for a message: whole unless it is long (a 1000-row INSERT), then its
/// start, its length and its end.
fn abbreviated(sql: &str) -> String {
    const HALF: usize = 600;
    let chars = sql.chars().count();
    if chars <= 2 * HALF {
        return sql.to_owned();
    }
    let head: String = sql.chars().take(HALF).collect();
    let tail: String = sql.chars().skip(chars - HALF).collect();
    format!("{head} … ({chars} characters in all) … {tail}")
}

/// Where two statements part, for a message: whole if short, else around the
/// first character that differs.
fn around_difference(a: &str, b: &str) -> (String, String) {
    const CONTEXT: usize = 200;
    if a.chars().count() <= 4 * CONTEXT && b.chars().count() <= 4 * CONTEXT {
        return (a.to_owned(), b.to_owned());
    }
    let at = a
        .chars()
        .zip(b.chars())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.chars().count().min(b.chars().count()));
    let from = at.saturating_sub(CONTEXT);
    let part = |s: &str| {
        let piece: String = s.chars().skip(from).take(2 * CONTEXT).collect();
        format!("(from character {from} of {}) …{piece}…", s.chars().count())
    };
    (part(a), part(b))
}

fn listed(statements: &[String]) -> String {
    if statements.is_empty() {
        return "    (nothing)".to_owned();
    }
    statements
        .iter()
        .enumerate()
        .map(|(i, sql)| format!("    {}. {}", i + 1, abbreviated(sql)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics, naming both lists and the first statement that differs, unless `sent`
/// (what a baseline sent for `what`) is exactly `by_crate` (what the crate sent for
/// the same operation). An empty `by_crate` panics too: it would prove nothing.
pub fn assert_same_sql(what: &str, sent: &[String], by_crate: &[String]) {
    assert!(
        !by_crate.is_empty(),
        "{what}: no statement of the crate was recorded (the check would pass vacuously)"
    );
    if sent == by_crate {
        return;
    }
    let at = sent
        .iter()
        .zip(by_crate)
        .position(|(a, b)| a != b)
        .unwrap_or(sent.len().min(by_crate.len()));
    let none = String::from("(none)");
    let (baseline, by_the_crate) = around_difference(
        sent.get(at).unwrap_or(&none),
        by_crate.get(at).unwrap_or(&none),
    );
    panic!(
        "{what}: the baseline does not send the SQL the crate sends.\n\
         \n  first difference, statement {}:\n    baseline: {}\n    crate:    {}\n\
         \n  the baseline sent:\n{}\n  the crate sent:\n{}\n",
        at + 1,
        baseline,
        by_the_crate,
        listed(sent),
        listed(by_crate),
    );
}
