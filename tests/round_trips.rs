//! Network round trips per call, counted at a TCP proxy between the crate and
//! PostgreSQL: every async read is one round trip, as a bare prepared SELECT is (the
//! pool prepares the reads when it makes a connection); the blocking store's is four.

#[allow(dead_code)]
#[path = "../benches/support/proxy.rs"]
mod proxy;

mod common;

use common::{test_key, with_database, TestDb};
use credential_store::{
    AsyncCredentialStore, AsyncDatabase, CredentialStore, Database, DatabaseOptions, Keyring,
    NewUserAccount, NewUserCredential,
};
use std::time::Duration;

fn main() {
    common::trials::run(vec![trial!(an_async_lookup_is_one_round_trip, [Postgres])]);
}

const CALLS: u64 = 20;

/// The test database's URL through the proxy.
fn through(proxy: &proxy::Proxy, db: &TestDb) -> String {
    let (_, name) = db.pg_admin().expect("a PostgreSQL test database");
    with_database(
        &format!("postgres://postgres@{}/postgres", proxy.addr()),
        name,
    )
}

fn an_async_lookup_is_one_round_trip() {
    let db = TestDb::postgres();
    let key = test_key();
    let keyring = || Keyring::from_fernet_keys([&key]).unwrap();
    let blocking = CredentialStore::new(db.database(), keyring());
    blocking.database().run_migrations().unwrap();
    let account = blocking
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    blocking
        .insert_credential(
            &account,
            &NewUserCredential::new("alpaca_paper", "PK", "s").nickname("Swing"),
        )
        .unwrap();

    // 2 ms of round trip: every reply arrives long after a pipelined call has sent
    // all it sends, so each burst of the client counts once.
    let upstream = "127.0.0.1:5432".parse().unwrap();
    let proxy = proxy::Proxy::start(upstream, Duration::from_millis(2));
    let url = through(&proxy, &db);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = DatabaseOptions::default().max_connections(1);
        let store = AsyncCredentialStore::new(
            AsyncDatabase::open_with(&url, &options).await.unwrap(),
            keyring(),
        );
        // The pool prepared the reads when it made the connection: even the first
        // call on it is one round trip.
        proxy.reset();
        assert!(store
            .credential_by_nickname(&account, "Swing")
            .await
            .unwrap()
            .is_some());
        assert_eq!(proxy.round_trips(), 1, "the connection's first lookup");

        proxy.reset();
        for _ in 0..CALLS {
            assert!(store
                .credential_by_nickname(&account, "Swing")
                .await
                .unwrap()
                .is_some());
        }
        assert_eq!(proxy.round_trips(), CALLS, "one round trip per warm lookup");

        // A decrypted lookup by nickname: one statement, one round trip.
        proxy.reset();
        for _ in 0..CALLS {
            store
                .keys_by_nickname(&account, "Swing")
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            proxy.round_trips(),
            CALLS,
            "one round trip per warm decrypted lookup"
        );

        // Every other read is one round trip too, its first call included.
        proxy.reset();
        for _ in 0..CALLS {
            assert_eq!(store.credentials(&account).await.unwrap().len(), 1);
            let paper = store
                .credentials_by_type(&account, "alpaca_paper")
                .await
                .unwrap();
            store.keys(&account, paper[0].id).await.unwrap();
        }
        assert_eq!(proxy.round_trips(), 3 * CALLS, "one round trip per read");

        // A one-row insert is one statement of one shape: once the connection has
        // prepared it, an insert is one round trip too; so is a delete.
        let polygon = |n: u64| NewUserCredential::new("polygon", format!("PK{n}"), "s");
        store
            .insert_credential(&account, &polygon(0))
            .await
            .unwrap();
        proxy.reset();
        let mut inserted = Vec::new();
        for n in 1..=CALLS {
            inserted.push(
                store
                    .insert_credential(&account, &polygon(n))
                    .await
                    .unwrap()
                    .id,
            );
        }
        assert_eq!(proxy.round_trips(), CALLS, "one round trip per insert");
        proxy.reset();
        for id in inserted {
            store.delete_credential(&account, id).await.unwrap();
        }
        assert_eq!(proxy.round_trips(), CALLS, "one round trip per delete");
    });

    // The blocking store: BEGIN, set_config, the SELECT and COMMIT, one after another.
    let options = DatabaseOptions::default().max_connections(1);
    let sync = CredentialStore::new(Database::open_with(&url, &options).unwrap(), keyring());
    sync.credential_by_nickname(&account, "Swing").unwrap();
    proxy.reset();
    for _ in 0..CALLS {
        sync.credential_by_nickname(&account, "Swing").unwrap();
    }
    assert_eq!(
        proxy.round_trips(),
        4 * CALLS,
        "the blocking store waits for each statement"
    );
}
