//! Envelope encryption through a key provider: each account's data key is wrapped
//! once (on its first write) and unwrapped at most once per process while the
//! cache holds it; credentials are sealed v3 under it; a provider that cannot be
//! reached fails only the accounts whose data key is not cached, with a
//! retryable error, and writes nothing; deleting an account shreds its data key.

fn main() {
    common::trials::run(vec![
        data_keys_are_wrapped_once_and_unwrapped_once_per_cache::tests(),
        an_unavailable_provider_fails_only_uncached_accounts_and_writes_nothing::tests(),
        a_deleted_accounts_rows_open_with_no_key_the_store_holds::tests(),
        the_minimum_format_refuses_older_ciphertexts_pasted_into_rows::tests(),
        #[cfg(feature = "async")]
        async_store::tests(),
    ]);
}

mod common;

use common::{test_key, TestDb};
use credential_store::crypto::{ProviderFuture, UnwrapRequest, WrapRequest};
use credential_store::{
    CipherFormat, CredentialStore, CredentialUpdate, DataKey, Error, Field, FormatVersion,
    KeyProvider, Keyring, NewUserAccount, NewUserCredential,
};
use secrecy::ExposeSecret;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A key service in miniature: a keyring of its own (not the store's) holds the
/// KEK; it counts its calls, answers only after a pause on another thread, and
/// can be switched off.
#[derive(Debug)]
struct Kms {
    kek: Keyring,
    wraps: AtomicUsize,
    unwraps: AtomicUsize,
    down: AtomicBool,
}

impl Kms {
    fn new() -> Arc<Kms> {
        Arc::new(Kms {
            kek: Keyring::from_fernet_keys([format!("kek-1:{}", test_key())]).unwrap(),
            wraps: AtomicUsize::new(0),
            unwraps: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        })
    }

    /// (wrap calls, unwrap calls).
    fn calls(&self) -> (usize, usize) {
        (
            self.wraps.load(Ordering::SeqCst),
            self.unwraps.load(Ordering::SeqCst),
        )
    }

    fn unavailable(&self) -> Option<Error> {
        self.down
            .load(Ordering::SeqCst)
            .then(|| Error::KeyProviderUnavailable {
                provider: "test-kms".into(),
                reason: "connection refused".into(),
            })
    }
}

impl KeyProvider for Kms {
    fn name(&self) -> &str {
        "test-kms"
    }

    fn key_id(&self) -> &str {
        "kek-1"
    }

    fn wrap<'a>(&'a self, items: &'a [WrapRequest<'a>]) -> ProviderFuture<'a, Vec<String>> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        Box::pin(Later::new(async move {
            if let Some(err) = self.unavailable() {
                return Err(err);
            }
            self.kek.wrap(items).await
        }))
    }

    fn unwrap<'a>(&'a self, items: &'a [UnwrapRequest<'a>]) -> ProviderFuture<'a, Vec<DataKey>> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        Box::pin(Later::new(async move {
            if let Some(err) = self.unavailable() {
                return Err(err);
            }
            // The keyring's unwrap names itself; this provider is "test-kms".
            self.kek.unwrap(items).await.map_err(|err| match err {
                Error::DataKeyUnreadable {
                    account_id, reason, ..
                } => Error::DataKeyUnreadable {
                    account_id,
                    provider: "test-kms".into(),
                    reason,
                },
                other => other,
            })
        }))
    }
}

/// `inner`, run only after a pause: pending at first, woken from another thread,
/// as a reply from the network would be.
struct Later<F> {
    inner: Pin<Box<F>>,
    replied: Option<Arc<AtomicBool>>,
}

impl<F> Later<F> {
    fn new(inner: F) -> Self {
        Later {
            inner: Box::pin(inner),
            replied: None,
        }
    }
}

impl<F: Future> Future for Later<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        match &self.replied {
            None => {
                let replied = Arc::new(AtomicBool::new(false));
                let (flag, waker) = (Arc::clone(&replied), context.waker().clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(2));
                    flag.store(true, Ordering::SeqCst);
                    waker.wake();
                });
                self.replied = Some(replied);
                Poll::Pending
            }
            Some(replied) if !replied.load(Ordering::SeqCst) => Poll::Pending,
            Some(_) => self.inner.as_mut().poll(context),
        }
    }
}

