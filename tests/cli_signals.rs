//! The operator tool stops a batched run on SIGTERM (what `kill`, systemd and
//! Kubernetes send) as it does on Ctrl-C: after a committed batch, with the
//! interrupted summary and exit code 130; running it again finishes the job.

mod common;

use common::{test_key, TestDb};
use credential_store::{CipherFormat, CredentialStore, Keyring, NewUserAccount, NewUserCredential};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_credential-store");

/// Enough rows that a rotation in batches of 25 is still running when the signal
/// lands.
const ROWS: usize = 10_000;

#[test]
fn sigterm_stops_a_rotation_after_a_batch_and_a_rerun_finishes() {
    let db = TestDb::sqlite();
    let database = db.database();
    database.run_migrations().unwrap();
    let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
    let store = CredentialStore::new(database, Keyring::from_fernet_keys([&old]).unwrap())
        .with_format(CipherFormat::Fernet);
    let account = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let rows: Vec<NewUserCredential> = (0..ROWS)
        .map(|i| NewUserCredential::new("alpaca_paper", format!("PK-{i}"), "sk"))
        .collect();
    for chunk in rows.chunks(1000) {
        store.insert_credentials(&account, chunk).unwrap();
    }
    let both = format!("{new},{old}");
    let tool = || {
        let mut command = Command::new(BIN);
        command
            .env("DATABASE_URL", &db.url)
            .env("CREDENTIAL_STORE_KEYS", &both)
            .env_remove("CREDENTIAL_STORE_KEYS_FILE");
        command
    };
    let mut child = tool()
        .args(["rotate", "--batch-size", "25", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = stderr_lines.next().unwrap().unwrap();
    assert!(first.starts_with("rotate: "), "{first}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = stderr_lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    let stderr = rest.join("\n");
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: finishing the current batch"),
        "{stderr}"
    );
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["exit_code"], 130);
    assert_eq!(r["error"]["kind"], "interrupted");
    assert_eq!(r["result"]["outcome"], "stopped");
    let scanned = r["result"]["progress"]["scanned"].as_u64().unwrap();
    assert!(
        scanned > 0 && scanned < ROWS as u64 && scanned.is_multiple_of(25),
        "{r}"
    );
    // The stop came after a committed batch: exactly the rows looked at are rotated.
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key NOT LIKE 'gAAAA%'"),
        scanned as i64
    );

    let rerun = tool()
        .args(["rotate", "--batch-size", "1000", "--json"])
        .output()
        .unwrap();
    assert_eq!(rerun.status.code(), Some(0));
    let rerun: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(rerun["result"]["outcome"], "completed");
    assert_eq!(
        rerun["result"]["progress"]["rewritten"],
        ROWS as u64 - scanned
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key LIKE 'gAAAA%'"),
        0
    );
}
