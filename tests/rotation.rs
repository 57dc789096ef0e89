//! Key rotation and format conversion, on both backends.

mod common;

use common::{python, test_key};
use credential_store::{
    CipherFormat, CredentialRepository, CredentialStore, Error, Field, KeyUsage, Keyring,
    NewUserAccount, NewUserCredential, RotationProgress, UserAccount, UserCredential,
};
use secrecy::ExposeSecret;

fn ring<S: AsRef<str>>(entries: &[S]) -> Keyring {
    Keyring::from_fernet_keys(entries).unwrap()
}

fn usage(store: &CredentialStore) -> Vec<(CipherFormat, Option<String>, u64)> {
    store
        .maintenance()
        .key_usage()
        .unwrap()
        .into_iter()
        .map(
            |KeyUsage {
                 format,
                 key_id,
                 credentials,
                 ..
             }| (format, key_id, credentials),
        )
        .collect()
}

/// `count` credentials over two accounts, written by `store`.
fn populate(store: &CredentialStore, count: usize) -> Vec<(UserAccount, UserCredential, String)> {
    let accounts: Vec<UserAccount> = ["auth0|alice", "auth0|bob"]
        .iter()
        .map(|user_id| {
            store
                .create_account(&NewUserAccount {
                    user_id,
                    account_name: "x",
                })
                .unwrap()
        })
        .collect();
    (0..count)
        .map(|i| {
            let account = accounts[i % 2].clone();
            let api_key = format!("PK{i:04}");
            let new =
                NewUserCredential::new("alpaca_paper", api_key.as_str(), format!("secret-{i}"))
                    .nickname("bot");
            let credential = store.insert_credential(&account, &new).unwrap();
            (account, credential, api_key)
        })
        .collect()
}

fn assert_all_readable(store: &CredentialStore, rows: &[(UserAccount, UserCredential, String)]) {
    for (account, credential, api_key) in rows {
        let keys = store
            .credential_keys(account, credential.id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.api_key().expose_secret(), api_key);
    }
}

on_both_backends!(fernet_rows_rotate_to_sealed_under_a_new_key, |db| {
    db.database().run_migrations().unwrap();
    let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
    let legacy =
        CredentialStore::new(db.database(), ring(&[&old])).with_format(CipherFormat::Fernet);
    let rows = populate(&legacy, 7);
    let store = CredentialStore::new(db.database(), ring(&[&new, &old]));
    assert_eq!(
        usage(&store),
        [(CipherFormat::Fernet, Some("old".into()), 7)]
    );

    let mut seen = Vec::new();
    let done = store
        .maintenance()
        .rotate_keys(3, &mut |p: &RotationProgress| seen.push(*p))
        .unwrap();
    assert_eq!(
        done,
        RotationProgress {
            scanned: 7,
            total: 7,
            rewritten: 7
        }
    );
    let remaining: Vec<u64> = seen.iter().map(RotationProgress::remaining).collect();
    assert_eq!(remaining, [4, 1, 0], "one report per batch of three");
    assert_eq!(
        usage(&store),
        [(CipherFormat::Sealed, Some("new".into()), 7)]
    );

    // The old key can go.
    let new_only = CredentialStore::new(db.database(), ring(&[&new]));
    assert_all_readable(&new_only, &rows);
    let again = store.maintenance().rotate_keys(3, &mut |_| {}).unwrap();
    assert_eq!(again.rewritten, 0, "idempotent");
});

on_both_backends!(sealed_rows_rotate_to_a_new_key_and_back_to_fernet, |db| {
    db.database().run_migrations().unwrap();
    let (first, second) = (
        format!("first:{}", test_key()),
        format!("second:{}", test_key()),
    );
    let store = CredentialStore::new(db.database(), ring(&[&first]));
    let rows = populate(&store, 5);
    let rotated = CredentialStore::new(db.database(), ring(&[&second, &first]));
    assert_eq!(
        rotated
            .maintenance()
            .rotate_keys(100, &mut |_| {})
            .unwrap()
            .rewritten,
        5
    );
    assert_eq!(
        usage(&rotated),
        [(CipherFormat::Sealed, Some("second".into()), 5)]
    );

    let back =
        CredentialStore::new(db.database(), ring(&[&second])).with_format(CipherFormat::Fernet);
    assert_eq!(
        back.maintenance()
            .rotate_keys(2, &mut |_| {})
            .unwrap()
            .rewritten,
        5
    );
    assert_eq!(
        usage(&back),
        [(CipherFormat::Fernet, Some("second".into()), 5)]
    );
    assert_all_readable(&back, &rows);
    assert_eq!(
        back.maintenance()
            .rotate_keys(2, &mut |_| {})
            .unwrap()
            .rewritten,
        0
    );
});

