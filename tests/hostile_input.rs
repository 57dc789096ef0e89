//! Hostile strings through every string parameter of the public API, on SQLite and
//! on PostgreSQL: SQL injection attempts, quotes, a NUL byte, bidirectional-text
//! controls, emoji, strings on both sides of every length limit, LIKE wildcards,
//! backslashes and a lone combining mark.
//!
//! Each input, in each field, must either round-trip byte for byte (what was stored
//! is what is read back, and a lookup with the same string finds exactly it) or be
//! refused with `Error::Invalid` naming that field. Never a panic, never a generic
//! database error. Afterwards the schema is what it was and the tables hold exactly
//! the rows that were accepted.
//!
//! What is stored verbatim and what is normalised, by design:
//!
//! - `user_id` (of `NewUserAccount`, and as the argument of `account_by_user_id`
//!   and `account`) is an identity: kept exactly as given, never trimmed or
//!   normalised; 1 to 255 characters, no control characters.
//! - `account_name` and nicknames (on insert, on update and as lookup arguments)
//!   are trimmed and NFC-normalised, then 1 to 255 characters without control
//!   characters. An input that is already trimmed and in NFC (every input below
//!   except "padded with spaces" and "decomposed accent", including the lone
//!   combining mark, which NFC leaves alone) is stored verbatim; those two are
//!   stored normalised, and a lookup with the original string finds them, because
//!   lookups normalise the same way.
//! - `credential_type` is an identifier: 1 to 50 of `[a-z0-9_.-]` starting with a
//!   letter or digit, never trimmed or normalised.
//! - `api_key` and `secret_key` are opaque: 1 to 4096 bytes of anything, NUL
//!   included, stored encrypted and decrypted byte for byte.

mod common;

use common::TestDb;
use credential_store::{
    Backend, CredentialStore, CredentialUpdate, Error, Field, NewUserAccount, NewUserCredential,
    UserAccount,
};
use diesel::prelude::*;
use secrecy::ExposeSecret;
use std::panic::{catch_unwind, AssertUnwindSafe};
use uuid::Uuid;

fn main() {
    common::trials::run(vec![hostile_strings_round_trip_or_are_refused::tests()]);
}

/// What the crate must do with an input in a field.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Stored and read back byte for byte.
    Verbatim,
    /// Stored as this (trimmed, NFC) text.
    Normalised(String),
    /// Refused with `Error::Invalid` naming the field.
    Refused,
}

use Expect::{Normalised, Refused, Verbatim};

impl Expect {
    /// What is stored for `input`, or `None` when it is refused.
    fn stored<'a>(&'a self, input: &'a str) -> Option<&'a str> {
        match self {
            Verbatim => Some(input),
            Normalised(text) => Some(text),
            Refused => None,
        }
    }
}

struct Hostile {
    name: &'static str,
    text: String,
    /// `user_id`: verbatim, 1..=255 characters, no control characters.
    user_id: Expect,
    /// `account_name` and nicknames: trimmed, NFC, 1..=255 characters, no controls.
    display: Expect,
    /// `credential_type`: 1..=50 of `[a-z0-9_.-]`, starting with a letter or digit.
    credential_type: Expect,
    /// `api_key`, `secret_key`: 1..=4096 bytes.
    secret: Expect,
}

