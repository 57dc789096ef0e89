//! The async store on SQLite, PostgreSQL and MariaDB: the same behaviour as the
//! blocking store, and calls cancelled at random points leave no open transaction
//! and no row-level-security context on any pooled connection.

mod common;

use common::{test_key, test_keyring, RoleGuard, TestDb};
use credential_store::{
    AccountScope, AsyncCredentialStore, AsyncDatabase, CredentialStore, CredentialUpdate, Database,
    DatabaseOptions, Error, Field, Keyring, NewUserAccount, NewUserCredential, Rule, UserAccount,
};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn main() {
    common::trials::run(vec![
        every_operation_matches_the_blocking_store::tests(),
        bad_input_is_refused_and_changes_nothing::tests(),
        trial!(a_cancellation_storm_on_sqlite_leaves_every_connection_clean),
        trial!(
            a_cancellation_storm_on_postgres_leaves_every_connection_clean,
            [Postgres]
        ),
        #[cfg(feature = "mysql")]
        trial!(
            a_cancellation_storm_on_mariadb_leaves_every_connection_clean,
            [Mysql]
        ),
    ]);
}

/// Runs an async test body on a multi-threaded runtime, once per backend.
macro_rules! async_on_both_backends {
    ($name:ident, |$db:ident| $body:block) => {
        on_both_backends!($name, |db| {
            async fn run($db: &TestDb) $body

            runtime().block_on(run(db));
        });
    };
}

async fn async_store(url: &str) -> AsyncCredentialStore {
    async_store_with(url, &test_key()).await
}

async fn async_store_with(url: &str, key: &str) -> AsyncCredentialStore {
    let db = AsyncDatabase::open(url).await.expect("open");
    db.run_migrations().await.expect("migrations");
    AsyncCredentialStore::new(db, Keyring::from_fernet_keys([key]).unwrap())
}

async fn account(store: &AsyncCredentialStore, user_id: &str) -> UserAccount {
    store
        .create_account(&NewUserAccount::new(user_id, "Trading account"))
        .await
        .expect("create account")
}

