//! Nickname lookups through the repository, on an embedded SQLite file.
//!
//! Ids: `<operation>/<backend>/<implementation>/<rows>`. Run with `cargo bench`.

use credential_store::{
    CredentialRepository, CredentialStore, Database, Keyring, NewUserAccount, NewUserCredential,
    UserAccount,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use secrecy::ExposeSecret;
use std::hint::black_box;

const CREDENTIALS_PER_ACCOUNT: usize = 10;

struct Dataset {
    store: CredentialStore,
    accounts: Vec<UserAccount>,
    _dir: tempfile::TempDir,
}

/// `rows` credentials, ten per account, nicknamed `bot-0` … `bot-9`.
fn sqlite_dataset(rows: usize) -> Dataset {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Database::open(dir.path().join("bench.db").to_str().unwrap()).expect("open");
    db.run_migrations().expect("migrate");
    let key = Keyring::generate_key();
    let store = CredentialStore::new(
        db,
        Keyring::from_fernet_keys([key.expose_secret()]).unwrap(),
    );
    let accounts: Vec<UserAccount> = (0..rows / CREDENTIALS_PER_ACCOUNT)
        .map(|i| {
            let user_id = format!("user-{i}");
            let account = store
                .create_account(&NewUserAccount {
                    user_id: &user_id,
                    account_name: "bench",
                })
                .expect("account");
            for n in 0..CREDENTIALS_PER_ACCOUNT {
                let nickname = format!("bot-{n}");
                let new = NewUserCredential::new("alpaca_paper", "PKBENCH0001", "secret")
                    .nickname(&nickname);
                store.insert_credential(&account, &new).expect("credential");
            }
            account
        })
        .collect();
    Dataset {
        store,
        accounts,
        _dir: dir,
    }
}

fn lookups(c: &mut Criterion) {
    let rows = 10_000;
    let data = sqlite_dataset(rows);
    let mut group = c.benchmark_group("lookup_by_nickname");
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("sqlite/crate", rows), |b| {
        b.iter(|| {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let account = &data.accounts[(i >> 33) % data.accounts.len()];
            let nickname = format!("bot-{}", (i >> 20) % CREDENTIALS_PER_ACCOUNT);
            black_box(
                data.store
                    .find_one_by_nickname(account, &nickname)
                    .expect("lookup"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
