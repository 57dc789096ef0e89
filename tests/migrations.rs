//! Migrations on both backends: every one reverts and re-applies, and a revert that
//! would lose data refuses and changes nothing.

mod common;

use credential_store::{CipherFormat, Error, NewUserAccount, NewUserCredential};
use secrecy::ExposeSecret;

fn main() {
    common::trials::run(vec![
        every_migration_reverts_and_reapplies::tests(),
        reverting_the_nickname_migration_refuses_on_duplicates::tests(),
        the_database_refuses_a_credential_of_another_user::tests(),
        the_owner_match_migration_refuses_existing_mismatches::tests(),
        trial!(
            the_owner_match_migration_counts_every_row_as_a_non_superuser_owner,
            [Postgres]
        ),
    ]);
}

const MIGRATIONS: usize = 7;

on_both_backends!(every_migration_reverts_and_reapplies, |db| {
    let database = db.database();
    assert_eq!(database.pending_migrations().unwrap().len(), MIGRATIONS);
    let applied = database.run_migrations().unwrap();
    assert_eq!(applied.len(), MIGRATIONS);
    assert!(database.pending_migrations().unwrap().is_empty());
    assert!(
        database.run_migrations().unwrap().is_empty(),
        "a second run applies nothing"
    );

    // Down to nothing, one at a time, newest first; then up again.
    let mut reverted = Vec::new();
    for _ in 0..MIGRATIONS {
        reverted.push(database.revert_last_migration().unwrap());
    }
    let mut newest_first = applied.clone();
    newest_first.reverse();
    assert_eq!(reverted, newest_first);
    assert_eq!(database.run_migrations().unwrap().len(), MIGRATIONS);

    // Redo each migration with data in the tables: nothing is lost. The data keys
    // (000006) and the owner foreign key (000005) stay while rows are stored: they
    // are reverted before the rows are written, and re-applied over them. Without
    // the data keys the store writes as the existing system does: Fernet.
    let store = db.store().with_format(CipherFormat::Fernet);
    for newest in ["20261208000007", "20261207000006", "20261125000005"] {
        assert_eq!(database.revert_last_migration().unwrap(), newest);
    }
    let account = store
        .create_account(&NewUserAccount::new("auth0|alice", "Alice"))
        .unwrap();
    for kind in ["alpaca_paper", "alpaca_live", "polygon"] {
        store
            .insert_credential(&account, &NewUserCredential::new(kind, "PK", "s"))
            .unwrap();
    }
    // Row-level security and the tables themselves stay while rows are stored.
    for _ in 0..2 {
        database.revert_last_migration().unwrap();
    }
    match database.revert_last_migration() {
        Err(Error::RevertWouldExpose {
            version,
            accounts: 1,
            credentials: 3,
        }) => assert_eq!(version, "20240115000002"),
        other => panic!("reverting row-level security with rows stored: {other:?}"),
    }
    assert_eq!(database.run_migrations().unwrap().len(), 5);
    // The retired data keys (000007) revert while none is stored; then the data
    // keys (000006) refuse: their revert would drop the keys sealed-v3
    // credentials need.
    assert_eq!(database.revert_last_migration().unwrap(), "20261208000007");
    match database.revert_last_migration() {
        Err(Error::RevertWouldExpose {
            version,
            accounts: 1,
            credentials: 3,
        }) => assert_eq!(version, "20261207000006"),
        other => panic!("reverting the data keys with rows stored: {other:?}"),
    }
    assert_eq!(database.run_migrations().unwrap(), ["20261208000007"]);
    // Re-applied over the rows, the data keys serve new writes: a sealed-v3
    // credential next to the Fernet ones.
    let sealed = store
        .clone()
        .with_format(CipherFormat::Sealed)
        .insert_credential(&account, &NewUserCredential::new("tradier", "PK", "s"))
        .unwrap();
    assert_eq!(db.count("account_keys"), 1);
    assert!(db
        .text(&format!(
            "SELECT api_key AS t FROM user_credentials WHERE id = '{}'",
            sealed.id
        ))
        .starts_with("sealed:v3:1:"));
    {
        assert_eq!(
            db.count("user_credentials"),
            4,
            "rows lost redoing 000003 to 000007"
        );
        for credential in store.credentials(&account).unwrap() {
            // Reverting the nickname migration drops the column; re-applying it
            // backfills the type.
            assert_eq!(
                credential.nickname.as_deref(),
                Some(credential.credential_type.as_str())
            );
            assert_eq!(
                store
                    .keys(&account, credential.id)
                    .unwrap()
                    .api_key()
                    .expose_secret(),
                "PK"
            );
        }
    }
});

