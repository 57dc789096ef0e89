//! Adoption of the existing Python system's PostgreSQL database.
//!
//! The crate must run on the database that system made, at either step of its
//! history, and on a fresh one, and end with the same schema and every row intact;
//! Fernet tokens must read both ways; the crate must work as an ordinary role under
//! forced row-level security; and its migrations must be safe to run again on a
//! database without diesel's bookkeeping table.
//!
//! Each test makes its own databases (`TestDb::postgres()`); `main` says what else
//! each needs (Python with `cryptography`, `pg_dump`): a test whose needs are
//! unavailable is reported as ignored, or fails when they are required.

mod common;

use common::{RoleGuard, TestDb};
use credential_store::{
    AccountScope, CipherFormat, CredentialStore, Database, Error, Keyring, NewUserAccount,
    NewUserCredential, UserAccount,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use secrecy::ExposeSecret;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

fn main() {
    common::trials::run(vec![
        trial!(three_starting_points_converge, [Postgres, Python, PgDump]),
        trial!(python_and_crate_read_each_others_tokens, [Postgres, Python]),
        trial!(crate_works_as_an_ordinary_role_under_forced_rls, [Postgres]),
        trial!(
            migrations_are_idempotent_when_rerun_without_bookkeeping,
            [Postgres, PgDump]
        ),
    ]);
}

// ---------------------------------------------------------------------------
// The existing system's data
// ---------------------------------------------------------------------------

const ALICE: &str = "auth0|alice";
const BOB: &str = "google-oauth2|1098";
const CAROL: &str = "auth0|carol";

/// A credential row as the existing system wrote it.
struct Legacy {
    user_id: &'static str,
    credential_type: &'static str,
    /// The nickname it wrote; `None` is NULL (at step 2 there is no column at all).
    nickname: Option<&'static str>,
    api_key: &'static str,
    secret_key: &'static str,
}

/// Accounts written at step 2 (before the nickname migration).
const STEP2_ACCOUNTS: &[(&str, &str)] = &[(ALICE, "Alice Trading"), (BOB, "Bob's bots")];

/// Credentials written at step 2: one per (account, type), no nickname column.
const STEP2_CREDENTIALS: &[Legacy] = &[
    Legacy {
        user_id: ALICE,
        credential_type: "alpaca_paper",
        nickname: None,
        api_key: "PKALICEPAPER0001",
        secret_key: "alice-paper-secret-0001",
    },
    Legacy {
        user_id: ALICE,
        credential_type: "alpaca_live",
        nickname: None,
        api_key: "AKALICELIVE0001",
        secret_key: "alice-live-secret-0001",
    },
    Legacy {
        user_id: BOB,
        credential_type: "alpaca_paper",
        nickname: None,
        api_key: "PKBOBPAPER0001",
        secret_key: "bob-paper-secret-0001",
    },
    Legacy {
        user_id: BOB,
        credential_type: "polygon",
        nickname: None,
        api_key: "POLYBOB0001",
        secret_key: "bob-polygon-secret-0001",
    },
];

/// After its nickname migration, Alice renamed her first paper key.
const RENAMED: (&str, &str, &str) = (ALICE, "alpaca_paper", "Momentum");

/// Accounts written at step 3 (after the nickname migration).
const STEP3_ACCOUNTS: &[(&str, &str)] = &[(CAROL, "Carol")];

/// Credentials written at step 3: a second key of a type an account already has,
/// custom nicknames, and one row some code path wrote without a nickname.
const STEP3_CREDENTIALS: &[Legacy] = &[
    Legacy {
        user_id: ALICE,
        credential_type: "alpaca_paper",
        nickname: Some("Swing (caf\u{e9})"),
        api_key: "PKALICEPAPER0002",
        secret_key: "alice-paper-secret-0002",
    },
    Legacy {
        user_id: BOB,
        credential_type: "polygon",
        nickname: Some("Backtests"),
        api_key: "POLYBOB0002",
        secret_key: "bob-polygon-secret-0002",
    },
    Legacy {
        user_id: CAROL,
        credential_type: "alpaca_live",
        nickname: None,
        api_key: "AKCAROLLIVE0001",
        secret_key: "carol-live-secret-0001",
    },
];

/// A credential as seen through the crate after adoption, keys decrypted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    user_id: String,
    credential_type: String,
    nickname: String,
    api_key: String,
    secret_key: String,
}

