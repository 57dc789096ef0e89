//! The `aws-kms` key provider against moto (`.ci/moto`), through the AWS SDK over
//! HTTP: first the provider alone (batches, encryption context, damaged and
//! foreign wrapped keys, an unreachable or dying KMS, any executor), then through
//! the store: data keys wrapped by KMS, unwrapped once per cache, a KMS that stops
//! failing only the accounts whose data key is not cached (and writing nothing),
//! and rotation from the keyring to KMS. The endpoint is
//! `CREDENTIAL_STORE_TEST_KMS_URL` (default `http://127.0.0.1:5000`); a test that
//! cannot reach it is ignored, or fails under `CREDENTIAL_STORE_REQUIRE_KMS=1`.

fn main() {
    use common::trials::{needing, Service};
    common::trials::run(vec![
        trial!(a_batch_wraps_and_unwraps_in_request_order, [Kms]),
        trial!(a_wrapped_key_does_not_unwrap_for_another_context, [Kms]),
        trial!(a_damaged_or_foreign_wrapped_key_is_unreadable, [Kms]),
        trial!(an_unknown_kms_key_is_a_provider_error, [Kms]),
        trial!(an_unreachable_kms_is_unavailable_within_the_timeout),
        trial!(a_kms_that_dies_mid_run_is_unavailable, [Kms]),
        trial!(
            works_from_a_plain_thread_and_inside_tokio_and_drops_inside_tokio,
            [Kms]
        ),
        trial!(a_dropped_call_is_abandoned_cleanly, [Kms]),
        trial!(debug_shows_no_credentials),
        trial!(a_bad_configuration_does_not_build),
        needing(
            &[Service::Kms],
            the_store_keeps_data_keys_wrapped_by_kms::tests(),
        ),
        needing(
            &[Service::Kms],
            a_kms_that_stops_fails_only_uncached_accounts_and_writes_nothing::tests(),
        ),
        needing(
            &[Service::Kms],
            rotation_rewraps_keyring_data_keys_with_kms::tests(),
        ),
        #[cfg(feature = "async")]
        needing(&[Service::Kms], async_store::tests()),
    ]);
}

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{kms_url, test_key, TestDb};
use credential_store::crypto::{KeyContext, ProviderFuture, UnwrapRequest, WrapRequest};
use credential_store::{
    AwsKms, CredentialStore, DataKey, Error, KeyProvider, Keyring, NewUserAccount,
    NewUserCredential,
};
use secrecy::ExposeSecret;
use std::future::Future;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::pin::pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};
use uuid::Uuid;

const REGION: &str = "us-east-1";

/// The blocking store's executor: polls on this thread, parks between wakes.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}

/// Whether a TCP connection to the URL's host and port succeeds.
fn reachable(url: &str) -> bool {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap();
    authority
        .to_socket_addrs()
        .map(|mut addrs| {
            addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
        })
        .unwrap_or(false)
}

/// A new symmetric KMS key on the KMS at `url`, made through the SDK.
fn create_key(url: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(REGION))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(url)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        let client = aws_sdk_kms::Client::from_conf(config);
        let output = client
            .create_key()
            .description("credential-store test")
            .send()
            .await
            .unwrap();
        output.key_metadata().unwrap().key_id().to_owned()
    })
}

