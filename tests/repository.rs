//! Every repository behaviour, one test body per behaviour, run on SQLite and on
//! PostgreSQL.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{test_key, test_keyring, TestDb};
use credential_store::{
    AccountScope, Backend, CipherFormat, CredentialStore, CredentialUpdate, Error, Field, Keyring,
    NewUserAccount, NewUserCredential, Rule, UserAccount,
};
use secrecy::ExposeSecret;
use uuid::Uuid;

fn main() {
    common::trials::run(vec![
        accounts_are_created_and_found::tests(),
        account_input_is_validated::tests(),
        insert_copies_the_user_and_defaults_the_nickname::tests(),
        serde_output_holds_no_key_material::tests(),
        lookups_by_type_and_nickname::tests(),
        a_shared_nickname_is_ambiguous_not_guessed::tests(),
        nicknames_are_nfc_normalised_on_write_and_lookup::tests(),
        bad_credential_input_is_refused_and_changes_nothing::tests(),
        unknown_and_mismatched_accounts_are_refused::tests(),
        no_call_reaches_another_accounts_rows::tests(),
        updates_set_keep_or_clear_each_field::tests(),
        delete_removes_one_credential::tests(),
        inactive_and_expired_credentials_give_no_keys::tests(),
        wrong_key_and_corrupted_ciphertext_are_typed_errors::tests(),
        #[cfg(feature = "bench-internals")]
        wrong_key_and_corrupted_sealed_v2_are_typed_errors::tests(),
        backfill_sets_missing_nicknames_once::tests(),
        batch_inserts_are_all_or_nothing::tests(),
        trial!(a_missing_key_is_an_error_never_plaintext),
        trial!(the_sqlite_file_holds_no_plaintext),
    ]);
}

fn account(store: &CredentialStore, user_id: &str) -> UserAccount {
    store
        .create_account(&NewUserAccount::new(user_id, "Trading account"))
        .expect("create account")
}

fn paper<'a>(nickname: Option<&'a str>, api_key: &str) -> NewUserCredential<'a> {
    let mut new = NewUserCredential::new("alpaca_paper", api_key, format!("secret-{api_key}"));
    new.nickname = nickname;
    new
}

/// Sets a credential's `updated_at` to 2000-01-01 by raw SQL, outside the crate,
/// and returns that time: an update's new `updated_at` is then strictly later
/// whatever the clock's resolution.
fn backdate(db: &TestDb, credential_id: Uuid) -> DateTime<Utc> {
    let old = match db.backend {
        Backend::Sqlite => "2000-01-01T00:00:00.000000Z",
        Backend::Mysql => "2000-01-01 00:00:00",
        _ => "2000-01-01 00:00:00+00",
    };
    db.execute(&format!(
        "UPDATE user_credentials SET updated_at = '{old}' WHERE id = '{credential_id}'"
    ));
    "2000-01-01T00:00:00Z".parse().unwrap()
}

on_both_backends!(accounts_are_created_and_found, |db| {
    let store = db.store();
    let created = account(&store, "auth0|alice");
    assert_eq!(created.user_id(), "auth0|alice");
    assert!(created.is_active());
    assert_eq!(
        store.account_by_user_id("auth0|alice").unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.account("auth0|alice", created.id()).unwrap(),
        Some(created.clone())
    );
    // The id alone is not enough: the account must belong to the user named.
    assert_eq!(store.account("auth0|mallory", created.id()).unwrap(), None);
    assert_eq!(store.account_by_user_id("auth0|nobody").unwrap(), None);

    let again = store.create_account(&NewUserAccount::new("auth0|alice", "Second"));
    assert!(
        matches!(again, Err(Error::AccountExists { ref user_id }) if user_id == "auth0|alice"),
        "{again:?}"
    );
    assert_eq!(db.count("user_accounts"), 1);
});

