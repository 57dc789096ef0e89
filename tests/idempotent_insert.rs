//! Inserts with a caller-chosen id are idempotent on it: a write whose outcome is
//! unknown (a timeout, a cancelled async call whose COMMIT may have reached the
//! server) is retried safely. On SQLite, PostgreSQL and MariaDB.

fn main() {
    common::trials::run(vec![
        the_same_id_and_content_returns_the_stored_credential::tests(),
        the_same_id_with_other_content_is_a_conflict::tests(),
        trial!(cut_async_writes_are_retried_by_id_sqlite),
        trial!(cut_async_writes_are_retried_by_id_postgres, [Postgres]),
        #[cfg(feature = "mysql")]
        trial!(cut_async_writes_are_retried_by_id_mysql, [Mysql]),
    ]);
}

mod common;

use common::{test_keyring, TestDb};
use credential_store::{
    AsyncCredentialStore, AsyncDatabase, Error, NewUserAccount, NewUserCredential, UserAccount,
};
use secrecy::ExposeSecret;
use uuid::Uuid;

fn account(store: &credential_store::CredentialStore, user_id: &str) -> UserAccount {
    store
        .create_account(&NewUserAccount::new(user_id, "Trading account"))
        .expect("create account")
}

on_both_backends!(
    the_same_id_and_content_returns_the_stored_credential,
    |db| {
        let store = db.store();
        let ada = account(&store, "auth0|ada");
        let id = Uuid::now_v7();
        let new = || {
            NewUserCredential::new("alpaca_paper", "PKA1", "sa")
                .nickname("Swing")
                .with_id(id)
        };
        let first = store.insert_credential(&ada, &new()).expect("first insert");
        assert_eq!(first.id, id);
        let again = store.insert_credential(&ada, &new()).expect("the retry");
        assert_eq!(again, first, "the retry returns the row as stored");
        assert_eq!(db.count("user_credentials"), 1);

        // A batch retried whole, every credential with its id.
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        let batch = || {
            vec![
                NewUserCredential::new("alpaca_paper", "PKB1", "sb1").with_id(ids[0]),
                NewUserCredential::new("alpaca_live", "AKB2", "sb2").with_id(ids[1]),
            ]
        };
        let stored = store.insert_credentials(&ada, &batch()).expect("batch");
        let replayed = store
            .insert_credentials(&ada, &batch())
            .expect("batch retry");
        assert_eq!(replayed, stored);
        assert_eq!(db.count("user_credentials"), 3);
    }
);

on_both_backends!(the_same_id_with_other_content_is_a_conflict, |db| {
    let store = db.store();
    let ada = account(&store, "auth0|ada");
    let mallory = account(&store, "auth0|mallory");
    let id = Uuid::now_v7();
    let stored = store
        .insert_credential(
            &ada,
            &NewUserCredential::new("alpaca_paper", "PKA1", "sa")
                .nickname("Swing")
                .with_id(id),
        )
        .expect("insert");
    let others = [
        NewUserCredential::new("alpaca_paper", "PKA1", "sa").nickname("Momentum"),
        NewUserCredential::new("alpaca_live", "PKA1", "sa").nickname("Swing"),
        NewUserCredential::new("alpaca_paper", "PKA2", "sa").nickname("Swing"),
        NewUserCredential::new("alpaca_paper", "PKA1", "sb").nickname("Swing"),
        NewUserCredential::new("alpaca_paper", "PKA1", "sa")
            .nickname("Swing")
            .active(false),
    ];
    for other in others {
        let refused = store.insert_credential(&ada, &other.with_id(id));
        assert!(
            matches!(refused, Err(Error::CredentialIdConflict { credential_id, .. }) if credential_id == id),
            "{refused:?}"
        );
    }
    // An id taken in another account is a conflict too, and says nothing of it.
    let across = store.insert_credential(
        &mallory,
        &NewUserCredential::new("alpaca_paper", "PKA1", "sa")
            .nickname("Swing")
            .with_id(id),
    );
    assert!(
        matches!(across, Err(Error::CredentialIdConflict { account_id, .. }) if account_id == mallory.id()),
        "{across:?}"
    );
    // Nothing changed.
    assert_eq!(db.count("user_credentials"), 1);
    assert_eq!(store.credential(&ada, id).unwrap(), Some(stored));
    let keys = store.keys(&ada, id).unwrap();
    assert_eq!(keys.api_key().expose_secret(), "PKA1");
    assert_eq!(keys.secret_key().expose_secret(), "sa");

    // A batch in which one id is taken by other content writes nothing.
    let fresh = Uuid::now_v7();
    let batch = [
        NewUserCredential::new("polygon", "PG1", "s").with_id(fresh),
        NewUserCredential::new("alpaca_paper", "OTHER", "sa")
            .nickname("Swing")
            .with_id(id),
    ];
    let refused = store.insert_credentials(&ada, &batch);
    assert!(
        matches!(refused, Err(Error::CredentialIdConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(db.count("user_credentials"), 1);
    assert_eq!(store.credential(&ada, fresh).unwrap(), None);
});

/// Async writes cut at random points, then retried with the same id: every
/// credential ends up stored exactly once, with its content, whether the cut call
/// had committed or not.
fn cut_async_writes_are_retried_by_id(db: &TestDb) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let async_db = AsyncDatabase::open(&db.url).await.expect("open");
        async_db.run_migrations().await.expect("migrations");
        let store = AsyncCredentialStore::new(async_db, test_keyring());
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .await
            .expect("account");
        let rounds = 60;
        let (mut cut, mut finished) = (0, 0);
        for round in 0..rounds {
            let id = Uuid::now_v7();
            let api_key = format!("PK{round}");
            let new =
                NewUserCredential::new("alpaca_paper", api_key.as_str(), "secret").with_id(id);
            // From 0 to ~3 ms: some calls are cut before, some after their COMMIT.
            let deadline = std::time::Duration::from_micros((round as u64 * 53) % 3000);
            match tokio::time::timeout(deadline, store.insert_credential(&ada, &new)).await {
                Err(_) => cut += 1,
                Ok(result) => {
                    result.expect("an uncut insert succeeds");
                    finished += 1;
                }
            }
            let retried = store
                .insert_credential(&ada, &new)
                .await
                .expect("the retry by id succeeds whatever the cut call did");
            assert_eq!(retried.id, id);
            let keys = store.keys(&ada, id).await.expect("keys");
            assert_eq!(keys.api_key().expose_secret(), api_key);
        }
        let listed = store.credentials(&ada).await.expect("list");
        assert_eq!(listed.len(), rounds, "each credential stored exactly once");
        // Over the network a call is cut mid-flight every time; SQLite's calls (a
        // hop to the blocking pool) can all finish before their deadline.
        if db.backend_name() != "sqlite" {
            assert!(
                cut > 0,
                "no call was cut: the test did not test a cut write"
            );
        }
        eprintln!(
            "{}: {cut} calls cut, {finished} finished",
            db.backend_name()
        );
    });
}
fn cut_async_writes_are_retried_by_id_sqlite() {
    cut_async_writes_are_retried_by_id(&TestDb::sqlite());
}
fn cut_async_writes_are_retried_by_id_postgres() {
    {
        let db = TestDb::postgres();
        cut_async_writes_are_retried_by_id(&db);
    }
}

#[cfg(feature = "mysql")]
fn cut_async_writes_are_retried_by_id_mysql() {
    {
        let db = TestDb::mysql();
        cut_async_writes_are_retried_by_id(&db);
    }
}