fn provider(url: &str, key_id: &str, timeout: Duration) -> AwsKms {
    AwsKms::builder(key_id)
        .endpoint_url(url)
        .region(REGION)
        .credentials("testing", "testing")
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wrap_one(
    kms: &AwsKms,
    key: &DataKey,
    context: KeyContext<'_>,
) -> credential_store::Result<String> {
    block_on(kms.wrap(&[WrapRequest::new(key, context)])).map(|mut wrapped| wrapped.remove(0))
}

fn unwrap_one(
    kms: &AwsKms,
    wrapped: &str,
    context: KeyContext<'_>,
) -> credential_store::Result<DataKey> {
    block_on(kms.unwrap(&[UnwrapRequest::new(wrapped, kms.key_id(), context)]))
        .map(|mut keys| keys.remove(0))
}

#[track_caller]
fn assert_unreadable(result: credential_store::Result<DataKey>, account: Uuid, wrapped: &str) {
    match result {
        Err(
            ref err @ Error::DataKeyUnreadable {
                account_id,
                ref provider,
                ..
            },
        ) => {
            assert_eq!(account_id, account);
            assert_eq!(provider, "aws-kms");
            assert!(!err.to_string().contains(wrapped), "{err}");
            eprintln!("  as expected: {err}");
        }
        other => panic!("expected DataKeyUnreadable, got {other:?}"),
    }
}

/// `result` is [`Error::KeyProviderUnavailable`]: retryable, naming `aws-kms`.
#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(result: credential_store::Result<T>) {
    match result {
        Err(err @ Error::KeyProviderUnavailable { .. }) => {
            assert!(err.is_retryable(), "{err}");
            assert!(err.to_string().contains("aws-kms"), "{err}");
            eprintln!("  as expected: {err}");
        }
        other => panic!("expected KeyProviderUnavailable, got {other:?}"),
    }
}

fn a_batch_wraps_and_unwraps_in_request_order() {
    let url = kms_url();
    let key_id = create_key(&url);
    let kms = provider(&url, &key_id, Duration::from_secs(5));
    assert_eq!(kms.name(), "aws-kms");
    assert_eq!(kms.key_id(), key_id);

    for count in [3, 40] {
        let users: Vec<String> = (0..count).map(|i| format!("user-{i}")).collect();
        let contexts: Vec<KeyContext<'_>> = users
            .iter()
            .enumerate()
            .map(|(i, user)| KeyContext::new(Uuid::now_v7(), user, 1 + i as u32 % 3))
            .collect();
        let keys: Vec<DataKey> = (0..count).map(|_| DataKey::generate()).collect();
        let requests: Vec<WrapRequest<'_>> = keys
            .iter()
            .zip(&contexts)
            .map(|(key, context)| WrapRequest::new(key, *context))
            .collect();

        let wrapped = block_on(kms.wrap(&requests)).unwrap();
        assert_eq!(wrapped.len(), count);
        for text in &wrapped {
            let blob = BASE64.decode(text).unwrap();
            assert!(blob.len() > 32, "a ciphertext blob, not the key");
        }

        // Unwrapped in reverse order: each result is its own request's key.
        let unwraps: Vec<UnwrapRequest<'_>> = wrapped
            .iter()
            .zip(&contexts)
            .rev()
            .map(|(text, context)| UnwrapRequest::new(text, &key_id, *context))
            .collect();
        let unwrapped = block_on(kms.unwrap(&unwraps)).unwrap();
        assert_eq!(unwrapped.len(), count);
        for (got, want) in unwrapped.iter().zip(keys.iter().rev()) {
            assert_eq!(got.expose_bytes(), want.expose_bytes());
        }
    }
    assert!(block_on(kms.wrap(&[])).unwrap().is_empty());
    assert!(block_on(kms.unwrap(&[])).unwrap().is_empty());
}

fn a_wrapped_key_does_not_unwrap_for_another_context() {
    let url = kms_url();
    let kms = provider(&url, &create_key(&url), Duration::from_secs(5));
    let key = DataKey::generate();
    let account = Uuid::now_v7();
    let wrapped = wrap_one(&kms, &key, KeyContext::new(account, "alice", 1)).unwrap();
    assert_eq!(
        unwrap_one(&kms, &wrapped, KeyContext::new(account, "alice", 1))
            .unwrap()
            .expose_bytes(),
        key.expose_bytes()
    );

    let other_account = Uuid::now_v7();
    for (context, what) in [
        (
            KeyContext::new(other_account, "alice", 1),
            "another account",
        ),
        (KeyContext::new(account, "bob", 1), "another user"),
        (KeyContext::new(account, "alice", 2), "another version"),
    ] {
        eprintln!("{what}:");
        assert_unreadable(
            unwrap_one(&kms, &wrapped, context),
            context.account_id(),
            &wrapped,
        );
    }
}