/// A migrated store on `db` (the keyring of `key`), wrapping data keys with `kms`,
/// with a cache of its own.
fn store_with(db: &TestDb, key: &str, kms: &Arc<Kms>) -> CredentialStore {
    let database = db.database();
    database.run_migrations().expect("migrations");
    CredentialStore::new(database, Keyring::from_fernet_keys([key]).unwrap())
        .with_key_provider(Arc::clone(kms) as Arc<dyn KeyProvider>)
}

/// A credential's two ciphertexts as stored.
fn ciphertexts(db: &TestDb, id: uuid::Uuid) -> (String, String) {
    let column = |c: &str| {
        db.text(&format!(
            "SELECT {c} AS t FROM user_credentials WHERE id = '{id}'"
        ))
    };
    (column("api_key"), column("secret_key"))
}

on_both_backends!(
    data_keys_are_wrapped_once_and_unwrapped_once_per_cache,
    |db| {
        let key = test_key();
        let kms = Kms::new();
        let store = store_with(db, &key, &kms);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        assert_eq!(kms.calls(), (0, 0));

        // The account's first write makes its data key: one wrap, whatever the count.
        let stored = store
            .insert_credentials(
                &ada,
                &[
                    NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Momentum"),
                    NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing"),
                    NewUserCredential::new("alpaca_live", "PK3", "s3"),
                ],
            )
            .unwrap();
        assert_eq!(kms.calls(), (1, 0));
        assert_eq!(db.count("account_keys"), 1);
        assert_eq!(
            db.text("SELECT provider AS t FROM account_keys"),
            "test-kms"
        );
        assert_eq!(db.text("SELECT kek_id AS t FROM account_keys"), "kek-1");
        let (api_key, secret_key) = ciphertexts(db, stored[0].id);
        assert!(api_key.starts_with("sealed:v3:1:"), "{api_key}");
        assert!(secret_key.starts_with("sealed:v3:1:"));

        // Cached from then on: more writes, reveals and updates call nothing.
        let one = store
            .insert_credential(&ada, &NewUserCredential::new("binance", "PK4", "s4"))
            .unwrap();
        let keys = store.keys(&ada, stored[1].id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), "PK2");
        let (found, keys) = store.keys_by_nickname(&ada, "Momentum").unwrap().unwrap();
        assert_eq!(found.id, stored[0].id);
        assert_eq!(keys.secret_key().expose_secret(), "s1");
        let update = CredentialUpdate::default().secret_key("s4-new");
        store.update_credential(&ada, one.id, &update).unwrap();
        assert_eq!(kms.calls(), (1, 0));
        assert_eq!(db.count("account_keys"), 1);

        // Another process (a cache of its own): one unwrap, then none.
        let other = store_with(db, &key, &kms);
        for credential in &stored {
            other.keys(&ada, credential.id).unwrap();
        }
        let keys = other.keys(&ada, one.id).unwrap();
        assert_eq!(keys.secret_key().expose_secret(), "s4-new");
        assert_eq!(kms.calls(), (1, 1));

        // The keyring alone holds no KEK of this provider: nothing opens.
        let keyring_only = CredentialStore::new(
            store.database().clone(),
            Keyring::from_fernet_keys([&key]).unwrap(),
        );
        match keyring_only.keys(&ada, one.id) {
            Err(Error::DataKeyUnreadable {
                account_id,
                provider,
                ..
            }) => {
                assert_eq!(account_id, ada.id());
                assert_eq!(provider, "test-kms");
            }
            other => panic!("expected DataKeyUnreadable, got {other:?}"),
        }
    }
);

