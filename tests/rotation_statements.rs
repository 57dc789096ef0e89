//! Key rotation on PostgreSQL writes each batch with one statement, not one per row.

mod common;

use common::{test_key, TestDb};
use credential_store::{CipherFormat, CredentialStore, Keyring, NewUserAccount, NewUserCredential};
use diesel::connection::{set_default_instrumentation, Instrumentation, InstrumentationEvent};
use std::sync::Mutex;

fn main() {
    common::trials::run(vec![trial!(
        a_rotation_batch_is_one_statement_on_postgres,
        [Postgres]
    )]);
}

static UPDATES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Record;

impl Instrumentation for Record {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let sql = query.to_string();
            if sql.starts_with("UPDATE") && sql.contains("api_key") {
                UPDATES.lock().unwrap().push(sql);
            }
        }
    }
}

fn a_rotation_batch_is_one_statement_on_postgres() {
    let db = TestDb::postgres();
    set_default_instrumentation(|| Some(Box::new(Record))).unwrap();
    let (old, new) = (test_key(), test_key());
    let fernet = CredentialStore::new(db.database(), Keyring::from_fernet_keys([&old]).unwrap())
        .with_format(CipherFormat::Fernet);
    fernet.database().run_migrations().unwrap();
    let account = fernet
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let rows: Vec<NewUserCredential> = (0..250)
        .map(|n| NewUserCredential::new("polygon", format!("PK{n}"), "s"))
        .collect();
    fernet.insert_credentials(&account, &rows).unwrap();

    let rotated = CredentialStore::new(
        db.database(),
        Keyring::from_fernet_keys([&new, &old]).unwrap(),
    );
    UPDATES.lock().unwrap().clear();
    let done = rotated.maintenance().rotate_keys(100, &mut |_| {}).unwrap();
    assert_eq!(done.rewritten, 250);
    let updates = UPDATES.lock().unwrap().clone();
    assert_eq!(
        updates.len(),
        3,
        "one UPDATE per batch of 100: {updates:#?}"
    );
    for credential in rotated.credentials(&account).unwrap() {
        rotated.keys(&account, credential.id).unwrap();
    }
    assert_eq!(
        rotated
            .maintenance()
            .rotate_keys(100, &mut |_| {})
            .unwrap()
            .rewritten,
        0
    );
}