impl Seen {
    /// What the crate must see for a legacy row whose final nickname is `nickname`.
    fn expected(legacy: &Legacy, nickname: &str) -> Seen {
        Seen {
            user_id: legacy.user_id.into(),
            credential_type: legacy.credential_type.into(),
            nickname: nickname.into(),
            api_key: legacy.api_key.into(),
            secret_key: legacy.secret_key.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Three starting points converge
// ---------------------------------------------------------------------------

fn three_starting_points_converge() {
    let fresh = TestDb::postgres();
    let step2 = TestDb::postgres();
    let step3 = TestDb::postgres();
    let plaintexts: Vec<&str> = STEP2_CREDENTIALS
        .iter()
        .chain(STEP3_CREDENTIALS)
        .flat_map(|c| [c.api_key, c.secret_key])
        .collect();
    let (python_key, tokens) = python_encrypt(None, &plaintexts);
    let tokens: HashMap<&str, String> = plaintexts.iter().copied().zip(tokens).collect();
    let migration_count = migration_folders().len();

    // (a) A fresh database, migrated by the crate.
    let applied = fresh
        .database()
        .run_migrations()
        .expect("migrate the fresh database");
    assert_eq!(
        applied.len(),
        migration_count,
        "fresh database: every migration runs"
    );

    // (b) The existing system at step 2, with data, then adopted.
    step2.execute(&fixture("legacy_step2.sql"));
    legacy_insert(&step2, STEP2_ACCOUNTS, STEP2_CREDENTIALS, &tokens, false);
    let applied = step2
        .database()
        .run_migrations()
        .expect("migrate the step-2 database");
    assert_eq!(
        applied.len(),
        migration_count,
        "step-2 database: without diesel's bookkeeping table every migration runs, and each \
         must accept what is already there"
    );

    // (c) The existing system at step 3: data from before and after its nickname
    // migration, two keys of one type under one account, custom nicknames.
    step3.execute(&fixture("legacy_step2.sql"));
    legacy_insert(&step3, STEP2_ACCOUNTS, STEP2_CREDENTIALS, &tokens, false);
    step3.execute(&fixture("legacy_step3.sql"));
    let (user, credential_type, nickname) = RENAMED;
    step3.execute(&format!(
        "UPDATE user_credentials SET nickname = {} WHERE user_id = {} AND credential_type = {}",
        literal(nickname),
        literal(user),
        literal(credential_type),
    ));
    legacy_insert(&step3, STEP3_ACCOUNTS, STEP3_CREDENTIALS, &tokens, true);
    let applied = step3
        .database()
        .run_migrations()
        .expect("migrate the step-3 database");
    assert_eq!(
        applied.len(),
        migration_count,
        "step-3 database: every migration runs"
    );

    // The schemas converge.
    let fresh_dump = schema_dump(&fresh);
    assert_design_schema(&fresh_dump);
    assert_same_schema(
        "fresh database",
        &fresh_dump,
        "adopted step-2 database",
        &schema_dump(&step2),
    );
    assert_same_schema(
        "fresh database",
        &fresh_dump,
        "adopted step-3 database",
        &schema_dump(&step3),
    );

    // Nothing was lost in (b): NULL nicknames became the credential type.
    let expected_step2: Vec<Seen> = STEP2_CREDENTIALS
        .iter()
        .map(|c| Seen::expected(c, c.credential_type))
        .collect();
    assert_adopted(
        "adopted step-2 database",
        &step2,
        &python_key,
        &expected_step2,
    );

    // Nothing was lost in (c): custom nicknames untouched, both keys of one type kept,
    // the NULL nickname backfilled.
    let expected_step3: Vec<Seen> = STEP2_CREDENTIALS
        .iter()
        .map(|c| {
            let renamed = (c.user_id, c.credential_type) == (RENAMED.0, RENAMED.1);
            let nickname = if renamed {
                RENAMED.2
            } else {
                c.credential_type
            };
            Seen::expected(c, nickname)
        })
        .chain(
            STEP3_CREDENTIALS
                .iter()
                .map(|c| Seen::expected(c, c.nickname.unwrap_or(c.credential_type))),
        )
        .collect();
    assert_adopted(
        "adopted step-3 database",
        &step3,
        &python_key,
        &expected_step3,
    );

    let store = CredentialStore::new(step3.database(), python_keyring(&python_key));
    let alice = store
        .account_by_user_id(ALICE)
        .expect("look up Alice")
        .expect("Alice's account survived adoption");
    let paper = store
        .credentials_by_type(&alice, "alpaca_paper")
        .expect("credentials_by_type");
    assert_eq!(
        paper.len(),
        2,
        "step-3 database: both of Alice's alpaca_paper credentials are kept: {paper:?}"
    );
    let swing = store
        .credential_by_nickname(&alice, "Swing (caf\u{e9})")
        .expect("a custom nickname is not ambiguous")
        .expect("the custom nickname written by the existing system is found");
    let keys = store.keys(&alice, swing.id).expect("decrypt Swing");
    assert_eq!(keys.api_key().expose_secret(), "PKALICEPAPER0002");
    let momentum = store
        .credential_by_nickname(&alice, "Momentum")
        .expect("lookup by a renamed nickname")
        .expect("the renamed credential is found by its new nickname");
    assert_eq!(
        store
            .keys(&alice, momentum.id)
            .expect("decrypt Momentum")
            .api_key()
            .expose_secret(),
        "PKALICEPAPER0001"
    );
    assert!(
        store
            .credentials_by_nickname(&alice, "alpaca_paper")
            .expect("lookup")
            .is_empty(),
        "the renamed credential no longer answers to its old, backfilled nickname"
    );
}

/// Inserts accounts and credentials as the existing system did: plain SQL as the
/// superuser (who bypasses row-level security), ids from the `gen_random_uuid()`
/// defaults, flags and timestamps from their defaults.
fn legacy_insert(
    db: &TestDb,
    accounts: &[(&str, &str)],
    credentials: &[Legacy],
    tokens: &HashMap<&str, String>,
    has_nickname_column: bool,
) {
    let mut sql = String::new();
    for (user_id, account_name) in accounts {
        sql += &format!(
            "INSERT INTO user_accounts (user_id, account_name) VALUES ({}, {});\n",
            literal(user_id),
            literal(account_name)
        );
    }
    for credential in credentials {
        let (nickname_column, nickname_value) = if has_nickname_column {
            let value = credential.nickname.map_or("NULL".to_owned(), literal);
            (", nickname", format!(", {value}"))
        } else {
            assert!(
                credential.nickname.is_none(),
                "no nickname column at step 2"
            );
            ("", String::new())
        };
        sql += &format!(
            "INSERT INTO user_credentials \
                 (user_account_id, user_id, credential_type{nickname_column}, api_key, secret_key) \
             SELECT id, user_id, {}{nickname_value}, {}, {} FROM user_accounts WHERE user_id = {};\n",
            literal(credential.credential_type),
            literal(&tokens[credential.api_key]),
            literal(&tokens[credential.secret_key]),
            literal(credential.user_id),
        );
    }
    db.execute(&sql);
}

/// Checks that every account and credential survived adoption, as `expected`: read
/// through the crate (on the superuser's connection, with the account's own
/// row-level-security context) and decrypted with the Python key.
fn assert_adopted(label: &str, db: &TestDb, python_key: &str, expected: &[Seen]) {
    let users: BTreeSet<&str> = expected.iter().map(|s| s.user_id.as_str()).collect();
    assert_eq!(
        db.count("user_accounts"),
        users.len() as i64,
        "{label}: every account row is still there"
    );
    assert_eq!(
        db.count("user_credentials"),
        expected.len() as i64,
        "{label}: every credential row is still there"
    );
    let mut conn = PgConnection::establish(&db.url).expect("superuser connection");
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT COUNT(*) AS n FROM user_credentials WHERE nickname IS NULL"
        ),
        0,
        "{label}: every NULL nickname was backfilled by the migrations"
    );

    let store = CredentialStore::new(db.database(), python_keyring(python_key));
    let mut seen = Vec::new();
    for user_id in users {
        let account = store
            .account_by_user_id(user_id)
            .unwrap_or_else(|e| panic!("{label}: look up {user_id}: {e}"))
            .unwrap_or_else(|| panic!("{label}: the account of {user_id} is visible to the crate"));
        for credential in store.credentials(&account).expect("credentials") {
            let keys = store.keys(&account, credential.id).unwrap_or_else(|e| {
                panic!(
                    "{label}: credential {} ({}) of {user_id} decrypts with the Python key: {e}",
                    credential.id, credential.credential_type
                )
            });
            seen.push(Seen {
                user_id: credential.user_id.clone(),
                credential_type: credential.credential_type.clone(),
                nickname: credential.nickname.clone().unwrap_or_else(|| {
                    panic!("{label}: credential {} has no nickname", credential.id)
                }),
                api_key: keys.api_key().expose_secret().to_owned(),
                secret_key: keys.secret_key().expose_secret().to_owned(),
            });
        }
    }
    let mut expected = expected.to_vec();
    expected.sort();
    seen.sort();
    assert_eq!(
        seen, expected,
        "{label}: the credentials the crate reads after adoption"
    );
    assert_eq!(
        store
            .maintenance()
            .backfill_nicknames(100)
            .expect("backfill as superuser"),
        0,
        "{label}: the migrations already backfilled every nickname"
    );
}

/// The design's schema, checked on a dump, so that "all three are equal" cannot
/// pass on three equally wrong (or empty) dumps.
fn assert_design_schema(dump: &[String]) {
    let has = |needle: &str| dump.iter().any(|line| line.contains(needle));
    for needle in [
        "CREATE TABLE public.user_accounts (",
        "CREATE TABLE public.user_credentials (",
        "CREATE FUNCTION public.current_user_id() RETURNS text",
        "CREATE INDEX idx_user_credentials_nickname ON public.user_credentials USING btree (user_account_id, nickname);",
        "ALTER TABLE ONLY public.user_accounts FORCE ROW LEVEL SECURITY;",
        "ALTER TABLE ONLY public.user_credentials FORCE ROW LEVEL SECURITY;",
        "CREATE POLICY user_credentials_select ON public.user_credentials FOR SELECT",
        // Migration 000005: a credential's user_id is its account's.
        "ADD CONSTRAINT user_accounts_id_user_id_key UNIQUE (id, user_id);",
        "ADD CONSTRAINT user_credentials_owner_matches_account_fkey FOREIGN KEY (user_account_id, user_id) REFERENCES public.user_accounts(id, user_id) ON UPDATE CASCADE ON DELETE CASCADE;",
    ] {
        assert!(has(needle), "the migrated schema lacks `{needle}`:\n{}", dump.join("\n"));
    }
    assert!(
        !has("idx_user_credentials_unique"),
        "the old unique (user_account_id, credential_type) index must be gone:\n{}",
        dump.join("\n")
    );
    // Known and intended: ADD COLUMN appends, so `nickname` is physically last.
    let table = dump
        .iter()
        .position(|line| line == "CREATE TABLE public.user_credentials (")
        .expect("user_credentials table");
    let end = table
        + dump[table..]
            .iter()
            .position(|line| line == ");")
            .expect("end of table");
    assert!(
        dump[end - 1]
            .trim_start()
            .starts_with("nickname character varying(255)"),
        "nickname is the last column of user_credentials (it is added by ALTER TABLE): {:?}",
        &dump[table..=end]
    );
}

// ---------------------------------------------------------------------------
// 2. Fernet tokens read both ways
// ---------------------------------------------------------------------------

fn python_and_crate_read_each_others_tokens() {
    let db = TestDb::postgres();
    db.database().run_migrations().expect("migrations");
    let crate_key = common::test_key();
    // Fernet, the format a database shared with the Python system is written in.
    let store = CredentialStore::new(db.database(), python_keyring(&crate_key))
        .with_format(CipherFormat::Fernet);
    let account = store
        .create_account(&NewUserAccount::new(ALICE, "Alice"))
        .expect("create account");

    // Crate → Python.
    let written = [
        ("alpaca_paper", "PKCRATE0001", "crate-secret-0001"),
        (
            "polygon",
            "POLY-\u{fc}n\u{ef}code",
            "s\u{e9}cret \u{2603} 0002",
        ),
    ];
    for (credential_type, api_key, secret_key) in written {
        let credential = store
            .insert_credential(
                &account,
                &NewUserCredential::new(credential_type, api_key, secret_key),
            )
            .expect("insert through the crate");
        let (api_token, secret_token) = raw_tokens(&db, credential.id);
        for (token, plaintext) in [(&api_token, api_key), (&secret_token, secret_key)] {
            assert!(
                token.starts_with("gAAAAA") && !token.contains(plaintext),
                "the database holds a Fernet token, not the plaintext: {token}"
            );
        }
        let decrypted = python_decrypt(&crate_key, &[&api_token, &secret_token]);
        assert_eq!(
            decrypted,
            [api_key, secret_key],
            "Python's Fernet decrypts the tokens the crate wrote"
        );
    }

    // Python → crate.
    let plaintexts = [
        "PKPYTHON0001",
        "python-secret-0001",
        "AKPYTHON0002",
        "python-secret-\u{e9}0002",
    ];
    let (python_key, tokens) = python_encrypt(None, &plaintexts);
    let mut python_rows = Vec::new();
    for (pair, credential_type) in tokens.chunks(2).zip(["alpaca_paper", "alpaca_live"]) {
        let id = Uuid::now_v7();
        db.execute(&format!(
            "INSERT INTO user_credentials \
                 (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key) \
             VALUES ('{id}', '{}', {}, '{credential_type}', 'from python', {}, {})",
            account.id(),
            literal(account.user_id()),
            literal(&pair[0]),
            literal(&pair[1]),
        ));
        python_rows.push(id);
    }
    let expected = [
        (plaintexts[0], plaintexts[1]),
        (plaintexts[2], plaintexts[3]),
    ];

    let python_only = CredentialStore::new(db.database(), python_keyring(&python_key));
    let new_key = common::test_key();
    let rotated = CredentialStore::new(
        db.database(),
        Keyring::from_fernet_keys([new_key.as_str(), python_key.as_str()]).expect("keyring"),
    );
    for (label, store) in [
        ("the Python key", &python_only),
        ("a new primary key, then the Python key", &rotated),
    ] {
        for (id, (api_key, secret_key)) in python_rows.iter().zip(expected) {
            let keys = store
                .keys(&account, *id)
                .unwrap_or_else(|e| panic!("a keyring of {label} reads Python's token: {e}"));
            assert_eq!(
                keys.api_key().expose_secret(),
                api_key,
                "api_key, keyring of {label}"
            );
            assert_eq!(
                keys.secret_key().expose_secret(),
                secret_key,
                "secret_key, keyring of {label}"
            );
        }
    }

    let new_only = CredentialStore::new(
        db.database(),
        Keyring::from_fernet_keys([new_key]).expect("keyring"),
    );
    match new_only.keys(&account, python_rows[0]) {
        Err(Error::Decryption { credential_id, .. }) => assert_eq!(credential_id, python_rows[0]),
        other => panic!("a keyring without the Python key must refuse its token, got {other:?}"),
    }
}

/// The stored `api_key` and `secret_key` of a credential, read as the superuser.
fn raw_tokens(db: &TestDb, id: Uuid) -> (String, String) {
    #[derive(QueryableByName)]
    struct Raw {
        #[diesel(sql_type = diesel::sql_types::Text)]
        api_key: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_key: String,
    }
    let mut conn = PgConnection::establish(&db.url).expect("superuser connection");
    let raw: Raw =
        diesel::sql_query("SELECT api_key, secret_key FROM user_credentials WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(id)
            .get_result(&mut conn)
            .expect("read the raw ciphertext");
    (raw.api_key, raw.secret_key)
}

// ---------------------------------------------------------------------------
// 3. An ordinary role under forced row-level security
// ---------------------------------------------------------------------------

fn crate_works_as_an_ordinary_role_under_forced_rls() {
    let db = TestDb::postgres();
    db.database()
        .run_migrations()
        .expect("migrate as superuser");
    let (_, database) = db.pg_admin().expect("a PostgreSQL test database");
    let role_guard = RoleGuard::new(&db, "svc");
    let role = role_guard.role.clone();
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
         GRANT CONNECT ON DATABASE {database} TO {role};
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON user_accounts, user_credentials, account_keys TO {role};
         GRANT SELECT ON retired_account_keys TO {role};
         GRANT EXECUTE ON FUNCTION current_user_id() TO {role};"
    ));
    let role_url = role_guard.url();
    let store = CredentialStore::new(
        Database::open(&role_url).expect("open the crate as the service role"),
        common::test_keyring(),
    );