fn hostile_inputs() -> Vec<Hostile> {
    let row =
        |name, text: String, [user_id, display, credential_type, secret]: [Expect; 4]| Hostile {
            name,
            text,
            user_id,
            display,
            credential_type,
            secret,
        };
    let longest_type = format!("x{}z", "_.-9".repeat(12));
    assert_eq!(longest_type.len(), 50);
    vec![
        row(
            "single quotes",
            "O'Brien's 'key'".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "double quotes",
            "the \"live\" key".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "SQL injection, comment",
            "'; DROP TABLE user_credentials; --".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "SQL injection, Bobby Tables",
            "Robert'); DROP TABLE user_accounts;--".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "NUL byte",
            "before\0after".into(),
            [Refused, Refused, Refused, Verbatim],
        ),
        row(
            "right-to-left mark",
            "paper\u{200F}1".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "right-to-left override",
            "\u{202E}yek.exe".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "emoji",
            "\u{1F511} live \u{1F4B8}".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "emoji ZWJ sequences",
            // woman technologist; family of four; rainbow flag (with VS16).
            "\u{1F469}\u{200D}\u{1F4BB} \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466} \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "255 characters, 765 bytes",
            "\u{65E5}".repeat(255),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "256 characters, 768 bytes",
            "\u{65E5}".repeat(256),
            [Refused, Refused, Refused, Verbatim],
        ),
        row(
            "4096 bytes, 2048 characters",
            "\u{E9}".repeat(2048),
            [Refused, Refused, Refused, Verbatim],
        ),
        row(
            "4097 bytes",
            format!("{}!", "\u{E9}".repeat(2048)),
            [Refused, Refused, Refused, Refused],
        ),
        row(
            "1 MiB",
            "k".repeat(1 << 20),
            [Refused, Refused, Refused, Refused],
        ),
        row(
            "backslashes",
            r"C:\keys\new\ \' \\ \0 \x00 \u0000".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "LIKE wildcard %",
            "%".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "LIKE wildcard _",
            "_".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "LIKE pattern",
            "%a_%".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "lone combining mark",
            "\u{0301}".into(),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
        row(
            "padded with spaces",
            "  padded  ".into(),
            [Verbatim, Normalised("padded".into()), Refused, Verbatim],
        ),
        row(
            "decomposed accent",
            "Cafe\u{0301}".into(),
            [Verbatim, Normalised("Caf\u{E9}".into()), Refused, Verbatim],
        ),
        row(
            "longest credential type",
            longest_type.clone(),
            [Verbatim, Verbatim, Verbatim, Verbatim],
        ),
        row(
            "credential type one too long",
            format!("{longest_type}9"),
            [Verbatim, Verbatim, Refused, Verbatim],
        ),
    ]
}

/// Rows the test expects in each table.
#[derive(Default)]
struct Accepted {
    accounts: i64,
    credentials: i64,
}

on_both_backends!(hostile_strings_round_trip_or_are_refused, |db| {
    let store = db.store();
    let schema_before = schema(db);
    let mut accepted = Accepted::default();
    let mut account = |user_id: &str| {
        accepted.accounts += 1;
        store
            .create_account(&NewUserAccount::new(user_id, "Hostile"))
            .expect("create a plain account")
    };
    let type_account = account("hostile|credential_type");
    let nickname_account = account("hostile|nickname");
    let keys_account = account("hostile|keys");
    let update_account = account("hostile|update");
    let lookup_account = account("hostile|lookups");
    store
        .insert_credential(
            &lookup_account,
            &NewUserCredential::new("alpaca_paper", "PK", "s").nickname("plain"),
        )
        .expect("a credential the lookups must not find");
    accepted.credentials += 1;

    for (index, input) in hostile_inputs().iter().enumerate() {
        let stage = |field: &str, check: &mut dyn FnMut()| {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(check)) {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                panic!(
                    "input \"{}\" ({} bytes) through {field}: {message}",
                    input.name,
                    input.text.len()
                );
            }
        };
        stage("NewUserAccount::user_id", &mut || {
            check_user_id(&store, input, &mut accepted)
        });
        stage("NewUserAccount::account_name", &mut || {
            check_account_name(&store, input, index, &mut accepted)
        });
        stage("NewUserCredential::credential_type", &mut || {
            check_credential_type(&store, &type_account, input, &mut accepted)
        });
        stage("NewUserCredential::nickname", &mut || {
            check_insert_nickname(&store, &nickname_account, input, &mut accepted)
        });
        stage("NewUserCredential::api_key / secret_key", &mut || {
            check_keys(&store, &keys_account, input, &mut accepted)
        });
        stage("CredentialUpdate::nickname", &mut || {
            check_update_nickname(&store, &update_account, input, index, &mut accepted)
        });
        stage("lookups", &mut || {
            check_lookups(&store, &lookup_account, input)
        });
    }

    assert_eq!(
        schema(db),
        schema_before,
        "the schema is unchanged: no injected statement ran"
    );
    assert_eq!(db.count("user_accounts"), accepted.accounts);
    assert_eq!(db.count("user_credentials"), accepted.credentials);
});

fn check_user_id(store: &CredentialStore, input: &Hostile, accepted: &mut Accepted) {
    let text = input.text.as_str();
    let result = store.create_account(&NewUserAccount::new(text, "Hostile"));
    match input.user_id.stored(text) {
        Some(expected) => {
            let account = result.unwrap_or_else(|e| panic!("refused: {}", short(&e)));
            accepted.accounts += 1;
            same(account.user_id(), expected, "the returned user_id");
            let found = store
                .account_by_user_id(text)
                .unwrap_or_else(|e| panic!("account_by_user_id: {}", short(&e)))
                .expect("account_by_user_id finds the account");
            assert_eq!(
                found.id(),
                account.id(),
                "account_by_user_id finds exactly it"
            );
            same(found.user_id(), expected, "user_id read back");
            let by_id = store
                .account(text, account.id())
                .unwrap_or_else(|e| panic!("account: {}", short(&e)))
                .expect("account(user_id, id) finds the account");
            assert_eq!(by_id, found);
        }
        None => {
            refused(result, Field::UserId, "create_account");
            refused(
                store.account_by_user_id(text),
                Field::UserId,
                "account_by_user_id",
            );
            refused(
                store.account(text, Uuid::now_v7()),
                Field::UserId,
                "account",
            );
        }
    }
}