on_both_backends!(
    an_unavailable_provider_fails_only_uncached_accounts_and_writes_nothing,
    |db| {
        let key = test_key();
        let kms = Kms::new();
        let store = store_with(db, &key, &kms);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        let kept = store
            .insert_credential(&ada, &NewUserCredential::new("alpaca_paper", "PK1", "s1"))
            .unwrap();
        // Bob's data key was made by another process: not in this store's cache.
        let bob = store
            .create_account(&NewUserAccount::new("auth0|bob", "Bob"))
            .unwrap();
        let bobs = store_with(db, &key, &kms)
            .insert_credential(&bob, &NewUserCredential::new("polygon", "PKB", "sb"))
            .unwrap();
        let carol = store
            .create_account(&NewUserAccount::new("auth0|carol", "Carol"))
            .unwrap();

        kms.down.store(true, Ordering::SeqCst);
        // Ada's data key is cached: she keeps reading and writing.
        assert_eq!(
            store.keys(&ada, kept.id).unwrap().api_key().expose_secret(),
            "PK1"
        );
        store
            .insert_credential(&ada, &NewUserCredential::new("binance", "PK2", "s2"))
            .unwrap();
        // Bob's is not: a retryable error naming the provider, for reads and writes.
        let unavailable = |result: Result<(), Error>| match result {
            Err(err @ Error::KeyProviderUnavailable { .. }) => {
                assert!(err.is_retryable());
                assert!(err.to_string().contains("test-kms"), "{err}");
            }
            other => panic!("expected KeyProviderUnavailable, got {other:?}"),
        };
        unavailable(store.keys(&bob, bobs.id).map(drop));
        unavailable(store.keys_by_nickname(&bob, "polygon").map(drop));
        unavailable(
            store
                .update_credential(&bob, bobs.id, &CredentialUpdate::default().keys("N", "n"))
                .map(drop),
        );
        // Carol has no data key yet: her first write cannot make one.
        let new = [
            NewUserCredential::new("alpaca_paper", "PKC", "sc"),
            NewUserCredential::new("alpaca_live", "PKD", "sd"),
        ];
        unavailable(store.insert_credentials(&carol, &new).map(drop));
        // Nothing was written: Ada's one insert, no data key for Carol, Bob unchanged.
        assert_eq!(db.count("user_credentials"), 3);
        assert_eq!(db.count("account_keys"), 2);
        // Validation comes first: an invalid input never reaches the provider.
        let calls = kms.calls();
        assert!(matches!(
            store.insert_credential(&carol, &NewUserCredential::new("Bad Type", "PK", "s")),
            Err(Error::Invalid {
                field: Field::CredentialType,
                ..
            })
        ));
        assert_eq!(kms.calls(), calls);

        kms.down.store(false, Ordering::SeqCst);
        let keys = store.keys(&bob, bobs.id).unwrap();
        assert_eq!(keys.secret_key().expose_secret(), "sb");
        store.insert_credentials(&carol, &new).unwrap();
        assert_eq!(db.count("account_keys"), 3);
    }
);

on_both_backends!(
    a_deleted_accounts_rows_open_with_no_key_the_store_holds,
    |db| {
        let key = test_key();
        let kms = Kms::new();
        let store = store_with(db, &key, &kms);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        let bob = store
            .create_account(&NewUserAccount::new("auth0|bob", "Bob"))
            .unwrap();
        let shredded = store
            .insert_credential(&ada, &NewUserCredential::new("alpaca_live", "PK1", "s1"))
            .unwrap();
        store
            .insert_credential(&bob, &NewUserCredential::new("alpaca_live", "PKB", "sb"))
            .unwrap();
        assert_eq!(store.data_key_cache().len(), 2);
        // A copy of Ada's credential, as a backup or a dump holds it.
        let (api_key, secret_key) = ciphertexts(db, shredded.id);

        store.delete_account(&ada).unwrap();
        assert_eq!(db.count("user_accounts"), 1);
        assert_eq!(db.count("user_credentials"), 1);
        assert_eq!(db.count("account_keys"), 1, "Ada's data key went with her");
        assert_eq!(store.data_key_cache().len(), 1, "and left the cache");
        assert!(matches!(
            store.delete_account(&ada),
            Err(Error::UnknownAccount { account_id }) if account_id == ada.id()
        ));

        // Someone with write access restores Ada's rows from the copy.
        db.execute(&format!(
        "INSERT INTO user_accounts (id, user_id, account_name) VALUES ('{}', 'auth0|ada', 'Ada')",
        ada.id()
    ));
        db.execute(&format!(
        "INSERT INTO user_credentials (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key) \
         VALUES ('{}', '{}', 'auth0|ada', 'alpaca_live', 'alpaca_live', '{api_key}', '{secret_key}')",
        shredded.id,
        ada.id()
    ));
        // No data key: nothing opens, in this store or a fresh one.
        let fresh = store_with(db, &key, &kms);
        for store in [&store, &fresh] {
            assert!(matches!(
                store.keys(&ada, shredded.id),
                Err(Error::Decryption { credential_id, field: Field::ApiKey }) if credential_id == shredded.id
            ));
        }
        // Every data key the store can still reach (Bob's), pasted under Ada: its
        // wrapping is bound to Bob's account, so it does not unwrap for Ada.
        let column = |c: &str| db.text(&format!("SELECT {c} AS t FROM account_keys"));
        db.execute(&format!(
        "INSERT INTO account_keys (account_id, user_id, version, provider, kek_id, wrapped_key) \
         VALUES ('{}', 'auth0|ada', 1, '{}', '{}', '{}')",
        ada.id(),
        column("provider"),
        column("kek_id"),
        column("wrapped_key"),
    ));
        for store in [&store, &fresh] {
            assert!(matches!(
                store.keys(&ada, shredded.id),
                Err(Error::DataKeyUnreadable { account_id, .. }) if account_id == ada.id()
            ));
        }
        // And the keyring alone reads no sealed-v3 value.
        let keyring_only = CredentialStore::new(
            store.database().clone(),
            Keyring::from_fernet_keys([&key]).unwrap(),
        );
        assert!(keyring_only.keys(&ada, shredded.id).is_err());
    }
);

