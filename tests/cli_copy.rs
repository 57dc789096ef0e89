//! `copy` through the operator tool: its URLs from the environment or files (never
//! only as arguments, which `ps` shows), and a resumed copy that compares every
//! column of every row it skips or writes.

mod common;

use common::{test_key, TestDb};
use credential_store::{
    CredentialRepository, CredentialStore, Keyring, NewUserAccount, NewUserCredential,
};
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
            .create_account(&NewUserAccount {
                user_id: user,
                account_name: "Ada",
            })
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

#[test]
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
