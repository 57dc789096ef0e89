//! Stores built `with_key_provider`: every seal and open goes through the provider,
//! one call per store call (an insert of many credentials included); a provider
//! whose futures wait works from the blocking store and the async store; a provider
//! that fails gives its error and writes nothing.

fn main() {
    common::trials::run(vec![
        every_seal_and_open_goes_through_the_provider_once_per_call::tests(),
        a_failing_provider_gives_its_error_and_writes_nothing::tests(),
        #[cfg(feature = "async")]
        async_store::tests(),
    ]);
}

mod common;

use common::{test_key, TestDb};
use credential_store::crypto::{OpenRequest, ProviderFuture, SealRequest};
use credential_store::{
    CipherFormat, CredentialStore, CredentialUpdate, Error, Field, KeyProvider, Keyring,
    NewUserAccount, NewUserCredential,
};
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A keyring behind a provider that counts its calls and requests, answers only
/// after a pause on another thread, and fails on demand.
#[derive(Debug)]
struct Kms {
    keyring: Keyring,
    seals: AtomicUsize,
    sealed: AtomicUsize,
    opens: AtomicUsize,
    opened: AtomicUsize,
    down: AtomicBool,
}

impl Kms {
    fn new(key: &str) -> Arc<Kms> {
        Arc::new(Kms {
            keyring: Keyring::from_fernet_keys([key]).unwrap(),
            seals: AtomicUsize::new(0),
            sealed: AtomicUsize::new(0),
            opens: AtomicUsize::new(0),
            opened: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        })
    }

    /// (seal calls, values sealed, open calls, values opened).
    fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.seals.load(Ordering::SeqCst),
            self.sealed.load(Ordering::SeqCst),
            self.opens.load(Ordering::SeqCst),
            self.opened.load(Ordering::SeqCst),
        )
    }

    fn unavailable(&self) -> Option<Error> {
        self.down
            .load(Ordering::SeqCst)
            .then(|| Error::NoKeyConfigured {
                variable: Some("TEST_KMS_KEY".into()),
            })
    }
}

impl KeyProvider for Kms {
    fn name(&self) -> &str {
        "test-kms"
    }