fn a_damaged_or_foreign_wrapped_key_is_unreadable() {
    let url = kms_url();
    let kms = provider(&url, &create_key(&url), Duration::from_secs(5));
    let account = Uuid::now_v7();
    let context = KeyContext::new(account, "alice", 1);
    let wrapped = wrap_one(&kms, &DataKey::generate(), context).unwrap();
    let blob = BASE64.decode(&wrapped).unwrap();

    eprintln!("a flipped byte in the ciphertext's tail:");
    let mut damaged = blob.clone();
    *damaged.last_mut().unwrap() ^= 1;
    let damaged = BASE64.encode(damaged);
    assert_unreadable(unwrap_one(&kms, &damaged, context), account, &damaged);

    eprintln!("cut short:");
    let short = BASE64.encode(&blob[..blob.len() / 2]);
    assert_unreadable(unwrap_one(&kms, &short, context), account, &short);

    eprintln!("not base64:");
    assert_unreadable(
        unwrap_one(&kms, "not base64!", context),
        account,
        "not base64!",
    );

    eprintln!("wrapped by another KMS key, unwrapped naming this one:");
    let other = provider(&url, &create_key(&url), Duration::from_secs(5));
    let foreign = wrap_one(&other, &DataKey::generate(), context).unwrap();
    assert_unreadable(unwrap_one(&kms, &foreign, context), account, &foreign);

    // A batch fails as a whole, naming the account whose key did not unwrap.
    let good_account = Uuid::now_v7();
    let good_context = KeyContext::new(good_account, "carol", 1);
    let good = wrap_one(&kms, &DataKey::generate(), good_context).unwrap();
    let result = block_on(kms.unwrap(&[
        UnwrapRequest::new(&good, kms.key_id(), good_context),
        UnwrapRequest::new(&damaged, kms.key_id(), context),
    ]));
    assert!(
        matches!(result, Err(Error::DataKeyUnreadable { account_id, .. }) if account_id == account)
    );
}

fn an_unknown_kms_key_is_a_provider_error() {
    let url = kms_url();
    let kms = provider(&url, &Uuid::now_v7().to_string(), Duration::from_secs(5));
    let result = wrap_one(
        &kms,
        &DataKey::generate(),
        KeyContext::new(Uuid::now_v7(), "alice", 1),
    );
    match result {
        Err(err @ Error::KeyProvider { .. }) => {
            assert!(!err.is_retryable(), "{err}");
            eprintln!("  as expected: {err}");
        }
        other => panic!("expected KeyProvider, got {other:?}"),
    }
}

/// The contract: a call never waits much past the configured timeout. A refused
/// connection (nothing listens) and a black hole (a listener that never answers).
fn an_unreachable_kms_is_unavailable_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let margin = Duration::from_secs(2);
    let key = DataKey::generate();
    let context = KeyContext::new(Uuid::now_v7(), "alice", 1);

    let refused = format!("http://127.0.0.1:{}", closed_port());
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", black_hole.local_addr().unwrap());
    for (url, what) in [(refused, "connection refused"), (silent, "no answer")] {
        eprintln!("{what}:");
        let kms = provider(&url, "alias/credential-store", timeout);
        let started = Instant::now();
        assert_unavailable(wrap_one(&kms, &key, context));
        let elapsed = started.elapsed();
        eprintln!("  wrap failed after {elapsed:?}");
        assert!(elapsed < timeout + margin, "{what}: wrap took {elapsed:?}");

        let started = Instant::now();
        assert_unavailable(block_on(kms.unwrap(&[
            UnwrapRequest::new("AAAA", kms.key_id(), context),
            UnwrapRequest::new("AAAB", kms.key_id(), context),
        ])));
        let elapsed = started.elapsed();
        eprintln!("  a batch of two unwraps failed after {elapsed:?}");
        assert!(
            elapsed < timeout + margin,
            "{what}: unwrap took {elapsed:?}"
        );
    }
}

/// A moto of the test's own on a free port, started by `.ci/moto PORT` (which
/// runs it in the background and leaves its pid in `$MOTO_DIR/moto.pid`); killed
/// by [`stop`](Self::stop) or when dropped.
struct OwnMoto {
    url: String,
    dir: tempfile::TempDir,
}