on_both_backends!(
    reverting_the_nickname_migration_refuses_on_duplicates,
    |db| {
        // Without the data keys the store writes as the existing system does.
        let store = db.store().with_format(CipherFormat::Fernet);
        let database = store.database();
        // The migrations after the nickname one revert harmlessly (the data keys and
        // the owner foreign key only while no row is stored).
        for later in [
            "20261208000007",
            "20261207000006",
            "20261125000005",
            "20261125000004",
        ] {
            assert_eq!(database.revert_last_migration().unwrap(), later);
        }
        let account = store
            .create_account(&NewUserAccount::new("auth0|alice", "Alice"))
            .unwrap();
        let first = NewUserCredential::new("alpaca_paper", "PK1", "s").nickname("Momentum");
        let second = NewUserCredential::new("alpaca_paper", "PK2", "s").nickname("Swing");
        store.insert_credential(&account, &first).unwrap();
        store.insert_credential(&account, &second).unwrap();

        // A second pair sharing a type, under another account.
        let bob = store
            .create_account(&NewUserAccount::new("auth0|bob", "Bob"))
            .unwrap();
        for key in ["PG1", "PG2"] {
            store
                .insert_credential(&bob, &NewUserCredential::new("polygon", key, "s"))
                .unwrap();
        }
        match database.revert_last_migration() {
            Err(err @ Error::RevertRefused { .. }) => {
                assert!(
                    matches!(&err, Error::RevertRefused { version, conflicts: 2 } if version == "20240601000003"),
                    "{err:?}"
                );
                assert!(
                    err.to_string()
                        .contains("2 (account, credential_type) pair(s)"),
                    "{err}"
                );
            }
            other => panic!("expected a refused revert, got {other:?}"),
        }
        // Nothing changed: the nickname migration is still applied, both rows are there
        // with their nicknames.
        assert_eq!(database.pending_migrations().unwrap().len(), 4);
        database.run_migrations().unwrap();
        assert_eq!(db.count("user_credentials"), 4);
        assert_eq!(
            store
                .credential_by_nickname(&account, "Swing")
                .unwrap()
                .unwrap()
                .credential_type,
            "alpaca_paper"
        );
        assert_eq!(
            store
                .credential_by_nickname(&account, "Momentum")
                .unwrap()
                .unwrap()
                .credential_type,
            "alpaca_paper"
        );
    }
);

// ---------------------------------------------------------------------------
// 2026-11-25-000005_credential_owner_matches_account
// ---------------------------------------------------------------------------

/// What the database says when it refuses a credential whose `user_id` is not its
/// account's: the composite foreign key's name on PostgreSQL, the trigger's message
/// on SQLite.
fn owner_mismatch_refusal(backend: credential_store::Backend) -> &'static str {
    match backend {
        credential_store::Backend::Sqlite => {
            "user_credentials.user_id must equal its account's user_id"
        }
        _ => "user_credentials_owner_matches_account_fkey",
    }
}

on_both_backends!(the_database_refuses_a_credential_of_another_user, |db| {
    let store = db.store();
    let alice = store
        .create_account(&NewUserAccount::new("auth0|alice", "Alice"))
        .unwrap();
    let bob = store
        .create_account(&NewUserAccount::new("auth0|bob", "Bob"))
        .unwrap();
    let credential = store
        .insert_credential(&alice, &NewUserCredential::new("alpaca_paper", "PK", "s"))
        .unwrap();
    let insert = |account_id: uuid::Uuid, user_id: &str| {
        format!(
            "INSERT INTO user_credentials \
                 (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key) \
             VALUES ('{}', '{account_id}', '{user_id}', 'polygon', 'raw', 'ct', 'ct')",
            uuid::Uuid::now_v7()
        )
    };
    let refusal = owner_mismatch_refusal(db.backend);

    // Written outside the crate (as the superuser on PostgreSQL, which bypasses
    // row-level security): the schema alone refuses.
    for (what, sql) in [
        (
            "an insert under Bob's account with Alice's user_id",
            insert(bob.id(), "auth0|alice"),
        ),
        (
            "an insert under Alice's account with Bob's user_id",
            insert(alice.id(), "auth0|bob"),
        ),
        (
            "moving Alice's credential under Bob's account",
            format!(
                "UPDATE user_credentials SET user_account_id = '{}' WHERE id = '{}'",
                bob.id(),
                credential.id
            ),
        ),
        (
            "giving Alice's credential Bob's user_id",
            format!(
                "UPDATE user_credentials SET user_id = 'auth0|bob' WHERE id = '{}'",
                credential.id
            ),
        ),
    ] {
        match db.try_execute(&sql) {
            Err(message) => assert!(message.contains(refusal), "{what}: {message}"),
            Ok(()) => panic!("{what} was accepted"),
        }
    }
    assert_eq!(db.count("user_credentials"), 1, "nothing was written");
    assert_eq!(
        store.credential(&alice, credential.id).unwrap().as_ref(),
        Some(&credential),
        "Alice's credential is untouched"
    );

    // A consistent row is accepted; moving both columns together is too.
    db.execute(&insert(alice.id(), "auth0|alice"));
    db.execute(&format!(
        "UPDATE user_credentials SET user_account_id = '{}', user_id = 'auth0|bob' \
         WHERE nickname = 'raw'",
        bob.id()
    ));
    assert_eq!(store.credentials(&bob).unwrap().len(), 1);

    // A change of an account's user_id carries over to its credentials
    // (ON UPDATE CASCADE on PostgreSQL, a trigger on SQLite).
    db.execute(&format!(
        "UPDATE user_accounts SET user_id = 'auth0|alice-renamed' WHERE id = '{}'",
        alice.id()
    ));
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) AS n FROM user_credentials WHERE user_id = 'auth0|alice-renamed'"
        ),
        1
    );
    let renamed = store
        .account_by_user_id("auth0|alice-renamed")
        .unwrap()
        .expect("the renamed account");
    assert_eq!(store.credentials(&renamed).unwrap()[0].id, credential.id);

    // Deleting an account still deletes its credentials.
    db.execute(&format!(
        "DELETE FROM user_accounts WHERE id = '{}'",
        alice.id()
    ));
    assert_eq!(db.count("user_credentials"), 1, "only Bob's is left");
});