on_both_backends!(account_input_is_validated, |db| {
    let store = db.store();
    let long_name = "n".repeat(256);
    let refused = [
        (NewUserAccount::new("", "x"), Field::UserId),
        (NewUserAccount::new("a\0b", "x"), Field::UserId),
        (NewUserAccount::new("ok", "   "), Field::AccountName),
        (NewUserAccount::new("ok", &long_name), Field::AccountName),
    ];
    for (new, expected) in refused {
        match store.create_account(&new) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, expected),
            other => panic!("{new:?} gave {other:?}"),
        }
    }
    assert_eq!(db.count("user_accounts"), 0);
    let name = store
        .create_account(&NewUserAccount::new("ok", "  Cafe\u{301} "))
        .unwrap();
    assert_eq!(name.account_name(), "Caf\u{e9}");
});

on_both_backends!(insert_copies_the_user_and_defaults_the_nickname, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let named = store
        .insert_credential(&acct, &paper(Some("  Momentum "), "PK1"))
        .unwrap();
    let unnamed = store.insert_credential(&acct, &paper(None, "PK2")).unwrap();
    let blank = store
        .insert_credential(&acct, &paper(Some(" \t "), "PK3"))
        .unwrap();
    assert_eq!(named.nickname.as_deref(), Some("Momentum"));
    assert_eq!(unnamed.nickname.as_deref(), Some("alpaca_paper"));
    assert_eq!(blank.nickname.as_deref(), Some("alpaca_paper"));
    for credential in [&named, &unnamed, &blank] {
        assert_eq!(credential.user_id, acct.user_id());
        assert_eq!(credential.user_account_id, acct.id());
        assert!(credential.is_active);
        assert_eq!(
            store.credential(&acct, credential.id).unwrap().as_ref(),
            Some(credential)
        );
    }
    let keys = store.keys(&acct, named.id).unwrap();
    assert_eq!(keys.api_key().expose_secret(), "PK1");
    assert_eq!(keys.secret_key().expose_secret(), "secret-PK1");
});

on_both_backends!(serde_output_holds_no_key_material, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let credential = store
        .insert_credential(&acct, &paper(Some("Momentum"), "PKSERDE42"))
        .unwrap();
    let json = serde_json::to_string(&credential).unwrap();
    assert!(
        !json.contains("PKSERDE42") && !json.contains("secret-"),
        "{json}"
    );
    assert!(
        !json.contains("api_key") && !json.contains("secret_key"),
        "{json}"
    );
    assert!(!json.contains("gAAAA"), "no ciphertext either: {json}");
    let back: credential_store::UserCredential = serde_json::from_str(&json).unwrap();
    assert_eq!(back, credential);
    let debug = format!("{credential:?} {acct:?}");
    assert!(
        !debug.contains("PKSERDE42") && !debug.contains("gAAAA"),
        "{debug}"
    );
});

on_both_backends!(lookups_by_type_and_nickname, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let momentum = store
        .insert_credential(&acct, &paper(Some("Momentum"), "PK1"))
        .unwrap();
    let swing = store
        .insert_credential(&acct, &paper(Some("Swing"), "PK2"))
        .unwrap();
    let live = store
        .insert_credential(
            &acct,
            &NewUserCredential::new("alpaca_live", "AK1", "live-secret"),
        )
        .unwrap();

    let listed: Vec<Uuid> = store
        .credentials(&acct)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, [live.id, swing.id, momentum.id], "newest first");

    let papers: Vec<Uuid> = store
        .credentials_by_type(&acct, "alpaca_paper")
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(papers, [swing.id, momentum.id]);
    assert!(store
        .credentials_by_type(&acct, "polygon")
        .unwrap()
        .is_empty());

    assert_eq!(
        store
            .credential_by_nickname(&acct, "Swing")
            .unwrap()
            .map(|c| c.id),
        Some(swing.id)
    );
    assert_eq!(
        store
            .credential_by_nickname(&acct, " Swing ")
            .unwrap()
            .map(|c| c.id),
        Some(swing.id)
    );
    assert_eq!(
        store
            .credential_by_nickname(&acct, "alpaca_live")
            .unwrap()
            .map(|c| c.id),
        Some(live.id)
    );
    assert_eq!(
        store.credential_by_nickname(&acct, "swing").unwrap(),
        None,
        "nicknames are case-sensitive"
    );
    assert_eq!(store.credential_by_nickname(&acct, "Nope").unwrap(), None);
    assert!(matches!(
        store.credentials_by_nickname(&acct, "bad\nname"),
        Err(Error::Invalid {
            field: Field::Nickname,
            rule: Rule::ControlCharacter { position: 3 }
        })
    ));
});

