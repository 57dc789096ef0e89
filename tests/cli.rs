//! The operator tool `credential-store`, run as a built binary against real
//! databases on both backends: every command, its `--json` object and exit code,
//! the progress display (a bar in a pseudo-terminal, plain lines otherwise), Ctrl-C
//! in the middle of a rotation, and no plaintext key in any output.

mod common;

use common::{test_key, TestDb};
use credential_store::{
    Backend, CipherFormat, CredentialStore, Database, Keyring, NewUserAccount, NewUserCredential,
    UserAccount, UserCredential,
};
use diesel::Connection;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

fn main() {
    common::trials::run(vec![
        migrate_status_and_revert::tests(),
        backfill_rotate_and_verify::tests(),
        ctrl_c_stops_a_rotation_after_a_batch_and_a_rerun_finishes::tests(),
        rotate_data_keys_replaces_them_and_a_later_run_deletes_the_old::tests(),
        a_progress_bar_in_a_terminal::tests(),
        trial!(copy_from_sqlite_to_postgres_and_back, [Postgres]),
        #[cfg(feature = "mysql")]
        trial!(copy_from_postgres_to_mariadb_and_verify, [Postgres, Mysql]),
        trial!(keygen_prints_a_usable_key),
        #[cfg(unix)]
        trial!(a_keys_file_readable_by_others_is_refused),
        trial!(usage_and_configuration_errors_exit_2),
        trial!(key_and_database_errors_name_their_kind),
        trial!(a_connection_cut_mid_run_is_connection_lost, [Postgres]),
        trial!(rotate_to_fernet_quietly),
        trial!(
            maintenance_needs_a_role_that_bypasses_row_security,
            [Postgres]
        ),
    ]);
}

const BIN: &str = env!("CARGO_BIN_EXE_credential-store");

/// Every plaintext the tests store starts with this: no output may contain it.
const PLAINTEXT_MARK: &str = "PLAINTEXT-";

/// The tool with a database and keys in its environment, and nothing inherited
/// that could change what it does.
fn tool(url: &str, keys: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("DATABASE_URL", url)
        .env_remove("CREDENTIAL_STORE_KEYS")
        .env_remove("CREDENTIAL_STORE_KEYS_FILE");
    if let Some(keys) = keys {
        command.env("CREDENTIAL_STORE_KEYS", keys);
    }
    command
}

/// Runs the tool and checks that no output holds a plaintext key or a key.
fn run(url: &str, keys: Option<&str>, args: &[&str]) -> Output {
    let out = tool(url, keys)
        .args(args)
        .output()
        .expect("run credential-store");
    assert_no_secrets(&out, keys);
    out
}

fn assert_no_secrets(out: &Output, keys: Option<&str>) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(PLAINTEXT_MARK),
            "plaintext in output: {text}"
        );
        for key in keys.into_iter().flat_map(|k| k.split(',')) {
            let key = key.rsplit(':').next().unwrap();
            assert!(!text.contains(key), "a key in output: {text}");
        }
    }
}