impl OwnMoto {
    fn start() -> OwnMoto {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/moto");
        let output = Command::new("bash")
            .arg(&script)
            .arg(closed_port().to_string())
            .env("MOTO_DIR", dir.path())
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/moto");
        assert!(output.status.success(), ".ci/moto failed: {output:?}");
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(reachable(&url), "moto does not answer on {url}");
        OwnMoto { url, dir }
    }

    /// Kills it and waits until its port refuses connections.
    fn stop(&self) {
        let Ok(pid) = std::fs::read_to_string(self.dir.path().join("moto.pid")) else {
            return;
        };
        let _ = Command::new("kill").arg(pid.trim()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reachable(&self.url) {
            assert!(
                Instant::now() < deadline,
                "moto on {} did not stop",
                self.url
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn a_kms_that_dies_mid_run_is_unavailable() {
    let moto = OwnMoto::start();
    let kms = provider(&moto.url, &create_key(&moto.url), Duration::from_secs(3));
    let key = DataKey::generate();
    let context = KeyContext::new(Uuid::now_v7(), "alice", 1);
    let wrapped = wrap_one(&kms, &key, context).unwrap();
    assert_eq!(
        unwrap_one(&kms, &wrapped, context).unwrap().expose_bytes(),
        key.expose_bytes()
    );

    moto.stop();
    let started = Instant::now();
    assert_unavailable(unwrap_one(&kms, &wrapped, context));
    assert_unavailable(wrap_one(&kms, &key, context));
    eprintln!("  two calls in {:?}", started.elapsed());
}

/// The blocking store awaits on a parked thread, the async store on tokio; the
/// provider is dropped inside a runtime (as an async service shuts down).
fn works_from_a_plain_thread_and_inside_tokio_and_drops_inside_tokio() {
    let url = kms_url();
    let kms = Arc::new(provider(&url, &create_key(&url), Duration::from_secs(5)));
    let account = Uuid::now_v7();
    let key = DataKey::generate();

    // A plain thread, parking block_on.
    let wrapped = {
        let kms = kms.clone();
        let bytes = *key.expose_bytes();
        thread::spawn(move || {
            let key = DataKey::from_bytes(&bytes).unwrap();
            wrap_one(&kms, &key, KeyContext::new(account, "alice", 1)).unwrap()
        })
        .join()
        .unwrap()
    };

    // Inside a multi-thread runtime: awaited by a task and by block_on.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let task = {
        let (kms, wrapped) = (kms.clone(), wrapped.clone());
        multi.spawn(async move {
            let context = KeyContext::new(account, "alice", 1);
            let keys = kms
                .unwrap(&[UnwrapRequest::new(&wrapped, kms.key_id(), context)])
                .await
                .unwrap();
            *keys[0].expose_bytes()
        })
    };
    assert_eq!(&multi.block_on(task).unwrap(), key.expose_bytes());
    let keys = multi.block_on(async {
        let context = KeyContext::new(account, "alice", 1);
        kms.unwrap(&[UnwrapRequest::new(&wrapped, kms.key_id(), context)])
            .await
    });
    assert_eq!(keys.unwrap()[0].expose_bytes(), key.expose_bytes());

    // And a current-thread runtime.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = current.block_on(async {
        let context = KeyContext::new(account, "alice", 1);
        kms.unwrap(&[UnwrapRequest::new(&wrapped, kms.key_id(), context)])
            .await
    });
    assert_eq!(keys.unwrap()[0].expose_bytes(), key.expose_bytes());

    // Dropped inside each runtime, last reference: no panic.
    let Ok(kms) = Arc::try_unwrap(kms) else {
        panic!("one reference left")
    };
    multi.block_on(async move { drop(kms) });
    let other = provider(&url, "alias/x", Duration::from_secs(5));
    current.block_on(async move { drop(other) });
    let spawned = provider(&url, "alias/x", Duration::from_secs(5));
    multi
        .block_on(multi.spawn(async move { drop(spawned) }))
        .unwrap();

    // Built inside a runtime too.
    let built = multi.block_on(async { provider(&url, "alias/x", Duration::from_secs(5)) });
    drop(built);
}

/// A call whose future is dropped (a caller that gives up) leaves nothing running
/// that would panic later; the provider still works.
fn a_dropped_call_is_abandoned_cleanly() {
    let url = kms_url();
    let kms = provider(&url, &create_key(&url), Duration::from_secs(5));
    let key = DataKey::generate();
    let context = KeyContext::new(Uuid::now_v7(), "alice", 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let requests = [WrapRequest::new(&key, context)];
        let call = kms.wrap(&requests);
        // Polled once (spawned), then dropped.
        let _ = tokio::time::timeout(Duration::from_millis(1), call).await;
    });
    let wrapped = wrap_one(&kms, &key, context).unwrap();
    assert_eq!(
        unwrap_one(&kms, &wrapped, context).unwrap().expose_bytes(),
        key.expose_bytes()
    );
}

fn debug_shows_no_credentials() {
    let kms = AwsKms::builder("alias/credential-store")
        .endpoint_url("http://127.0.0.1:1")
        .region(REGION)
        .credentials("AKIAEXAMPLEKEYID", "wJalrXUtnFEMI-very-secret")
        .build()
        .unwrap();
    let shown = format!("{kms:?}");
    assert!(
        shown.contains("aws-kms") && shown.contains("alias/credential-store"),
        "{shown}"
    );
    assert!(shown.contains("http://127.0.0.1:1"), "{shown}");
    assert!(
        !shown.contains("very-secret") && !shown.contains("AKIAEXAMPLEKEYID"),
        "{shown}"
    );
    let builder = format!(
        "{:?}",
        AwsKms::builder("k").credentials("AKIAEXAMPLEKEYID", "wJalrXUtnFEMI-very-secret")
    );
    assert!(
        !builder.contains("very-secret") && !builder.contains("AKIAEXAMPLEKEYID"),
        "{builder}"
    );
}

fn a_bad_configuration_does_not_build() {
    assert!(matches!(
        AwsKms::builder("").region(REGION).build(),
        Err(Error::KeyProvider { .. })
    ));
    assert!(matches!(
        AwsKms::builder("x".repeat(256)).region(REGION).build(),
        Err(Error::KeyProvider { .. })
    ));
    // The region of a key ARN is enough; the type is at both of its paths.
    let kms: credential_store::crypto::AwsKms =
        AwsKms::builder("arn:aws:kms:eu-west-1:111122223333:key/1234")
            .credentials("a", "b")
            .build()
            .unwrap();
    assert!(format!("{kms:?}").contains("eu-west-1"));
}

// Through the store.

/// An [`AwsKms`] that counts the KMS requests made through it: one `Encrypt` per
/// wrapped data key, one `Decrypt` per unwrapped one.
#[derive(Debug)]
struct Counted {
    kms: AwsKms,
    encrypts: AtomicUsize,
    decrypts: AtomicUsize,
}

impl Counted {
    fn new(kms: AwsKms) -> Arc<Counted> {
        Arc::new(Counted {
            kms,
            encrypts: AtomicUsize::new(0),
            decrypts: AtomicUsize::new(0),
        })
    }

