//! Migrations on both backends: every one reverts and re-applies, and a revert that
//! would lose data refuses and changes nothing.

mod common;

use credential_store::{CredentialRepository, Error, NewUserAccount, NewUserCredential};
use secrecy::ExposeSecret;

const MIGRATIONS: usize = 4;

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

    // Redo each migration with data in the tables: nothing is lost.
    let store = db.store();
    let account = store
        .create_account(&NewUserAccount {
            user_id: "auth0|alice",
            account_name: "Alice",
        })
        .unwrap();
    for kind in ["alpaca_paper", "alpaca_live", "polygon"] {
        store
            .insert_credential(&account, &NewUserCredential::new(kind, "PK", "s"))
            .unwrap();
    }
    for depth in 1..MIGRATIONS {
        for _ in 0..depth {
            database.revert_last_migration().unwrap();
        }
        assert_eq!(database.run_migrations().unwrap().len(), depth);
        assert_eq!(
            db.count("user_credentials"),
            3,
            "rows lost redoing {depth} migration(s)"
        );
        for credential in store.list_credentials(&account).unwrap() {
            // Reverting the nickname migration drops the column; re-applying it
            // backfills the type.
            assert_eq!(
                credential.nickname.as_deref(),
                Some(credential.credential_type.as_str())
            );
            assert_eq!(
                store
                    .credential_keys(&account, credential.id)
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
        let store = db.store();
        let database = store.database();
        let account = store
            .create_account(&NewUserAccount {
                user_id: "auth0|alice",
                account_name: "Alice",
            })
            .unwrap();
        let first = NewUserCredential::new("alpaca_paper", "PK1", "s").nickname("Momentum");
        let second = NewUserCredential::new("alpaca_paper", "PK2", "s").nickname("Swing");
        store.insert_credential(&account, &first).unwrap();
        store.insert_credential(&account, &second).unwrap();

        database.revert_last_migration().unwrap(); // 000004, harmless
        let refused = database.revert_last_migration();
        match &refused {
            Err(Error::Migration(source)) => {
                let message = source.to_string();
                if db.backend == credential_store::Backend::Postgres {
                    assert!(
                        message.contains("1 (account, credential_type) pair"),
                        "{message}"
                    );
                } else {
                    assert!(message.contains("UNIQUE"), "{message}");
                }
            }
            other => panic!("expected a refused migration, got {other:?}"),
        }
        // Nothing changed: the nickname migration is still applied, both rows are there
        // with their nicknames.
        assert_eq!(database.pending_migrations().unwrap().len(), 1);
        database.run_migrations().unwrap();
        assert_eq!(db.count("user_credentials"), 2);
        assert_eq!(
            store
                .find_one_by_nickname(&account, "Swing")
                .unwrap()
                .unwrap()
                .credential_type,
            "alpaca_paper"
        );
        assert_eq!(
            store
                .find_one_by_nickname(&account, "Momentum")
                .unwrap()
                .unwrap()
                .credential_type,
            "alpaca_paper"
        );
    }
);
