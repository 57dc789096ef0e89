//! The datasets' shape, the same on every backend: accounts, nicknames, types,
//! plaintext keys and the key that seals them.

// Each benchmark uses part of it.
#![allow(dead_code)]

use credential_store::{CredentialStore, Keyring, NewUserAccount, NewUserCredential};

/// Credentials per account in every dataset.
pub const CREDENTIALS_PER_ACCOUNT: usize = 10;

/// Nicknames of an account's credentials, by position: eight unique ones, then two
/// credentials that share `shared`.
pub const NICKNAMES: [&str; CREDENTIALS_PER_ACCOUNT] = [
    "bot-0", "bot-1", "bot-2", "bot-3", "bot-4", "bot-5", "bot-6", "bot-7", "shared", "shared",
];
/// The nicknames that match exactly one credential of an account.
pub const UNIQUE_NICKNAMES: usize = 8;
/// The nickname two credentials of every account carry.
pub const SHARED_NICKNAME: &str = "shared";

/// Credential types, by position modulo 3: four `alpaca_paper`, three of each other.
pub const TYPES: [&str; 3] = ["alpaca_paper", "alpaca_live", "polygon"];

/// Accounts that the insert benchmarks write under; their credentials are deleted
/// after each insert benchmark, so the datasets keep their size.
pub const INSERT_ACCOUNTS: usize = 16;

/// The key id of the datasets' key.
pub const KEY_ID: &str = "bench";

/// The datasets' key: fixed, so that a dataset built by one run decrypts in the next.
/// A benchmark key, never a secret.
pub fn key_text() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode([0x5au8; 32])
}

/// A second key, the primary after a rotation.
pub fn rotated_key_text(n: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode([0xa0 ^ n; 32])
}

/// The keyring every dataset is written with: one key, id `bench`.
pub fn keyring() -> Keyring {
    Keyring::from_fernet_keys([format!("{KEY_ID}:{}", key_text())]).expect("a valid key")
}

pub fn user_id(account: usize) -> String {
    format!("bench-user-{account:08}")
}

pub fn insert_user_id(k: usize) -> String {
    format!("bench-insert-{k:02}")
}

/// The plaintext API key of credential `n` of account `account`: 20 characters, like
/// an Alpaca key id.
pub fn api_key(account: usize, n: usize) -> String {
    format!("PK{:018}", account * CREDENTIALS_PER_ACCOUNT + n)
}

/// The plaintext secret key: 40 characters, like an Alpaca secret.
pub fn secret_key(account: usize, n: usize) -> String {
    format!(
        "{:040x}",
        (account as u128 * 0x9e37_79b9_7f4a_7c15) ^ n as u128
    )
}

/// Writes account `i` of a dataset and its credentials, through the crate.
pub fn write_account(store: &CredentialStore, i: usize) {
    let user_id = user_id(i);
    let account = store
        .create_account(&NewUserAccount::new(&user_id, "bench"))
        .expect("create_account");
    let keys: Vec<(String, String)> = (0..CREDENTIALS_PER_ACCOUNT)
        .map(|n| (api_key(i, n), secret_key(i, n)))
        .collect();
    let new: Vec<NewUserCredential<'_>> = keys
        .iter()
        .enumerate()
        .map(|(n, (api, secret))| {
            NewUserCredential::new(TYPES[n % 3], api.as_str(), secret.as_str())
                .nickname(NICKNAMES[n])
        })
        .collect();
    store
        .insert_credentials(&account, &new)
        .expect("insert_credentials");
}

/// Writes the accounts the insert benchmarks write under, through the crate.
pub fn write_insert_accounts(store: &CredentialStore) {
    for k in 0..INSERT_ACCOUNTS {
        store
            .create_account(&NewUserAccount::new(&insert_user_id(k), "bench inserts"))
            .expect("create an insert account");
    }
}