    /// (Encrypt requests, Decrypt requests).
    fn requests(&self) -> (usize, usize) {
        (
            self.encrypts.load(Ordering::SeqCst),
            self.decrypts.load(Ordering::SeqCst),
        )
    }
}

impl KeyProvider for Counted {
    fn name(&self) -> &str {
        self.kms.name()
    }

    fn key_id(&self) -> &str {
        self.kms.key_id()
    }

    fn wrap<'a>(&'a self, items: &'a [WrapRequest<'a>]) -> ProviderFuture<'a, Vec<String>> {
        self.encrypts.fetch_add(items.len(), Ordering::SeqCst);
        self.kms.wrap(items)
    }

    fn unwrap<'a>(&'a self, items: &'a [UnwrapRequest<'a>]) -> ProviderFuture<'a, Vec<DataKey>> {
        self.decrypts.fetch_add(items.len(), Ordering::SeqCst);
        self.kms.unwrap(items)
    }
}

/// A KMS key of its own on the test KMS, and a counted provider for it.
fn counted_kms() -> (Arc<Counted>, String) {
    let url = kms_url();
    let key_id = create_key(&url);
    (
        Counted::new(provider(&url, &key_id, Duration::from_secs(5))),
        key_id,
    )
}

/// A migrated store on `db` (the keyring of `key`) wrapping data keys with
/// `provider`, with a cache of its own (as another process has).
fn kms_store(db: &TestDb, key: &str, provider: Arc<dyn KeyProvider>) -> CredentialStore {
    keyring_store(db, key).with_key_provider(provider)
}