on_both_backends!(a_shared_nickname_is_ambiguous_not_guessed, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let first = store
        .insert_credential(&acct, &paper(Some("Bot"), "PK1"))
        .unwrap();
    let second = store
        .insert_credential(&acct, &paper(Some("Bot"), "PK2"))
        .unwrap();
    store
        .insert_credential(
            &acct,
            &NewUserCredential::new("polygon", "PG1", "s").nickname("Bot"),
        )
        .unwrap();

    let all: Vec<Uuid> = store
        .credentials_by_nickname(&acct, "Bot")
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(all.len(), 3);
    assert!(all.contains(&first.id) && all.contains(&second.id));
    match store.credential_by_nickname(&acct, "Bot") {
        Err(Error::AmbiguousNickname {
            nickname,
            matches,
            account_id,
        }) => {
            assert_eq!(
                (nickname.as_str(), matches, account_id),
                ("Bot", 3, acct.id())
            );
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    let message = store
        .credential_by_nickname(&acct, "Bot")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("ambiguous") && message.contains('3'),
        "{message}"
    );
});

on_both_backends!(nicknames_are_nfc_normalised_on_write_and_lookup, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    // "é" as e + combining acute accent, stored precomposed.
    let stored = store
        .insert_credential(&acct, &paper(Some("Cafe\u{301}"), "PK1"))
        .unwrap();
    assert_eq!(stored.nickname.as_deref(), Some("Caf\u{e9}"));
    assert_eq!(
        store
            .credential_by_nickname(&acct, "Caf\u{e9}")
            .unwrap()
            .map(|c| c.id),
        Some(stored.id)
    );
    assert_eq!(
        store
            .credential_by_nickname(&acct, "Cafe\u{301}")
            .unwrap()
            .map(|c| c.id),
        Some(stored.id)
    );
});

on_both_backends!(bad_credential_input_is_refused_and_changes_nothing, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let at_limit = "ñ".repeat(255);
    let over = "ñ".repeat(256);
    let long_key = "k".repeat(4097);
    let long_type = "a".repeat(51);
    let cases: Vec<(NewUserCredential<'_>, Field)> = vec![
        (paper(Some(&over), "PK"), Field::Nickname),
        (paper(Some("nul\0byte"), "PK"), Field::Nickname),
        (paper(Some("tab\tinside"), "PK"), Field::Nickname),
        (
            NewUserCredential::new("Alpaca", "PK", "s"),
            Field::CredentialType,
        ),
        (NewUserCredential::new("", "PK", "s"), Field::CredentialType),
        (
            NewUserCredential::new(&long_type, "PK", "s"),
            Field::CredentialType,
        ),
        (
            NewUserCredential::new("_paper", "PK", "s"),
            Field::CredentialType,
        ),
        (
            NewUserCredential::new("alpaca paper", "PK", "s"),
            Field::CredentialType,
        ),
        (
            NewUserCredential::new("alpaca_paper", "", "s"),
            Field::ApiKey,
        ),
        (
            NewUserCredential::new("alpaca_paper", long_key.as_str(), "s"),
            Field::ApiKey,
        ),
        (
            NewUserCredential::new("alpaca_paper", "PK", ""),
            Field::SecretKey,
        ),
    ];
    for (new, expected) in &cases {
        match store.insert_credential(&acct, new) {
            Err(Error::Invalid { field, rule }) => {
                assert_eq!(field, *expected, "{new:?}: {rule}");
            }
            other => panic!("{new:?} gave {other:?}"),
        }
    }
    assert_eq!(
        db.count("user_credentials"),
        0,
        "a refused insert wrote a row"
    );

    // The boundaries themselves are accepted: 255 characters (510 bytes), 50-character type.
    let stored = store
        .insert_credential(&acct, &paper(Some(&at_limit), "PK"))
        .unwrap();
    assert_eq!(
        stored.nickname.as_deref().map(|n| n.chars().count()),
        Some(255)
    );
    store
        .insert_credential(&acct, &NewUserCredential::new(&"a".repeat(50), "PK", "s"))
        .unwrap();
    assert_eq!(db.count("user_credentials"), 2);
});

