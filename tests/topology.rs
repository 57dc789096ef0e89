//! PostgreSQL as a deployment grows: PgBouncer in transaction pooling mode in front
//! of the server, and a streaming replica taking the reads. `.ci/pg-topology` starts
//! both (PgBouncer on 127.0.0.1:6432 with 4 server connections per database and
//! user, the replica on 127.0.0.1:5433); CI requires them, a laptop without them
//! reports these tests as ignored and says why.

mod common;
// Only the proxy's start and stop are used here.
#[allow(dead_code)]
#[path = "../benches/support/proxy.rs"]
mod proxy;

use common::{
    pgbouncer_url, replica_url, test_keyring, with_database, RoleGuard, TestDb, SERVICE_ROLE,
};
use credential_store::{
    AccountScope, CredentialStore, Database, DatabaseOptions, Error, NewUserAccount,
    NewUserCredential, UserAccount,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::sync::{Arc, Barrier};

fn main() {
    common::trials::run(vec![
        trial!(
            twice_as_many_clients_as_pgbouncer_server_connections,
            [Postgres, Pgbouncer]
        ),
        trial!(
            without_the_option_pgbouncer_loses_prepared_statements,
            [Postgres, Pgbouncer]
        ),
        #[cfg(feature = "async")]
        trial!(
            async_store_refuses_a_transaction_pooler,
            [Postgres, Pgbouncer]
        ),
        trial!(
            concurrent_migrations_through_pgbouncer,
            [Postgres, Pgbouncer]
        ),
        trial!(
            replica_reads_keep_row_level_security_and_read_your_writes,
            [Postgres, Replica]
        ),
        trial!(
            an_unreachable_replica_sends_reads_to_the_primary_at_once,
            [Postgres, Replica]
        ),
        trial!(a_read_replica_needs_postgresql),
    ]);
}

/// PgBouncer's server connections per (database, user): `default_pool_size`.
fn pgbouncer_pool_size() -> usize {
    // The admin console speaks the simple query protocol only.
    let mut admin = postgres::Client::connect(
        &with_database(&pgbouncer_url(), "pgbouncer"),
        postgres::NoTls,
    )
    .expect("PgBouncer's admin console");
    let rows = admin.simple_query("SHOW CONFIG").expect("SHOW CONFIG");
    let get = |key: &str| {
        rows.iter()
            .find_map(|message| match message {
                postgres::SimpleQueryMessage::Row(row) if row.get("key") == Some(key) => {
                    row.get("value").map(str::to_owned)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("PgBouncer reports no {key}"))
    };
    assert_eq!(
        get("pool_mode"),
        "transaction",
        "PgBouncer must pool transactions"
    );
    get("default_pool_size").parse().expect("a number")
}

fn through_pgbouncer(db: &TestDb, transaction_pooler: bool, connections: u32) -> Database {
    Database::open_with(
        &db.through(&pgbouncer_url()),
        &DatabaseOptions::default()
            .transaction_pooler(transaction_pooler)
            .max_connections(connections),
    )
    .expect("open through PgBouncer")
}

fn account(store: &CredentialStore, user: &str) -> UserAccount {
    store
        .create_account(&NewUserAccount::new(user, user))
        .expect("create account")
}

fn credential<'a>(nickname: &'a str, api_key: &str) -> NewUserCredential<'a> {
    let mut new = NewUserCredential::new("alpaca_paper", api_key, format!("secret-{api_key}"));
    new.nickname = Some(nickname);
    new
}

fn twice_as_many_clients_as_pgbouncer_server_connections() {
    let servers = pgbouncer_pool_size();
    let clients = 2 * servers;
    let db = TestDb::postgres();
    db.database().run_migrations().unwrap();
    let store = CredentialStore::new(through_pgbouncer(&db, true, clients as u32), test_keyring());
    let barrier = Arc::new(Barrier::new(clients));
    let rounds = 25;
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (store, barrier) = (store.clone(), barrier.clone());
            scope.spawn(move || {
                let user = format!("auth0|client-{client}");
                barrier.wait();
                let account = account(&store, &user);
                for round in 0..rounds {
                    let nickname = format!("bot-{round}");
                    let stored = store
                        .insert_credential(
                            &account,
                            &credential(&nickname, &format!("PK{client}x{round}")),
                        )
                        .expect("insert through PgBouncer");
                    let found = store
                        .credential_by_nickname(&account, &nickname)
                        .expect("lookup through PgBouncer")
                        .expect("the credential just stored");
                    assert_eq!(found.id, stored.id);
                    let keys = store.keys(&account, stored.id).unwrap();
                    assert_eq!(
                        secrecy::ExposeSecret::expose_secret(keys.api_key()),
                        format!("PK{client}x{round}")
                    );
                    if round % 5 == 4 {
                        store.delete_credential(&account, stored.id).unwrap();
                    }
                }
                let mine = store.credentials(&account).unwrap();
                assert_eq!(mine.len(), rounds - rounds / 5);
                assert!(
                    mine.iter().all(|c| c.user_id == user),
                    "only this user's rows"
                );
            });
        }
    });
    assert_eq!(
        db.count("user_credentials"),
        (clients * (rounds - rounds / 5)) as i64
    );
}

