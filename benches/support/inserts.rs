//! The rows every insert benchmark writes, shared by the baselines of all backends:
//! the same plaintext, sealed by the crate's own code, the same ids and clock.

// Each benchmark uses part of it.
#![allow(dead_code)]

use credential_store::internals::{self, InsertRow};
use credential_store::{CipherFormat, Field, Keyring, NewUserCredential, UserAccount};
use secrecy::SecretString;
use uuid::Uuid;

/// The plaintext of inserted credentials.
pub const INSERT_API_KEY: &str = "PKINSERT000000000001";
pub const INSERT_SECRET: &str = "0123456789abcdef0123456789abcdef01234567";

/// The plaintext keys of inserted credentials as secrets, made once (as the crate's
/// `NewUserCredential`s are made once, outside the timed loop).
pub struct InsertKeys {
    pub api_key: SecretString,
    pub secret_key: SecretString,
}

impl InsertKeys {
    pub fn new() -> Self {
        InsertKeys {
            api_key: SecretString::from(INSERT_API_KEY),
            secret_key: SecretString::from(INSERT_SECRET),
        }
    }
}

pub fn new_credentials(n: usize) -> Vec<NewUserCredential<'static>> {
    (0..n)
        .map(|_| {
            NewUserCredential::new("alpaca_paper", INSERT_API_KEY, INSERT_SECRET)
                .nickname("inserted")
        })
        .collect()
}

/// Rows as a baseline prepares them: a fresh UUIDv7 each, both keys sealed by the
/// crate's code (the format the stores write), stamped by the crate's clock.
pub fn insert_rows(
    keyring: &Keyring,
    account: &UserAccount,
    keys: &InsertKeys,
    n: usize,
) -> Vec<InsertRow> {
    let at = internals::now();
    (0..n)
        .map(|_| {
            let id = Uuid::now_v7();
            let seal = |field, key| {
                internals::seal(keyring, CipherFormat::Sealed, account, id, field, key)
            };
            InsertRow {
                id,
                user_account_id: account.id(),
                user_id: account.user_id().to_owned(),
                credential_type: "alpaca_paper".to_owned(),
                nickname: Some("inserted".to_owned()),
                api_key: seal(Field::ApiKey, &keys.api_key),
                secret_key: seal(Field::SecretKey, &keys.secret_key),
                is_active: true,
                expires_at: None,
                created_at: at,
                updated_at: at,
            }
        })
        .collect()
}