/// A migrated store on `db` with the keyring of `key` as its provider.
fn keyring_store(db: &TestDb, key: &str) -> CredentialStore {
    let database = db.database();
    database.run_migrations().expect("migrations");
    CredentialStore::new(database, Keyring::from_fernet_keys([key]).unwrap())
}

/// A credential's two ciphertexts as stored.
fn ciphertexts(db: &TestDb, id: Uuid) -> (String, String) {
    let column = |c: &str| {
        db.text(&format!(
            "SELECT {c} AS t FROM user_credentials WHERE id = '{id}'"
        ))
    };
    (column("api_key"), column("secret_key"))
}

on_both_backends!(the_store_keeps_data_keys_wrapped_by_kms, |db| {
    let key = test_key();
    let (kms, key_id) = counted_kms();
    let store = kms_store(db, &key, kms.clone());
    let ada = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
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
    // The account's first write made its data key: one Encrypt.
    assert_eq!(kms.requests(), (1, 0));
    assert_eq!(db.count("account_keys"), 1);
    assert_eq!(db.text("SELECT provider AS t FROM account_keys"), "aws-kms");
    assert_eq!(db.text("SELECT kek_id AS t FROM account_keys"), key_id);
    let wrapped = BASE64
        .decode(db.text("SELECT wrapped_key AS t FROM account_keys"))
        .expect("a KMS ciphertext blob in base64");
    assert!(wrapped.len() > 32, "a ciphertext blob, not the key");
    let (api_key, _) = ciphertexts(db, stored[0].id);
    assert!(api_key.starts_with("sealed:v3:1:"), "{api_key}");

    // Revealed from the cache: no KMS request.
    let keys = store.keys(&ada, stored[1].id).unwrap();
    assert_eq!(keys.api_key().expose_secret(), "PK2");
    let (found, keys) = store.keys_by_nickname(&ada, "Momentum").unwrap().unwrap();
    assert_eq!(found.id, stored[0].id);
    assert_eq!(keys.secret_key().expose_secret(), "s1");
    assert_eq!(kms.requests(), (1, 0));

    // Another process (a fresh cache): one Decrypt, then none.
    let other = kms_store(db, &key, kms.clone());
    for (credential, (api_key, secret_key)) in
        stored
            .iter()
            .zip([("PK1", "s1"), ("PK2", "s2"), ("PK3", "s3")])
    {
        let keys = other.keys(&ada, credential.id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), api_key);
        assert_eq!(keys.secret_key().expose_secret(), secret_key);
    }
    assert_eq!(kms.requests(), (1, 1));

    // The keyring alone holds no KMS key: Ada's data key does not unwrap.
    match keyring_store(db, &key).keys(&ada, stored[0].id) {
        Err(Error::DataKeyUnreadable {
            account_id,
            provider,
            ..
        }) => {
            assert_eq!(account_id, ada.id());
            assert_eq!(provider, "aws-kms");
        }
        other => panic!("expected DataKeyUnreadable, got {other:?}"),
    }
});