    fn seal<'a>(
        &'a self,
        format: CipherFormat,
        items: &'a [SealRequest<'a>],
    ) -> ProviderFuture<'a, Vec<String>> {
        self.seals.fetch_add(1, Ordering::SeqCst);
        self.sealed.fetch_add(items.len(), Ordering::SeqCst);
        Box::pin(Later::new(async move {
            if let Some(err) = self.unavailable() {
                return Err(err);
            }
            self.keyring.seal(format, items).await
        }))
    }

    fn open<'a>(&'a self, items: &'a [OpenRequest<'a>]) -> ProviderFuture<'a, Vec<SecretString>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.opened.fetch_add(items.len(), Ordering::SeqCst);
        Box::pin(Later::new(async move {
            if let Some(err) = self.unavailable() {
                return Err(err);
            }
            self.keyring.open(items).await
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

/// A migrated store on `db` with the keyring of `key`, sealing and opening
/// through `kms`.
fn store_with(db: &TestDb, key: &str, kms: &Arc<Kms>) -> CredentialStore {
    let database = db.database();
    database.run_migrations().expect("migrations");
    CredentialStore::new(database, Keyring::from_fernet_keys([key]).unwrap())
        .with_key_provider(Arc::clone(kms) as Arc<dyn KeyProvider>)
}

on_both_backends!(
    every_seal_and_open_goes_through_the_provider_once_per_call,
    |db| {
        let key = test_key();
        let kms = Kms::new(&key);
        let store = store_with(db, &key, &kms);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        assert_eq!(kms.counts(), (0, 0, 0, 0));

        // Three credentials, six keys: one call.
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
        assert_eq!(kms.counts(), (1, 6, 0, 0));
        let one = store
            .insert_credential(&ada, &NewUserCredential::new("binance", "PK4", "s4"))
            .unwrap();
        assert_eq!(kms.counts(), (2, 8, 0, 0));
        assert!(store.insert_credentials(&ada, &[]).unwrap().is_empty());
        assert_eq!(kms.counts(), (2, 8, 0, 0), "nothing to seal, no call");

        // Reads without keys never call it; a reveal opens both keys in one call.
        assert_eq!(store.credentials(&ada).unwrap().len(), 4);
        assert!(store
            .credential_by_nickname(&ada, "Swing")
            .unwrap()
            .is_some());
        assert_eq!(kms.counts(), (2, 8, 0, 0));
        let keys = store.keys(&ada, stored[1].id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), "PK2");
        assert_eq!(keys.secret_key().expose_secret(), "s2");
        let (found, keys) = store.keys_by_nickname(&ada, "Momentum").unwrap().unwrap();
        assert_eq!(found.id, stored[0].id);
        assert_eq!(keys.api_key().expose_secret(), "PK1");
        assert_eq!(kms.counts(), (2, 8, 2, 4));

        // An update seals only the keys it replaces, and nothing without new keys.
        let update = CredentialUpdate::default().nickname("Main");
        store.update_credential(&ada, one.id, &update).unwrap();
        assert_eq!(kms.counts(), (2, 8, 2, 4));
        let update = CredentialUpdate::default().secret_key("s4-new");
        store.update_credential(&ada, one.id, &update).unwrap();
        assert_eq!(kms.counts(), (3, 9, 2, 4));

        // What went through the provider is what the keyring alone reads.
        let plain = CredentialStore::new(
            store.database().clone(),
            Keyring::from_fernet_keys([&key]).unwrap(),
        );
        let keys = plain.keys(&ada, one.id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), "PK4");
        assert_eq!(keys.secret_key().expose_secret(), "s4-new");
        assert_eq!(
            store.keyring().primary_key_id(),
            plain.keyring().primary_key_id()
        );
    }
);

on_both_backends!(
    a_failing_provider_gives_its_error_and_writes_nothing,
    |db| {
        let key = test_key();
        let kms = Kms::new(&key);
        let store = store_with(db, &key, &kms);
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .unwrap();
        let kept = store
            .insert_credential(&ada, &NewUserCredential::new("alpaca_paper", "PK1", "s1"))
            .unwrap();

        kms.down.store(true, Ordering::SeqCst);
        let refused = |result: Result<_, Error>| {
            matches!(
                result,
                Err(Error::NoKeyConfigured { variable: Some(ref v) }) if v == "TEST_KMS_KEY"
            )
        };
        let new = [
            NewUserCredential::new("alpaca_paper", "PK2", "s2"),
            NewUserCredential::new("alpaca_live", "PK3", "s3"),
        ];
        assert!(refused(store.insert_credentials(&ada, &new).map(drop)));
        assert!(refused(
            store
                .insert_credential(&ada, &NewUserCredential::new("binance", "PK4", "s4"))
                .map(drop)
        ));
        assert!(refused(
            store
                .update_credential(
                    &ada,
                    kept.id,
                    &CredentialUpdate::default().keys("PK-NEW", "s-new")
                )
                .map(drop)
        ));
        assert!(refused(store.keys(&ada, kept.id).map(drop)));
        assert!(refused(
            store.keys_by_nickname(&ada, "alpaca_paper").map(drop)
        ));
        // Validation comes first: an invalid input is refused before the provider.
        let calls = kms.counts();
        assert!(matches!(
            store.insert_credential(&ada, &NewUserCredential::new("Bad Type", "PK", "s")),
            Err(Error::Invalid {
                field: Field::CredentialType,
                ..
            })
        ));
        assert_eq!(kms.counts(), calls);

        // Nothing was written or changed.
        assert_eq!(db.count("user_credentials"), 1);
        kms.down.store(false, Ordering::SeqCst);
        let keys = store.keys(&ada, kept.id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), "PK1");
        assert_eq!(keys.secret_key().expose_secret(), "s1");
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
    use credential_store::{AsyncCredentialStore, AsyncDatabase};

    async fn body(db: &TestDb) {
        let key = test_key();
        let kms = Kms::new(&key);
        let async_db = AsyncDatabase::open(&db.url).await.expect("open");
        async_db.run_migrations().await.expect("migrations");
        let store = AsyncCredentialStore::new(async_db, Keyring::from_fernet_keys([&key]).unwrap())
            .with_key_provider(Arc::clone(&kms) as Arc<dyn KeyProvider>);
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
        assert_eq!(kms.counts(), (1, 4, 0, 0));
        let keys = store.keys(&ada, stored[1].id).await.unwrap();
        assert_eq!(keys.api_key().expose_secret(), "PK2");
        assert_eq!(kms.counts(), (1, 4, 1, 2));

        kms.down.store(true, Ordering::SeqCst);
        let more = NewUserCredential::new("alpaca_live", "PK3", "s3");
        assert!(matches!(
            store.insert_credential(&ada, &more).await,
            Err(Error::NoKeyConfigured { .. })
        ));
        assert!(matches!(
            store.keys(&ada, stored[0].id).await,
            Err(Error::NoKeyConfigured { .. })
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
        {
            let db = TestDb::postgres();
            run(&db);
        }
    }

    #[cfg(feature = "mysql")]
    pub fn mysql() {
        {
            let db = TestDb::mysql();
            run(&db);
        }
    }
}
