//! The security review's defects, each checked where a user meets it: database
//! passwords never reach an error, a log or the operator tool's output; a libpq
//! `key=value` string is not taken for a SQLite file name; over-long input is
//! refused before it is normalised; an account id under another user is answered
//! as an unknown one. The failures a caller retries on are each their own error:
//! a lock held past the busy timeout ([`Error::Busy`]), no pooled connection in time
//! ([`Error::Pool`], [`Error::PoolUnavailable`]), a session the server ended
//! ([`Error::ConnectionLost`]). The async store's one-of lookups answer as the
//! blocking store's.

fn main() {
    common::trials::run(vec![
        trial!(no_part_of_a_password_reaches_errors_logs_or_the_tool),
        trial!(a_key_value_connection_string_is_refused_not_made_a_sqlite_file),
        trial!(over_long_names_are_refused_by_their_bytes_before_they_are_normalised),
        another_users_account_is_answered_as_an_unknown_one::tests(),
        the_async_store_finds_one_by_type_and_decrypts_by_nickname::tests(),
        trial!(a_sqlite_write_lock_held_past_the_busy_timeout_is_busy),
        trial!(
            a_blocking_call_without_a_free_connection_is_pool_and_a_killed_session_is_lost,
            [Postgres]
        ),
        trial!(
            an_async_call_without_a_free_connection_is_pool_unavailable_and_a_killed_session_is_lost,
            [Postgres]
        ),
        #[cfg(feature = "mysql")]
        trial!(a_mariadb_deadlock_is_busy, [Mysql]),
    ]);
}

mod common;