/// The one JSON object of a `--json` run, checked against its exit code.
fn json(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected, got: {stdout}");
    let value: Value = serde_json::from_str(lines[0]).unwrap();
    let code = out.status.code().expect("an exit code");
    assert_eq!(value["exit_code"], code, "{value}");
    assert_eq!(value["ok"], code == 0, "{value}");
    value
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keys(entries: &[&str]) -> String {
    entries.join(",")
}

/// `count` credentials over `accounts` accounts, written in `format` under `keyring`'s
/// primary key, `PLAINTEXT-…` keys.
fn populate(
    db: &Database,
    keyring: Keyring,
    format: CipherFormat,
    accounts: usize,
    count: usize,
) -> Vec<(UserAccount, UserCredential)> {
    let store = CredentialStore::new(db.clone(), keyring).with_format(format);
    let accounts: Vec<UserAccount> = (0..accounts)
        .map(|i| {
            store
                .create_account(&NewUserAccount::new(&format!("auth0|user-{i}"), "Ada"))
                .unwrap()
        })
        .collect();
    let per_account = count.div_ceil(accounts.len());
    let mut rows = Vec::new();
    for (a, account) in accounts.iter().enumerate() {
        let n = per_account.min(count - rows.len());
        let new: Vec<NewUserCredential> = (0..n)
            .map(|i| {
                NewUserCredential::new(
                    "alpaca_paper",
                    format!("{PLAINTEXT_MARK}PK-{a}-{i}"),
                    format!("{PLAINTEXT_MARK}SK-{a}-{i}"),
                )
                .nickname("bot")
            })
            .collect();
        for chunk in new.chunks(1000) {
            let stored = store.insert_credentials(account, chunk).unwrap();
            rows.extend(stored.into_iter().map(|c| (account.clone(), c)));
        }
    }
    rows
}

/// Every credential decrypts with `keyring` to its `PLAINTEXT-` key.
fn assert_all_decrypt(db: &Database, keyring: Keyring, rows: &[(UserAccount, UserCredential)]) {
    let store = CredentialStore::new(db.clone(), keyring);
    for (account, credential) in rows {
        let keys = store
            .keys(account, credential.id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(keys.api_key().expose_secret().starts_with(PLAINTEXT_MARK));
    }
}

on_both_backends!(
    rotate_data_keys_replaces_them_and_a_later_run_deletes_the_old,
    |db| {
        let key = format!("2026-12:{}", test_key());
        let keys = Some(key.as_str());
        db.database().run_migrations().unwrap();
        let keyring = || Keyring::from_fernet_keys([&key]).unwrap();
        let rows = populate(&db.database(), keyring(), CipherFormat::Sealed, 2, 3);
        let v1 = "SELECT COUNT(*) AS n FROM user_credentials WHERE api_key LIKE 'sealed:v3:1:%'";
        assert_eq!(db.scalar(v1), 3);

        let out = run(&db.url, keys, &["rotate", "--data-keys", "--json"]);
        let r = json(&out);
        assert_eq!(code(&out), 0, "{r}");
        let p = &r["result"]["progress"];
        assert_eq!(
            (&p["data_keys_replaced"], &p["rewritten"]),
            (&Value::from(2), &Value::from(3)),
            "{r}"
        );
        assert_eq!(p["retired_keys_deleted"], 0, "within the grace period: {r}");
        assert!(r["result"]["data_keys_made_before"].is_string(), "{r}");
        assert_eq!(db.scalar(v1), 0);
        let status = json(&run(&db.url, keys, &["status", "--json"]));
        assert_eq!(status["result"]["retired_data_keys"], 2, "{status}");
        assert_all_decrypt(&db.database(), keyring(), &rows);

        // Past the grace period (0 s here), a plain rotation deletes the old keys.
        let out = run(
            &db.url,
            keys,
            &["rotate", "--retired-key-grace", "0", "--json"],
        );
        let r = json(&out);
        let p = &r["result"]["progress"];
        assert_eq!(
            (&p["data_keys_replaced"], &p["rewritten"]),
            (&Value::from(0), &Value::from(0)),
            "{r}"
        );
        assert_eq!(p["retired_keys_deleted"], 2, "{r}");
        let status = json(&run(&db.url, keys, &["status", "--json"]));
        assert_eq!(status["result"]["retired_data_keys"], 0, "{status}");
        assert_eq!(code(&run(&db.url, keys, &["verify"])), 0);
        assert_all_decrypt(&db.database(), keyring(), &rows);
    }
);

on_both_backends!(migrate_status_and_revert, |db| {
    let key = format!("2026-12:{}", test_key());
    let keys = Some(key.as_str());

    let out = run(&db.url, keys, &["migrate", "--dry-run", "--json"]);
    let dry = json(&out);
    assert_eq!(dry["command"], "migrate");
    assert_eq!(dry["result"]["dry_run"], true);
    let pending = dry["result"]["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 7, "{dry}");
    assert_eq!(pending.last().unwrap(), "20261208000007", "{dry}");

    // Before migrating, status knows the migrations but counts nothing.
    let before = json(&run(&db.url, keys, &["status", "--json"]));
    assert_eq!(
        before["result"]["pending_migrations"],
        Value::Array(pending.clone())
    );
    assert_eq!(before["result"]["accounts"], Value::Null);

    let applied = json(&run(&db.url, keys, &["migrate", "--json"]));
    assert_eq!(applied["result"]["applied"].as_array().unwrap().len(), 7);
    let again = run(&db.url, keys, &["migrate"]);
    assert_eq!(code(&again), 0);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));

    let keyring = Keyring::from_fernet_keys([&key]).unwrap();
    let rows = populate(&db.database(), keyring, CipherFormat::Sealed, 2, 3);
    db.execute(&format!(
        "UPDATE user_credentials SET nickname = NULL WHERE id = '{}'",
        rows[0].1.id
    ));

    let status = json(&run(&db.url, keys, &["status", "--json"]));
    let s = &status["result"];
    assert_eq!(s["backend"], db.backend_name());
    assert_eq!(s["applied_migrations"], Value::Array(pending.clone()));
    assert_eq!(s["pending_migrations"], Value::Array(vec![]));
    assert_eq!(
        (s["accounts"].as_u64(), s["credentials"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(s["null_nicknames"], 1);
    assert_eq!(
        s["non_conforming_legacy_rows"], 0,
        "no legacy values in a store the crate wrote"
    );
    let usage = s["key_usage"].as_array().unwrap();
    assert_eq!(usage.len(), 1, "{status}");
    assert_eq!(usage[0]["format"], "sealed");
    assert_eq!(usage[0]["version"], 3, "{status}");
    // Sealed v3: the key is the KEK of the accounts' data keys, the keyring's
    // primary key.
    assert_eq!(usage[0]["key_id"], "2026-12");
    assert_eq!(usage[0]["provider"], "keyring");
    assert_eq!(usage[0]["in_keyring"], true);
    assert_eq!(usage[0]["credentials"], 3);
    match db.backend {
        // No row-level security to report.
        Backend::Sqlite | Backend::Mysql => assert_eq!(s["row_security"], Value::Null),
        _ => {
            let rls = &s["row_security"];
            assert_eq!(rls["bypasses"], true, "the test role is a superuser: {rls}");
            let tables = rls["tables"].as_array().unwrap();
            let names: Vec<&str> = tables
                .iter()
                .map(|t| t["table"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                [
                    "account_keys",
                    "retired_account_keys",
                    "user_accounts",
                    "user_credentials"
                ]
            );
            for table in tables {
                assert_eq!(
                    (&table["enabled"], &table["forced"]),
                    (&Value::Bool(true), &Value::Bool(true))
                );
            }
        }
    }
    // Without keys, status still answers; key usage is unknown.
    let keyless = json(&run(&db.url, None, &["status", "--json"]));
    assert_eq!(keyless["result"]["key_usage"], Value::Null);
    assert_eq!(keyless["result"]["credentials"], 3);
    let text = run(&db.url, keys, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("credentials: 3"), "{text}");
    assert!(text.contains("key_id=2026-12"), "{text}");

    assert!(text.contains("retired data keys: 0"), "{text}");

    // With rows stored, the data keys (000006) refuse, after the retired data
    // keys (000007, none stored) came off.
    let exposed = run(&db.url, keys, &["revert", "20240601000003", "--json"]);
    let e = json(&exposed);
    assert_eq!(code(&exposed), 1, "{e}");
    assert_eq!(e["error"]["kind"], "revert_would_expose");
    assert_eq!(e["error"]["details"]["version"], "20261207000006", "{e}");
    assert_eq!(
        (
            &e["error"]["details"]["accounts"],
            &e["error"]["details"]["credentials"]
        ),
        (&serde_json::json!(2), &serde_json::json!(3))
    );
    assert_eq!(
        e["result"]["reverted"],
        serde_json::json!(["20261208000007"])
    );
    // Emptied, the later migrations revert; then the rows are written again.
    db.execute("DELETE FROM user_credentials; DELETE FROM user_accounts;");
    assert_eq!(
        db.count("account_keys"),
        0,
        "the data keys go with their accounts"
    );
    assert_eq!(
        json(&run(&db.url, keys, &["migrate", "--json"]))["result"]["applied"],
        serde_json::json!(["20261208000007"])
    );
    let later = json(&run(&db.url, keys, &["revert", "20261125000004", "--json"]));
    assert_eq!(
        later["result"]["reverted"],
        serde_json::json!([
            "20261208000007",
            "20261207000006",
            "20261125000005",
            "20261125000004"
        ]),
        "{later}"
    );
    // Without the data keys (000006 reverted) the rows are written as the
    // existing system writes them: Fernet.
    let keyring = Keyring::from_fernet_keys([&key]).unwrap();
    let rows = populate(&db.database(), keyring, CipherFormat::Fernet, 2, 3);

    // Reverting the multiple-credentials migration while an account holds two
    // credentials of one type refuses.
    let refused = run(
        &db.url,
        keys,
        &[
            "revert",
            "2024-06-01-000003_multiple_credentials_support",
            "--json",
        ],
    );
    let r = json(&refused);
    assert_eq!(code(&refused), 1, "{r}");
    assert_eq!(r["error"]["kind"], "revert_refused");
    assert_eq!(r["error"]["details"]["conflicts"], 1);
    assert_eq!(r["result"]["reverted"], serde_json::json!([]));
    assert_eq!(db.count("user_credentials"), 3, "nothing lost");

    let missing = run(&db.url, keys, &["revert", "20261125000005", "--json"]);
    assert_eq!(code(&missing), 1);
    assert_eq!(json(&missing)["error"]["kind"], "migration_not_applied");

    db.execute(&format!(
        "DELETE FROM user_credentials WHERE id = '{}'",
        rows[1].1.id
    ));
    // Nicknames other than the type would be lost: refused too.
    let refused = run(&db.url, keys, &["revert", "20240601000003", "--json"]);
    assert_eq!(code(&refused), 1);
    assert_eq!(
        json(&refused)["error"]["kind"],
        "revert_would_drop_nicknames"
    );
    db.execute("UPDATE user_credentials SET nickname = credential_type");
    let done = json(&run(&db.url, keys, &["revert", "20240601000003", "--json"]));
    assert_eq!(
        done["result"]["reverted"],
        serde_json::json!(["20240601000003"]),
        "{done}"
    );
    let dry = json(&run(&db.url, keys, &["migrate", "--dry-run", "--json"]));
    assert_eq!(dry["result"]["pending"].as_array().unwrap().len(), 5);
    assert_eq!(code(&run(&db.url, keys, &["migrate"])), 0);
});

on_both_backends!(backfill_rotate_and_verify, |db| {
    db.database().run_migrations().unwrap();
    let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
    let rows = populate(
        &db.database(),
        Keyring::from_fernet_keys([&old]).unwrap(),
        CipherFormat::Fernet,
        3,
        120,
    );
    db.execute("UPDATE user_credentials SET nickname = NULL WHERE created_at IS NOT NULL");
    let both = keys(&[&new, &old]);
    let keys = Some(both.as_str());

    let out = run(&db.url, keys, &["backfill", "--batch-size", "50", "--json"]);
    let b = json(&out);
    assert_eq!(b["command"], "backfill");
    assert_eq!(b["result"]["outcome"], "completed");
    assert_eq!(b["result"]["progress"]["changed"], 120);
    assert_eq!(b["result"]["remaining"], 0);
    // Not a terminal: plain progress lines, no escape codes.
    let err = stderr(&out);
    assert!(err.contains("rows/s"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE nickname IS NULL"),
        0
    );

    let out = run(&db.url, keys, &["rotate", "--batch-size", "50", "--json"]);
    let r = json(&out);
    assert_eq!(r["result"]["outcome"], "completed", "{r}");
    assert_eq!(r["result"]["progress"]["rewritten"], 120);
    assert_eq!(r["result"]["primary_key_id"], "new");
    assert!(!stderr(&out).contains('\x1b'));
    let again = json(&run(&db.url, keys, &["rotate", "--json"]));
    assert_eq!(again["result"]["progress"]["rewritten"], 0);
    assert_all_decrypt(
        &db.database(),
        Keyring::from_fernet_keys([&new]).unwrap(),
        &rows,
    );

    let v = json(&run(
        &db.url,
        keys,
        &["verify", "--batch-size", "7", "--json"],
    ));
    assert_eq!(v["result"]["readable"], 120);
    assert_eq!(v["result"]["complete"], true);
    assert_eq!(v["result"]["unreadable"], Value::Array(vec![]));

    // A damaged row and a row sealed under a key the keyring lacks.
    let (damaged, foreign) = (rows[5].1.id, rows[77].1.id);
    db.execute(&format!(
        "UPDATE user_credentials SET secret_key = 'sealed:v1:new:AAAA' WHERE id = '{damaged}'"
    ));
    let sealed_gone = format!("sealed:v1:gone:{}", "A".repeat(60));
    db.execute(&format!(
        "UPDATE user_credentials SET api_key = '{sealed_gone}' WHERE id = '{foreign}'"
    ));
    let out = run(&db.url, keys, &["verify", "--json"]);
    assert_eq!(code(&out), 1);
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "unreadable_rows");
    assert_eq!(v["result"]["readable"], 118);
    let unreadable = v["result"]["unreadable"].as_array().unwrap();
    let mut found: Vec<(String, String, String)> = unreadable
        .iter()
        .map(|u| {
            (
                u["credential_id"].as_str().unwrap().to_owned(),
                u["field"].as_str().unwrap().to_owned(),
                u["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let mut want = vec![
        (
            damaged.to_string(),
            "secret_key".to_owned(),
            "decryption".to_owned(),
        ),
        (
            foreign.to_string(),
            "api_key".to_owned(),
            "unknown_key".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(found, want);
    let text = run(&db.url, keys, &["verify"]);
    assert_eq!(code(&text), 1);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&damaged.to_string()) && stdout.contains("(key `gone`)"),
        "{stdout}"
    );
    // The rotation reports the same two and rewrites nothing else.
    let out = run(&db.url, keys, &["rotate", "--json"]);
    assert_eq!(code(&out), 1);
    let r = json(&out);
    assert_eq!(r["error"]["kind"], "rotation_incomplete");
    assert_eq!(
        r["error"]["details"]["failures"].as_array().unwrap().len(),
        2
    );
});

/// Rows rotated in the Ctrl-C test: 400 batches of 25, so that the signal lands
/// in the middle (the unoptimised test build rotates about 1,500 rows a second).
const ROWS: usize = 10_000;

on_both_backends!(
    ctrl_c_stops_a_rotation_after_a_batch_and_a_rerun_finishes,
    |db| {
        db.database().run_migrations().unwrap();
        let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
        let rows = populate(
            &db.database(),
            Keyring::from_fernet_keys([&old]).unwrap(),
            CipherFormat::Fernet,
            4,
            ROWS,
        );
        let both = keys(&[&new, &old]);
        let mut child = tool(&db.url, Some(&both))
            .args(["rotate", "--batch-size", "25", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = stderr_lines.next().unwrap().unwrap();
        assert!(first.starts_with("rotate: "), "{first}");
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let rest: Vec<String> = stderr_lines.map(Result::unwrap).collect();
        let out = child.wait_with_output().unwrap();
        let out = Output {
            stderr: format!("{first}\n{}", rest.join("\n")).into_bytes(),
            ..out
        };
        assert_no_secrets(&out, Some(&both));
        assert_eq!(code(&out), 130, "{}", stderr(&out));
        let r = json(&out);
        assert_eq!(r["error"]["kind"], "interrupted");
        assert_eq!(r["result"]["outcome"], "stopped");
        let p = &r["result"]["progress"];
        let (scanned, total) = (p["scanned"].as_u64().unwrap(), p["total"].as_u64().unwrap());
        assert_eq!(total, ROWS as u64);
        assert!(scanned > 0 && scanned < total && scanned % 25 == 0, "{r}");
        assert_eq!(r["result"]["remaining"], total - scanned);
        assert!(stderr(&out).contains("run the same command again"));
        // The stop came after a committed batch: exactly the rows looked at are rotated.
        assert_eq!(
            db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key NOT LIKE 'gAAAA%'"),
            scanned as i64
        );

        let rerun = json(&run(
            &db.url,
            Some(&both),
            &["rotate", "--batch-size", "1000", "--json"],
        ));
        assert_eq!(rerun["result"]["outcome"], "completed");
        assert_eq!(rerun["result"]["progress"]["rewritten"], total - scanned);
        let v = json(&run(
            &db.url,
            Some(&new),
            &["verify", "--batch-size", "5000", "--json"],
        ));
        assert_eq!(v["result"]["readable"], ROWS);
        assert_all_decrypt(
            &db.database(),
            Keyring::from_fernet_keys([&new]).unwrap(),
            &rows[..200],
        );
    }
);

on_both_backends!(a_progress_bar_in_a_terminal, |db| {
    db.database().run_migrations().unwrap();
    let key = test_key();
    populate(
        &db.database(),
        Keyring::from_fernet_keys([&key]).unwrap(),
        CipherFormat::Fernet,
        1,
        300,
    );
    // `script` gives the tool a pseudo-terminal for stdout and stderr.
    let out = Command::new("script")
        .args([
            "-qfec",
            &format!("{BIN} verify --batch-size 10"),
            "/dev/null",
        ])
        .env("DATABASE_URL", &db.url)
        .env("CREDENTIAL_STORE_KEYS", &key)
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{screen}");
    assert!(
        screen.contains('\x1b'),
        "no escape codes: a bar was not drawn: {screen:?}"
    );
    assert!(screen.contains("300/300 rows"), "{screen:?}");
    assert!(screen.contains("verified 300 credential(s)"), "{screen:?}");
    assert!(!screen.contains(PLAINTEXT_MARK) && !screen.contains(&key));
});

fn copy_from_sqlite_to_postgres_and_back() {
    let pg = TestDb::postgres();
    let (sqlite, back) = (TestDb::sqlite(), TestDb::sqlite());
    sqlite.database().run_migrations().unwrap();
    let (fernet, sealed) = (format!("f:{}", test_key()), format!("s:{}", test_key()));
    let mut rows = populate(
        &sqlite.database(),
        Keyring::from_fernet_keys([&fernet]).unwrap(),
        CipherFormat::Fernet,
        3,
        60,
    );
    // Sealed ciphertexts are bound to their ids: they stay valid only if the ids do.
    let store = CredentialStore::new(
        sqlite.database(),
        Keyring::from_fernet_keys([&sealed]).unwrap(),
    );
    let account = store
        .create_account(&NewUserAccount::new("auth0|sealed", "Bo"))
        .unwrap();
    let extra = NewUserCredential::new(
        "polygon",
        format!("{PLAINTEXT_MARK}P"),
        format!("{PLAINTEXT_MARK}S"),
    );
    rows.push((
        account.clone(),
        store.insert_credential(&account, &extra).unwrap(),
    ));
    sqlite.execute(&format!(
        "UPDATE user_credentials SET nickname = NULL, expires_at = '2030-01-02T03:04:05.123456Z' WHERE id = '{}'",
        rows[0].1.id
    ));
    let both = keys(&[&sealed, &fernet]);
    let keys = Some(both.as_str());

    let out = run(
        "",
        keys,
        &[
            "copy",
            "--from",
            &sqlite.url,
            "--to",
            &pg.url,
            "--batch-size",
            "16",
            "--json",
        ],
    );
    let c = json(&out);
    assert_eq!(code(&out), 0, "{c}");
    let r = &c["result"];
    assert_eq!(
        (
            r["accounts_copied"].as_u64(),
            r["credentials_copied"].as_u64()
        ),
        (Some(4), Some(61))
    );
    assert_eq!(
        (r["verified"].as_u64(), r["complete"].as_bool()),
        (Some(61), Some(true))
    );
    assert_eq!(r["migrated"].as_array().unwrap().len(), 7);
    assert_eq!(pg.count("user_credentials"), 61);
    let keyring = || Keyring::from_fernet_keys([&sealed, &fernet]).unwrap();
    assert_all_decrypt(&pg.database(), keyring(), &rows);
    // Every column came across as it was.
    let (on_sqlite, on_pg) = (
        CredentialStore::new(sqlite.database(), keyring()),
        CredentialStore::new(pg.database(), keyring()),
    );
    for (account, credential) in &rows {
        assert_eq!(
            on_pg.credential(account, credential.id).unwrap(),
            on_sqlite.credential(account, credential.id).unwrap()
        );
    }
    let first = on_pg.credential(&rows[0].0, rows[0].1.id).unwrap().unwrap();
    assert_eq!(first.nickname, None);
    assert!(first.expires_at.is_some());

    // A non-empty target is refused, unless resuming; a resumed copy skips every row.
    let refused = run(
        "",
        keys,
        &["copy", "--from", &sqlite.url, "--to", &pg.url, "--json"],
    );
    assert_eq!(code(&refused), 1);
    assert_eq!(json(&refused)["error"]["kind"], "target_not_empty");
    let resumed = json(&run(
        "",
        keys,
        &[
            "copy",
            "--from",
            &sqlite.url,
            "--to",
            &pg.url,
            "--resume",
            "--json",
        ],
    ));
    assert_eq!(resumed["result"]["credentials_skipped"], 61);
    assert_eq!(resumed["result"]["credentials_copied"], 0);
    assert_eq!(resumed["result"]["verified"], 61);

    // A partial target (an interrupted copy) is finished by --resume.
    let out = run(
        "",
        keys,
        &["copy", "--from", &pg.url, "--to", &back.url, "--json"],
    );
    assert_eq!(code(&out), 0);
    back.execute(&format!(
        "DELETE FROM user_credentials WHERE id IN ('{}', '{}')",
        rows[3].1.id, rows[60].1.id
    ));
    let resumed = json(&run(
        "",
        keys,
        &[
            "copy", "--from", &pg.url, "--to", &back.url, "--resume", "--json",
        ],
    ));
    assert_eq!(resumed["result"]["credentials_copied"], 2);
    assert_eq!(resumed["result"]["verified"], 61);
    assert_all_decrypt(&back.database(), keyring(), &rows);

    // A target row that differs from the source is reported, not overwritten.
    back.execute(&format!(
        "UPDATE user_credentials SET api_key = (SELECT api_key FROM user_credentials WHERE id = '{}') WHERE id = '{}'",
        rows[1].1.id, rows[2].1.id
    ));
    let out = run(
        "",
        keys,
        &[
            "copy", "--from", &pg.url, "--to", &back.url, "--resume", "--json",
        ],
    );
    assert_eq!(code(&out), 1);
    let c = json(&out);
    assert_eq!(c["error"]["kind"], "copy_not_verified");
    assert_eq!(c["result"]["mismatched"], serde_json::json!([rows[2].1.id]));
}

/// The operator's move from PostgreSQL to MariaDB: `copy` carries every row across
/// (Fernet and sealed ciphertexts, NULL nicknames, expiry times to the microsecond),
/// `verify` on the target reads every one, and the target's rows equal the source's.
#[cfg(feature = "mysql")]
fn copy_from_postgres_to_mariadb_and_verify() {
    let (pg, maria) = (TestDb::postgres(), TestDb::mysql());
    pg.database().run_migrations().unwrap();
    let (fernet, sealed) = (format!("f:{}", test_key()), format!("s:{}", test_key()));
    let mut rows = populate(
        &pg.database(),
        Keyring::from_fernet_keys([&fernet]).unwrap(),
        CipherFormat::Fernet,
        4,
        150,
    );
    let store = CredentialStore::new(pg.database(), Keyring::from_fernet_keys([&sealed]).unwrap());
    let account = store
        .create_account(&NewUserAccount::new("auth0|sealed", "Bo"))
        .unwrap();
    for kind in ["polygon", "alpaca_live"] {
        let new = NewUserCredential::new(
            kind,
            format!("{PLAINTEXT_MARK}P-{kind}"),
            format!("{PLAINTEXT_MARK}S-{kind}"),
        );
        rows.push((
            account.clone(),
            store.insert_credential(&account, &new).unwrap(),
        ));
    }
    pg.execute(&format!(
        "UPDATE user_credentials SET nickname = NULL, expires_at = '2030-01-02T03:04:05.123456Z' \
         WHERE id = '{}'",
        rows[0].1.id
    ));
    let both = keys(&[&sealed, &fernet]);
    let keys = Some(both.as_str());

    let out = run(
        "",
        keys,
        &[
            "copy",
            "--from",
            &pg.url,
            "--to",
            &maria.url,
            "--batch-size",
            "40",
            "--json",
        ],
    );
    let c = json(&out);
    assert_eq!(code(&out), 0, "{c}");
    let r = &c["result"];
    assert_eq!(
        (
            r["accounts_copied"].as_u64(),
            r["credentials_copied"].as_u64(),
            r["verified"].as_u64(),
            r["complete"].as_bool()
        ),
        (Some(5), Some(152), Some(152), Some(true))
    );
    assert_eq!(maria.count("user_credentials"), 152);

    // `verify` on the target reads and decrypts every row.
    let out = run(
        &maria.url,
        keys,
        &["verify", "--batch-size", "50", "--json"],
    );
    let v = json(&out);
    assert_eq!(code(&out), 0, "{v}");
    assert_eq!(v["result"]["readable"], 152);
    assert_eq!(v["result"]["complete"], true);
    assert_eq!(v["result"]["unreadable"], Value::Array(vec![]));

    let keyring = || Keyring::from_fernet_keys([&sealed, &fernet]).unwrap();
    assert_all_decrypt(&maria.database(), keyring(), &rows);
    let (on_pg, on_maria) = (
        CredentialStore::new(pg.database(), keyring()),
        CredentialStore::new(maria.database(), keyring()),
    );
    for (account, credential) in &rows {
        assert_eq!(
            on_maria.credential(account, credential.id).unwrap(),
            on_pg.credential(account, credential.id).unwrap()
        );
    }
    let first = on_maria
        .credential(&rows[0].0, rows[0].1.id)
        .unwrap()
        .unwrap();
    assert_eq!(first.nickname, None);
    assert_eq!(
        first.expires_at.unwrap().to_rfc3339(),
        "2030-01-02T03:04:05.123456+00:00"
    );

    // A damaged row on the target is found by `verify`.
    maria.execute(&format!(
        "UPDATE user_credentials SET secret_key = 'sealed:v1:new:AAAA' WHERE id = '{}'",
        rows[7].1.id
    ));
    let out = run(&maria.url, keys, &["verify", "--json"]);
    assert_eq!(code(&out), 1);
    let v = json(&out);
    assert_eq!(v["result"]["readable"], 151);
    assert_eq!(
        v["result"]["unreadable"][0]["credential_id"],
        rows[7].1.id.to_string()
    );
}

fn keygen_prints_a_usable_key() {
    let out = Command::new(BIN).args(["keygen"]).output().unwrap();
    assert_eq!(code(&out), 0);
    let key = String::from_utf8(out.stdout).unwrap();
    let keyring = Keyring::from_fernet_keys([key.trim()]).unwrap();
    assert!(keyring.primary_key_id().starts_with('k'));

    let out = Command::new(BIN)
        .args(["keygen", "--id", "2026-12", "--json"])
        .output()
        .unwrap();
    let k = json(&out);
    assert_eq!(k["result"]["key_id"], "2026-12");
    let entry = k["result"]["key"].as_str().unwrap();
    assert!(entry.starts_with("2026-12:"));
    assert_eq!(
        Keyring::from_fernet_keys([entry]).unwrap().primary_key_id(),
        "2026-12"
    );

    let out = Command::new(BIN)
        .args(["keygen", "--id", "no spaces", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["error"]["kind"], "invalid_key_id");
}

#[cfg(unix)]
fn a_keys_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::sqlite();
    db.database().run_migrations().unwrap();
    let path = db.dir.as_ref().unwrap().path().join("keys");
    let key = test_key();
    std::fs::write(&path, format!("# the primary key\nk1:{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let path_arg = path.to_str().unwrap();

    let out = run(
        &db.url,
        None,
        &["verify", "--keys-file", path_arg, "--json"],
    );
    assert_eq!(code(&out), 2);
    let e = json(&out);
    assert_eq!(e["error"]["kind"], "keys_file_exposed");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(path_arg) && message.contains("0640") && message.contains("owner only"),
        "{message}"
    );
    assert!(stderr(&out).contains(path_arg));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(
        &db.url,
        None,
        &["status", "--keys-file", path_arg, "--json"],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(json(&out)["result"]["key_usage"], Value::Array(vec![]));
    let out = tool(&db.url, None)
        .env("CREDENTIAL_STORE_KEYS_FILE", &path)
        .args(["verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

fn usage_and_configuration_errors_exit_2() {
    // No database.
    let out = Command::new(BIN)
        .env_remove("DATABASE_URL")
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["error"]["kind"], "usage");
    // An unknown command, an unsupported URL, no keys.
    let out = Command::new(BIN)
        .args(["frobnicate", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["command"], Value::Null);
    let out = run("redis://localhost/0", None, &["status", "--json"]);
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["error"]["kind"], "unsupported_url");
    let db = TestDb::sqlite();
    let out = run(&db.url, None, &["rotate", "--json"]);
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["error"]["kind"], "no_key_configured");
    let out = run(
        &db.url,
        Some(&test_key()),
        &["verify", "--batch-size", "0", "--json"],
    );
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["error"]["kind"], "invalid_argument");
    // Database errors exit 3: a server that is not there.
    let out = run(
        "postgres://nobody@127.0.0.1:1/none",
        None,
        &["status", "--json"],
    );
    assert_eq!(code(&out), 3);
    assert_eq!(json(&out)["error"]["kind"], "connection");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(code(&help), 0);
    assert!(String::from_utf8_lossy(&help.stdout).contains("rotate"));
}

/// The tool's `--json` error for `args` on `url` with `keys`: its exit code and
/// `error.kind`.
fn error_kind(url: &str, keys: Option<&str>, args: &[&str]) -> (i32, Value) {
    let out = run(url, keys, args);
    (code(&out), json(&out)["error"]["kind"].clone())
}

fn key_and_database_errors_name_their_kind() {
    let db = TestDb::sqlite();
    db.database().run_migrations().unwrap();
    let key = test_key();
    // Keys: not a key, two keys with one id, a keys file that cannot be read.
    assert_eq!(
        error_kind(&db.url, Some("2026-12:not-a-key"), &["status", "--json"]),
        (2, Value::from("invalid_key"))
    );
    let twice = format!("a:{key},a:{}", test_key());
    assert_eq!(
        error_kind(&db.url, Some(&twice), &["status", "--json"]),
        (2, Value::from("duplicate_key_id"))
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-keys-file");
    let out = tool(&db.url, None)
        .args(["--keys-file", missing.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        (code(&out), json(&out)["error"]["kind"].clone()),
        (2, Value::from("keys_file"))
    );

    // A migration that fails: a table of that name with other columns.
    let clash = TestDb::sqlite();
    clash.execute("CREATE TABLE user_credentials (id INTEGER)");
    assert_eq!(
        error_kind(&clash.url, None, &["migrate", "--json"]),
        (3, Value::from("migration"))
    );
    // A statement that fails: a table dropped behind the tool's back.
    let dropped = TestDb::sqlite();
    dropped.database().run_migrations().unwrap();
    dropped.execute("PRAGMA foreign_keys = OFF; DROP TABLE user_credentials;");
    assert_eq!(
        error_kind(&dropped.url, None, &["status", "--json"]),
        (3, Value::from("database"))
    );

    // Busy: another connection holds SQLite's write lock past the busy timeout
    // (5 s) while a backfill needs it.
    let store = CredentialStore::new(db.database(), Keyring::from_fernet_keys([&key]).unwrap());
    let account = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    store
        .insert_credential(&account, &NewUserCredential::new("polygon", "PK", "s"))
        .unwrap();
    db.execute("UPDATE user_credentials SET nickname = NULL");
    let mut holder = diesel::SqliteConnection::establish(db.sqlite_path().to_str().unwrap())
        .expect("a second connection");
    diesel::connection::SimpleConnection::batch_execute(&mut holder, "BEGIN IMMEDIATE")
        .expect("the write lock");
    assert_eq!(
        error_kind(&db.url, Some(&key), &["backfill", "--json"]),
        (3, Value::from("busy"))
    );
    diesel::connection::SimpleConnection::batch_execute(&mut holder, "ROLLBACK").unwrap();
    // Released, the same command succeeds.
    assert_eq!(code(&run(&db.url, Some(&key), &["backfill"])), 0);
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE nickname IS NULL"),
        0
    );
}

/// A PostgreSQL connection ended by the server in the middle of a verification
/// (an administrator, a failover): `connection_lost`, exit 3.
fn a_connection_cut_mid_run_is_connection_lost() {
    let db = TestDb::postgres();
    db.database().run_migrations().unwrap();
    let key = test_key();
    populate(
        &db.database(),
        Keyring::from_fernet_keys([&key]).unwrap(),
        CipherFormat::Sealed,
        1,
        4000,
    );
    let (_, name) = db.pg_admin().unwrap();
    let mut child = tool(&db.url, Some(&key))
        .args(["verify", "--batch-size", "10", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("verify: "), "{first}");
    let ended = db.scalar(&format!(
        "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ));
    assert!(ended >= 1, "the tool's connection was ended");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    let r = json(&out);
    assert_eq!(
        (code(&out), &r["error"]["kind"]),
        (3, &Value::from("connection_lost")),
        "{r}\n{}",
        rest.join("\n")
    );
}

/// `rotate --format fernet` writes Fernet tokens under the primary key, and
/// `--quiet` leaves stderr empty.
fn rotate_to_fernet_quietly() {
    let db = TestDb::sqlite();
    db.database().run_migrations().unwrap();
    let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
    let keyring = || Keyring::from_fernet_keys([&old]).unwrap();
    let rows = populate(&db.database(), keyring(), CipherFormat::Sealed, 2, 4);
    let both = format!("{new},{old}");
    let out = run(
        &db.url,
        Some(&both),
        &[
            "--quiet",
            "rotate",
            "--format",
            "fernet",
            "--batch-size",
            "2",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "--quiet prints no progress");
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 re-encrypted (fernet)"));
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE api_key LIKE 'gAAAA%' AND secret_key LIKE 'gAAAA%'"),
        4
    );
    // Fernet under the new primary key: the new key alone opens every row.
    let new_only = Keyring::from_fernet_keys([&new]).unwrap();
    assert_all_decrypt(&db.database(), new_only, &rows);
    // Without --quiet the same run reports progress on stderr.
    let out = run(&db.url, Some(&both), &["rotate", "--format", "fernet"]);
    assert!(stderr(&out).contains("rotate: "), "{}", stderr(&out));
}

fn maintenance_needs_a_role_that_bypasses_row_security() {
    let db = TestDb::postgres();
    db.database().run_migrations().unwrap();
    let (_, database) = db.pg_admin().unwrap();
    // A role that may read everything and create in the schema (diesel's migration
    // bookkeeping needs that to be read), but does not bypass row-level security.
    let role = common::RoleGuard::new(&db, "cli");
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS;
         GRANT CONNECT ON DATABASE {database} TO {role};
         GRANT USAGE, CREATE ON SCHEMA public TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};",
        role = role.role
    ));
    let key = test_key();
    let s = json(&run(&role.url(), Some(&key), &["status", "--json"]));
    let rls = &s["result"]["row_security"];
    assert_eq!(
        (&rls["bypasses"], &rls["superuser"], &rls["bypass_rls"]),
        (
            &Value::Bool(false),
            &Value::Bool(false),
            &Value::Bool(false)
        )
    );
    assert_eq!(rls["role"], role.role.as_str());
    assert_eq!(
        s["result"]["credentials"],
        Value::Null,
        "no silent undercount"
    );
    let out = run(&role.url(), Some(&key), &["rotate", "--json"]);
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["error"]["kind"], "row_security_active");
}
