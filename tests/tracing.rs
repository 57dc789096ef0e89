//! Every public call is a `tracing` span naming the operation, backend, account id
//! and row count; nothing captured at TRACE level holds a plaintext key or a
//! ciphertext, neither those stored nor those a rotation replaced.

mod common;

use common::{test_key, TestDb};
use credential_store::{
    AsyncCredentialStore, AsyncDatabase, CipherFormat, CredentialStore, CredentialUpdate, Keyring,
    Maintenance, NewUserAccount, NewUserCredential,
};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

fn main() {
    common::trials::run(vec![spans_name_every_call_and_hold_no_key_material::tests()]);
}

/// Everything every span and event said, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut text = self.0.lock().unwrap();
        let _ = write!(
            text,
            "\nspan {} {}:",
            id.into_u64(),
            attrs.metadata().name()
        );
        attrs.record(&mut Fields(&mut text));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut text = self.0.lock().unwrap();
        let _ = write!(text, "\nrecord {}:", id.into_u64());
        values.record(&mut Fields(&mut text));
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = self.0.lock().unwrap();
        let _ = write!(
            text,
            "\nevent {} {}:",
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut Fields(&mut text));
    }
}

const API_KEY: &str = "PKTRACEAPIKEY0123456789";
const SECRET_KEY: &str = "sk-trace-secret-0123456789abcdef";
const NEW_API_KEY: &str = "PKROTATEDAPIKEY987654321";

/// Every operation of both stores, successes and failures, on one database; returns
/// the ciphertexts that the rotation replaced.
async fn exercise(db: &TestDb) -> Vec<String> {
    let key = test_key();
    let keyring = || Keyring::from_fernet_keys([&key]).unwrap();
    let blocking = CredentialStore::new(db.database(), keyring());
    blocking.database().run_migrations().unwrap();
    let pool = AsyncDatabase::open(&db.url).await.unwrap();
    let store = AsyncCredentialStore::new(pool, keyring());

    let account = store
        .create_account(&NewUserAccount::new("auth0|trace", "Trace"))
        .await
        .unwrap();
    let new = NewUserCredential::new("alpaca_paper", API_KEY, SECRET_KEY).nickname("Swing");
    let first = store.insert_credential(&account, &new).await.unwrap();
    let second = blocking.insert_credential(&account, &new).unwrap();
    assert!(
        store
            .credential_by_nickname(&account, "Swing")
            .await
            .is_err(),
        "ambiguous"
    );
    assert!(store
        .insert_credential(
            &account,
            &NewUserCredential::new("Bad Type", API_KEY, SECRET_KEY)
        )
        .await
        .is_err());
    store.keys(&account, first.id).await.unwrap();
    blocking.keys(&account, second.id).unwrap();
    store
        .update_credential(
            &account,
            first.id,
            &CredentialUpdate::default()
                .nickname("Momentum")
                .keys(NEW_API_KEY, SECRET_KEY),
        )
        .await
        .unwrap();
    store.credentials(&account).await.unwrap();
    blocking
        .credentials_by_type(&account, "alpaca_paper")
        .unwrap();
    store
        .credentials_by_nickname(&account, "Momentum")
        .await
        .unwrap();
    store.credential(&account, first.id).await.unwrap();
    assert!(
        store
            .credential_by_type(&account, "alpaca_paper")
            .await
            .is_err(),
        "ambiguous"
    );
    let (found, _) = store
        .keys_by_nickname(&account, "Momentum")
        .await
        .unwrap()
        .expect("renamed above");
    assert_eq!(found.id, first.id);
    blocking.keys_by_nickname(&account, "Momentum").unwrap();
    store.account_by_user_id("auth0|trace").await.unwrap();
    store.account("auth0|trace", account.id()).await.unwrap();
    blocking.maintenance().backfill_nicknames(100).unwrap();
    blocking.maintenance().legacy_rows(100).unwrap();
    blocking.maintenance().normalize_legacy_rows(100).unwrap();
    // Sealed to Fernet: the rotation rewrites every row.
    let replaced = ciphertexts(db);
    let rotated = Maintenance::new(blocking.database().clone(), keyring())
        .with_format(CipherFormat::Fernet)
        .rotate_keys(100, &mut |_| {})
        .unwrap();
    assert_eq!(rotated.rewritten, 2, "{rotated:?}");
    blocking.maintenance().key_usage().unwrap();
    store.delete_credential(&account, second.id).await.unwrap();
    assert!(store.delete_credential(&account, second.id).await.is_err());
    replaced
}