on_both_backends!(
    a_kms_that_stops_fails_only_uncached_accounts_and_writes_nothing,
    |db| {
        let timeout = Duration::from_secs(2);
        let margin = Duration::from_secs(3);
        let key = test_key();
        let moto = OwnMoto::start();
        let key_id = create_key(&moto.url);
        let kms = || -> Arc<dyn KeyProvider> { Arc::new(provider(&moto.url, &key_id, timeout)) };
        let store = kms_store(db, &key, kms());
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
        let bobs = kms_store(db, &key, kms())
            .insert_credential(&bob, &NewUserCredential::new("polygon", "PKB", "sb"))
            .unwrap();
        // Carol has no data key yet.
        let carol = store
            .create_account(&NewUserAccount::new("auth0|carol", "Carol"))
            .unwrap();

        moto.stop();
        // Ada's data key is cached: she keeps reading and writing.
        assert_eq!(
            store.keys(&ada, kept.id).unwrap().api_key().expose_secret(),
            "PK1"
        );
        store
            .insert_credential(&ada, &NewUserCredential::new("binance", "PK2", "s2"))
            .unwrap();
        let (credentials, data_keys) = (db.count("user_credentials"), db.count("account_keys"));
        assert_eq!((credentials, data_keys), (3, 2));

        // Bob's is not: a retryable error naming the provider, within the timeout.
        let started = Instant::now();
        assert_unavailable(store.keys(&bob, bobs.id));
        let elapsed = started.elapsed();
        eprintln!("  an uncached reveal failed after {elapsed:?}");
        assert!(elapsed < timeout + margin, "the reveal took {elapsed:?}");

        // Carol's first write cannot make her data key: it fails and writes nothing.
        let new = [
            NewUserCredential::new("alpaca_paper", "PKC", "sc"),
            NewUserCredential::new("alpaca_live", "PKD", "sd"),
        ];
        let started = Instant::now();
        assert_unavailable(store.insert_credentials(&carol, &new));
        let elapsed = started.elapsed();
        eprintln!("  a first insert failed after {elapsed:?}");
        assert!(elapsed < timeout + margin, "the insert took {elapsed:?}");
        assert_eq!(db.count("user_credentials"), credentials);
        assert_eq!(db.count("account_keys"), data_keys);
    }
);

on_both_backends!(rotation_rewraps_keyring_data_keys_with_kms, |db| {
    let key = test_key();
    // Data keys made under the default provider, the keyring.
    let store = keyring_store(db, &key);
    let mut credentials = Vec::new();
    for user in ["ada", "bob", "carol"] {
        let account = store
            .create_account(&NewUserAccount::new(&format!("auth0|{user}"), user))
            .unwrap();
        let api_keys = [format!("PK-{user}-1"), format!("PK-{user}-2")];
        let stored = store
            .insert_credentials(
                &account,
                &[
                    NewUserCredential::new("alpaca_paper", api_keys[0].as_str(), "s1"),
                    NewUserCredential::new("alpaca_live", api_keys[1].as_str(), "s2"),
                ],
            )
            .unwrap();
        for (credential, api_key) in stored.into_iter().zip(api_keys) {
            credentials.push((account.clone(), credential, api_key));
        }
    }
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM account_keys WHERE provider = 'keyring'"),
        3
    );
    let before: Vec<(String, String)> = credentials
        .iter()
        .map(|(_, c, _)| ciphertexts(db, c.id))
        .collect();

    let (kms, key_id) = counted_kms();
    let done = store
        .maintenance()
        .with_key_provider(kms.clone())
        .rotate_keys(100, &mut |_| {})
        .unwrap();
    assert_eq!(done.data_keys_rewrapped, 3, "{done:?}");
    assert_eq!(done.rewritten, 0, "{done:?}");
    assert_eq!(kms.requests(), (3, 0));
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM account_keys WHERE provider = 'aws-kms' AND kek_id = '{key_id}'"
        )),
        3
    );
    // The same data keys, re-wrapped: no credential changed.
    let after: Vec<(String, String)> = credentials
        .iter()
        .map(|(_, c, _)| ciphertexts(db, c.id))
        .collect();
    assert_eq!(after, before);

    // A KMS store on a fresh cache reads every credential: one Decrypt per account.
    let kms_only = kms_store(db, &key, kms.clone());
    for (account, credential, api_key) in &credentials {
        let keys = kms_only.keys(account, credential.id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), api_key);
    }
    assert_eq!(kms.requests(), (3, 3));

    // A second run has nothing to re-wrap.
    let again = kms_only
        .maintenance()
        .rotate_keys(100, &mut |_| {})
        .unwrap();
    assert_eq!((again.data_keys_rewrapped, again.rewritten), (0, 0));

    // Replacing the data keys: three new ones, one Encrypt each, every credential
    // re-encrypted under them; the old ones are kept, retired, still KMS-wrapped.
    let (encrypts, _) = kms.requests();
    let replaced = kms_only
        .maintenance()
        .replacing_data_keys(chrono::Utc::now())
        .rotate_keys(100, &mut |_| {})
        .unwrap();
    assert_eq!(
        (replaced.data_keys_replaced, replaced.rewritten),
        (3, 6),
        "{replaced:?}"
    );
    assert_eq!(kms.requests().0, encrypts + 3);
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM retired_account_keys WHERE provider = 'aws-kms' AND version = 1"),
        3
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key LIKE 'sealed:v3:2:%' AND secret_key LIKE 'sealed:v3:2:%'"),
        6
    );
    let fresh = kms_store(db, &key, kms.clone());
    for (account, credential, api_key) in &credentials {
        let keys = fresh.keys(account, credential.id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), api_key);
    }
    // Past the grace period, the retired keys go.
    let purged = kms_only
        .maintenance()
        .with_retired_key_grace(Duration::ZERO)
        .rotate_keys(100, &mut |_| {})
        .unwrap();
    assert_eq!(purged.retired_keys_deleted, 3, "{purged:?}");
    assert_eq!(db.count("retired_account_keys"), 0);
});