async_on_both_backends!(every_operation_matches_the_blocking_store, |db| {
    let key = test_key();
    let store = async_store_with(&db.url, &key).await;
    let blocking = CredentialStore::new(db.database(), Keyring::from_fernet_keys([&key]).unwrap());
    let ada = account(&store, "auth0|ada").await;
    assert_eq!(
        blocking.account_by_user_id("auth0|ada").unwrap(),
        Some(ada.clone())
    );
    assert_eq!(
        store.account("auth0|ada", ada.id()).await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.account("auth0|eve", ada.id()).await.unwrap(), None);
    assert!(matches!(
        store.create_account(&NewUserAccount::new("auth0|ada", "Again")).await,
        Err(Error::AccountExists { ref user_id }) if user_id == "auth0|ada"
    ));

    let stored = store
        .insert_credentials(
            &ada,
            &[
                NewUserCredential::new("alpaca_paper", "PK-MOMENTUM", "s-momentum")
                    .nickname("Momentum"),
                NewUserCredential::new("alpaca_paper", "PK-SWING-1", "s-swing-1").nickname("Swing"),
                NewUserCredential::new("alpaca_paper", "PK-SWING-2", "s-swing-2")
                    .nickname(" Swing "),
            ],
        )
        .await
        .unwrap();
    let live = store
        .insert_credential(
            &ada,
            &NewUserCredential::new("alpaca_live", "AK-LIVE", "s-live"),
        )
        .await
        .unwrap();
    assert_eq!(
        live.nickname.as_deref(),
        Some("alpaca_live"),
        "no nickname: the type"
    );

    // What one store wrote, the other reads the same.
    assert_eq!(
        store.credentials(&ada).await.unwrap(),
        blocking.credentials(&ada).unwrap()
    );
    assert_eq!(store.credentials(&ada).await.unwrap().len(), 4);
    assert_eq!(
        store
            .credentials_by_type(&ada, "alpaca_paper")
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .credentials_by_nickname(&ada, "Swing")
            .await
            .unwrap()
            .len(),
        2
    );
    let momentum = store
        .credential_by_nickname(&ada, "Momentum")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(momentum.id, stored[0].id);
    assert_eq!(
        store.credential_by_nickname(&ada, "Nope").await.unwrap(),
        None
    );
    match store.credential_by_nickname(&ada, "Swing").await {
        Err(Error::AmbiguousNickname { matches: 2, .. }) => {}
        other => panic!("two Swings must be ambiguous: {other:?}"),
    }

    let keys = store.keys(&ada, momentum.id).await.unwrap();
    assert_eq!(keys.api_key().expose_secret(), "PK-MOMENTUM");
    assert_eq!(keys.secret_key().expose_secret(), "s-momentum");
    // Keys written by the async store open in the blocking one, and back.
    let keys = blocking.keys(&ada, live.id).unwrap();
    assert_eq!(keys.api_key().expose_secret(), "AK-LIVE");

    let renamed = store
        .update_credential(
            &ada,
            stored[2].id,
            &CredentialUpdate::default()
                .nickname("Swing 2")
                .keys("PK-NEW", "s-new"),
        )
        .await
        .unwrap();
    assert_eq!(renamed.nickname.as_deref(), Some("Swing 2"));
    assert_eq!(
        store
            .credential_by_nickname(&ada, "Swing")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(stored[1].id)
    );
    let keys = store.keys(&ada, stored[2].id).await.unwrap();
    assert_eq!(keys.api_key().expose_secret(), "PK-NEW");

    store
        .update_credential(&ada, live.id, &CredentialUpdate::default().active(false))
        .await
        .unwrap();
    assert!(matches!(
        store.keys(&ada, live.id).await,
        Err(Error::CredentialInactive { credential_id }) if credential_id == live.id
    ));

    store.delete_credential(&ada, live.id).await.unwrap();
    assert!(matches!(
        store.delete_credential(&ada, live.id).await,
        Err(Error::CredentialNotFound { .. })
    ));
    assert_eq!(store.credential(&ada, live.id).await.unwrap(), None);
    assert_eq!(db.count("user_credentials"), 3);
});

async_on_both_backends!(bad_input_is_refused_and_changes_nothing, |db| {
    let store = async_store(&db.url).await;
    let ada = account(&store, "auth0|ada").await;
    let eve = account(&store, "auth0|eve").await;
    let long = "n".repeat(256);
    let refusals = [
        (
            NewUserCredential::new("alpaca_paper", "PK", "s").nickname(&long),
            Field::Nickname,
        ),
        (
            NewUserCredential::new("alpaca_paper", "PK", "s").nickname("bad\u{7}name"),
            Field::Nickname,
        ),
        (
            NewUserCredential::new("Alpaca Paper", "PK", "s"),
            Field::CredentialType,
        ),
        (
            NewUserCredential::new("alpaca_paper", "", "s"),
            Field::ApiKey,
        ),
    ];
    for (new, field) in &refusals {
        match store.insert_credential(&ada, new).await {
            Err(Error::Invalid { field: refused, .. }) => assert_eq!(refused, *field),
            other => panic!("{new:?} must be refused naming {field}: {other:?}"),
        }
    }
    match store.credentials_by_nickname(&ada, &long).await {
        Err(Error::Invalid {
            field: Field::Nickname,
            rule:
                Rule::TooLong {
                    max: 255,
                    actual: 256,
                    ..
                },
        }) => {}
        other => panic!("an over-long nickname lookup: {other:?}"),
    }
    // A forged account: an unknown id, or Ada's id under Eve's user id.
    let unknown = AccountScope::new(ada.user_id(), Uuid::now_v7()).unwrap();
    assert!(matches!(
        store.insert_credential(&unknown, &NewUserCredential::new("polygon", "PK", "s")).await,
        Err(Error::UnknownAccount { account_id }) if account_id == unknown.id()
    ));
    let forged = AccountScope::new(eve.user_id(), ada.id()).unwrap();
    assert!(matches!(
        store
            .insert_credential(&forged, &NewUserCredential::new("polygon", "PK", "s"))
            .await,
        Err(Error::UnknownAccount { .. })
    ));
    assert_eq!(store.credentials(&forged).await.unwrap(), vec![]);
    assert_eq!(db.count("user_credentials"), 0, "nothing written");
});

