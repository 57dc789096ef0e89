//! The security review's defects, each checked where a user meets it: database
//! passwords never reach an error, a log or the operator tool's output; a libpq
//! `key=value` string is not taken for a SQLite file name; over-long input is
//! refused before it is normalised; an account id under another user is answered
//! as an unknown one.

fn main() {
    common::trials::run(vec![
        trial!(no_part_of_a_password_reaches_errors_logs_or_the_tool),
        trial!(a_key_value_connection_string_is_refused_not_made_a_sqlite_file),
        trial!(over_long_names_are_refused_by_their_bytes_before_they_are_normalised),
        another_users_account_is_answered_as_an_unknown_one::tests(),
    ]);
}

mod common;

use credential_store::error::{Field, Rule, Unit};
use credential_store::{
    AccountScope, AsyncDatabase, Database, Error, NewUserAccount, NewUserCredential,
};
use std::process::Command;
use std::sync::{Arc, Mutex};

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
