//! A guarded revert holds what it counts until its down migration has run: a row
//! another session writes while the revert runs is either counted (the revert
//! refuses, the row stays) or refused (the insert fails once the tables are gone),
//! never committed and then dropped. And reverting migration 000005 (the composite
//! owner foreign key) or 000006 (the accounts' data keys) is guarded like the
//! tables and row-level security.
//!
//! The races revert migration 000001 (`DROP TABLE`) of an empty store while a
//! second session inserts an account:
//!
//! - *insert first*: the insert is uncommitted when the revert starts and commits
//!   once the revert waits for a lock. Without a lock taken before the counts, on
//!   MariaDB the counts see nothing (the row is not committed), the `DROP` waits
//!   for the insert's metadata lock, and drops the row once it commits.
//! - *insert behind the counts*: a third session's open read holds the revert up
//!   while it counts, the insert is sent meanwhile, and the read ends. Without a
//!   lock held from the counts to the down migration, on PostgreSQL the insert gets
//!   the table when the counts' savepoint releases it, after the counts, and the
//!   `DROP` waits for it and drops the row once it commits.
//!
//! Each step waits until the sessions before it wait for a lock (PostgreSQL's
//! `pg_stat_activity`, MariaDB's process list); SQLite shows no lock waits, so there
//! a short pause stands in.

mod common;

fn main() {
    common::trials::run(vec![
        an_insert_committed_while_the_revert_waits_is_counted::tests(),
        an_insert_sent_while_the_revert_counts_is_not_lost::tests(),
        reverting_the_owner_foreign_key_refuses_while_rows_are_stored::tests(),
        reverting_the_data_keys_refuses_while_rows_are_stored::tests(),
    ]);
}

use common::TestDb;
use credential_store::{Backend, CipherFormat, Database, Error, NewUserAccount, NewUserCredential};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use secrecy::ExposeSecret;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The migration that creates (and whose revert drops) the tables.
const CREATE_TABLES: &str = "20240115000001";

/// The migration that adds the accounts' data keys (`account_keys`).
const DATA_KEYS: &str = "20261207000006";

/// The migration that keeps the retired data keys (`retired_account_keys`).
const RETIRED_DATA_KEYS: &str = "20261208000007";

/// How long a step waits for a lock wait it cannot see (SQLite), and how long the
/// inserting session keeps its transaction open after its insert.
const PAUSE: Duration = Duration::from_millis(200);

/// A plain connection, as another program would hold it.
type Session = Box<dyn SimpleConnection + Send>;

fn session(db: &TestDb) -> Session {
    match db.backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
            conn.batch_execute("PRAGMA busy_timeout = 10000").unwrap();
            Box::new(conn)
        }
        #[cfg(feature = "mysql")]
        Backend::Mysql => Box::new(common::mysql_raw(&db.url)),
        _ => Box::new(PgConnection::establish(&db.url).unwrap()),
    }
}

/// A write transaction's start: SQLite takes its write lock at once.
fn begin_write(db: &TestDb) -> &'static str {
    match db.backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        _ => "BEGIN",
    }
}

fn insert_account() -> String {
    format!(
        "INSERT INTO user_accounts (id, user_id, account_name) \
         VALUES ('{}', 'auth0|late', 'Late')",
        uuid::Uuid::now_v7()
    )
}

/// A migrated store reverted down to its first migration, with no row stored.
fn at_the_first_migration(db: &TestDb) -> Database {
    let database = db.database();
    database.run_migrations().unwrap();
    database
        .revert_through("20240115000002", &mut |_| {})
        .unwrap();
    assert_eq!(database.applied_migrations().unwrap(), [CREATE_TABLES]);
    database
}

/// How many sessions on the test database wait for a lock; `None` on SQLite.
fn lock_waits(db: &TestDb) -> Option<i64> {
    match db.backend {
        Backend::Sqlite => None,
        Backend::Mysql => Some(db.scalar(
            "SELECT COUNT(*) AS n FROM information_schema.processlist \
             WHERE db = DATABASE() AND state LIKE 'Waiting for table%lock'",
        )),
        _ => Some(db.scalar(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )),
    }
}