on_both_backends!(
    the_owner_match_migration_refuses_existing_mismatches,
    |db| {
        let database = db.database();
        database.run_migrations().unwrap();
        for newest in ["20261208000007", "20261207000006", "20261125000005"] {
            assert_eq!(database.revert_last_migration().unwrap(), newest);
        }
        // Rows the rule forbids, written while it is not in force.
        db.execute(
            "INSERT INTO user_accounts (id, user_id, account_name) VALUES
                 ('00000000-0000-7000-8000-00000000000a', 'auth0|alice', 'Alice'),
                 ('00000000-0000-7000-8000-00000000000b', 'auth0|bob', 'Bob');
             INSERT INTO user_credentials
                 (id, user_account_id, user_id, credential_type, nickname, api_key, secret_key)
             VALUES
                 ('00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-00000000000a',
                  'auth0|alice', 'polygon', 'fine', 'ct', 'ct'),
                 ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-00000000000b',
                  'auth0|alice', 'polygon', 'planted', 'ct', 'ct'),
                 ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-00000000000a',
                  'auth0|bob', 'polygon', 'planted', 'ct', 'ct');",
        );
        let schema = schema_objects(db);
        match database.run_migrations() {
            Err(Error::Migration(source)) => {
                let message = source.to_string();
                let expected = if db.backend == credential_store::Backend::Postgres {
                    "cannot apply credential_owner_matches_account: 2 credential(s) carry a \
                     user_id other than their account's user_id"
                } else if db.backend == credential_store::Backend::Mysql {
                    "cannot apply credential_owner_matches_account: 2 credential(s) carry a \
                     user_id other than the user_id of their account"
                } else {
                    "cannot apply credential_owner_matches_account: credentials carry a user_id \
                     other than their account's user_id"
                };
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("expected the migration to refuse, got {other:?}"),
        }
        // Nothing changed: 000005 and the two data-key migrations after it are still pending.
        assert_eq!(database.pending_migrations().unwrap().len(), 3);
        assert_eq!(schema_objects(db), schema);
        assert_eq!(db.count("user_credentials"), 3);

        // Once the rows are dealt with, it applies (and the data-key migrations after it).
        db.execute("DELETE FROM user_credentials WHERE nickname = 'planted'");
        assert_eq!(database.run_migrations().unwrap().len(), 3);
        assert_ne!(schema_objects(db), schema);
        assert_eq!(db.count("user_credentials"), 1);
    }
);