on_both_backends!(unknown_and_mismatched_accounts_are_refused, |db| {
    let store = db.store();
    let alice = account(&store, "auth0|alice");
    let ghost = AccountScope::new(alice.user_id(), Uuid::now_v7()).unwrap();
    assert!(matches!(
        store.insert_credential(&ghost, &paper(None, "PK")),
        Err(Error::UnknownAccount { account_id }) if account_id == ghost.id()
    ));
    let impostor = AccountScope::new("auth0|mallory", alice.id()).unwrap();
    match store.insert_credential(&impostor, &paper(None, "PK")) {
        // SQLite sees the account and names the mismatch; PostgreSQL's row-level
        // security already hides another user's account from this transaction.
        Err(Error::AccountUserMismatch {
            account_id,
            user_id,
        }) => {
            assert_eq!(
                (account_id, user_id.as_str()),
                (alice.id(), "auth0|mallory")
            );
        }
        Err(Error::UnknownAccount { account_id }) => assert_eq!(account_id, alice.id()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(db.count("user_credentials"), 0);
});

on_both_backends!(no_call_reaches_another_accounts_rows, |db| {
    let store = db.store();
    let alice = account(&store, "auth0|alice");
    let bob = account(&store, "auth0|bob");
    let secret = store
        .insert_credential(&alice, &paper(Some("Shared name"), "PKALICE"))
        .unwrap();
    store
        .insert_credential(&bob, &paper(Some("Shared name"), "PKBOB"))
        .unwrap();

    assert_eq!(store.credential(&bob, secret.id).unwrap(), None);
    assert_eq!(store.credentials(&bob).unwrap().len(), 1);
    assert_eq!(
        store
            .credentials_by_type(&bob, "alpaca_paper")
            .unwrap()
            .len(),
        1
    );
    let bobs = store
        .credential_by_nickname(&bob, "Shared name")
        .unwrap()
        .unwrap();
    assert_eq!(bobs.user_id, "auth0|bob");
    assert!(matches!(
        store.keys(&bob, secret.id),
        Err(Error::CredentialNotFound { credential_id, .. }) if credential_id == secret.id
    ));
    let steal = CredentialUpdate::default().nickname("mine now");
    assert!(matches!(
        store.update_credential(&bob, secret.id, &steal),
        Err(Error::CredentialNotFound { .. })
    ));
    assert!(matches!(
        store.delete_credential(&bob, secret.id),
        Err(Error::CredentialNotFound { .. })
    ));

    // A hand-built account value with Alice's id but Bob's user id sees nothing either.
    let forged = AccountScope::new("auth0|bob", alice.id()).unwrap();
    assert!(store.credentials(&forged).unwrap().is_empty());
    assert_eq!(store.credential(&forged, secret.id).unwrap(), None);

    let untouched = store.credential(&alice, secret.id).unwrap().unwrap();
    assert_eq!(untouched, secret);
    assert_eq!(
        store
            .keys(&alice, secret.id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PKALICE"
    );
});

on_both_backends!(updates_set_keep_or_clear_each_field, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let original = store
        .insert_credential(&acct, &paper(Some("Momentum"), "PKOLD"))
        .unwrap();
    let expiry = Utc::now() + Duration::days(30);
    let old = backdate(db, original.id);
    assert_eq!(
        store
            .credential(&acct, original.id)
            .unwrap()
            .unwrap()
            .updated_at,
        old
    );

    let changed = store
        .update_credential(
            &acct,
            original.id,
            &CredentialUpdate::default()
                .nickname(" Momentum v2 ")
                .active(false)
                .expires_at(expiry),
        )
        .unwrap();
    assert_eq!(changed.nickname.as_deref(), Some("Momentum v2"));
    assert!(!changed.is_active);
    assert_eq!(
        changed.expires_at.map(|t| t.timestamp_micros()),
        Some(expiry.timestamp_micros())
    );
    assert!(changed.updated_at > old, "an update sets updated_at");
    assert_eq!(changed.created_at, original.created_at);
    assert_eq!(
        store.credential(&acct, original.id).unwrap(),
        Some(changed.clone())
    );

    // Keep everything but the keys.
    let old = backdate(db, original.id);
    let rekeyed = store
        .update_credential(
            &acct,
            original.id,
            &CredentialUpdate::default().keys("PKNEW", "SKNEW"),
        )
        .unwrap();
    assert_eq!(rekeyed.nickname, changed.nickname);
    assert_eq!(rekeyed.expires_at, changed.expires_at);
    assert!(!rekeyed.is_active);
    assert!(
        rekeyed.updated_at > old,
        "a change of keys alone sets updated_at"
    );

    let old = backdate(db, original.id);
    let cleared = store
        .update_credential(
            &acct,
            original.id,
            &CredentialUpdate::default()
                .clear_nickname()
                .clear_expiry()
                .active(true),
        )
        .unwrap();
    assert_eq!(
        (
            cleared.nickname.as_deref(),
            cleared.expires_at,
            cleared.is_active
        ),
        (None, None, true)
    );
    assert!(cleared.updated_at > old);
    let keys = store.keys(&acct, original.id).unwrap();
    assert_eq!(
        (
            keys.api_key().expose_secret(),
            keys.secret_key().expose_secret()
        ),
        ("PKNEW", "SKNEW")
    );

    // Bad input is refused and changes nothing: not the row, not its timestamp
    // (set back first, so a write would show), not the keys.
    backdate(db, original.id);
    let before = store.credential(&acct, original.id).unwrap().unwrap();
    for update in [
        CredentialUpdate::default().nickname("  "),
        CredentialUpdate::default().nickname("x".repeat(256)),
        CredentialUpdate::default().active(false).keys("", "s"),
    ] {
        assert!(matches!(
            store.update_credential(&acct, original.id, &update),
            Err(Error::Invalid { .. })
        ));
    }
    assert_eq!(store.credential(&acct, original.id).unwrap(), Some(before));
    let keys = store.keys(&acct, original.id).unwrap();
    assert_eq!(
        (
            keys.api_key().expose_secret(),
            keys.secret_key().expose_secret()
        ),
        ("PKNEW", "SKNEW")
    );

    let missing = Uuid::now_v7();
    assert!(matches!(
        store.update_credential(&acct, missing, &CredentialUpdate::default()),
        Err(Error::CredentialNotFound { credential_id, .. }) if credential_id == missing
    ));
});

on_both_backends!(delete_removes_one_credential, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let gone = store
        .insert_credential(&acct, &paper(Some("A"), "PK1"))
        .unwrap();
    let kept = store
        .insert_credential(&acct, &paper(Some("B"), "PK2"))
        .unwrap();
    store.delete_credential(&acct, gone.id).unwrap();
    assert_eq!(store.credential(&acct, gone.id).unwrap(), None);
    assert_eq!(store.credentials(&acct).unwrap(), vec![kept]);
    assert!(matches!(
        store.delete_credential(&acct, gone.id),
        Err(Error::CredentialNotFound { .. })
    ));
});

on_both_backends!(inactive_and_expired_credentials_give_no_keys, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let inactive = store
        .insert_credential(&acct, &paper(Some("Off"), "PK1").active(false))
        .unwrap();
    let expired = store
        .insert_credential(
            &acct,
            &paper(Some("Old"), "PK2").expires_at(Utc::now() - Duration::seconds(1)),
        )
        .unwrap();
    let future = store
        .insert_credential(
            &acct,
            &paper(Some("New"), "PK3").expires_at(Utc::now() + Duration::hours(1)),
        )
        .unwrap();
    assert!(matches!(
        store.keys(&acct, inactive.id),
        Err(Error::CredentialInactive { credential_id }) if credential_id == inactive.id
    ));
    match store.keys(&acct, expired.id) {
        Err(Error::CredentialExpired {
            credential_id,
            expired_at,
        }) => {
            assert_eq!(credential_id, expired.id);
            assert_eq!(Some(expired_at), expired.expires_at);
        }
        other => panic!("expected expiry, got {other:?}"),
    }
    assert_eq!(
        store
            .keys(&acct, future.id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PK3"
    );
    assert!(!expired.is_usable_at(Utc::now()) && future.is_usable_at(Utc::now()));
});

on_both_backends!(wrong_key_and_corrupted_ciphertext_are_typed_errors, |db| {
    db.database().run_migrations().unwrap();
    let key = test_key();
    let ring = |entries: &[String]| Keyring::from_fernet_keys(entries).unwrap();
    for format in [CipherFormat::Sealed, CipherFormat::Fernet] {
        let store =
            CredentialStore::new(db.database(), ring(&[format!("main:{key}")])).with_format(format);
        let user_id = format!("auth0|{format}");
        let acct = account(&store, &user_id);
        let credential = store
            .insert_credential(&acct, &paper(Some("A"), "PK1"))
            .unwrap();

        // The same key id over another key: nothing opens. A sealed (v3)
        // credential's data key does not unwrap; a Fernet token does not decrypt.
        let impostor = CredentialStore::new(
            store.database().clone(),
            ring(&[format!("main:{}", test_key())]),
        );
        match (format, impostor.keys(&acct, credential.id)) {
            (CipherFormat::Sealed, Err(err @ Error::DataKeyUnreadable { .. })) => {
                assert!(!err.is_retryable(), "a wrong key is not the moment's");
                let Error::DataKeyUnreadable {
                    account_id,
                    provider,
                    ..
                } = err
                else {
                    unreachable!()
                };
                assert_eq!((account_id, provider.as_str()), (acct.id(), "keyring"));
            }
            (
                CipherFormat::Fernet,
                Err(Error::Decryption {
                    credential_id,
                    field,
                }),
            ) => {
                assert_eq!((credential_id, field), (credential.id, Field::ApiKey));
            }
            (_, other) => panic!("{format}: expected a typed error, got {other:?}"),
        }
        // Another key id: the keyring that wrapped a sealed credential's data key
        // is named.
        let stranger = CredentialStore::new(
            store.database().clone(),
            ring(&[format!("other:{}", test_key())]),
        );
        match (format, stranger.keys(&acct, credential.id)) {
            (
                CipherFormat::Sealed,
                Err(Error::DataKeyUnreadable {
                    account_id, reason, ..
                }),
            ) => {
                assert_eq!(account_id, acct.id());
                assert!(reason.contains("`main`"), "{reason}");
            }
            (CipherFormat::Fernet, Err(Error::Decryption { credential_id, .. })) => {
                assert_eq!(credential_id, credential.id);
            }
            (_, other) => panic!("{format}: expected a typed error, got {other:?}"),
        }

        // Flip one character in the middle of the stored secret-key ciphertext.
        db.execute(&format!(
            "UPDATE user_credentials SET secret_key = substr(secret_key, 1, 40) \
             || CASE WHEN substr(secret_key, 41, 1) = 'A' THEN 'B' ELSE 'A' END \
             || substr(secret_key, 42) WHERE user_id = '{user_id}'"
        ));
        match store.keys(&acct, credential.id) {
            Err(
                err @ Error::Decryption {
                    field: Field::SecretKey,
                    ..
                },
            ) => {
                let message = err.to_string();
                assert!(
                    message.contains(&credential.id.to_string()) && message.contains("secret_key"),
                    "{message}"
                );
            }
            other => panic!("{format}: expected a decryption error, got {other:?}"),
        }
    }
});

// Sealed v2, as stores wrote it before data keys: sealed under the keyring's key
// itself, so a wrong keyring is `Error::Decryption` and a missing key is
// `Error::UnknownKey` naming it; a damaged value is `Error::Decryption`.
#[cfg(feature = "bench-internals")]
on_both_backends!(wrong_key_and_corrupted_sealed_v2_are_typed_errors, |db| {
    db.database().run_migrations().unwrap();
    let key = test_key();
    let ring = |entries: &[String]| Keyring::from_fernet_keys(entries).unwrap();
    let store = CredentialStore::new(db.database(), ring(&[format!("main:{key}")]));
    let user_id = "auth0|sealed-v2";
    let acct = account(&store, user_id);
    let credential = store
        .insert_credential(&acct, &paper(Some("A"), "placeholder"))
        .unwrap();
    common::write_sealed_v2(
        db,
        &ring(&[format!("main:{key}")]),
        &acct,
        credential.id,
        ("PK1", "s"),
    );
    assert_eq!(
        store
            .keys(&acct, credential.id)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PK1"
    );

    // The same key id over another key: nothing opens.
    let impostor = CredentialStore::new(
        store.database().clone(),
        ring(&[format!("main:{}", test_key())]),
    );
    match impostor.keys(&acct, credential.id) {
        Err(Error::Decryption {
            credential_id,
            field,
        }) => assert_eq!((credential_id, field), (credential.id, Field::ApiKey)),
        other => panic!("expected a decryption error, got {other:?}"),
    }
    // Another key id: the ciphertext names the key it needs.
    let stranger = CredentialStore::new(
        store.database().clone(),
        ring(&[format!("other:{}", test_key())]),
    );
    match stranger.keys(&acct, credential.id) {
        Err(Error::UnknownKey {
            credential_id,
            field,
            key_id,
        }) => assert_eq!(
            (credential_id, field, key_id.as_str()),
            (credential.id, Field::ApiKey, "main")
        ),
        other => panic!("expected UnknownKey, got {other:?}"),
    }

    db.execute(&format!(
        "UPDATE user_credentials SET secret_key = substr(secret_key, 1, 40) \
         || CASE WHEN substr(secret_key, 41, 1) = 'A' THEN 'B' ELSE 'A' END \
         || substr(secret_key, 42) WHERE user_id = '{user_id}'"
    ));
    match store.keys(&acct, credential.id) {
        Err(Error::Decryption {
            credential_id,
            field: Field::SecretKey,
        }) => assert_eq!(credential_id, credential.id),
        other => panic!("expected a decryption error, got {other:?}"),
    }
});

on_both_backends!(backfill_sets_missing_nicknames_once, |db| {
    let store = db.store();
    let alice = account(&store, "auth0|alice");
    let bob = account(&store, "auth0|bob");
    let mut legacy = Vec::new();
    for (i, acct) in [&alice, &bob, &alice, &bob, &alice].into_iter().enumerate() {
        let new = NewUserCredential::new(
            if i % 2 == 0 {
                "alpaca_paper"
            } else {
                "polygon"
            },
            "PK",
            "s",
        );
        legacy.push((acct, store.insert_credential(acct, &new).unwrap()));
    }
    let named = store
        .insert_credential(&alice, &paper(Some("Keep me"), "PK"))
        .unwrap();
    // Legacy rows: written before nicknames existed.
    db.execute("UPDATE user_credentials SET nickname = NULL WHERE nickname <> 'Keep me'");
    assert!(
        store
            .credentials(&alice)
            .unwrap()
            .iter()
            .filter(|c| c.nickname.is_none())
            .count()
            == 3
    );

    assert_eq!(
        store.maintenance().backfill_nicknames(2).unwrap(),
        5,
        "three batches of at most two rows"
    );
    assert_eq!(
        store.maintenance().backfill_nicknames(2).unwrap(),
        0,
        "idempotent"
    );
    for (acct, credential) in &legacy {
        let now = store.credential(acct, credential.id).unwrap().unwrap();
        assert_eq!(now.nickname.as_deref(), Some(now.credential_type.as_str()));
    }
    assert_eq!(
        store
            .credential(&alice, named.id)
            .unwrap()
            .unwrap()
            .nickname
            .as_deref(),
        Some("Keep me")
    );
    assert!(matches!(
        store.maintenance().backfill_nicknames(0),
        Err(Error::Invalid {
            field: Field::BatchSize,
            ..
        })
    ));
});

fn a_missing_key_is_an_error_never_plaintext() {
    let variable = "CREDENTIAL_STORE_TEST_UNSET_KEYS";
    match Keyring::from_env_var(variable) {
        Err(err @ Error::NoKeyConfigured { .. }) => assert!(err.to_string().contains(variable)),
        other => panic!("expected NoKeyConfigured, got {other:?}"),
    }
}

fn the_sqlite_file_holds_no_plaintext() {
    let db = TestDb::sqlite();
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let api_key = "PKPLAINTEXTMARKER4F2A";
    let secret_key = "SKPLAINTEXTMARKER9c1e";
    let credential = store
        .insert_credential(
            &acct,
            &NewUserCredential::new("alpaca_paper", api_key, secret_key),
        )
        .unwrap();
    store
        .update_credential(
            &acct,
            credential.id,
            &CredentialUpdate::default().keys(api_key, secret_key),
        )
        .unwrap();
    drop(store);
    let mut found = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.sqlite_path().display());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in [api_key, secret_key, "PLAINTEXTMARKER"] {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{needle} in {path}"));
            }
        }
    }
    assert!(found.is_empty(), "plaintext found: {found:?}");
    // The row is there, readable with the key: the search did look at real data.
    let store = CredentialStore::new(db.database(), test_keyring());
    assert_eq!(store.credentials(&acct).unwrap().len(), 1);
}