/// A small deterministic generator, so a failing storm can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const USERS: [&str; 4] = ["auth0|u0", "auth0|u1", "auth0|u2", "auth0|u3"];
const CALLS: usize = 3000;

/// Thousands of calls, cut at random points by timeouts and aborted tasks; then
/// every pooled connection must be outside a transaction with no user context, and
/// every user must see exactly their own rows.
async fn cancellation_storm(store: AsyncCredentialStore, seed: u64) {
    let mut accounts = Vec::new();
    for user in USERS {
        let account = account(&store, user).await;
        store
            .insert_credential(
                &account,
                &NewUserCredential::new("alpaca_paper", "PK", "s").nickname("Swing"),
            )
            .await
            .unwrap();
        accounts.push(account);
    }
    let cut = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng(seed);
    let mut tasks = Vec::new();
    for call in 0..CALLS {
        let account = accounts[rng.below(USERS.len() as u64) as usize].clone();
        let store = store.clone();
        // Most calls are cut somewhere between a few microseconds and 20 ms in; one in
        // four is left to finish.
        let (op, wait) = match rng.below(4) {
            0 => (rng.below(4), Duration::from_secs(30)),
            _ => (rng.below(4), Duration::from_micros(rng.below(20_000))),
        };
        let (cut, finished) = (Arc::clone(&cut), Arc::clone(&finished));
        let task = tokio::spawn(async move {
            let work = async {
                let result = match op {
                    0 => store
                        .credential_by_nickname(&account, "Swing")
                        .await
                        .map(drop),
                    1 => store.credentials(&account).await.map(drop),
                    2 => store
                        .insert_credential(
                            &account,
                            &NewUserCredential::new("polygon", "PK", "s").nickname("Extra"),
                        )
                        .await
                        .map(drop),
                    _ => match store.credentials_by_type(&account, "polygon").await {
                        Err(err) => Err(err),
                        Ok(listed) => match listed.first() {
                            Some(credential) => store
                                .update_credential(
                                    &account,
                                    credential.id,
                                    &CredentialUpdate::default().active(call % 2 == 0),
                                )
                                .await
                                .map(drop),
                            None => Ok(()),
                        },
                    },
                };
                match result {
                    Ok(()) | Err(Error::Busy(_)) | Err(Error::PoolUnavailable { .. }) => {}
                    Err(err) => panic!("call {call} failed: {err}"),
                }
            };
            match tokio::time::timeout(wait, work).await {
                Ok(()) => finished.fetch_add(1, Ordering::Relaxed),
                Err(_) => cut.fetch_add(1, Ordering::Relaxed),
            };
        });
        if rng.below(5) == 0 {
            // Abort some tasks outright, after a random number of scheduler turns.
            for _ in 0..rng.below(50) {
                tokio::task::yield_now().await;
            }
            task.abort();
        }
        tasks.push(task);
    }
    let mut aborted = 0;
    for task in tasks {
        match task.await {
            Ok(()) => {}
            Err(err) if err.is_cancelled() => aborted += 1,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    let (cut, finished) = (
        cut.load(Ordering::Relaxed),
        finished.load(Ordering::Relaxed),
    );
    eprintln!("storm: {finished} finished, {cut} cut by a timeout, {aborted} aborted");
    assert!(
        finished > 0 && cut + aborted > 0,
        "the storm must both cut and finish calls"
    );

    // A tail of writes cut mid-call, with only the one call below after them.
    let mut tail = Vec::new();
    for _ in 0..64 {
        let account = accounts[rng.below(USERS.len() as u64) as usize].clone();
        let (store, wait) = (store.clone(), Duration::from_micros(200 + rng.below(5_000)));
        tail.push(tokio::spawn(async move {
            // Two rows: a multi-row INSERT, whose statement is prepared on every call,
            // so COMMIT waits for it, and a cut can fall between the two.
            let new = [
                NewUserCredential::new("polygon", "PK", "s").nickname("Tail"),
                NewUserCredential::new("polygon", "PK2", "s").nickname("Tail"),
            ];
            let _ = tokio::time::timeout(wait, store.insert_credentials(&account, &new)).await;
        }));
    }
    for task in tail {
        task.await.unwrap();
    }
    // One call that finishes after the tail, so that the pool keeps at least one
    // connection to probe (on PostgreSQL each cut call closes its own), one whose
    // last call set a user context. It runs on one connection: it could close what
    // the tail left open there, and nowhere else.
    store.credentials(&accounts[0]).await.unwrap();

    let states = store.database().pooled_connection_states().await.unwrap();
    eprintln!("storm: {} pooled connections probed", states.len());
    assert!(!states.is_empty(), "no pooled connection was probed");
    for (state, (in_transaction, user)) in states.into_iter().enumerate() {
        assert!(
            !in_transaction,
            "pooled connection {state} is inside a transaction"
        );
        assert!(
            user.as_deref().unwrap_or_default().is_empty(),
            "pooled connection {state} carries app.current_user_id = {user:?}"
        );
    }
    for account in &accounts {
        let listed = store.credentials(account).await.unwrap();
        assert!(!listed.is_empty());
        assert!(listed
            .iter()
            .all(|c| c.user_id == account.user_id() && c.user_account_id == account.id()));
        assert!(store
            .credential_by_nickname(account, "Swing")
            .await
            .unwrap()
            .is_some());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Credentials whose user is not their account's user, seen from outside the crate.
fn rows_under_another_user(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT COUNT(*) AS n FROM user_credentials c JOIN user_accounts a \
         ON a.id = c.user_account_id WHERE a.user_id <> c.user_id",
    )
}

fn a_cancellation_storm_on_sqlite_leaves_every_connection_clean() {
    let db = TestDb::sqlite();
    runtime().block_on(async {
        let store = async_store(&db.url).await;
        cancellation_storm(store, 0x9e37_79b9_7f4a_7c15).await;
    });
    assert_eq!(rows_under_another_user(&db), 0);
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM pragma_integrity_check WHERE integrity_check <> 'ok'"),
        0
    );
}

#[cfg(feature = "mysql")]
fn a_cancellation_storm_on_mariadb_leaves_every_connection_clean() {
    let db = TestDb::mysql();
    runtime().block_on(async {
        let store = async_store(&db.url).await;
        cancellation_storm(store, 0x6a09_e667_f3bc_c908).await;
    });
    assert_eq!(rows_under_another_user(&db), 0);
}

fn a_cancellation_storm_on_postgres_leaves_every_connection_clean() {
    let db = TestDb::postgres();
    let service = RoleGuard::new(&db, "svc");
    Database::open(&db.url).unwrap().run_migrations().unwrap();
    let (admin, database) = db.pg_admin().unwrap();
    let (admin, database) = (admin.to_owned(), database.to_owned());
    db.execute(
        &common::SERVICE_ROLE
            .replace("{role}", &service.role)
            .replace("{database}", &database),
    );
    let runtime = runtime();
    runtime.block_on(async {
        let options = DatabaseOptions::default().max_connections(8);
        let pool = AsyncDatabase::open_with(&service.url(), &options)
            .await
            .unwrap();
        let store = AsyncCredentialStore::new(pool, test_keyring());
        cancellation_storm(store, 0x2545_f491_4f6c_dd1d).await;
    });
    drop(runtime);
    // Cut calls closed their connections; the server rolled them back. No session of
    // the test database is left inside a transaction.
    let mut open = i64::MAX;
    for _ in 0..50 {
        open = db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = '{database}' \
             AND state LIKE 'idle in transaction%'"
        ));
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open, 0, "sessions left inside a transaction");
    let _ = admin;
    assert_eq!(rows_under_another_user(&db), 0);
}