/// The constraints, triggers and row-level-security flags of the two tables, one
/// line each (the parts of the schema migration 000005 touches).
fn schema_objects(db: &common::TestDb) -> Vec<String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let sql = if db.backend == credential_store::Backend::Postgres {
        "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) AS line
         FROM pg_constraint WHERE conrelid IN ('user_accounts'::regclass, 'user_credentials'::regclass)
         UNION ALL
         SELECT relname || ' rls=' || relrowsecurity || ' force=' || relforcerowsecurity
         FROM pg_class WHERE oid IN ('user_accounts'::regclass, 'user_credentials'::regclass)
         ORDER BY 1"
    } else {
        "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') AS line
         FROM sqlite_master ORDER BY name"
    };
    #[cfg(feature = "mysql")]
    if db.backend == credential_store::Backend::Mysql {
        // Constraints with their rules, and every index's columns.
        let sql = "SELECT CONCAT(t.table_name, ' ', t.constraint_name, ' ', t.constraint_type, ' ',
                                 COALESCE(r.update_rule, ''), ' ', COALESCE(r.delete_rule, '')) AS line
                   FROM information_schema.table_constraints t
                   LEFT JOIN information_schema.referential_constraints r
                     ON r.constraint_schema = t.constraint_schema
                    AND r.constraint_name = t.constraint_name
                   WHERE t.constraint_schema = DATABASE()
                   UNION ALL
                   SELECT CONCAT(table_name, ' index ', index_name, ' ', seq_in_index, ' ', column_name)
                   FROM information_schema.statistics WHERE table_schema = DATABASE()
                   ORDER BY 1";
        let lines: Vec<Line> = diesel::sql_query(sql)
            .load(&mut common::mysql_raw(&db.url))
            .unwrap();
        return lines.into_iter().map(|l| l.line).collect();
    }
    let lines: Vec<Line> = if db.backend == credential_store::Backend::Postgres {
        let mut conn = PgConnection::establish(&db.url).unwrap();
        diesel::sql_query(sql).load(&mut conn).unwrap()
    } else {
        let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
        diesel::sql_query(sql).load(&mut conn).unwrap()
    };
    lines.into_iter().map(|l| l.line).collect()
}

/// On PostgreSQL the migration runs as the tables' owner, who is not a superuser and
/// does not bypass row-level security, which is forced: its check of the existing
/// rows must still see them all (it lifts FORCE for its own transaction). Without
/// that it would count none, and `ADD FOREIGN KEY`, whose validation of existing
/// rows also runs through row-level security as the current role, would then add
/// the constraint over the violating rows (seen when FORCE was left on).
fn the_owner_match_migration_counts_every_row_as_a_non_superuser_owner() {
    use diesel::prelude::*;
    let db = common::TestDb::postgres();
    let owner = common::RoleGuard::new(&db, "owner");
    // README's owner role, without a password (the test server trusts).
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS;
         GRANT CREATE ON SCHEMA public TO {role};",
        role = owner.role
    ));
    let database = credential_store::Database::open(&owner.url()).unwrap();
    assert_eq!(database.run_migrations().unwrap().len(), MIGRATIONS);
    for newest in ["20261208000007", "20261207000006", "20261125000005"] {
        assert_eq!(database.revert_last_migration().unwrap(), newest);
    }
    // The superuser writes what the rule forbids; the owner is subject to the forced
    // row-level security and sees none of it without a user context.
    db.execute(
        "INSERT INTO user_accounts (id, user_id, account_name) VALUES
             ('00000000-0000-7000-8000-00000000000a', 'auth0|alice', 'Alice'),
             ('00000000-0000-7000-8000-00000000000b', 'auth0|bob', 'Bob');
         INSERT INTO user_credentials (user_account_id, user_id, credential_type, api_key, secret_key)
         SELECT '00000000-0000-7000-8000-00000000000b', 'auth0|alice', 'polygon', 'ct', 'ct'
         FROM generate_series(1, 3);",
    );
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut as_owner = PgConnection::establish(&owner.url()).unwrap();
    let seen = diesel::sql_query("SELECT COUNT(*) AS n FROM user_credentials")
        .get_result::<Count>(&mut as_owner)
        .unwrap()
        .n;
    assert_eq!(
        seen, 0,
        "forced row-level security hides the rows from the owner"
    );
    drop(as_owner);

    match database.run_migrations() {
        Err(Error::Migration(source)) => {
            let message = source.to_string();
            assert!(
                message.contains("3 credential(s) carry a user_id other than their account's"),
                "{message}"
            );
        }
        other => panic!("expected the migration to refuse, got {other:?}"),
    }
    assert_eq!(database.pending_migrations().unwrap().len(), 3);
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) AS n FROM pg_class \
             WHERE relname IN ('user_accounts', 'user_credentials') AND relforcerowsecurity"
        ),
        2,
        "row-level security is still forced on both tables"
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) AS n FROM pg_constraint \
             WHERE conname IN ('user_accounts_id_user_id_key', \
                               'user_credentials_owner_matches_account_fkey')"
        ),
        0,
        "the refused migration added nothing"
    );
    db.execute("DELETE FROM user_credentials");
    assert_eq!(database.run_migrations().unwrap().len(), 3);
}