on_both_backends!(
    an_interrupted_rotation_leaves_every_row_readable_and_resumes,
    |db| {
        db.database().run_migrations().unwrap();
        let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
        let legacy =
            CredentialStore::new(db.database(), ring(&[&old])).with_format(CipherFormat::Fernet);
        let rows = populate(&legacy, 10);
        let store = CredentialStore::new(db.database(), ring(&[&new, &old]));
        // Stop after the second batch, as a crash would.
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store
                .maintenance()
                .rotate_keys(3, &mut |p| assert!(p.scanned < 6, "stop"))
                .unwrap();
        }));
        assert!(stopped.is_err());
        let mid = usage(&store);
        assert_eq!(
            mid,
            [
                (CipherFormat::Sealed, Some("new".into()), 6),
                (CipherFormat::Fernet, Some("old".into()), 4)
            ]
        );
        assert_all_readable(&store, &rows);
        let finished = store.maintenance().rotate_keys(3, &mut |_| {}).unwrap();
        assert_eq!((finished.scanned, finished.rewritten), (10, 4));
        assert_all_readable(&CredentialStore::new(db.database(), ring(&[&new])), &rows);
    }
);

on_both_backends!(a_row_whose_key_is_missing_is_reported_not_skipped, |db| {
    db.database().run_migrations().unwrap();
    let (gone, old, new) = (
        format!("gone:{}", test_key()),
        format!("old:{}", test_key()),
        format!("new:{}", test_key()),
    );
    let lost = populate(&CredentialStore::new(db.database(), ring(&[&gone])), 2);
    let kept = CredentialStore::new(db.database(), ring(&[&old]));
    let account = kept.account_by_user_id("auth0|alice").unwrap().unwrap();
    let fine = kept
        .insert_credential(&account, &NewUserCredential::new("polygon", "PGKEEP", "s"))
        .unwrap();

    let store = CredentialStore::new(db.database(), ring(&[new, old]));
    match store.maintenance().rotate_keys(10, &mut |_| {}) {
        Err(Error::RotationIncomplete {
            rewritten,
            failures,
        }) => {
            assert_eq!(rewritten, 1, "the readable row is still rotated");
            assert_eq!(
                failures.len(),
                4,
                "both fields of both unreadable rows: {failures:?}"
            );
            for failure in &failures {
                match failure {
                    Error::UnknownKey {
                        credential_id,
                        field,
                        key_id,
                    } => {
                        assert!(lost.iter().any(|(_, c, _)| c.id == *credential_id));
                        assert!(matches!(field, Field::ApiKey | Field::SecretKey));
                        assert_eq!(key_id, "gone");
                    }
                    other => panic!("expected UnknownKey, got {other:?}"),
                }
            }
        }
        other => panic!("expected RotationIncomplete, got {other:?}"),
    }
    assert_eq!(
        store
            .credential_keys(&account, fine.id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PGKEEP"
    );
    let report = store.maintenance().key_usage().unwrap();
    let missing = report
        .iter()
        .find(|u| u.key_id.as_deref() == Some("gone"))
        .unwrap();
    assert_eq!((missing.credentials, missing.in_keyring), (2, false));
});

on_both_backends!(python_tokens_survive_a_rotation_to_sealed_and_back, |db| {
    db.database().run_migrations().unwrap();
    let key = test_key();
    let plaintexts = ["PKFROMPYTHON1", "sécret-from-python"];
    let script =
        "import sys\nfrom cryptography.fernet import Fernet\nf = Fernet(sys.argv[1].encode())\n\
                  for p in sys.argv[2:]: print(f.encrypt(p.encode()).decode())";
    let Some(tokens) = python(script, &[&key, plaintexts[0], plaintexts[1]]) else {
        return;
    };
    let tokens: Vec<&str> = tokens.lines().collect();

    let store = CredentialStore::new(db.database(), ring(&[&key]));
    let account = store
        .create_account(&NewUserAccount {
            user_id: "auth0|py",
            account_name: "Py",
        })
        .unwrap();
    let credential = store
        .insert_credential(
            &account,
            &NewUserCredential::new("alpaca_paper", "placeholder", "placeholder"),
        )
        .unwrap();
    db.execute(&format!(
        "UPDATE user_credentials SET api_key = '{}', secret_key = '{}'",
        tokens[0], tokens[1]
    ));
    assert_eq!(
        usage(&store),
        [(
            CipherFormat::Fernet,
            Some(store.keyring().primary_key_id().into()),
            1
        )]
    );

    store.maintenance().rotate_keys(10, &mut |_| {}).unwrap();
    assert_eq!(usage(&store)[0].0, CipherFormat::Sealed);
    let fernet = store.clone().with_format(CipherFormat::Fernet);
    fernet.maintenance().rotate_keys(10, &mut |_| {}).unwrap();
    assert_eq!(usage(&fernet)[0].0, CipherFormat::Fernet);
    let keys = fernet.credential_keys(&account, credential.id).unwrap();
    assert_eq!(
        (
            keys.api_key().expose_secret(),
            keys.secret_key().expose_secret()
        ),
        (plaintexts[0], plaintexts[1])
    );

    // And Python reads what the crate wrote.
    #[derive(diesel::QueryableByName)]
    struct Tokens {
        #[diesel(sql_type = diesel::sql_types::Text)]
        api_key: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_key: String,
    }
    let sql = "SELECT api_key, secret_key FROM user_credentials";
    let row: Tokens = match db.backend {
        credential_store::Backend::Sqlite => {
            use diesel::Connection;
            let mut c =
                diesel::SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
            diesel::RunQueryDsl::get_result(diesel::sql_query(sql), &mut c).unwrap()
        }
        _ => {
            use diesel::Connection;
            let mut c = diesel::PgConnection::establish(&db.url).unwrap();
            diesel::RunQueryDsl::get_result(diesel::sql_query(sql), &mut c).unwrap()
        }
    };
    assert_ne!(
        (row.api_key.as_str(), row.secret_key.as_str()),
        (tokens[0], tokens[1]),
        "rewritten"
    );
    let decrypt =
        "import sys\nfrom cryptography.fernet import Fernet\nf = Fernet(sys.argv[1].encode())\n\
                   for t in sys.argv[2:]: print(f.decrypt(t.encode()).decode())";
    let read = python(decrypt, &[&key, &row.api_key, &row.secret_key]).unwrap();
    assert_eq!(read.lines().collect::<Vec<_>>(), plaintexts);
});

on_both_backends!(maintenance_input_is_validated, |db| {
    let store = db.store();
    assert!(matches!(
        store.maintenance().rotate_keys(0, &mut |_| {}),
        Err(Error::Invalid {
            field: Field::BatchSize,
            ..
        })
    ));
});

on_both_backends!(
    a_sealed_ciphertext_moved_to_another_row_or_field_does_not_decrypt,
    |db| {
        db.database().run_migrations().unwrap();
        let key = test_key();
        let sealed = CredentialStore::new(db.database(), ring(&[&key]));
        let fernet = sealed.clone().with_format(CipherFormat::Fernet);
        let alice = sealed
            .create_account(&NewUserAccount {
                user_id: "auth0|alice",
                account_name: "A",
            })
            .unwrap();
        let mallory = sealed
            .create_account(&NewUserAccount {
                user_id: "auth0|mallory",
                account_name: "M",
            })
            .unwrap();
        for (store, format) in [(&sealed, "sealed"), (&fernet, "fernet")] {
            let victim = store
                .insert_credential(
                    &alice,
                    &NewUserCredential::new("alpaca_live", "PKVICTIM", "SKVICTIM").nickname(format),
                )
                .unwrap();
            let own = store
                .insert_credential(
                    &mallory,
                    &NewUserCredential::new("alpaca_live", "PKMINE", "SKMINE").nickname(format),
                )
                .unwrap();
            // Someone with write access to the table copies the victim's ciphertexts onto
            // their own row, and swaps the two fields of the victim's row.
            db.execute(&format!(
            "UPDATE user_credentials SET
                 api_key = (SELECT api_key FROM user_credentials WHERE id = '{v}'),
                 secret_key = (SELECT secret_key FROM user_credentials WHERE id = '{v}')
             WHERE id = '{o}';
             UPDATE user_credentials SET api_key = secret_key, secret_key = api_key WHERE id = '{v}';",
            v = victim.id,
            o = own.id
        ));
            let stolen = store.credential_keys(&mallory, own.id);
            let swapped = store.credential_keys(&alice, victim.id);
            if format == "sealed" {
                assert!(
                    matches!(stolen, Err(Error::Decryption { credential_id, .. }) if credential_id == own.id)
                );
                assert!(
                    matches!(swapped, Err(Error::Decryption { credential_id, .. }) if credential_id == victim.id)
                );
            } else {
                // Fernet binds nothing: the documented weakness the sealed format closes.
                assert_eq!(stolen.unwrap().api_key().expose_secret(), "PKVICTIM");
                assert_eq!(swapped.unwrap().api_key().expose_secret(), "SKVICTIM");
            }
        }
    }
);