    // Each user creates an account and two credentials; both use the nickname "Main".
    let mut accounts: Vec<(UserAccount, Vec<Uuid>)> = Vec::new();
    for (user_id, prefix) in [(ALICE, "ALICE"), (BOB, "BOB")] {
        let account = store
            .create_account(&NewUserAccount::new(user_id, prefix))
            .unwrap_or_else(|e| panic!("create_account for {user_id} as the service role: {e}"));
        let mut ids = Vec::new();
        for (credential_type, nickname) in [("alpaca_paper", "Main"), ("alpaca_live", "Live")] {
            let new = NewUserCredential::new(
                credential_type,
                format!("PK{prefix}{credential_type}"),
                format!("secret-{prefix}-{credential_type}"),
            )
            .nickname(nickname);
            let credential = store.insert_credential(&account, &new).unwrap_or_else(|e| {
                panic!("insert_credential for {user_id} as the service role: {e}")
            });
            ids.push(credential.id);
        }
        accounts.push((account, ids));
    }
    assert_eq!(
        db.count("user_credentials"),
        4,
        "the superuser sees all four rows"
    );

    for (account, ids) in &accounts {
        let user = account.user_id();
        let found = store
            .account_by_user_id(user)
            .expect("account_by_user_id")
            .unwrap_or_else(|| panic!("{user} sees their own account"));
        assert_eq!(&found, account);
        let listed: BTreeSet<Uuid> = store
            .credentials(account)
            .expect("credentials")
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            listed,
            ids.iter().copied().collect(),
            "{user} lists exactly their own credentials"
        );
        let main = store
            .credential_by_nickname(account, "Main")
            .expect("\"Main\" is not ambiguous within one account, though both users use it")
            .unwrap_or_else(|| panic!("{user} finds their \"Main\" credential"));
        assert_eq!(main.id, ids[0], "{user}'s \"Main\" is their own");
        assert_eq!(
            store
                .credentials_by_nickname(account, "Main")
                .expect("credentials_by_nickname")
                .len(),
            1
        );
        assert_eq!(
            store
                .credentials_by_type(account, "alpaca_live")
                .expect("credentials_by_type")
                .len(),
            1
        );
        let keys = store.keys(account, main.id).expect("keys");
        assert_eq!(
            keys.api_key().expose_secret(),
            format!("PK{}alpaca_paper", account.account_name()),
            "{user} decrypts their own key"
        );
    }

    // One user's calls never reach the other's rows, even with the other's ids.
    let (alice, alice_ids) = &accounts[0];
    let (bob, bob_ids) = &accounts[1];
    match store.keys(alice, bob_ids[0]) {
        Err(Error::CredentialNotFound { .. }) => {}
        other => panic!("Alice must not read Bob's credential by id, got {other:?}"),
    }
    let forged = AccountScope::new(alice.user_id(), bob.id()).unwrap();
    assert!(
        store
            .credentials(&forged)
            .expect("list with a forged account")
            .is_empty(),
        "Bob's account id under Alice's user id shows nothing"
    );
    let refused = store.insert_credential(&forged, &NewUserCredential::new("polygon", "PKX", "sx"));
    assert!(
        matches!(
            refused,
            Err(Error::UnknownAccount { .. } | Error::AccountUserMismatch { .. })
        ),
        "inserting under Bob's account with Alice's user id is refused, got {refused:?}"
    );
    assert_eq!(
        db.count("user_credentials"),
        4,
        "the refused insert wrote nothing"
    );

    // A plain connection as the role, without the context, sees nothing.
    let mut raw = PgConnection::establish(&role_url).expect("plain connection as the service role");
    let count = "SELECT COUNT(*) AS n FROM user_credentials";
    assert_eq!(
        scalar(&mut raw, count),
        0,
        "forced RLS: the role sees no credential without app.current_user_id, while 4 exist"
    );
    assert_eq!(
        scalar(&mut raw, "SELECT COUNT(*) AS n FROM user_accounts"),
        0
    );
    raw.batch_execute(&format!(
        "SELECT set_config('app.current_user_id', {}, false)",
        literal(alice.user_id())
    ))
    .expect("set the context");
    assert_eq!(
        scalar(&mut raw, count),
        alice_ids.len() as i64,
        "with Alice's context: her rows only"
    );
    raw.batch_execute("RESET app.current_user_id")
        .expect("reset the context");
    assert_eq!(
        scalar(&mut raw, count),
        0,
        "a reset (empty) context sees nothing"
    );

    // A cross-user maintenance job refuses as this role instead of changing nothing.
    db.execute(&format!(
        "UPDATE user_credentials SET nickname = NULL WHERE id = '{}'",
        bob_ids[1]
    ));
    match store.maintenance().backfill_nicknames(100) {
        Err(Error::RowSecurityActive { .. }) => {}
        other => panic!(
            "backfill_nicknames as a role under forced RLS must fail with RowSecurityActive \
             (it would see no rows), got {other:?}"
        ),
    }
    let mut superuser = PgConnection::establish(&db.url).expect("superuser connection");
    let nulls = "SELECT COUNT(*) AS n FROM user_credentials WHERE nickname IS NULL";
    assert_eq!(
        scalar(&mut superuser, nulls),
        1,
        "the refused backfill changed nothing"
    );
    let admin_store = CredentialStore::new(db.database(), common::test_keyring());
    assert_eq!(
        admin_store
            .maintenance()
            .backfill_nicknames(100)
            .expect("backfill as superuser"),
        1
    );
    assert_eq!(scalar(&mut superuser, nulls), 0);
}

