//! `copy` through the operator tool: its URLs from the environment or files (never
//! only as arguments, which `ps` shows), and a resumed copy that compares every
//! column of every row it skips or writes.

fn main() {
    common::trials::run(vec![
        trial!(copy_takes_its_urls_from_the_environment_or_from_files),
        trial!(a_resumed_copy_compares_every_column_of_the_rows_it_skips),
        trial!(a_copy_to_postgres_reads_back_identical, [Postgres]),
        #[cfg(feature = "mysql")]
        trial!(a_copy_to_mariadb_reads_back_identical, [Mysql]),
    ]);
}

mod common;

use common::{test_key, TestDb};
use credential_store::{CredentialStore, Keyring, NewUserAccount, NewUserCredential};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_credential-store");

/// The tool with `keys`, and nothing inherited that could change what it does.
fn tool(keys: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("CREDENTIAL_STORE_KEYS", keys)
        .env_remove("DATABASE_URL")
        .env_remove("CREDENTIAL_STORE_KEYS_FILE")
        .env_remove("CREDENTIAL_STORE_COPY_FROM")
        .env_remove("CREDENTIAL_STORE_COPY_TO")
        .env_remove("CREDENTIAL_STORE_COPY_FROM_FILE")
        .env_remove("CREDENTIAL_STORE_COPY_TO_FILE");
    command
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A migrated SQLite source with two accounts' credentials, and its keys.
fn source() -> (TestDb, String) {
    let db = TestDb::sqlite();
    let key = test_key();
    let store = CredentialStore::new(db.database(), Keyring::from_fernet_keys([&key]).unwrap());
    store.database().run_migrations().unwrap();
    for user in ["auth0|ada", "auth0|eve"] {
        let account = store
            .create_account(&NewUserAccount::new(user, "Ada"))
            .unwrap();
        for i in 0..3 {
            store
                .insert_credential(
                    &account,
                    &NewUserCredential::new("alpaca_paper", format!("PK{i}"), "sk"),
                )
                .unwrap();
        }
    }
    (db, key)
}
fn copy_takes_its_urls_from_the_environment_or_from_files() {
    let (from, key) = source();
    // From the environment.
    let to = TestDb::sqlite();
    let out = tool(&key)
        .args(["copy", "--json"])
        .env("CREDENTIAL_STORE_COPY_FROM", &from.url)
        .env("CREDENTIAL_STORE_COPY_TO", &to.url)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["result"]["credentials_copied"], 6);
    // From files.
    let to = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (from_file, to_file) = (dir.path().join("from"), dir.path().join("to"));
    std::fs::write(&from_file, format!("{}\n", from.url)).unwrap();
    std::fs::write(&to_file, &to.url).unwrap();
    let out = tool(&key)
        .args(["copy", "--json", "--from-file"])
        .arg(&from_file)
        .arg("--to-file")
        .arg(&to_file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["result"]["credentials_copied"], 6);
    // `--help` shows the variables, never their values.
    let help = tool(&key)
        .args(["copy", "--help"])
        .env(
            "CREDENTIAL_STORE_COPY_FROM",
            "postgres://svc:Zq9Xw7Kv@db/app",
        )
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("CREDENTIAL_STORE_COPY_FROM"), "{help}");
    assert!(!help.contains("Zq9Xw7Kv"), "{help}");
    // A missing file is a usage error naming it.
    let out = tool(&key)
        .args(["copy", "--json", "--from-file"])
        .arg(dir.path().join("missing"))
        .arg("--to-file")
        .arg(&to_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["error"]["kind"], "usage");
}
fn a_resumed_copy_compares_every_column_of_the_rows_it_skips() {
    let (from, key) = source();
    let to = TestDb::sqlite();
    let copy = |resume: bool| {
        let mut command = tool(&key);
        command
            .args(["copy", "--json", "--batch-size", "2"])
            .env("CREDENTIAL_STORE_COPY_FROM", &from.url)
            .env("CREDENTIAL_STORE_COPY_TO", &to.url);
        if resume {
            command.arg("--resume");
        }
        command.output().unwrap()
    };
    let first = copy(false);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Unchanged, a resume skips everything and finds it identical.
    let again = copy(true);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(json(&again)["result"]["credentials_skipped"], 6);
    // On the source, after the first pass: one credential switched off, one given an
    // expiry, one renamed, one account renamed. Ciphertexts and ids stay.
    from.execute(
        "UPDATE user_credentials SET is_active = FALSE \
         WHERE id = (SELECT MIN(id) FROM user_credentials)",
    );
    from.execute(
        "UPDATE user_credentials SET expires_at = '2020-01-01T00:00:00.000000Z' \
         WHERE id = (SELECT MAX(id) FROM user_credentials)",
    );
    from.execute(
        "UPDATE user_credentials SET nickname = 'renamed' \
         WHERE id = (SELECT id FROM user_credentials ORDER BY id LIMIT 1 OFFSET 2)",
    );
    from.execute(
        "UPDATE user_accounts SET account_name = 'Renamed' \
         WHERE id = (SELECT MIN(id) FROM user_accounts)",
    );
    let resumed = copy(true);
    assert_eq!(
        resumed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let r = json(&resumed);
    assert_eq!(r["error"]["kind"], "copy_not_verified", "{r}");
    assert_eq!(
        r["result"]["mismatched"].as_array().unwrap().len(),
        3,
        "{r}"
    );
    assert_eq!(
        r["result"]["mismatched_accounts"].as_array().unwrap().len(),
        1,
        "{r}"
    );
}

/// A fresh copy from SQLite to each server backend is verified: no column reads
/// back differently there (times, flags, NULL nicknames and expiries).
fn fresh_copy_is_verified(to: TestDb) {
    let (from, key) = source();
    from.execute(
        "UPDATE user_credentials SET expires_at = '2031-05-06T07:08:09.123456Z', is_active = FALSE \
         WHERE id = (SELECT MIN(id) FROM user_credentials)",
    );
    let out = tool(&key)
        .args(["copy", "--json"])
        .env("CREDENTIAL_STORE_COPY_FROM", &from.url)
        .env("CREDENTIAL_STORE_COPY_TO", &to.url)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let resumed = tool(&key)
        .args(["copy", "--json", "--resume"])
        .env("CREDENTIAL_STORE_COPY_FROM", &from.url)
        .env("CREDENTIAL_STORE_COPY_TO", &to.url)
        .output()
        .unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stdout)
    );
}
fn a_copy_to_postgres_reads_back_identical() {
    {
        let to = TestDb::postgres();
        fresh_copy_is_verified(to);
    }
}

#[cfg(feature = "mysql")]
fn a_copy_to_mariadb_reads_back_identical() {
    {
        let to = TestDb::mysql();
        fresh_copy_is_verified(to);
    }
}