/// Without the option, the connections keep named prepared statements, which the
/// next transaction may not find on the server connection PgBouncer gives it: the
/// option is what makes the crate work there.
fn without_the_option_pgbouncer_loses_prepared_statements() {
    let clients = 2 * pgbouncer_pool_size();
    let db = TestDb::postgres();
    db.database().run_migrations().unwrap();
    let store = CredentialStore::new(
        through_pgbouncer(&db, false, clients as u32),
        test_keyring(),
    );
    let failures = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (store, failures) = (store.clone(), &failures);
            scope.spawn(move || {
                let Ok(account) = store.create_account(&NewUserAccount::new(
                    &format!("auth0|plain-{client}"),
                    "plain",
                )) else {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                };
                for round in 0..40 {
                    if store
                        .credential_by_nickname(&account, &format!("bot-{round}"))
                        .is_err()
                    {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(
        failures.into_inner() > 0,
        "named prepared statements went through a transaction pooler unharmed: the \
         transaction_pooler option would be unnecessary"
    );
}

/// The async store's driver names its statements, also while it connects: it
/// refuses a transaction pooler instead of failing later, and says why.
#[cfg(feature = "async")]
fn async_store_refuses_a_transaction_pooler() {
    let db = TestDb::postgres();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = runtime.block_on(credential_store::AsyncDatabase::open_with(
        &db.through(&pgbouncer_url()),
        &DatabaseOptions::default().transaction_pooler(true),
    ));
    match refused {
        Err(Error::UnsupportedUrl { reason }) => {
            assert!(
                reason.contains("transaction pooler") && reason.contains("1.21"),
                "{reason}"
            )
        }
        other => panic!("expected UnsupportedUrl, got {:?}", other.map(|_| ())),
    }
}

/// The migration lock is transaction-scoped: migrators racing through PgBouncer
/// apply each migration once (a session-level lock would be held by whichever
/// server connection took it, and released by none).
fn concurrent_migrations_through_pgbouncer() {
    let clients = 2 * pgbouncer_pool_size();
    let db = TestDb::postgres();
    let barrier = Arc::new(Barrier::new(clients));
    let applied: Vec<Vec<String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..clients)
            .map(|_| {
                let (db, barrier) = (&db, barrier.clone());
                scope.spawn(move || {
                    let database = through_pgbouncer(db, true, 1);
                    barrier.wait();
                    database
                        .run_migrations()
                        .expect("migrations through PgBouncer")
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let mut all: Vec<String> = applied.into_iter().flatten().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, all.len(), "a migration was applied twice");
    assert_eq!(all, db.database().applied_migrations().unwrap());
    assert!(db.database().pending_migrations().unwrap().is_empty());
    // No advisory lock is left behind on any server connection.
    let held = db.scalar(
        "SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    );
    assert_eq!(held, 0);
}

/// Pauses WAL replay on the replica until dropped.
struct ReplayPaused(String);

impl ReplayPaused {
    fn new(replica: &str) -> ReplayPaused {
        let mut conn = PgConnection::establish(replica).unwrap();
        conn.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
        ReplayPaused(replica.to_owned())
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.0) {
            let _ = conn.batch_execute("SELECT pg_wal_replay_resume()");
        }
    }
}

fn service_store(db: &TestDb, role: &RoleGuard) -> CredentialStore {
    let database = Database::open(&role.url())
        .unwrap()
        .with_read_replica(&db.on_replica(&role.url()))
        .unwrap();
    CredentialStore::new(database, shared_keyring())
}

/// One key for every store of this test binary, so that two handles read each
/// other's rows.
fn shared_keyring() -> credential_store::Keyring {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(common::test_key);
    credential_store::Keyring::from_fernet_keys([key.as_str()]).unwrap()
}

fn replica_reads_keep_row_level_security_and_read_your_writes() {
    let db = TestDb::postgres();
    db.database().run_migrations().unwrap();
    let role = RoleGuard::new(&db, "replica");
    let (_, name) = db.pg_admin().unwrap();
    db.execute(
        &SERVICE_ROLE
            .replace("{role}", &role.role)
            .replace("{database}", name),
    );
    let writer = service_store(&db, &role);
    let alice = account(&writer, "auth0|alice");
    let bob = account(&writer, "auth0|bob");
    writer
        .insert_credential(&alice, &credential("main", "PKALICE1"))
        .unwrap();
    writer
        .insert_credential(&bob, &credential("main", "PKBOB1"))
        .unwrap();

    // A second handle, which has written nothing: its reads go to the replica once
    // the replica has the rows (bob's was written last). Row-level security holds
    // there: each user sees their own rows only.
    let reader = service_store(&db, &role);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reader.credentials(&bob).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for (account, key) in [(&alice, "PKALICE1"), (&bob, "PKBOB1")] {
        let seen = reader.credentials(account).unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen.iter().all(|c| c.user_id == account.user_id()));
        let (_, keys) = reader.keys_by_nickname(account, "main").unwrap().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(keys.api_key()), key);
    }
    // Another user's account, forged with its id: nothing on the replica either.
    let forged = AccountScope::new("auth0|mallory", alice.id()).unwrap();
    match reader.credentials(&forged) {
        Ok(rows) => assert!(
            rows.is_empty(),
            "a forged account read {} row(s)",
            rows.len()
        ),
        Err(Error::UnknownAccount { .. } | Error::AccountUserMismatch { .. }) => {}
        Err(other) => panic!("unexpected error: {other}"),
    }
    // As the replica's own session sees it: no context, no rows.
    let mut on_replica = PgConnection::establish(&db.on_replica(&role.url())).unwrap();
    let visible: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT COUNT(*) FROM user_credentials)",
    ))
    .get_result(&mut on_replica)
    .unwrap();
    assert_eq!(visible, 0, "row-level security lets no context read a row");

    // With replay paused, the replica is behind. The handle that writes still reads
    // its own write (from the primary); the other handle reads the replica, which
    // does not have it yet: its reads do go to the replica.
    let replica_admin = with_database(&replica_url(), name);
    let paused = ReplayPaused::new(&replica_admin);
    let written = writer
        .insert_credential(&alice, &credential("second", "PKALICE2"))
        .unwrap();
    let own = writer.credential_by_nickname(&alice, "second").unwrap();
    assert_eq!(
        own.map(|c| c.id),
        Some(written.id),
        "a handle reads its own writes"
    );
    assert_eq!(
        reader.credential_by_nickname(&alice, "second").unwrap(),
        None,
        "the other handle read the paused replica"
    );
    drop(paused);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reader
        .credential_by_nickname(&alice, "second")
        .unwrap()
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Once the replica has replayed the write, the writer reads it there again.
    assert_eq!(writer.credentials(&alice).unwrap().len(), 2);
}

/// A replica that goes away costs a read at most the short wait for a replica
/// connection, not the pool's connection timeout: the reads go to the primary.
fn an_unreachable_replica_sends_reads_to_the_primary_at_once() {
    let db = TestDb::postgres();
    db.database().run_migrations().unwrap();
    let on_replica = db.on_replica(&db.url);
    let (host_port, rest) = on_replica
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .expect("postgres://user@host:port/database");
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .unwrap()
        .next()
        .unwrap();
    let proxy = proxy::Proxy::start(upstream, std::time::Duration::ZERO);
    let through_proxy = format!("postgres://postgres@{}/{rest}", proxy.addr());
    let options = DatabaseOptions::default().connection_timeout(std::time::Duration::from_secs(10));
    let database = Database::open_with(&db.url, &options)
        .unwrap()
        .with_read_replica(&through_proxy)
        .unwrap();
    let store = CredentialStore::new(database, shared_keyring());
    let alice = account(&store, "auth0|alice");
    store
        .insert_credential(&alice, &credential("main", "PKALICE1"))
        .unwrap();
    assert!(store.credentials(&alice).is_ok());

    drop(proxy);
    let started = std::time::Instant::now();
    let answered = (0..5)
        .filter_map(|_| store.credentials(&alice).ok())
        .collect::<Vec<_>>();
    let took = started.elapsed();
    // The one pooled replica connection may be met closed (ConnectionLost) once.
    assert!(
        answered.len() >= 4,
        "{} of 5 reads answered",
        answered.len()
    );
    assert!(
        answered.iter().all(|rows| rows.len() == 1),
        "the primary has the row"
    );
    assert!(
        took < std::time::Duration::from_secs(3),
        "5 reads took {took:?} with the replica gone (the pool's timeout is 10 s)"
    );
}

fn a_read_replica_needs_postgresql() {
    let db = TestDb::sqlite();
    let refused = db.database().with_read_replica(&replica_url());
    assert!(
        matches!(refused, Err(Error::UnsupportedUrl { ref reason }) if reason.contains("PostgreSQL")),
        "{refused:?}"
    );
}