use credential_store::error::{Field, Rule, Unit};
use credential_store::{
    AccountScope, AsyncCredentialStore, AsyncDatabase, CredentialStore, Database, DatabaseOptions,
    Error, ErrorKind, ExposeSecret, NewUserAccount, NewUserCredential,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_credential-store");

/// The distinctive core of every test password: no output may hold any three
/// characters of it in a row.
const CORE: &str = "Zq9Xw7Kv";

/// The passwords: the core after a character that breaks a URL when written as
/// it is, or that a careless parser decodes.
fn passwords() -> Vec<String> {
    [
        "%zz", "%", "/", "@", "#", "?", " ", ":", "%2F", "\"", "[", "é", "\\", "&", "=",
    ]
    .iter()
    .map(|sep| format!("Ab{sep}{CORE}"))
    .chain([CORE.to_owned(), format!("{CORE}%"), format!("%{CORE}")])
    .collect()
}

/// Database URLs and connection strings holding `password`, well-formed or not.
fn urls(password: &str) -> Vec<String> {
    [
        "postgres://svc:{pw}@127.0.0.1/app",
        "postgresql://svc:{pw}@127.0.0.1:5432/app",
        "postgres://svc:{pw}@127.0.0.1:5432/app?sslmode={pw}",
        "postgres://svc@127.0.0.1:5432/app?password={pw}&sslmode=bogus",
        "postgres://svc:{pw}@[::1/app",
        "postgres://svc:{pw}@127.0.0.1:{pw}/app",
        "mysql://svc:{pw}@127.0.0.1:3306/app",
        "mysql://svc:{pw}@127.0.0.1:3306/app?prefer_socket={pw}",
        "host=127.0.0.1 user=svc password={pw} dbname=app",
        "password={pw}",
    ]
    .iter()
    .map(|shape| shape.replace("{pw}", password))
    .collect()
}

/// Panics when `text` holds three characters in a row of the core.
fn assert_clean(text: &str, context: &str) {
    let core: Vec<char> = CORE.chars().collect();
    for fragment in core.windows(3) {
        let fragment: String = fragment.iter().collect();
        assert!(
            !text.contains(&fragment),
            "{context}: output holds `{fragment}` of the password:\n{text}"
        );
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
fn no_part_of_a_password_reaches_errors_logs_or_the_tool() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    let options = credential_store::DatabaseOptions::default()
        .connection_timeout(std::time::Duration::from_secs(2));
    let mut checked = 0;
    tracing::subscriber::with_default(subscriber, || {
        for password in passwords() {
            for url in urls(&password) {
                let context = format!("{url:?}");
                let blocking = Database::open_with(&url, &options);
                let asynchronous =
                    runtime.block_on(async { AsyncDatabase::open_with(&url, &options).await });
                for err in [blocking.err(), asynchronous.err()].into_iter().flatten() {
                    assert_clean(&err.to_string(), &context);
                    assert_clean(&format!("{err:?}"), &context);
                    assert_clean(&format!("{err:#?}"), &context);
                    checked += 1;
                }
                // A well-formed URL whose server does not exist may open (SQLite
                // never does here: every URL is refused or a server's).
                let out = Command::new(BIN)
                    .args(["--json", "status"])
                    .env("DATABASE_URL", &url)
                    .env_remove("CREDENTIAL_STORE_KEYS")
                    .env_remove("CREDENTIAL_STORE_KEYS_FILE")
                    .output()
                    .expect("run credential-store");
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_clean(&stdout, &format!("{context}, --json stdout"));
                assert_clean(&stderr, &format!("{context}, stderr"));
                let json: serde_json::Value = serde_json::from_str(&stdout)
                    .unwrap_or_else(|err| panic!("{context}: not JSON ({err}): {stdout}"));
                assert_eq!(json["ok"], false, "{context}: {stdout}");
            }
        }
    });
    assert!(checked > 100, "only {checked} errors were looked at");
    let logged = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert_clean(&logged, "tracing output");
}
fn a_key_value_connection_string_is_refused_not_made_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let conninfo = "host=127.0.0.1 user=svc password=Zq9Xw7Kv dbname=app";
    let before = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let opened = Database::open(conninfo);
    std::env::set_current_dir(before).unwrap();
    match opened {
        Err(Error::UnsupportedUrl { reason }) => {
            assert_clean(&reason, "the refusal");
            assert!(reason.contains("key=value"), "{reason}");
        }
        other => panic!("a libpq connection string gave {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file was made"
    );
    // Named as a SQLite file explicitly, such a name is a file.
    let named = dir.path().join("a=b.db");
    Database::open(&format!("sqlite://{}", named.display())).unwrap();
    assert!(named.exists());
    let out = Command::new(BIN)
        .args(["--json", "migrate"])
        .current_dir(dir.path())
        .env("DATABASE_URL", conninfo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "unsupported_url");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// The rule a refused input broke, or a panic.
fn broken_rule<T: std::fmt::Debug>(result: Result<T, Error>) -> (Field, Rule) {
    match result {
        Err(Error::Invalid { field, rule }) => (field, rule),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
fn over_long_names_are_refused_by_their_bytes_before_they_are_normalised() {
    let db = common::TestDb::sqlite();
    let store = db.store();
    let huge = "e\u{301}".repeat(2_000_000); // 6 MB, 4 million characters before NFC
    let bytes_rule = |actual| Rule::TooLong {
        max: 4080,
        actual,
        unit: Unit::Bytes,
    };
    assert_eq!(
        broken_rule(store.create_account(&NewUserAccount::new("auth0|huge", &huge))),
        (Field::AccountName, bytes_rule(huge.len()))
    );
    let account = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let new = || NewUserCredential::new("alpaca_paper", "PK", "sk");
    assert_eq!(
        broken_rule(store.insert_credential(&account, &new().nickname(&huge))),
        (Field::Nickname, bytes_rule(huge.len()))
    );
    assert_eq!(
        broken_rule(store.credentials_by_nickname(&account, &huge)),
        (Field::Nickname, bytes_rule(huge.len()))
    );
    // Surrounding whitespace is trimmed first, and the bound refuses nothing that
    // fits: 255 four-byte characters (1,020 bytes), 255 characters that NFC makes
    // of 510 (765 bytes), or 255 Hangul syllables as conjoining jamo (2,295 bytes).
    let widest = format!("  {}  ", "\u{1F600}".repeat(255));
    let jamo = "\u{1100}\u{1161}\u{11A8}".repeat(255);
    let stored = store
        .insert_credential(&account, &new().nickname(&jamo))
        .unwrap();
    assert_eq!(stored.nickname.unwrap().chars().count(), 255);
    store
        .insert_credential(&account, &new().nickname(&widest))
        .unwrap();
    let composed = "e\u{301}".repeat(255);
    let stored = store
        .insert_credential(&account, &new().nickname(&composed))
        .unwrap();
    assert_eq!(stored.nickname.unwrap().chars().count(), 255);
    // One character more is still refused by its characters.
    assert_eq!(
        broken_rule(store.insert_credential(&account, &new().nickname(&"é".repeat(256)))),
        (
            Field::Nickname,
            Rule::TooLong {
                max: 255,
                actual: 256,
                unit: Unit::Characters
            }
        )
    );
}

on_both_backends!(another_users_account_is_answered_as_an_unknown_one, |db| {
    let store = db.store();
    let ada = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let eve = store
        .create_account(&NewUserAccount::new("auth0|eve", "Eve"))
        .unwrap();
    let new = || NewUserCredential::new("polygon", "PK", "sk");
    // Eve names Ada's account id as hers, and then an id that exists nowhere.
    let forged = AccountScope::new(eve.user_id(), ada.id()).unwrap();
    let missing = AccountScope::new(eve.user_id(), uuid::Uuid::now_v7()).unwrap();
    let answer = |account: &AccountScope| match store.insert_credential(account, &new()) {
        Err(err) => (
            err.kind(),
            err.to_string().replace(&account.id().to_string(), "ID"),
        ),
        Ok(stored) => panic!("stored under {account:?}: {stored:?}"),
    };
    let (existing, absent) = (answer(&forged), answer(&missing));
    assert_eq!(existing, absent, "the answers tell an existing id apart");
    assert_eq!(existing.0, credential_store::ErrorKind::UnknownAccount);
    // Every other call under the forged account sees nothing either.
    assert_eq!(store.credentials(&forged).unwrap(), vec![]);
    assert_eq!(db.count("user_credentials"), 0, "nothing written");
});

/// A tokio runtime for a test's async calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

on_both_backends!(
    the_async_store_finds_one_by_type_and_decrypts_by_nickname,
    |db| {
        runtime().block_on(async {
            let database = AsyncDatabase::open(&db.url).await.unwrap();
            assert_eq!(database.backend(), db.backend);
            database.run_migrations().await.unwrap();
            let store = AsyncCredentialStore::new(database, common::test_keyring());
            let ada = store
                .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
                .await
                .unwrap();
            assert_eq!(
                store
                    .credential_by_type(&ada, "alpaca_paper")
                    .await
                    .unwrap(),
                None
            );
            assert!(store
                .keys_by_nickname(&ada, "Swing")
                .await
                .unwrap()
                .is_none());
            let swing = store
                .insert_credential(
                    &ada,
                    &NewUserCredential::new("alpaca_paper", "PK-SWING", "s-swing")
                        .nickname("Swing"),
                )
                .await
                .unwrap();
            let live = store
                .insert_credential(
                    &ada,
                    &NewUserCredential::new("alpaca_live", "PK-LIVE", "s-live").nickname("Live"),
                )
                .await
                .unwrap();
            assert_eq!(
                store
                    .credential_by_type(&ada, "alpaca_paper")
                    .await
                    .unwrap(),
                Some(swing.clone())
            );
            assert_eq!(
                store.credential_by_type(&ada, "alpaca_live").await.unwrap(),
                Some(live.clone())
            );
            // Each nickname gives its own credential and its own keys; the lookup
            // trims as an insert does.
            for (nickname, credential, api_key, secret_key) in [
                (" Swing ", &swing, "PK-SWING", "s-swing"),
                ("Live", &live, "PK-LIVE", "s-live"),
            ] {
                let (found, keys) = store
                    .keys_by_nickname(&ada, nickname)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{nickname:?} is stored"));
                assert_eq!(&found, credential);
                assert_eq!(keys.api_key().expose_secret(), api_key);
                assert_eq!(keys.secret_key().expose_secret(), secret_key);
            }
            // Another user's lookups find nothing of Ada's.
            let eve = store
                .create_account(&NewUserAccount::new("auth0|eve", "Eve"))
                .await
                .unwrap();
            assert_eq!(
                store
                    .credential_by_type(&eve, "alpaca_paper")
                    .await
                    .unwrap(),
                None
            );
            assert!(store
                .keys_by_nickname(&eve, "Swing")
                .await
                .unwrap()
                .is_none());
            // A second of the type, under the same nickname: neither lookup picks one.
            store
                .insert_credential(
                    &ada,
                    &NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing"),
                )
                .await
                .unwrap();
            match store.credential_by_type(&ada, "alpaca_paper").await {
                Err(Error::AmbiguousType {
                    account_id,
                    credential_type,
                    matches,
                }) => {
                    assert_eq!(
                        (account_id, credential_type.as_str(), matches),
                        (ada.id(), "alpaca_paper", 2)
                    );
                }
                other => panic!("two of the type gave {other:?}"),
            }
            assert!(
                matches!(
                    store.keys_by_nickname(&ada, "Swing").await,
                    Err(Error::AmbiguousNickname { matches: 2, .. })
                ),
                "two credentials named Swing are ambiguous"
            );
        });
    }
);

/// Panics unless `result` failed as a retryable error of `kind`.
fn assert_retryable<T: std::fmt::Debug>(
    result: credential_store::Result<T>,
    kind: ErrorKind,
    context: &str,
) -> Error {
    match result {
        Err(err) if err.kind() == kind => {
            assert!(err.is_retryable(), "{context}: {err}");
            err
        }
        other => panic!("{context}: expected {kind}, got {other:?}"),
    }
}

fn a_sqlite_write_lock_held_past_the_busy_timeout_is_busy() {
    let db = common::TestDb::sqlite();
    let options = DatabaseOptions::default().busy_timeout(Duration::from_millis(50));
    let database = Database::open_with(&db.url, &options).unwrap();
    database.run_migrations().unwrap();
    let store = CredentialStore::new(database, common::test_keyring());
    let ada = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let new = || NewUserCredential::new("polygon", "PK", "sk");
    store.insert_credential(&ada, &new()).unwrap();
    let runtime = runtime();
    let async_store = AsyncCredentialStore::new(
        runtime
            .block_on(AsyncDatabase::open_with(&db.url, &options))
            .unwrap(),
        common::test_keyring(),
    );

    // Another program holds the write lock.
    let mut writer = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
    writer.batch_execute("BEGIN IMMEDIATE").unwrap();
    let err = assert_retryable(
        store.insert_credential(&ada, &new()),
        ErrorKind::Busy,
        "a blocking write",
    );
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    let err = assert_retryable(
        runtime.block_on(async_store.create_account(&NewUserAccount::new("auth0|eve", "Eve"))),
        ErrorKind::Busy,
        "an async write",
    );
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    writer.batch_execute("COMMIT").unwrap();

    // Nothing was written; once the lock is free the same writes succeed.
    assert_eq!(db.count("user_credentials"), 1);
    assert_eq!(db.count("user_accounts"), 1);
    store.insert_credential(&ada, &new()).unwrap();
    runtime
        .block_on(async_store.create_account(&NewUserAccount::new("auth0|eve", "Eve")))
        .unwrap();
    assert_eq!(db.count("user_credentials"), 2);
    assert_eq!(db.count("user_accounts"), 2);
}

/// Options for a pool of one connection that a call waits for 200 ms at most.
fn one_connection() -> DatabaseOptions {
    DatabaseOptions::default()
        .max_connections(1)
        .connection_timeout(Duration::from_millis(200))
}

/// A session on the PostgreSQL test database holding the account row of `user_id`
/// (`SELECT … FOR UPDATE` in an open transaction), until it commits or is dropped:
/// a credential written under that account waits for it (the owner check), and
/// nothing else does.
fn lock_account(db: &common::TestDb, user_id: &str) -> PgConnection {
    let mut conn = PgConnection::establish(&db.url).unwrap();
    conn.batch_execute(&format!(
        "BEGIN; SELECT id FROM user_accounts WHERE user_id = '{user_id}' FOR UPDATE"
    ))
    .unwrap();
    conn
}

/// The process id of the session of the PostgreSQL test database that waits for a
/// lock, once one does (panics after 30 s).
fn lock_waiter(db: &common::TestDb) -> i32 {
    #[derive(QueryableByName)]
    struct Waiter {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut admin = PgConnection::establish(&db.url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: Vec<Waiter> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .load(&mut admin)
        .unwrap();
        match waiting.as_slice() {
            [one] => return one.pid,
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            other => panic!("{} sessions wait for a lock", other.len()),
        }
    }
}

/// Ends the PostgreSQL session `pid`, as an operator's `pg_terminate_backend` does.
fn terminate(db: &common::TestDb, pid: i32) {
    db.execute(&format!("SELECT pg_terminate_backend({pid})"));
}

fn a_blocking_call_without_a_free_connection_is_pool_and_a_killed_session_is_lost() {
    let db = common::TestDb::postgres();
    let database = Database::open_with(&db.url, &one_connection()).unwrap();
    database.run_migrations().unwrap();
    let store = CredentialStore::new(database, common::test_keyring());
    let ada = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let new = || NewUserCredential::new("polygon", "PK", "sk");
    store.insert_credential(&ada, &new()).unwrap();

    // A write waits for the lock on the pool's only connection.
    let mut lock = lock_account(&db, "auth0|ada");
    let writer = {
        let (store, ada) = (store.clone(), ada.clone());
        std::thread::spawn(move || store.insert_credential(&ada, &new()))
    };
    let pid = lock_waiter(&db);
    let err = assert_retryable(
        store.credentials(&ada),
        ErrorKind::Pool,
        "a read while the only connection is taken",
    );
    assert!(matches!(err, Error::Pool(_)), "{err:?}");

    // The operator ends the waiting session: the write reports the lost connection.
    terminate(&db, pid);
    let err = assert_retryable(
        writer.join().unwrap(),
        ErrorKind::ConnectionLost,
        "the write whose session was ended",
    );
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    lock.batch_execute("COMMIT").unwrap();

    // The pool replaced the connection; the ended write stored nothing.
    assert_eq!(store.credentials(&ada).unwrap().len(), 1);
    assert_eq!(db.count("user_credentials"), 1);
}

fn an_async_call_without_a_free_connection_is_pool_unavailable_and_a_killed_session_is_lost() {
    let db = common::TestDb::postgres();
    Database::open(&db.url).unwrap().run_migrations().unwrap();
    let runtime = runtime();
    let store = AsyncCredentialStore::new(
        runtime
            .block_on(AsyncDatabase::open_with(&db.url, &one_connection()))
            .unwrap(),
        common::test_keyring(),
    );
    let ada = runtime
        .block_on(store.create_account(&NewUserAccount::new("auth0|ada", "Ada")))
        .unwrap();
    let new = || NewUserCredential::new("polygon", "PK", "sk");
    runtime
        .block_on(store.insert_credential(&ada, &new()))
        .unwrap();

    // A write waits for the lock on the pool's only connection.
    let mut lock = lock_account(&db, "auth0|ada");
    let writer = {
        let (store, ada) = (store.clone(), ada.clone());
        runtime.spawn(async move { store.insert_credential(&ada, &new()).await })
    };
    let pid = lock_waiter(&db);
    let err = assert_retryable(
        runtime.block_on(store.credentials(&ada)),
        ErrorKind::Pool,
        "a read while the only connection is taken",
    );
    assert!(matches!(err, Error::PoolUnavailable { .. }), "{err:?}");

    // The operator ends the waiting session: the write reports the lost connection.
    terminate(&db, pid);
    let err = assert_retryable(
        runtime.block_on(writer).unwrap(),
        ErrorKind::ConnectionLost,
        "the write whose session was ended",
    );
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    lock.batch_execute("COMMIT").unwrap();

    // The pool replaced the connection; the ended write stored nothing.
    assert_eq!(runtime.block_on(store.credentials(&ada)).unwrap().len(), 1);
    assert_eq!(db.count("user_credentials"), 1);
}

/// How many transactions of the MariaDB/MySQL test database wait for a row lock.
#[cfg(feature = "mysql")]
fn mysql_lock_waits(db: &common::TestDb) -> i64 {
    db.scalar(
        "SELECT COUNT(*) AS n FROM information_schema.innodb_trx t \
         JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
         WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()",
    )
}

#[cfg(feature = "mysql")]
fn a_mariadb_deadlock_is_busy() {
    let db = common::TestDb::mysql();
    let store = db.store();
    let ada = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let swing = store
        .insert_credential(&ada, &NewUserCredential::new("polygon", "PK", "sk"))
        .unwrap();

    // Another session holds Ada's credential, after writing enough rows that InnoDB
    // picks the store's transaction, the smaller, as the deadlock's victim.
    let mut other = common::mysql_raw(&db.url);
    other.batch_execute("BEGIN").unwrap();
    for n in 0..50 {
        other
            .batch_execute(&format!(
                "INSERT INTO user_accounts (id, user_id, account_name) \
                 VALUES ('{}', 'auth0|bulk{n}', 'Bulk')",
                uuid::Uuid::now_v7()
            ))
            .unwrap();
    }
    other
        .batch_execute(&format!(
            "SELECT id FROM user_credentials WHERE id = '{}' FOR UPDATE",
            swing.id
        ))
        .unwrap();
    // Deleting the account locks its row, then waits for the credential's.
    let deleting = {
        let (store, ada) = (store.clone(), ada.clone());
        std::thread::spawn(move || store.delete_account(&ada))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while mysql_lock_waits(&db) == 0 {
        assert!(Instant::now() < deadline, "the delete never waited");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The other session now asks for the account row: a deadlock.
    other
        .batch_execute(&format!(
            "SELECT id FROM user_accounts WHERE id = '{}' FOR UPDATE",
            ada.id()
        ))
        .unwrap();
    let err = assert_retryable(
        deleting.join().unwrap(),
        ErrorKind::Busy,
        "the deadlock's victim",
    );
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    other.batch_execute("ROLLBACK").unwrap();

    // The delete was rolled back whole; retried, it succeeds.
    assert_eq!(db.count("user_accounts"), 1);
    assert_eq!(db.count("user_credentials"), 1);
    store.delete_account(&ada).unwrap();
    assert_eq!(db.count("user_accounts"), 0);
    assert_eq!(db.count("user_credentials"), 0);
}