on_both_backends!(
    the_minimum_format_refuses_older_ciphertexts_pasted_into_rows,
    |db| {
        let key = test_key();
        let keyring = Arc::new(Keyring::from_fernet_keys([&key]).unwrap());
        let database = db.database();
        database.run_migrations().unwrap();
        let fernet_store = CredentialStore::new(database.clone(), Arc::clone(&keyring))
            .with_format(CipherFormat::Fernet);
        let ada = fernet_store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        let old = fernet_store
            .insert_credential(
                &ada,
                &NewUserCredential::new("alpaca_live", "PK-OLD", "s-old"),
            )
            .unwrap();
        let (old_api_key, old_secret_key) = ciphertexts(db, old.id);
        assert_eq!(FormatVersion::of(&old_api_key), Some(FormatVersion::Fernet));

        // The policy needs every row in v3 first: rotate converts them.
        let store = CredentialStore::new(database.clone(), Arc::clone(&keyring));
        let done = store.maintenance().rotate_keys(100, &mut |_| {}).unwrap();
        assert_eq!(done.rewritten, 1);
        let (api_key, _) = ciphertexts(db, old.id);
        assert_eq!(FormatVersion::of(&api_key), Some(FormatVersion::SealedV3));
        let strict = store.clone().with_minimum_format(FormatVersion::SealedV3);
        assert_eq!(strict.minimum_format(), FormatVersion::SealedV3);
        assert_eq!(
            strict.keys(&ada, old.id).unwrap().api_key().expose_secret(),
            "PK-OLD"
        );
        let report = strict
            .maintenance()
            .verify(100, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        assert!(report.all_readable());
        assert_eq!(report.formats.get("sealed-v3"), Some(&2));

        // The pre-upgrade Fernet token, pasted back (it is bound to nothing): the
        // default store opens it, the strict one refuses it, naming the field.
        db.execute(&format!(
            "UPDATE user_credentials SET api_key = '{old_api_key}', secret_key = '{old_secret_key}' WHERE id = '{}'",
            old.id
        ));
        assert_eq!(
            store.keys(&ada, old.id).unwrap().api_key().expose_secret(),
            "PK-OLD"
        );
        match strict.keys(&ada, old.id) {
            Err(Error::FormatRefused {
                credential_id,
                field: Field::ApiKey,
                format: FormatVersion::Fernet,
                minimum: FormatVersion::SealedV3,
            }) => assert_eq!(credential_id, old.id),
            other => panic!("expected FormatRefused, got {other:?}"),
        }
        assert!(matches!(
            strict.keys_by_nickname(&ada, "alpaca_live"),
            Err(Error::FormatRefused { .. })
        ));
        let report = strict
            .maintenance()
            .verify(100, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(report.unreadable.len(), 2);
        assert!(report
            .unreadable
            .iter()
            .all(|u| u.reason == "format_refused"));
        assert_eq!(report.formats.get("fernet"), Some(&2));
        // A strict store refuses to write Fernet as well.
        assert!(matches!(
            strict
                .clone()
                .with_format(CipherFormat::Fernet)
                .insert_credential(&ada, &NewUserCredential::new("polygon", "PK", "s")),
            Err(Error::FormatRefused { .. })
        ));
    }
);

#[cfg(feature = "async")]
mod async_store {
    use crate::common::trials::{test_name, Service, Test};

    /// The async store's test on each backend.
    pub fn tests() -> Vec<Test> {
        vec![
            Test::new(test_name(module_path!(), "sqlite"), sqlite),
            Test::new(test_name(module_path!(), "postgres"), postgres).needs(&[Service::Postgres]),
            #[cfg(feature = "mysql")]
            Test::new(test_name(module_path!(), "mysql"), mysql).needs(&[Service::Mysql]),
        ]
    }

    use super::*;
    use credential_store::{AsyncCredentialStore, AsyncDatabase, DataKeyCache};

    /// A thousand concurrent cold lookups of one account make one unwrap; the
    /// blocking and async stores share one cache; an unavailable provider fails
    /// the uncached account only.
    async fn body(db: &TestDb) {
        let key = test_key();
        let kms = Kms::new();
        let async_db = AsyncDatabase::open(&db.url).await.expect("open");
        async_db.run_migrations().await.expect("migrations");
        let cache = Arc::new(DataKeyCache::default());
        let store = AsyncCredentialStore::new(async_db, Keyring::from_fernet_keys([&key]).unwrap())
            .with_key_provider(Arc::clone(&kms) as Arc<dyn KeyProvider>)
            .with_data_key_cache(Arc::clone(&cache));
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .await
            .unwrap();
        let new = [
            NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Momentum"),
            NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing"),
        ];
        // Awaited on the runtime from another task: the futures are Send.
        let stored = tokio::spawn({
            let (store, ada) = (store.clone(), ada.clone());
            async move { store.insert_credentials(&ada, &new).await }
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(kms.calls(), (1, 0));

        // The blocking store of the same process, on the same cache: no unwrap.
        let blocking = store_with(db, &key, &kms).with_data_key_cache(Arc::clone(&cache));
        let keys = tokio::task::spawn_blocking({
            let (ada, id) = (ada.clone(), stored[1].id);
            move || {
                blocking
                    .keys(&ada, id)
                    .map(|k| k.api_key().expose_secret().to_owned())
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(keys, "PK2");
        assert_eq!(kms.calls(), (1, 0));

        // Cold: a thousand concurrent lookups, one unwrap.
        cache.clear();
        let lookups: Vec<_> = (0..1000)
            .map(|i| {
                let (store, ada, id) = (store.clone(), ada.clone(), stored[i % 2].id);
                tokio::spawn(async move { store.keys(&ada, id).await.map(drop) })
            })
            .collect();
        for lookup in lookups {
            lookup.await.unwrap().unwrap();
        }
        assert_eq!(kms.calls(), (1, 1));

        kms.down.store(true, Ordering::SeqCst);
        // Cached: still served. Uncached: retryable, and nothing written.
        store.keys(&ada, stored[0].id).await.unwrap();
        cache.clear();
        assert!(matches!(
            store.keys(&ada, stored[0].id).await,
            Err(Error::KeyProviderUnavailable { .. })
        ));
        let more = NewUserCredential::new("alpaca_live", "PK3", "s3");
        assert!(matches!(
            store.insert_credential(&ada, &more).await,
            Err(Error::KeyProviderUnavailable { .. })
        ));
        assert_eq!(db.count("user_credentials"), 2);
    }

    fn run(db: &TestDb) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body(db));
    }
    pub fn sqlite() {
        run(&TestDb::sqlite());
    }
    pub fn postgres() {
        run(&TestDb::postgres());
    }

    #[cfg(feature = "mysql")]
    pub fn mysql() {
        run(&TestDb::mysql());
    }
}