fn check_account_name(
    store: &CredentialStore,
    input: &Hostile,
    index: usize,
    accepted: &mut Accepted,
) {
    let user_id = format!("hostile|account_name|{index}");
    let result = store.create_account(&NewUserAccount::new(&user_id, &input.text));
    match input.display.stored(&input.text) {
        Some(expected) => {
            let account = result.unwrap_or_else(|e| panic!("refused: {}", short(&e)));
            accepted.accounts += 1;
            same(
                account.account_name(),
                expected,
                "the returned account_name",
            );
            let found = store
                .account_by_user_id(&user_id)
                .unwrap()
                .expect("the account");
            same(found.account_name(), expected, "account_name read back");
        }
        None => {
            refused(result, Field::AccountName, "create_account");
            assert_eq!(
                store.account_by_user_id(&user_id).unwrap(),
                None,
                "nothing was written"
            );
        }
    }
}

fn check_credential_type(
    store: &CredentialStore,
    account: &UserAccount,
    input: &Hostile,
    accepted: &mut Accepted,
) {
    let text = input.text.as_str();
    let result = store.insert_credential(account, &NewUserCredential::new(text, "PK", "s"));
    match input.credential_type.stored(text) {
        Some(expected) => {
            let credential = result.unwrap_or_else(|e| panic!("refused: {}", short(&e)));
            accepted.credentials += 1;
            same(
                &credential.credential_type,
                expected,
                "the returned credential_type",
            );
            let found = store
                .credentials_by_type(account, text)
                .unwrap_or_else(|e| panic!("credentials_by_type: {}", short(&e)));
            assert_eq!(
                found.iter().map(|c| c.id).collect::<Vec<_>>(),
                [credential.id],
                "credentials_by_type finds exactly it"
            );
            same(
                &found[0].credential_type,
                expected,
                "credential_type read back",
            );
        }
        None => {
            refused(result, Field::CredentialType, "insert_credential");
            check_type_lookup(store, account, text);
        }
    }
}

fn check_insert_nickname(
    store: &CredentialStore,
    account: &UserAccount,
    input: &Hostile,
    accepted: &mut Accepted,
) {
    let text = input.text.as_str();
    let result = store.insert_credential(
        account,
        &NewUserCredential::new("alpaca_paper", "PK", "s").nickname(text),
    );
    match input.display.stored(text) {
        Some(expected) => {
            let credential = result.unwrap_or_else(|e| panic!("refused: {}", short(&e)));
            accepted.credentials += 1;
            same(
                credential.nickname.as_deref().expect("a nickname"),
                expected,
                "the returned nickname",
            );
            assert_found_by_nickname(store, account, text, expected, credential.id);
        }
        None => {
            refused(result, Field::Nickname, "insert_credential");
            refused(
                store.credentials_by_nickname(account, text),
                Field::Nickname,
                "credentials_by_nickname",
            );
            refused(
                store.credential_by_nickname(account, text),
                Field::Nickname,
                "credential_by_nickname",
            );
        }
    }
}

/// Every lookup by `text` (and by what was stored, if that differs) finds exactly
/// the credential `id`, whose stored nickname is `expected`.
fn assert_found_by_nickname(
    store: &CredentialStore,
    account: &UserAccount,
    text: &str,
    expected: &str,
    id: Uuid,
) {
    for lookup in [text, expected] {
        let found = store
            .credentials_by_nickname(account, lookup)
            .unwrap_or_else(|e| panic!("credentials_by_nickname: {}", short(&e)));
        assert_eq!(
            found.iter().map(|c| c.id).collect::<Vec<_>>(),
            [id],
            "credentials_by_nickname finds exactly it"
        );
        same(
            found[0].nickname.as_deref().unwrap(),
            expected,
            "nickname read back",
        );
        let one = store
            .credential_by_nickname(account, lookup)
            .unwrap_or_else(|e| panic!("credential_by_nickname: {}", short(&e)))
            .expect("credential_by_nickname finds it");
        assert_eq!(one.id, id);
    }
    let read = store.credential(account, id).unwrap().expect("by id");
    same(
        read.nickname.as_deref().unwrap(),
        expected,
        "nickname by id",
    );
}

