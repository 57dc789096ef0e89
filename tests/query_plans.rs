//! The hot queries use an index at 100k credentials, and each is prepared once per
//! connection: diesel's statement cache, observed through its instrumentation.

mod common;

use common::TestDb;
use credential_store::{Backend, CredentialStore, Database, DatabaseOptions, UserAccount};
use diesel::connection::SimpleConnection;
use diesel::connection::{set_default_instrumentation, Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use std::sync::{Mutex, PoisonError};

fn main() {
    use common::trials::{Service, Test};
    const NAME: &str = "hot_queries_use_indexes_and_are_prepared_once";
    common::trials::run(vec![vec![
        Test::new(format!("{NAME}::sqlite"), || {
            hot_queries_use_indexes_and_are_prepared_once(&TestDb::sqlite())
        }),
        Test::new(format!("{NAME}::postgres"), || {
            hot_queries_use_indexes_and_are_prepared_once(&TestDb::postgres())
        })
        .needs(&[Service::Postgres]),
    ]]);
}

const ACCOUNTS: usize = 10_000;
const PER_ACCOUNT: usize = 10;

/// Every statement that any connection of this test binary prepares or runs.
static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Cached(String),
    Started(String),
}

fn record() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        let event = match event {
            // SQLite quotes identifiers with backticks, PostgreSQL with double quotes.
            InstrumentationEvent::CacheQuery { sql, .. } => Event::Cached(sql.replace('`', "\"")),
            InstrumentationEvent::StartQuery { query, .. } => {
                let text = query.to_string();
                let sql = text
                    .split(" -- binds:")
                    .next()
                    .unwrap_or_default()
                    .replace('`', "\"");
                Event::Started(sql)
            }
            _ => return,
        };
        EVENTS.lock().unwrap().push(event);
    }))
}

/// 100k credentials, ten per account, set-based, then ANALYZE.
fn populate(db: &TestDb) {
    let sql = match db.backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})
             INSERT INTO user_accounts (id, user_id, account_name)
             SELECT printf('00000000-0000-7000-8000-%012d', i), 'user-' || i, 'bench' FROM n;
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}),
                            m(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM m WHERE j < {per})
             INSERT INTO user_credentials (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key)
             SELECT printf('%08d-0000-7000-8000-%012d', j, i), printf('00000000-0000-7000-8000-%012d', i),
                    'user-' || i, 'type_' || (j % 3), 'bot-' || j, 'x', 'x'
             FROM n, m;
             ANALYZE;",
            last = ACCOUNTS - 1,
            per = PER_ACCOUNT - 1
        ),
        _ => format!(
            "INSERT INTO user_accounts (id, user_id, account_name)
             SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 'user-' || i, 'bench'
             FROM generate_series(0, {last}) AS i;
             INSERT INTO user_credentials (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key)
             SELECT (lpad(j::text, 8, '0') || '-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid,
                    ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid,
                    'user-' || i, 'type_' || (j % 3), 'bot-' || j, 'x', 'x'
             FROM generate_series(0, {last}) AS i, generate_series(0, {per}) AS j;
             ANALYZE;",
            last = ACCOUNTS - 1,
            per = PER_ACCOUNT - 1
        ),
    };
    db.execute(&sql);
    assert_eq!(
        db.count("user_credentials"),
        (ACCOUNTS * PER_ACCOUNT) as i64
    );
}

