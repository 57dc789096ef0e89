//! The operator tool stops a batched run on SIGTERM (what `kill`, systemd and
//! Kubernetes send) as it does on Ctrl-C: after a committed batch, with the
//! interrupted summary and exit code 130; running it again finishes the job. A
//! second signal exits at once, rolling the batch in flight back; backfill, verify,
//! copy and a data-key rotation stop the same way and resume.

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

/// `rows` credentials under one account, written with `keyring` in `format`.
fn seed(db: &TestDb, keyring: Keyring, format: CipherFormat, rows: usize) {
    let database = db.database();
    database.run_migrations().unwrap();
    let store = CredentialStore::new(database, keyring).with_format(format);
    let account = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let rows: Vec<NewUserCredential> = (0..rows)
        .map(|i| NewUserCredential::new("alpaca_paper", format!("PK-{i}"), "sk"))
        .collect();
    for chunk in rows.chunks(1000) {
        store.insert_credentials(&account, chunk).unwrap();
    }
}

/// What an interrupted run left: its exit code, its stderr and its `--json`
/// object (`Null` when it printed none).
struct Interrupted {
    code: Option<i32>,
    stderr: String,
    json: serde_json::Value,
}

/// Runs the tool with `args` on `url` with `keys`, sends SIGINT (what Ctrl-C
/// sends) once its first progress line is out, and a second SIGINT after the
/// tool acknowledges the first when `twice`.
fn interrupt(url: &str, keys: &str, args: &[&str], twice: bool) -> Interrupted {
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", url)
        .env("CREDENTIAL_STORE_KEYS", keys)
        .env_remove("CREDENTIAL_STORE_KEYS_FILE")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sigint = |pid: u32| {
        let sent = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(": "), "a progress line first: {first}");
    seen.push(first);
    sigint(child.id());
    if twice {
        for line in lines.by_ref() {
            let line = line.unwrap();
            let acknowledged = line.starts_with("interrupted: finishing the current batch");
            seen.push(line);
            if acknowledged {
                sigint(child.id());
                break;
            }
        }
    }
    seen.extend(lines.map(Result::unwrap));
    let out = child.wait_with_output().unwrap();
    Interrupted {
        code: out.status.code(),
        stderr: seen.join("\n"),
        json: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
    }
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_rolls_the_batch_back() {
    let db = TestDb::sqlite();
    let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
    seed(
        &db,
        Keyring::from_fernet_keys([&old]).unwrap(),
        CipherFormat::Fernet,
        ROWS,
    );
    // Two batches: the first progress line comes after the first one is committed;
    // the signals land while the second is in flight.
    let batch = (ROWS / 2).to_string();
    let run = interrupt(
        &db.url,
        &format!("{new},{old}"),
        &["rotate", "--batch-size", &batch, "--json"],
        true,
    );
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("interrupted again: exiting now (the current batch is rolled back)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.json,
        serde_json::Value::Null,
        "no summary: it exited at once"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key NOT LIKE 'gAAAA%'"),
        (ROWS / 2) as i64,
        "the first batch committed, the one in flight rolled back"
    );
}

#[test]
fn ctrl_c_stops_backfill_verify_and_copy_after_a_batch() {
    let db = TestDb::sqlite();
    let key = format!("k:{}", test_key());
    seed(
        &db,
        Keyring::from_fernet_keys([&key]).unwrap(),
        CipherFormat::Sealed,
        ROWS,
    );
    db.execute("UPDATE user_credentials SET nickname = NULL");

    // backfill: what it changed is committed, the rest still without a nickname.
    let run = interrupt(
        &db.url,
        &key,
        &["backfill", "--batch-size", "25", "--json"],
        false,
    );
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert_eq!(run.json["error"]["kind"], "interrupted");
    let changed = run.json["result"]["progress"]["changed"].as_u64().unwrap();
    assert!(
        changed > 0 && changed < ROWS as u64 && changed.is_multiple_of(25),
        "{}",
        run.json
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE nickname IS NULL"),
        ROWS as i64 - changed as i64
    );

    // verify: stopped, it reports what it checked and that it is not complete.
    let run = interrupt(
        &db.url,
        &key,
        &["verify", "--batch-size", "25", "--json"],
        false,
    );
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert_eq!(run.json["error"]["kind"], "interrupted");
    let result = &run.json["result"];
    assert_eq!(result["complete"], false, "{result}");
    let scanned = result["scanned"].as_u64().unwrap();
    assert!(scanned > 0 && scanned < ROWS as u64, "{result}");
    assert_eq!(result["readable"], scanned, "{result}");

    // copy: the target holds what was copied; --resume finishes and verifies.
    let target = TestDb::sqlite();
    let run = interrupt(
        &db.url,
        &key,
        &[
            "copy",
            "--from",
            &db.url,
            "--to",
            &target.url,
            "--batch-size",
            "25",
            "--json",
        ],
        false,
    );
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert_eq!(run.json["error"]["kind"], "interrupted");
    assert!(run.stderr.contains("--resume"), "{}", run.stderr);
    let copied = target.count("user_credentials");
    assert!(copied < ROWS as i64, "stopped before the end: {copied}");
    let resumed = Command::new(BIN)
        .env("DATABASE_URL", &db.url)
        .env("CREDENTIAL_STORE_KEYS", &key)
        .args([
            "copy",
            "--from",
            &db.url,
            "--to",
            &target.url,
            "--resume",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0));
    let resumed: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(resumed["result"]["complete"], true, "{resumed}");
    assert_eq!(target.count("user_credentials"), ROWS as i64);
}

#[test]
fn an_interrupted_data_key_rotation_resumes_with_its_cutoff() {
    let db = TestDb::sqlite();
    let key = format!("k:{}", test_key());
    seed(
        &db,
        Keyring::from_fernet_keys([&key]).unwrap(),
        CipherFormat::Sealed,
        ROWS,
    );
    let run = interrupt(
        &db.url,
        &key,
        &["rotate", "--data-keys", "--batch-size", "25", "--json"],
        false,
    );
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    let cutoff = run.json["result"]["data_keys_made_before"]
        .as_str()
        .expect("the cutoff in the result")
        .to_owned();
    let progress = &run.json["result"]["progress"];
    assert_eq!(progress["data_keys_replaced"], 1, "{}", run.json);
    let rewritten = progress["rewritten"].as_u64().unwrap();
    assert!(rewritten < ROWS as u64, "{}", run.json);
    assert!(
        run.stderr.contains("--data-keys-made-before"),
        "the message says how to resume: {}",
        run.stderr
    );
    // Resumed with the same cutoff: the key is not replaced again, the rows
    // still under the old one are re-encrypted.
    let resumed = Command::new(BIN)
        .env("DATABASE_URL", &db.url)
        .env("CREDENTIAL_STORE_KEYS", &key)
        .args(["rotate", "--data-keys-made-before", &cutoff, "--json"])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0));
    let resumed: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    let progress = &resumed["result"]["progress"];
    assert_eq!(progress["data_keys_replaced"], 0, "{resumed}");
    assert_eq!(progress["rewritten"], ROWS as u64 - rewritten, "{resumed}");
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key LIKE 'sealed:v3:2:%'"),
        ROWS as i64
    );
}