/// The ciphertexts now stored, to look for in the capture.
fn ciphertexts(db: &TestDb) -> Vec<String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        api_key: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_key: String,
    }
    let sql = "SELECT api_key, secret_key FROM user_credentials";
    let rows: Vec<Row> = match db.backend {
        credential_store::Backend::Sqlite => {
            let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
            diesel::sql_query(sql).load(&mut conn).unwrap()
        }
        #[cfg(feature = "mysql")]
        credential_store::Backend::Mysql => diesel::sql_query(sql)
            .load(&mut common::mysql_raw(&db.url))
            .unwrap(),
        _ => {
            let mut conn = PgConnection::establish(&db.url).unwrap();
            diesel::sql_query(sql).load(&mut conn).unwrap()
        }
    };
    rows.into_iter()
        .flat_map(|r| [r.api_key, r.secret_key])
        .collect()
}

/// The capture of every span and event of this binary, installed once.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(capture.clone())
            .with(tracing_subscriber::filter::LevelFilter::TRACE);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        capture
    })
}

/// The backends take turns, so that what a test reads from the capture is its own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

on_both_backends!(spans_name_every_call_and_hold_no_key_material, |db| {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let capture = capture();
    let start = capture.0.lock().unwrap().len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let databases = [db];
    let (mut stored, mut replaced) = (Vec::new(), Vec::new());
    for db in &databases {
        replaced.extend(runtime.block_on(exercise(db)));
        stored.extend(ciphertexts(db));
    }
    let text = capture.0.lock().unwrap()[start..].to_owned();
    for operation in [
        "create_account",
        "account",
        "account_by_user_id",
        "insert_credentials",
        "credential",
        "credentials",
        "credentials_by_type",
        "credentials_by_nickname",
        "credential_by_nickname",
        "credential_by_type",
        "keys_by_nickname",
        "update_credential",
        "delete_credential",
        "keys",
        "backfill_nicknames",
        "rotate_keys",
        "key_usage",
        "legacy_rows",
        "normalize_legacy_rows",
    ] {
        assert!(
            text.contains(&format!("operation=\"{operation}\"")),
            "no span for {operation}:\n{text}"
        );
    }
    for db in &databases {
        assert!(
            text.contains(&format!("backend=\"{}\"", db.backend_name())),
            "{text}"
        );
    }
    assert!(text.contains(" rows=2"), "row counts are recorded:\n{text}");
    assert!(
        text.contains(" account_id="),
        "account ids are recorded:\n{text}"
    );
    assert!(
        text.contains("error="),
        "failures are events of their span:\n{text}"
    );
    for secret in [API_KEY, SECRET_KEY, NEW_API_KEY] {
        assert!(!text.contains(secret), "a plaintext key reached tracing");
    }
    assert!(!stored.is_empty());
    assert_eq!(replaced.len(), 4, "two credentials, two keys each");
    assert!(
        replaced.iter().all(|old| !stored.contains(old)),
        "the rotation replaced every ciphertext"
    );
    for ciphertext in stored.iter().chain(&replaced) {
        // Any 24-character piece of a ciphertext counts as a leak.
        let piece = &ciphertext[ciphertext.len() - 24..];
        assert!(!text.contains(piece), "a ciphertext reached tracing");
    }
});
