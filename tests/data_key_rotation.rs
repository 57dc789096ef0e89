//! Replacing every account's data key (`rotate --data-keys`): each account gets
//! the next version, its credentials are re-encrypted under it, and every
//! credential stays readable throughout, including one that a store still
//! holding the old key in its cache writes after the replacement. A retired key
//! is deleted once past its grace period and unused, after which the old data
//! key opens no stored credential. A stopped run resumes with the same cutoff.

fn main() {
    common::trials::run(vec![
        data_keys_are_replaced_and_credentials_reencrypted::tests(),
    ]);
}

mod common;

use common::{test_key, TestDb};
use credential_store::{
    maintenance::CopyOptions, CredentialStore, Error, Keyring, Maintenance, NewUserAccount,
    NewUserCredential, Outcome,
};
use secrecy::ExposeSecret;
use std::ops::ControlFlow;
use std::time::Duration;

/// A migrated store on `db` with a cache of its own (another process).
fn open_store(db: &TestDb, key: &str) -> CredentialStore {
    let database = db.database();
    database.run_migrations().expect("migrations");
    CredentialStore::new(database, Keyring::from_fernet_keys([key]).unwrap())
}

/// Every stored (api_key, secret_key) pair's data-key version prefixes.
fn versions(db: &TestDb) -> Vec<String> {
    let mut versions = Vec::new();
    for column in ["api_key", "secret_key"] {
        for version in ["1", "2", "3"] {
            let n = db.scalar(&format!(
                "SELECT COUNT(*) AS n FROM user_credentials WHERE {column} LIKE 'sealed:v3:{version}:%'"
            ));
            if n > 0 {
                versions.push(format!("{column}@v{version}={n}"));
            }
        }
    }
    versions
}