/// Returns once `sessions` sessions wait for a lock, or `done` holds (a thread
/// finished: nothing more will wait), or after 10 s; on SQLite after [`PAUSE`].
fn until_waiting(db: &TestDb, sessions: i64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !done() {
        match lock_waits(db) {
            None => return std::thread::sleep(PAUSE),
            Some(waiting) if waiting >= sessions => return,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn revert_in_the_background(database: Database) -> JoinHandle<credential_store::Result<String>> {
    std::thread::spawn(move || database.revert_last_migration())
}

/// The revert refused and the account is stored, or the revert ran and the insert
/// failed; never both done.
fn assert_nothing_lost(
    db: &TestDb,
    reverted: credential_store::Result<String>,
    inserted: Result<(), String>,
) {
    match (reverted, inserted) {
        (Ok(version), Ok(())) => panic!(
            "the revert of {version} dropped an account committed while it ran \
             (both the revert and the insert succeeded)"
        ),
        (
            Err(Error::RevertWouldExpose {
                version,
                accounts: 1,
                credentials: 0,
            }),
            Ok(()),
        ) => {
            assert_eq!(version, CREATE_TABLES);
            assert_eq!(db.count("user_accounts"), 1, "the account is stored");
        }
        (Ok(version), Err(_)) => assert_eq!(version, CREATE_TABLES),
        other => panic!("unexpected outcome (revert, insert): {other:?}"),
    }
}

on_both_backends!(
    an_insert_committed_while_the_revert_waits_is_counted,
    |db| {
        let database = at_the_first_migration(db);
        let mut writer = session(db);
        writer.batch_execute(begin_write(db)).unwrap();
        writer.batch_execute(&insert_account()).unwrap();
        let revert = revert_in_the_background(database);
        until_waiting(db, 1, || revert.is_finished());
        let inserted = writer.batch_execute("COMMIT").map_err(|e| e.to_string());
        assert_nothing_lost(db, revert.join().unwrap(), inserted);
    }
);

on_both_backends!(an_insert_sent_while_the_revert_counts_is_not_lost, |db| {
    let database = at_the_first_migration(db);
    // An open read of the credentials holds the revert up once it has begun.
    let mut reader = session(db);
    reader.batch_execute("BEGIN").unwrap();
    reader
        .batch_execute("SELECT COUNT(*) FROM user_credentials")
        .unwrap();
    let revert = revert_in_the_background(database);
    until_waiting(db, 1, || revert.is_finished());
    let mut writer = session(db);
    let begin = begin_write(db);
    let insert = std::thread::spawn(move || {
        writer.batch_execute(begin)?;
        writer.batch_execute(&insert_account())?;
        std::thread::sleep(PAUSE);
        writer.batch_execute("COMMIT")
    });
    until_waiting(db, 2, || insert.is_finished() || revert.is_finished());
    reader.batch_execute("COMMIT").unwrap();
    let inserted = insert.join().unwrap().map_err(|e| e.to_string());
    assert_nothing_lost(db, revert.join().unwrap(), inserted);
});

on_both_backends!(
    reverting_the_owner_foreign_key_refuses_while_rows_are_stored,
    |db| {
        // The data keys (000006) come off first, while nothing is stored; the rows
        // are then written as the existing system writes them: Fernet.
        let store = db.store().with_format(CipherFormat::Fernet);
        let database = store.database();
        assert_eq!(database.revert_last_migration().unwrap(), RETIRED_DATA_KEYS);
        assert_eq!(database.revert_last_migration().unwrap(), DATA_KEYS);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        store
            .insert_credential(&ada, &NewUserCredential::new("polygon", "PK", "s"))
            .unwrap();
        match database.revert_last_migration() {
            Err(
                err @ Error::RevertWouldExpose {
                    accounts: 1,
                    credentials: 1,
                    ..
                },
            ) => {
                assert!(
                    matches!(&err, Error::RevertWouldExpose { version, .. } if version == "20261125000005"),
                    "{err:?}"
                );
                let message = err.to_string();
                assert!(
                    message.contains("owner foreign key")
                        && message.contains("1 account(s) and 1 credential(s)"),
                    "{message}"
                );
            }
            other => panic!("reverting the owner foreign key with rows stored: {other:?}"),
        }
        // Nothing changed: still applied, and the database still refuses a
        // credential whose user is not its account's.
        assert_eq!(
            database.pending_migrations().unwrap(),
            [DATA_KEYS, RETIRED_DATA_KEYS]
        );
        let planted = format!(
            "INSERT INTO user_credentials \
                 (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key) \
             VALUES ('{}', '{}', 'auth0|mallory', 'polygon', 'planted', 'ct', 'ct')",
            uuid::Uuid::now_v7(),
            ada.id()
        );
        assert!(
            db.try_execute(&planted).is_err(),
            "the foreign key is in force"
        );
        assert_eq!(db.count("user_credentials"), 1);

        // With no row stored, it reverts.
        db.execute("DELETE FROM user_credentials; DELETE FROM user_accounts;");
        assert_eq!(database.revert_last_migration().unwrap(), "20261125000005");
    }
);

on_both_backends!(
    reverting_the_data_keys_refuses_while_rows_are_stored,
    |db| {
        let store = db.store();
        let database = store.database();
        // The retired data keys (000007) come off first, none being stored.
        assert_eq!(database.revert_last_migration().unwrap(), RETIRED_DATA_KEYS);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        // An account alone, before its first credential (and so without a data
        // key), is already refused.
        match database.revert_last_migration() {
            Err(Error::RevertWouldExpose {
                version,
                accounts: 1,
                credentials: 0,
            }) => assert_eq!(version, DATA_KEYS),
            other => panic!("reverting the data keys with an account stored: {other:?}"),
        }
        let credential = store
            .insert_credential(&ada, &NewUserCredential::new("polygon", "PK", "s"))
            .unwrap();
        assert_eq!(db.count("account_keys"), 1);
        match database.revert_last_migration() {
            Err(Error::RevertWouldExpose {
                version,
                accounts: 1,
                credentials: 1,
            }) => assert_eq!(version, DATA_KEYS),
            other => panic!("reverting the data keys with rows stored: {other:?}"),
        }
        // Nothing changed: still applied, the data key is kept, the sealed-v3
        // credential still opens.
        assert_eq!(database.pending_migrations().unwrap(), [RETIRED_DATA_KEYS]);
        assert_eq!(db.count("account_keys"), 1);
        assert_eq!(
            store
                .keys(&ada, credential.id)
                .unwrap()
                .api_key()
                .expose_secret(),
            "PK"
        );

        // With no row stored (the data key goes with its account), it reverts.
        db.execute("DELETE FROM user_credentials; DELETE FROM user_accounts;");
        assert_eq!(db.count("account_keys"), 0);
        assert_eq!(database.revert_last_migration().unwrap(), DATA_KEYS);
    }
);
