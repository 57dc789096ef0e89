//! Key rotation and format conversion, on both backends.

mod common;

use common::{python, test_key};
use credential_store::{
    CipherFormat, CredentialStore, Error, Field, KeyUsage, Keyring, NewUserAccount,
    NewUserCredential, RotationProgress, UserAccount, UserCredential,
};
use secrecy::ExposeSecret;

fn main() {
    use common::trials::{needing, Service::Python};
    common::trials::run(vec![
        fernet_rows_rotate_to_sealed_under_a_new_key::tests(),
        sealed_rows_rotate_to_a_new_key_and_back_to_fernet::tests(),
        an_interrupted_rotation_leaves_every_row_readable_and_resumes::tests(),
        a_row_whose_key_is_missing_is_reported_not_skipped::tests(),
        needing(
            &[Python],
            python_tokens_survive_a_rotation_to_sealed_and_back::tests(),
        ),
        maintenance_input_is_validated::tests(),
        a_sealed_ciphertext_moved_to_another_row_or_field_does_not_decrypt::tests(),
        swapped_user_ids_do_not_hand_over_sealed_credentials::tests(),
        trial!(rotation_deletion_and_new_keys_leave_no_old_ciphertext_in_the_sqlite_files),
    ]);
}

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
                .create_account(&NewUserAccount::new(user_id, "x"))
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
            .keys(account, credential.id)
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
    assert_eq!((done.scanned, done.total, done.rewritten), (7, 7, 7));
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
    // Legacy rows: sealed v2 under the first key itself, as stores wrote them
    // before data keys.
    #[cfg(feature = "bench-internals")]
    for (i, (account, credential, api_key)) in rows[..2].iter().enumerate() {
        let secret_key = format!("secret-{i}");
        common::write_sealed_v2(
            db,
            &ring(&[&first]),
            account,
            credential.id,
            (api_key, &secret_key),
        );
    }
    let legacy: u64 = if cfg!(feature = "bench-internals") {
        2
    } else {
        0
    };
    assert_eq!(
        versions(&store)
            .into_iter()
            .map(|(_, version, key_id, n)| (version, key_id, n))
            .collect::<Vec<_>>(),
        [
            (Some(2), Some("first".into()), legacy),
            (Some(3), Some("first".into()), 5 - legacy)
        ]
        .into_iter()
        .filter(|(.., n)| *n > 0)
        .collect::<Vec<_>>()
    );
    let v3_before = ciphertexts_by_id(db, &rows);
    let rotated = CredentialStore::new(db.database(), ring(&[&second, &first]));
    let done = rotated.maintenance().rotate_keys(100, &mut |_| {}).unwrap();
    // The sealed-v3 rows stay as they are: their accounts' data keys are
    // re-wrapped under the new key. The legacy rows are sealed v3 now.
    assert_eq!(
        (done.rewritten, done.data_keys_rewrapped),
        (legacy, 2),
        "{done:?}"
    );
    let v3_after = ciphertexts_by_id(db, &rows);
    for (id, ciphertexts) in &v3_before {
        if ciphertexts.0.starts_with("sealed:v3:") {
            assert_eq!(v3_after.get(id), Some(ciphertexts), "untouched");
        }
    }
    assert_eq!(
        versions(&rotated),
        [(CipherFormat::Sealed, Some(3), Some("second".into()), 5)]
    );
    // The first key can go.
    assert_all_readable(
        &CredentialStore::new(db.database(), ring(&[&second])),
        &rows,
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
    // Alice's and Bob's data keys are wrapped by a key the keyring no longer holds.
    let lost = populate(&CredentialStore::new(db.database(), ring(&[&gone])), 2);
    let kept = CredentialStore::new(db.database(), ring(&[&old]));
    let carol = kept
        .create_account(&NewUserAccount::new("auth0|carol", "x"))
        .unwrap();
    let fine = kept
        .insert_credential(&carol, &NewUserCredential::new("polygon", "PGKEEP", "s"))
        .unwrap();
    // A legacy row: sealed v2 under the lost key, in an account whose data key opens.
    #[cfg(feature = "bench-internals")]
    let legacy = {
        let legacy = kept
            .insert_credential(
                &carol,
                &NewUserCredential::new("alpaca_live", "placeholder", "s"),
            )
            .unwrap();
        common::write_sealed_v2(db, &ring(&[&gone]), &carol, legacy.id, ("PKV2", "s"));
        legacy.id
    };

    let store = CredentialStore::new(db.database(), ring(&[&new, &old]));
    match store.maintenance().rotate_keys(10, &mut |_| {}) {
        Err(Error::RotationIncomplete {
            rewritten,
            failures,
        }) => {
            assert_eq!(rewritten, 0, "no readable row needs a new ciphertext");
            let mut unreadable_accounts = Vec::new();
            let mut legacy_fields = Vec::new();
            for failure in &failures {
                match failure {
                    // The account's data key: every sealed-v3 row under it is
                    // reported with it.
                    Error::DataKeyUnreadable {
                        account_id,
                        provider,
                        reason,
                    } => {
                        assert_eq!(provider, "keyring");
                        assert!(reason.contains("`gone`"), "{reason}");
                        unreadable_accounts.push(*account_id);
                    }
                    // The sealed-v3 rows under it may be reported one by one too,
                    // as not opening.
                    Error::Decryption { credential_id, .. } => {
                        assert!(
                            lost.iter().any(|(_, c, _)| c.id == *credential_id),
                            "{failure:?}"
                        );
                    }
                    // A keyring-sealed row names the key it needs.
                    #[cfg(feature = "bench-internals")]
                    Error::UnknownKey {
                        credential_id,
                        field,
                        key_id,
                    } => {
                        assert_eq!(*credential_id, legacy);
                        assert_eq!(key_id, "gone");
                        legacy_fields.push(field.as_str());
                    }
                    other => panic!("expected DataKeyUnreadable or UnknownKey, got {other:?}"),
                }
            }
            unreadable_accounts.sort();
            let mut lost_accounts: Vec<uuid::Uuid> = lost.iter().map(|(a, ..)| a.id()).collect();
            lost_accounts.sort();
            assert_eq!(
                unreadable_accounts, lost_accounts,
                "each account whose data key does not unwrap, once: {failures:?}"
            );
            legacy_fields.sort();
            let expected: &[&str] = if cfg!(feature = "bench-internals") {
                &["api_key", "secret_key"]
            } else {
                &[]
            };
            assert_eq!(
                legacy_fields, expected,
                "both fields of the unreadable legacy row: {failures:?}"
            );
        }
        other => panic!("expected RotationIncomplete, got {other:?}"),
    }
    assert_eq!(
        store
            .keys(&carol, fine.id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PGKEEP"
    );
    // The readable data key is re-wrapped all the same: Carol's key opens with
    // the new key alone.
    assert_eq!(
        CredentialStore::new(db.database(), ring(&[&new]))
            .keys(&carol, fine.id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PGKEEP"
    );
    let report = store.maintenance().key_usage().unwrap();
    let missing: Vec<_> = report
        .iter()
        .filter(|u| u.key_id.as_deref() == Some("gone"))
        .map(|u| (u.version, u.credentials, u.in_keyring))
        .collect();
    let mut expected = vec![(Some(3), 2, false)];
    #[cfg(feature = "bench-internals")]
    expected.insert(0, (Some(2), 1, false));
    assert_eq!(missing, expected, "{report:?}");
});

on_both_backends!(python_tokens_survive_a_rotation_to_sealed_and_back, |db| {
    db.database().run_migrations().unwrap();
    let key = test_key();
    let plaintexts = ["PKFROMPYTHON1", "sécret-from-python"];
    let script =
        "import sys\nfrom cryptography.fernet import Fernet\nf = Fernet(sys.argv[1].encode())\n\
                  for p in sys.argv[2:]: print(f.encrypt(p.encode()).decode())";
    let tokens = python(script, &[&key, plaintexts[0], plaintexts[1]]);
    let tokens: Vec<&str> = tokens.lines().collect();

    let store = CredentialStore::new(db.database(), ring(&[&key]));
    let account = store
        .create_account(&NewUserAccount::new("auth0|py", "Py"))
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
    let keys = fernet.keys(&account, credential.id).unwrap();
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
        #[cfg(feature = "mysql")]
        credential_store::Backend::Mysql => {
            let mut c = common::mysql_raw(&db.url);
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
    let read = python(decrypt, &[&key, &row.api_key, &row.secret_key]);
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
            .create_account(&NewUserAccount::new("auth0|alice", "A"))
            .unwrap();
        let mallory = sealed
            .create_account(&NewUserAccount::new("auth0|mallory", "M"))
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
            let stolen = store.keys(&mallory, own.id);
            let swapped = store.keys(&alice, victim.id);
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

// The fixed vectors of `src/crypto.rs`: sealed v1 ciphertexts of credential
// `VECTOR_CREDENTIAL_ID` in account `VECTOR_ACCOUNT_ID` under `VECTOR_KEY`, as a
// store before version 2 wrote them.
const VECTOR_KEY: &str = "vector:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const VECTOR_CREDENTIAL_ID: &str = "0193a1c2-7f00-7abc-8def-000000000001";
const VECTOR_ACCOUNT_ID: &str = "0193a1c2-7f00-7abc-8def-000000000002";
const V1_API_KEY: &str =
    "sealed:v1:vector:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXaE1DsOzZMHRBTJkmNGvIKBcSdO4nQKz1bcY";
const V1_SECRET_KEY: &str =
    "sealed:v1:vector:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXS2N2h8r5UlAUHnn7ijf1cYshLQ_V4AUxIVH9_7BmTZ8";

/// What someone with write access to `user_accounts` can do: swap two accounts'
/// user ids. The composite foreign key (PostgreSQL, `ON UPDATE CASCADE`) and the
/// cascade trigger (SQLite) carry each account's credentials along, so each user's
/// login now finds the other's account and credentials.
fn swap_user_ids(db: &common::TestDb, a: &str, b: &str) {
    db.execute(&format!(
        "BEGIN;
         UPDATE user_accounts SET user_id = 'swap-in-progress' WHERE user_id = '{a}';
         UPDATE user_accounts SET user_id = '{a}' WHERE user_id = '{b}';
         UPDATE user_accounts SET user_id = '{b}' WHERE user_id = 'swap-in-progress';
         COMMIT;"
    ));
}

fn versions(store: &CredentialStore) -> Vec<(CipherFormat, Option<u8>, Option<String>, u64)> {
    store
        .maintenance()
        .key_usage()
        .unwrap()
        .into_iter()
        .map(|u| (u.format, u.version, u.key_id, u.credentials))
        .collect()
}

on_both_backends!(swapped_user_ids_do_not_hand_over_sealed_credentials, |db| {
    db.database().run_migrations().unwrap();
    let store = CredentialStore::new(db.database(), ring(&[VECTOR_KEY]));
    let account = |user_id: &str| store.account_by_user_id(user_id).unwrap().unwrap();
    let keys = |user_id: &str, id| store.keys(&account(user_id), id);
    for user_id in [
        "auth0|alice",
        "auth0|bob",
        "auth0|carol",
        "auth0|mallory",
        "auth0|dave",
        "auth0|erin",
    ] {
        store
            .create_account(&NewUserAccount::new(user_id, "x"))
            .unwrap();
    }
    let insert = |user_id: &str, api_key: &str| {
        store
            .insert_credential(
                &account(user_id),
                &NewUserCredential::new("alpaca_live", api_key, "s"),
            )
            .unwrap()
    };
    let alice = insert("auth0|alice", "PKALICE");
    let bob = insert("auth0|bob", "PKBOB");
    // Carol's credential was written before version 2: the v1 vectors, under the
    // ids they are bound to.
    db.execute(&format!(
        "UPDATE user_accounts SET id = '{VECTOR_ACCOUNT_ID}' WHERE user_id = 'auth0|carol'"
    ));
    let carol = insert("auth0|carol", "placeholder");
    db.execute(&format!(
        "UPDATE user_credentials SET id = '{VECTOR_CREDENTIAL_ID}',
                 api_key = '{V1_API_KEY}', secret_key = '{V1_SECRET_KEY}'
             WHERE id = '{}'",
        carol.id
    ));
    let carol_id: uuid::Uuid = VECTOR_CREDENTIAL_ID.parse().unwrap();
    assert_eq!(
        keys("auth0|carol", carol_id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PKVECTOR01"
    );
    // Dave's and Erin's credentials were written in version 2, under the
    // keyring's key itself.
    #[cfg(feature = "bench-internals")]
    let (dave, erin) = {
        let v2 = |user_id: &str, api_key: &str| {
            let credential = insert(user_id, "placeholder");
            common::write_sealed_v2(
                db,
                &ring(&[VECTOR_KEY]),
                &account(user_id),
                credential.id,
                (api_key, "s"),
            );
            credential
        };
        (v2("auth0|dave", "PKDAVE"), v2("auth0|erin", "PKERIN"))
    };
    let legacy: u64 = if cfg!(feature = "bench-internals") {
        2
    } else {
        0
    };
    let vector = || Some("vector".to_owned());
    assert_eq!(
        versions(&store),
        [
            (CipherFormat::Sealed, Some(1), vector(), 1),
            (CipherFormat::Sealed, Some(2), vector(), legacy),
            (CipherFormat::Sealed, Some(3), vector(), 2)
        ]
        .into_iter()
        .filter(|(.., n)| *n > 0)
        .collect::<Vec<_>>()
    );

    // v3: Bob's credential is now under Alice's login, and does not open there:
    // it is bound to his user (with his data key in the cache), and so is his
    // account's data key, which does not unwrap for another user (a store
    // with nothing cached).
    swap_user_ids(db, "auth0|alice", "auth0|bob");
    let listed: Vec<_> = store
        .credentials(&account("auth0|alice"))
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, [bob.id], "the swap moved Bob's credential");
    for (login, id, owner) in [
        ("auth0|alice", bob.id, bob.user_account_id),
        ("auth0|bob", alice.id, alice.user_account_id),
    ] {
        match keys(login, id) {
            Err(Error::Decryption {
                credential_id,
                field: Field::ApiKey,
            }) => assert_eq!(credential_id, id),
            Err(other) => panic!("expected Decryption, got {other:?}"),
            Ok(_) => panic!("{login} decrypted another user's credential"),
        }
        let uncached = CredentialStore::new(db.database(), ring(&[VECTOR_KEY]));
        match uncached.keys(&account(login), id) {
            Err(Error::DataKeyUnreadable { account_id, .. }) => assert_eq!(account_id, owner),
            Err(other) => panic!("expected DataKeyUnreadable, got {other:?}"),
            Ok(_) => panic!("{login} decrypted another user's credential"),
        }
    }
    // v2: Erin's credential under Dave's login does not open either.
    #[cfg(feature = "bench-internals")]
    {
        swap_user_ids(db, "auth0|dave", "auth0|erin");
        for (login, id) in [("auth0|dave", erin.id), ("auth0|erin", dave.id)] {
            match keys(login, id) {
                Err(Error::Decryption {
                    credential_id,
                    field: Field::ApiKey,
                }) => assert_eq!(credential_id, id),
                Err(other) => panic!("expected Decryption, got {other:?}"),
                Ok(_) => panic!("{login} decrypted another user's credential"),
            }
        }
        swap_user_ids(db, "auth0|dave", "auth0|erin");
    }
    // v1 binds no user: Carol's credential opens under Mallory's login. This is
    // why version 2 exists.
    swap_user_ids(db, "auth0|carol", "auth0|mallory");
    assert_eq!(
        keys("auth0|mallory", carol_id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PKVECTOR01"
    );

    // Put everything back; rotation converts the v1 and v2 rows, and only them,
    // to v3.
    swap_user_ids(db, "auth0|alice", "auth0|bob");
    swap_user_ids(db, "auth0|carol", "auth0|mallory");
    let done = store.maintenance().rotate_keys(2, &mut |_| {}).unwrap();
    assert_eq!((done.scanned, done.rewritten), (3 + legacy, 1 + legacy));
    assert_eq!(
        versions(&store),
        [(CipherFormat::Sealed, Some(3), vector(), 3 + legacy)]
    );
    for (login, id, api_key) in [
        ("auth0|alice", alice.id, "PKALICE"),
        ("auth0|bob", bob.id, "PKBOB"),
        ("auth0|carol", carol_id, "PKVECTOR01"),
    ] {
        assert_eq!(keys(login, id).unwrap().api_key().expose_secret(), api_key);
    }
    #[cfg(feature = "bench-internals")]
    for (login, id, api_key) in [
        ("auth0|dave", dave.id, "PKDAVE"),
        ("auth0|erin", erin.id, "PKERIN"),
    ] {
        assert_eq!(keys(login, id).unwrap().api_key().expose_secret(), api_key);
    }
    // Now Carol's credential is bound to her too, and so is her account's
    // data key.
    swap_user_ids(db, "auth0|carol", "auth0|mallory");
    assert!(matches!(
        keys("auth0|mallory", carol_id),
        Err(Error::Decryption { credential_id, .. }) if credential_id == carol_id
    ));
    let uncached = CredentialStore::new(db.database(), ring(&[VECTOR_KEY]));
    assert!(matches!(
        uncached.keys(&account("auth0|mallory"), carol_id),
        Err(Error::DataKeyUnreadable { account_id, .. })
            if account_id.to_string() == VECTOR_ACCOUNT_ID
    ));
});

/// The `(api_key, secret_key)` of each of `rows`, by id, read as another program
/// would.
fn ciphertexts_by_id(
    db: &common::TestDb,
    rows: &[(UserAccount, UserCredential, String)],
) -> std::collections::BTreeMap<uuid::Uuid, (String, String)> {
    rows.iter()
        .map(|(_, credential, _)| {
            let column = |c: &str| {
                db.text(&format!(
                    "SELECT {c} AS t FROM user_credentials WHERE id = '{}'",
                    credential.id
                ))
            };
            (credential.id, (column("api_key"), column("secret_key")))
        })
        .collect()
}

/// The `api_key` and `secret_key` of the rows `filter` picks, read as another
/// program would.
fn stored_ciphertexts(db: &common::TestDb, filter: &str) -> Vec<String> {
    use diesel::Connection;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        api_key: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_key: String,
    }
    let mut c = diesel::SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
    let rows: Vec<Row> = diesel::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT api_key, secret_key FROM user_credentials {filter}"
        )),
        &mut c,
    )
    .unwrap();
    rows.into_iter()
        .flat_map(|r| [r.api_key, r.secret_key])
        .collect()
}

/// The ciphertexts of `needles` still present, byte for byte, in the SQLite file,
/// its `-wal` or its `-shm`, read while the store's connections are open.
fn left_in_files(db: &common::TestDb, needles: &[String]) -> Vec<String> {
    let path = db.sqlite_path();
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        if let Ok(content) = std::fs::read(&file) {
            bytes.extend_from_slice(&content);
            bytes.push(0);
        }
    }
    needles
        .iter()
        .filter(|needle| {
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .cloned()
        .collect()
}

fn rotation_deletion_and_new_keys_leave_no_old_ciphertext_in_the_sqlite_files() {
    let db = common::TestDb::sqlite();
    db.database().run_migrations().unwrap();
    let (old, new) = (format!("old:{}", test_key()), format!("new:{}", test_key()));
    let fernet =
        CredentialStore::new(db.database(), ring(&[&old])).with_format(CipherFormat::Fernet);
    let sealed = CredentialStore::new(db.database(), ring(&[&old]));
    let mut rows = populate(&fernet, 150);
    for (i, (account, ..)) in rows.clone().iter().enumerate() {
        let api_key = format!("PKSEALED{i:04}");
        let credential = sealed
            .insert_credential(
                account,
                &NewUserCredential::new("polygon", api_key.as_str(), format!("s-{i}")),
            )
            .unwrap();
        rows.push((account.clone(), credential, api_key));
    }
    // Legacy rows: the first ten sealed ones rewritten in sealed v2 under the old
    // key itself.
    #[cfg(feature = "bench-internals")]
    for (i, (account, credential, api_key)) in rows[150..160].iter().enumerate() {
        common::write_sealed_v2(
            &db,
            &ring(&[&old]),
            account,
            credential.id,
            (api_key, &format!("s-{i}")),
        );
    }
    let legacy: usize = if cfg!(feature = "bench-internals") {
        10
    } else {
        0
    };
    let all = stored_ciphertexts(&db, "");
    assert_eq!(all.len(), 600);
    assert_eq!(left_in_files(&db, &all).len(), 600, "the probe finds them");
    // What rotation replaces: the Fernet and sealed-v2 ciphertexts, and the data
    // keys as the old key wrapped them. The sealed-v3 ciphertexts stay: their data
    // keys are re-wrapped, not replaced.
    let before: Vec<String> = all
        .iter()
        .filter(|c| !c.starts_with("sealed:v3:"))
        .cloned()
        .collect();
    assert_eq!(before.len(), 300 + 2 * legacy);
    let wrapped_before = wrapped_keys(&db);
    assert_eq!(wrapped_before.len(), 2, "one data key per account");
    assert_eq!(left_in_files(&db, &wrapped_before).len(), 2);

    // The store stays open while the files are read: closing the last connection
    // would checkpoint and remove the WAL by itself.
    let store = CredentialStore::new(db.database(), ring(&[&new, &old]));
    let done = store.maintenance().rotate_keys(25, &mut |_| {}).unwrap();
    assert_eq!(
        (done.rewritten, done.data_keys_rewrapped),
        (150 + legacy as u64, 2)
    );
    assert_all_readable(&store, &rows);
    let left = left_in_files(&db, &before);
    assert!(
        left.is_empty(),
        "{} of {} old ciphertexts are still in the files, e.g. {:?}",
        left.len(),
        before.len(),
        left.first()
    );
    assert_eq!(
        left_in_files(&db, &wrapped_before),
        Vec::<String>::new(),
        "the data keys as the old key wrapped them"
    );

    // A deleted credential's ciphertexts go too, and so do replaced keys.
    let (account, deleted, _) = &rows[0];
    let (other_account, replaced, _) = &rows[1];
    let gone = stored_ciphertexts(
        &db,
        &format!("WHERE id IN ('{}', '{}')", deleted.id, replaced.id),
    );
    assert_eq!(left_in_files(&db, &gone).len(), 4);
    store.delete_credential(account, deleted.id).unwrap();
    store
        .update_credential(
            other_account,
            replaced.id,
            &credential_store::CredentialUpdate::default().keys("PKNEW", "SKNEW"),
        )
        .unwrap();
    assert_eq!(left_in_files(&db, &gone), Vec::<String>::new());

    // A rotation that only re-wraps data keys (every credential is sealed v3
    // already) leaves the replaced wrappings behind neither.
    let newer = format!("newer:{}", test_key());
    let wrapped_by_new = wrapped_keys(&db);
    let newer_store = CredentialStore::new(db.database(), ring(&[&newer, &new]));
    let done = newer_store
        .maintenance()
        .rotate_keys(25, &mut |_| {})
        .unwrap();
    assert_eq!((done.rewritten, done.data_keys_rewrapped), (0, 2));
    assert_eq!(
        left_in_files(&db, &wrapped_by_new),
        Vec::<String>::new(),
        "the data keys as the replaced key wrapped them"
    );
}

/// Every stored wrapped data key, read as another program would (SQLite).
fn wrapped_keys(db: &common::TestDb) -> Vec<String> {
    ["auth0|alice", "auth0|bob"]
        .iter()
        .map(|user_id| {
            db.text(&format!(
                "SELECT wrapped_key AS t FROM account_keys WHERE user_id = '{user_id}'"
            ))
        })
        .collect()
}