/// The query plan of `sql` (placeholders bound to `binds`), one line per step.
fn plan(db: &TestDb, sql: &str, binds: &[&str]) -> String {
    #[derive(QueryableByName)]
    struct SqlitePlan {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    #[derive(QueryableByName)]
    struct PgPlan {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    match db.backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
            let mut query = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}")).into_boxed();
            for bind in binds {
                query = query.bind::<diesel::sql_types::Text, _>(bind.to_string());
            }
            let rows: Vec<SqlitePlan> = query.load(&mut conn).unwrap();
            rows.into_iter()
                .map(|r| r.detail)
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            let mut conn = PgConnection::establish(&db.url).unwrap();
            let args = binds
                .iter()
                .map(|b| format!("'{b}'"))
                .collect::<Vec<_>>()
                .join(", ");
            conn.batch_execute(&format!("PREPARE hot AS {sql}"))
                .unwrap();
            let rows: Vec<PgPlan> = diesel::sql_query(format!("EXPLAIN EXECUTE hot({args})"))
                .load(&mut conn)
                .unwrap();
            rows.into_iter()
                .map(|r| r.line)
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

fn check(db: &TestDb) {
    db.database().run_migrations().unwrap();
    populate(db);
    // One pooled connection, so "prepared once per connection" is "prepared once".
    let options = DatabaseOptions::default().max_connections(1);
    let store = CredentialStore::new(
        Database::open_with(&db.url, &options).unwrap(),
        common::test_keyring(),
    );
    EVENTS.lock().unwrap().clear();

    let accounts: Vec<UserAccount> = (0..50)
        .map(|i| {
            store
                .account_by_user_id(&format!("user-{}", i * 199))
                .unwrap()
                .expect("account")
        })
        .collect();
    for (i, account) in accounts.iter().enumerate() {
        let found = store
            .credential_by_nickname(account, &format!("bot-{}", i % PER_ACCOUNT))
            .unwrap();
        assert_eq!(found.map(|c| c.user_account_id), Some(account.id()));
        assert_eq!(
            store.credentials_by_type(account, "type_1").unwrap().len(),
            3
        );
        assert_eq!(store.credentials(account).unwrap().len(), PER_ACCOUNT);
    }

    let events = EVENTS.lock().unwrap().clone();
    let is = |sql: &str, column: Option<&str>| {
        sql.starts_with("SELECT")
            && sql.contains("FROM \"user_credentials\"")
            && match column {
                Some(column) => sql.contains(&format!("\"user_credentials\".\"{column}\" =")),
                None => !sql.contains("\"nickname\" =") && !sql.contains("\"credential_type\" ="),
            }
    };
    for (name, column, binds) in [
        (
            "nickname lookup",
            Some("nickname"),
            // The nickname as stored today, and the input as given (legacy rows).
            vec![
                "00000000-0000-7000-8000-000000000199",
                "user-199",
                "bot-1",
                "bot-1",
            ],
        ),
        (
            "type lookup",
            Some("credential_type"),
            vec!["00000000-0000-7000-8000-000000000199", "user-199", "type_1"],
        ),
        (
            "account listing",
            None,
            vec!["00000000-0000-7000-8000-000000000199", "user-199"],
        ),
    ] {
        let cached: Vec<&String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Cached(sql) if is(sql, column) => Some(sql),
                _ => None,
            })
            .collect();
        let started = events
            .iter()
            .filter(|e| matches!(e, Event::Started(sql) if is(sql, column)))
            .count();
        assert_eq!(started, accounts.len(), "{name}: one statement per call");
        assert_eq!(
            cached.len(),
            1,
            "{name}: prepared once for {started} calls, got {cached:#?}"
        );

        let sql = cached[0];
        let plan = plan(db, sql, &binds);
        let uses_index = match db.backend {
            Backend::Sqlite => {
                plan.contains("USING INDEX idx_user_credentials_")
                    && !plan.contains("SCAN user_credentials")
            }
            _ => plan.contains("Index Scan") || plan.contains("Bitmap Index Scan"),
        };
        assert!(
            uses_index && !plan.contains("Seq Scan"),
            "{:?} {name} does not use an index:\n{plan}\n{sql}",
            db.backend
        );
        eprintln!("{:?} {name}:\n{plan}\n", db.backend);
    }
}

/// The backends take turns: each one's check reads [`EVENTS`], which every
/// connection of the binary writes to.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// On SQLite and on PostgreSQL.
fn hot_queries_use_indexes_and_are_prepared_once(db: &TestDb) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    set_default_instrumentation(record).unwrap();
    check(db);
}