// ---------------------------------------------------------------------------
// 4. Migrations are idempotent
// ---------------------------------------------------------------------------

fn migrations_are_idempotent_when_rerun_without_bookkeeping() {
    let db = TestDb::postgres();
    let store = db.store();
    let account = store
        .create_account(&NewUserAccount::new(ALICE, "Alice"))
        .expect("create account");
    let credential = store
        .insert_credential(
            &account,
            &NewUserCredential::new("alpaca_paper", "PKRERUN", "rerun-secret"),
        )
        .expect("insert credential");
    let before = schema_dump(&db);

    for folder in migration_folders() {
        let up = folder.join("up.sql");
        let sql =
            std::fs::read_to_string(&up).unwrap_or_else(|e| panic!("read {}: {e}", up.display()));
        db.execute(&sql);
    }

    assert_same_schema(
        "after the crate's migrations",
        &before,
        "after running every up.sql again",
        &schema_dump(&db),
    );
    let keys = store
        .keys(&account, credential.id)
        .expect("the credential survived");
    assert_eq!(keys.api_key().expose_secret(), "PKRERUN");
    assert_eq!(
        store.credentials(&account).expect("list")[0]
            .nickname
            .as_deref(),
        Some("alpaca_paper")
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const DIESEL_TABLE: &str = "__diesel_schema_migrations";

/// The crate's PostgreSQL migration folders, oldest first.
fn migration_folders() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    folders.sort();
    assert!(!folders.is_empty(), "no migrations under {}", dir.display());
    folders
}

/// A file of `tests/fixtures/`.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The one `BIGINT` column `n` of a query's one row.
fn scalar(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<Row>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

fn python_keyring(key: &str) -> Keyring {
    Keyring::from_fernet_keys([key]).expect("a valid Fernet key")
}

/// `pg_dump --schema-only --no-owner --no-privileges`, without diesel's bookkeeping
/// table, comments, blank lines and session settings: one line per element.
fn schema_dump(db: &TestDb) -> Vec<String> {
    let output = Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--dbname",
            &db.url,
        ])
        .output()
        .expect("run pg_dump (it must be on PATH)");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    normalise_dump(&String::from_utf8(output.stdout).expect("pg_dump prints UTF-8"))
}