fn check_keys(
    store: &CredentialStore,
    account: &UserAccount,
    input: &Hostile,
    accepted: &mut Accepted,
) {
    let text = input.text.as_str();
    for field in [Field::ApiKey, Field::SecretKey] {
        let new = match field {
            Field::ApiKey => NewUserCredential::new("alpaca_paper", text, "s"),
            _ => NewUserCredential::new("alpaca_paper", "PK", text),
        };
        let result = store.insert_credential(account, &new);
        match input.secret.stored(text) {
            Some(expected) => {
                let credential =
                    result.unwrap_or_else(|e| panic!("{field}: refused: {}", short(&e)));
                accepted.credentials += 1;
                let keys = store
                    .keys(account, credential.id)
                    .unwrap_or_else(|e| panic!("{field}: keys: {}", short(&e)));
                let (key, other, other_expected) = match field {
                    Field::ApiKey => (keys.api_key(), keys.secret_key(), "s"),
                    _ => (keys.secret_key(), keys.api_key(), "PK"),
                };
                same(key.expose_secret(), expected, &format!("{field} decrypted"));
                same(other.expose_secret(), other_expected, "the other key");
            }
            None => refused(result, field, "insert_credential"),
        }
    }
}

fn check_update_nickname(
    store: &CredentialStore,
    account: &UserAccount,
    input: &Hostile,
    index: usize,
    accepted: &mut Accepted,
) {
    let text = input.text.as_str();
    let before_name = format!("before {index}");
    let before = store
        .insert_credential(
            account,
            &NewUserCredential::new("alpaca_paper", "PK", "s").nickname(&before_name),
        )
        .expect("insert the credential to update");
    accepted.credentials += 1;
    let result = store.update_credential(
        account,
        before.id,
        &CredentialUpdate::default().nickname(input.text.clone()),
    );
    match input.display.stored(text) {
        Some(expected) => {
            let updated = result.unwrap_or_else(|e| panic!("refused: {}", short(&e)));
            same(
                updated.nickname.as_deref().expect("a nickname"),
                expected,
                "the returned nickname",
            );
            assert_found_by_nickname(store, account, text, expected, before.id);
            assert!(
                store
                    .credentials_by_nickname(account, &before_name)
                    .unwrap()
                    .is_empty(),
                "the old nickname finds nothing"
            );
        }
        None => {
            refused(result, Field::Nickname, "update_credential");
            assert_eq!(
                store.credential(account, before.id).unwrap().as_ref(),
                Some(&before),
                "the refused update changed nothing"
            );
        }
    }
}

/// Lookups on an account that holds none of the inputs (only `alpaca_paper`
/// nicknamed `plain`) find nothing, or refuse naming the field: a wildcard never
/// matches as a pattern.
fn check_lookups(store: &CredentialStore, account: &UserAccount, input: &Hostile) {
    let text = input.text.as_str();
    check_type_lookup(store, account, text);
    match input.display {
        Refused => {
            refused(
                store.credentials_by_nickname(account, text),
                Field::Nickname,
                "credentials_by_nickname",
            );
            refused(
                store.credential_by_nickname(account, text),
                Field::Nickname,
                "credential_by_nickname",
            );
        }
        _ => {
            assert!(
                store
                    .credentials_by_nickname(account, text)
                    .unwrap_or_else(|e| panic!("credentials_by_nickname: {}", short(&e)))
                    .is_empty(),
                "credentials_by_nickname on an account without it"
            );
            assert_eq!(
                store
                    .credential_by_nickname(account, text)
                    .unwrap_or_else(|e| panic!("credential_by_nickname: {}", short(&e))),
                None
            );
        }
    }
    if input.user_id == Refused {
        refused(
            store.account_by_user_id(text),
            Field::UserId,
            "account_by_user_id",
        );
    }
}

/// Asserts that `result` is `Error::Invalid` naming `field`. Never prints the value:
/// some inputs are a mebibyte long.
/// A lookup by a type nothing stores: refused naming the field when the text is
/// empty, over 50 characters or holds a control character; otherwise (a legacy type
/// may break today's rules) it finds nothing.
fn check_type_lookup(store: &CredentialStore, account: &UserAccount, text: &str) {
    let unusable =
        text.is_empty() || text.chars().count() > 50 || text.chars().any(char::is_control);
    let found = store.credentials_by_type(account, text);
    if unusable {
        refused(found, Field::CredentialType, "credentials_by_type");
    } else {
        let found = found.unwrap_or_else(|e| panic!("credentials_by_type: {}", short(&e)));
        assert!(
            found.iter().all(|c| c.credential_type == text),
            "credentials_by_type matches exactly"
        );
    }
}