on_both_backends!(data_keys_are_replaced_and_credentials_reencrypted, |db| {
    let key = test_key();
    let store = open_store(db, &key);
    let ada = store
        .create_account(&NewUserAccount::new("auth0|ada", "Ada"))
        .unwrap();
    let bob = store
        .create_account(&NewUserAccount::new("auth0|bob", "Bob"))
        .unwrap();
    let mut written = store
        .insert_credentials(
            &ada,
            &[
                NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Momentum"),
                NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing"),
                NewUserCredential::new("alpaca_live", "PK3", "s3"),
            ],
        )
        .unwrap()
        .into_iter()
        .map(|c| (ada.clone(), c.id, c.nickname))
        .collect::<Vec<_>>();
    let b = store
        .insert_credential(&bob, &NewUserCredential::new("binance", "PK4", "s4"))
        .unwrap();
    written.push((bob.clone(), b.id, b.nickname));
    let plaintexts = ["PK1", "PK2", "PK3", "PK4"];
    assert_eq!(versions(db), ["api_key@v1=4", "secret_key@v1=4"]);
    let old_wrapped = db.text(&format!(
        "SELECT wrapped_key AS t FROM account_keys WHERE account_id = '{}'",
        ada.id()
    ));

    // A service that caches ada's data key (version 1) before the rotation.
    let stale = open_store(db, &key);
    assert_eq!(
        stale
            .keys(&ada, written[0].1)
            .unwrap()
            .api_key()
            .expose_secret(),
        "PK1"
    );

    // A run stopped after its first batch (one account) replaces one key.
    let made_before = chrono::Utc::now();
    let maintenance = Maintenance::new(db.database(), Keyring::from_fernet_keys([&key]).unwrap())
        .replacing_data_keys(made_before);
    let stopped = maintenance
        .rotate_keys_with(1, &mut |_| ControlFlow::Break(()))
        .unwrap();
    let Outcome::Stopped(progress) = stopped else {
        panic!("expected a stopped run, got {stopped:?}");
    };
    assert_eq!(progress.data_keys_replaced, 1);
    assert_eq!(db.count("retired_account_keys"), 1);
    // Every credential still opens, in a fresh process.
    for ((account, id, _), plaintext) in written.iter().zip(plaintexts) {
        let keys = open_store(db, &key).keys(account, *id).unwrap();
        assert_eq!(keys.api_key().expose_secret(), plaintext);
    }

    // The same cutoff resumes: the key replaced by the first run is left alone.
    let done = maintenance.rotate_keys(100, &mut |_| {}).unwrap();
    assert_eq!(done.data_keys_replaced, 1, "{done:?}");
    assert_eq!(done.rewritten, 4, "{done:?}");
    assert_eq!(done.retired_keys_deleted, 0, "within the grace period");
    assert_eq!(
        db.scalar("SELECT COUNT(*) AS n FROM account_keys WHERE version = 2"),
        2
    );
    assert_eq!(db.count("retired_account_keys"), 2);
    assert_eq!(versions(db), ["api_key@v2=4", "secret_key@v2=4"]);

    // Reverting the migration that keeps retired keys is refused while one is.
    match db.database().revert_last_migration() {
        Err(Error::RevertWouldExpose { version, .. }) => assert_eq!(version, "20261208000007"),
        other => panic!("expected RevertWouldExpose, got {other:?}"),
    }

    // The stale service still seals under version 1 (its cache holds it): the
    // row is readable everywhere, through the retired key.
    let late = stale
        .insert_credential(&ada, &NewUserCredential::new("kraken", "PK5", "s5"))
        .unwrap();
    assert_eq!(
        versions(db),
        [
            "api_key@v1=1",
            "api_key@v2=4",
            "secret_key@v1=1",
            "secret_key@v2=4"
        ]
    );
    let fresh = open_store(db, &key);
    assert_eq!(
        fresh
            .keys(&ada, late.id)
            .unwrap()
            .secret_key()
            .expose_secret(),
        "s5"
    );
    let (found, keys) = fresh.keys_by_nickname(&ada, "Swing").unwrap().unwrap();
    assert_eq!(
        (found.id, keys.api_key().expose_secret()),
        (written[1].1, "PK2")
    );
    written.push((ada.clone(), late.id, late.nickname));

    // A copy carries the retired keys: the late row opens on the target too.
    let target = TestDb::sqlite();
    let report = Maintenance::new(db.database(), Keyring::from_fernet_keys([&key]).unwrap())
        .copy_to(&target.database(), &CopyOptions::default(), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(report.complete && report.verified(), "{report:?}");
    assert_eq!(target.count("retired_account_keys"), 2);
    let copied = open_store(&target, &key);
    for ((account, id, _), plaintext) in written.iter().zip(["PK1", "PK2", "PK3", "PK4", "PK5"]) {
        assert_eq!(
            copied.keys(account, *id).unwrap().api_key().expose_secret(),
            plaintext
        );
    }

    // A run within the grace period re-encrypts nothing it cannot open and
    // keeps the keys.
    let late_secret = db.text(&format!(
        "SELECT secret_key AS t FROM user_credentials WHERE id = '{}'",
        late.id
    ));
    db.execute(&format!(
        "UPDATE user_credentials SET secret_key = 'sealed:v3:1:AAAA' WHERE id = '{}'",
        late.id
    ));
    let zero_grace = || {
        Maintenance::new(db.database(), Keyring::from_fernet_keys([&key]).unwrap())
            .with_retired_key_grace(Duration::ZERO)
    };
    // Past the grace period, a retired key a row is still sealed under (here one
    // the rotation cannot re-encrypt) is kept; bob's, unused, is deleted.
    match zero_grace().rotate_keys(100, &mut |_| {}) {
        Err(Error::RotationIncomplete {
            rewritten,
            failures,
        }) => {
            assert_eq!(rewritten, 0);
            assert_eq!(failures.len(), 1, "{failures:?}");
        }
        other => panic!("expected RotationIncomplete, got {other:?}"),
    }
    assert_eq!(db.count("retired_account_keys"), 1);
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM retired_account_keys WHERE account_id = '{}'",
            ada.id()
        )),
        1
    );

    // The row repaired, the next run re-encrypts it and deletes the last key.
    db.execute(&format!(
        "UPDATE user_credentials SET secret_key = '{late_secret}' WHERE id = '{}'",
        late.id
    ));
    let purged = zero_grace().rotate_keys(100, &mut |_| {}).unwrap();
    assert_eq!(
        (purged.rewritten, purged.retired_keys_deleted),
        (1, 1),
        "{purged:?}"
    );
    assert_eq!(db.count("retired_account_keys"), 0);
    assert_eq!(versions(db), ["api_key@v2=5", "secret_key@v2=5"]);
    let fresh = open_store(db, &key);
    for ((account, id, _), plaintext) in written.iter().zip(["PK1", "PK2", "PK3", "PK4", "PK5"]) {
        assert_eq!(
            fresh.keys(account, *id).unwrap().api_key().expose_secret(),
            plaintext
        );
    }

    // The old data key, put back in place of the new one, opens none of ada's
    // credentials: they are sealed under the new key alone.
    db.execute(&format!(
        "UPDATE account_keys SET version = 1, wrapped_key = '{old_wrapped}' WHERE account_id = '{}'",
        ada.id()
    ));
    let with_old_key = open_store(db, &key);
    for (account, id, _) in written.iter().filter(|(a, ..)| a.id() == ada.id()) {
        match with_old_key.keys(account, *id) {
            Err(Error::Decryption { credential_id, .. }) => assert_eq!(credential_id, *id),
            other => panic!("expected Decryption, got {other:?}"),
        }
    }
});
