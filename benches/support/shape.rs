//! The datasets' shape, the same on every backend: accounts, nicknames, types,
//! plaintext keys and the key that seals them.

// Each benchmark uses part of it.
#![allow(dead_code)]

use credential_store::Keyring;

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