#[cfg(feature = "async")]
mod async_store {
    use crate::common::trials::{test_name, Service, Test};

    /// The async store's test on SQLite and PostgreSQL.
    pub fn tests() -> Vec<Test> {
        vec![
            Test::new(test_name(module_path!(), "sqlite"), sqlite),
            Test::new(test_name(module_path!(), "postgres"), postgres).needs(&[Service::Postgres]),
        ]
    }

    use super::*;
    use credential_store::{AsyncCredentialStore, AsyncDatabase, DataKeyCache};

    /// A thousand concurrent lookups of one cold account make one Decrypt.
    async fn body(db: &TestDb, kms: Arc<Counted>) {
        let key = test_key();
        let async_db = AsyncDatabase::open(&db.url).await.expect("open");
        async_db.run_migrations().await.expect("migrations");
        let cache = Arc::new(DataKeyCache::default());
        let store = AsyncCredentialStore::new(async_db, Keyring::from_fernet_keys([&key]).unwrap())
            .with_key_provider(kms.clone())
            .with_data_key_cache(Arc::clone(&cache));
        let ada = store
            .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
            .await
            .unwrap();
        let new = [
            NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Momentum"),
            NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing"),
        ];
        let stored = store.insert_credentials(&ada, &new).await.unwrap();
        assert_eq!(kms.requests(), (1, 0));

        cache.clear();
        let lookups: Vec<_> = (0..1000)
            .map(|i| {
                let (store, ada, id) = (store.clone(), ada.clone(), stored[i % 2].id);
                tokio::spawn(async move {
                    store
                        .keys(&ada, id)
                        .await
                        .map(|k| k.api_key().expose_secret().to_owned())
                })
            })
            .collect();
        for (i, lookup) in lookups.into_iter().enumerate() {
            let api_key = lookup.await.unwrap().unwrap();
            assert_eq!(api_key, if i % 2 == 0 { "PK1" } else { "PK2" });
        }
        assert_eq!(kms.requests(), (1, 1));
    }

    fn run(db: &TestDb) {
        // The key is made outside the runtime: `create_key` blocks on one of its own.
        let (kms, _) = counted_kms();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body(db, kms));
    }

    pub fn sqlite() {
        run(&TestDb::sqlite());
    }

    pub fn postgres() {
        run(&TestDb::postgres());
    }
}