on_both_backends!(batch_inserts_are_all_or_nothing, |db| {
    let store = db.store();
    let acct = account(&store, "auth0|alice");
    let nicknames: Vec<String> = (0..1500).map(|i| format!("bot {i}")).collect();
    let batch: Vec<NewUserCredential<'_>> = nicknames
        .iter()
        .map(|n| NewUserCredential::new("alpaca_paper", format!("PK{n}"), "s").nickname(n))
        .collect();
    let stored = store.insert_credentials(&acct, &batch).unwrap();
    assert_eq!(stored.len(), 1500, "two INSERTs of at most 1000 rows");
    for (credential, nickname) in stored.iter().zip(&nicknames) {
        assert_eq!(
            credential.nickname.as_deref(),
            Some(nickname.as_str()),
            "input order"
        );
    }
    let last = &stored[1499];
    let keys = store.keys(&acct, last.id).unwrap();
    assert_eq!(keys.api_key().expose_secret(), "PKbot 1499");
    assert_eq!(
        store
            .credentials_by_type(&acct, "alpaca_paper")
            .unwrap()
            .len(),
        1500
    );

    let mut bad: Vec<NewUserCredential<'_>> = (0..3)
        .map(|_| NewUserCredential::new("polygon", "PG", "s"))
        .collect();
    bad.push(NewUserCredential::new("polygon", "PG", "s").nickname("nul\0"));
    assert!(matches!(
        store.insert_credentials(&acct, &bad),
        Err(Error::Invalid {
            field: Field::Nickname,
            ..
        })
    ));
    assert!(
        store
            .credentials_by_type(&acct, "polygon")
            .unwrap()
            .is_empty(),
        "none of the batch"
    );

    // The database refuses row 1,200, in the second INSERT: the first INSERT's
    // 1,000 rows are undone with it.
    refuse_nickname(db, "late 1200");
    let nicknames: Vec<String> = (0..1500).map(|i| format!("late {i}")).collect();
    let late: Vec<NewUserCredential<'_>> = nicknames
        .iter()
        .map(|n| NewUserCredential::new("alpaca_live", format!("PK{n}"), "s").nickname(n))
        .collect();
    let refused = store.insert_credentials(&acct, &late);
    assert!(
        matches!(refused, Err(Error::Database(_))),
        "the database's refusal: {refused:?}"
    );
    assert!(store
        .credentials_by_type(&acct, "alpaca_live")
        .unwrap()
        .is_empty());
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM user_credentials WHERE nickname LIKE 'late %'"),
        0,
        "no row of the refused batch is stored"
    );
    assert_eq!(
        db.count("user_credentials"),
        1500,
        "the first batch is kept"
    );
    assert!(store.insert_credentials(&acct, &[]).unwrap().is_empty());
});

/// Makes the database itself refuse any credential row with this nickname (a CHECK
/// constraint; on SQLite, which cannot add one to a table, a trigger), as the
/// crate's validation never would.
fn refuse_nickname(db: &TestDb, nickname: &str) {
    db.execute(&match db.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER refuse_nickname BEFORE INSERT ON user_credentials \
             WHEN NEW.nickname = '{nickname}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ),
        _ => format!(
            "ALTER TABLE user_credentials ADD CONSTRAINT refuse_nickname \
             CHECK (nickname IS NULL OR nickname <> '{nickname}')"
        ),
    });
}