fn refused<T>(result: Result<T, Error>, field: Field, call: &str) {
    match result {
        Err(Error::Invalid { field: named, .. }) if named == field => {}
        Err(Error::Invalid { field: named, rule }) => {
            panic!("{call}: refused naming `{named}` ({rule}), expected `{field}`")
        }
        Err(other) => panic!(
            "{call}: expected Error::Invalid naming `{field}`, got {}",
            short(&other)
        ),
        Ok(_) => panic!("{call}: accepted, expected Error::Invalid naming `{field}`"),
    }
}

/// Byte-for-byte equality, reported by length and first difference.
fn same(got: &str, expected: &str, what: &str) {
    if got.as_bytes() != expected.as_bytes() {
        let first_difference = got
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: got {} bytes, expected {} bytes; they differ from byte {first_difference}",
            got.len(),
            expected.len()
        );
    }
}

/// An error's `Debug` form, cut short.
fn short(err: &Error) -> String {
    let text = format!("{err:?} ({err})");
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The schema, one line per object: `sqlite_master` on SQLite; tables, columns,
/// indexes, constraints, policies, functions and triggers from the catalog on
/// PostgreSQL.
fn schema(db: &TestDb) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let lines: Vec<Line> = match db.backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap())
                .expect("sqlite connection");
            diesel::sql_query(
                "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') AS line \
                 FROM sqlite_master ORDER BY name",
            )
            .load(&mut conn)
            .expect("sqlite_master")
        }
        #[cfg(feature = "mysql")]
        Backend::Mysql => diesel::sql_query(MYSQL_SCHEMA)
            .load(&mut common::mysql_raw(&db.url))
            .expect("information_schema"),
        _ => {
            let mut conn = PgConnection::establish(&db.url).expect("pg connection");
            diesel::sql_query(PG_SCHEMA)
                .load(&mut conn)
                .expect("the catalog")
        }
    };
    assert!(lines.len() > 10, "a schema was read");
    lines.into_iter().map(|l| l.line).collect()
}

/// The schema from `information_schema` on MySQL: tables, columns, indexes and
/// constraints.
#[cfg(feature = "mysql")]
const MYSQL_SCHEMA: &str = "
SELECT line FROM (
    SELECT CONCAT('table ', table_name, ' ', engine, ' ', table_collation) AS line
    FROM information_schema.tables WHERE table_schema = DATABASE()
  UNION ALL
    SELECT CONCAT('column ', table_name, '.', column_name, ' ', column_type, ' ', is_nullable,
                  ' ', COALESCE(column_default, ''), ' ', COALESCE(collation_name, ''))
    FROM information_schema.columns WHERE table_schema = DATABASE()
  UNION ALL
    SELECT CONCAT('index ', table_name, '.', index_name, ' ', non_unique, ' ', seq_in_index,
                  ' ', column_name)
    FROM information_schema.statistics WHERE table_schema = DATABASE()
  UNION ALL
    SELECT CONCAT('constraint ', table_name, '.', constraint_name, ' ', constraint_type)
    FROM information_schema.table_constraints WHERE constraint_schema = DATABASE()
) AS schema_lines ORDER BY line";

const PG_SCHEMA: &str = "
SELECT line FROM (
    SELECT 'relation ' || relname || ' ' || relkind::text
           || ' rls=' || relrowsecurity || ' force=' || relforcerowsecurity AS line
    FROM pg_class WHERE relnamespace = 'public'::regnamespace
  UNION ALL
    SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
           || ' ' || COALESCE(character_maximum_length::text, '-')
           || ' nullable=' || is_nullable || ' default=' || COALESCE(column_default, '-')
    FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL
    SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL
    SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname
           || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
    SELECT 'policy ' || tablename || ' ' || policyname || ' ' || cmd
           || ' using=' || COALESCE(qual, '-') || ' check=' || COALESCE(with_check, '-')
    FROM pg_policies WHERE schemaname = 'public'
  UNION ALL
    SELECT 'function ' || oid::regprocedure::text || ' ' || md5(prosrc)
    FROM pg_proc WHERE pronamespace = 'public'::regnamespace
  UNION ALL
    SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname
    FROM pg_trigger
    WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
) schema ORDER BY line";