fn normalise_dump(dump: &str) -> Vec<String> {
    let mut in_diesel_object = false;
    let mut lines = Vec::new();
    for line in dump.lines() {
        // pg_dump heads every object with `-- Name: <name>; Type: …`: skip diesel's
        // table and everything that belongs to it (its primary key).
        if let Some(header) = line.strip_prefix("-- Name: ") {
            in_diesel_object = header.contains(DIESEL_TABLE);
            continue;
        }
        let trimmed = line.trim();
        let noise = trimmed.is_empty()
            || trimmed.starts_with("--")
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config(")
            || line.starts_with("\\restrict")
            || line.starts_with("\\unrestrict");
        if noise || in_diesel_object || line.contains(DIESEL_TABLE) {
            continue;
        }
        lines.push(line.to_owned());
    }
    lines
}

/// Fails with a line diff (`-` only in `left`, `+` only in `right`) unless the two
/// normalised dumps are equal.
fn assert_same_schema(left_label: &str, left: &[String], right_label: &str, right: &[String]) {
    if left == right {
        return;
    }
    panic!(
        "the schema of the {right_label} differs from the {left_label} \
         (normalised pg_dump --schema-only; `-` only in the {left_label}, `+` only in the {right_label}):\n{}",
        line_diff(left, right)
    );
}

/// A longest-common-subsequence line diff, with three lines of context around changes.
fn line_diff(left: &[String], right: &[String]) -> String {
    let (n, m) = (left.len(), right.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if left[i] == right[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && left[i] == right[j] {
            ops.push((' ', &left[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', &left[i]));
            i += 1;
        } else {
            ops.push(('+', &right[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(3)..(k + 4).min(ops.len())]
            .iter()
            .any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out += "   ...\n";
                skipped = false;
            }
            out += &format!("{op}  {line}\n");
        } else {
            skipped = true;
        }
    }
    out
}

const PY_ENCRYPT: &str = "
import json, sys
from cryptography.fernet import Fernet
key = sys.argv[1].encode() if sys.argv[1] else Fernet.generate_key()
fernet = Fernet(key)
tokens = [fernet.encrypt(p.encode()).decode() for p in sys.argv[2:]]
print(json.dumps({'key': key.decode(), 'tokens': tokens}))
";

const PY_DECRYPT: &str = "
import json, sys
from cryptography.fernet import Fernet
fernet = Fernet(sys.argv[1].encode())
print(json.dumps([fernet.decrypt(t.encode()).decode() for t in sys.argv[2:]]))
";

/// Encrypts with Python's `cryptography.fernet`, under `key` or a key Python
/// generates: `(key, tokens)`.
fn python_encrypt(key: Option<&str>, plaintexts: &[&str]) -> (String, Vec<String>) {
    let mut args = vec![key.unwrap_or("")];
    args.extend_from_slice(plaintexts);
    let out = common::python(PY_ENCRYPT, &args);
    let value: serde_json::Value = serde_json::from_str(&out).expect("Python prints JSON");
    let key = value["key"].as_str().expect("key").to_owned();
    let tokens = value["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_str().expect("token").to_owned())
        .collect();
    (key, tokens)
}

/// Decrypts with Python's `cryptography.fernet`.
fn python_decrypt(key: &str, tokens: &[&str]) -> Vec<String> {
    let mut args = vec![key];
    args.extend_from_slice(tokens);
    let out = common::python(PY_DECRYPT, &args);
    serde_json::from_str(&out).expect("Python prints a JSON list")
}
